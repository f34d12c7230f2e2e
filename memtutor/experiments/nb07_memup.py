"""Notebook 07's experiments: MemUP against truncated and full BPTT on the copy task.

The lesson module :mod:`memtutor.memup` holds the copy task, the detector, the top-K target
selection, the memory and predictor, MemUP's update and training loop and the truncated-BPTT
baseline. This module runs them as the notebook does:

* :func:`draw_memup`: the lesson's diagram of one MemUP update;
* :func:`train_method` trains one of :data:`MEMUP_METHODS` from a seed;
* the cached runs: :func:`base_config` (the notebook's ``parameters`` cell as a
  :class:`~memtutor.memup.MemUPConfig`), :func:`run_name`, :func:`run_config` (everything a run
  depends on, stored with it), :func:`training_minutes` and :func:`run`, which loads a run or
  trains it;
* :func:`evaluate_method`: held-out recall accuracy of a trained run;
* the equal-budget study: every method of :data:`EQUAL_METHODS` trained for MemUP's number of
  optimiser steps (:func:`memup_step_budget`, :func:`train_equal_steps`, cached by
  :func:`run_equal`, from several training seeds), with validation accuracy recorded against
  steps and wall time, the learning rate chosen on validation sequences (:func:`choose_lr`), test
  predictions (:func:`evaluate_equal`), Wilson intervals (:func:`wilson_interval`) and the mean
  and sd over seeds (:func:`mean_sd`);
* the cost of one update pass: :func:`saved_tensor_bytes`, :class:`PeakSavedBytes`,
  :func:`peak_allocated_bytes` (the allocator's peak), :func:`update_cost`, :func:`measure_cost`;
* the notebook's text tables: :func:`accuracy_table`, :func:`cost_table`, :func:`equal_table`,
  :func:`equal_seed_table`;
* the noisy copy task (:func:`~memtutor.memup.noisy_copy_task`): the target selections of
  :data:`~memtutor.memup.NOISY_DETECTORS` (three, and two controls) trained from several seeds (:func:`noisy_config`,
  :func:`run_noisy`), their test accuracy on the recall and the echo steps (:func:`evaluate_noisy`),
  the surprise each detector assigns (:func:`noisy_surprise`) and :func:`noisy_table`.

Seeding follows :mod:`memtutor.memup`: a run with training seed ``s`` starts from
``torch.manual_seed(s)`` and draws its sequences from ``generator(s, "memup/train-data")`` and
MemUP's random targets from ``generator(s, "memup/random-targets")``. The held-out sequences come
from a generator of their own (the notebook's ``TEST_SEED``).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import re
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import torch
from matplotlib.figure import Figure

from memtutor import memup as mu
from memtutor import utils
from memtutor.diagrams import HIGHLIGHT, arrow, box, canvas, note
from memtutor.utils import check_positive_int, load_or_train, timer, wilson_interval

__all__ = [
    "draw_memup",
    "MEMUP_METHODS",
    "NOTEBOOK_PARAMETERS",
    "SECONDS_PER_STEP",
    "train_method",
    "base_config",
    "run_name",
    "run_config",
    "training_minutes",
    "run",
    "recipe_name",
    "run_recipe",
    "choose_recipe",
    "evaluate_method",
    "saved_tensor_bytes",
    "PeakSavedBytes",
    "peak_allocated_bytes",
    "update_cost",
    "measure_cost",
    "COST_MINUTES",
    "run_cost",
    "rss_of_update",
    "measure_rss",
    "RSS_MINUTES",
    "run_rss",
    "rss_table",
    "accuracy_table",
    "cost_table",
    "EQUAL_METHODS",
    "EQUAL_LABELS",
    "memup_step_budget",
    "equal_steps_minutes",
    "train_equal_steps",
    "equal_name",
    "run_equal",
    "evaluate_equal",
    "predict_equal",
    "choose_lr",
    "wilson_interval",
    "equal_table",
    "equal_seed_table",
    "mean_sd",
    "NOISY_LABELS",
    "noisy_config",
    "noisy_name",
    "noisy_minutes",
    "run_noisy",
    "noisy_nets",
    "evaluate_noisy",
    "noisy_surprise",
    "noisy_table",
]

#: What notebook 07 trains: MemUP with the detector's top-K targets, MemUP with random targets
#: (the ablation), truncated BPTT (r = ``cfg.rollout``) and full BPTT (r = T).
MEMUP_METHODS = ("memup", "random", "tbptt", "bptt")

#: The names of the notebook's ``parameters`` cell that set the trained runs, and the
#: :class:`~memtutor.memup.MemUPConfig` field each one sets (``TRAIN_SEED`` is stored beside them).
NOTEBOOK_PARAMETERS = {
    "N_HEAD": "n_head",
    "N_FILLER": "n_filler",
    "ROLLOUT": "rollout",
    "K": "k",
    "PRED_EVERY": "pred_every",
    "HIDDEN": "hidden",
    "BATCH": "batch",
    "BATCHES": "batches",
    "WARMUP_BATCHES": "warmup_batches",
    "WARMUP_FILLER": "warmup_filler",
    "LR": "lr",
}

#: Training seconds per sequence step of a batch of 64, by method, measured on one CPU core at the
#: notebook's sizes (HIDDEN = 128, r = 20, K = 3): a MemUP batch at L = 1000 takes about 0.87 s,
#: a truncated-BPTT batch 0.28 s, a full-BPTT batch 0.53 s.
SECONDS_PER_STEP = {"memup": 0.87e-3, "random": 0.87e-3, "tbptt": 0.28e-3, "bptt": 0.53e-3}


def _check_method(method: str) -> str:
    if method not in MEMUP_METHODS:
        raise ValueError(f"method must be one of {MEMUP_METHODS}, got {method!r}")
    return method


def train_method(method: str, cfg: mu.MemUPConfig, seed: int, progress: bool = False) -> dict:
    """Train one of :data:`MEMUP_METHODS` from ``seed`` (initial weights and data): 'memup',
    'random' (MemUP with random targets), 'tbptt' (r = ``cfg.rollout``) or 'bptt' (r = T)."""
    _check_method(method)
    if method in ("memup", "random"):
        selection = "topk" if method == "memup" else "random"
        return mu.train_memup(replace(cfg, selection=selection), seed, progress=progress)
    rollout = cfg.rollout if method == "tbptt" else cfg.length
    return mu.train_tbptt(cfg, seed, rollout=rollout, progress=progress)


# ----------------------------------------------------------------------------- the cached runs


def base_config(parameters: Mapping[str, Any]) -> mu.MemUPConfig:
    """The :class:`~memtutor.memup.MemUPConfig` of the notebook's parameters: reads the names of
    :data:`NOTEBOOK_PARAMETERS` (``N_HEAD``, ..., ``LR``) from ``parameters`` (the notebook passes
    ``globals()``); every other field keeps its default."""
    missing = [name for name in NOTEBOOK_PARAMETERS if name not in parameters]
    if missing:
        raise ValueError(f"parameters lack {missing}")
    return mu.MemUPConfig(**{field: parameters[name] for name, field in NOTEBOOK_PARAMETERS.items()})


def run_name(method: str, cfg: mu.MemUPConfig, base: mu.MemUPConfig, seed: int | None = None) -> str:
    """The cached file of a run: ``07_<method>_L<n_filler>.pt``, with ``_fb<bias>`` when the
    forget bias differs from ``base``'s, and ``_seed<seed>`` when ``seed`` is given (the runs of
    the extra training seeds)."""
    _check_method(method)
    suffix = "" if cfg.forget_bias == base.forget_bias else f"_fb{cfg.forget_bias:g}"
    if seed is not None:
        suffix += f"_seed{seed}"
    return f"07_{method}_L{cfg.n_filler}{suffix}.pt"


def run_config(method: str, cfg: mu.MemUPConfig, seed: int) -> dict[str, Any]:
    """Everything a run's result depends on, stored with it: the method, the training seed and
    every :class:`~memtutor.memup.MemUPConfig` field (filler length and forget bias included)."""
    return {"method": _check_method(method), "train_seed": seed, "config": cfg}


def training_minutes(method: str, cfg: mu.MemUPConfig) -> float:
    """Estimated training time of a run on one CPU core, in minutes (:data:`SECONDS_PER_STEP`
    times the sequence steps of its batches). MemUP at L = 1000 with the notebook's defaults: 3.9."""
    steps = sum(n_filler + 2 * cfg.n_head for n_filler in mu.filler_schedule(cfg)) * cfg.batch / 64
    return max(0.1, math.ceil(SECONDS_PER_STEP[_check_method(method)] * steps / 6) / 10)


