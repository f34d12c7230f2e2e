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
    IS_BIAS_ZERO_FILE,
    PAPER_INIT_STD,
    PAPER_TOL,
    VARIANT_RUNS,
    VARIANTS_FILE,
    CliffwalkVariantsConfig,
    IsBiasConfig,
    _greedy_picker,
    _rank_picker,
    _uniform_picker,
    cliffwalk_memory,
    cliffwalk_run_seed,
    cliffwalk_updates,
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
PAPER = dict(init_std=PAPER_INIT_STD, tol=PAPER_TOL, absolute=True)  # Appendix B.1's protocol
#: The notebook's settings of each variant: greedy under the paper's protocol, the others from Q = 0.
NOTEBOOK_KW = {"greedy": dict(alpha=0.0, **PAPER), "rank": dict(alpha=0.7), "frozen": dict(alpha=0.6), "uniform": {}}


@pytest.mark.parametrize("variant", CLIFFWALK_VARIANTS)
def test_every_variant_learns_a_tiny_chain_deterministically(variant):
    kw = NOTEBOOK_KW[variant]
    counts = [cliffwalk_variant_updates(3, variant, generator=torch.Generator().manual_seed(s), **kw) for s in range(3)]
    assert all(0 < c < 200_000 for c in counts), counts
    again = cliffwalk_variant_updates(3, variant, generator=torch.Generator().manual_seed(0), **kw)
    assert again == counts[0]


def test_greedy_needs_random_initial_values_and_then_learns_fast():
    """From Q = 0 every unrewarded TD error is exactly 0 (the paper's reason for a random start): refused.
    From theta ~ N(0, 0.1) greedy learns n = 6 in a few hundred updates (the notebook's runs: 256 to 380)."""
    with pytest.raises(ValueError, match="needs random initial values"):
        cliffwalk_variant_updates(6, "greedy")
    for seed in range(3):
        count = cliffwalk_variant_updates(6, "greedy", generator=torch.Generator().manual_seed(seed), **PAPER)
        assert count < 1_000, count


def test_greedy_first_sweep_replays_every_transition_once():
    """Never-replayed transitions have infinite priority: the first M updates visit all M of them, so even
    the smallest chain needs at least one full sweep."""
    for seed in range(3):
        count = cliffwalk_variant_updates(2, "greedy", generator=torch.Generator().manual_seed(seed), **PAPER)
        assert count >= len(cliffwalk_memory(2)["state"])


def _naive_greedy(prios: list[float], last: list[int]) -> int:
    """Argmax of the priority; among ties the smallest time of last replay."""
    best = max(prios)
    return min((t, j) for j, (p, t) in enumerate(zip(prios, last, strict=True)) if p == best)[1]


def test_greedy_heap_picks_the_largest_priority_first_in_first_out():
    size = 7
    mem = {"state": [0] * size}
    choose, record = _greedy_picker(mem, None, None, 0.0, None, None)
    prios, last = [float("inf")] * size, list(range(-size, 0))
    g = torch.Generator().manual_seed(0)
    picks = []
    for t in range(1, 400):
        j = choose()
        assert j == _naive_greedy(prios, last), t
        picks.append(j)
        err = float(torch.randint(0, 3, (1,), generator=g)) / 2  # only 3 values: many ties
        record(j, err)
        prios[j], last[j] = err, t
    assert picks[:size] == list(range(size)), "never-replayed transitions first, in memory order"


def test_uniform_picker_draws_every_item_equally_often():
    size, draws = 5, 50_000
    choose, _ = _uniform_picker({"state": [0] * size}, None, None, 0.0, None, torch.Generator().manual_seed(1))
    counts = torch.bincount(torch.tensor([choose() for _ in range(draws)]), minlength=size).double()
    assert float(((counts - draws / size).abs() / (draws / size) ** 0.5).max()) < 5


def test_absolute_stopping_rule_is_the_papers_mse():
    """Absolute: stop when the mean of the 2n squared errors is below tol, so a tol above the initial MSE stops at
    once; the relative rule never does (its threshold is below the initial error)."""
    gen = torch.Generator().manual_seed(0)
    assert cliffwalk_variant_updates(2, "uniform", init_std=0.1, tol=0.99, absolute=True, generator=gen) == 0
    assert cliffwalk_variant_updates(2, "uniform", init_std=0.1, tol=0.99, generator=gen) > 0
    # a looser absolute threshold needs fewer updates than a stricter one on the same draws
    loose, strict = (
        cliffwalk_variant_updates(
            5, "greedy", init_std=0.1, tol=t, absolute=True, generator=torch.Generator().manual_seed(3)
        )
        for t in (1e-2, 1e-4)
    )
    assert 0 < loose < strict


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


