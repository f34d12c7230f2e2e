"""Checks for notebook 09's exercises (MAML on the output layer of notebook 02's memory controller).

1. :func:`check_head_step`: one inner step on the controller's output layer, written with ``torch.func``.
2. :func:`check_wrong_bits`: the error measure of every table, wrong answer bits per sequence.
3. :func:`check_steps_to_one_bit`: how many adaptation steps a start needs to reach one wrong bit.

Each check recomputes the answer with :mod:`memtutor.meta` on problems it builds itself (or on the
controllers and tasks it is given) and says what is wrong, never what the right numbers are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from memtutor import meta
from memtutor.controller import ControllerConfig, MemoryController
from memtutor.exercises import CheckResult, failed, passed, record_calls

__all__ = ["check_head_step", "check_wrong_bits", "check_steps_to_one_bit"]

#: Tolerances when comparing a learner's head step with the package's (float64 probe problem).
STEP_RTOL = 1e-6
STEP_ATOL = 1e-10
#: A small controller for the probe problems: 4 bits and a delimiter in, 4 bits out.
PROBE_CONTROLLER = ControllerConfig(input_size=5, output_size=4, hidden_size=8, num_slots=6, word_size=4, num_reads=1)


# ----------------------------------------------------------------------------- exercise 1


def _probe_problem(seed: int):
    """A float64 controller, its head and one XOR-copy task's support sequences."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = meta.ControllerLogits(MemoryController(PROBE_CONTROLLER)).double()
    g = torch.Generator().manual_seed(seed)
    tasks = meta.xor_copy_tasks(meta.xor_masks(4)[[3 + seed]], 5, 1, min_length=2, max_length=4, generator=g)
    # the head to adapt differs from the model's own output layer, so a step that reads the model's own fails
    own = meta.select_params(model, meta.CONTROLLER_HEAD)
    head = {k: v.detach() + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in own.items()}
    return model, head, tasks.x_support[0].double(), tasks.y_support[0].double()


def check_head_step(head_step: Callable) -> CheckResult:
    """``head_step(model, head, x, y, lr)``: the head after one SGD step on ``meta.packed_bce_loss``."""
    if not callable(head_step):
        return failed("head_step must be a function head_step(model, head, x, y, lr).")
    for seed, lr in ((0, 0.3), (1, 0.05)):
        model, head, x, y = _probe_problem(seed)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        with record_calls(meta, "maml_adapt") as calls:  # the exercise is to write it, not to call it
            try:
                out = head_step(model, dict(head), x, y, lr)
            except Exception as exc:  # report the learner's error instead of raising it
                return failed(f"head_step raised {type(exc).__name__}: {exc}")
        if calls:
            return failed("head_step calls memtutor.meta.maml_adapt: write the step with grad and functional_call.")
        if any(not torch.equal(v, before[k]) for k, v in model.state_dict().items()):
            return failed("head_step changed the model's own parameters: return new tensors, leave the model as it is.")
        if not isinstance(out, Mapping):
            return failed(f"head_step must return a dict name -> tensor, got {type(out).__name__}.")
        if set(out) != set(head):
            extra = sorted(set(out) - set(head))
            hint = " (the inner step adapts the output layer only)" if extra else ""
            return failed(f"the returned dict must have exactly the keys of head, {sorted(head)}{hint}.")
        for k, v in head.items():
            if not isinstance(out[k], torch.Tensor) or out[k].shape != v.shape:
                return failed(f"out[{k!r}] must be a tensor of shape {tuple(v.shape)}.")
        got = {k: v.detach() for k, v in out.items()}
        if all(torch.allclose(got[k], head[k]) for k in head):
            return failed("the head did not move: did you apply the gradient step?")
        want = meta.maml_adapt(model, head, x, y, inner_lr=lr, steps=1, loss_fn=meta.packed_bce_loss)
        delta = torch.cat([(got[k] - head[k]).reshape(-1) for k in head])
        ref = torch.cat([(want[k].detach() - head[k]).reshape(-1) for k in head])
        scale = float(delta @ ref / (ref @ ref))
        if torch.allclose(delta, scale * ref, rtol=STEP_RTOL, atol=STEP_ATOL):  # the right direction, up to scale
            if scale < 0:
                return failed("the step goes up the gradient: the update is head MINUS lr times the gradient.")
            if not math.isclose(scale, 1.0, rel_tol=STEP_RTOL):
                return failed(
                    "the direction is right but the step is not lr times the gradient of the loss "
                    "(meta.packed_bce_loss is already the sum over bits and steps, the mean over sequences)."
                )
        if not all(torch.allclose(got[k], want[k].detach(), rtol=STEP_RTOL, atol=STEP_ATOL) for k in head):
            own = {k: v.detach() for k, v in meta.select_params(model, meta.CONTROLLER_HEAD).items()}
            from_own = meta.maml_adapt(model, own, x, y, inner_lr=lr, steps=1, loss_fn=meta.packed_bce_loss)
            if all(torch.allclose(got[k], from_own[k].detach(), rtol=STEP_RTOL, atol=STEP_ATOL) for k in head):
                return failed("the step starts from the model's own output layer: start from the head you are given.")
            return failed(
                "the step differs from one SGD step on meta.packed_bce_loss of the model on (x, y): check the loss "
                "(the packed target y holds the answer mask in its last channel) and the gradient."
            )
    return passed("your head step matches memtutor.meta.maml_adapt(..., steps=1) on the output layer.")


