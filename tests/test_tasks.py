"""Tests for memtutor.tasks: the copy-task generator, its masks and targets, the loss and bit error."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from memtutor.tasks import bits_error, copy_sequence_steps, copy_task, masked_bce_loss
from memtutor.utils import set_threads

set_threads()  # 1 thread: torch's default of 2 stalls small ops on a 2-core machine


def _naive_copy_check(batch, width):
    """Per-sequence loop over the layout documented in the module docstring."""
    for b in range(batch.inputs.shape[0]):
        L = int(batch.lengths[b])
        x, y, m = batch.inputs[b], batch.targets[b], batch.mask[b]
        bits = x[:L, :width]
        assert torch.all(x[:L, width] == 0)
        assert torch.all(x[L] == torch.cat([torch.zeros(width), torch.ones(1)]))
        assert torch.all(x[L + 1 :] == 0)
        assert torch.equal(y[L + 1 : 2 * L + 1], bits)
        assert torch.all(y[: L + 1] == 0) and torch.all(y[2 * L + 1 :] == 0)
        expected_mask = torch.zeros(x.shape[0])
        expected_mask[L + 1 : 2 * L + 1] = 1
        assert torch.equal(m, expected_mask)


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 6),
    lo=st.integers(1, 6),
    extra=st.integers(0, 6),
    width=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
)
def test_copy_task_layout_matches_naive_loop(batch, lo, extra, width, seed):
    hi = lo + extra
    out = copy_task(batch, lo, hi, width, generator=torch.Generator().manual_seed(seed))
    T = copy_sequence_steps(hi)
    assert out.inputs.shape == (batch, T, width + 1)
    assert out.targets.shape == (batch, T, width)
    assert out.mask.shape == (batch, T)
    assert out.lengths.shape == (batch,)
    assert bool(((out.lengths >= lo) & (out.lengths <= hi)).all())
    assert torch.equal(out.mask.sum(1), out.lengths.float())
    _naive_copy_check(out, width)


def test_copy_task_is_seeded_and_varies():
    a = copy_task(64, 1, 10, generator=torch.Generator().manual_seed(3))
    b = copy_task(64, 1, 10, generator=torch.Generator().manual_seed(3))
    c = copy_task(64, 1, 10, generator=torch.Generator().manual_seed(4))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a.inputs, c.inputs)
    assert len(set(a.lengths.tolist())) > 3  # variable lengths within a batch
    # fair bits: about half of the shown bits are ones
    shown = a.inputs[..., :8].sum() / (a.lengths.sum() * 8)
    assert 0.4 < float(shown) < 0.6


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 1, 5, 8), "batch_size"),
        ((4, 0, 5, 8), "min_length"),
        ((4, 1, 0, 8), "max_length"),
        ((4, 1, 5, 0), "width"),
        ((4, 6, 5, 8), "min_length must be <= max_length"),
        ((4, 1.5, 5, 8), "min_length"),
    ],
)
def test_copy_task_rejects_bad_sizes(args, match):
    with pytest.raises(ValueError, match=match):
        copy_task(*args)


def test_bits_error_counts_wrong_bits_only_on_answer_steps():
    batch = copy_task(5, 2, 6, 4, generator=torch.Generator().manual_seed(0))
    perfect = torch.where(batch.targets > 0.5, 5.0, -5.0)
    assert torch.equal(bits_error(perfect, batch.targets, batch.mask), torch.zeros(5))
    # flipping every bit everywhere is wrong exactly on the L*K answer bits
    flipped = -perfect
    assert torch.equal(bits_error(flipped, batch.targets, batch.mask), batch.lengths.float() * 4)
    # errors outside the mask do not count
    outside = perfect.clone()
    outside[batch.mask == 0] *= -1
    assert torch.equal(bits_error(outside, batch.targets, batch.mask), torch.zeros(5))


def test_masked_bce_loss_is_bits_per_sequence():
    batch = copy_task(3, 1, 4, 8, generator=torch.Generator().manual_seed(1))
    zero = torch.zeros_like(batch.targets)  # p = 0.5 everywhere: one bit per answer bit
    loss = masked_bce_loss(zero, batch.targets, batch.mask)
    torch.testing.assert_close(loss, batch.lengths.float().mean() * 8)
    # gradients only on answer steps
    logits = torch.randn_like(batch.targets, requires_grad=True)
    masked_bce_loss(logits, batch.targets, batch.mask).backward()
    assert torch.all(logits.grad[batch.mask == 0] == 0)
    assert math.isfinite(loss.item())


@pytest.mark.parametrize("fn", [bits_error, masked_bce_loss])
def test_prediction_shape_mismatch_raises(fn):
    batch = copy_task(3, 1, 4, 8, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="targets"):
        fn(batch.targets[:2], batch.targets, batch.mask)
    with pytest.raises(ValueError, match="mask"):
        fn(batch.targets, batch.targets, batch.mask[:2])
    with pytest.raises(ValueError, match="logits"):
        fn(batch.targets[0], batch.targets, batch.mask)


def _naive_recall_check(batch, m, width):
    for b in range(batch.inputs.shape[0]):
        n = int(batch.lengths[b])
        x, y, mask = batch.inputs[b], batch.targets[b], batch.mask[b]
        items = []
        for j in range(n):
            start = j * (m + 1)
            assert x[start, width] == 1 and x[start, width + 1] == 0 and torch.all(x[start, :width] == 0)
            items.append(x[start + 1 : start + 1 + m, :width])
            assert torch.all(x[start + 1 : start + 1 + m, width:] == 0)
        q = n * (m + 1)
        assert x[q, width + 1] == 1 and x[q + m + 1, width + 1] == 1
        query = x[q + 1 : q + 1 + m, :width]
        matches = [i for i in range(n - 1) if torch.equal(items[i], query)]
        assert matches, "the query is not one of the first n-1 items"
        answer = y[q + m + 2 : q + 2 * m + 2]
        assert any(torch.equal(answer, items[i + 1]) for i in matches)
        expected_mask = torch.zeros(x.shape[0])
        expected_mask[q + m + 2 : q + 2 * m + 2] = 1
        assert torch.equal(mask, expected_mask)
        assert torch.all(x[q + m + 2 :] == 0) and torch.all(y[mask == 0] == 0)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 5),
    lo=st.integers(2, 4),
    extra=st.integers(0, 3),
    m=st.integers(1, 4),
    width=st.integers(1, 7),
    seed=st.integers(0, 2**31 - 1),
)
def test_associative_recall_layout_matches_naive_loop(batch, lo, extra, m, width, seed):
    from memtutor.tasks import associative_recall_task

    hi = lo + extra
    out = associative_recall_task(batch, lo, hi, m, width, generator=torch.Generator().manual_seed(seed))
    T = hi * (m + 1) + 2 * m + 2
    assert out.inputs.shape == (batch, T, width + 2) and out.targets.shape == (batch, T, width)
    assert bool(((out.lengths >= lo) & (out.lengths <= hi)).all())
    assert torch.equal(out.mask.sum(1), torch.full((batch,), float(m)))
    _naive_recall_check(out, m, width)


def test_associative_recall_queries_cover_all_items():
    from memtutor.tasks import associative_recall_task

    gen = torch.Generator().manual_seed(0)
    out = associative_recall_task(400, 4, 4, 3, 6, generator=gen)
    q = 4 * 4
    # recover the query index from where the query equals an item
    items = out.inputs[:, :q].reshape(400, 4, 4, 8)[:, :, 1:, :6]  # (B, n, m, K)
    query = out.inputs[:, q + 1 : q + 4, :6]
    hit = (items == query[:, None]).all(-1).all(-1)  # (B, n)
    first = hit.float().argmax(1)
    assert set(first.tolist()) == {0, 1, 2}  # items 0..n-2 are queried, never the last one


@pytest.mark.parametrize(
    "args, match",
    [((0, 2, 3), "batch_size"), ((2, 1, 3), "min_items must be >= 2"), ((2, 4, 3), "min_items must be <="),
     ((2, 2, 3, 0), "item_length"), ((2, 2, 3, 3, 0), "width")],
)  # fmt: skip
def test_associative_recall_rejects_bad_sizes(args, match):
    from memtutor.tasks import associative_recall_task

    with pytest.raises(ValueError, match=match):
        associative_recall_task(*args)
