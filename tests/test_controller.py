"""Tests for memtutor.controller and notebook 02's experiment driver (memtutor.experiments.nb02_controller):
interface, gradients, batch independence, the fused option, training path, cached runs, checks."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from notebook_cells import parameters_cell

from memtutor import memory as mem
from memtutor.controller import (
    ControllerConfig,
    ControllerState,
    CopyTrainConfig,
    LSTMBaseline,
    MemoryController,
    baseline_hidden_size,
    compile_step,
    count_parameters,
    evaluate_copy,
    train_copy,
    with_access,
)
from memtutor.experiments import nb02_controller as nb02
from memtutor.tasks import copy_task, masked_bce_loss
from memtutor.utils import config_dict, generator, set_threads

ROOT = Path(__file__).resolve().parents[1]
SMALL = ControllerConfig(input_size=5, output_size=4, hidden_size=12, num_slots=6, word_size=4, num_reads=2)

set_threads()  # 1 thread: torch's default of 2 stalls small ops on a 2-core machine


def _model(config=SMALL, seed=0, dtype=torch.float32, fused=False):
    torch.manual_seed(seed)
    return MemoryController(config, fused=fused).to(dtype)


def test_output_and_state_shapes():
    model = _model()
    x = torch.randn(3, 7, SMALL.input_size)
    y, state, trace = model(x, return_trace=True)
    B, T, N, W, R, H = 3, 7, SMALL.num_slots, SMALL.word_size, SMALL.num_reads, SMALL.hidden_size
    assert y.shape == (B, T, SMALL.output_size)
    assert state.hidden.shape == state.cell.shape == (B, H)
    assert state.read_vectors.shape == (B, R, W)
    assert state.memory.memory.shape == (B, N, W)
    assert state.memory.link.shape == (B, N, N)
    assert trace["write_weights"].shape == (B, T, N)
    assert trace["read_weights"].shape == (B, T, R, N)
    assert trace["usage"].shape == (B, T, N)
    assert trace["allocation_gate"].shape == trace["write_gate"].shape == (B, T)
    assert trace["read_modes"].shape == (B, T, R, 3)


def test_interface_fields_shapes_and_squashing_ranges():
    """Every field of the interface the controller emits has its documented shape and range."""
    model = _model()
    B, W, R = 4, SMALL.word_size, SMALL.num_reads
    state = model.initial_state(B)
    # large pre-activations push every squashing towards its limits
    x = 30 * torch.randn(B, SMALL.input_size)
    _, _, it = model.step(x, state)
    assert it.read_keys.shape == (B, R, W) and it.write_key.shape == (B, W)
    assert it.write_vector.shape == (B, W) and it.erase_vector.shape == (B, W)
    assert it.read_strengths.shape == (B, R) and it.write_strength.shape == (B,)
    assert it.free_gates.shape == (B, R)
    assert it.allocation_gate.shape == it.write_gate.shape == (B,)
    assert it.read_modes.shape == (B, R, 3)
    assert bool((it.read_strengths >= 1).all()) and bool((it.write_strength >= 1).all())
    for gate in (it.erase_vector, it.free_gates, it.allocation_gate, it.write_gate, it.read_modes):
        assert bool(((gate >= 0) & (gate <= 1)).all())
    torch.testing.assert_close(it.read_modes.sum(-1), torch.ones(B, R))
    # write vector and keys are linear: they can be negative
    assert bool((it.write_vector < 0).any())


def test_interface_is_one_linear_projection_of_the_right_size():
    model = _model()
    assert model.interface.out_features == mem.interface_size(SMALL.word_size, SMALL.num_reads)
    assert model.interface.in_features == SMALL.hidden_size
    assert model.core.input_size == SMALL.input_size + SMALL.num_reads * SMALL.word_size
    assert model.output.in_features == SMALL.hidden_size + SMALL.num_reads * SMALL.word_size


def test_gradients_reach_every_parameter():
    model = _model()
    batch = copy_task(3, 1, 3, 4, generator=torch.Generator().manual_seed(0))
    y, _ = model(batch.inputs)
    masked_bce_loss(y, batch.targets, batch.mask).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient for {missing}"


def test_gradcheck_float64_through_the_memory():
    """Analytic gradients of a short unroll w.r.t. the inputs match finite differences."""
    cfg = replace(SMALL, hidden_size=4, num_slots=3, word_size=2, num_reads=2, input_size=2, output_size=2)
    model = _model(cfg, dtype=torch.float64)
    x = torch.randn(1, 3, cfg.input_size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: model(inp)[0], (x,), eps=1e-6, atol=1e-5)


def test_batch_independence_permuting_sequences_permutes_outputs():
    model = _model()
    x = torch.randn(5, 6, SMALL.input_size)
    perm = torch.tensor([3, 0, 4, 1, 2])
    y, s = model(x)
    yp, sp = model(x[perm])
    torch.testing.assert_close(yp, y[perm])
    torch.testing.assert_close(sp.memory.memory, s.memory.memory[perm])
    # one sequence alone gives the same answer as inside the batch
    y0, _ = model(x[2:3])
    torch.testing.assert_close(y0, y[2:3])


def test_state_is_passed_explicitly_and_nothing_is_kept_in_the_module():
    model = _model()
    x = torch.randn(2, 8, SMALL.input_size)
    y_full, s_full = model(x)
    y_a, s_a = model(x[:, :5])
    y_b, s_b = model(x[:, 5:], s_a)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y_full)
    torch.testing.assert_close(s_b.memory.memory, s_full.memory.memory)
    # a second call from a fresh state is not influenced by the first one
    torch.testing.assert_close(model(x)[0], y_full)


def _stepped(model, batch=3, steps=3):
    """A model's state and interface after a few steps, so usage, links and reads are non-trivial."""
    state = model.initial_state(batch)
    gen = torch.Generator().manual_seed(4)
    for _ in range(steps):
        _, state, it = model.step(torch.randn(batch, model.config.input_size, generator=gen), state)
    return state, it


