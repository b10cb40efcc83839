"""Tests for server_agg.simulate: seeded populations, the truth they report, the real client path,
and posting in batches of at most 64 (httpx.MockTransport, no network)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from ldp.envelope import generate_keypair, open_sealed
from ldp.report import decode_plaintext
from ldp.schema import known_schemas, shipped_schema
from server_agg.simulate import (
    DEFAULT_MODEL,
    MAX_BATCH,
    GeneratorSource,
    SimulationError,
    load_model,
    make_population,
    post_reports,
    recent_periods,
    simulate,
)

SCHEMA = shipped_schema()
PRIVATE, PUBLIC = generate_keypair()


class _Collector:
    """A MockTransport handler that accepts batches like the collector, optionally 429 first."""

    def __init__(self, busy: int = 0) -> None:
        self.batches: list[list[bytes]] = []
        self.busy = busy

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/reports"
        assert request.headers["content-type"] == "application/json"
        if self.busy:
            self.busy -= 1
            return httpx.Response(429, json={"error": "busy"}, headers={"Retry-After": "0.01"})
        doc = json.loads(request.content)
        batch = [base64.b64decode(r) for r in doc["reports"]]
        self.batches.append(batch)
        return httpx.Response(202, json={"accepted": len(batch), "duplicates": 0})


class TestPopulation:
    """Populations are reproducible from their seed and report their own truth."""

    def test_seed_reproduces_population(self) -> None:
        """The same seed gives the same secrets and values; another seed does not."""
        a = make_population(50, seed=1, periods=("2026-W10",))
        b = make_population(50, seed=1, periods=("2026-W10",))
        c = make_population(50, seed=2, periods=("2026-W10",))
        assert a.users == b.users
        assert a.users != c.users
        assert len({u.secret for u in a.users}) == 50
        assert all(len(u.secret) == 32 for u in a.users)

    def test_truth_is_the_empirical_frequency(self) -> None:
        """Categorical truths sum to 1 and equal value counts; set truths are shares of users."""
        population = make_population(400, seed=3, periods=("2026-W10", "2026-W11"))
        truth = population.truth()
        usage = [u.values["usage"][1] for u in population.users]
        os_domain = SCHEMA.kind("usage").field("platform").domain
        expected = [sum(v["platform"] == name for v in usage) / len(usage) for name in os_domain]
        assert truth[("usage", "2026-W11", "platform")] == pytest.approx(expected)
        for (_, _, name), values in truth.items():
            if name != "modules":
                assert sum(values) == pytest.approx(1.0)
        docker = sum("docker" in v["modules"] for v in usage) / len(usage)
        assert truth[("usage", "2026-W11", "modules")][0] == pytest.approx(docker)

    def test_default_sets_fit_the_pad(self) -> None:
        """No default user has more modules than the pad, so targets equal the truth."""
        population = make_population(300, seed=4, periods=("2026-W10",))
        pad = SCHEMA.kind("usage").field("modules").pad
        assert pad is not None
        assert max(len(u.values["usage"][0]["modules"]) for u in population.users) <= pad
        assert population.targets() == population.truth()

    def test_targets_discount_oversized_sets(self) -> None:
        """With sets over the pad, targets count each item as pad/size of a user."""
        model = load_model(
            json.dumps(
                {
                    "sets": {
                        "modules": {
                            "sizes": {"4": 1},
                            "items": {"docker": 1, "git": 1, "aws": 1, "ssh": 1},
                        }
                    }
                }
            )
        )
        population = make_population(20, seed=5, model=model, periods=("2026-W10",))
        pad = SCHEMA.kind("usage").field("modules").pad
        assert pad is not None
        docker = SCHEMA.kind("usage").field("modules").domain.index("docker")
        assert population.truth()[("usage", "2026-W10", "modules")][docker] == 1.0
        assert population.targets()[("usage", "2026-W10", "modules")][docker] == pad / 4

    def test_resampled_fields_change_between_periods(self) -> None:
        """'command' is drawn afresh each period (reported from an epoch's first week, so it
        changes at the user's epoch boundaries); 'platform' stays with the user."""
        population = make_population(200, seed=6, periods=("2026-W10", "2026-W11"))
        users = population.users
        assert any(
            u.values["usage"][0]["command"] != u.values["usage"][1]["command"] for u in users
        )
        assert all(
            u.values["usage"][0]["platform"] == u.values["usage"][1]["platform"] for u in users
        )

    def test_errors_share(self) -> None:
        """About errors_share of the users also send error reports (seeded, so exact here)."""
        population = make_population(1000, seed=7, periods=("2026-W10",))
        with_errors = sum("errors" in u.values for u in population.users)
        # Binomial(1000, 0.5): 5 standard deviations are +-79.
        assert abs(with_errors - 500) < 79
        assert population.report_count() == 1000 + with_errors

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[]", "model must be a JSON object"),
            ('{"colour": 1}', "unknown key 'colour'"),
            ("{not json", "not valid JSON"),
        ],
    )
    def test_bad_models_are_refused(self, text: str, message: str) -> None:
        """A model that is not an object of known keys is a SimulationError naming the problem."""
        with pytest.raises(SimulationError, match=message):
            load_model(text)

    def test_bad_weights_are_refused(self) -> None:
        """Negative weights or an out-of-range errors_share are named."""
        bad = {**DEFAULT_MODEL, "categorical": {"platform": {"linux-x86_64": -1}}}
        with pytest.raises(
            SimulationError, match=r"weight of 'linux-x86_64' \(-1\) must be a number >= 0"
        ):
            make_population(5, seed=1, model=bad)
        with pytest.raises(SimulationError, match=r"errors_share \(2\) must be in \[0, 1\]"):
            make_population(5, seed=1, model={**DEFAULT_MODEL, "errors_share": 2})


