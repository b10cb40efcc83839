"""Tests for ``20i-agg demo``: it runs end to end, writes its report, stops its collector."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from server_agg.demo import CollectorProcess, DemoError, coverage, run_demo


class TestDemo:
    """The demo command and its building blocks."""

    def test_cli_demo_runs_and_cleans_up(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A small demo prints estimates beside the truth, writes the report and leaves no files."""
        from server_agg.app import app

        monkeypatch.chdir(tmp_path)
        (tmp_path / "tmp").mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        result = CliRunner().invoke(app, ["demo", "--clients", "400", "--workers", "1"])
        assert result.exit_code == 0, result.output
        assert "collector stopped" in result.output
        assert "CIs around the unbiased estimates cover the simulated truth for" in result.output
        assert (
            "drawn interval covers the truth for" in result.output
        )  # per-field lines of the tables
        report = tmp_path / "demo-report.html"
        assert report.is_file()
        # v2: cli_version, platform (+ its os and arch marginals), command, modules; errors.
        assert report.read_text().count('class="field-chart"') == 7
        assert os.listdir(tmp_path / "tmp") == []  # keys and store were removed

    def test_run_demo_result(self, tmp_path: Path) -> None:
        """run_demo returns the posted counts, the per-field coverage and a stopped collector."""
        lines: list[str] = []
        demo = run_demo(clients=300, seed=7, workers=1, out=tmp_path / "r.html", say=lines.append)
        # Six weeks with arrivals; --weeks auto pools a window per kind ending at the last
        # week, and the other weeks' reports are excluded, not lost.
        assert len(demo.population.periods) == 6
        assert len(demo.population.users) > 300
        assert demo.posted.accepted == demo.population.report_count()
        assert demo.result.accepted + demo.result.excluded == demo.population.report_count()
        assert all(g.choice is not None for g in demo.result.groups)
        assert {t.kind for t in demo.result.trends} == {"usage", "errors"}
        assert demo.collector_exit in (0, -15)
        assert {c.field for c in demo.coverage} == {
            "cli_version",
            "platform",
            "os",
            "arch",
            "command",
            "modules",
            "error_category",
        }
        # 10 + 13 platform pairs + 5 os + 7 arch + 14 + 8 + 11 values.
        assert sum(c.values for c in demo.coverage) == 68
        assert coverage(demo.result, demo.truth) == list(demo.coverage)
        # Coverage is of the intervals around the unbiased estimate, not the shown (auto) one.
        truth = demo.truth
        for c in demo.coverage:
            fr = demo.result.group(c.kind, c.period).field(c.field)
            low, high = fr.estimate.ci(0.95, raw=True)
            values = truth[(c.kind, c.period, c.field)]
            assert c.covered == sum(
                lo <= t <= hi for lo, t, hi in zip(low, values, high, strict=True)
            )
        assert any(line.startswith("demo finished in") for line in lines)
        assert any(line.startswith("usage window: ") for line in lines)
        assert any(line.startswith("trend of usage platform: ") for line in lines)


class TestCollectorProcess:
    """The demo's collector child process."""

    def test_listens_on_loopback_and_stops(self, tmp_path: Path) -> None:
        """It binds 127.0.0.1 on a port of its own, and nothing listens there after stop()."""
        import httpx

        with CollectorProcess(tmp_path / "s.sqlite") as collector:
            assert collector.url.startswith("http://127.0.0.1:")
            assert httpx.get(collector.url + "/v1/health", timeout=10).json() == {"status": "ok"}
            port = int(collector.url.rsplit(":", 1)[1])
        assert not collector.running
        with socket.socket() as sock, pytest.raises(OSError):
            sock.connect(("127.0.0.1", port))

    def test_start_failure_is_a_demo_error(self, tmp_path: Path) -> None:
        """A collector that cannot start (store in a missing directory) is a DemoError with why."""
        with pytest.raises(DemoError, match="the collector did not start"):
            CollectorProcess(tmp_path / "missing" / "s.sqlite").start()


class TestDemoWeeks:
    """The demo's weeks and the truth its pooled estimates are compared with."""

    def test_periods_start_no_earlier_than_the_release(self) -> None:
        """Six weeks from v2's release week (2026-W50) end in 2027-W02, and the analyzer is told
        that today is that week's Monday; later, the weeks simply end this week."""
        from datetime import date

        from server_agg.demo import demo_periods

        weeks, today = demo_periods(6, date(2026, 12, 7))
        assert weeks == ("2026-W50", "2026-W51", "2026-W52", "2026-W53", "2027-W01", "2027-W02")
        assert today == date(2027, 1, 11)
        later, same = demo_periods(3, date(2027, 6, 2))
        assert later == ("2027-W20", "2027-W21", "2027-W22") and same == date(2027, 6, 2)

    def test_window_truth_is_the_report_weighted_mean(self) -> None:
        """A pooled group's truth is the share of all its window's reports with each value
        (counted here straight from the users' rows)."""
        import numpy as np

        from server_agg.aggregate import count_plaintexts, finish
        from server_agg.demo import DEMO_ARRIVALS, window_truth
        from server_agg.simulate import DEFAULT_MODEL, GeneratorSource, make_population

        periods = ("2026-W50", "2026-W51", "2026-W52")
        model = {**DEFAULT_MODEL, "arrivals": DEMO_ARRIVALS}
        population = make_population(200, seed=5, model=model, periods=periods)
        reports = list(population.reports(GeneratorSource(np.random.default_rng(6))))
        result = finish(
            count_plaintexts(reports),
            None,
            period=periods[-1],
            weeks=3,
            consistency="none",
            confidence=0.95,
            delta=None,
        )
        truth = window_truth(population, result)
        spec = population.schema.kind("usage").field("platform")
        rows = [row for u in population.users for row in u.values["usage"] if row is not None]
        direct = [sum(r["platform"] == v for r in rows) / len(rows) for v in spec.domain]
        label = result.group("usage").period
        assert label == "2026-W50..2026-W52"
        np.testing.assert_allclose(truth[("usage", label, "platform")], direct, rtol=1e-12)
        # The weeks differ (users arrive), so the pooled truth is not any one week's.
        assert truth[("usage", periods[0], "platform")] != direct
