"""The course kit: student editions built from the teacher edition (the repository)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from memtutor import course
from memtutor.exercises import CheckResult, failed, passed

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cell(source, tags=(), outputs=None, count=None):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = list(tags)
    cell.outputs = outputs or []
    cell.execution_count = count
    return cell


def _toy():
    nb = nbformat.v4.new_notebook()
    out = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Toy"),
        _cell("x = 41 + 1\nprint(x)", outputs=out, count=1),
        nbformat.v4.new_markdown_cell("## Exercise: double it"),
        _cell(
            "# Hint: multiply by two.\ndef double(v):\n    return v * 2 + 0  # secret_solution_line",
            tags=["solution"],
            outputs=out,
            count=2,
        ),
        _cell("result = check_double(double)\nassert result", tags=["check"], outputs=out, count=3),
    ]
    return nb


def test_student_notebook_stubs_solutions_and_clears_exercise_outputs():
    teacher = _toy()
    student = course.student_notebook(teacher)
    code = [c for c in student.cells if c.cell_type == "code"]
    assert code[0].outputs and code[0].execution_count == 1, "non-exercise cells keep their outputs"
    stub = code[1]
    assert "secret_solution_line" not in stub.source and "return v * 2" not in stub.source
    assert "raise NotImplementedError('multiply by two.')" in stub.source
    assert stub.outputs == [] and stub.execution_count is None
    assert code[2].source == teacher.cells[4].source, "check cells are kept"
    assert code[2].outputs == [] and code[2].execution_count is None
    # the teacher's notebook is untouched
    assert "secret_solution_line" in teacher.cells[3].source and teacher.cells[3].outputs


def test_stub_without_hint_uses_the_default_hint_and_raises():
    src = course.stub_source("y = 3")
    assert "y = 3" not in src
    with pytest.raises(NotImplementedError, match="Write your answer"):
        exec(compile(src, "<stub>", "exec"), {})


def test_build_refuses_bad_locations(tmp_path):
    with pytest.raises(ValueError, match="no notebooks"):
        course.build_student_edition(tmp_path, tmp_path / "out")
    (tmp_path / "notebooks").mkdir()
    nbformat.write(_toy(), tmp_path / "notebooks" / "01_toy.ipynb")
    with pytest.raises(ValueError, match="outside the notebooks"):
        course.build_student_edition(tmp_path, tmp_path / "notebooks" / "student")
    written = course.build_student_edition(tmp_path, tmp_path / "out")
    assert [p.name for p in written] == ["01_toy.ipynb"]
    assert course.exercise_counts(tmp_path / "notebooks") == {"01_toy.ipynb": 1}


def test_check_result_reads_clearly():
    assert bool(passed()) and not bool(failed("the shape is (3,), expected (2, 3)."))
    assert repr(failed("wrong sign")) == "Not yet: wrong sign"
    assert repr(CheckResult(True, "ok")).startswith("Correct")


# ---------------------------------------------------------------- the real collection


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("course") / "student_edition"
    proc = subprocess.run(
        [sys.executable, "-m", "memtutor.course", "build", "--src", str(ROOT), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def _solution_lines(path: Path) -> list[str]:
    """Distinctive lines of a notebook's solution cells: not comments, imports or short lines, and not
    lines the lesson itself shows outside the solutions (those are part of the lesson, not a leak)."""
    nb = nbformat.read(path, as_version=4)
    solution, lesson = [], []
    for cell in nb.cells:
        if cell.cell_type == "code" and course.SOLUTION_TAG in cell.metadata.get("tags", []):
            for line in cell.source.splitlines():
                s = line.strip()
                if len(s) >= 25 and not s.startswith("#") and not re.match(r"^(import|from) ", s):
                    solution.append(s)
        else:
            lesson.append(cell.source)
    lesson_text = "\n".join(lesson)
    return [s for s in solution if s not in lesson_text]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_exercise_has_a_solution_and_a_check(path):
    nb = nbformat.read(path, as_version=4)
    tags = [set(c.metadata.get("tags", [])) for c in nb.cells if c.cell_type == "code"]
    n_sol = sum(course.SOLUTION_TAG in t for t in tags)
    n_chk = sum(course.CHECK_TAG in t for t in tags)
    assert n_sol >= 1, f"{path.name} has no exercise with a solution cell"
    assert n_chk >= n_sol, f"{path.name}: {n_sol} solution cells but only {n_chk} check cells"
    for cell in nb.cells:
        if cell.cell_type == "code" and course.CHECK_TAG in cell.metadata.get("tags", []):
            assert "memtutor.exercises" in cell.source or re.search(r"\bex\d\d\b|check_", cell.source), (
                f"{path.name}: a check cell does not call a check from memtutor.exercises"
            )
            assert re.search(r"^assert ", cell.source, re.M), f"{path.name}: a check cell does not assert"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_teacher_edition_passes_every_check_cell(path):
    """The committed outputs of the check cells say Correct (nbval re-runs them as well)."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and course.CHECK_TAG in cell.metadata.get("tags", []):
            assert cell.execution_count is not None, f"{path.name} cell {i}: check cell not executed"
            assert not any(o.output_type == "error" for o in cell.outputs), f"{path.name} cell {i} failed"
            shown = "".join(
                o.get("text", "") + o.get("data", {}).get("text/plain", "") + o.get("data", {}).get("text/markdown", "")
                for o in cell.outputs
            )
            assert "Correct" in shown and "Not yet" not in shown, (
                f"{path.name} cell {i}: the check cell does not show 'Correct': {shown[:200]!r}"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_student_edition_leaks_no_solution(edition, path):
    student = (edition / "notebooks" / path.name).read_text()
    leaked = [line for line in _solution_lines(path) if line in student]
    assert not leaked, f"{path.name}: the student edition contains solution lines: {leaked[:3]}"
    nb = nbformat.read(edition / "notebooks" / path.name, as_version=4)
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "code" and tags & {course.SOLUTION_TAG, course.CHECK_TAG}:
            assert cell.outputs == [], f"{path.name}: an exercise cell kept its output"
        if course.SOLUTION_TAG in tags:
            assert "raise NotImplementedError" in cell.source
