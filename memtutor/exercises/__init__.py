"""Checks for the notebooks' exercises.

Each notebook's exercises have a *solution* cell (tagged ``solution``; the student edition
replaces it with a stub) and a *check* cell (tagged ``check``) that calls a function from the
module of that notebook here (``memtutor.exercises.ex01`` for notebook 01, ...). A check
returns a :class:`CheckResult`, which prints a clear verdict and, when the answer is wrong,
what is wrong, without revealing the solution. Check cells end with ``assert result``
so that a broken solution fails the teacher edition's CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

__all__ = ["CheckResult", "passed", "failed", "record_calls"]


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one exercise check; truthy when the answer is right."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        mark = "Correct" if self.ok else "Not yet"
        return f"{mark}: {self.message}"

    def _repr_markdown_(self) -> str:
        mark = "**Correct**" if self.ok else "**Not yet**"
        return f"{mark}: {self.message}"


def passed(message: str = "well done.") -> CheckResult:
    return CheckResult(True, message)


def failed(message: str) -> CheckResult:
    return CheckResult(False, message)


@contextmanager
def record_calls(module: ModuleType, name: str) -> Iterator[list[int]]:
    """Within the block, ``module.name`` is wrapped so that each call appends to the yielded list.

    A check uses it to tell a learner who calls the package's own answer (``memtutor.meta.maml_adapt``
    for "write one inner step") that the exercise is to write it.
    """
    original = getattr(module, name)
    calls: list[int] = []

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    setattr(module, name, spy)
    try:
        yield calls
    finally:
        setattr(module, name, original)
