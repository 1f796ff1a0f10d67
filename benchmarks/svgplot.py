"""Line charts as plain SVG text, so that benchmarks can draw without a plotting library.

``panels_svg`` stacks panels that share one x axis; each panel has its own y
axis, one polyline (with a dot at every point) per series, an optional dashed
limit line, and a legend.  Enough for a benchmark's trend lines, nothing more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

WIDTH = 760
PANEL_HEIGHT = 220
TOP = 40  # room for the title
LEFT = 70  # room for the y tick labels
RIGHT = 150  # room for the legend
BOTTOM = 50  # room for the x tick labels and axis title
PANEL_GAP = 30
TICKS = 5
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]

Point = tuple[float, float]


@dataclass
class Panel:
    """One chart: series by label, each a list of (x, y) points."""

    title: str
    series: dict[str, list[Point]] = field(default_factory=dict)
    limit: float | None = None  # drawn as a dashed horizontal line
    limit_label: str = ""


def nice_ticks(low: float, high: float, count: int = TICKS) -> list[float]:
    """Round tick values covering low..high, about ``count`` of them."""
    if high <= low:
        high = low + 1.0
    raw_step = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 1e4:
        return f"{value:g}"
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:.2g}"


def _text(x: float, y: float, text: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(text)}</text>'


def panels_svg(title: str, x_title: str, panels: Sequence[Panel]) -> str:
    """An SVG document with ``panels`` stacked under ``title``, sharing the x axis."""
    xs = [x for panel in panels for points in panel.series.values() for x, _ in points]
    x_ticks = nice_ticks(min(0.0, *xs), max(xs, default=1.0))
    x_low, x_high = x_ticks[0], x_ticks[-1]
    plot_width = WIDTH - LEFT - RIGHT
    height = TOP + len(panels) * (PANEL_HEIGHT + PANEL_GAP) - PANEL_GAP + BOTTOM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        _text(WIDTH / 2, 22, title, extra='font-size="14" font-weight="bold"'),
    ]

    def to_x(x: float) -> float:
        return LEFT + (x - x_low) / (x_high - x_low) * plot_width

    for index, panel in enumerate(panels):
        top = TOP + index * (PANEL_HEIGHT + PANEL_GAP) + 15
        bottom = top + PANEL_HEIGHT - 30
        ys = [y for points in panel.series.values() for _, y in points]
        if panel.limit is not None:
            ys.append(panel.limit)
        y_ticks = nice_ticks(min(0.0, *ys) if ys else 0.0, max(ys, default=1.0))
        y_low, y_high = y_ticks[0], y_ticks[-1]

        def to_y(y: float, top: float = top, bottom: float = bottom, low: float = y_low, high: float = y_high) -> float:
            return bottom - (y - low) / (high - low) * (bottom - top)

        out.append(_text(LEFT, top - 6, panel.title, anchor="start", extra='font-weight="bold"'))
        frame = f'x="{LEFT}" y="{top}" width="{plot_width}" height="{bottom - top}"'
        out.append(f'<rect {frame} fill="none" stroke="#999"/>')
        for tick in y_ticks:
            y = to_y(tick)
            out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_width}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(_text(LEFT - 6, y + 4, _label(tick), anchor="end"))
        for tick in x_ticks:
            x = to_x(tick)
            out.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#999"/>')
            out.append(_text(x, bottom + 16, _label(tick)))
        if panel.limit is not None:
            y = to_y(panel.limit)
            out.append(
                f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_width}" y2="{y:.1f}" '
                'stroke="#d62728" stroke-dasharray="6 4"/>'
            )
            if panel.limit_label:
                out.append(_text(LEFT + plot_width - 4, y - 4, panel.limit_label, anchor="end", extra='fill="#d62728"'))
        for number, (label, points) in enumerate(panel.series.items()):
            colour = COLOURS[number % len(COLOURS)]
            coords = " ".join(f"{to_x(x):.1f},{to_y(y):.1f}" for x, y in points)
            if len(points) > 1:
                out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            for x, y in points:
                out.append(f'<circle cx="{to_x(x):.1f}" cy="{to_y(y):.1f}" r="2.5" fill="{colour}"/>')
            legend_y = top + 12 + number * 16
            legend_x = LEFT + plot_width + 12
            out.append(f'<line x1="{legend_x}" y1="{legend_y - 4}" x2="{legend_x + 18}" y2="{legend_y - 4}" '
                       f'stroke="{colour}" stroke-width="2"/>')  # fmt: skip
            out.append(_text(legend_x + 24, legend_y, label, anchor="start"))
    out.append(_text(LEFT + plot_width / 2, height - 22, x_title))
    out.append("</svg>")
    return "\n".join(out) + "\n"
