"""Course kit: the student edition and an nbgrader course built from the teacher edition.

The repository is the teacher edition: every exercise has a markdown statement rated with stars
(★ to ★★★), a solution cell (tagged ``solution``) and, unless it is open-ended, a check cell (tagged
``check``). In a solution cell, the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
are the answer; everything around them (the function's signature and docstring, a ``# Hint:`` line,
the names to define) is what the learner starts from. nbgrader uses the same delimiters.

Usage::

    python -m memtutor.course build                  # writes ./student_edition/
    python -m memtutor.course build --out DIR
    python -m memtutor.course nbgrader --out DIR     # an nbgrader course folder (one assignment per notebook)
    python -m memtutor.course list                   # exercises per notebook, with their stars

The student edition replaces every answer region by ``raise NotImplementedError(<hint>)``, clears the
outputs of exercise cells and keeps everything else, committed outputs included; it carries the
package's source and ``pyproject.toml``, so it installs on its own. The nbgrader course marks answer
cells, locks every other cell, grades every check cell with the exercise's stars as points, and keeps
the lessons' outputs in the released notebooks.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import nbformat
    from nbconvert.preprocessors import Preprocessor, TagRemovePreprocessor
except ImportError as exc:  # the course kit is an extra: the lessons themselves do not need nbconvert
    raise ImportError(
        "memtutor.course needs nbconvert and nbformat; install them with: pip install 'memtutor[course]'"
    ) from exc

__all__ = [
    "SOLUTION_TAG",
    "CHECK_TAG",
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "CELL_TIMEOUT_S",
    "Exercise",
    "StubSolutionsPreprocessor",
    "stub_source",
    "solution_hint",
    "answer_lines",
    "exercises",
    "student_notebook",
    "nbgrader_notebook",
    "build_student_edition",
    "build_nbgrader_course",
    "exercise_counts",
    "main",
]

SOLUTION_TAG = "solution"
CHECK_TAG = "check"
BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
STUB_MARKER = "# EXERCISE"
DEFAULT_HINT = "Write your answer here; the exercise statement above says what to define."
#: nbgrader's per-cell timeout. The collection's longest cell (notebook 09's linear probe) took
#: 24 s on a loaded 2-core machine (docs/teaching.md); 300 s leaves room for a slow, shared JupyterHub node.
CELL_TIMEOUT_S = 300
_STARS = re.compile(r"\((★{1,3})")
_EXERCISE = re.compile(r"Exercise\s+(\d+)")
_CLONE = Path(__file__).resolve().parents[1]
#: The collection's root by default: the clone this package is imported from, else the current folder
#: (an installed package carries no notebooks: run the kit where the collection's notebooks/ folder is).
_ROOT = _CLONE if (_CLONE / "notebooks").is_dir() else Path(".")


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def solution_hint(solution: str) -> str:
    """The text of a solution cell's ``# Hint:`` lines (joined), or a default hint when it has none."""
    hints = [s.strip()[len("# Hint:") :].strip() for s in solution.splitlines() if s.strip().startswith("# Hint:")]
    return " ".join(hints) if hints else DEFAULT_HINT


def answer_lines(solution: str) -> list[str]:
    """The lines of a solution cell that are the answer: those inside the BEGIN/END SOLUTION regions,
    or every line when the cell has no region. Raises ``ValueError`` on an unclosed region."""
    lines = solution.splitlines()
    if not any(BEGIN_SOLUTION in s for s in lines):
        return lines
    out, inside = [], False
    for line in lines:
        if BEGIN_SOLUTION in line:
            inside = True
        elif END_SOLUTION in line:
            inside = False
        elif inside:
            out.append(line)
    if inside:
        raise ValueError(f"solution: a {BEGIN_SOLUTION!r} region is never closed")
    return out


def stub_source(solution: str) -> str:
    """The learner's stub for a solution cell.

    Each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region becomes ``raise NotImplementedError(hint)``
    at the region's indentation; the lines around the regions (signature, docstring, hint) are kept.
    A cell without a region is replaced whole by its ``# Hint:`` lines and the raise.
    """
    hint = solution_hint(solution)
    header = f"{STUB_MARKER}: replace the NotImplementedError with your answer, then run the check cell below."
    lines = solution.splitlines()
    if not any(BEGIN_SOLUTION in s for s in lines):
        return "\n".join(
            [header]
            + [f"# Hint: {h}" for h in [hint] if hint != DEFAULT_HINT]
            + [f"raise NotImplementedError({hint!r})"]
        )
    answer_lines(solution)  # validates the regions
    out, inside = [header], False
    for line in lines:
        if BEGIN_SOLUTION in line:
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}raise NotImplementedError({hint!r})")
        elif END_SOLUTION in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


