"""Render an :class:`~server_agg.aggregate.AggregateResult`: terminal table, JSON, CSV, HTML.

Every format carries the same numbers; none ever contains a decrypted report, only aggregates.
The HTML report is one self-contained file: inline CSS and inline SVG charts, no scripts, no
fonts, images or style sheets from anywhere (a Content-Security-Policy of ``default-src 'none'``
makes a browser refuse them even if one slipped in).

Frequencies are fractions in [0, 1]: for a categorical field the share of reports with each
value (they sum to 1 after the ``norm-sub``, ``clip`` and ``mle`` consistency steps); for a set
field the share of users having each item (they need not sum to 1).

JSON (``--format json``), an object::

    format        "20i-agg/aggregate"          version  1
    source        what was read                engine   "local" | "dask"; workers; seconds
    filters       {"kind": ..., "period": ...} (only those given)
    confidence    level of every CI            consistency  the consistency step
    window        {"weeks", "sentence"}, with --weeks W also "periods", "label";
                  with --weeks auto "weeks" is "auto" (each group has its own window)
    trends        [GroupTrend.to_dict(): {"schema_id", "kind", "weeks", "sentence",
                   "fields": [{"field", "values", "points": [{"end", "label", "weeks", "n",
                   "estimate", "std", "ci_low", "ci_high"}]}]}] (kinds seen in >= 2 weeks)
    delta         delta of the central epsilon (null when not computed)
    reports       {"read", "accepted", "excluded", "rejected", "rejects": {reason: count}}
    groups        one per (kind, period, schema): {"schema", "kind", "period", "n",
                  "window": Window.to_dict() | null, "window_choice": WindowChoice | null,
                  "privacy": {"epsilon_report", "epsilon_year",
                              "central": {"epsilon", "delta", "n", "method",
                                          "assumption"} | null},
                  "fields": [{"name", "type", "mechanism", "epsilon_perm", "epsilon_1", "n",
                              "items": [{"value", "estimate", "ci_low", "ci_high",
                                         "significant", "interval_low", "interval_high",
                                         "p_top3", "raw", "std", "support"}],
                              "consistency", "consistency_note",
                              "consistency_choice": ConsistencyChoice.to_dict() | null,
                              "significance": {"rule", "level", "per_value_level", "z",
                                               "sentence"},
                              "ranking": Ranking.to_dict(),
                              "screened": [{"pattern", "count", "limit", "excluded"}]}]}

``read`` counts every stored item; ``accepted`` the reports in some estimate; ``excluded`` the
valid reports left out by ``--kind``/``--period`` or outside the window; ``rejected`` the
skipped ones, by reason (see
:data:`~server_agg.aggregate.REJECT_REASONS`). When a truth is given (the demo), every item also
has ``"truth"`` and ``"covered"`` (whether its CI contains the truth). ``screened`` lists the
report patterns the poisoning screen found over-represented (:mod:`server_agg.poisoning`): the
``excluded`` excess of each is left out of that field's estimate (and ``n``); every format
says so.

Significance and the picture (:mod:`server_agg.readout`, :mod:`ldp.significance`): the interval
*shown* for a value (``interval_low``/``interval_high``; the table's interval column, the
page's whisker) is the one the significance test uses, around the unbiased estimate and
Bonferroni-adjusted over the field's values, and ``significant`` is exactly ``interval_low >
0``; the field's ``significance.sentence`` says so in the table and the page. ``ci_low`` and
``ci_high`` keep their meaning (around ``estimate``, unadjusted). Rankings
(:mod:`ldp.rankings`, exact covariance, seeded draws): ``p_top3`` is each value's probability
of being among the field's true top 3 (top d when d < 3); ``ranking`` shows the top 5 with pair
statements ("build is used more than deploy: 97%"). With a truth, items also have
``in_interval`` (whether the shown interval contains it; the table and page count these).
Each field also names its consistency step (``auto``'s choice differs per field) and why
(:func:`server_agg.estimation.consistency_note`), in every format.

CSV (``--format csv``): one row per (group, field, value), header row first, columns
:data:`CSV_COLUMNS` in this order:

    kind, period, schema, field, field_type, mechanism, value, estimate, ci_low, ci_high,
    significant, raw, std, support, n, confidence, consistency, screened, interval_low,
    interval_high, significance_rule, p_top3, consistency_step, consistency_note, weeks, view

``view`` is ``estimate`` for the answer's rows and ``trend`` for the trend's (after them: one row
per kind, field, point and value, ``period`` the point's window, ``estimate`` the unbiased
estimate and ``ci_low``/``ci_high`` its interval, columns that do not apply left empty; see
:mod:`server_agg.trend_output`).

(``n`` is the field's: the group's reports less any the poisoning screen left out, which
``screened`` counts.)

``estimate`` is after the consistency step; ``raw`` the unbiased estimate before it; ``std`` its
analytic standard error; ``ci_low``/``ci_high`` the normal interval ``estimate +- z std``
clipped to [0, 1]; ``significant`` (``true``/``false``) whether the value's frequency is above
0 at ``confidence``, Bonferroni-corrected over the field's values (exactly ``interval_low >
0``); ``support`` how many reports supported the value (an integer, the sum that the engines
add up); ``n`` the group's reports.
With a truth, two more columns follow: ``truth``, ``covered``. Rejects are not in the CSV (see
JSON or the table).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from ldp.rankings import percent
from server_agg.estimation import consistency_note
from server_agg.trend_output import (
    trend_csv_rows,
    trend_html,
    trend_renderables,
    trends_to_dict,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

    from server_agg.aggregate import AggregateResult, FieldResult, GroupResult
    from server_agg.readout import FieldReadout

__all__ = [
    "CENTRAL_ASSUMPTION",
    "CSV_COLUMNS",
    "FORMATS",
    "Truth",
    "render",
    "table_renderables",
    "to_csv",
    "to_dict",
    "to_html",
    "to_json",
    "to_table",
]

FORMATS: Final = ("table", "json", "csv", "html")
#: What the central epsilon after shuffling assumes, said in words wherever it is printed
#: (table, JSON, HTML, `20i-agg privacy`): it holds only if nobody can tie a report to its
#: sender or to its neighbours in arrival order (issue 14: reports are read in a random order).
CENTRAL_ASSUMPTION: Final = (
    "the collector and the analyzer do not collude and the reports are stored unordered"
)
CSV_COLUMNS: Final = (
    "kind",
    "period",
    "schema",
    "field",
    "field_type",
    "mechanism",
    "value",
    "estimate",
    "ci_low",
    "ci_high",
    "significant",
    "raw",
    "std",
    "support",
    "n",
    "confidence",
    "consistency",
    "screened",
    "interval_low",
    "interval_high",
    "significance_rule",
    "p_top3",
    "consistency_step",
    "consistency_note",
    "weeks",
    "view",
)

#: Known true frequencies (simulations): ``(kind, period, field) -> one number per value``.
Truth = Mapping[tuple[str, str, str], Sequence[float]]


def _truth_of(truth: Truth | None, group: GroupResult, fr: FieldResult) -> list[float] | None:
    if truth is None:
        return None
    found = truth.get((group.kind, group.period, fr.name))
    if found is None:
        return None
    values = [float(x) for x in found]
    if len(values) != fr.estimate.d:
        raise ValueError(
            f"truth for {group.kind}/{group.period}/{fr.name} has {len(values)} values, "
            f"the field has {fr.estimate.d}"
        )
    return values


def window_sentence(result: AggregateResult) -> str:
    """Which weeks the estimates are over, in one line (every format says it)."""
    from server_agg.weeks import MAX_WEEKS, TARGET_HALF_WIDTH

    if result.window is not None:
        return result.window.sentence
    if any(g.choice is not None for g in result.groups):
        return (
            f"window: chosen per kind, the shortest of up to {MAX_WEEKS} ISO weeks in which "
            f"every field's {result.confidence:.0%} half-width is at most "
            f"{100 * TARGET_HALF_WIDTH:g} points, pooled with the exact pooled variance "
            "(--weeks 1: one week; --weeks W: a fixed window)"
        )
    return "window: one ISO week per group (aggregate --weeks W pools W weeks)"


def choice_line(group: GroupResult) -> str | None:
    """Why this group's window was chosen (``--weeks auto``), or ``None``."""
    if group.choice is None:
        return None
    return f"{group.kind} window: {group.choice.reason}"


