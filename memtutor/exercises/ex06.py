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

__all__ = ["check_right_nested_program", "check_memory_free_program", "check_product_stage_program"]

_OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}


def _program_ids(fn, ops):
    try:
        prog = fn(tuple(ops))
    except Exception as exc:  # the student's code raised: say which input
        return None, f"your function raised {type(exc).__name__}: {exc} for operators {ops}"
    if prog is None:
        return None, None
    if isinstance(prog, str):
        prog = prog.split()
    try:
        return parse_program(" ".join(str(p) for p in prog)), None
    except ValueError as exc:
        return None, f"{exc} (operators {ops})"


def _check(fn, op_sets, n_numbers, stage, target_fn, forbid=(), trials=20, seed=0, mistakes=()) -> CheckResult:
    """Run ``fn(ops)``'s program on random problems; ``mistakes`` are (description, wrong_target_fn)
    pairs: an answer that equals a named mistake's value gets that mistake's message."""
    if not callable(fn):
        return failed("pass your function itself (not its result).")
    rng = random.Random(seed)
    for ops in op_sets:
        ids, err = _program_ids(fn, ops)
        if err:
            return failed(err)
        if ids is None:
            return failed(f"for operators {ops} you return None, but a program exists.")
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
                for message, wrong in mistakes:
                    if wrong(nums, ops) == r["answer"] != target:
                        return failed(f"for operators {ops}: {message}")
                return failed(
                    f"for operators {ops} and numbers {nums} the program answers {r['answer']}, expected {target}."
                )
    return passed(f"correct on {len(op_sets)} operator combinations x {trials} random problems.")


def check_right_nested_program(fn) -> CheckResult:
    """``fn(ops)`` with ops = (o1, o2) symbols must solve ``a o1 (b o2 c)`` (three numbers)."""

    def target(n, o):
        return _OPS[o[0]](n[0], _OPS[o[1]](n[1], n[2]))

    def swapped(n, o):
        return _OPS[o[0]](_OPS[o[1]](n[1], n[2]), n[0])

    mistakes = [("your program computes (b o2 c) o1 a: a - x is not x - a (RSUB subtracts the other way).", swapped)]
    return _check(fn, list(product(OP_SYMBOLS, repeat=2)), 3, 0, target, forbid=("STO", "RCL"), mistakes=mistakes)


#: The operator pairs of (a o1 b) - (c o2 d) that no memory-free program solves for all numbers.
_NEEDS_MEMORY = {("*", "*")}


def check_memory_free_program(fn) -> CheckResult:
    """``fn(ops)`` with ops = (o1, o2) symbols: a program without STO/RCL solving ``(a o1 b) - (c o2 d)``,
    or None when none exists for all numbers."""
    if not callable(fn):
        return failed("pass your function itself (not its result).")
    pairs = list(product(OP_SYMBOLS, repeat=2))
    for ops in pairs:
        try:
            prog = fn(tuple(ops))
        except Exception as exc:  # noqa: BLE001
            return failed(f"your function raised {type(exc).__name__}: {exc} for operators {ops}")
        if tuple(ops) in _NEEDS_MEMORY and prog is not None:
            return failed(
                f"for operators {ops}, (a o1 b) - (c o2 d) holds two products that both need the accumulator: "
                "no memory-free program solves it for all numbers; return None."
            )
        if tuple(ops) not in _NEEDS_MEMORY and prog is None:
            return failed(f"for operators {ops} a memory-free program exists: find it.")
    solvable = [p for p in pairs if tuple(p) not in _NEEDS_MEMORY]

    def target(n, o):
        return _OPS[o[0]](n[0], n[1]) - _OPS[o[1]](n[2], n[3])

    def no_flip(n, o):
        return _OPS[o[1]](_OPS[o[0]](n[0], n[1]) - n[2], n[3])

    mistakes = [("the minus in front of the bracket applies to d as well: - (c + d) = - c - d.", no_flip)]
    result = _check(fn, solvable, 4, 1, target, forbid=("STO", "RCL"), mistakes=mistakes)
    if not result:
        return result
    # the message names no pair and no count: those are what the exercise asks for
    return passed("a memory-free program for every operator pair that has one, and None for every pair that has none.")


def check_product_stage_program(fn) -> CheckResult:
    """``fn(ops)`` with ops = (o1, o2) must solve the new stage ``(a o1 b) * (c o2 d)``."""

    def target(n, o):
        return _OPS[o[0]](n[0], n[1]) * _OPS[o[1]](n[2], n[3])

    return _check(fn, list(product(OP_SYMBOLS, repeat=2)), 4, 1, target)
