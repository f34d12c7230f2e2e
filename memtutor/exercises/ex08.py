"""Checks for notebook 08 (agents that act with memory in the passive T-Maze).

1. :func:`check_vpg_loss` - REINFORCE with a learned baseline on the junction's decision.
2. :func:`check_gradient_reach` - the earliest step of an episode that the junction's gradient reaches.

Each check runs the learner's function on inputs it builds itself: the loss is compared with the
package's, value and gradients, on random batches; the reach is measured by autograd on cores the
check builds (some of them ignore their first steps), so no typed number can pass it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from memtutor import memory_agent as ma
from memtutor import tmaze
from memtutor.exercises import CheckResult, failed, passed, record_calls

__all__ = ["check_vpg_loss", "check_gradient_reach"]

#: Tolerances of the loss comparison (float32 inputs).
RTOL, ATOL = 1e-4, 1e-5
#: (corridor length L, gradient window) pairs of :func:`check_gradient_reach`; window >= L included.
REACH_CASES = ((6, 2), (9, 4), (12, 1), (5, 5), (4, 7))
#: (L, window, m) of the cores that ignore their first m steps: m lies inside the window, so the
#: measured reach, max(L - window, m), is not L - window.
MASKED_CASES = ((10, 6, 7), (8, 8, 3))


# ----------------------------------------------------------------------------- exercise 1


def _loss_batches() -> list[tuple[str, dict]]:
    """Random batches of the junction's decision, with the coefficients of each case."""
    g = torch.Generator().manual_seed(8)
    cases = []
    for B, cv, ch, maze in ((7, 0.5, 0.01, True), (16, 1.3, 0.2, False), (33, 0.25, 0.5, True)):
        logits = torch.randn(B, tmaze.NUM_ACTIONS, generator=g) * 1.5
        value = torch.randn(B, generator=g) * 2
        action = torch.randint(0, tmaze.NUM_ACTIONS, (B,), generator=g)
        if maze:  # the maze's rewards: +4 for the right turn, -3 for the other
            cue = torch.randint(0, 2, (B,), generator=g) * 2 - 1
            reward = tmaze.junction_reward(cue, action)
        else:
            reward = torch.randn(B, generator=g) * 3
        what = f"a batch of B = {B} (value_coef = {cv}, entropy_coef = {ch})"
        cases.append((what, {"logits": logits, "value": value, "action": action, "reward": reward, "cv": cv, "ch": ch}))
    return cases


def _terms(logits, value, action, reward) -> dict[str, torch.Tensor]:
    """Per-episode terms of the loss, (B,) each, and the policy term with an undetached baseline."""
    log_p = F.log_softmax(logits, -1)
    log_pa = log_p.gather(1, action[:, None]).squeeze(1)
    return {
        "policy": -log_pa * (reward - value.detach()),
        "policy_undetached": -log_pa * (reward - value),
        "baseline": (value - reward).pow(2),
        "entropy": -(log_p.exp() * log_p).sum(-1),
    }


