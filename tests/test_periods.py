"""Plausible periods: [the report's schema release, the week after this one]; the rest rejected."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ldp.envelope import seal
from ldp.report import pad, parse_period
from ldp.schema import canonical_dumps, shipped_schema
from server_agg.aggregate import MemorySource, aggregate, count_plaintexts
from server_agg.app import app
from server_agg.keys import generate, load_private, load_public
from server_agg.periods import SCHEMA_RELEASES, PeriodWindow, iso_week, plausible_periods
from server_agg.simulate import GeneratorSource, make_population
from server_agg.store import Store

SCHEMA = shipped_schema()
TODAY = date(2026, 12, 7)  # a Monday of 2026-W50
GOOD = "2026-W50"


def _reports(n: int, period: str = GOOD, seed: int = 3) -> list[bytes]:
    population = make_population(n, seed=seed, periods=(period,))
    return list(population.reports(GeneratorSource(np.random.default_rng(seed))))


def _redated(report: bytes, period: str) -> bytes:
    doc = json.loads(report)
    doc["period"] = period
    return pad(canonical_dumps(doc).encode())


def _spread_weeks(n: int) -> list[str]:
    """``n`` real ISO weeks from 0001-W01 to 2099-W01, as the attack in issue 16 used."""
    start, stop = date.fromisocalendar(1, 1, 1), date.fromisocalendar(2099, 1, 1)
    step = (stop - start) / (n - 1)
    weeks = [iso_week(start + step * i) for i in range(n)]
    for week in weeks:
        parse_period(week)  # every one of them is a valid period on its own
    return weeks


class TestWindow:
    def test_shipped_schema_has_a_release(self) -> None:
        """The shipped schema has a release week, so its window has a lower bound."""
        assert SCHEMA_RELEASES[(SCHEMA.name, SCHEMA.version)] == "2026-W50"  # v2
        assert SCHEMA_RELEASES[(SCHEMA.name, 1)] == "2026-W48"  # v1, still read
        window = plausible_periods([SCHEMA], TODAY)
        assert window.first == ((SCHEMA.id, "2026-W50"),)

    def test_bounds(self) -> None:
        """Release week and next week are in; the week before release and in two weeks are out."""
        window = plausible_periods([SCHEMA], TODAY)
        assert window.last == "2026-W51"
        allowed = {p: window.allows(SCHEMA.id, p) for p in ("2026-W49", "2026-W50", "2026-W51")}
        assert allowed == {"2026-W49": False, "2026-W50": True, "2026-W51": True}
        assert not window.allows(SCHEMA.id, "2026-W52")
        assert not window.allows(SCHEMA.id, "0001-W01")
        assert not window.allows(SCHEMA.id, "2099-W01")

    def test_year_boundary(self) -> None:
        """On 2026-12-31 (W53) next week is 2027-W01."""
        assert plausible_periods([SCHEMA], date(2026, 12, 31)).last == "2027-W01"
        assert iso_week(date(2026, 12, 31)) == "2026-W53"

    def test_schema_without_release_bounded_above_only(self) -> None:
        """A schema with no release entry is only bounded by next week."""
        window = plausible_periods([SCHEMA], TODAY, releases={})
        assert window.allows(SCHEMA.id, "0001-W01")
        assert not window.allows(SCHEMA.id, "2027-W01")

    def test_a_new_schema_is_one_entry(self) -> None:
        """Adding a release entry is all a new schema needs."""
        window = PeriodWindow("2027-W10", (("aaaa", "2027-W05"), (SCHEMA.id, "2026-W48")))
        assert not window.allows("aaaa", "2027-W04")
        assert window.allows("aaaa", "2027-W05")
        assert window.allows(SCHEMA.id, "2026-W48")


class TestRejected:
    @pytest.mark.parametrize("with_garbage", [False, True])
    def test_spread_of_weeks_is_rejected_and_counted(self, with_garbage: bool) -> None:
        """500 reports dated 0001-W01..2099-W01 make no group; each is counted by its reason."""
        honest = _reports(60)
        weeks = _spread_weeks(500)
        spread = [_redated(honest[i % len(honest)], w) for i, w in enumerate(weeks)]
        implausible = sum(1 for w in weeks if not "2026-W50" <= w <= "2026-W51")
        # A garbage item sends the chunk down the per-report path: both paths must agree.
        items = honest + spread + ([b"junk"] if with_garbage else [])
        window = plausible_periods([SCHEMA], TODAY)
        counts = count_plaintexts(items, window=window)
        periods = {key.period for key in counts.groups}
        assert periods <= {"2026-W50", "2026-W51"}
        assert counts.rejects["implausible_period"] == implausible
        assert implausible >= 495  # the few spread weeks that land in the window stay
        assert counts.accepted == len(items) - implausible - with_garbage

    def test_without_window_nothing_changes(self) -> None:
        """The low-level counters judge periods only when given a window."""
        items = [_redated(r, "0001-W01") for r in _reports(10)]
        counts = count_plaintexts(items)
        assert counts.rejects.get("implausible_period", 0) == 0
        assert counts.accepted == len(items)

    def test_aggregate_rejects_with_the_real_clock(self) -> None:
        """aggregate() applies the window by default: far-future and pre-release weeks rejected."""
        from ldp.envelope import generate_keypair

        private, public = generate_keypair()
        today = datetime.now(UTC).date()
        this_week = iso_week(today)
        good = _reports(40, period=this_week)
        future = [_redated(r, iso_week(today + timedelta(days=21))) for r in good[:7]]
        early = [_redated(r, "2026-W01") for r in good[:5]]
        sealed = [seal(p, public) for p in good + future + early]
        result = aggregate(MemorySource(sealed), private, delta=None)
        assert result.rejects == {"implausible_period": 12}
        assert {g.period for g in result.groups} == {this_week}
        assert result.accepted == len(good)

    def test_cli_counts_the_reason(self, tmp_path: Path) -> None:
        """`20i-agg aggregate --format json` lists implausible_period among the rejects."""
        keys = tmp_path / "k"
        generate(keys)
        public = load_public(keys)
        load_private(keys)
        good = _reports(30, period=iso_week(datetime.now(UTC).date()))
        bad = [_redated(r, "1999-W01") for r in good[:4]]
        store_path = tmp_path / "s.db"
        with Store(store_path) as store:
            store.add_batch([seal(p, public) for p in good + bad])
        result = CliRunner().invoke(
            app, ["aggregate", "--key", str(keys), "--store", str(store_path), "--format", "json"]
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["reports"]["rejects"] == {"implausible_period": 4}
