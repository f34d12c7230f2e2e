"""Notebook 06's experiments: the ablation table, the seeds tables and the program displays.

The lesson module :mod:`memtutor.tool_agent` holds the environment, the proofs, the policy, the
rollout, the A2C loss and the training loop :func:`~memtutor.tool_agent.train_agent`. This module
runs them as notebook 06 does: the ablations it compares (:data:`ABLATIONS`, :func:`run_ablations`),
held-out accuracy (:func:`held_out_accuracy`), the headline configuration over seeds
(:func:`run_seeds`), the whole cached table (:func:`train_ablation_table`) with its configuration
(:class:`AblationTableConfig`), and the text displays of problems and programs
(:func:`context_to_text`, :func:`program_to_text`, :func:`trace_program`, :func:`explain_program`).

Seeding: every agent is trained by ``train_agent`` from its configuration's ``seed`` (see its
docstring); held-out accuracy uses the fixed sets of :func:`memtutor.tool_agent.held_out_set`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from memtutor.tool_agent import (
    ACTION_NAMES,
    ANS,
    HELD_OUT_SEED,
    NUM_STAGES,
    OP_SYMBOLS,
    TOK_OP0,
    TOK_PAD,
    Problem,
    ToolAgentConfig,
    ToolPolicy,
    evaluate_programs,
    held_out_set,
    index_problems,
    reference_run_program,
    rollout,
    train_agent,
)
from memtutor.utils import check_positive_int
from memtutor.utils import progress as progress_bar

__all__ = [
    "ABLATIONS",
    "AGENT_FILE",
    "AGENT_MINUTES",
    "ABLATIONS_FILE",
    "ABLATIONS_MINUTES",
    "AblationTableConfig",
    "held_out_accuracy",
    "train_and_measure",
    "run_ablations",
    "run_seeds",
    "train_ablation_table",
    "program_to_text",
    "context_to_text",
    "trace_program",
    "explain_program",
]

#: The ablations of notebook 06: name -> changes to the headline configuration.
ABLATIONS: dict[str, dict[str, Any]] = {
    "headline": {},
    "no curriculum": {"curriculum": False},
    "memory tools removed": {"memory_tools": False},
    "context-blind": {"context_blind": True},
    "mean-pooled encoder": {"encoder": "mean"},
    "batch-mixing bug": {"batch_mixing_bug": True},
    "entropy 0.01": {"entropy_coef": 0.01},
    "no RSUB (no carry-over)": {"reverse_subtract": False},
    "unordered shaping": {"ordered_shaping": False},
    "no shaping": {"shaping": 0.0},
    "no action mask": {"action_mask": False},
}

#: The cached headline agent; its configuration is the notebook's ``ToolAgentConfig``.
AGENT_FILE = "06_tool_agent.pt"
#: Estimated time to train it (66 s on a free core, 274 s on a heavily shared one), minutes.
AGENT_MINUTES = 5.0
#: The cached ablation and seeds tables.
ABLATIONS_FILE = "06_ablations.pt"
#: Estimated time to recompute them (16 agents), minutes.
ABLATIONS_MINUTES = 90.0


def _without_headline() -> dict[str, dict[str, Any]]:
    return {name: dict(changes) for name, changes in ABLATIONS.items() if name != "headline"}


@dataclass(frozen=True)
class AblationTableConfig:
    """Everything notebook 06's ablation and seeds tables depend on (the cached result's configuration)."""

    headline: ToolAgentConfig
    """The headline agent's configuration (the notebook's ``cfg``); the seeds tables train it as is."""
    ablation_updates: int
    """Update budget of each ablation (``max_updates`` of its configuration)."""
    seeds: tuple[int, ...]
    """Seeds of the headline (and failure-weighted) configuration in the seeds tables."""
    n_held_out: int
    """Held-out problems per stage."""
    ablations: Mapping[str, Mapping[str, Any]] = field(default_factory=_without_headline)
    """Name -> changes to the headline configuration (default :data:`ABLATIONS` without "headline")."""
    held_out_seed: int = HELD_OUT_SEED
    """Seed of the held-out sets (:func:`memtutor.tool_agent.held_out_set`)."""

    def __post_init__(self) -> None:
        # Lists from a notebook's parameters cell become tuples: the config compares by value.
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "ablations", {n: dict(c) for n, c in self.ablations.items()})
        check_positive_int(self.ablation_updates, "ablation_updates")
        check_positive_int(self.n_held_out, "n_held_out")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if self.held_out_seed != HELD_OUT_SEED:
            raise ValueError(
                f"the held-out sets are drawn from HELD_OUT_SEED = {HELD_OUT_SEED}, not {self.held_out_seed}"
            )


def held_out_accuracy(policy: ToolPolicy, n: int = 1000) -> torch.Tensor:
    """(NUM_STAGES,) greedy exact-answer accuracy on each stage's held-out set."""
    dev = next(policy.parameters()).device
    return torch.stack([evaluate_programs(policy, held_out_set(s, n, dev)).float().mean() for s in range(NUM_STAGES)])


