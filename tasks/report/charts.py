"""Charts for the reports, drawn by hand as inline SVG: no plotting library, no external resources.

Every chart takes plain figures (seconds, offsets, times), never run records, and marks its parts
with classes and data- attributes (`bar`, `marker`, `measured`, `target`, `series`) for the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

STATUS_COLOURS = {
    "completed": "#2f6db5",
    "retried": "#d99a1e",
    "warning": "#d99a1e",
    "failed": "#c93c3c",
    "skipped": "#a3a9b0",
    "running": "#6b7280",
}
WITHIN_COLOUR, BEYOND_COLOUR, NEUTRAL_COLOUR = "#2e8b57", "#c93c3c", "#6b7280"
TARGET_COLOUR, GRID_COLOUR, MARKER_COLOUR = "#111827", "#e5e7eb", "#7c3aed"
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"'
CHARACTER_WIDTH = 6.4  # of 11 px text, for placing labels without measuring them

# Axis steps in seconds that read well as durations: 1 s, 2 s, 5 s, ... 15 min, 30 min, 1 h, ...
TIME_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, 86400, 172800, 604800)


def duration_text(seconds: float) -> str:
    """850 ms, 42 s, 3 min 20 s, 2 h 5 min, 3 d 4 h."""
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{sign}{seconds:.1f} s" if seconds < 10 else f"{sign}{seconds:.0f} s"
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if seconds >= size:
            whole, rest = divmod(round(seconds), size)
            part = rest // smaller_size
            return f"{sign}{whole} {unit}" + (f" {part} {smaller}" if part else "")
    return f"{sign}{seconds:.0f} s"


def time_ticks(maximum: float, count: int = 6) -> list[float]:
    """From 0 to the first tick at or above `maximum`, at most about `count` steps of a readable size."""
    step = next((s for s in TIME_STEPS if s * count >= maximum), TIME_STEPS[-1])
    return [index * step for index in range(math.ceil(maximum / step - 1e-9) + 1)]


def _text(x: float, y: float, content: str, *, anchor: str = "start", size: int = 11, colour: str = "#374151",
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{colour}" text-anchor="{anchor}" {extra}>'
            f"{escape(content)}</text>")


def _shorten(label: str, characters: int) -> str:
    return label if len(label) <= characters else label[: characters - 1] + "…"


def _svg(width: float, height: float, body: list[str], label: str, css_class: str) -> str:
    return (f'<svg class="{css_class}" role="img" aria-label="{escape(label)}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="100%" preserveAspectRatio="xMinYMin meet" {FONT}>' + "".join(body) + "</svg>")


# --- the waterfall of one run's steps -----------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    label: str
    start_seconds: float
    end_seconds: float
    status: str  # a colour key of STATUS_COLOURS
    note: str = ""


@dataclass(frozen=True)
class Marker:
    label: str
    at_seconds: float


def _marker_lanes(positions: Sequence[tuple[float, str]]) -> list[int]:
    """Lay milestone labels out in as few rows as keeps them from overlapping."""
    lane_ends: list[float] = []
    lanes = []
    for x, label in positions:
        width = len(label) * CHARACTER_WIDTH + 8
        lane = next((i for i, end in enumerate(lane_ends) if end < x), len(lane_ends))
        if lane == len(lane_ends):
            lane_ends.append(0.0)
        lane_ends[lane] = x + width
        lanes.append(lane)
    return lanes


def waterfall(bars: Sequence[Bar], markers: Sequence[Marker], total_seconds: float, *, width: int = 960) -> str:
    """One bar per step from its start to its end; milestones as labelled vertical lines."""
    label_width, right_margin, row_height, bar_height = 240, 90, 24, 14
    plot_width = width - label_width - right_margin
    total_seconds = max(total_seconds, 1e-3)
    ticks = time_ticks(total_seconds)
    scale_maximum = max(total_seconds, ticks[-1])

    def x_of(seconds: float) -> float:
        return label_width + plot_width * max(0.0, seconds) / scale_maximum

    ordered_markers = sorted(markers, key=lambda marker: marker.at_seconds)
    lanes = _marker_lanes([(x_of(m.at_seconds) - 2, m.label) for m in ordered_markers])
    header = 14 * (max(lanes) + 1) + 10 if lanes else 8
    plot_top, plot_bottom = header, header + row_height * max(len(bars), 1)
    height = plot_bottom + 52
    body: list[str] = []
    for tick in ticks:
        x = x_of(tick)
        body.append(f'<line x1="{x:.1f}" y1="{plot_top}" x2="{x:.1f}" y2="{plot_bottom}" stroke="{GRID_COLOUR}"/>')
        body.append(_text(x, plot_bottom + 15, f"+{duration_text(tick)}" if tick else "0", anchor="middle", size=10))
    for index, bar in enumerate(bars):
        y = plot_top + index * row_height
        if index % 2:
            body.append(f'<rect x="0" y="{y}" width="{width}" height="{row_height}" fill="#f9fafb"/>')
        start, end = x_of(bar.start_seconds), x_of(bar.end_seconds)
        colour = STATUS_COLOURS.get(bar.status, STATUS_COLOURS["running"])
        seconds = bar.end_seconds - bar.start_seconds
        body.append(_text(label_width - 8, y + 16, _shorten(bar.label, 36), anchor="end"))
        body.append(
            f'<rect class="bar bar-{escape(bar.status)}" data-step="{escape(bar.label)}" x="{start:.1f}" '
            f'y="{y + (row_height - bar_height) / 2:.1f}" width="{max(end - start, 2):.1f}" height="{bar_height}" '
            f'rx="2" fill="{colour}"><title>{escape(bar.label)}: {escape(duration_text(seconds))}'
            f'{escape(" — " + bar.note if bar.note else "")}</title></rect>'
        )
        body.append(_text(max(end - start, 2) + start + 5, y + 16, duration_text(seconds), size=10, colour="#6b7280"))
    for marker, lane in zip(ordered_markers, lanes, strict=True):
        x = x_of(marker.at_seconds)
        body.append(
            f'<g class="marker" data-milestone="{escape(marker.label)}"><line x1="{x:.1f}" y1="{12 + lane * 14}" '
            f'x2="{x:.1f}" y2="{plot_bottom}" stroke="{MARKER_COLOUR}" stroke-width="1.2" stroke-dasharray="3 3"/>'
            + _text(x + 3, 10 + lane * 14, marker.label, size=10, colour=MARKER_COLOUR) + "</g>"
        )
    legend_y, legend_x = plot_bottom + 38, label_width
    for name in ("completed", "retried", "failed", "skipped"):
        body.append(f'<rect x="{legend_x}" y="{legend_y - 9}" width="10" height="10" fill="{STATUS_COLOURS[name]}"/>')
        body.append(_text(legend_x + 14, legend_y, name, size=10))
        legend_x += 14 + len(name) * CHARACTER_WIDTH + 18
    body.append(f'<line x1="{legend_x}" y1="{legend_y - 9}" x2="{legend_x}" y2="{legend_y + 1}" '
                f'stroke="{MARKER_COLOUR}" stroke-dasharray="3 3"/>')
    body.append(_text(legend_x + 5, legend_y, "milestone", size=10))
    return _svg(width, height, body, "Waterfall of the run's steps", "chart waterfall")


# --- measured against target --------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    label: str
    seconds: float | None
    target_seconds: float | None


def against_targets(measures: Sequence[Measure], *, width: int = 960) -> str:
    """A bullet chart: each measure's bar on its own scale, its target a black line across it."""
    label_width, right_margin, row_height = 70, 150, 44
    plot_width = width - label_width - right_margin
    body: list[str] = []
    for index, measure in enumerate(measures):
        y = 8 + index * row_height
        body.append(_text(8, y + 20, measure.label, size=13, colour="#111827", extra='font-weight="600"'))
        figures = [value for value in (measure.seconds, measure.target_seconds) if value is not None]
        scale_maximum = max(max(figures, default=1.0) * 1.25, 1e-3)

        def x_of(seconds: float, maximum: float = scale_maximum) -> float:
            return label_width + plot_width * seconds / maximum

        body.append(f'<rect x="{label_width}" y="{y + 6}" width="{plot_width}" height="20" fill="#f3f4f6"/>')
        if measure.seconds is None:
            body.append(_text(label_width + 8, y + 20, "not measured", colour="#6b7280"))
        else:
            within = measure.target_seconds is None or measure.seconds <= measure.target_seconds
            colour = NEUTRAL_COLOUR if measure.target_seconds is None else WITHIN_COLOUR if within else BEYOND_COLOUR
            end = x_of(measure.seconds)
            body.append(f'<rect class="measured" data-measure="{escape(measure.label)}" data-seconds="{measure.seconds:g}" '
                        f'x="{label_width}" y="{y + 10}" width="{max(end - label_width, 2):.1f}" height="12" '
                        f'fill="{colour}"/>')
            body.append(_text(width - right_margin + 8, y + 20, duration_text(measure.seconds), size=12, colour=colour,
                              extra='font-weight="600"'))
        if measure.target_seconds is not None:
            x = x_of(measure.target_seconds)
            body.append(f'<line class="target" data-measure="{escape(measure.label)}" '
                        f'data-seconds="{measure.target_seconds:g}" x1="{x:.1f}" y1="{y + 2}" x2="{x:.1f}" y2="{y + 30}" '
                        f'stroke="{TARGET_COLOUR}" stroke-width="2.5"/>')
            body.append(_text(x, y + 42, f"target {duration_text(measure.target_seconds)}", anchor="middle", size=10))
        else:
            body.append(_text(width - right_margin + 8, y + 34, "no target", size=10, colour="#6b7280"))
    return _svg(width, 12 + row_height * len(measures), body, "Measured against targets", "chart targets")


