"""``aggregate --weeks W|auto``: estimates pooled over the weeks ending at ``--period``.

A project with a thousand weekly users learns little from one week (issue 15). Counting is
unchanged (per schema, kind and week); this module keeps a window's weeks, moves every other
valid report to *excluded*, and pools each field's screened weekly support counts with
:func:`server_agg.windows.field_window` (the exact pooled variance of one population reporting
every week). ``auto`` (the CLI's default) picks, per (schema, kind), the shortest window of up
to 12 weeks in which every field's half-width is at most 5 points, and says why; ``--weeks 1``
keeps the one-week view. Only aggregates pass here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, timedelta
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ldp.report import parse_period
from server_agg.marginals import platform_marginals, sums_std
from server_agg.windows import FieldWidth, choose_window, field_window

if TYPE_CHECKING:
    from ldp.schema import Schema
    from server_agg.aggregate import AggregateResult, Counts, FieldResult, GroupResult

__all__ = [
    "AUTO_WEEKS",
    "MAX_WEEKS",
    "TARGET_HALF_WIDTH",
    "Window",
    "finalize_weeks",
    "window_counts",
    "window_label",
    "window_periods",
]

#: The longest window ``--weeks`` accepts (the issue's default-window search goes this far).
MAX_WEEKS: Final = 12
#: ``--weeks auto``: choose the window per (schema, kind) from the data (the CLI's default).
AUTO_WEEKS: Final = "auto"
#: ``auto``'s target: every field's largest 95% half-width at most 5 points.
TARGET_HALF_WIDTH: Final = 0.05


@dataclasses.dataclass(frozen=True)
class Window:
    """Which weeks an analysis pooled, for every format to say."""

    weeks: int
    periods: tuple[str, ...]

    @property
    def label(self) -> str:
        """``2026-W45..2026-W48`` (one week: the week itself)."""
        return window_label(self.periods)

    @property
    def sentence(self) -> str:
        """The line every format prints."""
        if self.weeks == 1:
            return f"window: one ISO week ({self.label})"
        return (
            f"window: {self.weeks} ISO weeks {self.label}, pooled (exact pooled variance, "
            "assuming the same users report every week; n is the mean weekly n)"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "weeks": self.weeks,
            "periods": list(self.periods),
            "label": self.label,
            "sentence": self.sentence,
        }


def window_label(periods: Sequence[str]) -> str:
    """``2026-W45..2026-W48`` for consecutive ``periods`` (one week: the week itself)."""
    if len(periods) == 1:
        return periods[0]
    return f"{periods[0]}..{periods[-1]}"


def window_counts(groups: Sequence[GroupResult], name: str) -> tuple[np.ndarray, int]:
    """Field ``name``'s support counts in ``groups`` (one row per week) and its mean weekly n,
    rounded: what a pooled window is estimated from."""
    per_week = [g.field(name) for g in groups]
    supports = np.asarray([fr.support for fr in per_week], dtype=np.float64)
    return supports, round(float(np.mean([fr.estimate.n for fr in per_week])))


def window_periods(period: str, weeks: int) -> tuple[str, ...]:
    """The ``weeks`` consecutive ISO weeks ending at ``period``, oldest first."""
    if isinstance(weeks, bool) or not isinstance(weeks, int) or not 1 <= weeks <= MAX_WEEKS:
        raise ValueError(f"weeks ({weeks!r}) must be an integer in [1, {MAX_WEEKS}]")
    year, week = parse_period(period)
    monday = date.fromisocalendar(year, week, 1)
    out = []
    for back in range(weeks - 1, -1, -1):
        y, w, _ = (monday - timedelta(weeks=back)).isocalendar()
        out.append(f"{y}-W{w:02d}")
    return tuple(out)


def _pool_group(
    weekly: Sequence[GroupResult], schema: Schema, consistency: str, level: float
) -> tuple[FieldResult, ...]:
    """One kind's fields pooled over the weeks present (``weekly``, oldest first)."""
    from server_agg.aggregate import FieldResult

    out: list[FieldResult] = []
    for spec in schema.kind(weekly[0].kind).fields:
        supports, mean_n = window_counts(weekly, spec.name)
        fw = field_window(spec, supports, max(1, mean_n), consistency=consistency, level=level)
        cells = tuple(int(x) for x in supports.sum(axis=0))
        trims = tuple(t for g in weekly for t in g.field(spec.name).trims)
        out.append(
            FieldResult(spec, fw.estimate, cells, trims=trims, weeks=fw.weeks, share=fw.share)
        )
        for derived in platform_marginals(spec, fw.estimate):
            # Sums of the pooled cells: their variance is A C A^T of the pooled covariance.
            estimate = dataclasses.replace(derived.estimate, std=sums_std(derived.members, fw.cov))
            out.append(
                FieldResult(
                    derived.spec,
                    estimate,
                    derived.support(cells),
                    derived_from=spec.name,
                    weeks=fw.weeks,
                    share=fw.share,
                )
            )
    return tuple(out)