def _readouts(result: AggregateResult) -> dict[int, FieldReadout]:
    """Every field's significance and ranking, computed once per rendering (by ``id``)."""
    from server_agg.readout import readout

    return {
        id(fr): readout(group, fr, result.confidence)
        for group in result.groups
        for fr in group.fields
    }


def _rows(
    fr: FieldResult, level: float, truth: list[float] | None, ro: FieldReadout
) -> Iterator[dict[str, Any]]:
    """One dict per value of a field, with everything every format shows."""
    est = fr.estimate
    low, high = est.ci(level)
    sig = ro.significance
    for i, value in enumerate(fr.spec.domain):
        row: dict[str, Any] = {
            "value": value,
            "estimate": float(est.freq[i]),
            "ci_low": float(low[i]),
            "ci_high": float(high[i]),
            # The verdict is the drawn interval's: significant <=> interval_low > 0.
            "significant": bool(sig.significant[i]),
            "interval_low": float(sig.low[i]),
            "interval_high": float(sig.high[i]),
            "p_top3": float(ro.p_top[i]),
            "raw": float(est.raw[i]),
            "std": float(est.std[i]),
            "support": int(fr.support[i]),
        }
        if truth is not None:
            row["truth"] = truth[i]
            row["covered"] = bool(low[i] <= truth[i] <= high[i])
            row["in_interval"] = bool(sig.low[i] <= truth[i] <= sig.high[i])
        yield row


