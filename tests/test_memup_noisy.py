"""Tests for notebook 07's noisy copy task and the detector that scores surprise given the memory."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from notebook_cells import notebook_parameters as run_parameters_cell
from torch import nn

from memtutor import memup as mu
from memtutor.experiments import nb07_memup as xp
from memtutor.utils import RESULT_FORMAT, config_dict

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "notebooks" / "checkpoints"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- the task


def test_noisy_copy_task_echoes_each_noise_symbol_after_delay():
    H, L, noise = 3, 60, mu.NoisyCopy(n_noise=4, delay=10)
    x, y = mu.noisy_copy_task(32, H, L, noise, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (32, 2 * H + L)
    echo = x == mu.ECHO  # (B, T)
    assert (echo.sum(1) == noise.n_noise).all()
    for b in range(32):
        steps = echo[b].nonzero().squeeze(1)
        for k in steps.tolist():
            assert H + noise.delay <= k < H + L  # inside the fillers, source too
            assert 0 <= x[b, k - noise.delay] < mu.ALPHABET  # a noise symbol ...
            assert y[b, k] == x[b, k - noise.delay]  # ... asked back at the echo cue
        sources = steps - noise.delay
        others = torch.ones(2 * H + L, dtype=torch.bool)
        others[:H] = False
        others[-H:] = False
        others[steps] = False
        others[sources] = False
        assert (x[b, others] == mu.FILLER).all() and (y[b, others] == mu.BLANK).all()
        # one pair per slot of L // n_noise fillers
        slot = L // noise.n_noise
        assert sorted(((sources - H) // slot).tolist()) == list(range(noise.n_noise))
        assert ((steps - H) // slot == (sources - H) // slot).all()


def test_noisy_copy_task_keeps_the_copy_tasks_head_and_recall():
    noise = mu.NoisyCopy(n_noise=2, delay=9)
    x, y = mu.noisy_copy_task(16, 3, 40, noise, torch.Generator().manual_seed(5))
    xc, yc = mu.memup_copy_task(16, 3, 40, torch.Generator().manual_seed(5))
    torch.testing.assert_close(x[:, :3], xc[:, :3])
    torch.testing.assert_close(x[:, -3:], xc[:, -3:])
    torch.testing.assert_close(y[:, -3:], yc[:, -3:])
    # the noise varies between sequences
    assert len({tuple(r) for r in (x == mu.ECHO).int().tolist()}) > 1


def test_noisy_copy_task_rejects_what_does_not_fit():
    with pytest.raises(ValueError, match="n_filler >= 44"):
        mu.noisy_copy_task(2, 3, 40, mu.NoisyCopy(n_noise=4, delay=10), torch.Generator())
    with pytest.raises(ValueError, match="delay"):
        mu.NoisyCopy(n_noise=2, delay=0)
    with pytest.raises(ValueError, match="n_noise"):
        mu.NoisyCopy(n_noise=-1)


# ----------------------------------------------------------------------------- surprise given the memory


def test_surprise_given_memory_matches_a_step_by_step_loop_and_any_chunk():
    torch.manual_seed(0)
    cfg = mu.MemUPConfig(n_filler=30, hidden=8, embed=4)
    nets = mu.build_memup(cfg, mu.NOISY_VOCAB)
    x, y = mu.noisy_copy_task(3, 3, 30, mu.NoisyCopy(2, 9), torch.Generator().manual_seed(1))
    windows = mu.local_windows(x, cfg.window)
    u = mu.surprise_given_memory(nets["memory"], nets["predictor"], x, windows, y)
    loop, state = [], None
    with torch.no_grad():
        for k in range(x.shape[1]):  # one step at a time: m_k after reading step k
            h, state = nets["memory"](x[:, k : k + 1], state)
            logits = nets["predictor"](h, windows[:, k : k + 1].unsqueeze(2))[:, 0, 0]  # (B, C)
            loop.append(nn.functional.cross_entropy(logits, y[:, k], reduction="none"))
    torch.testing.assert_close(u, torch.stack(loop, 1), rtol=1e-5, atol=1e-5)
    chunked = mu.surprise_given_memory(nets["memory"], nets["predictor"], x, windows, y, chunk=7)
    torch.testing.assert_close(u, chunked, rtol=1e-5, atol=1e-5)


class _LastSymbolMemory(nn.Module):
    """A hand-made memory: its state after step k is the one-hot of the last noise symbol seen
    (the first H symbols, the head, are not kept)."""

    def __init__(self, n_head: int):
        super().__init__()
        self.n_head = n_head

    def forward(self, x, state=None):
        last = torch.full((x.shape[0],), -1) if state is None else state[0]
        start = 0 if state is None else int(state[1])
        out = []
        for j in range(x.shape[1]):
            sym = (x[:, j] < mu.ALPHABET) & (start + j >= self.n_head)
            last = torch.where(sym, x[:, j], last)
            out.append(nn.functional.one_hot(last.clamp(min=0), mu.N_CLASSES).float())
        return torch.stack(out, 1), (last, start + x.shape[1])


class _EchoPredictor(nn.Module):
    """Blank at fillers; at an echo cue the memory's symbol; uniform over the 8 symbols at a recall cue."""

    def forward(self, m, win):
        cur = win[..., -1]  # (B, P, K) the step's own input
        logits = torch.full((*cur.shape, mu.N_CLASSES), -20.0)
        logits[..., mu.BLANK] = 20.0
        echo, recall = cur == mu.ECHO, cur == mu.RECALL
        logits[echo] = 20.0 * m.unsqueeze(2).expand(-1, -1, cur.shape[2], -1)[echo]
        logits[recall] = torch.cat([torch.zeros(mu.ALPHABET), torch.tensor([-20.0])])
        return logits


