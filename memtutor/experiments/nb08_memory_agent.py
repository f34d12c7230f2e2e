"""Notebook 08's experiments: three kinds of memory acting in the passive T-Maze.

The lesson module :mod:`memtutor.memory_agent` holds the agents, the policy-gradient loss, MemUP's
memory update for the maze and the training loop. This module runs them as the notebook does:

* the recipe: :func:`base_config` (the notebook's ``parameters``), one learning rate per agent
  chosen on validation episodes at :data:`SEARCH_LENGTH` with a seed of its own
  (:func:`run_lr_search`, :func:`choose_lr`);
* the cached runs: :func:`run_name`, :func:`run_config`, :func:`run` (load or train, then the
  greedy turns on :data:`TEST_EPISODES` test episodes, touched once), :func:`run_grid`;
* the tables: :func:`success_table`, :func:`longest_solved`, :func:`wilson_interval`;
* where the cue goes: :func:`cue_information` (how well the cue can be read from the core's
  state at every step of an episode);
* the cost of one update against L: :func:`update_cost`, :func:`run_costs`;
* :func:`draw_memory_agent`, the lesson's diagram.

Seeding follows :mod:`memtutor.memory_agent`: the reported runs use :data:`SEEDS`; the learning
rates were searched with :data:`SEARCH_SEED`, which no reported run uses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import torch
from matplotlib.figure import Figure

from memtutor import memory_agent as ma
from memtutor import tmaze, utils
from memtutor.diagrams import HIGHLIGHT, arrow, box, canvas, note
from memtutor.experiments.nb07_memup import _flush_denormal_now, peak_allocated_bytes
from memtutor.utils import check_positive_int, check_tensor, load_or_train, wilson_interval

__all__ = [
    "LENGTHS",
    "SEEDS",
    "SEARCH_SEED",
    "SEARCH_LENGTH",
    "LRS",
    "TEST_EPISODES",
    "SOLVED",
    "AGENT_LABELS",
    "SECONDS_PER_UPDATE",
    "base_config",
    "training_minutes",
    "run_name",
    "run_config",
    "train_and_test",
    "run",
    "run_grid",
    "run_lr_search",
    "choose_lr",
    "FORGET_BIASES",
    "run_bias_search",
    "choose_bias",
    "wilson_interval",
    "success_table",
    "longest_solved",
    "READOUT_RIDGE",
    "ANALYSIS_SEED",
    "readout_accuracy",
    "cue_information",
    "dnc_cue_information",
    "update_cost",
    "run_costs",
    "draw_memory_agent",
]

#: Corridor lengths of the study.
LENGTHS = (10, 30, 100, 300, 1000)
#: Training seeds of the reported runs; :data:`SEARCH_SEED` chose the learning rates.
SEEDS = (1, 2, 3)
SEARCH_SEED = 0
#: The learning-rate search: every agent, these rates, one run each at this length, on validation episodes.
SEARCH_LENGTH = 100
LRS = (1e-3, 3e-3, 1e-2)
#: Test episodes per run (from :data:`memtutor.memory_agent.TEST_SEED`).
TEST_EPISODES = 1000
#: The success rate the study calls solved.
SOLVED = 0.95
AGENT_LABELS = {
    "lstm": "LSTM, truncated BPTT",
    "lstm_full": "LSTM, full BPTT",
    "dnc": "DNC controller, truncated BPTT",
    "memup": "MemUP memory + policy",
}
#: Measured seconds per update on one laptop CPU thread at L = 1,000 (the estimate printed before
#: training; it grows about linearly with L).
SECONDS_PER_UPDATE = {"lstm": 0.008, "lstm_full": 0.042, "dnc": 0.66, "memup": 0.08}


def base_config(**overrides) -> ma.AgentConfig:
    """The notebook's recipe: 16,384 training episodes for every agent, batches of 32, r = 20."""
    defaults: dict[str, Any] = {"episodes": 16_384, "batch": 32, "truncation": 20, "eval_every": 64}
    return ma.AgentConfig(**{**defaults, **overrides})


def training_minutes(cfg: ma.AgentConfig) -> float:
    """Estimated training minutes of one run on one laptop CPU thread."""
    updates = cfg.episodes // cfg.batch
    return round(updates * SECONDS_PER_UPDATE[cfg.agent] * cfg.length / 1000 / 60 + 0.05, 1)


