"""Notebook 09's experiments: MAML on the memory controller of notebook 02, over XOR-copy tasks.

The lesson module :mod:`memtutor.meta` holds MAML (inner loop, meta-loss), the XOR-copy task family,
the controller as a function of its parameters (:class:`~memtutor.meta.ControllerLogits`) and the
evaluation with adapted parameters. This module runs them as the notebook does:

* the training runs: notebook 02's copy controller of seed s meta-trained (or trained jointly) over
  the XOR-copy family (:class:`ControllerMetaConfig`, :func:`train_controller_init`, cached as
  ``09_controller_{method}_seed{seed}.pt``);
* every choice of how a start adapts, made on validation masks (:func:`controller_masks`,
  :func:`controller_select_and_test`, cached as ``09_controller_eval_{start}_seed{seed}.pt``), and
  the held-out curves of the other seeds with that choice (:func:`load_controller_test`,
  ``09_controller_test_{start}_seed{seed}.pt``);
* a linear probe of the controller's features (:func:`probe_wrong_bits`);
* :func:`draw_controller_maml`, the lesson's diagram.

``python -m memtutor.experiments.nb09_meta_controller --jobs N`` computes every missing cached
result in N processes (:func:`main`).

Seeding policy: :func:`train_controller_init` starts from a controller built elsewhere (notebook
02's cached copy run), uses no global randomness, and draws its task stream from
``generator(seed, CONTROLLER_TASKS)`` (``seed + 1``). The split into meta-training, validation and
held-out masks has its own seed (``ControllerMetaConfig.mask_seed``, purpose :data:`MASK_SPLIT`);
evaluation and validation tasks come from seeds used nowhere else (the notebook's
``CTRL_EVAL_SEED`` and ``CTRL_VAL_SEED``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from memtutor.controller import ControllerConfig, CopyTrainConfig
from memtutor.diagrams import HIGHLIGHT, arrow, box, canvas, note
from memtutor.experiments.nb02_controller import copy_run_config
from memtutor.meta import (
    CONTROLLER_HEAD,
    ControllerLogits,
    TaskBatch,
    adaptation_curve,
    maml_meta_loss,
    packed_bce_loss,
    packed_bits_error,
    select_params,
    xor_copy_tasks,
    xor_masks,
)
from memtutor.utils import check_positive_int, generator, load_or_train, register_seed_offset
from memtutor.utils import progress as progress_bar

__all__ = [
    "draw_controller_maml",
    "CONTROLLER_TASKS",
    "MASK_SPLIT",
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
    "CONTROLLER_SEEDS",
    "CONTROLLER_STARTS",
    "HEAD_LRS",
    "ALL_LRS",
    "SELECT_MINUTES",
    "EVAL_DEFAULTS",
    "controller_masks",
    "controller_val_tasks",
    "controller_select_config",
    "controller_select_and_test",
    "parse_choice",
    "output_features",
    "probe_wrong_bits",
    "controller_start",
    "load_controller_run",
    "controller_candidates",
    "select_file",
    "select_run_config",
    "load_selection",
    "test_file",
    "controller_test_config",
    "load_controller_test",
    "main",
]

#: Task stream of a controller training run: ``seed + 1``.
CONTROLLER_TASKS = register_seed_offset("nb09/controller-task-stream", 1)
#: The random split of the XOR masks into meta-training and held-out masks: ``mask_seed``.
MASK_SPLIT = register_seed_offset("nb09/mask-split", 0)


# --------------------------------------------------------------------------- the lesson's diagram

_INNER = "#777777"  # the inner step on the head


def draw_controller_maml() -> Figure:
    """Notebook 09's diagram, in the notebook's symbols; returns the figure.

    The controller theta = (theta_body, theta_head): the body (LSTM core and memory interface) reads
    the sequences of mask m_i and the memory M_t, and hands the features [h_t, r_t] to the head
    (W_y, b_y), which answers y_t. The inner step adapts the head only, once per mask:
    phi_i = theta_head - alpha grad L_sup_i; the query losses L_qry_i(theta_body, phi_i) average to
    the meta-loss, whose gradient (the outer step, highlighted) reaches every parameter, the body's
    through the features the head was adapted on.
    """
    fig, ax = canvas(13.0, 6.0)
    note(ax, 6.5, 5.7, r"MAML on the controller $\theta = (\theta_{\mathrm{body}}, \theta_{\mathrm{head}})$: "
         r"the inner step adapts the head, the outer step reaches every parameter", fontsize=9.5)  # fmt: skip
    x_in = box(ax, 1.2, 3.6, "sequences of\n" + r"mask $m_i$: $x_t$", w=1.9, h=1.0, role="input")
    body = box(ax, 4.1, 3.6, "body " + r"$\theta_{\mathrm{body}}$" + "\nLSTM core, interface",
               w=2.5, h=1.0, role="network")  # fmt: skip
    mem = box(ax, 4.1, 1.75, r"memory $M_t$", w=2.0, h=0.7, role="memory")
    head = box(ax, 7.2, 3.6, "head " + r"$\theta_{\mathrm{head}}$" + "\n" + r"$(W_y, b_y)$", w=1.7, h=1.0,
               role="network")  # fmt: skip
    arrow(ax, x_in.right, body.left)
    arrow(ax, body.at(0.3, 0), mem.at(0.3, 1), "write", offset=(-0.35, -0.1))
    arrow(ax, mem.at(0.7, 1), body.at(0.7, 0), r"read $r_t$", offset=(0.4, -0.1))
    arrow(ax, body.right, head.left, r"$[h_t, r_t]$")
    note(ax, 6.55, 2.75, r"$y_t = W_y[h_t, r_t] + b_y$", fontsize=8.5)
    # the inner step, once per mask, on the head only
    losses = []
    for i, y in enumerate((4.85, 3.6, 2.35)):
        k = "1" if i == 0 else "i" if i == 1 else "T"
        phi = box(ax, 9.75, y, rf"$\varphi_{{{k}}}$", w=0.8, h=0.6, role="network", dashed=True, fontsize=11)
        arrow(ax, head.right, phi.left, bend=(0.0 if i == 1 else 0.1 if i == 0 else -0.1), color=_INNER)
        loss = box(ax, 11.75, y, rf"$\mathcal{{L}}^{{\mathrm{{qry}}}}_{{{k}}}(\theta_{{\mathrm{{body}}}}, "
                   rf"\varphi_{{{k}}})$", w=2.1, h=0.6, role="output", fontsize=8.5)  # fmt: skip
        arrow(ax, phi.right, loss.left, color=_INNER)
        losses.append(loss)
    note(ax, 8.4, 5.3, r"inner step, each mask $i$:", fontsize=8.5)
    note(ax, 8.4, 4.95, r"$-\alpha\nabla_{\theta_{\mathrm{head}}}\mathcal{L}^{\mathrm{sup}}_i$", fontsize=8.5)
    # the outer step: the mean query loss, differentiated through the inner step, reaches every parameter
    outer = box(ax, 9.9, 0.75, r"outer step on every parameter: $\theta \leftarrow \theta - \beta\,\nabla_\theta"
                r"\,\frac{1}{T}\sum_i \mathcal{L}^{\mathrm{qry}}_i$", w=5.6, h=0.7, role="operation",
                fontsize=9)  # fmt: skip
    arrow(ax, losses[-1].bottom, (losses[-1].x, outer.y + outer.h / 2), r"mean over $T$ masks", color=HIGHLIGHT,
          offset=(-1.05, -0.1))  # fmt: skip
    arrow(ax, outer.at(0.2, 1), head.at(0.75, 0), color=HIGHLIGHT)
    arrow(ax, outer.left, body.at(0.95, 0), color=HIGHLIGHT, bend=-0.25)
    return fig


def _check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


# --------------------------------------------------------------------------- the controller runs


@dataclass(frozen=True)
class ControllerMetaConfig:
    """Knobs of the controller meta-learning experiment (notebook 09)."""

    meta_steps: int = 150
    """Outer updates (MAML) or joint-training updates (same number of sequences)."""
    meta_batch: int = 8
    """Tasks (masks) per update."""
    n_support: int = 16
    """Support sequences per task: what an adapting model gets to see."""
    n_query: int = 16
    """Query sequences per task during meta-training."""
    inner_lr: float = 0.1
    """The SGD step alpha of the inner loop on the output layer (loss in bits per sequence)."""
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
    """Masks never used in meta-training, for evaluation (the test masks)."""
    n_val: int = 32
    """Masks taken out of the meta-training masks for validation: every choice is made on them."""
    snapshots: tuple[int, ...] = (75,)
    """Updates after which the controller is also saved (the number of updates is chosen on the
    validation masks among these and ``meta_steps``)."""
    mask_seed: int = 0
    """Seed of the split into meta-training, validation and held-out masks."""

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
            "n_val",
        ):
            check_positive_int(getattr(self, name), name)
        for name in ("inner_lr", "meta_lr", "grad_clip"):
            _check_positive(getattr(self, name), name)
        if not isinstance(self.snapshots, tuple) or any(
            isinstance(s, bool) or not isinstance(s, int) or not 0 < s < self.meta_steps for s in self.snapshots
        ):
            raise ValueError(f"snapshots must be a tuple of update counts in (0, meta_steps), got {self.snapshots!r}")
        if self.n_heldout + self.n_val >= 2**self.width:
            raise ValueError(f"n_heldout + n_val must leave masks to train on, got {self.n_heldout} + {self.n_val}")


#: What :func:`train_controller_init` can do from a pretrained controller.
CONTROLLER_TRAINERS = ("maml", "fomaml", "joint")
#: Meta-training seeds of the controller experiment; seed s starts from notebook 02's copy run s.
CONTROLLER_SEEDS = (0, 1, 2)
#: The three starts adapted to new masks, by their file tag.
CONTROLLER_STARTS = ("copy", "joint", "maml")
#: Candidate adaptation steps on the validation masks: output layer only, and every parameter.
HEAD_LRS = (0.03, 0.1, 0.3, 1.0)
ALL_LRS = (1e-4, 1e-3, 1e-2, 1e-1)
#: Estimated time of :func:`controller_select_and_test` for one start on one core, in minutes.
SELECT_MINUTES = 4.0
#: Estimated training time of :func:`train_controller_init` with the default configuration on one
#: core, in minutes (MAML: about 1.1 s per outer update; joint: about 0.2 s per update).
CONTROLLER_MINUTES = {"maml": 3.0, "fomaml": 2.0, "joint": 0.5}
#: The cached adaptation curves of the three starts on the held-out masks.
CURVES_FILE = "09_controller_curves.pt"
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


def controller_masks(config: ControllerMetaConfig) -> tuple[Tensor, Tensor, Tensor]:
    """(meta-training, validation, held-out) masks: :func:`split_xor_masks` gives the held-out ones;
    the first ``config.n_val`` of the rest (already in random order) are the validation masks."""
    rest, heldout = split_xor_masks(config.width, config.n_heldout, config.mask_seed)
    return rest[config.n_val :], rest[: config.n_val], heldout


def copy_start(seed: int, config: ControllerConfig, train: CopyTrainConfig, *, lstm_update_cap: int) -> dict:
    """Which start a controller run came from: notebook 02's cached copy run and its configuration."""
    return {
        "run": f"02_copy_seed{seed}.pt",
        "config": copy_run_config(seed, config, train, lstm_update_cap=lstm_update_cap),
    }


