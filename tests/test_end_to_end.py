"""End to end: simulated clients -> real collector over HTTP -> SQLite store -> analyzer.

The population and the LDP noise are seeded (the noise through a seeded Generator in place of
the CSPRNG), so every run sees the same reports and the statistical checks are reproducible.
The coverage check runs the analyzer directly on simulated plaintext reports over many seeds,
which keeps it fast; the HTTP path is exercised once, with real sealing.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from pathlib import Path
from statistics import NormalDist
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from server_agg.aggregate import AggregateResult, StoreSource, aggregate, count_plaintexts, finalize
from server_agg.demo import CollectorProcess
from server_agg.keys import generate, load_private, load_public
from server_agg.simulate import GeneratorSource, Population, make_population, post_reports

PERIOD = "2026-W50"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """1,500 simulated users post through a real collector; some garbage is posted too."""
    root = tmp_path_factory.mktemp("e2e")
    keys = generate(root / "keys")
    store = root / "store.sqlite"
    population = make_population(1500, seed=51, periods=(PERIOD,))
    noise = GeneratorSource(np.random.default_rng(52))
    garbage = [bytes([i]) * 64 for i in range(5)]
    with CollectorProcess(store, keys.public_path) as collector:
        posted = post_reports(
            population.sealed(load_public(keys.public_path), noise), collector.url
        )
        answer = httpx.post(
            collector.url + "/v1/reports",
            json={"reports": [base64.b64encode(g).decode() for g in garbage]},
            timeout=30,
        )
        assert answer.status_code == 202
        exit_code = collector.stop()
        assert not collector.running
    yield {
        "keys": root / "keys",
        "store": store,
        "population": population,
        "posted": posted,
        "garbage": len(garbage),
        "exit_code": exit_code,
        "result": aggregate(StoreSource(store), load_private(keys.private_path), delta=1e-6),
    }


def _bonferroni_z(alpha: float, items: int) -> float:
    return NormalDist().inv_cdf(1 - alpha / (2 * items))


class TestThroughCollector:
    """Reports posted over HTTP are estimated within their CIs of the simulated truth."""

    def test_every_report_arrives_and_garbage_is_counted(self, pipeline: dict[str, Any]) -> None:
        """All reports are accepted and used; the posted garbage is rejected as 'decrypt'."""
        population: Population = pipeline["population"]
        result: AggregateResult = pipeline["result"]
        assert pipeline["posted"].accepted == population.report_count()
        assert result.read == population.report_count() + pipeline["garbage"]
        assert result.accepted == population.report_count()
        assert dict(result.rejects) == {"decrypt": pipeline["garbage"]}
        users_with_errors = sum("errors" in u.values for u in population.users)
        assert result.group("usage", PERIOD).n == 1500
        assert result.group("errors", PERIOD).n == users_with_errors

    def test_collector_stopped_gracefully(self, pipeline: dict[str, Any]) -> None:
        """The collector exits on SIGTERM (uvicorn re-raises it) after finishing its commits."""
        assert pipeline["exit_code"] in (0, -15)

    def test_truth_inside_confidence_intervals(self, pipeline: dict[str, Any]) -> None:
        """Every value's unbiased estimate is within z * std of the truth (Bonferroni, 1e-3)."""
        population: Population = pipeline["population"]
        result: AggregateResult = pipeline["result"]
        targets = population.targets()
        items = sum(fr.estimate.d for g in result.groups for fr in g.fields)
        # Family-wise error 1e-3 over all items: with fixed seeds this either always holds or
        # always fails, and it fails only for a biased estimator or a wrong variance.
        z = _bonferroni_z(1e-3, items)
        for group in result.groups:
            for fr in group.fields:
                truth = np.asarray(targets[(group.kind, group.period, fr.name)])
                gap = np.abs(fr.estimate.raw - truth)
                assert np.all(gap <= z * fr.estimate.std), (fr.name, gap / fr.estimate.std)

    def test_cli_formats_agree_with_the_api(self, pipeline: dict[str, Any], tmp_path: Path) -> None:
        """``20i-agg aggregate`` prints JSON/CSV with the API's numbers and writes the HTML."""
        from server_agg.app import app

        runner = CliRunner()
        base = ["aggregate", "--store", str(pipeline["store"]), "--key", str(pipeline["keys"])]
        out = runner.invoke(app, [*base, "--format", "json", "--kind", "usage"])
        assert out.exit_code == 0, out.output
        doc = json.loads(out.stdout)
        usage = pipeline["result"].group("usage", PERIOD)
        os_items = next(f for f in doc["groups"][0]["fields"] if f["name"] == "os")["items"]
        assert [i["estimate"] for i in os_items] == usage.field("os").estimate.freq.tolist()
        assert doc["reports"]["excluded"] == pipeline["result"].group("errors", PERIOD).n
        # auto is the default, and asking for it by name gives the same document.
        assert doc["consistency"] == "auto"
        named = runner.invoke(app, [*base, "--format", "json", "--kind", "usage", *AUTO])
        assert named.exit_code == 0, named.output
        assert json.loads(named.stdout)["groups"] == doc["groups"]
        # --weeks pools the weeks ending at --period (here only PERIOD has reports).
        pooled = runner.invoke(app, [*base, "--format", "json", "--weeks", "2", "--period", PERIOD])
        assert pooled.exit_code == 0, pooled.output
        window = json.loads(pooled.stdout)["window"]
        assert window["weeks"] == 2 and window["periods"][-1] == PERIOD
        alone = runner.invoke(app, [*base, "--weeks", "2"])
        assert alone.exit_code == 1 and "needs period" in alone.output
        for bad in ("13", "0", "soon"):
            refused = runner.invoke(app, [*base, "--weeks", bad])
            assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
            assert f"--weeks ('{bad}') must be auto or an integer in [1, 12]" in refused.output
        # The default is auto: each kind's window and why, in the JSON.
        auto = json.loads(runner.invoke(app, [*base, "--format", "json"]).stdout)
        assert auto["window"]["weeks"] == "auto"
        assert all(g["window_choice"]["reason"] for g in auto["groups"])

        csv_out = runner.invoke(app, [*base, "--format", "csv", "--period", PERIOD])
        assert csv_out.exit_code == 0, csv_out.output
        rows = csv_out.stdout.strip().splitlines()
        assert len(rows) == 1 + sum(
            fr.estimate.d for g in pipeline["result"].groups for fr in g.fields
        )

        html_path = tmp_path / "report.html"
        html_out = runner.invoke(app, [*base, "--format", "html", "--out", str(html_path)])
        assert html_out.exit_code == 0, html_out.output
        assert html_path.read_text().count('class="field-chart"') == 7

        table = runner.invoke(app, base)
        assert table.exit_code == 0, table.output
        assert "usage 2026-W50 · modules" in table.stdout

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ([], "give exactly one of --store PATH or --parquet DIR"),
            (["--store", "nope.sqlite"], "no store at nope.sqlite"),
            (["--store", "x", "--confidence", "1.5"], r"--confidence (1.5) must be in (0, 1)"),
            (["--store", "x", "--scheduler", "tcp://h:1"], "--scheduler needs --engine dask"),
        ],
    )
    def test_cli_errors_are_one_line(
        self, pipeline: dict[str, Any], args: list[str], message: str
    ) -> None:
        """Bad options are one error line and exit code 1, never a traceback."""
        from server_agg.app import app

        result = CliRunner().invoke(app, ["aggregate", "--key", str(pipeline["keys"]), *args])
        assert result.exit_code == 1
        assert message in result.output
        assert "Traceback" not in result.output


