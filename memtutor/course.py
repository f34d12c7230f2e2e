"""Course kit: build the student edition of the collection.

The repository is the teacher edition: every exercise has a solution cell (tagged ``solution``) and a
check cell (tagged ``check``). The student edition is the same collection with every solution cell
replaced by a stub that raises ``NotImplementedError`` with a hint, and the outputs of exercise cells
cleared; everything else is kept, committed outputs included.

Usage::

    python -m memtutor.course build              # writes ./student_edition/
    python -m memtutor.course build --out DIR
    python -m memtutor.course list               # exercises per notebook

The work is done by two nbconvert preprocessors: nbconvert's own ``TagRemovePreprocessor`` clears
the outputs of cells tagged ``solution`` or ``check``, and :class:`StubSolutionsPreprocessor`
replaces the source of ``solution`` cells. A line of a solution cell that starts with ``# Hint:``
is kept in the stub (the hint is the teacher's to write; nothing else of the solution survives).
"""

from __future__ import annotations

import argparse
import shutil
import sys
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
    "StubSolutionsPreprocessor",
    "student_notebook",
    "build_student_edition",
    "exercise_counts",
    "main",
]

SOLUTION_TAG = "solution"
CHECK_TAG = "check"
STUB_MARKER = "# EXERCISE"
DEFAULT_HINT = "Write your answer here; the exercise statement above says what to define."


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def stub_source(solution: str) -> str:
    """The student's stub for a solution cell: its ``# Hint:`` lines and a raise."""
    hints = [
        line.strip()[len("# Hint:") :].strip() for line in solution.splitlines() if line.strip().startswith("# Hint:")
    ]
    hint = " ".join(hints) if hints else DEFAULT_HINT
    lines = [f"{STUB_MARKER}: replace this cell with your answer, then run the check cell below."]
    lines += [f"# Hint: {h}" for h in hints]
    lines.append(f"raise NotImplementedError({hint!r})")
    return "\n".join(lines)


class StubSolutionsPreprocessor(Preprocessor):
    """Replace every cell tagged ``solution`` by a stub raising ``NotImplementedError``."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and SOLUTION_TAG in _tags(cell):
            cell.source = stub_source(cell.source)
            cell.outputs = []
            cell.execution_count = None
        return cell, resources


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return the student edition of one notebook (the input is not modified)."""
    nb = nbformat.from_dict(nb)  # a deep copy
    resources: dict = {}
    clear = TagRemovePreprocessor(remove_all_outputs_tags={SOLUTION_TAG, CHECK_TAG}, enabled=True)
    nb, resources = clear.preprocess(nb, resources)
    for cell in nb.cells:  # TagRemovePreprocessor clears outputs but keeps the prompt number
        if cell.cell_type == "code" and _tags(cell) & {SOLUTION_TAG, CHECK_TAG}:
            cell.execution_count = None
    nb, resources = StubSolutionsPreprocessor().preprocess(nb, resources)
    return nb


def exercise_counts(notebook_dir: Path) -> dict[str, int]:
    """Number of exercises (solution cells) per notebook."""
    out = {}
    for path in sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        out[path.name] = sum(1 for c in nb.cells if c.cell_type == "code" and SOLUTION_TAG in _tags(c))
    return out


def build_student_edition(src: Path, out: Path) -> list[Path]:
    """Write the student edition of the collection rooted at ``src`` into ``out``.

    Copies ``notebooks/`` (with its cached checkpoints and nbval sanitize file), turning every
    notebook into its student edition, plus README and licences. Returns the notebooks written.
    Raises ``ValueError`` if ``src`` has no notebooks or ``out`` is inside ``notebooks/``.
    """
    src, out = Path(src).resolve(), Path(out).resolve()
    nb_dir = src / "notebooks"
    notebooks = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ValueError(f"no notebooks (NN_*.ipynb) found under {nb_dir}")
    if out == src or nb_dir in out.parents or out == nb_dir:
        raise ValueError(f"the student edition must be written outside the notebooks: {out}")
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
    for name in ("README.md", "LICENSE", "LICENSE-CONTENT"):
        if (src / name).exists():
            shutil.copy2(src / name, out / name)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        target = out / "notebooks" / path.name
        nbformat.write(student_notebook(nb), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memtutor.course", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write the student edition")
    build.add_argument(
        "--src",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="root of the collection (default: this repository)",
    )
    build.add_argument("--out", type=Path, default=Path("student_edition"), help="output folder")
    lst = sub.add_parser("list", help="number of exercises per notebook")
    lst.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    if args.command == "build":
        written = build_student_edition(args.src, args.out)
        counts = exercise_counts(args.src / "notebooks")
        for path in written:
            print(f"{path}  ({counts[path.name]} exercises)")
        return 0
    for name, n in exercise_counts(args.src / "notebooks").items():
        print(f"{name}: {n} exercises")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
