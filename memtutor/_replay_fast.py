"""The sum tree of :mod:`memtutor.replay` with its hot path compiled: the buffer's default on the CPU.

:class:`FastSumTree` stores the same k-ary levels as :class:`~memtutor.replay.SumTree` (the
arrays are shared: ``levels`` and ``_sums`` are torch views of the NumPy arrays the kernels
write) and follows the same descent rule, so for the same prefixes both trees return the same
leaves, and the buffer draws the same indices from the same generator state with either tree.

Why compiled. A replay step over a small batch is dominated by the fixed cost of each array
call, not by arithmetic: the vectorised tree spends ~60 torch calls of a microsecond or more on a
batch of 32, while a C++ library (cpprb) walks its tree once per sample in one call. Fusing,
caching and moving those calls to NumPy still leaves ~50 calls (measured: ~130 us per step at
batch 32 and 1,000,000 items, against cpprb's ~50 us). So here the descent and the update are
two loops compiled by Numba (``@njit``): one call each per step, with the per-sample walk of the
tree inside, as cpprb does, over a wide tree (three levels at 10^6 items instead of twenty).

* :func:`_sample_kernel` computes the top level's prefix sums once per batch, then for each
  stratified prefix binary-searches the top level and scans ``k`` children per level below.
* :func:`_update_kernel` writes the leaves in call order (the last of duplicate indices wins) and
  recomputes every ancestor's sum and positive minimum from its children, in float64, so nothing
  can drift (as in the vectorised tree).

Numba compiles each kernel at its first call (about a second, cached on disk afterwards). Without
Numba installed :data:`HAVE_NUMBA` is False and :class:`~memtutor.replay.PrioritizedReplay` uses
the vectorised :class:`~memtutor.replay.SumTree` instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from memtutor.replay import TREE_DTYPE, SumTree
from memtutor.utils import user_checkpoint_dir

try:
    from numba import njit as _numba_njit  # type: ignore[import-untyped, unused-ignore]
    from numba.core import config as _numba_config  # type: ignore[import-untyped, unused-ignore]

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised where Numba is not installed
    HAVE_NUMBA = False


def kernel_cache_dir() -> Path:
    """Where the compiled kernels are cached: ``$XDG_CACHE_HOME/memtutor/numba`` (or
    ``~/.cache/memtutor/numba``), never next to the package's source, which may be site-packages."""
    return user_checkpoint_dir().parent / "numba"


def njit(*args, **kwargs):
    """``numba.njit`` whose on-disk cache lives in :func:`kernel_cache_dir`.

    Numba chooses a function's cache folder when it is decorated; by default that is the
    ``__pycache__`` beside the source file. ``numba.config.CACHE_DIR`` (what ``NUMBA_CACHE_DIR``
    sets) is pointed at our folder only while these kernels are decorated, unless the user set
    one, and restored afterwards, so other Numba code in the process is untouched. Without Numba
    the kernels stay plain (slow) Python functions.
    """

    def decorate(fn):
        if not HAVE_NUMBA:
            return fn
        previous = _numba_config.CACHE_DIR
        _numba_config.CACHE_DIR = previous or str(kernel_cache_dir())
        try:
            return _numba_njit(**kwargs)(fn)
        finally:
            _numba_config.CACHE_DIR = previous

    return decorate(args[0]) if args and callable(args[0]) else decorate


__all__ = ["FastSumTree", "HAVE_NUMBA", "FAST_BRANCHING", "FAST_ROOT_FANOUT"]

#: Default children per node of the fast tree.
FAST_BRANCHING = 32
#: Default largest top level of the fast tree (its prefix sums are computed once per batch).
FAST_ROOT_FANOUT = 2048


# --------------------------------------------------------------------------------------------
# Kernels. ``sums`` and ``mins`` are tuples of 1-D float64 arrays, leaves first; every level but
# the top has a multiple of k entries; ``mins[0]`` is unused (leaves are their own minima).
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _descend_one(sums, csum, v, k):  # pragma: no cover - compiled
    """Leaf index for one prefix ``v`` in ``[0, total)``; ``csum`` = ``[0, s0, s0 + s1, ...]`` of the top."""
    lo, hi = 0, csum.shape[0] - 2
    while lo < hi:  # first top node j whose inclusive prefix sum exceeds v
        mid = (lo + hi) // 2
        if csum[mid + 1] > v:
            hi = mid
        else:
            lo = mid + 1
    node = lo
    v -= csum[node]
    for level in range(len(sums) - 2, -1, -1):
        row = sums[level]
        base = node * k
        acc = 0.0
        j = -1
        for c in range(k):  # first child whose inclusive sum exceeds v: a child with a positive sum
            nxt = acc + row[base + c]
            if nxt > v:
                j = c
                break
            acc = nxt
        if j < 0:
            # Rounding (rare): v reached the row's own total, which can differ from its parent's
            # stored sum in the last bit. Stay just below it, as the vectorised tree does: the
            # first child whose inclusive sum exceeds that is the last positive one.
            v = np.nextafter(acc, 0.0)
            acc = 0.0
            for c in range(k):
                nxt = acc + row[base + c]
                if nxt > v:
                    j = c
                    break
                acc = nxt
        v -= acc
        node = base + j
    return node