def test_what_the_memory_explains_stops_being_selected():
    """Hand-made case: a memory that holds the last noise symbol explains every echo. Surprise
    given that memory is ~0 at the echoes and log 8 at the recall steps, so the top-K targets of
    the first rollout are the recall steps; a memory-less detector that knows the format but not
    the symbols scores echoes and recall steps alike (log 8), so its targets are mostly echoes."""
    H, L, noise = 3, 80, mu.NoisyCopy(n_noise=5, delay=10)
    x, y = mu.noisy_copy_task(8, H, L, noise, torch.Generator().manual_seed(2))
    windows = mu.local_windows(x, 8)
    u_mem = mu.surprise_given_memory(_LastSymbolMemory(H), _EchoPredictor(), x, windows, y)  # type: ignore[arg-type]
    echo, recall = x == mu.ECHO, mu.recall_mask(H, L).expand_as(x)
    assert u_mem[echo].max() < 1e-6
    torch.testing.assert_close(u_mem[recall], torch.full((8 * H,), math.log(8)), rtol=1e-4, atol=1e-4)
    assert u_mem[~echo & ~recall].max() < 1e-6
    idx, valid = mu.select_targets(u_mem, torch.tensor([0]), H)
    assert valid.all() and (idx.sort(-1).values == recall[0].nonzero().squeeze(1)).all()

    # The memory-less view: log 8 at echoes and recall steps alike, blanks 0; ties broken by
    # tiny differences, here by a fixed random jitter.
    u_local = torch.where(echo | recall, math.log(8), 0.0) + 1e-3 * torch.rand(x.shape, generator=torch.Generator())
    idx_l, _ = mu.select_targets(u_local, torch.tensor([0]), H)
    share = recall[0][idx_l].float().mean().item()
    assert share < 0.5  # 5 echoes and 3 recall steps compete for 3 slots


# ----------------------------------------------------------------------------- the update and training


def _tiny(**changes) -> mu.MemUPConfig:
    kw = {"n_filler": 40, "hidden": 8, "embed": 4, "batch": 4, "batches": 3, "warmup_batches": 0}
    kw.update(changes)
    return mu.MemUPConfig(**kw)


