"""Checks for notebook 07 (MemUP)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from memtutor.exercises import CheckResult, failed, passed

__all__ = ["check_topk_selector", "check_random_drop", "check_saved_bytes"]


def _reference_topk(u: torch.Tensor, steps: torch.Tensor, k: int):
    T = u.shape[1]
    future = torch.arange(T).unsqueeze(0) >= steps.unsqueeze(1)  # (P, T)
    scores = u.unsqueeze(1).masked_fill(~future, float("-inf"))  # (B, P, T)
    top, idx = scores.topk(k, dim=-1)
    return idx, top > float("-inf")


def check_topk_selector(fn: Callable) -> CheckResult:
    """``fn(uncertainty (B, T), steps (P,), k) -> (idx (B, P, K), valid (B, P, K))``."""
    g = torch.Generator().manual_seed(7)
    u = torch.randn(3, 40, generator=g)
    steps = torch.tensor([0, 5, 17, 33, 38])
    try:
        out = fn(u, steps, 4)
    except Exception as exc:  # noqa: BLE001 - report any failure to the student
        return failed(f"your selector raised {type(exc).__name__}: {exc}")
    if not (isinstance(out, tuple) and len(out) == 2):
        return failed("return a pair (idx, valid).")
    idx, valid = out
    if tuple(idx.shape) != (3, 5, 4) or tuple(valid.shape) != (3, 5, 4):
        return failed(
            f"idx and valid must have shape (B, P, K) = (3, 5, 4), got {tuple(idx.shape)} and {tuple(valid.shape)}."
        )
    want_idx, want_valid = _reference_topk(u, steps, 4)
    t = steps.view(1, -1, 1).expand_as(idx)
    if bool((idx[valid.bool()] < t[valid.bool()]).any()):
        return failed(
            "some selected targets lie before their prediction step t: targets must be in the future (k >= t)."
        )
    if not torch.equal(valid.bool(), want_valid):
        return failed(
            "valid is wrong: it must be False exactly where fewer than K future steps exist (look at t = 38 of T = 40)."
        )
    got = torch.sort(idx.masked_fill(~want_valid, -1), dim=-1).values
    ref = torch.sort(want_idx.masked_fill(~want_valid, -1), dim=-1).values
    if not torch.equal(got, ref):
        return failed("the selected steps are future steps but not the K most uncertain ones.")
    return passed("your selector picks the K most uncertain future steps.")


def check_random_drop(acc_topk: float, acc_random: float) -> CheckResult:
    """Held-out recall accuracies of MemUP with the detector and with random targets."""
    for name, v in (("acc_topk", acc_topk), ("acc_random", acc_random)):
        if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            return failed(f"{name} must be an accuracy in [0, 1], got {v!r}.")
    if acc_topk - acc_random < 0.2:
        return failed(
            f"the drop is only {acc_topk - acc_random:.2f}: evaluate the trained (or "
            "cached) top-K MemUP model and the random-target one on the same held-out "
            "sequences; did the random variant really draw its targets at random?"
        )
    return passed(f"random targets lose {acc_topk - acc_random:.2f} of accuracy.")


def check_saved_bytes(memup: Mapping[int, int], bptt: Mapping[int, int]) -> CheckResult:
    """Saved-tensor bytes per backward pass, keyed by sequence length T, for one MemUP rollout
    and for full BPTT."""
    if set(memup) != set(bptt) or len(memup) < 2:
        return failed("measure both methods at the same (at least two) sequence lengths.")
    Ts = sorted(memup)
    lo, hi = Ts[0], Ts[-1]
    if min(memup.values()) <= 0 or min(bptt.values()) <= 0:
        return failed("every measurement must be a positive byte count.")
    if max(memup.values()) > 1.2 * min(memup.values()):
        return failed(
            "MemUP's saved bytes change with T: measure one rollout's backward pass, "
            "whose graph holds r memory steps and K targets whatever T is."
        )
    growth, want = bptt[hi] / bptt[lo], hi / lo
    if not 0.7 * want <= growth <= 1.3 * want:
        return failed(
            f"full BPTT's bytes grew {growth:.1f}x when T grew {want:.1f}x: the graph "
            "of one backward pass over the whole sequence should grow in proportion."
        )
    return passed(f"MemUP flat, full BPTT x{growth:.1f} for T x{want:.1f}.")