@njit(cache=True, nogil=True)
def _find_kernel(sums, csum, values, k, out):  # pragma: no cover - compiled
    """``out[b]`` = leaf of prefix ``values[b]`` in ``[0, total]`` (clamped below the total)."""
    vmax = np.nextafter(csum[csum.shape[0] - 1], 0.0)
    for b in range(values.shape[0]):
        out[b] = _descend_one(sums, csum, min(values[b], vmax), k)


@njit(cache=True, nogil=True)
def _sample_kernel(sums, csum, u, k, out):  # pragma: no cover - compiled
    """Stratified draws: ``out[b]`` = leaf of prefix ``(u[b] + b) * total / B``; returns the total.

    Fills ``csum`` with the top level's prefix sums; returns without drawing when the total is 0."""
    top = sums[len(sums) - 1]
    acc = 0.0
    csum[0] = 0.0
    for i in range(top.shape[0]):
        acc += top[i]
        csum[i + 1] = acc
    total = acc
    if not total > 0:
        return total
    batch = u.shape[0]
    scale = total / batch
    vmax = np.nextafter(total, 0.0)
    for b in range(batch):
        out[b] = _descend_one(sums, csum, min((u[b] + b) * scale, vmax), k)
    return total


@njit(cache=True, nogil=True)
def _min_positive(sums, mins):  # pragma: no cover - compiled
    """Smallest positive leaf (``inf`` when there is none)."""
    m = np.inf
    if len(sums) == 1:
        leaves = sums[0]
        for i in range(leaves.shape[0]):
            if 0.0 < leaves[i] < m:
                m = leaves[i]
    else:
        top = mins[len(mins) - 1]
        for i in range(top.shape[0]):
            m = min(m, top[i])
    return m


@njit(cache=True, nogil=True)
def _replay_sample_kernel(sums, mins, csum, u, k, beta, out, weights):  # pragma: no cover - compiled
    """:func:`_sample_kernel`, then the IS weights ``(p_i / p_min) ** -beta`` of the drawn leaves."""
    total = _sample_kernel(sums, csum, u, k, out)
    if total > 0:
        leaves = sums[0]
        p_min = _min_positive(sums, mins)
        for b in range(out.shape[0]):
            weights[b] = (leaves[out[b]] / p_min) ** -beta
    return total


@njit(cache=True, nogil=True)
def _replay_update_kernel(sums, mins, k, idx, errors, eps, alpha, size, log_limit, stats):  # pragma: no cover
    """Check, then apply, the buffer's priority update ``leaves[idx] = (|errors| + eps) ** alpha``.

    Returns 0 when applied; 1 (an index outside ``[0, size)``), 2 (a NaN or infinite error) or 3
    (a priority whose sum over the capacity would overflow) with nothing changed. ``stats`` gets
    ``[min index, max index, max(|errors| + eps)]`` for the message and the running maximum."""
    lo, hi, top = idx[0], idx[0], 0.0
    for i in range(idx.shape[0]):
        lo = min(lo, idx[i])
        hi = max(hi, idx[i])
    stats[0], stats[1] = lo, hi
    if lo < 0 or hi >= size:
        return 1
    bad = False
    for i in range(errors.shape[0]):
        raw = abs(np.float64(errors[i])) + eps
        if not raw < np.inf:  # NaN or inf
            bad = True
        elif raw > top:
            top = raw
    stats[2] = np.nan if bad else top
    if bad:
        return 2
    if alpha * np.log(top) > log_limit:
        return 3
    leaves = sums[0]
    nodes = np.empty(idx.shape[0], dtype=np.int64)
    for i in range(idx.shape[0]):
        leaves[idx[i]] = (abs(np.float64(errors[i])) + eps) ** alpha
        nodes[i] = idx[i]
    _propagate_kernel(sums, mins, k, nodes)
    return 0


@njit(cache=True, nogil=True)
def _propagate_kernel(sums, mins, k, nodes):  # pragma: no cover - compiled
    """Recompute the sums and positive minima of every ancestor of the leaves ``nodes`` (overwritten)."""
    for level in range(len(sums) - 1):
        lower, upper, lower_min, upper_min = sums[level], sums[level + 1], mins[level], mins[level + 1]
        prev = -1
        for i in range(nodes.shape[0]):
            p = nodes[i] // k
            nodes[i] = p
            if p == prev:  # siblings in a row (sorted indices): computed once
                continue
            prev = p
            base = p * k
            s = 0.0
            m = np.inf
            for c in range(k):
                x = lower[base + c]
                s += x
                if level == 0:
                    if 0.0 < x < m:  # an empty leaf is never sampled: it sets no weight
                        m = x
                elif lower_min[base + c] < m:
                    m = lower_min[base + c]
            upper[p] = s
            upper_min[p] = m


