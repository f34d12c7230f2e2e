"""Tests of memtutor.utils: seeding, threads, device, cached training, input checks."""

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from memtutor import utils

ROOT = Path(__file__).resolve().parents[1]


def test_seed_everything_makes_all_three_generators_repeat():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    utils.seed_everything(123)
    first = draw()
    utils.seed_everything(123)
    assert draw() == first
    utils.seed_everything(124)
    assert draw() != first


def test_seed_everything_returns_a_seeded_generator():
    a = torch.rand(3, generator=utils.seed_everything(7))
    b = torch.rand(3, generator=utils.seed_everything(7))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        utils.seed_everything(bad)


def test_set_threads_explicit_and_from_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert utils.set_threads(1) == 1
        monkeypatch.setenv(utils.THREADS_ENV, "2")
        assert utils.set_threads() == 2
        monkeypatch.setenv(utils.THREADS_ENV, "two")
        with pytest.raises(ValueError, match=utils.THREADS_ENV):
            utils.set_threads()
        with pytest.raises(ValueError, match="thread count"):
            utils.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_default_device_matches_cuda_availability():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert utils.default_device().type == expected


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    lr: float = 0.1
    steps: int = 50
    seed: int = 0
    sizes: tuple = (3, 2)


def _tiny_train(cfg: TinyConfig, calls: list):
    def train():
        calls.append(cfg)
        torch.manual_seed(cfg.seed)
        model = torch.nn.Linear(*cfg.sizes)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        x = torch.randn(64, 3)
        y = x @ torch.tensor([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]])
        losses = []
        for _ in range(cfg.steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0]
        return {"model": model.state_dict(), "losses": torch.tensor(losses)}

    return train


def test_load_or_train_trains_once_then_loads(tmp_path):
    """The training path runs when no file exists; afterwards the file is loaded, not retrained."""
    calls, cfg = [], TinyConfig()
    first = utils.load_or_train("ckpt.pt", cfg, _tiny_train(cfg, calls), minutes=10, directory=tmp_path / "sub")
    assert (tmp_path / "sub" / "ckpt.pt").exists() and len(calls) == 1
    second = utils.load_or_train("ckpt.pt", cfg, _tiny_train(cfg, calls), minutes=10, directory=tmp_path / "sub")
    assert len(calls) == 1, "a present checkpoint with the same configuration must be loaded, not retrained"
    torch.testing.assert_close(first["losses"], second["losses"])
    torch.nn.Linear(3, 2).load_state_dict(second["model"])
    utils.load_or_train("ckpt.pt", cfg, _tiny_train(cfg, calls), minutes=10, retrain=True, directory=tmp_path / "sub")
    assert len(calls) == 2


def test_the_file_records_its_configuration(tmp_path):
    cfg = TinyConfig(lr=0.2)
    utils.load_or_train("c.pt", cfg, _tiny_train(cfg, []), minutes=0, directory=tmp_path)
    data = torch.load(tmp_path / "c.pt", weights_only=True)
    assert data["format"] == utils.RESULT_FORMAT
    assert data["config"] == {"lr": 0.2, "steps": 50, "seed": 0, "sizes": [3, 2]}


@pytest.mark.parametrize("field, value", [("lr", 0.05), ("steps", 60), ("seed", 1), ("sizes", (3, 2, 1))])
def test_a_changed_field_of_a_slow_result_raises_naming_it(tmp_path, field, value):
    cfg = TinyConfig()
    utils.load_or_train("c.pt", cfg, _tiny_train(cfg, []), minutes=0, directory=tmp_path)
    before = (tmp_path / "c.pt").read_bytes()
    changed = dataclasses.replace(cfg, **{field: value})
    with pytest.raises(ValueError, match=rf"{field}: cached .*, asked .*RETRAIN = True"):
        utils.load_or_train("c.pt", changed, lambda: pytest.fail("must not train"), minutes=20, directory=tmp_path)
    assert (tmp_path / "c.pt").read_bytes() == before, "a refused load must leave the cached file as it was"


