"""Checks for notebook 05's exercises (continual learning metrics and replay).

1. :func:`check_forgetting` - write the average forgetting of an accuracy matrix.
2. :func:`check_forward_transfer` - write GEM's forward transfer, with its baseline term.
3. :func:`check_balanced_exemplars` - pick an equal number of replay items per class.
"""

from __future__ import annotations

import torch

from memtutor.continual import average_forgetting, forward_transfer
from memtutor.exercises import CheckResult, failed, passed

__all__ = ["check_forgetting", "check_forward_transfer", "check_balanced_exemplars"]


def _matrices(seed: int = 0, count: int = 6, T: int = 4) -> list[torch.Tensor]:
    """Random accuracy matrices, plus one where a task peaks after it was learned."""
    g = torch.Generator().manual_seed(seed)
    mats = [torch.rand(T, T, generator=g, dtype=torch.float64) for _ in range(count)]
    peak = torch.tensor([[0.9, 0.1, 0.0], [0.95, 0.8, 0.2], [0.5, 0.7, 0.9]], dtype=torch.float64)
    return mats + [peak]


def _call(fn, *args):
    try:
        return fn(*args), None
    except Exception as exc:  # the student's code may raise anything: report it, do not crash
        return None, failed(f"your function raised {type(exc).__name__}: {exc}")


def _as_float(value, what: str):
    try:
        return float(value), None
    except (TypeError, ValueError):
        return None, failed(f"{what} must return one number (a float or a 0-d tensor), got {type(value).__name__}")


def check_forgetting(fn) -> CheckResult:
    """``fn(R (T, T)) -> float``: average forgetting over the first T-1 tasks."""
    for R in _matrices():
        out, err = _call(fn, R)
        if err is not None:
            return err
        got, err = _as_float(out, "forgetting")
        if err is not None:
            return err
        want = float(average_forgetting(R))
        if abs(got - want) > 1e-6:
            T = R.shape[0]
            if abs(got - float((R[:-1, :-1].amax(0) - R[-1, :-1]).sum() / T)) < 1e-6:
                return failed("you average over T tasks; the last task cannot be forgotten yet, so average over T-1.")
            if abs(got - float((R.diagonal()[:-1] - R[-1, :-1]).mean())) < 1e-6:
                return failed(
                    "that is -BWT (the accuracy right after learning minus the final one); forgetting uses the "
                    "best accuracy the task ever reached before the end, which can come later than R[j, j]."
                )
            return failed(f"on a {T}x{T} matrix you return {got:.4f}, expected {want:.4f}.")
    return passed("your forgetting matches the package on random and hand-made matrices.")


def check_forward_transfer(fn) -> CheckResult:
    """``fn(R (T, T), b (T,)) -> float``: GEM's FWT."""
    g = torch.Generator().manual_seed(1)
    for R in _matrices(seed=1):
        b = torch.rand(R.shape[0], generator=g, dtype=torch.float64)
        out, err = _call(fn, R, b)
        if err is not None:
            return err
        got, err = _as_float(out, "forward transfer")
        if err is not None:
            return err
        want = float(forward_transfer(R, b))
        if abs(got - want) > 1e-6:
            if abs(got - float(R.diagonal(1).mean())) < 1e-6:
                return failed("you forgot the baseline: subtract b[j], the accuracy of the untrained model on task j.")
            if abs(got - float((R.diagonal(1) - b[:-1]).mean())) < 1e-6:
                return failed("the baseline is misaligned: R[j-1, j] must be compared with b of the same task j.")
            if abs(got - float((R.diagonal() - b).mean())) < 1e-6:
                return failed("FWT looks at each task *before* it is trained on, one row above the diagonal.")
            return failed(f"you return {got:.4f}, expected {want:.4f}.")
    return passed("your FWT matches GEM's definition, baseline term included.")


def check_balanced_exemplars(fn) -> CheckResult:
    """``fn(labels (n,), per_class, generator) -> indices``: ``per_class`` distinct items of every class."""
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (200,), generator=g)
    labels[:10] = torch.arange(4).repeat(3)[:10]  # every class present
    for per_class in (1, 5):
        out, err = _call(fn, labels, per_class, torch.Generator().manual_seed(3))
        if err is not None:
            return err
        if not isinstance(out, torch.Tensor) or out.dtype not in (torch.int64, torch.int32) or out.dim() != 1:
            return failed("return a 1-D tensor of integer indices into labels.")
        if out.numel() and (int(out.min()) < 0 or int(out.max()) >= labels.numel()):
            return failed("some indices are outside the range of labels.")
        if out.unique().numel() != out.numel():
            return failed("some item is picked twice: draw without replacement.")
        counts = torch.bincount(labels[out], minlength=4)
        if not bool((counts == per_class).all()):
            return failed(f"with per_class={per_class} your picks hold {counts.tolist()} items of classes 0-3.")
    first = fn(labels, 5, torch.Generator().manual_seed(3))
    again = fn(labels, 5, torch.Generator().manual_seed(3))
    other = fn(labels, 5, torch.Generator().manual_seed(4))
    if not torch.equal(first, again):
        return failed("the same generator seed gives different picks: draw all randomness from the generator.")
    if torch.equal(first.sort().values, other.sort().values):
        return failed("different generator seeds give the same picks: the choice should be random within each class.")
    return passed("balanced, distinct, reproducible picks.")