# --- a figure over time, one series per scenario ------------------------------------------------


@dataclass(frozen=True)
class Point:
    at: datetime
    seconds: float | None  # None: the run measured nothing (it failed)
    missed: bool
    note: str


def _date_ticks(start: datetime, end: datetime, count: int = 4) -> list[datetime]:
    if end <= start:
        return [start]
    return [start + (end - start) * index / count for index in range(count + 1)]


def trend_panel(title: str, series_name: str, points: Sequence[Point], target_seconds: float | None,
                start: datetime, end: datetime, *, width: int = 470, height: int = 220) -> str:
    """Measured seconds over time as a line through the runs; the target a dashed line across."""
    left, right, top, bottom = 58, 14, 26, 36
    plot_width, plot_height = width - left - right, height - top - bottom
    figures = [p.seconds for p in points if p.seconds is not None] + ([target_seconds] if target_seconds else [])
    ticks = time_ticks(max(max(figures, default=1.0) * 1.15, 1e-3), count=4)
    y_maximum = ticks[-1] or 1.0
    span = (end - start).total_seconds() or 1.0

    inset = 10  # keeps the first and last runs' points off the axes and the target's label

    def x_of(moment: datetime) -> float:
        return left + inset + (plot_width - 2 * inset) * ((moment - start).total_seconds() / span if end > start else 0.5)

    def y_of(seconds: float) -> float:
        return top + plot_height * (1 - seconds / y_maximum)

    body = [_text(left, 15, title, size=12, colour="#111827", extra='font-weight="600"')]
    for tick in ticks:
        y = y_of(tick)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{GRID_COLOUR}"/>')
        body.append(_text(left - 6, y + 4, duration_text(tick) if tick else "0", anchor="end", size=10))
    date_format = "%Y-%m-%d" if span > 4 * 86400 else "%m-%d %H:%M"
    for index, moment in enumerate(_date_ticks(start, end)):
        anchor = "start" if index == 0 else "end" if moment == end else "middle"
        body.append(_text(x_of(moment), height - bottom + 16, moment.strftime(date_format), anchor=anchor, size=10))
    if target_seconds is not None:
        y = y_of(target_seconds)
        body.append(f'<line class="target" data-seconds="{target_seconds:g}" x1="{left}" y1="{y:.1f}" '
                    f'x2="{width - right}" y2="{y:.1f}" stroke="{TARGET_COLOUR}" stroke-width="1.5" '
                    f'stroke-dasharray="6 4"/>')
        body.append(_text(left + inset, y - 4, f"target {duration_text(target_seconds)}", size=10))
    measured = [p for p in points if p.seconds is not None]
    path = " ".join(f"{x_of(p.at):.1f},{y_of(p.seconds):.1f}" for p in measured)  # type: ignore[arg-type]
    body.append(f'<g class="series" data-series="{escape(series_name)}" data-points="{len(points)}">'
                f'<polyline points="{path}" fill="none" stroke="{STATUS_COLOURS["completed"]}" stroke-width="1.5"/>')
    for point in points:
        x = x_of(point.at)
        if point.seconds is None:
            y = top + plot_height - 5
            body.append(f'<path class="point point-failed" d="M{x - 4:.1f},{y - 4:.1f} l8,8 m0,-8 l-8,8" '
                        f'stroke="{BEYOND_COLOUR}" stroke-width="2"><title>{escape(point.note)}</title></path>')
            continue
        colour = BEYOND_COLOUR if point.missed else STATUS_COLOURS["completed"]
        body.append(f'<circle class="point{" point-missed" if point.missed else ""}" cx="{x:.1f}" '
                    f'cy="{y_of(point.seconds):.1f}" r="3.5" fill="{colour}"><title>{escape(point.note)}</title></circle>')
    body.append("</g>")
    return _svg(width, height, body, title, "chart trend")


