"""Tests for server_agg.weeks (``aggregate --weeks W``): the window's weeks, the pooled
estimates (server_agg.windows.field_window on the weekly counts), and every format saying which
window was used."""

from __future__ import annotations

import csv
import html
import io
from statistics import NormalDist

import numpy as np
import pytest

from ldp.covariance import frequency_covariance
from server_agg.aggregate import AggregateError, GroupKey, count_plaintexts, finish
from server_agg.render import to_csv, to_dict, to_html, to_table
from server_agg.simulate import GeneratorSource, make_population
from server_agg.weeks import window_periods
from server_agg.windows import field_window

PERIODS = ("2026-W46", "2026-W47", "2026-W48", "2026-W49")
POPULATION = make_population(400, seed=31, periods=PERIODS)
COUNTS = count_plaintexts(list(POPULATION.reports(GeneratorSource(np.random.default_rng(32)))))
OPTIONS = {"consistency": "auto", "confidence": 0.95, "delta": None, "screen": False}
POOLED = finish(COUNTS, None, period="2026-W49", weeks=3, **OPTIONS)


class TestWindowPeriods:
    """The window is the W consecutive ISO weeks ending at the given one."""

    def test_across_a_year_end(self) -> None:
        """Weeks run back over the new year (2025 has 52 ISO weeks)."""
        assert window_periods("2026-W02", 4) == ("2025-W51", "2025-W52", "2026-W01", "2026-W02")

    def test_bad_lengths_are_refused(self) -> None:
        """0 or more than 12 weeks, or a window without its end week, is an error."""
        with pytest.raises(ValueError, match=r"weeks \(13\) must be an integer in \[1, 12\]"):
            window_periods("2026-W02", 13)
        with pytest.raises(AggregateError, match="needs period"):
            finish(COUNTS, None, period=None, weeks=2, **OPTIONS)


class TestPooled:
    """Pooled groups are field_window's estimates over the window's weekly counts."""

    def test_one_group_per_kind_and_the_rest_excluded(self) -> None:
        """The three weeks ending at W49 form one group per kind; W46 counts as excluded."""
        assert [(g.kind, g.period) for g in POOLED.groups] == [
            ("errors", "2026-W47..2026-W49"),
            ("usage", "2026-W47..2026-W49"),
        ]
        outside = sum(g.n for k, g in COUNTS.groups.items() if k.period == "2026-W46")
        assert POOLED.excluded == outside
        assert POOLED.accepted + POOLED.excluded == COUNTS.accepted

    def test_estimates_are_field_windows(self) -> None:
        """Each field's estimate, covariance and std equal field_window on its weekly supports."""
        group = POOLED.group("usage")
        for fr in group.fields:
            if fr.derived_from is not None:
                continue
            keys = [GroupKey(group.schema_id, "usage", p) for p in PERIODS[1:]]
            supports = np.asarray([COUNTS.groups[k].support[fr.name] for k in keys])
            n = round(float(np.mean([COUNTS.groups[k].n for k in keys])))
            expected = field_window(fr.spec, supports, n).estimate
            assert fr.weeks == 3
            np.testing.assert_array_equal(fr.estimate.raw, expected.raw)
            np.testing.assert_array_equal(fr.estimate.std, expected.std)
            np.testing.assert_array_equal(fr.estimate.freq, expected.freq)

    def test_marginals_use_the_pooled_covariance(self) -> None:
        """os and arch stds are the sums of pooled platform cells' covariance."""
        group = POOLED.group("usage")
        platform = group.field("platform")
        cov = frequency_covariance(
            platform.spec.randomizer(),
            platform.estimate.n,
            np.clip(platform.estimate.raw, 0.0, 1.0),
            weeks=3,
            share=platform.share,
        )
        os_ = group.field("os")
        linux = [i for i, v in enumerate(platform.spec.domain) if v.startswith("linux-")]
        std = float(np.sqrt(cov[np.ix_(linux, linux)].sum()))
        assert os_.estimate.std[os_.spec.domain.index("linux")] == pytest.approx(std, rel=1e-9)

    def test_ranking_uses_the_pooled_covariance(self) -> None:
        """A pair statement's confidence uses the W-week covariance, not one week's."""
        group = POOLED.group("usage")
        fr = group.field("command")
        doc = to_dict(POOLED)
        field = next(
            f
            for g in doc["groups"]
            if g["kind"] == "usage"
            for f in g["fields"]
            if f["name"] == "command"
        )
        pair = field["ranking"]["pairs"][0]
        cov = frequency_covariance(
            fr.spec.randomizer(),
            fr.estimate.n,
            np.clip(fr.estimate.raw, 0.0, 1.0),
            weeks=3,
            share=fr.share,
        )
        a, b = fr.spec.domain.index(pair["more"]), fr.spec.domain.index(pair["less"])
        diff = float(fr.estimate.raw[a] - fr.estimate.raw[b])
        sd = float(np.sqrt(cov[a, a] + cov[b, b] - 2 * cov[a, b]))
        assert pair["confidence"] == pytest.approx(NormalDist().cdf(diff / sd), abs=1e-12)