class TestClientPath:
    """Simulated reports are real client reports."""

    def test_reports_decode_and_open(self) -> None:
        """Every sealed report opens with the analyzer key and decodes strictly."""
        population = make_population(30, seed=8, periods=("2026-W10",))
        sealed = list(population.sealed(PUBLIC))
        assert len(sealed) == population.report_count()
        for item in sealed:
            report = decode_plaintext(open_sealed(item, PRIVATE), {SCHEMA.id: SCHEMA})
            assert report.period == "2026-W10"

    def test_generator_noise_is_reproducible(self) -> None:
        """A seeded noise Generator repeats the plaintexts exactly; the CSPRNG does not (v1:
        fresh instantaneous noise; v2's epoch responses are frozen and need no noise source)."""
        v1 = known_schemas()[0]
        population = make_population(40, seed=9, periods=("2026-W10",), schema=v1)
        a = list(population.reports(GeneratorSource(np.random.default_rng(1))))
        b = list(population.reports(GeneratorSource(np.random.default_rng(1))))
        c = list(population.reports())
        d = list(population.reports())
        assert a == b
        assert c != d

    def test_generator_source_is_uniform(self) -> None:
        """randbelow(6) over 60,000 draws is uniform (chi-square, 5 dof, p > 1e-6 bound 39.9)."""
        source = GeneratorSource(np.random.default_rng(10))
        counts = np.bincount([source.randbelow(6) for _ in range(60_000)], minlength=6)
        chi2 = float(((counts - 10_000) ** 2 / 10_000).sum())
        assert chi2 < 39.9
        with pytest.raises(ValueError, match="bound"):
            source.randbelow(0)

    def test_recent_periods(self) -> None:
        """Consecutive ISO weeks, oldest first, across a year boundary."""
        assert recent_periods(3, "2026-W02") == ("2025-W52", "2026-W01", "2026-W02")
        with pytest.raises(SimulationError, match="periods"):
            recent_periods(0)


