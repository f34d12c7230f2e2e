"""Notebook 02's interface table (``nb02_controller.INTERFACE_FIELDS``) against the package's
``split_interface``, the table as the notebook shows it, and the lesson's diagram."""

from __future__ import annotations

import json

import matplotlib
import pytest
import torch
from notebook_cells import NOTEBOOKS, notebook_parameters

from memtutor import memory as mem
from memtutor.experiments import nb02_controller as nb02

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

NOTEBOOK = "02_memory_controller.ipynb"
SQUASH = {
    "none": lambda x: x,
    "oneplus": lambda x: 1 + torch.nn.functional.softplus(x),
    "sigmoid": torch.sigmoid,
    "softmax over 3 modes": lambda x: torch.softmax(x, dim=-1),
}


def test_the_table_lists_the_interface_fields_in_order():
    assert [f.name for f in nb02.INTERFACE_FIELDS] == list(mem.Interface._fields)
    assert {f.squash for f in nb02.INTERFACE_FIELDS} <= set(SQUASH)


@pytest.mark.parametrize(("word_size", "num_reads"), [(16, 1), (5, 3), (1, 1), (3, 7)])
def test_each_field_is_its_slice_squashed_as_the_table_says(word_size, num_reads):
    slices = nb02.interface_slices(word_size, num_reads)
    size = mem.interface_size(word_size, num_reads)
    starts = [s.start for s in slices.values()]
    stops = [s.stop for s in slices.values()]
    assert starts == [0, *stops[:-1]] and stops[-1] == size  # the slices tile xi_t
    raw = torch.randn(3, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    split = mem.split_interface(raw, word_size, num_reads)
    for field in nb02.INTERFACE_FIELDS:
        got = getattr(split, field.name)
        part = raw[:, slices[field.name]]
        assert part.numel() == got.numel(), f"{field.name}: the table's size is wrong"
        torch.testing.assert_close(got, SQUASH[field.squash](part.reshape(got.shape)), msg=field.name)


def test_sizes_in_words_follow_the_coefficients():
    assert nb02._polynomial((1, 3, 5, 3)) == "WR + 3W + 5R + 3"
    assert [nb02._polynomial(f.size) for f in nb02.INTERFACE_FIELDS] == [
        "WR", "R", "W", "1", "W", "W", "R", "1", "1", "3R",
    ]  # fmt: skip
    total = tuple(sum(f.size[k] for f in nb02.INTERFACE_FIELDS) for k in range(4))
    assert total == (1, 3, 5, 3)  # the paper's W*R + 3W + 5R + 3


def test_the_notebook_shows_the_table_for_its_own_sizes():
    params = notebook_parameters(NOTEBOOK)
    table = nb02.interface_table_markdown(params["WORD_SIZE"], params["NUM_READS"])
    cells = json.loads((NOTEBOOKS / NOTEBOOK).read_text())["cells"]
    markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    assert any(table in text for text in markdown), "the notebook's interface table differs from the driver's"
    assert table.count("\n") == len(nb02.INTERFACE_FIELDS) + 1  # header, rule, one row per field


@pytest.mark.parametrize(("word_size", "num_reads"), [(0, 1), (16, 0), (2.5, 1), (True, 1), (16, "1")])
def test_bad_sizes_are_refused(word_size, num_reads):
    with pytest.raises(ValueError, match="word_size|num_reads"):
        nb02.interface_slices(word_size, num_reads)
    with pytest.raises(ValueError, match="word_size|num_reads"):
        nb02.interface_table_markdown(word_size, num_reads)


def test_the_diagram_names_the_lessons_symbols():
    fig = nb02.draw_controller()
    try:
        assert isinstance(fig, Figure)
        text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        for symbol in ("$x_t$", "$r_t$", "$h_t$", "\\xi_t", "r_{t-1}", "y_t", "LSTM baseline"):
            assert symbol in text, f"the diagram does not label {symbol}"
    finally:
        plt.close(fig)
