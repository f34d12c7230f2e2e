"""Checks for the exercises of notebook 01 (the DNC memory bank).

Each check takes the reader's function, runs it on cases the reader has not seen, and returns a
:class:`~memtutor.exercises.CheckResult` that says what is wrong without giving the answer away.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from memtutor import memory as mem
from memtutor.exercises import CheckResult, failed, passed, record_calls

__all__ = ["check_allocation", "check_strength"]

#: Absolute tolerance: accepts an allocation with or without the USAGE_EPS squash (1e-6 apart).
_ALLOC_ATOL = 1e-5


def _allocation_cases() -> list[tuple[str, torch.Tensor, bool]]:
    g = torch.Generator().manual_seed(101)
    random = torch.rand(5, 9, generator=g, dtype=torch.float64)
    return [
        # (description, usage (B, N), whether ties make the slot order ambiguous)
        ("a batch of 5 random usages over 9 slots", random, False),
        ("a single slot", torch.tensor([[0.3]], dtype=torch.float64), False),
        ("an empty memory (all usage 0)", torch.zeros(2, 4, dtype=torch.float64), True),
        ("a full memory (all usage 1)", torch.ones(2, 4, dtype=torch.float64), True),
        ("usages with ties", torch.tensor([[0.5, 0.0, 0.5, 0.9, 0.0]], dtype=torch.float64), True),
    ]


def check_allocation(fn: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Exercise 1: ``fn(usage (B, N)) -> allocation (B, N)``, batched, no loops over samples."""
    for what, usage, ties in _allocation_cases():
        with record_calls(mem, "allocation_weights") as calls:  # the exercise is to write it, not to call it
            try:
                got = fn(usage.clone())
            except Exception as exc:  # report, do not crash the check cell
                return failed(f"calling it on {what} raised {type(exc).__name__}: {exc}")
        if calls or fn is mem.allocation_weights:
            return failed("that calls memtutor.memory.allocation_weights: write the allocation yourself.")
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(usage.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return failed(f"on {what} it should return a tensor of shape {tuple(usage.shape)}, got {shape}")
        got = got.to(torch.float64)
        if not bool(torch.isfinite(got).all()):
            return failed(f"on {what} it returns NaN or infinite values")
        if bool((got < -_ALLOC_ATOL).any()):
            return failed(f"on {what} some weights are negative; allocation weights are >= 0")
        if bool((got.sum(-1) > 1 + _ALLOC_ATOL).any()):
            return failed(f"on {what} the weights of a sample sum to more than 1")
        want = mem.allocation_weights(usage)
        if ties:  # any order among equally used slots is right: compare the multisets
            got, want = got.sort(-1).values, want.sort(-1).values
        if not torch.allclose(got, want, atol=_ALLOC_ATOL, rtol=0):
            least = usage.argmin(-1)
            if not torch.equal(got.argmax(-1), least) and not ties:
                return failed(
                    f"on {what} the largest weight is not on the least used slot: sort ascending by "
                    "usage, and put the result back in slot order"
                )
            return failed(
                f"on {what} the weights differ from the DNC allocation by up to "
                f"{float((got - want).abs().max()):.3g}: check the product runs over the slots "
                "*before* each slot in sorted order (an exclusive cumulative product)"
            )
    return passed("your allocation matches the DNC's on batches, a single slot, empty and full memories and ties.")


def _lookup_weight(beta: float, similarity: float, num_slots: int) -> float:
    """Weight on the matching row when the key has cosine ``similarity`` with every other row."""
    key = torch.zeros(1, 1, 2, dtype=torch.float64)
    key[..., 0] = 1.0
    rows = torch.zeros(1, num_slots, 2, dtype=torch.float64)
    rows[0, 0, 0] = 1.0
    rows[0, 1:, 0] = similarity
    rows[0, 1:, 1] = math.sqrt(max(0.0, 1 - similarity**2))
    weights = mem.content_weights(rows, key, torch.tensor([[beta]], dtype=torch.float64))
    return float(weights[0, 0, 0])


def check_strength(fn: Callable[[float, float, int], float]) -> CheckResult:
    """Exercise 2: ``fn(confidence, similarity, num_slots) -> beta``, the smallest strength that
    puts ``confidence`` of a content lookup on the matching row."""
    cases = [(0.9, 0.0, 8), (0.99, 0.5, 16), (0.5, 0.2, 128), (0.999, -0.3, 4), (0.8, 0.9, 32)]
    for conf, sim, n in cases:
        try:
            beta = float(fn(conf, sim, n))
        except Exception as exc:
            return failed(
                f"calling it with confidence={conf}, similarity={sim}, num_slots={n} raised {type(exc).__name__}: {exc}"
            )
        if not math.isfinite(beta) or beta <= 0:
            return failed(
                f"for confidence={conf}, similarity={sim}, num_slots={n} it returned {beta}; "
                "a strength is a positive number"
            )
        weight = _lookup_weight(beta, sim, n)
        if weight < conf - 1e-3:
            return failed(
                f"for confidence={conf}, similarity={sim}, num_slots={n}, beta={beta:.4g} puts only "
                f"{weight:.4f} on the matching row: too weak"
            )
        if _lookup_weight(0.98 * beta, sim, n) >= conf:
            return failed(
                f"for confidence={conf}, similarity={sim}, num_slots={n}, beta={beta:.4g} is more "
                "than needed: 2% less already reaches the confidence; find the smallest one"
            )
    return passed("your strengths are just enough on every case, including many slots and close rows.")