def controller_file(method: str, seed: int = 0) -> str:
    """The cached controller trained by ``method`` with ``seed``: ``09_controller_{method}_seed{seed}.pt``."""
    return f"09_controller_{_check_controller_trainer(method)}_seed{seed}.pt"


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
    which mask a sequence belongs to). Task masks come from the meta-training split only (never a
    validation or held-out mask, :func:`controller_masks`); the task stream (which masks, which
    sequences) is ``generator(seed, CONTROLLER_TASKS)``.

    Returns:
        ``{"controller": state_dict, "snapshots": {str(updates): state_dict} after each of
        ``config.snapshots`` updates, "losses": (meta_steps,)}``, the result cached by
        :func:`memtutor.utils.load_or_train`.
    """
    _check_controller_trainer(method)
    if not isinstance(config, ControllerMetaConfig):
        raise ValueError(f"config must be a ControllerMetaConfig, got {type(config).__name__}")
    c = config
    train_masks, _, _ = controller_masks(c)
    snapshots: dict[str, dict] = {}
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
        if i + 1 in c.snapshots:
            snapshots[str(i + 1)] = {k: v.detach().clone() for k, v in controller.state_dict().items()}
    return {"controller": controller.state_dict(), "snapshots": snapshots, "losses": losses}


# --------------------------------------------------------------------------- held-out evaluation


def controller_adaptation_curves(
    controller: nn.Module, tasks: TaskBatch, *, inner_lr: float, max_steps: int, head_only: bool = True
) -> dict[str, Tensor]:
    """Adapt ``controller``'s output layer (every parameter when ``head_only`` is False) to each
    task of ``tasks`` (from :func:`xor_copy_tasks`) by 0..``max_steps`` SGD steps on the support
    sequences; score the query sequences.

    Returns:
        ``{"loss": (T, max_steps + 1) bits-per-sequence BCE, "bits": (T, max_steps + 1) wrong bits
        per sequence}`` with the adapted parameters at every step.
    """
    model = ControllerLogits(controller)
    head = select_params(model, CONTROLLER_HEAD if head_only else None)

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


# --------------------------------------------------------------------------- choices on validation masks


def controller_val_tasks(config: ControllerMetaConfig, *, n_query: int, val_seed: int) -> TaskBatch:
    """One XOR-copy task per validation mask (:func:`controller_masks`): ``config.n_support`` support
    and ``n_query`` query sequences each, from ``generator(val_seed)`` (its own seed)."""
    _, val, _ = controller_masks(config)
    return xor_copy_tasks(
        val, config.n_support, n_query, min_length=config.min_length, max_length=config.max_length,
        generator=generator(val_seed),
    )  # fmt: skip


def controller_select_config(
    config: ControllerMetaConfig,
    *,
    start: Mapping,
    eval_seed: int,
    val_seed: int,
    n_query: int,
    val_query: int,
    max_steps: int,
    val_steps: int,
    head_lrs: tuple[float, ...] = HEAD_LRS,
    all_lrs: tuple[float, ...] = ALL_LRS,
) -> dict:
    """The configuration :func:`controller_select_and_test`'s cached result is stored with: the start's
    own configuration and every setting of the validation and the test."""
    return {
        "start": dict(start),
        "meta": config,
        "eval_seed": eval_seed,
        "val_seed": val_seed,
        "n_query": n_query,
        "val_query": val_query,
        "max_steps": max_steps,
        "val_steps": val_steps,
        "head_lrs": tuple(head_lrs),
        "all_lrs": tuple(all_lrs),
    }


def _nan_to_inf(x: Tensor) -> Tensor:
    return torch.nan_to_num(x, nan=math.inf)


def controller_select_and_test(
    candidates: Mapping[str, nn.Module],
    val_tasks: TaskBatch,
    test_tasks: TaskBatch,
    *,
    train_lr: float,
    max_steps: int,
    val_steps: int,
    head_lrs: tuple[float, ...] = HEAD_LRS,
    all_lrs: tuple[float, ...] = ALL_LRS,
) -> dict[str, object]:
    """Choose how one start adapts on the validation masks, then score that choice on the test masks.

    ``candidates`` maps a number of training updates (``"0"`` for an untrained start) to the
    controller saved then; the last one is the final controller. The choices: which snapshot, and
    the adaptation step ``alpha`` of the output layer (``head_lrs``), or of every parameter
    (``all_lrs``, final controller only). Score: mean wrong bits per query sequence over
    adaptation steps 1..``val_steps`` on ``val_tasks`` (a diverging step scores inf).

    Returns:
        ``{"val": {"head|alpha|updates" or "all|alpha|updates": (val_steps + 1,) mean wrong bits},
        "choice": the best key, "test": {"loss", "bits": (T, max_steps + 1)} of the choice on
        ``test_tasks``, "test_default": the same for the output layer at ``train_lr``, final controller}``.
    """
    if not candidates:
        raise ValueError("candidates must name at least one controller")
    final = list(candidates)[-1]
    val: dict[str, Tensor] = {}
    for updates, controller in candidates.items():
        for lr in head_lrs:
            c = controller_adaptation_curves(controller, val_tasks, inner_lr=lr, max_steps=val_steps)
            val[f"head|{lr:g}|{updates}"] = _nan_to_inf(c["bits"].mean(0))
    for lr in all_lrs:
        c = controller_adaptation_curves(
            candidates[final], val_tasks, inner_lr=lr, max_steps=val_steps, head_only=False
        )
        val[f"all|{lr:g}|{final}"] = _nan_to_inf(c["bits"].mean(0))
    choice = min(val, key=lambda k: val[k][1:].mean().item())
    mode, lr_text, updates = choice.split("|")
    test = controller_adaptation_curves(
        candidates[updates], test_tasks, inner_lr=float(lr_text), max_steps=max_steps, head_only=mode == "head"
    )
    if choice == f"head|{train_lr:g}|{final}":
        default = test  # the choice is the training step on the final controller: the same curves
    else:
        default = controller_adaptation_curves(candidates[final], test_tasks, inner_lr=train_lr, max_steps=max_steps)
    return {"val": val, "choice": choice, "test": test, "test_default": default}


def parse_choice(choice: str) -> tuple[str, float, int]:
    """``"head|0.1|150"`` -> ("head", 0.1, 150): what is adapted, the step, the training updates."""
    mode, lr, updates = choice.split("|")
    return mode, float(lr), int(updates)


# --------------------------------------------------------------------------- a linear probe


def output_features(controller: nn.Module, x: Tensor) -> Tensor:
    """What the output layer reads, [h_t, r_t], for inputs x (B, T, I) -> (B, T, F)."""
    seen: list[Tensor] = []
    output = controller.output
    if not isinstance(output, nn.Module):
        raise ValueError("controller must have an output layer (a module named output)")
    hook = output.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            controller(x)
    finally:
        hook.remove()
    return torch.stack(seen, dim=1)


def probe_wrong_bits(controller: nn.Module, tasks: TaskBatch, *, steps: int = 500, lr: float = 0.05) -> Tensor:
    """How many answer bits a *fresh* linear read-out of ``controller``'s features can get right.

    For each task, a new output layer is fitted (Adam, ``steps`` full-batch updates, bits-per-
    sequence BCE) to the support sequences, and scored on those same sequences: a measure of what
    the features carry, not of generalisation. Returns (T,) wrong bits per support sequence.
    """
    check_positive_int(steps, "steps")
    out = []
    for xs, ys in zip(tasks.x_support, tasks.y_support, strict=True):
        feats = output_features(controller, xs)  # (B, T, F)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            probe = nn.Linear(feats.shape[-1], ys.shape[-1] - 1)
        opt = torch.optim.Adam(probe.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            packed_bce_loss(probe(feats), ys).backward()
            opt.step()
        with torch.no_grad():
            out.append(packed_bits_error(probe(feats), ys))
    return torch.stack(out)


# --------------------------------------------------------------------------- everything the notebook loads

#: The notebook's evaluation settings (its parameters cell repeats them).
CTRL_EVAL_SEED = 2026
CTRL_VAL_SEED = 11
CTRL_QUERY = 64
CTRL_VAL_QUERY = 8
CTRL_STEPS = 10
CTRL_VAL_STEPS = 3


def _copy_controller(seed: int) -> nn.Module:
    from memtutor.controller import MemoryController
    from memtutor.experiments.nb02_controller import load_copy_run

    run = load_copy_run(seed, ControllerConfig(), CopyTrainConfig(), lstm_update_cap=300_000)
    controller = MemoryController(ControllerConfig())
    controller.load_state_dict(run["controller"]["state_dict"])
    return controller


def controller_start(seed: int) -> dict:
    """The copy start of controller seed ``seed``: notebook 02's copy run ``seed``."""
    return copy_start(seed, ControllerConfig(), CopyTrainConfig(), lstm_update_cap=300_000)


