"""Notebook 02's experiment: the memory controller against an LSTM on the copy task, over seeds.

The lesson module :mod:`memtutor.controller` holds the model and the training loop
(:func:`~memtutor.controller.train_copy`). This module runs them as the notebook does: one
comparison per seed (the controller, then an LSTM baseline with at least as many parameters, for
the same number of updates and for the same training wall time), the cached-result configuration
of those runs, and the tables the notebook prints. Also: the learning-rate search that both models
get on the same grid and validation data (``02_lr_search.pt``), the per-length measurements (the
fraction of sequences copied perfectly) and the memory variants that move the length where
copying breaks (``02_variants.pt``), and a measurement of CPU and wall time per update. And the
lesson's reference material: the interface vector field by field (:data:`INTERFACE_FIELDS`, its
slices and Markdown table, checked against :func:`memtutor.memory.split_interface` by the notebook
and the tests) and the diagram of a controller step (:func:`draw_controller`).

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
from typing import NamedTuple

import torch
from matplotlib.figure import Figure
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
from memtutor.diagrams import arrow, box, canvas, note
from memtutor.tasks import CopyBatch, copy_task
from memtutor.utils import check_positive_int, generator, load_or_train, register_seed_offset, seed_everything

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
    "heldout_per_sequence",
    "LR_GRID",
    "SEARCH_BUDGETS",
    "search_point",
    "search_points",
    "assemble_search",
    "learning_rate_search",
    "search_config",
    "load_learning_rate_search",
    "searched_models",
    "LSTM_EDGE_LR",
    "lstm_edge_config",
    "load_lstm_edge",
    "TEST_BEYOND",
    "TEST_VARIANTS",
    "PER_LENGTH_SIZE",
    "VARIANTS",
    "per_length_errors",
    "variant_point",
    "variant_config",
    "assemble_variants",
    "load_variants",
    "first_failing_length",
    "update_times",
    "InterfaceField",
    "INTERFACE_FIELDS",
    "interface_slices",
    "interface_table_markdown",
    "draw_controller",
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


def heldout_per_sequence(
    models: Mapping[int, Mapping[str, nn.Module]], batches: Mapping[str, CopyBatch]
) -> dict[tuple[str, str], torch.Tensor]:
    """``{(model name, split): (S, B) bit errors of every held-out sequence, one row per seed}``; its
    mean over sequences is :func:`heldout_bit_errors`, and ``(errors == 0).mean(1)`` the fraction of
    sequences copied perfectly."""
    seeds = list(models)
    return {
        (name, split): torch.stack([evaluate_copy(models[s][name], batch) for s in seeds])
        for name in models[seeds[0]]
        for split, batch in batches.items()
    }


def print_heldout_table(
    results: Mapping[tuple[str, str], torch.Tensor],
    split_titles: Sequence[str],
    *,
    what: str = "bit errors per sequence",
) -> None:
    """Mean ± sd over seeds and the per-seed values of :func:`heldout_bit_errors` (or of another
    per-seed measurement, named by ``what``), one row per model; ``split_titles`` names the splits
    in the order they were measured."""
    names = list(dict.fromkeys(name for name, _ in results))
    splits = list(dict.fromkeys(split for _, split in results))
    seeds = len(next(iter(results.values())))
    print(f"{what} on held-out data, mean ± std over {seeds} seeds (per seed in brackets)")
    for name in names:
        cells = []
        for split, title in zip(splits, split_titles, strict=True):
            v = results[name, split]
            cells.append(f"{title}: {v.mean():6.2f} ± {v.std():5.2f} [{', '.join(f'{x:.2f}' for x in v)}]")
        print(f"{name:>22} | " + " | ".join(cells))


# --------------------------------------------------------------------------------------------
# The learning-rate search (the same grid and validation data for both models)

#: Adam step sizes of the validation search, the same grid for the memory model and the LSTM.
LR_GRID = (3e-4, 1e-3, 3e-3)
#: The two models of the search, each trained for ``train.num_updates`` updates.
SEARCH_BUDGETS = ("memory model", "LSTM")
#: Estimated time of the whole search on one laptop core, in minutes.
SEARCH_MINUTES = 25.0


def search_point(
    model_name: str, learning_rate: float, seed: int, config: ControllerConfig, train: CopyTrainConfig
) -> dict:
    """Train one point of the learning-rate search: ``"memory model"`` or ``"LSTM"`` (the baseline
    of :func:`~memtutor.controller.baseline_hidden_size`) for ``train.num_updates`` updates at
    ``learning_rate``, seeded as :func:`train_copy_comparison` does.

    Returns ``{model_name: {"val_bits_train", "val_bits_long", "state_dict"}}``: the final
    validation bit errors (lengths in and above the training range, from
    :func:`~memtutor.controller.validation_batches`) and the final weights.
    """
    seed_everything(seed)
    if model_name == "memory model":
        model: nn.Module = MemoryController(config, fused=CACHED_FUSED)
    elif model_name == "LSTM":
        model = LSTMBaseline(config.input_size, config.output_size, baseline_hidden_size(config))
    else:
        raise ValueError(f"model_name must be 'memory model' or 'LSTM', got {model_name!r}")
    res = train_copy(model, replace(train, learning_rate=learning_rate), seed=seed)
    return {
        model_name: {
            "val_bits_train": float(res["val_bits_train"][-1]),
            "val_bits_long": float(res["val_bits_long"][-1]),
            "state_dict": res["state_dict"],
        }
    }


def search_points(seeds: Sequence[int]) -> list[tuple[str, float, int]]:
    """Every ``(model name, learning rate, seed)`` of the search, the slow points first."""
    return [(name, lr, s) for name in ("memory model", "LSTM") for lr in LR_GRID for s in seeds]


def assemble_search(points: Mapping[tuple[str, float, int], Mapping], seeds: Sequence[int]) -> dict:
    """The search's result from its points (``(name, lr, seed) -> search_point(...)``).

    For each model of :data:`SEARCH_BUDGETS`: ``val_bits_long`` and ``val_bits_train``, (L, S)
    tensors over :data:`LR_GRID` and ``seeds``; ``chosen``, the learning rate with the lowest mean
    validation error at lengths above the training range (ties: the smaller step); and
    ``state_dicts``, the weights of the chosen rate, one per seed.
    """
    out: dict = {"grid": torch.tensor(LR_GRID, dtype=torch.float64), "seeds": torch.tensor(list(seeds))}
    for name in SEARCH_BUDGETS:
        long = torch.tensor([[points[name, lr, s][name]["val_bits_long"] for s in seeds] for lr in LR_GRID])
        short = torch.tensor([[points[name, lr, s][name]["val_bits_train"] for s in seeds] for lr in LR_GRID])
        best = int(torch.argmin(long.mean(1)))  # argmin returns the first (smallest lr) of equal values
        lr = LR_GRID[best]
        out[name] = {
            "val_bits_long": long,
            "val_bits_train": short,
            "chosen": lr,
            "state_dicts": {str(s): points[name, lr, s][name]["state_dict"] for s in seeds},
        }
    return out


def learning_rate_search(seeds: Sequence[int], config: ControllerConfig, train: CopyTrainConfig) -> dict:
    """Run every point of :func:`search_points` here, one after the other, and assemble them."""
    points = {p: search_point(*p, config, train) for p in search_points(seeds)}
    return assemble_search(points, seeds)


def search_config(seeds: Sequence[int], config: ControllerConfig, train: CopyTrainConfig) -> dict:
    """The configuration the cached search is stored with."""
    return {
        "seeds": list(seeds),
        "controller": config,
        "train": train,
        "grid": list(LR_GRID),
        "fused": [name for name in mem.FUSED_NODES if name in mem.fused_nodes(CACHED_FUSED)],
    }


def load_learning_rate_search(
    seeds: Sequence[int], config: ControllerConfig, train: CopyTrainConfig, *, retrain: bool = False
) -> dict:
    """The cached ``02_lr_search.pt`` made with :func:`search_config`, or the search run here."""
    return load_or_train(
        "02_lr_search.pt",
        search_config(seeds, config, train),
        lambda: learning_rate_search(seeds, config, train),
        minutes=SEARCH_MINUTES,
        retrain=retrain,
    )


#: One step size past the grid's edge, for the LSTM only: its 2,500 updates cost seconds (the memory
#: model's, minutes), so checking whether the LSTM's chosen step size was held back by the grid is cheap.
LSTM_EDGE_LR = 1e-2


def lstm_edge_config(seeds: Sequence[int], config: ControllerConfig, train: CopyTrainConfig) -> dict:
    """The configuration the cached LSTM check at :data:`LSTM_EDGE_LR` is stored with."""
    return {"seeds": list(seeds), "controller": config, "train": train, "learning_rate": LSTM_EDGE_LR}


def load_lstm_edge(
    seeds: Sequence[int], config: ControllerConfig, train: CopyTrainConfig, *, retrain: bool = False
) -> dict:
    """The LSTM of the search trained at :data:`LSTM_EDGE_LR` (:func:`search_point`, one run per seed),
    cached as ``02_lstm_edge.pt``.

    Returns ``{"val_bits_long": (S,), "val_bits_train": (S,), "state_dicts": {str(seed): ...}}``:
    the final validation bit errors above and in the training range, and the final weights.
    """

    def train_fn() -> dict:
        points = {s: search_point("LSTM", LSTM_EDGE_LR, s, config, train)["LSTM"] for s in seeds}
        return {
            "val_bits_long": torch.tensor([points[s]["val_bits_long"] for s in seeds]),
            "val_bits_train": torch.tensor([points[s]["val_bits_train"] for s in seeds]),
            "state_dicts": {str(s): points[s]["state_dict"] for s in seeds},
        }

    return load_or_train(
        "02_lstm_edge.pt", lstm_edge_config(seeds, config, train), train_fn, minutes=1.0, retrain=retrain
    )


def searched_models(search: Mapping, config: ControllerConfig, budget: str, *, device=None) -> dict[int, nn.Module]:
    """``{seed: model}`` of the learning rate the search chose for ``budget`` (a model name)."""
    if budget not in SEARCH_BUDGETS:
        raise ValueError(f"budget must be one of {SEARCH_BUDGETS}, got {budget!r}")
    models: dict[int, nn.Module] = {}
    for seed, state_dict in search[budget]["state_dicts"].items():
        if budget == "memory model":
            model: nn.Module = MemoryController(config)
        else:
            model = LSTMBaseline(config.input_size, config.output_size, baseline_hidden_size(config))
        model.load_state_dict(state_dict)
        models[int(seed)] = model.to(device)
    return models


# --------------------------------------------------------------------------------------------
# Length generalisation: perfect copies by length, and what moves the point where it breaks

#: Seed purposes (relative to the notebook's ``TEST_SEED``): the test at lengths 21-30 and the
#: per-length test of the variants below.
TEST_BEYOND = register_seed_offset("nb02/test-beyond-validation", 3)
TEST_VARIANTS = register_seed_offset("nb02/test-variants", 4)
#: Sequences per length in the per-length measurements.
PER_LENGTH_SIZE = 100
#: The variants of the memory model's recipe measured for length generalisation: name ->
#: (changes to the ControllerConfig, changes to the CopyTrainConfig).
VARIANTS: dict[str, tuple[dict, dict]] = {
    "N = 64": ({"num_slots": 64}, {}),
}
#: Estimated time of all variants (3 seeds) on one laptop core, in minutes.
VARIANT_MINUTES = 12.0


def per_length_errors(model: nn.Module, lengths: Sequence[int], width: int, gen: torch.Generator, size: int):
    """``(bits, perfect)``: mean bit errors per sequence and the fraction of sequences copied with no
    wrong bit, (len(lengths),) each, on ``size`` fresh sequences of each length drawn from ``gen``."""
    device = next(model.parameters()).device
    bits, perfect = [], []
    for length in lengths:  # one batch per length
        batch = copy_task(size, length, length, width, generator=gen, device=device)
        errors = evaluate_copy(model, batch)
        bits.append(errors.mean().item())
        perfect.append((errors == 0).float().mean().item())
    return torch.tensor(bits, dtype=torch.float64), torch.tensor(perfect, dtype=torch.float64)


def variant_point(name: str, seed: int, config: ControllerConfig, train: CopyTrainConfig, test_seed: int) -> dict:
    """Train the memory model of variant ``name`` (:data:`VARIANTS`) with ``seed`` and measure it on
    every length 1 to N + 4: ``{"lengths", "bits", "perfect", "val_bits_long"}``. The per-length
    sequences come from ``generator(test_seed, TEST_VARIANTS)``, the same for every variant and seed;
    nothing is chosen on them."""
    model_changes, train_changes = VARIANTS[name]
    cfg = replace(config, **model_changes)
    seed_everything(seed)
    model = MemoryController(cfg, fused=CACHED_FUSED)
    res = train_copy(model, replace(train, **train_changes), seed=seed)
    lengths = list(range(1, cfg.num_slots + 5))
    bits, perfect = per_length_errors(model, lengths, train.width, generator(test_seed, TEST_VARIANTS), PER_LENGTH_SIZE)
    return {"lengths": torch.tensor(lengths), "bits": bits, "perfect": perfect, "val_bits_long": res["val_bits_long"]}


def variant_config(seeds: Sequence[int], config: ControllerConfig, train: CopyTrainConfig, test_seed: int) -> dict:
    """The configuration the cached variants are stored with."""
    return {
        "seeds": list(seeds),
        "controller": config,
        "train": train,
        "test_seed": test_seed,
        "variants": {k: [v[0], v[1]] for k, v in VARIANTS.items()},
        "size": PER_LENGTH_SIZE,
        "fused": [name for name in mem.FUSED_NODES if name in mem.fused_nodes(CACHED_FUSED)],
    }


def assemble_variants(points: Mapping[tuple[str, int], Mapping], seeds: Sequence[int]) -> dict:
    """``{variant: {"lengths", "bits" (S, L), "perfect" (S, L), "val_bits_long" (S, E)}}``."""
    out: dict = {}
    for name in VARIANTS:
        rows = [points[name, s] for s in seeds]
        out[name] = {
            "lengths": rows[0]["lengths"],
            "bits": torch.stack([r["bits"] for r in rows]),
            "perfect": torch.stack([r["perfect"] for r in rows]),
            "val_bits_long": torch.stack([r["val_bits_long"] for r in rows]),
        }
    return out


def load_variants(
    seeds: Sequence[int], config: ControllerConfig, train: CopyTrainConfig, test_seed: int, *, retrain: bool = False
) -> dict:
    """The cached ``02_variants.pt`` made with :func:`variant_config`, or every variant trained here."""

    def train_fn() -> dict:
        points = {(n, s): variant_point(n, s, config, train, test_seed) for n in VARIANTS for s in seeds}
        return assemble_variants(points, seeds)

    return load_or_train(
        "02_variants.pt",
        variant_config(seeds, config, train, test_seed),
        train_fn,
        minutes=VARIANT_MINUTES,
        retrain=retrain,
    )


def first_failing_length(perfect: torch.Tensor, lengths: Sequence[int], threshold: float = 0.5) -> list[int | None]:
    """Per row of ``perfect`` (S, L): the first length whose fraction of perfect copies is below
    ``threshold`` (None if none is)."""
    out: list[int | None] = []
    for row in perfect:
        below = (row < threshold).nonzero()
        out.append(int(lengths[int(below[0])]) if len(below) else None)
    return out


def update_times(model: nn.Module, train: CopyTrainConfig, updates: int = 20, *, seed: int = 0) -> dict[str, float]:
    """Seconds per training update of ``model`` here and now: ``{"wall", "cpu"}``, the medians over
    ``updates`` updates of :func:`~memtutor.controller.train_copy` after one untimed warm-up update
    (``model`` is trained in place; the median is robust to the pauses a shared machine inserts).
    CPU time (``time.process_time``) does not count time spent waiting for a core that another job
    holds; wall time does."""
    res = train_copy(model, replace(train, num_updates=updates + 1, eval_every=updates + 1), seed=seed)
    return {"wall": float(res["update_seconds"][1:].median()), "cpu": float(res["update_cpu_seconds"][1:].median())}


# --------------------------------------------------------------------------------------------
# The interface vector, field by field, and the lesson's diagram


class InterfaceField(NamedTuple):
    """One field of the DNC interface vector xi_t, as :func:`memtutor.memory.split_interface` cuts it."""

    name: str
    """Attribute of :class:`memtutor.memory.Interface`."""
    symbol: str
    """The paper's symbol (LaTeX; ``i`` indexes the R read heads)."""
    size: tuple[int, int, int, int]
    """Length as coefficients of ``(W*R, W, R, 1)``: ``(0, 0, 3, 0)`` is 3R."""
    squash: str
    """Squashing function: ``"none"``, ``"oneplus"``, ``"sigmoid"`` or ``"softmax over 3 modes"``."""