def ranking_lines(ro: FieldReadout) -> list[str]:
    """Two lines: each shown value's chance of being in the top k, then the neighbour pairs."""
    ranking = ro.ranking
    statements = ranking.statements()
    shown = len(ranking.order)
    tops = ", ".join(
        f"{ranking.labels[v]} {percent(float(p))}"
        for v, p in zip(ranking.order, ranking.top_k, strict=True)
    )
    lines = [f"in the top {ranking.k} (probability): {tops}"]
    if statements[shown:]:
        lines.append("; ".join(statements[shown:]))
    return lines


# --------------------------------------------------------------------------- JSON, CSV


def to_dict(result: AggregateResult, truth: Truth | None = None) -> dict[str, Any]:
    """The JSON document described in the module docstring, as plain Python values."""
    readouts = _readouts(result)
    groups = []
    for group in result.groups:
        central = group.privacy.central
        fields = []
        for fr in group.fields:
            randomizer = fr.spec.randomizer()
            ro = readouts[id(fr)]
            rule = ro.significance.to_dict()
            del rule["items"]  # the same intervals are in every item
            fields.append(
                {
                    "name": fr.name,
                    "type": fr.spec.kind,
                    "mechanism": randomizer.mechanism,
                    "epsilon_perm": randomizer.epsilon_perm,
                    "epsilon_1": randomizer.epsilon_1,
                    "n": fr.estimate.n,
                    "items": list(_rows(fr, result.confidence, _truth_of(truth, group, fr), ro)),
                    "consistency": fr.estimate.consistency,
                    "consistency_note": consistency_note(fr, result.consistency),
                    "consistency_choice": None
                    if fr.estimate.choice is None
                    else fr.estimate.choice.to_dict(),
                    "significance": rule,
                    "ranking": ro.ranking.to_dict(),
                    "screened": [
                        {
                            "pattern": list(t.pattern),
                            "count": t.count,
                            "limit": t.limit,
                            "excluded": t.excluded,
                        }
                        for t in fr.trims
                    ],
                }
            )
        groups.append(
            {
                "schema": group.schema_id,
                "kind": group.kind,
                "period": group.period,
                "n": group.n,
                "window": None if group.window is None else group.window.to_dict(),
                "window_choice": None if group.choice is None else group.choice.to_dict(),
                "privacy": {
                    "epsilon_report": group.privacy.epsilon_report,
                    # null for v1 reports: their per-value memo has no finite yearly bound.
                    "epsilon_year": group.privacy.epsilon_year
                    if math.isfinite(group.privacy.epsilon_year)
                    else None,
                    "central": None
                    if central is None
                    else {
                        "epsilon": central.eps,
                        "delta": central.delta,
                        "n": central.n,
                        "method": central.method,
                        "assumption": CENTRAL_ASSUMPTION,
                    },
                },
                "fields": fields,
            }
        )
    return {
        "format": "20i-agg/aggregate",
        "version": 1,
        "source": result.source,
        "engine": result.engine,
        "workers": result.workers,
        "seconds": round(result.seconds, 3),
        "filters": dict(result.filters),
        "confidence": result.confidence,
        "consistency": result.consistency,
        "window": _window_dict(result),
        "delta": result.delta,
        "reports": {
            "read": result.read,
            "accepted": result.accepted,
            "excluded": result.excluded,
            "rejected": result.rejected,
            "rejects": dict(result.rejects),
        },
        "groups": groups,
        "trends": trends_to_dict(result),
    }


