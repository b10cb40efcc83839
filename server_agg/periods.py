"""Which report periods are plausible: from the report's schema release to the week after this one.

Any real ISO week decodes, so without this check 500 reports dated ``0001-W01`` to ``2099-W01``
made 500 groups (and a 7.5 MB JSON report). No honest client can date a report before its
schema shipped, or more than a week ahead (one week of slack covers clocks and time zones at a
week boundary). The release week of each schema lives here, on the analyzer's side, and not in
the schema's JSON, whose bytes define the schema id. This module only judges; the pipeline
(:mod:`server_agg.aggregate`) rejects and counts as ``implausible_period``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from ldp.schema import Schema

__all__ = ["SCHEMA_RELEASES", "PeriodWindow", "iso_week", "plausible_periods"]

#: (schema name, version) -> the ISO week it was released. One entry per released schema: add
#: the next version's here when it ships. Keyed by name and version rather than by schema id so
#: that the entry is written once, when the version is named.
SCHEMA_RELEASES: Final[Mapping[tuple[str, int], str]] = {
    ("20i", 1): "2026-W48",  # released 2026-11-28
}


def iso_week(day: date) -> str:
    """``day``'s ISO week as a period string, e.g. ``2026-W48``."""
    year, week, _ = day.isocalendar()
    return f"{year:04d}-W{week:02d}"


@dataclass(frozen=True)
class PeriodWindow:
    """The plausible periods: per schema id ``first[id] <= period <= last``.

    A schema with no release entry is bounded above only. Periods compare as strings: every
    period that reaches this check is a canonical ``YYYY-Www`` (four-digit year, two-digit
    week), whose string order is the order of the weeks.
    """

    last: str
    first: tuple[tuple[str, str], ...] = ()

    def allows(self, schema_id: str, period: str) -> bool:
        """Whether a report of ``schema_id`` dated ``period`` is plausible."""
        if period > self.last:
            return False
        for sid, first in self.first:
            if sid == schema_id:
                return period >= first
        return True


def plausible_periods(
    schemas: Iterable[Schema],
    today: date | None = None,
    releases: Mapping[tuple[str, int], str] = SCHEMA_RELEASES,
) -> PeriodWindow:
    """The window for ``schemas`` on ``today`` (UTC today when ``None``)."""
    day = datetime.now(UTC).date() if today is None else today
    firsts = tuple(
        (s.id, releases[(s.name, s.version)]) for s in schemas if (s.name, s.version) in releases
    )
    return PeriodWindow(iso_week(day + timedelta(days=7)), firsts)
