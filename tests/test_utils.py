"""Tests of memtutor.utils: seeding, threads, device, cached training, input checks."""

import random

import numpy as np
import pytest
import torch

from memtutor import utils


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


def test_load_or_train_trains_once_then_loads(tmp_path):
    """The training path runs when no file exists; afterwards the file is loaded, not retrained."""
    calls = []

    def train():
        calls.append(1)
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(64, 3)
        y = x @ torch.tensor([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]])
        losses = []
        for _ in range(50):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0]
        return {"model": model.state_dict(), "losses": torch.tensor(losses)}

    path = tmp_path / "sub" / "ckpt.pt"
    first = utils.load_or_train(path, train)
    assert path.exists() and len(calls) == 1
    second = utils.load_or_train(path, train)
    assert len(calls) == 1, "a present checkpoint must be loaded, not retrained"
    torch.testing.assert_close(first["losses"], second["losses"])
    model = torch.nn.Linear(3, 2)
    model.load_state_dict(second["model"])
    utils.load_or_train(path, train, retrain=True)
    assert len(calls) == 2


def test_load_or_train_refuses_non_mapping(tmp_path):
    with pytest.raises(ValueError, match="mapping"):
        utils.load_or_train(tmp_path / "x.pt", lambda: [1, 2, 3])


class Evil:
    """A plain Python object: pickled by torch.save, refused by torch.load(weights_only=True)."""


def test_load_or_train_loads_only_weights(tmp_path):
    """Files are read with weights_only=True: an arbitrary pickled object is refused."""
    path = tmp_path / "evil.pt"
    torch.save({"obj": Evil()}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|weights_only"):
        utils.load_or_train(path, lambda: {})


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
