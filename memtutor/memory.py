"""The external memory of the Differentiable Neural Computer, batched.

Graves et al., "Hybrid computing using a neural network with dynamic external memory",
Nature 538:471-476 (2016), Methods section "Memory addressing". Taught in notebook 01
(``notebooks/01_memory_bank.ipynb``); the controller of notebook 02 drives it.

Shape legend: ``B`` batch, ``N`` memory slots, ``W`` word size, ``R`` read heads, ``H`` any
number of heads addressed at once. There is one write head, as in the paper.

Every equation is a small pure function (``content_weights``, ``update_usage``,
``allocation_weights``, ``write_weights``, ``erase_and_add``, ``update_precedence``,
``update_link``, ``directional_weights``, ``read_weights``, ``read_memory``); ``memory_step``
chains them in the order of the reference code and :class:`MemoryBank` wraps that in an
``nn.Module``. State is a :class:`MemoryState` passed in and returned, never a buffer mutated in
place, so one bank serves a whole batch of independent sequences.

Where this package differs from ``deepmind/dnc``, and why:

* strengths are squashed with the paper's ``oneplus`` (1 + softplus, so beta >= 1); the reference
  code uses plain ``softplus`` by default (beta > 0);
* usage stays differentiable with respect to the previous write weights (the paper is silent);
  the reference code puts a ``stop_gradient`` there. Pass ``prev_write_weights.detach()`` to
  :func:`update_usage` if you want its behaviour;
* the read modes are ordered (backward, content, forward) as the paper's pi^1..pi^3, not
  (backward, forward, content) (see :data:`READ_MODES`);
* :func:`memory_step` has two ablation switches the reference code lacks, ``allocation=False``
  (write by content only) and ``links=False`` (read by content only), for notebook 02's exercises;
* ``fused``: an optional, faster implementation of two parts of the step. Composed from the small
  functions above, content addressing takes about a dozen autograd nodes and the link update with
  its two directional reads about twenty passes over the (B, N, N) link matrix per step. Two
  hand-written autograd nodes (``_ContentWeights``, ``_LinkStep``) compute the same values and
  gradients in one node each (the tests compare them with the composed functions, values and
  gradients, and gradcheck them twice differentiated). ``fused=False``, the default, runs exactly
  the functions notebook 01 builds; ``fused=True`` (or a subset of :data:`FUSED_NODES`, e.g.
  ``("link",)``) trades that readability for speed, and its results agree up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memtutor.utils import check_device, check_positive_int, check_tensor

__all__ = [
    "fused_content_weights",
    "fused_link_and_directions",
    "NORM_EPS",
    "SIMILARITY_EPS",
    "USAGE_EPS",
    "RANGE_SLACK_EPS",
    "READ_MODES",
    "FUSED_NODES",
    "MemoryConfig",
    "MemoryState",
    "Interface",
    "MemoryBank",
    "oneplus",
    "interface_size",
    "split_interface",
    "initial_state",
    "cosine_similarity",
    "content_weights",
    "retention",
    "update_usage",
    "allocation_weights",
    "write_weights",
    "erase_and_add",
    "update_precedence",
    "update_link",
    "directional_weights",
    "read_weights",
    "read_memory",
    "memory_step",
    "fused_nodes",
]

#: Added under the square root of every vector norm, so a zero row of memory (the initial
#: state) has a finite norm and a finite gradient (deepmind/dnc's ``_EPSILON``).
NORM_EPS = 1e-6
#: Added to the denominator of the cosine similarity, so a zero key or row gives similarity 0.
SIMILARITY_EPS = 1e-6
#: Usage is squashed to ``USAGE_EPS + (1 - USAGE_EPS) * u`` before the allocation's cumulative
#: product, so that no product reaches exactly 0 (which would zero the gradient of the others).
USAGE_EPS = 1e-6

#: Slack of the range checks (gates in [0, 1], usage <= 1, ...), in units of the dtype's machine
#: epsilon: a value computed in float32 may overshoot 1 by a rounding error, which is no mistake.
RANGE_SLACK_EPS = 16

#: Order of the read modes ``pi`` in :attr:`Interface.read_modes`: backward, content, forward
#: (the paper's pi^1, pi^2, pi^3; deepmind/dnc orders them backward, forward, content).
READ_MODES = ("backward", "content", "forward")

#: The parts of :func:`memory_step` that have a fused implementation (a hand-written autograd node),
#: selected with its ``fused`` argument: ``"content"`` (content addressing, both lookups of a step)
#: and ``"link"`` (the link update and both directional weightings).
FUSED_NODES = ("content", "link")


@dataclass(frozen=True)
class MemoryConfig:
    """Sizes of the memory. Defaults follow deepmind/dnc's repeat-copy run (16 x 16, 4 reads)."""

    num_slots: int = 16
    """N: number of memory rows (locations)."""
    word_size: int = 16
    """W: width of a memory row."""
    num_reads: int = 4
    """R: number of read heads."""

    def __post_init__(self) -> None:
        check_positive_int(self.num_slots, "num_slots")
        check_positive_int(self.word_size, "word_size")
        check_positive_int(self.num_reads, "num_reads")

    @property
    def interface_size(self) -> int:
        """Length of the controller's interface vector: W*R + 3W + 5R + 3."""
        return interface_size(self.word_size, self.num_reads)


class MemoryState(NamedTuple):
    """Everything the memory carries from step t-1 to step t."""

    memory: Tensor  # M_t        (B, N, W)
    usage: Tensor  # u_t         (B, N)
    link: Tensor  # L_t          (B, N, N)
    precedence: Tensor  # p_t    (B, N)
    read_weights: Tensor  # w^r_t (B, R, N)
    write_weights: Tensor  # w^w_t (B, N)


