"""Notebook 05's experiments: the validation search, the methods table on the test images, paired intervals.

The lesson module :mod:`memtutor.continual` holds the task streams, the metrics, the learner's
components (encoder, replay buffer, prototype memory, Reptile update, online EWC) and the training
loop :func:`~memtutor.continual.train_stream`. This module runs them as notebook 05 does:

1. :func:`validation_search`: for every scenario and every learner of :data:`CONTINUAL_METHODS`,
   the same number of random-search trials over that learner's settings (:data:`SEARCH_KNOBS`),
   each trained on the training images with every search seed and scored on the validation
   images only;
2. :func:`choose`: the trial with the best mean validation ACC, per scenario and learner;
3. :func:`train_methods`: every learner with its chosen settings and every table seed, scored once
   on the test images (the cached table).

Seeding: one split seed, :data:`SPLIT_SEED`, fixes the train/validation/test split of the digits
(``make_task_stream(seed=SPLIT_SEED)``), the same for the search and the table, as a dataset's fixed
test set is; the search trains on its training images and scores on its validation images, the
table scores on its test images, and :func:`check_disjoint` asserts that the two never share an
image. A run seed ``s`` fixes only the learner (``train_stream(seed=s)``: initialisation and every
random draw), so all learners of one seed start from the same initialisation. Trial ``i`` of the
search draws its settings from ``generator(search_seed, "nb05/search-trials", i)``, the same
numbers for every learner (common random numbers: trial ``i`` has the same learning rate for every learner).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from matplotlib.figure import Figure

from memtutor.continual import (
    SCENARIOS,
    ContinualConfig,
    average_accuracy,
    average_forgetting,
    backward_transfer,
    check_accuracy_matrix,
    forward_transfer,
    learning_accuracy,
    make_task_stream,
    newest_task_accuracy,
    train_stream,
    validation_stream,
)
from memtutor.diagrams import arrow, box, canvas, note
from memtutor.utils import check_positive_int, register_seed_offset
from memtutor.utils import generator as make_generator
from memtutor.utils import progress as progress_bar

__all__ = [
    "CONTINUAL_METHODS",
    "SEARCH_KNOBS",
    "SEARCH_FILE",
    "SEARCH_MINUTES",
    "METHODS_FILE",
    "METHODS_MINUTES",
    "SPLIT_SEED",
    "check_disjoint",
    "SearchConfig",
    "MethodsTableConfig",
    "search_trials",
    "learner_settings",
    "validation_search",
    "choose",
    "run_methods",
    "train_methods",
    "summarize",
    "paired_interval",
    "draw_continual_agent",
]

_OFF = dict(replay=None, memory=False, meta=False, joint=False, ewc=False)

#: The learners compared in notebook 05: name -> switches of :func:`memtutor.continual.train_stream`.
CONTINUAL_METHODS: dict[str, dict[str, Any]] = {
    "naive": dict(_OFF),
    "online EWC": dict(_OFF, ewc=True),
    "uniform replay": dict(_OFF, replay="uniform"),
    "prioritized replay": dict(_OFF, replay="prioritized"),
    "replay + memory": dict(_OFF, replay="prioritized", memory=True),
    "full agent": dict(_OFF, replay="prioritized", memory=True, meta="reptile"),
    "rehearsal control": dict(_OFF, replay="prioritized", memory=True, meta="pooled"),
    "joint": dict(_OFF, joint=True),
}

_MEMORY_KNOBS = ("replay", "alpha", "beta", "prototype_strength", "prototype_source")
#: What each learner's search draws besides ``lr`` (which every learner draws). ``replay`` picks
#: uniform or prioritized replay under the memory; ``alpha``/``beta`` only act with prioritized replay.
SEARCH_KNOBS: dict[str, tuple[str, ...]] = {
    "naive": (),
    "online EWC": ("ewc_lambda",),
    "uniform replay": (),
    "prioritized replay": ("alpha", "beta"),
    "replay + memory": _MEMORY_KNOBS,
    "full agent": (*_MEMORY_KNOBS, "meta_stepsize"),
    "rehearsal control": (*_MEMORY_KNOBS, "meta_stepsize"),
    "joint": (),
}

# knob -> (kind, low, high): "log" log-uniform, "lin" uniform, or a tuple of choices
_RANGES: dict[str, tuple] = {
    "lr": ("log", 0.02, 0.5),
    "alpha": ("lin", 0.2, 1.0),
    "beta": ("lin", 0.0, 1.0),
    "prototype_strength": ("log", 1.0, 50.0),
    "prototype_source": ("choice", "all", "exemplars"),
    "replay": ("choice", "uniform", "prioritized"),
    "meta_stepsize": ("lin", 0.1, 1.0),
    "ewc_lambda": ("log", 1.0, 1e5),
}

#: The seed of the one train/validation/test split shared by the search and the table.
SPLIT_SEED = 0

#: Seed purpose of the trials' draws.
SEARCH_TRIALS = register_seed_offset("nb05/search-trials", 60_000)

#: The cached validation search (every learner x trial x validation seed x scenario).
SEARCH_FILE = "05_search.pt"
#: Time to recompute it (576 runs; measured 8.8 minutes of wall time, 4.1 CPU-minutes, on a 2-core machine
#: shared with other jobs; the cached result stores its own ``wall_seconds`` and ``cpu_seconds``), minutes.
SEARCH_MINUTES = 9.0
#: The cached methods table (every learner x test seed x scenario, with the chosen settings).
METHODS_FILE = "05_methods.pt"
#: Time to recompute it (120 runs; measured 1.4 minutes of wall time, 1.0 CPU-minute, on the same machine,
#: up to 4.3 minutes under heavier load), minutes: kept above ``IMPLICIT_TRAINING_MINUTES``, so a changed
#: parameter raises instead of retraining silently.
METHODS_MINUTES = 4.5


def _switches(method: str | Mapping[str, Any]) -> dict[str, Any]:
    """The switches of a learner given by name (:data:`CONTINUAL_METHODS`) or as a dict."""
    if isinstance(method, str):
        if method not in CONTINUAL_METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {tuple(CONTINUAL_METHODS)}")
        return dict(CONTINUAL_METHODS[method])
    return dict(method)


def _seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(s) for s in seeds)
    if not out or any(s < 0 for s in out):
        raise ValueError(f"seeds must be a non-empty sequence of non-negative ints, got {seeds!r}")
    return out


def _named(methods: Mapping[str, Mapping[str, Any]] | Sequence[str]) -> dict[str, dict[str, Any]]:
    """Learner name -> switches, from a mapping or a list of names of :data:`CONTINUAL_METHODS`."""
    if isinstance(methods, Mapping):
        return {name: _switches(m) for name, m in methods.items()}
    return {name: _switches(name) for name in methods}


def _scenarios(scenarios: Sequence[str]) -> tuple[str, ...]:
    out = tuple(scenarios)
    if not out or any(s not in SCENARIOS for s in out):
        raise ValueError(f"scenarios must be among {SCENARIOS}, got {scenarios!r}")
    return out


def search_trials(method: str, trials: int, search_seed: int = 0) -> list[dict[str, Any]]:
    """The settings of each trial of ``method``'s random search: ``trials`` dicts of knob -> value.

    Trial ``i`` draws one uniform number per knob of :data:`_RANGES` (all of them, in a fixed
    order) and keeps ``lr`` and the learner's own knobs, so every learner's trial ``i`` shares
    its learning rate (and the full agent and its control share every setting).
    """
    check_positive_int(trials, "trials")
    if method not in SEARCH_KNOBS:
        raise ValueError(f"unknown method {method!r}; expected one of {tuple(SEARCH_KNOBS)}")
    out = []
    for i in range(trials):
        u = torch.rand(len(_RANGES), generator=make_generator(search_seed, SEARCH_TRIALS, i), dtype=torch.float64)
        values: dict[str, Any] = {}
        for (knob, spec), ui in zip(_RANGES.items(), u.tolist(), strict=True):
            if spec[0] == "log":
                values[knob] = round(math.exp(math.log(spec[1]) + ui * (math.log(spec[2]) - math.log(spec[1]))), 6)
            elif spec[0] == "lin":
                values[knob] = round(spec[1] + ui * (spec[2] - spec[1]), 6)
            else:
                values[knob] = spec[1 + int(ui * (len(spec) - 1))]
        out.append({k: values[k] for k in ("lr", *SEARCH_KNOBS[method])})
    return out


def learner_settings(
    method: str | Mapping[str, Any], base: ContinualConfig, overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], ContinualConfig]:
    """(switches, config) of a learner with ``overrides`` (a trial's knobs) applied to ``base``."""
    switches = _switches(method)
    knobs = dict(overrides)
    if "replay" in knobs:
        switches["replay"] = knobs.pop("replay")
    return switches, replace(base, **knobs)


@dataclass(frozen=True)
class SearchConfig:
    """Everything the validation search depends on (the cached result's configuration)."""

    learner: ContinualConfig
    """The settings every trial starts from (the notebook's ``CFG``); a trial overrides its knobs."""
    seeds: tuple[int, ...]
    """Run seeds of the search (the notebook's ``VAL_SEEDS``): each fixes an initialisation and the draws."""
    trials: int
    """Random-search trials per learner and scenario (the notebook's ``TRIALS``), the same for all."""
    search_seed: int = 0
    scenarios: tuple[str, ...] = SCENARIOS
    methods: Mapping[str, Mapping[str, Any]] | Sequence[str] = field(default_factory=lambda: dict(CONTINUAL_METHODS))
    """Learner name -> switches, or a list of names of :data:`CONTINUAL_METHODS`."""
    split_seed: int = SPLIT_SEED
    """The split: the search trains on its training images and scores on its validation images."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", _seeds(self.seeds))
        _seeds((self.split_seed,))
        object.__setattr__(self, "scenarios", _scenarios(self.scenarios))
        check_positive_int(self.trials, "trials")
        unknown = [m for m in self.methods if m not in SEARCH_KNOBS]
        if unknown:
            raise ValueError(f"no search space for {unknown}; expected names of {tuple(SEARCH_KNOBS)}")
        object.__setattr__(self, "methods", _named(self.methods))


@dataclass(frozen=True)
class MethodsTableConfig:
    """Everything notebook 05's methods table depends on (the cached result's configuration)."""

    learner: ContinualConfig
    """The base settings (the notebook's ``CFG``)."""
    seeds: tuple[int, ...]
    """Run seeds of the table (the notebook's ``SEEDS``), none of them used by the search."""
    chosen: Mapping[str, Mapping[str, Mapping[str, Any]]]
    """scenario -> learner -> the knobs chosen on validation (:func:`choose`)."""
    scenarios: tuple[str, ...] = SCENARIOS
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(CONTINUAL_METHODS))
    split_seed: int = SPLIT_SEED
    """The split whose test images are scored (the search's split: validation images never tested)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", _seeds(self.seeds))
        _seeds((self.split_seed,))
        object.__setattr__(self, "scenarios", _scenarios(self.scenarios))
        object.__setattr__(self, "methods", _named(self.methods))
        missing = [(s, m) for s in self.scenarios for m in self.methods if m not in self.chosen.get(s, {})]
        if missing:
            raise ValueError(f"no chosen settings for {missing}: run the validation search first")
        object.__setattr__(self, "chosen", {s: {m: dict(v) for m, v in c.items()} for s, c in self.chosen.items()})


def validation_search(config: SearchConfig, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """Every learner x trial x validation seed, scored on validation images only.

    Returns ``{f"{scenario}/{method}/{key}": (trials, V)}`` for key ``ACC``, ``LA`` (learning
    accuracy), ``grad_evals`` and ``diverged`` (1.0 where a training loss was not finite), and
    ``wall_seconds``/``cpu_seconds`` () the time the whole search took (this process). Every run
    trains on the training images of the split ``config.split_seed`` and is scored on its validation
    images; no test image is looked at.
    """
    out: dict[str, torch.Tensor] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    n_runs = len(config.scenarios) * len(config.methods) * config.trials * len(config.seeds)
    bar = progress_bar(total=n_runs, enabled=progress, desc="validation search")
    quiet = replace(config.learner, eval_every=10**9)  # no curves: only R is needed
    for sc in config.scenarios:
        val = validation_stream(make_task_stream(sc, seed=config.split_seed))
        for v, seed in enumerate(config.seeds):
            for name, base in _named(config.methods).items():
                for i, trial in enumerate(search_trials(name, config.trials, config.search_seed)):
                    switches, cfg = learner_settings(base, quiet, trial)
                    res = train_stream(val, switches, cfg, seed=seed)
                    for key, value in (
                        ("ACC", average_accuracy(res["R"])),
                        ("LA", learning_accuracy(res["R"])),
                        ("grad_evals", res["grad_evals"].float()),
                        ("diverged", res["diverged"].float()),
                    ):
                        t = out.setdefault(f"{sc}/{name}/{key}", torch.zeros(config.trials, len(config.seeds)))
                        t[i, v] = value
                    bar.update()
    bar.close()
    out["wall_seconds"] = torch.tensor(time.perf_counter() - wall)
    out["cpu_seconds"] = torch.tensor(time.process_time() - cpu)
    return out


def choose(search: Mapping[str, torch.Tensor], config: SearchConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """scenario -> learner -> the trial's knobs with the best mean validation ACC (ties: first trial)."""
    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    for sc in config.scenarios:
        for name in config.methods:
            best = int(search[f"{sc}/{name}/ACC"].mean(1).argmax())
            chosen.setdefault(sc, {})[name] = search_trials(name, config.trials, config.search_seed)[best]
    return chosen


