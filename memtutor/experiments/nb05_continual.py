"""Notebook 05's experiments: the methods table and the replay explorer's grid.

The lesson module :mod:`memtutor.continual` holds the task streams, the metrics, the learner's
components (encoder, replay buffer, prototype memory, Reptile update) and the training loop
:func:`~memtutor.continual.train_stream`. This module runs them as notebook 05 does: the named
learners it compares (:data:`CONTINUAL_METHODS`), every learner x seed on a scenario
(:func:`run_methods`, :func:`train_methods`), the buffer-size x replay-ratio grid
(:func:`replay_grid`), the table helper :func:`summarize`, and the configurations of the two
cached results (:class:`MethodsTableConfig`, :class:`ReplayGridConfig`).

Seeding: seed ``s`` of a table fixes the stream's train/test split (``make_task_stream(seed=s)``)
and the learner (``train_stream(seed=s)``), so all learners of one seed see the same split and
start from the same initialisation; nothing else is random.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from memtutor.continual import (
    SCENARIOS,
    ContinualConfig,
    average_accuracy,
    average_forgetting,
    backward_transfer,
    check_accuracy_matrix,
    forward_transfer,
    make_task_stream,
    train_stream,
)
from memtutor.utils import check_positive_int
from memtutor.utils import progress as progress_bar

__all__ = [
    "CONTINUAL_METHODS",
    "METHODS_FILE",
    "METHODS_MINUTES",
    "REPLAY_GRID_FILE",
    "REPLAY_GRID_MINUTES",
    "MethodsTableConfig",
    "ReplayGridConfig",
    "run_methods",
    "train_methods",
    "replay_grid",
    "train_replay_grid",
    "summarize",
]

#: The learners compared in notebook 05: name -> switches of :func:`memtutor.continual.train_stream`.
CONTINUAL_METHODS: dict[str, dict[str, Any]] = {
    "naive": dict(replay=None, memory=False, meta=False, joint=False),
    "uniform replay": dict(replay="uniform", memory=False, meta=False, joint=False),
    "prioritized replay": dict(replay="prioritized", memory=False, meta=False, joint=False),
    "replay + memory": dict(replay="prioritized", memory=True, meta=False, joint=False),
    "full agent": dict(replay="prioritized", memory=True, meta=True, joint=False),
    "joint": dict(replay=None, memory=False, meta=False, joint=True),
}

#: The cached methods table (every learner x seed x scenario).
METHODS_FILE = "05_methods.pt"
#: Estimated time to recompute it (90 runs of a few seconds), minutes: a changed parameter raises.
METHODS_MINUTES = 6.0
#: The cached grid of the replay explorer.
REPLAY_GRID_FILE = "05_replay_grid.pt"
#: Estimated time to recompute it (60 runs of a few seconds), minutes: a changed parameter raises.
REPLAY_GRID_MINUTES = 4.0


def _switches(method: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """The switches of a learner given by name (:data:`CONTINUAL_METHODS`) or as a dict."""
    if isinstance(method, str):
        if method not in CONTINUAL_METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {tuple(CONTINUAL_METHODS)}")
        return CONTINUAL_METHODS[method]
    return method


def _seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(s) for s in seeds)
    if not out or any(s < 0 for s in out):
        raise ValueError(f"seeds must be a non-empty sequence of non-negative ints, got {seeds!r}")
    return out


@dataclass(frozen=True)
class MethodsTableConfig:
    """Everything notebook 05's methods table depends on (the cached result's configuration)."""

    learner: ContinualConfig
    """The learner's settings (the notebook's ``CFG``), the same for every method."""
    seeds: tuple[int, ...]
    """Each seed fixes a train/test split and an initialisation (the notebook's ``SEEDS``)."""
    scenarios: tuple[str, ...] = SCENARIOS
    """Scenarios of :func:`memtutor.continual.make_task_stream`."""
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(CONTINUAL_METHODS))
    """Learner name -> switches (default :data:`CONTINUAL_METHODS`)."""

    def __post_init__(self) -> None:
        # Lists from a notebook's parameters cell become tuples: the config compares by value.
        object.__setattr__(self, "seeds", _seeds(self.seeds))
        object.__setattr__(self, "scenarios", tuple(self.scenarios))
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown or not self.scenarios:
            raise ValueError(f"scenarios must be among {SCENARIOS}, got {self.scenarios!r}")
        object.__setattr__(self, "methods", {name: dict(_switches(m)) for name, m in self.methods.items()})


