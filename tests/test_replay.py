"""Tests for memtutor.replay (the wide sum tree, the prioritized buffer) and notebook 03's Blind
Cliffwalk study (memtutor.experiments.nb03_replay) with its cached table."""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from notebook_cells import notebook_parameters as run_parameters_cell

from memtutor._replay_fast import HAVE_NUMBA, FastSumTree
from memtutor.experiments.nb03_replay import (
    CLIFFWALK_FILE,
    CLIFFWALK_MINUTES,
    CliffwalkConfig,
    cliffwalk_config,
    cliffwalk_memory,
    cliffwalk_run_seed,
    cliffwalk_sweep,
    cliffwalk_true_q,
    cliffwalk_updates,
)
from memtutor.replay import (
    DEFAULT_EPS,
    PrioritizedReplay,
    SumTree,
    importance_weights,
    linear_beta_schedule,
    priority,
    stratified_prefixes,
)
from memtutor.utils import IMPLICIT_TRAINING_MINUTES, config_dict, load_or_train

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


#: The two trees behind PrioritizedReplay(tree=...): "readable" is the vectorised torch tree that
#: notebook 03 builds, "fast" (the default on the CPU) the compiled one. Every tree and buffer test
#: runs on both (without Numba, "fast" falls back to the readable tree and is tested as such).
TREES = {"readable": SumTree, "fast": FastSumTree if HAVE_NUMBA else SumTree}


@pytest.fixture(params=list(TREES), scope="module")
def tree_cls(request):
    """The tree class (module scope, so that hypothesis tests can use it)."""
    return TREES[request.param]


@pytest.fixture(params=list(TREES))
def tree_kind(request, monkeypatch):
    """Each kind of tree as PrioritizedReplay's default for the test."""
    monkeypatch.setitem(PrioritizedReplay.__init__.__kwdefaults__, "tree", request.param)
    return request.param


def make_tree(capacity, branching, fanout, values, cls=SumTree):
    tree = cls(capacity, branching=branching, root_fanout=fanout)
    tree.update(torch.arange(capacity), values)
    return tree


def row_sums(tree: SumTree, rows: torch.Tensor) -> torch.Tensor:
    """``(P,)`` parent sums of ``(P, k)`` children in the order the tree adds them: torch's
    reduction for the readable tree, left to right (a NumPy cumulative sum) for the fast one."""
    if isinstance(tree, FastSumTree):
        return torch.from_numpy(np.cumsum(rows.numpy(), axis=1)[:, -1].copy())
    return rows.sum(1)


def check_invariants(tree: SumTree, leaves: torch.Tensor) -> None:
    """Every stored level equals the sums of its children; the root equals the sum of leaves."""
    k = tree.branching
    levels = tree.levels
    torch.testing.assert_close(tree.leaves(), leaves, rtol=0, atol=0)
    for lower, upper in zip(levels[:-1], levels[1:], strict=True):
        sums = row_sums(tree, lower.view(-1, k))  # one per parent; the rest of `upper` is zero padding
        torch.testing.assert_close(upper[: sums.numel()], sums, rtol=0, atol=0)
        assert not bool(upper[sums.numel() :].any())
    assert math.isclose(float(tree.total), math.fsum(leaves.tolist()), rel_tol=1e-12, abs_tol=1e-300)
    pos = leaves[leaves > 0]
    want_min = float(pos.min()) if pos.numel() else math.inf
    assert float(tree.min_positive) == want_min


# ---------------------------------------------------------------------------------------------
# SumTree: structure and invariants
# ---------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 300),
    branching=st.integers(2, 9),
    fanout=st.integers(1, 40),
    ops=st.lists(
        st.lists(st.tuples(st.integers(0, 10**6), st.floats(0, 1e3, allow_nan=False)), min_size=0, max_size=40),
        min_size=1,
        max_size=6,
    ),
)
def test_invariants_after_any_batched_updates(capacity, branching, fanout, ops, tree_cls):
    """Root = sum of leaves, every node = sum of its children, last write wins on duplicates."""
    tree = tree_cls(capacity, branching=branching, root_fanout=fanout)
    naive = [0.0] * capacity
    for batch in ops:
        idx = [i % capacity for i, _ in batch]
        vals = [v for _, v in batch]
        for i, v in zip(idx, vals, strict=True):  # sequential assignment: the reference semantics
            naive[i] = v
        tree.update(torch.tensor(idx, dtype=torch.int64), torch.tensor(vals, dtype=F64))
        check_invariants(tree, torch.tensor(naive, dtype=F64))


def test_duplicate_indices_last_value_wins_and_ancestors_follow(tree_kind):
    tree = TREES[tree_kind](10, branching=3, root_fanout=2)
    tree.update(torch.tensor([4, 7, 4, 4, 7]), torch.tensor([1.0, 2.0, 3.0, 5.0, 0.5], dtype=F64))
    leaves = torch.zeros(10, dtype=F64)
    leaves[4], leaves[7] = 5.0, 0.5
    check_invariants(tree, leaves)


@pytest.mark.parametrize("capacity", [1, 2, 3, 5, 17, 100, 1000, 4097])
@pytest.mark.parametrize("branching,fanout", [(2, 1), (3, 2), (16, 4096), (64, 16384)])
def test_any_capacity_builds_a_consistent_tree(capacity, branching, fanout, tree_kind):
    g = torch.Generator().manual_seed(capacity)
    values = torch.rand(capacity, dtype=F64, generator=g)
    tree = make_tree(capacity, branching, fanout, values, cls=TREES[tree_kind])
    check_invariants(tree, values)
    assert tree.levels[-1].numel() <= max(fanout, 1)