def test_a_changed_field_of_a_quick_result_retrains_and_says_why(tmp_path, capsys):
    cfg, calls = TinyConfig(), []
    utils.load_or_train("c.pt", cfg, _tiny_train(cfg, calls), minutes=0.1, directory=tmp_path)
    changed = dataclasses.replace(cfg, lr=0.05)
    out = utils.load_or_train("c.pt", changed, _tiny_train(changed, calls), minutes=0.1, directory=tmp_path)
    assert [c.lr for c in calls] == [0.1, 0.05]
    assert "lr: cached 0.1, asked 0.05" in capsys.readouterr().out
    assert torch.load(tmp_path / "c.pt", weights_only=True)["config"]["lr"] == 0.05
    assert out["losses"].shape == (50,)


def test_int_and_float_fields_compare_by_value_and_type(tmp_path):
    utils.save_result(tmp_path / "c.pt", {"n": 3, "x": 1.0}, {"v": torch.zeros(1)})
    assert utils.load_or_train("c.pt", {"n": 3, "x": 1.0}, dict, minutes=9, directory=tmp_path)["v"].shape == (1,)
    with pytest.raises(ValueError, match="n: cached 3, asked 4"):
        utils.load_or_train("c.pt", {"n": 4, "x": 1.0}, dict, minutes=9, directory=tmp_path)
    with pytest.raises(ValueError, match="flag: cached '<absent>', asked True"):
        utils.load_or_train("c.pt", {"n": 3, "x": 1.0, "flag": True}, dict, minutes=9, directory=tmp_path)


def test_search_order_takes_the_first_matching_folder(tmp_path, monkeypatch):
    """$MEMTUTOR_CHECKPOINTS first; a file there with another configuration does not hide a matching one later."""
    env, user = tmp_path / "env", tmp_path / "xdg"
    monkeypatch.setenv(utils.CHECKPOINTS_ENV, str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(user))
    dirs = utils.checkpoint_dirs()
    assert dirs[:2] == [env, user / "memtutor" / "checkpoints"] and utils.writable_checkpoint_dir() == env
    utils.save_result(env / "r.pt", {"a": 1}, {"where": torch.tensor(0)})
    utils.save_result(utils.user_checkpoint_dir() / "r.pt", {"a": 2}, {"where": torch.tensor(1)})
    assert int(utils.load_or_train("r.pt", {"a": 1}, dict, minutes=9)["where"]) == 0
    assert int(utils.load_or_train("r.pt", {"a": 2}, dict, minutes=9)["where"]) == 1
    with pytest.raises(ValueError, match="a: cached 1, asked 3"):  # names the first file found
        utils.load_or_train("r.pt", {"a": 3}, dict, minutes=9)


def test_training_in_a_clone_never_overwrites_the_committed_results(tmp_path, monkeypatch, capsys):
    """A learner's run goes to the user folder and is found first; the committed file stays as it was."""
    monkeypatch.delenv(utils.CHECKPOINTS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    clone = tmp_path / "clone"
    monkeypatch.setattr(utils, "_clone_checkpoints", lambda: clone)
    utils.save_result(clone / "q.pt", {"lr": 0.1}, {"w": torch.tensor(0.0)})
    committed = (clone / "q.pt").read_bytes()
    assert utils.checkpoint_dirs()[:2] == [utils.user_checkpoint_dir(), clone]
    out = utils.load_or_train("q.pt", {"lr": 0.2}, lambda: {"w": torch.tensor(2.0)}, minutes=1)
    assert float(out["w"]) == 2.0 and (clone / "q.pt").read_bytes() == committed
    assert f"saved q.pt to {utils.user_checkpoint_dir()}" in capsys.readouterr().out
    assert float(utils.load_or_train("q.pt", {"lr": 0.1}, dict, minutes=9)["w"]) == 0.0  # the committed one
    assert float(utils.load_or_train("q.pt", {"lr": 0.2}, dict, minutes=9)["w"]) == 2.0  # the learner's own


def test_outside_a_clone_training_goes_to_the_user_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(utils.CHECKPOINTS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(utils, "_clone_checkpoints", lambda: None)
    assert utils.writable_checkpoint_dir() == tmp_path / "memtutor" / "checkpoints"
    utils.load_or_train("u.pt", {"k": 1}, lambda: {"x": torch.ones(1)}, minutes=0)
    assert (tmp_path / "memtutor" / "checkpoints" / "u.pt").is_file()


def test_nothing_is_written_into_the_installed_package(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "memtutor" / "checkpoints"
    package.mkdir(parents=True)
    monkeypatch.setattr(utils, "_package_checkpoints", lambda: package)
    with pytest.raises(ValueError, match="installed package"):
        utils.save_result(package / "x.pt", {"k": 1}, {"x": torch.ones(1)})
    assert not any(package.iterdir())


def test_the_clone_is_found_after_the_user_folder(monkeypatch):
    monkeypatch.delenv(utils.CHECKPOINTS_ENV, raising=False)
    dirs = utils.checkpoint_dirs()
    assert dirs[:2] == [utils.user_checkpoint_dir(), ROOT / "notebooks" / "checkpoints"]
    assert utils.writable_checkpoint_dir() == utils.user_checkpoint_dir()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"f": lambda: 0}, "config value at f must be plain data"),
        ({"t": torch.zeros(2)}, "config value at t must be plain data"),
        ({1: 2}, "config keys must be strings"),
        ([1, 2], "config must be a dataclass or a mapping"),
    ],
)
def test_config_dict_rejects_what_cannot_be_compared(bad, match):
    with pytest.raises(ValueError, match=match):
        utils.config_dict(bad)


