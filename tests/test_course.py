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


def test_stub_keeps_the_signature_and_hint_and_replaces_the_answer_region():
    solution = (
        "def double(v):\n"
        '    """v -> 2 v."""\n'
        "    # Hint: multiply by two.\n"
        f"    {course.BEGIN_SOLUTION}\n"
        "    return v * 2 + 0  # secret_solution_line\n"
        f"    {course.END_SOLUTION}\n"
        "print(double(21))"
    )
    assert course.answer_lines(solution) == ["    return v * 2 + 0  # secret_solution_line"]
    stub = course.stub_source(solution)
    assert "secret_solution_line" not in stub and "SOLUTION" not in stub
    assert "def double(v):" in stub and '"""v -> 2 v."""' in stub and "# Hint: multiply by two." in stub
    assert "    raise NotImplementedError('multiply by two.')" in stub, "the raise keeps the region's indentation"
    ns: dict = {}
    with pytest.raises(NotImplementedError, match="multiply by two"):
        exec(compile(stub, "<stub>", "exec"), ns)
    assert callable(ns["double"])
    with pytest.raises(ValueError, match="never closed"):
        course.answer_lines(f"{course.BEGIN_SOLUTION}\nx = 1")


def test_exercises_need_a_star_rating():
    nb = _toy()
    with pytest.raises(ValueError, match="follows no exercise statement"):
        course.exercises(nb)
    nb.cells[2].source = "## Exercise 1: double it"
    with pytest.raises(ValueError, match="star rating"):
        course.exercises(nb)
    nb.cells[2].source = "## Exercise 1: double it (★)"
    (ex,) = course.exercises(nb)
    assert (ex.number, ex.stars, ex.solution, ex.checks) == (1, 1, 3, (4,))
    graded = course.nbgrader_notebook(nb, "01")
    meta = [c.metadata["nbgrader"] for c in graded.cells]
    assert meta[3]["solution"] and not meta[3]["locked"] and course.BEGIN_SOLUTION in graded.cells[3].source
    assert meta[4]["grade"] and meta[4]["locked"] and meta[4]["points"] == 1
    assert all(m["locked"] for i, m in enumerate(meta) if i != 3), "lesson cells are read-only"
    assert graded.cells[1].outputs and not graded.cells[4].outputs, "lesson outputs kept, exercise outputs cleared"
    assert len({m["grade_id"] for m in meta}) == len(meta)


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
    with pytest.raises(ValueError, match="outside the notebooks"):
        course.build_nbgrader_course(tmp_path, tmp_path / "notebooks" / "course")
    with pytest.raises(ValueError, match="unknown notebooks"):
        course.build_nbgrader_course(tmp_path, tmp_path / "course", ["09_nothing"])
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
            for line in course.answer_lines(cell.source):
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


def _defined_names(solution: str) -> list[str]:
    """What a solution cell asks the learner to define: its top-level functions and '# Define NAME' lines."""
    names = re.findall(r"^def (\w+)\(", solution, re.M)
    for line in re.findall(r"^# Define (.+?):", solution, re.M):
        names += re.findall(r"\w+", line.replace(" and ", " "))
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_stub_has_a_signature_a_hint_and_the_names_of_statement_and_check(path):
    nb = nbformat.read(path, as_version=4)
    exs = course.exercises(nb)  # raises if a statement has no star rating
    assert exs, f"{path.name} has no exercise statements"
    for ex in exs:
        statement = nb.cells[ex.statement].source
        if not ex.checks:
            assert ex.stars == 3 and "open" in statement, f"{path.name} exercise {ex.number}: unchecked but not open"
            continue
        assert ex.solution is not None, f"{path.name} exercise {ex.number} has a check but no solution cell"
        solution = nb.cells[ex.solution].source
        assert course.BEGIN_SOLUTION in solution and course.END_SOLUTION in solution, (
            f"{path.name} exercise {ex.number}: mark the answer with BEGIN/END SOLUTION"
        )
        hint = course.solution_hint(solution)
        assert hint != course.DEFAULT_HINT and len(hint) > 20, f"{path.name} exercise {ex.number} has no real hint"
        names = _defined_names(solution)
        assert names, f"{path.name} exercise {ex.number}: the stub names nothing to define"
        stub = course.stub_source(solution)
        checks = "\n".join(nb.cells[j].source for j in ex.checks)
        for name in names:
            assert f"`{name}" in statement, f"{path.name} exercise {ex.number}: {name} is not in the statement"
            assert name in stub, f"{path.name} exercise {ex.number}: {name} is not in the stub"
            assert re.search(rf"\b{name}\b", checks), f"{path.name} exercise {ex.number}: the check ignores {name}"


def test_exercise_modules_export_no_reference_solution():
    import importlib

    for n in range(1, 10):
        module = importlib.import_module(f"memtutor.exercises.ex{n:02d}")
        own = [a for a in dir(module) if getattr(getattr(module, a), "__module__", None) == module.__name__]
        suspicious = [a for a in own if re.search(r"reference|solution|answer", a, re.I)]
        assert not suspicious, f"memtutor.exercises.ex{n:02d} exposes {suspicious}"


def test_student_edition_installs_on_its_own(edition):
    for name in ("pyproject.toml", "constraints.txt", "run.sh", "README.md", "LICENSE", "memtutor/__init__.py"):
        assert (edition / name).exists(), f"the student edition lacks {name}"
    assert not list(edition.rglob("docs")), "teacher documents must not ship in the student edition"
    readme = (edition / "README.md").read_text()
    assert "./run.sh lab" in readme and "run.sh test" not in readme
    assert (edition / "notebooks" / "checkpoints").is_dir()


@pytest.mark.parametrize("command", ["list", "build", "nbgrader"])
def test_course_kit_says_where_the_notebooks_are_missing(tmp_path, capsys, command):
    """An installed package carries no notebooks: the kit must say so, not print nothing or fail later."""
    args = [command, "--src", str(tmp_path)] + ([] if command == "list" else ["--out", str(tmp_path / "out")])
    assert course.main(args) == 2
    assert "no notebooks" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
