"""Prioritized replay speed: memtutor's wide sum tree vs the seed's O(N) sampler vs cpprb.

For a filled buffer of ``--capacity`` items (default 1,000,000) and each batch size, one *step*
is ``sample(batch, beta=0.4)`` followed by ``update_priorities`` of the sampled indices with new
TD errors; all three implementations store the same transitions (obs 4 floats, action, reward,
next obs, done) and return them with their IS weights. The steps of the implementations and
batch sizes are interleaved in blocks of ``--block`` consecutive steps (so each runs with its own
data in cache, as in a training loop) and repeated, and the median over blocks of the time per
step is reported, so that load from other processes hits all of them alike; the CPU time of the
process is reported beside the wall-clock time, because on a machine shared with other jobs the
wall clock also counts the time the process was preempted. The table is printed for 1 torch
thread and for torch's default thread count (cpprb and NumPy ignore it; memtutor's replay
operations switch to one intra-op thread internally, because a parallel region over such small
tensors can stall for milliseconds on a busy machine).
Interleaving single steps instead (``--block 1``) shows a cold-cache penalty on memtutor at small
batches: each of its ~60 small torch calls then starts with cold caches.

    .venv/bin/python benchmarks/replay.py            # full table (about a minute)
    .venv/bin/python benchmarks/replay.py --quick    # tiny sizes, a few seconds (smoke test)

cpprb is the ``bench`` extra (``pip install -e .[bench]``); without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from memtutor.replay import PrioritizedReplay

ALPHA, BETA, EPS = 0.6, 0.4, 1e-6
OBS_DIM = 4


def transitions_np(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "obs": rng.standard_normal((n, OBS_DIM)).astype(np.float32),
        "act": rng.integers(0, 4, n).astype(np.int64),
        "rew": rng.standard_normal(n).astype(np.float32),
        "next_obs": rng.standard_normal((n, OBS_DIM)).astype(np.float32),
        "done": (rng.random(n) < 0.01).astype(np.float32),
    }


class SeedStyleReplay:
    """The seed tutorial's sampler, kept O(N) per call on purpose (storage in numpy arrays
    instead of its deque, which would add the cost of rebuilding the array on every call):
    normalise every stored priority, ``np.random.choice(..., replace=False, p=probs)``,
    weights normalised by the batch maximum."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity, self.size, self.next = capacity, 0, 0
        self.prios = np.zeros(capacity)
        self.store: dict[str, np.ndarray] = {}
        self.rng = np.random.RandomState(seed)

    def add(self, tr: dict[str, np.ndarray]) -> None:
        n = len(next(iter(tr.values())))
        if not self.store:
            self.store = {k: np.zeros((self.capacity, *v.shape[1:]), v.dtype) for k, v in tr.items()}
        idx = (self.next + np.arange(n)) % self.capacity
        for k, v in tr.items():
            self.store[k][idx] = v
        self.prios[idx] = self.prios[: self.size].max() if self.size else 1.0
        self.next, self.size = (self.next + n) % self.capacity, min(self.size + n, self.capacity)

    def sample(self, batch: int, beta: float):
        probs = self.prios[: self.size] / self.prios[: self.size].sum()  # O(N) every call
        idx = self.rng.choice(self.size, batch, replace=False, p=probs)
        w = (self.size * probs[idx]) ** (-beta)
        return {k: v[idx] for k, v in self.store.items()}, idx, w / w.max()

    def update_priorities(self, idx: np.ndarray, errors: np.ndarray) -> None:
        self.prios[idx] = (np.abs(errors) + EPS) ** ALPHA


def make_memtutor(capacity, data, chunk):
    buf = PrioritizedReplay(capacity, alpha=ALPHA, eps=EPS)
    for s in range(0, capacity, chunk):
        buf.add({k: torch.from_numpy(v[s : s + chunk]) for k, v in data.items()})
    gen = torch.Generator().manual_seed(0)

    def step(batch, errors):
        _, idx, _ = buf.sample(batch, BETA, gen)
        buf.update_priorities(idx, torch.from_numpy(errors[:batch]))

    return step


def make_seed(capacity, data, chunk):
    buf = SeedStyleReplay(capacity)
    for s in range(0, capacity, chunk):
        buf.add({k: v[s : s + chunk] for k, v in data.items()})

    def step(batch, errors):
        _, idx, _ = buf.sample(batch, BETA)
        buf.update_priorities(idx, errors[:batch])

    return step


