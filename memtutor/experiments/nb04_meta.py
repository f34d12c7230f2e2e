"""Notebook 04's experiments: the sinusoid training runs and the controller-MAML experiment.

The lesson module :mod:`memtutor.meta` holds MAML, first-order MAML and Reptile (inner loop,
meta-loss, meta-training step and loop, the joint baseline), the task families (sinusoids,
XOR-copy) and the evaluation with adapted parameters. This module runs them as the notebook does:

* the sinusoid benchmark (:class:`SineConfig`, :func:`train_sine_model`): one cached model per
  method and training seed (``04_sine_{method}_seed{seed}.pt``, configuration
  :func:`sine_run_config`), the paper's oracle among them (:func:`oracle_inputs`), and one cached
  held-out evaluation per seed (:func:`sine_evaluation`, ``04_sine_eval_seed{seed}.pt``);
* the controller experiment: notebook 02's copy controller of seed s meta-trained (or trained
  jointly) over the XOR-copy family (:class:`ControllerMetaConfig`, :func:`train_controller_init`,
  cached as ``04_controller_{method}_seed{seed}.pt``); every choice of how a start adapts made on
  validation masks (:func:`controller_masks`, :func:`controller_select_and_test`, cached as
  ``04_controller_eval_{start}_seed{seed}.pt``) and the held-out curves of the other seeds with that
  choice (:func:`load_controller_test`, ``04_controller_test_{start}_seed{seed}.pt``); a linear
  probe of the controller's features (:func:`probe_wrong_bits`).

``python -m memtutor.experiments.nb04_meta --jobs N`` computes every missing cached result in N
processes (:func:`main`).

Seeding policy: a training function takes ``seed``; :func:`train_sine_model` calls
``torch.manual_seed(seed)`` before it builds its model (inside ``fork_rng``: the caller's global
RNG is left as it was) and draws its task stream from ``generator(seed, SINE_TASKS)``
(``seed + 1``). :func:`train_controller_init` starts from a controller built elsewhere (a cached
run), uses no global randomness, and draws its task stream from ``generator(seed,
CONTROLLER_TASKS)`` (``seed + 1``). The split into meta-training, validation and held-out masks has
its own seed (``ControllerMetaConfig.mask_seed``, purpose :data:`MASK_SPLIT`); evaluation and
validation tasks come from seeds used nowhere else (the notebook's ``EVAL_SEED``, ``VAL_SEED``,
``CTRL_EVAL_SEED``, ``CTRL_VAL_SEED``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from memtutor.controller import ControllerConfig, CopyTrainConfig
from memtutor.diagrams import arrow, box, canvas, note
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
from memtutor.utils import check_positive_int, generator, load_or_train, register_seed_offset
from memtutor.utils import progress as progress_bar

__all__ = [
    "draw_maml_geometry",
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
    "SINE_SEEDS",
    "SINE_EVAL_MINUTES",
    "SINE_EVAL_DEFAULTS",
    "oracle_inputs",
    "sine_eval_file",
    "sine_heldout_tasks",
    "sine_val_tasks",
    "load_sine_model",
    "sine_evaluation",
    "sine_eval_config",
    "load_sine_evaluation",
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

#: Task stream of a sinusoid training run: ``seed + 1`` (the model's initialisation uses ``seed``).
SINE_TASKS = register_seed_offset("nb04/sine-task-stream", 1)
#: Task stream of a controller training run: ``seed + 1``.
CONTROLLER_TASKS = register_seed_offset("nb04/controller-task-stream", 1)
#: The random split of the XOR masks into meta-training and held-out masks: ``mask_seed``.
MASK_SPLIT = register_seed_offset("nb04/mask-split", 0)


# --------------------------------------------------------------------------- the lesson's diagram

_META = "#b03a2e"  # the meta-update (MAML)
_FO = "#1f5fa8"  # first-order MAML
_REPTILE = "#2e7d32"  # Reptile
_INNER = "#777777"  # inner-loop steps


def draw_maml_geometry() -> Figure:
    """Notebook 04's diagram, in the notebook's symbols; returns the figure.

    (a) After Finn et al. (2017), Figure 1: the meta-parameters theta, adapted to each task i by
    inner steps -alpha grad L_sup_i to phi_i, whose query losses L_qry_i(phi_i) average to
    L_meta(theta); the meta-update theta <- theta - beta grad_theta L_meta moves theta along its
    meta-training path. (b) One task's phi after k inner steps and the direction each method takes
    at theta: MAML's query gradient carried back through the inner steps (the product of
    (I - alpha H_sup) factors), first-order MAML's query gradient at phi applied unchanged at theta,
    and Reptile's step towards phi, theta <- theta + eps (phi - theta).
    """
    fig, ax = canvas(13.5, 6.0)
    # (a) Finn et al.'s picture: one initialisation, one inner loop per task, one meta-update.
    note(ax, 3.4, 5.75, r"(a) MAML: $\theta$ is adapted to each task $i$, then $\theta$ itself is updated",
         fontsize=9.5)  # fmt: skip
    theta = box(ax, 1.3, 2.7, r"$\theta$", w=0.8, h=0.6, role="network", fontsize=12)
    ys = (4.6, 2.7, 0.8)
    for i, (y, bend) in enumerate(zip(ys, (-0.12, 0.0, 0.12), strict=True)):
        phi = box(ax, 4.6, y, rf"$\varphi_{i + 1}$", w=0.8, h=0.6, role="network", dashed=True, fontsize=12)
        arrow(ax, theta.right, phi.left, bend=bend, color=_INNER)
        note(ax, 2.95, (2.7 + y) / 2 + (0.35 if i == 1 else 0.15 * (1 if i == 0 else -1)),
             rf"$-\alpha\nabla\mathcal{{L}}^{{\mathrm{{sup}}}}_{i + 1}$", fontsize=9)  # fmt: skip
        loss = box(ax, 6.15, y, rf"$\mathcal{{L}}^{{\mathrm{{qry}}}}_{i + 1}(\varphi_{i + 1})$", w=1.5, h=0.6,
                   role="output", fontsize=9)  # fmt: skip
        arrow(ax, phi.right, loss.left, color=_INNER)
    # theta's meta-training path (Finn et al.'s thick line), continued by this meta-update
    arrow(ax, (0.35, 0.9), theta.bottom, bend=0.25, color=_META)
    arrow(ax, theta.top, (1.6, 4.7), bend=-0.25, color=_META)
    update = r"meta-update: $\theta \leftarrow \theta - \beta\,\nabla_\theta\mathcal{L}_{\mathrm{meta}}(\theta)$"
    note(ax, 0.3, 5.1, update, fontsize=9, ha="left")
    note(ax, 6.9, 0.1, r"mean over the $T$ tasks: $\mathcal{L}_{\mathrm{meta}}(\theta)$", fontsize=8.5, ha="right")
    note(ax, 0.3, 0.35, "meta-training path of $\\theta$", fontsize=8, ha="left")

    # (b) One task, three uses of its adapted parameters phi.
    note(ax, 10.4, 5.75, r"(b) one task: what each method does with $\varphi$", fontsize=9.5)
    ax.plot([7.25, 7.25], [0.2, 5.5], color="#cccccc", lw=0.8)
    tb = box(ax, 8.4, 2.2, r"$\theta$", w=0.8, h=0.6, role="network", fontsize=12)
    pb = box(ax, 12.4, 3.4, r"$\varphi$", w=0.8, h=0.6, role="network", dashed=True, fontsize=12)
    p1, p2 = (9.9, 2.3), (11.2, 2.75)
    arrow(ax, tb.right, p1, color=_INNER)
    arrow(ax, p1, p2, color=_INNER)
    arrow(ax, p2, pb.left, color=_INNER)
    note(ax, 10.9, 2.2, r"$k$ inner steps, $\alpha$", fontsize=8.5)
    g = (-0.8, 1.3)  # the query gradient at phi, drawn at phi and carried back to theta
    arrow(ax, pb.top, (pb.top[0] + g[0], pb.top[1] + g[1]), color=_FO)
    note(ax, 11.7, 5.3, r"$-\nabla_\varphi\mathcal{L}^{\mathrm{qry}}(\varphi)$", fontsize=9)
    arrow(ax, tb.top, (tb.top[0] + g[0], tb.top[1] + g[1]), color=_FO, dashed=True)
    arrow(ax, tb.top, (tb.top[0] + 0.45, tb.top[1] + 1.75), color=_META)
    reptile_end = (tb.x + 0.4 * (pb.x - tb.x), tb.y + 0.4 * (pb.y - tb.y) + 0.45)
    arrow(ax, (tb.right[0], tb.y + 0.2), reptile_end, color=_REPTILE)
    # a colour key: each method's update direction at theta
    rows = (
        (_META, r"MAML: $-\prod_s\,(I - \alpha H^{\mathrm{sup}}(\varphi^{(s)}))\,"
                r"\nabla_\varphi\mathcal{L}^{\mathrm{qry}}(\varphi)$"),
        (_FO, r"first-order MAML: $-\nabla_\varphi\mathcal{L}^{\mathrm{qry}}(\varphi)$: the $\alpha H$ terms dropped"),
        (_REPTILE, r"Reptile: $\theta \leftarrow \theta + \varepsilon\,(\varphi - \theta)$, no query set"),
    )  # fmt: skip
    for j, (color, text) in enumerate(rows):
        y = 1.05 - 0.42 * j
        ax.plot([7.5, 7.85], [y, y], color=color, lw=2, linestyle="--" if color == _FO else "-")
        ax.text(7.95, y, text, ha="left", va="center", fontsize=8.5, color=color)
    return fig


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
    """The inner-loop SGD step alpha (0.01 in the paper; cbfinn/maml's flag default is 1e-3)."""
    inner_steps: int = 1
    """Inner SGD steps during meta-training (paper: 1)."""
    reptile_steps: int = 5
    """Inner steps for Reptile (with 1 step Reptile reduces to joint training)."""
    meta_lr: float = 1e-3
    """Learning rate of the outer loop's Adam (the paper's meta step size, which it calls beta, is
    1e-3; with Adam the actual step is not beta times the gradient)."""
    meta_steps: int = 40_000
    """Meta-updates (paper: 70,000; CPU-scale default here)."""
    hidden: int = 40
    """Width of the two hidden ReLU layers (paper: 40)."""

    def __post_init__(self) -> None:
        for name in ("k_support", "k_query", "meta_batch", "inner_steps", "reptile_steps", "meta_steps", "hidden"):
            check_positive_int(getattr(self, name), name)
        _check_positive(self.inner_lr, "inner_lr")
        _check_positive(self.meta_lr, "meta_lr")


#: What :func:`train_sine_model` can train: the three meta-learners, the joint baseline and the
#: paper's oracle (a regressor that is given each task's amplitude and phase as extra inputs).
SINE_TRAINERS = META_METHODS + ("pretrained", "oracle")
#: The training seeds of every sinusoid model (initialisation ``seed``, task stream ``seed + 1``).
SINE_SEEDS = (0, 1, 2)
#: Points of the cached training curve (the loss averaged over this many equal chunks).
SINE_HISTORY = 100
#: Milliseconds per update of each method at the default sizes (25 tasks, 1 inner step, Reptile
#: 5), measured on one free laptop-class core; :func:`sine_minutes` scales them by the updates.
SINE_MS_PER_UPDATE = {"maml": 5.0, "fomaml": 3.0, "reptile": 8.0, "pretrained": 1.2, "oracle": 1.2}


def sine_configs(config: SineConfig, *, reptile_meta_steps: int) -> dict[str, SineConfig]:
    """The configuration of each of the notebook's five models: ``config`` for all but Reptile,
    which makes ``reptile_meta_steps`` updates (each costs about twice as much)."""
    reptile = replace(config, meta_steps=check_positive_int(reptile_meta_steps, "reptile_meta_steps"))
    return {"maml": config, "fomaml": config, "reptile": reptile, "pretrained": config, "oracle": config}


def sine_file(method: str, seed: int = 0) -> str:
    """The cached model of ``method`` trained with ``seed``: ``04_sine_{method}_seed{seed}.pt``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return f"04_sine_{_check_trainer(method)}_seed{seed}.pt"


def oracle_inputs(x: Tensor, amplitude: Tensor, phase: Tensor) -> Tensor:
    """The oracle's input: each point with its task's amplitude and phase appended.

    Args:
        x: (T, K, 1) points.  amplitude, phase: (T,) of the tasks.
    Returns:
        (T, K, 3) = [x, A, phi] per point.
    """
    if x.dim() != 3 or x.shape[-1] != 1 or amplitude.shape != x.shape[:1] or phase.shape != x.shape[:1]:
        raise ValueError(
            f"oracle_inputs needs x (T, K, 1) and amplitude, phase (T,), got {tuple(x.shape)}, "
            f"{tuple(amplitude.shape)}, {tuple(phase.shape)}"
        )
    side = torch.stack([amplitude, phase], dim=-1).unsqueeze(1).expand(-1, x.shape[1], -1)  # (T, K, 2)
    return torch.cat([x, side.to(x.dtype)], dim=-1)


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
    ``config.meta_steps`` Adam updates on pooled meta-batches, and so does the oracle, whose
    inputs carry each task's amplitude and phase (:func:`oracle_inputs`).

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
        model = make_sine_mlp(config.hidden, in_features=3 if method == "oracle" else 1)
    tasks = generator(seed, SINE_TASKS)

    def sample(g: torch.Generator):
        return sample_sinusoid_tasks(config.meta_batch, config.k_support, config.k_query, generator=g)

    def sample_oracle(g: torch.Generator) -> TaskBatch:
        b = sample(g)
        xs, xq = (oracle_inputs(x, b.amplitude, b.phase) for x in (b.x_support, b.x_query))
        return TaskBatch(xs, b.y_support, xq, b.y_query)

    if method == "oracle":
        losses = pretrain_joint(
            model, sample_oracle, steps=config.meta_steps, lr=config.meta_lr, generator=tasks, progress=progress
        )
    elif method == "pretrained":
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


# --------------------------------------------------------------------------- the sinusoid evaluation

#: Estimated time of :func:`sine_evaluation` for one seed on one core, in minutes.
SINE_EVAL_MINUTES = 1.5


def sine_eval_file(seed: int) -> str:
    """The cached held-out evaluation of the sinusoid models of ``seed``."""
    return f"04_sine_eval_seed{seed}.pt"


def sine_heldout_tasks(shots: tuple[int, ...], n_tasks: int, n_query: int, *, eval_seed: int) -> dict:
    """K -> ``n_tasks`` held-out tasks with K support and ``n_query`` query points, drawn for the
    K of ``shots`` in order from one ``generator(eval_seed)``."""
    g = generator(eval_seed)
    return {k: sample_sinusoid_tasks(n_tasks, k, n_query, generator=g) for k in shots}


def sine_val_tasks(k: int, n_tasks: int, n_query: int, *, val_seed: int):
    """``n_tasks`` validation tasks with ``k`` support points, from a fresh ``generator(val_seed)``."""
    return sample_sinusoid_tasks(n_tasks, k, n_query, generator=generator(val_seed))


def load_sine_model(method: str, config: SineConfig, seed: int, *, retrain: bool = False) -> nn.Module:
    """The cached sinusoid model of ``method`` and ``seed`` (trained if missing), frozen, on the CPU."""
    out = load_or_train(
        sine_file(method, seed), sine_run_config(method, config, seed=seed),
        lambda: train_sine_model(method, config, seed=seed), minutes=sine_minutes(method, config), retrain=retrain,
    )  # fmt: skip
    model = make_sine_mlp(config.hidden, in_features=3 if method == "oracle" else 1)
    model.load_state_dict(out["model"])
    return model.requires_grad_(False)


def sine_evaluation(
    models: Mapping[str, nn.Module],
    *,
    shots: tuple[int, ...],
    n_tasks: int,
    n_query: int,
    max_steps: int,
    inner_lr: float,
    baseline_lrs: tuple[float, ...],
    eval_seed: int,
    val_seed: int,
    n_val_tasks: int = 200,
) -> dict[str, object]:
    """Held-out evaluation of one seed's sinusoid models (method -> model, the oracle included).

    For each K in ``shots``: ``n_tasks`` held-out tasks from ``generator(eval_seed)`` (drawn for the
    K in order, so every seed and method sees the same tasks), each model adapted with SGD at
    ``inner_lr`` for 0..``max_steps`` steps and scored on ``n_query`` query points; the oracle is
    scored unadapted with the true amplitude and phase; "zero" is the MSE of predicting 0. The
    pretrained baseline's step is chosen per K among ``baseline_lrs`` on ``n_val_tasks`` validation
    tasks (:func:`sine_val_tasks`; mean query MSE over steps 1..max_steps; diverging = inf), then
    scored on the held-out tasks (:func:`sine_heldout_tasks`).

    Returns:
        ``{"curves": {f"{method}/{K}": (n_tasks, max_steps + 1)}, "oracle": {str(K): (n_tasks,)},
        "zero": {str(K): (n_tasks,)}, "sweep": {str(K): (len(baseline_lrs),) validation scores},
        "tuned": {str(K): (n_tasks, max_steps + 1)} of the baseline at its chosen step}``.
    """
    held_out = sine_heldout_tasks(shots, n_tasks, n_query, eval_seed=eval_seed)
    curves, oracle, zero, sweep, tuned = {}, {}, {}, {}, {}
    for k in shots:
        tasks = held_out[k]
        val = sine_val_tasks(k, n_val_tasks, n_query, val_seed=val_seed)
        for method, model in models.items():
            if method == "oracle":
                x = oracle_inputs(tasks.x_query, tasks.amplitude, tasks.phase)
                with torch.no_grad():
                    oracle[str(k)] = ((model(x) - tasks.y_query) ** 2).mean((1, 2))
                continue
            p = dict(model.named_parameters())
            curves[f"{method}/{k}"] = adaptation_curve(model, p, tasks, inner_lr=inner_lr, max_steps=max_steps)
        zero[str(k)] = (tasks.y_query**2).mean((1, 2))
        if "pretrained" in models:
            base = models["pretrained"]
            p = dict(base.named_parameters())
            scores = []
            for lr in baseline_lrs:
                c = adaptation_curve(base, p, val, inner_lr=lr, max_steps=max_steps).mean(0)[1:]
                scores.append(torch.nan_to_num(c.mean(), nan=math.inf))
            sweep[str(k)] = torch.stack(scores)
            best = baseline_lrs[int(torch.stack(scores).argmin())]
            tuned[str(k)] = adaptation_curve(base, p, tasks, inner_lr=best, max_steps=max_steps)
    return {"curves": curves, "oracle": oracle, "zero": zero, "sweep": sweep, "tuned": tuned}


#: The notebook's sinusoid evaluation settings (its parameters cell repeats them).
SINE_EVAL_DEFAULTS = {
    "shots": (5, 10, 20),
    "n_tasks": 600,
    "n_query": 100,
    "max_steps": 10,
    "inner_lr": 0.01,
    "baseline_lrs": (0.005, 0.01, 0.02, 0.03, 0.05),
    "eval_seed": 2026,
    "val_seed": 7,
}


def sine_eval_config(seed: int, configs: Mapping[str, SineConfig], **settings: object) -> dict:
    """The configuration :func:`load_sine_evaluation`'s result is cached with: every model's run
    configuration and every evaluation setting (``settings`` override :data:`SINE_EVAL_DEFAULTS`)."""
    unknown = set(settings) - set(SINE_EVAL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown evaluation settings {sorted(unknown)}; known: {sorted(SINE_EVAL_DEFAULTS)}")
    e = {**SINE_EVAL_DEFAULTS, **settings}
    return {"models": {m: sine_run_config(m, c, seed=seed) for m, c in configs.items()}, **e}


def load_sine_evaluation(
    seed: int,
    configs: Mapping[str, SineConfig],
    *,
    models: Mapping[str, nn.Module] | None = None,
    retrain: bool = False,
    **settings: object,
) -> dict:
    """The cached :func:`sine_evaluation` of the models of ``seed`` (method -> configuration in
    ``configs``), or computed with ``models`` (loaded with :func:`load_sine_model` when None);
    ``settings`` override :data:`SINE_EVAL_DEFAULTS`."""
    run_config = sine_eval_config(seed, configs, **settings)
    e = {**SINE_EVAL_DEFAULTS, **settings}

    def compute() -> dict:
        nets = models if models is not None else {m: load_sine_model(m, c, seed) for m, c in configs.items()}
        return sine_evaluation(nets, **e)  # type: ignore[arg-type]

    return load_or_train(sine_eval_file(seed), run_config, compute, minutes=SINE_EVAL_MINUTES, retrain=retrain)


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
    """The cached controller trained by ``method`` with ``seed``: ``04_controller_{method}_seed{seed}.pt``."""
    return f"04_controller_{_check_controller_trainer(method)}_seed{seed}.pt"


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

#: The notebook's evaluation settings of section 11 (its parameters cell repeats them).
CTRL_EVAL_SEED = 2026
CTRL_VAL_SEED = 11
CTRL_QUERY = 64
CTRL_VAL_QUERY = 8
CTRL_STEPS = 10
CTRL_VAL_STEPS = 3


def _train_sine_job(method: str, seed: int, meta_steps: int, reptile_meta_steps: int) -> str:
    from memtutor.utils import set_threads

    set_threads()
    c = sine_configs(SineConfig(meta_steps=meta_steps), reptile_meta_steps=reptile_meta_steps)[method]
    load_or_train(
        sine_file(method, seed), sine_run_config(method, c, seed=seed),
        lambda: train_sine_model(method, c, seed=seed), minutes=0,
    )  # fmt: skip
    return f"sine train {method} seed {seed}"


def _sine_eval_job(seed: int, meta_steps: int, reptile_meta_steps: int) -> str:
    from memtutor.utils import set_threads

    set_threads()
    configs = sine_configs(SineConfig(meta_steps=meta_steps), reptile_meta_steps=reptile_meta_steps)
    load_sine_evaluation(seed, configs)
    return f"sine eval all seed {seed}"


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
    return f"04_controller_eval_{start}_seed{seed}.pt"


#: The evaluation settings of section 11 that :func:`load_selection` takes (the notebook's defaults).
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
    return f"04_controller_test_{start}_seed{seed}.pt"


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
    """Compute every cached result of notebook 04 that is missing, in parallel processes.

    Run from the repository root with ``MEMTUTOR_CHECKPOINTS=notebooks/checkpoints`` to refresh the
    committed files: ``python -m memtutor.experiments.nb04_meta --jobs 16``.
    """
    import argparse
    import time
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--meta-steps", type=int, default=40_000)
    parser.add_argument("--reptile-meta-steps", type=int, default=20_000)
    parser.add_argument("--sine-seeds", type=int, nargs="*", default=list(SINE_SEEDS))
    parser.add_argument("--controller-seeds", type=int, nargs="*", default=list(CONTROLLER_SEEDS))
    args = parser.parse_args(argv)
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        pending = set()
        for seed in args.controller_seeds:
            pending |= {pool.submit(_controller_job, "train", m, seed) for m in ("maml", "joint")}
        for seed in args.sine_seeds:
            for method in SINE_TRAINERS:
                pending.add(pool.submit(_train_sine_job, method, seed, args.meta_steps, args.reptile_meta_steps))
        for seed in args.controller_seeds:
            pending.add(pool.submit(_controller_job, "select", "copy", seed))
        sine_left = {seed: len(SINE_TRAINERS) for seed in args.sine_seeds}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                label = f.result()
                print(f"{time.time() - t0:7.1f} s  done: {label}", flush=True)
                kind, what, start, _, seed_text = label.split()
                if kind == "controller" and what == "train":
                    pending.add(pool.submit(_controller_job, "select", start, int(seed_text)))
                if kind == "sine" and what == "train":
                    sine_left[int(seed_text)] -= 1
                    if sine_left[int(seed_text)] == 0:
                        pending.add(
                            pool.submit(_sine_eval_job, int(seed_text), args.meta_steps, args.reptile_meta_steps)
                        )


if __name__ == "__main__":
    main()
