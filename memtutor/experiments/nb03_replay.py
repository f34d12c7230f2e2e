"""Notebook 03's experiment: the Blind Cliffwalk study of Schaul et al. (2016), Section 3.1.

The lesson module :mod:`memtutor.replay` holds the sum tree, the priorities, the importance
weights and the buffer. This module runs the paper's motivating experiment with them: a chain of
``n`` states whose replay memory holds every transition of all ``2**n`` action sequences, learned
by tabular Q-learning that replays one transition per update, counting updates until the
Q-table is learned under uniform, prioritized and oracle replay (:func:`cliffwalk_sweep`), and
the cached table's configuration (:class:`CliffwalkConfig`, :func:`load_cliffwalk`).

Seeding: run ``r`` of the chain with ``n`` states draws its replay samples from
``generator(seed, "cliffwalk/replay-draws", 1000 * n + r)``, i.e. the seed ``seed + 1000 * n + r``,
so any single cell of the table can be recomputed on its own. Nothing else is random.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from memtutor.replay import TREE_DTYPE, PrioritizedReplay
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
