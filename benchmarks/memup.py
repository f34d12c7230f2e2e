"""Cost of one update pass versus sequence length T: MemUP against full BPTT (notebook 07).

For each T, one batch of copy-task sequences of length T is processed:

* MemUP: every rollout of ``memtutor.memup.memup_update`` (T / r optimiser steps, each
  back-propagating through r memory steps and K targets);
* full BPTT: one optimiser step back-propagating through all T steps.

Memory is the peak number of bytes autograd saves for one backward pass, counted with
``torch.autograd.graph.saved_tensors_hooks`` (distinct storages): it sees every tensor the graph
keeps, on any device, where ``tracemalloc`` sees none of torch's CPU allocations. Time is the
median wall time of a pass, with denormal floats flushed to zero (and, for full BPTT, also
without flushing, because the vanishing gradients of a long backward pass are denormal-prone).
The measurement is notebook 07's, ``memtutor.experiments.nb07_memup.measure_cost``.

    .venv/bin/python benchmarks/memup.py            # T = 300, 1000, 3000
    .venv/bin/python benchmarks/memup.py --quick    # tiny sizes, a few seconds
"""

from __future__ import annotations

import argparse

from memtutor.experiments.nb07_memup import measure_cost
from memtutor.memup import MemUPConfig
from memtutor.utils import set_threads


def measure(lengths: list[int], batch: int, hidden: int, repeats: int, n_head: int = 3) -> list[dict]:
    """One row per T: ``{"T", "memup", "bptt", "bptt_denormal"}``, each an ``update_cost`` result."""
    base = MemUPConfig(n_head=n_head, k=n_head, hidden=hidden, rollout=20)
    cost = measure_cost(base, lengths, batch=batch, repeats=repeats)
    return [{"T": T, **{m: cost[m, T] for m in ("memup", "bptt", "bptt_denormal")}} for T in lengths]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--lengths", type=int, nargs="+", default=[300, 1000, 3000])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    set_threads()
    lengths, batch, hidden, repeats = args.lengths, args.batch, 64, args.repeats
    if args.quick:
        lengths, batch, hidden, repeats = [40, 80], 4, 16, 1
    rows = measure(lengths, batch, hidden, repeats)
    mib = 2.0**20
    print(
        f"{'T':>6} | {'MemUP s':>8} | {'MemUP MiB':>9} | {'full BPTT s':>11} | "
        f"{'full BPTT MiB':>13} | {'BPTT s, denormals':>17}"
    )
    for r in rows:
        print(
            f"{r['T']:>6} | {r['memup']['seconds']:>8.3f} | {r['memup']['saved_bytes'] / mib:>9.2f}"
            f" | {r['bptt']['seconds']:>11.3f} | {r['bptt']['saved_bytes'] / mib:>13.2f}"
            f" | {r['bptt_denormal']['seconds']:>17.3f}"
        )
    lo, hi = rows[0], rows[-1]
    print(
        f"T x{hi['T'] / lo['T']:.0f}: MemUP saved bytes x"
        f"{hi['memup']['saved_bytes'] / lo['memup']['saved_bytes']:.2f}, full BPTT x"
        f"{hi['bptt']['saved_bytes'] / lo['bptt']['saved_bytes']:.2f}; time per pass MemUP x"
        f"{hi['memup']['seconds'] / lo['memup']['seconds']:.1f}, full BPTT x"
        f"{hi['bptt']['seconds'] / lo['bptt']['seconds']:.1f}"
    )


if __name__ == "__main__":
    main()