class TestPosting:
    """Reports are posted in batches of at most 64, retried on 429."""

    def test_batches_of_at_most_64(self) -> None:
        """Every report arrives exactly once, in batches of at most 64."""
        handler = _Collector()
        sealed = [bytes([i % 251]) * 60 + i.to_bytes(4, "big") for i in range(200)]
        stats = post_reports(
            sealed, "http://collector.test", transport=httpx.MockTransport(handler)
        )
        assert max(len(b) for b in handler.batches) == MAX_BATCH
        assert sorted(r for b in handler.batches for r in b) == sorted(sealed)
        assert (stats.sent, stats.accepted, stats.requests) == (200, 200, 4)

    def test_429_is_retried(self) -> None:
        """Overload answers are retried after Retry-After and then succeed."""
        handler = _Collector(busy=2)
        stats = post_reports(
            [b"x" * 60],
            "http://collector.test",
            transport=httpx.MockTransport(handler),
            concurrency=1,
        )
        assert stats.accepted == 1
        assert stats.retries == 2

    def test_refusal_is_an_error(self) -> None:
        """A 400 from the collector is a SimulationError with its status and body."""

        def refuse(request: httpx.Request) -> httpx.Response:
            return httpx.Response(400, json={"error": "bad shape"})

        with pytest.raises(SimulationError, match="collector answered 400"):
            post_reports([b"x" * 60], "http://c.test", transport=httpx.MockTransport(refuse))

    def test_simulate_posts_the_whole_population(self) -> None:
        """simulate() posts one report per user, kind and period."""
        handler = _Collector()
        result = simulate(
            25,
            "http://c.test",
            PUBLIC,
            seed=11,
            periods=("2026-W10", "2026-W11"),
            transport=httpx.MockTransport(handler),
        )
        assert result.stats.accepted == result.population.report_count()
        assert sum(len(b) for b in handler.batches) == result.population.report_count()

    def test_cli_reports_unreachable_collector(self, tmp_path: Path) -> None:
        """``20i-agg simulate`` against a closed port is one error line, exit code 1."""
        import socket

        from server_agg.app import app
        from server_agg.keys import generate

        keys = generate(tmp_path / "keys")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        result: Any = CliRunner().invoke(
            app,
            [
                "simulate",
                "--clients",
                "3",
                "--endpoint",
                f"http://127.0.0.1:{port}",
                "--public-key",
                str(keys.public_path),
                "--seed",
                "1",
            ],
        )
        assert result.exit_code == 1
        assert "cannot post to" in result.output


ARRIVALS_MODEL = {
    **DEFAULT_MODEL,
    "arrivals": {"share": 0.5, "categorical": {"platform": {"windows-x86_64": 1}}},
}


class TestArrivals:
    """The model's arrivals: more users join from the second week on (a population shift)."""

    MODEL = ARRIVALS_MODEL
    PERIODS = ("2026-W50", "2026-W51", "2026-W52", "2026-W53")

    def test_arrivals_join_later_with_their_own_tables(self) -> None:
        """100 users join 200; each sends nothing before its week (from the second on) and then
        every week, with the arrivals' platform table."""
        population = make_population(200, seed=9, model=self.MODEL, periods=self.PERIODS)
        arrived = population.users[200:]
        assert len(arrived) == 100
        starts = set()
        for user in arrived:
            rows = user.values["usage"]
            start = next(i for i, row in enumerate(rows) if row is not None)
            starts.add(start)
            assert all(row is None for row in rows[:start])
            assert all(row is not None for row in rows[start:])
            assert {row["platform"] for row in rows[start:] if row is not None} == {
                "windows-x86_64"
            }
        assert starts == {1, 2, 3}
        assert all(row is not None for u in population.users[:200] for row in u.values["usage"])

    def test_counts_and_reports_agree(self) -> None:
        """report_count() is the number of reports built, and counts() splits it by week."""
        population = make_population(60, seed=10, model=self.MODEL, periods=self.PERIODS)
        built = list(population.reports(GeneratorSource(np.random.default_rng(11))))
        assert len(built) == population.report_count() == sum(population.counts().values())
        usage = [population.counts()[("usage", p)] for p in self.PERIODS]
        assert usage[0] == 60 and usage == sorted(usage) and usage[-1] == 90

    def test_the_base_population_is_unchanged(self) -> None:
        """With arrivals, the first users are drawn exactly as without them (same seed)."""
        plain = make_population(50, seed=12, periods=self.PERIODS)
        shifted = make_population(50, seed=12, model=self.MODEL, periods=self.PERIODS)
        assert [u.values for u in plain.users] == [u.values for u in shifted.users[:50]]

    def test_bad_share_is_refused(self) -> None:
        """A share outside [0, 10] is a SimulationError naming it."""
        bad = {**DEFAULT_MODEL, "arrivals": {"share": -1}}
        with pytest.raises(SimulationError, match=r"arrivals.share \(-1\)"):
            make_population(10, seed=1, model=bad, periods=self.PERIODS)
