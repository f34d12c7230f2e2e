"""Checks for the notebooks' exercises.

Each notebook's exercises have a *solution* cell (tagged ``solution``; the student edition
replaces it with a stub) and a *check* cell (tagged ``check``) that calls a function from the
module of that notebook here (``memtutor.exercises.ex01`` for notebook 01, ...). A check
returns a :class:`CheckResult`, which prints a clear verdict and, when the answer is wrong,
what is wrong, without revealing the solution. Check cells end with ``assert result``
so that a broken solution fails the teacher edition's CI.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckResult", "passed", "failed"]


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
