"""Trends: each field's unbiased estimate week by week (or window by window), with intervals.

A maintainer's first question after "what do users run?" is "is it changing?". A trend point is
the pooled estimate (:func:`ldp.estimate.pooled_frequencies`) over the ``W`` ISO weeks ending at
one week, for every week of the data up to the analysis' last week; ``W`` is the window the
answer itself used (one week: plain weekly estimates). Points are the *unbiased* estimates and
their ``z std`` intervals, with no consistency step: a step's bias depends on n and on the
truth, so a clipped or renormalised series could move while the users did not. Consecutive
points of a window longer than a week share weeks, so they are correlated (said in the
sentence). Only aggregates pass here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ldp.estimate import PooledChannel, epoch_pair_share, pooled_frequencies
from server_agg.weeks import window_counts, window_label, window_periods

if TYPE_CHECKING:
    from ldp.schema import FieldSpec, Schema
    from server_agg.aggregate import GroupResult

__all__ = [
    "MAX_POINTS",
    "FieldTrend",
    "GroupTrend",
    "TrendPoint",
    "group_trend",
    "pooled_raw",
    "week_trends",
]

#: The most points a trend shows (the latest ones): half a year of weeks.
MAX_POINTS: Final = 26


def pooled_raw(spec: FieldSpec, supports: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The unbiased pooled estimate of ``spec`` over the rows of ``supports`` (one per week,
    the same ``n`` users each week) and its exact standard errors."""
    s = np.asarray(supports, dtype=np.float64)
    weeks = int(s.shape[0])
    est = pooled_frequencies(
        s,
        max(1, int(n)),
        PooledChannel.of(spec.randomizer()),
        epoch_pair_share(spec.epoch_weeks, weeks),
        "none",
        spec.domain,
    )
    return est.raw, est.std


@dataclass(frozen=True)
class TrendPoint:
    """One window of a trend: its weeks, mean weekly n, and per value the unbiased estimate
    and its standard error."""

    end: str
    periods: tuple[str, ...]
    n: int
    raw: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def label(self) -> str:
        """The window, ``2026-W45..2026-W48``, or the week itself."""
        return window_label(self.periods)

    def interval(self, level: float) -> tuple[list[float], list[float]]:
        """``raw -+ z std`` at ``level`` (not clipped: the unbiased estimate's interval)."""
        z = NormalDist().inv_cdf(0.5 + level / 2)
        low = [r - z * s for r, s in zip(self.raw, self.std, strict=True)]
        high = [r + z * s for r, s in zip(self.raw, self.std, strict=True)]
        return low, high


@dataclass(frozen=True)
class FieldTrend:
    """One field's points, oldest first."""

    field: str
    values: tuple[str, ...]
    points: tuple[TrendPoint, ...]

    def top(self, k: int) -> list[int]:
        """Indices of the ``k`` values with the largest latest estimate (ties: domain order)."""
        last = self.points[-1].raw
        return sorted(range(len(self.values)), key=lambda i: (-last[i], i))[:k]

    def to_dict(self, level: float) -> dict[str, Any]:
        """A JSON-ready mapping: per point its window, n and, per value, estimate and interval."""
        points = []
        for p in self.points:
            low, high = p.interval(level)
            points.append(
                {
                    "end": p.end,
                    "label": p.label,
                    "weeks": len(p.periods),
                    "n": p.n,
                    "estimate": list(p.raw),
                    "std": list(p.std),
                    "ci_low": low,
                    "ci_high": high,
                }
            )
        return {"field": self.field, "values": list(self.values), "points": points}


