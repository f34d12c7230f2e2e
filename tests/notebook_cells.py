"""Run a notebook's ``parameters`` cell in a test, as a learner's edit of it would run.

The tests of each cached-result family build the configuration a notebook asks for from the
notebook's own parameters cell, so a parameter that stops reaching the configuration is caught.
"""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def parameters_cell(notebook: str) -> str:
    """The source of the cell tagged ``parameters`` in ``notebooks/<notebook>``."""
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    (cell,) = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return "".join(cell["source"])


def notebook_parameters(notebook: str, namespace: dict | None = None, **changes) -> dict:
    """Execute the parameters cell of ``notebook`` in ``namespace`` (the names it needs, e.g. the
    imports of the notebook's first cell) and return the names it defines, with ``changes``
    applied afterwards (each must be a name the cell defines)."""
    ns = dict(namespace or {})
    exec(compile(parameters_cell(notebook), notebook, "exec"), ns)
    unknown = [name for name in changes if name not in ns]
    assert not unknown, f"{notebook}'s parameters cell defines no {unknown}"
    return {**ns, **changes}
