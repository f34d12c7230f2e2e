"""Every parameter a learner can edit reaches the configuration of the cached results it changes.

Each notebook with cached results is executed as it is (its own cells, in a real kernel) with every
value of its ``parameters`` cell edited at once to a value that no committed configuration holds,
and with ``load_or_train`` replaced by a recorder that notes the name and configuration of every
cached result the notebook asks for (and hands back the committed result, so later cells can run).
Each edited value must show up in a recorded configuration (or, for a tuple, change which results
are asked for), except the parameters a notebook declares as evaluation-only below. A cell that
hard-codes a value its parameter should give, or a configuration that leaves a parameter out, fails
here: the committed result would otherwise load under the new value.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from memtutor.experiments.nb03_replay import CliffwalkConfig, cliffwalk_minutes

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "notebooks" / "checkpoints"

#: Parameters that only change what a notebook evaluates or shows, never a cached result.
EVALUATION_ONLY = {
    "02_memory_controller.ipynb": {"TEST_SIZE", "TEST_SEED", "RETRAIN"},
    "03_prioritized_replay.ipynb": {
        "ALPHA", "BETA0", "TIMING_SIZES", "TIMING_BATCHES", "TIMING_REPEATS", "DIST_DRAWS",
        "CLIFF_RECHECK_MAX_N", "RETRAIN",
    },
    "04_meta_learning.ipynb": {"RETRAIN"},
    "05_continual_agent.ipynb": {"DEMO_SEED", "RETRAIN"},
    "06_tool_agent.ipynb": {"RETRAIN", "RETRAIN_ABLATIONS"},
    "07_memup.ipynb": {"LONGER", "N_TEST", "TEST_SEED", "COST_LENGTHS", "COST_BATCH", "RETRAIN"},
    "08_memory_agent.ipynb": {"SHOW_LENGTH", "READOUT_EPISODES", "RETRAIN"},
    "09_meta_controller.ipynb": {"RETRAIN"},
}  # fmt: skip

#: Cached results a notebook loads that another notebook made (by name).
BORROWED = {"09_meta_controller.ipynb": {"02_copy_seed0.pt", "02_copy_seed1.pt", "02_copy_seed2.pt"}}

RECORDER = """
import json as _json, torch as _torch, importlib as _importlib, pkgutil as _pkgutil
from pathlib import Path as _Path
import memtutor.utils as _u, memtutor.experiments as _x
_RECORDED = []
def _recording_load_or_train(name, config, train_fn, *, minutes, retrain=False, directory=None, map_location="cpu"):
    _RECORDED.append([name, _u.config_dict(config)])
    path = _Path(_u.__file__).resolve().parents[1] / "notebooks" / "checkpoints" / name  # the committed result
    if not path.is_file():
        raise FileNotFoundError(f"no committed {name}: recorded, not trained")
    return _torch.load(path, map_location=map_location, weights_only=True)["result"]
_u.load_or_train = _recording_load_or_train
for _m in _pkgutil.iter_modules(_x.__path__):
    _mod = _importlib.import_module(f"memtutor.experiments.{_m.name}")
    if hasattr(_mod, "load_or_train"):
        _mod.load_or_train = _recording_load_or_train