def _window_dict(result: AggregateResult) -> dict[str, Any]:
    if result.window is not None:
        return result.window.to_dict()
    auto = any(g.choice is not None for g in result.groups)
    return {"weeks": "auto" if auto else 1, "sentence": window_sentence(result)}


def to_json(result: AggregateResult, truth: Truth | None = None) -> str:
    """Pretty-printed JSON (see the module docstring for the layout)."""
    return json.dumps(to_dict(result, truth), indent=2, allow_nan=False) + "\n"


def to_csv(result: AggregateResult, truth: Truth | None = None) -> str:
    """CSV with the columns :data:`CSV_COLUMNS` (plus ``truth``, ``covered`` with a truth)."""
    out = io.StringIO()
    columns = list(CSV_COLUMNS) + (["truth", "covered"] if truth is not None else [])
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    readouts = _readouts(result)
    for group in result.groups:
        for fr in group.fields:
            mechanism = fr.spec.randomizer().mechanism
            ro = readouts[id(fr)]
            rows = _rows(fr, result.confidence, _truth_of(truth, group, fr), ro)
            for row in rows:
                record = {
                    "kind": group.kind,
                    "period": group.period,
                    "schema": group.schema_id,
                    "field": fr.name,
                    "field_type": fr.spec.kind,
                    "mechanism": mechanism,
                    "n": fr.estimate.n,
                    "confidence": result.confidence,
                    "consistency": result.consistency,
                    "screened": sum(t.excluded for t in fr.trims),
                    "significance_rule": ro.significance.rule,
                    "consistency_step": fr.estimate.consistency,
                    "weeks": fr.weeks,
                    "consistency_note": consistency_note(fr, result.consistency),
                    "view": "estimate",
                    **row,
                }
                for key in ("significant", "covered"):
                    if key in record:
                        record[key] = "true" if record[key] else "false"
                for key in (
                    "estimate",
                    "ci_low",
                    "ci_high",
                    "interval_low",
                    "interval_high",
                    "p_top3",
                    "raw",
                    "std",
                    "truth",
                ):
                    if key in record:
                        record[key] = f"{record[key]:.6g}"
                writer.writerow(record)
    writer.writerows(trend_csv_rows(result))
    return out.getvalue()


# --------------------------------------------------------------------------- terminal table


def screen_notes(fr: FieldResult) -> list[str]:
    """One line per pattern the poisoning screen left (partly) out of ``fr``'s estimate."""
    return [
        f"poisoning screen: {fr.name} pattern {{{', '.join(t.pattern)}}} seen {t.count} times, "
        f"at most {t.limit} from honest clients: {t.excluded} reports left out of this field"
        for t in fr.trims
    ]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _bound(x: float) -> str:
    """An interval end: like :func:`_pct`, but a positive end never prints as "0.0%" (a
    significant value's interval must visibly start above 0)."""
    text = _pct(x)
    return f"{100 * x:.1g}%" if x > 0 and text == "0.0%" else text


def _interval(row: Mapping[str, Any]) -> str:
    return f"[{_bound(row['interval_low'])}, {_bound(row['interval_high'])}]"


