"""Training throughput of notebook 05's learner: batched versus one sample at a time.

The seed tutorial trains one sample per step (about 310 samples/s without replay and 55 with, CPU).
This script runs :func:`memtutor.continual.train_stream` on the same model and the same stream,
once with ``batch_size=1`` (one sample at a time, as the seed does) and once per larger batch
size, with and without prioritized replay, and prints samples/s and the ratio to the one-sample
loop measured in the same run. A "sample" is one current-task training item; with replay each
step also replays ``replay_ratio * batch_size`` stored items, which are not counted.

    .venv/bin/python benchmarks/continual.py            # full table
    .venv/bin/python benchmarks/continual.py --quick    # a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from memtutor.continual import ContinualConfig, make_task_stream, train_stream
from memtutor.experiments.nb05_continual import CONTINUAL_METHODS
from memtutor.utils import set_threads

#: The seed tutorial's one-sample-at-a-time throughput without replay (seeds README).
SEED_SAMPLES_PER_S = 310.0
#: ... and with its replay switched on.
SEED_REPLAY_SAMPLES_PER_S = 55.0


def throughput(stream, method: str, cfg: ContinualConfig, num_tasks: int, repeats: int) -> float:
    """Best-of-``repeats`` samples/s of ``train_stream`` (evaluation kept out of the loop)."""
    n = int((stream.train_task < num_tasks).sum()) * cfg.epochs
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        train_stream(stream, CONTINUAL_METHODS[method], cfg, seed=0, num_tasks=num_tasks)
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default $MEMTUTOR_THREADS or 1)")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    stream = make_task_stream("class", seed=0)
    num_tasks = 1 if args.quick else 2
    batch_sizes = [32] if args.quick else [32, 128, 512]
    repeats = 1 if args.quick else 3
    # one evaluation per task only (we time training); 40 stored images per task, as in the notebook
    base = ContinualConfig(eval_every=10**9, buffer_size=40 * num_tasks)
    print(f"torch {torch.__version__}, {threads} thread(s), {num_tasks} task(s) of the class-incremental stream")
    print(f"{'method':20s} {'batch':>6s} {'samples/s':>11s} {'vs one-sample':>14s} {'vs seed 310/s':>14s}")
    # warm-up: the first call pays for lazy initialisation (allocator, kernels), not for training
    train_stream(stream, CONTINUAL_METHODS["prioritized replay"], replace(base, epochs=1), seed=0, num_tasks=1)
    rates = {}
    for method in ("naive", "prioritized replay"):
        one_cfg = replace(base, batch_size=1, epochs=1)  # one sample (and one replayed item) per step
        one = throughput(stream, method, one_cfg, num_tasks, repeats)
        print(f"{method:20s} {1:6d} {one:11.0f} {1.0:13.1f}x {one / SEED_SAMPLES_PER_S:13.1f}x")
        for bs in batch_sizes:
            cfg = replace(base, batch_size=bs, epochs=2 if args.quick else 30)
            rate = throughput(stream, method, cfg, num_tasks, repeats)
            rates[(method, bs)] = rate
            print(f"{method:20s} {bs:6d} {rate:11.0f} {rate / one:13.1f}x {rate / SEED_SAMPLES_PER_S:13.1f}x")
        print(f"ratio (batch {batch_sizes[-1]} / one-sample, {method}): {rate / one:.1f}x")
    bs = batch_sizes[0]
    print(
        f"notebook setting (batch {bs}): naive {rates[('naive', bs)] / SEED_SAMPLES_PER_S:.0f}x the seed's "
        f"{SEED_SAMPLES_PER_S:.0f} samples/s; with prioritized replay "
        f"{rates[('prioritized replay', bs)] / SEED_REPLAY_SAMPLES_PER_S:.0f}x the seed's "
        f"{SEED_REPLAY_SAMPLES_PER_S:.0f} samples/s with replay"
    )


if __name__ == "__main__":
    main()