def test_no_drift_after_many_updates(tree_kind):
    """Parents are recomputed from children, so a million small updates leave no residue."""
    g = torch.Generator().manual_seed(0)
    cap = 5000
    tree = make_tree(cap, 4, 8, torch.rand(cap, dtype=F64, generator=g), cls=TREES[tree_kind])
    for _ in range(100):
        idx = torch.randint(0, cap, (5000,), generator=g)
        scale = 10.0 ** torch.randint(-8, 4, (5000,), generator=g).double()  # 12 decades
        tree.update(idx, torch.rand(5000, dtype=F64, generator=g) * scale)
    leaves = tree.leaves().clone()
    check_invariants(tree, leaves)
    before = [lvl.clone() for lvl in tree.levels]
    tree.rebuild()
    for a, b in zip(before, tree.levels, strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# SumTree: search and sampling
# ---------------------------------------------------------------------------------------------
def naive_find_ok(leaves: torch.Tensor, v: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
    """True where ``got`` is a valid answer up to float64 rounding of the prefix sums."""
    csum = torch.cumsum(leaves, 0)
    before = torch.cat([csum.new_zeros(1), csum])[got]
    after = csum[got]
    slack = 1e-12 * float(csum[-1])
    return (before - slack <= v) & (v <= after + slack)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 400),
    branching=st.integers(2, 9),
    fanout=st.integers(1, 50),
    zero_frac=st.floats(0, 0.95),
    seed=st.integers(0, 2**31 - 1),
)
def test_find_matches_naive_and_never_returns_a_zero_leaf(capacity, branching, fanout, zero_frac, seed, tree_cls):
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(capacity, dtype=F64, generator=g)
    values[torch.rand(capacity, generator=g) < zero_frac] = 0.0
    values[int(torch.randint(0, capacity, (1,), generator=g))] = 0.5  # at least one positive leaf
    tree = make_tree(capacity, branching, fanout, values, cls=tree_cls)
    total = float(tree.total)
    csum = torch.cumsum(values, 0)
    # random prefixes plus the adversarial ones: 0, every boundary, just below it, the total
    v = torch.cat(
        [
            torch.rand(300, dtype=F64, generator=g) * total,
            torch.tensor([0.0, total], dtype=F64),
            csum.clamp(max=total),
            torch.nextafter(csum, torch.zeros(())).clamp(0, total),
        ]
    )
    got = tree.find(v)
    assert got.dtype == torch.int64 and got.shape == v.shape
    assert bool(((got >= 0) & (got < capacity)).all())
    assert bool((values[got] > 0).all()), "a zero-priority leaf was returned"
    assert bool(naive_find_ok(values, v, got).all())


def test_rounding_up_to_the_total_maps_to_the_last_positive_leaf(tree_kind):
    values = torch.tensor([0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0], dtype=F64)
    tree = make_tree(7, 2, 1, values, cls=TREES[tree_kind])
    assert int(tree.find(torch.tensor([float(tree.total)], dtype=F64))) == 2
    # one ulp below the total is still inside the last positive leaf, not in the zero padding
    below = torch.nextafter(tree.total, torch.zeros((), dtype=F64)).reshape(1)
    assert int(tree.find(below)) == 2
    # one ulp above the total is outside [0, total]: rejected, not clamped
    above = torch.nextafter(tree.total, torch.full((), math.inf, dtype=F64)).reshape(1)
    with pytest.raises(ValueError, match="prefix_values must lie in"):
        tree.find(above)


@settings(max_examples=30, deadline=None)
@given(filled=st.integers(1, 200), capacity_extra=st.integers(0, 300), batch=st.integers(1, 700))
def test_samples_never_leave_the_filled_part(filled, capacity_extra, batch, tree_cls):
    cap = filled + capacity_extra
    g = torch.Generator().manual_seed(filled * 1000 + batch)
    tree = tree_cls(cap, branching=4, root_fanout=8)
    tree.update(torch.arange(filled), torch.rand(filled, dtype=F64, generator=g) + 1e-300)
    idx = tree.sample(batch, g)
    assert idx.shape == (batch,)
    assert int(idx.max()) < filled and int(idx.min()) >= 0


def test_tiny_priorities_next_to_huge_ones_are_never_lost_or_overrun(tree_kind):
    """Float64 sums with a 1e-300 leaf beside 1e300 ones: no zero leaf, no index past the end."""
    values = torch.tensor([1e300, 0.0, 1e-300, 0.0, 1e300, 0.0], dtype=F64)
    tree = make_tree(6, 2, 2, values, cls=TREES[tree_kind])
    idx = tree.sample(10_000, torch.Generator().manual_seed(0))
    assert set(idx.tolist()) <= {0, 2, 4}


def test_capacity_one(tree_kind):
    """A size-1 tree (openai/baselines#170 overflowed its reduce) samples its only leaf."""
    tree = TREES[tree_kind](1)
    tree.update(torch.tensor([0]), torch.tensor([0.3], dtype=F64))
    assert tree.sample(5).tolist() == [0] * 5
    buf = PrioritizedReplay(1)
    buf.add({"x": torch.tensor([[1.0, 2.0]])})
    batch, idx, w = buf.sample(3, 0.4)
    assert idx.tolist() == [0, 0, 0] and torch.equal(w, torch.ones(3))
    buf.add({"x": torch.tensor([[3.0, 4.0]])})
    assert len(buf) == 1 and buf.sample(1, 1.0)[0]["x"].tolist() == [[3.0, 4.0]]


def test_empirical_frequencies_match_probabilities_chi_square(tree_kind):
    """Independent prefixes through find(): frequencies follow leaf / total (chi-square test)."""
    g = torch.Generator().manual_seed(1)
    values = torch.tensor([5.0, 0.0, 1.0, 0.25, 3.0, 0.0, 0.75, 2.0, 0.5, 1.5, 0.0], dtype=F64)
    tree = make_tree(11, 3, 2, values, cls=TREES[tree_kind])
    draws = 200_000
    idx = tree.find(torch.rand(draws, dtype=F64, generator=g) * float(tree.total))
    counts = torch.bincount(idx, minlength=11).double()
    probs = values / values.sum()
    pos = probs > 0
    assert float(counts[~pos].sum()) == 0
    chi2 = float((((counts - draws * probs) ** 2)[pos] / (draws * probs[pos])).sum())
    dof = int(pos.sum()) - 1
    p_value = float(torch.special.gammaincc(torch.tensor(dof / 2), torch.tensor(chi2 / 2)))  # chi2.sf
    assert p_value > 1e-3, (chi2, p_value)


