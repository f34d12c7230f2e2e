"""Benchmark: one training update of every lesson, on the CPU and on CUDA when present.

Each lesson's training path is run for a few updates on each device with the package's own
functions (the ones the notebooks' drivers call), at the notebooks' default sizes:

* 01 -- one batched DNC memory step, forward and backward (batch 64, N = W = 16, R = 4);
* 02 -- one Adam update of the memory controller and of the LSTM baseline on the copy task;
* 03 -- one ``sample`` + ``update_priorities`` of the prioritized replay buffer (10^6 items);
* 04 -- one MAML meta-update on 25 sinusoid tasks (K = 10, one inner step);
* 05 -- one continual-learning run over the five class-IL digit tasks (one epoch per task);
* 06 -- one policy-gradient update of the tool agent (256 episodes);
* 07 -- one MemUP batch (detector scoring, memory rollouts, predictor) at L = 1,000.

It reports wall time and process CPU time per update (the machines are shared: CPU time is the
steadier figure) and checks that every loss is finite. Nothing here needs a GPU: without CUDA the
CUDA rows are left out.

    .venv/bin/python benchmarks/devices.py                  # CPU, and CUDA when present
    .venv/bin/python benchmarks/devices.py --quick          # tiny sizes, a smoke test
    .venv/bin/python benchmarks/devices.py --json out.json  # the table as JSON too
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from memtutor import continual, controller, memory, memup, meta, replay, tasks, tool_agent
from memtutor.utils import set_threads

#: A lesson's workload: ``make(device, quick)`` returns ``(what, step)``, ``step()`` runs one update
#: and returns its loss (a float, or ``nan`` where the update has none).
Workload = Callable[[torch.device, bool], tuple[str, Callable[[], float]]]


def _memory_step(device: torch.device, quick: bool):
    batch = 8 if quick else 64
    bank = memory.MemoryBank(memory.MemoryConfig(num_slots=16, word_size=16, num_reads=4))
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(batch, bank.interface_size, generator=g).to(device).requires_grad_()
    state = bank.initial_state(batch, device=device)

    def step() -> float:
        reads, new = bank(raw, state)
        loss = reads.square().mean() + new.memory.square().mean()
        loss.backward()
        return loss.item()

    return f"memory step, batch {batch}", step


def _copy_update(kind: str):
    def make(device: torch.device, quick: bool):
        torch.manual_seed(0)
        cfg = controller.ControllerConfig()
        if kind == "controller":
            model: torch.nn.Module = controller.MemoryController(cfg)
        else:
            model = controller.LSTMBaseline(
                cfg.input_size, cfg.output_size, controller.baseline_hidden_size(cfg)
            )  # the parameter-matched baseline of notebook 02
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator(device=device).manual_seed(1)
        batch = 4 if quick else 32

        def step() -> float:
            b = tasks.copy_task(batch, 1, 10, 8, generator=g, device=device)
            logits, _ = model(b.inputs)
            loss = tasks.masked_bce_loss(logits, b.targets, b.mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.item()

        return f"copy task, {kind}, batch {batch}", step

    return make


def _replay_step(device: torch.device, quick: bool):
    capacity, batch = (1_000, 32) if quick else (1_000_000, 256)
    buf = replay.PrioritizedReplay(capacity, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    buf.add({"x": torch.randn(capacity, 4, device=device)}, torch.rand(capacity, device=device, generator=g))

    def step() -> float:
        batch_items, idx, w = buf.sample(batch, beta=0.4, generator=g)
        buf.update_priorities(idx, torch.rand(batch, device=device, generator=g))
        return float("nan")

    return f"replay sample+update, {capacity:,} items, batch {batch}", step


def _maml_update(device: torch.device, quick: bool):
    torch.manual_seed(0)
    model = meta.make_sine_mlp().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator(device=device).manual_seed(0)
    n = 4 if quick else 25

    def step() -> float:
        b = meta.sample_sinusoid_tasks(n, 10, 10, generator=g, device=device)
        return meta.meta_train_step(model, opt, b, method="maml", inner_lr=0.01, steps=1).item()

    return f"MAML meta-update, {n} tasks", step


def _continual_run(device: torch.device, quick: bool):
    stream = continual.make_task_stream("class", num_tasks=2 if quick else 5, seed=0, device=device)
    cfg = replace(continual.ContinualConfig(), epochs=1)

    def step() -> float:
        out = continual.train_stream(stream, {"replay": "prioritized", "memory": True, "meta": False}, cfg)
        return float(out["R"][-1].mean())

    return f"class-IL run, {stream.num_tasks} tasks x 1 epoch", step


def _tool_update(device: torch.device, quick: bool):
    cfg = replace(tool_agent.ToolAgentConfig(), max_updates=1, eval_every=10**6, eval_size=16)
    if quick:
        cfg = replace(cfg, batch_size=16)

    def step() -> float:
        out = tool_agent.train_agent(cfg, device=device)
        return float(out["updates"])

    return f"tool agent, 1 update of {cfg.batch_size} episodes", step


def _memup_batch(device: torch.device, quick: bool):
    cfg = replace(memup.MemUPConfig(), batches=1, batch=8 if quick else 64, n_filler=50 if quick else 1000)

    def step() -> float:
        out = memup.train_memup(cfg, seed=0, device=device)
        losses = [v for k, v in out.items() if "loss" in k and torch.is_tensor(v)]
        return float(losses[0].float().mean()) if losses else float("nan")

    return f"MemUP, 1 batch of {cfg.batch} at L = {cfg.n_filler}", step


LESSONS: dict[str, Workload] = {
    "01": _memory_step,
    "02 controller": _copy_update("controller"),
    "02 LSTM": _copy_update("lstm"),
    "03": _replay_step,
    "04": _maml_update,
    "05": _continual_run,
    "06": _tool_update,
    "07": _memup_batch,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_lesson(make: Workload, device: torch.device, quick: bool, updates: int) -> dict:
    """Warm up once, then time ``updates`` updates; wall and CPU seconds per update."""
    what, step = make(device, quick)
    loss = step()  # warm-up: allocations, kernels, caches
    _sync(device)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(updates):
        loss = step()
    _sync(device)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"what": what, "device": str(device), "updates": updates, "wall_ms": 1e3 * wall / updates,
            "cpu_ms": 1e3 * cpu / updates, "loss": loss}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    p.add_argument("--updates", type=int, default=None, help="timed updates per lesson (default 5; quick 1)")
    p.add_argument("--lessons", nargs="+", default=None, choices=sorted(LESSONS), help="default: all")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default $MEMTUTOR_THREADS or 1)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    set_threads(args.threads)
    devices = [torch.device(d) for d in (args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))]
    updates = args.updates or (1 if args.quick else 5)
    rows, failed = [], []
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {updates} timed update(s) after one warm-up"
    )
    print(f"{'lesson':<14} {'device':<7} {'wall ms':>10} {'CPU ms':>10} {'loss':>9}  what")
    for name in args.lessons or LESSONS:
        for device in devices:
            try:
                row = {"lesson": name, **time_lesson(LESSONS[name], device, args.quick, updates)}
            except Exception as err:  # report every lesson, then fail
                failed.append(f"{name} on {device}: {type(err).__name__}: {err}")
                print(f"{name:<14} {str(device):<7} FAILED {type(err).__name__}: {err}")
                continue
            if not (math.isnan(row["loss"]) or math.isfinite(row["loss"])):
                failed.append(f"{name} on {device}: loss {row['loss']}")
            rows.append(row)
            print(f"{name:<14} {row['device']:<7} {row['wall_ms']:>10.2f} {row['cpu_ms']:>10.2f} "
                  f"{row['loss']:>9.4g}  {row['what']}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows, "failed": failed}, f, indent=1)
    for line in failed:
        print("FAILED", line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
