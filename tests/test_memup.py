"""Tests for memtutor.memup (notebook 07) and its exercise checks."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from notebook_cells import notebook_parameters as run_parameters_cell

from memtutor import memup as mu
from memtutor.experiments import nb07_memup as xp
from memtutor.utils import RESULT_FORMAT, config_dict, derive_seed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- the copy task


def test_copy_task_targets():
    g = torch.Generator().manual_seed(0)
    x, y = mu.memup_copy_task(5, 3, 7, g)
    assert x.shape == y.shape == (5, 13)
    head = x[:, :3]
    assert ((head >= 0) & (head < mu.ALPHABET)).all()
    assert (x[:, 3:10] == mu.FILLER).all() and (x[:, 10:] == mu.RECALL).all()
    assert (y[:, :10] == mu.BLANK).all()
    torch.testing.assert_close(y[:, 10:], head)
    mask = mu.recall_mask(3, 7)
    assert mask.tolist() == [False] * 10 + [True] * 3


def test_copy_task_is_seeded_and_varied():
    a, _ = mu.memup_copy_task(64, 4, 2, torch.Generator().manual_seed(1))
    b, _ = mu.memup_copy_task(64, 4, 2, torch.Generator().manual_seed(1))
    c, _ = mu.memup_copy_task(64, 4, 2, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    assert len(a[:, 0].unique()) > 4  # all symbols show up in 64 draws


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_copy_task_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="n_head"):
        mu.memup_copy_task(2, bad, 3, torch.Generator())


def test_local_windows_match_loop():
    x = torch.randint(0, 10, (3, 9), generator=torch.Generator().manual_seed(0))
    win = mu.local_windows(x, 4)
    assert win.shape == (3, 9, 4)
    for t in range(9):
        for j in range(4):
            s = t - 3 + j
            want = x[:, s] if s >= 0 else torch.full((3,), mu.PAD)
            torch.testing.assert_close(win[:, t, j], want)


# ----------------------------------------------------------------------------- target selection


def _naive_topk(u, steps, k):
    B, T = u.shape
    idx = torch.zeros(B, len(steps), k, dtype=torch.long)
    valid = torch.zeros(B, len(steps), k, dtype=torch.bool)
    for b in range(B):
        for p, t in enumerate(steps.tolist()):
            order = sorted(range(t, T), key=lambda j: -u[b, j].item())[:k]
            idx[b, p, : len(order)] = torch.tensor(order, dtype=torch.long)
            valid[b, p, : len(order)] = True
    return idx, valid


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 12), k=st.integers(1, 5), seed=st.integers(0, 999))
def test_select_targets_matches_naive_sort(B, T, k, seed):
    k = min(k, T)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, T, generator=g)  # continuous: no ties
    steps = torch.arange(0, T, 2)
    idx, valid = mu.select_targets(u, steps, k)
    want_idx, want_valid = _naive_topk(u, steps, k)
    assert idx.shape == valid.shape == (B, len(steps), k)
    torch.testing.assert_close(valid, want_valid)
    torch.testing.assert_close(idx[valid], want_idx[want_valid])
    assert (idx[valid] >= steps.view(1, -1, 1).expand_as(idx)[valid]).all()


@pytest.mark.parametrize("T, r, k, every", [(50, 7, 3, 1), (23, 5, 4, 2), (9, 9, 3, 1), (12, 4, 12, 3)])
def test_rollout_targets_match_select_targets(T, r, k, every):
    u = torch.randn(3, T, generator=torch.Generator().manual_seed(T))
    starts = []
    for tg in mu.rollout_targets(u, r, k, every):
        starts.append(tg.start)
        torch.testing.assert_close(tg.local, torch.arange(0, min(r, T - tg.start), every))
        gathered = tg.candidates.gather(1, tg.pos.flatten(1)).view_as(tg.idx)
        torch.testing.assert_close(gathered, tg.idx)
        want_idx, want_valid = mu.select_targets(u, tg.local + tg.start, k)
        torch.testing.assert_close(tg.valid, want_valid)
        torch.testing.assert_close(tg.idx[tg.valid], want_idx[want_valid])
    assert starts == list(range(0, T, r))


def test_rollout_targets_reject_short_sequences():
    with pytest.raises(ValueError, match="shorter than one rollout"):
        list(mu.rollout_targets(torch.zeros(1, 4), 5, 1))


def test_predictor_candidates_path_matches_direct_path():
    torch.manual_seed(0)
    pred = mu.Predictor(window=3, embed=2, hidden=4)
    x, _ = mu.memup_copy_task(2, 2, 9, torch.Generator().manual_seed(0))
    win = mu.local_windows(x, 3)
    tg = next(mu.rollout_targets(torch.rand(2, 13), 5, 3))
    m = torch.randn(2, len(tg.local), 4)
    cand_win = mu.gather_steps(win, tg.candidates.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(pred.forward_candidates(m, cand_win, tg.pos), pred(m, mu.gather_steps(win, tg.idx)))


def test_select_targets_finds_the_spikes():
    u = torch.zeros(2, 20)
    u[:, [3, 15, 17]] = torch.tensor([5.0, 4.0, 6.0])
    idx, valid = mu.select_targets(u, torch.tensor([0, 4, 16]), 2)
    assert valid.all()
    assert idx[0, 0].tolist() == [17, 3]
    assert idx[0, 1].tolist() == [17, 15]  # step 3 lies in the past of t = 4
    assert idx[0, 2, 0].item() == 17


def test_select_random_targets_are_future_and_distinct():
    g = torch.Generator().manual_seed(0)
    u = torch.zeros(4, 30)
    steps = torch.tensor([0, 10, 27, 29])
    idx, valid = mu.select_random_targets(u, steps, 3, g)
    assert idx.shape == (4, 4, 3)
    assert (idx[valid] >= steps.view(1, -1, 1).expand_as(idx)[valid]).all()
    assert valid[:, :3].all() and valid[:, 3].sum(-1).eq(1).all()  # t = 29: one future step
    assert all(len(set(r.tolist())) == 3 for r in idx[:, 0])


@pytest.mark.parametrize("k", [0, -2])
def test_select_targets_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be"):
        mu.select_targets(torch.zeros(1, 5), torch.tensor([0]), k)


def test_select_targets_rejects_steps_outside():
    with pytest.raises(ValueError, match="steps must lie"):
        mu.select_targets(torch.zeros(1, 5), torch.tensor([5]), 1)
    with pytest.raises(ValueError, match="exceeds the sequence length"):
        mu.select_targets(torch.zeros(1, 5), torch.tensor([0]), 6)


def test_gather_steps_matches_loop():
    v = torch.randn(2, 7, 3)
    idx = torch.tensor([[[0, 6], [2, 2]], [[1, 5], [4, 3]]])
    out = mu.gather_steps(v, idx)
    assert out.shape == (2, 2, 2, 3)
    for b in range(2):
        for p in range(2):
            for q in range(2):
                torch.testing.assert_close(out[b, p, q], v[b, idx[b, p, q]])


# ----------------------------------------------------------------------------- rollouts


def test_gradients_do_not_cross_rollout_boundaries():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, batch_first=True)
    inputs = torch.randn(2, 12, 3, requires_grad=True)
    chunks = list(mu.rollouts(lstm, inputs, 4))
    assert [c.start for c in chunks] == [0, 4, 8]
    chunks[2].outputs.sum().backward()  # a loss in the third rollout's window
    assert inputs.grad[:, :8].abs().max() == 0  # nothing reaches earlier rollouts
    assert inputs.grad[:, 8:].abs().min() > 0


def test_rollouts_carry_the_state_values():
    """The detached state must still carry the values forward: chunked == one pass."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, batch_first=True)
    inputs = torch.randn(2, 11, 3)
    whole, _ = lstm(inputs)
    parts = torch.cat([c.outputs for c in mu.rollouts(lstm, inputs, 4)], dim=1)
    torch.testing.assert_close(parts, whole)