def test_stratified_sampling_counts_are_within_one_per_segment_boundary(tree_kind):
    """With B stratified draws, leaf i is drawn B*P(i) times up to the two segments it straddles."""
    g = torch.Generator().manual_seed(2)
    values = torch.rand(37, dtype=F64, generator=g)
    tree = make_tree(37, 4, 3, values, cls=TREES[tree_kind])
    batch = 10_000
    idx = tree.sample(batch, g)
    assert bool((idx[1:] >= idx[:-1]).all()), "stratified prefixes are sorted, so are the leaves"
    counts = torch.bincount(idx, minlength=37).double()
    expect = batch * values / values.sum()
    assert float((counts - expect).abs().max()) <= 2.0


def test_stratified_prefixes_one_per_segment():
    v = stratified_prefixes(8, 4.0, torch.Generator().manual_seed(0))
    seg = torch.div(v, 0.5, rounding_mode="floor")
    assert seg.tolist() == list(range(8))


# ---------------------------------------------------------------------------------------------
# SumTree: bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(capacity=0), "capacity must be >= 1"),
        (dict(capacity=-3), "capacity must be >= 1"),
        (dict(capacity=2.5), "capacity must be an integer"),
        (dict(capacity=10, branching=1), "branching must be >= 2"),
        (dict(capacity=10, root_fanout=0), "root_fanout must be >= 1"),
    ],
)
def test_tree_constructor_errors(kwargs, match, tree_kind):
    with pytest.raises(ValueError, match=match):
        TREES[tree_kind](**kwargs)


def test_tree_update_errors(tree_kind):
    tree = TREES[tree_kind](5)
    with pytest.raises(ValueError, match="NaN"):
        tree.update(torch.tensor([1]), torch.tensor([float("nan")], dtype=F64))
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.update(torch.tensor([1]), torch.tensor([float("inf")], dtype=F64))
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.update(torch.tensor([1, 2]), torch.tensor([1.0, -0.5], dtype=F64))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\)"):
        tree.update(torch.tensor([5]), torch.tensor([1.0], dtype=F64))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\)"):
        tree.update(torch.tensor([-1]), torch.tensor([1.0], dtype=F64))
    with pytest.raises(ValueError, match="integer tensor"):
        tree.update(torch.tensor([1.0]), torch.tensor([1.0], dtype=F64))
    with pytest.raises(ValueError, match="values must have shape"):
        tree.update(torch.tensor([1, 2]), torch.tensor([1.0], dtype=F64))
    assert float(tree.total) == 0.0, "a rejected update must leave the tree untouched"


