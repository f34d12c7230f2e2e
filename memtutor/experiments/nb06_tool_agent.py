"""Notebook 06's experiments: the seeds and ablation table and the program displays.

The lesson module :mod:`memtutor.tool_agent` holds the environment, the proofs, the policy, the
rollout, the loss (REINFORCE with a learned baseline) and the training loop
:func:`~memtutor.tool_agent.train_agent`. This module runs them as notebook 06 does: the rows it
compares (:data:`ABLATIONS`), accuracy on the two held-out splits (:func:`held_out_accuracy`),
one training run measured (:func:`train_and_measure`), the whole cached table over seeds
(:func:`train_ablation_table`, optionally in parallel processes) with the configurations of its two
cached parts (:class:`AblationTableConfig`; :class:`MoreAblationsConfig` for the rows of
:data:`MORE_ABLATIONS`), the unlocking read from a learning curve (:func:`unlocked_stages`), the
binding-blind baseline (:func:`in_order_programs`), the pattern
lookups (:func:`nearest_training_pattern`, :func:`cross_stage_lookup_pattern`), and the text
displays of problems and programs (:func:`formula_text`, :func:`problem_text`,
:func:`context_to_text`, :func:`program_to_text`, :func:`trace_program`, :func:`explain_program`),
and the diagram of the agent's loop (:func:`draw_tool_agent`).

Seeding: every agent is trained by ``train_agent`` from its configuration's ``seed`` (see its
docstring); held-out accuracy uses the fixed sets of :func:`memtutor.tool_agent.held_out_set`.

Run as a script (``python -m memtutor.experiments.nb06_tool_agent --jobs 16 --out FILE``) it trains
the notebook's default table in parallel processes, saving what has finished after every run
(``--more-out FILE``: then its second part, :class:`MoreAblationsConfig`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any

import torch
from matplotlib.figure import Figure

from memtutor.diagrams import arrow, box, canvas, note
from memtutor.tool_agent import (
    ACTION_NAMES,
    ADD,
    ANS,
    FORMULA_LEN,
    HELD_OUT_SEED,
    MAX_OPERANDS,
    MUL,
    NUM_HIGH,
    NUM_LOW,
    NUM_OPERANDS,
    NUM_STAGES,
    OP_SYMBOLS,
    ROLE_NAMES,
    RSUB,
    SUB,
    TOK_OP0,
    TOK_PAD,
    TOK_ROLE0,
    Problem,
    ToolAgentConfig,
    ToolPolicy,
    build_problems,
    canonical_programs,
    evaluate_programs,
    held_out_set,
    index_problems,
    is_held_out_pattern,
    reference_run_program,
    rollout,
    run_programs,
    train_agent,
)
from memtutor.utils import check_positive_int, save_result, wilson_interval

__all__ = [
    "ABLATIONS",
    "AGENT_FILE",
    "AGENT_MINUTES",
    "ABLATIONS_FILE",
    "ABLATIONS_MINUTES",
    "EXPLORER_ROWS",
    "EVERY_SEED_ROWS",
    "AblationTableConfig",
    "MORE_ABLATIONS",
    "MORE_ABLATIONS_FILE",
    "MORE_ABLATIONS_MINUTES",
    "MoreAblationsConfig",
    "held_out_accuracy",
    "unlocked_stages",
    "train_and_measure",
    "train_ablation_table",
    "in_order_programs",
    "program_accuracy",
    "nearest_training_pattern",
    "trained_operator_sequences",
    "cross_stage_lookup_pattern",
    "wilson_interval",
    "written_openings",
    "random_operator_accuracy",
    "parse_problem",
    "formula_text",
    "problem_text",
    "program_to_text",
    "context_to_text",
    "trace_program",
    "explain_program",
    "draw_tool_agent",
]

#: The rows of notebook 06's table: name -> changes to the headline configuration.
ABLATIONS: dict[str, dict[str, Any]] = {
    "headline": {},
    "no formula attention": {"formula_attention": False},
}
#: Rows whose first-seed agent is kept in the table (for the notebook's explorer).
EXPLORER_ROWS = ("headline", "no formula attention")
#: Rows whose agents are kept for every seed (the notebook counts what each ablated agent writes).
EVERY_SEED_ROWS = ("headline", "no formula attention")

#: The cached headline agent (the first headline seed); its configuration is the notebook's ``cfg``.
AGENT_FILE = "06_tool_agent.pt"
#: Estimated time to train it on one core of a slower laptop, minutes: it took 104 s (printed in the notebook's
#: section 6) on one thread of a shared 2-core machine.
AGENT_MINUTES = 4.0
#: The cached seeds and ablation table.
ABLATIONS_FILE = "06_ablations.pt"
#: Estimated time to recompute it on one core, minutes: its 8 agents took 18 min of training in all (printed in
#: section 7; one thread each on a shared 2-core machine); the held-out measurements at every check add time that
#: is not recorded.
ABLATIONS_MINUTES = 18.0


#: Rows of the table's second part (its own cache): each changes one thing of the headline recipe.
MORE_ABLATIONS: dict[str, dict[str, Any]] = {
    "no shaping": {"shaping": 0.0},
    "plain curriculum": {"failure_weighted": False},
    "no action mask": {"action_mask": False},
}
#: The cached second part of the table (:class:`MoreAblationsConfig`).
MORE_ABLATIONS_FILE = "06_ablations_more.pt"
#: Estimated time to recompute it on one core, minutes: its 9 agents took 16 min of training in all (printed in
#: section 7; one thread each on a shared 2-core machine); the held-out measurements at every check add time that
#: is not recorded.
MORE_ABLATIONS_MINUTES = 18.0


def _without_headline() -> dict[str, dict[str, Any]]:
    return {name: dict(changes) for name, changes in ABLATIONS.items() if name != "headline"}


def _check_held_out_seed(seed: int) -> None:
    if seed != HELD_OUT_SEED:
        raise ValueError(f"the held-out sets are drawn from HELD_OUT_SEED = {HELD_OUT_SEED}, not {seed}")


@dataclass(frozen=True)
class AblationTableConfig:
    """Everything notebook 06's table depends on (the cached result's configuration)."""

    headline: ToolAgentConfig
    """The headline configuration (the notebook's ``cfg``); every row has its update budget."""
    seeds: tuple[int, ...]
    """Seeds of the headline row (none used to develop the recipe)."""
    ablation_seeds: tuple[int, ...]
    """Seeds of every other row."""
    n_held_out: int
    """Held-out problems per stage and split."""
    ablations: Mapping[str, Mapping[str, Any]] = field(default_factory=_without_headline)
    """Name -> changes to the headline configuration (default :data:`ABLATIONS` without "headline")."""
    held_out_seed: int = HELD_OUT_SEED
    """Seed of the held-out sets (:func:`memtutor.tool_agent.held_out_set`)."""

    def __post_init__(self) -> None:
        # Lists from a notebook's parameters cell become tuples: the config compares by value.
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "ablation_seeds", tuple(int(s) for s in self.ablation_seeds))
        object.__setattr__(self, "ablations", {n: dict(c) for n, c in self.ablations.items()})
        check_positive_int(self.n_held_out, "n_held_out")
        if not self.seeds or not self.ablation_seeds:
            raise ValueError("seeds and ablation_seeds must not be empty")
        _check_held_out_seed(self.held_out_seed)

    def jobs(self) -> list[tuple[str, ToolAgentConfig]]:
        """Every training run of the table: (row name, configuration), rows in table order."""
        out = [("headline", replace(self.headline, seed=s)) for s in self.seeds]
        for name, changes in self.ablations.items():
            out += [(name, replace(self.headline, **changes, seed=s)) for s in self.ablation_seeds]
        return out


