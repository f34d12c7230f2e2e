"""Time one MAML meta-training step: memtutor (vmap and task loop) vs the classic loop vs torchopt.

A meta-step = sample-free update on a fixed meta-batch of 25 sinusoid tasks (K = 10 support,
10 query points, the paper's 1-40-40-1 MLP, one inner SGD step with alpha = 0.01), the outer
backward pass and an Adam step. Contenders:

* ``memtutor vmap``   : :func:`memtutor.meta.meta_train_step` (torch.func.grad inside vmap over tasks)
* ``memtutor loop``   : the same with ``vectorize=False`` (a Python loop over tasks)
* ``classic loop``    : what most tutorials and learn2learn's MAML wrapper do: a loop over tasks,
  ``torch.autograd.grad(create_graph=True)`` for the inner step, ``functional_call`` to run the
  adapted weights
* ``torchopt MetaSGD``: torchopt's differentiable optimiser (second order only; optional, from
  ``pip install torchopt``)

Both second-order and first-order MAML are timed, at 1 thread and at torch's default thread count.
Run ``python benchmarks/maml.py`` for the table (``--quick`` for a few-second smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memtutor import meta  # noqa: E402

try:
    import torchopt
except ImportError:  # the benchmark still runs, without that column
    torchopt = None

INNER_LR = 0.01


def classic_step(model, opt, batch, first_order: bool) -> None:
    """A loop over tasks; the inner gradient by autograd.grad(create_graph=True)."""
    opt.zero_grad(set_to_none=True)
    params = dict(model.named_parameters())
    total = 0.0
    for xs, ys, xq, yq in zip(batch.x_support, batch.y_support, batch.x_query, batch.y_query, strict=True):
        loss = nn.functional.mse_loss(functional_call(model, params, (xs,)), ys)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        phi = {k: v - INNER_LR * g for (k, v), g in zip(params.items(), grads, strict=True)}
        total = total + nn.functional.mse_loss(functional_call(model, phi, (xq,)), yq)
    (total / batch.x_support.shape[0]).backward()
    opt.step()


def torchopt_step(model, opt, batch, state) -> None:
    """torchopt's MAML recipe: MetaSGD steps the module in place, recover_state_dict resets it."""
    net_state, inner_opt, inner_state = state
    opt.zero_grad(set_to_none=True)
    n = batch.x_support.shape[0]
    for xs, ys, xq, yq in zip(batch.x_support, batch.y_support, batch.x_query, batch.y_query, strict=True):
        inner_opt.step(nn.functional.mse_loss(model(xs), ys))
        (nn.functional.mse_loss(model(xq), yq) / n).backward()
        torchopt.recover_state_dict(model, net_state)
        torchopt.recover_state_dict(inner_opt, inner_state)
    opt.step()


def make_contenders(first_order: bool):
    def memtutor(vectorize):
        method = "fomaml" if first_order else "maml"
        return lambda m, o, b: meta.meta_train_step(
            m, o, b, method=method, inner_lr=INNER_LR, steps=1, vectorize=vectorize
        )

    out = {
        "memtutor vmap": (memtutor(True), None),
        "memtutor loop": (memtutor(False), None),
        "classic loop": (lambda m, o, b: classic_step(m, o, b, first_order), None),
    }
    if torchopt is not None and not first_order:
        out["torchopt MetaSGD"] = (torchopt_step, "torchopt")
    return out


def time_contender(fn, kind, batch, steps: int, repeats: int, warmup: int) -> float:
    """Median milliseconds per meta-step over ``repeats`` timed blocks of ``steps`` steps."""
    torch.manual_seed(0)
    model = meta.make_sine_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if kind == "torchopt":
        inner_opt = torchopt.MetaSGD(model, lr=INNER_LR)
        state = (
            torchopt.extract_state_dict(model, by="reference", detach_buffers=True),
            inner_opt,
            torchopt.extract_state_dict(inner_opt, by="reference"),
        )
        call = lambda: fn(model, opt, batch, state)  # noqa: E731
    else:
        call = lambda: fn(model, opt, batch)  # noqa: E731
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            call()
        times.append((time.perf_counter() - start) / steps * 1e3)
    return statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--tasks", type=int, default=25, help="tasks per meta-batch (paper: 25)")
    args = parser.parse_args(argv)
    steps, repeats, warmup = (1, 1, 1) if args.quick else (20, 3, 2)
    n_tasks = 5 if args.quick else args.tasks
    batch = meta.sample_sinusoid_tasks(n_tasks, 10, 10, generator=torch.Generator().manual_seed(0))
    default_threads = torch.get_num_threads()
    if torchopt is None:
        print("torchopt is not installed: its column is skipped (pip install torchopt)")
    results = {}
    # --quick: one thread only (the default count can stall for seconds on a busy 2-core machine)
    for threads in [1] if args.quick else sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for first_order in (False, True):
            label = "first order" if first_order else "second order"
            rows = {
                name: time_contender(fn, kind, batch, steps, repeats, warmup)
                for name, (fn, kind) in make_contenders(first_order).items()
            }
            results[(threads, label)] = rows
            print(f"\n{label} MAML, {n_tasks} tasks, {threads} thread(s): ms per meta-step")
            for name, ms in rows.items():
                print(f"  {name:18s} {ms:8.2f} ms")
            base = rows["memtutor vmap"]
            for name, ms in rows.items():
                if name != "memtutor vmap":
                    print(f"  speed-up of memtutor vmap over {name}: {ms / base:.1f}x")
    torch.set_num_threads(default_threads)
    return results


if __name__ == "__main__":
    main()
