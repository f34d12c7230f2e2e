"""Notebook 07's experiments: MemUP against truncated and full BPTT on the copy task.

The lesson module :mod:`memtutor.memup` holds the copy task, the detector, the top-K target
selection, the memory and predictor, MemUP's update and training loop and the truncated-BPTT
baseline. This module runs them as the notebook does:

* :func:`train_method` trains one of :data:`MEMUP_METHODS` from a seed;
* the cached runs: :func:`base_config` (the notebook's ``parameters`` cell as a
  :class:`~memtutor.memup.MemUPConfig`), :func:`run_name`, :func:`run_config` (everything a run
  depends on, stored with it), :func:`training_minutes` and :func:`run`, which loads a run or
  trains it;
* :func:`evaluate_method`: held-out recall accuracy of a trained run;
* the cost of one update pass: :func:`saved_tensor_bytes`, :class:`PeakSavedBytes`,
  :func:`update_cost`, :func:`measure_cost`;
* the notebook's text tables: :func:`accuracy_table`, :func:`cost_table`.

Seeding follows :mod:`memtutor.memup`: a run with training seed ``s`` starts from
``torch.manual_seed(s)`` and draws its sequences from ``generator(s, "memup/train-data")`` and
MemUP's random targets from ``generator(s, "memup/random-targets")``. The held-out sequences come
from a generator of their own (the notebook's ``TEST_SEED``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import torch

from memtutor import memup as mu
from memtutor import utils
from memtutor.utils import check_positive_int, load_or_train, timer

__all__ = [
    "MEMUP_METHODS",
    "NOTEBOOK_PARAMETERS",
    "SECONDS_PER_STEP",
    "train_method",
    "base_config",
    "run_name",
    "run_config",
    "training_minutes",
    "run",
    "evaluate_method",
    "saved_tensor_bytes",
    "PeakSavedBytes",
    "update_cost",
    "measure_cost",
    "accuracy_table",
    "cost_table",
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


def run_name(method: str, cfg: mu.MemUPConfig, base: mu.MemUPConfig) -> str:
    """The cached file of a run: ``07_<method>_L<n_filler>.pt``, with ``_fb<bias>`` when the
    forget bias differs from ``base``'s."""
    _check_method(method)
    suffix = "" if cfg.forget_bias == base.forget_bias else f"_fb{cfg.forget_bias:g}"
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
) -> tuple[mu.MemUPConfig, dict, float]:
    """Load the cached run of ``method`` at ``n_filler`` fillers (``base`` otherwise, its forget
    bias unless ``forget_bias`` is given) trained from ``seed``, or train it.

    The cached file records :func:`run_config`; a file made with another configuration retrains
    (with a printed reason) when :func:`training_minutes` is at most 3, and raises a ``ValueError``
    naming the differing fields otherwise (``retrain=True`` trains it). Returns
    ``(config, result, seconds)``.
    """
    changes: dict[str, Any] = {"n_filler": n_filler}
    if forget_bias is not None:
        changes["forget_bias"] = forget_bias
    cfg = replace(base, **changes)
    with timer() as t:
        result = load_or_train(
            run_name(method, cfg, base),
            run_config(method, cfg, seed),
            lambda: train_method(method, cfg, seed, progress=progress),
            minutes=training_minutes(method, cfg),
            retrain=retrain,
        )
    return cfg, result, t["seconds"]


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


def update_cost(cfg: mu.MemUPConfig, method: str, seed: int = 0, repeats: int = 1) -> dict[str, float]:
    """Time and peak saved-tensor bytes of one update pass over a batch of ``cfg.length`` steps.

    ``method``: 'memup' (every rollout of :func:`~memtutor.memup.memup_update`) or 'bptt' (one
    full-BPTT step). ``seed`` sets the weights and the batch. Seconds are the median of
    ``repeats`` timed passes after one warm-up pass; bytes are counted in that warm-up pass (the
    hooks cost time).
    """
    repeats = check_positive_int(repeats, "repeats")
    torch.manual_seed(seed)  # the initial weights
    data = utils.generator(seed, mu.TRAIN_DATA_SEED)
    x, y = mu.memup_copy_task(cfg.batch, cfg.n_head, cfg.n_filler, data)
    if method == "memup":
        nets, det_ema, opts = mu.make_memup(cfg)

        def update(run_forward: mu.RunForward | None) -> None:
            mu.memup_update(nets, det_ema, opts, x, y, cfg, data, run_forward)

    elif method == "bptt":
        model = mu.build_recurrent(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

        def update(run_forward: mu.RunForward | None) -> None:
            mu.tbptt_update(model, opt, x, y, x.shape[1], cfg.clip, run_forward)

    else:
        raise ValueError(f"method must be 'memup' or 'bptt', got {method!r}")
    peak = PeakSavedBytes()
    update(peak)  # also the warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        update(None)
        times.append(time.perf_counter() - t0)
    return {"seconds": sorted(times)[len(times) // 2], "saved_bytes": peak.bytes}


def measure_cost(
    base: mu.MemUPConfig,
    lengths: Iterable[int],
    *,
    batch: int,
    repeats: int = 3,
    seed: int = 0,
    progress: bool = False,
) -> dict[tuple[str, int], dict[str, float]]:
    """:func:`update_cost` of MemUP and full BPTT at each sequence length T in ``lengths``
    (``base`` with ``T - 2H`` fillers and ``batch`` sequences), with denormal floats flushed to
    zero, and of full BPTT once more with them allowed. Keys ``(method, T)``, methods 'memup',
    'bptt' and 'bptt_denormal'. Leaves ``torch.set_flush_denormal(True)``."""
    cost = {}
    for T in utils.progress(lengths, enabled=progress, desc="cost"):
        cfg = replace(base, n_filler=T - 2 * base.n_head, batch=batch)
        torch.set_flush_denormal(True)
        for method in ("memup", "bptt"):
            cost[method, T] = update_cost(cfg, method, seed, repeats)
        torch.set_flush_denormal(False)
        cost["bptt_denormal", T] = update_cost(cfg, "bptt", seed, repeats)
        torch.set_flush_denormal(True)
    return cost


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


def cost_table(cost: Mapping[tuple[str, int], Mapping[str, float]], lengths: Iterable[int]) -> str:
    """:func:`measure_cost`'s result as a table (MiB saved for backward, seconds per pass), then
    the time ratios at the longest T."""
    lengths = list(lengths)
    mib = 2.0**20
    header = ("T", "MemUP MiB", "BPTT MiB", "MemUP s", "BPTT s", "BPTT s, denormals")
    lines = [" | ".join(f"{h:>{w}}" for h, w in zip(header, (6, 9, 8, 7, 6, 17), strict=True))]
    for T in lengths:
        lines.append(
            f"{T:>6} | {cost['memup', T]['saved_bytes'] / mib:>9.2f} | {cost['bptt', T]['saved_bytes'] / mib:>8.2f} | "
            f"{cost['memup', T]['seconds']:>7.3f} | {cost['bptt', T]['seconds']:>6.3f} | "
            f"{cost['bptt_denormal', T]['seconds']:>17.3f}"
        )
    hi = lengths[-1]
    memup_s, bptt_s, denormal_s = (cost[method, hi]["seconds"] for method in ("memup", "bptt", "bptt_denormal"))
    lines.append(
        f"at T = {hi}: MemUP / full BPTT time per pass = {memup_s / bptt_s:.1f}; "
        f"full BPTT with / without denormals = {denormal_s / bptt_s:.2f}"
    )
    return "\n".join(lines)