def run_name(cfg: ma.AgentConfig, seed: int) -> str:
    """The cache file of a run; a budget other than the recipe's is part of the name."""
    noisy = "noisy" if cfg.noisy else "plain"
    budget = "" if cfg.episodes == base_config().episodes else f"_E{cfg.episodes}"
    bias = "" if cfg.forget_bias == base_config().forget_bias else f"_fb{cfg.forget_bias:g}"
    return f"08_{cfg.agent}_{noisy}_L{cfg.length}{budget}{bias}_seed{seed}.pt"


def run_config(cfg: ma.AgentConfig, seed: int) -> dict:
    """Everything a cached run depends on: the agent's config, the seed and the test set."""
    return {"agent": cfg, "seed": seed, "test_episodes": TEST_EPISODES, "test_seed": ma.TEST_SEED}


def train_and_test(cfg: ma.AgentConfig, seed: int, *, progress: bool = False) -> dict:
    """:func:`~memtutor.memory_agent.train_agent`, then the greedy turns on the test episodes
    (``test_right``, (TEST_EPISODES,) bool): the only time a run sees them."""
    result = ma.train_agent(cfg, seed, progress=progress)
    agent = ma.load_agent(cfg, result)
    result["test_right"] = ma.junction_decisions(agent, cfg, TEST_EPISODES, ma.TEST_SEED)
    return result


def run(cfg: ma.AgentConfig, seed: int, *, retrain: bool = False, progress: bool = False) -> dict:
    """Load the cached run of ``cfg`` and ``seed`` or train it (:func:`train_and_test`)."""
    return load_or_train(
        run_name(cfg, seed),
        run_config(cfg, seed),
        lambda: train_and_test(cfg, seed, progress=progress),
        minutes=training_minutes(cfg),
        retrain=retrain,
    )


def run_grid(
    lrs: Mapping[str, float],
    *,
    agents: Iterable[str] = ma.AGENTS,
    lengths: Iterable[int] = LENGTHS,
    seeds: Iterable[int] = SEEDS,
    retrain: bool = False,
    progress: bool = False,
    **overrides,
) -> dict[tuple[str, int, int], dict]:
    """Every (agent, L, seed) run with the agent's learning rate: ``{(agent, L, seed): result}``."""
    out = {}
    for agent in agents:
        for length in lengths:
            cfg = base_config(agent=agent, length=length, lr=lrs[agent], **overrides)
            for seed in seeds:
                out[agent, length, seed] = run(cfg, seed, retrain=retrain, progress=progress)
    return out


def _search_one(cfg: ma.AgentConfig, lr: float) -> dict:
    res = ma.train_agent(replace(cfg, lr=lr), SEARCH_SEED)
    return {"curve_updates": res["curve_updates"], "curve_success": res["curve_success"], "seconds": res["seconds"]}


def run_lr_search(agent: str, *, retrain: bool = False, **overrides) -> dict:
    """The validation curves of ``agent`` at :data:`SEARCH_LENGTH` for every rate of :data:`LRS`
    (seed :data:`SEARCH_SEED`; ``overrides`` as for :func:`base_config`):
    ``{"lrs", "curve_updates", "curve_success" (len(LRS), n)}``."""
    cfg = base_config(agent=agent, length=SEARCH_LENGTH, **overrides)

    def train() -> dict:
        runs = [_search_one(cfg, lr) for lr in LRS]
        return {
            "lrs": torch.tensor(LRS, dtype=torch.float64),
            "curve_updates": runs[0]["curve_updates"],
            "curve_success": torch.stack([r["curve_success"] for r in runs]),
        }

    config = {"recipe": cfg, "lrs": list(LRS), "seed": SEARCH_SEED}  # cfg.lr is replaced by each rate
    return load_or_train(
        f"08_lr_search_{agent}.pt",
        config,
        train,
        minutes=len(LRS) * training_minutes(cfg),
        retrain=retrain,
    )


#: The forget-gate biases searched for the LSTM agents (section 5c), at :data:`SEARCH_LENGTH`.
FORGET_BIASES = (1.0, 3.0, 5.0)