def _more_ablations() -> dict[str, dict[str, Any]]:
    return {name: dict(changes) for name, changes in MORE_ABLATIONS.items()}


@dataclass(frozen=True)
class MoreAblationsConfig:
    """Everything the table's second part depends on (its cached result's configuration).

    Its rows are trained like the rows of :class:`AblationTableConfig` (the headline configuration
    changed in one field, the same update budget) but cached apart, so that the first part's agents
    are not trained again; its results have the format of :func:`train_ablation_table`'s.
    """

    headline: ToolAgentConfig
    """The headline configuration (the notebook's ``cfg``) that every row changes."""
    seeds: tuple[int, ...]
    """Seeds of every row (the first part's ablation seeds)."""
    n_held_out: int
    """Held-out problems per stage and split."""
    ablations: Mapping[str, Mapping[str, Any]] = field(default_factory=_more_ablations)
    """Name -> changes to the headline configuration (default :data:`MORE_ABLATIONS`)."""
    held_out_seed: int = HELD_OUT_SEED
    """Seed of the held-out sets (:func:`memtutor.tool_agent.held_out_set`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "ablations", {n: dict(c) for n, c in self.ablations.items()})
        check_positive_int(self.n_held_out, "n_held_out")
        if not self.seeds or not self.ablations:
            raise ValueError("seeds and ablations must not be empty")
        if "headline" in self.ablations:
            raise ValueError("the headline row is in the first part of the table")
        _check_held_out_seed(self.held_out_seed)

    def jobs(self) -> list[tuple[str, ToolAgentConfig]]:
        """Every training run: (row name, configuration), rows in order, seeds in order."""
        return [
            (name, replace(self.headline, **changes, seed=s))
            for name, changes in self.ablations.items()
            for s in self.seeds
        ]


def held_out_accuracy(policy: ToolPolicy, n: int = 1000, split: str = "test") -> torch.Tensor:
    """(NUM_STAGES,) greedy exact-answer accuracy on each stage's held-out set of ``split``."""
    dev = next(policy.parameters()).device
    return torch.stack(
        [evaluate_programs(policy, held_out_set(s, n, dev, split)).float().mean() for s in range(NUM_STAGES)]
    )


