"""The fast (compiled) tree against the readable one: same draws, same priorities, same errors.

Every invariant, error and hypothesis test of tests/test_replay.py runs on both trees; these tests
compare the two directly, step by step, on the same generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import memtutor._replay_fast as fast
from memtutor.replay import PrioritizedReplay, SumTree

F64 = torch.float64
needs_numba = pytest.mark.skipif(not fast.HAVE_NUMBA, reason="the fast tree needs Numba")


def transitions(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "obs": torch.randn(n, 3, generator=g),
        "action": torch.randint(0, 4, (n,), generator=g),
        "done": torch.rand(n, generator=g) < 0.1,
    }


def twin_buffers(capacity: int, **kwargs) -> tuple[PrioritizedReplay, PrioritizedReplay]:
    return (
        PrioritizedReplay(capacity, tree="fast", **kwargs),
        PrioritizedReplay(capacity, tree="readable", **kwargs),
    )


@needs_numba
def test_default_on_the_cpu_is_the_fast_tree_and_readable_is_an_option():
    assert type(PrioritizedReplay(10).tree) is fast.FastSumTree
    assert type(PrioritizedReplay(10, tree="readable").tree) is SumTree
    with pytest.raises(ValueError, match="tree must be 'fast' or 'readable'"):
        PrioritizedReplay(10, tree="binary")


def test_without_numba_fast_falls_back_to_the_readable_tree(monkeypatch):
    monkeypatch.setattr(fast, "HAVE_NUMBA", False)
    buf = PrioritizedReplay(10)
    assert type(buf.tree) is SumTree
    buf.add({"x": torch.arange(4.0)})
    assert buf.sample(3, 0.4)[1].shape == (3,)


@needs_numba
def test_fast_tree_is_cpu_only():
    with pytest.raises(ValueError, match="lives on the CPU"):
        fast.FastSumTree(4, device="meta")


@needs_numba
@pytest.mark.parametrize("capacity,branching,fanout", [(1, None, None), (50, 3, 4), (5000, None, None), (5000, 4, 8)])
def test_same_generator_same_indices_weights_and_priorities(capacity, branching, fanout):
    """Two buffers fed the same calls draw the same slots with the same IS weights, step by
    step, through adds that wrap the ring, duplicate draws, stale updates and changing batch
    sizes; their priorities stay equal."""
    g = torch.Generator().manual_seed(capacity)
    shape = {"branching": branching, "root_fanout": fanout}
    fast_buf, slow_buf = twin_buffers(capacity, alpha=0.7, **{k: v for k, v in shape.items() if v})
    g_fast, g_slow = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for step in range(40):
        n = int(torch.randint(1, max(2, capacity // 3), (1,), generator=g))
        items = transitions(n, g)
        errors = torch.rand(n, dtype=F64, generator=g) * 10 if step % 2 else None
        assert torch.equal(fast_buf.add(items, errors), slow_buf.add(items, errors))
        batch_size = int(torch.randint(1, 300, (1,), generator=g))
        fb, fi, fw = fast_buf.sample(batch_size, 0.5, g_fast)
        sb, si, sw = slow_buf.sample(batch_size, 0.5, g_slow)
        assert torch.equal(fi, si), f"step {step}: different slots"
        torch.testing.assert_close(fw, sw, rtol=1e-6, atol=0)
        for key in fb:
            assert torch.equal(fb[key], sb[key])
        if step % 3 == 0:  # an add between sample and update: stale slots are skipped by both
            items = transitions(min(2, capacity), g)
            fast_buf.add(items)
            slow_buf.add(items)
        new = torch.randn(batch_size, generator=g) * 3
        assert torch.equal(fast_buf.update_priorities(fi, new), slow_buf.update_priorities(si, new))
        torch.testing.assert_close(fast_buf.tree.leaves(), slow_buf.tree.leaves(), rtol=1e-12, atol=0)
        assert fast_buf.max_priority == slow_buf.max_priority
        torch.testing.assert_close(fast_buf.tree.total, slow_buf.tree.total, rtol=1e-12, atol=0)
        torch.testing.assert_close(fast_buf.tree.min_positive, slow_buf.tree.min_positive, rtol=1e-12, atol=0)


@needs_numba
def test_same_prefixes_same_leaves_on_a_large_tree():
    """find() on 200,000 random leaves (a fifth of them zero): the two trees return the same leaf
    for 100,000 random prefixes, and a positive leaf at 0, the total and the leaf boundaries (where
    their sums, added in different orders, may differ in the last bit)."""
    g = torch.Generator().manual_seed(3)
    cap = 200_000
    values = torch.rand(cap, dtype=F64, generator=g) * (torch.rand(cap, generator=g) > 0.2)
    trees = [SumTree(cap), fast.FastSumTree(cap)]
    for tree in trees:
        tree.update(torch.arange(cap), values)
    total = min(float(t.total) for t in trees)
    csum = torch.cumsum(values, 0)
    v = torch.cat([torch.rand(100_000, dtype=F64, generator=g) * total, csum[:1000].clamp(max=total)])
    v = torch.cat([v, torch.tensor([0.0, total], dtype=F64)])
    a, b = (t.find(v) for t in trees)
    assert torch.equal(a[:100_000], b[:100_000])
    assert bool((values[a] > 0).all()) and bool((values[b] > 0).all())


@needs_numba
def test_fast_parents_are_exact_left_to_right_sums_and_rebuild_changes_nothing():
    g = torch.Generator().manual_seed(5)
    tree = fast.FastSumTree(10_000, branching=8, root_fanout=16)
    for _ in range(50):
        idx = torch.randint(0, 10_000, (700,), generator=g)  # duplicates and any order
        tree.update(idx, torch.rand(700, dtype=F64, generator=g) * 10.0 ** torch.randint(-6, 6, (1,), generator=g))
    for lower, upper in zip(tree.levels[:-1], tree.levels[1:], strict=True):
        rows = lower.view(-1, tree.branching).numpy()
        want = np.cumsum(rows, axis=1)[:, -1]
        assert np.array_equal(upper.numpy()[: want.size], want)
        mins = np.where(rows > 0, rows, np.inf).min(1) if lower is tree.levels[0] else None
        if mins is not None:
            assert np.array_equal(tree._mins[1].numpy()[: mins.size], mins)
    before = [lvl.clone() for lvl in tree.levels]
    tree.rebuild()
    assert all(torch.equal(a, b) for a, b in zip(before, tree.levels, strict=True))


@needs_numba
def test_update_errors_are_checked_before_anything_changes():
    """The compiled update validates the whole batch first: a bad index, a NaN or a too large
    error anywhere (even last) leaves the priorities as they were."""
    fast_buf, slow_buf = twin_buffers(8, alpha=1.0)
    for buf in (fast_buf, slow_buf):
        buf.add({"x": torch.arange(8.0)})
    for idx, err, match in [
        (torch.tensor([0, 8]), torch.tensor([1.0, 1.0]), "filled part"),
        (torch.tensor([1, 2]), torch.tensor([1.0, float("nan")]), "NaN or infinite"),
        (torch.tensor([1, 2]), torch.tensor([1.0, float("-inf")]), "NaN or infinite"),
        (torch.tensor([1, 2]), torch.tensor([1.0, 1e308], dtype=F64), "errors too large"),
    ]:
        for buf in (fast_buf, slow_buf):
            before = buf.tree.leaves().clone()
            with pytest.raises(ValueError, match=match):
                buf.update_priorities(idx, err)
            assert torch.equal(buf.tree.leaves(), before)


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.int32, torch.int8])
def test_fast_update_accepts_any_real_error_dtype(dtype):
    fast_buf, slow_buf = twin_buffers(6, alpha=0.5)
    for buf in (fast_buf, slow_buf):
        buf.add({"x": torch.arange(6.0)})
        buf.update_priorities(torch.tensor([1, 3], dtype=torch.int32), torch.tensor([2, -5]).to(dtype))
    torch.testing.assert_close(fast_buf.tree.leaves(), slow_buf.tree.leaves())


@needs_numba
def test_weights_follow_the_default_dtype():
    buf = PrioritizedReplay(4, tree="fast")
    buf.add({"x": torch.arange(4.0)}, errors=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        assert buf.sample(3, 0.4)[2].dtype == torch.float64
    finally:
        torch.set_default_dtype(before)
    assert buf.sample(3, 0.4)[2].dtype == before


@pytest.mark.parametrize("cls", [SumTree, fast.FastSumTree] if fast.HAVE_NUMBA else [SumTree])
def test_prefix_past_a_rows_own_total_takes_its_last_positive_child(cls):
    """A parent's stored sum can exceed the sum of its row by rounding; a prefix in that gap must
    land on the row's last positive child, never on a zero leaf or past the row (the gap is made
    here by hand: parent 3 + 1 ulp over children [1, 2, 0, 0])."""
    tree = cls(8, branching=4, root_fanout=2)
    tree.update(torch.arange(8), torch.tensor([1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], dtype=F64))
    tree._sums[1][0] = np.nextafter(3.0, np.inf)
    assert tree.find(torch.tensor([3.0, 2.5, 0.5], dtype=F64)).tolist() == [1, 1, 0]
