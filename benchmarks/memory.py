"""Benchmark: one batched DNC memory step versus the same work one sample at a time.

Claim (notebook 01, issue 3): one memory step -- usage, allocation, write, link update,
directional and content reads -- for a batch of 64 is at least 20x faster per sample than 64
calls of a batch-of-one step with the same sizes. Single-threaded (torch.set_num_threads(1)), in
one run; the default thread count is reported too.

    .venv/bin/python benchmarks/memory.py            # full run, exits 1 if the claim fails
    .venv/bin/python benchmarks/memory.py --quick    # smoke test (few repeats, no verdict)

Both sides run ``MemoryBank.forward`` on a squashed :class:`~memtutor.memory.Interface`,
input checks included, on the CPU, with the default step (composed from notebook 01's equation
functions); ``--fused link`` / ``--fused content`` / ``--fused all`` time the step with those
hand-written autograd nodes instead (``MemoryBank(..., fused=...)``).

    .venv/bin/python benchmarks/memory.py --fused all   # the same claim for the fused step
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from memtutor import memory as mem

CLAIM = 20.0  # batched must be at least this many times faster per sample
#: ``--fused`` choices: the ``fused`` argument of MemoryBank each one stands for.
FUSED_CHOICES = {"none": False, "link": ("link",), "content": ("content",), "all": True}


def make_inputs(batch: int, bank: mem.MemoryBank, seed: int):
    """A random squashed interface and a mid-sequence state (non-trivial usage and links)."""
    g = torch.Generator().manual_seed(seed)
    state = bank.initial_state(batch)
    for _ in range(3):  # a few warm-up writes so usage, links and precedence are not all zero
        raw = torch.randn(batch, bank.interface_size, generator=g)
        _, state = bank(mem.split_interface(raw, bank.word_size, bank.num_reads), state)
    raw = torch.randn(batch, bank.interface_size, generator=g)
    return mem.split_interface(raw, bank.word_size, bank.num_reads), state


def time_call(fn, min_round_s: float, rounds: int) -> float:
    """Median over ``rounds`` of the mean seconds per call; each round lasts >= ``min_round_s``."""
    fn()  # warm-up (first-call allocations)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < min_round_s / 4 or calls < 2:  # calibrate a round's length
        fn()
        calls += 1
    repeats = max(1, round(calls * min_round_s / (time.perf_counter() - start)))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        samples.append((time.perf_counter() - start) / repeats)
    return statistics.median(samples)


def measure(bank: mem.MemoryBank, batch: int, min_round_s: float, rounds: int, backward: bool) -> tuple[float, float]:
    """Seconds per sample: (one batched step, ``batch`` steps at batch 1)."""
    x_big, s_big = make_inputs(batch, bank, seed=0)
    # The same samples, one at a time.
    singles = [
        (mem.Interface(*(t[i : i + 1] for t in x_big)), mem.MemoryState(*(t[i : i + 1] for t in s_big)))
        for i in range(batch)
    ]
    if backward:
        x_big = mem.Interface(*(t.detach().requires_grad_() for t in x_big))
        singles = [(mem.Interface(*(t.detach().requires_grad_() for t in x)), s) for x, s in singles]

    def step(x, s):
        reads, nxt = bank(x, s)
        if backward:
            (reads.sum() + nxt.memory.sum()).backward()

    def batched():
        step(x_big, s_big)

    def one_by_one():
        for x, s in singles:
            step(x, s)

    t_batched = time_call(batched, min_round_s, rounds)
    t_single = time_call(one_by_one, min_round_s, rounds)
    return t_batched / batch, t_single / batch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: few repeats, no pass/fail")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--slots", type=int, default=16, help="N (deepmind/dnc repeat-copy: 16)")
    parser.add_argument("--word", type=int, default=16, help="W (deepmind/dnc repeat-copy: 16)")
    parser.add_argument("--reads", type=int, default=4, help="R (deepmind/dnc repeat-copy: 4)")
    parser.add_argument("--fused", choices=FUSED_CHOICES, default="none", help="fused autograd nodes of the step")
    args = parser.parse_args(argv)
    min_round_s, rounds = (0.02, 2) if args.quick else (0.25, 7)

    bank = mem.MemoryBank(
        num_slots=args.slots, word_size=args.word, num_reads=args.reads, fused=FUSED_CHOICES[args.fused]
    )
    default_threads = torch.get_num_threads()
    print(
        f"DNC memory step (fused: {args.fused}), N={args.slots} W={args.word} R={args.reads}, batch {args.batch} vs "
        f"{args.batch} calls at batch 1; torch {torch.__version__}, CPU"
    )
    print(f"{'threads':>8} {'pass':>18} {'batched us/sample':>18} {'batch-1 us/sample':>18} {'ratio':>7}")
    results = {}
    # --quick: single-threaded only (the test suite runs it; 2 threads can stall on 2 busy cores).
    for threads in [1] if args.quick else dict.fromkeys([1, default_threads]):
        torch.set_num_threads(threads)
        for backward in (False, True):
            label = "forward+backward" if backward else "forward"
            t_b, t_1 = measure(bank, args.batch, min_round_s, rounds, backward)
            results[(threads, backward)] = t_1 / t_b
            print(f"{threads:>8} {label:>18} {t_b * 1e6:>18.1f} {t_1 * 1e6:>18.1f} {t_1 / t_b:>6.1f}x")
    torch.set_num_threads(default_threads)

    ratio = results[(1, False)]
    print(f"single-threaded forward step: batched is {ratio:.1f}x faster per sample (claim: >= {CLAIM:g}x)")
    if args.quick:
        return 0
    if ratio < CLAIM:
        print(f"FAILED: {ratio:.1f}x < {CLAIM:g}x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
