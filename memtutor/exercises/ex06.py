"""Checks for notebook 06 (tool-using agent) exercises.

Each exercise asks for a function ``ops -> program`` (a list of tool names such as
``["P0", "ADD", "P1", "ANS"]``) and the check runs it through the environment's reference
semantics on many random problems.
"""

from __future__ import annotations

import random
from itertools import product

from memtutor.exercises import CheckResult, failed, passed
from memtutor.tool_agent import ACTION_NAMES, OP_SYMBOLS, parse_program, reference_run_program

__all__ = ["check_stage1_program", "check_memory_free_program", "check_product_stage_program"]

_OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}


def _program_ids(fn, ops):
    try:
        prog = fn(tuple(ops))
    except Exception as exc:  # the student's code raised: say which input
        return None, f"your function raised {type(exc).__name__}: {exc} for operators {ops}"
    if isinstance(prog, str):
        prog = prog.split()
    try:
        return parse_program(" ".join(str(p) for p in prog)), None
    except ValueError as exc:
        return None, f"{exc} (operators {ops})"


def _check(fn, op_sets, n_numbers, stage, target_fn, forbid=(), trials=20, seed=0) -> CheckResult:
    if not callable(fn):
        return failed("pass your function itself (not its result).")
    rng = random.Random(seed)
    for ops in op_sets:
        ids, err = _program_ids(fn, ops)
        if err:
            return failed(err)
        used = {ACTION_NAMES[i] for i in ids} & set(forbid)
        if used:
            return failed(f"the program for operators {ops} uses {sorted(used)}, which this exercise forbids.")
        for _ in range(trials):
            nums = [rng.randint(1, 99) for _ in range(n_numbers)]
            target = target_fn(nums, ops)
            r = reference_run_program(nums, stage, target, ids)
            if r["error"]:
                return failed(
                    f"for operators {ops} the program makes an invalid tool call "
                    f"(after {r['steps']} actions): check the tool rules."
                )
            if not r["answered"]:
                return failed(f"for operators {ops} the program never reaches ANS within the step limit.")
            if not r["correct"]:
                return failed(
                    f"for operators {ops} and numbers {nums} the program answers {r['answer']}, expected {target}."
                )
    return passed(f"correct on {len(op_sets)} operator combinations x {trials} random problems.")


def check_stage1_program(fn) -> CheckResult:
    """``fn(ops)`` with ops = (o1, o2, o3) symbols must solve ``((a o1 b) o2 c) o3 d``."""

    def target(n, o):
        return _OPS[o[2]](_OPS[o[1]](_OPS[o[0]](n[0], n[1]), n[2]), n[3])

    return _check(fn, list(product(OP_SYMBOLS, repeat=3)), 4, 1, target)


def check_memory_free_program(fn) -> CheckResult:
    """``fn(ops)`` with ops = (o1, o2) in {+, -} must solve stage 2 without STO or RCL."""

    def target(n, o):
        return _OPS[o[1]](_OPS[o[0]](n[0], n[1]), n[2]) - n[3] * n[4]

    return _check(fn, list(product("+-", repeat=2)), 5, 2, target, forbid=("STO", "RCL"))


def check_product_stage_program(fn) -> CheckResult:
    """``fn(ops)`` with ops = (o1, o2) must solve the new stage ``(a o1 b) * (c o2 d)``."""

    def target(n, o):
        return _OPS[o[0]](n[0], n[1]) * _OPS[o[1]](n[2], n[3])

    return _check(fn, list(product(OP_SYMBOLS, repeat=2)), 4, 1, target)