def test_frozen_share_of_the_rewarded_transition_matches_the_notebooks_formula():
    """The notebook's share 1 / (1 + (M - 1) eps^alpha) for the memories of n = 2..12."""
    for n in (2, 10, 12):
        mem = cliffwalk_memory(n)
        probs = frozen_probabilities(mem["reward"].double(), 0.6, 1e-6)
        m = len(mem["reward"])
        want = (1 + 1e-6) ** 0.6 / ((1 + 1e-6) ** 0.6 + (m - 1) * 1e-6**0.6)
        assert float(probs[mem["reward"] == 1].sum()) == pytest.approx(want, rel=1e-9)
        assert abs(want - 1 / (1 + (m - 1) * 1e-6**0.6)) < 1e-5


def test_variant_bad_inputs():
    with pytest.raises(ValueError, match="variant must be one of"):
        cliffwalk_variant_updates(3, "oracle")
    with pytest.raises(ValueError, match="0 < lr <= 1"):
        cliffwalk_variant_updates(3, "greedy", lr=0.0, **PAPER)
    with pytest.raises(ValueError, match="init_std must be"):
        cliffwalk_variant_updates(3, "rank", init_std=-0.1)
    with pytest.raises(ValueError, match="ns must not be empty"):
        CliffwalkVariantsConfig(ns=())
    with pytest.raises(ValueError, match="check_seed must differ"):
        CliffwalkVariantsConfig(seed=3, check_seed=3)


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
        frozen_alpha=p["CLIFF_FROZEN_ALPHA"], lr=p["CLIFF_LR"], tol=p["CLIFF_TOL"],
        paper_init_std=p["CLIFF_PAPER_INIT_STD"], paper_tol=p["CLIFF_PAPER_TOL"], seed=p["SEED"],
        check_seed=p["CLIFF_CHECK_SEED"], proportional_alphas=tuple(p["CLIFF_ALPHAS"]),
    )  # fmt: skip
    data = _committed(VARIANTS_FILE)
    assert data["config"] == config_dict(cfg)
    result = data["result"]
    for key in VARIANT_RUNS:
        assert result[key].shape == result["check_" + key].shape == (len(cfg.ns), cfg.num_seeds)
    assert result["check_proportional"].shape == (len(cfg.proportional_alphas), len(cfg.ns), cfg.num_seeds)
    # cells recomputed from their documented seeds, one per protocol and seed set
    i = cfg.ns.index(4)
    gen = lambda seed: torch.Generator().manual_seed(cliffwalk_run_seed(seed, 4, 1))  # noqa: E731
    assert cliffwalk_variant_updates(4, "rank", alpha=cfg.rank_alpha, generator=gen(cfg.seed)) == int(
        result["rank"][i, 1]
    )
    greedy = cliffwalk_variant_updates(
        4, "greedy", init_std=cfg.paper_init_std, tol=cfg.paper_tol, absolute=True, generator=gen(cfg.check_seed)
    )
    assert greedy == int(result["check_greedy"][i, 1])
    prop = cliffwalk_updates(4, "prioritized", alpha=cfg.proportional_alphas[0], generator=gen(cfg.check_seed))
    assert prop == int(result["check_proportional"][0, i, 1])


def test_committed_is_runs_match_the_notebooks_parameters():
    p = notebook_parameters(NOTEBOOK)
    cfg = IsBiasConfig(
        memory_size=p["IS_MEMORY"], reward_prob=p["IS_REWARD_PROB"], alpha=p["IS_ALPHA"], betas=tuple(p["IS_BETAS"]),
        lr=p["IS_LR"], updates=p["IS_UPDATES"], num_seeds=p["IS_SEEDS"], seed=p["SEED"],
    )  # fmt: skip
    data = _committed(IS_BIAS_FILE)
    assert data["config"] == config_dict(cfg)
    assert data["result"]["prioritized"].shape == (len(cfg.betas), cfg.num_seeds)
    zero = IsBiasConfig(**{**config_dict(cfg), "betas": tuple(p["IS_ZERO_BETAS"]), "initial_value": 0.0})
    data = _committed(IS_BIAS_ZERO_FILE)
    assert data["config"] == config_dict(zero)
    assert data["result"]["final_prioritized"].shape == (len(zero.betas), zero.num_seeds)
    assert (CHECKPOINTS / IS_BIAS_ZERO_FILE).stat().st_size < 100_000, "keep the cached runs small"


