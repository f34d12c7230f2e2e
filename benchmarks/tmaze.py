"""Environment steps per second of the passive T-Maze: the batched environment vs a per-episode loop.

The same episodes (corridor length ``--length``, noisy observations, random actions) are run two
ways, counting every step an episode takes:

1. batched: ``memtutor.tmaze.step`` on the whole batch, a loop over time steps only;
2. per-episode: the same functions on a batch of one, one episode after another, the way an agent
   without a batched environment would call them.

Wall time and CPU time are both reported (shared machines are noisy; CPU time is the steadier).

Run:

    .venv/bin/python benchmarks/tmaze.py            # batch 1,024, L = 100
    .venv/bin/python benchmarks/tmaze.py --quick    # tiny sizes, a second
"""

from __future__ import annotations

import argparse
import time

import torch

from memtutor import tmaze as tm
from memtutor.utils import set_threads


def _run(batch: int, length: int, seed: int) -> int:
    """Run ``batch`` noisy episodes to the end with random actions; returns the steps taken."""
    gen = torch.Generator().manual_seed(seed)
    state, _ = tm.reset(batch, length, gen, noisy=True)
    actions = torch.randint(0, tm.NUM_ACTIONS, (length, batch), generator=gen)
    for t in range(length):
        state, _, _, _ = tm.step(state, actions[t])
    return batch * length


def steps_per_second(batch: int, length: int, episodes: int) -> dict[str, float]:
    """Steps per second of wall and CPU time running ``episodes`` episodes in batches of ``batch``."""
    _run(min(batch, 8), 4, 0)  # warm-up
    wall0, cpu0 = time.perf_counter(), time.process_time()
    steps = sum(_run(batch, length, i) for i in range(max(1, episodes // batch)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"steps": steps, "wall_steps_per_s": steps / wall, "cpu_steps_per_s": steps / max(cpu, 1e-9)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--length", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    batch, length = (64, 20) if args.quick else (args.batch, args.length)
    n_loop = 8 if args.quick else 64  # episodes timed one at a time
    batched = steps_per_second(batch, length, batch * (1 if args.quick else 4))
    looped = steps_per_second(1, length, n_loop)
    print(f"passive T-Maze, L = {length}, noisy, threads {torch.get_num_threads()}")
    for name, r in ((f"batched (B = {batch})", batched), ("per-episode loop (B = 1)", looped)):
        print(f"{name:<28}{r['wall_steps_per_s']:>14,.0f} steps/s wall {r['cpu_steps_per_s']:>14,.0f} steps/s CPU")
    ratio = batched["cpu_steps_per_s"] / looped["cpu_steps_per_s"]
    print(f"ratio batched / per-episode (CPU time): {ratio:.1f}x")
    return {"batched": batched, "loop": looped, "ratio_cpu": ratio}


if __name__ == "__main__":
    main()