def run(
    method: str,
    n_filler: int,
    base: mu.MemUPConfig,
    *,
    seed: int,
    forget_bias: float | None = None,
    retrain: bool = False,
    progress: bool = True,
    seed_in_name: bool = False,
) -> tuple[mu.MemUPConfig, dict, float]:
    """Load the cached run of ``method`` at ``n_filler`` fillers (``base`` otherwise, its forget
    bias unless ``forget_bias`` is given) trained from ``seed``, or train it.

    The cached file records :func:`run_config`; a file made with another configuration retrains
    (with a printed reason) when :func:`training_minutes` is at most 3, and raises a ``ValueError``
    naming the differing fields otherwise (``retrain=True`` trains it). ``seed_in_name`` caches
    it under :func:`run_name` with the seed (a run of an extra training seed). Returns
    ``(config, result, seconds)``.
    """
    changes: dict[str, Any] = {"n_filler": n_filler}
    if forget_bias is not None:
        changes["forget_bias"] = forget_bias
    cfg = replace(base, **changes)
    with timer() as t:
        result = load_or_train(
            run_name(method, cfg, base, seed if seed_in_name else None),
            run_config(method, cfg, seed),
            lambda: train_method(method, cfg, seed, progress=progress),
            minutes=training_minutes(method, cfg),
            retrain=retrain,
        )
    return cfg, result, t["seconds"]


def recipe_name(n_filler: int, lr: float, warmup_batches: int, seed: int) -> str:
    """The cached file of a MemUP run with a recipe other than the notebook's:
    ``07_memup_L<n_filler>_lr<lr>_wu<warmup_batches>_seed<seed>.pt``."""
    return f"07_memup_L{n_filler}_lr{lr:g}_wu{warmup_batches}_seed{seed}.pt"


def run_recipe(
    n_filler: int,
    base: mu.MemUPConfig,
    *,
    lr: float,
    warmup_batches: int,
    seed: int,
    retrain: bool = False,
    progress: bool = True,
    seed_in_name: bool = False,
) -> tuple[mu.MemUPConfig, dict, float]:
    """MemUP at ``n_filler`` fillers with Adam ``lr`` and ``warmup_batches`` curriculum batches
    (``base`` otherwise), trained from ``seed``: loaded or trained. ``base``'s own recipe is
    :func:`run` (its cached file, ``seed_in_name`` as there); any other recipe is cached under
    :func:`recipe_name`. Returns ``(config, result, seconds)``."""
    if (lr, warmup_batches) == (base.lr, base.warmup_batches):
        return run("memup", n_filler, base, seed=seed, retrain=retrain, progress=progress, seed_in_name=seed_in_name)
    cfg = replace(base, n_filler=n_filler, lr=lr, warmup_batches=warmup_batches)
    with timer() as t:
        result = load_or_train(
            recipe_name(n_filler, lr, warmup_batches, seed),
            run_config("memup", cfg, seed),
            lambda: train_method("memup", cfg, seed, progress=progress),
            minutes=training_minutes("memup", cfg),
            retrain=retrain,
        )
    return cfg, result, t["seconds"]


def choose_recipe(val_acc: Mapping[tuple[float, int], float]) -> tuple[float, int]:
    """The recipe ``(lr, warmup_batches)`` with the best validation accuracy; on a tie the smaller
    learning rate, then the shorter curriculum (none before some: the simpler recipe)."""
    if not val_acc:
        raise ValueError("val_acc must not be empty")
    return max(val_acc, key=lambda r: (val_acc[r], -r[0], -r[1]))


@torch.no_grad()
def evaluate_method(
    method: str, state: Mapping, cfg: mu.MemUPConfig, n_filler: int, n_seqs: int, generator: torch.Generator
) -> float:
    """Held-out recall accuracy of a trained ``state`` on ``n_seqs`` fresh sequences with
    ``n_filler`` fillers (may differ from the training length)."""
    _check_method(method)
    x, y = mu.memup_copy_task(n_seqs, cfg.n_head, n_filler, generator)
    steps = mu.recall_mask(cfg.n_head, n_filler).nonzero().squeeze(1)  # (H,)
    if method in ("memup", "random"):
        nets = mu.build_memup(cfg)
        for name in ("memory", "predictor"):
            nets[name].load_state_dict(state[name])
        logits = mu.memup_logits(nets["memory"], nets["predictor"], x, steps)
    else:
        model = mu.build_recurrent(cfg)
        model.load_state_dict({k: v for k, v in state.items() if k != "loss"})
        logits = mu.recurrent_logits(model, x, steps)
    return mu.recall_accuracy(logits, y[:, steps])


# ----------------------------------------------------------------------------- cost


class _SavedBytes:
    """Counts the bytes autograd keeps for backward, each storage once."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        self.storages[s.data_ptr()] = s.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``fn`` (which builds a graph and returns a loss) and count the bytes of the distinct
    storages autograd saved for the backward pass. Returns (loss, bytes).

    Works on any device, including CPU where tracemalloc cannot see torch's allocator.
    """
    counter = _SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
        loss = fn()
    return loss, counter.total