def train_and_measure(cfg: ToolAgentConfig, n_eval: int = 1000) -> tuple[torch.Tensor, dict]:
    """Train one agent with ``cfg``; returns (held-out accuracy (NUM_STAGES,), train_agent's result)."""
    out = train_agent(cfg)
    policy = ToolPolicy(cfg)
    policy.load_state_dict(out["state_dict"])
    return held_out_accuracy(policy, n_eval), out


def run_ablations(
    base: ToolAgentConfig,
    ablations: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None,
    *,
    n_eval: int = 1000,
    log: Callable[[str], object] | None = None,
) -> dict:
    """Train one agent per ablation (``base`` with its changes) and measure it held out.

    ``ablations`` maps names to changes of ``base``, or lists names of :data:`ABLATIONS` (default: all).
    Returns {"names": [...], "accuracy" (N, NUM_STAGES), "updates" (N,), "seconds" (N,),
    "curves": [(E, 1 + NUM_STAGES)], "max_updates": int}.
    """
    if ablations is None:
        ablations = ABLATIONS
    if not isinstance(ablations, Mapping):
        names = list(ablations)
        unknown = [n for n in names if n not in ABLATIONS]
        if unknown:
            raise ValueError(f"unknown ablations {unknown}; known: {list(ABLATIONS)}")
        ablations = {n: ABLATIONS[n] for n in names}
    names = list(ablations)
    acc, upd, sec, curves = [], [], [], []
    for name in names:
        a, out = train_and_measure(replace(base, **ablations[name]), n_eval)
        acc.append(a)
        upd.append(out["updates"])
        sec.append(out["seconds"])
        curves.append(out["curve"])
        if log is not None:
            log(
                f"{name}: held-out "
                + " ".join(f"{x:.3f}" for x in a.tolist())
                + f" after {out['updates']} updates ({out['seconds']:.0f}s)"
            )
    return {
        "names": names,
        "accuracy": torch.stack(acc),
        "updates": torch.tensor(upd),
        "seconds": torch.tensor(sec),
        "curves": curves,
        "max_updates": base.max_updates,
    }


def run_seeds(
    cfg: ToolAgentConfig, seeds: Sequence[int], *, n_eval: int = 1000, progress: bool = False, desc: str = "seeds"
) -> dict[str, torch.Tensor]:
    """Train ``cfg`` once per seed and measure each agent held out.

    Returns {"accuracy" (S, NUM_STAGES), "updates" (S,), "seconds" (S,)}.
    """
    acc, upd, sec = [], [], []
    for seed in progress_bar(seeds, enabled=progress, desc=desc):
        a, out = train_and_measure(replace(cfg, seed=seed), n_eval)
        acc.append(a)
        upd.append(out["updates"])
        sec.append(out["seconds"])
    return {"accuracy": torch.stack(acc), "updates": torch.tensor(upd), "seconds": torch.tensor(sec)}