# ---------------------------------------------------------------------------------------------
# The diagrams' walks: the numbers they draw are the package tree's
# ---------------------------------------------------------------------------------------------
def test_the_drawn_binary_walk_finds_the_package_trees_leaf():
    """binary_walk (drawn by draw_sum_tree_walk) ends at the leaf SumTree.find returns for the same prefix,
    on integer priorities with zeros (exact sums) and prefixes on the leaves' boundaries; each step's v is
    what is left of the prefix inside the node."""
    from memtutor.experiments.nb03_replay import WALK_PREFIX, WALK_PRIORITIES, binary_walk
    from memtutor.replay import SumTree

    g = torch.Generator().manual_seed(0)
    cases = [(WALK_PRIORITIES, WALK_PREFIX)]
    for n in (2, 4, 8, 16):
        p = torch.randint(0, 6, (n,), generator=g).double()
        p[0] += 1  # a positive total
        csum = torch.cumsum(p, 0)
        prefixes = torch.cat(
            [torch.tensor([0.0]), csum[:-1], torch.rand(5, generator=g, dtype=torch.float64) * csum[-1]]
        )
        cases += [(tuple(p.tolist()), float(v)) for v in prefixes if v < csum[-1]]
    for priorities, v in cases:
        tree = SumTree(len(priorities), branching=2, root_fanout=1)
        tree.update(torch.arange(len(priorities)), torch.tensor(priorities, dtype=torch.float64))
        path = binary_walk(priorities, v)
        depth, leaf, v_left = path[-1]
        assert 2**depth == len(priorities) and path[0] == (0, 0, v)
        assert leaf == int(tree.find(torch.tensor([v], dtype=torch.float64))), (priorities, v)
        assert 0 <= v_left < priorities[leaf] and v_left == v - sum(priorities[:leaf])
    assert binary_walk(WALK_PRIORITIES, WALK_PREFIX)[-1][1] == 2  # the drawn example: leaf 2


def test_the_drawn_wide_walk_is_the_package_trees_descent():
    from memtutor.experiments.nb03_replay import WIDE_PREFIX, WIDE_PRIORITIES, wide_walk
    from memtutor.replay import SumTree

    g = torch.Generator().manual_seed(1)
    cases = [(WIDE_PRIORITIES, WIDE_PREFIX, 4)]
    for k, top in ((2, 3), (4, 4), (3, 5)):
        p = torch.randint(0, 6, (k * top,), generator=g).double()
        p[-1] += 1
        cases += [(tuple(p.tolist()), float(v), k) for v in torch.arange(0.0, float(p.sum()), 0.5)]
    for priorities, v, k in cases:
        walk = wide_walk(priorities, v, k)
        tree = SumTree(len(priorities), branching=k, root_fanout=len(priorities) // k)
        tree.update(torch.arange(len(priorities)), torch.tensor(priorities, dtype=torch.float64))
        assert len(tree.levels) == 2 and tree.levels[1].tolist() == walk["top"]
        assert walk["leaf"] == int(tree.find(torch.tensor([v], dtype=torch.float64))), (priorities, v, k)
        assert walk["top_csum"][walk["node"]] <= v < walk["top_csum"][walk["node"] + 1]
        assert walk["row_csum"][walk["child"]] <= walk["v_in_node"] < walk["row_csum"][walk["child"] + 1]
    assert wide_walk(WIDE_PRIORITIES, WIDE_PREFIX)["leaf"] == 10  # the drawn example


def test_the_walks_reject_bad_input():
    from memtutor.experiments.nb03_replay import binary_walk, draw_sum_tree_walk, wide_walk

    for bad in [((1.0, 2.0, 3.0), 1.0), ((1.0, 2.0), 3.0), ((1.0, -1.0), 0.0), ((0.0, 0.0), 0.0), ((), 0.0)]:
        with pytest.raises(ValueError):
            binary_walk(*bad)
    with pytest.raises(ValueError, match="k \\* T leaves"):
        wide_walk((1.0, 2.0, 3.0), 1.0, 2)
    with pytest.raises(ValueError, match="prefix value"):
        wide_walk((1.0, 2.0, 3.0, 4.0), 10.0, 2)
    with pytest.raises(ValueError, match="at most 16 leaves"):
        draw_sum_tree_walk(tuple([1.0] * 32), 1.0)