def unlocked_stages(curve: torch.Tensor, promote_at: float) -> torch.Tensor:
    """(E + 1,) the highest unlocked stage during the updates before each of a run's E checks, then after
    its last check, read from its learning curve (E, 1 + NUM_STAGES) as :func:`~memtutor.tool_agent.train_agent`
    unlocks: the next stage once the newest one's check reaches ``promote_at``."""
    out = [0]
    for acc in curve[:, 1:].tolist():
        u = out[-1]
        out.append(u + 1 if u < NUM_STAGES - 1 and acc[u] >= promote_at else u)
    return torch.tensor(out)


def train_and_measure(cfg: ToolAgentConfig, n_eval: int = 1000, keep_state: bool = False) -> dict:
    """Train one agent with ``cfg`` and measure it on both held-out splits.

    Returns {"seed", "updates", "solved" (every stage's last curriculum check >= stop_at),
    "test" (NUM_STAGES,), "test_pattern" (NUM_STAGES,), "seconds", "curve",
    "pattern_curve" (E, 1 + NUM_STAGES): held-out-pattern accuracy at every curriculum check, a
    diagnostic that nothing in training or in the table's choices reads} and, with ``keep_state``,
    the "state_dict".
    """
    pattern_curve: list[list[float]] = []

    def measure(update: int, policy: ToolPolicy) -> None:
        pattern_curve.append([float(update)] + held_out_accuracy(policy, n_eval, "test-pattern").tolist())

    out = train_agent(cfg, on_check=measure)
    policy = ToolPolicy(cfg)
    policy.load_state_dict(out["state_dict"])
    res = {
        "seed": cfg.seed,
        "updates": int(out["updates"]),
        "solved": bool(out["curve"][-1, 1:].min() >= cfg.stop_at),
        "test": held_out_accuracy(policy, n_eval, "test"),
        "test_pattern": held_out_accuracy(policy, n_eval, "test-pattern"),
        "seconds": float(out["seconds"]),
        "curve": out["curve"],
        "pattern_curve": torch.tensor(pattern_curve),
    }
    if keep_state:
        res["state_dict"] = out["state_dict"]
    return res


def _job(args: tuple[int, str, ToolAgentConfig, int, bool]) -> tuple[int, str, dict]:
    i, name, cfg, n_eval, keep = args
    torch.set_num_threads(1)
    return i, name, train_and_measure(cfg, n_eval, keep)


def _every_seed_rows(config: AblationTableConfig | MoreAblationsConfig) -> tuple[str, ...]:
    """The rows whose agents are kept for every seed: :data:`EVERY_SEED_ROWS`, or every row of the second part."""
    return EVERY_SEED_ROWS if isinstance(config, AblationTableConfig) else tuple(config.ablations)


