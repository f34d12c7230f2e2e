"""Checks for notebook 04's exercises (MAML, first-order MAML, Reptile).

1. :func:`check_inner_step`: one inner SGD step written by hand with ``torch.func``.
2. :func:`check_lr_sweep`: held-out MSE after one step for several inner learning rates.
3. :func:`check_steps_to_threshold`: how many test-time steps each initialisation needs.

Each check recomputes the answer with :mod:`memtutor.meta` and says what is wrong, never what the
right numbers are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from memtutor import meta
from memtutor.exercises import CheckResult, failed, passed, record_calls

__all__ = ["check_inner_step", "check_lr_sweep", "check_steps_to_threshold"]

#: Relative tolerance when comparing a student's MSE with the recomputed one.
MSE_RTOL = 1e-3
#: Tolerances when comparing a student's inner step with the package's (float64 probe problem).
STEP_RTOL = 1e-6
STEP_ATOL = 1e-10


def _probe_problem(seed: int):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    b = meta.sample_sinusoid_tasks(1, 7, 1, generator=g, dtype=torch.float64)
    # the parameters to adapt differ from the module's own, so a step that reads the module's own fails
    params = {
        k: v.detach() + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in model.named_parameters()
    }
    return model, params, b.x_support[0], b.y_support[0]


def check_inner_step(inner_step: Callable) -> CheckResult:
    """``inner_step(model, params, x, y, lr)`` must return the parameters after one SGD step on MSE."""
    if not callable(inner_step):
        return failed("inner_step must be a function inner_step(model, params, x, y, lr).")
    for seed, lr in ((0, 0.1), (1, 0.03)):
        model, params, x, y = _probe_problem(seed)
        with record_calls(meta, "maml_adapt") as calls:  # the exercise is to write it, not to call it
            try:
                out = inner_step(model, dict(params), x, y, lr)
            except Exception as exc:  # report the student's error instead of raising it
                return failed(f"inner_step raised {type(exc).__name__}: {exc}")
        if calls:
            return failed("inner_step calls memtutor.meta.maml_adapt: write the step with grad and functional_call.")
        if not isinstance(out, Mapping):
            return failed(f"inner_step must return a dict name -> tensor, got {type(out).__name__}.")
        if set(out) != set(params):
            return failed(f"the returned dict must have exactly the keys {sorted(params)}, got {sorted(out)}.")
        for k, v in params.items():
            if not isinstance(out[k], torch.Tensor) or out[k].shape != v.shape:
                return failed(f"out[{k!r}] must be a tensor of shape {tuple(v.shape)}.")
        want = meta.maml_adapt(model, params, x, y, inner_lr=lr, steps=1)
        got = {k: v.detach() for k, v in out.items()}
        if all(torch.allclose(got[k], params[k]) for k in params):
            return failed("the parameters did not move: did you apply the gradient step?")
        delta = torch.cat([(got[k] - params[k]).reshape(-1) for k in params])
        ref = torch.cat([(want[k].detach() - params[k]).reshape(-1) for k in params])
        scale = float(delta @ ref / (ref @ ref))
        if torch.allclose(delta, scale * ref, rtol=STEP_RTOL, atol=STEP_ATOL):  # the right direction, up to scale
            if scale < 0:
                return failed("the step goes up the gradient: the update is params MINUS lr times the gradient.")
            if not math.isclose(scale, 1.0, rel_tol=STEP_RTOL):
                return failed("the direction is right but the step is not lr times the gradient of the MSE.")
        if not all(torch.allclose(got[k], want[k].detach(), rtol=STEP_RTOL, atol=STEP_ATOL) for k in params):
            own = {k: v.detach() for k, v in model.named_parameters()}
            from_own = meta.maml_adapt(model, own, x, y, inner_lr=lr, steps=1)
            if all(torch.allclose(got[k], from_own[k].detach(), rtol=STEP_RTOL, atol=STEP_ATOL) for k in params):
                return failed("the step starts from the module's own parameters: start from the params you are given.")
            return failed("the step differs from one SGD step on the MSE of (x, y): check the loss and the gradient.")
    return passed("your inner step matches memtutor.meta.maml_adapt(..., steps=1).")


def _check_numbers(answer, name: str) -> CheckResult | None:
    if not isinstance(answer, Mapping) or not answer:
        return failed(f"{name} must be a non-empty dict.")
    return None


def check_lr_sweep(
    sweep: Mapping[float, float],
    best_lr: float,
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    tasks,
    *,
    lrs,
) -> CheckResult:
    """``sweep[lr]`` = mean held-out query MSE after ONE step with inner rate ``lr``; ``best_lr`` its argmin."""
    bad = _check_numbers(sweep, "sweep")
    if bad is not None:
        return bad
    if sorted(sweep) != sorted(lrs):
        return failed(f"sweep must have one entry for each learning rate in {list(lrs)}, got keys {sorted(sweep)}.")
    for lr in lrs:
        v = sweep[lr]
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                return failed(
                    f"sweep[{lr}] must be one number (the mean over tasks), got a tensor of shape {tuple(v.shape)}."
                )
            v = v.item()
        want = meta.adaptation_curve(model, params, tasks, inner_lr=lr, max_steps=1).mean(0)
        if math.isclose(float(v), want[1].item(), rel_tol=MSE_RTOL):
            continue
        if math.isclose(float(v), want[0].item(), rel_tol=MSE_RTOL):
            return failed(f"sweep[{lr}] is the MSE before adaptation: evaluate after one step.")
        else:
            return failed(
                f"sweep[{lr}] is not the mean query MSE after one adaptation step on the held-out tasks "
                "(adapt on the support set, evaluate on the query set, average over tasks)."
            )
    if best_lr not in sweep or sweep[best_lr] != min(sweep.values()):
        return failed("best_lr must be the learning rate with the lowest MSE in your sweep.")
    return passed("your sweep matches, and best_lr is its minimum.")


def check_steps_to_threshold(
    answer: Mapping[str, int | None],
    models: Mapping[str, tuple[nn.Module, Mapping[str, torch.Tensor]]],
    tasks,
    *,
    inner_lr: float,
    threshold: float,
    max_steps: int,
) -> CheckResult:
    """``answer[name]``: fewest steps s <= max_steps with mean held-out query MSE <= threshold, else None."""
    bad = _check_numbers(answer, "answer")
    if bad is not None:
        return bad
    if set(answer) != set(models):
        return failed(f"answer must have one entry per model: {sorted(models)}, got {sorted(answer)}.")
    for name, (model, params) in models.items():
        got = answer[name]
        if got is not None and (isinstance(got, bool) or not isinstance(got, int)):
            return failed(f"answer[{name!r}] must be an int (a number of steps) or None, got {got!r}.")
        curve = meta.adaptation_curve(model, params, tasks, inner_lr=inner_lr, max_steps=max_steps).mean(0)
        hits = (curve <= threshold).nonzero()
        want = int(hits[0]) if len(hits) else None
        if got == want:
            continue
        if want is None:
            return failed(f"answer[{name!r}]: within {max_steps} steps this model never reaches the threshold.")
        if got is None:
            return failed(f"answer[{name!r}]: this model does reach the threshold within {max_steps} steps.")
        if got == want + 1:
            return failed(f"answer[{name!r}] is one too many: step 0 is the unadapted model.")
        if got > want:
            return failed(f"answer[{name!r}] is too large: the MSE is already at or below the threshold earlier.")
        return failed(f"answer[{name!r}] is too small: after that many steps the MSE is still above the threshold.")
    return passed("both step counts are right.")