@pytest.mark.parametrize("r", [0, -1])
def test_rollouts_reject_bad_r(r):
    with pytest.raises(ValueError, match="rollout must be"):
        list(mu.rollouts(torch.nn.LSTM(1, 1), torch.zeros(1, 5, 1), r))


def test_rollouts_reject_short_sequences():
    with pytest.raises(ValueError, match="shorter than one rollout"):
        list(mu.rollouts(torch.nn.LSTM(1, 1), torch.zeros(1, 5, 1), 6))


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(k=0), "k must be"),
        (dict(rollout=0), "rollout must be"),
        (dict(n_filler=10, n_head=2, rollout=20), "shorter than one rollout"),
        (dict(window=3, n_head=3), "window must exceed"),
        (dict(selection="best"), "selection must be"),
        (dict(ema_decay=1.0), "ema_decay"),
    ],
)
def test_config_rejects_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        mu.MemUPConfig(**changes)


# ----------------------------------------------------------------------------- modules


def test_forget_bias_init():
    lstm = torch.nn.LSTM(2, 4, num_layers=2)
    mu.init_forget_bias(lstm, 2.5)
    for layer in range(2):
        b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        torch.testing.assert_close(b[4:8], torch.full((4,), 2.5))


def test_ema_update():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    wa, wb = a.weight.clone(), b.weight.clone()
    mu.ema_update(a, b, 0.75)
    torch.testing.assert_close(a.weight, 0.75 * wa + 0.25 * wb)


def test_detector_surprise_shape_and_value():
    det = mu.Detector(window=4, embed=3, hidden=5)
    x, y = mu.memup_copy_task(2, 2, 5, torch.Generator().manual_seed(0))
    s = mu.surprise(det, x, y)
    assert s.shape == (2, 9)
    logp = torch.log_softmax(det(x), -1)
    torch.testing.assert_close(s, -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1))


def test_surprise_from_windows_keeps_context_before_a_chunk():
    torch.manual_seed(0)
    det = mu.Detector(window=4, embed=3, hidden=5)
    x, y = mu.memup_copy_task(3, 2, 10, torch.Generator().manual_seed(0))  # T = 14
    whole = mu.surprise(det, x, y)
    win = mu.local_windows(x, 4)
    torch.testing.assert_close(mu.surprise_from_windows(det, win, y), whole)
    torch.testing.assert_close(mu.surprise_from_windows(det, win[:, 1:7], y[:, 1:7]), whole[:, 1:7])
    # windows of the chunk alone pad the steps before it: the scores differ from the whole sequence's
    assert not torch.allclose(mu.surprise(det, x[:, 1:7], y[:, 1:7]), whole[:, 1:7])
    with pytest.raises(ValueError, match="y"):
        mu.surprise_from_windows(det, win, y[:, :5])


def test_memup_update_trains_the_detector_on_whole_sequence_windows():
    # With learning rate 0 nothing changes between rollouts, so the reported detector loss must be
    # the mean surprise of the whole sequences (each chunk scored with its real preceding inputs).
    torch.manual_seed(0)
    cfg = mu.MemUPConfig(n_head=2, k=2, n_filler=16, rollout=5, window=4, hidden=8, embed=4, batch=4)
    nets, det_ema, _ = mu.make_memup(cfg)
    opts = {
        name: torch.optim.SGD(params, lr=0.0)
        for name, params in (
            ("memory", list(nets["memory"].parameters()) + list(nets["predictor"].parameters())),
            ("detector", nets["detector"].parameters()),
        )
    }
    x, y = mu.memup_copy_task(4, 2, 16, torch.Generator().manual_seed(0))  # T = 20: four rollouts of 5
    out = mu.memup_update(nets, det_ema, opts, x, y, cfg)
    expected = mu.surprise(nets["detector"], x, y).mean().item()
    assert out["detector_loss"] == pytest.approx(expected, rel=1e-5)


def test_random_selection_sees_the_same_training_data_as_memup(monkeypatch):
    cfg = mu.MemUPConfig(**{**TINY, "batches": 2})
    seen = {}
    real = mu.memup_copy_task
    for selection in ("topk", "random"):
        batches = seen[selection] = []

        def spy(*args, batches=batches, **kwargs):
            batches.append(real(*args, **kwargs))
            return batches[-1]

        monkeypatch.setattr(mu, "memup_copy_task", spy)
        mu.train_memup(replace(cfg, selection=selection), seed=3)
    assert len(seen["topk"]) == len(seen["random"]) == 2
    for a, b in zip(seen["topk"], seen["random"], strict=True):
        torch.testing.assert_close(a, b)


def test_seed_purposes_keep_the_numbers_of_the_cached_runs():
    assert derive_seed(1, mu.TRAIN_DATA_SEED) == 1
    assert derive_seed(1, mu.RANDOM_TARGETS_SEED) == 1 + 7_919


def test_predictor_and_loss_gradcheck_float64():
    torch.manual_seed(0)
    pred = mu.Predictor(window=3, embed=2, hidden=4).double()
    x, y = mu.memup_copy_task(2, 2, 4, torch.Generator().manual_seed(0))
    win = mu.local_windows(x, 3)
    u = torch.rand(2, 8, dtype=torch.float64)
    sel = mu.select_targets(u, torch.tensor([0, 2]), 2)
    h = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)

    def f(h):
        return mu.memup_rollout_loss(pred, h, win, y, sel, torch.tensor([0, 2]))

    assert torch.autograd.gradcheck(f, (h,))


def test_memup_logits_shapes():
    cfg = mu.MemUPConfig(n_head=2, k=2, n_filler=20, rollout=5, window=4, hidden=8, embed=4)
    nets = mu.build_memup(cfg)
    x, y = mu.memup_copy_task(3, 2, 20, torch.Generator().manual_seed(0))
    steps = mu.recall_mask(2, 20).nonzero().squeeze(1)
    logits = mu.memup_logits(nets["memory"], nets["predictor"], x, steps)
    assert logits.shape == (3, 2, mu.N_CLASSES)
    acc = mu.recall_accuracy(logits, y[:, steps])
    assert 0.0 <= acc <= 1.0
    model = mu.build_recurrent(cfg)
    assert mu.recurrent_logits(model, x, steps).shape == (3, 2, mu.N_CLASSES)


