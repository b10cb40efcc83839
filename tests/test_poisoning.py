"""The poisoning screen: the channel's pattern law, its tail bound, and what it trims."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from ldp.envelope import seal
from ldp.report import pad
from ldp.schema import canonical_dumps, shipped_schema
from server_agg.aggregate import count_plaintexts, finalize
from server_agg.app import app
from server_agg.keys import generate, load_public
from server_agg.periods import iso_week
from server_agg.poisoning import honest_limit, pattern_law
from server_agg.render import render
from server_agg.simulate import GeneratorSource, make_population
from server_agg.store import Store

SCHEMA = shipped_schema()
PERIOD = "2026-W51"
FIELDS = [(k.name, f) for k in SCHEMA.kinds for f in k.fields]


def _honest(n: int, seed: int, period: str = PERIOD) -> list[bytes]:
    population = make_population(n, seed=seed, periods=(period,))
    reports = population.reports(GeneratorSource(np.random.default_rng(seed + 1)))
    return [r for r in reports if b'"kind":"usage"' in r]


#: The naive attacker's target: a rare value of a field whose outputs are 4-subsets (v2's
#: command, at epsilon 1.6, reports 2-subsets: each pattern is then so common among honest
#: users that 5% identical crafted reports stay within what an honest population can send;
#: docs/THREAT-MODEL.md).
FIELD, TARGET = "platform", "linux-riscv64"


def _pattern() -> list[int]:
    """A legal crafted output of FIELD: the target plus the first k - 1 values."""
    spec = SCHEMA.kind("usage").field(FIELD)
    k = spec.randomizer().k  # type: ignore[attr-defined]
    return sorted([spec.domain.index(TARGET), *range(k - 1)])


def _names(pattern: list[int]) -> list[str]:
    domain = SCHEMA.kind("usage").field(FIELD).domain
    return [domain[i] for i in pattern]


def _crafted(template: bytes, count: int, output: list[int]) -> list[bytes]:
    doc = json.loads(template)
    doc["fields"][FIELD] = output
    return [pad(canonical_dumps(doc).encode())] * count


class TestPatternLaw:
    @pytest.mark.parametrize(("kind", "spec"), FIELDS, ids=[f.name for _, f in FIELDS])
    def test_law_matches_the_channel_margins(self, kind: str, spec: object) -> None:
        """Each field is a k-subset channel whose q* is what the symmetric law implies."""
        randomizer = spec.randomizer()  # type: ignore[attr-defined]
        law = pattern_law(randomizer)
        assert law is not None
        d, k, pi_max = law
        oracle = getattr(randomizer, "oracle", randomizer)
        p, q = oracle.p_star, oracle.q_star
        # Given x, all k-subsets holding x are equally likely, so another item y is in the
        # output with probability p*(k-1)/(d-1) + (1-p*) k/(d-1): that must be q*.
        assert q == pytest.approx(p * (k - 1) / (d - 1) + (1 - p) * k / (d - 1), rel=1e-9)
        assert pi_max == pytest.approx(p / math.comb(d - 1, k - 1))
        assert pi_max > (1 - p) / math.comb(d - 1, k)  # patterns with x are the likelier ones

    def test_pattern_frequencies_follow_the_law(self) -> None:
        """Simulated command reports of users all holding item 0: each pattern with item 0
        turns up at share pi_max, and none passes the screen's limit (the worst case)."""
        randomizer = SCHEMA.kind("usage").field("command").randomizer()
        d, k, pi_max = pattern_law(randomizer)  # type: ignore[misc]
        n = 40_000
        batch = randomizer.simulate(np.zeros(n, dtype=np.int64), np.random.default_rng(7))
        counts = Counter(tuple(sorted(row)) for row in batch.tolist())
        with_x = [c for s, c in counts.items() if 0 in s]
        m = math.comb(d - 1, k - 1)
        # Their total is Binomial(n, p*): the mean per pattern is within 5 sd of n * pi_max.
        sd = math.sqrt(n * pi_max * m * (1 - pi_max * m)) / m
        assert abs(sum(with_x) / m - n * pi_max) < 5 * sd
        assert max(counts.values()) <= honest_limit(n, pi_max, 1e-6 / math.comb(d, k))