@pytest.mark.parametrize("allocation,links", [(True, True), (False, True), (True, False)])
def test_controller_step_runs_the_package_memory_step_with_its_switches(allocation, links):
    model = _model(replace(SMALL, allocation=allocation, links=links))
    state, _ = _stepped(model)
    x = torch.randn(3, SMALL.input_size)
    _, nxt, it = model.step(x, state)
    reads, want = mem.memory_step(it, state.memory, allocation=allocation, links=links)
    torch.testing.assert_close(nxt.read_vectors, reads)
    torch.testing.assert_close(tuple(nxt.memory), tuple(want))


def test_with_access_copies_weights_and_switches_the_memory():
    model = _model(fused=("link",))
    ablated = with_access(model, links=False)
    assert ablated.config.links is False and ablated.config.allocation is True
    assert ablated.fused == model.fused == frozenset({"link"})
    for (n, p), (_, q) in zip(model.named_parameters(), ablated.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    x = torch.randn(2, 6, SMALL.input_size)
    assert not torch.allclose(ablated(x)[0], model(x)[0])


@pytest.mark.parametrize("fused", [True, ("link",), ("content",)])
def test_fused_controller_matches_the_default_values_and_gradients(fused):
    """The fused memory step is an implementation choice: same outputs and parameter gradients as the
    default (composed) step, in float64, over a whole sequence."""
    x = torch.randn(3, 9, SMALL.input_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    outs = []
    for option in (False, fused):
        model = _model(dtype=torch.float64, fused=option)
        y, state = model(x)
        (y.square().sum() + state.memory.memory.sum()).backward()
        outs.append((y.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0])
    for got, want in zip(outs[1][1], outs[0][1], strict=True):
        torch.testing.assert_close(got, want)
    assert _model(fused=fused).state_dict().keys() == _model().state_dict().keys()


def test_lstm_baseline_has_at_least_as_many_parameters():
    for cfg in (ControllerConfig(), SMALL):
        hidden = baseline_hidden_size(cfg)
        base = LSTMBaseline(cfg.input_size, cfg.output_size, hidden)
        smaller = LSTMBaseline(cfg.input_size, cfg.output_size, hidden - 1)
        n = count_parameters(MemoryController(cfg))
        assert count_parameters(base) >= n > count_parameters(smaller)


def test_lstm_baseline_shapes_and_batch_independence():
    torch.manual_seed(0)
    base = LSTMBaseline(5, 4, 7)
    x = torch.randn(4, 6, 5)
    y, _ = base(x)
    assert y.shape == (4, 6, 4)
    perm = torch.tensor([2, 3, 0, 1])
    torch.testing.assert_close(base(x[perm])[0], y[perm])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ControllerConfig(num_slots=0), "num_slots"),
        (lambda: ControllerConfig(word_size=0), "word_size"),
        (lambda: ControllerConfig(num_reads=0), "num_reads"),
        (lambda: ControllerConfig(hidden_size=2.5), "hidden_size"),
        (lambda: ControllerConfig(clip_value=0.0), "clip_value"),
        (lambda: LSTMBaseline(5, 4, 0), "hidden_size"),
        (lambda: CopyTrainConfig(min_length=5, max_length=2), "min_length"),
        (lambda: CopyTrainConfig(batch_size=0), "batch_size"),
        (lambda: _model().initial_state(0), "batch_size"),
    ],
)
def test_bad_sizes_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise():
    model = _model()
    with pytest.raises(ValueError, match="features"):
        model(torch.randn(2, 3, SMALL.input_size + 1))
    with pytest.raises(ValueError, match="dimensions"):
        model(torch.randn(3, SMALL.input_size))
    with pytest.raises(ValueError, match="at least one"):
        model(torch.randn(2, 0, SMALL.input_size))
    with pytest.raises(ValueError, match="batch size"):
        model(torch.randn(2, 3, SMALL.input_size), model.initial_state(3))
    for field in ("cell", "read_vectors"):  # every part of the state must match the batch
        good = model.initial_state(2)
        bad = good._replace(**{field: getattr(model.initial_state(3), field)})
        with pytest.raises(ValueError, match="batch size"):
            model(torch.randn(2, 3, SMALL.input_size), bad)
    with pytest.raises(ValueError, match="features"):
        LSTMBaseline(5, 4, 3)(torch.randn(2, 3, 6))


