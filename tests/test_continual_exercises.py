"""Notebook 05's exercise 2 check (the EWC penalty): the notebook's answer passes, named mistakes are named."""

from __future__ import annotations

from pathlib import Path

import nbformat
import torch

from memtutor import continual as cl
from memtutor.exercises import ex05

ROOT = Path(__file__).resolve().parents[1]


def _solution(name: str):
    nb = nbformat.read(ROOT / "notebooks" / "05_continual_agent.ipynb", as_version=4)
    ns: dict = {"torch": torch}
    for cell in nb.cells:
        if cell.cell_type == "code" and "solution" in cell.metadata.get("tags", []) and f"def {name}(" in cell.source:
            exec(compile(cell.source, "05", "exec"), ns)
    return ns[name]


def _rejects(result, *words: str) -> None:
    assert not result, f"a wrong answer passed: {result}"
    for w in words:
        assert w in result.message, f"expected {w!r} in the message: {result.message}"


def test_ex05_ewc_penalty():
    assert ex05.check_ewc_penalty(_solution("ewc_penalty"))
    assert ex05.check_ewc_penalty(cl.ewc_penalty)

    def stub(*args):
        raise NotImplementedError("the student's stub")

    _rejects(ex05.check_ewc_penalty(stub), "NotImplementedError")
    _rejects(ex05.check_ewc_penalty(lambda p, a, f: sum((f[k] * (v - a[k]) ** 2).sum() for k, v in p.items())), "1/2")
    _rejects(
        ex05.check_ewc_penalty(lambda p, a, f: 0.5 * sum((f[k] * (v - a[k]).abs()).sum() for k, v in p.items())),
        "squared",
    )
    _rejects(ex05.check_ewc_penalty(lambda p, a, f: 0.5 * sum(((v - a[k]) ** 2).sum() for k, v in p.items())), "Fisher")
    _rejects(
        ex05.check_ewc_penalty(lambda p, a, f: 0.5 * next((f[k] * (v - a[k]) ** 2).sum() for k, v in p.items())),
        "every parameter tensor",
    )
    _rejects(
        ex05.check_ewc_penalty(lambda p, a, f: float(cl.ewc_penalty(p, a, f).detach())),
        "0-d tensor",
    )
    _rejects(ex05.check_ewc_penalty(lambda p, a, f: cl.ewc_penalty(p, a, f).detach()), "connected")
