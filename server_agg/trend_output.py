"""Trends in every output format: JSON entries, CSV rows, terminal tables and small HTML charts.

:mod:`server_agg.render` owns the answer (one window); this module draws its companion, each
field's estimate over the weeks before it (:mod:`server_agg.trends`), so that a maintainer sees
whether a value is moving and how sure that is. Every format shows the same points: the unbiased
estimate and its ``z std`` interval at the result's confidence. The HTML charts are inline SVG
(no scripts), one per field, with the interval drawn as a band around each line.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from rich.console import RenderableType

    from server_agg.aggregate import AggregateResult
    from server_agg.trends import FieldTrend

__all__ = ["TOP_VALUES", "trend_csv_rows", "trend_html", "trend_renderables", "trends_to_dict"]

#: Values drawn per field (those with the largest latest estimate); JSON and CSV keep all.
TOP_VALUES: Final = 4
#: Points the terminal table shows (the latest); JSON, CSV and HTML show every point.
TABLE_POINTS: Final = 8
#: Line colours of the HTML charts, distinguishable in colour-blind palettes (Okabe-Ito).
_COLOURS: Final = ("#0072b2", "#d55e00", "#009e73", "#cc79a7")


def _pct(x: float) -> str:
    """A share in percent; an unbiased estimate may be negative, but never prints "-0.0%"."""
    shown = round(100 * x, 1)
    return f"{shown + 0.0:.1f}%"


def _short(period: str) -> str:
    """``2026-W48`` -> ``W48`` (the year is in the sentence and the tooltips)."""
    return period.rsplit("-", 1)[-1]


def trends_to_dict(result: AggregateResult) -> list[dict[str, Any]]:
    """The JSON ``trends`` list: one entry per (schema, kind)."""
    return [trend.to_dict(result.confidence) for trend in result.trends]


def trend_csv_rows(result: AggregateResult) -> Iterator[dict[str, Any]]:
    """CSV records (``view`` = ``trend``), one per (kind, field, point, value); ``period`` is
    the point's window and ``estimate`` the unbiased estimate, ``ci_low``/``ci_high`` its
    interval (not clipped)."""
    for trend in result.trends:
        for field in trend.fields:
            for point in field.points:
                low, high = point.interval(result.confidence)
                for i, value in enumerate(field.values):
                    yield {
                        "kind": trend.kind,
                        "period": point.label,
                        "schema": trend.schema_id,
                        "field": field.field,
                        "value": value,
                        "estimate": f"{point.raw[i]:.6g}",
                        "ci_low": f"{low[i]:.6g}",
                        "ci_high": f"{high[i]:.6g}",
                        "raw": f"{point.raw[i]:.6g}",
                        "std": f"{point.std[i]:.6g}",
                        "n": point.n,
                        "confidence": result.confidence,
                        "consistency_step": "none",
                        "weeks": len(point.periods),
                        "view": "trend",
                    }


def trend_renderables(result: AggregateResult) -> Iterator[RenderableType]:
    """rich renderables: per kind its sentence, per field a table of the top values (rows) over
    the latest points (columns), each cell ``estimate +- half-width``."""
    from rich.table import Table
    from rich.text import Text

    from server_agg.trends import MAX_POINTS

    if not result.trends:
        return
    yield Text("")
    yield Text(f"Trends (up to the last {MAX_POINTS} weeks)", style="bold")
    for trend in result.trends:
        yield Text(trend.sentence)
        for field in trend.fields:
            points = field.points[-TABLE_POINTS:]
            table = Table(title=f"{trend.kind} · {field.field}", title_justify="left")
            table.add_column("value")
            for point in points:
                table.add_column(_short(point.end), justify="right")
            for i in field.top(TOP_VALUES):
                cells = [field.values[i]]
                for point in points:
                    low, high = point.interval(result.confidence)
                    cells.append(f"{_pct(point.raw[i])} ±{100 * (high[i] - low[i]) / 2:.1f}")
                table.add_row(*cells)
            yield table


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _nice_top(values: Sequence[float]) -> float:
    """The smallest round share (5-point steps up to 100%) at or above every value."""
    top = max([0.05, *values])
    for candidate in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0):
        if top <= candidate:
            return candidate
    return 1.0


def _svg(kind: str, field: FieldTrend, level: float) -> str:
    """One small chart: a line per top value over the points, its interval as a band."""
    shown = field.top(TOP_VALUES)
    intervals = [p.interval(level) for p in field.points]
    ymax = _nice_top([intervals[t][1][i] for t in range(len(field.points)) for i in shown])
    left, right, top, bottom, width, height = 44, 12, 10, 24, 440, 170
    plot_w, plot_h = width - left - right, height - top - bottom
    count = len(field.points)

    def x(t: int) -> float:
        return left + (plot_w * t / (count - 1) if count > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - min(max(v, 0.0), ymax) / ymax)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" class="trend-chart" '
        f'data-field="{_e(field.field)}" data-kind="{_e(kind)}" '
        f'aria-label="{_e(f"{field.field} over {count} points with {level:.0%} bands")}">',
        f"<title>{_e(field.field)} ({_e(kind)}): trend</title>",
    ]
    for step in range(5):
        v = ymax * step / 4
        parts.append(
            f'<line class="grid" x1="{left}" y1="{y(v):.1f}" x2="{width - right}" '
            f'y2="{y(v):.1f}"/><text class="tick" x="{left - 4}" y="{y(v) + 4:.1f}" '
            f'text-anchor="end">{_e(f"{100 * v:.3g}%")}</text>'
        )
    every = max(1, (count + 7) // 8)
    for t, point in enumerate(field.points):
        if t % every == 0 or t == count - 1:
            parts.append(
                f'<text class="tick" x="{x(t):.1f}" y="{height - 6}" text-anchor="middle">'
                f"{_e(_short(point.end))}</text>"
            )
    for rank, i in enumerate(shown):
        colour = _COLOURS[rank % len(_COLOURS)]
        upper = " ".join(f"{x(t):.1f},{y(intervals[t][1][i]):.1f}" for t in range(count))
        lower = " ".join(f"{x(t):.1f},{y(intervals[t][0][i]):.1f}" for t in reversed(range(count)))
        line = " ".join(f"{x(t):.1f},{y(p.raw[i]):.1f}" for t, p in enumerate(field.points))
        parts.append(
            f'<g class="series" data-value="{_e(field.values[i])}">'
            f'<polygon class="band" points="{upper} {lower}" fill="{colour}" '
            'fill-opacity="0.12" stroke="none"/>'
            f'<polyline class="line" points="{line}" fill="none" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        for t, point in enumerate(field.points):
            low, high = intervals[t][0][i], intervals[t][1][i]
            tip = (
                f"{field.values[i]}, {point.label} (n = {point.n:,}): {_pct(point.raw[i])}, "
                f"{level:.0%} interval [{_pct(low)}, {_pct(high)}]"
            )
            parts.append(
                f'<circle cx="{x(t):.1f}" cy="{y(point.raw[i]):.1f}" r="2.5" '
                f'fill="{colour}"><title>{_e(tip)}</title></circle>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    legend = "".join(
        f'<span><i class="sw" style="background:{_COLOURS[rank % len(_COLOURS)]}"></i>'
        f"{_e(field.values[i])}</span>"
        for rank, i in enumerate(shown)
    )
    return "".join(parts) + f'<p class="legend note">{legend}</p>'


def trend_html(result: AggregateResult) -> str:
    """The page's trends section (empty when no kind has two points)."""
    if not result.trends:
        return ""
    out = ['<section id="trends"><h2>Trends</h2>']
    for trend in result.trends:
        out.append(
            f'<div class="trend-group" data-kind="{_e(trend.kind)}">'
            f'<p class="note">{_e(trend.sentence[:1].upper() + trend.sentence[1:])}; the '
            f"{TOP_VALUES} values with the largest latest estimate are drawn.</p>"
            '<div class="trend-grid">'
        )
        for field in trend.fields:
            out.append(
                f'<figure class="trend" data-kind="{_e(trend.kind)}" '
                f'data-field="{_e(field.field)}"><h3>{_e(trend.kind)} · {_e(field.field)}</h3>'
                f"{_svg(trend.kind, field, result.confidence)}</figure>"
            )
        out.append("</div></div>")
    out.append("</section>")
    return "".join(out)
