"""Checks for notebook 07 (MemUP).

1. :func:`check_topk_selector` - the K most uncertain future steps, vectorised.
2. :func:`check_random_hit_probability` - how often a random target lands on a recall step.
3. :func:`check_saved_bytes` - the losses of one MemUP rollout and of full BPTT, measured here.

Each check runs the learner's function on inputs it builds itself and tests properties of the
result (which steps are selected, how the saved bytes grow with T, where gradients flow), so no
number can be typed in to pass it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from memtutor import memup as mu
from memtutor.exercises import CheckResult, failed, passed

__all__ = ["check_topk_selector", "check_random_hit_probability", "check_saved_bytes"]

#: Sequence lengths at which :func:`check_saved_bytes` measures both losses.
SAVED_BYTES_LENGTHS = (200, 400, 800)
#: A rollout's saved bytes may vary this much across T and still count as flat.
FLAT_TOLERANCE = 1.2


def _selector_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(7)
    u = torch.randn(3, 40, generator=g)
    steps = torch.tensor([0, 5, 17, 33, 38])
    peaked = torch.rand(2, 30, generator=g)
    peak_steps = torch.tensor([4, 12, 20, 27])
    peaked[:, peak_steps] += 10.0  # each prediction step is itself the most uncertain step after it
    return [
        ("random uncertainties (B=3, T=40, K=4)", u, steps, 4),
        ("a sequence whose prediction steps are the most uncertain ones (T=30, K=3)", peaked, peak_steps, 3),
    ]


def check_topk_selector(fn: Callable) -> CheckResult:
    """``fn(uncertainty (B, T), steps (P,), k) -> (idx (B, P, K), valid (B, P, K))``: for each prediction
    step t, the k most uncertain steps k >= t; ``valid`` False where fewer than k such steps exist."""
    if fn is mu.select_targets:
        return failed("that is the package's selector, memtutor.memup.select_targets: write your own.")
    for what, u, steps, k in _selector_cases():
        B, T = u.shape
        P = steps.numel()
        try:
            out = fn(u.clone(), steps.clone(), k)
        except Exception as exc:  # noqa: BLE001 - report any failure to the student
            return failed(f"your selector raised {type(exc).__name__}: {exc}")
        if not (isinstance(out, tuple) and len(out) == 2) or not all(isinstance(o, torch.Tensor) for o in out):
            return failed("return a pair of tensors (idx, valid).")
        idx, valid = out
        if tuple(idx.shape) != (B, P, k) or tuple(valid.shape) != (B, P, k):
            return failed(
                f"on {what}, idx and valid must have shape (B, P, K) = {(B, P, k)}, "
                f"got {tuple(idx.shape)} and {tuple(valid.shape)}."
            )
        valid = valid.bool()
        n_future = (T - steps).clamp(max=k)  # (P,) how many targets exist at each t
        t = steps.view(1, -1, 1).expand_as(idx)
        if bool((idx[valid] < t[valid]).any()):
            return failed("some selected targets lie before their prediction step t: targets must be steps k >= t.")
        if bool((idx[valid] >= T).any()) or bool((idx[valid] < 0).any()):
            return failed(f"some selected targets are outside the sequence [0, {T}).")
        counts = valid.sum(-1)  # (B, P)
        misses_t = "most uncertain ones" in what and not bool(((idx == t) & valid).any(-1).any())
        if misses_t or torch.equal(counts, (T - steps - 1).clamp(min=0, max=k).expand(B, P)):
            return failed(
                "your selector leaves out the prediction step itself (k > t instead of k >= t): the "
                "outcome at step t is also in the future of the memory state that predicts it."
            )
        if not torch.equal(counts, n_future.expand(B, P)):
            return failed(
                "valid has the wrong number of True entries: it must be True for min(K, T - t) targets "
                f"at each prediction step t (on {what}, look at the last prediction step, t = {int(steps[-1])})."
            )
        for p, t_p in enumerate(steps.tolist()):  # the uncertainties selected must be the K largest of the future
            n = int(n_future[p])
            want = u[:, t_p:].sort(dim=-1, descending=True).values[:, :n]
            chosen = valid[:, p]
            for b in range(B):
                sel = idx[b, p][chosen[b]]
                if sel.unique().numel() != sel.numel():
                    return failed(f"on {what}, a target is selected twice for t = {t_p}.")
                got = u[b, sel].sort(descending=True).values
                if not torch.allclose(got, want[b]):
                    return failed(
                        f"on {what}, the steps selected for t = {t_p} are future steps but not the K "
                        "most uncertain ones."
                    )
    return passed("your selector picks the K most uncertain future steps, step t included.")


def check_random_hit_probability(fn: Callable[[int, int, int, int], float]) -> CheckResult:
    """``fn(t, T, H, K)``: probability that at least one of K distinct targets drawn uniformly among
    the steps t..T-1 is one of the last H steps (the recall steps)."""
    cases = [(0, 806, 3, 3), (400, 806, 3, 3), (10, 60, 5, 4), (50, 60, 5, 7), (0, 120, 1, 10), (57, 60, 3, 3)]
    for t, T, H, K in cases:
        try:
            got = float(fn(t, T, H, K))
        except Exception as exc:  # noqa: BLE001
            return failed(f"random_hit_probability({t}, {T}, {H}, {K}) raised {type(exc).__name__}: {exc}")
        n = T - t
        want = 1.0 if K >= n else 1.0 - math.comb(n - H, K) / math.comb(n, K)
        if math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            continue
        where = f"for t={t}, T={T}, H={H}, K={K}"
        if not 0.0 <= got <= 1.0:
            return failed(f"{where} you return {got:.4g}, which is not a probability.")
        if K < n and math.isclose(got, 1.0 - (1.0 - H / n) ** K, rel_tol=1e-9):
            return failed(f"{where} you draw with replacement; the K targets are distinct steps (without replacement).")
        if math.isclose(got, min(1.0, K * H / n), rel_tol=1e-9):
            return failed(
                f"{where} you return the expected number of recall targets, not the probability of at least one."
            )
        if K < T and math.isclose(got, 1.0 - math.comb(T - H, K) / math.comb(T, K), rel_tol=1e-9):
            return failed(f"{where} you draw among all T steps; the targets are future steps, k >= t.")
        if K >= n:
            return failed(f"{where} only {n} future steps exist, fewer than K: every one of them is drawn.")
        return failed(f"{where} your probability is off (the right one is between 0 and 1, and {got:.4g} is not it).")
    return passed("your probabilities are exact, including rollouts near the end where every future step is drawn.")


def _saved_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    from memtutor.experiments.nb07_memup import saved_tensor_bytes  # the lesson's counter

    return saved_tensor_bytes(fn)


def _problem(cfg: mu.MemUPConfig, T: int, seed: int = 0):
    cfg_t = replace(cfg, n_filler=T - 2 * cfg.n_head, batch=4)
    g = torch.Generator().manual_seed(seed)
    x, y = mu.memup_copy_task(4, cfg.n_head, cfg_t.n_filler, g)
    u = torch.rand(4, x.shape[1], generator=g)
    torch.manual_seed(seed)
    return cfg_t, x, y, u, mu.build_memup(cfg_t), mu.build_recurrent(cfg_t)


def _scalar(loss, name: str) -> CheckResult | None:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        return failed(f"{name} must return a 0-d tensor (the loss), got {type(loss).__name__}.")
    if not bool(torch.isfinite(loss)):
        return failed(f"{name} returned a loss that is not finite.")
    if not loss.requires_grad:
        return failed(f"{name} returned a loss without a graph: nothing could be trained from it.")
    return None


def check_saved_bytes(rollout_loss: Callable, bptt_loss: Callable, cfg: mu.MemUPConfig) -> CheckResult:
    """``rollout_loss(nets, x, y, u, start, cfg)`` and ``bptt_loss(model, x, y)`` (see notebook 07,
    exercise 3), measured at T = 200, 400, 800 on batches of 4 built from ``cfg``: one rollout's saved
    bytes must not grow with T, its carried state must carry values but no gradient, and full BPTT's
    saved bytes must grow in proportion to T."""
    memup_bytes, bptt_bytes = {}, {}
    for T in SAVED_BYTES_LENGTHS:
        cfg_t, x, y, u, nets, model = _problem(cfg, T)
        start = T // 2
        try:
            loss, memup_bytes[T] = _saved_bytes(lambda: rollout_loss(nets, x, y, u, start, cfg_t))  # noqa: B023
        except Exception as exc:  # noqa: BLE001
            return failed(f"rollout_loss raised {type(exc).__name__}: {exc}")
        bad = _scalar(loss, "rollout_loss")
        if bad is not None:
            return bad
        try:
            loss_b, bptt_bytes[T] = _saved_bytes(lambda: bptt_loss(model, x, y))  # noqa: B023
        except Exception as exc:  # noqa: BLE001
            return failed(f"bptt_loss raised {type(exc).__name__}: {exc}")
        bad = _scalar(loss_b, "bptt_loss")
        if bad is not None:
            return bad
    lo, hi = SAVED_BYTES_LENGTHS[0], SAVED_BYTES_LENGTHS[-1]
    if max(memup_bytes.values()) > FLAT_TOLERANCE * min(memup_bytes.values()):
        return failed(
            f"one rollout's saved bytes grow with T ({memup_bytes[lo]:,} at T = {lo}, {memup_bytes[hi]:,} at "
            f"T = {hi}): the carried state must be computed without a graph (torch.no_grad()), and the "
            "rollout's inputs copied out of x (a slice is a view that keeps all of x alive)."
        )
    # The carried state carries values: a different past (before the local windows reach) changes the loss ...
    cfg_t, x, y, u, nets, _ = _problem(cfg, lo)
    start = lo // 2
    x2 = x.clone()
    cut = start - cfg_t.window - cfg_t.n_head
    x2[:, cut : cut + cfg_t.n_head] = x[:, : cfg_t.n_head].roll(1, dims=0)
    with torch.no_grad():
        same = float(rollout_loss(nets, x, y, u, start, cfg_t)) == float(rollout_loss(nets, x2, y, u, start, cfg_t))
    if same:
        return failed(
            "the rollout's loss does not depend on the steps before it: start the memory from the state it "
            "reaches on x[:, :start] (values carried over), not from a fresh state."
        )
    # ... and gradients reach the memory and the predictor through the rollout.
    loss = rollout_loss(nets, x, y, u, start, cfg_t)
    loss.backward()
    for name in ("memory", "predictor"):
        grads = [p.grad for p in nets[name].parameters() if p.grad is not None]
        if not grads or all(float(g.abs().sum()) == 0.0 for g in grads):
            return failed(f"no gradient reaches the {name}: the loss must be computed from the {name}'s outputs.")
    growth, want = bptt_bytes[hi] / bptt_bytes[lo], hi / lo
    if not 0.7 * want <= growth <= 1.3 * want:
        return failed(
            f"full BPTT's saved bytes grew {growth:.1f}x when T grew {want:.1f}x: one backward pass over the "
            "whole sequence keeps every step's activations, so they should grow in proportion to T."
        )
    mb = 1 / 2**20
    return passed(
        f"one MemUP rollout saves {memup_bytes[lo] * mb:.2f}-{memup_bytes[hi] * mb:.2f} MiB at every T; full BPTT "
        f"{bptt_bytes[lo] * mb:.2f} MiB at T = {lo} and {bptt_bytes[hi] * mb:.2f} MiB at T = {hi} (x{growth:.1f})."
    )