def load_controller_run(method: str, seed: int, config: ControllerMetaConfig, *, retrain: bool = False) -> dict:
    """The cached controller run (``method`` in "maml", "joint") of ``seed``, or trained."""
    return load_or_train(
        controller_file(method, seed),
        controller_run_config(method, config, seed=seed, start=controller_start(seed)),
        lambda: train_controller_init(method, _copy_controller(seed), config, seed=seed),
        minutes=CONTROLLER_MINUTES[method],
        retrain=retrain,
    )


def controller_candidates(start: str, seed: int, config: ControllerMetaConfig, *, retrain: bool = False) -> dict:
    """Updates -> controller for ``start`` in :data:`CONTROLLER_STARTS` (``{"0": copy}`` for the copy start)."""
    from memtutor.controller import MemoryController

    if start == "copy":
        return {"0": _copy_controller(seed).requires_grad_(False)}
    run = load_controller_run(start, seed, config, retrain=retrain)
    states = {**run["snapshots"], str(config.meta_steps): run["controller"]}
    out = {}
    for updates, state in states.items():
        c = MemoryController(ControllerConfig())
        c.load_state_dict(state)
        out[updates] = c.requires_grad_(False)
    return out


def select_file(start: str, seed: int) -> str:
    """The cached validation choice and test curves of one start and seed."""
    if start not in CONTROLLER_STARTS:
        raise ValueError(f"start must be one of {CONTROLLER_STARTS}, got {start!r}")
    return f"09_controller_eval_{start}_seed{seed}.pt"