class TestHonestLimit:
    @pytest.mark.parametrize(("n", "pi"), [(100, 0.01), (2_000, 0.0017), (100_000, 0.137)])
    def test_tail_below_alpha(self, n: int, pi: float) -> None:
        """The exact binomial tail beyond the limit is at most alpha (Chernoff is conservative)."""
        for alpha in (1e-3, 1e-6, 1e-9):
            limit = honest_limit(n, pi, alpha)
            assert stats.binom.sf(limit, n, pi) <= alpha
            assert limit >= n * pi


class TestScreen:
    def test_honest_data_is_never_trimmed(self) -> None:
        """Five seeded honest populations: nothing trimmed, estimates identical with the screen."""
        for seed in range(5):
            counts = count_plaintexts(_honest(3_000, seed=100 + seed))
            on = finalize(counts, delta=None)
            off = finalize(counts, delta=None, screen=False)
            for g_on, g_off in zip(on.groups, off.groups, strict=True):
                for f_on, f_off in zip(g_on.fields, g_off.fields, strict=True):
                    assert f_on.trims == ()
                    assert np.array_equal(f_on.estimate.freq, f_off.estimate.freq)

    def test_naive_attack_trimmed_and_shift_shrinks(self) -> None:
        """100 identical crafted platform reports among 2,000: flagged, and the push on the
        target shrinks to under a quarter."""
        honest = _honest(2_000, seed=5)
        target = list(SCHEMA.kind("usage").field(FIELD).domain).index(TARGET)
        bad = _crafted(honest[0], 100, _pattern())

        def target_estimate(items: list[bytes], screen: bool) -> tuple[float, tuple[object, ...]]:
            result = finalize(
                count_plaintexts(items, kind="usage"),
                delta=None,
                screen=screen,
                consistency="none",
            )
            field = result.group("usage", PERIOD).field(FIELD)
            return float(field.estimate.freq[target]), field.trims

        base, _ = target_estimate(honest, False)
        off, _ = target_estimate(honest + bad, False)
        on, trims = target_estimate(honest + bad, True)
        assert len(trims) == 1
        trim = trims[0]
        assert list(trim.pattern) == _names(_pattern())  # type: ignore[attr-defined]
        assert trim.count >= 100 and trim.excluded > 70  # type: ignore[attr-defined]
        assert off - base > 0.1  # (1 - q*) / (p* - q*) = 3.5 x 100 / 2,100 for v2's platform
        assert abs(on - base) < (off - base) / 4

    def test_trims_are_in_every_format(self) -> None:
        """JSON lists the trimmed pattern; the table and HTML say so in words; CSV counts it."""
        honest = _honest(2_000, seed=6)
        result = finalize(
            count_plaintexts(honest + _crafted(honest[0], 100, _pattern())),
            delta=None,
        )
        doc = json.loads(render(result, "json"))
        group = next(g for g in doc["groups"] if g["kind"] == "usage")
        field = next(f for f in group["fields"] if f["name"] == FIELD)
        assert field["screened"][0]["pattern"] == _names(_pattern())
        assert field["n"] == group["n"] - field["screened"][0]["excluded"]
        words = ", ".join(_names(_pattern()))
        assert f"poisoning screen: {FIELD} pattern {{{words}}}" in render(result, "table")
        assert f"poisoning screen: {FIELD}" in render(result, "html")
        rows = [
            r for r in csv.DictReader(io.StringIO(render(result, "csv"))) if r["field"] == FIELD
        ]
        assert rows and all(r["screened"] == str(field["screened"][0]["excluded"]) for r in rows)


class TestCommand:
    def test_no_screen_option(self, tmp_path: Path) -> None:
        """`aggregate --no-screen` keeps everything; the default screens and says so."""
        base = tmp_path
        generate(base / "k")
        public = load_public(base / "k")
        week = iso_week(datetime.now(UTC).date())
        honest = _honest(1_500, seed=8, period=week)
        items = honest + _crafted(honest[0], 80, _pattern())
        with Store(base / "s.db") as store:
            store.add_batch([seal(p, public) for p in items])
        args = ["aggregate", "--key", str(base / "k"), "--store", str(base / "s.db")]
        screened = CliRunner().invoke(app, [*args, "--format", "json"])
        plain = CliRunner().invoke(app, [*args, "--format", "json", "--no-screen"])
        assert screened.exit_code == 0 and plain.exit_code == 0, screened.output
        fields = {
            name: [
                f["screened"]
                for g in json.loads(result.stdout)["groups"]
                for f in g["fields"]
                if f["name"] == FIELD
            ]
            for name, result in (("on", screened), ("off", plain))
        }
        assert fields["on"][0] and not fields["off"][0]
