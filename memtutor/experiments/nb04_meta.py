"""Notebook 04's experiments: the sinusoid training runs and the controller-MAML experiment.

The lesson module :mod:`memtutor.meta` holds MAML, first-order MAML and Reptile (inner loop,
meta-loss, meta-training step and loop, the joint baseline), the task families (sinusoids,
XOR-copy) and the evaluation with adapted parameters. This module runs them as the notebook does:

* the sinusoid benchmark (:class:`SineConfig`, :func:`train_sine_model`), one cached model per
  method (``04_sine_{method}.pt``, configuration :func:`sine_run_config`);
* the controller experiment: notebook 02's copy controller meta-trained (or trained jointly) over
  the XOR-copy family (:class:`ControllerMetaConfig`, :func:`train_controller_init`, cached as
  ``04_controller_{method}.pt`` with :func:`controller_run_config`), then adapted to held-out
  masks (:func:`controller_curves`, cached as :data:`CURVES_FILE` with
  :func:`controller_curves_config`).

Seeding policy: a training function takes ``seed``; :func:`train_sine_model` calls
``torch.manual_seed(seed)`` before it builds its model (inside ``fork_rng``: the caller's global
RNG is left as it was) and draws its task stream from ``generator(seed, SINE_TASKS)``
(``seed + 1``). :func:`train_controller_init` starts from a controller built elsewhere (a cached
run), uses no global randomness, and draws its task stream from ``generator(seed,
CONTROLLER_TASKS)`` (``seed + 1``). The split into meta-training and held-out masks has its own
seed (``ControllerMetaConfig.mask_seed``, purpose :data:`MASK_SPLIT`); evaluation tasks come from
a seed used nowhere else (the notebook's ``EVAL_SEED``, ``VAL_SEED``, ``CTRL_EVAL_SEED``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from memtutor.controller import ControllerConfig, CopyTrainConfig
from memtutor.experiments.nb02_controller import copy_run_config
from memtutor.meta import (
    CONTROLLER_HEAD,
    META_METHODS,
    ControllerLogits,
    TaskBatch,
    adaptation_curve,
    make_sine_mlp,
    maml_meta_loss,
    meta_train,
    packed_bce_loss,
    packed_bits_error,
    pretrain_joint,
    sample_sinusoid_tasks,
    select_params,
    xor_copy_tasks,
    xor_masks,
)
from memtutor.utils import check_positive_int, generator, register_seed_offset
from memtutor.utils import progress as progress_bar

__all__ = [
    "SINE_TASKS",
    "CONTROLLER_TASKS",
    "MASK_SPLIT",
    "SineConfig",
    "SINE_TRAINERS",
    "SINE_HISTORY",
    "sine_configs",
    "sine_file",
    "sine_run_config",
    "sine_minutes",
    "train_sine_model",
    "ControllerMetaConfig",
    "CONTROLLER_TRAINERS",
    "CONTROLLER_MINUTES",
    "CURVES_FILE",
    "CURVES_MINUTES",
    "split_xor_masks",
    "copy_start",
    "controller_file",
    "controller_run_config",
    "train_controller_init",
    "controller_adaptation_curves",
    "controller_eval_tasks",
    "controller_curves",
    "controller_curves_config",
]

#: Task stream of a sinusoid training run: ``seed + 1`` (the model's initialisation uses ``seed``).
SINE_TASKS = register_seed_offset("nb04/sine-task-stream", 1)
#: Task stream of a controller training run: ``seed + 1``.
CONTROLLER_TASKS = register_seed_offset("nb04/controller-task-stream", 1)
#: The random split of the XOR masks into meta-training and held-out masks: ``mask_seed``.
MASK_SPLIT = register_seed_offset("nb04/mask-split", 0)


def _check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


# --------------------------------------------------------------------------- the sinusoid runs


@dataclass(frozen=True)
class SineConfig:
    """The sinusoid benchmark's knobs. Defaults are the MAML paper's, except ``meta_steps``."""

    k_support: int = 10
    """K: support points per task (the paper meta-trains with K = 10)."""
    k_query: int = 10
    """Q: query points per task during meta-training."""
    meta_batch: int = 25
    """T: tasks per meta-update (paper: 25)."""
    inner_lr: float = 0.01
    """alpha: inner-loop SGD step (paper: 0.01; cbfinn/maml's flag default is 1e-3)."""
    inner_steps: int = 1
    """Inner SGD steps during meta-training (paper: 1)."""
    reptile_steps: int = 5
    """Inner steps for Reptile (with 1 step Reptile reduces to joint training)."""
    meta_lr: float = 1e-3
    """beta: Adam learning rate of the outer loop (paper: 1e-3)."""
    meta_steps: int = 40_000
    """Meta-updates (paper: 70,000; CPU-scale default here)."""
    hidden: int = 40
    """Width of the two hidden ReLU layers (paper: 40)."""

    def __post_init__(self) -> None:
        for name in ("k_support", "k_query", "meta_batch", "inner_steps", "reptile_steps", "meta_steps", "hidden"):
            check_positive_int(getattr(self, name), name)
        _check_positive(self.inner_lr, "inner_lr")
        _check_positive(self.meta_lr, "meta_lr")


#: What :func:`train_sine_model` can train: the three meta-learners and the joint baseline.
SINE_TRAINERS = META_METHODS + ("pretrained",)
#: Points of the cached training curve (the loss averaged over this many equal chunks).
SINE_HISTORY = 100
#: Milliseconds per update of each method at the default sizes (25 tasks, 1 inner step, Reptile
#: 5), measured on one free laptop-class core; :func:`sine_minutes` scales them by the updates.
SINE_MS_PER_UPDATE = {"maml": 5.0, "fomaml": 3.0, "reptile": 8.0, "pretrained": 1.2}


def sine_configs(config: SineConfig, *, reptile_meta_steps: int) -> dict[str, SineConfig]:
    """The configuration of each of the notebook's four models: ``config`` for all but Reptile,
    which makes ``reptile_meta_steps`` updates (each costs about twice as much)."""
    reptile = replace(config, meta_steps=check_positive_int(reptile_meta_steps, "reptile_meta_steps"))
    return {"maml": config, "fomaml": config, "reptile": reptile, "pretrained": config}


def sine_file(method: str) -> str:
    """The cached model of ``method``: ``04_sine_{method}.pt``."""
    return f"04_sine_{_check_trainer(method)}.pt"


def sine_run_config(method: str, config: SineConfig, *, seed: int, history: int = SINE_HISTORY) -> dict:
    """The configuration a cached sinusoid model is stored with: method, seed, curve length and
    every :class:`SineConfig` field."""
    return {"method": _check_trainer(method), "seed": seed, "history": history, "sine": config}


def sine_minutes(method: str, config: SineConfig) -> float:
    """Estimated training time of :func:`train_sine_model` on one core, in minutes."""
    return SINE_MS_PER_UPDATE[_check_trainer(method)] * config.meta_steps / 60_000


def _check_trainer(method: str) -> str:
    if method not in SINE_TRAINERS:
        raise ValueError(f"method must be one of {SINE_TRAINERS}, got {method!r}")
    return method


def train_sine_model(
    method: str, config: SineConfig, *, seed: int, progress: bool = False, history: int = SINE_HISTORY
) -> dict[str, object]:
    """Train the paper's MLP on the sinusoid family by ``method`` in :data:`SINE_TRAINERS`.

    The initialisation comes from ``torch.manual_seed(seed)`` (the caller's global RNG is left
    untouched) and the task stream from ``generator(seed, SINE_TASKS)``. Meta-training uses
    ``config.k_support``/``k_query`` points per task, ``config.inner_steps`` inner steps for MAML
    and first-order MAML and ``config.reptile_steps`` for Reptile; the baseline makes
    ``config.meta_steps`` Adam updates on pooled meta-batches.

    Returns:
        ``{"model": state_dict, "losses": (history,) training loss averaged over equal chunks}``,
        the result cached by :func:`memtutor.utils.load_or_train`.
    """
    _check_trainer(method)
    if not isinstance(config, SineConfig):
        raise ValueError(f"config must be a SineConfig, got {type(config).__name__}")
    h = check_positive_int(history, "history")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_sine_mlp(config.hidden)
    tasks = generator(seed, SINE_TASKS)

    def sample(g: torch.Generator):
        return sample_sinusoid_tasks(config.meta_batch, config.k_support, config.k_query, generator=g)

    if method == "pretrained":
        losses = pretrain_joint(
            model, sample, steps=config.meta_steps, lr=config.meta_lr, generator=tasks, progress=progress
        )
    else:
        steps = config.reptile_steps if method == "reptile" else config.inner_steps
        losses = meta_train(
            model, sample, method=method, meta_steps=config.meta_steps, inner_lr=config.inner_lr,
            inner_steps=steps, meta_lr=config.meta_lr, generator=tasks, progress=progress,
        )  # fmt: skip
    chunks = torch.tensor_split(losses, min(h, losses.numel()))
    return {"model": model.state_dict(), "losses": torch.stack([c.mean() for c in chunks])}


# --------------------------------------------------------------------------- the controller runs


@dataclass(frozen=True)
class ControllerMetaConfig:
    """Knobs of the controller meta-learning experiment (notebook 04, last section)."""

    meta_steps: int = 150
    """Outer updates (MAML) or joint-training updates (same number of sequences)."""
    meta_batch: int = 8
    """Tasks (masks) per update."""
    n_support: int = 16
    """Support sequences per task: what an adapting model gets to see."""
    n_query: int = 16
    """Query sequences per task during meta-training."""
    inner_lr: float = 0.1
    """alpha: SGD step of the inner loop on the output layer (loss in bits per sequence)."""
    inner_steps: int = 1
    """Inner steps during meta-training."""
    meta_lr: float = 3e-4
    """Adam learning rate of the outer loop and of the joint baseline."""
    grad_clip: float = 10.0
    """Global gradient-norm clip of the outer step (as in notebook 02's training)."""
    min_length: int = 1
    max_length: int = 10
    """Copy lengths (notebook 02's training range)."""
    width: int = 8
    """Bits per vector; 2**width masks."""
    n_heldout: int = 32
    """Masks never used in meta-training, for evaluation."""
    mask_seed: int = 0
    """Seed of the split into meta-training and held-out masks."""

    def __post_init__(self) -> None:
        for name in (
            "meta_steps",
            "meta_batch",
            "n_support",
            "n_query",
            "inner_steps",
            "min_length",
            "max_length",
            "width",
            "n_heldout",
        ):
            check_positive_int(getattr(self, name), name)
        for name in ("inner_lr", "meta_lr", "grad_clip"):
            _check_positive(getattr(self, name), name)


#: What :func:`train_controller_init` can do from a pretrained controller.
CONTROLLER_TRAINERS = ("maml", "fomaml", "joint")
#: Estimated training time of :func:`train_controller_init` with the default configuration on one
#: core, in minutes (MAML: about 1.1 s per outer update; joint: about 0.2 s per update).
CONTROLLER_MINUTES = {"maml": 3.0, "fomaml": 2.0, "joint": 0.5}
#: The cached adaptation curves of the three starts on the held-out masks.
CURVES_FILE = "04_controller_curves.pt"
#: Estimated time of :func:`controller_curves` (3 starts, 32 held-out masks, 10 steps) on one core, in minutes.
CURVES_MINUTES = 1.0


def split_xor_masks(width: int, n_heldout: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split the 2**width masks into (meta-training masks, held-out masks) at random."""
    masks = xor_masks(width)
    n_heldout = check_positive_int(n_heldout, "n_heldout")
    if n_heldout >= len(masks):
        raise ValueError(f"n_heldout must leave masks to train on: {n_heldout} of {len(masks)}")
    order = torch.randperm(len(masks), generator=generator(seed, MASK_SPLIT))
    return masks[order[n_heldout:]], masks[order[:n_heldout]]


def copy_start(seed: int, config: ControllerConfig, train: CopyTrainConfig, *, lstm_update_cap: int) -> dict:
    """Which start a controller run came from: notebook 02's cached copy run and its configuration."""
    return {
        "run": f"02_copy_seed{seed}.pt",
        "config": copy_run_config(seed, config, train, lstm_update_cap=lstm_update_cap),
    }


def controller_file(method: str) -> str:
    """The cached controller trained by ``method``: ``04_controller_{method}.pt``."""
    return f"04_controller_{_check_controller_trainer(method)}.pt"


def controller_run_config(method: str, config: ControllerMetaConfig, *, seed: int, start: Mapping) -> dict:
    """The configuration a cached controller run is stored with: method, seed, every
    :class:`ControllerMetaConfig` field and the start it was trained from (:func:`copy_start`)."""
    return {"method": _check_controller_trainer(method), "seed": seed, "meta": config, "start": start}


def _check_controller_trainer(method: str) -> str:
    if method not in CONTROLLER_TRAINERS:
        raise ValueError(f"method must be one of {CONTROLLER_TRAINERS}, got {method!r}")
    return method


def train_controller_init(
    method: str, controller: nn.Module, config: ControllerMetaConfig, *, seed: int, progress: bool = False
) -> dict[str, object]:
    """Train ``controller`` (a MemoryController, changed in place) on the XOR-copy family.

    ``"maml"``/``"fomaml"``: meta-learn the initialisation with the inner loop on the output layer
    (:data:`~memtutor.meta.CONTROLLER_HEAD`) and the outer step on every parameter. ``"joint"``:
    the ordinary alternative, Adam on the pooled sequences of the same meta-batches (it never sees
    which mask a sequence belongs to). Task masks come from the meta-training split only; the
    task stream (which masks, which sequences) is ``generator(seed, CONTROLLER_TASKS)``.

    Returns:
        ``{"controller": state_dict, "losses": (meta_steps,)}``, the result cached by
        :func:`memtutor.utils.load_or_train`.
    """
    _check_controller_trainer(method)
    if not isinstance(config, ControllerMetaConfig):
        raise ValueError(f"config must be a ControllerMetaConfig, got {type(config).__name__}")
    c = config
    train_masks, _ = split_xor_masks(c.width, c.n_heldout, c.mask_seed)
    model = ControllerLogits(controller)
    optimizer = torch.optim.Adam(model.parameters(), lr=c.meta_lr)
    tasks = generator(seed, CONTROLLER_TASKS)
    losses = torch.empty(c.meta_steps)
    for i in progress_bar(range(c.meta_steps), enabled=progress, desc=f"controller ({method})", mininterval=1.0):
        pick = torch.randint(0, len(train_masks), (c.meta_batch,), generator=tasks)
        batch = xor_copy_tasks(
            train_masks[pick],
            c.n_support,
            c.n_query,
            min_length=c.min_length,
            max_length=c.max_length,
            generator=tasks,
        )
        optimizer.zero_grad(set_to_none=True)
        if method == "joint":
            x = torch.cat([batch.x_support, batch.x_query], dim=1).flatten(0, 1)  # (T*(K+Q), S, I)
            y = torch.cat([batch.y_support, batch.y_query], dim=1).flatten(0, 1)
            loss = packed_bce_loss(model(x), y)
        else:
            # vectorize=False: the controller checks each sequence's first step with bool(), which
            # vmap cannot batch; the tasks run one after the other (each batched over sequences).
            loss = maml_meta_loss(
                model, select_params(model, CONTROLLER_HEAD), batch, inner_lr=c.inner_lr, steps=c.inner_steps,
                first_order=method == "fomaml", loss_fn=packed_bce_loss, vectorize=False,
            )  # fmt: skip
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()
        losses[i] = loss.detach()
    return {"controller": controller.state_dict(), "losses": losses}


# --------------------------------------------------------------------------- held-out evaluation


def controller_adaptation_curves(
    controller: nn.Module, tasks: TaskBatch, *, inner_lr: float, max_steps: int
) -> dict[str, Tensor]:
    """Adapt ``controller``'s output layer to each task of ``tasks`` (from :func:`xor_copy_tasks`) by
    0..``max_steps`` SGD steps on the support sequences; score the query sequences.

    Returns:
        ``{"loss": (T, max_steps + 1) bits-per-sequence BCE, "bits": (T, max_steps + 1) wrong bits
        per sequence}`` with the adapted parameters at every step.
    """
    model = ControllerLogits(controller)
    head = select_params(model, CONTROLLER_HEAD)

    def both(logits: Tensor, y: Tensor) -> Tensor:
        return torch.stack([packed_bce_loss(logits, y), packed_bits_error(logits, y)])

    curves = adaptation_curve(
        model,
        head,
        tasks,
        inner_lr=inner_lr,
        max_steps=max_steps,
        loss_fn=packed_bce_loss,
        metric_fn=both,
        vectorize=False,
    )  # (T, S + 1, 2)
    return {"loss": curves[..., 0], "bits": curves[..., 1]}


def controller_eval_tasks(config: ControllerMetaConfig, *, n_query: int, eval_seed: int) -> TaskBatch:
    """One XOR-copy task per held-out mask: ``config.n_support`` support and ``n_query`` query
    sequences each, drawn from ``generator(eval_seed)`` (a seed training never uses)."""
    _, heldout = split_xor_masks(config.width, config.n_heldout, config.mask_seed)
    return xor_copy_tasks(
        heldout,
        config.n_support,
        n_query,
        min_length=config.min_length,
        max_length=config.max_length,
        generator=generator(eval_seed),
    )


def controller_curves(
    starts: Mapping[str, nn.Module], tasks: TaskBatch, *, inner_lr: float, max_steps: int, progress: bool = False
) -> dict[str, dict[str, Tensor]]:
    """:func:`controller_adaptation_curves` of every start (name -> controller) on ``tasks``."""
    return {
        name: controller_adaptation_curves(controller, tasks, inner_lr=inner_lr, max_steps=max_steps)
        for name, controller in progress_bar(starts.items(), enabled=progress, desc="adapt")
    }


def controller_curves_config(
    config: ControllerMetaConfig, *, eval_seed: int, n_query: int, max_steps: int, starts: Mapping[str, Mapping]
) -> dict:
    """The configuration the cached curves are stored with: every setting of the evaluation (tasks,
    adaptation step and steps) and the configuration of each start (name -> its run's configuration)."""
    return {
        "eval_seed": eval_seed,
        "n_query": n_query,
        "max_steps": max_steps,
        "inner_lr": config.inner_lr,
        "n_support": config.n_support,
        "min_length": config.min_length,
        "max_length": config.max_length,
        "width": config.width,
        "n_heldout": config.n_heldout,
        "mask_seed": config.mask_seed,
        "starts": dict(starts),
    }