class Interface(NamedTuple):
    """The controller's interface vector, split and squashed (see :func:`split_interface`)."""

    read_keys: Tensor  # k^{r,i}_t - read keys                        (B, R, W)
    read_strengths: Tensor  # beta^{r,i}_t - oneplus, >= 1            (B, R)
    write_key: Tensor  # k^w_t - write key                            (B, W)
    write_strength: Tensor  # beta^w_t - oneplus, >= 1                (B,)
    erase_vector: Tensor  # e_t - sigmoid, in [0, 1]                  (B, W)
    write_vector: Tensor  # v_t - linear                              (B, W)
    free_gates: Tensor  # f^i_t - sigmoid, one per read head          (B, R)
    allocation_gate: Tensor  # g^a_t - sigmoid                        (B,)
    write_gate: Tensor  # g^w_t - sigmoid                             (B,)
    read_modes: Tensor  # pi^i_t - softmax over (backward, content, forward) (B, R, 3)


# --------------------------------------------------------------------------- input checks


def _check_sizes(memory: Tensor, *, finite: bool = True) -> tuple[int, int, int]:
    """Validate a memory tensor (B, N, W) and return (B, N, W)."""
    check_tensor(memory, "memory", ndim=3, finite=finite)
    b, n, w = memory.shape
    if n == 0:
        raise ValueError(f"memory must have at least one slot (N >= 1), got shape {tuple(memory.shape)}")
    if w == 0:
        raise ValueError(f"memory must have a word size of at least 1 (W >= 1), got shape {tuple(memory.shape)}")
    if b == 0:
        raise ValueError(f"memory must have a batch size of at least 1, got shape {tuple(memory.shape)}")
    return b, n, w


def _check(x, name: str, shape: tuple) -> Tensor:
    """Shape and finiteness check; ``shape`` may hold None for a free dimension."""
    return check_tensor(x, name, shape=shape, finite=True)


def _check_heads(x: Tensor, name: str, expected: int | None) -> None:
    if expected is not None and x.shape[1] != expected:
        raise ValueError(f"{name} has {x.shape[1]} heads, expected {expected} (the number of read heads)")


def _check_args(named: dict[str, Tensor], ranges: dict[str, tuple[float, float]] | None = None) -> None:
    """What shapes do not say: one floating dtype and one device (those of the first tensor), no
    empty dimension (B, N, W, R >= 1), and the documented value ranges (``name: (low, high)``)."""
    (first, ref), *_ = named.items()
    for name, x in named.items():
        if not x.is_floating_point():
            raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
        if x.dtype != ref.dtype:
            raise ValueError(f"{name} has dtype {x.dtype} but {first} has {ref.dtype}: pass them in one dtype")
        if x.device != ref.device:
            raise ValueError(f"{name} is on {x.device} but {first} is on {ref.device}: pass them on one device")
        if 0 in x.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}: batch, slots, word size and heads must be >= 1")
    for name, (low, high) in (ranges or {}).items():
        if not bool(_within(named[name], low, high)):
            _raise_range(named[name], name, low, high)


def _within(x: Tensor, low: float, high: float) -> Tensor:
    """0-d bool: every entry of ``x`` in ``[low, high]`` up to :data:`RANGE_SLACK_EPS` (no sync)."""
    slack = RANGE_SLACK_EPS * torch.finfo(x.dtype).eps
    lo, hi = torch.aminmax(x.detach())
    return (lo >= low - slack) & (hi <= high + slack)


def _raise_range(x: Tensor, name: str, low: float, high: float) -> None:
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    want = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
    raise ValueError(f"{name} must be {want}, got values in [{lo:.4g}, {hi:.4g}]")


def _check_values(named: dict[str, Tensor], ranges: dict[str, tuple[float, float]]) -> None:
    """Finiteness of many tensors and the ranges of some, with one host sync; names the culprit.

    A NaN or inf anywhere makes a tensor's sum non-finite, so finite sums prove all is well
    (cheaply: no copy of the state). A non-finite sum may also be an overflow of huge finite
    values, so only the exact per-tensor test below decides to raise.
    """
    sums = torch.stack([t.detach().sum().to(torch.float64) for t in named.values()])
    in_range = [_within(named[name], low, high) for name, (low, high) in ranges.items()]
    if bool(torch.isfinite(sums).all() & torch.stack(in_range).all()):
        return
    for name, t in named.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
    for name, (low, high) in ranges.items():
        if not bool(_within(named[name], low, high)):
            _raise_range(named[name], name, low, high)


#: Documented ranges of the interface fields and the state that :func:`memory_step` checks.
_UNIT = (0.0, 1.0)
_STEP_RANGES = {
    "read_strengths": (0.0, math.inf), "write_strength": (0.0, math.inf), "erase_vector": _UNIT,
    "free_gates": _UNIT, "allocation_gate": _UNIT, "write_gate": _UNIT, "read_modes": _UNIT,
    "prev_state.usage": _UNIT,
}  # fmt: skip


# --------------------------------------------------------------------------- interface


def oneplus(x: Tensor) -> Tensor:
    """The paper's strength squashing, ``1 + softplus(x) = 1 + log(1 + e^x)``; any shape, >= 1."""
    check_tensor(x, "x", finite=False)
    if not x.is_floating_point():
        raise ValueError(f"x must have a floating dtype, got {x.dtype}")
    return _oneplus(x)


def _oneplus(x: Tensor) -> Tensor:
    return 1 + F.softplus(x)


def interface_size(word_size: int, num_reads: int) -> int:
    """Length of the interface vector for one write head: ``W*R + 3W + 5R + 3`` (paper)."""
    w = check_positive_int(word_size, "word_size")
    r = check_positive_int(num_reads, "num_reads")
    return w * r + 3 * w + 5 * r + 3


