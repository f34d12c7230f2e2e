"""Notebook 02's experiment: the memory controller against an LSTM on the copy task, over seeds.

The lesson module :mod:`memtutor.controller` holds the model and the training loop
(:func:`~memtutor.controller.train_copy`). This module runs them as the notebook does: one
comparison per seed (the controller, then an LSTM baseline with at least as many parameters, for
the same number of updates and for the same training wall time), the cached-result configuration
of those runs, and the tables the notebook prints.

Implementation of the cached runs: the files ``02_copy_seed{0,1,2}.pt`` were trained with the
memory step's fused link node and unfused content addressing (``fused=("link",)``, see
:func:`memtutor.memory.memory_step`), which :data:`CACHED_FUSED` records. The drivers here train
with it by default, so a retrained run uses the implementation of the cached ones, and the
implementation is part of each run's configuration. Models rebuilt from a run's weights for
evaluation use the package default (``fused=False``); both implementations agree up to float
rounding. The wall times in a run (and so the LSTM's same-wall-time budget) were measured with
:data:`CACHED_FUSED`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn

from memtutor import memory as mem
from memtutor.controller import (
    ControllerConfig,
    CopyTrainConfig,
    LSTMBaseline,
    MemoryController,
    baseline_hidden_size,
    evaluate_copy,
    train_copy,
)
from memtutor.tasks import CopyBatch
from memtutor.utils import load_or_train, register_seed_offset, seed_everything

__all__ = [
    "CACHED_FUSED",
    "COPY_RUN_MINUTES",
    "TEST_BY_LENGTH",
    "TEST_EXAMPLE",
    "train_copy_comparison",
    "copy_run_config",
    "load_copy_run",
    "load_copy_models",
    "print_budgets",
    "heldout_bit_errors",
    "print_heldout_table",
]

#: The memory-step implementation that trained the cached runs (see the module docstring).
CACHED_FUSED = ("link",)
#: Estimated training time of one seed's comparison on a laptop CPU core (controller, then the
#: LSTM for the same wall time), in minutes.
COPY_RUN_MINUTES = 4.0

#: Seed purposes of the notebook's held-out data, relative to its ``TEST_SEED``: the batches of
#: the error-by-length plot and the example sequence of the weighting plots.
TEST_BY_LENGTH = register_seed_offset("nb02/test-by-length", 1)
TEST_EXAMPLE = register_seed_offset("nb02/test-example", 2)


def train_copy_comparison(
    seed: int,
    config: ControllerConfig,
    train: CopyTrainConfig,
    *,
    lstm_update_cap: int = 300_000,
    fused: bool | Collection[str] = CACHED_FUSED,
    progress: bool = False,
    controller_result: Mapping | None = None,
) -> dict:
    """Train the memory controller, then an LSTM baseline with at least as many parameters.

    The controller (built with ``fused``, by default the implementation of the cached runs)
    trains for ``train.num_updates`` updates. The LSTM starts from the same seed, keeps a snapshot
    at the same number of updates, and goes on until it has spent the same *training wall time*
    as the controller (or ``lstm_update_cap`` updates): the two comparisons of the notebook.
    Seeding: torch is seeded with ``seed`` before each model is built; both draw their training
    data as :func:`~memtutor.controller.train_copy` does.

    Returns ``{"controller": ..., "lstm": ..., "lstm_hidden": ...}`` with the dicts of
    :func:`~memtutor.controller.train_copy` (tensors and plain values only). ``controller_result``
    (the ``"controller"`` entry of an earlier call with the same seed and configs) skips training
    the controller again and only trains the LSTM against its time.
    """
    if controller_result is None:
        seed_everything(seed)
        controller = MemoryController(config, fused=fused)
        res_c = train_copy(controller, train, seed=seed, progress=progress)
    else:
        res_c = dict(controller_result)
    budget = float(res_c["update_seconds"].sum())
    hidden = baseline_hidden_size(config)
    seed_everything(seed)
    lstm = LSTMBaseline(config.input_size, config.output_size, hidden)
    lstm_cfg = replace(
        train,
        num_updates=max(lstm_update_cap, train.num_updates),
        max_seconds=budget,
        snapshot_at=(train.num_updates,),
    )
    res_l = train_copy(lstm, lstm_cfg, seed=seed, progress=progress)
    return {"controller": res_c, "lstm": res_l, "lstm_hidden": hidden}


def copy_run_config(
    seed: int,
    config: ControllerConfig,
    train: CopyTrainConfig,
    *,
    lstm_update_cap: int,
    fused: bool | Collection[str] = CACHED_FUSED,
) -> dict:
    """The configuration a cached comparison run is stored with: everything its result depends on."""
    nodes = mem.fused_nodes(fused)
    return {
        "seed": seed,
        "controller": config,
        "train": train,
        "lstm_update_cap": lstm_update_cap,
        "fused": [name for name in mem.FUSED_NODES if name in nodes],
    }


def load_copy_run(
    seed: int,
    config: ControllerConfig,
    train: CopyTrainConfig,
    *,
    lstm_update_cap: int,
    retrain: bool = False,
    progress: bool = False,
) -> dict:
    """Notebook 02's comparison run for ``seed``: the cached ``02_copy_seed{seed}.pt``, or trained.

    The run is trained with :data:`CACHED_FUSED` (the implementation of the cached files), and
    :func:`copy_run_config` is its configuration. A cached file made with another configuration
    raises ``ValueError`` naming the differing fields (training takes several minutes); pass
    ``retrain=True`` to train it. Returns the dict of :func:`train_copy_comparison`.
    """

    def train_fn() -> dict:
        return train_copy_comparison(seed, config, train, lstm_update_cap=lstm_update_cap, progress=progress)

    run_config = copy_run_config(seed, config, train, lstm_update_cap=lstm_update_cap)
    return load_or_train(f"02_copy_seed{seed}.pt", run_config, train_fn, minutes=COPY_RUN_MINUTES, retrain=retrain)


def load_copy_models(
    run: Mapping, config: ControllerConfig, num_updates: int, *, device: torch.device | str | None = None
) -> dict[str, nn.Module]:
    """The three trained models of a run: ``"memory model"``, ``"LSTM, same updates"`` (the LSTM's
    snapshot after ``num_updates``) and ``"LSTM, same wall time"``. The memory model uses the
    package's default memory step (``fused=False``)."""
    ctrl = MemoryController(config)
    ctrl.load_state_dict(run["controller"]["state_dict"])
    hidden = int(run["lstm_hidden"])
    lstm_same_updates = LSTMBaseline(config.input_size, config.output_size, hidden)
    lstm_same_updates.load_state_dict(run["lstm"]["snapshots"][str(num_updates)])
    lstm_same_time = LSTMBaseline(config.input_size, config.output_size, hidden)
    lstm_same_time.load_state_dict(run["lstm"]["state_dict"])
    return {
        "memory model": ctrl.to(device),
        "LSTM, same updates": lstm_same_updates.to(device),
        "LSTM, same wall time": lstm_same_time.to(device),
    }


