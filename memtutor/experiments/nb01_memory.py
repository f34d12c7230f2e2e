"""Notebook 01's measurements, its diagram and its allocation explorer.

The lesson module :mod:`memtutor.memory` holds the equations and the memory step. Notebook 01
builds and checks them itself; this module holds what it only runs: the seed purposes of its data
streams (all derived from the notebook's ``SEED``), the block diagram of the DNC's memory access
(:func:`draw_dnc`), the run of hand-set memory steps behind the allocation-and-links explorer
(:func:`allocation_trace`) and the timing of one batched memory step against the same samples one
at a time (``benchmarks/memory.py`` measures it properly).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from memtutor import memory as mem
from memtutor.diagrams import arrow, box, canvas
from memtutor.utils import register_seed_offset, timer

__all__ = [
    "OPTIMISATION_DATA",
    "HELD_OUT",
    "EXPLORE_NOISE",
    "GRADIENT_CHECK",
    "EXPLORE_WORDS",
    "draw_dnc",
    "allocation_trace",
    "batched_step_times",
]

#: Seed purposes, relative to the notebook's ``SEED``: the training words of the write-then-read
#: optimisation, its held-out words, the fixed noise direction of the lookup explorer, the
#: random inputs of the gradient check of the fused nodes, and the words of the allocation explorer.
OPTIMISATION_DATA = register_seed_offset("nb01/optimisation-data", 1)
HELD_OUT = register_seed_offset("nb01/held-out", 99)
EXPLORE_NOISE = register_seed_offset("nb01/explore-noise", 7)
GRADIENT_CHECK = register_seed_offset("nb01/gradient-check", 11)
EXPLORE_WORDS = register_seed_offset("nb01/explore-words", 13)


def draw_dnc() -> Figure:
    """The DNC's memory access at one time step t, as a block diagram with the notebook's symbols.

    The controller emits the interface vector xi_t; its write head addresses by content on M_{t-1}
    and by allocation from the usage u_t; the write changes M_t, the precedence p_t and the links
    L_t; the read heads mix content, forward and backward weightings into w^r_t and return the read
    vectors r_t. Returns the figure (13 x 6.4 diagram units).
    """
    fig, ax = canvas(13.0, 6.4)
    # left: the controller between its input (with the last read vectors) and its output
    x_in = box(ax, 1.2, 5.7, r"input $x_t$, $r_{t-1}$", w=2.0, h=0.6, role="input")
    ctrl = box(ax, 1.2, 3.6, "controller\n(LSTM)", w=1.9, h=1.2, role="network", fontsize=10)
    y_out = box(ax, 1.2, 1.1, r"output $y_t$", w=1.7, h=0.6, role="output")
    arrow(ax, x_in.bottom, ctrl.top)
    arrow(ax, ctrl.bottom, y_out.top)
    xi = box(ax, 3.55, 3.6, "interface\n" + r"$\xi_t$" + "\nsplit, squash", w=1.6, h=1.3, role="operation")
    arrow(ax, ctrl.right, xi.left)
    # the heads, with the fields of xi_t each one reads
    head_w = r"$k^w_t,\ \beta^w_t,\ e_t,\ v_t,\ g^a_t,\ g^w_t$"
    write = box(ax, 5.9, 5.55, "write head\n" + head_w, w=2.4, h=0.9, role="operation")
    head_r = r"$k^{r,i}_t,\ \beta^{r,i}_t,\ \pi^i_t,\ f^i_t$"
    read = box(ax, 5.9, 1.6, "read heads $i = 1..R$\n" + head_r, w=2.4, h=0.9, role="operation")
    arrow(ax, xi.at(0.6, 1.0), write.left, bend=-0.25)
    arrow(ax, xi.at(0.6, 0.0), read.left, bend=0.25)
    # usage and allocation; the free gates of the read heads lower the usage
    usage = box(ax, 5.9, 3.6, "usage $u_t$\n" + r"allocation $a_t$", w=2.0, h=0.9, role="memory")
    arrow(ax, read.top, usage.bottom, r"free gates $f^i_t$: $\psi_t$", offset=(0.85, -0.1))
    # the write weighting, the memory, and the temporal state on the right
    ww_text = r"$w^w_t = g^w_t\,[g^a_t a_t$" + "\n" + r"$+ (1 - g^a_t)\,c^w_t]$"
    ww = box(ax, 9.3, 5.55, ww_text, w=2.3, h=0.9, role="operation")
    arrow(ax, write.right, ww.left, "$c^w_t$\non $M_{t-1}$")
    arrow(ax, usage.right, ww.at(0.2, 0.0), r"$a_t$", offset=(-0.05, 0.0))
    memory = box(ax, 9.3, 3.6, "memory $M_t$\n" + r"$N \times W$", w=1.9, h=1.2, role="memory", fontsize=10)
    arrow(ax, ww.at(0.6, 0.0), memory.at(0.6, 1.0), "erase $e_t$\nadd $v_t$", offset=(0.45, -0.3))
    prec = box(ax, 11.9, 5.55, "precedence\n" + r"$p_t$", w=1.7, h=0.9, role="memory")
    link = box(ax, 11.9, 3.6, "links $L_t$\n" + r"$N \times N$", w=1.7, h=1.0, role="memory")
    arrow(ax, ww.right, prec.left, r"$w^w_t$")
    arrow(ax, prec.bottom, link.top, r"$w^w_t,\ p_{t-1}$", offset=(0.55, -0.1))
    # the read weighting: the read modes pi mix backward, content and forward
    wr_text = r"$w^r_t = \pi_t[1]\,b_t + \pi_t[2]\,c^r_t + \pi_t[3]\,f_t$"
    wr = box(ax, 10.3, 1.6, wr_text, w=3.9, h=0.7, role="operation")
    arrow(ax, read.right, wr.left)
    top_of_wr = wr.at(0, 1)[1]
    arrow(ax, memory.bottom, (memory.x, top_of_wr), r"content $c^r_t$", offset=(-0.6, -0.15))
    fb = r"$f_t = L_t\, w^r_{t-1}$" + "\n" + r"$b_t = L_t^\top w^r_{t-1}$"
    arrow(ax, link.bottom, (link.x, top_of_wr), fb, offset=(-0.8, -0.4))
    # read vectors to the output, and (as r_{t-1}) to the next step's input
    arrow(ax, wr.at(0.3, 0.0), y_out.right, r"read vectors $r_t = M_t^\top w^r_t$", bend=-0.12, offset=(0, -0.75))
    return fig


def _gates(values: Sequence[float] | Tensor, name: str, steps: int) -> Tensor:
    gates = torch.as_tensor(values, dtype=torch.get_default_dtype()).flatten()
    if gates.numel() != steps:
        raise ValueError(f"{name} must hold one gate per written word ({steps}), got {gates.numel()}")
    if not bool(((gates >= 0) & (gates <= 1)).all()):
        raise ValueError(f"{name} must lie in [0, 1], got {gates.tolist()}")
    return gates


def allocation_trace(
    words: Tensor,
    write_gates: Sequence[float] | Tensor,
    allocation_gates: Sequence[float] | Tensor,
    free_gates: Sequence[float] | Tensor,
    *,
    num_slots: int = 8,
    read_strength: float = 50.0,
) -> dict[str, Tensor]:
    """Run T memory steps of :func:`memtutor.memory.memory_step` with hand-set gates, one word per step.

    Step t writes ``words[t]`` with write gate ``write_gates[t]`` (g^w_t), allocation gate
    ``allocation_gates[t]`` (g^a_t), erase vector 1 and an all-zero write key: a controller that has
    not learned to address, whose content weighting c^w_t is uniform. One read head looks up the
    first word by content (strength ``read_strength``, read mode content) and at step t frees what
    it read at step t-1 with free gate ``free_gates[t]`` (f_t). Memory starts empty.

    Args:
        words: (T, W).  write_gates, allocation_gates, free_gates: T values in [0, 1] each.
    Returns:
        A dict of the state after each step: ``usage`` u_t (T, N), ``allocation`` a_t (T, N) (the
        allocation weighting of that step, computed from u_t), ``write_weights`` w^w_t (T, N),
        ``read_weights`` w^r_t (T, N), ``precedence`` p_t (T, N) and ``link`` L_t (T, N, N).
    """
    if not isinstance(words, Tensor) or words.ndim != 2 or not words.is_floating_point():
        raise ValueError(f"words must be a floating tensor (T, W), got {getattr(words, 'shape', words)!r}")
    steps, width = words.shape
    gw, ga, free = (
        _gates(v, n, steps)
        for v, n in [(write_gates, "write_gates"), (allocation_gates, "allocation_gates"), (free_gates, "free_gates")]
    )
    state = mem.initial_state(1, num_slots, width, 1, dtype=words.dtype)
    keep: dict[str, list[Tensor]] = {k: [] for k in ("usage", "allocation", "write_weights", "read_weights")}
    keep |= {"precedence": [], "link": []}
    for t in range(steps):
        interface = mem.Interface(
            read_keys=words[None, :1],  # (1, 1, W): the first word
            read_strengths=torch.full((1, 1), read_strength, dtype=words.dtype),
            write_key=torch.zeros(1, width, dtype=words.dtype),
            write_strength=torch.ones(1, dtype=words.dtype),
            erase_vector=torch.ones(1, width, dtype=words.dtype),
            write_vector=words[t : t + 1],
            free_gates=free[t].view(1, 1).to(words.dtype),
            allocation_gate=ga[t].view(1).to(words.dtype),
            write_gate=gw[t].view(1).to(words.dtype),
            read_modes=torch.tensor([[[0.0, 1.0, 0.0]]], dtype=words.dtype),  # content only
        )
        _, state = mem.memory_step(interface, state)
        keep["usage"].append(state.usage[0])
        keep["allocation"].append(mem.allocation_weights(state.usage)[0])  # a_t from u_t, as the step used it
        keep["write_weights"].append(state.write_weights[0])
        keep["read_weights"].append(state.read_weights[0, 0])
        keep["precedence"].append(state.precedence[0])
        keep["link"].append(state.link[0])
    return {k: torch.stack(v) for k, v in keep.items()}


def batched_step_times(
    bank: mem.MemoryBank,
    interface: mem.Interface,
    state: mem.MemoryState,
    *,
    repeats: int = 20,
    warmup: int = 5,
) -> dict[str, float]:
    """Seconds per memory step of ``bank`` on the batch (``"batched"``) and on its samples one at a
    time (``"looped"``, the sum of B batch-of-one steps): the median over ``repeats`` timed repeats
    (robust to the pauses a shared machine inserts), after ``warmup`` untimed batched steps.
    ``interface`` and ``state`` are a batch of B samples."""
    batch = state.memory.shape[0]
    singles = [
        (mem.Interface(*(t[i : i + 1] for t in interface)), mem.MemoryState(*(t[i : i + 1] for t in state)))
        for i in range(batch)
    ]
    for _ in range(warmup):
        bank(interface, state)
    batched, looped = [], []
    for _ in range(repeats):
        with timer() as t_batch:
            bank(interface, state)
        batched.append(t_batch["seconds"])
    for _ in range(repeats):
        with timer() as t_loop:
            for x1, s1 in singles:
                bank(x1, s1)
        looped.append(t_loop["seconds"])
    return {"batched": statistics.median(batched), "looped": statistics.median(looped)}
