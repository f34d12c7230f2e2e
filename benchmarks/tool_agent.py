"""Environment steps per second: the vectorised tool environment vs per-episode Python loops.

Three ways to run the same semantics on the same programs (the canonical program of each problem,
mixed over the three stages), counting only the steps that live episodes take:

1. vectorised: ``memtutor.tool_agent.env_step`` on the whole batch, a loop over time steps only;
2. per-episode loop over the same tensor environment (a batch of one per episode), the way a
   non-vectorised agent would call it;
3. per-episode loop over ``reference_run_program``, a plain-Python interpreter of one episode
   (scalar ints, no tensors: the cheapest possible per-episode code).

Run:

    .venv/bin/python benchmarks/tool_agent.py            # batch 1,024 (the claim: >= 50x)
    .venv/bin/python benchmarks/tool_agent.py --quick    # tiny sizes, a few seconds
"""

from __future__ import annotations

import argparse
import time

import torch

from memtutor import tool_agent as ta
from memtutor.utils import set_threads


def _problems(batch: int, gen: torch.Generator) -> ta.Problem:
    per = [batch // 3 + (1 if s < batch % 3 else 0) for s in range(3)]
    return ta.cat_problems(ta.sample_problems(s, n, gen) for s, n in enumerate(per) if n > 0)


def vectorised_steps_per_s(problem, programs, repeats: int) -> float:
    T = programs.shape[1]
    ta.run_programs(problem, programs[:, :2])  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        state = ta.initial_env_state(problem)
        for t in range(T):
            state, _ = ta.env_step(problem, state, programs[:, t], shaping=0.1)
    seconds = time.perf_counter() - start
    return repeats * int(state.steps.sum()) / seconds  # steps actually taken by live episodes


def tensor_loop_steps_per_s(problem, programs, repeats: int) -> float:
    T, steps = programs.shape[1], 0
    singles = [ta.index_problems(problem, torch.tensor([i])) for i in range(programs.shape[0])]
    start = time.perf_counter()
    for _ in range(repeats):
        for i, one in enumerate(singles):  # the per-episode loop being measured
            state = ta.initial_env_state(one)
            for t in range(T):
                if bool(state.done):
                    break
                state, _ = ta.env_step(one, state, programs[i : i + 1, t], shaping=0.1)
            steps += int(state.steps)
    return steps / (time.perf_counter() - start)


def loop_steps_per_s(problem, programs, repeats: int) -> float:
    nums, stages = problem.numbers.tolist(), problem.stage.tolist()
    targets, progs = problem.target.tolist(), programs.tolist()
    steps = 0
    start = time.perf_counter()
    for _ in range(repeats):
        for i in range(len(progs)):  # the per-episode loop being measured
            steps += ta.reference_run_program(nums[i], stages[i], targets[i], progs[i])["steps"]
    return steps / (time.perf_counter() - start)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    batch = 64 if args.quick else args.batch
    reps_vec, reps_loop = (3, 1) if args.quick else (50, 3)
    n_tensor_loop = 16 if args.quick else 256  # episodes timed in the slow tensor loop
    gen = torch.Generator().manual_seed(0)
    problem = _problems(batch, gen)
    programs = ta.canonical_programs(problem)
    vec = vectorised_steps_per_s(problem, programs, reps_vec)
    sub = ta.index_problems(problem, torch.arange(n_tensor_loop))
    tloop = tensor_loop_steps_per_s(sub, programs[:n_tensor_loop], 1)
    loop = loop_steps_per_s(problem, programs, reps_loop)
    print(f"batch {batch}, threads {torch.get_num_threads()}, canonical programs over stages 0-2")
    print(f"{'vectorised env_step':<44}{vec:>14,.0f} steps/s")
    print(f"{'per-episode loop, same tensor env (B=1)':<44}{tloop:>14,.0f} steps/s")
    print(f"{'per-episode loop, plain-Python interpreter':<44}{loop:>14,.0f} steps/s")
    print(f"ratio vectorised / per-episode tensor loop: {vec / tloop:.1f}x")
    print(f"ratio vectorised / plain-Python interpreter: {vec / loop:.2f}x")
    return {"vectorised": vec, "tensor_loop": tloop, "loop": loop}


if __name__ == "__main__":
    main()
