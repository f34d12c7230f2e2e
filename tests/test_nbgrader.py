"""The nbgrader round trip, with the real nbgrader, for every notebook.

``python -m memtutor.course nbgrader`` writes a course folder; nbgrader's ``generate_assignment`` makes
the student version; three submissions are autograded: every solution (full marks), the unedited
student notebook (zero) and one with only the first exercise answered (in between). Each notebook
gets its own course folder, so the notebooks can be graded in parallel (pytest -n).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from memtutor import course

nbgrader = pytest.importorskip("nbgrader", reason="the nbgrader round trip needs the course extra's nbgrader")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BIN = Path(sys.executable).parent  # nbgrader runs alembic from PATH


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MEMTUTOR_THREADS": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _scores(folder: Path, assignment: str, students: list[str]) -> dict[str, tuple[float, float]]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gb:
        return {
            s: (gb.find_submission(assignment, s).score, gb.find_submission(assignment, s).max_score) for s in students
        }


#: The round trips are split over two test files (this one and test_nbgrader_rest.py) so that the
#: suite's two workers share them (pytest-xdist's --dist loadfile keeps a file on one worker);
#: notebooks 04 and 07 have the longest cells.
HEAVY = [n for n in NOTEBOOKS if n[:2] in ("04", "06", "07", "09")]
LIGHT = [n for n in NOTEBOOKS if n not in HEAVY]


def test_the_two_halves_cover_every_notebook():
    assert sorted(HEAVY + LIGHT) == NOTEBOOKS and len(NOTEBOOKS) >= 7


@pytest.mark.slow  # generate_assignment, then three notebook executions under autograde
@pytest.mark.parametrize("name", LIGHT)
def test_nbgrader_round_trip(name, tmp_path):
    round_trip(name, tmp_path)


def round_trip(name: str, tmp_path: Path) -> None:
    """Write the course for ``name``, generate the assignment, autograde three submissions."""
    folder = tmp_path / "course"
    _run([sys.executable, "-m", "memtutor.course", "nbgrader", "--out", str(folder), "--notebook", name], cwd=tmp_path)
    config = (folder / "nbgrader_config.py").read_text()
    assert f"c.Execute.timeout = {course.CELL_TIMEOUT_S}" in config and "c.ClearOutput.enabled = False" in config
    _run([str(BIN / "nbgrader"), "generate_assignment", name], cwd=folder)

    source = nbformat.read(folder / "source" / name / f"{name}.ipynb", as_version=4)
    release = nbformat.read(folder / "release" / name / f"{name}.ipynb", as_version=4)
    kept = sum(len(c.outputs) for c in release.cells if c.cell_type == "code")
    lesson = sum(len(c.outputs) for c in source.cells if c.cell_type == "code")
    assert kept == lesson > 0, f"the released notebook lost lesson outputs: {kept} of {lesson}"
    answers = [i for i, c in enumerate(source.cells) if c.metadata["nbgrader"]["solution"]]
    assert answers and all("raise NotImplementedError" in release.cells[i].source for i in answers)
    assert all("# Hint:" in release.cells[i].source for i in answers), "a released stub lost its hint"

    partial = nbformat.from_dict(release)
    partial.cells[answers[0]].source = source.cells[answers[0]].source
    for student, nb in (("solutions", source), ("unedited", release), ("partial", partial)):
        (folder / "submitted" / student / name).mkdir(parents=True)
        nbformat.write(nb, folder / "submitted" / student / name / f"{name}.ipynb")
    _run([str(BIN / "nbgrader"), "autograde", name], cwd=folder)

    scores = _scores(folder, name, ["solutions", "unedited", "partial"])
    print(name, {s: f"{a:g}/{b:g}" for s, (a, b) in scores.items()})
    total = sum(e.stars for e in course.exercises(source) if e.checks)
    first = next(e for e in course.exercises(source) if e.solution == answers[0])
    assert scores["solutions"] == (total, total), scores
    assert scores["unedited"] == (0, total), scores
    assert 0 < scores["partial"][0] < total and scores["partial"][0] == (first.stars if first.checks else 0), scores
