"""Checks for notebook 05's exercises (continual learning metrics and replay).

1. :func:`check_forgetting_curve` - the average forgetting after every stage of the stream.
2. :func:`check_ewc_penalty` - the (online) EWC penalty 1/2 sum_k F_k (theta_k - theta*_k)^2.
3. :func:`check_balanced_exemplars` - pick an equal number of replay items per class.

:func:`check_intransigence` (how far a learner falls short of joint training on each new task)
is kept for courses that still set it.
"""

from __future__ import annotations

import torch

from memtutor.continual import average_forgetting, ewc_penalty
from memtutor.exercises import CheckResult, failed, passed

__all__ = ["check_forgetting_curve", "check_ewc_penalty", "check_intransigence", "check_balanced_exemplars"]


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


def check_forgetting_curve(fn) -> CheckResult:
    """``fn(R (T, T)) -> (T-1,)``: the average forgetting measured after each stage k = 1..T-1."""
    for R in _matrices() + _matrices(seed=3, count=2, T=6):
        out, err = _call(fn, R.clone())
        if err is not None:
            return err
        T = R.shape[0]
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (T - 1,):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return failed(f"on a {T}x{T} matrix return a tensor of shape ({T - 1},), one value per stage; got {shape}.")
        got = out.to(torch.float64)
        want = torch.stack([average_forgetting(R[: k + 1, : k + 1]) for k in range(1, T)])
        if torch.allclose(got, want, atol=1e-6, rtol=0):
            continue
        minus_bwt = torch.stack([(R.diagonal()[:k] - R[k, :k]).mean() for k in range(1, T)])
        if torch.allclose(got, minus_bwt, atol=1e-6, rtol=0):
            return failed(
                "that is -BWT after each stage (the accuracy right after learning minus the current one); "
                "forgetting uses the best accuracy the task reached before stage k, which can come later than R[j, j]."
            )
        with_k = torch.stack([(R[: k + 1, :k].amax(0) - R[k, :k]).mean() for k in range(1, T)])
        if torch.allclose(got, with_k, atol=1e-6, rtol=0):
            return failed(
                "the best accuracy must come from the stages *before* k: your maximum includes stage k itself."
            )
        over_all = torch.stack([(R[:k, :k].amax(0) - R[k, :k]).sum() / (T - 1) for k in range(1, T)])
        if torch.allclose(got, over_all, atol=1e-6, rtol=0):
            return failed("at stage k only the k tasks learned before it can be forgotten: average over them, not T-1.")
        if abs(float(got[-1]) - float(want[-1])) > 1e-6 and torch.allclose(got[:-1], want[:-1], atol=1e-6, rtol=0):
            return failed("every stage but the last is right: the last entry is the forgetting after the final stage.")
        bad = int((got - want).abs().argmax()) + 1
        return failed(f"on a {T}x{T} matrix your value after stage {bad} is {float(got[bad - 1]):.4f}, not right.")
    return passed("your forgetting curve is right on random and hand-made matrices, stage by stage.")


def check_intransigence(fn) -> CheckResult:
    """``fn(R (T, T), R_joint (T, T)) -> float``: mean over tasks of R_joint[k, k] - R[k, k]."""
    g = torch.Generator().manual_seed(1)
    for R in _matrices(seed=1):
        R_joint = torch.rand(R.shape, generator=g, dtype=torch.float64)
        out, err = _call(fn, R.clone(), R_joint.clone())
        if err is not None:
            return err
        got, err = _as_float(out, "intransigence")
        if err is not None:
            return err
        want = float((R_joint.diagonal() - R.diagonal()).mean())
        if abs(got - want) <= 1e-6:
            continue
        if abs(got + want) <= 1e-6:
            return failed("the sign is reversed: intransigence is how far the learner falls *short* of the reference.")
        if abs(got - float((R_joint[-1] - R.diagonal()).mean())) <= 1e-6:
            return failed(
                "a*_k is the joint model trained on tasks 1..k (row k of R_joint), not the final joint model "
                "trained on every task."
            )
        if abs(got - float((R_joint[-1] - R[-1]).mean())) <= 1e-6:
            return failed("that compares final accuracies; intransigence looks at each task right after it is learned.")
        return failed(f"on a {R.shape[0]}x{R.shape[0]} pair of matrices you return {got:.4f}, which is not right.")
    return passed("your intransigence matches Chaudhry et al.'s definition.")


def _ewc_cases(seed: int = 0) -> list[tuple[dict, dict, dict]]:
    """(params, anchor, fisher) dicts of float64 tensors shaped like a small network's parameters."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"encoder.0.weight": (4, 3), "encoder.0.bias": (4,), "head.weight": (2, 4)}
    cases = []
    for _ in range(3):
        params = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes.items()}
        anchor = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes.items()}
        fisher = {k: torch.rand(s, generator=g, dtype=torch.float64) * 3 for k, s in shapes.items()}
        cases.append((params, anchor, fisher))
    return cases


def check_ewc_penalty(fn) -> CheckResult:
    """``fn(params, anchor, fisher) -> ()``: 1/2 sum over every tensor k of sum(F_k (theta_k - theta*_k)^2)."""
    for params, anchor, fisher in _ewc_cases():
        leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        out, err = _call(fn, leaf, anchor, fisher)
        if err is not None:
            return err
        if not isinstance(out, torch.Tensor) or out.dim() != 0:
            return failed("return a 0-d tensor (one number) computed from the parameters, not a float or a list.")
        if not out.requires_grad:
            return failed("the penalty must stay connected to params (no .item(), no torch.no_grad): it is trained on.")
        got, want = float(out.detach()), float(ewc_penalty(params, anchor, fisher))
        if abs(got - want) <= 1e-9 * max(1.0, abs(want)):
            continue
        diff = {k: params[k] - anchor[k] for k in params}
        if abs(got - 2 * want) <= 1e-9 * max(1.0, abs(want)):
            return failed("twice the penalty: the quadratic term carries a factor 1/2.")
        if abs(got - 0.5 * sum(float((fisher[k] * diff[k].abs()).sum()) for k in params)) <= 1e-9:
            return failed("the distance from the anchor must be squared, (theta - theta*)^2, not its absolute value.")
        if abs(got - 0.5 * sum(float(diff[k].pow(2).sum()) for k in params)) <= 1e-9:
            return failed("weight each squared distance by its Fisher value F_k: that is what EWC adds to L2.")
        first = next(iter(params))
        if abs(got - 0.5 * float((fisher[first] * diff[first].pow(2)).sum())) <= 1e-9:
            return failed("sum over every parameter tensor in params, not only the first one.")
        return failed(f"on a small network your penalty is {got:.4f}, the right value is {want:.4f}.")
    return passed("your EWC penalty matches 1/2 sum_k F_k (theta_k - theta*_k)^2 and can be trained on.")


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