class StubSolutionsPreprocessor(Preprocessor):
    """Replace the answer of every cell tagged ``solution`` by a stub raising ``NotImplementedError``."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and SOLUTION_TAG in _tags(cell):
            cell.source = stub_source(cell.source)
            cell.outputs = []
            cell.execution_count = None
        return cell, resources


def _clear_exercise_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)  # a deep copy
    clear = TagRemovePreprocessor(remove_all_outputs_tags={SOLUTION_TAG, CHECK_TAG}, enabled=True)
    nb, _ = clear.preprocess(nb, {})
    for cell in nb.cells:  # TagRemovePreprocessor clears outputs but keeps the prompt number
        if cell.cell_type == "code" and _tags(cell) & {SOLUTION_TAG, CHECK_TAG}:
            cell.execution_count = None
    return nb


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return the student edition of one notebook (the input is not modified)."""
    nb = _clear_exercise_outputs(nb)
    nb, _ = StubSolutionsPreprocessor().preprocess(nb, {})
    return nb


@dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook: its number, its stars (the points of its check), and cell indices."""

    number: int
    stars: int
    statement: int
    solution: int | None
    checks: tuple[int, ...]


def exercises(nb: nbformat.NotebookNode) -> list[Exercise]:
    """The exercises of a notebook, from its markdown statements ("Exercise N ... (★★ ...)").

    A statement's solution and check cells are the tagged cells after it, up to the next statement.
    Raises ``ValueError`` when a statement has no star rating or a solution cell has no statement.
    """
    starts: list[tuple[int, int, int]] = []  # (cell index, number, stars)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for para in re.split(r"\n\s*\n", cell.source):
            m = _EXERCISE.search(para.split("\n")[0] if para.lstrip().startswith("#") else para[:120])
            if not m:
                continue
            rating = _STARS.search(para)
            if rating is None:
                raise ValueError(f"nb: exercise {m.group(1)} (cell {i}) has no star rating such as (★★)")
            starts.append((i, int(m.group(1)), len(rating.group(1))))
    out = []
    for n, (i, number, stars) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(nb.cells)
        code = [j for j in range(i + 1, end) if nb.cells[j].cell_type == "code"]
        sols = [j for j in code if SOLUTION_TAG in _tags(nb.cells[j])]
        checks = tuple(j for j in code if CHECK_TAG in _tags(nb.cells[j]))
        if len(sols) > 1:
            raise ValueError(f"nb: exercise {number} (cell {i}) has {len(sols)} solution cells; use one")
        out.append(Exercise(number, stars, i, sols[0] if sols else None, checks))
    listed = {e.solution for e in out}
    for j, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and SOLUTION_TAG in _tags(cell) and j not in listed:
            raise ValueError(f"nb: the solution cell {j} follows no exercise statement")
    return out


def nbgrader_notebook(nb: nbformat.NotebookNode, prefix: str) -> nbformat.NotebookNode:
    """The nbgrader *source* version of a notebook (the input is not modified).

    Solution cells become answer cells (their BEGIN/END SOLUTION regions are what nbgrader clears);
    check cells become locked, graded test cells worth the exercise's stars; every other cell is
    locked (read-only). Exercise outputs are cleared, lesson outputs kept. ``prefix`` starts every
    ``grade_id`` (unique per notebook).
    """
    exs = exercises(nb)
    nb = _clear_exercise_outputs(nb)
    role: dict[int, dict] = {}
    for ex in exs:
        if ex.solution is not None:
            role[ex.solution] = {
                "solution": True,
                "grade": False,
                "locked": False,
                "grade_id": f"{prefix}_ex{ex.number}",
            }
        for k, j in enumerate(ex.checks):
            points = ex.stars / len(ex.checks)
            role[j] = {
                "solution": False,
                "grade": True,
                "locked": True,
                "points": points,
                "grade_id": f"{prefix}_ex{ex.number}_check{k + 1}",
            }
    for i, cell in enumerate(nb.cells):
        meta = role.get(i, {"solution": False, "grade": False, "locked": True, "grade_id": f"{prefix}_cell{i:02d}"})
        if meta["solution"] and BEGIN_SOLUTION not in cell.source:
            cell.source = f"{BEGIN_SOLUTION}\n{cell.source}\n{END_SOLUTION}"
        cell.metadata["nbgrader"] = {**meta, "schema_version": 3}
    return nb


NBGRADER_CONFIG = """\
# nbgrader configuration of the memtutor course (written by `python -m memtutor.course nbgrader`).
# Run nbgrader from this folder: nbgrader generate_assignment 01_memory_bank, nbgrader autograde ...
c = get_config()  # noqa: F821 (nbgrader provides it)