# ----------------------------------------------------------------------------- exercise 2


def _bits_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Random logits and packed targets; the answer masks differ between sequences."""
    g = torch.Generator().manual_seed(9)
    cases = []
    for B, T, W in ((3, 7, 4), (5, 12, 8), (1, 4, 3)):
        logits = torch.randn(B, T, W, generator=g) * 2
        bits = (torch.rand(B, T, W, generator=g) < 0.5).float()
        length = torch.randint(1, T // 2 + 1, (B,), generator=g)
        steps = torch.arange(T)
        answer = (steps >= T - length[:, None]).float()  # the last length[b] steps answer
        packed = torch.cat([bits, answer[..., None]], -1)
        cases.append((f"B = {B} sequences of T = {T} steps, {W} bits", logits, packed))
    return cases


def check_wrong_bits(wrong_bits: Callable) -> CheckResult:
    """``wrong_bits(logits, y)``: mean wrong answer bits per sequence, a 0-d tensor."""
    if not callable(wrong_bits):
        return failed("wrong_bits must be a function wrong_bits(logits, y).")
    for what, logits, y in _bits_cases():
        with record_calls(meta, "packed_bits_error") as calls:  # the exercise is to count them, not to call it
            try:
                got = wrong_bits(logits.clone(), y.clone())
            except Exception as exc:  # report the learner's error instead of raising it
                return failed(f"wrong_bits raised {type(exc).__name__}: {exc} (on {what})")
        if calls:
            return failed("wrong_bits calls memtutor.meta.packed_bits_error: count the wrong bits yourself.")
        if not isinstance(got, torch.Tensor) or got.dim() != 0:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return failed(f"wrong_bits must return a 0-d tensor (the mean over sequences), got {shape}.")
        want = meta.packed_bits_error(logits, y)
        if math.isclose(float(got), float(want), rel_tol=1e-6, abs_tol=1e-6):
            continue
        wrong = ((logits > 0) != (y[..., :-1] > 0.5)).float()  # (B, T, W)
        if math.isclose(float(got), float(wrong.sum((1, 2)).mean()), rel_tol=1e-6):
            return failed("count the answer steps only: the last channel of y marks them.")
        if math.isclose(float(got), float(want) * logits.shape[0], rel_tol=1e-6) and logits.shape[0] > 1:
            return failed("that is the sum over the sequences: give the mean wrong bits per sequence.")
        flipped = ((logits > 0) == (y[..., :-1] > 0.5)).float()
        if math.isclose(float(got), float((flipped * y[..., -1:]).sum((1, 2)).mean()), rel_tol=1e-6):
            return failed("those are the right bits: a bit is wrong when (logit > 0) differs from the target bit.")
        return failed(f"wrong_bits differs from the wrong answer bits per sequence on {what}.")
    return passed("your count matches memtutor.meta.packed_bits_error.")


# ----------------------------------------------------------------------------- exercise 3


def _bits_curve(controller: nn.Module, tasks, *, inner_lr: float, max_steps: int) -> torch.Tensor:
    """Mean wrong bits per query sequence over the tasks after 0..max_steps steps on the output layer."""
    from memtutor.experiments.nb09_meta_controller import controller_adaptation_curves  # the lesson's curves

    return controller_adaptation_curves(controller, tasks, inner_lr=inner_lr, max_steps=max_steps)["bits"].mean(0)


def check_steps_to_one_bit(
    answer: Mapping[str, int | None],
    starts: Mapping[str, nn.Module],
    tasks,
    *,
    inner_lr: float,
    max_steps: int,
) -> CheckResult:
    """``answer[name]``: the first step s <= max_steps at which the mean wrong bits per query sequence over
    ``tasks`` of start ``name`` (its output layer adapted with ``inner_lr``) is at most 1, else None."""
    if not isinstance(answer, Mapping) or not answer:
        return failed("steps_needed must be a non-empty dict.")
    if set(answer) != set(starts):
        return failed(f"steps_needed must have one entry per start: {sorted(starts)}, got {sorted(answer)}.")
    for name, controller in starts.items():
        got = answer[name]
        if got is not None and (isinstance(got, bool) or not isinstance(got, int)):
            return failed(f"steps_needed[{name!r}] must be an int (a number of steps) or None, got {got!r}.")
        curve = _bits_curve(controller, tasks, inner_lr=inner_lr, max_steps=max_steps)
        hits = (curve <= 1.0).nonzero()
        want = int(hits[0]) if len(hits) else None
        if got == want:
            continue
        if want is None:
            return failed(f"steps_needed[{name!r}]: within {max_steps} steps this start never gets to one wrong bit.")
        if got is None:
            return failed(f"steps_needed[{name!r}]: this start does get to one wrong bit within {max_steps} steps.")
        if got == want + 1:
            return failed(f"steps_needed[{name!r}] is one too many: step 0 is the unadapted controller.")
        if got > want:
            return failed(f"steps_needed[{name!r}] is too large: the curve is at or below one wrong bit earlier.")
        return failed(f"steps_needed[{name!r}] is too small: after that many steps the curve is above one wrong bit.")
    return passed("every step count is right.")