def test_config_dict_flattens_nested_dataclasses_and_names_dtypes():
    out = utils.config_dict({"inner": TinyConfig(), "dtype": torch.float64, "n": np.int64(3)})
    assert out == {"inner": {"lr": 0.1, "steps": 50, "seed": 0, "sizes": [3, 2]}, "dtype": "torch.float64", "n": 3}


@pytest.mark.parametrize("name", ["", "a/b.pt", "../x.pt", 3])
def test_load_or_train_wants_a_bare_file_name(tmp_path, name):
    with pytest.raises(ValueError, match="file name"):
        utils.load_or_train(name, {}, dict, minutes=1, directory=tmp_path)


@pytest.mark.parametrize("minutes", [-1, "5", None, True, float("nan")])
def test_load_or_train_wants_an_estimate(tmp_path, minutes):
    with pytest.raises(ValueError, match="minutes"):
        utils.load_or_train("x.pt", {}, dict, minutes=minutes, directory=tmp_path)


def test_load_or_train_refuses_non_mapping(tmp_path):
    with pytest.raises(ValueError, match="mapping"):
        utils.load_or_train("x.pt", {}, lambda: [1, 2, 3], minutes=0, directory=tmp_path)
    assert not (tmp_path / "x.pt").exists()


class Evil:
    """A plain Python object: pickled by torch.save, refused by torch.load(weights_only=True)."""