def _candidates(
    weekly: Sequence[GroupResult], schema: Schema, last: str, level: float
) -> dict[int, list[FieldWidth]]:
    """Per window length W (1..12, no longer than the data reaches back), each field's largest
    half-width of the unbiased pooled estimate over the weeks present among the W ending at
    ``last``. Only the standard errors matter here, so no consistency step is run."""
    from server_agg.trends import pooled_raw

    z = NormalDist().inv_cdf(0.5 + level / 2)
    earliest = min(g.period for g in weekly)
    out: dict[int, list[FieldWidth]] = {}
    for weeks in range(1, MAX_WEEKS + 1):
        periods = window_periods(last, weeks)
        present = [g for g in weekly if g.period in periods]
        if present:
            widths = []
            for spec in schema.kind(weekly[0].kind).fields:
                _, std = pooled_raw(spec, *window_counts(present, spec.name))
                widths.append(FieldWidth(spec.name, float(z * np.max(std))))
            out[weeks] = widths
        if periods[0] <= earliest:
            break
    return out


def finalize_weeks(
    counts: Counts,
    schemas: Sequence[Schema] | None,
    *,
    period: str | None,
    weeks: int | str,
    consistency: str,
    confidence: float,
    target: float = TARGET_HALF_WIDTH,
    trends: bool = True,
    **options: Any,
) -> AggregateResult:
    """Like :func:`server_agg.aggregate.finalize`, pooled over a window ending at ``period``
    (the latest week of the data when ``None``); ``options`` are finalize's other keywords.

    ``weeks`` is the window length, or ``"auto"``: per (schema, kind), the shortest window of
    up to 12 weeks in which every field's half-width is ``<= target``
    (:func:`server_agg.windows.choose_window`; the group's ``choice`` says which and why). One
    group per (schema, kind), labelled with the weeks it pooled; its ``n`` is the reports in
    them, each field's the mean weekly n. The central epsilon after shuffling is per weekly
    batch: shown for a one-week window only. With ``trends``, each group also gets its trend
    over the same window length (:mod:`server_agg.trends`).
    """
    from server_agg.aggregate import GroupResult, finalize, kind_privacy, schema_map
    from server_agg.trends import group_trend

    auto = weeks == AUTO_WEEKS
    fixed = None
    if not auto:
        if period is None or not isinstance(weeks, int):
            raise ValueError("a fixed window needs an integer weeks and its last period")
        fixed = Window(weeks, window_periods(period, weeks))
    delta = options.get("delta")
    # Each week's estimates, screened as in the one-week view (their consistency is not used).
    screened = finalize(
        counts, schemas, consistency="none", confidence=confidence, **{**options, "delta": None}
    )
    last = period or max((g.period for g in screened.groups), default=None)
    by_id = schema_map(schemas)
    by_kind: dict[tuple[str, str], list[GroupResult]] = {}
    for group in screened.groups:
        if last is not None and group.period <= last:
            by_kind.setdefault((group.schema_id, group.kind), []).append(group)
    groups = []
    found = []
    for (schema_id, kind), weekly in sorted(by_kind.items(), key=lambda item: item[0][::-1]):
        assert last is not None  # by_kind is empty without a last week (narrows the type)
        weekly.sort(key=lambda g: g.period)
        schema = by_id[schema_id]
        choice = None
        length = weeks
        if auto:
            candidates = _candidates(weekly, schema, last, confidence)
            if not candidates:  # nothing of this kind in the 12 weeks up to the end: excluded
                continue
            choice = choose_window(candidates, target)
            length = choice.weeks
        assert isinstance(length, int)
        periods = window_periods(last, length)
        pooled = [g for g in weekly if g.period in periods]
        if not pooled:
            continue
        # Labelled with the weeks actually pooled (a week without reports is not in them).
        present = Window(len(pooled), tuple(g.period for g in pooled))
        n = sum(g.n for g in pooled)
        privacy = kind_privacy(schema, kind, n if len(pooled) == 1 else None, delta)
        fields = _pool_group(pooled, schema, consistency, confidence)
        groups.append(
            GroupResult(
                schema_id, kind, present.label, n, fields, privacy, window=present, choice=choice
            )
        )
        if trends:
            trend = group_trend(weekly, schema, length, end=last)
            if trend is not None:
                found.append(trend)
    pooled_reports = sum(g.n for g in groups)
    return dataclasses.replace(
        screened,
        groups=tuple(groups),
        excluded=counts.excluded + screened.accepted - pooled_reports,
        consistency=consistency,
        delta=delta,
        window=fixed,
        trends=tuple(found),
    )
