"""Checks for notebook 02's exercises (the memory controller on the copy task)."""

from __future__ import annotations

import math

import torch

from memtutor.controller import MemoryController, evaluate_copy, with_access
from memtutor.exercises import CheckResult, failed, passed
from memtutor.tasks import bits_error, copy_task

__all__ = ["check_bits_error", "check_ablation"]


def check_bits_error(fn) -> CheckResult:
    """Exercise 1: ``fn(logits (B,T,K), targets (B,T,K), mask (B,T)) -> (B,)`` wrong bits per sequence."""
    gen = torch.Generator().manual_seed(123)
    batch = copy_task(6, 1, 5, 4, generator=gen)
    cases = {
        "random logits": torch.randn(batch.targets.shape, generator=gen),
        "a perfect prediction": torch.where(batch.targets > 0.5, 3.0, -3.0),
        "a prediction that is perfect only outside the answer steps": torch.where(
            (batch.targets > 0.5) ^ (batch.mask.unsqueeze(-1) > 0), 3.0, -3.0
        ),
        "logits that are all slightly positive": torch.full(batch.targets.shape, 0.1),
    }
    for name, logits in cases.items():
        try:
            got = fn(logits, batch.targets, batch.mask)
        except Exception as exc:  # report, do not crash the notebook
            return failed(f"your function raised {type(exc).__name__}: {exc}")
        if not isinstance(got, torch.Tensor):
            return failed(f"return a tensor, got {type(got).__name__}")
        if tuple(got.shape) != (batch.targets.shape[0],):
            return failed(f"return one number per sequence, shape {(batch.targets.shape[0],)}; got {tuple(got.shape)}")
        want = bits_error(logits, batch.targets, batch.mask)
        if not torch.allclose(got.float(), want):
            return failed(f"wrong counts for {name}: check which steps count and where the threshold lies")
    return passed("your bit error matches the NTM paper's cost per sequence on every case.")


def check_ablation(
    model: MemoryController,
    batch,
    reported: float,
    *,
    allocation: bool = True,
    links: bool = True,
) -> CheckResult:
    """Exercises 2-3: ``reported`` must be the mean bits error per sequence of ``model`` with the
    given mechanism switched off, measured on ``batch``."""
    if allocation and links:
        return failed("switch off allocation or links (pass allocation=False or links=False to the check)")
    try:
        reported = float(reported)
    except (TypeError, ValueError):
        return failed(f"report one number (mean bits per sequence), got {type(reported).__name__}")
    if not math.isfinite(reported):
        return failed(f"your number is not finite: {reported}")
    measured = evaluate_copy(with_access(model, allocation=allocation, links=links), batch).mean().item()
    full = evaluate_copy(model, batch).mean().item()
    if abs(reported - full) <= 1e-6 * max(1.0, abs(full)) and abs(measured - full) > 1e-6:
        return failed("that is the error of the full model: nothing was switched off")
    if abs(reported - measured) > 1e-4 * max(1.0, abs(measured)):
        what = "the links" if not links else "allocation"
        return failed(
            f"{reported:.3f} is not the mean bits error of the model without {what} on this batch; "
            "check that you switched off only that mechanism, kept the trained weights, and averaged over sequences"
        )
    return passed(
        f"without {'the links' if not links else 'allocation'} the model makes {measured:.2f} bits "
        f"per sequence, against {full:.2f} with the full memory."
    )