c.CourseDirectory.course_id = "memtutor"
# Assignments (one per notebook, created by generate_assignment): {assignments}

# The collection's longest cell took 24 s on a loaded 2-core machine, close to nbgrader's default
# of 30 s per cell; a slow, shared JupyterHub node needs more.
c.Execute.timeout = {timeout}
# The released notebooks keep the lessons' committed outputs (figures, tables): the source notebooks
# have their exercise outputs cleared already, so ClearOutput would only erase the lesson.
c.ClearOutput.enabled = False
# Stubs keep the function's signature, docstring and hint; only the answer region is replaced.
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
"""


def build_nbgrader_course(src: Path, out: Path, notebooks: list[str] | None = None) -> list[Path]:
    """Write an nbgrader course folder for the collection rooted at ``src`` into ``out``.

    ``out/source/<NN_topic>/<NN_topic>.ipynb`` for every notebook (or only those named in
    ``notebooks``), and ``out/nbgrader_config.py``. Returns the source notebooks written. Raises
    ``ValueError`` if ``src`` has no notebooks, a name in ``notebooks`` is unknown, or ``out`` is
    inside ``src/notebooks``.
    """
    src, out = Path(src).resolve(), Path(out).resolve()
    nb_dir = src / "notebooks"
    paths = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise ValueError(f"src: no notebooks (NN_*.ipynb) found under {nb_dir}")
    if notebooks is not None:
        wanted = {Path(n).stem for n in notebooks}
        unknown = wanted - {p.stem for p in paths}
        if unknown:
            raise ValueError(f"notebooks: unknown notebooks {sorted(unknown)}")
        paths = [p for p in paths if p.stem in wanted]
    if out == nb_dir or nb_dir in out.parents:
        raise ValueError(f"out: the course must be written outside the notebooks: {out}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        folder = out / "source" / path.stem
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        nb = nbgrader_notebook(nbformat.read(path, as_version=4), prefix=path.stem[:2])
        target = folder / path.name
        nbformat.write(nb, target)
        written.append(target)
    names = sorted(p.name for p in (out / "source").iterdir() if p.is_dir())
    (out / "nbgrader_config.py").write_text(
        NBGRADER_CONFIG.format(assignments=", ".join(names), timeout=CELL_TIMEOUT_S)
    )
    return written


STUDENT_README = """\
# memtutor — student edition

Seven notebooks on neural agents with memory, one per session. Each ends with exercises: read the
statement, replace the `NotImplementedError` in the cell below it with your answer (the cell keeps
the names to define and a hint), then run the check cell, which says whether your answer is right
and, if not, what is wrong.

## Install and open the notebooks

This folder installs the `memtutor` package (its lessons, exercise checks and cached results) and
JupyterLab into a virtual environment `.venv`, then opens the notebooks:

```bash
./run.sh lab
```

or by hand, with Python 3.11 or newer:

```bash
python -m venv .venv
.venv/bin/pip install -c constraints.txt ".[lab]"
.venv/bin/jupyter lab notebooks/
```

On a course JupyterHub where `memtutor` is already installed, open `notebooks/` directly.

## Licence

Code under the MIT License ([LICENSE](LICENSE)), text and figures under CC BY 4.0
([LICENSE-CONTENT](LICENSE-CONTENT)).
"""

STUDENT_RUN_SH = """\
#!/usr/bin/env bash
# ./run.sh lab: install memtutor and JupyterLab into .venv (once) and open JupyterLab on notebooks/.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${MEMTUTOR_VENV:-.venv}
if [ "${1:-}" != "lab" ]; then
    echo "usage: ./run.sh lab" >&2
    exit 2
