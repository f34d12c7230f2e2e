"""Prioritized experience replay on a wide, vectorised sum tree (taught in notebook 03).

Schaul, Quan, Antonoglou, Silver, "Prioritized Experience Replay", ICLR 2016 (arXiv 1511.05952),
proportional variant:

* priority        p_i = |delta_i| + eps; the tree stores p_i^alpha     (:func:`priority`)
* probability     P(i) = p_i^alpha / sum_k p_k^alpha                   (the sum tree)
* IS weight       w_i = (N P(i))^-beta / max_j (N P(j))^-beta          (:func:`importance_weights`)

Shapes: ``B`` batch (number of sampled or updated items), ``C`` capacity, ``k`` branching factor.

Why a *wide* tree. A binary sum tree over 1,000,000 leaves has 20 levels, and a batched descent
spends one round of tensor operations per level: on a CPU each round costs tens of microseconds
of fixed overhead whatever the batch size, so the descent is dominated by the number of levels.
:class:`SumTree` groups ``k`` children per node (``k = 16`` by default) and searches the top level
(up to ``root_fanout`` = 4096 nodes) with one prefix sum shared by the batch and
``torch.searchsorted``; each level below costs one ``(B, k)`` gather, row-wise ``cumsum`` and
``searchsorted``. At 1,000,000 leaves that is three rounds instead of twenty. (Measured on a
2-core CPU: k = 8..64 and top levels of 1k..128k nodes are all within ~30% of each other at
batch 256; a larger top level is cheaper for small batches, but its ``searchsorted`` costs
O(B log T) cache misses and dominates at batch 4096, hence the moderate default.)

Why one thread. Each replay operation runs with a single intra-op thread (and restores the
caller's setting): its tensors are too small for parallel regions to pay, and on a busy CPU a
parallel region can stall for milliseconds waiting for its second thread.

Why it cannot drift. Every parent is *recomputed* as the sum of its ``k`` children when one of
them changes (never incremented by a difference), in float64, so a node always equals the
floating-point sum of its current children: nothing accumulates over millions of updates.

Why a zero-priority leaf is never sampled. In the descent a child ``j`` is chosen only when the
running prefix sum strictly increases at ``j``, which in floating point implies the child's sum is
positive; a prefix that rounds up to (or past) a node's total is moved to the largest float below
it, so the walk never steps past the last positive child (the bug of cleanrl#546 and
ReinforcementLearningTrajectories.jl#59).

Two trees, one behaviour. :class:`SumTree` is the vectorised torch tree that notebook 03 builds
and checks; ``PrioritizedReplay(..., tree="readable")`` uses it. By default, on the CPU and with
Numba installed, the buffer uses :class:`memtutor._replay_fast.FastSumTree`: the same levels and
the same descent rule, walked once per sample by two compiled loops (one call per ``sample``,
one per ``update_priorities``), because at small batches the fixed cost of ~60 torch calls per
step, not arithmetic, is what a replay step spends. Both trees draw the same indices from the
same generator state (tested); on a GPU, or without Numba, the default is :class:`SumTree`.

Notebook 03's Blind Cliffwalk study (tabular Q-learning from this buffer under uniform,
proportional, rank-based, greedy, frozen-priority and oracle replay) and its importance-sampling
experiment are in :mod:`memtutor.experiments.nb03_replay`.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from memtutor.utils import check_device, check_positive_int, check_tensor

__all__ = [
    "SumTree",
    "PrioritizedReplay",
    "LinearBetaSchedule",
    "linear_beta_schedule",
    "priority",
    "importance_weights",
    "stratified_prefixes",
]

#: Default ``eps`` added to |TD error| so that no stored transition has priority 0 (paper, Sec. 3.3).
DEFAULT_EPS = 1e-6
#: Default branching factor of the sum tree (children per internal node).
DEFAULT_BRANCHING = 16
#: Default largest number of top-level nodes searched with one shared prefix sum.
DEFAULT_ROOT_FANOUT = 4096
#: dtype of every internal sum: float64 keeps 1e6 leaves' sums exact to ~1e-10 relative.
TREE_DTYPE = torch.float64
#: Largest finite float64: a tree of C leaves accepts priorities up to this / 2C, so its total stays finite.
_FLOAT64_MAX = torch.finfo(TREE_DTYPE).max
#: Smallest normal float64: a priority below it is a subnormal or rounds to 0 (never sampled).
_FLOAT64_TINY = torch.finfo(TREE_DTYPE).tiny


# --------------------------------------------------------------------------------------------
# The paper's equations, one small pure function each
# --------------------------------------------------------------------------------------------
def priority(errors: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """Proportional priority raised to alpha: ``(|delta| + eps) ** alpha``.

    Args:
        errors: ``(B,)`` TD errors (any sign, finite).
        alpha: exponent >= 0 (0 gives uniform replay: every priority is 1).
        eps: offset >= 0 so that a zero error keeps a positive priority.
    Returns:
        ``(B,)`` float64 priorities ``p_i^alpha`` as stored in the tree (``inf`` where they overflow).
    """
    _check_real_tensor(errors, "errors", ndim=1)
    _check_number(alpha, "alpha", low=0.0)
    _check_number(eps, "eps", low=0.0)
    return (errors.detach().to(TREE_DTYPE).abs() + eps) ** alpha


def importance_weights(probs: torch.Tensor, size: int, beta: float, min_prob) -> torch.Tensor:
    """Importance-sampling weights ``(N P(i))^-beta`` normalised by the largest possible one.

    The largest weight belongs to the least likely stored item, ``P_min``, so the normalised
    weight is ``(P(i) / P_min) ** -beta`` and lies in ``(0, 1]``: it only ever scales updates down.

    Args:
        probs: ``(B,)`` floating sampling probabilities ``P(i)`` of the sampled items, in ``(0, 1]``.
        size: ``N``, the number of stored items.
        beta: exponent in [0, 1] (0: no correction, 1: full correction).
        min_prob: ``P_min``, the smallest probability over all stored items: a number or a one-element
            tensor in ``(0, min(probs)]``.
    Returns:
        ``(B,)`` weights, same dtype as ``probs``.
    """
    check_positive_int(size, "size")
    _check_number(beta, "beta", low=0.0, high=1.0)
    _check_real_tensor(probs, "probs", ndim=1)
    if not probs.is_floating_point():
        raise ValueError(f"probs must be a floating tensor of probabilities, got {probs.dtype}")
    p_min = _as_number(min_prob, "min_prob")
    if probs.numel():
        lo, hi = (float(x) for x in torch.aminmax(probs.detach()))
        if not (0 < lo and hi <= 1):  # NaN fails both
            raise ValueError(f"probs must lie in (0, 1], got values in [{lo}, {hi}]")
        if not 0 < p_min <= lo:
            raise ValueError(f"min_prob must lie in (0, min(probs)] = (0, {lo}], got min_prob={p_min}")
    elif not 0 < p_min <= 1:
        raise ValueError(f"min_prob must lie in (0, 1], got min_prob={p_min}")
    return _importance_weights(probs, p_min, float(beta))


def _importance_weights(probs: torch.Tensor, min_prob, beta: float) -> torch.Tensor:
    """:func:`importance_weights` without checks (probabilities or unnormalised priorities alike)."""
    # (N P)^-beta / (N P_min)^-beta = (P / P_min)^-beta: the N cancels, and one pow is cheaper.
    return (probs / min_prob).pow_(-beta)


def stratified_prefixes(
    batch_size: int,
    total: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One uniform draw in each of ``batch_size`` equal segments of ``[0, total)``.

    Stratification (PER paper, Appendix B.2.1) lowers the variance of a minibatch's composition
    compared with ``batch_size`` independent draws; each draw is still ``P(i)``-distributed when
    its segment is picked at random, so the *marginal* of a sampled index is exactly ``P(i)``.

    Args:
        batch_size: ``B`` >= 1.
        total: the range's end, a finite number > 0.
        generator: optional ``torch.Generator`` (any device).
        device: where the result lives.
    Returns:
        ``(B,)`` float64 prefix values (on ``device``, default CPU).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    total = _check_number(total, "total", low=0.0, low_open=True)
    return _stratified_prefixes(batch_size, total, _check_generator(generator), check_device(device))


def _stratified_prefixes(batch_size: int, total: float, generator, device) -> torch.Tensor:
    """:func:`stratified_prefixes` without checks (the sum tree's sampling path)."""
    # Draw where the generator lives (a CPU generator can drive a CUDA buffer), then move.
    gen_device = generator.device if generator is not None else device
    u = torch.rand(batch_size, dtype=TREE_DTYPE, device=gen_device, generator=generator).to(device)
    u += torch.arange(batch_size, dtype=TREE_DTYPE, device=device)  # segment i: [i, i+1)
    return u.mul_(float(total) / batch_size)  # (B,)


def _is_real(x) -> bool:
    """A real number (Python or NumPy scalar), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


# --------------------------------------------------------------------------------------------
# Input checks (at the boundary: the tree's and the buffer's inner loops take checked tensors)
# --------------------------------------------------------------------------------------------
def _check_number(x, name: str, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    """``x`` as a float, or ``ValueError`` unless it is a finite real in ``[low, high]`` (``(low, ...`` if open)."""
    ok = _is_real(x) and math.isfinite(x) and (x > low if low_open else x >= low) and x <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{']' if high < math.inf else ')'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {name}={x!r}")
    return float(x)


def _as_number(x, name: str) -> float:
    """A real number or a one-element real tensor, as a float."""
    if isinstance(x, torch.Tensor):
        if x.numel() != 1 or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name} must be a number or a one-element real tensor, got {x.dtype} {tuple(x.shape)}")
        return float(x)
    if not _is_real(x):
        raise ValueError(f"{name} must be a number, got {type(x).__name__}")
    return float(x)


def _check_real_tensor(x, name: str, *, ndim: int | None = None, shape: tuple | None = None) -> torch.Tensor:
    """A tensor of real numbers (integer or floating; bool and complex are no TD errors or priorities)."""
    check_tensor(x, name, ndim=ndim, shape=shape, finite=False)
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must hold real numbers (an integer or floating dtype), got {x.dtype}")
    return x


def _check_generator(generator) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _check_cast(value: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    """Reject a lossy cast into storage: ``value.dtype`` must promote to ``dtype`` (bool -> int ->
    float -> complex, never to a narrower type of the same kind), e.g. 0.7 must not become 0."""
    if value.dtype != dtype and torch.promote_types(value.dtype, dtype) != dtype:
        raise ValueError(
            f"{name} has dtype {value.dtype} but the buffer stores {dtype}: the cast would lose values; "
            f"convert it explicitly (e.g. .to({dtype}))"
        )


def _priority_limit(capacity: int) -> float:
    """Largest priority a tree of ``capacity`` leaves accepts: ``capacity`` of them sum to at most
    half the largest float64, which leaves room for the rounding of the sums."""
    return _FLOAT64_MAX / (2 * capacity)


def _single_threaded(fn):
    """Run ``fn`` with one intra-op thread, restoring the caller's setting afterwards.

    Every tensor a replay step touches is small (a few thousand elements), too small for
    intra-op parallelism to pay, while a parallel region can wait *milliseconds* for its second
    thread when the cores are busy (measured on a loaded 2-core machine: ``searchsorted`` over 256
    queries took 24 ms with 2 threads against 3 us with 1). Switching costs well under 1 us. The
    setting is per OpenMP host thread, so other Python threads are not affected.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        if threads == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


# --------------------------------------------------------------------------------------------
# The sum tree
# --------------------------------------------------------------------------------------------
class SumTree:
    """A k-ary sum tree over ``capacity`` non-negative leaves with batched operations.

    Layout: ``levels[0]`` holds the leaves (padded with zeros to a multiple of ``k``),
    ``levels[l + 1][i]`` is the sum of ``levels[l][i*k : (i+1)*k]``, up to the top level, which
    has at most ``root_fanout`` nodes and is searched with one shared prefix sum. A parallel
    stack of *min* levels tracks the smallest positive leaf (for the IS-weight normaliser).

    Args:
        capacity: number of leaves ``C`` (any integer >= 1, not only powers of two).
        branching: children per internal node ``k`` (>= 2).
        root_fanout: largest top level searched with a single ``searchsorted`` (>= 1). With the
            defaults (``k = 16``, 4096) 1,000,000 leaves are stored in levels of 1,000,000,
            62,500 and 3,907 nodes: one shared search of the top, then two per-sample levels.
        device: where the tree lives (default CPU).
    """

    def __init__(
        self,
        capacity: int,
        *,
        branching: int = DEFAULT_BRANCHING,
        root_fanout: int = DEFAULT_ROOT_FANOUT,
        device: torch.device | str | None = None,
    ) -> None:
        self.capacity = check_positive_int(capacity, "capacity")
        self.branching = check_positive_int(branching, "branching")
        if self.branching < 2:
            raise ValueError(f"branching must be >= 2, got {branching}")
        self.root_fanout = check_positive_int(root_fanout, "root_fanout")
        self.device = torch.device("cpu" if device is None else device)
        k = self.branching
        sizes = [self.capacity]
        while sizes[-1] > self.root_fanout:  # group k children per parent until the top fits
            sizes.append(-(-sizes[-1] // k))
        # Every level but the top is padded to a multiple of k so that it reshapes to (parents, k).
        padded = [sizes[i + 1] * k for i in range(len(sizes) - 1)] + [sizes[-1]]
        self._sums = [torch.zeros(n, dtype=TREE_DTYPE, device=self.device) for n in padded]
        inf = float("inf")
        # mins[0] is never read (leaf mins are computed from the leaves), so it is not stored.
        # level 0 keeps no minima (the leaves are their own); a (0,) placeholder keeps the list typed
        self._mins = [torch.empty(0, dtype=TREE_DTYPE, device=self.device)] + [
            torch.full((n,), inf, dtype=TREE_DTYPE, device=self.device) for n in padded[1:]
        ]
        self._zero = torch.zeros((), dtype=TREE_DTYPE, device=self.device)
        self._top_csum = torch.zeros(padded[-1] + 1, dtype=TREE_DTYPE, device=self.device)

    # ---- inspection -----------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        """Number of stored levels (leaves + internal levels); the root is implicit."""
        return len(self._sums)

    @property
    def levels(self) -> list[torch.Tensor]:
        """The stored sums, leaves first (read-only views; the top level's sum is the root)."""
        return list(self._sums)

    @property
    def total(self) -> torch.Tensor:
        """The root: sum of all leaves, a float64 scalar tensor (the same number the search uses)."""
        return self._top_cumsum()[-1].clone()

    @property
    def min_positive(self) -> torch.Tensor:
        """Smallest positive leaf (``inf`` when every leaf is 0), a float64 scalar tensor."""
        if self.num_levels == 1:
            leaves = self._sums[0]
            return torch.where(leaves > 0, leaves, torch.inf).amin()
        return self._mins[-1].amin()

    def leaves(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Leaf values at ``indices`` (``(B,)`` long), or all ``C`` leaves when None."""
        if indices is None:
            return self._sums[0][: self.capacity]
        return self._sums[0][self._check_indices(indices)]

    # ---- validation -----------------------------------------------------------------------
    def _check_indices(self, indices: torch.Tensor, name: str = "indices") -> torch.Tensor:
        check_tensor(indices, name, ndim=1)
        if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise ValueError(f"{name} must be an integer tensor, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.capacity):
            raise ValueError(
                f"{name} must lie in [0, {self.capacity}), got values in [{int(indices.min())}, {int(indices.max())}]"
            )
        return indices.to(device=self.device, dtype=torch.int64)

    # ---- update -----------------------------------------------------------------------------
    @_single_threaded
    def update(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Set ``leaves[indices] = values`` and recompute every ancestor.

        Duplicate indices in one call behave like sequential assignment: the last value wins.

        Args:
            indices: ``(B,)`` integer leaf indices in ``[0, C)``.
            values: ``(B,)`` real values in ``[0, float64 max / 2C]``, so that the total of all ``C``
                leaves stays finite (detached: the tree holds numbers, not autograd graphs).
        """
        idx = self._check_indices(indices)
        _check_real_tensor(values, "values", shape=(idx.numel(),))
        if idx.numel() == 0:
            return
        vals = values.detach().to(device=self.device, dtype=TREE_DTYPE)
        bounds = torch.aminmax(vals)
        lo, hi = float(bounds.min), float(bounds.max)
        limit = _priority_limit(self.capacity)
        if not (lo >= 0 and hi <= limit):  # NaN fails both comparisons
            raise ValueError(
                f"values must be finite and >= 0, and at most {limit:.4g} (float64 max / (2 capacity), so "
                "the total stays finite), got " + ("NaN" if lo != lo or hi != hi else f"values in [{lo}, {hi}]")
            )
        self._update(idx, vals)

    def _update(self, idx: torch.Tensor, vals: torch.Tensor) -> None:
        """:meth:`update` without input checks: ``idx`` int64 in range, ``vals`` float64 >= 0."""
        if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
            # Not strictly increasing (sample() returns sorted indices, so this is the rare
            # case). Last write wins: a stable sort keeps equal indices in call order, so the
            # last of each run of equal sorted indices is the last occurrence in the call.
            idx, order = torch.sort(idx, stable=True)
            last = torch.ones_like(idx, dtype=torch.bool)
            torch.ne(idx[1:], idx[:-1], out=last[:-1])
            order = order[last]
            idx, vals = idx[last], vals[order]
        self._sums[0].index_copy_(0, idx, vals)
        self._propagate(idx)

    def _propagate(self, idx: torch.Tensor) -> None:
        """Recompute the sums (and positive mins) of every ancestor of the distinct leaves ``idx``."""
        k = self.branching
        node = idx
        for level in range(self.num_levels - 1):
            # Siblings share a parent, so a parent may appear several times: each copy is
            # recomputed from the same children and written with the same value, which is
            # cheaper than deduplicating the parents first.
            node = torch.div(node, k, rounding_mode="floor")  # (B,)
            rows = self._sums[level].view(-1, k).index_select(0, node)  # (U, k)
            self._sums[level + 1].index_copy_(0, node, rows.sum(1))
            if level == 0:
                # The min over *positive* leaves: empty (zero) leaves are never sampled, so they
                # must not set the largest possible IS weight.
                mins = torch.where(rows > 0, rows, torch.inf).amin(1)
            else:
                mins = self._mins[level].view(-1, k).index_select(0, node).amin(1)
            self._mins[level + 1].index_copy_(0, node, mins)

    def rebuild(self) -> None:
        """Recompute every internal level from the leaves (O(C)); the tree never needs it, but
        it is the reference the tests compare against."""
        self._propagate(torch.arange(self.capacity, device=self.device))

    # ---- search -----------------------------------------------------------------------------
    @_single_threaded
    def find(self, prefix_values: torch.Tensor) -> torch.Tensor:
        """Leaf index ``i`` with ``sum(leaves[:i]) <= v < sum(leaves[:i+1])`` for each prefix ``v``.

        The returned leaf always has a positive value. A prefix equal to the total (it can
        appear through rounding) maps to the last positive leaf.

        Args:
            prefix_values: ``(B,)`` finite values in ``[0, total]``.
        Returns:
            ``(B,)`` int64 leaf indices.
        """
        check_tensor(_check_real_tensor(prefix_values, "prefix_values", ndim=1), "prefix_values")
        v = prefix_values.detach().to(device=self.device, dtype=TREE_DTYPE)
        top_csum = self._top_cumsum()
        total = float(top_csum[-1])
        if not total > 0:
            raise ValueError("cannot search a sum tree whose total is 0 (every leaf is 0)")
        if v.numel():
            lo, hi = (float(x) for x in torch.aminmax(v))
            if lo < 0 or hi > total:
                raise ValueError(
                    f"prefix_values must lie in [0, total={total:.6g}], got values in [{lo:.6g}, {hi:.6g}]"
                )
        return self._descend(v, top_csum, total)

    def _top_cumsum(self) -> torch.Tensor:
        """``(T + 1,)`` exclusive-then-inclusive prefix sums of the top level: ``[0, s0, s0+s1, ...]``."""
        # A reused buffer: with a large top level, a fresh allocation per call cost more than the
        # cumsum itself (page faults).
        torch.cumsum(self._sums[-1], 0, out=self._top_csum[1:])
        return self._top_csum

    def _descend(self, v: torch.Tensor, top_csum: torch.Tensor, total: float) -> torch.Tensor:
        """Walk ``(B,)`` prefixes ``v`` in ``[0, total]`` from the top level down to the leaves."""
        # Keep v strictly below the total: then the chosen child is one where the running sum
        # strictly increases, i.e. a child with a positive sum (never an empty leaf).
        v = v.clamp(0.0, math.nextafter(total, 0.0))
        node = torch.searchsorted(top_csum[1:], v, right=True)  # (B,) first j with csum[j] > v
        v = v - top_csum[node]  # prefix left inside the chosen top node, >= 0
        k = self.branching
        for level in range(self.num_levels - 2, -1, -1):
            rows = self._sums[level].view(-1, k).index_select(0, node)  # (B, k) children of each node
            if level:
                csum = rows.new_zeros(rows.shape[0], k + 1)  # (B, k+1) [0, c0, c0+c1, ...]
                torch.cumsum(rows, 1, out=csum[:, 1:])
            else:
                csum = rows.cumsum(1)  # (B, k): no prefix needs to be carried below the leaves
            # The row's own total can differ from its parent's stored sum in the last bit.
            v = torch.minimum(v, torch.nextafter(csum[:, -1], self._zero))
            j = torch.searchsorted(csum, v.unsqueeze(1), right=True)  # (B, 1) number of entries <= v
            if level:
                # csum[:, 0] = 0 <= v, so the first entry above v is child j's inclusive sum.
                j.sub_(1)
                v = v - csum.gather(1, j).squeeze(1)  # prefix left inside child j
            node = j.squeeze(1).add_(node, alpha=k)
        return node

    @_single_threaded
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch_size`` stratified leaf indices, each with probability ``leaf / total``.

        Returns:
            ``(B,)`` int64 leaf indices (only leaves with a positive value).
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        _check_generator(generator)
        top_csum = self._top_cumsum()
        total = float(top_csum[-1])
        if not total > 0:
            raise ValueError("cannot sample from a sum tree whose total is 0 (every leaf is 0)")
        return self._descend(_stratified_prefixes(batch_size, total, generator, self.device), top_csum, total)


# --------------------------------------------------------------------------------------------
# The replay buffer
# --------------------------------------------------------------------------------------------
class PrioritizedReplay:
    """Proportional prioritized replay over preallocated dict-of-tensor storage.

    ``alpha = 0`` gives uniform replay (every stored priority is 1). New items enter at the
    largest priority seen so far (1 before any update), as in the paper, so that every
    transition is replayed at least once with high probability.

    Stale updates: ``update_priorities`` applies an update to every slot whose item is the one
    that :meth:`add` or :meth:`sample` returned, including right after ``add`` before any sample
    (as cpprb does). It skips (and reports) only a slot that held an item when :meth:`sample` was
    last called and was overwritten by :meth:`add` since: its index may name the sampled item,
    which is gone, so a late priority never lands on the wrong transition (cleanrl#511; cpprb's
    ``check_for_update``). Sample again to update the new item.

    Inputs are copied in detached (storage and tree hold numbers, never autograd graphs), and a
    transition whose dtype would lose values in the storage's dtype (float into int, int into
    bool, float64 into float32) is rejected: convert it explicitly.

    Args:
        capacity: number of slots ``C`` (ring buffer: the oldest item is overwritten).
        alpha: prioritisation exponent >= 0 (0.6 by default, as in cpprb).
        eps: offset > 0 added to |TD error| (default :data:`DEFAULT_EPS`); ``eps ** alpha`` must be
            a normal float64 (>= 2.2e-308), else a zero error would get priority 0 and never be drawn.
        device: where storage and tree live (default CPU).
        tree: ``"fast"`` (default) or ``"readable"``. ``"readable"`` is :class:`SumTree`, the
            vectorised torch tree that notebook 03 builds. ``"fast"`` is, on the CPU,
            :class:`~memtutor._replay_fast.FastSumTree`: the same levels and the same descent rule
            in two loops compiled by Numba (one call per ``sample`` and per ``update_priorities``),
            which draws the same indices from the same generator state; on another device, or
            without Numba installed, it is :class:`SumTree`.
        branching, root_fanout: passed to the tree (default: the chosen tree's own defaults,
            ``k = 16`` and 4096 for :class:`SumTree`, 32 and 2048 for the fast tree).
    """

    def __init__(
        self,
        capacity: int,
        *,
        alpha: float = 0.6,
        eps: float = DEFAULT_EPS,
        device: torch.device | str | None = None,
        tree: str = "fast",
        branching: int | None = None,
        root_fanout: int | None = None,
    ) -> None:
        self.capacity = check_positive_int(capacity, "capacity")
        if not (_is_real(alpha) and 0 <= alpha < float("inf")):
            raise ValueError(f"alpha must be a finite number >= 0, got alpha={alpha!r}")
        if not (_is_real(eps) and 0 < eps < float("inf")):
            raise ValueError(f"eps must be a finite number > 0, got eps={eps!r}")
        if alpha * math.log(eps) < math.log(_FLOAT64_TINY):
            raise ValueError(
                f"eps ** alpha = {eps!r} ** {alpha!r} underflows float64 (below {_FLOAT64_TINY:.3g}): an item "
                "with TD error 0 would get priority 0 and never be sampled; use a larger eps or a smaller alpha"
            )
        self.alpha, self.eps = float(alpha), float(eps)
        self.device = check_device(device) or torch.device("cpu")
        if tree not in ("fast", "readable"):
            raise ValueError(f"tree must be 'fast' or 'readable', got tree={tree!r}")
        self._fast = False
        if tree == "fast" and self.device.type == "cpu":
            from memtutor._replay_fast import HAVE_NUMBA  # it imports this module: imported here

            self._fast = HAVE_NUMBA
        if self._fast:
            from memtutor._replay_fast import FAST_BRANCHING, FAST_ROOT_FANOUT, FastSumTree

            k = FAST_BRANCHING if branching is None else branching
            top = FAST_ROOT_FANOUT if root_fanout is None else root_fanout
            self.tree: SumTree = FastSumTree(self.capacity, branching=k, root_fanout=top)
        else:
            k = DEFAULT_BRANCHING if branching is None else branching
            top = DEFAULT_ROOT_FANOUT if root_fanout is None else root_fanout
            self.tree = SumTree(self.capacity, branching=k, root_fanout=top, device=self.device)
        self.storage: dict[str, torch.Tensor] = {}
        self.max_priority = 1.0  # largest raw priority |delta| + eps seen so far
        self._size = 0
        self._next = 0  # slot the next add writes to
        self._written = torch.zeros(self.capacity, dtype=torch.int64, device=self.device)
        self._num_added = 0  # items ever added; _written[i] = value of this counter when i was written
        self._sampled_at = 0  # _num_added at the last sample() call
        self._log_limit = math.log(_priority_limit(self.capacity))  # the fast update's overflow check
        self._stats = np.empty(3)  # the fast update's [min index, max index, max raw priority]

    def __len__(self) -> int:
        return self._size

    # ---- add ----------------------------------------------------------------------------------
    def _check_transitions(self, transitions: Mapping[str, torch.Tensor]) -> int:
        if not isinstance(transitions, Mapping) or not transitions:
            raise ValueError("transitions must be a non-empty dict of tensors with a leading batch dim")
        sizes = set()
        for key, value in transitions.items():
            check_tensor(value, f"transitions[{key!r}]", finite=False)
            if value.dim() == 0:
                raise ValueError(f"transitions[{key!r}] needs a leading batch dimension, got a scalar")
            sizes.add(value.shape[0])
        if len(sizes) != 1:
            raise ValueError(f"all transitions must share the batch size, got sizes {sorted(sizes)}")
        (batch,) = sizes
        if self.storage:
            if set(transitions) != set(self.storage):
                raise ValueError(
                    f"transitions keys {sorted(transitions)} differ from the stored {sorted(self.storage)}"
                )
            for key, value in transitions.items():
                want = self.storage[key]
                if value.shape[1:] != want.shape[1:]:
                    raise ValueError(
                        f"transitions[{key!r}] must have per-item shape {tuple(want.shape[1:])}, "
                        f"got {tuple(value.shape[1:])}"
                    )
                _check_cast(value, want.dtype, f"transitions[{key!r}]")
        if batch > self.capacity:
            raise ValueError(f"cannot add {batch} transitions at once to a buffer of capacity {self.capacity}")
        return batch

    @_single_threaded
    def add(self, transitions: Mapping[str, torch.Tensor], errors: torch.Tensor | None = None) -> torch.Tensor:
        """Store a batch of transitions; returns their ``(B,)`` slot indices.

        Args:
            transitions: dict of tensors, each ``(B, ...)``; the first call fixes keys, shapes
                and dtypes (storage is preallocated then).
            errors: optional ``(B,)`` real TD errors for the initial priorities; by default new
                items get the current maximum priority.
        Returns:
            ``(B,)`` int64 slots written; :meth:`update_priorities` accepts them until they are
            sampled or overwritten.
        """
        batch = self._check_transitions(transitions)
        if batch == 0:
            return torch.empty(0, dtype=torch.int64, device=self.device)
        if errors is None:
            prios = torch.full((batch,), self.max_priority**self.alpha, dtype=TREE_DTYPE, device=self.device)
        else:  # validated before anything is stored: a rejected add leaves the buffer as it was
            _check_real_tensor(errors, "errors", shape=(batch,))
            raw, top = self._raw_priorities(errors)
            self.max_priority = max(self.max_priority, top)
            prios = raw.pow_(self.alpha)
        if not self.storage:
            for key, value in transitions.items():
                self.storage[key] = torch.zeros(
                    (self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.device
                )
        start = self._next
        for key, value in transitions.items():
            # detached: a sampled batch must not keep the graph that produced a stored tensor alive
            _ring_write(self.storage[key], value.detach().to(device=self.device, dtype=self.storage[key].dtype), start)
        _ring_write(self._written, self._num_added + 1 + torch.arange(batch, device=self.device), start)
        idx = (start + torch.arange(batch, device=self.device)) % self.capacity  # (B,)
        self.tree._update(idx, prios)  # slots are distinct and in range, priorities checked
        self._num_added += batch
        self._next = (self._next + batch) % self.capacity
        self._size = min(self._size + batch, self.capacity)
        return idx

    def _raw_priorities(self, errors: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``(|errors| + eps, its max)`` in float64 (one sync); raises on NaN/inf and on priorities
        so large that ``capacity`` of them would overflow the tree's total. Changes nothing."""
        raw = errors.detach().to(device=self.device, dtype=TREE_DTYPE).abs().add_(self.eps)  # (B,)
        top = self._check_top(float(raw.max())) if raw.numel() else 0.0  # NaN propagates through max
        return raw, top

    def _check_top(self, top: float) -> float:
        """``top``, the largest raw priority of a batch, or ValueError if it is NaN, infinite, or
        so large that ``capacity`` priorities ``top ** alpha`` would overflow the tree's total."""
        if not top < math.inf:
            raise ValueError("errors contain NaN or infinite values")
        limit = _priority_limit(self.capacity)
        if self.alpha * math.log(top) > math.log(limit):  # top ** alpha > limit, without overflow
            raise ValueError(
                f"errors too large: (|error| + eps) ** alpha = {top:.4g} ** {self.alpha} exceeds "
                f"{limit:.4g}, the largest priority whose sum over {self.capacity} slots stays finite"
            )
        return top

    # ---- sample -------------------------------------------------------------------------------
    @_single_threaded
    def sample(
        self, batch_size: int, beta: float, generator: torch.Generator | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Draw a stratified batch with probability ``P(i)``; returns ``(batch, indices, weights)``.

        Args:
            batch_size: ``B`` >= 1 (indices may repeat, as in the paper).
            beta: IS exponent in [0, 1].
            generator: optional ``torch.Generator`` for the draws (any device).
        Returns:
            A tuple ``(batch, indices, weights)``. ``batch`` is a dict of ``(B, ...)`` tensors, ``indices``
            the ``(B,)`` int64 slots, in ascending order (one draw per stratum), ``weights`` the ``(B,)``
            IS weights in ``(0, 1]`` (default float dtype).
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        if not (_is_real(beta) and 0 <= beta <= 1):
            raise ValueError(f"beta must be a number in [0, 1], got beta={beta!r}")
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if self._fast:
            return self._sample_fast(batch_size, float(beta), _check_generator(generator))
        idx = self.tree.sample(batch_size, generator)  # (B,)
        # P(i) = p_i / total and P_min = p_min / total: the total cancels in the weight ratio.
        prios = self.tree._sums[0].index_select(0, idx)  # (B,) p_i^alpha
        weights = _importance_weights(prios, self.tree.min_positive, float(beta))
        self._sampled_at = self._num_added
        batch = {key: value.index_select(0, idx) for key, value in self.storage.items()}
        return batch, idx, weights.to(torch.get_default_dtype())

    def _sample_fast(
        self, batch_size: int, beta: float, generator: torch.Generator | None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """:meth:`sample` on the fast tree (checked arguments): one compiled call draws the indices
        and computes their weights, from the same uniform draws as the readable tree."""
        draw_on = _CPU if generator is None else generator.device  # draw where the generator lives
        draws = torch.rand(batch_size, dtype=TREE_DTYPE, generator=generator, device=draw_on)
        u = (draws if draw_on.type == "cpu" else draws.cpu()).numpy()
        idx_np = np.empty(batch_size, dtype=np.int64)
        dtype = torch.get_default_dtype()
        weights = np.empty(batch_size, dtype=np.float32 if dtype == torch.float32 else np.float64)
        self.tree.sample_weights_np(u, beta, idx_np, weights)  # type: ignore[attr-defined]
        self._sampled_at = self._num_added
        idx = torch.from_numpy(idx_np)
        batch = {key: value.index_select(0, idx) for key, value in self.storage.items()}
        w = torch.from_numpy(weights)
        return batch, idx, w if w.dtype == dtype else w.to(dtype)

    # ---- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything needed to restore the buffer, as a flat dict of tensors (``weights_only``-safe)."""
        state = {f"storage.{k}": v for k, v in self.storage.items()}
        state["priorities"] = self.tree.leaves().clone()  # (C,) p_i^alpha; the tree is rebuilt from them
        state["written"] = self._written.clone()
        meta = [self.capacity, self._size, self._next, self._num_added, self._sampled_at]
        state["counters"] = torch.tensor(meta, dtype=torch.int64)
        state["settings"] = torch.tensor([self.alpha, self.eps, self.max_priority], dtype=TREE_DTYPE)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` (same capacity, alpha and eps). Everything is checked
        before anything is changed: a rejected state leaves the buffer as it was."""
        if not isinstance(state, Mapping):
            raise ValueError(f"state must be a dict of tensors (a state_dict), got {type(state).__name__}")
        for key in ("priorities", "written", "counters", "settings"):
            if key not in state:
                raise ValueError(f"state is missing {key!r}")
        _check_real_tensor(state["counters"], "state['counters']", shape=(5,))
        _check_real_tensor(state["settings"], "state['settings']", shape=(3,))
        cap, size, nxt, added, sampled = (int(x) for x in state["counters"].detach())
        alpha, eps, max_priority = (float(x) for x in state["settings"].detach())
        if cap != self.capacity or alpha != self.alpha or eps != self.eps:
            raise ValueError(
                f"state has capacity={cap}, alpha={alpha}, eps={eps}; this buffer has "
                f"capacity={self.capacity}, alpha={self.alpha}, eps={self.eps}"
            )
        _check_real_tensor(state["written"], "state['written']", shape=(cap,))
        if not (0 <= size <= cap and 0 <= nxt < cap and 0 <= sampled <= added and 1 <= max_priority < math.inf):
            raise ValueError(f"state['counters'] or state['settings'] are inconsistent: {state['counters'].tolist()}")
        SumTree(cap).update(torch.arange(cap), state["priorities"])  # the range check, on a scratch tree
        for key, value in state.items():
            if key.startswith("storage.") and (not isinstance(value, torch.Tensor) or value.shape[:1] != (cap,)):
                raise ValueError(f"state[{key!r}] must be a tensor of {cap} items")
        self.storage = {
            k[len("storage.") :]: v.detach().to(self.device).clone()
            for k, v in state.items()
            if k.startswith("storage.")
        }
        self.tree.update(torch.arange(cap, device=self.device), state["priorities"].to(self.device))
        self._written = state["written"].to(self.device).clone()
        self._size, self._next, self._num_added, self._sampled_at = size, nxt, added, sampled
        self.max_priority = max_priority

    # ---- update -------------------------------------------------------------------------------
    @_single_threaded
    def update_priorities(self, indices: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
        """Set the priorities of ``indices`` to ``(|errors| + eps) ** alpha``.

        Args:
            indices: ``(B,)`` slots in ``[0, len(self))``, as returned by :meth:`sample` or :meth:`add`.
            errors: ``(B,)`` finite real TD errors (their sign is ignored). An index repeated in the
                batch (an item sampled twice) gets the last of its errors.
        Returns:
            ``(B,)`` bool mask of the updates applied. False only for a slot that held an item at
            the last :meth:`sample` and was overwritten by :meth:`add` since (the update may be
            meant for the sampled item, which is gone), so it was skipped.
        """
        check_tensor(indices, "indices", ndim=1)
        _check_real_tensor(errors, "errors", shape=(indices.numel(),))
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor, got {indices.dtype}")
        if indices.numel() == 0:
            return torch.ones(0, dtype=torch.bool, device=self.device)
        if self._fast and indices.device.type == "cpu" and errors.device.type == "cpu":
            return self._update_priorities_fast(indices, errors)
        bounds = torch.aminmax(indices)
        lo, hi = int(bounds.min), int(bounds.max)
        if lo < 0 or hi >= self._size:
            raise ValueError(f"indices must lie in the filled part [0, {self._size}), got values in [{lo}, {hi}]")
        idx = indices.to(device=self.device, dtype=torch.int64)
        # Every error is validated before the stale ones are dropped: bad input is never ignored.
        raw, top = self._raw_priorities(errors)  # (B,)
        sampled = self._sampled_at
        if self._num_added > sampled > 0:  # added since a sample: a slot may have changed hands
            # Slot i was first filled by item i + 1 (the ring starts at 0), so it held an item at
            # the last sample iff i < sampled; it was overwritten since iff written[i] > sampled.
            fresh = (self._written.index_select(0, idx) <= sampled) | (idx >= sampled)  # (B,)
            idx, raw = idx[fresh], raw[fresh]
            top = float(raw.max()) if raw.numel() else 0.0  # the largest *applied* priority
        else:
            fresh = torch.ones(idx.shape, dtype=torch.bool, device=self.device)
        self.max_priority = max(self.max_priority, top)
        self.tree._update(idx, raw.pow_(self.alpha))
        return fresh

    def _update_priorities_fast(self, indices: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
        """:meth:`update_priorities` on the fast tree (checked shapes and dtypes, CPU tensors)."""
        idx = indices.numpy()
        if idx.dtype != np.int64:
            idx = idx.astype(np.int64)
        if not self._num_added > self._sampled_at > 0:  # the common case: one compiled call
            err = errors.detach()
            if err.dtype not in _KERNEL_DTYPES:
                err = err.to(TREE_DTYPE)
            stats = self._stats
            args = (idx, err.numpy(), self.eps, self.alpha, self._size, self._log_limit, stats)
            code = self.tree.update_errors_np(*args)  # type: ignore[attr-defined]
            if code == 1:
                lo, hi = int(stats[0]), int(stats[1])
                raise ValueError(f"indices must lie in the filled part [0, {self._size}), got values in [{lo}, {hi}]")
            if code:
                self._check_top(float(stats[2]))  # raises the message for a NaN/inf (2) or too large (3) error
            self.max_priority = max(self.max_priority, float(stats[2]))
            return torch.ones(idx.shape[0], dtype=torch.bool)
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self._size:
            raise ValueError(f"indices must lie in the filled part [0, {self._size}), got values in [{lo}, {hi}]")
        errors = errors.detach()  # every error is checked before the stale ones are dropped
        raw = np.abs(errors.numpy() if errors.dtype == TREE_DTYPE else errors.to(TREE_DTYPE).numpy())  # a copy
        raw += self.eps
        self._check_top(float(raw.max()))
        # Added since the last sample: a slot may have changed hands (see update_priorities).
        sampled = self._sampled_at
        fresh = (self._written.numpy()[idx] <= sampled) | (idx >= sampled)  # (B,)
        idx, raw = idx[fresh], raw[fresh]
        top = float(raw.max()) if raw.size else 0.0  # the largest *applied* priority
        self.max_priority = max(self.max_priority, top)
        np.power(raw, self.alpha, out=raw)
        self.tree.update_np(idx, raw)  # type: ignore[attr-defined]
        return torch.from_numpy(fresh)


_CPU = torch.device("cpu")
#: dtypes whose NumPy view the compiled update reads directly (others are converted to float64 first).
_KERNEL_DTYPES = (torch.float64, torch.float32, torch.int64, torch.int32)


def _ring_write(dst: torch.Tensor, src: torch.Tensor, start: int) -> None:
    """``dst[(start + i) % C] = src[i]`` with at most two slice copies (no index tensor)."""
    cap, n = dst.shape[0], src.shape[0]
    first = min(n, cap - start)
    dst[start : start + first] = src[:first]
    if first < n:  # wrapped around the end of the ring
        dst[: n - first] = src[first:]


# --------------------------------------------------------------------------------------------
# Beta annealing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearBetaSchedule:
    """``beta(step)`` rising linearly from ``beta0`` to 1 over ``total_steps``, then staying at 1."""

    beta0: float
    """IS exponent at step 0 (paper: 0.4 for the proportional variant)."""
    total_steps: int
    """Number of steps until beta reaches 1."""

    def __post_init__(self):
        if not (_is_real(self.beta0) and 0 <= self.beta0 <= 1):
            raise ValueError(f"beta0 must be a number in [0, 1], got beta0={self.beta0!r}")
        check_positive_int(self.total_steps, "total_steps")

    def __call__(self, step: int) -> float:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        frac = min(step / self.total_steps, 1.0)
        return self.beta0 + frac * (1.0 - self.beta0)


def linear_beta_schedule(beta0: float, total_steps: int) -> LinearBetaSchedule:
    """The paper's beta annealing: ``beta0`` at step 0, 1 from ``total_steps`` on."""
    return LinearBetaSchedule(beta0, total_steps)