def test_load_or_train_loads_only_weights(tmp_path):
    """Files are read with weights_only=True: an arbitrary pickled object is refused."""
    torch.save({"format": utils.RESULT_FORMAT, "config": {}, "result": {"obj": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed|weights_only"):
        utils.load_or_train("evil.pt", {}, dict, minutes=0, directory=tmp_path)


def test_a_file_in_another_format_is_refused(tmp_path):
    torch.save({"model": {}}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="not a memtutor cached result"):
        utils.load_or_train("old.pt", {}, dict, minutes=0, directory=tmp_path)


def test_every_committed_result_records_its_configuration():
    files = sorted((ROOT / "notebooks" / "checkpoints").glob("*.pt"))
    assert files, "no cached results found"
    for path in files:
        data = torch.load(path, weights_only=True)
        assert isinstance(data, dict) and data.get("format") == utils.RESULT_FORMAT, path.name
        assert isinstance(data["config"], dict) and data["config"], f"{path.name} has no configuration"


def test_progress_is_tqdm_when_enabled_and_transparent_when_not():
    items = [1, 2, 3]
    assert utils.progress(items, enabled=False) is items
    bar = utils.progress(items, desc="x", disable=True)
    assert list(bar) == items
    manual = utils.progress(total=3, enabled=False)
    manual.update(1), manual.set_postfix(a=1), manual.close()


def test_seed_purposes_are_named_offsets():
    name = utils.register_seed_offset("test/stream", 123)
    assert utils.register_seed_offset("test/stream", 123) == name  # same value again: fine
    with pytest.raises(ValueError, match="already has offset 123"):
        utils.register_seed_offset("test/stream", 124)
    assert utils.derive_seed(5, name) == 128 and utils.derive_seed(5, name, index=2) == 130
    torch.testing.assert_close(
        torch.rand(3, generator=utils.generator(5, name)), torch.rand(3, generator=torch.Generator().manual_seed(128))
    )
    with pytest.raises(ValueError, match="unknown seed purpose"):
        utils.derive_seed(0, "test/none")
    with pytest.raises(ValueError, match="non-negative"):
        utils.derive_seed(-1, name)


def test_check_tensor_messages():
    x = torch.zeros(2, 3)
    assert utils.check_tensor(x, "x", ndim=2, shape=(None, 3)) is x
    with pytest.raises(ValueError, match="keys must be a torch.Tensor"):
        utils.check_tensor([1.0], "keys")
    with pytest.raises(ValueError, match="3 dimensions"):
        utils.check_tensor(x, "memory", ndim=3)
    with pytest.raises(ValueError, match=r"shape \(\*, 4\)"):
        utils.check_tensor(x, "memory", shape=(None, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        utils.check_tensor(torch.tensor([1.0, float("nan")]), "keys")
    with pytest.raises(ValueError, match="NaN or infinite"):
        utils.check_tensor(torch.tensor([float("inf")]), "keys")


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "4"])
def test_check_positive_int_rejects(bad):
    with pytest.raises(ValueError, match="batch_size"):
        utils.check_positive_int(bad, "batch_size")


def test_timer_measures():
    with utils.timer() as t:
        sum(range(1000))
    assert t["seconds"] >= 0.0


def test_a_bool_is_not_a_number_in_a_configuration(tmp_path):
    utils.save_result(tmp_path / "b.pt", {"flag": True, "sizes": [1, 2]}, {"v": torch.zeros(1)})
    with pytest.raises(ValueError, match="flag: cached True, asked 1"):
        utils.load_or_train("b.pt", {"flag": 1, "sizes": [1, 2]}, dict, minutes=9, directory=tmp_path)
    with pytest.raises(ValueError, match=r"sizes: cached \[1, 2\], asked \[True, 2\]"):
        utils.load_or_train("b.pt", {"flag": True, "sizes": [True, 2]}, dict, minutes=9, directory=tmp_path)
    assert utils.load_or_train("b.pt", {"flag": True, "sizes": (1.0, 2)}, dict, minutes=9, directory=tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04truncated"])
def test_a_corrupt_file_raises_naming_it_and_is_left_alone(tmp_path, content):
    (tmp_path / "c.pt").write_bytes(content)
    with pytest.raises(ValueError, match=r"c\.pt cannot be read as a memtutor cached result.*delete it"):
        utils.load_or_train("c.pt", {"a": 1}, lambda: pytest.fail("must not train"), minutes=0, directory=tmp_path)
    assert (tmp_path / "c.pt").read_bytes() == content


def test_a_result_that_could_not_be_loaded_back_is_never_written(tmp_path):
    utils.save_result(tmp_path / "r.pt", {"a": 1}, {"v": torch.ones(1)})
    before = (tmp_path / "r.pt").read_bytes()
    with pytest.raises(ValueError, match="only tensors and plain values"):
        utils.load_or_train("r.pt", {"a": 2}, lambda: {"v": np.ones(3)}, minutes=0, directory=tmp_path)
    with pytest.raises(ValueError, match="only tensors and plain values"):
        utils.save_result(tmp_path / "r.pt", {"a": 2}, {"obj": Evil()})
    assert (tmp_path / "r.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pt"]


def test_search_order_is_env_user_clone_package(tmp_path, monkeypatch):
    env, package, clone = tmp_path / "env", tmp_path / "pkg", tmp_path / "clone"
    monkeypatch.setenv(utils.CHECKPOINTS_ENV, str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(utils, "_clone_checkpoints", lambda: clone)
    monkeypatch.setattr(utils, "_package_checkpoints", lambda: package)
    assert utils.checkpoint_dirs() == [env, utils.user_checkpoint_dir(), clone, package]
    for i, folder in enumerate((package, clone, utils.user_checkpoint_dir(), env)):  # same config everywhere
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"format": utils.RESULT_FORMAT, "config": {"a": 1}, "result": {"i": i}}, folder / "s.pt")
        assert utils.load_or_train("s.pt", {"a": 1}, dict, minutes=9)["i"] == i  # the newest, earliest folder wins


def test_check_device_names_what_is_wrong():
    assert utils.check_device(None) is None and utils.check_device("cpu") == torch.device("cpu")
    for bad in ("gpu0", 3.5, object()):
        with pytest.raises(ValueError, match="device must be a torch.device"):
            utils.check_device(bad)