"""


def _literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def _leaves(value, out: set) -> set:
    if isinstance(value, dict):
        for v in value.values():
            _leaves(v, out)
    elif isinstance(value, list):
        out.add(("list", json.dumps(value)))
        for v in value:
            _leaves(v, out)
    else:
        out.add(
            (type(value).__name__ if not isinstance(value, int | float) or isinstance(value, bool) else "num", value)
        )
    return out


def _key(value) -> tuple:
    if isinstance(value, tuple | list):
        return ("list", json.dumps(list(value)))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ("num", value)
    return (type(value).__name__, value)


def _edit(value, taken: set):
    """A value a learner might type instead of ``value`` that no committed configuration and no
    other edit holds (so it can be traced to its parameter); it is added to ``taken``."""
    new = _new_value(value, taken)
    taken.add(_key(new))
    return new


def _new_value(value, taken: set):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        for delta in (-1, 1, -2, 2, 3, -3, 4, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41):
            if value + delta >= 1 and _key(value + delta) not in taken:
                return value + delta
    if isinstance(value, float):
        for factor in (0.9, 0.8, 1.1, 0.7, 1.3):
            if _key(value * factor) not in taken:
                return value * factor
    if isinstance(value, tuple | list) and len(value) > 1:
        return type(value)(value[:-1])
    raise AssertionError(f"no edit found for {value!r}")


def edited_parameters(notebook: str, taken: set) -> tuple[str, dict]:
    """The parameters cell with every literal value (and literal keyword of a call) edited."""
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    tree = ast.parse(cell.source)
    edits: dict[str, object] = {}
    skip = EVALUATION_ONLY[notebook]
    for stmt in tree.body:
        if not isinstance(stmt, ast.Assign):
            continue
        targets = stmt.targets[0]
        names = [t.id for t in targets.elts] if isinstance(targets, ast.Tuple) else [getattr(targets, "id", "")]
        values = stmt.value.elts if isinstance(targets, ast.Tuple) else [stmt.value]
        for name, node in zip(names, values, strict=True):
            if name in skip:
                continue
            if _literal(node):
                new = _edit(ast.literal_eval(node), taken)
                edits[name] = new
                node_new = ast.parse(repr(new), mode="eval").body
                _replace(stmt, node, node_new)
            elif isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg and _literal(kw.value) and f"{name}.{kw.arg}" not in skip:
                        new = _edit(ast.literal_eval(kw.value), taken)
                        edits[f"{name}.{kw.arg}"] = new
                        kw.value = ast.parse(repr(new), mode="eval").body
    return ast.unparse(tree), edits


def _replace(stmt: ast.Assign, old: ast.AST, new: ast.AST) -> None:
    if stmt.value is old:
        stmt.value = new
    else:
        assert isinstance(stmt.value, ast.Tuple)
        stmt.value.elts = [new if e is old else e for e in stmt.value.elts]


def committed_configs(notebook: str) -> dict[str, dict]:
    prefix = notebook[:3]
    names = {p.name for p in CHECKPOINTS.glob(f"{prefix}*.pt")} | BORROWED.get(notebook, set())
    return {n: torch.load(CHECKPOINTS / n, weights_only=True)["config"] for n in sorted(names)}


def run_recorded(notebook: str, parameters: str, tmp_path: Path) -> list:
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = parameters
    out = tmp_path / "recorded.json"
    nb.cells.insert(0, nbformat.v4.new_code_cell(RECORDER))
    nb.cells.append(nbformat.v4.new_code_cell(f"_json.dump(_RECORDED, open({str(out)!r}, 'w'))"))
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("notebook", sorted(EVALUATION_ONLY))
def test_every_edited_parameter_reaches_a_cached_configuration(notebook, tmp_path, monkeypatch):
    committed = committed_configs(notebook)
    taken: set = set()
    for config in committed.values():
        _leaves(config, taken)
    source, edits = edited_parameters(notebook, taken)
    assert edits, "no parameter found to edit"
    # the kernel inherits these: one thread, no display, and nothing of the user's own cache
    for env, value in {"MEMTUTOR_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(env, value)
    monkeypatch.delenv("MEMTUTOR_CHECKPOINTS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    recorded = run_recorded(notebook, source, tmp_path)
    assert recorded, "the notebook asked for no cached result"
    seen: set = set()
    for _, config in recorded:
        _leaves(config, seen)
    names = {name for name, _ in recorded}
    missed = []
    for param, value in edits.items():
        if _key(value) in seen:
            continue
        if isinstance(value, tuple | list) and names != set(committed):
            continue  # a tuple of runs: fewer results asked for
        missed.append(f"{param} = {value!r}")
    assert not missed, (
        f"{notebook}: these edited parameters reach no cached configuration, so the committed result "
        f"would load under the new value: {missed} (or declare them evaluation-only)"
    )
    for name, config in recorded:  # nothing asked for loads a committed result made with other values
        if name in committed and name not in BORROWED.get(notebook, set()):
            assert config != committed[name], f"{name} asked with the committed configuration despite the edits"


def test_evaluation_only_names_exist():
    for notebook, names in EVALUATION_ONLY.items():
        cell = next(
            c
            for c in nbformat.read(ROOT / "notebooks" / notebook, as_version=4).cells
            if "parameters" in c.metadata.get("tags", [])
        )
        defined = {
            t.id
            for s in ast.parse(cell.source).body
            if isinstance(s, ast.Assign)
            for t in ast.walk(s.targets[0])
            if isinstance(t, ast.Name)
        }
        assert names <= defined, f"{notebook}: {sorted(names - defined)} are not parameters"


def test_cliffwalk_estimate_scales_with_the_sweep():
    default = cliffwalk_minutes(CliffwalkConfig())
    assert math.isclose(cliffwalk_minutes(CliffwalkConfig(num_seeds=50)), 10 * default)
    assert cliffwalk_minutes(CliffwalkConfig(ns=tuple(range(2, 15)))) > 3  # a bigger sweep raises, not retrains
    assert cliffwalk_minutes(CliffwalkConfig(ns=(2, 3))) < default
