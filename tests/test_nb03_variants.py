"""Notebook 03's Blind Cliffwalk variants (greedy, rank-based, frozen priorities) and its noisy-reward
experiment on the importance-sampling weights (memtutor.experiments.nb03_replay), with their cached results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from notebook_cells import notebook_parameters

from memtutor.experiments.nb03_replay import (
    CLIFFWALK_VARIANTS,
    IS_BIAS_FILE,
    VARIANTS_FILE,
    CliffwalkVariantsConfig,
    IsBiasConfig,
    _rank_picker,
    cliffwalk_memory,
    cliffwalk_variant_updates,
    frozen_probabilities,
    is_bias_run,
    is_fixed_point,
    noisy_reward_memory,
    rank_probabilities,
)
from memtutor.utils import config_dict

CHECKPOINTS = Path(__file__).resolve().parents[1] / "notebooks" / "checkpoints"
NOTEBOOK = "03_prioritized_replay.ipynb"


# ---------------------------------------------------------------------------------------------
# Blind Cliffwalk variants
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", CLIFFWALK_VARIANTS)
def test_every_variant_learns_a_tiny_chain_deterministically(variant):
    alpha = {"greedy": 0.0, "rank": 0.7, "frozen": 0.6}[variant]  # the notebook's exponents
    counts = [
        cliffwalk_variant_updates(3, variant, alpha=alpha, generator=torch.Generator().manual_seed(s)) for s in range(3)
    ]
    assert all(0 < c < 200_000 for c in counts), counts
    again = cliffwalk_variant_updates(3, variant, alpha=alpha, generator=torch.Generator().manual_seed(0))
    assert again == counts[0]


def test_greedy_is_not_stuck_on_exactly_zero_or_one_ulp_errors():
    """Regression: with Q = 0 at the start many TD errors are exactly 0, and an update of a TD error of
    one ulp leaves Q unchanged; a greedy agent that breaks ties by position, or keeps a one-ulp
    priority, replays the same transition forever (it did not learn n = 6 in 10 million updates)."""
    for seed in range(3):
        count = cliffwalk_variant_updates(
            6, "greedy", generator=torch.Generator().manual_seed(seed), max_updates=20_000
        )
        assert count < 5_000, count


def test_greedy_first_sweep_replays_every_transition_once():
    """Never-replayed transitions have infinite priority: the first M updates visit all M of them, so even
    the smallest chain needs at least one full sweep."""
    for seed in range(3):
        count = cliffwalk_variant_updates(2, "greedy", generator=torch.Generator().manual_seed(seed))
        assert count >= len(cliffwalk_memory(2)["state"])


def test_rank_probabilities_match_the_closed_form():
    p = rank_probabilities(5, 0.7)
    want = torch.tensor([k**-0.7 for k in range(1, 6)], dtype=torch.float64)
    torch.testing.assert_close(p, want / want.sum())
    assert bool((p.diff() < 0).all())
    torch.testing.assert_close(rank_probabilities(4, 0.0), torch.full((4,), 0.25, dtype=torch.float64))


def test_rank_picker_draws_items_with_the_probability_of_their_rank():
    size, alpha = 6, 1.0
    mem = {"state": [0] * size}
    choose, record = _rank_picker(mem, None, None, alpha, None, torch.Generator().manual_seed(0))
    errors = [0.3, 2.0, 0.1, 5.0, 1.0, 0.0]
    for j, e in enumerate(errors):
        record(j, e)
    draws = 60_000
    counts = torch.bincount(torch.tensor([choose() for _ in range(draws)]), minlength=size).double()
    rank_of = {j: r for r, j in enumerate(sorted(range(size), key=lambda j: -errors[j]))}
    want = torch.stack([rank_probabilities(size, alpha)[rank_of[j]] for j in range(size)]) * draws
    assert float(((counts - want).abs() / want.sqrt()).max()) < 5  # within 5 standard deviations


def test_frozen_probabilities_give_the_reward_almost_everything_on_a_small_chain():
    # Under Q = 0 only the rewarded transition has a TD error (1); the 13 others get eps^alpha.
    mem = cliffwalk_memory(3)
    probs = frozen_probabilities(mem["reward"].double(), 0.6, 1e-6)
    rewarded = int(torch.nonzero(mem["reward"]).squeeze())
    torch.testing.assert_close(float(probs[rewarded]), (1 + 1e-6) ** 0.6 / ((1 + 1e-6) ** 0.6 + 13 * 1e-6**0.6))
    assert float(probs.sum()) == pytest.approx(1.0)


def test_variant_bad_inputs():
    with pytest.raises(ValueError, match="variant must be one of"):
        cliffwalk_variant_updates(3, "uniform")
    with pytest.raises(ValueError, match="0 < lr <= 1"):
        cliffwalk_variant_updates(3, "greedy", lr=0.0)
    with pytest.raises(ValueError, match="ns must not be empty"):
        CliffwalkVariantsConfig(ns=())


# ---------------------------------------------------------------------------------------------
# The importance-sampling experiment
# ---------------------------------------------------------------------------------------------
def test_fixed_point_is_unbiased_at_beta_one_or_alpha_zero_and_solves_its_equation():
    f, alpha = 0.1, 0.6
    assert is_fixed_point(f, alpha, 1.0) == pytest.approx(f)
    assert is_fixed_point(f, 0.0, 0.0) == pytest.approx(f)
    for beta in (0.0, 0.5):
        q = is_fixed_point(f, alpha, beta)
        c = 1 + alpha * (1 - beta)
        assert f * (1 - q) ** c == pytest.approx((1 - f) * q**c)
        assert q > f


def test_noisy_reward_memory_has_the_exact_mean():
    mem = noisy_reward_memory(1000, 0.1)
    assert float(mem["reward"].sum()) == 100.0 and mem["reward"].shape == (1000,)
    with pytest.raises(ValueError, match="reward_prob must lie in"):
        noisy_reward_memory(10, 1.0)


def test_replay_without_weights_is_biased_and_beta_one_is_not():
    """The claim of notebook 03, Section 6, on a short run with another seed than the notebook's."""
    mem = noisy_reward_memory(200, 0.1)
    kw = dict(alpha=0.6, lr=0.02, updates=600, batch_size=32)
    est = {
        beta: float(is_bias_run(mem, beta=beta, generator=torch.Generator().manual_seed(11), **kw)[300:].mean())
        for beta in (0.0, 1.0)
    }
    assert est[0.0] - 0.1 > 0.08, est
    assert abs(est[1.0] - 0.1) < 0.01, est
    assert abs(est[0.0] - is_fixed_point(0.1, 0.6, 0.0)) < 0.01, est