def test_recall_accuracy_counts():
    logits = torch.zeros(1, 4, 3)
    logits[0, [0, 1, 2, 3], [0, 1, 2, 0]] = 1.0
    assert mu.recall_accuracy(logits, torch.tensor([[0, 1, 0, 0]])) == 0.75
    with pytest.raises(ValueError, match="target must have shape"):
        mu.recall_accuracy(logits, torch.zeros(1, 3, dtype=torch.long))


# ----------------------------------------------------------------------------- training paths


TINY = dict(
    n_head=1, k=1, n_filler=8, rollout=5, window=3, hidden=16, embed=4, batch=32, batches=60, pred_every=1, lr=1e-2
)


@pytest.mark.slow
def test_train_memup_loss_falls():
    cfg = mu.MemUPConfig(**TINY)
    out = mu.train_memup(cfg, seed=1)
    loss = out["memup_loss"]
    assert loss.shape == (60,)
    assert loss[-8:].mean() < 0.6 * loss[:8].mean()
    assert out["detector_loss"][-8:].mean() < 0.5 * out["detector_loss"][:8].mean()
    nets = mu.build_memup(cfg)
    for name in ("detector", "memory", "predictor"):
        nets[name].load_state_dict(out[name])


def test_train_memup_random_selection_runs():
    cfg = mu.MemUPConfig(**{**TINY, "batches": 3, "selection": "random"})
    out = mu.train_memup(cfg, seed=0)
    assert torch.isfinite(out["memup_loss"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("rollout", [None, 10])
def test_train_tbptt_loss_falls(rollout):
    cfg = mu.MemUPConfig(**{**TINY, "batches": 25})
    out = mu.train_tbptt(cfg, seed=0, rollout=rollout)
    assert out["loss"][-5:].mean() < 0.5 * out["loss"][:5].mean()
    model = mu.build_recurrent(cfg)
    model.load_state_dict({k: v for k, v in out.items() if k != "loss"})


# ----------------------------------------------------------------------------- cost


def test_saved_bytes_grow_with_bptt_length_not_with_rollouts():
    torch.manual_seed(0)
    model = mu.RecurrentClassifier(embed=4, hidden=8)

    def full(T):
        x = torch.zeros(2, T, dtype=torch.long)
        return xp.saved_tensor_bytes(lambda: model(x)[0].sum())[1]

    a, b = full(50), full(200)
    assert b > 3 * a
    win = mu.local_windows(torch.zeros(2, 200, dtype=torch.long), 3)
    assert xp.saved_tensor_bytes(lambda: (win.float() * 2).sum())[1] == 0  # leaf ints: none


# ----------------------------------------------------------------------------- benchmark


@pytest.mark.slow
def test_benchmark_quick_runs():
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "memup.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert "full BPTT" in res.stdout and "MemUP" in res.stdout


def test_filler_schedule_is_a_length_curriculum():
    cfg = mu.MemUPConfig(n_head=2, k=2, n_filler=50, rollout=5, batches=5, warmup_batches=2, warmup_filler=10)
    assert mu.filler_schedule(cfg) == [10, 10, 50, 50, 50]
    assert mu.filler_schedule(replace(cfg, warmup_batches=0)) == [50] * 5
    assert mu.filler_schedule(replace(cfg, warmup_filler=50)) == [50] * 5  # not shorter: no warm-up
    with pytest.raises(ValueError, match="warmup_batches"):
        replace(cfg, warmup_batches=6)
    with pytest.raises(ValueError, match="warmup_batches"):
        replace(cfg, warmup_batches=-1)
    with pytest.raises(ValueError, match="shorter than one rollout"):
        replace(cfg, warmup_filler=1, rollout=8)


@pytest.mark.parametrize("method", ["memup", "bptt"])
def test_training_follows_the_curriculum(method, monkeypatch):
    seen = []
    real = mu.memup_copy_task

    def spy(batch, n_head, n_filler, generator, device=None):
        seen.append(n_filler)
        return real(batch, n_head, n_filler, generator, device)

    monkeypatch.setattr(mu, "memup_copy_task", spy)
    cfg = mu.MemUPConfig(**{**TINY, "n_filler": 12, "batches": 3, "warmup_batches": 2, "warmup_filler": 6})
    out = xp.train_method(method, cfg, seed=0)
    assert seen == [6, 6, 12]
    assert len(out["memup_loss" if method == "memup" else "loss"]) == 3


# ----------------------------------------------------------------------------- notebook 07's cached runs

NOTEBOOK = ROOT / "notebooks" / "07_memup.ipynb"
CHECKPOINTS = ROOT / "notebooks" / "checkpoints"


def notebook_parameters(**changes) -> dict:
    """The notebook's ``parameters`` cell, executed, with ``changes`` applied (as a learner edits it)."""
    return run_parameters_cell(NOTEBOOK.name, **changes)


def notebook_runs(ns: dict) -> list[tuple[str, int, float | None]]:
    """The (method, fillers, forget bias) of every run the notebook loads (sections 7 and 8)."""
    runs = [(method, L, None) for L in ns["LENGTHS"] for method in ("memup", "tbptt", "bptt")]
    return runs + [("random", ns["N_FILLER"], None), ("memup", ns["N_FILLER"], 0.0)]


def committed_training_runs() -> list[str]:
    """The committed runs of sections 7 and 8 (not the equal-budget study's ``07_eq_*`` files, the
    resident-memory and cost measurements ``07_rss_*``, ``07_cost_*`` nor the ``*_seed<n>`` files of the extra training
    seeds and the recipe study)."""
    return [
        p.name
        for p in CHECKPOINTS.glob("07_*.pt")
        if not p.name.startswith(("07_eq_", "07_rss_", "07_cost_")) and "_seed" not in p.name
    ]


def committed_config(name: str) -> dict:
    data = torch.load(CHECKPOINTS / name, weights_only=True, map_location="cpu")
    assert data["format"] == RESULT_FORMAT
    return data["config"]


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """Training raises, and anything saved goes to a temporary folder searched first (the clone's
    committed files stay untouched)."""
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))

    def refuse(*args, **kwargs):
        raise AssertionError("training was started")

    monkeypatch.setattr(xp, "train_method", refuse)
    return tmp_path


def test_base_config_reads_the_notebook_parameters():
    ns = notebook_parameters()
    base = xp.base_config(ns)
    assert (base.n_head, base.n_filler, base.hidden, base.lr, base.batches) == (
        ns["N_HEAD"],
        ns["N_FILLER"],
        ns["HIDDEN"],
        ns["LR"],
        ns["BATCHES"],
    )
    with pytest.raises(ValueError, match="LR"):
        xp.base_config({k: v for k, v in ns.items() if k != "LR"})