def make_cpprb(capacity, data, chunk):
    import cpprb

    env = {"obs": {"shape": OBS_DIM}, "act": {"dtype": np.int64}, "rew": {}, "next_obs": {"shape": OBS_DIM}, "done": {}}
    buf = cpprb.PrioritizedReplayBuffer(capacity, env, alpha=ALPHA, eps=EPS)
    for s in range(0, capacity, chunk):
        buf.add(**{k: v[s : s + chunk] for k, v in data.items()})

    def step(batch, errors):
        out = buf.sample(batch, beta=BETA)
        buf.update_priorities(out["indexes"], np.abs(errors[:batch]))

    return step


def time_add(name, make, capacity, data, chunk):
    w0, c0 = time.perf_counter(), time.process_time()
    make(capacity, data, chunk)
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--capacity", type=int, default=None)
    p.add_argument("--reps", type=int, default=None, help="timed steps per cell")
    p.add_argument("--skip-seed", action="store_true", help="leave out the (slow) O(N) sampler")
    p.add_argument("--block", type=int, default=10, help="consecutive steps timed together (warm caches)")
    args = p.parse_args(argv)
    capacity = args.capacity or (20_000 if args.quick else 1_000_000)
    reps = args.reps or (3 if args.quick else 30)
    batches = [32, 256] if args.quick else [32, 256, 1024, 4096]
    chunk = 1000
    default_threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    data = transitions_np(capacity, rng)
    errors = np.abs(rng.standard_normal(max(batches))) + 0.01

    makers = {"memtutor": make_memtutor, "cpprb": make_cpprb}
    if not args.skip_seed:
        makers["seed O(N)"] = make_seed
    try:
        import cpprb  # noqa: F401
    except ImportError:
        print("cpprb not installed (pip install -e .[bench]): its rows are skipped")
        makers.pop("cpprb")

    print(
        f"capacity {capacity:,}, alpha {ALPHA}, beta {BETA}; median over {reps} interleaved blocks of "
        f"{args.block} steps (seed O(N): a few single steps)"
    )
    torch.set_num_threads(1)
    print(f"\nadding {capacity:,} items in batches of {chunk:,} (torch threads 1):")
    for name, make in makers.items():
        wall, cpu = time_add(name, make, capacity, data, chunk)
        print(
            f"  {name:10s} wall {wall:6.2f} s ({capacity / wall / 1e6:5.2f} M items/s)   "
            f"cpu {cpu:6.2f} s ({capacity / cpu / 1e6:5.2f} M items/s)"
        )

    steps = {name: make(capacity, data, chunk) for name, make in makers.items()}
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        times: dict[tuple[str, int], list[float]] = {}
        for step in steps.values():  # warm-up
            for b in batches:
                step(b, errors)
        for r in range(reps):
            for b in batches:
                for name, step in steps.items():
                    slow = name == "seed O(N)"
                    if slow and r >= max(3, reps // 10):
                        continue  # 10+ ms per step: a few repeats are plenty
                    inner = 1 if slow else args.block
                    w0, c0 = time.perf_counter(), time.process_time()
                    for _ in range(inner):
                        step(b, errors)
                    wall = (time.perf_counter() - w0) / inner
                    cpu = (time.process_time() - c0) / inner
                    times.setdefault((name, b), []).append((wall, cpu))
        print(f"\nsample + update_priorities, torch threads {threads} (median wall-clock | CPU time per step):")
        others = [n for n in steps if n != "memtutor"]
        head = f"  {'batch':>6s}" + "".join(f" {n + ' wall us':>17s} {'cpu us':>8s} {'samples/s':>10s}" for n in steps)
        print(head + "".join(f" {'x vs ' + n + ' (wall|cpu)':>26s}" for n in others))
        for b in batches:
            wall = {n: statistics.median(t[0] for t in times[(n, b)]) for n in steps}
            cpu = {n: statistics.median(t[1] for t in times[(n, b)]) for n in steps}
            row = f"  {b:6d}" + "".join(
                f" {wall[n] * 1e6:17.0f} {cpu[n] * 1e6:8.0f} {b / wall[n]:10.3g}" for n in steps
            )
            row += "".join(
                f" {wall[n] / wall['memtutor']:17.2f} | {cpu[n] / max(cpu['memtutor'], 1e-9):6.2f}" for n in others
            )
            print(row)
    print("\n'x vs cpprb' > 1 means memtutor is that many times faster per step.")


if __name__ == "__main__":
    main()