#: The fields of xi_t in their order in the vector (Graves et al. 2016, Methods, "Interface parameters").
INTERFACE_FIELDS = (
    InterfaceField("read_keys", r"k^{r,i}_t", (1, 0, 0, 0), "none"),
    InterfaceField("read_strengths", r"\beta^{r,i}_t", (0, 0, 1, 0), "oneplus"),
    InterfaceField("write_key", r"k^w_t", (0, 1, 0, 0), "none"),
    InterfaceField("write_strength", r"\beta^w_t", (0, 0, 0, 1), "oneplus"),
    InterfaceField("erase_vector", r"e_t", (0, 1, 0, 0), "sigmoid"),
    InterfaceField("write_vector", r"v_t", (0, 1, 0, 0), "none"),
    InterfaceField("free_gates", r"f^i_t", (0, 0, 1, 0), "sigmoid"),
    InterfaceField("allocation_gate", r"g^a_t", (0, 0, 0, 1), "sigmoid"),
    InterfaceField("write_gate", r"g^w_t", (0, 0, 0, 1), "sigmoid"),
    InterfaceField("read_modes", r"\pi^i_t", (0, 0, 3, 0), "softmax over 3 modes"),
)

_SIZE_TERMS = ("WR", "W", "R", "")
#: What each squashing function guarantees, for the table.
_SQUASH_RANGE = {
    "none": "any real",
    "oneplus": r"$1 + \log(1 + e^x) \ge 1$",
    "sigmoid": r"in $(0, 1)$",
    "softmax over 3 modes": "per head: backward, content, forward; sums to 1",
}


