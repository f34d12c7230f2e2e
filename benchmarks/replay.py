"""Prioritized replay speed: memtutor's buffer (fast and readable trees) vs cpprb vs the seed's O(N) sampler.

For a filled buffer of each capacity (default 100,000 and 1,000,000 items) and each batch size
(32, 256, 1024, 4096), one *step* is ``sample(batch, beta=0.4)`` followed by
``update_priorities`` of the sampled indices with new TD errors; every implementation stores the
same transitions (obs 4 floats, action, reward, next obs, done) and returns them with their IS
weights. memtutor runs twice: ``PrioritizedReplay(capacity)``, the default (on the CPU the fast
tree, whose search and update are compiled by Numba), and ``PrioritizedReplay(capacity,
tree="readable")``, the vectorised torch tree that notebook 03 builds.

The steps of the implementations and batch sizes are interleaved in blocks of ``--block``
consecutive steps (each runs with its own data in cache, as in a training loop), in a new random
order in every round (so that none always follows the same other one, whose data has just evicted
the caches), and repeated; the median over blocks of the time per step is reported, so that load
from other processes hits all of them alike. The O(N) sampler, 10 to 1000 times slower and
sweeping its whole priority array at every step, is timed on its own after them.
The CPU time of the process (``time.process_time``) is reported beside the
wall-clock time (``time.perf_counter``): on a machine shared with other jobs the wall clock also
counts the time the process was preempted, so CPU time is the figure to compare there. The table
is printed for 1 torch thread and for torch's default thread count (cpprb, NumPy and the
compiled kernels ignore it; memtutor's replay operations switch to one intra-op thread
internally, because a parallel region over such small tensors can stall for milliseconds on a
busy machine).

Filling: the time to add ``capacity`` items with their priorities (TD errors) in chunks of
``--chunk`` (default 1,000), and in one call, for each implementation.

With CUDA present, the same step runs with the buffer on the GPU (batch up to 65,536, capacity up
to 10,000,000; wall time with ``torch.cuda.synchronize``), beside cpprb on the CPU.

    .venv/bin/python benchmarks/replay.py                     # full table (a few minutes)
    .venv/bin/python benchmarks/replay.py --quick             # tiny sizes, a few seconds (smoke test)
    .venv/bin/python benchmarks/replay.py --json results.json # the table as JSON too

cpprb is the ``bench`` extra (``pip install -e .[bench]``); without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from memtutor.replay import PrioritizedReplay

ALPHA, BETA, EPS = 0.6, 0.4, 1e-6
OBS_DIM = 4
FAST, READABLE, CPPRB, SEED = "memtutor fast", "memtutor readable", "cpprb", "seed O(N)"


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

    def add(self, tr: dict[str, np.ndarray], errors: np.ndarray) -> None:
        n = len(next(iter(tr.values())))
        if not self.store:
            self.store = {k: np.zeros((self.capacity, *v.shape[1:]), v.dtype) for k, v in tr.items()}
        idx = (self.next + np.arange(n)) % self.capacity
        for k, v in tr.items():
            self.store[k][idx] = v
        self.prios[idx] = (np.abs(errors) + EPS) ** ALPHA
        self.next, self.size = (self.next + n) % self.capacity, min(self.size + n, self.capacity)

    def sample(self, batch: int, beta: float):
        probs = self.prios[: self.size] / self.prios[: self.size].sum()  # O(N) every call
        idx = self.rng.choice(self.size, batch, replace=False, p=probs)
        w = (self.size * probs[idx]) ** (-beta)
        return {k: v[idx] for k, v in self.store.items()}, idx, w / w.max()

    def update_priorities(self, idx: np.ndarray, errors: np.ndarray) -> None:
        self.prios[idx] = (np.abs(errors) + EPS) ** ALPHA


def fill_memtutor(tree, device):
    def fill(capacity, data, errors, chunk):
        buf = PrioritizedReplay(capacity, alpha=ALPHA, eps=EPS, tree=tree, device=device)
        tdata = {k: torch.from_numpy(v).to(device) for k, v in data.items()}
        terr = torch.from_numpy(errors).to(device)
        for s in range(0, capacity, chunk):
            buf.add({k: v[s : s + chunk] for k, v in tdata.items()}, terr[s : s + chunk])
        gen = torch.Generator(device).manual_seed(0)
        terr_step = terr[: 1 << 16].abs() + 0.01

        def step(batch):
            _, idx, _ = buf.sample(batch, BETA, gen)
            buf.update_priorities(idx, terr_step[:batch])

        return step

    return fill


def fill_seed(capacity, data, errors, chunk):
    buf = SeedStyleReplay(capacity)
    for s in range(0, capacity, chunk):
        buf.add({k: v[s : s + chunk] for k, v in data.items()}, errors[s : s + chunk])
    err_step = np.abs(errors[: 1 << 16]) + 0.01

    def step(batch):
        _, idx, _ = buf.sample(batch, BETA)
        buf.update_priorities(idx, err_step[:batch])

    return step


def fill_cpprb(capacity, data, errors, chunk):
    import cpprb

    env = {"obs": {"shape": OBS_DIM}, "act": {"dtype": np.int64}, "rew": {}, "next_obs": {"shape": OBS_DIM}, "done": {}}
    buf = cpprb.PrioritizedReplayBuffer(capacity, env, alpha=ALPHA, eps=EPS)
    prios = np.abs(errors) + EPS  # cpprb raises priorities to alpha itself
    for s in range(0, capacity, chunk):
        buf.add(**{k: v[s : s + chunk] for k, v in data.items()}, priorities=prios[s : s + chunk])
    err_step = np.abs(errors[: 1 << 16]) + 0.01

    def step(batch):
        out = buf.sample(batch, beta=BETA)
        buf.update_priorities(out["indexes"], err_step[:batch])

    return step


def timed(fn, sync=None):
    """``(wall s, cpu s, fn's result)`` of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if sync is not None:
        sync()
    return time.perf_counter() - w0, time.process_time() - c0, out


def medians(times: list[tuple[float, float]]) -> tuple[float, float]:
    """``(median wall, median cpu)`` of ``(wall, cpu)`` pairs."""
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def has_cpprb() -> bool:
    try:
        import cpprb  # noqa: F401
    except ImportError:
        return False
    return True


def measure(makers, capacity, batches, reps, block, chunk, seed_reps, sync=None, threads=(1,)):
    """Fill times and the step table for one capacity: ``{"fill": ..., "steps": {threads: ...}}``."""
    rng = np.random.default_rng(0)
    data = transitions_np(capacity, rng)
    errors = rng.standard_normal(capacity)
    result: dict = {"capacity": capacity, "fill": {}, "steps": {}}
    torch.set_num_threads(1)
    for fill in makers.values():  # warm-up at full size (Numba compiles or loads its kernels once)
        fill(capacity, data, errors, capacity)(batches[0])
    steps = {}
    for name, fill in makers.items():
        wall, cpu, _ = timed(lambda fill=fill: fill(capacity, data, errors, capacity), sync)
        result["fill"][name] = {"one call": (wall, cpu)}
        wall, cpu, steps[name] = timed(lambda fill=fill: fill(capacity, data, errors, chunk), sync)
        result["fill"][name][f"chunks of {chunk}"] = (wall, cpu)
    for nthreads in threads:
        torch.set_num_threads(nthreads)
        times: dict[str, dict[int, list]] = {name: {b: [] for b in batches} for name in steps}
        for step in steps.values():  # warm-up at every batch size
            for b in batches:
                step(b)
        order = np.random.default_rng(1)
        fast_ones = [name for name in steps if name != SEED]
        for _ in range(reps):
            for b in batches:
                # A new order in every round, so that no implementation always runs right after the
                # same other one (whose data has just evicted the caches).
                for i in order.permutation(len(fast_ones)):
                    name = fast_ones[i]
                    wall, cpu, _ = timed(lambda s=steps[name], b=b: [s(b) for _ in range(block)], sync)
                    times[name][b].append((wall / block, cpu / block))
        if SEED in steps:  # 10+ ms per step and it sweeps the whole priority array: timed on its own
            for _ in range(seed_reps):
                for b in batches:
                    wall, cpu, _ = timed(lambda b=b: steps[SEED](b), sync)
                    times[SEED][b].append((wall, cpu))
        result["steps"][nthreads] = {name: {b: medians(ts) for b, ts in per.items()} for name, per in times.items()}
    return result


def print_result(result, chunk, cpu_time=True):
    cap = result["capacity"]
    print(f"\n=== capacity {cap:,} ===")
    print(f"filling {cap:,} items with their priorities (wall s | cpu s):")
    for name, modes in result["fill"].items():
        cells = "   ".join(f"{mode}: {w:6.3f} | {c:6.3f}" for mode, (w, c) in modes.items())
        print(f"  {name:18s} {cells}")
    for nthreads, per in result["steps"].items():
        names = list(per)
        batches = list(next(iter(per.values())))
        print(f"\nsample + update_priorities, torch threads {nthreads}, median us per step (wall | cpu):")
        print(
            f"  {'batch':>6s}"
            + "".join(f" {n:>20s}" for n in names)
            + (f" {'fast vs cpprb (wall|cpu)':>26s}" if CPPRB in per and FAST in per else "")
        )
        for b in batches:
            row = f"  {b:6d}" + "".join(f" {per[n][b][0] * 1e6:10.0f} | {per[n][b][1] * 1e6:7.0f}" for n in names)
            if CPPRB in per and FAST in per:
                (fw, fc), (cw, cc) = per[FAST][b], per[CPPRB][b]
                row += f" {cw / fw:15.2f} | {cc / max(fc, 1e-12):6.2f}"
            print(row)
    if not cpu_time:
        print("  (CUDA: the CPU column counts the host's time only; compare wall times)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--capacity", type=int, nargs="+", default=None)
    p.add_argument("--batch", type=int, nargs="+", default=None)
    p.add_argument("--reps", type=int, default=None, help="timed blocks per cell")
    p.add_argument("--block", type=int, default=10, help="consecutive steps timed together (warm caches)")
    p.add_argument("--chunk", type=int, default=1000, help="items per add when filling")
    p.add_argument("--skip-seed", action="store_true", help="leave out the (slow) O(N) sampler")
    p.add_argument("--skip-cuda", action="store_true", help="CPU only, even with CUDA present")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    capacities = args.capacity or ([20_000] if args.quick else [100_000, 1_000_000])
    batches = args.batch or ([32, 256] if args.quick else [32, 256, 1024, 4096])
    reps = args.reps or (3 if args.quick else 25)
    default_threads = torch.get_num_threads()

    makers = {FAST: fill_memtutor("fast", "cpu"), READABLE: fill_memtutor("readable", "cpu")}
    if has_cpprb():
        makers[CPPRB] = fill_cpprb
    else:
        print("cpprb not installed (pip install -e .[bench]): its rows are skipped")
    if not args.skip_seed:
        makers[SEED] = fill_seed
    print(
        f"alpha {ALPHA}, beta {BETA}; median over {reps} interleaved blocks of {args.block} steps "
        f"(seed O(N): a few single steps); torch {torch.__version__}"
    )
    results = []
    for cap in capacities:
        res = measure(makers, cap, batches, reps, args.block, args.chunk, max(2, reps // 10),
                      threads=sorted({1, default_threads}))  # fmt: skip
        print_result(res, args.chunk)
        results.append({"device": "cpu", **res})

    if torch.cuda.is_available() and not args.skip_cuda:
        device = torch.device("cuda")
        gpu = {f"{FAST} (cuda)": fill_memtutor("fast", device)}
        if has_cpprb():
            gpu[CPPRB] = fill_cpprb
        cuda_caps = [20_000] if args.quick else [1_000_000, 10_000_000]
        cuda_batches = [256, 4096] if args.quick else [256, 4096, 16384, 65536]
        print(f"\nCUDA: {torch.cuda.get_device_name(device)}; the buffer's tensors on the GPU, cpprb on the CPU")
        for cap in cuda_caps:
            res = measure(gpu, cap, cuda_batches, max(3, reps // 3), args.block, 100_000, 0,
                          sync=torch.cuda.synchronize)  # fmt: skip
            print_result(res, 100_000, cpu_time=False)
            results.append({"device": "cuda", **res})
    print("\n'fast vs cpprb' > 1 means memtutor's default buffer is that many times faster per step.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
