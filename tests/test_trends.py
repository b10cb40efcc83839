"""Tests for server_agg.trends and server_agg.trend_output: each field's unbiased estimate week by
week (or window by window) with intervals, the same numbers in JSON, CSV, table and HTML."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

from server_agg.aggregate import Counts, count_plaintexts, finish
from server_agg.render import to_csv, to_dict, to_html, to_table
from server_agg.simulate import GeneratorSource, make_population
from server_agg.trends import MAX_POINTS, group_trend, pooled_raw

PERIODS = ("2026-W46", "2026-W47", "2026-W48", "2026-W49")
POPULATION = make_population(400, seed=41, periods=PERIODS)
COUNTS = count_plaintexts(list(POPULATION.reports(GeneratorSource(np.random.default_rng(42)))))
OPTIONS = {"consistency": "none", "confidence": 0.95, "delta": None, "screen": False}
WEEKLY = finish(COUNTS, None, period=None, weeks=1, **OPTIONS)
POOLED = finish(COUNTS, None, period="2026-W49", weeks=3, **OPTIONS)


class TestWeekByWeek:
    """The one-week view's trend is the weekly estimates themselves."""

    def test_one_trend_per_kind_with_every_week(self) -> None:
        """usage and errors each get one point per week, oldest first."""
        assert [(t.kind, t.weeks) for t in WEEKLY.trends] == [("errors", 1), ("usage", 1)]
        for trend in WEEKLY.trends:
            for field in trend.fields:
                assert [p.end for p in field.points] == list(PERIODS)
                assert all(p.periods == (p.end,) for p in field.points)

    def test_points_equal_the_weekly_estimates(self) -> None:
        """Each point's estimate and std are that week's unbiased estimate and std."""
        for trend in WEEKLY.trends:
            for field in trend.fields:
                for point in field.points:
                    fr = WEEKLY.group(trend.kind, point.end).field(field.field)
                    np.testing.assert_allclose(point.raw, fr.estimate.raw, rtol=1e-12, atol=1e-15)
                    # os and arch: the same exact variance, with the plug-in frequencies clipped
                    # (trend, like pooled windows) rather than clipped and renormalised (the
                    # one-week marginal), which moves the std by well under 2% at n = 400.
                    rtol = 0.02 if fr.derived_from else 1e-9
                    np.testing.assert_allclose(point.std, fr.estimate.std, rtol=rtol)
                    assert point.n == fr.estimate.n

    def test_one_week_is_no_trend(self) -> None:
        """A single week is the answer, not a trend; --no-trends leaves trends out."""
        one = {k: g for k, g in COUNTS.groups.items() if k.period == "2026-W48"}
        counts = Counts(COUNTS.read, COUNTS.excluded, COUNTS.rejects, one)
        only = finish(counts, None, period="2026-W48", weeks=1, **OPTIONS)
        assert len(only.groups) == 2 and only.trends == ()
        assert finish(COUNTS, None, period=None, weeks=1, trends=False, **OPTIONS).trends == ()