fi
if [ ! -x "$VENV/bin/jupyter" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt ".[lab]"
fi
root_flag=()
[ "$(id -u)" = "0" ] && root_flag=(--allow-root)
exec "$VENV/bin/python" -m jupyter lab "${root_flag[@]}" notebooks/ "${@:2}"
"""


def build_student_edition(src: Path, out: Path) -> list[Path]:
    """Write the student edition of the collection rooted at ``src`` into ``out``.

    Copies ``notebooks/`` (with its cached checkpoints and nbval sanitize file), turning every
    notebook into its student edition; the package source, ``pyproject.toml``, ``constraints.txt``
    and licences, so that the folder installs on its own; a student README and ``run.sh``. Returns
    the notebooks written. Raises ``ValueError`` if ``src`` has no notebooks or ``out`` is inside
    ``notebooks/``.
    """
    src, out = Path(src).resolve(), Path(out).resolve()
    nb_dir = src / "notebooks"
    notebooks = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ValueError(f"src: no notebooks (NN_*.ipynb) found under {nb_dir}")
    if out == src or nb_dir in out.parents or out == nb_dir:
        raise ValueError(f"out: the student edition must be written outside the notebooks: {out}")
    if out.exists():
        shutil.rmtree(out)
    (out / "notebooks").mkdir(parents=True)
    for item in nb_dir.iterdir():
        if item.suffix == ".ipynb" or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, out / "notebooks" / item.name)
        else:
            shutil.copy2(item, out / "notebooks" / item.name)
    for name in ("LICENSE", "LICENSE-CONTENT", "pyproject.toml", "constraints.txt"):
        if (src / name).exists():
            shutil.copy2(src / name, out / name)
    if (src / "memtutor").is_dir():
        shutil.copytree(src / "memtutor", out / "memtutor", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (out / "README.md").write_text(STUDENT_README)
    (out / "run.sh").write_text(STUDENT_RUN_SH)
    (out / "run.sh").chmod(0o755)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        target = out / "notebooks" / path.name
        nbformat.write(student_notebook(nb), target)
        written.append(target)
    return written


def exercise_counts(notebook_dir: Path) -> dict[str, int]:
    """Number of exercises with a solution cell per notebook."""
    out = {}
    for path in sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        out[path.name] = sum(1 for c in nb.cells if c.cell_type == "code" and SOLUTION_TAG in _tags(c))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memtutor.course", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write the student edition")
    build.add_argument(
        "--src", type=Path, default=_ROOT, help="root of the collection (default: this clone, else the current folder)"
    )
    build.add_argument("--out", type=Path, default=Path("student_edition"), help="output folder")
    grader = sub.add_parser("nbgrader", help="write an nbgrader course folder")
    grader.add_argument(
        "--src", type=Path, default=_ROOT, help="root of the collection (default: this clone, else the current folder)"
    )
    grader.add_argument("--out", type=Path, default=Path("nbgrader_course"), help="output folder")
    grader.add_argument("--notebook", action="append", help="only this notebook (repeatable), e.g. 01_memory_bank")
    lst = sub.add_parser("list", help="exercises per notebook, with their stars")
    lst.add_argument("--src", type=Path, default=_ROOT)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ValueError as exc:
        print(f"error: {exc} (pass --src, the folder that holds notebooks/)", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "build":
        written = build_student_edition(args.src, args.out)
        counts = exercise_counts(args.src / "notebooks")
        for path in written:
            print(f"{path}  ({counts[path.name]} exercises)")
        return 0
    if args.command == "nbgrader":
        for path in build_nbgrader_course(args.src, args.out, args.notebook):
            exs = exercises(nbformat.read(path, as_version=4))
            points = sum(e.stars for e in exs if e.checks)
            print(f"{path}  ({len(exs)} exercises, {points} points)")
        print(f"then, in {args.out}: nbgrader generate_assignment <NN_topic>")
        return 0
    paths = sorted((args.src / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise ValueError(f"src: no notebooks (NN_*.ipynb) found under {args.src / 'notebooks'}")
    for path in paths:
        exs = exercises(nbformat.read(path, as_version=4))
        desc = ", ".join(f"{e.number} {'★' * e.stars}{'' if e.checks else ' open'}" for e in exs)
        print(f"{path.name}: {len(exs)} exercises ({desc})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