def _assemble(config: AblationTableConfig | MoreAblationsConfig, done: Mapping[int, tuple[str, dict]]) -> dict:
    """The table from finished runs {job index: (row, run)}: rows in table order, seeds in config order."""
    every_seed = _every_seed_rows(config)
    rows: dict[str, dict] = {}
    states: dict[str, dict] = {}
    seed_states: dict[str, list[dict]] = {}
    for i in sorted(done):
        name, run = done[i]
        r = rows.setdefault(name, {k: [] for k in ("seeds", "updates", "solved", "test", "test_pattern", "seconds")})
        r["curves"] = r.get("curves", []) + [run["curve"]]
        r["pattern_curves"] = r.get("pattern_curves", []) + [run["pattern_curve"]]
        for k in ("updates", "solved", "test", "test_pattern", "seconds"):
            r[k].append(run[k])
        r["seeds"].append(run["seed"])
        if "state_dict" in run:
            if name in EXPLORER_ROWS:
                states.setdefault(name, run["state_dict"])
            if name in every_seed:
                seed_states.setdefault(name, []).append(run["state_dict"])
    table = {}
    for name, r in rows.items():
        table[name] = {
            "seeds": torch.tensor(r["seeds"]),
            "updates": torch.tensor(r["updates"]),
            "solved": torch.tensor(r["solved"]),
            "test": torch.stack(r["test"]),
            "test_pattern": torch.stack(r["test_pattern"]),
            "seconds": torch.tensor(r["seconds"]),
            "curves": r["curves"],
            "pattern_curves": r["pattern_curves"],
        }
    return {
        "rows": table,
        "max_updates": config.headline.max_updates,
        "state_dicts": states,
        "seed_state_dicts": seed_states,
    }


def train_ablation_table(
    config: AblationTableConfig | MoreAblationsConfig,
    *,
    jobs: int = 1,
    save_to: str | None = None,
    log: Callable[[str], object] | None = None,
) -> dict:
    """Notebook 06's table (the result cached in :data:`ABLATIONS_FILE`): every row over its seeds.

    Each row is the headline configuration changed as in ``config.ablations`` (the same update
    budget for all), trained from each of its seeds and measured on both held-out splits.
    ``jobs`` > 1 trains in that many processes (one thread each); ``save_to``: a file to which
    the finished part is saved after every run. Returns {"rows": {name: {"seeds" (S,), "updates"
    (S,), "solved" (S,) bool, "test" (S, NUM_STAGES), "test_pattern" (S, NUM_STAGES), "seconds"
    (S,), "curves": [(E, 1 + NUM_STAGES)], "pattern_curves": [(E, 1 + NUM_STAGES)] (held-out-pattern
    accuracy at every check, a diagnostic)}}, "max_updates", "state_dicts": {row: state dict of
    its first seed, for the rows of EXPLORER_ROWS}, "seed_state_dicts": {row: [state dict per seed,
    in seed order], for the rows of EVERY_SEED_ROWS, or for every row of a :class:`MoreAblationsConfig`}}.
    """
    check_positive_int(jobs, "jobs")
    all_jobs = config.jobs()
    first: dict[str, int] = {}
    for i, (name, _) in enumerate(all_jobs):
        first.setdefault(name, i)
    every_seed = _every_seed_rows(config)
    args = [
        (i, n, c, config.n_held_out, (first[n] == i and n in EXPLORER_ROWS) or n in every_seed)
        for i, (n, c) in enumerate(all_jobs)
    ]
    done: dict[int, tuple[str, dict]] = {}
    start = time.perf_counter()

    def record(i: int, name: str, run: dict) -> None:
        done[i] = (name, run)
        if log is not None:
            log(
                f"{name} seed {run['seed']}: {'solved' if run['solved'] else 'not solved'} after {run['updates']} "
                f"updates; test {[round(x, 3) for x in run['test'].tolist()]} test-pattern "
                f"{[round(x, 3) for x in run['test_pattern'].tolist()]} ({time.perf_counter() - start:.0f}s)"
            )
        if save_to is not None:
            save_result(save_to, config, _assemble(config, done))

    if jobs == 1:
        for a in args:
            record(*_job(a))
    else:
        # longest first: the rows expected to fail run their whole budget
        order = sorted(args, key=lambda a: a[1] == "headline")
        with mp.get_context("fork").Pool(jobs) as pool:
            for i, name, run in pool.imap_unordered(_job, order):
                record(i, name, run)
    return _assemble(config, done)


# ----------------------------------------------------------------------------- baselines
def in_order_programs(problem: Problem, max_steps: int = 14) -> torch.Tensor:
    """(B, max_steps) the canonical programs with pointers in slot order, ignoring the bindings.

    This is the program a policy that reads only the operators would write (the right program
    when every operand sits in its own role's slot). With uniformly shuffled slots every fixed
    pointer order scores the same on average: this is the binding-blind baseline (a policy that
    ignores where each role sits).
    """
    identity = torch.arange(MAX_OPERANDS, device=problem.slot.device).expand_as(problem.slot)
    return canonical_programs(problem._replace(slot=identity), max_steps)


