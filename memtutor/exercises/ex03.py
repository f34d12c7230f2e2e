"""Checks for the exercises of notebook 03 (prioritized experience replay).

1. :func:`check_importance_weights` - normalised IS weights from all stored priorities.
2. :func:`check_proportional_sampler` - an O(N) stratified proportional sampler in torch.
3. :func:`check_rank_based_probabilities` - the rank-based variant's sampling probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from memtutor.exercises import CheckResult, failed, passed

__all__ = ["check_importance_weights", "check_proportional_sampler", "check_rank_based_probabilities"]


def _call(fn: Callable, *args):
    """Run the student's function; turn an exception into a message instead of a traceback."""
    try:
        return fn(*args), None
    except Exception as exc:  # noqa: BLE001 - any error is feedback for the student
        return None, failed(f"your function raised {type(exc).__name__}: {exc}")


def check_importance_weights(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """``fn(priorities, indices, beta)`` with ``priorities`` ``(N,)`` the stored ``p_i^alpha`` (all
    positive), ``indices`` ``(B,)`` sampled slots; must return ``(B,)`` weights
    ``(N P(i))^-beta`` divided by the largest weight any stored item could get."""
    g = torch.Generator().manual_seed(3)
    cases = [
        (torch.tensor([1.0, 2.0, 4.0, 1.0], dtype=torch.float64), torch.tensor([0, 2, 2, 1]), 0.5),
        (torch.rand(50, dtype=torch.float64, generator=g) + 0.01, torch.randint(0, 50, (20,), generator=g), 1.0),
        (torch.rand(30, dtype=torch.float64, generator=g) + 0.1, torch.tensor([5, 7]), 0.0),
        # the least likely item is *not* in the batch: normalising by the batch's largest weight (another
        # valid design, not the one this exercise asks for) gives other numbers here
        (torch.tensor([0.1, 1.0, 2.0, 3.0], dtype=torch.float64), torch.tensor([2, 3]), 0.7),
    ]
    for prios, idx, beta in cases:
        got, err = _call(fn, prios.clone(), idx.clone(), beta)
        if err is not None:
            return err
        if not isinstance(got, torch.Tensor):
            return failed(f"return a torch.Tensor, got {type(got).__name__}")
        if got.shape != idx.shape:
            return failed(f"expected one weight per sampled index, shape {tuple(idx.shape)}, got {tuple(got.shape)}")
        probs = prios / prios.sum()
        want = (probs.min() / probs[idx]) ** beta  # (N P_min)^-beta is the largest weight
        got = got.to(torch.float64)
        if beta == 0 and not torch.allclose(got, torch.ones_like(got)):
            return failed("with beta = 0 there is no correction: every weight should be 1")
        if bool((got > 1 + 1e-9).any()):
            return failed("a weight exceeds 1: normalise by the largest weight any stored item could get")
        if not torch.allclose(got, want, rtol=1e-5, atol=1e-9):
            ratio = got / want
            if torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5):
                return failed(
                    "your weights are proportional to the asked ones but scaled differently: this exercise "
                    "divides by the largest weight any stored item could get, which belongs to the least likely "
                    "stored item, not by the batch's largest (a valid design too, with another trade-off)"
                )
            return failed(f"weights differ from (N P(i))^-beta / max_j (N P(j))^-beta (case beta={beta})")
    return passed("your weights match the normalised importance-sampling weights.")


def check_proportional_sampler(fn: Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]) -> CheckResult:
    """``fn(priorities, batch_size, generator)`` -> ``(B,)`` int64 indices, one stratified draw per
    segment of the total priority, index ``i`` drawn with probability ``p_i / sum p``."""
    prios = torch.tensor([3.0, 0.0, 1.0, 0.5, 0.0, 2.0, 1.5, 0.0], dtype=torch.float64)
    got, err = _call(fn, prios.clone(), 8000, torch.Generator().manual_seed(0))
    if err is not None:
        return err
    if not isinstance(got, torch.Tensor) or got.dtype != torch.int64 or got.shape != (8000,):
        return failed("return an int64 tensor of shape (batch_size,)")
    if bool((got < 0).any()) or bool((got >= prios.numel()).any()):
        return failed("an index lies outside [0, N)")
    if bool((prios[got] == 0).any()):
        return failed("an item of priority 0 was drawn: it must never be sampled")
    counts = torch.bincount(got, minlength=prios.numel()).double()
    expect = 8000 * prios / prios.sum()
    if float((counts - expect).abs().max()) > 3:
        if float((counts - expect).abs().max()) < 200:
            return failed(
                "frequencies are roughly right but not stratified: draw one uniform value in each of "
                "the batch_size equal segments of [0, total)"
            )
        return failed("frequencies do not follow p_i / sum p (check your prefix sums and search side)")
    edge = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # the only positive item is the last
    got, err = _call(fn, edge, 64, torch.Generator().manual_seed(1))
    if err is not None:
        return err
    if not bool((got == 2).all()):
        return failed("with priorities [0, 0, 1] every draw must be index 2 (zero items are never drawn)")
    return passed("your sampler is proportional, stratified and skips zero priorities.")


def check_rank_based_probabilities(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """``fn(errors, alpha)`` -> ``(N,)`` probabilities ``P(i) = rank(i)^-alpha / sum_k rank(k)^-alpha``
    with rank 1 for the largest ``|error|``."""
    g = torch.Generator().manual_seed(5)
    for errors, alpha in [
        (torch.tensor([0.1, -3.0, 0.5, 2.0], dtype=torch.float64), 0.7),
        (torch.randn(40, dtype=torch.float64, generator=g), 1.0),
        (torch.randn(10, dtype=torch.float64, generator=g), 0.0),
    ]:
        got, err = _call(fn, errors.clone(), alpha)
        if err is not None:
            return err
        if not isinstance(got, torch.Tensor) or got.shape != errors.shape:
            return failed(f"return a tensor of shape {tuple(errors.shape)} (one probability per item)")
        got = got.to(torch.float64)
        if abs(float(got.sum()) - 1) > 1e-6:
            return failed(f"probabilities must sum to 1, yours sum to {float(got.sum()):.4f}")
        rank = torch.empty_like(errors)
        rank[torch.argsort(errors.abs(), descending=True)] = torch.arange(1, errors.numel() + 1, dtype=errors.dtype)
        want = rank ** (-alpha) / (rank ** (-alpha)).sum()
        if not torch.allclose(got, want, rtol=1e-6, atol=1e-12):
            if alpha > 0 and int(torch.argmax(got)) != int(torch.argmax(errors.abs())):
                return failed("the item with the largest |error| should get rank 1 and the largest probability")
            return failed(f"probabilities differ from rank^-alpha normalised (case alpha={alpha})")
    return passed("your rank-based probabilities are right.")
