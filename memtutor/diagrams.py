"""Drawing primitives for the lessons' schematic diagrams (boxes, arrows, labels) with matplotlib.

Every notebook opens with a picture of the mechanism it teaches, drawn by a ``draw_*`` function of
its experiment driver (``memtutor.experiments.nbNN_*``) from these primitives, and committed as the
cell's PNG output: it renders in JupyterLab, in the book and on a code host, with no network and no
extension. Labels use matplotlib's mathtext (``r"$w^r_t$"``), so a diagram names things with the
symbols of the lesson's equations.

Coordinates are in diagram units: a canvas of ``width`` x ``height`` units, origin bottom left,
1 unit = ``UNIT_INCHES`` inches. A :class:`Box` knows its centre and size and gives the anchor
points arrows attach to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = ["UNIT_INCHES", "PALETTE", "HIGHLIGHT", "Box", "canvas", "box", "arrow", "note"]

#: Size of one diagram unit, inches.
UNIT_INCHES = 0.8
#: Fill colours by role, shared by every diagram: the same role has the same colour in every lesson.
PALETTE = {
    "input": "#e8f1fb",  # data coming in: observations, tasks, problems
    "network": "#fde9d9",  # trained networks: controllers, policies, detectors
    "memory": "#e6f4ea",  # memories: the DNC matrix, a replay buffer, an LSTM state
    "operation": "#f3e8fd",  # fixed computations: addressing, sampling, environments, optimiser steps
    "output": "#fff6d5",  # what comes out: outputs, losses, actions
    "plain": "#ffffff",
}
#: The colour that picks one path out of a diagram (a walk, a gradient), the same in every lesson.
HIGHLIGHT = "#c0392b"
_EDGE = "#333333"


@dataclass(frozen=True)
class Box:
    """A drawn box: centre ``(x, y)`` and size ``(w, h)`` in diagram units."""

    x: float
    y: float
    w: float
    h: float

    @property
    def left(self) -> tuple[float, float]:
        return (self.x - self.w / 2, self.y)

    @property
    def right(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y)

    @property
    def top(self) -> tuple[float, float]:
        return (self.x, self.y + self.h / 2)

    @property
    def bottom(self) -> tuple[float, float]:
        return (self.x, self.y - self.h / 2)

    def at(self, fx: float, fy: float) -> tuple[float, float]:
        """A point by fractions of the box: (0, 0) bottom left, (1, 1) top right."""
        return (self.x - self.w / 2 + fx * self.w, self.y - self.h / 2 + fy * self.h)


def _check_size(width: float, height: float) -> None:
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 40:
            raise ValueError(f"{name} must be a number in (0, 40] diagram units, got {v!r}")


def canvas(width: float, height: float, title: str | None = None) -> tuple[Figure, Axes]:
    """A blank diagram of ``width`` x ``height`` units (no axes, equal aspect)."""
    _check_size(width, height)
    fig, ax = plt.subplots(figsize=(width * UNIT_INCHES, height * UNIT_INCHES))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11)
    return fig, ax


def box(
    ax: Axes,
    x: float,
    y: float,
    text: str,
    *,
    w: float = 2.0,
    h: float = 0.8,
    role: str = "plain",
    fontsize: float = 9,
    dashed: bool = False,
) -> Box:
    """Draw a rounded box centred at ``(x, y)`` holding ``text``; ``role`` picks its colour from
    :data:`PALETTE`. Returns the :class:`Box` (for arrows)."""
    if role not in PALETTE:
        raise ValueError(f"role must be one of {sorted(PALETTE)}, got {role!r}")
    _check_size(w, h)
    patch = FancyBboxPatch(
        (x - w / 2, y - h / 2),
        w,
        h,
        boxstyle="round,pad=0.02,rounding_size=0.12",
        facecolor=PALETTE[role],
        edgecolor=_EDGE,
        linewidth=1.0,
        linestyle="--" if dashed else "-",
    )
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return Box(x, y, w, h)


def arrow(
    ax: Axes,
    start: Sequence[float],
    end: Sequence[float],
    text: str | None = None,
    *,
    bend: float = 0.0,
    dashed: bool = False,
    color: str = _EDGE,
    fontsize: float = 8,
    offset: Sequence[float] = (0.0, 0.15),
) -> None:
    """Draw an arrow from ``start`` to ``end`` (points in diagram units), curved by ``bend``
    (0: straight), dashed for what carries no gradient or happens later; ``text`` is written at the
    midpoint, shifted by ``offset``."""
    if len(start) != 2 or len(end) != 2:
        raise ValueError(f"start and end must be (x, y) points, got {start!r} and {end!r}")
    ax.add_patch(
        FancyArrowPatch(
            (float(start[0]), float(start[1])),
            (float(end[0]), float(end[1])),
            arrowstyle="-|>",
            mutation_scale=11,
            connectionstyle=f"arc3,rad={bend}",
            color=color,
            linewidth=1.0,
            linestyle="--" if dashed else "-",
            shrinkA=1,
            shrinkB=1,
        )
    )
    if text:
        mx, my = (start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1]
        ax.text(mx, my, text, ha="center", va="bottom", fontsize=fontsize, color=color)


def note(ax: Axes, x: float, y: float, text: str, *, fontsize: float = 8, ha: str = "center") -> None:
    """Write a free label (no box) at ``(x, y)``."""
    ax.text(x, y, text, ha=ha, va="center", fontsize=fontsize, color="#555555")