def table_renderables(
    result: AggregateResult, truth: Truth | None = None
) -> Iterator[RenderableType]:
    """rich renderables: a summary line, then one table per field of every group."""
    from rich.table import Table
    from rich.text import Text

    level = result.confidence
    rejects = ", ".join(f"{k} {v}" for k, v in result.rejects.items()) or "none"
    yield Text(
        f"{result.read} reports read, {result.accepted} used, {result.excluded} excluded by "
        f"filters or window, {result.rejected} rejected ({rejects}); {result.consistency} "
        f"consistency, {100 * level:g}% confidence (Bonferroni-adjusted over each field's values)"
    )
    yield Text(window_sentence(result))
    readouts = _readouts(result)
    if not result.groups:
        yield Text("no valid reports: nothing to estimate", style="bold")
        if result.read and result.rejects.get("decrypt") == result.read:
            yield Text(
                "every report failed to decrypt: is --key the private key whose public half "
                "the clients use?",
                style="bold red",
            )
    for group in result.groups:
        privacy = group.privacy
        central = privacy.central
        line = (
            f"{group.kind} {group.period}: n = {group.n}, epsilon per report "
            f"{privacy.epsilon_report:.3g}, any 52 weeks at most {_year(privacy.epsilon_year)}"
        )
        if central is not None:
            line += (
                f", central ({central.eps:.3g}, {central.delta:.3g})-DP after shuffling,"
                f" assuming {CENTRAL_ASSUMPTION}"
            )
        yield Text("")
        yield Text(line, style="bold")
        why = choice_line(group)
        if why is not None:
            yield Text(why)
        for fr in group.fields:
            field_truth = _truth_of(truth, group, fr)
            randomizer = fr.spec.randomizer()
            title = (
                f"{group.kind} {group.period} · {fr.name} ({fr.spec.kind}, {randomizer.mechanism}, "
                f"ε₁ {randomizer.epsilon_1:.3g}, ε∞ {randomizer.epsilon_perm:.3g})"
            )
            yield Text(title, style="bold")
            ro = readouts[id(fr)]
            table = Table(expand=False)
            table.add_column("value")
            table.add_column("estimate", justify="right")
            table.add_column(f"interval ({ro.significance.per_value_level:.2%})", justify="right")
            table.add_column("significant", justify="center")
            if field_truth is not None:
                table.add_column("truth", justify="right")
                table.add_column("in interval", justify="center")
            covered = 0
            for row in _rows(fr, level, field_truth, ro):
                cells = [
                    row["value"],
                    _pct(row["estimate"]),
                    _interval(row),
                    "yes" if row["significant"] else "",
                ]
                if field_truth is not None:
                    covered += row["in_interval"]
                    cells += [_pct(row["truth"]), "yes" if row["in_interval"] else "NO"]
                table.add_row(*cells)
            if field_truth is not None:
                table.caption = (
                    f"drawn interval covers the truth for {covered}/{fr.estimate.d} values"
                )
                table.caption_justify = "left"
            yield table
            yield Text(consistency_note(fr, result.consistency))
            yield Text(ro.significance.sentence)
            for line in ranking_lines(ro):
                yield Text(line)
            for note in screen_notes(fr):
                yield Text(note, style="bold yellow")
    yield from trend_renderables(result)