@pytest.mark.slow
def test_training_path_reduces_the_loss():
    """A few updates on a tiny configuration: the loss falls and the result is weights_only-loadable."""
    cfg = ControllerConfig(hidden_size=16, num_slots=4, word_size=4, num_reads=1, input_size=5, output_size=4)
    train = CopyTrainConfig(num_updates=30, batch_size=16, min_length=1, max_length=1, width=4,
                            learning_rate=2e-2, eval_every=15, eval_size=32)  # fmt: skip
    torch.manual_seed(0)
    res = train_copy(MemoryController(cfg), train, seed=0)
    loss = res["loss"]
    assert loss.shape == (30,) and res["update_seconds"].shape == (30,)
    assert float(loss[-10:].mean()) < 0.8 * float(loss[:10].mean())
    assert res["eval_updates"].tolist() == [0, 15, 30]
    assert float(res["val_bits_train"][-1]) < 0.5 * float(res["val_bits_train"][0])


@pytest.mark.slow
def test_comparison_runs_both_models_and_round_trips(tmp_path):
    cfg = ControllerConfig(hidden_size=8, num_slots=4, word_size=4, num_reads=1, input_size=3, output_size=2)
    train = CopyTrainConfig(num_updates=4, batch_size=4, max_length=2, width=2, eval_every=4, eval_size=4)
    res = nb02.train_copy_comparison(0, cfg, train, lstm_update_cap=20)
    assert "4" in res["lstm"]["snapshots"]
    # the LSTM stops when it has spent the controller's training time (or at the cap)
    lstm_time = float(res["lstm"]["update_seconds"].sum())
    ctrl_time = float(res["controller"]["update_seconds"].sum())
    assert lstm_time >= ctrl_time or res["lstm"]["loss"].numel() == 20
    path = tmp_path / "cmp.pt"
    torch.save(res, path)
    back = torch.load(path, weights_only=True)
    model = MemoryController(cfg)
    model.load_state_dict(back["controller"]["state_dict"])
    base = LSTMBaseline(cfg.input_size, cfg.output_size, back["lstm_hidden"])
    base.load_state_dict(back["lstm"]["snapshots"]["4"])
    batch = copy_task(5, 1, 2, 2, generator=torch.Generator().manual_seed(9))
    assert evaluate_copy(model, batch).shape == (5,)
    assert evaluate_copy(base, batch).shape == (5,)