def _polynomial(coeffs: Sequence[int]) -> str:
    """``(1, 3, 5, 3)`` -> ``"WR + 3W + 5R + 3"`` (LaTeX-free, for tables)."""
    terms = []
    for c, term in zip(coeffs, _SIZE_TERMS, strict=True):
        if c:
            terms.append(f"{c if c != 1 or not term else ''}{term}")
    return " + ".join(terms) or "0"


def interface_slices(word_size: int, num_reads: int) -> dict[str, slice]:
    """``{field name: slice of xi_t}`` for W = ``word_size`` and R = ``num_reads``, in the order
    of :data:`INTERFACE_FIELDS`; the last stop is the interface size the table implies."""
    w = check_positive_int(word_size, "word_size")
    r = check_positive_int(num_reads, "num_reads")
    out, start = {}, 0
    for f in INTERFACE_FIELDS:
        stop = start + f.size[0] * r * w + f.size[1] * w + f.size[2] * r + f.size[3]
        out[f.name] = slice(start, stop)
        start = stop
    return out


def interface_table_markdown(word_size: int = 16, num_reads: int = 1) -> str:
    """The interface table of notebook 02 as Markdown: per field its ``Interface`` attribute, symbol,
    size and slice of xi_t in terms of R and W, the slice at ``word_size``, ``num_reads``, and the
    squashing function."""
    slices = interface_slices(word_size, num_reads)
    here = f"here ($W = {word_size}$, $R = {num_reads}$)"
    lines = [
        f"| field | symbol | size | slice of $\\xi_t$ | {here} | squashing | values |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    start: tuple[int, ...] = (0, 0, 0, 0)  # coefficients of (W*R, W, R, 1)
    for f in INTERFACE_FIELDS:
        stop = tuple(a + b for a, b in zip(start, f.size, strict=True))
        sl = slices[f.name]
        lines.append(
            f"| `{f.name}` | ${f.symbol}$ | ${_polynomial(f.size)}$ | "
            f"$[{_polynomial(start)},\\ {_polynomial(stop)})$ | $[{sl.start}, {sl.stop})$ | "
            f"{f.squash} | {_SQUASH_RANGE[f.squash]} |"
        )
        start = stop
    return "\n".join(lines)


def draw_controller() -> Figure:
    """The lesson's diagram: one time step of the memory controller (LSTM -> interface vector ->
    memory -> read vectors -> output, with what carries over to the next step), and the LSTM
    baseline below it. Returns the figure."""
    fig, ax = canvas(12.5, 6.2)
    # the memory controller, one step
    note(ax, 0.15, 5.95, "memory controller, step $t$", fontsize=10, ha="left")
    x_in = box(ax, 0.85, 4.2, "input\n$x_t$", w=1.2, h=0.9, role="input")
    lstm = box(ax, 3.35, 4.2, "LSTM controller\n$(h_{t-1}, c_{t-1}) \\to (h_t, c_t)$", w=2.7, h=1.1, role="network")
    iface = box(ax, 6.55, 4.2, "$\\xi_t = W_\\xi h_t + b_\\xi$\nsplit, squash", w=2.2, h=1.1, role="operation")
    memory = box(ax, 10.75, 4.2, "DNC memory (notebook 01)\nwrite, then read\n$M_t,\\ u_t,\\ L_t,\\ p_t$", w=3.2,
                 h=1.4, role="memory")  # fmt: skip
    out = box(ax, 6.55, 2.45, "$y_t = W_y\\,[h_t; r_t] + b_y$", w=3.0, h=0.8, role="output")
    arrow(ax, x_in.right, lstm.left, "$x_t$")
    arrow(ax, lstm.right, iface.left, "$h_t$")
    arrow(ax, iface.right, memory.left, "$\\xi_t$", fontsize=9)
    note(
        ax, (iface.right[0] + memory.left[0]) / 2, 3.75, r"$k, \beta, e_t, v_t,$" "\n" r"$f, g^a, g^w, \pi$", fontsize=7
    )
    arrow(ax, memory.at(0.25, 0.0), out.right, "$r_t$", bend=-0.3, offset=(0.25, -0.05))
    arrow(ax, lstm.bottom, out.left, "$h_t$", bend=0.3, offset=(-0.3, -0.05))
    # what the next step receives: the read vectors, as part of the controller's input
    arrow(ax, memory.top, lstm.top, bend=0.25, dashed=True)
    note(ax, 7.05, 5.2, "next step: $r_t$ becomes $r_{t-1}$,\nthe LSTM's input is $[x_t; r_{t-1}]$", fontsize=8)
    note(ax, memory.x + 0.55, memory.bottom[1] - 0.3, "its state is carried\nto step $t+1$, per sequence", fontsize=8)
    # the baseline
    ax.plot([0.15, 12.35], [1.55, 1.55], color="#bbbbbb", lw=0.8, ls=":")
    note(ax, 0.15, 1.25, "LSTM baseline (no memory)", fontsize=10, ha="left")
    b_in = box(ax, 0.85, 0.55, "input\n$x_t$", w=1.2, h=0.8, role="input")
    b_lstm = box(ax, 3.35, 0.55, "LSTM\n$(h_{t-1}, c_{t-1}) \\to (h_t, c_t)$", w=2.7, h=0.8, role="network")
    b_out = box(ax, 6.55, 0.55, "$y_t = W_y h_t + b_y$", w=2.4, h=0.7, role="output")
    arrow(ax, b_in.right, b_lstm.left, "$x_t$")
    arrow(ax, b_lstm.right, b_out.left, "$h_t$")
    note(ax, 10.75, 0.55, "the whole sequence must fit\nin the state $h_t, c_t$", fontsize=8)
    return fig
