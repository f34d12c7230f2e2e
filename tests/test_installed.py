"""What a learner without a clone does: install the wheel, copy a notebook to an empty folder, run it.

The wheel is built from this checkout and installed (not editable) into a fresh virtual environment
that cannot see the clone; each notebook is copied to an empty folder and executed there with the
environment's own kernel, loading the cached results shipped in the wheel. Nothing may be trained
(the user's cache folder stays empty) and nothing may be written into site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHECKPOINTS = sorted(p.name for p in (ROOT / "notebooks" / "checkpoints").glob("*.pt"))
EXERCISES = sorted(p.name for p in (ROOT / "memtutor" / "exercises").glob("*.py"))
EXPERIMENTS = sorted(p.name for p in (ROOT / "memtutor" / "experiments").glob("*.py"))

pytestmark = [pytest.mark.slow, pytest.mark.installed]

# Executes one notebook with nbclient in the current (fresh) environment; prints where memtutor came from.
RUNNER = """
import sys, memtutor, nbformat
from nbclient import NotebookClient
print("memtutor from", memtutor.__file__)
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
print("executed", sys.argv[1])
"""


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if out.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
        )
    return out


def _clean_env(home: Path) -> dict:
    """An environment that points nowhere near the clone: own HOME and cache, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MEMTUTOR_", "JUPYTER"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONNOUSERSITE="1", MEMTUTOR_THREADS="1")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)])
    (path,) = out.glob("memtutor-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh virtual environment with the wheel and a kernel installed, and the environment to run it in."""
    base = tmp_path_factory.mktemp("installed")
    home = base / "home"
    home.mkdir()
    env = _clean_env(home)
    venv = base / "venv"
    interpreter = getattr(sys, "_base_executable", sys.executable)
    _run([interpreter, "-m", "venv", str(venv)], env=env)
    python = venv / "bin" / "python"
    constraints = ROOT / "constraints.txt"
    env_pip = {**env, "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))}
    _run(
        [python, "-m", "pip", "install", "-q", "-c", constraints, str(wheel), "nbclient>=0.8,<1", "ipykernel>=6.25,<8"],
        env=env_pip,
    )
    site = Path(
        _run(
            [python, "-c", "import memtutor, pathlib; print(pathlib.Path(memtutor.__file__).parent)"], env=env, cwd=home
        ).stdout.strip()
    )
    return {"python": python, "env": env, "home": home, "package": site}


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if "__pycache__" not in p.parts}


def test_wheel_carries_every_module_exercise_check_and_cached_result(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f"memtutor/exercises/{n}" for n in EXERCISES if f"memtutor/exercises/{n}" not in names]
    missing += [f"memtutor/experiments/{n}" for n in EXPERIMENTS if f"memtutor/experiments/{n}" not in names]
    missing += [f"memtutor/checkpoints/{n}" for n in CHECKPOINTS if f"memtutor/checkpoints/{n}" not in names]
    missing += [f"memtutor/{p.name}" for p in (ROOT / "memtutor").glob("*.py") if f"memtutor/{p.name}" not in names]
    assert not missing, f"missing from the wheel: {missing}"
    assert len(CHECKPOINTS) >= 7 and len(EXERCISES) >= 8


def test_sdist_carries_the_cached_results_and_every_subpackage(tmp_path):
    _run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(ROOT)], cwd=tmp_path)
    (sdist,) = tmp_path.glob("memtutor-*.tar.gz")
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    wanted = [f"notebooks/checkpoints/{n}" for n in CHECKPOINTS] + [f"memtutor/exercises/{n}" for n in EXERCISES]
    wanted += [f"memtutor/experiments/{n}" for n in EXPERIMENTS]
    assert not [n for n in wanted if n not in names], f"missing from the sdist: {[n for n in wanted if n not in names]}"


def test_installed_package_is_not_the_clone(installed):
    assert ROOT not in installed["package"].parents
    assert (installed["package"] / "checkpoints").is_dir()


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_outside_the_clone(installed, notebook, tmp_path):
    """Copy the notebook to an empty folder and execute it with the installed package only."""
    workdir = tmp_path / "learner"
    workdir.mkdir()
    shutil.copy(ROOT / "notebooks" / notebook, workdir / notebook)
    (workdir / "run_notebook.py").write_text(RUNNER)
    before = _listing(installed["package"])
    out = _run([installed["python"], "run_notebook.py", notebook], env=installed["env"], cwd=workdir, timeout=900)
    assert f"memtutor from {installed['package']}" in out.stdout, out.stdout
    assert _listing(installed["package"]) == before, "the notebook wrote into site-packages"
    trained = list((installed["home"] / ".cache" / "memtutor").rglob("*.pt"))
    assert not trained, f"the notebook trained instead of loading the shipped results: {trained}"


def test_student_edition_installs_on_its_own_with_its_readme_commands(tmp_path):
    """The student edition's README command, `./run.sh lab`, in a fresh folder with no clone in reach:
    it creates .venv, installs the edition's own package and JupyterLab, and starts the lab (asked
    here for its version only); the installed package loads a cached result shipped with the edition."""
    edition = tmp_path / "edition"
    _run([sys.executable, "-m", "memtutor.course", "build", "--out", str(edition)], cwd=tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = _clean_env(home)
    env["PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    out = _run(["./run.sh", "lab", "--version"], env=env, cwd=edition, timeout=900)
    assert out.stdout.strip().splitlines()[-1][:1].isdigit(), out.stdout
    python = edition / ".venv" / "bin" / "python"
    check = (
        "import memtutor, pathlib; from memtutor.utils import checkpoint_dirs; "
        "print(pathlib.Path(memtutor.__file__).parent); "
        "print(sorted(p.name for d in checkpoint_dirs() if d.is_dir() for p in d.glob('02_copy_seed0.pt')))"
    )
    where, found = _run([python, "-c", check], env=env, cwd=home).stdout.strip().splitlines()
    assert (edition / ".venv") in Path(where).parents, where
    assert found == "['02_copy_seed0.pt']", found
