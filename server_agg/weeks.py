"""``aggregate --weeks W``: estimates pooled over the W ISO weeks ending at ``--period``.

Counting is unchanged (per schema, kind and week); this module keeps the window's weeks, moves
every other valid report to *excluded*, and pools each field's screened weekly support counts
with :func:`server_agg.windows.field_window` (the exact pooled variance of one population
reporting every week). Only aggregates pass here; the one-week view stays the default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ldp.report import parse_period
from server_agg.marginals import platform_marginals
from server_agg.windows import field_window

if TYPE_CHECKING:
    from ldp.schema import Schema
    from server_agg.aggregate import AggregateResult, Counts, FieldResult, GroupResult

__all__ = ["MAX_WEEKS", "Window", "finalize_weeks", "window_periods"]

#: The longest window ``--weeks`` accepts (the issue's default-window search goes this far).
MAX_WEEKS: Final = 12


@dataclasses.dataclass(frozen=True)
class Window:
    """Which weeks an analysis pooled, for every format to say."""

    weeks: int
    periods: tuple[str, ...]

    @property
    def label(self) -> str:
        """``2026-W45..2026-W48`` (one week: the week itself)."""
        if len(self.periods) == 1:
            return self.periods[0]
        return f"{self.periods[0]}..{self.periods[-1]}"

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


def _in_window(counts: Counts, periods: Sequence[str]) -> Counts:
    """``counts`` with only the window's groups; the other valid reports become excluded."""
    from server_agg.aggregate import Counts

    kept = {key: g for key, g in counts.groups.items() if key.period in periods}
    left_out = sum(g.n for key, g in counts.groups.items() if key.period not in periods)
    return Counts(counts.read, counts.excluded + left_out, counts.rejects, kept)


def _pool_group(
    weekly: Sequence[GroupResult], schema: Schema, consistency: str, level: float
) -> tuple[FieldResult, ...]:
    """One kind's fields pooled over the weeks present (``weekly``, oldest first)."""
    from server_agg.aggregate import FieldResult

    out: list[FieldResult] = []
    for spec in schema.kind(weekly[0].kind).fields:
        per_week = [g.field(spec.name) for g in weekly]
        supports = np.asarray([fr.support for fr in per_week], dtype=np.float64)
        n = max(1, round(float(np.mean([fr.estimate.n for fr in per_week]))))
        fw = field_window(spec, supports, n, consistency=consistency, level=level)
        cells = tuple(int(x) for x in supports.sum(axis=0))
        trims = tuple(t for fr in per_week for t in fr.trims)
        out.append(
            FieldResult(spec, fw.estimate, cells, trims=trims, weeks=fw.weeks, share=fw.share)
        )
        for derived in platform_marginals(spec, fw.estimate):
            # Sums of the pooled cells: their variance is A C A^T of the pooled covariance.
            a = np.zeros((len(derived.members), spec.d))
            for row, idx in enumerate(derived.members):
                a[row, idx] = 1.0
            std = np.sqrt(np.clip(np.diag(a @ fw.cov @ a.T), 0.0, None))
            estimate = dataclasses.replace(derived.estimate, std=std)
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


def finalize_weeks(
    counts: Counts,
    schemas: Sequence[Schema] | None,
    *,
    period: str,
    weeks: int,
    consistency: str,
    confidence: float,
    **options: Any,
) -> AggregateResult:
    """Like :func:`server_agg.aggregate.finalize`, pooled over ``weeks`` weeks ending at
    ``period`` (``options``: finalize's other keywords). One group per (schema, kind), labelled
    with the window; its ``n`` is the reports in the window, each field's the mean weekly n.
    The central epsilon after shuffling is per weekly batch and is not shown for a window."""
    from server_agg.aggregate import GroupResult, finalize, kind_privacy, schema_map

    window = Window(weeks, window_periods(period, weeks))
    # Each week's estimates, screened as in the one-week view (their consistency is not used).
    screened = finalize(
        _in_window(counts, window.periods),
        schemas,
        consistency="none",
        confidence=confidence,
        **{**options, "delta": None},
    )
    by_id = schema_map(schemas)
    by_kind: dict[tuple[str, str], list[GroupResult]] = {}
    for group in screened.groups:
        by_kind.setdefault((group.schema_id, group.kind), []).append(group)
    groups = []
    for (schema_id, kind), weekly in sorted(by_kind.items(), key=lambda item: item[0][::-1]):
        weekly.sort(key=lambda g: g.period)
        # Labelled with the weeks actually pooled (a week without reports is not in them).
        present = Window(len(weekly), tuple(g.period for g in weekly))
        fields = _pool_group(weekly, by_id[schema_id], consistency, confidence)
        groups.append(
            GroupResult(
                schema_id,
                kind,
                present.label,
                sum(g.n for g in weekly),
                fields,
                kind_privacy(by_id[schema_id], kind, None, None),
            )
        )
    return dataclasses.replace(
        screened,
        groups=tuple(groups),
        consistency=consistency,
        delta=options.get("delta"),
        window=window,
    )