@njit(cache=True, nogil=True)
def _update_kernel(sums, mins, k, idx, vals):  # pragma: no cover - compiled
    """``leaves[idx[i]] = vals[i]`` in call order (the last duplicate wins), then every ancestor."""
    leaves = sums[0]
    nodes = np.empty(idx.shape[0], dtype=np.int64)
    for i in range(idx.shape[0]):
        leaves[idx[i]] = vals[i]
        nodes[i] = idx[i]
    _propagate_kernel(sums, mins, k, nodes)


# --------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------
class FastSumTree(SumTree):
    """:class:`~memtutor.replay.SumTree` with compiled search and update (CPU only).

    Same constructor, attributes and methods as :class:`~memtutor.replay.SumTree` (the public
    methods check their input and take and return tensors); :meth:`sample_np` and
    :meth:`update_np` take checked NumPy arrays and are the buffer's hot path.

    Args:
        capacity: number of leaves ``C``.
        branching: children per internal node ``k`` (default 32).
        root_fanout: largest top level (default 2048).
        device: must be the CPU (or None).
    """

    def __init__(
        self,
        capacity: int,
        *,
        branching: int = FAST_BRANCHING,
        root_fanout: int = FAST_ROOT_FANOUT,
        device: torch.device | str | None = None,
    ) -> None:
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"FastSumTree lives on the CPU; use SumTree on {device}")
        super().__init__(capacity, branching=branching, root_fanout=root_fanout, device="cpu")
        self._np_sums = tuple(t.numpy() for t in self._sums)  # shared memory: writes show in both
        self._np_mins = tuple(t.numpy() for t in self._mins)
        self._np_csum = self._top_csum.numpy()  # (T + 1,) [0, s0, s0 + s1, ...]

    # ---- overrides of the vectorised tree's inner steps (the checked public API is inherited) ----
    def _update(self, idx: torch.Tensor, vals: torch.Tensor) -> None:
        self.update_np(idx.numpy(), vals.numpy())

    def _propagate(self, idx: torch.Tensor) -> None:
        _propagate_kernel(self._np_sums, self._np_mins, self.branching, idx.numpy().copy())

    def _descend(self, v: torch.Tensor, top_csum: torch.Tensor, total: float) -> torch.Tensor:
        # v: checked float64 CPU prefixes in [0, total]; top_csum: this tree's own prefix buffer.
        out = np.empty(v.shape[0], dtype=np.int64)
        _find_kernel(self._np_sums, self._np_csum, v.numpy(), self.branching, out)
        return torch.from_numpy(out)

    # ---- hot path --------------------------------------------------------------------------------
    def min_positive_np(self) -> float:
        """:attr:`min_positive` as a float (``inf`` when every leaf is 0)."""
        if self.num_levels == 1:
            leaves = self._np_sums[0]
            pos = leaves[leaves > 0]
            return float(pos.min()) if pos.size else math.inf
        return float(self._np_mins[-1].min())

    def sample_np(self, batch_size: int, generator: torch.Generator | None = None) -> np.ndarray:
        """``(B,)`` int64 stratified leaf indices (checked arguments; ValueError when the total is 0).

        The uniform draws come from ``torch.rand`` with ``generator`` and are combined exactly as
        :func:`memtutor.replay.stratified_prefixes` does (``(u_i + i) * total / B``), so the
        vectorised tree sampled from the same generator state descends from the same prefixes."""
        device = None if generator is None else generator.device
        u = torch.rand(batch_size, dtype=TREE_DTYPE, generator=generator, device=device).cpu().numpy()
        out = np.empty(batch_size, dtype=np.int64)
        if not _sample_kernel(self._np_sums, self._np_csum, u, self.branching, out) > 0:
            raise ValueError("cannot sample from a sum tree whose total is 0 (every leaf is 0)")
        return out

    def sample_weights_np(self, u: np.ndarray, beta: float, out: np.ndarray, weights: np.ndarray) -> None:
        """Stratified draws from uniforms ``u`` into ``out`` and their IS weights
        ``(p_i / p_min) ** -beta`` into ``weights`` (``(B,)`` float32 or float64), in one call."""
        args = (self._np_sums, self._np_mins, self._np_csum, u, self.branching, beta, out, weights)
        if not _replay_sample_kernel(*args) > 0:
            raise ValueError("cannot sample from a sum tree whose total is 0 (every leaf is 0)")

    def update_errors_np(
        self, idx: np.ndarray, errors: np.ndarray, eps: float, alpha: float, size: int, log_limit: float, stats
    ) -> int:
        """The buffer's checked priority update in one call; see :func:`_replay_update_kernel`."""
        args = (self._np_sums, self._np_mins, self.branching, idx, errors, eps, alpha, size, log_limit, stats)
        return _replay_update_kernel(*args)

    def update_np(self, idx: np.ndarray, vals: np.ndarray) -> None:
        """``leaves[idx] = vals`` (``(B,)`` int64 in range, float64 >= 0; the last of duplicates wins)."""
        _update_kernel(self._np_sums, self._np_mins, self.branching, idx, vals)