def test_committed_runs_record_the_config_the_notebook_builds():
    ns = notebook_parameters()
    base = xp.base_config(ns)
    names = set()
    for method, L, fb in notebook_runs(ns):
        cfg = replace(base, n_filler=L, **({} if fb is None else {"forget_bias": fb}))
        name = xp.run_name(method, cfg, base)
        names.add(name)
        assert committed_config(name) == config_dict(xp.run_config(method, cfg, ns["TRAIN_SEED"])), name
    assert names == set(committed_training_runs())
    assert len(names) == 11
    recorded = committed_config("07_memup_L1000_fb0.pt")
    assert recorded["method"] == "memup" and recorded["train_seed"] == ns["TRAIN_SEED"] == 1
    assert recorded["config"]["forget_bias"] == 0.0 and recorded["config"]["n_filler"] == 1000


@pytest.mark.slow
def test_committed_runs_reproduce_their_first_batches():
    """The recorded config is the one that made each file: training it again for two batches
    (the warm-up length, a few seconds) gives the recorded first two losses."""
    for name in sorted(committed_training_runs()):
        data = torch.load(CHECKPOINTS / name, weights_only=True)
        method, seed = data["config"]["method"], data["config"]["train_seed"]
        cfg = mu.MemUPConfig(**data["config"]["config"])
        short = replace(cfg, batches=2, warmup_batches=min(cfg.warmup_batches, 2))
        out = xp.train_method(method, short, seed)
        key = "memup_loss" if method in ("memup", "random") else "loss"
        torch.testing.assert_close(out[key], data["result"][key][:2], rtol=1e-4, atol=1e-5, msg=name)


def test_unchanged_parameters_load_every_run_without_training(no_training):
    ns = notebook_parameters()
    base = xp.base_config(ns)
    for method, L, fb in notebook_runs(ns):
        cfg, state, _ = xp.run(method, L, base, seed=ns["TRAIN_SEED"], forget_bias=fb, progress=False)
        assert cfg.n_filler == L
        assert len(state["memup_loss" if method in ("memup", "random") else "loss"]) == ns["BATCHES"]
    assert not any(no_training.iterdir())


@pytest.mark.parametrize(
    "change, field",
    [({"LR": 3e-3}, "config.lr"), ({"TRAIN_SEED": 2}, "train_seed"), ({"HIDDEN": 64}, "config.hidden")],
)
def test_a_changed_parameter_cannot_load_the_long_run(no_training, change, field):
    """The learner's path: edit the parameters cell, run the notebook. MemUP at L = 1000 (about
    4 minutes to train) stops with an error naming the changed field instead of loading."""
    ns = notebook_parameters(**change)
    base = xp.base_config(ns)
    assert xp.training_minutes("memup", base) > 3
    with pytest.raises(ValueError, match=field) as err:
        xp.run("memup", ns["N_FILLER"], base, seed=ns["TRAIN_SEED"], progress=False)
    assert "RETRAIN = True" in str(err.value)