def to_table(result: AggregateResult, truth: Truth | None = None, *, width: int = 100) -> str:
    """The terminal tables as plain text (no colour codes), e.g. for ``--out FILE``."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    for item in table_renderables(result, truth):
        console.print(item)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


# --------------------------------------------------------------------------- HTML

_CSS: Final = """
:root { color-scheme: light; --ink: #1f2430; --muted: #5b6472; --line: #d7dce3;
  --bar: #2f6db5; --bar-weak: #a9bfd9; --truth: #d1495b; --bg: #ffffff; --panel: #f5f7fa; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  background: var(--bg); margin: 0 auto; max-width: 980px; padding: 24px; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: 0 0 4px; } h2 { font-size: 1.25rem; margin: 32px 0 8px; }
h3 { font-size: 1.05rem; margin: 20px 0 4px; }
.meta, figcaption, .note { color: var(--muted); font-size: 0.9rem; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; min-width: 140px; }
.card b { display: block; font-size: 1.3rem; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 8px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure.chart { margin: 12px 0 20px; }
svg { max-width: 100%; height: auto; font-size: 12px; }
svg .label { fill: var(--ink); } svg .tick { fill: var(--muted); }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .bar { fill: var(--bar); } svg .bar.weak { fill: var(--bar-weak); }
svg .whisker { stroke: var(--ink); stroke-width: 1.5; }
svg .truth { fill: var(--truth); }
.trend-grid { display: flex; flex-wrap: wrap; gap: 4px 20px; }
figure.trend { margin: 4px 0 8px; width: 440px; max-width: 100%; }
figure.trend h3 { margin: 8px 0 2px; font-size: 0.95rem; }
details { margin: 4px 0 12px; } summary { cursor: pointer; color: var(--muted); }
.legend span { margin-right: 16px; } .sw { display: inline-block; width: 12px; height: 12px;
  vertical-align: -1px; margin-right: 4px; border-radius: 2px; }
"""

#: Axis maxima and how many grid steps each gets, so that every tick is a round percentage.
_NICE_MAX: Final = (
    (0.01, 5),
    (0.02, 4),
    (0.05, 5),
    (0.1, 5),
    (0.2, 4),
    (0.25, 5),
    (0.4, 4),
    (0.5, 5),
    (0.6, 6),
    (0.8, 4),
    (1.0, 5),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _axis(values: Sequence[float]) -> tuple[float, int]:
    top = max([0.0, *values])
    for candidate, steps in _NICE_MAX:
        if top <= candidate:
            return candidate, steps
    return 1.0, 5


def _svg_chart(
    group: GroupResult, fr: FieldResult, rows: list[dict[str, Any]], ro: FieldReadout
) -> str:
    """Horizontal bars (estimate) with the significance intervals as whiskers, one row per
    value (dark exactly when the whisker's low end is above 0); truth as a red diamond."""
    truth = [r["truth"] for r in rows] if rows and "truth" in rows[0] else None
    drawn = f"{ro.significance.per_value_level:.2%}"
    label_w, value_w, row_h, top, bottom = 118, 190, 24, 22, 26
    plot_w = 420
    width = label_w + plot_w + value_w
    height = top + row_h * len(rows) + bottom
    xmax, ticks = _axis([r["interval_high"] for r in rows] + (list(truth) if truth else []))

    def x(v: float) -> float:
        return label_w + plot_w * min(max(v, 0.0), xmax) / xmax

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" class="field-chart" '
        f'data-field="{_e(fr.name)}" data-kind="{_e(group.kind)}" '
        f'data-period="{_e(group.period)}" '
        f'aria-label="{_e(f"{fr.name}: estimated frequencies with {drawn} intervals")}">',
        f"<title>{_e(fr.name)} ({_e(group.kind)}, {_e(group.period)})</title>",
    ]
    for t in range(ticks + 1):
        v = xmax * t / ticks
        tx = x(v)
        parts.append(
            f'<line class="grid" x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" '
            f'y2="{height - bottom + 4}"/>'
        )
        parts.append(
            f'<text class="tick" x="{tx:.1f}" y="{height - 8}" text-anchor="middle">'
            f"{_e(f'{100 * v:.3g}%')}</text>"
        )
    for i, row in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        x0, xe = x(0.0), x(row["estimate"])
        xl, xh = x(row["interval_low"]), x(row["interval_high"])
        if row["significant"]:
            # Its low end is above 0, however little: draw it visibly off the axis.
            xl = max(xl, x0 + 1.0)
            xh = max(xh, xl)
        weak = "" if row["significant"] else " weak"
        tip = (
            f"{row['value']}: {_pct(row['estimate'])}, {drawn} interval {_interval(row)}, "
            f"P(top {ro.ranking.k}) {percent(row['p_top3'])}, support {row['support']}"
        )
        if truth is not None:
            tip += f", truth {_pct(row['truth'])}"
        parts.append(f'<g class="row" data-value="{_e(row["value"])}"><title>{_e(tip)}</title>')
        parts.append(
            f'<text class="label" x="{label_w - 8}" y="{cy + 4:.1f}" text-anchor="end">'
            f"{_e(row['value'])}</text>"
        )
        parts.append(
            f'<rect class="bar{weak}" x="{x0:.1f}" y="{cy - 7:.1f}" '
            f'width="{max(xe - x0, 0.0):.1f}" height="14" rx="2"/>'
        )
        parts.append(
            f'<line class="whisker" x1="{xl:.1f}" y1="{cy:.1f}" x2="{xh:.1f}" y2="{cy:.1f}"/>'
            f'<line class="whisker" x1="{xl:.1f}" y1="{cy - 5:.1f}" x2="{xl:.1f}" '
            f'y2="{cy + 5:.1f}"/>'
            f'<line class="whisker" x1="{xh:.1f}" y1="{cy - 5:.1f}" x2="{xh:.1f}" '
            f'y2="{cy + 5:.1f}"/>'
        )
        if truth is not None:
            tx = x(row["truth"])
            parts.append(
                f'<path class="truth" d="M{tx:.1f} {cy - 6:.1f} L{tx + 5:.1f} {cy:.1f} '
                f'L{tx:.1f} {cy + 6:.1f} L{tx - 5:.1f} {cy:.1f} Z"/>'
            )
        parts.append(
            f'<text class="label" x="{label_w + plot_w + 10}" y="{cy + 4:.1f}">'
            f"{_e(_pct(row['estimate']))} "
            f'<tspan class="tick">{_e(_interval(row))}'
            "</tspan></text>"
        )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _html_field_table(rows: list[dict[str, Any]], ro: FieldReadout, with_truth: bool) -> str:
    head = (
        "<tr><th>value</th><th>estimate</th>"
        f"<th>interval ({ro.significance.per_value_level:.2%})</th><th>significant</th>"
        f"<th>P(top {ro.ranking.k})</th><th>raw</th><th>std</th>"
        "<th>support</th>" + ("<th>truth</th><th>in interval</th>" if with_truth else "") + "</tr>"
    )
    body = []
    for r in rows:
        cells = (
            f"<td>{_e(r['value'])}</td><td>{_pct(r['estimate'])}</td>"
            f"<td>{_e(_interval(r))}</td>"
            f"<td>{'yes' if r['significant'] else ''}</td><td>{percent(r['p_top3'])}</td>"
            f"<td>{r['raw']:.4f}</td><td>{r['std']:.4f}</td><td>{r['support']}</td>"
        )
        if with_truth:
            cells += f"<td>{_pct(r['truth'])}</td><td>{'yes' if r['in_interval'] else 'NO'}</td>"
        body.append(f"<tr>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _num(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3g}"


def _year(x: float) -> str:
    """A yearly bound; v1 reports (a memo per value) have none."""
    return "unbounded (schema v1)" if not math.isfinite(x) else f"{x:.3g}"


def to_html(
    result: AggregateResult,
    truth: Truth | None = None,
    *,
    title: str = "20i telemetry report",
    generated: datetime | None = None,
) -> str:
    """One self-contained HTML page: summary, rejects, privacy, one SVG chart per field."""
    level = result.confidence
    when = (generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {_e(when)} from {_e(result.source or "input")} '
        f"by the {_e(result.engine)} engine ({result.workers} worker"
        f"{'s' if result.workers != 1 else ''}, {result.seconds:.1f} s). "
        f"Estimates after the {_e(result.consistency)} consistency step; whiskers are "
        f"{100 * level:g}% confidence intervals around the unbiased estimate, "
        "Bonferroni-adjusted over each field's values, and a bar is dark exactly when its "
        "whisker lies above 0 (each field says how).</p>",
    ]
    window = window_sentence(result)
    out.append(f'<p class="meta window">{_e(window[:1].upper() + window[1:])}.</p>')
    if result.filters:
        shown = ", ".join(f"{k} = {v}" for k, v in result.filters.items())
        out.append(f'<p class="meta">Filters: {_e(shown)}</p>')
    out.append('<section id="reports"><h2>Reports</h2><div class="cards">')
    for label, value in (
        ("read", result.read),
        ("used", result.accepted),
        ("excluded by filters or window", result.excluded),
        ("rejected", result.rejected),
    ):
        out.append(f'<div class="card"><b>{value:,}</b>{_e(label)}</div>')
    out.append("</div>")
    if result.rejects:
        out.append("<table><tr><th>rejected because</th><th>reports</th></tr>")
        for reason, count in result.rejects.items():
            out.append(f"<tr><td>{_e(reason)}</td><td>{count:,}</td></tr>")
        out.append("</table>")
    else:
        out.append('<p class="note">No report was rejected.</p>')
    if len(result.groups) > 1:
        out.append("<table><tr><th>kind</th><th>period</th><th>reports (n)</th></tr>")
        for group in result.groups:
            out.append(
                f"<tr><td>{_e(group.kind)}</td><td>{_e(group.period)}</td><td>{group.n:,}</td></tr>"
            )
        out.append("</table>")
    out.append("</section>")

    out.append('<section id="privacy"><h2>Privacy parameters</h2>')
    seen: set[tuple[str, str]] = set()
    for group in result.groups:
        privacy = group.privacy
        if (group.schema_id, group.kind) not in seen:
            seen.add((group.schema_id, group.kind))
            out.append(
                f'<h3>{_e(group.kind)} <span class="meta">schema {_e(group.schema_id)}</span>'
                "</h3><table><tr><th>field</th><th>mechanism</th><th>ε per report (ε₁)</th>"
                "<th>ε permanent (ε∞)</th></tr>"
            )
            for name, mechanism, eps_perm, eps_1 in privacy.fields:
                out.append(
                    f"<tr><td>{_e(name)}</td><td>{_e(mechanism)}</td><td>{_num(eps_1)}</td>"
                    f"<td>{_num(eps_perm)}</td></tr>"
                )
            out.append(
                f"<tr><td><b>one report</b></td><td></td><td><b>{_num(privacy.epsilon_report)}"
                "</b></td><td></td></tr></table>"
                f'<p class="note">Proven bound on everything one user\'s reports of this kind '
                f"reveal in any 52 weeks, whatever their values do: ε = "
                f"{_year(privacy.epsilon_year)}.</p>"
            )
        central = privacy.central
        if central is not None:
            out.append(
                f'<p class="note">{_e(group.period)}: after shuffling these {central.n:,} '
                f"reports, the batch is ({_num(central.eps)}, {central.delta:.2g})-DP "
                f"(central, {_e(central.method)} bound of Feldman, McMillan &amp; Talwar 2021), "
                f"assuming {_e(CENTRAL_ASSUMPTION)}.</p>"
            )
    if not result.groups:
        out.append('<p class="note">No valid reports, so no privacy parameters to show.</p>')
    out.append("</section>")

    legend = (
        '<p class="legend note"><span><i class="sw" style="background:#2f6db5"></i>estimate, '
        'significantly above 0</span><span><i class="sw" style="background:#a9bfd9"></i>'
        "not significant</span><span>— CI</span>"
        + (
            '<span><i class="sw" style="background:#d1495b"></i>simulated truth</span>'
            if truth is not None
            else ""
        )
        + "</p>"
    )
    readouts = _readouts(result)
    for group in result.groups:
        out.append(
            f'<section class="group" data-kind="{_e(group.kind)}" '
            f'data-period="{_e(group.period)}"><h2>{_e(group.kind)} · {_e(group.period)} '
            f'<span class="meta">n = {group.n:,}</span></h2>{legend}'
        )
        why = choice_line(group)
        if why is not None:
            out.append(f'<p class="note window-choice">{_e(why)}.</p>')
        for fr in group.fields:
            field_truth = _truth_of(truth, group, fr)
            ro = readouts[id(fr)]
            rows = list(_rows(fr, level, field_truth, ro))
            randomizer = fr.spec.randomizer()
            caption = (
                f"{fr.spec.kind} field, {randomizer.mechanism}, ε₁ = {randomizer.epsilon_1:.3g}, "
                f"ε∞ = {randomizer.epsilon_perm:.3g}"
            )
            if fr.spec.kind == "set":
                caption += "; share of users having each item"
            if field_truth is not None:
                covered = sum(r["in_interval"] for r in rows)
                caption += f"; drawn interval covers the truth for {covered}/{len(rows)} values"
            for note in screen_notes(fr):
                caption += f"; {note}"
            out.append(
                f'<figure class="chart" data-field="{_e(fr.name)}">'
                f"<h3>{_e(fr.name)}</h3>{_svg_chart(group, fr, rows, ro)}"
                f"<figcaption>{_e(caption)}</figcaption>"
                f'<p class="note consistency">{_e(consistency_note(fr, result.consistency))}</p>'
                f'<p class="note significance">{_e(ro.significance.sentence)}</p>'
                f'<ul class="ranking note">'
                + "".join(f"<li>{_e(line)}</li>" for line in ranking_lines(ro))
                + "</ul>"
                f"<details><summary>numbers</summary>"
                f"{_html_field_table(rows, ro, field_truth is not None)}</details></figure>"
            )
        out.append("</section>")
    out.append(trend_html(result))
    out.append("</body></html>\n")
    return "\n".join(out)


def render(result: AggregateResult, fmt: str, truth: Truth | None = None) -> str:
    """``fmt`` is one of :data:`FORMATS`."""
    if fmt == "table":
        return to_table(result, truth)
    if fmt == "json":
        return to_json(result, truth)
    if fmt == "csv":
        return to_csv(result, truth)
    if fmt == "html":
        return to_html(result, truth)
    raise ValueError(f"format ({fmt!r}) must be one of {', '.join(FORMATS)}")