class TestEveryFormatSaysTheWindow:
    """JSON, CSV, table and HTML name the window (and the one-week default says so too)."""

    def test_pooled(self) -> None:
        """Three weeks are named everywhere."""
        doc = to_dict(POOLED)
        assert doc["window"]["weeks"] == 3
        assert doc["window"]["periods"] == list(PERIODS[1:])
        rows = list(csv.DictReader(io.StringIO(to_csv(POOLED))))
        assert {r["weeks"] for r in rows if r["view"] == "estimate"} == {"3"}
        assert "window: 3 ISO weeks 2026-W47..2026-W49, pooled" in to_table(POOLED, width=200)
        assert "Window: 3 ISO weeks 2026-W47..2026-W49, pooled" in to_html(POOLED)

    def test_one_week_default(self) -> None:
        """Without --weeks every group is one week, and every format says that."""
        weekly = finish(COUNTS, None, period=None, weeks=1, **OPTIONS)
        assert len(weekly.groups) == 2 * len(PERIODS)
        assert to_dict(weekly)["window"]["weeks"] == 1
        assert {r["weeks"] for r in csv.DictReader(io.StringIO(to_csv(weekly)))} == {"1"}
        assert weekly.groups[0].window is None and weekly.groups[0].choice is None
        assert "window: one ISO week per group" in to_table(weekly, width=200)
        assert "Window: one ISO week per group" in to_html(weekly)


AUTO = finish(COUNTS, None, period=None, weeks="auto", **OPTIONS)


class TestAutoWindow:
    """--weeks auto: per (schema, kind), the window choose_window picks, said in every format."""

    def test_each_group_says_which_window_and_why(self) -> None:
        """Every group carries its choice; its window is the choice's length ending at the
        latest week of the data, and its estimates are those of that fixed window."""
        assert {g.kind for g in AUTO.groups} == {"usage", "errors"}
        for group in AUTO.groups:
            choice = group.choice
            assert choice is not None and group.window is not None
            assert group.window.periods == window_periods(PERIODS[-1], choice.weeks)
            fixed = finish(COUNTS, None, period=PERIODS[-1], weeks=choice.weeks, **OPTIONS)
            same = fixed.group(group.kind, group.period)
            for fr, expected in zip(group.fields, same.fields, strict=True):
                np.testing.assert_array_equal(fr.estimate.raw, expected.estimate.raw)
                np.testing.assert_array_equal(fr.estimate.freq, expected.estimate.freq)
        assert AUTO.accepted + AUTO.excluded == COUNTS.accepted

    def test_the_choice_follows_the_rule(self) -> None:
        """Recomputed with field_window: at n = 400 no window reaches 5 points, so the choice
        is the shortest window within 5% of the longest's half-width for every field."""
        group = AUTO.group("usage")
        assert group.choice is not None and not group.choice.met
        widths = {}
        for weeks in range(1, len(PERIODS) + 1):
            periods = window_periods(PERIODS[-1], weeks)
            keys = [GroupKey(group.schema_id, "usage", p) for p in periods]
            n = round(float(np.mean([COUNTS.groups[k].n for k in keys])))
            widths[weeks] = {
                fr.name: field_window(
                    fr.spec, [COUNTS.groups[k].support[fr.name] for k in keys], n
                ).half_width
                for fr in group.fields
                if fr.derived_from is None
            }
        longest = widths[len(PERIODS)]
        expected = min(
            w
            for w, ws in widths.items()
            if all(ws[name] <= 1.05 * longest[name] for name in longest)
        )
        assert group.choice.weeks == expected
        for name, width in group.choice.half_widths.items():
            assert width == pytest.approx(widths[expected][name], rel=1e-9)
        assert "no window of up to 4 weeks" in group.choice.reason

    def test_every_format_says_it(self) -> None:
        """JSON names auto and each group's choice; table and page print the reason."""
        doc = to_dict(AUTO)
        assert doc["window"]["weeks"] == "auto"
        assert "chosen per kind" in doc["window"]["sentence"]
        for group in doc["groups"]:
            assert group["window_choice"]["reason"]
            assert group["window"]["periods"]
        reason = AUTO.group("usage").choice.reason  # type: ignore[union-attr]
        assert f"usage window: {reason}" in to_table(AUTO, width=400)
        assert html.escape(f"usage window: {reason}") in to_html(AUTO)

    def test_a_kind_silent_for_12_weeks_is_left_out(self) -> None:
        """Errors reports only from 13 weeks before the end: usage is answered, errors are
        excluded (not an error for the whole run)."""
        from server_agg.aggregate import Counts

        groups = {
            (GroupKey(k.schema_id, k.kind, "2026-W36") if k.kind == "errors" else k): g
            for k, g in COUNTS.groups.items()
            if k.kind == "usage" or k.period == PERIODS[0]
        }
        counts = Counts(COUNTS.read, COUNTS.excluded, COUNTS.rejects, groups)
        result = finish(counts, None, period=None, weeks="auto", **OPTIONS)
        assert [g.kind for g in result.groups] == ["usage"]
        assert result.accepted + result.excluded == counts.accepted

    def test_bad_weeks_are_refused(self) -> None:
        """Anything but auto or 1..12 is an AggregateError naming both."""
        with pytest.raises(AggregateError, match="'auto' or an integer in"):
            finish(COUNTS, None, period=None, weeks="soon", **OPTIONS)