def test_tree_search_errors(tree_kind):
    tree = TREES[tree_kind](5)
    with pytest.raises(ValueError, match="total is 0"):
        tree.sample(3)
    with pytest.raises(ValueError, match="total is 0"):
        tree.find(torch.tensor([0.0], dtype=F64))
    tree.update(torch.tensor([0, 1]), torch.tensor([1.0, 2.0], dtype=F64))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        tree.sample(0)
    with pytest.raises(ValueError, match=r"prefix_values must lie in \[0, total=3\]"):
        tree.find(torch.tensor([3.5], dtype=F64))
    with pytest.raises(ValueError, match=r"prefix_values must lie in"):
        tree.find(torch.tensor([-0.1], dtype=F64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        tree.find(torch.tensor([float("nan")], dtype=F64))


# ---------------------------------------------------------------------------------------------
# PrioritizedReplay
# ---------------------------------------------------------------------------------------------
def transitions(n, start=0):
    x = torch.arange(start, start + n, dtype=torch.float32)
    return {"obs": torch.stack([x, -x], 1), "action": torch.arange(start, start + n), "reward": x / 10}


def test_add_returns_ring_indices_and_stores_items(tree_kind):
    buf = PrioritizedReplay(7)
    assert buf.add(transitions(5)).tolist() == [0, 1, 2, 3, 4]
    assert len(buf) == 5
    assert buf.add(transitions(4, start=5)).tolist() == [5, 6, 0, 1]
    assert len(buf) == 7
    assert buf.storage["action"].tolist() == [7, 8, 2, 3, 4, 5, 6]
    assert buf.storage["obs"].shape == (7, 2) and buf.storage["obs"].dtype == torch.float32


def test_sample_shapes_and_returned_items_match_indices(tree_kind):
    buf = PrioritizedReplay(50, alpha=0.6)
    buf.add(transitions(30))
    batch, idx, w = buf.sample(16, 0.4, torch.Generator().manual_seed(0))
    assert idx.shape == (16,) and idx.dtype == torch.int64 and w.shape == (16,)
    assert w.dtype == torch.get_default_dtype()
    assert batch["obs"].shape == (16, 2) and batch["action"].shape == (16,)
    assert torch.equal(batch["action"], idx), "action i was stored in slot i"
    assert int(idx.max()) < 30


def test_priorities_weights_and_new_item_priority_match_naive(tree_kind):
    alpha, beta, eps = 0.7, 0.5, 1e-3
    buf = PrioritizedReplay(20, alpha=alpha, eps=eps)
    buf.add(transitions(12))
    g = torch.Generator().manual_seed(3)
    errors = torch.randn(12, generator=g, dtype=F64) * 3
    buf._sampled_at = buf._num_added  # as if all 12 had just been sampled
    buf.sample(1, 0.0)
    buf.update_priorities(torch.arange(12), errors)
    raw = errors.abs() + eps
    torch.testing.assert_close(buf.tree.leaves()[:12], raw**alpha)
    assert buf.max_priority == pytest.approx(max(1.0, float(raw.max())))
    # a new item enters at the largest priority seen so far
    new = buf.add(transitions(1, start=12))
    assert float(buf.tree.leaves(new)) == pytest.approx(buf.max_priority**alpha)
    # IS weights against a naive computation over the whole buffer
    _, idx, w = buf.sample(64, beta, g)
    p = buf.tree.leaves()[: len(buf)]
    P = p / p.sum()
    all_w = (len(buf) * P) ** (-beta)
    naive = all_w[idx] / all_w.max()
    torch.testing.assert_close(w.double(), naive, rtol=1e-6, atol=0)
    assert float(w.max()) <= 1.0


def test_is_weights_are_normalised_by_the_least_likely_stored_item_not_the_batch(tree_kind):
    """The largest possible weight belongs to the least likely *stored* item, here one that the
    batch does not contain: normalising by the batch's largest weight would give weights of 1."""
    buf = PrioritizedReplay(10, alpha=1.0, eps=1e-6)
    buf.add(transitions(10), errors=torch.tensor([1e-3] + [1.0] * 9))
    _, idx, w = buf.sample(4, 1.0, torch.Generator().manual_seed(0))
    assert 0 not in idx.tolist(), "the least likely item (P ~ 1e-4) should not be in this batch"
    p = buf.tree.leaves()
    all_w = (len(buf) * p / p.sum()) ** -1.0
    torch.testing.assert_close(w.double(), all_w[idx] / all_w.max(), rtol=1e-6, atol=0)
    assert float(w.max()) < 0.01  # (p_min / p_i)^beta ~ 1e-3


def test_add_with_errors_sets_initial_priorities(tree_kind):
    buf = PrioritizedReplay(5, alpha=0.5, eps=0.01)
    buf.add(transitions(3), errors=torch.tensor([0.0, -1.0, 3.0]))
    torch.testing.assert_close(buf.tree.leaves()[:3], torch.tensor([0.01, 1.01, 3.01], dtype=F64) ** 0.5)


def test_priority_and_importance_weight_functions():
    e = torch.tensor([-2.0, 0.0, 1.0])
    torch.testing.assert_close(priority(e, 0.5, 0.25), torch.tensor([2.25, 0.25, 1.25], dtype=F64) ** 0.5)
    assert torch.equal(priority(e, 0.0, 0.25), torch.ones(3, dtype=F64))
    probs = torch.tensor([0.5, 0.1, 0.4], dtype=F64)
    w = importance_weights(probs, 3, 1.0, 0.1)
    torch.testing.assert_close(w, (3 * probs) ** -1.0 / (3 * 0.1) ** -1.0)


def test_alpha_zero_is_uniform(tree_kind):
    buf = PrioritizedReplay(10, alpha=0.0)
    buf.add(transitions(10))
    buf.sample(1, 0.0)
    buf.update_priorities(torch.arange(10), torch.linspace(0, 100, 10))
    assert torch.equal(buf.tree.leaves(), torch.ones(10, dtype=F64))
    _, idx, w = buf.sample(10_000, 1.0, torch.Generator().manual_seed(0))
    assert torch.bincount(idx, minlength=10).tolist() == [1000] * 10
    assert torch.equal(w, torch.ones(10_000))


def test_stale_update_after_overwrite_is_skipped(tree_kind):
    """cleanrl#511: a priority computed for a sampled item must not land on its replacement."""
    buf = PrioritizedReplay(4, alpha=1.0, eps=1e-6)
    buf.add(transitions(4))
    _, idx, _ = buf.sample(4, 0.4, torch.Generator().manual_seed(0))
    buf.add(transitions(2, start=4))  # overwrites slots 0 and 1 (new items at max priority 1)
    applied = buf.update_priorities(torch.tensor([0, 1, 2, 3]), torch.tensor([5.0, 5.0, 0.5, 0.5]))
    assert applied.tolist() == [False, False, True, True]
    torch.testing.assert_close(buf.tree.leaves(), torch.tensor([1.0, 1.0, 0.5 + 1e-6, 0.5 + 1e-6], dtype=F64))
    # bad input is rejected even where the update would be skipped as stale
    before = buf.tree.leaves().clone()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="NaN or infinite"):
            buf.update_priorities(torch.tensor([0, 2]), torch.tensor([bad, 1.0]))
    assert torch.equal(buf.tree.leaves(), before), "a rejected update must leave the priorities untouched"
    buf.sample(1, 0.4)
    assert buf.update_priorities(torch.tensor([0]), torch.tensor([2.0])).tolist() == [True]


def test_replay_bad_inputs(tree_kind):
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        PrioritizedReplay(0)
    fresh = PrioritizedReplay(4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fresh.add({"a": torch.zeros(1, 3)}, errors=torch.tensor([float("inf")]))
    assert not fresh.storage and len(fresh) == 0, "a rejected first add must not fix keys or shapes"
    fresh.add({"b": torch.zeros(2)})  # so other keys and shapes are still accepted
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        PrioritizedReplay(4, alpha=-0.1)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        PrioritizedReplay(4, eps=0.0)
    buf = PrioritizedReplay(4)
    with pytest.raises(ValueError, match="empty replay buffer"):
        buf.sample(2, 0.4)
    with pytest.raises(ValueError, match="non-empty dict"):
        buf.add({})
    with pytest.raises(ValueError, match="share the batch size"):
        buf.add({"a": torch.zeros(2), "b": torch.zeros(3)})
    with pytest.raises(ValueError, match="leading batch dimension"):
        buf.add({"a": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="cannot add 5 transitions"):
        buf.add({"a": torch.zeros(5)})
    buf.add({"a": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="per-item shape"):
        buf.add({"a": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="keys"):
        buf.add({"b": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        buf.sample(0, 0.4)
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, 1\]"):
        buf.sample(2, 1.5)
    buf.sample(2, 0.4)
    with pytest.raises(ValueError, match=r"filled part \[0, 2\)"):
        buf.update_priorities(torch.tensor([2]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"filled part \[0, 2\)"):
        buf.update_priorities(torch.tensor([-1]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        buf.update_priorities(torch.tensor([0]), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        buf.update_priorities(torch.tensor([0]), torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match="errors must have shape"):
        buf.update_priorities(torch.tensor([0, 1]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="integer tensor"):
        buf.update_priorities(torch.tensor([0.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        buf.add({"a": torch.zeros(1, 3)}, errors=torch.tensor([float("nan")]))


def test_beta_schedule():
    sched = linear_beta_schedule(0.4, 100)
    assert sched(0) == 0.4 and sched(50) == pytest.approx(0.7) and sched(100) == 1.0 and sched(10**6) == 1.0
    with pytest.raises(ValueError, match="beta0"):
        linear_beta_schedule(1.5, 10)
    with pytest.raises(ValueError, match="total_steps"):
        linear_beta_schedule(0.4, 0)
    with pytest.raises(ValueError, match="step must be"):
        sched(-1)


def test_default_eps_is_documented_constant(tree_kind):
    assert PrioritizedReplay(3).eps == DEFAULT_EPS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_replay_on_cuda(tree_kind):
    buf = PrioritizedReplay(100, device="cuda")
    buf.add({"x": torch.randn(50, 3)})
    batch, idx, w = buf.sample(8, 0.4)
    assert batch["x"].is_cuda and idx.is_cuda and w.is_cuda
    buf.update_priorities(idx, torch.randn(8, device="cuda"))
    check_invariants(buf.tree, buf.tree.leaves().clone())


# ---------------------------------------------------------------------------------------------
# Blind Cliffwalk
# ---------------------------------------------------------------------------------------------
def test_cliffwalk_memory_counts():
    for n in (1, 2, 5):
        mem = cliffwalk_memory(n)
        assert mem["state"].numel() == 2 ** (n + 1) - 2
        assert float(mem["reward"].sum()) == 1.0
        rewarded = int(torch.nonzero(mem["reward"]).squeeze())
        assert int(mem["state"][rewarded]) == n - 1 and int(mem["action"][rewarded]) == 1
        for i in range(n):
            for a in (0, 1):
                assert int(((mem["state"] == i) & (mem["action"] == a)).sum()) == 2 ** (n - 1 - i)
        moving = mem["done"] == 0
        assert torch.equal(mem["next_state"][moving], mem["state"][moving] + 1)


def test_cliffwalk_true_q_satisfies_bellman():
    n, gamma = 6, 0.8
    q = cliffwalk_true_q(n, gamma)
    mem = cliffwalk_memory(n)
    target = mem["reward"].double() + gamma * (1 - mem["done"].double()) * q[mem["next_state"]].amax(1)
    torch.testing.assert_close(q[mem["state"], mem["action"]], target)


@pytest.mark.parametrize("method", ["uniform", "prioritized", "oracle"])
def test_cliffwalk_training_path_learns_tiny_chain(method):
    counts = [
        cliffwalk_updates(3, method, generator=torch.Generator().manual_seed(s), max_updates=20_000) for s in range(3)
    ]
    assert all(0 < c < 20_000 for c in counts), counts  # the loss fell below tol * initial


def test_cliffwalk_prioritized_beats_uniform_and_oracle_beats_both():
    n, seeds = 5, 5
    med = {
        m: float(np.median([cliffwalk_updates(n, m, generator=torch.Generator().manual_seed(s)) for s in range(seeds)]))
        for m in ("uniform", "prioritized", "oracle")
    }
    assert med["oracle"] <= med["prioritized"] < med["uniform"], med


def test_cliffwalk_is_deterministic_given_a_generator():
    a = cliffwalk_updates(4, "prioritized", generator=torch.Generator().manual_seed(7))
    b = cliffwalk_updates(4, "prioritized", generator=torch.Generator().manual_seed(7))
    assert a == b


def test_cliffwalk_bad_inputs():
    with pytest.raises(ValueError, match="method must be one of"):
        cliffwalk_updates(3, "greedy")
    with pytest.raises(ValueError, match="n must be >= 1"):
        cliffwalk_memory(0)
    with pytest.raises(ValueError, match="n must be <= 20"):
        cliffwalk_memory(21)
    with pytest.raises(ValueError, match="0 < lr <= 1"):
        cliffwalk_updates(3, "uniform", lr=0.0)


# ---------------------------------------------------------------------------------------------
# Benchmark smoke test
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_benchmark_quick_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "replay.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=True,
    )
    assert "sample + update_priorities" in out.stdout and "memtutor" in out.stdout


# ---------------------------------------------------------------------------------------------
# Exercise checks (memtutor.exercises.ex03)
# ---------------------------------------------------------------------------------------------
from memtutor.exercises import ex03  # noqa: E402


def ref_is_weights(priorities, indices, beta):
    probs = priorities / priorities.sum()
    n = priorities.numel()
    return (n * probs[indices]) ** (-beta) / (n * probs.min()) ** (-beta)


def ref_sampler(priorities, batch_size, generator):
    csum = torch.cumsum(priorities, 0)
    u = torch.arange(batch_size, dtype=csum.dtype) + torch.rand(batch_size, dtype=csum.dtype, generator=generator)
    u = (u * (csum[-1] / batch_size)).clamp(max=torch.nextafter(csum[-1], csum.new_zeros(())))
    return torch.searchsorted(csum, u, right=True)


def ref_rank(errors, alpha):
    rank = torch.empty_like(errors)
    rank[torch.argsort(errors.abs(), descending=True)] = torch.arange(1, errors.numel() + 1, dtype=errors.dtype)
    p = rank ** (-alpha)
    return p / p.sum()


def test_exercise_checks_accept_reference_solutions():
    assert ex03.check_importance_weights(ref_is_weights)
    assert ex03.check_proportional_sampler(ref_sampler)
    assert ex03.check_rank_based_probabilities(ref_rank)


def test_exercise_checks_reject_wrong_answers_with_a_reason():
    def batch_max(p, i, b):
        w = (p.numel() * p[i] / p.sum()) ** (-b)
        return w / w.max()

    r = ex03.check_importance_weights(batch_max)
    assert not r and "least likely stored item" in r.message
    r = ex03.check_importance_weights(lambda p, i, b: torch.ones(3))
    assert not r and "one weight per sampled index" in r.message
    r = ex03.check_importance_weights(lambda p, i, b: 1 / 0)
    assert not r and "ZeroDivisionError" in r.message

    def iid(p, b, g):
        csum = torch.cumsum(p, 0)
        return torch.searchsorted(csum, torch.rand(b, dtype=p.dtype, generator=g) * csum[-1], right=True)

    r = ex03.check_proportional_sampler(iid)
    assert not r and "stratified" in r.message

    def left(p, b, g):
        csum = torch.cumsum(p, 0)
        u = (torch.arange(b, dtype=p.dtype) + torch.rand(b, dtype=p.dtype, generator=g)) * csum[-1] / b
        return torch.searchsorted(csum, u)  # side="left": can land on a zero item at a boundary

    r = ex03.check_proportional_sampler(lambda p, b, g: torch.zeros(b, dtype=torch.int64))
    assert not r
    r = ex03.check_proportional_sampler(left)
    assert isinstance(r.ok, bool)  # usually right by luck: boundaries have probability ~0
    r = ex03.check_rank_based_probabilities(lambda e, a: ref_rank(-e.abs().reciprocal(), a))
    assert not r
    r = ex03.check_rank_based_probabilities(lambda e, a: torch.ones_like(e))
    assert not r and "sum to 1" in r.message
    assert "Not yet" in repr(r)


@pytest.mark.slow
def test_cliffwalk_sweep_tiny_configuration():
    """The notebook's cached training path on a tiny configuration: shapes, settings, learning."""
    res = cliffwalk_sweep(CliffwalkConfig(ns=[2, 3], num_seeds=2, alphas=(1.0,), seed=5, max_updates=50_000))
    assert res["uniform"].shape == (2, 2) and res["prioritized"].shape == (1, 2, 2)
    assert res["memory"].tolist() == [6, 14] and float(res["tol"]) == 1e-3
    for key in ("uniform", "oracle", "prioritized"):
        assert bool((res[key] > 0).all()) and bool((res[key] < 50_000).all())
    assert cliffwalk_run_seed(5, 3, 1) == 5 + 3000 + 1
    again = cliffwalk_updates(3, "uniform", generator=torch.Generator().manual_seed(5 + 3000 + 1))
    assert again == int(res["uniform"][1, 1]), "each cell is reproducible from its documented seed"


# ---------------------------------------------------------------------------------------------
# The cached table of notebook 03 and its configuration
# ---------------------------------------------------------------------------------------------
NOTEBOOK = ROOT / "notebooks" / "03_prioritized_replay.ipynb"
CHECKPOINTS = ROOT / "notebooks" / "checkpoints"


def notebook_parameters() -> dict:
    """The names defined by notebook 03's ``parameters``-tagged cell (plain assignments of literals)."""
    return run_parameters_cell(NOTEBOOK.name)


def notebook_config() -> CliffwalkConfig:
    p = notebook_parameters()
    return cliffwalk_config(
        ns=p["CLIFF_NS"], num_seeds=p["CLIFF_SEEDS"], alphas=p["CLIFF_ALPHAS"], lr=p["CLIFF_LR"], tol=p["CLIFF_TOL"],
        seed=p["SEED"],
    )  # fmt: skip


def refuse_to_train():
    raise AssertionError("the committed table should have been loaded, not recomputed")


def test_committed_table_was_made_with_the_notebooks_configuration():
    data = torch.load(CHECKPOINTS / CLIFFWALK_FILE, weights_only=True)
    assert data["config"] == config_dict(notebook_config())
    res = data["result"]  # the settings the table itself records agree with its configuration
    cfg = notebook_config()
    assert res["ns"].tolist() == list(cfg.ns) and res["uniform"].shape[1] == cfg.num_seeds
    assert res["alphas"].tolist() == list(cfg.alphas) and int(res["seed"]) == cfg.seed
    assert float(res["lr"]) == cfg.lr and float(res["tol"]) == cfg.tol


def test_unchanged_configuration_loads_the_committed_table(tmp_path):
    shutil.copy(CHECKPOINTS / CLIFFWALK_FILE, tmp_path)
    res = load_or_train(
        CLIFFWALK_FILE, notebook_config(), refuse_to_train, minutes=CLIFFWALK_MINUTES, directory=tmp_path
    )
    assert res["uniform"].shape == (11, 5)


@pytest.mark.parametrize("field", ["ns", "num_seeds", "alphas", "lr", "tol", "seed", "max_updates"])
def test_a_changed_field_recomputes_the_table_and_says_why(tmp_path, capsys, field):
    """The table recomputes in about two minutes: a changed parameter retrains instead of raising."""
    shutil.copy(CHECKPOINTS / CLIFFWALK_FILE, tmp_path)
    assert CLIFFWALK_MINUTES <= IMPLICIT_TRAINING_MINUTES
    cfg = notebook_config()
    changed = {"ns": (2, 3), "num_seeds": 3, "alphas": (0.5,), "lr": 0.5, "tol": 1e-2, "seed": 1, "max_updates": 9}
    other = dataclasses.replace(cfg, **{field: changed[field]})
    res = load_or_train(CLIFFWALK_FILE, other, lambda: {"marker": torch.tensor(1)}, minutes=CLIFFWALK_MINUTES,
                        directory=tmp_path)  # fmt: skip
    assert int(res["marker"]) == 1
    out = capsys.readouterr().out
    assert "another configuration" in out and f"{field}: cached" in out


def test_multithreaded_search_path_gives_the_same_leaves(tree_kind):
    """Replay operations run single-threaded inside and restore the caller's thread count."""
    g = torch.Generator().manual_seed(4)
    values = torch.rand(50_000, dtype=F64, generator=g) * (torch.rand(50_000, generator=g) > 0.5)
    tree = make_tree(50_000, 16, 300, values, cls=TREES[tree_kind])
    v = torch.rand(1000, dtype=F64, generator=g) * float(tree.total)
    one = tree.find(v)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = tree.find(v)
        idx = tree.sample(700, g)
        assert torch.get_num_threads() == 2, "the caller's thread count must be restored"
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    assert bool((values[idx] > 0).all())


def test_state_dict_round_trip(tmp_path, tree_kind):
    g = torch.Generator().manual_seed(6)
    buf = PrioritizedReplay(9, alpha=0.7, eps=1e-3)
    buf.add(transitions(6))
    buf.add(transitions(6, start=6))  # wraps around the ring
    _, idx, _ = buf.sample(5, 0.4, g)
    buf.update_priorities(idx, torch.randn(5, generator=g))
    torch.save(buf.state_dict(), tmp_path / "buf.pt")
    other = PrioritizedReplay(9, alpha=0.7, eps=1e-3)
    other.load_state_dict(torch.load(tmp_path / "buf.pt", weights_only=True))
    assert len(other) == len(buf) and other.max_priority == buf.max_priority
    assert torch.equal(other.tree.leaves(), buf.tree.leaves())
    for k in buf.storage:
        assert torch.equal(other.storage[k], buf.storage[k])
    a = buf.sample(6, 0.5, torch.Generator().manual_seed(1))
    b = other.sample(6, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert other.add(transitions(1, start=50)).tolist() == buf.add(transitions(1, start=50)).tolist()
    with pytest.raises(ValueError, match="capacity=9, alpha=0.7"):
        PrioritizedReplay(10, alpha=0.7, eps=1e-3).load_state_dict(buf.state_dict())
    with pytest.raises(ValueError, match="missing 'priorities'"):
        other.load_state_dict({})


# --------------------------------------------------------------------------------------------
# Bad input: a clear ValueError, and the buffer exactly as it was
# --------------------------------------------------------------------------------------------
def snapshot(buf: PrioritizedReplay) -> dict:
    """Everything a call could change: the state dict (storage, priorities, counters, max
    priority) and every level of the tree (sums and minima)."""
    state = {k: v.clone() for k, v in buf.state_dict().items()}
    state.update({f"sums{i}": t.clone() for i, t in enumerate(buf.tree._sums)})
    state.update({f"mins{i}": t.clone() for i, t in enumerate(buf.tree._mins)})
    return state


def assert_unchanged(buf: PrioritizedReplay, before: dict) -> None:
    after = snapshot(buf)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} changed by a rejected call"


def filled_buffer(alpha=1.0) -> PrioritizedReplay:
    buf = PrioritizedReplay(8, alpha=alpha)
    buf.add(transitions(6))
    buf.sample(4, 0.5, torch.Generator().manual_seed(0))
    return buf


_HUGE = torch.tensor([1e308, 1e308], dtype=F64)
REJECTED_BUFFER_CALLS = {
    "float into int64 storage": (lambda b: b.add({**transitions(1), "action": torch.tensor([0.7])}), "float32.*int64"),
    "float64 into float32 storage": (
        lambda b: b.add({**transitions(1), "reward": torch.tensor([0.1], dtype=F64)}),
        "float64 but the buffer stores torch.float32",
    ),
    "bool TD errors (add)": (lambda b: b.add(transitions(1), errors=torch.tensor([True])), "real numbers"),
    "complex TD errors": (
        lambda b: b.update_priorities(torch.tensor([0]), torch.tensor([1 + 1j])),
        "real numbers.*complex",
    ),
    "bool TD errors (update)": (lambda b: b.update_priorities(torch.tensor([0]), torch.tensor([True])), "real"),
    "priority sum overflows": (lambda b: b.update_priorities(torch.tensor([0, 1]), _HUGE), "errors too large"),
    "one priority overflows": (
        lambda b: b.add(transitions(1), errors=torch.tensor([1e308], dtype=F64)),
        "errors too large",
    ),
    "generator=123": (lambda b: b.sample(2, 0.5, generator=123), "generator must be a torch.Generator"),
    "beta nan": (lambda b: b.sample(2, float("nan")), "beta"),
    "load garbage": (lambda b: b.load_state_dict({**b.state_dict(), "priorities": -torch.ones(8)}), ">= 0"),
    "load bad storage": (
        lambda b: b.load_state_dict({**b.state_dict(), "storage.obs": torch.zeros(3, 2)}),
        "8 items",
    ),
    "load non-mapping": (lambda b: b.load_state_dict([1, 2]), "state must be a dict"),
}


@pytest.mark.parametrize("case", list(REJECTED_BUFFER_CALLS))
def test_rejected_buffer_calls_change_nothing(case, tree_kind):
    call, message = REJECTED_BUFFER_CALLS[case]
    buf = filled_buffer()
    before = snapshot(buf)
    with pytest.raises(ValueError, match=message):
        call(buf)
    assert_unchanged(buf, before)


def test_float_into_bool_storage_is_rejected(tree_kind):
    """0.5 stored as True: the cast is lossy, so it raises and stores nothing."""
    buf = PrioritizedReplay(4)
    buf.add({"done": torch.tensor([False, True])})
    before = snapshot(buf)
    for bad in (torch.tensor([0.5]), torch.tensor([2])):
        with pytest.raises(ValueError, match="stores torch.bool"):
            buf.add({"done": bad})
    assert_unchanged(buf, before)


def test_lossless_casts_are_accepted(tree_kind):
    """int into float storage, bool into int, float32 into float64: no value can change."""
    buf = PrioritizedReplay(4)
    buf.add({"a": torch.zeros(1, dtype=F64), "b": torch.zeros(1, dtype=torch.int64)})
    buf.add({"a": torch.tensor([3]), "b": torch.tensor([True])}, errors=torch.tensor([2]))
    buf.add({"a": torch.tensor([0.25]), "b": torch.tensor([7], dtype=torch.int16)})
    assert buf.storage["a"][:3].tolist() == [0.0, 3.0, 0.25] and buf.storage["b"][:3].tolist() == [0, 1, 7]


def test_tensors_requiring_grad_are_stored_detached(tree_kind):
    """Storage holds numbers: a graph attached to an added tensor must not live on in the buffer."""
    w = torch.ones(3, requires_grad=True)
    buf = PrioritizedReplay(5)
    buf.add({"x": w.unsqueeze(1) * 2.0}, errors=w * 0.5)
    buf.add({"x": w[:1].unsqueeze(1) * 3.0})
    buf.update_priorities(torch.tensor([0]), w[:1] * 4.0)
    assert not buf.storage["x"].requires_grad and buf.storage["x"].grad_fn is None
    assert not any(level.requires_grad for level in buf.tree.levels)
    batch, _, weights = buf.sample(4, 1.0)
    assert not batch["x"].requires_grad and not weights.requires_grad
    assert buf.storage["x"][:4, 0].tolist() == [2.0, 2.0, 2.0, 3.0]
    tree = TREES[tree_kind](3)
    tree.update(torch.arange(3), w * 1.5)
    assert not tree.total.requires_grad


def test_priority_sums_stay_finite_and_sampling_stays_proportional(tree_kind):
    """alpha = 1 and errors [1e308, 1e308]: finite priorities whose sum overflowed to inf made
    sampling return slot 1 in every draw. Such priorities are rejected; the largest accepted ones
    keep a finite total and a proportional sampler."""
    buf = PrioritizedReplay(2, alpha=1.0)
    buf.add({"x": torch.zeros(2)})
    with pytest.raises(ValueError, match="errors too large"):
        buf.update_priorities(torch.tensor([0, 1]), _HUGE)
    limit = torch.finfo(F64).max / (2 * 2)
    buf.update_priorities(torch.tensor([0, 1]), torch.tensor([limit * 0.999, limit * 0.999], dtype=F64))
    assert math.isfinite(float(buf.tree.total))
    _, idx, w = buf.sample(1000, 1.0, torch.Generator().manual_seed(0))
    assert 400 < int((idx == 0).sum()) < 600 and bool(torch.isfinite(w).all())
    tree = TREES[tree_kind](2)
    before = tree.leaves().clone()
    with pytest.raises(ValueError, match="at most"):
        tree.update(torch.tensor([0, 1]), _HUGE)
    assert torch.equal(tree.leaves(), before) and float(tree.total) == 0.0


def test_eps_that_underflows_with_alpha_is_rejected(tree_kind):
    """eps = 1e-200 with alpha = 2 gives priority 1e-400 = 0 in float64: that item could never
    be drawn. The constructor says so; the same eps with alpha = 1 is fine."""
    with pytest.raises(ValueError, match="underflows float64"):
        PrioritizedReplay(4, alpha=2.0, eps=1e-200)
    buf = PrioritizedReplay(4, alpha=1.0, eps=1e-200)
    buf.add({"x": torch.zeros(2)}, errors=torch.zeros(2))
    assert bool((buf.tree.leaves()[:2] > 0).all())


def test_update_priorities_right_after_add_is_applied(tree_kind):
    """Before any sample, the slots add returned are updated (cpprb's default), not skipped."""
    buf = PrioritizedReplay(4, alpha=1.0, eps=1e-6)
    idx = buf.add(transitions(3))
    applied = buf.update_priorities(idx, torch.tensor([3.0, 0.5, 0.25]))
    assert applied.tolist() == [True, True, True]
    torch.testing.assert_close(buf.tree.leaves()[:3], torch.tensor([3.0, 0.5, 0.25], dtype=F64) + 1e-6)
    # wrapping before any sample: the returned slots are the newest items, so they are updated too
    idx = buf.add(transitions(3, start=3))  # slots 3, 0, 1
    assert buf.update_priorities(idx, torch.tensor([1.0, 2.0, 4.0])).tolist() == [True, True, True]
    # after a sample: a slot filled for the first time since is fresh; an overwritten one is stale
    buf = PrioritizedReplay(6, alpha=1.0)
    buf.add(transitions(4))
    buf.sample(2, 0.5)
    buf.add(transitions(4, start=4))  # slots 4, 5 new; slots 0, 1 overwritten after the sample
    applied = buf.update_priorities(torch.tensor([0, 1, 2, 3, 4, 5]), torch.ones(6))
    assert applied.tolist() == [False, False, True, True, True, True]


def test_stratified_prefixes_and_importance_weights_validate():
    for bad, match in (((0, 1.0), "batch_size"), ((-1, 1.0), "batch_size"), ((4, float("nan")), "total"),
                       ((4, 0.0), "total"), ((4, "1"), "total")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            stratified_prefixes(*bad)
    with pytest.raises(ValueError, match="generator"):
        stratified_prefixes(2, 1.0, generator=123)
    with pytest.raises(ValueError, match="device"):
        stratified_prefixes(2, 1.0, device="nowhere")
    probs = torch.tensor([0.5, 0.1, 0.4], dtype=F64)
    for args, match in (
        ((probs, 3, 1.0, 0.0), "min_prob"),  # gave weights 0
        ((probs, 3, -1.0, 0.1), "beta"),  # gave a weight of 2
        ((torch.tensor([-0.5, 0.1], dtype=F64), 3, 1.0, 0.1), "probs must lie in"),  # gave NaN
        ((torch.tensor([0.5, float("nan")]), 3, 1.0, 0.1), "probs must lie in"),
        ((probs, 3, 1.0, 0.2), "min_prob must lie in"),  # above the smallest probability: weight > 1
        ((torch.tensor([1, 1]), 2, 1.0, 1), "floating"),
        ((probs, 0, 1.0, 0.1), "size"),
        ((probs, 3, 1.0, "0.1"), "min_prob must be a number"),
    ):
        with pytest.raises(ValueError, match=match):
            importance_weights(*args)
    torch.testing.assert_close(importance_weights(probs, 3, 0.5, probs.min()), (probs / 0.1) ** -0.5)
    with pytest.raises(ValueError, match="alpha"):
        priority(torch.ones(2), float("nan"), 0.1)
    with pytest.raises(ValueError, match="real numbers"):
        priority(torch.ones(2, dtype=torch.complex64), 1.0, 0.1)
