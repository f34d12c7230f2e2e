"""Notebook 03's experiments: the Blind Cliffwalk study of Schaul et al. (2016), Section 3 and
Appendix B.1, and a noisy-reward experiment on the importance-sampling weights.

The lesson module :mod:`memtutor.replay` holds the sum tree, the priorities, the importance
weights and the buffer. This module runs the paper's motivating experiment with them: a chain of
``n`` states whose replay memory holds every transition of all ``2**n`` action sequences, learned
by tabular Q-learning that replays one transition per update, counting updates until the
Q-table is learned.

* :func:`cliffwalk_sweep` (cached by :func:`load_cliffwalk`): uniform, proportional and oracle replay,
  from ``Q = 0``, learned when the squared error falls to ``tol`` times its initial value.
* :func:`cliffwalk_variants_sweep` (cached by :func:`load_cliffwalk_variants`): greedy TD-error
  prioritisation and uniform replay under the paper's Appendix B.1 protocol (initial values
  ``theta ~ N(0, 0.1)``, learned when the mean squared error is below ``1e-3``), and rank-based,
  frozen-priority and uniform replay under the protocol of the first table; on the reported seed and
  on a second, fresh seed.
* :func:`is_bias_sweep` (cached by :func:`load_is_bias`): replay of a noisy reward with importance
  exponents ``beta``.
* The notebook's diagrams: :func:`draw_sum_tree_walk` (a binary sum tree and the walk of one prefix value,
  :func:`binary_walk`) and :func:`draw_wide_tree_walk` (the wide tree's shared top-level search and per-sample
  rows, :func:`wide_walk`).

Seeding: run ``r`` of the chain with ``n`` states draws everything random (replay draws; for the
variants also the memory's order and the initial values, in that order) from
``generator(seed, "cliffwalk/replay-draws", 1000 * n + r)``, i.e. the seed ``seed + 1000 * n + r``
(:func:`cliffwalk_run_seed`), so any single cell of a table can be recomputed on its own. Run ``r`` of
the noisy-reward experiment draws from ``seed + 500,000 + r``.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle

from memtutor.diagrams import HIGHLIGHT, PALETTE, arrow, box, canvas, note
from memtutor.replay import DEFAULT_EPS, TREE_DTYPE, PrioritizedReplay, priority
from memtutor.utils import (
    check_positive_int,
    derive_seed,
    generator,
    load_or_train,
    register_seed_offset,
)
from memtutor.utils import progress as progress_bar

__all__ = [
    "WRONG",
    "RIGHT",
    "CLIFFWALK_METHODS",
    "CLIFFWALK_FILE",
    "CLIFFWALK_MINUTES",
    "cliffwalk_minutes",
    "CliffwalkConfig",
    "cliffwalk_config",
    "cliffwalk_memory",
    "cliffwalk_true_q",
    "cliffwalk_updates",
    "cliffwalk_run_seed",
    "cliffwalk_sweep",
    "load_cliffwalk",
    "CLIFFWALK_VARIANTS",
    "VARIANT_RUNS",
    "VARIANTS_FILE",
    "VARIANTS_MINUTES",
    "PAPER_INIT_STD",
    "PAPER_TOL",
    "cliffwalk_td_errors",
    "rank_probabilities",
    "frozen_probabilities",
    "cliffwalk_variant_updates",
    "CliffwalkVariantsConfig",
    "cliffwalk_variants_sweep",
    "load_cliffwalk_variants",
    "IS_BIAS_FILE",
    "IS_BIAS_ZERO_FILE",
    "IS_BIAS_MINUTES",
    "noisy_reward_memory",
    "is_fixed_point",
    "is_bias_run",
    "IsBiasConfig",
    "is_bias_sweep",
    "load_is_bias",
    "WALK_PRIORITIES",
    "WALK_PREFIX",
    "WIDE_PRIORITIES",
    "WIDE_PREFIX",
    "binary_walk",
    "wide_walk",
    "draw_sum_tree_walk",
    "draw_wide_tree_walk",
]

#: Actions of the Blind Cliffwalk: the "wrong" one ends the episode, the "right" one moves on.
WRONG, RIGHT = 0, 1
#: How the replayed transition is chosen (see :func:`cliffwalk_updates`).
CLIFFWALK_METHODS = ("uniform", "prioritized", "oracle")
#: The cached table of notebook 03.
CLIFFWALK_FILE = "03_cliffwalk.pt"
#: Estimated time to recompute the notebook's table (n = 2..12, 5 runs each), in minutes: 1.5 measured
#: on one free core, so a changed parameter recomputes it rather than raising.
CLIFFWALK_MINUTES = 2.0

#: Replay draws of run ``r`` of the chain with ``n`` states: index ``1000 * n + r``.
CLIFFWALK_DRAWS = register_seed_offset("cliffwalk/replay-draws", 0)


# --------------------------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------------------------
def cliffwalk_memory(n: int) -> dict[str, torch.Tensor]:
    """The replay memory of an ``n``-state Blind Cliffwalk: every transition of all ``2**n``
    action sequences, each executed until the episode ends.

    State ``i`` is reached by the ``2**(n-i)`` sequences that start with ``i`` right actions;
    half of them take each action there, so the memory holds ``2**(n-i-1)`` copies of both of
    state ``i``'s transitions: ``2**(n+1) - 2`` transitions in all, exactly one of which (the
    right action in the last state) carries the only reward, 1.

    Returns:
        dict of ``(M,)`` tensors: ``state``, ``action`` (int64), ``reward``, ``next_state``
        (int64; equal to ``state`` for terminal transitions, where it is unused), ``done``
        (float, 1 for terminal transitions).
    """
    n = check_positive_int(n, "n")
    if n > 20:
        raise ValueError(f"n must be <= 20 (the memory has 2**(n+1) - 2 transitions), got {n}")
    states = torch.arange(n)
    copies = 2 ** (n - 1 - states)  # (n,) copies of each of state i's two transitions
    s = torch.repeat_interleave(states.repeat_interleave(2), copies.repeat_interleave(2))  # (M,)
    a = torch.repeat_interleave(torch.tensor([WRONG, RIGHT]).repeat(n), copies.repeat_interleave(2))
    last = s == n - 1
    right = a == RIGHT
    reward = (right & last).to(torch.get_default_dtype())
    done = (~right | last).to(torch.get_default_dtype())
    next_state = torch.where(done.bool(), s, s + 1)
    return {"state": s, "action": a, "reward": reward, "next_state": next_state, "done": done}


def cliffwalk_true_q(n: int, gamma: float) -> torch.Tensor:
    """``(n, 2)`` optimal action values: 0 for the wrong action, ``gamma**(n-1-i)`` for the right one."""
    n = check_positive_int(n, "n")
    q = torch.zeros(n, 2, dtype=TREE_DTYPE)
    q[:, RIGHT] = gamma ** (n - 1 - torch.arange(n, dtype=TREE_DTYPE))
    return q


# --------------------------------------------------------------------------------------------
# Q-learning from the replay memory
# --------------------------------------------------------------------------------------------
def cliffwalk_updates(
    n: int,
    method: str,
    *,
    alpha: float = 1.0,
    lr: float = 0.25,
    gamma: float | None = None,
    tol: float = 1e-3,
    max_updates: int = 10_000_000,
    generator: torch.Generator | None = None,
) -> int:
    """Number of tabular Q-learning updates, one replayed transition each, until the Q-table of
    the ``n``-state Blind Cliffwalk is learned: its mean squared error to the true values falls
    to ``tol`` times its initial error (Q starts at 0).

    Methods: ``"uniform"`` replays from :class:`~memtutor.replay.PrioritizedReplay` with
    ``alpha=0``; ``"prioritized"`` with ``alpha`` and priorities set to the last ``|TD error|``
    (new transitions at the maximum priority); ``"oracle"`` replays the transition that most lowers
    the global loss after its update (computed for every stored transition at once). No
    importance weights (``beta = 0``): the targets are deterministic, so there is no bias to
    correct, only speed to measure.

    Args:
        n: number of states (memory of ``2**(n+1) - 2`` transitions).
        method: one of ``"uniform"``, ``"prioritized"``, ``"oracle"``.
        alpha: prioritisation exponent of ``"prioritized"``.
        lr: Q-learning step size.
        gamma: discount, default ``1 - 1/n``.
        tol: learned when ``MSE(Q) <= tol * MSE(Q_0)``.
        max_updates: give up (and return this number) after so many updates.
        generator: randomness of the replay draws.
    """
    if method not in CLIFFWALK_METHODS:
        raise ValueError(f"method must be one of {CLIFFWALK_METHODS}, got {method!r}")
    n = check_positive_int(n, "n")
    max_updates = check_positive_int(max_updates, "max_updates")
    gamma = 1.0 - 1.0 / n if gamma is None else float(gamma)
    if not (0.0 <= gamma <= 1.0 and 0.0 < lr <= 1.0 and 0.0 < tol < 1.0):
        raise ValueError(f"need 0 <= gamma <= 1, 0 < lr <= 1, 0 < tol < 1; got {gamma}, {lr}, {tol}")
    mem = cliffwalk_memory(n)
    q_true = cliffwalk_true_q(n, gamma)
    if method == "oracle":
        return _cliffwalk_oracle(mem, q_true, lr, gamma, tol, max_updates)
    # Plain Python floats for the 2n-entry table: one scalar update per step.
    q = [[0.0, 0.0] for _ in range(n)]
    target = q_true.tolist()
    err = [[(q[i][a] - target[i][a]) ** 2 for a in range(2)] for i in range(n)]
    sq_err = sum(map(sum, err))
    stop = tol * sq_err
    buffer = PrioritizedReplay(len(mem["state"]), alpha=0.0 if method == "uniform" else alpha)
    buffer.add(mem)
    for step in range(1, max_updates + 1):
        batch, idx, _ = buffer.sample(1, 0.0, generator)
        s, a, s2 = int(batch["state"]), int(batch["action"]), int(batch["next_state"])
        r, d = float(batch["reward"]), float(batch["done"])
        delta = r + (0.0 if d else gamma * max(q[s2])) - q[s][a]
        q[s][a] += lr * delta
        new_err = (q[s][a] - target[s][a]) ** 2
        sq_err += new_err - err[s][a]
        err[s][a] = new_err
        if method == "prioritized":
            buffer.update_priorities(idx, torch.tensor([delta], dtype=TREE_DTYPE))
        if sq_err <= stop:
            return step
    return max_updates


def _cliffwalk_oracle(
    mem: dict[str, torch.Tensor], q_true: torch.Tensor, lr: float, gamma: float, tol: float, max_updates: int
) -> int:
    """Greedy oracle: at each step apply the one update that minimises the global loss."""
    s, a, s2 = mem["state"], mem["action"], mem["next_state"]
    r, d = mem["reward"].to(TREE_DTYPE), mem["done"].to(TREE_DTYPE)
    q = torch.zeros_like(q_true)
    stop = tol * float(((q - q_true) ** 2).sum())
    for step in range(1, max_updates + 1):
        delta = r + gamma * (1 - d) * q[s2].amax(1) - q[s, a]  # (M,) TD error of every transition
        old = (q[s, a] - q_true[s, a]) ** 2
        new = (q[s, a] + lr * delta - q_true[s, a]) ** 2
        j = int(torch.argmin(new - old))  # only Q[s_j, a_j] changes, so this is the loss change
        q[s[j], a[j]] += lr * delta[j]
        if float(((q - q_true) ** 2).sum()) <= stop:
            return step
    return max_updates


# --------------------------------------------------------------------------------------------
# The sweep and its cached table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CliffwalkConfig:
    """Everything the Blind Cliffwalk table depends on (the cached result's configuration)."""

    ns: tuple[int, ...] = tuple(range(2, 13))
    """Chain lengths n; the memory holds 2**(n+1) - 2 transitions."""
    num_seeds: int = 5
    """Runs per size."""
    alphas: tuple[float, ...] = (0.6, 1.0)
    """Prioritisation exponents of the prioritized runs."""
    lr: float = 0.25
    """Q-learning step size."""
    tol: float = 1e-3
    """Learned when MSE(Q) <= tol * MSE(Q_0)."""
    seed: int = 0
    """Experiment seed; run r of size n draws from seed + 1000 * n + r."""
    max_updates: int = 10_000_000
    """A run that has not learned after so many updates reports this number."""

    def __post_init__(self) -> None:
        # Lists from a notebook's parameters cell become tuples: the config is hashable and compares by value.
        object.__setattr__(self, "ns", tuple(check_positive_int(n, "n") for n in self.ns))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if not self.ns or not self.alphas:
            raise ValueError("ns and alphas must not be empty")
        check_positive_int(self.num_seeds, "num_seeds")
        check_positive_int(self.max_updates, "max_updates")


def cliffwalk_config(
    *, ns: list[int], num_seeds: int, alphas: tuple[float, ...], lr: float, tol: float, seed: int
) -> CliffwalkConfig:
    """The configuration notebook 03 builds from its parameters cell (``CLIFF_*`` and ``SEED``)."""
    return CliffwalkConfig(ns=tuple(ns), num_seeds=num_seeds, alphas=tuple(alphas), lr=lr, tol=tol, seed=seed)


def cliffwalk_run_seed(seed: int, n: int, run: int) -> int:
    """The generator seed of run ``run`` on the chain with ``n`` states: ``seed + 1000 * n + run``."""
    return derive_seed(seed, CLIFFWALK_DRAWS, 1000 * n + run)


def cliffwalk_sweep(config: CliffwalkConfig, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """Updates-to-learn of every method on Blind Cliffwalks of ``config.ns`` states, ``config.num_seeds`` runs each.

    Returns a dict of tensors (the result :func:`load_cliffwalk` caches): ``ns`` ``(S,)``,
    ``memory`` ``(S,)`` transitions in memory, ``uniform`` and ``oracle`` ``(S, num_seeds)``,
    ``prioritized`` ``(len(alphas), S, num_seeds)``, ``alphas``, and the settings ``lr``, ``tol``,
    ``seed`` as 0-d tensors. Every method of run ``r`` of size ``n`` replays from its own
    generator seeded with :func:`cliffwalk_run_seed`, so any single cell can be recomputed alone.
    """
    c = config
    out = {
        "uniform": torch.zeros(len(c.ns), c.num_seeds, dtype=torch.int64),
        "oracle": torch.zeros(len(c.ns), c.num_seeds, dtype=torch.int64),
        "prioritized": torch.zeros(len(c.alphas), len(c.ns), c.num_seeds, dtype=torch.int64),
    }
    cells = [(i, n, r) for i, n in enumerate(c.ns) for r in range(c.num_seeds)]
    kw: dict[str, Any] = dict(lr=c.lr, tol=c.tol, max_updates=c.max_updates)
    for i, n, r in progress_bar(cells, enabled=progress, desc="Blind Cliffwalk runs"):
        run_seed = cliffwalk_run_seed(c.seed, n, r)  # one fresh generator per method, same seed
        out["uniform"][i, r] = cliffwalk_updates(n, "uniform", generator=generator(run_seed), **kw)
        out["oracle"][i, r] = cliffwalk_updates(n, "oracle", generator=generator(run_seed), **kw)
        for a, alpha in enumerate(c.alphas):
            out["prioritized"][a, i, r] = cliffwalk_updates(
                n, "prioritized", alpha=alpha, generator=generator(run_seed), **kw
            )
    out["ns"] = torch.tensor(c.ns)
    out["memory"] = 2 ** (out["ns"] + 1) - 2
    out["alphas"] = torch.tensor(c.alphas, dtype=TREE_DTYPE)
    out["lr"] = torch.tensor(c.lr, dtype=TREE_DTYPE)
    out["tol"] = torch.tensor(c.tol, dtype=TREE_DTYPE)
    out["seed"] = torch.tensor(c.seed)
    return out


def load_cliffwalk(
    config: CliffwalkConfig, *, retrain: bool = False, progress: bool = False
) -> dict[str, torch.Tensor]:
    """The cached table :data:`CLIFFWALK_FILE` made with ``config``, or :func:`cliffwalk_sweep` of it.

    A cached table made with another configuration is recomputed when :func:`cliffwalk_minutes`
    of it is a few minutes; a bigger sweep raises instead (``retrain=True`` runs it).
    """
    return load_or_train(
        CLIFFWALK_FILE,
        config,
        lambda: cliffwalk_sweep(config, progress=progress),
        minutes=cliffwalk_minutes(config),
        retrain=retrain,
    )


def cliffwalk_minutes(config: CliffwalkConfig) -> float:
    """Estimated time of :func:`cliffwalk_sweep` of ``config``: :data:`CLIFFWALK_MINUTES` for the
    notebook's sweep, scaled by the work of the runs (uniform replay needs on the order of ``2**n``
    updates on a chain of ``n`` states; every run replays once per method and priority exponent)."""

    def work(ns: tuple[int, ...], num_seeds: int, num_alphas: int) -> float:
        return sum(2.0**n for n in ns) * num_seeds * (2 + num_alphas)

    default = CliffwalkConfig()
    return (
        CLIFFWALK_MINUTES
        * work(config.ns, config.num_seeds, len(config.alphas))
        / work(default.ns, default.num_seeds, len(default.alphas))
    )


# --------------------------------------------------------------------------------------------
# More ways to choose the replayed transition: the paper's greedy agent, rank-based sampling,
# and priorities frozen at insertion
# --------------------------------------------------------------------------------------------
#: Variants of :func:`cliffwalk_variant_updates` (uniform, proportional and oracle replay are in the main table;
#: ``"uniform"`` here is the same i.i.d. uniform draw, run inside the variants' loop under either protocol).
CLIFFWALK_VARIANTS = ("greedy", "rank", "frozen", "uniform")
#: The cached table of the variants.
VARIANTS_FILE = "03_cliffwalk_variants.pt"
#: Estimated time of the notebook's variant sweep (n = 2..12, 5 runs each, two seed sets), in minutes.
VARIANTS_MINUTES = 1.0
#: Standard deviation of the initial values in Schaul et al. (2016), Appendix B.1: ``theta_i ~ N(0, 0.1)``
#: (we read the 0.1 as a standard deviation).
PAPER_INIT_STD = 0.1
#: Stopping rule of Schaul et al. (2016), Appendix B.1: learned when the mean squared error between the
#: Q-value estimates and the ground truth is below this (an absolute threshold).
PAPER_TOL = 1e-3


def cliffwalk_td_errors(q: list[list[float]], mem: dict[str, list], j: int, gamma: float) -> float:
    """TD error of stored transition ``j``: ``r + gamma * (1 - done) * max_a' Q(s', a') - Q(s, a)``."""
    bootstrap = 0.0 if mem["done"][j] else gamma * max(q[mem["next_state"][j]])
    return mem["reward"][j] + bootstrap - q[mem["state"][j]][mem["action"][j]]


def rank_probabilities(size: int, alpha: float) -> torch.Tensor:
    """``(size,)`` probabilities of ranks 1..size under rank-based prioritisation:
    ``P(rank k) = k^-alpha / sum_j j^-alpha`` (rank 1: the largest ``|TD error|``)."""
    p = torch.arange(1, size + 1, dtype=TREE_DTYPE) ** (-float(alpha))
    return p / p.sum()


def frozen_probabilities(initial_errors: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """``(M,)`` sampling probabilities when each priority is set once, from the TD error a transition had
    when it was stored, and never updated: ``P(i) = (|delta_i^0| + eps)^alpha / sum_k (...)``."""
    p = priority(initial_errors, alpha, eps)
    return p / p.sum()


def cliffwalk_variant_updates(
    n: int,
    variant: str,
    *,
    alpha: float = 0.7,
    eps: float = DEFAULT_EPS,
    lr: float = 0.25,
    gamma: float | None = None,
    tol: float = 1e-3,
    init_std: float = 0.0,
    absolute: bool = False,
    max_updates: int = 10_000_000,
    generator: torch.Generator | None = None,
) -> int:
    """Updates until the ``n``-state Blind Cliffwalk's Q-table is learned, choosing the replayed
    transition by ``variant``.

    The memory is shuffled by ``generator`` (the paper fills it in random order), then the initial
    values are drawn, ``Q_0(s, a) ~ N(0, init_std)`` (all 0 when ``init_std = 0``). Learned when the mean
    squared error to the true values (over the ``2 n`` entries) is below ``tol`` (``absolute=True``, the
    paper's Appendix B.1 rule with ``tol = 1e-3``) or at most ``tol`` times its initial value
    (``absolute=False``, the rule of :func:`cliffwalk_updates`).

    * ``"greedy"``: the paper's greedy TD-error prioritisation (its tabular panel): replay the transition
      with the largest ``|TD error|`` of its last replay, from a binary heap; a transition never replayed
      has infinite priority, so the first sweep visits every one once, in the shuffled order; ties go to
      the transition replayed least recently (first in, first out). Needs ``init_std > 0``: from ``Q = 0``
      every unrewarded transition's TD error is exactly 0.
    * ``"rank"``: rank-based prioritisation, ``P(i) = rank(i)^-alpha / sum_k k^-alpha`` with ranks by the
      last ``|TD error|`` (never replayed first), ties in the shuffled order; exact ranks, kept in a
      sorted list.
    * ``"frozen"``: proportional, ``P(i) ~ (|delta_i^0| + eps)^alpha`` with ``delta_i^0`` the TD error
      under ``Q_0``, when the transition was stored, never updated: the way a buffer that takes its
      priority at insertion behaves.
    * ``"uniform"``: i.i.d. uniform draws.

    No importance weights (the targets are deterministic, as in :func:`cliffwalk_updates`).
    """
    if variant not in CLIFFWALK_VARIANTS:
        raise ValueError(f"variant must be one of {CLIFFWALK_VARIANTS}, got {variant!r}")
    n = check_positive_int(n, "n")
    max_updates = check_positive_int(max_updates, "max_updates")
    gamma = 1.0 - 1.0 / n if gamma is None else float(gamma)
    if not (0.0 <= gamma <= 1.0 and 0.0 < lr <= 1.0 and 0.0 < tol < 1.0 and alpha >= 0.0 and eps > 0.0):
        raise ValueError(
            "need 0 <= gamma <= 1, 0 < lr <= 1, 0 < tol < 1, alpha >= 0, eps > 0; "
            f"got {gamma}, {lr}, {tol}, {alpha}, {eps}"
        )
    if not (math.isfinite(init_std) and init_std >= 0.0):
        raise ValueError(f"init_std must be a finite number >= 0, got {init_std}")
    if variant == "greedy" and init_std == 0.0:
        raise ValueError(
            "greedy prioritisation needs random initial values (init_std > 0): from Q = 0 every unrewarded "
            "transition's TD error is exactly 0"
        )
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    mem_t = cliffwalk_memory(n)
    order = torch.randperm(len(mem_t["state"]), generator=gen)  # the memory in random order
    mem = {k: v[order].tolist() for k, v in mem_t.items()}
    target = cliffwalk_true_q(n, gamma).tolist()
    q = (torch.randn(n, 2, dtype=TREE_DTYPE, generator=gen) * init_std).tolist()  # (n, 2) Q_0
    err = [[(q[i][a] - target[i][a]) ** 2 for a in range(2)] for i in range(n)]
    sq_err = sum(map(sum, err))
    stop = tol * 2 * n if absolute else tol * sq_err  # on the sum of squared errors
    if sq_err < stop if absolute else sq_err <= stop:
        return 0
    pick = {"greedy": _greedy_picker, "rank": _rank_picker, "frozen": _frozen_picker, "uniform": _uniform_picker}
    choose, record = pick[variant](mem, q, gamma, alpha, eps, gen)
    for step in range(1, max_updates + 1):
        j = choose()
        delta = cliffwalk_td_errors(q, mem, j, gamma)
        s, a = mem["state"][j], mem["action"][j]
        q[s][a] += lr * delta
        new_err = (q[s][a] - target[s][a]) ** 2
        sq_err += new_err - err[s][a]
        err[s][a] = new_err
        record(j, abs(delta))
        if sq_err < stop if absolute else sq_err <= stop:
            return step
    return max_updates


def _greedy_picker(
    mem: dict[str, list], q: list[list[float]], gamma: float, alpha: float, eps: float, gen: torch.Generator
) -> tuple[Callable[[], int], Callable[[int, float], None]]:
    """Greedy TD-error prioritisation from a binary heap of ``(-|TD error|, time of last replay, item)``:
    the largest last |TD error| (infinite until first replayed); among ties, the item replayed least
    recently (first in, first out). Replaced entries stay in the heap and are skipped when they surface."""
    size = len(mem["state"])
    stamp = list(range(-size, 0))  # never replayed: in (shuffled) memory order
    heap = [(-math.inf, stamp[j], j) for j in range(size)]  # sorted, so already a heap
    clock = [0]

    def choose() -> int:
        while heap[0][1] != stamp[heap[0][2]]:  # an entry replaced by a later replay of its item
            heapq.heappop(heap)
        return heap[0][2]

    def record(j: int, abs_delta: float) -> None:
        clock[0] += 1
        stamp[j] = clock[0]
        heapq.heappush(heap, (-abs_delta, clock[0], j))

    return choose, record


def _uniform_picker(
    mem: dict[str, list], q: list[list[float]], gamma: float, alpha: float, eps: float, gen: torch.Generator
) -> tuple[Callable[[], int], Callable[[int, float], None]]:
    """Uniform replay: i.i.d. uniform draws over the memory, in chunks from the run's generator."""
    size = len(mem["state"])
    draws: list[int] = []

    def choose() -> int:
        if not draws:
            draws.extend(torch.randint(size, (4096,), generator=gen).tolist())
        return draws.pop()

    def record(j: int, abs_delta: float) -> None:  # uniform replay keeps no priorities
        pass

    return choose, record


def _rank_picker(
    mem: dict[str, list], q: list[list[float]], gamma: float, alpha: float, eps: float, gen: torch.Generator
) -> tuple[Callable[[], int], Callable[[int, float], None]]:
    """Rank-based prioritisation: a list sorted by (-priority, position); draw a rank, replay its item."""
    size = len(mem["state"])
    prio = [math.inf] * size
    ranked = [(-math.inf, j) for j in range(size)]  # ascending = largest priority first, ties by position
    cdf = torch.cumsum(rank_probabilities(size, alpha), 0).tolist()
    draws: list[float] = []

    def choose() -> int:
        if not draws:  # uniform numbers in chunks from the run's generator
            draws.extend(torch.rand(4096, dtype=TREE_DTYPE, generator=gen).tolist())
        k = min(bisect.bisect_right(cdf, draws.pop() * cdf[-1]), size - 1)  # rank k + 1
        return ranked[k][1]

    def record(j: int, abs_delta: float) -> None:
        del ranked[bisect.bisect_left(ranked, (-prio[j], j))]
        prio[j] = abs_delta
        bisect.insort(ranked, (-abs_delta, j))

    return choose, record


def _frozen_picker(
    mem: dict[str, list], q: list[list[float]], gamma: float, alpha: float, eps: float, gen: torch.Generator
) -> tuple[Callable[[], int], Callable[[int, float], None]]:
    """Priorities taken once, from the TD error at insertion (under the initial values), never updated: i.i.d.
    draws."""
    delta0 = torch.tensor([cliffwalk_td_errors(q, mem, j, gamma) for j in range(len(mem["state"]))])
    probs = frozen_probabilities(delta0, alpha, eps)
    draws: list[int] = []

    def choose() -> int:
        if not draws:
            draws.extend(torch.multinomial(probs, 4096, replacement=True, generator=gen).tolist())
        return draws.pop()

    def record(j: int, abs_delta: float) -> None:  # the priority stays what it was at insertion
        pass

    return choose, record


@dataclass(frozen=True)
class CliffwalkVariantsConfig:
    """Everything the variants' table depends on (the cached result's configuration)."""

    ns: tuple[int, ...] = tuple(range(2, 13))
    """Chain lengths n (the main table's)."""
    num_seeds: int = 5
    """Runs per size; run r of size n uses the main table's seed for that cell."""
    rank_alpha: float = 0.7
    """Exponent of rank-based prioritisation (the paper's Atari value)."""
    frozen_alpha: float = 0.6
    """Exponent of the frozen-priority ablation (the proportional default)."""
    lr: float = 0.25
    """Q-learning step size."""
    tol: float = 1e-3
    """Rank, frozen and uniform runs: learned when MSE(Q) <= tol * MSE(Q_0), from Q_0 = 0 (the main table's rule)."""
    paper_init_std: float = PAPER_INIT_STD
    """Greedy and paper-protocol uniform runs: initial values ~ N(0, paper_init_std)."""
    paper_tol: float = PAPER_TOL
    """Greedy and paper-protocol uniform runs: learned when MSE(Q) < paper_tol (absolute)."""
    seed: int = 0
    """Experiment seed (see :func:`cliffwalk_run_seed`)."""
    check_seed: int = 100
    """A second, fresh experiment seed, on which every threshold is checked again (runs r < 1000 - |seed -
    check_seed| never share a generator seed with the first set)."""
    proportional_alphas: tuple[float, ...] = (0.6, 1.0)
    """Exponents of proportional replay (:func:`cliffwalk_updates`, the main table's protocol) run again on
    ``check_seed`` (on ``seed`` they are the main table's runs)."""
    max_updates: int = 10_000_000
    """A run that has not learned after so many updates reports this number."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ns", tuple(check_positive_int(n, "n") for n in self.ns))
        object.__setattr__(self, "proportional_alphas", tuple(float(a) for a in self.proportional_alphas))
        if not self.ns:
            raise ValueError("ns must not be empty")
        check_positive_int(self.num_seeds, "num_seeds")
        check_positive_int(self.max_updates, "max_updates")
        if self.check_seed == self.seed:
            raise ValueError(f"check_seed must differ from seed, got {self.check_seed}")
        if not self.paper_init_std > 0:
            raise ValueError(
                f"paper_init_std must be > 0 (greedy needs random initial values), got {self.paper_init_std}"
            )


#: The runs of the variants' table: result key -> (variant, protocol). Protocol "paper": Q_0 ~ N(0, paper_init_std),
#: learned when MSE < paper_tol; protocol "main": Q_0 = 0, learned when MSE <= tol * MSE(Q_0).
VARIANT_RUNS = {
    "greedy": ("greedy", "paper"),
    "uniform_paper": ("uniform", "paper"),
    "rank": ("rank", "main"),
    "frozen": ("frozen", "main"),
    "uniform": ("uniform", "main"),
}


def cliffwalk_variants_sweep(config: CliffwalkVariantsConfig, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """Updates-to-learn of every run of :data:`VARIANT_RUNS`, ``(S, num_seeds)`` int64 each, on the seed
    ``config.seed`` (keys as in :data:`VARIANT_RUNS`) and on ``config.check_seed`` (the same keys prefixed
    ``check_``); ``check_proportional`` ``(len(proportional_alphas), S, num_seeds)``, proportional replay
    (:func:`cliffwalk_updates`) on ``config.check_seed``; and ``ns``.

    Run ``r`` of size ``n`` draws from ``generator(cliffwalk_run_seed(seed, n, r))`` (on ``config.seed``, the main
    table's seed of that cell): it shuffles the memory, draws the initial values, then the replays."""
    c = config
    alphas = {"greedy": 0.0, "rank": c.rank_alpha, "frozen": c.frozen_alpha, "uniform": 0.0}
    protocols: dict[str, dict[str, Any]] = {
        "paper": dict(tol=c.paper_tol, init_std=c.paper_init_std, absolute=True),
        "main": dict(tol=c.tol, init_std=0.0, absolute=False),
    }
    out: dict[str, torch.Tensor] = {}
    for prefix, seed in (("", c.seed), ("check_", c.check_seed)):
        for key in VARIANT_RUNS:
            out[prefix + key] = torch.zeros(len(c.ns), c.num_seeds, dtype=torch.int64)
        cells = [(i, n, r) for i, n in enumerate(c.ns) for r in range(c.num_seeds)]
        for i, n, r in progress_bar(cells, enabled=progress, desc=f"Blind Cliffwalk variants, seed {seed}"):
            for key, (v, protocol) in VARIANT_RUNS.items():
                out[prefix + key][i, r] = cliffwalk_variant_updates(
                    n, v, alpha=alphas[v], lr=c.lr, max_updates=c.max_updates,
                    generator=generator(cliffwalk_run_seed(seed, n, r)), **protocols[protocol],
                )  # fmt: skip
    prop = torch.zeros(len(c.proportional_alphas), len(c.ns), c.num_seeds, dtype=torch.int64)
    cells = [(i, n, r) for i, n in enumerate(c.ns) for r in range(c.num_seeds)]
    for i, n, r in progress_bar(cells, enabled=progress, desc=f"proportional replay, seed {c.check_seed}"):
        for a, alpha in enumerate(c.proportional_alphas):
            prop[a, i, r] = cliffwalk_updates(
                n, "prioritized", alpha=alpha, lr=c.lr, tol=c.tol, max_updates=c.max_updates,
                generator=generator(cliffwalk_run_seed(c.check_seed, n, r)),
            )  # fmt: skip
    out["check_proportional"] = prop
    out["ns"] = torch.tensor(c.ns)
    return out


def load_cliffwalk_variants(
    config: CliffwalkVariantsConfig, *, retrain: bool = False, progress: bool = False
) -> dict[str, torch.Tensor]:
    """The cached table :data:`VARIANTS_FILE` made with ``config``, or :func:`cliffwalk_variants_sweep` of it."""
    return load_or_train(
        VARIANTS_FILE,
        config,
        lambda: cliffwalk_variants_sweep(config, progress=progress),
        minutes=VARIANTS_MINUTES,
        retrain=retrain,
    )


# --------------------------------------------------------------------------------------------
# The importance-sampling half: a noisy reward, where prioritisation biases the estimate
# --------------------------------------------------------------------------------------------
#: The cached runs of the noisy-reward experiment.
IS_BIAS_FILE = "03_is_bias.pt"
#: The cached runs of the noisy-reward experiment started from q = 0.
IS_BIAS_ZERO_FILE = "03_is_bias_q0.pt"
#: Estimated time of the notebook's noisy-reward runs, in minutes (15 s measured on one core of a busy 2-core machine).
IS_BIAS_MINUTES = 0.5
#: Replay draws of run ``r`` (the same for every beta): index ``r``.
IS_BIAS_DRAWS = register_seed_offset("nb03/is-bias-draws", 500_000)


def noisy_reward_memory(size: int, reward_prob: float) -> dict[str, torch.Tensor]:
    """A replay memory of ``size`` one-step transitions of the same state and action whose reward is
    1 in ``round(size * reward_prob)`` of them and 0 in the others (a noisy reward of mean
    ``reward_prob``, exactly). Returns ``{"reward": (size,)}`` float."""
    size = check_positive_int(size, "size")
    if not 0.0 < reward_prob < 1.0:
        raise ValueError(f"reward_prob must lie in (0, 1), got {reward_prob}")
    reward = torch.zeros(size)
    reward[: round(size * reward_prob)] = 1.0
    return {"reward": reward}


def is_fixed_point(reward_prob: float, alpha: float, beta: float) -> float:
    """Where replay with priorities ``|delta|^alpha`` and IS exponent ``beta`` settles on the noisy reward.

    The expected update is 0 when ``sum_i P(i) w_i delta_i = 0``; with ``P(i) w_i ~ |delta_i|^(alpha (1 - beta))``
    (eps neglected) and a fraction ``f`` of rewards 1, that is ``f (1 - q)^c = (1 - f) q^c`` with
    ``c = 1 + alpha (1 - beta)``, so ``q = 1 / (1 + ((1 - f) / f)^(1 / c))``; ``beta = 1`` (or
    ``alpha = 0``) gives the mean ``f``.
    """
    c = 1.0 + alpha * (1.0 - beta)
    return 1.0 / (1.0 + ((1.0 - reward_prob) / reward_prob) ** (1.0 / c))


def is_bias_run(
    memory: dict[str, torch.Tensor],
    *,
    alpha: float,
    beta: float,
    lr: float,
    updates: int,
    batch_size: int,
    initial_value: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Learn the value ``q`` of the noisy-reward memory by replay: ``q += lr * mean_b(w_b delta_b)``,
    ``delta_b = r_b - q``, from :class:`~memtutor.replay.PrioritizedReplay` with ``alpha`` and IS
    exponent ``beta`` (priorities set to the last ``|delta|``), starting from ``q = initial_value``.
    Returns the ``(updates,)`` trace of ``q``."""
    buffer = PrioritizedReplay(len(memory["reward"]), alpha=alpha)
    buffer.add(memory)
    q = float(initial_value)
    trace = torch.empty(updates, dtype=TREE_DTYPE)
    for t in range(updates):
        batch, idx, w = buffer.sample(batch_size, beta, generator)
        delta = batch["reward"].double() - q  # (B,)
        q += lr * float((w.double() * delta).mean())
        buffer.update_priorities(idx, delta)
        trace[t] = q
    return trace


@dataclass(frozen=True)
class IsBiasConfig:
    """Everything the noisy-reward runs depend on (the cached result's configuration)."""

    memory_size: int = 1000
    """Transitions in the memory."""
    reward_prob: float = 0.1
    """Fraction of them with reward 1 (the true value)."""
    alpha: float = 0.6
    """Prioritisation exponent."""
    betas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    """IS exponents, each held fixed for a whole run."""
    lr: float = 0.01
    """Step size."""
    updates: int = 2000
    """Updates per run; the estimate is the mean of q over the second half."""
    batch_size: int = 32
    """Transitions per update."""
    initial_value: float = 0.5
    """Starting estimate. From 0 every reward-0 transition's first TD error is exactly 0, so its priority drops to
    eps^alpha and, with weights normalised by the global maximum, every step is scaled by eps^(alpha beta)."""
    num_seeds: int = 5
    """Runs per setting; run r replays from the same seed for every beta and for uniform replay."""
    seed: int = 0
    """Experiment seed; run r draws from seed + 500,000 + r."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("memory_size", "updates", "batch_size", "num_seeds"):
            check_positive_int(getattr(self, name), name)
        if not self.betas or not all(0.0 <= b <= 1.0 for b in self.betas):
            raise ValueError(f"betas must be a non-empty list of numbers in [0, 1], got {self.betas}")
        if self.updates < 2:
            raise ValueError(f"updates must be >= 2 (the estimate averages the second half), got {self.updates}")


def is_bias_sweep(config: IsBiasConfig, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """Estimates (mean of ``q`` over the second half of each run) and traces of every setting.

    Returns ``prioritized`` ``(len(betas), num_seeds)`` and ``uniform`` ``(num_seeds,)`` estimates,
    the last values ``final_prioritized`` ``(len(betas), num_seeds)`` and ``final_uniform`` ``(num_seeds,)``,
    the traces of run 0 (kept small: run 0 is the one plotted) ``trace_prioritized`` ``(len(betas), updates)``
    and ``trace_uniform`` ``(updates,)`` in float32, ``betas``, and the true value ``target`` (the memory's
    mean reward)."""
    c = config
    memory = noisy_reward_memory(c.memory_size, c.reward_prob)
    kw: dict[str, Any] = dict(lr=c.lr, updates=c.updates, batch_size=c.batch_size, initial_value=c.initial_value)
    traces = torch.empty(len(c.betas), c.num_seeds, c.updates, dtype=TREE_DTYPE)
    uniform = torch.empty(c.num_seeds, c.updates, dtype=TREE_DTYPE)
    runs = [(b, r) for b in range(len(c.betas) + 1) for r in range(c.num_seeds)]
    for b, r in progress_bar(runs, enabled=progress, desc="noisy-reward runs"):
        g = generator(c.seed, IS_BIAS_DRAWS, r)
        if b < len(c.betas):
            traces[b, r] = is_bias_run(memory, alpha=c.alpha, beta=c.betas[b], generator=g, **kw)
        else:
            uniform[r] = is_bias_run(memory, alpha=0.0, beta=0.0, generator=g, **kw)
    half = c.updates // 2
    return {
        "prioritized": traces[..., half:].mean(-1),
        "uniform": uniform[:, half:].mean(-1),
        "final_prioritized": traces[..., -1].clone(),  # a copy: a view would save all the traces
        "final_uniform": uniform[:, -1].clone(),
        "trace_prioritized": traces[:, 0].float(),
        "trace_uniform": uniform[0].float(),
        "betas": torch.tensor(c.betas, dtype=TREE_DTYPE),
        "target": memory["reward"].double().mean(),
    }


def load_is_bias(
    config: IsBiasConfig, *, retrain: bool = False, progress: bool = False, file: str = IS_BIAS_FILE
) -> dict[str, torch.Tensor]:
    """The cached runs ``file`` (:data:`IS_BIAS_FILE`, or :data:`IS_BIAS_ZERO_FILE` for the runs from q = 0) made
    with ``config``, or :func:`is_bias_sweep` of it."""
    minutes = IS_BIAS_MINUTES * (len(config.betas) + 1) * config.num_seeds * config.updates / (6 * 5 * 2000)
    return load_or_train(
        file, config, lambda: is_bias_sweep(config, progress=progress), minutes=minutes, retrain=retrain
    )


# --------------------------------------------------------------------------------------------
# Diagrams: the sum tree's walk-down, binary and wide
# --------------------------------------------------------------------------------------------
#: Leaves p_i^alpha of the binary tree in :func:`draw_sum_tree_walk` and the prefix value it finds.
WALK_PRIORITIES = (3.0, 10.0, 12.0, 4.0, 1.0, 2.0, 8.0, 2.0)
WALK_PREFIX = 24.0
#: Leaves of the wide tree in :func:`draw_wide_tree_walk` (``k = 4`` children per node) and its prefix value.
WIDE_PRIORITIES = (3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 8.0, 9.0, 7.0, 9.0, 3.0)
WIDE_PREFIX = 40.0
_PATH = HIGHLIGHT  # the walk's colour


def _check_walk(priorities: tuple[float, ...], v: float, leaves_per_node: int) -> list[float]:
    """The leaves as floats, or ValueError unless there are ``leaves_per_node ** m`` (m >= 1; any number > 0
    when ``leaves_per_node`` is 1) of them, all >= 0 with a positive total, and ``v`` lies in ``[0, total)``."""
    p = [float(x) for x in priorities]
    count = len(p)
    while leaves_per_node > 1 and count > 1 and count % leaves_per_node == 0:
        count //= leaves_per_node
    if not p or (leaves_per_node > 1 and (len(p) < leaves_per_node or count != 1)):
        raise ValueError(f"need a power of {leaves_per_node} (>= {leaves_per_node}) leaves, got {len(p)}")
    if not all(math.isfinite(x) and x >= 0 for x in p) or not sum(p) > 0:
        raise ValueError(f"priorities must be finite and >= 0 with a positive total, got {p}")
    if not 0.0 <= float(v) < sum(p):
        raise ValueError(f"the prefix value v must lie in [0, total={sum(p):g}), got {v}")
    return p


def binary_walk(priorities: tuple[float, ...], v: float) -> list[tuple[int, int, float]]:
    """The walk of prefix value ``v`` down a binary sum tree over ``priorities`` (``2**m`` leaves ``p_i^alpha``).

    At a node whose left child sums to ``s_L``: go left if ``v < s_L``, else ``v <- v - s_L`` and go right
    (the half-open rule of :meth:`memtutor.replay.SumTree.find`). Returns ``(depth, node, v)`` for every node
    visited, root first (``node`` counts from the left within its depth); the last entry is the leaf found.
    """
    p = _check_walk(priorities, v, 2)
    levels = [p]  # levels[0]: leaves; levels[-1]: [root]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([below[2 * i] + below[2 * i + 1] for i in range(len(below) // 2)])
    node, v = 0, float(v)
    path = [(0, 0, v)]
    for depth in range(1, len(levels)):
        left = levels[-depth - 1][2 * node]  # the left child's sum
        node = 2 * node + (v >= left)
        v = v - left if node % 2 else v
        path.append((depth, node, v))
    return path


def _node(ax, x: float, y: float, value: float, *, on_path: bool, w: float = 0.7, h: float = 0.48):
    """A tree node holding ``value``; nodes on the walk get a thick outline in the walk's colour."""
    b = box(ax, x, y, f"${value:g}$", w=w, h=h, role="memory", fontsize=9)
    if on_path:
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                facecolor="none", edgecolor=_PATH, linewidth=2.2,
            )
        )  # fmt: skip
    return b


def draw_sum_tree_walk(priorities: tuple[float, ...] = WALK_PRIORITIES, v: float = WALK_PREFIX) -> Figure:
    """Draw a binary sum tree over the leaves ``p_i^alpha`` (internal nodes: the sums of their children) and the
    walk of one prefix value ``v`` to its leaf (:func:`binary_walk`), with the leaves' ranges of prefix sums
    on a bar below. Returns the figure."""
    path = binary_walk(priorities, v)
    p = [float(x) for x in priorities]
    if len(p) > 16:
        raise ValueError(f"the diagram draws at most 16 leaves, got {len(p)}")
    n, depth = len(p), len(path) - 1
    fig, ax = canvas(12.6, 6.2)
    dx = 8.4 / n
    xs = [[0.9 + dx * i for i in range(n)]]  # leaf x positions; each parent sits between its children
    vals = [p]
    while len(xs[-1]) > 1:
        xs.append([(xs[-1][2 * i] + xs[-1][2 * i + 1]) / 2 for i in range(len(xs[-1]) // 2)])
        vals.append([vals[-1][2 * i] + vals[-1][2 * i + 1] for i in range(len(vals[-1]) // 2)])
    y_of = {d: 5.5 - 1.05 * d for d in range(depth + 1)}  # depth 0 (root) at the top
    on_path = {(d, node) for d, node, _ in path}
    boxes = {}
    for d in range(depth + 1):
        lvl = depth - d  # index into xs/vals (0 = leaves)
        for i, (x, value) in enumerate(zip(xs[lvl], vals[lvl], strict=True)):
            boxes[d, i] = _node(ax, x, y_of[d], value, on_path=(d, i) in on_path)
    for d in range(depth):  # tree edges; the walk's edges are arrows
        for i in range(len(xs[depth - d])):
            for c in (2 * i, 2 * i + 1):
                start, end = boxes[d, i].bottom, boxes[d + 1, c].top
                if (d, i) in on_path and (d + 1, c) in on_path:
                    arrow(ax, start, end, color=_PATH)
                else:
                    ax.plot([start[0], end[0]], [start[1], end[1]], color="#999999", lw=0.8)
    for i, x in enumerate(xs[0]):
        note(ax, x, y_of[depth] - 0.42, f"$i={i}$", fontsize=8)
    # The rule applied at each internal node of the walk, in a column on the right.
    for (d, node, v_here), (_, child, v_next) in zip(path[:-1], path[1:], strict=True):
        left = vals[depth - d - 1][2 * node]
        if child % 2 == 0:
            text = f"$v = {v_here:g} < {left:g}$: go left"
        else:
            text = f"$v = {v_here:g} \\geq {left:g}$: $v \\leftarrow {v_here:g} - {left:g} = {v_next:g}$, go right"
        note(ax, 9.3, y_of[d], text, fontsize=8.5, ha="left")
    leaf = path[-1][1]
    note(ax, 9.3, y_of[depth], f"leaf $i = {leaf}$, drawn with prob. $p_i^\\alpha / \\Sigma_k\\, p_k^\\alpha$",
         fontsize=8.5, ha="left")  # fmt: skip
    note(ax, 0.2, y_of[0], "internal nodes:\nsums of children", fontsize=8, ha="left")
    note(ax, 0.05, y_of[depth], "$p_i^\\alpha$", fontsize=9, ha="left")
    # The prefix-sum bar: leaf i owns [sum_{k<i} p_k^alpha, sum_{k<=i} p_k^alpha); v falls in the found leaf's range.
    total, x0, width, y_bar = sum(p), xs[0][0] - dx / 2, dx * n, 0.75
    scale, start = width / total, 0.0
    for i, value in enumerate(p):
        colour = "#f5c6c0" if i == leaf else PALETTE["memory"]
        ax.add_patch(Rectangle((x0 + start * scale, y_bar - 0.18), value * scale, 0.36, facecolor=colour,
                               edgecolor="#333333", linewidth=0.8))  # fmt: skip
        if value * scale > 0.25:
            ax.text(x0 + (start + value / 2) * scale, y_bar, f"{i}", ha="center", va="center", fontsize=7)
        start += value
    xv = x0 + float(v) * scale
    ax.plot([xv, xv], [y_bar - 0.3, y_bar + 0.3], color=_PATH, lw=2)
    note(ax, xv, y_bar + 0.45, f"$v = {float(v):g}$", fontsize=8.5)
    note(ax, x0, y_bar - 0.4, "$0$", fontsize=8)
    note(ax, x0 + width, y_bar - 0.4, f"$\\Sigma_k\\, p_k^\\alpha = {total:g}$", fontsize=8)
    note(ax, 9.3, y_bar, "prefix sums: leaf $i$ owns a range\nof width $p_i^\\alpha$", fontsize=8.5, ha="left")
    return fig


def wide_walk(priorities: tuple[float, ...], v: float, k: int = 4) -> dict[str, Any]:
    """The walk of prefix value ``v`` down a two-level wide sum tree: leaves ``priorities`` (``k * T`` of them),
    a top level of ``T`` nodes, each the sum of ``k`` leaves (the layout of :class:`memtutor.replay.SumTree`
    with ``root_fanout >= T``), searched as the package does.

    Returns ``top`` (the ``T`` top sums), ``top_csum`` (``[0, s_0, s_0 + s_1, ...]``, ``T + 1`` entries),
    ``node`` (the top node ``j`` with ``top_csum[j] <= v < top_csum[j + 1]``), ``v_in_node``
    (``v - top_csum[node]``), ``row`` (that node's ``k`` leaves), ``row_csum`` (their prefix sums from 0,
    ``k + 1`` entries), ``child`` (the leaf of the row whose range holds ``v_in_node``) and ``leaf``
    (``k * node + child``)."""
    k = check_positive_int(k, "k")
    p = [float(x) for x in priorities]
    if k < 2 or len(p) % k or len(p) < 2 * k:
        raise ValueError(f"need k >= 2 and k * T leaves with T >= 2, got k={k} and {len(p)} leaves")
    p = _check_walk(tuple(p), v, 1)
    top = [sum(p[i * k : (i + 1) * k]) for i in range(len(p) // k)]
    top_csum = [0.0]
    for s in top:
        top_csum.append(top_csum[-1] + s)
    node = bisect.bisect_right(top_csum, float(v)) - 1  # the last prefix sum <= v
    v_in_node = float(v) - top_csum[node]
    row = p[node * k : (node + 1) * k]
    row_csum = [0.0]
    for s in row:
        row_csum.append(row_csum[-1] + s)
    child = bisect.bisect_right(row_csum, v_in_node) - 1
    return dict(top=top, top_csum=top_csum, node=node, v_in_node=v_in_node, row=row, row_csum=row_csum,
                child=child, leaf=k * node + child)  # fmt: skip


def draw_wide_tree_walk(priorities: tuple[float, ...] = WIDE_PRIORITIES, v: float = WIDE_PREFIX, k: int = 4) -> Figure:
    """Draw the wide sum tree's descent (:func:`wide_walk`): one prefix sum over the top level shared by the
    whole batch and a ``searchsorted``, then, per level below, the ``k`` children of each sample's node
    gathered as a ``(B, k)`` row, its prefix sums and one more ``searchsorted``. Returns the figure."""
    walk = wide_walk(priorities, v, k)
    p = [float(x) for x in priorities]
    if len(p) > 16 or len(p) // k > 4:
        raise ValueError(f"the diagram draws at most 16 leaves and 4 top nodes, got {len(p)} leaves and k = {k}")
    top_n = len(walk["top"])
    fig, ax = canvas(12.6, 5.5)

    def fmt(xs: list[float]) -> str:
        return "[" + ", ".join(f"{x:g}" for x in xs) + "]"

    leaf_w, group_gap = 0.58, 0.3
    group_w = k * leaf_w + group_gap
    x_leaf = [0.9 + (i // k) * group_w + (i % k) * leaf_w for i in range(len(p))]
    x_top = [sum(x_leaf[j * k : (j + 1) * k]) / k for j in range(top_n)]
    y_top, y_leaf = 3.2, 1.85
    # Step 1: the shared top-level search.
    node, child, leaf = walk["node"], walk["child"], walk["leaf"]
    x_mid = (x_leaf[0] + x_leaf[-1]) / 2
    search = box(
        ax, x_mid, 4.7,
        f"top level: one prefix sum for the whole batch, ${fmt(walk['top_csum'])}$\n"
        f"searchsorted: ${walk['top_csum'][node]:g} \\leq v = {float(v):g} < {walk['top_csum'][node + 1]:g}$"
        f"  $\\Rightarrow$  node ${node}$,  $v \\leftarrow {float(v):g} - {walk['top_csum'][node]:g}"
        f" = {walk['v_in_node']:g}$",
        w=9.6, h=0.95, role="operation", fontsize=8.5,
    )  # fmt: skip
    tops = [_node(ax, x, y_top, s, on_path=j == node) for j, (x, s) in enumerate(zip(x_top, walk["top"], strict=True))]
    for j, b in enumerate(tops):
        if j == node:
            arrow(ax, (b.x, search.bottom[1]), b.top, color=_PATH)
        for i in range(j * k, (j + 1) * k):
            if i == leaf:
                continue  # the walk's arrow
            ax.plot([b.x, x_leaf[i]], [b.bottom[1], y_leaf + 0.24], color="#999999", lw=0.8)
    row_box = box(ax, sum(x_leaf[node * k : (node + 1) * k]) / k, y_leaf - 0.1, "", w=k * leaf_w + 0.16, h=0.95,
                  role="operation", dashed=True)  # fmt: skip
    for i, (x, value) in enumerate(zip(x_leaf, p, strict=True)):
        _node(ax, x, y_leaf, value, on_path=i == leaf, w=0.48, h=0.48)
        note(ax, x, y_leaf - 0.4, f"{i}", fontsize=7)
    arrow(ax, tops[node].bottom, (x_leaf[leaf], y_leaf + 0.26), color=_PATH)
    # Step 2: the per-sample row of k children.
    gather = box(
        ax, x_mid, 0.55,
        f"each level below: gather the $k = {k}$ children of node ${node}$ as a $(B, k)$ row ${fmt(walk['row'])}$\n"
        f"prefix sums ${fmt(walk['row_csum'])}$; searchsorted: ${walk['row_csum'][child]:g} \\leq v = "
        f"{walk['v_in_node']:g} < {walk['row_csum'][child + 1]:g}$"
        f"  $\\Rightarrow$  child ${child}$, leaf $i = {k} \\cdot {node} + {child} = {leaf}$",
        w=9.6, h=0.8, role="operation", fontsize=8.5,
    )  # fmt: skip
    arrow(ax, row_box.bottom, (row_box.x, gather.top[1]), color=_PATH)
    x_label = x_leaf[-1] + 0.55
    note(ax, x_label, y_top, f"top level: $T = {top_n}$ nodes\n(at most root_fanout)", fontsize=8, ha="left")
    note(ax, x_label, y_leaf, f"leaves $p_i^\\alpha$,\n$k = {k}$ per node", fontsize=8, ha="left")
    return fig
