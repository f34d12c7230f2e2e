"""A model-native tool-using agent: REINFORCE with a learned baseline over arithmetic and memory tools.

Taught in notebook 06. A small recurrent policy reads an arithmetic problem (a formula over role
names ``a, b, c, ...``, then the role and number of each slot in a shuffled order) and emits a
*tool program* token by token, without seeing any tool result while it writes (the "model-native"
setting: the plan lives in its hidden state). The program runs in a vectorised environment with
an accumulator and a one-slot memory; the reward is 1 for an exact answer, plus an optional
shaping bonus per canonical subgoal reached in order.

Shape legend: ``B`` batch of episodes, ``T`` decoder steps (the step limit), ``L`` context length
(``CONTEXT_LEN``), ``A`` number of actions (``NUM_ACTIONS``), ``D`` model width, ``K`` subgoals.

The environment (every rule below is value-independent except the arithmetic itself)
-------------------------------------------------------------------------------------
State: an accumulator (empty or an integer), a *pending* operator (none or one), a memory slot
(empty or an integer), the set of context operands already used, and a done flag.

* ``P0 .. P4`` (pointer actions) take the number in slot i, each at most once. With an
  empty accumulator the number is *loaded* (the first operand always loads, so no negation trick can
  replace the memory); with a pending operator it is applied: ``acc <- acc op x``.
* ``ADD SUB MUL RSUB`` set the pending operator (the accumulator must be full, nothing pending,
  and some operand must still be available: an unused pointer or a full memory, so that a
  program can never paint itself into a corner). ``RSUB`` is reverse subtraction:
  ``acc RSUB x = x - acc``.
* ``STO`` copies the accumulator to memory and *empties* the accumulator (full, nothing pending).
* ``RCL`` is an operand that reads memory (memory must be full): it loads into an empty
  accumulator or is applied with the pending operator. Memory is kept.
* ``ANS`` answers with the accumulator (full, nothing pending) and ends the episode.
* Any other use of a tool (recall before store, answer with an empty accumulator, a pointer used
  twice or past the problem's operands, an operator after an operator) is an *error*: the episode
  ends with reward 0. The policy masks these actions by default (the masks are structural, computed
  from the program so far, so masking does not leak any tool result).
* An episode also ends unanswered after ``max_steps`` actions.

Stages (operators ``o`` drawn from ``+ - *``, numbers from ``NUM_LOW .. NUM_HIGH``):
stage 0 ``(a o1 b) o2 c``; stage 1 ``((a o1 b) o2 c) o3 d``; stage 2 ``((a o1 b) o2 c) - (d * e)``.
The operands sit in the slots in a random order (``Problem.slot``), so the pointer that takes
``a`` depends on the problem. Canonical programs, with ``P[r]`` the pointer of role r:
``P[a] o1 P[b] o2 P[c] ANS``; ``P[a] o1 P[b] o2 P[c] o3 P[d] ANS``;
``P[a] o1 P[b] o2 P[c] STO P[d] MUL P[e] RSUB RCL ANS`` (12 actions; the default limit of 14 leaves
slack). The stage-1 habit (fold left to right) is a prefix of the stage-2 program: the carry-over.

Stage-2 problems are kept only when an exhaustive search over every memory-free program (a fold of
the operands, at most 10 actions, so well within the step limit) finds no exact answer: every
stage-2 problem the environment draws needs ``STO``/``RCL``. A fixed fraction of number combinations
(``HELD_OUT_FRACTION``) and, in every stage, every operator pattern that opens with one of the
``HELD_OUT_OPENINGS`` (``HELD_OUT_PATTERNS``) are never drawn for training: accuracy is measured on
held-out numbers with training patterns ("test", in distribution) and on held-out numbers with
held-out patterns ("test-pattern").

Training: REINFORCE (Williams 1992) with Monte-Carlo reward-to-go and a learned state-value
baseline, i.e. vanilla policy gradient (:func:`vpg_loss`); the critic never bootstraps.

Notebook 06's ablations, seeds tables and program displays are in ``memtutor.experiments.nb06_tool_agent``.

References: Williams, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 1992 (REINFORCE); Vinyals et al., "Pointer Networks",
NeurIPS 2015; Ng, Harada & Russell, "Policy invariance under reward transformations", ICML 1999;
Bengio et al., "Curriculum Learning", ICML 2009; Schick et al., "Toolformer", NeurIPS 2023.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations, permutations, product
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from memtutor.utils import check_positive_int, check_tensor, register_seed_offset
from memtutor.utils import generator as make_generator
from memtutor.utils import progress as progress_bar

__all__ = [
    "TOOL_TRAIN_DRAWS",
    "TOOL_CHECK_DRAWS",
    "TOOL_HELD_OUT_DRAWS",
    "HELD_OUT_FRACTION",
    "ACTION_NAMES",
    "NUM_ACTIONS",
    "POINTERS",
    "ADD",
    "SUB",
    "MUL",
    "RSUB",
    "STO",
    "RCL",
    "ANS",
    "OP_SYMBOLS",
    "CONTEXT_LEN",
    "FORMULA_LEN",
    "NUM_STAGES",
    "NUM_OPERANDS",
    "Problem",
    "EnvState",
    "ToolAgentConfig",
    "ToolPolicy",
    "apply_op",
    "sample_problems",
    "cat_problems",
    "is_held_out",
    "memory_free_solvable",
    "canonical_programs",
    "initial_env_state",
    "valid_actions",
    "env_step",
    "run_programs",
    "reference_run_program",
    "rollout",
    "vpg_loss",
    "role_values",
    "is_held_out_pattern",
    "HELD_OUT_PATTERNS",
    "HELD_OUT_OPENINGS",
    "SPLITS",
    "ROLE_NAMES",
    "evaluate_programs",
    "stage_mix",
    "train_agent",
    "parse_program",
    "held_out_set",
    "HELD_OUT_SEED",
    "build_problems",
    "index_problems",
    "draw_raw_problems",
    "ToolRollout",
]

# ----------------------------------------------------------------------------- vocabulary
NUM_STAGES = 3
#: Operands per stage (a, b, c | a..d | a..e).
NUM_OPERANDS = (3, 4, 5)
MAX_OPERANDS = 5
POINTERS = tuple(range(MAX_OPERANDS))  # P0..P4
ADD, SUB, MUL, RSUB, STO, RCL, ANS = range(MAX_OPERANDS, MAX_OPERANDS + 7)
NUM_ACTIONS = ANS + 1
ACTION_NAMES = tuple(f"P{i}" for i in POINTERS) + ("ADD", "SUB", "MUL", "RSUB", "STO", "RCL", "ANS")
_OPERATOR_ACTIONS = (ADD, SUB, MUL, RSUB)
#: Problem operators are indices into OP_SYMBOLS; operator k is the tool ADD + k.
OP_SYMBOLS = ("+", "-", "*")
NUM_LOW, NUM_HIGH = 1, 99
#: Names of the operand roles in the formula (role r is the r-th operand of the left-to-right fold).
ROLE_NAMES = ("a", "b", "c", "d", "e")
#: Context tokens: numbers 0..99, the three operator symbols, the five role names, then padding.
TOK_OP0 = NUM_HIGH + 1
TOK_ROLE0 = TOK_OP0 + len(OP_SYMBOLS)
TOK_PAD = TOK_ROLE0 + MAX_OPERANDS
CONTEXT_VOCAB = TOK_PAD + 1
#: The formula over role names (``a o1 b o2 c - d * e``: at most 9 tokens) ...
FORMULA_LEN = 2 * MAX_OPERANDS - 1
#: ... then one (role, number) pair per slot, in the shuffled slot order the pointers index.
CONTEXT_LEN = FORMULA_LEN + 2 * MAX_OPERANDS
#: Fraction of number combinations reserved for held-out evaluation (never drawn for training).
HELD_OUT_FRACTION = 0.2
#: Operator openings ``o1 o2`` never drawn for training in *any* stage (fixed before any agent
#: reported in notebook 06 was trained). Every stage opens with ``P[a] o1 P[b] o2 P[c]``, so an
#: opening held out in one stage but trained in another could be answered by reusing the other
#: stage's program: it is held out everywhere. Every operator still occurs at every position of
#: the training patterns of stages 0 and 1, so a policy that reads operators one by one can answer
#: them; a policy that looks up whole patterns or openings (from any stage) cannot. Stage 2 trains
#: only ``+*``, ``*-`` and ``**``: its held-out openings put an operator where only stages 0 and 1
#: train one.
HELD_OUT_OPENINGS: tuple[str, ...] = ("-*", "*+")
#: The held-out operator patterns per stage: stage 0 and 2 patterns are (o1, o2), stage 1 patterns
#: (o1, o2, o3); exactly the patterns that begin with a held-out opening.
HELD_OUT_PATTERNS: tuple[tuple[str, ...], ...] = (
    HELD_OUT_OPENINGS,
    tuple(opening + o3 for opening in HELD_OUT_OPENINGS for o3 in OP_SYMBOLS),
    HELD_OUT_OPENINGS,
)
#: The evaluation splits: held-out numbers with training patterns, and held-out numbers with held-out patterns.
SPLITS = ("train", "test", "test-pattern")
_HASH_BUCKETS = 1000
#: Logit given to masked actions: finite so that log-softmax and entropy stay NaN-free.
_MASK_LOGIT = -1e9
#: Guards the advantage normalisation against a batch with identical returns.
_ADV_EPS = 1e-8
#: Subgoals of the canonical program (for shaping) per episode, padded to this many.
MAX_SUBGOALS = 5

# Seed purposes (memtutor.utils.derive_seed): the streams one seed gives.
#: Training: the problems of every batch, the stage mix and the sampled actions (the seed itself).
TOOL_TRAIN_DRAWS = register_seed_offset("tool_agent/train-draws", 0)
#: The fresh training-split problems of the curriculum checks: ``seed + 10_000``.
TOOL_CHECK_DRAWS = register_seed_offset("tool_agent/curriculum-checks", 10_000)
#: The fixed held-out sets, one index per stage and split: ``stage`` for "test", ``stage + 3`` for "test-pattern".
TOOL_HELD_OUT_DRAWS = register_seed_offset("tool_agent/held-out", 0)


class Problem(NamedTuple):
    """A batch of problems (all integer tensors on one device).

    stage (B,); numbers (B, 5) in *slot* order, the order pointers P0..P4 read them (unused
    slots are 0); slot (B, 5): the slot holding role a, b, c, d, e (a permutation of the used slots;
    unused roles r sit at slot r); ops (B, 3) indices into OP_SYMBOLS of o1, o2, o3 (unused ones
    are 0; stage 2's fixed ``- (d * e)`` is not stored there);
    target (B,); context (B, L) tokens; subgoal (B, K) values of the canonical program's
    intermediate results; subgoal_mem (B, K) bool (True: reached in memory, not accumulator);
    n_subgoals (B,).
    """

    stage: torch.Tensor
    numbers: torch.Tensor
    slot: torch.Tensor
    ops: torch.Tensor
    target: torch.Tensor
    context: torch.Tensor
    subgoal: torch.Tensor
    subgoal_mem: torch.Tensor
    n_subgoals: torch.Tensor


class EnvState(NamedTuple):
    """Environment state, all (B,) except ``used`` (B, 5).

    acc, acc_full: accumulator value and whether it holds one; pending: pending operator action
    (ADD..RSUB) or -1; mem, mem_full: memory slot; used: operands taken; done: episode over;
    answered: ended by ANS; error: ended by an invalid action; answer: the answered value;
    steps: actions taken; progress: canonical subgoals reached in order (shaping).
    """

    acc: torch.Tensor
    acc_full: torch.Tensor
    pending: torch.Tensor
    mem: torch.Tensor
    mem_full: torch.Tensor
    used: torch.Tensor
    done: torch.Tensor
    answered: torch.Tensor
    error: torch.Tensor
    answer: torch.Tensor
    steps: torch.Tensor
    progress: torch.Tensor


# ----------------------------------------------------------------------------- arithmetic
def apply_op(x: torch.Tensor, op: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x op y`` elementwise for tool actions ADD/SUB/MUL/RSUB (other values give x).

    x, op, y: broadcastable int64 tensors. RSUB is reverse subtraction ``y - x``.
    """
    out = torch.where(op == ADD, x + y, x)
    out = torch.where(op == SUB, x - y, out)
    out = torch.where(op == MUL, x * y, out)
    return torch.where(op == RSUB, y - x, out)


#: (alpha, beta, gamma) with ``v op y = alpha v + beta y + gamma v y`` for ADD, SUB, MUL, RSUB.
_OP_COEF = ((1, 1, 0), (1, -1, 0), (0, 0, 1), (-1, 1, 0))


def _check_stage(stage) -> int:
    if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < NUM_STAGES:
        raise ValueError(f"stage must be an int in 0..{NUM_STAGES - 1}, got {stage!r}")
    return stage


def is_held_out(numbers: torch.Tensor) -> torch.Tensor:
    """(B, 5) numbers -> (B,) bool: the number combination belongs to the held-out split.

    A fixed multiplicative hash of the combination picks ``HELD_OUT_FRACTION`` of all combinations;
    the same combination is always in the same split, whatever the operators.
    """
    check_tensor(numbers, "numbers", ndim=2)
    primes = torch.tensor(
        [1000003, 998244353, 1000000007, 19260817, 2654435761], dtype=torch.int64, device=numbers.device
    )
    h = (numbers.long() * primes).sum(-1)  # (B,)
    h = (h ^ (h >> 13)) * 0x5BD1E995 % (2**31 - 1)
    h = (h ^ (h >> 15)) % _HASH_BUCKETS
    return h < int(HELD_OUT_FRACTION * _HASH_BUCKETS)


def _pattern_index(stage: int, ops: torch.Tensor) -> torch.Tensor:
    """(B, 3) operator indices -> (B,) pattern index in base 3 over the stage's free operators."""
    k = 3 if stage == 1 else 2
    w = torch.tensor([3 ** (k - 1 - j) for j in range(k)], device=ops.device)
    return (ops[:, :k].long() * w).sum(1)


def is_held_out_pattern(stage: int, ops: torch.Tensor) -> torch.Tensor:
    """(B, 3) operator indices of one stage -> (B,) bool: the operator pattern is in HELD_OUT_PATTERNS."""
    _check_stage(stage)
    check_tensor(ops, "ops", ndim=2)
    idx = _pattern_index(stage, ops)
    held = [
        _pattern_index(stage, torch.tensor([[OP_SYMBOLS.index(c) for c in pat.ljust(3, "+")]]))
        for pat in HELD_OUT_PATTERNS[stage]
    ]
    return (idx[:, None] == torch.cat(held).to(ops.device)[None]).any(1)


def role_values(problem: Problem) -> torch.Tensor:
    """(B, 5) the operands in role order a, b, c, d, e (``numbers`` gathered by ``slot``)."""
    return problem.numbers.gather(1, problem.slot)


_FOLD_CACHE: dict = {}


def _folds(n: int) -> tuple:
    """Structure of the memory-free search for n operands (value-independent, cached).

    Returns (short, groups, m): ``short`` = (perm (P, m), ops (P, m - 1), length (P,)) listing every
    fold over at most m = n - 2 operands (padded), with the folds over exactly m operands grouped by
    their operand set (G groups of equal size, ``groups`` = (G, 2) complement pairs).
    """
    if n in _FOLD_CACHE:
        return _FOLD_CACHE[n]
    m = n - 2 if n >= 3 else n
    rows = []
    for k in range(1, m + 1):
        for order in permutations(range(n), k):
            for operators in product(_OPERATOR_ACTIONS, repeat=k - 1):
                rows.append((order, operators))
    # stable sort: shorter folds first, then folds over m operands grouped by operand set
    rows.sort(key=lambda r: (len(r[0]) == m, tuple(sorted(r[0])) if len(r[0]) == m else ()))
    perm = torch.tensor([list(p) + [0] * (m - len(p)) for p, _ in rows])
    ops = torch.tensor([list(o) + [ADD] * (m - 1 - len(o)) for _, o in rows], dtype=torch.int64).reshape(
        len(rows), m - 1
    )
    length = torch.tensor([len(p) for p, _ in rows])
    sets = [c for c in combinations(range(n), m)] if n >= 3 else []
    groups = torch.tensor([[j for j in range(n) if j not in c] for c in sets], dtype=torch.int64).reshape(
        len(sets), n - m
    )
    _FOLD_CACHE[n] = ((perm, ops, length), groups, m)
    return _FOLD_CACHE[n]


def _inverse(op: int, t: torch.Tensor, x: torch.Tensor):
    """Values v with ``v op x == t``: (v, valid). x >= 1 (checked by the caller)."""
    if op == MUL:  # exact division only
        return torch.div(t, x, rounding_mode="floor"), t % x == 0
    v = {ADD: t - x, SUB: t + x, RSUB: x - t}[op]
    return v, torch.ones_like(v, dtype=torch.bool)


def memory_free_solvable(numbers: torch.Tensor, n_operands: int, target: torch.Tensor) -> torch.Tensor:
    """Exhaustive search: can some memory-free program answer ``target`` exactly?

    Without STO/RCL a program is a fold ``x_p1 op x_p2 op ... ANS`` over distinct operands with
    operators ADD/SUB/MUL/RSUB: at most ``2 * n`` actions, within any step limit >= 10, so the
    search below covers every memory-free program (39,445 folds for five operands).

    Meet in the middle, vectorised over problems: folds over at most m = n - 2 operands are
    evaluated; a longer fold is an m-operand prefix followed by one or two steps with the two
    remaining operands, so instead of evaluating it we *invert* those last steps from the target
    (``v + x = t`` needs ``v = t - x``; ``v * x = t`` needs ``x | t``) and look the needed prefix
    values up in the sorted prefix values of that operand set (``searchsorted``).
    numbers (B, >= n) ints >= 1, target (B,) -> (B,) bool.
    """
    check_tensor(numbers, "numbers", ndim=2)
    check_tensor(target, "target", shape=(numbers.shape[0],))
    n = check_positive_int(n_operands, "n_operands")
    if n > numbers.shape[1]:
        raise ValueError(f"n_operands={n} exceeds the {numbers.shape[1]} numbers given")
    x = numbers[:, :n].long()
    if x.shape[0] == 0:  # a sampling round can leave no candidates
        return torch.zeros(0, dtype=torch.bool, device=x.device)
    if bool((x < 1).any()):
        raise ValueError("memory_free_solvable needs operands >= 1 (the search divides by them)")
    (perm, ops, length), groups, m = _folds(n)
    dev, B = x.device, x.shape[0]
    perm, ops, length, groups = perm.to(dev), ops.to(dev), length.to(dev), groups.to(dev)
    t = target.long()[:, None]  # (B, 1)
    # v op y = alpha v + beta y + gamma v y, per fold and step (cheaper than four masked ops);
    # a padded step of a shorter fold uses (1, 0, 0) and keeps its value
    coef = torch.tensor(_OP_COEF, device=dev)[ops - ADD]  # (P, m - 1, 3)
    coef[length[:, None] <= torch.arange(1, m, device=dev)] = torch.tensor([1, 0, 0], device=dev)
    vals = x[:, perm[:, 0]]  # (B, P)
    for s in range(1, m):  # fold step by step
        y = x[:, perm[:, s]]
        a, b, g = coef[:, s - 1].unbind(-1)  # (P,) each
        vals = a * vals + b * y + g * vals * y
    hit = (vals == t).any(1)  # (B,): folds over at most m operands
    if n < 3:
        return hit
    G = groups.shape[0]
    full = vals[:, (length < m).sum() :].reshape(B, G, -1).sort(-1).values  # (B, G, Q) sorted
    cands, oks = [], []
    for side in range(2):  # one more step with either remaining operand
        xj = x[:, groups[:, side]]  # (B, G)
        for op in _OPERATOR_ACTIONS:
            c, ok = _inverse(op, t, xj)
            cands.append(c)
            oks.append(ok)
    for last, mid in ((0, 1), (1, 0)):  # two more steps: ... op1 x_mid op2 x_last
        xl, xm = x[:, groups[:, last]], x[:, groups[:, mid]]
        for op2 in _OPERATOR_ACTIONS:
            w, ok2 = _inverse(op2, t, xl)
            for op1 in _OPERATOR_ACTIONS:
                c, ok1 = _inverse(op1, w, xm)
                cands.append(c)
                oks.append(ok1 & ok2)
    cand, ok = torch.stack(cands, -1), torch.stack(oks, -1)  # (B, G, C)
    idx = torch.searchsorted(full, cand).clamp(max=full.shape[-1] - 1)  # clamp: only an index
    found = (full.gather(-1, idx) == cand) & ok
    return hit | found.flatten(1).any(1)


def _targets_and_subgoals(stage: int, x: torch.Tensor, ops: torch.Tensor):
    """Targets (B,) and canonical subgoals (B, K), subgoal_mem (B, K), n_subgoals (B,)."""
    tool = ops + ADD  # (B, 3) operator indices -> tool actions
    g1 = apply_op(x[:, 0], tool[:, 0], x[:, 1])
    g2 = apply_op(g1, tool[:, 1], x[:, 2])
    B, dev = x.shape[0], x.device
    sub = torch.zeros(B, MAX_SUBGOALS, dtype=torch.int64, device=dev)
    mem = torch.zeros(B, MAX_SUBGOALS, dtype=torch.bool, device=dev)
    if stage == 0:
        target, goals = g2, [g1, g2]
    elif stage == 1:
        target = apply_op(g2, tool[:, 2], x[:, 3])
        goals = [g1, g2, target]
    else:
        de = x[:, 3] * x[:, 4]
        target = g2 - de
        goals = [g1, g2, g2, de, target]
        mem[:, 2] = True  # the third subgoal is "g2 stored in memory"
    for k, g in enumerate(goals):
        sub[:, k] = g
    n_sub = torch.full((B,), len(goals), dtype=torch.int64, device=dev)
    return target, sub, mem, n_sub


def _context_tokens(stage: int, numbers: torch.Tensor, slot: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
    """(B, L) tokens: the formula over role names, then the (role, number) pair of each slot.

    ``a o1 b o2 c [o3 d]`` or ``a o1 b o2 c - d * e`` (right-padded to FORMULA_LEN), then for
    slot i = 0..n-1 the role name it holds and its number (padded to MAX_OPERANDS pairs).
    """
    B = numbers.shape[0]
    ctx = torch.full((B, CONTEXT_LEN), TOK_PAD, dtype=torch.int64, device=numbers.device)
    n = NUM_OPERANDS[stage]
    ctx[:, 0 : 2 * n - 1 : 2] = TOK_ROLE0 + torch.arange(n, device=numbers.device)
    if stage < 2:
        ctx[:, 1 : 2 * n - 2 : 2] = TOK_OP0 + ops[:, : n - 1]
    else:
        ctx[:, 1:4:2] = TOK_OP0 + ops[:, :2]
        ctx[:, 5] = TOK_OP0 + OP_SYMBOLS.index("-")
        ctx[:, 7] = TOK_OP0 + OP_SYMBOLS.index("*")
    role_of_slot = torch.argsort(slot[:, :n], 1)  # (B, n): inverse permutation
    ctx[:, FORMULA_LEN : FORMULA_LEN + 2 * n : 2] = TOK_ROLE0 + role_of_slot
    ctx[:, FORMULA_LEN + 1 : FORMULA_LEN + 2 * n : 2] = numbers[:, :n]
    return ctx


def build_problems(stage: int, numbers: torch.Tensor, ops: torch.Tensor, slot: torch.Tensor | None = None) -> Problem:
    """The Problem batch of one stage with the given numbers (B, 5), operators (B, 3) and slots.

    ``numbers`` holds the stage's operands in slot order (unused slots 0); ``ops`` holds indices
    into OP_SYMBOLS of o1, o2, o3 (unused ones 0); ``slot`` (B, 5) the slot of role a, b, c, ...
    (default: the identity, role r in slot r). Targets, context tokens and subgoals follow.
    """
    _check_stage(stage)
    check_tensor(numbers, "numbers", ndim=2)
    check_tensor(ops, "ops", shape=(numbers.shape[0], 3))
    if numbers.shape[1] != MAX_OPERANDS:
        raise ValueError(f"numbers must have shape (B, {MAX_OPERANDS}), got {tuple(numbers.shape)}")
    B, dev, n = numbers.shape[0], numbers.device, NUM_OPERANDS[stage]
    if slot is None:
        slot = torch.arange(MAX_OPERANDS, device=dev).expand(B, MAX_OPERANDS)
    check_tensor(slot, "slot", shape=(B, MAX_OPERANDS))
    slot = slot.long().to(dev)
    if not torch.equal(slot.sort(1).values, torch.arange(MAX_OPERANDS, device=dev).expand(B, -1)) or not bool(
        (slot[:, n:] == torch.arange(n, MAX_OPERANDS, device=dev)).all()
    ):
        raise ValueError(f"slot must permute the first {n} slots of every row and leave the others in place")
    numbers, ops = numbers.long(), ops.long().to(dev)
    target, sub, mem, n_sub = _targets_and_subgoals(stage, numbers.gather(1, slot), ops)
    st = torch.full((B,), stage, dtype=torch.int64, device=dev)
    return Problem(st, numbers, slot, ops, target, _context_tokens(stage, numbers, slot, ops), sub, mem, n_sub)


def draw_raw_problems(
    stage: int, n: int, generator: torch.Generator, device: torch.device | str | None = None
) -> Problem:
    """``n`` problems of one stage straight from the generator: every split, stage 2 unfiltered.

    Role values and operators are uniform; the operands are laid out in the slots in a uniformly
    random order, so which pointer takes operand ``a`` depends on the problem.
    :func:`sample_problems` is what training and evaluation use; this is for measuring the filter.
    """
    _check_stage(stage)
    n = check_positive_int(n, "n")
    device = torch.device("cpu") if device is None else torch.device(device)
    k = NUM_OPERANDS[stage]
    x = torch.zeros(n, MAX_OPERANDS, dtype=torch.int64)  # role order
    x[:, :k] = torch.randint(NUM_LOW, NUM_HIGH + 1, (n, k), generator=generator)
    ops = torch.zeros(n, 3, dtype=torch.int64)
    n_ops = k - 1 if stage < 2 else 2
    ops[:, :n_ops] = torch.randint(0, len(OP_SYMBOLS), (n, n_ops), generator=generator)
    slot = torch.arange(MAX_OPERANDS).repeat(n, 1)
    slot[:, :k] = torch.argsort(torch.rand(n, k, generator=generator), 1)
    numbers = torch.zeros_like(x).scatter(1, slot, x)  # numbers[slot[r]] = x[r]
    return build_problems(stage, numbers.to(device), ops.to(device), slot.to(device))


def index_problems(p: Problem, idx: torch.Tensor) -> Problem:
    """The problems ``idx`` (an index or bool tensor over the batch) of a Problem batch."""
    return Problem(*(t[idx] for t in p))


def cat_problems(problems: Iterable[Problem]) -> Problem:
    """Concatenate a sequence of Problem batches along the batch dimension."""
    problems = list(problems)
    if not problems:
        raise ValueError("cat_problems needs at least one Problem")
    return Problem(*(torch.cat(ts) for ts in zip(*problems, strict=True)))


def sample_problems(
    stage: int,
    batch_size: int,
    generator: torch.Generator,
    *,
    split: str = "train",
    device: torch.device | str | None = None,
) -> Problem:
    """Draw ``batch_size`` problems of one stage from the ``"train"``, ``"test"`` or ``"test-pattern"`` split.

    Numbers are uniform in NUM_LOW..NUM_HIGH, operators uniform over + - * and the slot order a
    uniform permutation. A combination of numbers (in role order) belongs to the training split or
    the held-out one only (:func:`is_held_out`), and so does an operator pattern
    (:func:`is_held_out_pattern`): ``"train"`` has training numbers and training patterns,
    ``"test"`` held-out numbers and training patterns (in distribution), ``"test-pattern"``
    held-out numbers and held-out patterns. Stage-2 problems are kept only when
    :func:`memory_free_solvable` is False (memory is provably needed). Rejection sampling loops over
    rounds, never over samples.
    """
    _check_stage(stage)
    batch_size = check_positive_int(batch_size, "batch_size")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = torch.device("cpu") if device is None else torch.device(device)
    kept, count = [], 0
    factor = 64 if split == "test-pattern" else 8 if split == "test" else 2  # rounds sized to the acceptance rate
    while count < batch_size:
        raw = draw_raw_problems(stage, factor * (batch_size - count) + 16, generator, device)
        keep = (is_held_out(role_values(raw)) == (split != "train")) & (
            is_held_out_pattern(stage, raw.ops) == (split == "test-pattern")
        )
        if stage == 2:
            # Problems with no * among o1, o2 are memory-free by construction (d MUL e RSUB a, then
            # +- b, +- c): skip them before the (costlier) search, which decides all the others.
            has_mul = (raw.ops[:, :2] == OP_SYMBOLS.index("*")).any(1)
            idx = (keep & has_mul).nonzero().squeeze(1)
            keep_sub = ~memory_free_solvable(raw.numbers[idx], NUM_OPERANDS[2], raw.target[idx])  # order-free
            keep = torch.zeros_like(keep)
            keep[idx[keep_sub]] = True
        p = index_problems(raw, keep.nonzero().squeeze(1))
        kept.append(p)
        count += p.stage.shape[0]
    return index_problems(cat_problems(kept), torch.arange(batch_size, device=device))


def canonical_programs(problem: Problem, max_steps: int = 14) -> torch.Tensor:
    """(B, max_steps) canonical action programs (padded with ANS, ignored after the episode ends).

    ``P[a] o1 P[b] o2 P[c] ...`` where ``P[r]`` is the pointer of the slot holding role r.
    """
    B, dev = problem.stage.shape[0], problem.stage.device
    prog = torch.full((B, max_steps), ANS, dtype=torch.int64, device=dev)
    tool = problem.ops + ADD
    ptr = problem.slot  # (B, 5): the pointer that takes role a, b, c, d, e
    for stage in range(NUM_STAGES):
        m = problem.stage == stage
        if stage == 0:
            cols = [ptr[:, 0], tool[:, 0], ptr[:, 1], tool[:, 1], ptr[:, 2], ANS]
        elif stage == 1:
            cols = [ptr[:, 0], tool[:, 0], ptr[:, 1], tool[:, 1], ptr[:, 2], tool[:, 2], ptr[:, 3], ANS]
        else:
            cols = [
                ptr[:, 0],
                tool[:, 0],
                ptr[:, 1],
                tool[:, 1],
                ptr[:, 2],
                STO,
                ptr[:, 3],
                MUL,
                ptr[:, 4],
                RSUB,
                RCL,
                ANS,
            ]
        if len(cols) > max_steps:
            raise ValueError(f"max_steps={max_steps} is shorter than stage {stage}'s program ({len(cols)})")
        for t, c in enumerate(cols):
            prog[:, t] = torch.where(m, torch.as_tensor(c, device=dev), prog[:, t])
    return prog


# ----------------------------------------------------------------------------- environment
def initial_env_state(problem: Problem) -> EnvState:
    """The empty state for a batch of problems."""
    B, dev = problem.stage.shape[0], problem.stage.device
    z = torch.zeros(B, dtype=torch.int64, device=dev)
    f = torch.zeros(B, dtype=torch.bool, device=dev)
    used = torch.zeros(B, MAX_OPERANDS, dtype=torch.bool, device=dev)
    return EnvState(z, f, z - 1, z, f, used, f, f, f, z, z, z)


def valid_actions(problem: Problem, state: EnvState, memory_tools: bool = True) -> torch.Tensor:
    """(B, A) bool: actions that are not errors in ``state`` (all False once done).

    ``memory_tools=False`` also forbids STO and RCL (the "memory removed" ablation).
    """
    n_ops = torch.tensor(NUM_OPERANDS, device=state.acc.device)[problem.stage]  # (B,)
    operand_ok = ~state.acc_full | (state.pending >= 0)  # an operand may come next
    ready = state.acc_full & (state.pending < 0)  # an operator / STO / ANS may come next
    ptr = (
        ~state.used & (torch.arange(MAX_OPERANDS, device=n_ops.device) < n_ops[:, None]) & operand_ok[:, None]
    )  # (B, 5)
    rcl = state.mem_full & operand_ok
    if not memory_tools:
        rcl = torch.zeros_like(rcl)
    sto = ready if memory_tools else torch.zeros_like(ready)
    # an operator needs an operand to follow: an unused pointer or a full memory (no dead ends)
    op_ok = ready & (
        (~state.used & (torch.arange(MAX_OPERANDS, device=n_ops.device) < n_ops[:, None])).any(1) | state.mem_full
    )
    cols = [ptr] + [op_ok[:, None]] * 4 + [sto[:, None], rcl[:, None], ready[:, None]]
    return torch.cat(cols, 1) & ~state.done[:, None]


def env_step(
    problem: Problem,
    state: EnvState,
    action: torch.Tensor,
    *,
    max_steps: int = 14,
    shaping: float = 0.0,
    ordered_shaping: bool = True,
):
    """One vectorised step. action (B,) int64 in 0..A-1 -> (next_state, reward (B,) float).

    Reward: 1 for an exact answer, plus ``shaping`` each time the next canonical subgoal is reached
    (``ordered_shaping``) or any not-yet-credited subgoal (unordered: progress is then a bit mask).
    Finished episodes ignore their action and get reward 0.
    """
    check_tensor(action, "action", shape=(state.acc.shape[0],))
    if action.is_floating_point() or bool(((action < 0) | (action >= NUM_ACTIONS)).any()):
        raise ValueError(f"action must hold integer tool tokens in 0..{NUM_ACTIONS - 1}, got {action.tolist()}")
    alive = ~state.done
    valid = valid_actions(problem, state).gather(1, action[:, None]).squeeze(1)  # (B,)
    is_ptr = action < MAX_OPERANDS
    is_opnd = is_ptr | (action == RCL)
    ptr_idx = action.clamp(max=MAX_OPERANDS - 1)  # clamp only selects a column; non-pointers ignore it
    operand = torch.where(is_ptr, problem.numbers.gather(1, ptr_idx[:, None]).squeeze(1), state.mem)
    ok = alive & valid
    # operand: load into an empty accumulator, else apply the pending operator
    applied = torch.where(state.acc_full, apply_op(state.acc, state.pending, operand), operand)
    acc = torch.where(ok & is_opnd, applied, state.acc)
    is_op = (action >= ADD) & (action <= RSUB)
    pending = torch.where(ok & is_opnd, -1, torch.where(ok & is_op, action, state.pending))
    sto = ok & (action == STO)
    mem = torch.where(sto, state.acc, state.mem)
    acc_full = (state.acc_full | (ok & is_opnd)) & ~sto
    used = state.used | (F.one_hot(ptr_idx, MAX_OPERANDS).bool() & (ok & is_ptr)[:, None])
    ans = ok & (action == ANS)
    error = state.error | (alive & ~valid)
    steps = state.steps + alive.long()
    done = state.done | ans | (alive & ~valid) | (steps >= max_steps)
    answer = torch.where(ans, state.acc, state.answer)
    reward = (ans & (state.acc == problem.target)).float()
    progress = state.progress
    if shaping:
        progress, bonus = _shaping(
            problem, progress, acc, acc_full & (pending < 0), mem, state.mem_full | sto, ok, ordered_shaping
        )
        reward = reward + shaping * bonus
    nxt = EnvState(
        acc,
        acc_full,
        pending,
        mem,
        state.mem_full | sto,
        used,
        done,
        state.answered | ans,
        error,
        answer,
        steps,
        progress,
    )
    return nxt, reward


def _shaping(problem, progress, acc, acc_ready, mem, mem_full, ok, ordered):
    """Advance subgoal progress; returns (progress, bonus (B,) float in {0, 1})."""
    K = problem.subgoal.shape[1]
    if ordered:
        k = progress.clamp(max=K - 1)[:, None]  # clamp: only an index, checked against n_subgoals
        goal = problem.subgoal.gather(1, k).squeeze(1)
        in_mem = problem.subgoal_mem.gather(1, k).squeeze(1)
        reached = torch.where(in_mem, mem_full & (mem == goal), acc_ready & (acc == goal))
        hit = ok & (progress < problem.n_subgoals) & reached
        return progress + hit.long(), hit.float()
    # unordered: credit the first not-yet-credited subgoal that is reached now (bit mask)
    bits = 2 ** torch.arange(K, device=acc.device)
    credited = (progress[:, None] & bits) > 0
    exists = torch.arange(K, device=acc.device) < problem.n_subgoals[:, None]
    reached = torch.where(
        problem.subgoal_mem,
        mem_full[:, None] & (mem[:, None] == problem.subgoal),
        acc_ready[:, None] & (acc[:, None] == problem.subgoal),
    )
    new = reached & exists & ~credited & ok[:, None]
    first = new & (new.long().cumsum(1) == 1)
    return progress | (first.long() * bits).sum(1), first.any(1).float()


def run_programs(
    problem: Problem, programs: torch.Tensor, *, max_steps: int = 14, shaping: float = 0.0, ordered_shaping: bool = True
):
    """Run (B, T) action programs; returns (final EnvState, rewards (B, T))."""
    check_tensor(programs, "programs", ndim=2)
    state, rewards = initial_env_state(problem), []
    for t in range(programs.shape[1]):  # a loop over time steps
        state, r = env_step(
            problem, state, programs[:, t], max_steps=max_steps, shaping=shaping, ordered_shaping=ordered_shaping
        )
        rewards.append(r)
    return state, torch.stack(rewards, 1)


def reference_run_program(
    numbers, stage: int, target: int, program, max_steps: int = 14, memory_tools: bool = True
) -> dict:
    """The same semantics for ONE episode in plain Python (for tests and the benchmark).

    numbers: list of ints (length >= the stage's operand count); program: list of action ints.
    Returns dict(correct, answered, error, answer, steps, acc, mem).
    """
    _check_stage(stage)
    n = NUM_OPERANDS[stage]
    acc = pending = mem = answer = None
    used, steps, error, answered = set(), 0, False, False
    for a in program:
        if not 0 <= a < NUM_ACTIONS:
            raise ValueError(f"unknown tool token {a!r}")
        steps += 1
        operand = None
        if a < MAX_OPERANDS:
            if a >= n or a in used or (acc is not None and pending is None):
                error = True
                break
            used.add(a)
            operand = numbers[a]
        elif a == RCL:
            if not memory_tools or mem is None or (acc is not None and pending is None):
                error = True
                break
            operand = mem
        elif acc is None or pending is not None or (a == STO and not memory_tools):
            error = True  # operators, STO and ANS need a full accumulator and nothing pending
            break
        elif a in _OPERATOR_ACTIONS and mem is None and all(j in used for j in range(n)):
            error = True  # an operator that no operand could follow
            break
        elif a == STO:
            mem, acc = acc, None
        elif a == ANS:
            answer, answered = acc, True
            break
        else:
            pending = a
        if operand is not None:
            if acc is None:
                acc = operand
            else:
                assert pending is not None  # an operand after a full accumulator broke off above
                acc = {ADD: acc + operand, SUB: acc - operand, MUL: acc * operand, RSUB: operand - acc}[pending]
                pending = None
        if steps >= max_steps:
            break
    return dict(
        correct=answered and answer == target,
        answered=answered,
        error=error,
        answer=answer,
        steps=steps,
        acc=acc,
        mem=mem,
    )


# ----------------------------------------------------------------------------- policy
@dataclass(frozen=True)
class ToolAgentConfig:
    """Every knob of the agent, its training and its ablations."""

    d_model: int = 64
    """D: width of embeddings and GRU states"""
    max_steps: int = 14
    """T: step limit (the canonical stage-2 program has 12 actions: keep slack)"""
    encoder: str = "gru"
    """context encoder: 'gru' (order-preserving) or 'mean' (a bag of tokens, order lost)"""
    context_blind: bool = False
    """ablation: zero the context encoding and the pointer keys (the policy sees only the stage)"""
    batch_mixing_bug: bool = False
    """ablation: a (B, d) + (B, 1, d) broadcast, then a mean over the batch (every episode sees the batch mean)"""
    pointer_attention: bool = True
    """pointer logits by attention over the slots (Pointer Networks); False: a linear head, as for the tools"""
    formula_attention: bool = True
    """the decoder reads the formula by attention at every step (False: only through its initial state)"""
    memory_tools: bool = True
    """False: STO and RCL are forbidden (ablation)"""
    reverse_subtract: bool = True
    """False: the policy may not use RSUB (ablation of the carry-over design)"""
    action_mask: bool = True
    """mask structurally invalid actions in the policy"""
    batch_size: int = 256
    """episodes per update"""
    lr: float = 2e-3
    """Adam learning rate"""
    entropy_coef: float = 0.05
    """entropy bonus"""
    value_coef: float = 0.5
    """weight of the value loss"""
    grad_clip: float = 1.0
    """gradient-norm clip"""
    shaping: float = 0.1
    """bonus per canonical subgoal reached (0 disables shaping)"""
    ordered_shaping: bool = True
    """credit subgoals only in program order"""
    curriculum: bool = True
    """unlock stages one by one; False: all stages uniformly from the first update"""
    newest_weight: float = 0.5
    """probability of drawing the newest unlocked stage (the rest revisits earlier stages)"""
    failure_weighted: bool = False
    """draw unlocked stages in proportion to their last measured error rate (floor 0.05)"""
    promote_at: float = 0.9
    """greedy training accuracy on the newest stage that unlocks the next"""
    stop_at: float = 0.995
    """stop early once greedy training accuracy reaches this on every stage"""
    max_updates: int = 3000
    """update budget"""
    eval_every: int = 50
    """updates between curriculum checks / learning-curve points"""
    eval_size: int = 512
    """fresh training-split problems per stage at each check"""
    seed: int = 0
    """seed of parameters and of the problem generator"""
    held_out_openings: tuple[str, ...] = HELD_OUT_OPENINGS
    """the openings never drawn for training (recorded so that a cached agent knows its split; fixed)"""

    def __post_init__(self):
        object.__setattr__(self, "held_out_openings", tuple(self.held_out_openings))
        if self.held_out_openings != HELD_OUT_OPENINGS:
            raise ValueError(
                f"held_out_openings is fixed to HELD_OUT_OPENINGS = {HELD_OUT_OPENINGS}, got {self.held_out_openings}"
            )
        if self.encoder not in ("gru", "mean"):
            raise ValueError(f"encoder must be 'gru' or 'mean', got {self.encoder!r}")
        for name in ("d_model", "max_steps", "batch_size", "max_updates", "eval_every", "eval_size"):
            check_positive_int(getattr(self, name), name)
        if self.max_steps < 12:
            raise ValueError(f"max_steps must be >= 12 (the stage-2 program), got {self.max_steps}")
        for name in ("lr", "entropy_coef", "value_coef", "grad_clip", "shaping"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not 0 < self.newest_weight <= 1:
            raise ValueError(f"newest_weight must be in (0, 1], got {self.newest_weight}")


class ToolPolicy(nn.Module):
    """Stage-aware policy with a value head: context encoder + stage embedding -> GRU decoder of tool tokens.

    The decoder is open-loop: its input at step t is the embedding of its own previous action, so
    it must plan the whole program from the problem (it never sees a tool result); with
    ``formula_attention`` it also reads the formula by attention at every step. Pointer logits
    are attention scores between the decoder state and one key per slot (from the role name the
    slot holds), as in Pointer Networks; the other tools' logits come from a linear head.
    """

    def __init__(self, cfg: ToolAgentConfig = ToolAgentConfig()):
        super().__init__()
        D = cfg.d_model
        self.cfg = cfg
        self.ctx_emb = nn.Embedding(CONTEXT_VOCAB, D)
        self.encoder = nn.GRU(D, D, batch_first=True)
        self.stage_emb = nn.Embedding(NUM_STAGES, D)
        self.init = nn.Linear(D, D)
        self.act_emb = nn.Embedding(NUM_ACTIONS + 1, D)  # + a start token
        self.decoder = nn.GRUCell(D, D)
        self.pi = nn.Linear(D, NUM_ACTIONS)
        self.v = nn.Linear(D, 1)
        self.key = nn.Linear(D, D)
        self.query = nn.Linear(D, D)
        self.f_key = nn.Linear(D, D)
        self.f_query = nn.Linear(D, D)

    def encode(self, context: torch.Tensor, stage: torch.Tensor) -> torch.Tensor:
        """context (B, L), stage (B,) -> initial decoder state (B, D)."""
        check_tensor(context, "context", ndim=2)
        e = self.ctx_emb(context)  # (B, L, D)
        if self.cfg.encoder == "gru":
            c = self.encoder(e)[1][0]  # (B, D): final hidden state, order-aware
        else:
            c = e.mean(1)  # (B, D): a bag of tokens, order lost
        if self.cfg.context_blind:
            c = torch.zeros_like(c)
        s = self.stage_emb(stage)  # (B, D)
        if self.cfg.batch_mixing_bug:
            # (B, D) + (B, 1, D) -> (B, B, D), mean over dim 1 = batch-mean context.
            h = (c + s.unsqueeze(1)).mean(1)  # (B, D)
        else:
            h = c + s
        return torch.tanh(self.init(h))

    def start(self, batch_size: int, device) -> torch.Tensor:
        return torch.full((batch_size,), NUM_ACTIONS, dtype=torch.int64, device=device)

    def keys(self, context: torch.Tensor) -> torch.Tensor:
        """context (B, L) -> one key per slot (B, 5, D), from the embedding of the role name it holds.

        The number is left out of the key: which slot to take depends on its role, not its value.
        """
        check_tensor(context, "context", ndim=2)
        k = self.key(self.ctx_emb(context[:, FORMULA_LEN::2]))  # (B, 5, D): the role tokens of the slots
        return torch.zeros_like(k) if self.cfg.context_blind else k

    def formula(self, context: torch.Tensor) -> torch.Tensor:
        """context (B, L) -> (B, FORMULA_LEN, D): the encoder GRU's outputs over the formula tokens."""
        check_tensor(context, "context", ndim=2)
        out = self.encoder(self.ctx_emb(context[:, :FORMULA_LEN]))[0]
        return torch.zeros_like(out) if self.cfg.context_blind else out

    def step(
        self,
        prev_action: torch.Tensor,
        h: torch.Tensor,
        keys: torch.Tensor | None = None,
        formula: torch.Tensor | None = None,
    ):
        """prev_action (B,), h (B, D), keys (B, 5, D), formula (B, 9, D) -> (logits (B, A), value (B,), h (B, D)).

        With ``formula_attention`` the decoder's input is the previous action's embedding plus an
        attention read of the formula, queried by the current state.
        """
        x = self.act_emb(prev_action)
        if self.cfg.formula_attention:
            if formula is None:
                raise ValueError("formula attention needs the formula's encoding (policy.formula(context))")
            w = torch.softmax(
                (self.f_key(formula) @ self.f_query(h).unsqueeze(2)).squeeze(2) / math.sqrt(h.shape[1]), 1
            )
            x = x + (w.unsqueeze(1) @ formula).squeeze(1)  # (B, D): the formula read at this step
        h = self.decoder(x, h)
        logits = self.pi(h)
        if self.cfg.pointer_attention:
            if keys is None:
                raise ValueError("pointer attention needs the slot keys (policy.keys(context))")
            scores = (keys @ self.query(h).unsqueeze(2)).squeeze(2) / math.sqrt(h.shape[1])  # (B, 5)
            logits = torch.cat([scores, logits[:, MAX_OPERANDS:]], 1)
        return logits, self.v(h).squeeze(1), h


class ToolRollout(NamedTuple):
    """actions, logp, entropy, value, reward, alive: (B, T); state: final EnvState."""

    actions: torch.Tensor
    logp: torch.Tensor
    entropy: torch.Tensor
    value: torch.Tensor
    reward: torch.Tensor
    alive: torch.Tensor
    state: EnvState


def rollout(
    policy: ToolPolicy, problem: Problem, *, greedy: bool = False, generator: torch.Generator | None = None
) -> ToolRollout:
    """Decode one program per problem and run it, step by step (a loop over time only)."""
    cfg = policy.cfg
    B = problem.stage.shape[0]
    if B < 1:
        raise ValueError("batch size must be >= 1")
    h = policy.encode(problem.context, problem.stage)
    keys = policy.keys(problem.context)
    formula = policy.formula(problem.context)
    prev = policy.start(B, h.device)
    state = initial_env_state(problem)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("actions", "logp", "entropy", "value", "reward", "alive")}
    for _ in range(cfg.max_steps):
        logits, value, h = policy.step(prev, h, keys, formula)
        if cfg.action_mask or not cfg.memory_tools or not cfg.reverse_subtract:
            if cfg.action_mask:
                mask = valid_actions(problem, state, cfg.memory_tools)
            else:  # only the removed tools are masked
                mask = torch.ones(B, NUM_ACTIONS, dtype=torch.bool, device=h.device)
                if not cfg.memory_tools:
                    mask[:, STO] = mask[:, RCL] = False
            if not cfg.reverse_subtract:
                mask[:, RSUB] = False
            mask = mask | state.done[:, None]  # finished episodes: any (ignored) action
            logits = logits.masked_fill(~mask, _MASK_LOGIT)
        logp_all = F.log_softmax(logits, -1)
        probs = logp_all.exp()
        if greedy:
            a = logits.argmax(-1)
        else:
            if generator is not None and generator.device != probs.device:
                # a CPU generator drives sampling on any device (the draw happens on the CPU)
                a = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(probs.device)
            else:
                a = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        alive = ~state.done
        state, r = env_step(
            problem, state, a, max_steps=cfg.max_steps, shaping=cfg.shaping, ordered_shaping=cfg.ordered_shaping
        )
        for k, v in (
            ("actions", a),
            ("logp", logp_all.gather(1, a[:, None]).squeeze(1)),
            ("entropy", -(probs * logp_all).sum(-1)),
            ("value", value),
            ("reward", r),
            ("alive", alive),
        ):
            out[k].append(v)
        prev = a
    s = {k: torch.stack(v, 1) for k, v in out.items()}  # (B, T) each
    return ToolRollout(s["actions"], s["logp"], s["entropy"], s["value"], s["reward"], s["alive"], state)


def vpg_loss(ro: ToolRollout, cfg: ToolAgentConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE with a learned baseline (vanilla policy gradient): Monte-Carlo reward-to-go, no bootstrapping.

    G_t = sum_{s >= t} r_s (gamma = 1, the whole rest of the episode); A_t = G_t - V_t with V_t a
    learned state-value baseline, detached for the policy term and normalised over the live steps
    of the batch; loss = -mean(logp * A) + c_v mean((V - G)^2) - c_e mean(H). The critic only
    regresses on G_t: no V(s_{t+1}) ever enters a target, so this is not actor-critic (A2C).
    Returns (loss, dict of floats).
    """
    m = ro.alive.float()  # (B, T)
    ret = ro.reward.flip(1).cumsum(1).flip(1)  # (B, T)
    adv = (ret - ro.value).detach()  # detach: the policy gradient must not train the critic
    n = m.sum().clamp(min=1.0)  # clamp: an all-dead batch would divide by zero
    mean = (adv * m).sum() / n
    std = (((adv - mean) ** 2 * m).sum() / n).sqrt()
    adv = (adv - mean) / (std + _ADV_EPS)
    pg = -(ro.logp * adv * m).sum() / n
    vloss = ((ro.value - ret) ** 2 * m).sum() / n
    ent = (ro.entropy * m).sum() / n
    loss = pg + cfg.value_coef * vloss - cfg.entropy_coef * ent
    return loss, dict(pg=pg.item(), value=vloss.item(), entropy=ent.item())


@torch.no_grad()
def evaluate_programs(policy: ToolPolicy, problem: Problem) -> torch.Tensor:
    """Greedy exact-answer indicator (B,) bool (accuracy, not reward)."""
    was = policy.training
    policy.eval()
    ro = rollout(policy, problem, greedy=True)
    policy.train(was)
    return ro.state.answered & (ro.state.answer == problem.target)


#: Smallest share of a solved stage under the failure-weighted curriculum (keeps revisiting it).
_FAILURE_FLOOR = 0.05


def stage_mix(unlocked: int, cfg: ToolAgentConfig, last_acc: Sequence[float] | None = None) -> list[float]:
    """Probabilities of drawing each stage for the next batch, given the highest unlocked stage.

    Plain curriculum: all of the batch from stage 0 until stage 1 is unlocked, then
    ``cfg.newest_weight`` from the newest unlocked stage and the rest shared by the earlier ones;
    failure-weighted: proportional to ``max(1 - last_acc[s], 0.05)`` over the unlocked stages.
    """
    if not cfg.curriculum:
        return [1.0 / NUM_STAGES] * NUM_STAGES
    if cfg.failure_weighted and last_acc is not None and unlocked > 0:
        err = [max(1.0 - a, _FAILURE_FLOOR) if s <= unlocked else 0.0 for s, a in enumerate(last_acc)]
        return [e / sum(err) for e in err]
    if unlocked == 0:
        return [1.0] + [0.0] * (NUM_STAGES - 1)
    w = [(1 - cfg.newest_weight) / unlocked] * unlocked + [cfg.newest_weight]
    return w + [0.0] * (NUM_STAGES - 1 - unlocked)


def train_agent(
    cfg: ToolAgentConfig = ToolAgentConfig(),
    *,
    device: torch.device | str | None = None,
    progress: bool = False,
    log: Callable[[str], object] | None = None,
    on_check: Callable[[int, ToolPolicy], object] | None = None,
) -> dict:
    """Train a ToolPolicy with REINFORCE with a learned baseline and the curriculum; returns a dict of tensors.

    Returns {"state_dict", "curve" (E, 1 + NUM_STAGES): update index then greedy accuracy per
    stage on fresh training-split problems, "unlocked" (E,), "updates", "seconds"}.
    ``progress``: show a progress bar over the updates; ``log``: optional print function;
    ``on_check``: called as ``on_check(update, policy)`` after every curriculum check, for
    diagnostics that must not steer training (it must not draw from the global generator; time
    spent in it is not counted in "seconds").

    Seeding: ``torch.manual_seed(cfg.seed)`` before the policy is built fixes its parameters;
    every training batch (stage mix, problems, sampled actions) is drawn from
    ``generator(cfg.seed, "tool_agent/train-draws")`` and the curriculum checks' problems from
    ``generator(cfg.seed, "tool_agent/curriculum-checks")``.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    torch.manual_seed(cfg.seed)
    gen = make_generator(cfg.seed, TOOL_TRAIN_DRAWS)
    eval_gen = make_generator(cfg.seed, TOOL_CHECK_DRAWS)
    policy = ToolPolicy(cfg).to(device)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    unlocked = 0 if cfg.curriculum else NUM_STAGES - 1
    curve, unl, last_acc = [], [], None
    start = time.perf_counter()
    bar = progress_bar(total=cfg.max_updates, enabled=progress, desc="policy-gradient updates")
    u = 0
    for u in range(1, cfg.max_updates + 1):
        w = torch.tensor(stage_mix(unlocked, cfg, last_acc))
        counts = torch.bincount(torch.multinomial(w, cfg.batch_size, True, generator=gen), minlength=NUM_STAGES)
        prob = cat_problems(
            sample_problems(s, int(c), gen, device=device) for s, c in enumerate(counts.tolist()) if c > 0
        )
        ro = rollout(policy, prob, generator=gen)
        loss, _ = vpg_loss(ro, cfg)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        opt.step()
        bar.update(1)
        if u % cfg.eval_every == 0 or u == cfg.max_updates:
            accs = [
                evaluate_programs(policy, sample_problems(s, cfg.eval_size, eval_gen, device=device))
                .float()
                .mean()
                .item()
                for s in range(NUM_STAGES)
            ]
            curve.append([u] + accs)
            last_acc = accs
            unl.append(unlocked)
            if log is not None:
                log(
                    f"update {u}: unlocked {unlocked} acc "
                    + " ".join(f"{a:.3f}" for a in accs)
                    + f" ({time.perf_counter() - start:.0f}s)"
                )
            if on_check is not None:
                paused = time.perf_counter()
                with torch.no_grad():
                    on_check(u, policy)
                start += time.perf_counter() - paused  # the diagnostic's time is not training time
            if cfg.curriculum and unlocked < NUM_STAGES - 1 and accs[unlocked] >= cfg.promote_at:
                unlocked += 1
            if min(accs) >= cfg.stop_at:
                break
    bar.close()
    return {
        "state_dict": policy.state_dict(),
        "curve": torch.tensor(curve),
        "unlocked": torch.tensor(unl),
        "updates": u,
        "seconds": time.perf_counter() - start,
    }


#: Seed of the held-out evaluation sets (never used for training: the split is disjoint anyway).
HELD_OUT_SEED = 2024


def held_out_set(stage: int, n: int = 1000, device: torch.device | str | None = None, split: str = "test") -> Problem:
    """The fixed held-out evaluation set of a stage: ``n`` problems of ``split`` ("test" or "test-pattern").

    Drawn from ``generator(HELD_OUT_SEED, "tool_agent/held-out", stage)`` (seed ``2024 + stage``)
    for "test" and from index ``stage + 3`` for "test-pattern".
    """
    if split not in SPLITS[1:]:
        raise ValueError(f"split must be 'test' or 'test-pattern', got {split!r}")
    index = _check_stage(stage) + (NUM_STAGES if split == "test-pattern" else 0)
    gen = make_generator(HELD_OUT_SEED, TOOL_HELD_OUT_DRAWS, index)
    return sample_problems(stage, n, gen, split=split, device=device)


# ----------------------------------------------------------------------------- program text
def parse_program(text: str) -> list[int]:
    """'P0 MUL P1 ANS' -> action ids; unknown tool names raise ValueError."""
    ids = []
    for name in text.split():
        if name.upper() not in ACTION_NAMES:
            raise ValueError(f"unknown tool token {name!r}; known: {', '.join(ACTION_NAMES)}")
        ids.append(ACTION_NAMES.index(name.upper()))
    return ids