def _leaves(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return case["logits"].clone().requires_grad_(True), case["value"].clone().requires_grad_(True)


def _value_and_grads(loss_fn: Callable, case: dict) -> tuple[float, torch.Tensor, torch.Tensor]:
    """A loss built by ``loss_fn(logits, value)`` on fresh leaves: its value and its gradients."""
    logits, value = _leaves(case)
    loss = loss_fn(logits, value)
    g_logits, g_value = torch.autograd.grad(loss, (logits, value), allow_unused=True)
    g_logits = torch.zeros_like(logits) if g_logits is None else g_logits
    g_value = torch.zeros_like(value) if g_value is None else g_value
    return float(loss.detach()), g_logits, g_value


def _close(a, b) -> bool:
    return torch.allclose(torch.as_tensor(a), torch.as_tensor(b), rtol=RTOL, atol=ATOL)


def _loss_mistakes(case: dict) -> list[tuple[str, Callable]]:
    """Named mistakes: (message, loss_fn(logits, value)) whose value or gradient tells them apart."""
    action, reward, cv, ch = case["action"], case["reward"], case["cv"], case["ch"]

    def combo(policy="policy", reduce=("mean", "mean", "mean"), value_term=True, entropy_sign=-1.0):
        def loss_fn(logits, value):
            t = _terms(logits, value, action, reward)
            red = [getattr(x, r)() for x, r in zip((t[policy], t["baseline"], t["entropy"]), reduce, strict=True)]
            return red[0] + (cv * red[1] if value_term else 0.0) + entropy_sign * ch * red[2]

        return loss_fn

    # every choice of the terms summed over the batch instead of averaged
    sums = [tuple("sum" if (mask >> i) & 1 else "mean" for i in range(3)) for mask in range(1, 8)]
    return [
        (
            "the baseline is not detached in the advantage: the policy term then pulls V too, so the value's "
            "gradient is wrong (use reward - value.detach() there; V learns from its squared error only).",
            combo(policy="policy_undetached"),
        ),
        (
            "the entropy term has the wrong sign: the bonus must make the loss smaller for a policy of higher "
            "entropy (loss = ... - entropy_coef * H), so that minimising the loss keeps the policy exploring.",
            combo(entropy_sign=1.0),
        ),
        *[
            (
                "you sum over the batch where the loss takes the mean: the loss (and the step it gives) would grow "
                "with the batch size B.",
                combo(reduce=r),
            )
            for r in sums
        ],
        (
            "the value term is missing: add value_coef times the mean squared error (V - R)^2, the baseline's "
            "own loss (without it V never learns).",
            combo(value_term=False),
        ),
    ]


def check_vpg_loss(fn: Callable) -> CheckResult:
    """``fn(logits (B, 2), value (B,), action (B,) long, reward (B,), value_coef, entropy_coef)`` -> the
    0-d loss of :func:`memtutor.memory_agent.vpg_junction_loss` (without its parts): value and
    gradients with respect to the logits and the value, on several random batches."""
    if fn is ma.vpg_junction_loss:
        return failed("that is the package's loss, memtutor.memory_agent.vpg_junction_loss: write your own.")
    if not callable(fn):
        return failed("pass your function itself (not its result).")
    for what, case in _loss_batches():
        action, reward, cv, ch = case["action"], case["reward"], case["cv"], case["ch"]

        def package(logits, value, action=action, reward=reward, cv=cv, ch=ch):
            return ma.vpg_junction_loss(logits, value, action, reward, cv, ch)[0]

        want, want_gl, want_gv = _value_and_grads(package, case)
        logits, value = _leaves(case)
        with ExitStack() as stack:
            # The package's loss validates its arguments with check_tensor, looked up in its module at
            # call time: a spy there catches the package's function however the learner imported it.
            calls = stack.enter_context(record_calls(ma, "vpg_junction_loss"))
            validations = stack.enter_context(record_calls(ma, "check_tensor"))
            try:
                loss = fn(logits, value, action.clone(), reward.clone(), cv, ch)
            except Exception as exc:  # noqa: BLE001 - report any failure to the student
                return failed(f"your loss raised {type(exc).__name__}: {exc}")
        if calls or validations:
            return failed(
                "your function calls the package's memtutor.memory_agent.vpg_junction_loss: write the loss yourself."
            )
        if isinstance(loss, tuple):
            return failed("return the loss only, a 0-d tensor (not the loss and its parts).")
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            return failed(f"return a 0-d tensor (the loss), got {type(loss).__name__} {getattr(loss, 'shape', '')}.")
        if not bool(torch.isfinite(loss)):
            return failed(f"on {what} your loss is not finite.")
        if not loss.requires_grad:
            return failed("your loss has no graph: nothing could be trained from it (keep it a tensor, no .item()).")
        got = float(loss.detach())
        got_gl, got_gv = torch.autograd.grad(loss, (logits, value), allow_unused=True)
        got_gl = torch.zeros_like(logits) if got_gl is None else got_gl
        got_gv = torch.zeros_like(value) if got_gv is None else got_gv
        if _close(got, want) and _close(got_gl, want_gl) and _close(got_gv, want_gv):
            continue
        for message, mistake in _loss_mistakes(case):
            m, m_gl, m_gv = _value_and_grads(mistake, case)
            if _close(got, m) and _close(got_gl, m_gl) and _close(got_gv, m_gv):
                return failed(f"on {what}: {message}")
        if not _close(got, want):
            return failed(f"on {what} your loss is {got:.5g}, the right one {want:.5g}.")
        if not _close(got_gl, want_gl):
            return failed(
                f"on {what} your loss has the right value but the wrong gradient with respect to the logits: "
                "every term that depends on the logits must be computed from them (not from a detached copy)."
            )
        return failed(
            f"on {what} your loss has the right value but the wrong gradient with respect to the value: V must "
            "be trained by the squared error only (detach it in the advantage)."
        )
    return passed(
        "your loss matches REINFORCE with a learned baseline, in value and in its gradients for the policy and "
        "the baseline."
    )


# ----------------------------------------------------------------------------- exercise 2


class _Clock(NamedTuple):
    """The state of :class:`_MaskedCore`: the inner core's state and the steps read so far (a tensor,
    so that the package's truncation can detach it like any other state)."""

    inner: object
    t: torch.Tensor


class _MaskedCore(nn.Module):
    """A core that ignores the first ``m`` steps of every episode: it multiplies their observations
    by zero before its inner core reads them, so no gradient reaches them. It counts the steps it has
    read in its state, so it knows where it is however the episode is cut into chunks."""

    def __init__(self, core: nn.Module, m: int):
        super().__init__()
        self.core, self.m = core, m
        self.features = core.features

    def forward(self, obs: torch.Tensor, state=None):
        t0 = 0 if state is None else int(state.t)
        inner = None if state is None else state.inner
        n = obs.shape[1]
        keep = (torch.arange(t0, t0 + n) >= self.m).to(obs.dtype)  # (n,)
        h, inner = self.core(obs * keep[None, :, None], inner)
        return h, _Clock(inner, torch.tensor(t0 + n))


def _cores() -> dict[str, nn.Module]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(8)
        return {"an LSTMCore": ma.LSTMCore(hidden=4), "a DNCCore": ma.DNCCore(hidden=4, num_slots=4, word_size=3)}


def _observations(L: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, L, tmaze.OBS_DIM, generator=g)


def _reached_steps(core: nn.Module, obs: torch.Tensor, window: int) -> torch.Tensor:
    """(L,) bool: the steps whose observation gets a nonzero gradient from the junction's features."""
    x = obs.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ma.junction_features(core, x, window).sum(), x)
    return g.abs().sum(dim=(0, 2)) > 0