# --- calls per second across an incident ---------------------------------------------------------

CALL_COLOURS = {"failed": "#c93c3c", "abandoned": "#d99a1e"}
ANSWERED_COLOURS = ("#2f6db5", "#2e8b57", "#0e7490", "#6d28d9")


def call_colour(kind: str, answered_kinds: Sequence[str]) -> str:
    if kind in CALL_COLOURS:
        return CALL_COLOURS[kind]
    return ANSWERED_COLOURS[answered_kinds.index(kind) % len(ANSWERED_COLOURS)] if kind in answered_kinds else NEUTRAL_COLOUR


def calls_per_second(counts: dict[str, list[int]], markers: Sequence[Marker], *, width: int = 960) -> str:
    """Stacked columns, one per second: calls answered at each site, failed and abandoned; milestones as lines.

    Offsets (x and markers) are seconds from the series' start."""
    left, right, top, bottom, legend_height = 40, 20, 34, 30, 22
    height = 260
    seconds = max((len(values) for values in counts.values()), default=1)
    plot_width, plot_height = width - left - right, height - top - bottom - legend_height
    peak = max([sum(values[i] for values in counts.values() if i < len(values)) for i in range(seconds)] + [1])
    column = plot_width / seconds
    answered = sorted(kind for kind in counts if kind.startswith("answered"))
    order = [*answered, "abandoned", "failed"]
    body: list[str] = []
    for tick in range(0, peak + 1, max(1, math.ceil(peak / 4))):
        y = top + plot_height * (1 - tick / peak)
        body += [f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID_COLOUR}"/>',
                 _text(left - 6, y + 4, str(tick), anchor="end", size=10)]
    for second in range(seconds):
        base = 0
        for kind in (k for k in order if k in counts):
            value = counts[kind][second] if second < len(counts[kind]) else 0
            if not value:
                continue
            y = top + plot_height * (1 - (base + value) / peak)
            body.append(f'<rect class="series" data-series="{escape(kind)}" data-second="{second}" data-count="{value}" '
                        f'x="{left + second * column:.1f}" y="{y:.1f}" width="{max(column - 0.5, 0.5):.1f}" '
                        f'height="{plot_height * value / peak:.1f}" fill="{call_colour(kind, answered)}"/>')
            base += value
    for tick in time_ticks(seconds, 8):
        if tick <= seconds:
            x = left + tick * column
            body.append(_text(x, top + plot_height + 14, duration_text(tick), anchor="middle", size=10))
    for lane, marker in zip(_marker_lanes([(left + m.at_seconds * column, m.label) for m in markers]), markers,
                            strict=True):
        x = left + marker.at_seconds * column
        if left <= x <= width - right:
            body += [f'<line class="marker" data-label="{escape(marker.label)}" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" '
                     f'y2="{top + plot_height}" stroke="{MARKER_COLOUR}" stroke-dasharray="4 3"/>',
                     _text(x + 3, top - 8 - 12 * lane, marker.label, size=10, colour=MARKER_COLOUR)]
    x = left
    for kind in (k for k in order if k in counts):
        body += [f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{call_colour(kind, answered)}"/>',
                 _text(x + 14, height - 7, kind, size=10)]
        x += 24 + len(kind) * CHARACTER_WIDTH
    total = sum(sum(values) for values in counts.values())
    return _svg(width, height, body, f"{total} calls per second by outcome and site", "calls-chart")
