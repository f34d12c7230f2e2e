"""Notebook 04's experiments: the sinusoid training runs and their held-out evaluation.

The lesson module :mod:`memtutor.meta` holds MAML, first-order MAML and Reptile (inner loop,
meta-loss, meta-training step and loop, the joint baseline), the task families and the evaluation
with adapted parameters. This module runs them as the notebook does:

* the sinusoid benchmark (:class:`SineConfig`, :func:`train_sine_model`): one cached model per
  method and training seed (``04_sine_{method}_seed{seed}.pt``, configuration
  :func:`sine_run_config`), the paper's oracle among them (:func:`oracle_inputs`), and one cached
  held-out evaluation per seed (:func:`sine_evaluation`, ``04_sine_eval_seed{seed}.pt``);
* :func:`draw_maml_geometry`, the lesson's diagram.

Notebook 09 applies the same functions to notebook 02's memory controller; its runs are in
:mod:`memtutor.experiments.nb09_meta_controller`.

``python -m memtutor.experiments.nb04_meta --jobs N`` computes every missing cached result in N
processes (:func:`main`).

Seeding policy: a training function takes ``seed``; :func:`train_sine_model` calls
``torch.manual_seed(seed)`` before it builds its model (inside ``fork_rng``: the caller's global
RNG is left as it was) and draws its task stream from ``generator(seed, SINE_TASKS)``
(``seed + 1``). Evaluation and validation tasks come from seeds used nowhere else (the notebook's
``EVAL_SEED`` and ``VAL_SEED``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from memtutor.diagrams import arrow, box, canvas, note
from memtutor.meta import (
    META_METHODS,
    TaskBatch,
    adaptation_curve,
    make_sine_mlp,
    meta_train,
    pretrain_joint,
    sample_sinusoid_tasks,
)
from memtutor.utils import check_positive_int, generator, load_or_train, register_seed_offset

__all__ = [
    "draw_maml_geometry",
    "SINE_TASKS",
    "SineConfig",
    "SINE_TRAINERS",
    "SINE_HISTORY",
    "sine_configs",
    "sine_file",
    "sine_run_config",
    "sine_minutes",
    "train_sine_model",
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
    "main",
]

#: Task stream of a sinusoid training run: ``seed + 1`` (the model's initialisation uses ``seed``).
SINE_TASKS = register_seed_offset("nb04/sine-task-stream", 1)


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


# --------------------------------------------------------------------------- everything the notebook loads


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
    args = parser.parse_args(argv)
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        pending = set()
        for seed in args.sine_seeds:
            for method in SINE_TRAINERS:
                pending.add(pool.submit(_train_sine_job, method, seed, args.meta_steps, args.reptile_meta_steps))
        sine_left = {seed: len(SINE_TRAINERS) for seed in args.sine_seeds}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                label = f.result()
                print(f"{time.time() - t0:7.1f} s  done: {label}", flush=True)
                _, what, _, _, seed_text = label.split()
                if what == "train":
                    sine_left[int(seed_text)] -= 1
                    if sine_left[int(seed_text)] == 0:
                        pending.add(
                            pool.submit(_sine_eval_job, int(seed_text), args.meta_steps, args.reptile_meta_steps)
                        )


if __name__ == "__main__":
    main()
