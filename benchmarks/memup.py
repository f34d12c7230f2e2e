"""Cost of one update pass versus sequence length T: MemUP against full BPTT (notebook 07).

For each T, one batch of copy-task sequences of length T is processed:

* MemUP: every rollout of ``memtutor.memup.memup_update`` (T / r optimiser steps, each
  back-propagating through r memory steps and K targets);
* full BPTT: one optimiser step back-propagating through all T steps.

Memory is measured twice: the peak number of bytes autograd saves for one backward pass, counted
with ``torch.autograd.graph.saved_tensors_hooks`` (distinct storages), and the peak of torch's CPU
allocator during the whole pass (every tensor: activations, gradients, optimiser state, the
detector's scoring), read from ``torch.profiler``'s memory events; ``tracemalloc`` sees none of
torch's CPU allocations. MemUP is also measured, memory only, at longer T (10,000 by default)
where full BPTT would need gigabytes. Time is the
median wall time of a pass, with denormal floats flushed to zero (and, for full BPTT, also
without flushing, because the vanishing gradients of a long backward pass are denormal-prone).
The measurement is notebook 07's, ``memtutor.experiments.nb07_memup.measure_cost``.

``--rss`` measures, instead, the resident memory that one update pass adds in a fresh process (its
peak resident set size minus the resident size just before it; no profiler), for MemUP and
truncated BPTT at every T and full BPTT up to 3,000: notebook 07's ``measure_rss``.

    .venv/bin/python benchmarks/memup.py            # T = 300, 1000, 3000; MemUP memory at 10000
    .venv/bin/python benchmarks/memup.py --rss      # resident memory, T = 300 to 10000
    .venv/bin/python benchmarks/memup.py --quick    # tiny sizes, a few seconds
"""

from __future__ import annotations

import argparse

from memtutor.experiments.nb07_memup import measure_cost, measure_rss, rss_table
from memtutor.memup import MemUPConfig
from memtutor.utils import set_threads


def measure(
    lengths: list[int], batch: int, hidden: int, repeats: int, n_head: int = 3, memory_lengths: tuple = ()
) -> list[dict]:
    """One row per T: ``{"T", "memup", "bptt", "bptt_denormal"}``, each an ``update_cost`` result
    (MemUP only, no timing, at the T of ``memory_lengths``)."""
    base = MemUPConfig(n_head=n_head, k=n_head, hidden=hidden, rollout=20)
    cost = measure_cost(base, lengths, batch=batch, repeats=repeats, memory_lengths=memory_lengths)
    nan = {"seconds": float("nan"), "saved_bytes": float("nan"), "peak_bytes": float("nan")}
    return [
        {"T": T, **{m: cost.get((m, T), nan) for m in ("memup", "bptt", "bptt_denormal")}}
        for T in list(lengths) + list(memory_lengths)
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--lengths", type=int, nargs="+", default=[300, 1000, 3000])
    p.add_argument("--memory-lengths", type=int, nargs="*", default=[10000])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rss", action="store_true", help="resident memory of one update, each in a fresh process")
    args = p.parse_args(argv)
    set_threads()
    lengths, batch, hidden, repeats, memory_lengths = args.lengths, args.batch, 128, args.repeats, args.memory_lengths
    if args.quick:
        lengths, batch, hidden, repeats, memory_lengths = [40, 80], 4, 16, 1, [160]
    if args.rss:
        every = sorted(set(lengths) | set(memory_lengths))
        base = MemUPConfig(n_head=3, k=3, hidden=hidden, rollout=20)
        rss = measure_rss(base, {"memup": every, "tbptt": every, "bptt": sorted(lengths)}, batch=batch)
        print(rss_table(rss, every) + f"   (batch {batch}, width {hidden})")
        return
    rows = measure(lengths, batch, hidden, repeats, memory_lengths=tuple(memory_lengths))
    mib = 2.0**20
    cols = (
        ("MemUP s", "memup", "seconds", 1),
        ("MemUP saved MiB", "memup", "saved_bytes", mib),
        ("MemUP peak MiB", "memup", "peak_bytes", mib),
        ("full BPTT s", "bptt", "seconds", 1),
        ("full BPTT saved MiB", "bptt", "saved_bytes", mib),
        ("full BPTT peak MiB", "bptt", "peak_bytes", mib),
        ("BPTT s, denormals", "bptt_denormal", "seconds", 1),
    )
    print(f"{'T':>6} | " + " | ".join(f"{c[0]:>{len(c[0])}}" for c in cols) + f"   (batch {batch}, width {hidden})")
    for r in rows:
        print(f"{r['T']:>6} | " + " | ".join(f"{r[m][k] / d:>{len(h)}.3f}" for h, m, k, d in cols))
    lo, hi = rows[0], rows[-1]
    print(
        f"T x{hi['T'] / lo['T']:.0f}: MemUP peak allocator "
        f"x{hi['memup']['peak_bytes'] / lo['memup']['peak_bytes']:.2f}, "
        f"saved for backward x{hi['memup']['saved_bytes'] / lo['memup']['saved_bytes']:.2f}"
    )


if __name__ == "__main__":
    main()