def test_is_config_bad_inputs():
    with pytest.raises(ValueError, match="betas must be"):
        IsBiasConfig(betas=(1.5,))
    with pytest.raises(ValueError, match="updates must be >= 2"):
        IsBiasConfig(updates=1)


# ---------------------------------------------------------------------------------------------
# The committed results were made with the notebook's configuration
# ---------------------------------------------------------------------------------------------
def _committed(name: str) -> dict:
    return torch.load(CHECKPOINTS / name, weights_only=True)


def test_committed_variants_table_matches_the_notebooks_parameters():
    p = notebook_parameters(NOTEBOOK)
    cfg = CliffwalkVariantsConfig(
        ns=tuple(p["CLIFF_NS"]), num_seeds=p["CLIFF_SEEDS"], rank_alpha=p["CLIFF_RANK_ALPHA"],
        frozen_alpha=p["CLIFF_FROZEN_ALPHA"], lr=p["CLIFF_LR"], tol=p["CLIFF_TOL"], seed=p["SEED"],
    )  # fmt: skip
    data = _committed(VARIANTS_FILE)
    assert data["config"] == config_dict(cfg)
    for v in CLIFFWALK_VARIANTS:
        assert data["result"][v].shape == (len(cfg.ns), cfg.num_seeds)
    # one cell recomputed from its documented seed
    from memtutor.experiments.nb03_replay import cliffwalk_run_seed

    again = cliffwalk_variant_updates(
        4, "rank", alpha=cfg.rank_alpha, generator=torch.Generator().manual_seed(cliffwalk_run_seed(cfg.seed, 4, 1))
    )
    assert again == int(data["result"]["rank"][cfg.ns.index(4), 1])


def test_committed_is_runs_match_the_notebooks_parameters():
    p = notebook_parameters(NOTEBOOK)
    cfg = IsBiasConfig(
        memory_size=p["IS_MEMORY"], reward_prob=p["IS_REWARD_PROB"], alpha=p["IS_ALPHA"], betas=tuple(p["IS_BETAS"]),
        lr=p["IS_LR"], updates=p["IS_UPDATES"], num_seeds=p["IS_SEEDS"], seed=p["SEED"],
    )  # fmt: skip
    data = _committed(IS_BIAS_FILE)
    assert data["config"] == config_dict(cfg)
    assert data["result"]["prioritized"].shape == (len(cfg.betas), cfg.num_seeds)