def peak_allocated_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn()`` and return ``(its result, the peak of torch's CPU allocator during it)``, in
    bytes above what was allocated when it started.

    The peak is read from the allocation and free events of ``torch.profiler`` with
    ``profile_memory=True`` (their running sum); blocks allocated before ``fn`` and freed inside
    it are not seen, so the peak may be over-estimated by at most those, never under-estimated.
    It counts every tensor torch allocates (activations, gradients, optimiser state,
    temporaries), not the interpreter's own memory.
    """
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Memory block of unknown size.*")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    total = peak = 0
    for e in events:
        if getattr(e.device_type(), "name", "") == "CPU":
            total += e.nbytes()
            peak = max(peak, total)
    return out, peak


class PeakSavedBytes:
    """A ``run_forward`` for :func:`~memtutor.memup.memup_update` and
    :func:`~memtutor.memup.tbptt_update`: runs each loss closure under :func:`saved_tensor_bytes`
    and keeps the largest count in ``bytes``."""

    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        loss, n = saved_tensor_bytes(fn)
        self.bytes = max(self.bytes, n)
        return loss


def _update_fn(cfg: mu.MemUPConfig, method: str, seed: int) -> Callable[[mu.RunForward | None], None]:
    """One update pass of ``method`` on a fixed batch: ``update(run_forward)``; seeded weights."""
    torch.manual_seed(seed)  # the initial weights
    data = utils.generator(seed, mu.TRAIN_DATA_SEED)
    x, y = mu.memup_copy_task(cfg.batch, cfg.n_head, cfg.n_filler, data)
    if method == "memup":
        nets, det_ema, opts = mu.make_memup(cfg)

        def update(run_forward: mu.RunForward | None) -> None:
            mu.memup_update(nets, det_ema, opts, x, y, cfg, data, run_forward)

        return update
    if method == "bptt":
        model = mu.build_recurrent(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

        def update_bptt(run_forward: mu.RunForward | None) -> None:
            mu.tbptt_update(model, opt, x, y, x.shape[1], cfg.clip, run_forward)

        return update_bptt
    if method == "tbptt":
        model_t = mu.build_recurrent(cfg)
        opt_t = torch.optim.Adam(model_t.parameters(), lr=cfg.lr)

        def update_tbptt(run_forward: mu.RunForward | None) -> None:
            mu.tbptt_update(model_t, opt_t, x, y, cfg.rollout, cfg.clip, run_forward)

        return update_tbptt
    raise ValueError(f"method must be 'memup', 'bptt' or 'tbptt', got {method!r}")


def _memory_of_update(
    cfg: mu.MemUPConfig, method: str, seed: int, threads: int | None = None, flush_denormal: bool | None = None
) -> tuple[int, int]:
    """``(saved_bytes, peak_bytes)`` of a first update pass (see :func:`update_cost`)."""
    if threads is not None:
        torch.set_num_threads(threads)
    if flush_denormal is not None:
        torch.set_flush_denormal(flush_denormal)
    update = _update_fn(cfg, method, seed)
    saved = PeakSavedBytes()
    _, peak = peak_allocated_bytes(lambda: update(saved))
    return saved.bytes, peak


def update_cost(
    cfg: mu.MemUPConfig,
    method: str,
    seed: int = 0,
    repeats: int = 1,
    *,
    isolate: bool = False,
    memory: bool = True,
) -> dict[str, float]:
    """Time and memory of one update pass over a batch of ``cfg.length`` steps.

    ``method``: 'memup' (every rollout of :func:`~memtutor.memup.memup_update`) or 'bptt' (one
    full-BPTT step). ``seed`` sets the weights and the batch. A first pass (it also creates the
    optimiser state, a few parameter-sized tensors whatever T) counts ``saved_bytes``, the peak
    bytes autograd saves for one backward pass, and ``peak_bytes``, the peak of torch's CPU
    allocator during the pass above what was allocated before it (:func:`peak_allocated_bytes`).
    ``isolate=True`` makes that pass in a fresh process (the profiler's records of a long pass take
    far more memory than the pass itself; they go with the process; :func:`measure_cost` runs whole
    measurements in fresh processes instead); ``memory=False`` skips that pass (both memory
    figures NaN: a timing-only control). ``seconds`` is the median of
    ``repeats`` timed passes after a warm-up pass (none with ``repeats=0``: memory only, ``seconds``
    is NaN).
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 0:
        raise ValueError(f"repeats must be an int >= 0, got {repeats!r}")
    if method not in ("memup", "bptt"):
        raise ValueError(f"method must be 'memup' or 'bptt', got {method!r}")
    update = _update_fn(cfg, method, seed)
    args = (cfg, method, seed, torch.get_num_threads(), _flush_denormal_now())
    if not memory:
        saved_bytes, peak = math.nan, math.nan
    elif isolate:
        with _fresh_processes(1) as fresh:
            saved_bytes, peak = fresh.submit(_memory_of_update, *args).result()
    else:
        saved_bytes, peak = _memory_of_update(cfg, method, seed)
    times = []
    if repeats:
        update(None)  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        update(None)
        times.append(time.perf_counter() - t0)
    seconds = sorted(times)[len(times) // 2] if times else math.nan
    return {"seconds": seconds, "saved_bytes": saved_bytes, "peak_bytes": peak}


def _flush_denormal_now() -> bool:
    """Whether denormal floats are flushed to zero now (read without changing it)."""
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # a denormal float32
    return bool((tiny * 1.0).item() == 0.0)


#: The profiler's start and stop lines (``USDT: ... SyncActivityProfilerHandler``) that a worker
#: writes to its standard error: dropped from what :func:`_fresh_processes` passes on.
_PROFILER_LOG = re.compile(r"SyncActivityProfilerHandler|^USDT:")


def _send_stderr_to(path: str) -> None:
    """A worker's initialiser: its standard error (file descriptor 2, where the C++ side writes)
    goes to the file ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(fd, 2)
    os.close(fd)


@contextlib.contextmanager
def _fresh_processes(tasks_per_child: int) -> Any:
    """A one-worker ``ProcessPoolExecutor`` of the "spawn" context whose worker is replaced after
    ``tasks_per_child`` tasks (a worker that dies raises instead of hanging). The workers' standard
    error is captured; on exit, every line of it but the profiler's start and stop lines is written
    to this process's ``sys.stderr``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    fd, path = tempfile.mkstemp(prefix="memtutor-stderr-", suffix=".log")
    os.close(fd)
    try:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            1, mp_context=context, max_tasks_per_child=tasks_per_child, initializer=_send_stderr_to, initargs=(path,)
        ) as pool:
            yield pool
    finally:
        with open(path, errors="replace") as f:
            kept = [line for line in f if line.strip() and not _PROFILER_LOG.search(line)]
        os.remove(path)
        if kept:
            sys.stderr.write("".join(kept))


def _status_kib(field: str) -> int | None:
    """A field of ``/proc/self/status`` in KiB (``VmRSS``: resident now, ``VmHWM``: its peak);
    None where there is no such file (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            found = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set size to its current one (Linux: ``5`` written to
    ``/proc/self/clear_refs``). False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _maxrss_bytes() -> int:
    """``getrusage``'s peak resident set size of this process, in bytes (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else 1024 * peak


def rss_of_update(
    cfg: mu.MemUPConfig, method: str, seed: int = 0, threads: int | None = None, flush_denormal: bool | None = None
) -> dict[str, float]:
    """Resident memory of a first update pass of ``method`` ('memup', 'bptt' or 'tbptt', r =
    ``cfg.rollout``) over a batch of ``cfg.batch`` sequences of ``cfg.length`` steps, in *this*
    process (call it in a fresh one: :func:`measure_rss`).

    The weights, the batch and the optimiser are made first; then the peak resident set size is
    reset to the current one (Linux) and the pass runs (creating the optimiser state too).
    ``rss_bytes`` is the peak resident set size during the pass minus the resident size just before
    it: every byte the pass made resident (torch's allocations, the allocator's and the C library's
    caching, the interpreter), without a profiler. Where the peak cannot be reset (not Linux),
    ``getrusage``'s peak after the pass minus its peak before it, a lower bound (``exact`` False).
    ``saved_bytes``: the peak bytes autograd saved for one backward pass (:class:`PeakSavedBytes`);
    ``file_bytes``: how much of the resident memory added by the pass is file pages (the library code
    the pass ran for the first time, read from ``RssFile``; 0 where not Linux)."""
    if threads is not None:
        torch.set_num_threads(threads)
    if flush_denormal is not None:
        torch.set_flush_denormal(flush_denormal)
    update = _update_fn(cfg, method, seed)
    saved = PeakSavedBytes()
    gc.collect()
    exact = _reset_peak_rss()
    before = 1024 * (_status_kib("VmRSS") or 0) if exact else _maxrss_bytes()
    file_before = _status_kib("RssFile") or 0
    update(saved)
    after = 1024 * (_status_kib("VmHWM") or 0) if exact else _maxrss_bytes()
    file_pages = 1024 * ((_status_kib("RssFile") or 0) - file_before)
    return {
        "saved_bytes": float(saved.bytes),
        "rss_bytes": float(after - before),
        "file_bytes": float(file_pages),
        "exact": float(exact),
    }


def measure_rss(
    base: mu.MemUPConfig,
    lengths: Mapping[str, Iterable[int]],
    *,
    batch: int,
    seed: int = 0,
    repeats: int = 1,
    progress: bool = False,
) -> dict[tuple[str, int], dict[str, Any]]:
    """:func:`rss_of_update` of each method of ``lengths`` (e.g. ``{"memup": (300, 10000), "bptt":
    (300,)}``) at each of its sequence lengths T (``base`` with ``T - 2H`` fillers and ``batch``
    sequences, denormal floats flushed to zero), each in a fresh process of its own, ``repeats``
    times (the processes of one measurement interleaved with the others'). Keys ``(method, T)``; each
    value is the measurement with the median ``rss_bytes`` of its repeats (the lower middle one for
    an even count), with ``rss_runs``, the ``rss_bytes`` of every repeat."""
    repeats = check_positive_int(repeats, "repeats")
    jobs = [(method, T) for _ in range(repeats) for method, Ts in lengths.items() for T in Ts]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with _fresh_processes(1) as pool:
        for method, T in utils.progress(jobs, enabled=progress, desc="resident memory"):
            cfg = replace(base, n_filler=T - 2 * base.n_head, batch=batch)
            one = pool.submit(rss_of_update, cfg, method, seed, torch.get_num_threads(), True).result()
            runs.setdefault((method, T), []).append(one)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for key, ms in runs.items():
        ordered = sorted(ms, key=lambda m: m["rss_bytes"])
        out[key] = {**ordered[(len(ordered) - 1) // 2], "rss_runs": [m["rss_bytes"] for m in ms]}
    return out


#: Estimated minutes of :func:`run_rss` at notebook 07's sizes (three times eleven fresh processes).
RSS_MINUTES = 6.0


def _cached_measurement(
    name: str,
    config: Mapping[str, Any],
    measure: Callable[[], Mapping[tuple[str, int], Any]],
    minutes: float,
    retrain: bool,
) -> tuple[dict[tuple[str, int], dict[str, Any]], dict[str, Any]]:
    """``measure()`` (keys ``(method, T)``) cached as ``name`` with ``config``, and where it was made:
    ``{"torch": version, "threads": n}`` (the file stores the keys as ``"method/T"``)."""

    def run() -> dict:
        where = {"torch": str(torch.__version__), "threads": torch.get_num_threads()}
        return {"where": where, **{f"{method}/{T}": values for (method, T), values in measure().items()}}

    result = dict(load_or_train(name, config, run, minutes=minutes, retrain=retrain))
    where = dict(result.pop("where"))
    return {(key.split("/")[0], int(key.split("/")[1])): dict(values) for key, values in result.items()}, where


def run_rss(
    base: mu.MemUPConfig,
    lengths: Mapping[str, Iterable[int]],
    *,
    batch: int,
    seed: int = 0,
    repeats: int = 3,
    retrain: bool = False,
    progress: bool = True,
) -> tuple[dict[tuple[str, int], dict[str, Any]], dict[str, Any]]:
    """:func:`measure_rss` (``repeats`` fresh processes per measurement, the median kept), cached as
    ``07_rss_of_update.pt`` with what it measures (the methods and lengths, the batch, the seed, the
    repeats, every config field): measured again when any of them differs. Returns the measurements,
    keyed ``(method, T)``, and where they were made: ``{"torch": version, "threads": n}``."""
    lengths = {method: [int(T) for T in Ts] for method, Ts in lengths.items()}
    config = {
        "measurement": "resident memory of one update pass, each in a fresh process",
        "lengths": lengths,
        "batch": batch,
        "seed": seed,
        "repeats": repeats,
        "config": base,
    }

    def measure() -> dict:
        return measure_rss(base, lengths, batch=batch, seed=seed, repeats=repeats, progress=progress)

    return _cached_measurement("07_rss_of_update.pt", config, measure, RSS_MINUTES, retrain)


def rss_table(rss: Mapping[tuple[str, int], Mapping[str, float]], lengths: Iterable[int]) -> str:
    """:func:`run_rss`'s result as a table: per T, each method's bytes saved for backward and the
    resident memory its update pass added, in MiB (``-`` where not measured)."""
    mib = 2.0**20
    methods = (("memup", "MemUP"), ("tbptt", "trunc. BPTT"), ("bptt", "full BPTT"))
    head = " | ".join(
        f"{label + ' ' + what:>{len(label) + 9}}" for _, label in methods for what in ("saved", "resident")
    )
    lines = [f"{'T':>6} | {head}   (MiB)"]
    for T in lengths:
        cells = []
        for method, label in methods:
            for key in ("saved_bytes", "rss_bytes"):
                value = rss.get((method, T), {}).get(key)
                width = len(label) + 9
                cells.append(f"{'-':>{width}}" if value is None else f"{value / mib:>{width}.2f}")
        lines.append(f"{T:>6} | " + " | ".join(cells))
    return "\n".join(lines)


def measure_cost(
    base: mu.MemUPConfig,
    lengths: Iterable[int],
    *,
    batch: int,
    repeats: int = 3,
    seed: int = 0,
    memory_lengths: Iterable[int] = (),
    isolate: bool = False,
    progress: bool = False,
) -> dict[tuple[str, int], dict[str, float]]:
    """:func:`update_cost` of MemUP and full BPTT at each sequence length T in ``lengths``
    (``base`` with ``T - 2H`` fillers and ``batch`` sequences), with denormal floats flushed to
    zero, and of full BPTT once more with them allowed; then MemUP's memory only (no timing) at
    each T of ``memory_lengths``, where full BPTT would not fit. Keys ``(method, T)``, methods
    'memup', 'bptt' and 'bptt_denormal' (time only: its memory is full BPTT's). ``isolate``: each
    :func:`update_cost`, memory and time, in a fresh process of its own. Leaves
    ``torch.set_flush_denormal(True)``."""
    if isolate:
        # a fresh process for each measurement, memory and time: the profiler's records of one are
        # gone before the next, and the caller's process never holds a long pass's activations
        with _fresh_processes(1) as pool:
            return _measure_cost(base, lengths, batch, repeats, seed, memory_lengths, pool, progress)
    return _measure_cost(base, lengths, batch, repeats, seed, memory_lengths, None, progress)


#: Estimated minutes of :func:`run_cost` at notebook 07's sizes (memory and time, each in a fresh process).
COST_MINUTES = 1.0


def run_cost(
    base: mu.MemUPConfig,
    lengths: Iterable[int],
    *,
    batch: int,
    repeats: int = 3,
    seed: int = 0,
    retrain: bool = False,
    progress: bool = True,
) -> tuple[dict[tuple[str, int], dict[str, float]], dict[str, Any]]:
    """:func:`measure_cost` with ``isolate=True``, cached as ``07_cost_of_update.pt`` with what it
    measures (the lengths, the batch, the repeats, the seed, every config field): measured again when
    any of them differs, or with ``retrain``. Times are those of the machine that made the file.
    Returns the measurements, keyed ``(method, T)``, and where they were made:
    ``{"torch": version, "threads": n}``."""
    lengths = [int(T) for T in lengths]
    config = {
        "measurement": "saved bytes, allocator peak and time of one update pass, each in a fresh process",
        "lengths": lengths,
        "batch": batch,
        "seed": seed,
        "repeats": repeats,
        "config": base,
    }

    def measure() -> dict:
        return measure_cost(base, lengths, batch=batch, repeats=repeats, seed=seed, isolate=True, progress=progress)

    return _cached_measurement("07_cost_of_update.pt", config, measure, COST_MINUTES, retrain)


def _measure_cost(
    base: mu.MemUPConfig,
    lengths: Iterable[int],
    batch: int,
    repeats: int,
    seed: int,
    memory_lengths: Iterable[int],
    pool: Any,
    progress: bool,
) -> dict[tuple[str, int], dict[str, float]]:
    def one(cfg: mu.MemUPConfig, method: str, repeats: int, memory: bool = True) -> dict[str, float]:
        if pool is None:
            return update_cost(cfg, method, seed, repeats, memory=memory)
        args = (cfg, method, seed, repeats, memory, torch.get_num_threads(), _flush_denormal_now())
        return pool.submit(_update_cost_here, *args).result()

    cost = {}
    for T in utils.progress(lengths, enabled=progress, desc="cost"):
        cfg = replace(base, n_filler=T - 2 * base.n_head, batch=batch)
        torch.set_flush_denormal(True)
        for method in ("memup", "bptt"):
            cost[method, T] = one(cfg, method, repeats)
        torch.set_flush_denormal(False)
        cost["bptt_denormal", T] = one(cfg, "bptt", repeats, memory=False)  # time only
        torch.set_flush_denormal(True)
    for T in memory_lengths:
        cfg = replace(base, n_filler=T - 2 * base.n_head, batch=batch)
        cost["memup", T] = one(cfg, "memup", 0)
    return cost


def _update_cost_here(
    cfg: mu.MemUPConfig, method: str, seed: int, repeats: int, memory: bool, threads: int, flush_denormal: bool
) -> dict[str, float]:
    """:func:`update_cost` in this process (a fresh worker), with the caller's threads and denormal setting."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)
    return update_cost(cfg, method, seed, repeats, memory=memory)


# ----------------------------------------------------------------------------- tables


def accuracy_table(acc: Mapping[tuple[str, int], float], lengths: Iterable[int], n_head: int, n_filler: int) -> str:
    """Held-out recall accuracy by dependency length (rows) and method (columns), then the
    random-target ablation at ``n_filler``. ``acc`` is keyed ``(method, n_filler)``."""
    lines = [f"{'dependency length':>18} | {'MemUP':>6} | {'trunc. BPTT':>11} | {'full BPTT':>9}"]
    for L in lengths:
        lines.append(
            f"{L + 2 * n_head:>18} | {acc['memup', L]:>6.3f} | {acc['tbptt', L]:>11.3f} | {acc['bptt', L]:>9.3f}"
        )
    lines.append(
        f"MemUP with random targets at {n_filler + 2 * n_head}: {acc['random', n_filler]:.3f}  (chance 1/8 = 0.125)"
    )
    return "\n".join(lines)


def cost_table(
    cost: Mapping[tuple[str, int], Mapping[str, float]], lengths: Iterable[int], memory_lengths: Iterable[int] = ()
) -> str:
    """:func:`measure_cost`'s result as a table (MiB saved for backward, MiB peak of the
    allocator, seconds per pass; ``-`` where not measured), then the time ratios at the longest
    of ``lengths``."""
    lengths, memory_lengths = list(lengths), list(memory_lengths)
    mib = 2.0**20

    def cell(method: str, T: int, key: str, width: int, fmt: str) -> str:
        value = cost.get((method, T), {}).get(key, math.nan)
        return f"{'-':>{width}}" if math.isnan(value) else f"{value / (mib if 'bytes' in key else 1):>{width}{fmt}}"

    header = ("T", "MemUP saved", "MemUP peak", "BPTT saved", "BPTT peak", "MemUP s", "BPTT s", "BPTT s, denormals")
    widths = (6, 11, 10, 10, 9, 7, 6, 17)
    lines = [" | ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)) + "   (MiB, seconds per pass)"]
    for T in lengths + memory_lengths:
        cells = [f"{T:>6}"]
        for (method, key), w in zip(
            (
                ("memup", "saved_bytes"),
                ("memup", "peak_bytes"),
                ("bptt", "saved_bytes"),
                ("bptt", "peak_bytes"),
                ("memup", "seconds"),
                ("bptt", "seconds"),
                ("bptt_denormal", "seconds"),
            ),
            widths[1:],
            strict=True,
        ):
            cells.append(cell(method, T, key, w, ".3f" if key == "seconds" else ".2f"))
        lines.append(" | ".join(cells))
    hi = lengths[-1]
    memup_s, bptt_s, denormal_s = (cost[method, hi]["seconds"] for method in ("memup", "bptt", "bptt_denormal"))
    lines.append(
        f"at T = {hi}: MemUP / full BPTT time per pass = {memup_s / bptt_s:.1f}; "
        f"full BPTT with / without denormals = {denormal_s / bptt_s:.2f}"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- equal optimiser steps

#: The methods of the equal-budget study: MemUP, truncated BPTT (r = ``cfg.rollout``) with the
#: loss on every step, truncated BPTT with the loss on the recall steps only, and full BPTT.
EQUAL_METHODS = ("memup", "tbptt", "tbptt_recall", "bptt")

#: Seconds of one optimiser step of each equal-budget method on one CPU core per sequence step of
#: a batch of 64 (HIDDEN = 128, r = 20): used only for the training-time estimate.
SECONDS_PER_EQUAL_STEP = {"memup": 0.87e-3, "tbptt": 0.28e-3, "tbptt_recall": 0.2e-3, "bptt": 0.53e-3}


def memup_step_budget(cfg: mu.MemUPConfig) -> tuple[int, int]:
    """MemUP's optimiser steps under ``cfg``'s batch schedule (one per rollout of every batch):
    ``(total, warm)``, ``warm`` of them in the curriculum's short batches."""
    total = warm = 0
    for n_filler in mu.filler_schedule(cfg):
        n = -(-(n_filler + 2 * cfg.n_head) // cfg.rollout)
        total += n
        if n_filler < cfg.n_filler:
            warm += n
    return total, warm


def _equal_rollout(method: str, cfg: mu.MemUPConfig, n_filler: int) -> int:
    return n_filler + 2 * cfg.n_head if method == "bptt" else cfg.rollout


def _check_equal(method: str) -> str:
    if method not in EQUAL_METHODS:
        raise ValueError(f"method must be one of {EQUAL_METHODS}, got {method!r}")
    return method


def equal_steps_minutes(method: str, cfg: mu.MemUPConfig) -> float:
    """Estimated minutes of :func:`train_equal_steps` on one CPU core."""
    total, warm = memup_step_budget(cfg)
    if method in ("memup", "tbptt"):
        seq_steps = sum(f + 2 * cfg.n_head for f in mu.filler_schedule(cfg))
    else:  # one optimiser step per batch: as many batches as MemUP's steps
        short = min(cfg.warmup_filler, cfg.n_filler)
        seq_steps = warm * (short + 2 * cfg.n_head) + (total - warm) * cfg.length
    sec = SECONDS_PER_EQUAL_STEP[_check_equal(method)] * seq_steps * cfg.batch / 64
    return max(0.1, math.ceil(sec / 6) / 10)


def _state_accuracy(method: str, model: Any, x: torch.Tensor, y: torch.Tensor, steps: torch.Tensor) -> float:
    with torch.no_grad():
        if method == "memup":
            logits = mu.memup_logits(model["memory"], model["predictor"], x, steps)
        else:
            logits = mu.recurrent_logits(model, x, steps)
    return mu.recall_accuracy(logits, y[:, steps])


def train_equal_steps(
    method: str,
    cfg: mu.MemUPConfig,
    seed: int,
    *,
    val_seed: int,
    n_val: int = 256,
    n_evals: int = 12,
    progress: bool = False,
) -> dict:
    """Train one of :data:`EQUAL_METHODS` for MemUP's number of optimiser steps under ``cfg``
    (:func:`memup_step_budget`), recording recall accuracy on validation sequences on the way.

    Every method draws its batches from ``generator(seed, "memup/train-data")`` and starts from
    ``torch.manual_seed(seed)``. A method with one optimiser step per batch (full BPTT, and
    truncated BPTT with the loss on the recall steps) gets as many batches as MemUP has steps; the
    curriculum is kept in steps: the first ``warm`` steps (MemUP's warm-up steps) are on
    ``cfg.warmup_filler`` fillers. ``n_val`` validation sequences at ``cfg.n_filler`` from
    ``torch.Generator().manual_seed(val_seed)`` are scored about ``n_evals`` times (not timed).

    Returns the state dict(s), ``curve`` (E, 3) float64 rows of (optimiser steps, training seconds,
    validation accuracy), ``losses`` (one per batch) and ``steps`` (taken, >= the budget).
    """
    _check_equal(method)
    n_val = check_positive_int(n_val, "n_val")
    n_evals = check_positive_int(n_evals, "n_evals")
    total, warm = memup_step_budget(cfg)
    torch.manual_seed(seed)  # the initial weights
    data_gen = utils.generator(seed, mu.TRAIN_DATA_SEED)
    x_val, y_val = mu.memup_copy_task(n_val, cfg.n_head, cfg.n_filler, torch.Generator().manual_seed(val_seed))
    val_steps = mu.recall_mask(cfg.n_head, cfg.n_filler).nonzero().squeeze(1)
    model: Any
    if method == "memup":
        model, det_ema, opts = mu.make_memup(cfg)
    else:
        model = mu.build_recurrent(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    short = cfg.warmup_filler if cfg.warmup_filler < cfg.n_filler else cfg.n_filler
    steps, seconds, losses = 0, 0.0, []
    curve = [(0.0, 0.0, _state_accuracy(method, model, x_val, y_val, val_steps))]
    next_eval = total / n_evals
    bar = utils.progress(total=total, enabled=progress, desc=f"{method} (lr {cfg.lr:g})")
    while steps < total:
        n_filler = short if steps < warm else cfg.n_filler
        x, y = mu.memup_copy_task(cfg.batch, cfg.n_head, n_filler, data_gen)
        t0 = time.perf_counter()
        if method == "memup":
            out = mu.memup_update(model, det_ema, opts, x, y, cfg)
        else:
            mask = mu.recall_mask(cfg.n_head, n_filler) if method == "tbptt_recall" else None
            rollout = _equal_rollout(method, cfg, n_filler)
            out = mu.tbptt_update(model, opt, x, y, rollout, cfg.clip, loss_mask=mask)
        seconds += time.perf_counter() - t0
        steps += int(out["steps"])
        losses.append(out["loss"])
        bar.update(int(out["steps"]))
        if steps >= next_eval or steps >= total:
            curve.append((float(steps), seconds, _state_accuracy(method, model, x_val, y_val, val_steps)))
            next_eval += total / n_evals
    bar.close()
    result: dict[str, Any]
    if method == "memup":
        result = {name: model[name].state_dict() for name in ("detector", "memory", "predictor")}
    else:
        result = {"model": model.state_dict()}
    result["curve"] = torch.tensor(curve, dtype=torch.float64)
    result["losses"] = torch.tensor(losses)
    result["steps"] = steps
    return result


def equal_name(method: str, n_filler: int, lr: float, seed: int | None = None) -> str:
    """Cached file of an equal-budget run: ``07_eq_<method>_L<n_filler>_lr<lr>.pt``, with
    ``_seed<seed>`` when ``seed`` is given (the runs of the extra training seeds; the runs of the
    learning-rate search have no seed in their name)."""
    suffix = "" if seed is None else f"_seed{seed}"
    return f"07_eq_{_check_equal(method)}_L{n_filler}_lr{lr:g}{suffix}.pt"


def run_equal(
    method: str,
    n_filler: int,
    base: mu.MemUPConfig,
    *,
    lr: float,
    seed: int,
    val_seed: int,
    n_val: int = 500,
    n_evals: int = 12,
    retrain: bool = False,
    progress: bool = True,
    seed_in_name: bool = False,
) -> tuple[mu.MemUPConfig, dict]:
    """Load or train (:func:`train_equal_steps`) ``method`` at ``n_filler`` fillers with Adam
    ``lr``, ``base`` otherwise. The cached file records the method, the seeds, the validation set
    and every config field. ``seed_in_name`` caches it under :func:`equal_name` with the seed (a
    run of an extra training seed). Returns ``(config, result)``."""
    cfg = replace(base, n_filler=n_filler, lr=lr)
    config = {
        "method": _check_equal(method),
        "train_seed": seed,
        "val_seed": val_seed,
        "n_val": n_val,
        "n_evals": n_evals,
        "budget": "memup_optimiser_steps",
        "config": cfg,
    }
    result = load_or_train(
        equal_name(method, n_filler, lr, seed if seed_in_name else None),
        config,
        lambda: train_equal_steps(
            method, cfg, seed, val_seed=val_seed, n_val=n_val, n_evals=n_evals, progress=progress
        ),
        minutes=equal_steps_minutes(method, cfg),
        retrain=retrain,
    )
    return cfg, result


def evaluate_equal(
    method: str, result: Mapping, cfg: mu.MemUPConfig, n_filler: int, n_seqs: int, generator: torch.Generator
) -> torch.Tensor:
    """Recall predictions of an equal-budget run on ``n_seqs`` fresh sequences with ``n_filler``
    fillers: (n_seqs, H) bool, True where the symbol is right."""
    answers, targets = predict_equal(method, result, cfg, n_filler, n_seqs, generator)
    return answers == targets


@torch.no_grad()
def predict_equal(
    method: str, result: Mapping, cfg: mu.MemUPConfig, n_filler: int, n_seqs: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The answers of an equal-budget run at the recall steps of ``n_seqs`` fresh sequences, and
    the right symbols: both (n_seqs, H) long."""
    _check_equal(method)
    x, y = mu.memup_copy_task(n_seqs, cfg.n_head, n_filler, generator)
    steps = mu.recall_mask(cfg.n_head, n_filler).nonzero().squeeze(1)  # (H,)
    if method == "memup":
        nets = mu.build_memup(cfg)
        for name in ("memory", "predictor"):
            nets[name].load_state_dict(result[name])
        logits = mu.memup_logits(nets["memory"], nets["predictor"], x, steps)
    else:
        model = mu.build_recurrent(cfg)
        model.load_state_dict(result["model"])
        logits = mu.recurrent_logits(model, x, steps)
    return logits.argmax(-1), y[:, steps]


def choose_lr(val_acc: Mapping[float, float]) -> float:
    """The learning rate with the best validation accuracy (the smaller one on a tie)."""
    if not val_acc:
        raise ValueError("val_acc must not be empty")
    return max(val_acc, key=lambda lr: (val_acc[lr], -lr))


def equal_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """The equal-budget study as text: one row per run with keys ``L``, ``method``, ``seed``
    (training seed), ``lr``, ``steps``, ``val`` (final validation accuracy), ``test``, ``ci`` (a
    Wilson interval) and ``seconds`` (training wall time)."""
    lines = [
        f"{'L':>5} | {'method':<27} | {'seed':>4} | {'lr':>6} | {'steps':>5} | {'val acc':>7} | "
        f"{'test acc [95% CI]':>22} | {'train s':>7}"
    ]
    for r in rows:
        lo, hi = r["ci"]
        lines.append(
            f"{r['L']:>5} | {EQUAL_LABELS[r['method']]:<27} | {r['seed']:>4} | {r['lr']:>6g} | {r['steps']:>5} | "
            f"{r['val']:>7.3f} | {r['test']:>7.3f} [{lo:.3f}, {hi:.3f}] | {r['seconds']:>7.0f}"
        )
    return "\n".join(lines)


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; NaN for a single value) of ``values``."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("values must not be empty")
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
    return mean, sd


def equal_seed_table(
    values: Mapping[tuple[str, int, int], float], lengths: Iterable[int], seeds: Iterable[int], title: str, fmt: str
) -> str:
    """One row per (L, method of :data:`EQUAL_METHODS`): the value of each training seed
    (``values[method, L, seed]``, formatted with ``fmt``, e.g. ``".3f"``; ``-`` where a run is
    missing), then mean and sd over the seeds present, and how many they are."""
    seeds = list(seeds)
    head = " | ".join(f"seed {s:>2}" for s in seeds)
    lines = [title, f"{'L':>5} | {'method':<27} | {head} | mean +- sd (seeds)"]
    for L in lengths:
        for m in EQUAL_METHODS:
            vals = [values.get((m, L, s)) for s in seeds]
            present = [v for v in vals if v is not None]
            mean, sd = mean_sd(present)
            cells = " | ".join(f"{'-':>7}" if v is None else f"{v:>7{fmt}}" for v in vals)
            lines.append(f"{L:>5} | {EQUAL_LABELS[m]:<27} | {cells} | {mean:{fmt}} +- {sd:{fmt}} ({len(present)})")
    return "\n".join(lines)


#: How the equal-budget methods are named in tables and plots.
EQUAL_LABELS = {
    "memup": "MemUP",
    "tbptt": "truncated BPTT, all steps",
    "tbptt_recall": "truncated BPTT, recall only",
    "bptt": "full BPTT",
}


# ----------------------------------------------------------------------------- the noisy copy task

#: How the target selections of the noisy copy task are named in tables and plots.
NOISY_LABELS = {
    "local": "memory-less detector",
    "memory": "surprise given the memory",
    "random": "random targets",
    "local_step": "memory-less + current step",
    "memory_nostep": "given memory, no cur. step",
}

#: Training seconds per sequence step of a batch of 64 (HIDDEN = 128, r = 20, K = 3), by selection,
#: measured on one shared CPU core: used only for the training-time estimate.
SECONDS_PER_NOISY_STEP = {
    "local": 1.9e-3,
    "memory": 4.1e-3,
    "random": 1.4e-3,
    "local_step": 2.0e-3,
    "memory_nostep": 2.2e-3,
}


def noisy_config(base: mu.MemUPConfig, n_filler: int, batches: int) -> mu.MemUPConfig:
    """``base`` with ``n_filler`` fillers, ``batches`` batches and no length curriculum."""
    return replace(base, n_filler=n_filler, batches=batches, warmup_batches=0)


def _check_noisy(detector: str) -> str:
    if detector not in mu.NOISY_DETECTORS:
        raise ValueError(f"detector must be one of {mu.NOISY_DETECTORS}, got {detector!r}")
    return detector


def noisy_name(detector: str, n_filler: int, seed: int, lr: float | None = None) -> str:
    """Cached file of a noisy-task run: ``07_noisy_<detector>_L<n_filler>_seed<seed>.pt``, with
    ``_lr<lr>`` before the seed when ``lr`` is given (the learning-rate search, and runs at a
    rate other than the notebook's ``LR``)."""
    rate = "" if lr is None else f"_lr{lr:g}"
    return f"07_noisy_{_check_noisy(detector)}_L{n_filler}{rate}_seed{seed}.pt"


def noisy_minutes(detector: str, cfg: mu.MemUPConfig) -> float:
    """Estimated minutes of :func:`~memtutor.memup.train_noisy_memup` on one CPU core."""
    sec = SECONDS_PER_NOISY_STEP[_check_noisy(detector)] * cfg.length * cfg.batches * cfg.batch / 64
    return max(0.1, math.ceil(sec / 6) / 10)


def run_noisy(
    detector: str,
    cfg: mu.MemUPConfig,
    noise: mu.NoisyCopy,
    *,
    seed: int,
    retrain: bool = False,
    progress: bool = True,
    lr_in_name: bool = False,
) -> dict:
    """Load or train (:func:`~memtutor.memup.train_noisy_memup`) MemUP on the noisy copy task with
    ``detector``'s targets, from ``seed``. The cached file records the selection, the seed, the
    noise and every config field; ``lr_in_name`` puts ``cfg.lr`` in its name (:func:`noisy_name`)."""
    config = {"detector": _check_noisy(detector), "train_seed": seed, "noise": noise, "config": cfg}
    return load_or_train(
        noisy_name(detector, cfg.n_filler, seed, cfg.lr if lr_in_name else None),
        config,
        lambda: mu.train_noisy_memup(cfg, noise, detector, seed, progress=progress),
        minutes=noisy_minutes(detector, cfg),
        retrain=retrain,
    )


def noisy_nets(result: Mapping, cfg: mu.MemUPConfig) -> mu.MemUPNets:
    """The trained memory and predictor of a noisy-task run (the detector slot stays untrained)."""
    nets = mu.build_memup(cfg, mu.NOISY_VOCAB)
    for name in ("memory", "predictor"):
        nets[name].load_state_dict(result[name])
    return nets


@torch.no_grad()
def evaluate_noisy(
    result: Mapping, cfg: mu.MemUPConfig, noise: mu.NoisyCopy, n_seqs: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Predictions of a noisy-task run on ``n_seqs`` fresh sequences, read online (the predictor
    on ``m_k`` and ``c_k`` at each step ``k``): ``recall`` (n_seqs, H) bool, right at each recall
    step, ``echo`` (n_seqs, n_noise) bool, right at each echo step, and ``answers``
    (n_seqs, H + n_noise), the symbols answered at the recall steps, then at the echo steps."""
    n_seqs = check_positive_int(n_seqs, "n_seqs")
    x, y = mu.noisy_copy_task(n_seqs, cfg.n_head, cfg.n_filler, noise, generator)
    nets = noisy_nets(result, cfg)
    T = x.shape[1]
    m = mu.outputs_at(nets["memory"], x, torch.arange(T))  # (B, T, D)
    logits = nets["predictor"](m, mu.local_windows(x, cfg.window).unsqueeze(2)).squeeze(2)  # (B, T, C)
    answer = logits.argmax(-1)  # (B, T)
    right = answer == y
    echo = x == mu.ECHO
    answers = torch.cat([answer[:, -cfg.n_head :], answer[echo].reshape(n_seqs, noise.n_noise)], 1)
    return {"recall": right[:, -cfg.n_head :], "echo": right[echo].reshape(n_seqs, noise.n_noise), "answers": answers}


@torch.no_grad()
def noisy_surprise(
    detector: str, result: Mapping, cfg: mu.MemUPConfig, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The surprise a trained run's detector assigns to every step of ``x``, ``y`` (B, T): the EMA
    detector's ``-log p(y_k | c_k)`` ('local', 'local_step') or the EMA memory and predictor's
    ``-log q(y_k | m_k, c_k)`` ('memory', 'memory_nostep'). -> (B, T)."""
    windows = mu.local_windows(x, cfg.window)
    if _check_noisy(detector) in ("local", "local_step"):
        det = mu.Detector(cfg.window, cfg.embed, cfg.hidden, mu.NOISY_VOCAB)
        det.load_state_dict(result["detector_ema"])
        return mu.score_steps(det, windows, y)
    if detector in ("memory", "memory_nostep"):
        nets = mu.build_memup(cfg, mu.NOISY_VOCAB)
        nets["memory"].load_state_dict(result["memory_ema"])
        nets["predictor"].load_state_dict(result["predictor_ema"])
        return mu.surprise_given_memory(nets["memory"], nets["predictor"], x, windows, y)
    raise ValueError("random targets have no detector")


def noisy_table(acc: Mapping[tuple[str, int], float], seeds: Iterable[int], title: str) -> str:
    """One row per selection of :data:`~memtutor.memup.NOISY_DETECTORS`: the value of each seed
    (``acc[detector, seed]``), then mean and sd over the seeds."""
    seeds = list(seeds)
    lines = [title, f"{'targets':<26} | " + " | ".join(f"seed {s:>2}" for s in seeds) + " | mean +- sd"]
    for d in mu.NOISY_DETECTORS:
        vals = [acc[d, s] for s in seeds]
        mean, sd = mean_sd(vals)
        lines.append(
            f"{NOISY_LABELS[d]:<26} | " + " | ".join(f"{v:>7.3f}" for v in vals) + f" | {mean:.3f} +- {sd:.3f}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the diagram

_GRAD_COLOUR = HIGHLIGHT  # the gradient of the predictor's loss


def draw_memup() -> Figure:
    """The lesson's diagram: one MemUP update. The sequence in rollouts of r steps, the memory running over
    them (truncated: the carried state's value passes, its gradient stops), the memory-less detector scoring
    every step's surprise, the top-K selector, and the predictor whose loss reaches the memory through K + r
    elements; dashed, the authors' code's detector (EMA copies of the memory and predictor). Returns the figure."""
    fig, ax = canvas(12.5, 6.4)
    # the sequence, in rollouts of r steps
    note(ax, 0.25, 6.15, "sequence $x_1, \\dots, x_T$ in rollouts of $r$ steps", fontsize=10, ha="left")
    seq = [
        box(ax, 1.2, 5.45, "$x_1 \\dots x_r$", w=1.8, h=0.6, role="input"),
        box(ax, 3.75, 5.45, "$x_{r+1} \\dots x_{2r}$", w=1.8, h=0.6, role="input"),
        box(ax, 6.6, 5.45, "rollout of step $t$", w=1.9, h=0.6, role="input"),
    ]
    note(ax, 5.2, 5.45, "$\\cdots$", fontsize=12)
    future = box(ax, 10.3, 5.45, "$x_{t+1}, \\dots, x_T$: the future of $t$", w=3.9, h=0.6, role="input")
    # the memory, rollout by rollout
    mem = [
        box(ax, s.x, 4.1, "memory $g_\\theta$\n$m_s = g_\\theta(m_{s-1}, x_s)$", w=s.w, h=0.8, role="memory")
        for s in seq
    ]
    for s, m in zip(seq, mem, strict=True):
        arrow(ax, s.bottom, m.top)
    for a, b in ((mem[0], mem[1]), (mem[1], mem[2])):
        arrow(ax, a.right, b.left)
        ax.plot((a.right[0] + b.left[0]) / 2, a.y, marker="x", color=_GRAD_COLOUR, ms=8, mew=2)
    note(ax, 2.45, 3.3, "truncated: the carried state's value\npasses, its gradient stops ($\\times$)", fontsize=8)
    # the detector and the selector
    det = box(
        ax,
        10.5,
        4.15,
        "detector $p_\\psi(y_k \\mid c_k)$, no memory:\n"
        "window $c_k$ of $w$ inputs, every step $k$\ntrained on each rollout",
        w=3.8,
        h=1.0,
        role="network",
    )
    arrow(ax, (det.x, future.bottom[1]), det.top, "$c_k$", offset=(0.2, -0.12))
    sel = box(
        ax, 10.6, 2.45, "top-$K$ selector\n$U_t$: the $K$ largest $u_k$, $k \\geq t$", w=2.9, h=0.8, role="operation"
    )
    arrow(ax, (sel.x, det.bottom[1]), sel.top, dashed=True)
    note(ax, 10.8, 3.25, "$u_k = -\\log p_\\psi(y_k \\mid c_k)$\nby its EMA copy, no gradient", fontsize=8, ha="left")
    # the predictor and its loss
    pred = box(ax, 6.6, 2.45, "predictor\n$q_\\phi(y_k \\mid m_t, c_k)$", w=2.2, h=0.8, role="network")
    arrow(ax, mem[2].bottom, pred.top, "$m_t$", offset=(0.22, -0.12))
    arrow(ax, sel.left, pred.right, "$k \\in U_t$: $c_k, y_k$", offset=(0.0, 0.08))
    loss = box(
        ax,
        6.4,
        0.85,
        "$\\mathcal{L}_t = -\\frac{1}{|U_t|}\\sum_{k \\in U_t} \\log q_\\phi(y_k \\mid m_t, c_k)$",
        w=3.9,
        h=0.75,
        role="output",
    )
    arrow(ax, (pred.x, pred.bottom[1]), (pred.x, loss.top[1]))
    # the gradient of the loss: into the predictor and back through at most r memory steps
    arrow(ax, loss.left, mem[2].at(0.0, 0.25), bend=-0.3, color=_GRAD_COLOUR)
    note(
        ax,
        2.7,
        1.75,
        "$\\nabla \\mathcal{L}_t$ reaches $\\theta$ and $\\phi$ through\n"
        "$K$ targets and $\\leq r$ memory steps,\nwhatever $T$ is",
        fontsize=8,
    )
    # the authors' code's detector: surprise given the memory, by EMA copies of memory and predictor
    ema = box(
        ax,
        10.6,
        0.85,
        "authors' code: EMA copies $g_{\\bar\\theta}, q_{\\bar\\phi}$\n"
        "$u_k = -\\log q_{\\bar\\phi}(y_k \\mid \\bar m_k, c_k)$",
        w=3.7,
        h=0.8,
        role="network",
        dashed=True,
    )
    arrow(ax, ema.top, sel.bottom, dashed=True)
    arrow(ax, pred.at(1.0, 0.1), ema.at(0.0, 0.8), "EMA", dashed=True, offset=(0.4, -0.05))
    note(
        ax,
        0.25,
        0.2,
        "red: gradient of $\\mathcal{L}_t$; dashed: no gradient, or the authors' variant",
        fontsize=7,
        ha="left",
    )
    return fig