def _as_step(answer) -> int | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, torch.Tensor):
        if answer.numel() != 1 or answer.is_floating_point() or answer.is_complex():
            return None
        return int(answer.item())
    try:
        step = int(answer)
    except (TypeError, ValueError):
        return None
    return step if step == answer else None


def check_gradient_reach(fn: Callable) -> CheckResult:
    """``fn(core, obs (B, L, 3), window) -> int``: the earliest step s whose observation ``obs[:, s]``
    gets a nonzero gradient from ``memory_agent.junction_features(core, obs, window)``. Measured here
    by autograd on an LSTMCore and a DNCCore at several (L, window), and on cores that ignore their
    first steps, whose reach no formula in L and window gives."""
    if not callable(fn):
        return failed("pass your function itself (not its result).")
    cores = _cores()
    cases: list[tuple[str, nn.Module, int, int, int | None]] = [
        (name, core, L, w, None) for name, core in cores.items() for L, w in REACH_CASES
    ]
    cases += [(name, core, L, w, m) for name, core in cores.items() for L, w, m in MASKED_CASES]
    for i, (name, core, L, window, m) in enumerate(cases):
        model = core if m is None else _MaskedCore(core, m)
        what = f"{name}{'' if m is None else f' that ignores its first {m} steps'}, L = {L}, window = {window}"
        obs = _observations(L, seed=i)
        reached = _reached_steps(model, obs, window)
        want = int(reached.nonzero()[0])
        core.zero_grad(set_to_none=True)
        try:
            answer = fn(model, obs.clone(), window)
        except Exception as exc:  # noqa: BLE001 - report any failure to the student
            return failed(f"for {what} your function raised {type(exc).__name__}: {exc}")
        got = _as_step(answer)
        if got is None:
            return failed(f"for {what} return a step index (an int), got {answer!r}.")
        if got == want:
            continue
        if m is not None and got in (L - window, max(L - window, 0)):
            return failed(
                f"for {what} you return L - window = {L - window}, the formula, but this core gives no gradient "
                f"to its first {m} steps, so the earliest step reached is {want}: measure the gradient on obs "
                "(obs.requires_grad_(), backward, then look at obs.grad) instead of computing it from L and window."
            )
        if got < 0:
            return failed(
                f"for {what} you return step {got}, before the episode starts: when window >= L the whole episode "
                "lies in the window and the gradient reaches step 0 (measure it rather than compute L - window)."
            )
        if abs(got - want) == 1:
            return failed(
                f"for {what} you are off by one ({got}): return the index, counted from 0, of the first step "
                "whose observation has a nonzero gradient."
            )
        if got == int(reached.sum()):
            return failed(
                f"for {what} you return how many steps get a gradient ({got}), not the index of the first one."
            )
        return failed(f"for {what} you return step {got}; it is not the earliest step the gradient reaches.")
    return passed(
        f"your reach is measured right on {len(cases)} cases: truncation stops the junction's gradient at the last "
        "min(window, L) steps, and a core that ignores its first steps stops it sooner."
    )