def test_memup_update_follows_a_given_scorer_and_reports_the_share():
    cfg = _tiny(k=3)
    torch.manual_seed(0)
    nets, _, opts = mu.make_memup(cfg, vocab=mu.NOISY_VOCAB)
    x, y = mu.noisy_copy_task(4, 3, 40, mu.NoisyCopy(3, 10), torch.Generator().manual_seed(0))
    recall = mu.recall_mask(3, 40).expand_as(x)
    peak_recall = lambda x_, w_, y_: recall.float()  # noqa: E731
    out = mu.memup_update(nets, None, opts, x, y, cfg, scorer=peak_recall, target_mask=recall)
    assert out["target_share"] == 1.0 and out["first_share"] == 1.0  # every valid target is a recall step
    assert "detector_loss" not in out
    peak_echo = lambda x_, w_, y_: (x_ == mu.ECHO).float()  # noqa: E731
    out = mu.memup_update(nets, None, opts, x, y, cfg, scorer=peak_echo, target_mask=recall)
    assert out["first_share"] == 0.0  # three echoes ahead take the three slots of the first rollout
    with pytest.raises(ValueError, match="det_ema or a scorer"):
        mu.memup_update(nets, None, opts, x, y, cfg)


def test_current_step_phase_trains_the_predictor_only():
    cfg = _tiny()
    torch.manual_seed(0)
    nets, _, _ = mu.make_memup(cfg, vocab=mu.NOISY_VOCAB)
    frozen = torch.optim.SGD(list(nets["memory"].parameters()) + list(nets["predictor"].parameters()), lr=0.0)
    current = torch.optim.SGD(nets["predictor"].parameters(), lr=0.1)
    before = {k: {n: p.clone() for n, p in nets[k].state_dict().items()} for k in ("memory", "predictor")}
    x, y = mu.noisy_copy_task(4, 3, 40, mu.NoisyCopy(3, 10), torch.Generator().manual_seed(0))
    zeros = lambda x_, w_, y_: torch.zeros(x_.shape)  # noqa: E731
    out = mu.memup_update(nets, None, {"memory": frozen}, x, y, cfg, scorer=zeros, current_step_opt=current)
    assert out["current_loss"] > 0
    for n, p in nets["memory"].state_dict().items():
        torch.testing.assert_close(p, before["memory"][n])
    assert any(not torch.equal(p, before["predictor"][n]) for n, p in nets["predictor"].state_dict().items())


def test_train_noisy_memup_ema_copies_follow_the_nets():
    """EMA invariant: with decay 0 the scoring copies equal the trained nets after every batch."""
    out = mu.train_noisy_memup(_tiny(ema_decay=0.0), mu.NoisyCopy(3, 10), "memory", seed=0)
    for name in ("memory", "predictor"):
        for k, v in out[name].items():
            torch.testing.assert_close(out[f"{name}_ema"][k], v)
    slow = mu.train_noisy_memup(_tiny(ema_decay=0.9), mu.NoisyCopy(3, 10), "memory", seed=0)
    differs = [not torch.equal(slow["memory_ema"][k], v) for k, v in slow["memory"].items()]
    assert any(differs)


@pytest.mark.parametrize("detector", mu.NOISY_DETECTORS)
def test_train_noisy_memup_runs_and_is_seeded(detector):
    a = mu.train_noisy_memup(_tiny(), mu.NoisyCopy(3, 10), detector, seed=3)
    b = mu.train_noisy_memup(_tiny(), mu.NoisyCopy(3, 10), detector, seed=3)
    torch.testing.assert_close(a["loss"], b["loss"])
    assert a["recall_share"].shape == a["first_share"].shape == (3,)
    assert ((a["recall_share"] >= 0) & (a["recall_share"] <= 1)).all()