def test_evaluate_copy_is_chunk_invariant():
    model = _model(replace(SMALL, input_size=5, output_size=4))
    batch = copy_task(7, 1, 3, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(evaluate_copy(model, batch, chunk=2), evaluate_copy(model, batch, chunk=100))


# ----------------------------------------------------------------------------- exercise checks


def test_check_bits_error_accepts_the_right_answer_and_rejects_wrong_ones():
    from memtutor.exercises.ex02 import check_bits_error
    from memtutor.tasks import bits_error

    assert check_bits_error(bits_error)

    def no_mask(lg, tg, m):
        return ((lg > 0) != (tg > 0.5)).float().sum(dim=(1, 2))

    def wrong_threshold(lg, tg, m):
        return (((lg > 0.5) != (tg > 0.5)).float() * m[..., None]).sum(dim=(1, 2))

    def total(lg, tg, m):
        return bits_error(lg, tg, m).sum()

    def boom(*_):
        raise RuntimeError("not implemented")

    for fn, words in [(no_mask, "which steps"), (wrong_threshold, "threshold"), (total, "per sequence"),
                      (boom, "raised")]:  # fmt: skip
        result = check_bits_error(fn)
        assert not result and words in result.message


def test_check_ablation():
    from memtutor.exercises.ex02 import check_ablation

    model = _model()
    batch = copy_task(6, 1, 3, 4, generator=torch.Generator().manual_seed(5))
    full = evaluate_copy(model, batch).mean().item()
    no_links = evaluate_copy(with_access(model, links=False), batch).mean().item()
    no_alloc = evaluate_copy(with_access(model, allocation=False), batch).mean().item()
    assert check_ablation(model, batch, no_links, links=False)
    assert check_ablation(model, batch, no_alloc, allocation=False)
    assert not check_ablation(model, batch, no_links + 1.0, links=False)
    assert not check_ablation(model, batch, no_links)  # nothing switched off
    assert not check_ablation(model, batch, float("nan"), links=False)
    if abs(full - no_links) > 1e-6:
        assert "nothing was switched off" in check_ablation(model, batch, full, links=False).message


@pytest.mark.slow
def test_benchmark_quick_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "controller.py"), "--quick"],
        capture_output=True, text=True, check=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert "ratio" in out.stdout and "x" in out.stdout.splitlines()[-1]