def train_ablation_table(
    config: AblationTableConfig, *, log: Callable[[str], object] | None = None, progress: bool = False
) -> dict:
    """The ablation table and the two seeds tables of notebook 06 (the result cached in :data:`ABLATIONS_FILE`).

    Each ablation is the headline configuration changed as in ``config.ablations`` with a budget of
    ``config.ablation_updates``; the seeds tables train the headline configuration, and the same
    with ``failure_weighted=True``, from every seed of ``config.seeds`` with the headline's budget.
    Returns :func:`run_ablations`'s dict plus ``seeds``, ``seed_accuracy`` (S, NUM_STAGES),
    ``seed_updates``, ``seed_seconds``, ``seed_max_updates`` and the same ``fw_*`` entries of the
    failure-weighted curriculum.
    """
    cfg = config.headline
    base = replace(cfg, max_updates=config.ablation_updates)
    table = run_ablations(base, config.ablations, n_eval=config.n_held_out, log=log)
    seeds = torch.tensor(config.seeds)
    plain = run_seeds(cfg, config.seeds, n_eval=config.n_held_out, progress=progress, desc="seeds")
    fw = run_seeds(
        replace(cfg, failure_weighted=True),
        config.seeds,
        n_eval=config.n_held_out,
        progress=progress,
        desc="failure-weighted seeds",
    )
    table.update({f"fw_seed_{k}": v for k, v in fw.items()}, fw_seeds=seeds)
    table.update({f"seed_{k}": v for k, v in plain.items()}, seeds=seeds, seed_max_updates=cfg.max_updates)
    return table


# ----------------------------------------------------------------------------- text displays
def program_to_text(program: Iterable[int]) -> str:
    """Action ids -> 'P0 MUL P1 ...' (stops after the first ANS)."""
    out = []
    for a in program:
        out.append(ACTION_NAMES[int(a)])
        if int(a) == ANS:
            break
    return " ".join(out)


def context_to_text(context: Iterable[int]) -> str:
    """Context tokens -> 'a o1 b ...'."""
    out = []
    for t in context:
        t = int(t)
        if t == TOK_PAD:
            continue
        out.append(OP_SYMBOLS[t - TOK_OP0] if t >= TOK_OP0 else str(t))
    return " ".join(out)


def trace_program(
    numbers: Sequence[int], stage: int, program: Sequence[int], max_steps: int = 14
) -> list[tuple[str, int | None, int | None]]:
    """Per-step (action name, acc, mem) of one episode, via the reference semantics."""
    rows = []
    for t in range(1, len(program) + 1):
        r = reference_run_program(numbers, stage, 0, list(program[:t]), max_steps)
        rows.append((ACTION_NAMES[int(program[t - 1])], r["acc"], r["mem"]))
        if r["error"] or r["answered"] or r["steps"] >= max_steps:
            break
    return rows


def explain_program(
    policy: ToolPolicy, problems: Problem, index: int, max_steps: int = 14
) -> list[tuple[str, int | None, int | None]]:
    """Print problem ``index`` of ``problems`` and the policy's greedy program as ``TOKEN[acc|mem]``
    after each action; returns the rows of :func:`trace_program`."""
    one = index_problems(problems, torch.tensor([index]))
    stage = int(one.stage[0])
    with torch.no_grad():
        prog = rollout(policy, one, greedy=True).actions[0].tolist()
    rows = trace_program(one.numbers[0].tolist(), stage, prog, max_steps)
    print(f"stage {stage}: {context_to_text(one.context[0])} = {int(one.target)}")
    print(
        "  "
        + "  ".join(f"{name}[{'' if acc is None else acc}|{'' if mem is None else mem}]" for name, acc, mem in rows)
    )
    return rows
