"""The student edition runs: every notebook executes up to its exercises, and only the stubs raise.

Each student notebook is executed from a fresh kernel, cell by cell, with nbclient. Cells outside the
exercises must run without error; a solution stub must raise ``NotImplementedError``; a check cell
after a stub must fail (the learner has not answered yet, so it can never report success). This is
a full run of every notebook, as a learner's first run would be.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from memtutor import course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 600


@pytest.mark.slow  # executes every notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_student_edition_executes_up_to_its_exercises(path, tmp_path):
    nb = course.student_notebook(nbformat.read(path, as_version=4))
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    stubs = checks = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = set(cell.metadata.get("tags", []))
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if course.SOLUTION_TAG in tags:
            stubs += 1  # a stub defines functions that raise, or raises itself
            assert not errors or errors[0].ename == "NotImplementedError", (
                f"{path.name} cell {i}: a solution stub may only raise NotImplementedError, got {errors}"
            )
        elif course.CHECK_TAG in tags:
            checks += 1
            assert errors, f"{path.name} cell {i}: a check cell passed although its exercise is unanswered"
            # unanswered: the stub left a name undefined, or the check reported "Not yet" and its assert fired
            assert errors[0].ename in ("NameError", "AssertionError"), (
                f"{path.name} cell {i}: a check cell failed with {errors[0].ename}: {errors[0].evalue}"
            )
        else:
            assert not errors, (
                f"{path.name} cell {i} fails in the student edition: {errors[0].ename}: {errors[0].evalue}"
            )
    assert stubs >= 1 and checks >= stubs
