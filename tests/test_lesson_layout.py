"""Every lesson explains with a picture and pseudocode, not only with code and plots.

A notebook must hold, near its top, a schematic diagram of the mechanism it teaches (a cell
``fig = <driver>.draw_<name>()`` that calls a function of its experiment driver and shows its
PNG), at least one algorithm box (a Markdown cell headed ``**Algorithm N: name**`` holding
numbered steps) before the code that implements it, and a "Key equations" list in its summary.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DRAW_CALL = re.compile(r"^fig\s*=\s*\w+\.(draw_\w+)\(", re.MULTILINE)
ALGORITHM_HEAD = re.compile(r"^\*\*Algorithm (\d+)[:.] [^*]+\*\*", re.MULTILINE)
NUMBERED_STEP = re.compile(r"^\s*\d+\. \S", re.MULTILINE)


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _has_png(cell: dict) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_diagram_near_the_top(path):
    cells = _cells(path)
    hits = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and DRAW_CALL.search(_source(c))]
    assert hits, f"{path.name}: no cell calls a draw_* diagram function"
    first = hits[0]
    assert first <= len(cells) // 3, f"{path.name}: the first diagram is cell {first} of {len(cells)}"
    assert _has_png(cells[first]), f"{path.name}: the diagram cell {first} has no PNG output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_algorithm_boxes_with_numbered_steps_before_the_code(path):
    cells = _cells(path)
    boxes = [(i, c) for i, c in enumerate(cells) if c["cell_type"] == "markdown" and ALGORITHM_HEAD.search(_source(c))]
    assert boxes, f"{path.name}: no '**Algorithm N: name**' box"
    numbers = [int(n) for _, c in boxes for n in ALGORITHM_HEAD.findall(_source(c))]
    assert numbers == list(range(1, len(numbers) + 1)), f"{path.name}: algorithms numbered {numbers}"
    for i, c in boxes:
        text = _source(c)
        for block in ALGORITHM_HEAD.split(text)[2::2]:  # the text after each heading
            assert len(NUMBERED_STEP.findall(block)) >= 3, f"{path.name}, cell {i}: an algorithm box needs >= 3 steps"
    summary = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and _source(c).startswith("## Summary")]
    assert summary and boxes[0][0] < summary[0], f"{path.name}: the first algorithm box must come before the summary"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_key_equations_in_the_summary(path):
    cells = _cells(path)
    (start,) = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and _source(c).startswith("## Summary")]
    after = "".join(_source(c) for c in cells[start:] if c["cell_type"] == "markdown")
    section = after.split("## Exercises")[0]
    assert "**Key equations**" in section, f"{path.name}: the summary has no '**Key equations**' list"
    assert "$" in section.split("**Key equations**")[1], f"{path.name}: the key equations hold no equation"


def _draw_functions() -> list[tuple[str, object]]:
    """(notebook:function, function) for every draw_* function a notebook calls, from the drivers."""
    out = []
    modules = _driver_modules()
    for path in NOTEBOOKS:
        for name in sorted({m for c in _cells(path) for m in DRAW_CALL.findall(_source(c))}):
            owners = [m for m in modules if hasattr(m, name)]
            assert len(owners) == 1, f"{path.name} calls {name}: defined in {len(owners)} experiment drivers, not 1"
            out.append((f"{path.stem}:{name}", getattr(owners[0], name)))
    return out


def _driver_modules() -> list:
    import memtutor.experiments as xp

    root = Path(xp.__file__).parent
    return [importlib.import_module(f"memtutor.experiments.{p.stem}") for p in sorted(root.glob("nb*.py"))]


def test_every_diagram_function_draws_a_labelled_figure():
    functions = _draw_functions()
    assert functions
    for name, fn in functions:
        required = [p for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty]
        assert not required, f"{name}: a diagram function must draw with its defaults, needs {required}"
        fig = fn()
        try:
            assert isinstance(fig, Figure), f"{name} must return the Figure it drew"
            texts = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_text().strip()]
            assert len(texts) >= 4, f"{name}: a diagram labels its parts, found {texts}"
        finally:
            plt.close(fig)
