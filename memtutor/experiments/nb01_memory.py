"""Notebook 01's measurements: the seeds of its small experiments and the cost of batching.

The lesson module :mod:`memtutor.memory` holds the equations and the memory step. Notebook 01
builds and checks them itself; this module holds what it only runs: the seed purposes of its data
streams (all derived from the notebook's ``SEED``) and the timing of one batched memory step
against the same samples one at a time (``benchmarks/memory.py`` measures it properly).
"""

from __future__ import annotations

from memtutor import memory as mem
from memtutor.utils import register_seed_offset, timer

__all__ = ["OPTIMISATION_DATA", "HELD_OUT", "EXPLORE_NOISE", "GRADIENT_CHECK", "batched_step_times"]

#: Seed purposes, relative to the notebook's ``SEED``: the training words of the write-then-read
#: optimisation, its held-out words, the fixed noise direction of the lookup explorer, and the
#: random inputs of the gradient check of the fused nodes.
OPTIMISATION_DATA = register_seed_offset("nb01/optimisation-data", 1)
HELD_OUT = register_seed_offset("nb01/held-out", 99)
EXPLORE_NOISE = register_seed_offset("nb01/explore-noise", 7)
GRADIENT_CHECK = register_seed_offset("nb01/gradient-check", 11)


def batched_step_times(
    bank: mem.MemoryBank,
    interface: mem.Interface,
    state: mem.MemoryState,
    *,
    repeats: int = 20,
    warmup: int = 5,
) -> dict[str, float]:
    """Seconds per memory step of ``bank`` on the batch (``"batched"``) and on its samples one at a
    time (``"looped"``, the sum of B batch-of-one steps), mean over ``repeats`` after ``warmup``
    untimed batched steps. ``interface`` and ``state`` are a batch of B samples."""
    batch = state.memory.shape[0]
    singles = [
        (mem.Interface(*(t[i : i + 1] for t in interface)), mem.MemoryState(*(t[i : i + 1] for t in state)))
        for i in range(batch)
    ]
    for _ in range(warmup):
        bank(interface, state)
    with timer() as t_batch:
        for _ in range(repeats):
            bank(interface, state)
    with timer() as t_loop:
        for _ in range(repeats):
            for x1, s1 in singles:
                bank(x1, s1)
    return {"batched": t_batch["seconds"] / repeats, "looped": t_loop["seconds"] / repeats}