#: The evaluation settings that :func:`load_selection` takes (the notebook's defaults).
EVAL_DEFAULTS = {
    "eval_seed": CTRL_EVAL_SEED,
    "val_seed": CTRL_VAL_SEED,
    "n_query": CTRL_QUERY,
    "val_query": CTRL_VAL_QUERY,
    "max_steps": CTRL_STEPS,
    "val_steps": CTRL_VAL_STEPS,
}


def select_run_config(start: str, seed: int, config: ControllerMetaConfig, **settings: int) -> dict:
    """:func:`controller_select_config` of one start and seed; ``settings`` override :data:`EVAL_DEFAULTS`."""
    unknown = set(settings) - set(EVAL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown evaluation settings {sorted(unknown)}; known: {sorted(EVAL_DEFAULTS)}")
    start_cfg = (
        controller_start(seed)
        if start == "copy"
        else controller_run_config(start, config, seed=seed, start=controller_start(seed))
    )
    e = {**EVAL_DEFAULTS, **settings}
    return controller_select_config(
        config, start=start_cfg, eval_seed=e["eval_seed"], val_seed=e["val_seed"], n_query=e["n_query"],
        val_query=e["val_query"], max_steps=e["max_steps"], val_steps=e["val_steps"],
    )  # fmt: skip


def load_selection(
    start: str, seed: int, config: ControllerMetaConfig, *, retrain: bool = False, **settings: int
) -> dict:
    """The cached :func:`controller_select_and_test` of ``start`` and ``seed``, or computed
    (``settings`` as in :func:`select_run_config`)."""
    run_config = select_run_config(start, seed, config, **settings)
    e = {**EVAL_DEFAULTS, **settings}

    def compute() -> dict:
        return controller_select_and_test(
            controller_candidates(start, seed, config, retrain=retrain),
            controller_val_tasks(config, n_query=e["val_query"], val_seed=e["val_seed"]),
            controller_eval_tasks(config, n_query=e["n_query"], eval_seed=e["eval_seed"]),
            train_lr=config.inner_lr, max_steps=e["max_steps"], val_steps=e["val_steps"],
        )  # fmt: skip

    return load_or_train(select_file(start, seed), run_config, compute, minutes=SELECT_MINUTES, retrain=retrain)


def test_file(start: str, seed: int) -> str:
    """The cached held-out curves of one start and seed, adapted as another seed's validation chose."""
    if start not in CONTROLLER_STARTS:
        raise ValueError(f"start must be one of {CONTROLLER_STARTS}, got {start!r}")
    return f"09_controller_test_{start}_seed{seed}.pt"


def controller_test_config(
    start: str, seed: int, config: ControllerMetaConfig, *, choice: str, **settings: int
) -> dict:
    """The configuration of :func:`load_controller_test`'s result: :func:`select_run_config` of the
    start and seed (its validation settings included) and the choice it is adapted with."""
    parse_choice(choice)
    return {**select_run_config(start, seed, config, **settings), "choice": choice}


def load_controller_test(
    start: str, seed: int, config: ControllerMetaConfig, *, choice: str, retrain: bool = False, **settings: int
) -> dict:
    """Held-out curves of ``start`` and ``seed`` adapted as ``choice`` says (a key of
    :func:`controller_select_and_test`'s ``"val"``, chosen on the validation masks with another seed),
    cached; ``{"test", "test_default"}`` as in :func:`controller_select_and_test`."""
    e = {**EVAL_DEFAULTS, **settings}
    mode, lr, updates = parse_choice(choice)

    def compute() -> dict:
        candidates = controller_candidates(start, seed, config, retrain=retrain)
        tasks = controller_eval_tasks(config, n_query=e["n_query"], eval_seed=e["eval_seed"])
        test = controller_adaptation_curves(
            candidates[str(updates)], tasks, inner_lr=lr, max_steps=e["max_steps"], head_only=mode == "head"
        )
        final = list(candidates)[-1]
        if choice == f"head|{config.inner_lr:g}|{final}":
            default = test
        else:
            default = controller_adaptation_curves(
                candidates[final], tasks, inner_lr=config.inner_lr, max_steps=e["max_steps"]
            )
        return {"test": test, "test_default": default}

    return load_or_train(
        test_file(start, seed), controller_test_config(start, seed, config, choice=choice, **settings), compute,
        minutes=SELECT_MINUTES / 2, retrain=retrain,
    )  # fmt: skip


def _controller_job(kind: str, start: str, seed: int) -> str:
    from memtutor.utils import set_threads

    set_threads()
    config = ControllerMetaConfig()
    if kind == "train":
        load_controller_run(start, seed, config)
    else:
        load_selection(start, seed, config)
    return f"controller {kind} {start} seed {seed}"


def main(argv: list[str] | None = None) -> None:
    """Compute every cached result of notebook 09 that is missing, in parallel processes.

    Run from the repository root with ``MEMTUTOR_CHECKPOINTS=notebooks/checkpoints`` to refresh the
    committed files: ``python -m memtutor.experiments.nb09_meta_controller --jobs 9``. Notebook 02's
    copy runs must be there already (each controller run starts from one).
    """
    import argparse
    import time
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--controller-seeds", type=int, nargs="*", default=list(CONTROLLER_SEEDS))
    args = parser.parse_args(argv)
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        pending = set()
        for seed in args.controller_seeds:
            pending |= {pool.submit(_controller_job, "train", m, seed) for m in ("maml", "joint")}
        for seed in args.controller_seeds:
            pending.add(pool.submit(_controller_job, "select", "copy", seed))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                label = f.result()
                print(f"{time.time() - t0:7.1f} s  done: {label}", flush=True)
                _, what, start, _, seed_text = label.split()
                if what == "train":
                    pending.add(pool.submit(_controller_job, "select", start, int(seed_text)))


if __name__ == "__main__":
    main()