def test_forward_checks_the_first_step_and_matches_checked_steps():
    """forward() validates the memory state once per sequence (its first step) and then runs the
    unchecked step: same outputs as checked step() calls, and bad state still raises."""
    model = _model()
    x = torch.randn(3, 5, SMALL.input_size)
    y, final = model(x)
    state = model.initial_state(3)
    for t in range(5):
        y_t, state, _ = model.step(x[:, t], state)
        torch.testing.assert_close(y[:, t], y_t)
    for a, b in zip(final.memory, state.memory, strict=True):
        torch.testing.assert_close(a, b)
    bad = model.initial_state(3)
    nan_memory = bad.memory.memory.clone()
    nan_memory[1, 2, 0] = float("nan")
    bad = bad._replace(memory=bad.memory._replace(memory=nan_memory))
    with pytest.raises(ValueError, match="prev_state.memory contains NaN"):
        model(x, bad)
    wrong = model.initial_state(3)
    wrong = wrong._replace(memory=wrong.memory._replace(link=torch.zeros(3, SMALL.num_slots, SMALL.num_slots + 1)))
    with pytest.raises(ValueError, match=r"prev_state.memory.link has shape \(3, 6, 7\)"):
        model(x, wrong)
    for ablated in (with_access(model, links=False), with_access(model, allocation=False)):
        with pytest.raises(ValueError, match="prev_state.memory contains NaN"):
            ablated(x, bad)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile's CPU backend needs a C++ compiler",
)
def test_compile_step_gives_the_eager_outputs_and_gradients():
    eager = _model()
    fast = compile_step(_model())
    assert fast.state_dict().keys() == eager.state_dict().keys()
    x = torch.randn(3, 4, SMALL.input_size, generator=torch.Generator().manual_seed(0))
    outs = []
    for model in (eager, fast):
        y, _ = model(x)
        y.square().sum().backward()
        outs.append((y.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-4, atol=1e-5)
    for got, want in zip(outs[1][1], outs[0][1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="MemoryController"):
        compile_step(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- seeds and cached runs

TINY = ControllerConfig(hidden_size=8, num_slots=4, word_size=4, num_reads=1, input_size=3, output_size=2)
TINY_TRAIN = CopyTrainConfig(num_updates=3, batch_size=4, max_length=2, width=2, eval_every=3, eval_size=4)


def test_seed_purposes_give_the_streams_the_cached_runs_used():
    """Training data come from seed + 1000, validation batches from the fixed seed 10_000."""
    from memtutor.controller import TRAIN_DATA, VALIDATION_SEED, validation_batches

    for seed in (0, 2):
        want = copy_task(4, 1, 10, 8, generator=torch.Generator().manual_seed(seed + 1000))
        got = copy_task(4, 1, 10, 8, generator=generator(seed, TRAIN_DATA))
        torch.testing.assert_close(tuple(got), tuple(want))
    short, long = validation_batches(CopyTrainConfig())
    gen = torch.Generator().manual_seed(VALIDATION_SEED)
    torch.testing.assert_close(tuple(short), tuple(copy_task(128, 1, 10, 8, generator=gen)))
    torch.testing.assert_close(tuple(long), tuple(copy_task(128, 11, 20, 8, generator=gen)))
    assert generator(20_000, nb02.TEST_BY_LENGTH).initial_seed() == 20_001
    assert generator(20_000, nb02.TEST_EXAMPLE).initial_seed() == 20_002


def _notebook_configs() -> dict:
    """Run notebook 02's parameters cell and the cell that builds CONFIG and TRAIN from it."""
    cells = json.loads((ROOT / "notebooks" / "02_memory_controller.ipynb").read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    params = parameters_cell("02_memory_controller.ipynb")
    build = next(src for src in code if src.lstrip().startswith("CONFIG = "))
    namespace = {"ControllerConfig": ControllerConfig, "CopyTrainConfig": CopyTrainConfig}
    for source in (params, build):
        exec(compile(ast.parse(source), "notebook 02", "exec"), namespace)
    return namespace


def test_cached_runs_hold_the_config_of_the_notebook_defaults():
    ns = _notebook_configs()
    assert ns["SEEDS"] == (0, 1, 2)
    for seed in ns["SEEDS"]:
        path = ROOT / "notebooks" / "checkpoints" / f"02_copy_seed{seed}.pt"
        cached = torch.load(path, weights_only=True)["config"]
        want = nb02.copy_run_config(seed, ns["CONFIG"], ns["TRAIN"], lstm_update_cap=ns["LSTM_UPDATE_CAP"])
        assert cached == config_dict(want)
        assert cached["fused"] == ["link"]
    # notebook 09 asks for seed 0 with the package defaults: the same configuration
    assert config_dict(
        nb02.copy_run_config(0, ControllerConfig(), CopyTrainConfig(), lstm_update_cap=300_000)
    ) == config_dict(nb02.copy_run_config(0, ns["CONFIG"], ns["TRAIN"], lstm_update_cap=ns["LSTM_UPDATE_CAP"]))


def test_cached_run_loads_without_training_and_a_changed_field_raises(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("must load, not train")

    monkeypatch.setattr(nb02, "train_copy_comparison", no_training)
    run = nb02.load_copy_run(0, ControllerConfig(), CopyTrainConfig(), lstm_update_cap=300_000)
    assert run["controller"]["loss"].shape == (2500,) and run["lstm_hidden"] == 79
    with pytest.raises(ValueError, match="controller.hidden_size: cached 64, asked 32"):
        nb02.load_copy_run(0, ControllerConfig(hidden_size=32), CopyTrainConfig(), lstm_update_cap=300_000)
    with pytest.raises(ValueError, match="lstm_update_cap"):
        nb02.load_copy_run(0, ControllerConfig(), CopyTrainConfig(), lstm_update_cap=1000)
    changed = nb02.copy_run_config(0, ControllerConfig(), CopyTrainConfig(), lstm_update_cap=300_000, fused=False)
    assert config_dict(changed)["fused"] == []


@pytest.mark.slow
def test_load_copy_run_trains_saves_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    seed = 7  # no cached file of this seed anywhere
    run = nb02.load_copy_run(seed, TINY, TINY_TRAIN, lstm_update_cap=6)
    assert (tmp_path / f"02_copy_seed{seed}.pt").is_file()
    assert run["controller"]["loss"].shape == (3,) and "3" in run["lstm"]["snapshots"]

    def no_training(*args, **kwargs):
        raise AssertionError("must load, not train")

    monkeypatch.setattr(nb02, "train_copy_comparison", no_training)
    again = nb02.load_copy_run(seed, TINY, TINY_TRAIN, lstm_update_cap=6)
    torch.testing.assert_close(again["controller"]["loss"], run["controller"]["loss"])
    models = nb02.load_copy_models(again, TINY, TINY_TRAIN.num_updates)
    assert set(models) == {"memory model", "LSTM, same updates", "LSTM, same wall time"}


@pytest.mark.slow
def test_comparison_trains_the_controller_with_the_cached_implementation(monkeypatch):
    built = []
    original = nb02.MemoryController

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        built.append(model.fused)
        return model

    monkeypatch.setattr(nb02, "MemoryController", spy)
    nb02.train_copy_comparison(0, TINY, TINY_TRAIN, lstm_update_cap=4)
    assert built == [frozenset(nb02.CACHED_FUSED)]


def test_heldout_table_helpers(capsys):
    torch.manual_seed(0)
    models = {s: {"memory model": MemoryController(TINY), "LSTM": LSTMBaseline(3, 2, 5)} for s in (0, 1)}
    batches = {"short": copy_task(4, 1, 2, 2, generator=torch.Generator().manual_seed(1))}
    results = nb02.heldout_bit_errors(models, batches)
    assert set(results) == {("memory model", "short"), ("LSTM", "short")}
    assert results["LSTM", "short"].shape == (2,)
    nb02.print_heldout_table(results, ["lengths 1-2"])
    out = capsys.readouterr().out
    assert "over 2 seeds" in out and "lengths 1-2:" in out


# --------------------------------------------------------------------------- bad input: a clear ValueError


def _snapshot_state(state: ControllerState) -> list[torch.Tensor]:
    return [t.clone() for t in (state.hidden, state.cell, state.read_vectors, *state.memory)]


@pytest.mark.parametrize(
    ("spoil", "match"),
    [
        (lambda s: s._replace(memory=mem.initial_state(3, SMALL.num_slots + 2, SMALL.word_size, SMALL.num_reads)),
         r"prev_state.memory.memory has shape \(3, 8, 4\), expected \(3, 6, 4\)"),
        (lambda s: s._replace(read_vectors=torch.zeros(3, SMALL.num_reads + 1, SMALL.word_size)),
         r"prev_state.read_vectors has shape \(3, 3, 4\), expected \(3, 2, 4\)"),
        (lambda s: s._replace(hidden=s.hidden.double()), "prev_state.hidden is torch.float64"),
        (lambda s: s._replace(memory=s.memory._replace(usage=s.memory.usage + 2.0)), "usage must be in"),
        (lambda s: tuple(s), "prev_state must be a ControllerState"),
    ],
)  # fmt: skip
def test_state_that_does_not_fit_the_config_is_rejected(spoil, match):
    """A state whose memory has another N (or R, dtype, range) than the config used to run silently
    or fail with a cryptic RuntimeError; now forward and step name the field and leave it as it was."""
    model = _model()
    x = torch.randn(3, 4, SMALL.input_size)
    state = spoil(model.initial_state(3))
    before = _snapshot_state(state) if isinstance(state, ControllerState) else None
    params = [p.detach().clone() for p in model.parameters()]
    for call in (lambda: model(x, state), lambda: model.step(x[:, 0], state)):
        with pytest.raises(ValueError, match=match):
            call()
    if before is not None:
        assert all(torch.equal(a, b) for a, b in zip(_snapshot_state(state), before, strict=True))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))


def test_inputs_in_another_dtype_are_named():
    model = _model()
    with pytest.raises(ValueError, match="inputs is torch.float64 on cpu but the model's parameters are torch.float32"):
        model(torch.randn(2, 3, SMALL.input_size, dtype=torch.float64))
    with pytest.raises(ValueError, match="x is torch.float64"):
        model.step(torch.randn(2, SMALL.input_size, dtype=torch.float64), model.initial_state(2))
    with pytest.raises(ValueError, match="inputs is torch.float64"):
        LSTMBaseline(SMALL.input_size, 4, 8)(torch.randn(2, 3, SMALL.input_size, dtype=torch.float64))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ControllerConfig(clip_value="20"), "clip_value must be a number > 0, got clip_value='20'"),
        (lambda: ControllerConfig(clip_value=float("nan")), "clip_value"),
        (lambda: ControllerConfig(allocation=1), "allocation must be True or False"),
        (lambda: CopyTrainConfig(learning_rate="1e-3"), "learning_rate must be a finite number"),
        (lambda: CopyTrainConfig(max_seconds=float("nan")), "max_seconds"),
        (lambda: MemoryController({"num_slots": 4}), "config must be a ControllerConfig"),
    ],
)
def test_config_values_of_the_wrong_type_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()
    assert ControllerConfig(clip_value=float("inf")).clip_value == float("inf")  # no clipping is allowed