def test_controls_change_one_factor_each(monkeypatch):
    """'local' and 'memory' differ in the scorer and in the current-step step; each control
    changes one of the two: (scores given the memory?, current-step step?) per selection."""
    real = mu.memup_update
    seen: dict[str, set] = {}

    def spy(*args, scorer=None, current_step_opt=None, **kwargs):
        given_memory = scorer is not None and scorer is not mu._zero_scores
        seen.setdefault(current, set()).add((given_memory, current_step_opt is not None))
        return real(*args, scorer=scorer, current_step_opt=current_step_opt, **kwargs)

    monkeypatch.setattr(mu, "memup_update", spy)
    for current in ("local", "local_step", "memory", "memory_nostep"):
        mu.train_noisy_memup(_tiny(), mu.NoisyCopy(3, 10), current, seed=1)
    assert seen == {
        "local": {(False, False)},
        "local_step": {(False, True)},
        "memory": {(True, True)},
        "memory_nostep": {(True, False)},
    }


@pytest.mark.parametrize(("plain", "control"), [("local", "local_step"), ("memory", "memory_nostep")])
def test_control_selects_as_its_arm_until_the_predictors_differ(plain, control):
    """Same initial weights, data and scorer: the first batch selects the same targets; the
    current-step step (in one arm of each pair) then makes the predictors differ."""
    a = mu.train_noisy_memup(_tiny(), mu.NoisyCopy(3, 10), plain, seed=2)
    b = mu.train_noisy_memup(_tiny(), mu.NoisyCopy(3, 10), control, seed=2)
    assert a["recall_share"][0] == b["recall_share"][0] and a["first_share"][0] == b["first_share"][0]
    assert any(not torch.equal(v, b["predictor"][k]) for k, v in a["predictor"].items())
    assert set(a) == set(b)  # the same scoring copies are kept ('detector_ema' or the memory's)


def test_every_selection_sees_the_same_training_sequences(monkeypatch):
    seen: dict[str, list] = {}
    real = mu.noisy_copy_task

    def record(*args, **kwargs):
        x, y = real(*args, **kwargs)
        seen.setdefault(current, []).append(x.clone())
        return x, y

    monkeypatch.setattr(mu, "noisy_copy_task", record)
    for current in mu.NOISY_DETECTORS:
        mu.train_noisy_memup(_tiny(), mu.NoisyCopy(3, 10), current, seed=1)
    for d in mu.NOISY_DETECTORS[1:]:
        for a, b in zip(seen["local"], seen[d], strict=True):
            torch.testing.assert_close(a, b)


def test_train_noisy_memup_rejects_bad_input():
    with pytest.raises(ValueError, match="detector"):
        mu.train_noisy_memup(_tiny(), mu.NoisyCopy(3, 10), "oracle", seed=0)
    with pytest.raises(ValueError, match="warmup_batches"):
        mu.train_noisy_memup(_tiny(warmup_batches=1, warmup_filler=40), mu.NoisyCopy(3, 10), "local", seed=0)
    with pytest.raises(ValueError, match="n_filler"):
        mu.train_noisy_memup(_tiny(), mu.NoisyCopy(5, 10), "local", seed=0)


# ----------------------------------------------------------------------------- the experiment drivers