def run_bias_search(agent: str, lr: float, *, retrain: bool = False, **overrides) -> dict:
    """The validation curves of ``agent`` at :data:`SEARCH_LENGTH` for every forget-gate bias of
    :data:`FORGET_BIASES` at learning rate ``lr`` (seed :data:`SEARCH_SEED`), as :func:`run_lr_search`:
    ``{"biases", "curve_updates", "curve_success" (len(FORGET_BIASES), n)}``."""
    if agent not in ("lstm", "lstm_full", "memup"):
        raise ValueError(f"only the agents with an nn.LSTM core have a forget-gate bias to search, got {agent!r}")
    cfg = base_config(agent=agent, length=SEARCH_LENGTH, lr=lr, **overrides)

    def train() -> dict:
        runs = [ma.train_agent(replace(cfg, forget_bias=b), SEARCH_SEED) for b in FORGET_BIASES]
        return {
            "biases": torch.tensor(FORGET_BIASES, dtype=torch.float64),
            "curve_updates": runs[0]["curve_updates"],
            "curve_success": torch.stack([r["curve_success"] for r in runs]),
        }

    config = {"recipe": cfg, "biases": list(FORGET_BIASES), "seed": SEARCH_SEED}  # cfg.forget_bias is replaced
    return load_or_train(
        f"08_bias_search_{agent}.pt", config, train, minutes=len(FORGET_BIASES) * training_minutes(cfg), retrain=retrain
    )


def choose_bias(search: Mapping) -> float:
    """The bias with the largest mean validation success over the curve; ties go to the smallest bias."""
    auc = search["curve_success"].mean(1)
    return float(search["biases"][int((auc >= auc.max() - 1e-9).nonzero()[0])])


def choose_lr(search: Mapping) -> float:
    """The rate with the largest mean validation success over the curve (learns soonest); ties,
    which every rate at chance produces, go to the middle rate of :data:`LRS`."""
    auc = search["curve_success"].mean(1)  # (len(LRS),)
    best = float(auc.max())
    middle = len(LRS) // 2
    if abs(float(auc[middle]) - best) < 1e-9:
        return float(search["lrs"][middle])
    return float(search["lrs"][int(auc.argmax())])


def success_table(runs: Mapping[tuple[str, int, int], Mapping]) -> dict[str, dict[int, list[float]]]:
    """Test success per run: ``{agent: {L: [success of each seed]}}`` from :func:`run_grid`'s runs."""
    table: dict[str, dict[int, list[float]]] = {}
    for (agent, length, _seed), res in sorted(runs.items()):
        table.setdefault(agent, {}).setdefault(length, []).append(res["test_right"].double().mean().item())
    return table


def longest_solved(per_length: Mapping[int, list[float]], *, every_seed: bool = True) -> int | None:
    """The longest L at which every seed (or the mean over seeds) reaches :data:`SOLVED`; None if none."""
    ok = [L for L, s in per_length.items() if (min(s) if every_seed else sum(s) / len(s)) >= SOLVED]
    return max(ok) if ok else None


#: Ridge penalty of :func:`readout_accuracy`'s linear read-out, on standardised values (keeps the fit defined).
READOUT_RIDGE = 1e-3


def readout_accuracy(values: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """How well a linear read-out recovers the cue from ``values`` (B, ..., D): every dimension is
    standardised with the mean and sd of the first half of the B episodes (so a signal counts
    whatever its scale; a dimension that is constant there is dropped), a ridge regression of the
    cue (+-1) on them and a bias is fitted on that half, and its sign is scored on the second half.
    ``up`` (B,) bool, the cue. Returns (...,) accuracies (0.5: the cue cannot be read linearly;
    1: it can, on every held-out episode)."""
    check_tensor(values, "values", finite=False)
    B = values.shape[0]
    check_tensor(up, "up", shape=(B,), finite=False)
    half = B // 2
    if B < 4 or not bool(up[:half].any()) or bool(up[:half].all()):
        raise ValueError(f"need >= 4 episodes and both cues among the first half, got B={B}")
    x = values.movedim(0, -2).double()  # (..., B, D)
    mean, sd = x[..., :half, :].mean(-2, keepdim=True), x[..., :half, :].std(-2, keepdim=True)
    live = sd > 0  # constant dimensions carry nothing
    x = torch.where(live, (x - mean) / torch.where(live, sd, 1.0), 0.0)
    x = torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype)], -1)  # a bias column
    target = up.double() * 2 - 1  # (B,)
    fit, test = x[..., :half, :], x[..., half:, :]
    gram = fit.transpose(-1, -2) @ fit + READOUT_RIDGE * half * torch.eye(x.shape[-1], dtype=x.dtype)
    w = torch.linalg.solve(gram, fit.transpose(-1, -2) @ target[:half])  # (..., D + 1)
    guess = (test @ w.unsqueeze(-1)).squeeze(-1) > 0  # (..., B - half)
    return (guess == up[half:]).double().mean(-1)