@dataclass(frozen=True)
class ReplayGridConfig:
    """Everything the replay explorer's grid depends on (the cached result's configuration)."""

    learner: ContinualConfig
    """The learner's settings; ``buffer_size`` and ``replay_ratio`` are overridden by the grid."""
    buffer_sizes: tuple[int, ...]
    """Replay buffer sizes in images (the notebook's ``GRID_BUFFERS``)."""
    replay_ratios: tuple[float, ...]
    """Replayed images per current image (the notebook's ``GRID_RATIOS``)."""
    seeds: tuple[int, ...]
    """The notebook's ``GRID_SEEDS``."""
    scenario: str = "class"
    method: str = "prioritized replay"
    """A name of :data:`CONTINUAL_METHODS`; its switches are recorded in ``switches``."""
    switches: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "buffer_sizes", tuple(check_positive_int(b, "buffer size") for b in self.buffer_sizes))
        object.__setattr__(self, "replay_ratios", tuple(float(r) for r in self.replay_ratios))
        object.__setattr__(self, "seeds", _seeds(self.seeds))
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; expected one of {SCENARIOS}")
        object.__setattr__(self, "switches", dict(self.switches or _switches(self.method)))


def run_methods(
    scenario: str,
    methods: Mapping[str, Mapping[str, Any]] | Sequence[str],
    seeds: Sequence[int],
    cfg: ContinualConfig | None = None,
    *,
    num_tasks: int | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Every method x seed on one scenario. Returns ``{f"{method}/{key}": (S, ...) stacked tensors}``.

    ``methods`` maps names to switches, or lists names of :data:`CONTINUAL_METHODS`. The seed
    fixes both the train/test split and the learner, so all methods of one seed see the same
    split; keys are those of :func:`memtutor.continual.train_stream`.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    cfg = ContinualConfig() if cfg is None else cfg
    named = dict(methods) if isinstance(methods, Mapping) else {m: _switches(m) for m in methods}
    out: dict[str, list] = {}
    bar = progress_bar(total=len(named) * len(seeds), enabled=progress, desc=f"{scenario}-incremental")
    for s in seeds:
        stream = make_task_stream(scenario, seed=s)
        for name, switches in named.items():
            res = train_stream(stream, switches, cfg, seed=s, num_tasks=num_tasks)
            for k in ("R", "baseline", "curve", "curve_step", "task_end", "priority_changes"):
                out.setdefault(f"{name}/{k}", []).append(res[k])
            bar.update()
    bar.close()
    return {k: _stack_padded(v) for k, v in out.items()}


def train_methods(config: MethodsTableConfig, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """The methods table: :func:`run_methods` on every scenario of ``config``.

    Returns ``{f"{scenario}/{method}/{key}": (S, ...)}`` (the result cached in :data:`METHODS_FILE`).
    """
    out = {}
    for scenario in config.scenarios:
        res = run_methods(scenario, config.methods, config.seeds, config.learner, progress=progress)
        out.update({f"{scenario}/{key}": value for key, value in res.items()})
    return out


def _stack_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack along a new first dim; curves of different lengths (joint vs the rest) are NaN-padded."""
    if tensors[0].dim() == 0 or all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(tensors)
    n = max(t.shape[0] for t in tensors)
    padded = [torch.cat([t.float(), torch.full((n - t.shape[0], *t.shape[1:]), float("nan"))]) for t in tensors]
    return torch.stack(padded)


def replay_grid(
    scenario: str,
    buffer_sizes: Sequence[int],
    replay_ratios: Sequence[float],
    seeds: Sequence[int],
    cfg: ContinualConfig | None = None,
    *,
    method: str | Mapping[str, Any] = "prioritized replay",
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """ACC and BWT of ``method`` over a grid of buffer sizes x replay ratios, per seed.

    Returns ``ACC`` and ``BWT`` (len(buffer_sizes), len(replay_ratios), S) and the two axes.
    """
    cfg = ContinualConfig() if cfg is None else cfg
    switches = _switches(method)
    acc = torch.zeros(len(buffer_sizes), len(replay_ratios), len(seeds))
    bwt = torch.zeros_like(acc)
    bar = progress_bar(total=acc.numel(), enabled=progress, desc="grid")
    for k, s in enumerate(seeds):
        stream = make_task_stream(scenario, seed=s)
        for i, size in enumerate(buffer_sizes):
            for j, ratio in enumerate(replay_ratios):
                c = replace(cfg, buffer_size=int(size), replay_ratio=float(ratio))
                R = train_stream(stream, switches, c, seed=s)["R"]
                acc[i, j, k], bwt[i, j, k] = average_accuracy(R), backward_transfer(R)
                bar.update()
    bar.close()
    return {
        "ACC": acc,
        "BWT": bwt,
        "buffer_sizes": torch.tensor(list(buffer_sizes)),
        "replay_ratios": torch.tensor(list(replay_ratios), dtype=torch.float32),
    }


def train_replay_grid(config: ReplayGridConfig, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """The explorer's grid: :func:`replay_grid` of ``config`` (the result cached in :data:`REPLAY_GRID_FILE`)."""
    return replay_grid(
        config.scenario,
        config.buffer_sizes,
        config.replay_ratios,
        config.seeds,
        config.learner,
        method=config.switches,
        progress=progress,
    )


def summarize(R: torch.Tensor, baseline: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation over the leading (seed) dimension of ACC, BWT, FWT, forgetting.

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
    }
    out = {}
    for k, v in values.items():
        std = v.std().item() if v.numel() > 1 else 0.0
        out[k] = (v.mean().item(), std)
    return out