def print_budgets(runs: Mapping[int, Mapping]) -> None:
    """One line per seed: updates, time per update and total training time of both models."""
    print(f"{'seed':>4} | {'memory model':>30} | {'LSTM':>48}")
    for seed, run in runs.items():
        c_sec, l_sec = run["controller"]["update_seconds"], run["lstm"]["update_seconds"]
        print(
            f"{seed:>4} | {len(c_sec):>6} updates, {c_sec.mean() * 1e3:4.0f} ms each, {c_sec.sum():5.0f} s | "
            f"{len(l_sec):>6} updates, {l_sec.mean() * 1e3:4.0f} ms each, {l_sec.sum():5.0f} s "
            f"({l_sec.sum() / c_sec.sum():.0%} of the memory model's time)"
        )


def heldout_bit_errors(
    models: Mapping[int, Mapping[str, nn.Module]], batches: Mapping[str, CopyBatch]
) -> dict[tuple[str, str], torch.Tensor]:
    """``{(model name, split): (S,) mean bit errors per sequence, one per seed}`` for every model
    of ``models`` (seed -> name -> model) on every held-out batch of ``batches`` (split -> batch)."""
    seeds = list(models)
    results = {}
    for name in models[seeds[0]]:
        for split, batch in batches.items():
            results[name, split] = torch.tensor([evaluate_copy(models[s][name], batch).mean().item() for s in seeds])
    return results


def print_heldout_table(results: Mapping[tuple[str, str], torch.Tensor], split_titles: Sequence[str]) -> None:
    """Mean ± sd over seeds and the per-seed values of :func:`heldout_bit_errors`, one row per model;
    ``split_titles`` names the splits in the order they were measured."""
    names = list(dict.fromkeys(name for name, _ in results))
    splits = list(dict.fromkeys(split for _, split in results))
    seeds = len(next(iter(results.values())))
    print(f"bit errors per sequence on held-out data, mean ± std over {seeds} seeds (per seed in brackets)")
    for name in names:
        cells = []
        for split, title in zip(splits, split_titles, strict=True):
            v = results[name, split]
            cells.append(f"{title}: {v.mean():6.2f} ± {v.std():5.2f} [{', '.join(f'{x:.2f}' for x in v)}]")
        print(f"{name:>22} | " + " | ".join(cells))