def split_interface(raw: Tensor, word_size: int, num_reads: int, *, check: bool = True) -> Interface:
    """Split a raw interface vector and squash each field as the paper does.

    Args:
        raw: (B, W*R + 3W + 5R + 3), in the paper's order: read keys (R*W), read strengths (R),
            write key (W), write strength (1), erase vector (W), write vector (W), free gates (R),
            allocation gate (1), write gate (1), read modes (3R, grouped per head).
        check: validate ``raw``'s shape and finiteness (``False`` in loops that checked it once).
    Returns:
        :class:`Interface` with keys and write vector as is, strengths through :func:`oneplus`,
        erase vector and gates through ``sigmoid``, read modes through a softmax over 3 modes.
    """
    if check:
        check_tensor(raw, "raw interface", shape=(None, interface_size(word_size, num_reads)))
        _check_args({"raw interface": raw})
    w, r = word_size, num_reads
    sizes = [r * w, r, w, 1, w, w, r, 1, 1, 3 * r]
    rk, rs, wk, ws, e, v, fg, ga, gw, modes = torch.split(raw, sizes, dim=-1)
    b = raw.shape[0]
    return Interface(
        read_keys=rk.reshape(b, r, w),  # (B, R, W)
        read_strengths=_oneplus(rs),  # (B, R)
        write_key=wk,  # (B, W)
        write_strength=_oneplus(ws).squeeze(-1),  # (B,)
        erase_vector=torch.sigmoid(e),  # (B, W)
        write_vector=v,  # (B, W)
        free_gates=torch.sigmoid(fg),  # (B, R)
        allocation_gate=torch.sigmoid(ga).squeeze(-1),  # (B,)
        write_gate=torch.sigmoid(gw).squeeze(-1),  # (B,)
        read_modes=torch.softmax(modes.reshape(b, r, 3), dim=-1),  # (B, R, 3)
    )


