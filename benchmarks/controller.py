"""Training throughput of the memory controller: batched whole sequences vs the seed's one step per call.

Measures time steps per second of *training* (forward, backward and optimiser step included) for

* batched: a batch of B copy sequences (T = 2 * max_length + 1 steps each) per update, the way
  notebook 02 trains;
* seed-shaped: the seed tutorial's call pattern at the same model size, one sample and one time
  step per forward/backward/step (its ``lstm(x.unsqueeze(0))`` with sequence length one).

and prints the ratio, single-threaded and with torch's default thread count.

    .venv/bin/python benchmarks/controller.py            # full run (about a minute)
    .venv/bin/python benchmarks/controller.py --quick    # tiny sizes, a few seconds
"""

from __future__ import annotations

import argparse
import time

import torch

from memtutor.controller import ControllerConfig, MemoryController
from memtutor.tasks import copy_task, masked_bce_loss


def _batched(model, opt, batch_size: int, max_length: int, repeats: int, gen) -> float:
    """Time steps per second for whole-sequence batched training."""
    batches = [copy_task(batch_size, max_length, max_length, 8, generator=gen) for _ in range(repeats + 1)]
    steps = 0
    for i, batch in enumerate(batches):
        if i == 1:  # the first update is a warm-up
            start = time.perf_counter()
        logits, _ = model(batch.inputs)
        loss = masked_bce_loss(logits, batch.targets, batch.mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += batch.inputs.shape[0] * batch.inputs.shape[1] if i >= 1 else 0
    return steps / (time.perf_counter() - start)


def _seed_shaped(model, opt, calls: int, gen) -> float:
    """Time steps per second for one sample, one step, one optimiser step per call (memory carried over)."""
    state = model.initial_state(1)
    xs = torch.randint(0, 2, (calls + 1, 1, 1, model.config.input_size), generator=gen).float()
    ys = torch.randint(0, 2, (calls + 1, 1, 1, model.config.output_size), generator=gen).float()
    mask = torch.ones(1, 1)
    for i in range(calls + 1):
        if i == 1:
            start = time.perf_counter()
        logits, state = model(xs[i], state)
        loss = masked_bce_loss(logits, ys[i], mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # like the seed, keep the memory across calls but cut the graph there
        state = type(state)(*(s.detach() for s in state[:3]), type(state.memory)(*(s.detach() for s in state.memory)))
    return calls / (time.perf_counter() - start)


def run(quick: bool) -> list[tuple[int, float, float, float]]:
    cfg = ControllerConfig()
    batch_size, max_length, repeats, calls = (4, 1, 1, 5) if quick else (256, 10, 5, 300)
    default_threads = torch.get_num_threads()
    rows = []
    # --quick times one thread only: the default count can stall for seconds on a loaded 2-core machine
    for threads in [1] if quick else sorted({1, default_threads}):
        torch.set_num_threads(threads)
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model = MemoryController(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        batched = _batched(model, opt, batch_size, max_length, repeats, gen)
        single = _seed_shaped(model, opt, calls, gen)
        rows.append((threads, batched, single, batched / single))
    torch.set_num_threads(default_threads)
    print(f"memory controller (H={cfg.hidden_size}, N={cfg.num_slots}, W={cfg.word_size}, R={cfg.num_reads}), "
          f"batched: B={batch_size}, T={2 * max_length + 1}")  # fmt: skip
    print(f"{'threads':>7} | {'batched steps/s':>15} | {'seed-shaped steps/s':>19} | {'ratio':>7}")
    for threads, b, s, r in rows:
        print(f"{threads:>7} | {b:>15.0f} | {s:>19.1f} | {r:>6.0f}x")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    args = parser.parse_args()
    run(args.quick)