#: Seed of the episodes that section 6's diagnostics read (not the test episodes).
ANALYSIS_SEED = 40_000


def _test_episodes(cfg: ma.AgentConfig, episodes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    episodes = check_positive_int(episodes, "episodes")
    state, _ = tmaze.reset(episodes, cfg.length, utils.generator(seed), noisy=cfg.noisy)
    return tmaze.episode_observations(state), state.cue > 0


@torch.no_grad()
def cue_information(
    agent: ma.Agent, cfg: ma.AgentConfig, episodes: int = 512, seed: int = ANALYSIS_SEED
) -> torch.Tensor:
    """How well the cue can be read from the core's features at every step: (L,) accuracies of
    :func:`readout_accuracy` on the features f_t of ``episodes`` test episodes."""
    obs, up = _test_episodes(cfg, episodes, seed)
    f, _ = agent.core(obs)  # (B, L, F)
    return readout_accuracy(f, up)


@torch.no_grad()
def dnc_cue_information(
    agent: ma.Agent, cfg: ma.AgentConfig, steps: Iterable[int], episodes: int = 512, seed: int = ANALYSIS_SEED
) -> dict[str, torch.Tensor]:
    """Where the DNC agent keeps the cue: :func:`readout_accuracy` after each of ``steps`` (1-based)
    of the memory matrix M_t, the read vectors r_t, the controller's LSTM state h_t and the
    features f_t. Returns ``{name: (len(steps),)}``."""
    if not isinstance(agent.core, ma.DNCCore):
        raise ValueError(f"agent must have a DNCCore, got {type(agent.core).__name__}")
    steps = sorted(set(steps))
    if not steps or steps[0] < 1 or steps[-1] > cfg.length:
        raise ValueError(f"steps must lie in 1 .. L={cfg.length}, got {steps}")
    obs, up = _test_episodes(cfg, episodes, seed)
    controller = agent.core.controller
    state = controller.initial_state(obs.shape[0])
    got: dict[str, list[torch.Tensor]] = {"memory": [], "reads": [], "controller": [], "features": []}
    for t in range(steps[-1]):
        y, state, _ = controller.step(obs[:, t], state, check=t == 0)
        if t + 1 in steps:
            B = obs.shape[0]
            parts = {
                "memory": state.memory.memory.reshape(B, -1),
                "reads": state.read_vectors.reshape(B, -1),
                "controller": state.hidden,
                "features": y,
            }
            for name, value in parts.items():
                got[name].append(readout_accuracy(value, up))
    return {name: torch.stack(v) for name, v in got.items()}


def update_cost(cfg: ma.AgentConfig, *, updates: int = 3, seed: int = 0, memory: bool = True) -> dict[str, float]:
    """One training update of ``cfg.agent`` at ``cfg.length``, here and now: median ``wall`` and
    ``cpu`` seconds over ``updates`` updates after a warm-up one, and ``peak_bytes``, the peak of
    torch's allocator during one update above what was allocated before it
    (:func:`~memtutor.experiments.nb07_memup.peak_allocated_bytes`; NaN with ``memory=False``, which
    skips the profiled update). For MemUP, the memory's update on one batch (the costlier phase)."""
    updates = check_positive_int(updates, "updates")
    torch.manual_seed(seed)
    agent = ma.Agent(ma.make_core(cfg))
    gens = utils.generator(seed), utils.generator(seed + 1)
    if cfg.agent == "memup":
        predictor, detector, ema, opts = ma.make_memup_phase(agent.core, cfg)

        def one() -> None:
            obs, actions, y = ma.random_policy_batch(cfg, gens[0], gens[1])
            ma.memup_memory_update(agent.core, predictor, detector, ema, opts, obs, actions, y, cfg)

    else:
        params = list(agent.parameters())
        opt = torch.optim.Adam(params, lr=cfg.lr)

        def one() -> None:
            ma.policy_update(agent, opt, params, cfg, gens[0], gens[1], torch.device("cpu"))

    one()  # warm-up: optimiser state, first-call overheads
    wall, cpu = [], []
    for _ in range(updates):
        w0, c0 = time.perf_counter(), time.process_time()
        one()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    peak = peak_allocated_bytes(one)[1] if memory else math.nan
    return {"wall": sorted(wall)[len(wall) // 2], "cpu": sorted(cpu)[len(cpu) // 2], "peak_bytes": float(peak)}


def run_costs(lengths: Iterable[int] = LENGTHS, *, retrain: bool = False) -> dict:
    """:func:`update_cost` of every agent at every length, cached (``08_update_cost.pt``, with the
    torch threads and whether denormal floats were flushed, both of which change the times):
    ``{"lengths", agent: {"wall", "cpu", "peak_bytes"} each (len(lengths),)}``."""
    lengths = tuple(lengths)

    def measure() -> dict:
        out: dict[str, Any] = {"lengths": torch.tensor(lengths)}
        for agent in ma.AGENTS:
            costs = [update_cost(base_config(agent=agent, length=L)) for L in lengths]
            out[agent] = {k: torch.tensor([c[k] for c in costs], dtype=torch.float64) for k in costs[0]}
        return out

    flush = _flush_denormal_now()  # denormal floats slow long recurrences: part of what was measured
    return load_or_train(
        "08_update_cost.pt",
        {
            "recipe": base_config(),
            "lengths": list(lengths),
            "flush_denormal": flush,
            "threads": torch.get_num_threads(),
        },
        measure,
        minutes=3,
        retrain=retrain,
    )


def draw_memory_agent() -> Figure:
    """The lesson's diagram: the passive T-Maze (cue at step 1, junction at step L), and the path the
    junction's learning signal takes back to the cue in each agent: truncated BPTT stops r steps before
    the junction, full BPTT crosses all L steps, MemUP's memory learns to carry the cue from every
    rollout's own prediction of the junction's outcome. Returns the figure."""
    fig, ax = canvas(12.5, 6.2)
    note(
        ax,
        0.3,
        5.9,
        "passive T-Maze: the cue is seen once, the turn is rewarded L - 1 steps later",
        fontsize=10,
        ha="left",
    )
    cue = box(ax, 1.1, 5.0, "step 1\ncue $\\pm 1$", w=1.5, h=0.8, role="input")
    corridor = box(
        ax, 5.2, 5.0, "corridor: steps 2 .. L-1\nnothing to see (noise $\\pm 1$)", w=5.2, h=0.8, role="input"
    )
    junction = box(ax, 9.7, 5.0, "step L: junction\nturn up or down", w=2.4, h=0.8, role="operation")
    reward = box(ax, 11.8, 5.0, "reward\n+4 / -3", w=1.2, h=0.8, role="output")
    arrow(ax, cue.right, corridor.left)
    arrow(ax, corridor.right, junction.left)
    arrow(ax, junction.right, reward.left)
    rows = (
        (3.7, "LSTM, truncated BPTT", "gradient crosses the last r steps", 7.6),
        (2.6, "DNC controller, truncated BPTT", "gradient crosses the last r steps; memory keeps values", 7.6),
        (1.5, "LSTM, full BPTT", "gradient crosses all L steps (and fades)", 1.1),
    )
    for y, name, text, reach in rows:
        box(ax, 1.9, y, name, w=3.4, h=0.6, role="network", fontsize=8)
        ax.annotate("", xy=(reach, y), xytext=(9.7, y), arrowprops={"arrowstyle": "->", "color": HIGHLIGHT, "lw": 1.6})
        note(ax, (reach + 9.7) / 2 + (1.2 if reach < 5 else 0.0), y + 0.28, text, fontsize=8)
        if reach > 5:
            ax.plot(reach, y, marker="x", color=HIGHLIGHT, ms=8, mew=2)
    box(ax, 1.9, 0.45, "MemUP memory + policy", w=3.4, h=0.6, role="memory", fontsize=8)
    note(
        ax,
        7.6,
        0.45,
        "phase 1: every rollout of r steps predicts the junction's outcome (the most surprising step)\n"
        "from its own memory state; phase 2: the policy turns from the frozen memory at step L",
        fontsize=8,
    )
    return fig