class TestWindowByWindow:
    """With a window of W weeks, each point pools the W weeks ending at its week."""

    def test_rolling_windows(self) -> None:
        """Points end at every week of the data; each pools the weeks present in its window."""
        field = POOLED.trends[1].field("command")
        assert POOLED.trends[1].weeks == 3
        assert [p.periods for p in field.points] == [
            PERIODS[:1],
            PERIODS[:2],
            PERIODS[:3],
            PERIODS[1:],
        ]

    def test_last_point_is_the_answer(self) -> None:
        """The last point equals the pooled group's unbiased estimate and std."""
        group = POOLED.group("usage")
        trend = POOLED.trends[1]
        for fr in group.fields:
            if fr.derived_from is not None:
                continue
            last = trend.field(fr.name).points[-1]
            np.testing.assert_allclose(last.raw, fr.estimate.raw, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(last.std, fr.estimate.std, rtol=1e-12)

    def test_points_stop_at_the_end_week(self) -> None:
        """A window ending at W48 draws no point after it."""
        earlier = finish(COUNTS, None, period="2026-W48", weeks=2, **OPTIONS)
        ends = [p.end for p in earlier.trends[0].fields[0].points]
        assert ends == list(PERIODS[:3])

    def test_at_most_max_points(self) -> None:
        """Only the latest MAX_POINTS weeks are drawn."""
        weekly = [g for g in WEEKLY.groups if g.kind == "usage"]
        schema = POPULATION.schema
        assert group_trend(weekly, schema, 1, points=2) is not None
        trend = group_trend(weekly, schema, 1, points=2)
        assert trend is not None and [p.end for p in trend.fields[0].points] == list(PERIODS[2:])
        assert MAX_POINTS >= 12

    def test_pooled_raw_takes_the_mean_weekly_n(self) -> None:
        """Over weeks of different sizes, n is the mean weekly n and the estimate uses it."""
        spec = POPULATION.schema.kind("usage").field("command")
        a, b = (WEEKLY.group("usage", p).field("command") for p in PERIODS[:2])
        n = round((a.estimate.n + b.estimate.n) / 2)
        raw, std = pooled_raw(spec, [a.support, b.support], n)
        randomizer = spec.randomizer()
        mean = (np.asarray(a.support) + np.asarray(b.support)) / 2
        # Debiasing with the composed channel's support probabilities: (s / n - q*) / (p* - q*).
        p, q = randomizer.p_star, randomizer.q_star
        expected = (mean / n - q) / (p - q)
        np.testing.assert_allclose(raw, expected, rtol=1e-12, atol=1e-15)
        assert np.all(std > 0)


class TestMarginalTrends:
    """v2's os and arch trends are sums of the platform points."""

    def test_sums_of_cells_with_the_pooled_covariance(self) -> None:
        """Estimates add up the platform cells; std is sqrt(diag(A C A^T)) of the pooled C."""
        from ldp.covariance import frequency_covariance
        from ldp.estimate import epoch_pair_share
        from server_agg.marginals import groups_of

        trend = POOLED.trends[1]
        platform = trend.field("platform")
        spec = POPULATION.schema.kind("usage").field("platform")
        for part, name in ((0, "os"), (1, "arch")):
            derived = trend.field(name)
            groups = groups_of(spec.domain, part)
            assert derived.values == tuple(groups)
            for point, base in zip(derived.points, platform.points, strict=True):
                raw = np.asarray(base.raw)
                sums = [raw[m].sum() for m in groups.values()]
                np.testing.assert_allclose(point.raw, sums, rtol=1e-12, atol=1e-15)
                weeks = len(base.periods)
                cov = frequency_covariance(
                    spec.randomizer(),
                    base.n,
                    np.clip(raw, 0, 1),
                    weeks=weeks,
                    share=epoch_pair_share(spec.epoch_weeks, weeks),
                )
                var = [cov[np.ix_(m, m)].sum() for m in groups.values()]
                np.testing.assert_allclose(point.std, np.sqrt(var), rtol=1e-9)


class TestFormats:
    """Every format carries the same trend points."""

    def test_json(self) -> None:
        """trends: per kind, per field, per point estimate and interval (z std around it)."""
        doc = json.loads(json.dumps(to_dict(POOLED)))
        trends = {t["kind"]: t for t in doc["trends"]}
        assert set(trends) == {"usage", "errors"}
        usage = trends["usage"]
        assert usage["weeks"] == 3 and "window by window over 3 weeks" in usage["sentence"]
        command = next(f for f in usage["fields"] if f["field"] == "command")
        point = command["points"][-1]
        assert point["label"] == "2026-W47..2026-W49" and point["weeks"] == 3
        est, std = np.asarray(point["estimate"]), np.asarray(point["std"])
        np.testing.assert_allclose(np.asarray(point["ci_high"]) - est, 1.959964 * std, rtol=1e-5)
        np.testing.assert_allclose(est - np.asarray(point["ci_low"]), 1.959964 * std, rtol=1e-5)

    def test_csv(self) -> None:
        """view=trend rows: one per (kind, field, point, value), after the estimate rows."""
        rows = list(csv.DictReader(io.StringIO(to_csv(POOLED))))
        answer = [r for r in rows if r["view"] == "estimate"]
        trend = [r for r in rows if r["view"] == "trend"]
        assert answer and trend and rows.index(trend[0]) == len(answer)
        expected = sum(len(f.points) * len(f.values) for t in POOLED.trends for f in t.fields)
        assert len(trend) == expected
        last = [r for r in trend if r["field"] == "command" and r["period"].endswith("W49")]
        field = POOLED.trends[1].field("command")
        assert [float(r["estimate"]) for r in last] == pytest.approx(
            field.points[-1].raw, rel=1e-5, abs=1e-9
        )

    def test_table(self) -> None:
        """The table has a trends block: the sentence and one small table per field."""
        text = to_table(POOLED, width=200)
        assert "Trends (up to the last" in text
        assert "trend of usage, window by window over 3 weeks" in text
        assert "usage · command" in text and "W49" in text

    def test_html(self) -> None:
        """The page draws one chart per field with a band (polygon) and a line per value."""
        page = to_html(POOLED)
        assert page.count('class="trend-chart"') == sum(len(t.fields) for t in POOLED.trends)
        assert 'id="trends"' in page and "<script" not in page
        chart = re.search(r'<svg[^>]*class="trend-chart"[^>]*data-field="command".*?</svg>', page)
        assert chart is not None
        assert chart.group(0).count('class="band"') == 4
        assert chart.group(0).count('class="line"') == 4

    def test_small_negative_estimates_do_not_print_minus_zero(self) -> None:
        """An unbiased estimate just below 0 prints 0.0%, a clearly negative one keeps its sign."""
        from server_agg.trend_output import _pct

        assert (_pct(-0.0001), _pct(-0.002), _pct(0.25)) == ("0.0%", "-0.2%", "25.0%")
