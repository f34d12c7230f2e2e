"""Tests for memtutor.controller: interface, gradients, batch independence, training path, checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from memtutor import memory as mem
from memtutor.controller import (
    ControllerConfig,
    CopyTrainConfig,
    LSTMBaseline,
    MemoryController,
    baseline_hidden_size,
    compile_step,
    count_parameters,
    evaluate_copy,
    memory_access,
    train_copy,
    train_copy_comparison,
    with_access,
)
from memtutor.tasks import copy_task, masked_bce_loss

ROOT = Path(__file__).resolve().parents[1]
SMALL = ControllerConfig(input_size=5, output_size=4, hidden_size=12, num_slots=6, word_size=4, num_reads=2)
from memtutor.utils import set_threads

set_threads()  # 1 thread: torch's default of 2 stalls small ops on a 2-core machine


def _model(config=SMALL, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return MemoryController(config).to(dtype)


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


def test_memory_access_with_switches_on_is_the_package_step():
    model = _model()
    state = model.initial_state(3)
    for t in range(3):  # a few steps so that usage, links and reads are non-trivial
        _, state, it = model.step(torch.randn(3, SMALL.input_size), state)
    reads, nxt = memory_access(it, state.memory)
    reads2, nxt2 = mem.memory_step(it, state.memory)
    torch.testing.assert_close(reads, reads2)
    for a, b in zip(nxt, nxt2):
        torch.testing.assert_close(a, b)


def test_ablations_change_only_what_they_should():
    model = _model()
    state = model.initial_state(3)
    for t in range(3):
        _, state, it = model.step(torch.randn(3, SMALL.input_size), state)
    full_reads, full = memory_access(it, state.memory)
    # links off: read weights are pure content weights on the new memory
    _, no_links = memory_access(it, state.memory, links=False)
    torch.testing.assert_close(no_links.memory, full.memory)
    content = mem.content_weights(no_links.memory, it.read_keys, it.read_strengths)
    torch.testing.assert_close(no_links.read_weights, content)
    # allocation off: write weights are the write gate times the content weighting
    _, no_alloc = memory_access(it, state.memory, allocation=False)
    c_w = mem.content_weights(state.memory.memory, it.write_key[:, None], it.write_strength[:, None])[:, 0]
    torch.testing.assert_close(no_alloc.write_weights, it.write_gate[:, None] * c_w)
    # with_access copies the weights and switches the memory
    ablated = with_access(model, links=False)
    assert ablated.config.links is False and ablated.config.allocation is True
    for (n, p), (_, q) in zip(model.named_parameters(), ablated.named_parameters()):
        assert torch.equal(p, q), n


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


def test_comparison_runs_both_models_and_round_trips(tmp_path):
    cfg = ControllerConfig(hidden_size=8, num_slots=4, word_size=4, num_reads=1, input_size=3, output_size=2)
    train = CopyTrainConfig(num_updates=4, batch_size=4, max_length=2, width=2, eval_every=4, eval_size=4)
    res = train_copy_comparison(0, cfg, train, lstm_update_cap=20)
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
    no_mask = lambda lg, tg, m: ((lg > 0) != (tg > 0.5)).float().sum(dim=(1, 2))
    wrong_threshold = lambda lg, tg, m: (((lg > 0.5) != (tg > 0.5)).float() * m[..., None]).sum(dim=(1, 2))
    total = lambda lg, tg, m: bits_error(lg, tg, m).sum()

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
    for a, b in zip(final.memory, state.memory):
        torch.testing.assert_close(a, b)
    bad = model.initial_state(3)
    nan_memory = bad.memory.memory.clone()
    nan_memory[1, 2, 0] = float("nan")
    bad = bad._replace(memory=bad.memory._replace(memory=nan_memory))
    with pytest.raises(ValueError, match="prev_state.memory contains NaN"):
        model(x, bad)
    wrong = model.initial_state(3)
    wrong = wrong._replace(memory=wrong.memory._replace(link=torch.zeros(3, SMALL.num_slots, SMALL.num_slots + 1)))
    with pytest.raises(ValueError, match="prev_state.link must have shape"):
        model(x, wrong)
    for ablated in (with_access(model, links=False), with_access(model, allocation=False)):
        with pytest.raises(ValueError, match="prev_state.memory contains NaN"):
            ablated(x, bad)


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
    for got, want in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="MemoryController"):
        compile_step(torch.nn.Linear(2, 2))
