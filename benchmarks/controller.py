"""Training throughput of the memory controller: batched whole sequences vs the seed's one step per call.

Measures time steps per second of *training* (forward, backward and optimiser step included) for

* batched: a batch of B copy sequences (T = 2 * max_length + 1 steps each) per update, the way
  notebook 02 trains;
* seed-shaped: the seed tutorial's call pattern at the same model size, one sample and one time
  step per forward/backward/step (its ``lstm(x.unsqueeze(0))`` with sequence length one).

and prints the ratio, single-threaded and with torch's default thread count, for the eager step
(what the notebooks run) and for the step compiled with ``torch.compile``
(:func:`memtutor.controller.compile_step`), each ratio with the same model on both sides.
The seed-shaped side is timed twice: calling ``model(x_t, state)`` per step as the seed calls its
model (each call is a one-step sequence and pays a first step's input checks), and calling the
unchecked step directly (no validation at all: the strictest baseline). The model uses the default
memory step (composed from notebook 01's equation functions); ``--fused link`` (the implementation
that trained notebook 02's cached runs) or ``--fused all`` times it with hand-written autograd nodes.

    .venv/bin/python benchmarks/controller.py              # full run (a minute or two; compiling
                                                           # takes tens of seconds the first time)
    .venv/bin/python benchmarks/controller.py --no-compile # eager rows only
    .venv/bin/python benchmarks/controller.py --quick      # tiny sizes, eager, a few seconds
    .venv/bin/python benchmarks/controller.py --fused link # the memory step of the cached runs
"""

from __future__ import annotations

import argparse
import time

import torch

from memtutor.controller import ControllerConfig, MemoryController, compile_step
from memtutor.tasks import copy_task, masked_bce_loss

WARMUP = 3  # updates (or calls) before the clock starts: allocator and, when compiled, compilation
#: ``--fused`` choices: the ``fused`` argument of MemoryController each one stands for.
FUSED_CHOICES = {"none": False, "link": ("link",), "content": ("content",), "all": True}


def _batched(model, opt, batch_size: int, max_length: int, repeats: int, gen) -> float:
    """Time steps per second for whole-sequence batched training."""
    batches = [copy_task(batch_size, max_length, max_length, 8, generator=gen) for _ in range(repeats + WARMUP)]
    steps = 0
    for i, batch in enumerate(batches):
        if i == WARMUP:
            start = time.perf_counter()
        logits, _ = model(batch.inputs)
        loss = masked_bce_loss(logits, batch.targets, batch.mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += batch.inputs.shape[0] * batch.inputs.shape[1] if i >= WARMUP else 0
    return steps / (time.perf_counter() - start)


def _seed_shaped(model, opt, calls: int, gen, *, checked: bool) -> float:
    """Time steps per second for one sample, one step, one optimiser step per call (memory carried over).

    ``checked=True`` calls ``model(x_t, state)`` as the seed calls its model, so every call is a
    sequence of one step and pays the input checks of a first step; ``checked=False`` calls the
    unchecked step (what forward runs after a sequence's first step), the strictest baseline.
    """
    state = model.initial_state(1)
    xs = torch.randint(0, 2, (calls + WARMUP, 1, 1, model.config.input_size), generator=gen).float()
    ys = torch.randint(0, 2, (calls + WARMUP, 1, 1, model.config.output_size), generator=gen).float()
    mask = torch.ones(1, 1)
    for i in range(calls + WARMUP):
        if i == WARMUP:
            start = time.perf_counter()
        if checked:
            logits, state = model(xs[i], state)
        else:
            y, state, _ = model.step(xs[i, 0], state, check=False)
            logits = y.unsqueeze(1)
        loss = masked_bce_loss(logits, ys[i], mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # like the seed, keep the memory across calls but cut the graph there
        state = type(state)(*(s.detach() for s in state[:3]), type(state.memory)(*(s.detach() for s in state.memory)))
    return calls / (time.perf_counter() - start)


def run(quick: bool, compiled: bool = True, fused: str = "none") -> list[tuple]:
    """Rows ``(step, threads, batched, seed-shaped via forward, seed-shaped unchecked)`` in steps/s;
    ``fused`` is a key of :data:`FUSED_CHOICES`."""
    cfg = ControllerConfig()
    batch_size, max_length, repeats, calls = (4, 1, 1, 5) if quick else (256, 10, 10, 400)
    default_threads = torch.get_num_threads()
    modes = ["eager", "compiled"] if compiled and not quick else ["eager"]
    rows = []
    for mode in modes:
        # --quick times one thread only: the default count can stall for seconds on a loaded 2-core machine
        for threads in [1] if quick else sorted({1, default_threads}):
            torch.set_num_threads(threads)
            gen = torch.Generator().manual_seed(0)
            torch.manual_seed(0)
            model = MemoryController(cfg, fused=FUSED_CHOICES[fused])
            if mode == "compiled":
                compile_step(model)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            batched = _batched(model, opt, batch_size, max_length, repeats, gen)
            via_forward = _seed_shaped(model, opt, calls, gen, checked=True)
            unchecked = _seed_shaped(model, opt, calls, gen, checked=False)
            rows.append((mode, threads, batched, via_forward, unchecked))
    torch.set_num_threads(default_threads)
    print(f"memory controller (H={cfg.hidden_size}, N={cfg.num_slots}, W={cfg.word_size}, R={cfg.num_reads}, "
          f"fused: {fused}), "
          f"batched: B={batch_size}, T={2 * max_length + 1}; time steps per second of training")  # fmt: skip
    print("seed-shaped = one sample, one step, one optimiser step per call: via model(x_t, state) as the seed "
          "calls its model, or via the unchecked step (strictest baseline)")  # fmt: skip
    print(f"{'step':>8} | {'threads':>7} | {'batched':>9} | {'seed-shaped':>11} | {'ratio':>6} | "
          f"{'unchecked':>9} | {'ratio':>6}")  # fmt: skip
    for mode, threads, b, f, u in rows:
        print(f"{mode:>8} | {threads:>7} | {b:>9.0f} | {f:>11.1f} | {b / f:>5.0f}x | {u:>9.1f} | {b / u:>5.0f}x")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, eager only, a few seconds")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--fused", choices=FUSED_CHOICES, default="none", help="fused autograd nodes of the step")
    args = parser.parse_args()
    run(args.quick, compiled=not args.no_compile, fused=args.fused)
