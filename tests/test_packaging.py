"""The collection's packaging stays consistent: pyproject, environment.yml, constraints, CI, README."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch", "python-build": "build"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = _pyproject()["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    have = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            have |= {_name(r) for r in dep.get("pip", []) if not r.startswith("-")}
        else:
            name = _name(dep)
            have.add(CONDA_TO_PYPI.get(name, name))
    have -= {"python", "pip"}
    assert wanted == have, (
        f"only in pyproject: {sorted(wanted - have)}; only in environment.yml: {sorted(have - wanted)}"
    )


def test_package_dependencies_are_ranges_and_torch_is_pinned_in_constraints():
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    exact = [r for r in reqs if "==" in r]
    assert not exact, f"pyproject must declare ranges, not exact pins: {exact}"
    pins = [
        line.strip()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "torch==2.13.0" in pins


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run.sh test" in readme and "./run.sh lab" in readme
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[-1] == "exec ./run.sh test", commands


def test_every_notebook_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"notebooks/{nb.name}" in readme, f"{nb.name} is missing from the README's table"


def test_package_imports_and_has_a_version():
    out = subprocess.run(
        [sys.executable, "-c", "import memtutor; print(memtutor.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == _pyproject()["project"]["version"]