def test_run_noisy_caches_with_its_config_and_evaluates(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    cfg, noise = _tiny(), mu.NoisyCopy(3, 10)
    out = xp.run_noisy("memory", cfg, noise, seed=2, progress=False)
    path = tmp_path / xp.noisy_name("memory", 40, 2)
    saved = torch.load(path, weights_only=True)
    assert saved["config"] == config_dict({"detector": "memory", "train_seed": 2, "noise": noise, "config": cfg})
    ev = xp.evaluate_noisy(out, cfg, noise, 5, torch.Generator().manual_seed(0))
    assert ev["recall"].shape == (5, 3) and ev["echo"].shape == (5, 3) and ev["recall"].dtype == torch.bool
    x, y = mu.noisy_copy_task(2, 3, 40, noise, torch.Generator().manual_seed(1))
    assert xp.noisy_surprise("memory", out, cfg, x, y).shape == x.shape
    with pytest.raises(ValueError, match="no detector"):
        xp.noisy_surprise("random", out, cfg, x, y)
    with pytest.raises(ValueError, match="detector"):
        xp.noisy_name("oracle", 40, 1)


def test_evaluate_noisy_counts_a_perfect_reader():
    """A run whose predictor always answers the right symbol scores 1; one that answers blank, 0."""
    cfg, noise = _tiny(), mu.NoisyCopy(3, 10)
    out = mu.train_noisy_memup(_tiny(batches=1), noise, "random", seed=0)
    ev = xp.evaluate_noisy(out, cfg, noise, 20, torch.Generator().manual_seed(0))
    assert 0 <= ev["recall"].float().mean() <= 1
    blank = {k: v.clone() for k, v in out["predictor"].items()}
    blank["out.weight"].zero_()
    blank["out.bias"].zero_()
    blank["out.bias"][mu.BLANK] = 1.0
    ev = xp.evaluate_noisy({**out, "predictor": blank}, cfg, noise, 20, torch.Generator().manual_seed(0))
    assert not ev["recall"].any() and not ev["echo"].any()


def test_noisy_table_mean_and_sd():
    acc = {(d, s): v for d in mu.NOISY_DETECTORS for s, v in ((1, 0.2), (2, 0.4), (3, 0.6))}
    text = xp.noisy_table(acc, (1, 2, 3), "title")
    assert text.splitlines()[0] == "title"
    assert text.count("0.400 +- 0.200") == len(mu.NOISY_DETECTORS)


# ----------------------------------------------------------------------------- the committed runs


def test_committed_noisy_runs_record_the_config_the_notebook_builds():
    ns = run_parameters_cell("07_memup.ipynb")
    base = xp.base_config(ns)
    cfg = xp.noisy_config(base, ns["NOISY_FILLER"], ns["NOISY_BATCHES"])
    noise = mu.NoisyCopy(ns["N_NOISE"], ns["NOISE_DELAY"])
    assert len(ns["NOISY_SEEDS"]) >= 3
    for seed in ns["NOISY_SEEDS"]:
        for d in mu.NOISY_DETECTORS:
            data = torch.load(CHECKPOINTS / xp.noisy_name(d, cfg.n_filler, seed), weights_only=True)
            assert data["format"] == RESULT_FORMAT
            assert data["config"] == config_dict({"detector": d, "train_seed": seed, "noise": noise, "config": cfg})
            assert len(data["result"]["loss"]) == ns["NOISY_BATCHES"]


# ----------------------------------------------------------------------------- the cost measurement's processes


def test_measure_cost_in_fresh_processes_measures_what_one_process_does():
    """isolate=True: one fresh process per memory pass; the denormal control is
    timed only (NaN memory), the others' memory equals the same measurement in this process."""
    base = mu.MemUPConfig(n_head=2, k=2, hidden=8, embed=4, rollout=10)
    try:
        here = xp.measure_cost(base, (40, 80), batch=2, repeats=1)
        there = xp.measure_cost(base, (40, 80), batch=2, repeats=1, isolate=True)
    finally:
        torch.set_flush_denormal(False)
    for key in (("memup", 40), ("memup", 80), ("bptt", 40), ("bptt", 80)):
        assert there[key]["saved_bytes"] == here[key]["saved_bytes"], key
        assert there[key]["peak_bytes"] > 0
    for T in (40, 80):
        assert math.isnan(there["bptt_denormal", T]["saved_bytes"]) and there["bptt_denormal", T]["seconds"] > 0


def test_noisy_name_puts_the_learning_rate_before_the_seed():
    assert xp.noisy_name("local", 100, 4) == "07_noisy_local_L100_seed4.pt"
    assert xp.noisy_name("local", 100, 1, 3e-3) == "07_noisy_local_L100_lr0.003_seed1.pt"


def test_run_noisy_with_the_rate_in_its_name(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMTUTOR_CHECKPOINTS", str(tmp_path))
    cfg, noise = _tiny(lr=3e-3), mu.NoisyCopy(3, 10)
    xp.run_noisy("random", cfg, noise, seed=1, progress=False, lr_in_name=True)
    data = torch.load(tmp_path / "07_noisy_random_L40_lr0.003_seed1.pt", weights_only=True)
    assert data["config"]["config"]["lr"] == 3e-3