def program_accuracy(problem: Problem, programs: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the programs (B, T) answer their problems exactly."""
    final, _ = run_programs(problem, programs)
    return final.answered & (final.answer == problem.target)


def nearest_training_pattern(stage: int, ops: torch.Tensor) -> torch.Tensor:
    """(B, 3) operator indices -> the closest training pattern of the stage (fewest operators changed).

    The pattern-lookup baseline answers a held-out pattern with the program of this pattern (ties:
    the first training pattern in the order ``+ - *``). Training patterns map to themselves.
    """
    k = 3 if stage == 1 else 2
    pats = _stage_patterns(stage)
    cand = torch.zeros(len(pats), 3, dtype=torch.int64)
    cand[:, :k] = torch.tensor(pats)
    cand = cand[~is_held_out_pattern(stage, cand)].to(ops.device)  # (P, 3) training patterns
    dist = (ops[:, None, :k] != cand[None, :, :k]).sum(-1)  # (B, P)
    return cand[dist.argmin(1)]


def random_operator_accuracy(stage: int, problem: Problem, draws: int, generator: torch.Generator) -> float:
    """Mean exact-answer accuracy of the canonical program with the right operands and a uniformly
    random operator pattern of the stage (stage 2: one of its five drawable patterns), over
    ``draws`` draws of the patterns: the chance level of a policy that finds its operands but
    not its operators."""
    draws = check_positive_int(draws, "draws")
    pats = torch.tensor(_stage_patterns(stage), device=problem.ops.device)  # (P, k)
    hits = 0.0
    for _ in range(draws):
        pick = pats[torch.randint(len(pats), (problem.ops.shape[0],), generator=generator).to(pats.device)]
        ops = problem.ops.clone()
        ops[:, : pats.shape[1]] = pick
        hits += program_accuracy(problem, canonical_programs(problem._replace(ops=ops))).float().mean().item()
    return hits / draws


def _stage_patterns(stage: int) -> list[tuple[int, ...]]:
    """Every operator pattern a stage can draw (stage 2: a ``*`` among o1, o2), held out or not."""
    k = 3 if stage == 1 else 2
    pats = list(product(range(len(OP_SYMBOLS)), repeat=k))
    return [p for p in pats if stage != 2 or OP_SYMBOLS.index("*") in p]


def trained_operator_sequences() -> set[tuple[int, ...]]:
    """The operator sequences ``o1 o2`` (stages 0, 2) and ``o1 o2 o3`` (stage 1) of every training pattern
    of every stage, with their prefixes: the openings a policy trained on all stages has written."""
    out: set[tuple[int, ...]] = set()
    for stage in range(NUM_STAGES):
        pats = _stage_patterns(stage)
        ops = torch.zeros(len(pats), 3, dtype=torch.int64)
        ops[:, : len(pats[0])] = torch.tensor(pats)
        for p, held in zip(pats, is_held_out_pattern(stage, ops).tolist(), strict=True):
            if not held:
                out.update(p[:j] for j in range(1, len(p) + 1))
    return out


def cross_stage_lookup_pattern(stage: int, ops: torch.Tensor) -> torch.Tensor:
    """(B, 3) operator indices -> the pattern whose canonical program a cross-stage lookup writes.

    The cross-stage lookup has memorised every operator sequence trained in *any* stage
    (:func:`trained_operator_sequences`) and finishes it with the stage's own tail: a pattern whose
    operator sequence was trained in some stage is answered with its own (right) program, any other
    pattern with the program of :func:`nearest_training_pattern` of its stage.
    """
    k = 3 if stage == 1 else 2
    known = trained_operator_sequences()
    hit = torch.tensor([tuple(row[:k]) in known for row in ops.tolist()], dtype=torch.bool, device=ops.device)
    return torch.where(hit[:, None], ops, nearest_training_pattern(stage, ops))


_OPERATOR_SYMBOL = {ADD: "+", SUB: "-", MUL: "*", RSUB: "R"}


def written_openings(policy: ToolPolicy, problems: Problem) -> list[str]:
    """The tokens of the policy's greedy program at the steps where the canonical program writes
    ``o1`` and ``o2`` (steps 1 and 3: ``P[a] o1 P[b] o2 P[c] ...``), one string per problem: an
    operator as its symbol (``+ - *``, ``R`` for RSUB), any other token as ``[NAME]`` (for example
    ``-[STO]``: a store where ``o2`` belongs)."""
    with torch.no_grad():
        ro = rollout(policy, problems, greedy=True)
    actions = torch.where(ro.alive, ro.actions, -1)[:, [1, 3]].tolist()

    def token(a: int) -> str:
        return _OPERATOR_SYMBOL.get(a, f"[{ACTION_NAMES[a]}]" if a >= 0 else "[end]")

    return ["".join(token(a) for a in row) for row in actions]


def parse_problem(text: str, generator: torch.Generator | None = None) -> Problem:
    """A typed problem -> a Problem with its operands in shuffled slots.

    ``"54 - 72 * 13"`` (three numbers: stage 0), four numbers (stage 1) or ``"a o1 b o2 c - d * e"``
    (stage 2); operators ``+ - *``, numbers NUM_LOW..NUM_HIGH; it is read as the fold the stages
    define, left to right (stage 2: ``((a o1 b) o2 c) - (d * e)``), whatever the usual precedence.
    """
    tok = text.replace("(", " ").replace(")", " ").split()
    nums, ops = tok[0::2], tok[1::2]
    if len(tok) % 2 == 0 or not all(t.isdigit() for t in nums) or not all(o in OP_SYMBOLS for o in ops):
        raise ValueError(f"expected numbers separated by + - *, got {text!r}")
    values = [int(t) for t in nums]
    if not all(NUM_LOW <= v <= NUM_HIGH for v in values):
        raise ValueError(f"numbers must be in {NUM_LOW}..{NUM_HIGH}, got {values}")
    n = len(values)
    if n == 5 and ops[2:] == ["-", "*"]:
        stage = 2
    elif n in (3, 4):
        stage = n - 3
    else:
        raise ValueError(f"a problem has 3 or 4 numbers, or 5 ending in '- d * e'; got {text!r}")
    x = torch.zeros(1, MAX_OPERANDS, dtype=torch.int64)
    x[0, :n] = torch.tensor(values)
    o = torch.zeros(1, 3, dtype=torch.int64)
    k = 2 if stage == 2 else n - 1
    o[0, :k] = torch.tensor([OP_SYMBOLS.index(c) for c in ops[:k]])
    slot = torch.arange(MAX_OPERANDS)[None].clone()
    slot[0, :n] = torch.randperm(n, generator=generator)
    numbers = torch.zeros_like(x).scatter(1, slot, x)
    return build_problems(stage, numbers, o, slot)


# ----------------------------------------------------------------------------- text displays
def program_to_text(program: Iterable[int]) -> str:
    """Action ids -> 'P0 MUL P1 ...' (stops after the first ANS)."""
    out = []
    for a in program:
        out.append(ACTION_NAMES[int(a)])
        if int(a) == ANS:
            break
    return " ".join(out)


def formula_text(stage: int, ops: Sequence[int], values: Sequence[object] | None = None) -> str:
    """The problem with the parentheses of its left-to-right fold, over role names or ``values``.

    stage 0 ``(a o1 b) o2 c``; stage 1 ``((a o1 b) o2 c) o3 d``; stage 2 ``((a o1 b) o2 c) - (d * e)``.
    """
    n = NUM_OPERANDS[stage]
    v = [str(x) for x in (values if values is not None else ROLE_NAMES)][:n]
    sym = [OP_SYMBOLS[int(o)] for o in ops]
    text = f"{v[0]} {sym[0]} {v[1]}"
    for j in range(2, n if stage < 2 else 3):  # the left-to-right fold
        text = f"({text}) {sym[j - 1]} {v[j]}"
    if stage == 2:
        text = f"({text}) - ({v[3]} * {v[4]})"
    return text


def problem_text(problem: Problem, index: int) -> str:
    """Problem ``index`` with its numbers in place and its target: ``(54 - 72) * 13 = -234``."""
    stage = int(problem.stage[index])
    values = problem.numbers[index].gather(0, problem.slot[index]).tolist()
    return f"{formula_text(stage, problem.ops[index].tolist(), values)} = {int(problem.target[index])}"


def context_to_text(context: Iterable[int]) -> str:
    """Context tokens -> 'a + b * c | P0: c=13  P1: a=54  P2: b=72' (the formula as the policy reads it)."""
    ctx = [int(t) for t in context]

    def tok(t: int) -> str:
        if t >= TOK_ROLE0:
            return ROLE_NAMES[t - TOK_ROLE0]
        return OP_SYMBOLS[t - TOK_OP0] if t >= TOK_OP0 else str(t)

    formula = " ".join(tok(t) for t in ctx[:FORMULA_LEN] if t != TOK_PAD)
    pairs = ctx[FORMULA_LEN:]
    slots = [f"P{i}: {tok(pairs[2 * i])}={pairs[2 * i + 1]}" for i in range(MAX_OPERANDS) if pairs[2 * i] != TOK_PAD]
    return f"{formula} | " + "  ".join(slots)


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
    """Print problem ``index`` of ``problems`` (with its parentheses and its slots) and the policy's
    greedy program as ``TOKEN[acc|mem]`` after each action; returns the rows of :func:`trace_program`."""
    one = index_problems(problems, torch.tensor([index]))
    stage = int(one.stage[0])
    with torch.no_grad():
        prog = rollout(policy, one, greedy=True).actions[0].tolist()
    rows = trace_program(one.numbers[0].tolist(), stage, prog, max_steps)
    print(f"stage {stage}: {problem_text(one, 0)}    slots: {context_to_text(one.context[0]).split(' | ')[1]}")
    print(
        "  "
        + "  ".join(f"{name}[{'' if acc is None else acc}|{'' if mem is None else mem}]" for name, acc, mem in rows)
    )
    return rows


# ----------------------------------------------------------------------------- diagram
def draw_tool_agent() -> Figure:
    """Notebook 06's diagram of the agent's loop, in the notebook's symbols; returns the figure.

    The problem context :math:`x` (the formula over roles, then a (role, number) pair per slot) is read by
    the context encoder (a GRU, final state :math:`c`); with the stage embedding :math:`s` it gives the decoder's
    first state :math:`h_0 = \\tanh(W(c + s))`. The open-loop GRU decoder's input at step :math:`t` is the
    embedding of its own previous action :math:`a_{t-1}` plus an attention read of the formula; its state
    :math:`h_t` scores the slots by pointer attention (logits of P0..P4, keys :math:`k_i` from the role names)
    and the other tools by a linear head, the action mask removes invalid tools, and :math:`a_t` is
    sampled. The program runs in the calculator environment (accumulator, pending operator, memory;
    STO/RCL), whose rewards :math:`r_t` (1 for an exact answer, 0.1 per canonical subgoal) give the
    reward-to-go :math:`G_t` of the REINFORCE-with-baseline loss, with the value head's :math:`V_t` as baseline.
    No tool result goes back to the decoder.
    """
    fig, ax = canvas(14.0, 7.4)
    ctx = box(ax, 1.75, 6.6, "problem context $x$\nformula: a $o_1$ b $o_2$ c ...\nslots P0..P4: (role, number)",
              w=3.1, h=1.15, role="input")  # fmt: skip
    enc = box(ax, 1.75, 4.3, "context encoder (GRU)\nfinal state $c$", w=3.1, h=0.85, role="network")
    stage = box(ax, 1.75, 1.6, "stage embedding $s$\n(stage 0, 1 or 2)", w=3.1, h=0.85, role="network")
    init = box(ax, 5.2, 2.7, "$h_0 = \\tanh(W(c + s))$", w=2.4, h=0.6, role="operation")
    fatt = box(ax, 5.2, 5.0, "formula attention\n(query $h_{t-1}$)", w=2.4, h=0.85, role="network")
    dec = box(ax, 8.6, 3.5, "open-loop GRU decoder, state $h_t$\ninput: emb($a_{t-1}$) + formula read",
              w=3.6, h=1.0, role="network")  # fmt: skip
    ptr = box(ax, 8.6, 6.6, "pointer attention over slots\n$q(h_t)^\\top k_i/\\sqrt{D}$: logits of P0..P4",
              w=3.2, h=0.85, role="network")  # fmt: skip
    mask = box(ax, 12.3, 6.6, "action mask ($-10^9$ if invalid)\nsample $a_t \\sim \\pi(a_t \\mid x, a_{<t})$",
               w=3.1, h=0.85, role="operation")  # fmt: skip
    env = box(ax, 12.55, 3.8, "calculator environment\naccumulator, pending op,\nmemory slot: STO / RCL",
              w=2.7, h=1.15, role="operation")  # fmt: skip
    loss = box(
        ax, 11.2, 0.9, "REINFORCE with a learned baseline\n"
        "$G_t = \\Sigma_{t' \\geq t}\\, r_{t'}$,  $\\hat A_t$: $G_t - V_t$ normalised\n"
        "$\\mathcal{L} = -\\log\\pi(a_t)\\,\\hat A_t + c_v (V_t - G_t)^2 - c_e H(\\pi_t)$",
        w=5.0, h=1.35, role="output",
    )  # fmt: skip

    arrow(ax, ctx.bottom, enc.top, "tokens", offset=(0.4, -0.1))
    arrow(ax, ctx.right, ptr.left, "slot keys $k_i$ (role names)", offset=(0.0, 0.05))
    arrow(ax, enc.right, fatt.at(0.0, 0.3), "formula\noutputs", offset=(-0.3, 0.2))
    arrow(ax, enc.at(0.8, 0.0), init.at(0.15, 1.0), "$c$", offset=(0.15, -0.1))
    arrow(ax, stage.right, init.at(0.15, 0.0), "$s$", offset=(0.1, -0.2))
    arrow(ax, init.right, dec.at(0.0, 0.3), "$h_0$", offset=(-0.05, 0.0))
    arrow(ax, fatt.right, dec.at(0.2, 1.0), "read", offset=(0.35, -0.05))
    arrow(ax, dec.at(0.3, 1.0), ptr.at(0.27, 0.0), "$h_t$", offset=(-0.2, -0.1))
    arrow(ax, ptr.right, mask.left)
    arrow(ax, dec.at(1.0, 0.9), mask.at(0.1, 0.0), "ADD .. ANS\n(linear head)", offset=(-1.05, 0.2))
    arrow(ax, mask.at(0.3, 0.0), dec.at(1.0, 0.4), "$a_{t-1}$", offset=(0.35, -0.25), dashed=True)
    arrow(ax, mask.at(0.8, 0.0), env.at(0.75, 1.0), "$a_t$", offset=(0.2, -0.1))
    arrow(ax, env.at(0.6, 0.0), loss.at(0.8, 1.0), "$r_t$: 1 if exact, + 0.1 per subgoal", offset=(-1.75, -0.2))
    arrow(ax, dec.at(0.6, 0.0), loss.at(0.12, 1.0), "value head $V_t$", offset=(-0.95, -0.15))
    arrow(ax, loss.left, stage.at(1.0, 0.15), "$\\nabla\\mathcal{L}$, clipped: Adam step on every weight",
          dashed=True, offset=(0.0, -0.45))  # fmt: skip
    note(ax, 12.45, 2.72, "tool results never reach the decoder", fontsize=8, ha="right")
    return fig


def _main() -> None:  # pragma: no cover - a command-line entry for training the table in parallel
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", required=True, help="file for the table (saved after every run)")
    parser.add_argument("--agent-out", help="file for the headline agent (the first headline seed)")
    parser.add_argument("--more-out", help="file for the table's second part (trained after the first)")
    args = parser.parse_args()
    config = default_table_config()
    table = train_ablation_table(config, jobs=args.jobs, save_to=args.out, log=lambda s: print(s, flush=True))
    if args.agent_out:
        agent = train_agent(config.headline) if "headline" not in table["state_dicts"] else None
        run = table["rows"]["headline"]
        result = agent or {
            "state_dict": table["state_dicts"]["headline"],
            "curve": run["curves"][0],
            "updates": int(run["updates"][0]),
            "seconds": float(run["seconds"][0]),
        }
        save_result(args.agent_out, config.headline, result)
    if args.more_out:
        more = default_more_config()
        train_ablation_table(more, jobs=args.jobs, save_to=args.more_out, log=lambda s: print(s, flush=True))


def default_more_config() -> MoreAblationsConfig:
    """The notebook's configuration of the table's second part (kept equal to its cell by a test)."""
    table = default_table_config()
    return MoreAblationsConfig(headline=table.headline, seeds=table.ablation_seeds, n_held_out=table.n_held_out)


def default_table_config() -> AblationTableConfig:
    """The notebook's default table configuration (kept equal to its parameters cell by a test)."""
    return AblationTableConfig(
        headline=ToolAgentConfig(failure_weighted=True, max_updates=1000, seed=23),
        seeds=(23, 24, 25, 26, 27),
        ablation_seeds=(23, 24, 25),
        n_held_out=1000,
    )


if __name__ == "__main__":
    _main()