@dataclass(frozen=True)
class GroupTrend:
    """The trends of one (schema, kind): every field over the same windows."""

    schema_id: str
    kind: str
    weeks: int
    fields: tuple[FieldTrend, ...]

    @property
    def sentence(self) -> str:
        """What a point is, for every format to print."""
        span = "week by week" if self.weeks == 1 else f"window by window over {self.weeks} weeks"
        tail = "" if self.weeks == 1 else "; consecutive points share weeks, so they move together"
        return (
            f"trend of {self.kind}, {span}: each point is the unbiased estimate with its "
            f"interval, no consistency step, so points compare like with like{tail}"
        )

    def field(self, name: str) -> FieldTrend:
        """The trend of field ``name``."""
        for trend in self.fields:
            if trend.field == name:
                return trend
        raise KeyError(f"trend {self.kind} has no field {name!r}")

    def to_dict(self, level: float) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "schema_id": self.schema_id,
            "kind": self.kind,
            "weeks": self.weeks,
            "sentence": self.sentence,
            "fields": [f.to_dict(level) for f in self.fields],
        }


def group_trend(
    weekly: Sequence[GroupResult],
    schema: Schema,
    weeks: int,
    *,
    end: str | None = None,
    points: int = MAX_POINTS,
) -> GroupTrend | None:
    """The trend of one (schema, kind) from its screened one-week groups (any order).

    Each point pools the weeks present among the ``weeks`` ending at one week of the data (up
    to ``end``; the latest ``points`` of them). ``None`` when fewer than two points exist: one
    point is the answer itself, not a trend.
    """
    by_period: Mapping[str, GroupResult] = {g.period: g for g in weekly}
    ends = sorted(p for p in by_period if end is None or p <= end)[-points:]
    if len(ends) < 2:
        return None
    first = weekly[0]
    fields = []
    for spec in schema.kind(first.kind).fields:
        trend_points = []
        for last in ends:
            present = [p for p in window_periods(last, weeks) if p in by_period]
            supports, n = window_counts([by_period[p] for p in present], spec.name)
            raw, std = pooled_raw(spec, supports, n)
            trend_points.append(
                TrendPoint(
                    last,
                    tuple(present),
                    n,
                    tuple(float(x) for x in raw),
                    tuple(float(x) for x in std),
                )
            )
        fields.append(FieldTrend(spec.name, tuple(spec.domain), tuple(trend_points)))
        fields.extend(_marginal_trends(spec, trend_points))
    return GroupTrend(first.schema_id, first.kind, weeks, tuple(fields))


def _marginal_trends(spec: FieldSpec, points: Sequence[TrendPoint]) -> list[FieldTrend]:
    """v2's os and arch trends from the platform points: sums of cells, with the standard error
    ``sqrt(diag(A C A^T))`` of the pooled platform covariance C (as the answer's marginals)."""
    from ldp.covariance import frequency_covariance
    from server_agg.marginals import DERIVED_FROM, groups_of, sums_std

    randomizer: Any = spec.randomizer()
    if spec.name != DERIVED_FROM or randomizer.mechanism != "ss":
        return []
    out = []
    for part, name in ((0, "os"), (1, "arch")):
        groups = groups_of(spec.domain, part)
        derived = []
        for point in points:
            weeks = len(point.periods)
            raw = np.asarray(point.raw)
            cov = frequency_covariance(
                randomizer,
                point.n,
                np.clip(raw, 0.0, 1.0),
                weeks=weeks,
                share=epoch_pair_share(spec.epoch_weeks, weeks),
            )
            std = sums_std(list(groups.values()), cov)
            derived.append(
                TrendPoint(
                    point.end,
                    point.periods,
                    point.n,
                    tuple(float(raw[m].sum()) for m in groups.values()),
                    tuple(float(x) for x in std),
                )
            )
        out.append(FieldTrend(name, tuple(groups), tuple(derived)))
    return out


def week_trends(
    groups: Sequence[GroupResult], schemas: Mapping[str, Schema]
) -> tuple[GroupTrend, ...]:
    """Week-by-week trends of the one-week view's groups: one per (schema, kind) seen in at
    least two weeks."""
    by_kind: dict[tuple[str, str], list[GroupResult]] = {}
    for group in groups:
        by_kind.setdefault((group.schema_id, group.kind), []).append(group)
    out = []
    for (schema_id, _kind), weekly in sorted(by_kind.items(), key=lambda item: item[0][::-1]):
        trend = group_trend(weekly, schemas[schema_id], 1)
        if trend is not None:
            out.append(trend)
    return tuple(out)