def run_methods(
    scenario: str,
    methods: Mapping[str, Mapping[str, Any]] | Sequence[str],
    seeds: Sequence[int],
    cfg: ContinualConfig | None = None,
    *,
    chosen: Mapping[str, Mapping[str, Any]] | None = None,
    num_tasks: int | None = None,
    split_seed: int = SPLIT_SEED,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Every method x seed on one scenario, on the test images. Returns ``{f"{method}/{key}": (S, ...)}``.

    ``methods`` maps names to switches, or lists names of :data:`CONTINUAL_METHODS`; ``chosen``
    maps a name to its knobs (default: ``cfg`` as it is). Every run uses the split ``split_seed``;
    a seed fixes the learner's initialisation and draws. Keys are those of
    :func:`memtutor.continual.train_stream`.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    cfg = ContinualConfig() if cfg is None else cfg
    named = dict(methods) if isinstance(methods, Mapping) else {m: _switches(m) for m in methods}
    chosen = chosen or {}
    out: dict[str, list] = {}
    bar = progress_bar(total=len(named) * len(seeds), enabled=progress, desc=f"{scenario}-incremental")
    keys = (
        "R",
        "baseline",
        "curve",
        "curve_step",
        "task_end",
        "priority_changes",
        "grad_evals",
        "grad_evals_meta",
        "diverged",
    )
    stream = make_task_stream(scenario, seed=split_seed)
    for s in seeds:
        for name, base in named.items():
            switches, c = learner_settings(base, cfg, chosen.get(name, {}))
            res = train_stream(stream, switches, c, seed=s, num_tasks=num_tasks)
            for k in keys:
                out.setdefault(f"{name}/{k}", []).append(res[k])
            bar.update()
    bar.close()
    return {k: _stack_padded(v) for k, v in out.items()}


def train_methods(config: MethodsTableConfig, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """The methods table: :func:`run_methods` on every scenario of ``config`` with its chosen settings.

    Returns ``{f"{scenario}/{method}/{key}": (S, ...)}`` (the result cached in :data:`METHODS_FILE`),
    and ``wall_seconds``/``cpu_seconds`` () the time it took (this process).
    """
    out = {}
    wall, cpu = time.perf_counter(), time.process_time()
    for sc in config.scenarios:
        res = run_methods(
            sc,
            config.methods,
            config.seeds,
            config.learner,
            chosen=config.chosen[sc],
            split_seed=config.split_seed,
            progress=progress,
        )
        out.update({f"{sc}/{key}": value for key, value in res.items()})
    out["wall_seconds"] = torch.tensor(time.perf_counter() - wall)
    out["cpu_seconds"] = torch.tensor(time.process_time() - cpu)
    return out


def check_disjoint(search: SearchConfig, table: MethodsTableConfig) -> int:
    """Images shared by (training or validation images of the search) and (test images of the table): must be 0.

    Compares ``load_digits`` row indices over every scenario; raises ValueError if any image is shared.
    Returns the number of test images checked.
    """
    checked = 0
    for sc in search.scenarios:
        seen = make_task_stream(sc, seed=search.split_seed)
        used = set(seen.train_index.tolist()) | set(seen.val_index.tolist())
        tested = set(make_task_stream(sc, seed=table.split_seed).test_index.tolist())
        shared = used & tested
        if shared:
            raise ValueError(f"{sc}: {len(shared)} test images are training or validation images of the search")
        checked += len(tested)
    return checked


def _stack_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack along a new first dim; curves of different lengths (joint vs the rest) are NaN-padded."""
    if tensors[0].dim() == 0 or all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(tensors)
    n = max(t.shape[0] for t in tensors)
    padded = [torch.cat([t.float(), torch.full((n - t.shape[0], *t.shape[1:]), float("nan"))]) for t in tensors]
    return torch.stack(padded)


def summarize(R: torch.Tensor, baseline: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation over the leading (seed) dimension of ACC, BWT, FWT, forgetting, LA, newest.

    R (S, T, T), baseline (S, T) -> {"ACC": (mean, std), ...}; std is 0 for one seed.
    """
    R = check_accuracy_matrix(R, min_tasks=2)
    if R.dim() != 3:
        raise ValueError(f"R must have shape (S, T, T) with a seed dimension, got {tuple(R.shape)}")
    values = {
        "ACC": average_accuracy(R),
        "BWT": backward_transfer(R),
        "FWT": forward_transfer(R, baseline),
        "forgetting": average_forgetting(R),
        "LA": learning_accuracy(R),
        "newest": newest_task_accuracy(R),
    }
    return {k: (v.mean().item(), v.std().item() if v.numel() > 1 else 0.0) for k, v in values.items()}


def paired_interval(diff: torch.Tensor, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of per-seed paired differences diff (S,), S >= 2.

    Returns (mean, low, high): mean -+ t_{(1+level)/2, S-1} sd / sqrt(S).
    """
    from scipy.stats import t as student_t  # type: ignore[import-untyped]  # lazily: only the intervals need it

    if diff.dim() != 1 or diff.numel() < 2:
        raise ValueError(f"diff must be a 1-D tensor of at least 2 per-seed differences, got {tuple(diff.shape)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = diff.double()
    half = float(student_t.ppf((1 + level) / 2, d.numel() - 1)) * float(d.std()) / math.sqrt(d.numel())
    mean = float(d.mean())
    return mean, mean - half, mean + half


def draw_continual_agent(num_tasks: int = 5) -> Figure:
    """Schematic of notebook 05's full agent: the task stream, one training step, and how it is measured.

    Tasks :math:`T_1 \\dots T_T` arrive one at a time. Each step puts a current batch and a batch replayed
    from the prioritized buffer through the learner :math:`f_\\theta` and takes one SGD step; the replayed
    items' priorities :math:`p_i` are re-scored. Every few steps a Reptile update moves :math:`\\theta` towards
    the mean of the :math:`\\phi_i` adapted to one episode per task seen. The prototype memory :math:`M` (one slot per
    digit) is written from the buffer's features and read to predict; after each task the test
    accuracies fill a row of :math:`R_{i,j}`, from which ACC, BWT and LA are computed. Returns the figure
    (``num_tasks`` boxes in the stream, 2 to 8).
    """
    num_tasks = check_positive_int(num_tasks, "num_tasks")
    if not 2 <= num_tasks <= 8:
        raise ValueError(f"num_tasks must be between 2 and 8 (boxes in the drawn stream), got {num_tasks}")
    fig, ax = canvas(13.5, 7.0)
    # the stream, top left
    step = 0.85
    tasks = [
        box(ax, 0.65 + i * step, 6.35, f"$T_{{{i + 1}}}$", w=0.7, h=0.55, role="input", fontsize=10)
        for i in range(num_tasks)
    ]
    note(ax, tasks[-1].right[0] + 0.2, 6.35, "task stream: one task at a time, $T_t$ the current one", ha="left")
    # one ordinary step, and the Reptile update every few steps
    batch = box(ax, 1.5, 4.5, "current batch\n32 images of $T_t$", w=2.3, h=0.9, role="input")
    buf = box(
        ax, 1.5, 2.1, "prioritized replay buffer\n200 images, priorities $p_i$\n$P(i)=p_i^\\alpha/\\sum_k p_k^\\alpha$",
        w=2.8, h=1.4, role="memory",
    )  # fmt: skip
    net = box(ax, 5.4, 4.5, "learner $f_\\theta$\nMLP encoder + head", w=2.4, h=0.9, role="network")
    sgd = box(ax, 9.0, 4.5, "SGD step on $\\ell$\n(current + replay)", w=2.6, h=0.9, role="operation")
    reptile = box(
        ax, 9.0, 2.3, "Reptile, every 5 steps\n$\\phi_i$: 5 SGD steps on episode $i$\n"
        "$\\theta \\leftarrow \\theta + \\varepsilon\\,(\\bar\\phi - \\theta)$",
        w=3.2, h=1.3, role="operation",
    )  # fmt: skip
    # the memory is written from the buffer and read to predict; predictions fill R
    memory = box(ax, 5.4, 0.7, "prototype memory $M$\none slot per digit", w=2.4, h=0.9, role="memory")
    R = box(ax, 12.2, 0.7, "$R_{i,j}$: accuracy\non $T_j$ after $T_i$", w=2.2, h=0.9, role="output")
    metrics = box(ax, 12.2, 2.9, "ACC, BWT, LA\nfrom $R$", w=2.2, h=0.9, role="output")

    arrow(ax, tasks[min(2, num_tasks - 1)].bottom, batch.top, "$T_t$ only", offset=(0.35, 0.0))
    arrow(ax, batch.right, net.left, "$(x, y)$")
    arrow(ax, buf.at(0.85, 1.0), net.at(0.15, 0.0), "replayed batch, $w_i$", offset=(-0.75, 0.1))
    arrow(ax, net.at(0.4, 0.0), buf.right, "$p_i \\leftarrow |\\ell_i|+\\epsilon$", dashed=True, offset=(0.1, -0.75))
    arrow(ax, batch.bottom, buf.top, "40 exemplars\nat task end", dashed=True, offset=(-0.75, -0.2))
    arrow(ax, net.right, sgd.left, "$\\ell$")
    arrow(ax, sgd.top, net.at(0.8, 1.0), "$\\theta$", bend=0.45, offset=(0.0, 0.45))
    arrow(ax, buf.at(1.0, 0.2), reptile.at(0.0, 0.2), "episodes of the tasks seen", offset=(-0.9, 0.02))
    arrow(ax, reptile.at(0.15, 1.0), net.at(0.85, 0.0), "$\\theta$", offset=(0.3, -0.1))
    arrow(ax, buf.at(0.5, 0.0), memory.left, "stored images", bend=0.3, offset=(0.3, 0.0))
    arrow(ax, net.at(0.75, 0.0), memory.at(0.75, 1.0), "features $k$", offset=(0.55, 0.3))
    arrow(ax, memory.right, R.left, "read $C(M, k, \\beta)$: predictions", offset=(0.0, 0.05))
    arrow(ax, R.top, metrics.bottom, "after each task $i$", offset=(0.0, -0.1))
    return fig