def test_a_changed_lr_retrains_a_quick_run_and_says_why(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    calls = []

    def fake_train(method, cfg, seed, progress=False):
        calls.append((method, cfg.lr, cfg.n_filler, seed))
        return {"loss": torch.zeros(3)}

    monkeypatch.setattr(xp, "train_method", fake_train)
    committed = (CHECKPOINTS / "07_tbptt_L100.pt").read_bytes()
    ns = notebook_parameters(LR=3e-3)
    base = xp.base_config(ns)
    cfg, state, _ = xp.run("tbptt", 100, base, seed=ns["TRAIN_SEED"], progress=False)
    assert xp.training_minutes("tbptt", cfg) <= 3
    assert calls == [("tbptt", 3e-3, 100, 1)]
    assert "config.lr: cached 0.001, asked 0.003" in capsys.readouterr().out
    torch.testing.assert_close(state["loss"], torch.zeros(3))
    assert committed_config("07_tbptt_L100.pt")["config"]["lr"] == 1e-3  # the committed file is untouched
    assert (CHECKPOINTS / "07_tbptt_L100.pt").read_bytes() == committed
    assert (tmp_path / "07_tbptt_L100.pt").is_file()
    # the retrained result now loads for the changed parameters, the committed one for the defaults
    monkeypatch.setattr(xp, "train_method", lambda *a, **k: pytest.fail("trained again"))
    xp.run("tbptt", 100, base, seed=ns["TRAIN_SEED"], progress=False)
    xp.run("tbptt", 100, xp.base_config(notebook_parameters()), seed=1, progress=False)


def test_training_minutes_match_the_measured_runs():
    """Only the MemUP runs at L = 1000 (233 s measured) exceed 3 minutes; all eleven add up to about 19."""
    ns = notebook_parameters()
    base = xp.base_config(ns)
    minutes = {}
    for method, L, fb in notebook_runs(ns):
        cfg = replace(base, n_filler=L, **({} if fb is None else {"forget_bias": fb}))
        minutes[xp.run_name(method, cfg, base)] = xp.training_minutes(method, cfg)
    slow = {name for name, m in minutes.items() if m > 3}
    assert slow == {"07_memup_L1000.pt", "07_random_L1000.pt", "07_memup_L1000_fb0.pt"}
    assert 3.5 <= minutes["07_memup_L1000.pt"] <= 4.5
    assert 15 <= sum(minutes.values()) <= 23


@pytest.mark.slow
def test_run_trains_saves_and_then_loads(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    base = mu.MemUPConfig(**{**TINY, "batches": 3})
    cfg, first, _ = xp.run("memup", 8, base, seed=0, progress=False)
    assert (tmp_path / "07_memup_L8.pt").is_file() and len(first["memup_loss"]) == 3
    monkeypatch.setattr(xp, "train_method", lambda *a, **k: pytest.fail("trained again"))
    _, again, _ = xp.run("memup", 8, base, seed=0, progress=False)
    torch.testing.assert_close(again["memory"], first["memory"])
    state = xp.evaluate_method("memup", again, cfg, 8, 16, torch.Generator().manual_seed(0))
    assert 0.0 <= state <= 1.0


def test_train_method_rejects_unknown_methods():
    with pytest.raises(ValueError, match="method must be one of"):
        xp.train_method("lstm", mu.MemUPConfig(**TINY), seed=0)


# ----------------------------------------------------------------------------- cost and tables


def test_peak_saved_bytes_counts_without_changing_the_update():
    cfg = mu.MemUPConfig(**{**TINY, "n_filler": 13})  # T = 15: three rollouts of 5
    x, y = mu.memup_copy_task(4, 1, 13, torch.Generator().manual_seed(0))
    results = []
    for run_forward in (None, xp.PeakSavedBytes()):
        torch.manual_seed(0)
        nets, det_ema, opts = mu.make_memup(cfg)
        results.append(mu.memup_update(nets, det_ema, opts, x, y, cfg, None, run_forward))
    assert results[0] == pytest.approx(results[1])
    assert run_forward.bytes > 0


@pytest.fixture
def denormals_back_on():
    """measure_cost leaves denormals flushed (as notebook 07 wants); other tests in this process
    (hypothesis's float strategies among them) need them back."""
    yield
    torch.set_flush_denormal(False)


def test_measure_cost_memup_flat_bptt_grows(denormals_back_on):
    base = mu.MemUPConfig(n_head=2, k=2, hidden=8, embed=4, rollout=10)
    cost = xp.measure_cost(base, (40, 160), batch=2, repeats=1)
    assert set(cost) == {(m, T) for m in ("memup", "bptt", "bptt_denormal") for T in (40, 160)}
    assert cost["memup", 160]["saved_bytes"] == cost["memup", 40]["saved_bytes"]
    assert cost["bptt", 160]["saved_bytes"] > 3 * cost["bptt", 40]["saved_bytes"]
    table = xp.cost_table(cost, (40, 160)).splitlines()
    assert table[0].split("|")[0].strip() == "T" and len(table) == 4
    assert table[-1].startswith("at T = 160: MemUP / full BPTT time per pass = ")
    with pytest.raises(ValueError, match="method must be"):
        xp.update_cost(replace(base, n_filler=36), "tbptt")


def test_accuracy_table_rows():
    acc = {(m, L): 0.5 for m in ("memup", "tbptt", "bptt") for L in (10, 20)} | {("random", 20): 0.125}
    lines = xp.accuracy_table(acc, (10, 20), n_head=3, n_filler=20).splitlines()
    assert lines[1].split() == ["16", "|", "0.500", "|", "0.500", "|", "0.500"]
    assert lines[-1] == "MemUP with random targets at 26: 0.125  (chance 1/8 = 0.125)"


# ----------------------------------------------------------------------------- equal budgets, peak memory


def test_tbptt_update_loss_mask_steps_only_where_the_loss_is():
    torch.manual_seed(0)
    model = mu.RecurrentClassifier(embed=4, hidden=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = mu.memup_copy_task(3, 2, 14, torch.Generator().manual_seed(0))  # T = 18: rollouts of 5, 5, 5, 3
    mask = mu.recall_mask(2, 14)
    out = mu.tbptt_update(model, opt, x, y, 5, 1.0, loss_mask=mask)
    assert out["steps"] == 1  # only the last rollout holds recall steps
    logits, _ = model(x)
    expected = torch.nn.functional.cross_entropy(logits[:, mask].transpose(1, 2), y[:, mask]).item()
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
    assert mu.tbptt_update(model, opt, x, y, 5, 1.0)["steps"] == 4
    steps_seen = []
    real_step = opt.step
    opt.step = lambda *a, **k: steps_seen.append(1) or real_step(*a, **k)
    mu.tbptt_update(model, opt, x, y, 5, 1.0, loss_mask=mask)
    assert len(steps_seen) == 1
    with pytest.raises(ValueError, match="loss_mask"):
        mu.tbptt_update(model, opt, x, y, 5, 1.0, loss_mask=torch.zeros(18, dtype=torch.bool))
    with pytest.raises(ValueError, match="loss_mask"):
        mu.tbptt_update(model, opt, x, y, 5, 1.0, loss_mask=mask[:-1])


def test_score_steps_matches_whole_sequence_scoring():
    torch.manual_seed(0)
    det = mu.Detector(window=4, embed=4, hidden=8)
    x, y = mu.memup_copy_task(3, 2, 40, torch.Generator().manual_seed(1))
    win = mu.local_windows(x, 4)
    whole = mu.surprise_from_windows(det, win, y).detach()
    for chunk in (1, 7, 44, 100):
        torch.testing.assert_close(mu.score_steps(det, win, y, chunk), whole)
    assert not mu.score_steps(det, win, y).requires_grad
    with pytest.raises(ValueError, match="chunk"):
        mu.score_steps(det, win, y, 0)


def test_memup_update_counts_one_step_per_rollout():
    cfg = mu.MemUPConfig(**{**TINY, "n_filler": 13})  # T = 15: three rollouts of 5
    x, y = mu.memup_copy_task(4, 1, 13, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    nets, det_ema, opts = mu.make_memup(cfg)
    assert mu.memup_update(nets, det_ema, opts, x, y, cfg)["steps"] == 3


def test_peak_allocated_bytes_sees_a_known_peak():
    def two_buffers():
        a = torch.ones(250_000)  # 1 MB
        b = a * 2  # a second MB while a is alive
        del a
        return (b + 1).sum()  # b + 1 is a new MB after a is gone: the peak stays at 2 MB

    out, peak = xp.peak_allocated_bytes(two_buffers)
    assert out.item() == 750_000
    assert 2_000_000 <= peak < 2_100_000


def test_peak_memory_of_an_update_is_flat_for_memup_and_grows_for_bptt():
    """The claim of notebook 07's section 9, at small sizes: the allocator's peak during a MemUP
    update grows by the (B, T) inputs, targets and surprise only (far under 100 bytes per step of
    each sequence); full BPTT's grows in proportion to T."""
    base = mu.MemUPConfig(n_head=2, k=2, hidden=16, embed=4, rollout=25, batch=4)
    peak = {
        (m, T): xp.update_cost(replace(base, n_filler=T - 4), m, repeats=0)["peak_bytes"]
        for m in ("memup", "bptt")
        for T in (200, 1200)
    }
    assert peak["memup", 1200] - peak["memup", 200] < 100 * 4 * 1000
    assert peak["bptt", 1200] > 4 * peak["bptt", 200]


def test_memup_step_budget_counts_rollouts_of_the_schedule():
    cfg = mu.MemUPConfig(n_head=2, k=2, n_filler=50, rollout=5, batches=5, warmup_batches=2, warmup_filler=10)
    assert xp.memup_step_budget(cfg) == (2 * 3 + 3 * 11, 2 * 3)  # T = 14 -> 3 rollouts, T = 54 -> 11
    assert xp.memup_step_budget(replace(cfg, warmup_batches=0)) == (55, 0)


@pytest.mark.parametrize("method", xp.EQUAL_METHODS)
def test_train_equal_steps_gives_every_method_memups_steps(method, monkeypatch):
    seen = []
    real = mu.memup_copy_task

    def spy(batch, n_head, n_filler, generator, device=None):
        seen.append(n_filler)
        return real(batch, n_head, n_filler, generator, device)

    monkeypatch.setattr(mu, "memup_copy_task", spy)
    cfg = mu.MemUPConfig(**{**TINY, "n_filler": 12, "batches": 3, "warmup_batches": 2, "warmup_filler": 6})
    total, warm = xp.memup_step_budget(cfg)  # T = 8 -> 2 rollouts, T = 14 -> 3: (7, 4)
    assert (total, warm) == (7, 4)
    out = xp.train_equal_steps(method, cfg, seed=0, val_seed=5, n_val=8, n_evals=3)
    assert out["steps"] == total
    train = seen[1:]  # the first call draws the validation sequences
    assert seen[0] == 12
    if method in ("memup", "tbptt"):  # a step per rollout: MemUP's own batches
        assert train == [6, 6, 12]
    else:  # one step per batch: as many batches as MemUP's steps, the curriculum kept in steps
        assert train == [6] * warm + [12] * (total - warm)
    curve = out["curve"]
    assert curve[0, 0] == 0 and curve[-1, 0] == total and curve.shape[1] == 3
    assert (curve[1:, 1] >= curve[:-1, 1]).all() and ((curve[:, 2] >= 0) & (curve[:, 2] <= 1)).all()
    with pytest.raises(ValueError, match="method must be one of"):
        xp.train_equal_steps("lstm", cfg, seed=0, val_seed=5)


def test_run_equal_caches_with_its_config(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    base = mu.MemUPConfig(**{**TINY, "batches": 2})
    cfg, first = xp.run_equal("tbptt_recall", 8, base, lr=3e-3, seed=0, val_seed=5, n_val=8, progress=False)
    assert cfg.lr == 3e-3 and (tmp_path / "07_eq_tbptt_recall_L8_lr0.003.pt").is_file()
    monkeypatch.setattr(xp, "train_equal_steps", lambda *a, **k: pytest.fail("trained again"))
    _, again = xp.run_equal("tbptt_recall", 8, base, lr=3e-3, seed=0, val_seed=5, n_val=8, progress=False)
    torch.testing.assert_close(again["curve"], first["curve"])
    saved = torch.load(tmp_path / "07_eq_tbptt_recall_L8_lr0.003.pt", weights_only=True)["config"]
    assert saved["val_seed"] == 5 and saved["train_seed"] == 0 and saved["config"]["lr"] == 3e-3
    # another training seed, cached under its own name: neither file is loaded for the other
    monkeypatch.undo()
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    _, other = xp.run_equal(
        "tbptt_recall", 8, base, lr=3e-3, seed=1, val_seed=5, n_val=8, progress=False, seed_in_name=True
    )
    assert (tmp_path / "07_eq_tbptt_recall_L8_lr0.003_seed1.pt").is_file()
    saved = torch.load(tmp_path / "07_eq_tbptt_recall_L8_lr0.003_seed1.pt", weights_only=True)["config"]
    assert saved["train_seed"] == 1
    key = next(iter(first["model"]))
    assert not torch.equal(other["model"][key], first["model"][key])  # trained from its own seed


def test_equal_name_tells_seeds_apart():
    names = {xp.equal_name("bptt", 300, 1e-3, seed) for seed in (None, 2, 3)}
    assert len(names) == 3
    assert xp.equal_name("bptt", 300, 1e-3) == "07_eq_bptt_L300_lr0.001.pt"  # the search seed's files
    assert xp.equal_name("bptt", 300, 1e-3, 2) == "07_eq_bptt_L300_lr0.001_seed2.pt"
    with pytest.raises(ValueError, match="method must be one of"):
        xp.equal_name("lstm", 300, 1e-3, 2)


def test_equal_seed_table_mean_and_sd():
    vals = {(m, L, s): v for m in xp.EQUAL_METHODS for L in (10, 20) for s, v in ((1, 0.2), (2, 0.4), (3, 0.6))}
    text = xp.equal_seed_table(vals, (10, 20), (1, 2, 3), "title", ".3f")
    lines = text.splitlines()
    assert lines[0] == "title" and len(lines) == 2 + 2 * len(xp.EQUAL_METHODS)
    assert text.count("0.400 +- 0.200 (3)") == 2 * len(xp.EQUAL_METHODS)
    del vals["bptt", 20, 3]  # a missing run: a dash, and the mean and sd of the seeds present
    last = xp.equal_seed_table(vals, (10, 20), (1, 2, 3), "title", ".3f").splitlines()[-1]
    assert last.split("|")[4].strip() == "-" and last.endswith("0.300 +- 0.141 (2)")
    assert xp.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert math.isnan(xp.mean_sd([1.0])[1])
    with pytest.raises(ValueError, match="must not be empty"):
        xp.mean_sd([])


def test_cost_table_marks_lengths_measured_for_memory_only():
    cost = {
        (m, T): {"seconds": 1.0, "saved_bytes": 2.0**20, "peak_bytes": 2.0**21}
        for m in ("memup", "bptt", "bptt_denormal")
        for T in (10, 20)
    }
    cost["memup", 40] = {"seconds": float("nan"), "saved_bytes": 2.0**20, "peak_bytes": 2.0**21}
    lines = xp.cost_table(cost, (10, 20), (40,)).splitlines()
    assert lines[3].split("|")[:3] == ["    40 ", "        1.00 ", "       2.00 "]
    assert lines[3].split("|")[3].strip() == "-"


def test_committed_study_runs_load_with_the_notebook_parameters(monkeypatch, tmp_path):
    """Sections 7 (the recipe study), 7b, 7c, 7d and 9: every committed ``07_eq_*``, ``07_rss_*`` and
    ``*_seed<n>`` file is one the notebook asks for with its parameters (every choice made on
    validation sequences as the notebook makes it), and each loads without training."""
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    monkeypatch.setattr(xp, "train_equal_steps", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(xp, "train_method", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(xp, "measure_rss", lambda *a, **k: pytest.fail("measured"))
    monkeypatch.setattr(xp, "measure_cost", lambda *a, **k: pytest.fail("measured"))
    ns = notebook_parameters()
    base = xp.base_config(ns)
    search_seed, *other_seeds = ns["EQUAL_SEEDS"]
    assert len(ns["EQUAL_SEEDS"]) >= 3 and search_seed not in other_seeds
    kw = {"val_seed": ns["VAL_SEED"], "n_val": ns["N_VAL"], "progress": False}
    L0, asked = ns["EQUAL_LENGTHS"][0], set()
    chosen = {}
    for m in xp.EQUAL_METHODS:
        val = {}
        for lr in (ns["BPTT_LOW_LR"],) * (m == "bptt") + ns["LRS"]:
            _, res = xp.run_equal(m, L0, base, lr=lr, seed=search_seed, **kw)
            val[lr] = res["curve"][-1, 2].item()
            asked.add(xp.equal_name(m, L0, lr))
        chosen[m] = xp.choose_lr(val)
    for L in ns["EQUAL_LENGTHS"]:
        for m in xp.EQUAL_METHODS:
            for s in ns["EQUAL_SEEDS"]:
                extra = s != search_seed
                _, res = xp.run_equal(m, L, base, lr=chosen[m], seed=s, seed_in_name=extra, **kw)
                assert res["steps"] == xp.memup_step_budget(replace(base, n_filler=L))[0]
                asked.add(xp.equal_name(m, L, chosen[m], s if extra else None))
    n_filler, val_gen = ns["N_FILLER"], lambda: torch.Generator().manual_seed(ns["VAL_SEED"])
    recipe_val = {}
    for wb in (ns["WARMUP_BATCHES"], 0):
        for lr in ns["LRS"]:
            cfg, st, _ = xp.run_recipe(n_filler, base, lr=lr, warmup_batches=wb, seed=ns["TRAIN_SEED"], progress=False)
            recipe_val[lr, wb] = xp.evaluate_method("memup", st, cfg, n_filler, ns["N_VAL"], val_gen())
            if (lr, wb) != (base.lr, base.warmup_batches):
                asked.add(xp.recipe_name(n_filler, lr, wb, ns["TRAIN_SEED"]))
    recipe = xp.choose_recipe(recipe_val)
    for s in ns["HEADLINE_SEEDS"]:
        cfg, _, _ = xp.run_recipe(
            n_filler, base, lr=recipe[0], warmup_batches=recipe[1], seed=s, progress=False, seed_in_name=True
        )
        if recipe == (base.lr, base.warmup_batches):
            asked.add(xp.run_name("memup", cfg, base, s))
        else:
            asked.add(xp.recipe_name(n_filler, recipe[0], recipe[1], s))
    for m in ("random", "tbptt"):  # the two chance rows at N_FILLER, on more seeds
        for s in ns["ABLATION_SEEDS"]:
            cfg, _, _ = xp.run(m, n_filler, base, seed=s, progress=False, seed_in_name=True)
            asked.add(xp.run_name(m, cfg, base, s))
    monkeypatch.setattr(mu, "train_noisy_memup", lambda *a, **k: pytest.fail("trained"))
    cfg_noisy = xp.noisy_config(base, ns["NOISY_FILLER"], ns["NOISY_BATCHES"])
    noise = mu.NoisyCopy(ns["N_NOISE"], ns["NOISE_DELAY"])
    noisy_lr = {}
    for d in mu.NOISY_DETECTORS:
        val = {}
        for lr in ns["LRS"]:
            res = xp.run_noisy(
                d, replace(cfg_noisy, lr=lr), noise, seed=ns["NOISY_SEARCH_SEED"], progress=False, lr_in_name=True
            )
            val[lr] = xp.evaluate_noisy(res, cfg_noisy, noise, ns["N_VAL"], val_gen())["recall"].float().mean().item()
            asked.add(xp.noisy_name(d, cfg_noisy.n_filler, ns["NOISY_SEARCH_SEED"], lr))
        noisy_lr[d] = xp.choose_lr(val)
    for s in ns["NOISY_SEEDS"]:
        for d in mu.NOISY_DETECTORS:
            lr_in_name = noisy_lr[d] != base.lr
            xp.run_noisy(d, replace(cfg_noisy, lr=noisy_lr[d]), noise, seed=s, progress=False, lr_in_name=lr_in_name)
            asked.add(xp.noisy_name(d, cfg_noisy.n_filler, s, noisy_lr[d] if lr_in_name else None))
            if lr_in_name:  # the reported seeds at LR too: the notebook prints them beside, as a sensitivity
                xp.run_noisy(d, cfg_noisy, noise, seed=s, progress=False)
                asked.add(xp.noisy_name(d, cfg_noisy.n_filler, s))
    rss_lengths = {"memup": ns["RSS_LENGTHS"], "tbptt": ns["RSS_LENGTHS"]}
    rss_lengths["bptt"] = [T for T in ns["RSS_LENGTHS"] if T <= ns["COST_LENGTHS"][-1]]
    xp.run_rss(base, rss_lengths, batch=ns["COST_BATCH"], progress=False)  # loads: measure_rss fails the test
    asked.add("07_rss_of_update.pt")
    xp.run_cost(base, ns["COST_LENGTHS"], batch=ns["COST_BATCH"], repeats=3, progress=False)  # loads
    asked.add("07_cost_of_update.pt")
    committed = {p.name for p in CHECKPOINTS.glob("07_*.pt")} - set(committed_training_runs())
    assert asked == committed
    assert not any(tmp_path.iterdir())


def test_evaluate_equal_scores_answers_against_the_recall_symbols():
    cfg = mu.MemUPConfig(**TINY)
    torch.manual_seed(0)
    model = mu.build_recurrent(cfg)
    result = {"model": model.state_dict()}
    answers, targets = xp.predict_equal("bptt", result, cfg, 8, 16, torch.Generator().manual_seed(1))
    assert answers.shape == targets.shape == (16, 1)
    _, y = mu.memup_copy_task(16, 1, 8, torch.Generator().manual_seed(1))
    torch.testing.assert_close(targets, y[:, -1:])
    hits = xp.evaluate_equal("bptt", result, cfg, 8, 16, torch.Generator().manual_seed(1))
    torch.testing.assert_close(hits, answers == targets)
    nets = mu.build_memup(cfg)
    memup_result = {name: nets[name].state_dict() for name in ("detector", "memory", "predictor")}
    assert xp.evaluate_equal("memup", memup_result, cfg, 8, 16, torch.Generator().manual_seed(1)).shape == (16, 1)


def test_wilson_interval_and_choose_lr():
    lo, hi = xp.wilson_interval(187, 1500)
    assert lo < 187 / 1500 < hi and hi - lo < 0.04
    assert xp.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert xp.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="successes"):
        xp.wilson_interval(11, 10)
    assert xp.choose_lr({1e-3: 0.5, 3e-3: 0.7}) == 3e-3
    assert xp.choose_lr({1e-3: 0.7, 3e-3: 0.7}) == 1e-3  # a tie: the smaller rate
    with pytest.raises(ValueError, match="val_acc"):
        xp.choose_lr({})


@pytest.mark.slow
def test_update_cost_in_a_fresh_process_measures_the_same_memory(denormals_back_on):
    cfg = mu.MemUPConfig(n_head=2, k=2, hidden=8, embed=4, rollout=10, n_filler=36, batch=2)
    here = xp.update_cost(cfg, "memup", repeats=0)
    there = xp.update_cost(cfg, "memup", repeats=0, isolate=True)
    assert there["saved_bytes"] == here["saved_bytes"]
    assert abs(there["peak_bytes"] - here["peak_bytes"]) < 0.05 * here["peak_bytes"]


# ----------------------------------------------------------------------------- the recipe study


def test_choose_recipe_prefers_accuracy_then_the_smaller_rate_then_no_curriculum():
    assert xp.choose_recipe({(1e-3, 150): 0.9, (3e-3, 0): 0.95}) == (3e-3, 0)
    assert xp.choose_recipe({(1e-3, 150): 0.9, (3e-3, 150): 0.9}) == (1e-3, 150)  # a tie: the smaller rate
    assert xp.choose_recipe({(1e-3, 150): 0.9, (1e-3, 0): 0.9, (3e-3, 0): 0.9}) == (1e-3, 0)  # ... then none
    with pytest.raises(ValueError, match="val_acc"):
        xp.choose_recipe({})


def test_run_recipe_reuses_the_base_run_and_caches_other_recipes(monkeypatch, tmp_path):
    """The notebook's own recipe is :func:`run`'s file; any other is cached under its own name with
    its learning rate and curriculum in the recorded config."""
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    trained = []

    def fake_train(method, cfg, seed, progress=False):
        trained.append((method, cfg.lr, cfg.warmup_batches, seed))
        return {"memup_loss": torch.zeros(cfg.batches)}

    monkeypatch.setattr(xp, "train_method", fake_train)
    base = mu.MemUPConfig(**{**TINY, "n_filler": 30, "batches": 4, "warmup_batches": 2, "warmup_filler": 10})
    cfg, _, _ = xp.run_recipe(30, base, lr=base.lr, warmup_batches=2, seed=1, progress=False)
    assert (tmp_path / xp.run_name("memup", cfg, base)).is_file()
    cfg, _, _ = xp.run_recipe(30, base, lr=3e-3, warmup_batches=0, seed=4, progress=False, seed_in_name=True)
    assert (cfg.lr, cfg.warmup_batches, cfg.n_filler) == (3e-3, 0, 30)
    path = tmp_path / xp.recipe_name(30, 3e-3, 0, 4)
    assert path.name == "07_memup_L30_lr0.003_wu0_seed4.pt" and path.is_file()
    assert torch.load(path, weights_only=True)["config"] == config_dict(xp.run_config("memup", cfg, 4))
    xp.run_recipe(30, base, lr=3e-3, warmup_batches=0, seed=4, progress=False)  # loads: no training
    assert trained == [("memup", base.lr, 2, 1), ("memup", 3e-3, 0, 4)]


# ----------------------------------------------------------------------------- resident memory


def test_rss_of_update_counts_what_update_cost_saves():
    cfg = mu.MemUPConfig(n_head=2, k=2, hidden=8, embed=4, rollout=10, n_filler=36, batch=2)
    for method in ("memup", "bptt", "tbptt"):
        out = xp.rss_of_update(cfg, method)
        assert out["rss_bytes"] >= 0 and out["saved_bytes"] > 0, method
        if sys.platform.startswith("linux"):
            assert out["exact"] == 1.0
    here = xp.update_cost(cfg, "memup", repeats=0)
    assert xp.rss_of_update(cfg, "memup")["saved_bytes"] == here["saved_bytes"]
    with pytest.raises(ValueError, match="method must be"):
        xp.rss_of_update(cfg, "lstm")


def test_measure_rss_in_fresh_processes_and_its_table():
    base = mu.MemUPConfig(n_head=2, k=2, hidden=8, embed=4, rollout=10)
    rss = xp.measure_rss(base, {"memup": (40, 80), "bptt": (40,)}, batch=2)
    assert set(rss) == {("memup", 40), ("memup", 80), ("bptt", 40)}
    assert rss["memup", 40]["saved_bytes"] == rss["memup", 80]["saved_bytes"]  # bounded by the rollout
    assert all(v["rss_bytes"] >= 0 for v in rss.values())
    lines = xp.rss_table(rss, (40, 80)).splitlines()
    assert len(lines) == 3 and lines[0].split("|")[0].strip() == "T"
    assert lines[2].split("|")[-1].strip() == "-"  # full BPTT not measured at 80


def test_run_rss_caches_its_measurement_with_its_configuration(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    calls = []

    def fake(base, lengths, *, batch, seed=0, repeats=1, progress=False):
        calls.append((lengths, repeats))
        return {
            (m, T): {"saved_bytes": 1.0, "rss_bytes": float(T), "exact": 1.0, "rss_runs": [float(T)] * repeats}
            for m, Ts in lengths.items()
            for T in Ts
        }

    monkeypatch.setattr(xp, "measure_rss", fake)
    monkeypatch.setattr(xp, "RSS_MINUTES", 0.1)  # quick: the committed measurement (other sizes) is not an error
    base = mu.MemUPConfig(n_head=2, k=2, hidden=8, embed=4, rollout=10)
    first, where = xp.run_rss(base, {"memup": (40, 80)}, batch=2, progress=False)
    again, _ = xp.run_rss(base, {"memup": (40, 80)}, batch=2, progress=False)
    assert first == again and set(first) == {("memup", 40), ("memup", 80)}
    assert first["memup", 80]["rss_bytes"] == 80.0 and first["memup", 80]["rss_runs"] == [80.0] * 3
    assert where == {"torch": str(torch.__version__), "threads": torch.get_num_threads()}
    assert len(calls) == 1 and calls[0][1] == 3
    xp.run_rss(base, {"memup": (40, 80)}, batch=4, progress=False)  # another batch: measured again
    assert len(calls) == 2


def test_measure_rss_keeps_the_median_of_its_repeats(monkeypatch):
    values = iter([5.0, 1.0, 3.0])

    class Done:
        def __init__(self, value):
            self.value = value

        def result(self):
            return self.value

    class Pool:
        def submit(self, fn, cfg, method, *args):
            return Done({"saved_bytes": 1.0, "rss_bytes": next(values), "file_bytes": 0.0, "exact": 1.0})

    class Fresh:
        def __init__(self, n):
            pass

        def __enter__(self):
            return Pool()

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(xp, "_fresh_processes", Fresh)
    base = mu.MemUPConfig(n_head=2, k=2, hidden=8, embed=4, rollout=10)
    out = xp.measure_rss(base, {"memup": (40,)}, batch=2, repeats=3)
    assert out["memup", 40]["rss_bytes"] == 3.0 and out["memup", 40]["rss_runs"] == [5.0, 1.0, 3.0]


def test_fresh_processes_pass_on_stderr_but_the_profilers_lines():
    import io
    import os
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        with xp._fresh_processes(1) as pool:
            line = b"USDT:2026-01-01 00:00:00 1:1 SyncActivityProfilerHandler.cpp:52] profiler_start\n"
            pool.submit(os.write, 2, line + b"a real warning\n").result()
    assert "a real warning" in err.getvalue()
    assert "SyncActivityProfilerHandler" not in err.getvalue()


def test_run_cost_caches_its_measurement_with_its_configuration(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    calls = []

    def fake(base, lengths, *, batch, repeats=3, seed=0, isolate=False, progress=False, memory_lengths=()):
        calls.append((list(lengths), batch, isolate))
        return {(m, T): {"seconds": float(T), "saved_bytes": 1.0} for m in ("memup", "bptt") for T in lengths}

    monkeypatch.setattr(xp, "measure_cost", fake)
    monkeypatch.setattr(xp, "COST_MINUTES", 0.1)
    base = mu.MemUPConfig(n_head=2, k=2, hidden=8, embed=4, rollout=10)
    first, where = xp.run_cost(base, (40, 80), batch=2, progress=False)
    again, _ = xp.run_cost(base, (40, 80), batch=2, progress=False)
    assert first == again and first["bptt", 80]["seconds"] == 80.0
    assert where == {"torch": str(torch.__version__), "threads": torch.get_num_threads()}
    assert calls == [([40, 80], 2, True)]  # measured once, each measurement in a fresh process
    xp.run_cost(base, (40, 80), batch=4, progress=False)  # another batch: measured again
    assert len(calls) == 2