AUTO = ["--consistency", "auto"]


class TestCoverage:
    """Over repeated seeds the 95% intervals cover the truth about 95% of the time."""

    REPETITIONS = 30
    USERS = 400

    def test_coverage_is_nominal(self) -> None:
        """Mean coverage of the unbiased estimates' 95% CIs is 0.95 within 4 standard errors."""
        per_rep = []
        for rep in range(self.REPETITIONS):
            population = make_population(self.USERS, seed=1000 + rep, periods=(PERIOD,))
            noise = GeneratorSource(np.random.default_rng(5000 + rep))
            # The intervals are around the unbiased estimate, so no consistency step is needed.
            counts = count_plaintexts(list(population.reports(noise)))
            result = finalize(counts, delta=None, consistency="none")
            targets = population.targets()
            covered = []
            for group in result.groups:
                for fr in group.fields:
                    low, high = fr.estimate.ci(0.95, raw=True)
                    truth = np.asarray(targets[(group.kind, group.period, fr.name)])
                    covered.extend(((low <= truth) & (truth <= high)).tolist())
            per_rep.append(float(np.mean(covered)))
        items = len(covered)
        # Each item is covered with probability 0.95; items of different fields use independent
        # noise and within a field the dependence is weak, so the mean over R repetitions and m
        # items has standard error sqrt(0.95 * 0.05 / (R m)). The spread between repetitions
        # checks that independence claim: it must not exceed twice the per-repetition value.
        per_rep_sd = math.sqrt(0.95 * 0.05 / items)
        assert float(np.std(per_rep, ddof=1)) <= 2 * per_rep_sd
        tolerance = 4 * per_rep_sd / math.sqrt(self.REPETITIONS)
        assert abs(float(np.mean(per_rep)) - 0.95) <= tolerance