def initial_state(
    batch_size: int,
    num_slots: int,
    word_size: int,
    num_reads: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> MemoryState:
    """All-zero state (empty memory, nothing used, no links, no previous reads or writes)."""
    b = check_positive_int(batch_size, "batch_size")
    n = check_positive_int(num_slots, "num_slots")
    w = check_positive_int(word_size, "word_size")
    r = check_positive_int(num_reads, "num_reads")
    dt = dtype if dtype is not None else torch.get_default_dtype()
    if not (isinstance(dt, torch.dtype) and dt.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    device = check_device(device)
    return MemoryState(
        memory=torch.zeros(b, n, w, device=device, dtype=dt),
        usage=torch.zeros(b, n, device=device, dtype=dt),
        link=torch.zeros(b, n, n, device=device, dtype=dt),
        precedence=torch.zeros(b, n, device=device, dtype=dt),
        read_weights=torch.zeros(b, r, n, device=device, dtype=dt),
        write_weights=torch.zeros(b, n, device=device, dtype=dt),
    )


# --------------------------------------------------------------------------- content addressing


def _cosine_similarity(memory: Tensor, keys: Tensor) -> Tensor:
    dot = torch.einsum("bhw,bnw->bhn", keys, memory)  # (B, H, N)
    key_norm = torch.sqrt((keys * keys).sum(-1) + NORM_EPS)  # (B, H)
    mem_norm = torch.sqrt((memory * memory).sum(-1) + NORM_EPS)  # (B, N)
    return dot / (key_norm.unsqueeze(-1) * mem_norm.unsqueeze(1) + SIMILARITY_EPS)  # (B, H, N)


def cosine_similarity(memory: Tensor, keys: Tensor) -> Tensor:
    """D(k, M[i]) = k . M[i] / (|k| |M[i]| + eps) for every key and row.

    Args:
        memory: (B, N, W).  keys: (B, H, W).
    Returns:
        (B, H, N) similarities in [-1, 1].
    """
    b, _, w = _check_sizes(memory)
    _check(keys, "keys", (b, None, w))
    _check_args({"memory": memory, "keys": keys})
    return _cosine_similarity(memory, keys)


def _content_weights(memory: Tensor, keys: Tensor, strengths: Tensor) -> Tensor:
    scores = _cosine_similarity(memory, keys) * strengths.unsqueeze(-1)  # (B, H, N)
    return torch.softmax(scores, dim=-1)


class _ContentWeights(torch.autograd.Function):
    """:func:`content_weights` in one node with a hand-written backward (same values and gradients,
    checked in the tests; twice differentiable). Used by :func:`memory_step` with ``fused`` including
    ``"content"``: a step addresses by content twice, and written with autograd the cosine and
    softmax make about a dozen nodes."""

    generate_vmap_rule = True

    @staticmethod
    def forward(memory, keys, strengths):
        dot = torch.matmul(keys, memory.transpose(-1, -2))  # (B, H, N)
        key_norm = torch.sqrt((keys * keys).sum(-1) + NORM_EPS)  # (B, H)
        mem_norm = torch.sqrt((memory * memory).sum(-1) + NORM_EPS)  # (B, N)
        denom = key_norm.unsqueeze(-1) * mem_norm.unsqueeze(-2) + SIMILARITY_EPS  # (B, H, N)
        cosine = dot / denom
        weights = torch.softmax(cosine * strengths.unsqueeze(-1), dim=-1)  # (B, H, N)
        return weights, key_norm, mem_norm, denom, cosine

    @staticmethod
    def setup_context(ctx, inputs, output):
        weights, key_norm, mem_norm, denom, cosine = output
        ctx.save_for_backward(*inputs, weights, key_norm, mem_norm, denom, cosine)
        ctx.mark_non_differentiable(key_norm, mem_norm, denom, cosine)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, g_weights, *_unused):
        memory, keys, strengths, weights, key_norm, mem_norm, denom, cosine = ctx.saved_tensors
        if g_weights is None:
            return None, None, None
        if torch.is_grad_enabled():  # create_graph: rebuild the saved constants as functions of the inputs
            weights, key_norm, mem_norm, denom, cosine = _ContentWeights.forward(memory, keys, strengths)
        beta = strengths.unsqueeze(-1)  # (B, H, 1)
        # softmax: g_s = w o (g_w - <g_w, w>)
        g_scores = weights * (g_weights - (g_weights * weights).sum(-1, keepdim=True))  # (B, H, N)
        g_strengths = (g_scores * cosine).sum(-1) if ctx.needs_input_grad[2] else None  # (B, H)
        g_dot = g_scores * beta / denom  # d cos / d dot = 1 / denom
        g_denom = -g_dot * cosine  # d cos / d denom = -cos / denom
        g_memory = g_keys = None
        if ctx.needs_input_grad[0]:
            g_mem_norm = (g_denom * key_norm.unsqueeze(-1)).sum(-2)  # (B, N)
            g_memory = torch.matmul(g_dot.transpose(-1, -2), keys) + (g_mem_norm / mem_norm).unsqueeze(-1) * memory
        if ctx.needs_input_grad[1]:
            g_key_norm = (g_denom * mem_norm.unsqueeze(-2)).sum(-1)  # (B, H)
            g_keys = torch.matmul(g_dot, memory) + (g_key_norm / key_norm).unsqueeze(-1) * keys
        return g_memory, g_keys, g_strengths


def fused_content_weights(memory: Tensor, keys: Tensor, strengths: Tensor) -> Tensor:
    """:func:`content_weights` as one autograd node with a hand-written backward (no input checks).

    Same values and gradients as the readable composition (tested, twice differentiable,
    vmap-compatible); :func:`memory_step` uses it when ``fused`` names ``"content"``.
    Shapes: memory (B, N, W), keys (B, H, W), strengths (B, H) -> (B, H, N).
    """
    return _ContentWeights.apply(memory, keys, strengths)[0]


def content_weights(memory: Tensor, keys: Tensor, strengths: Tensor) -> Tensor:
    """C(M, k, beta)[i] = softmax_i(beta * D(k, M[i])): content-based addressing.

    Args:
        memory: (B, N, W).  keys: (B, H, W).  strengths: (B, H), beta >= 0 (>= 1 after oneplus).
    Returns:
        (B, H, N) weightings; each row sums to 1.
    """
    b, _, w = _check_sizes(memory)
    _check(keys, "keys", (b, None, w))
    _check(strengths, "strengths", (b, keys.shape[1]))
    _check_args({"memory": memory, "keys": keys, "strengths": strengths}, {"strengths": (0.0, math.inf)})
    return _content_weights(memory, keys, strengths)


# --------------------------------------------------------------------------- allocation


def _retention(free_gates: Tensor, prev_read_weights: Tensor) -> Tensor:
    return torch.prod(1 - free_gates.unsqueeze(-1) * prev_read_weights, dim=1)  # (B, N)


def retention(free_gates: Tensor, prev_read_weights: Tensor) -> Tensor:
    """psi_t = prod_i (1 - f^i_t w^{r,i}_{t-1}): how much of each slot the reads leave in use.

    Args:
        free_gates: (B, R) in [0, 1].  prev_read_weights: (B, R, N).
    Returns:
        (B, N).
    """
    _check(prev_read_weights, "prev_read_weights", (None, None, None))
    b, r, _ = prev_read_weights.shape
    _check(free_gates, "free_gates", (b, None))
    _check_heads(free_gates, "free_gates", r)
    _check_args({"free_gates": free_gates, "prev_read_weights": prev_read_weights}, {"free_gates": _UNIT})
    return _retention(free_gates, prev_read_weights)


def _update_usage(prev_usage, prev_write_weights, free_gates, prev_read_weights) -> Tensor:
    after_write = prev_usage + prev_write_weights - prev_usage * prev_write_weights  # (B, N)
    return after_write * _retention(free_gates, prev_read_weights)  # (B, N)


def update_usage(
    prev_usage: Tensor, prev_write_weights: Tensor, free_gates: Tensor, prev_read_weights: Tensor
) -> Tensor:
    """u_t = (u_{t-1} + w^w_{t-1} - u_{t-1} o w^w_{t-1}) o psi_t.

    Args:
        prev_usage: (B, N) in [0, 1].  prev_write_weights: (B, N).  free_gates: (B, R) in [0, 1].
        prev_read_weights: (B, R, N).
    Returns:
        (B, N) usage, in [0, 1] when the inputs are in range.
    """
    _check(prev_usage, "prev_usage", (None, None))
    b, n = prev_usage.shape
    _check(prev_write_weights, "prev_write_weights", (b, n))
    _check(prev_read_weights, "prev_read_weights", (b, None, n))
    _check(free_gates, "free_gates", (b, None))
    _check_heads(free_gates, "free_gates", prev_read_weights.shape[1])
    named = {"prev_usage": prev_usage, "prev_write_weights": prev_write_weights, "free_gates": free_gates,
             "prev_read_weights": prev_read_weights}  # fmt: skip
    _check_args(named, {"prev_usage": _UNIT, "free_gates": _UNIT})
    return _update_usage(prev_usage, prev_write_weights, free_gates, prev_read_weights)


def _allocation_weights(usage: Tensor) -> Tensor:
    # Squash so that no factor of the cumulative product is exactly 0 (see USAGE_EPS).
    usage = USAGE_EPS + (1 - USAGE_EPS) * usage  # (B, N)
    sorted_usage, order = torch.sort(usage, dim=-1, stable=True)  # phi_t: ascending usage
    # Exclusive cumulative product: prod_{i<j} u[phi[i]], with an empty product of 1 for j = 0.
    ones = torch.ones_like(sorted_usage[..., :1])
    prod_before = torch.cumprod(torch.cat([ones, sorted_usage[..., :-1]], dim=-1), dim=-1)
    sorted_alloc = (1 - sorted_usage) * prod_before  # (B, N), in sorted order
    return torch.zeros_like(usage).scatter(-1, order, sorted_alloc)  # back to slot order


def allocation_weights(usage: Tensor) -> Tensor:
    """a_t[phi[j]] = (1 - u[phi[j]]) prod_{i<j} u[phi[i]], phi = slots sorted by ascending usage.

    Args:
        usage: (B, N) in [0, 1].
    Returns:
        (B, N) allocation weighting: non-negative, sums to at most 1, concentrated on the least
        used slot.
    """
    _check(usage, "usage", (None, None))
    if usage.shape[-1] == 0:
        raise ValueError("usage must have at least one slot (N >= 1)")
    _check_args({"usage": usage}, {"usage": _UNIT})
    return _allocation_weights(usage)


def _write_weights(allocation, write_content, allocation_gate, write_gate) -> Tensor:
    ga = allocation_gate.unsqueeze(-1)  # (B, 1)
    return write_gate.unsqueeze(-1) * (ga * allocation + (1 - ga) * write_content)  # (B, N)


def write_weights(allocation: Tensor, write_content: Tensor, allocation_gate: Tensor, write_gate: Tensor) -> Tensor:
    """w^w_t = g^w_t [g^a_t a_t + (1 - g^a_t) c^w_t].

    Args:
        allocation: (B, N) a_t.  write_content: (B, N) c^w_t.  allocation_gate: (B,) g^a_t in [0, 1].
        write_gate: (B,) g^w_t in [0, 1].
    Returns:
        (B, N) write weighting.
    """
    _check(allocation, "allocation", (None, None))
    b, n = allocation.shape
    _check(write_content, "write_content", (b, n))
    _check(allocation_gate, "allocation_gate", (b,))
    _check(write_gate, "write_gate", (b,))
    named = {"allocation": allocation, "write_content": write_content, "allocation_gate": allocation_gate,
             "write_gate": write_gate}  # fmt: skip
    _check_args(named, {"allocation_gate": _UNIT, "write_gate": _UNIT})
    return _write_weights(allocation, write_content, allocation_gate, write_gate)


# --------------------------------------------------------------------------- writing


def _erase_and_add(memory, write_weights, erase_vector, write_vector) -> Tensor:
    w = write_weights.unsqueeze(-1)  # (B, N, 1)
    erased = memory * (1 - w * erase_vector.unsqueeze(1))  # (B, N, W)
    return erased + w * write_vector.unsqueeze(1)  # (B, N, W)


def erase_and_add(memory: Tensor, write_weights: Tensor, erase_vector: Tensor, write_vector: Tensor) -> Tensor:
    """M_t = M_{t-1} o (1 - w^w e^T) + w^w v^T. Differentiable in every argument (no detach).

    Args:
        memory: (B, N, W).  write_weights: (B, N).  erase_vector: (B, W) in [0, 1].
        write_vector: (B, W).
    Returns:
        (B, N, W) the new memory.
    """
    b, n, w = _check_sizes(memory)
    _check(write_weights, "write_weights", (b, n))
    _check(erase_vector, "erase_vector", (b, w))
    _check(write_vector, "write_vector", (b, w))
    named = {"memory": memory, "write_weights": write_weights, "erase_vector": erase_vector,
             "write_vector": write_vector}  # fmt: skip
    _check_args(named, {"erase_vector": _UNIT})
    return _erase_and_add(memory, write_weights, erase_vector, write_vector)


# --------------------------------------------------------------------------- temporal links


def _update_precedence(prev_precedence: Tensor, write_weights: Tensor) -> Tensor:
    return (1 - write_weights.sum(-1, keepdim=True)) * prev_precedence + write_weights  # (B, N)


def update_precedence(prev_precedence: Tensor, write_weights: Tensor) -> Tensor:
    """p_t = (1 - sum_i w^w_t[i]) p_{t-1} + w^w_t: where the latest write went.

    Args:
        prev_precedence: (B, N).  write_weights: (B, N).
    Returns:
        (B, N).
    """
    _check(prev_precedence, "prev_precedence", (None, None))
    _check(write_weights, "write_weights", tuple(prev_precedence.shape))
    _check_args({"prev_precedence": prev_precedence, "write_weights": write_weights})
    return _update_precedence(prev_precedence, write_weights)


def _update_link(prev_link: Tensor, prev_precedence: Tensor, write_weights: Tensor) -> Tensor:
    w_i = write_weights.unsqueeze(-1)  # (B, N, 1)
    w_j = write_weights.unsqueeze(-2)  # (B, 1, N)
    link = (1 - w_i - w_j) * prev_link + w_i * prev_precedence.unsqueeze(-2)  # (B, N, N)
    eye = torch.eye(link.shape[-1], dtype=torch.bool, device=link.device)
    return link.masked_fill(eye, 0.0)  # L_t[i, i] = 0: a slot does not follow itself


def update_link(prev_link: Tensor, prev_precedence: Tensor, write_weights: Tensor) -> Tensor:
    """L_t[i, j] = (1 - w[i] - w[j]) L_{t-1}[i, j] + w[i] p_{t-1}[j], with L_t[i, i] = 0.

    L_t[i, j] says how much slot i was written right after slot j.

    Args:
        prev_link: (B, N, N).  prev_precedence: (B, N) p_{t-1}.  write_weights: (B, N) w^w_t.
    Returns:
        (B, N, N).
    """
    _check(prev_link, "prev_link", (None, None, None))
    b, n, n2 = prev_link.shape
    if n != n2:
        raise ValueError(f"prev_link must be square in its last two dimensions, got {tuple(prev_link.shape)}")
    _check(prev_precedence, "prev_precedence", (b, n))
    _check(write_weights, "write_weights", (b, n))
    _check_args({"prev_link": prev_link, "prev_precedence": prev_precedence, "write_weights": write_weights})
    return _update_link(prev_link, prev_precedence, write_weights)


def _directional_weights(link: Tensor, prev_read_weights: Tensor) -> tuple[Tensor, Tensor]:
    forward = torch.matmul(prev_read_weights, link.transpose(-1, -2))  # f = L w: (B, R, N)
    backward = torch.matmul(prev_read_weights, link)  # b = L^T w: (B, R, N)
    return forward, backward


def directional_weights(link: Tensor, prev_read_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Forward f^i_t = L_t w^{r,i}_{t-1} and backward b^i_t = L_t^T w^{r,i}_{t-1}.

    Args:
        link: (B, N, N).  prev_read_weights: (B, R, N).
    Returns:
        ``(forward, backward)``, each (B, R, N).
    """
    _check(link, "link", (None, None, None))
    b, n, n2 = link.shape
    if n != n2:
        raise ValueError(f"link must be square in its last two dimensions, got {tuple(link.shape)}")
    _check(prev_read_weights, "prev_read_weights", (b, None, n))
    _check_args({"link": link, "prev_read_weights": prev_read_weights})
    return _directional_weights(link, prev_read_weights)


class _LinkStep(torch.autograd.Function):
    """L_t and both directional weightings in one node with a hand-written backward.

    Same values and gradients as ``_update_link`` followed by ``_directional_weights`` (the tests
    compare them and gradcheck this in float64, twice differentiated too). Used by :func:`memory_step`
    with ``fused`` including ``"link"``. It exists for speed:
    the link matrix is the only (B, N, N) tensor of a step and, written with autograd, its
    update and the two reads take about twenty passes over it per step, forward and backward;
    this takes about twelve. Outputs ``(link, forward, backward, scale)``; ``scale`` =
    1 - w[i] - w[j] is returned only to be saved for the backward pass (no gradient).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(prev_link, prev_precedence, write_weights, prev_read_weights):
        w_i = write_weights.unsqueeze(-1)  # (B, N, 1)
        scale = (1 - w_i) - write_weights.unsqueeze(-2)  # (B, N, N): 1 - w[i] - w[j]
        link = torch.addcmul(scale * prev_link, w_i, prev_precedence.unsqueeze(-2))  # (B, N, N)
        link.diagonal(dim1=-2, dim2=-1).zero_()  # L_t[i, i] = 0
        forward = torch.matmul(prev_read_weights, link.transpose(-1, -2))  # (B, R, N)
        backward = torch.matmul(prev_read_weights, link)  # (B, R, N)
        return link, forward, backward, scale

    @staticmethod
    def setup_context(ctx, inputs, output):
        link, _, _, scale = output
        ctx.save_for_backward(*inputs, link, scale)
        ctx.mark_non_differentiable(scale)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, g_link, g_forward, g_backward, _g_scale):
        prev_link, p, w, r, link, scale = ctx.saved_tensors
        # G = dLoss/dL_t before the diagonal mask: the link's own gradient plus the two reads'
        # (f = r L^T gives g_f^T r, b = r L gives r^T g_b); the masked diagonal gets none.
        grad = torch.zeros_like(link) if g_link is None else g_link
        if g_forward is not None:
            grad = torch.baddbmm(grad, g_forward.transpose(-1, -2), r)
        if g_backward is not None:
            grad = torch.baddbmm(grad, r.transpose(-1, -2), g_backward)
        if grad is g_link:
            grad = grad.clone()  # never write into a gradient autograd handed us
        grad.diagonal(dim1=-2, dim2=-1).zero_()
        g_prev_link = g_p = g_w = g_r = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # create_graph: the saved scale is a constant, rebuild it from w
                scale = (1 - w.unsqueeze(-1)) - w.unsqueeze(-2)
            g_prev_link = grad * scale
        if ctx.needs_input_grad[1]:
            g_p = torch.matmul(w.unsqueeze(-2), grad).squeeze(-2)  # sum_i G[i, j] w[i]
        if ctx.needs_input_grad[2]:
            h = grad * prev_link  # w[k] scales row k and column k of L_{t-1} by -1
            g_w = torch.matmul(grad, p.unsqueeze(-1)).squeeze(-1) - h.sum(-1) - h.sum(-2)
        if ctx.needs_input_grad[3]:  # f = r L^T gives g_f L; b = r L gives g_b L^T
            if g_forward is not None:
                g_r = torch.matmul(g_forward, link)
            if g_backward is not None:
                from_backward = torch.matmul(g_backward, link.transpose(-1, -2))
                g_r = from_backward if g_r is None else g_r + from_backward
        return g_prev_link, g_p, g_w, g_r


def fused_link_and_directions(
    prev_link: Tensor, prev_precedence: Tensor, write_weights: Tensor, prev_read_weights: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(L_t, f, b)``: :func:`update_link` then :func:`directional_weights` as one autograd node.

    Same values and gradients as the two readable functions (tested, twice differentiable);
    :func:`memory_step` uses it when ``fused`` names ``"link"``. Shapes: prev_link (B, N, N),
    prev_precedence (B, N), write_weights (B, N), prev_read_weights (B, R, N) ->
    L_t (B, N, N), f (B, R, N), b (B, R, N). No input checks.
    """
    link, forward, backward, _ = _LinkStep.apply(prev_link, prev_precedence, write_weights, prev_read_weights)
    return link, forward, backward


# --------------------------------------------------------------------------- reading


def _read_weights(content, forward, backward, read_modes) -> Tensor:
    pi_b, pi_c, pi_f = read_modes.unbind(-1)  # each (B, R); order of READ_MODES
    return pi_b.unsqueeze(-1) * backward + pi_c.unsqueeze(-1) * content + pi_f.unsqueeze(-1) * forward


def read_weights(content: Tensor, forward: Tensor, backward: Tensor, read_modes: Tensor) -> Tensor:
    """w^{r,i}_t = pi^i[0] b^i_t + pi^i[1] c^{r,i}_t + pi^i[2] f^i_t (modes: backward, content, forward).

    Args:
        content: (B, R, N).  forward: (B, R, N).  backward: (B, R, N).  read_modes: (B, R, 3) in [0, 1].
    Returns:
        (B, R, N).
    """
    _check(content, "content", (None, None, None))
    b, r, n = content.shape
    _check(forward, "forward", (b, None, n))
    _check_heads(forward, "forward", r)
    _check(backward, "backward", (b, None, n))
    _check_heads(backward, "backward", r)
    _check(read_modes, "read_modes", (b, None, 3))
    _check_heads(read_modes, "read_modes", r)
    named = {"content": content, "forward": forward, "backward": backward, "read_modes": read_modes}
    _check_args(named, {"read_modes": _UNIT})
    return _read_weights(content, forward, backward, read_modes)


def read_memory(memory: Tensor, read_weights: Tensor) -> Tensor:
    """r^i_t = M_t^T w^{r,i}_t: one read vector per head.

    Args:
        memory: (B, N, W).  read_weights: (B, R, N).
    Returns:
        (B, R, W).
    """
    b, n, _ = _check_sizes(memory)
    _check(read_weights, "read_weights", (b, None, n))
    _check_args({"memory": memory, "read_weights": read_weights})
    return torch.matmul(read_weights, memory)  # (B, R, W)


# --------------------------------------------------------------------------- one step


#: Interface fields with one entry per read head (dimension 1).
_HEAD_FIELDS = frozenset({"read_keys", "read_strengths", "free_gates", "read_modes"})


def _check_step(interface: Interface, prev_state: MemoryState, num_reads: int | None) -> None:
    if not isinstance(prev_state, MemoryState):
        raise ValueError(f"prev_state must be a MemoryState, got {type(prev_state).__name__}")
    if not isinstance(interface, Interface):
        raise ValueError(f"interface must be an Interface, got {type(interface).__name__}")
    b, n, w = _check_sizes(prev_state.memory, finite=False)
    check_tensor(prev_state.read_weights, "prev_state.read_weights", finite=False)
    r = prev_state.read_weights.shape[1] if prev_state.read_weights.dim() == 3 else None
    if num_reads is not None and r != num_reads:
        raise ValueError(f"prev_state.read_weights has {r} heads, expected {num_reads} read heads")
    shapes = {
        "prev_state.usage": (b, n), "prev_state.link": (b, n, n), "prev_state.precedence": (b, n),
        "prev_state.read_weights": (b, r, n), "prev_state.write_weights": (b, n),
    }  # fmt: skip
    for name, shape in shapes.items():
        check_tensor(getattr(prev_state, name.split(".")[1]), name, shape=shape, finite=False)
    r = num_reads if num_reads is not None else r
    shapes = {
        "read_keys": (b, r, w), "read_strengths": (b, r), "write_key": (b, w), "write_strength": (b,),
        "erase_vector": (b, w), "write_vector": (b, w), "free_gates": (b, r), "allocation_gate": (b,),
        "write_gate": (b,), "read_modes": (b, r, 3),
    }  # fmt: skip
    for name, shape in shapes.items():
        x = check_tensor(getattr(interface, name), name, finite=False)
        if name in _HEAD_FIELDS and x.dim() == len(shape) and x.shape[0] == b:
            _check_heads(x, name, r)  # say "heads" rather than just "shape" when R is what is off
        check_tensor(x, name, shape=shape, finite=False)
    named = {f"prev_state.{k}": v for k, v in prev_state._asdict().items()}
    named.update({name: getattr(interface, name) for name in Interface._fields})
    _check_args(named)  # one dtype and device (prev_state.memory's), no empty dimension
    _check_values(named, _STEP_RANGES)


def fused_nodes(fused: bool | Collection[str]) -> frozenset[str]:
    """``fused`` as a set of names from :data:`FUSED_NODES` (``True``: all of them, ``False``: none)."""
    if isinstance(fused, frozenset) and fused <= frozenset(FUSED_NODES):
        return fused
    if isinstance(fused, bool):
        return frozenset(FUSED_NODES) if fused else frozenset()
    if isinstance(fused, str) or not isinstance(fused, Collection):
        raise ValueError(f"fused must be a bool or a collection of names from {FUSED_NODES}, got {fused!r}")
    unknown = sorted(set(fused) - set(FUSED_NODES))
    if unknown:
        raise ValueError(f"unknown fused node(s) {unknown}; choose from {FUSED_NODES}")
    return frozenset(fused)


def memory_step(
    interface: Interface,
    prev_state: MemoryState,
    *,
    num_reads: int | None = None,
    allocation: bool = True,
    links: bool = True,
    fused: bool | Collection[str] = False,
    check: bool = True,
) -> tuple[Tensor, MemoryState]:
    """One DNC memory step: allocate, write, link, read (deepmind/dnc's order of operations).

    1. usage u_t from w^w_{t-1}, free gates and w^r_{t-1};
    2. write weights from the allocation a_t and the write key's content weights on M_{t-1};
    3. erase and add: M_t;
    4. links L_t from w^w_t and p_{t-1}, then precedence p_t;
    5. read weights from content on M_t and from L_t following w^r_{t-1}; read vectors.

    Args:
        interface: :class:`Interface` for the batch (squashed, see :func:`split_interface`).
        prev_state: :class:`MemoryState` at t-1.
        num_reads: expected R (checked when given).
        allocation: ``False`` writes by content only, w^w = g^w c^w (the allocation gate is ignored).
        links: ``False`` reads by content only, w^r = c^r (the read modes are ignored; the links
            are still updated, so the state has the same contents).
        fused: which parts run as hand-written autograd nodes instead of the composed functions:
            ``False`` (none, the default), ``True`` (all of :data:`FUSED_NODES`) or a subset of it.
            Same values and gradients up to float rounding, faster (see the module docstring).
        check: validate the inputs: shapes, one floating dtype and device (``prev_state.memory``'s),
            finiteness, and the ranges (gates, erase vector and read modes in [0, 1], strengths
            >= 0, usage in [0, 1]), with one host sync. ``False`` skips this, for loops whose
            inputs were checked once (the controller checks the first step of a sequence: later
            steps get their state from the step before).
    Returns:
        ``(read_vectors, next_state)``: read vectors (B, R, W) and the :class:`MemoryState` at t.
    """
    if check:
        _check_step(interface, prev_state, num_reads)
    fused = fused_nodes(fused)
    s, x = prev_state, interface
    content_weights_ = fused_content_weights if "content" in fused else _content_weights
    usage = _update_usage(s.usage, s.write_weights, x.free_gates, s.read_weights)  # (B, N)
    write_key, write_strength = x.write_key.unsqueeze(1), x.write_strength.unsqueeze(1)  # (B, 1, W), (B, 1)
    write_content = content_weights_(s.memory, write_key, write_strength).squeeze(1)  # (B, N)
    if allocation:
        w_w = _write_weights(_allocation_weights(usage), write_content, x.allocation_gate, x.write_gate)
    else:  # ablation: g^a = 0, so w^w = g^w c^w
        w_w = x.write_gate.unsqueeze(-1) * write_content  # (B, N)
    memory = _erase_and_add(s.memory, w_w, x.erase_vector, x.write_vector)  # (B, N, W)
    if "link" in fused and links:
        # L_t = update_link(L_{t-1}, p_{t-1}, w^w_t); (f, b) = directional_weights(L_t, w^r_{t-1})
        link, forward, backward = fused_link_and_directions(s.link, s.precedence, w_w, s.read_weights)
    else:
        link = _update_link(s.link, s.precedence, w_w)  # (B, N, N)
        if links:
            forward, backward = _directional_weights(link, s.read_weights)  # each (B, R, N)
    precedence = _update_precedence(s.precedence, w_w)  # (B, N)
    content = content_weights_(memory, x.read_keys, x.read_strengths)  # (B, R, N)
    if links:
        w_r = _read_weights(content, forward, backward, x.read_modes)  # (B, R, N)
    else:  # ablation: read by content only
        w_r = content
    read_vectors = torch.matmul(w_r, memory)  # (B, R, W)
    return read_vectors, MemoryState(memory, usage, link, precedence, w_r, w_w)


class MemoryBank(nn.Module):
    """The DNC's memory access as a module without parameters: ``(interface, state) -> (reads, state)``.

    ``MemoryBank(MemoryConfig(...))`` or ``MemoryBank(num_slots=N, word_size=W, num_reads=R)``.
    ``forward`` accepts an :class:`Interface` or a raw interface vector (B, interface_size), which
    it splits and squashes with :func:`split_interface`. Nothing is stored between calls.
    ``fused`` is passed to :func:`memory_step` (default ``False``: the composed equation functions).
    """

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        num_slots: int | None = None,
        word_size: int | None = None,
        num_reads: int | None = None,
        fused: bool | Collection[str] = False,
    ) -> None:
        super().__init__()
        self.fused = fused_nodes(fused)
        sizes = {"num_slots": num_slots, "word_size": word_size, "num_reads": num_reads}
        given = {k: v for k, v in sizes.items() if v is not None}
        if config is None:
            config = MemoryConfig(**given)
        elif given:
            raise ValueError(f"pass either a MemoryConfig or sizes, not both (got {sorted(given)})")
        elif not isinstance(config, MemoryConfig):
            raise ValueError(f"config must be a MemoryConfig, got {type(config).__name__}")
        self.config = config
        self.num_slots, self.word_size, self.num_reads = config.num_slots, config.word_size, config.num_reads

    @property
    def interface_size(self) -> int:
        return self.config.interface_size

    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MemoryState:
        """All-zero :class:`MemoryState` for ``batch_size`` independent sequences."""
        return initial_state(batch_size, self.num_slots, self.word_size, self.num_reads, device=device, dtype=dtype)

    def forward(self, interface: Interface | Tensor, prev_state: MemoryState) -> tuple[Tensor, MemoryState]:
        """Returns read vectors (B, R, W) and the next :class:`MemoryState`."""
        if isinstance(interface, Tensor):
            interface = split_interface(interface, self.word_size, self.num_reads)
        if isinstance(prev_state, MemoryState) and isinstance(prev_state.memory, Tensor):
            mem = prev_state.memory
            if mem.dim() == 3 and (mem.shape[1], mem.shape[2]) != (self.num_slots, self.word_size):
                raise ValueError(
                    f"prev_state.memory has shape {tuple(mem.shape)}, expected (B, {self.num_slots}, {self.word_size})"
                )
        return memory_step(interface, prev_state, num_reads=self.num_reads, fused=self.fused)

    def extra_repr(self) -> str:
        fused = f", fused={tuple(n for n in FUSED_NODES if n in self.fused)}" if self.fused else ""
        return f"num_slots={self.num_slots}, word_size={self.word_size}, num_reads={self.num_reads}{fused}"
