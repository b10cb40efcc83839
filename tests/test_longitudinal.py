"""Longitudinal oracles: memoized PRR, fresh IRR, the composed channel's claim and its estimator."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from ldp.errors import DecodeError, ParameterError
from ldp.longitudinal import (
    AUTO_CANDIDATES,
    MECHANISM_NAMES,
    LongitudinalOracle,
    longitudinal,
    prr_label,
)
from ldp.mechanisms import olh_hash
from tests.audit import AuditResult, audit

ROOT = Path(__file__).resolve().parent.parent
FIELD = "os"


class SeededSource:
    """A reproducible RandomSource for tests: 32-bit words from a seeded numpy Generator."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._words: list[int] = []

    def word(self) -> int:
        if not self._words:
            self._words = self._rng.integers(0, 1 << 32, size=4096, dtype=np.uint64).tolist()
        return self._words.pop()

    def randbelow(self, n: int) -> int:
        bits = max(1, (n - 1).bit_length())
        while True:
            value = 0
            for _ in range((bits + 31) // 32):
                value = (value << 32) | self.word()
            value &= (1 << bits) - 1
            if value < n:
                return value


def secret(i: int) -> bytes:
    """The i-th deterministic 32-byte test secret."""
    return hashlib.sha256(b"test-secret/" + str(i).encode()).digest()


def outputs(oracle: LongitudinalOracle, seed: int = 0) -> list[Any]:
    """Every possible report (for OLH: every report with the given seed)."""
    d = oracle.d
    if oracle.mechanism == "grr":
        return list(range(d))
    if oracle.mechanism in ("sue", "oue"):
        return list(range(1 << d))
    if oracle.mechanism == "olh":
        return [[seed, b] for b in range(oracle.base.g)]
    return [list(c) for c in itertools.combinations(range(d), oracle.base.k)]


def olh_seeds(oracle: LongitudinalOracle, count: int) -> list[int]:
    """Seeds under which at least two values hash apart (otherwise every ratio is 1)."""
    seeds = []
    for s in itertools.count(12345, 7919):
        if len({olh_hash(s, x, oracle.base.g) for x in range(oracle.d)}) > 1:
            seeds.append(s)
        if len(seeds) == count:
            return seeds
    raise AssertionError("unreachable")  # pragma: no cover


#: Small (mechanism, d, epsilon_perm, epsilon_1) for exhaustive closed-form checks; the SS case
#: has k = 2 so that the mixture IRR is exercised beyond k = 1 (which is GRR).
SMALL = [
    ("grr", 4, 2.0, 1.0),
    ("sue", 3, 2.0, 1.0),
    ("oue", 3, 2.0, 1.0),
    ("olh", 3, 2.0, 1.0),
    ("ss", 6, 1.5, 0.5),
]


def channel_views(oracle: LongitudinalOracle) -> list[list[Any]]:
    """Output sets to enumerate: one for most oracles, one per seed for OLH."""
    if oracle.mechanism == "olh":
        return [outputs(oracle, s) for s in olh_seeds(oracle, 3)]
    return [outputs(oracle)]


def max_log_ratio(table: dict[int, list[Fraction]]) -> float:
    """max over outputs and input pairs of ln P[y | x] / P[y | x'], exactly."""
    worst = Fraction(1)
    inputs = list(table)
    for j in range(len(table[inputs[0]])):
        column = [table[x][j] for x in inputs]
        hi, lo = max(column), min(column)
        assert lo > 0
        worst = max(worst, hi / lo)
    return math.log(worst.numerator) - math.log(worst.denominator)


class TestParameters:
    """Construction validates epsilons and reports what the rounded probabilities achieve."""

    @pytest.mark.parametrize("mech", [*MECHANISM_NAMES, "auto"])
    def test_epsilon_1_must_not_exceed_epsilon_perm(self, mech: str) -> None:
        """epsilon_1 > epsilon_perm is refused, naming both values; equal means a frozen
        response (the instantaneous step is the identity, schema v2's epochs)."""
        with pytest.raises(ParameterError, match=r"epsilon_1 \(3.0\) must be <= epsilon_perm"):
            longitudinal(mech, 8, 1.0, 3.0)
        frozen = longitudinal(mech, 8, 2.0, 2.0)
        assert frozen.epsilon_1 == pytest.approx(frozen.epsilon_perm, abs=1e-6)
        if mech != "olh":  # OLH's IRR acts on buckets; the others' outputs are their PRRs
            prr = frozen.permanent_response(3, secret(1), FIELD)
            assert all(frozen.instantaneous(prr) == prr for _ in range(50))

    @pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, 21.0, True, "1"])
    def test_bad_epsilons_are_refused(self, bad: Any) -> None:
        """Non-positive, non-finite, huge or non-numeric epsilons raise ParameterError."""
        with pytest.raises(ParameterError):
            longitudinal("grr", 8, bad, 0.5)
        with pytest.raises(ParameterError):
            longitudinal("grr", 8, 22.0, bad)

    def test_unknown_mechanism_and_tiny_domain_are_refused(self) -> None:
        """An unknown mechanism name or d < 2 raises ParameterError naming the value."""
        with pytest.raises(ParameterError, match="'rappor'"):
            longitudinal("rappor", 8, 2.0, 1.0)
        with pytest.raises(ParameterError, match="domain size"):
            longitudinal("grr", 1, 2.0, 1.0)

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    @pytest.mark.parametrize(("d", "ep", "e1"), [(4, 2.0, 1.0), (16, 4.0, 0.5), (6, 1.001, 1.0)])
    def test_achieved_epsilons_are_at_most_and_close_to_requested(
        self, mech: str, d: int, ep: float, e1: float
    ) -> None:
        """Rounding to N / 2**32 never overspends and loses less than 1e-6 of either epsilon."""
        o = longitudinal(mech, d, ep, e1)
        assert ep - 1e-6 < o.epsilon_perm <= ep
        assert e1 - 1e-6 < o.epsilon_1 <= e1

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_one_report_is_the_base_oracle_at_epsilon_1(self, mech: str) -> None:
        """The composed channel's p*, q* equal the base oracle's at epsilon_1 (up to rounding)."""
        o = longitudinal(mech, 10, 3.0, 1.0)
        assert o.base.epsilon == 1.0
        assert o.p_star == pytest.approx(o.base.p_star, rel=1e-6)
        assert o.q_star == pytest.approx(o.base.q_star, rel=1e-6)

    @pytest.mark.parametrize(("d", "e1"), [(3, 1.0), (8, 1.0), (16, 0.5), (64, 2.0)])
    def test_auto_picks_the_smallest_composed_variance(self, d: int, e1: float) -> None:
        """'auto' returns the candidate whose composed variance at f = 0 is smallest."""
        auto = longitudinal("auto", d, 2 * e1, e1)
        best = min(longitudinal(m, d, 2 * e1, e1).variance(1) for m in AUTO_CANDIDATES)
        assert auto.variance(1) == best
        assert auto.mechanism in AUTO_CANDIDATES


class TestComposedChannelClosedForm:
    """The exact channel satisfies epsilon_1 per report and epsilon_perm over any number."""

    @pytest.mark.parametrize(("mech", "d", "ep", "e1"), SMALL)
    def test_composition_matches_closed_form(self, mech: str, d: int, ep: float, e1: float) -> None:
        """Summing PRR x IRR over every PRR gives output_probability exactly; rows sum to 1."""
        o = longitudinal(mech, d, ep, e1)
        for view in channel_views(o):
            for x in range(d):
                total = Fraction(0)
                for y in view:
                    composed = sum(o.prr_probability(z, x) * o.irr_probability(y, z) for z in view)
                    assert composed == o.output_probability(y, x)
                    total += composed
                assert total == 1

    @pytest.mark.parametrize(("mech", "d", "ep", "e1"), SMALL)
    def test_one_report_costs_exactly_epsilon_1(
        self, mech: str, d: int, ep: float, e1: float
    ) -> None:
        """The worst ratio over outputs and input pairs is e^epsilon_1: holds, and is tight."""
        o = longitudinal(mech, d, ep, e1)
        worst = max(
            max_log_ratio({x: [o.output_probability(y, x) for y in view] for x in range(d)})
            for view in channel_views(o)
        )
        assert worst <= o.epsilon_1 + 1e-12 <= e1 + 1e-12
        assert worst > o.epsilon_1 - 1e-9  # so any smaller epsilon claim would be false

    @pytest.mark.parametrize(("mech", "d", "ep", "e1"), SMALL)
    def test_permanent_response_costs_exactly_epsilon_perm(
        self, mech: str, d: int, ep: float, e1: float
    ) -> None:
        """The PRR channel's worst ratio is e^epsilon_perm: holds, and is tight."""
        o = longitudinal(mech, d, ep, e1)
        worst = max(
            max_log_ratio({x: [o.prr_probability(z, x) for z in view] for x in range(d)})
            for view in channel_views(o)
        )
        assert worst <= o.epsilon_perm + 1e-12 <= ep + 1e-12
        assert worst > o.epsilon_perm - 1e-9

    @pytest.mark.parametrize(("mech", "d", "ep", "e1"), SMALL)
    def test_any_number_of_reports_stays_within_epsilon_perm(
        self, mech: str, d: int, ep: float, e1: float
    ) -> None:
        """Every sequence of T reports (T = 2, or 3 for small channels) costs <= epsilon_perm."""
        o = longitudinal(mech, d, ep, e1)
        for view in channel_views(o):
            periods = 3 if len(view) <= 8 else 2
            prr = {x: [o.prr_probability(z, x) for z in view] for x in range(d)}
            irr = [[o.irr_probability(y, z) for y in view] for z in view]
            table: dict[int, list[Fraction]] = {x: [] for x in range(d)}
            for seq in itertools.product(range(len(view)), repeat=periods):
                for x in range(d):
                    table[x].append(
                        sum(prr[x][z] * math.prod(irr[z][y] for y in seq) for z in range(len(view)))
                    )
            worst = max_log_ratio(table)
            assert o.epsilon_1 < worst <= o.epsilon_perm + 1e-12

    @pytest.mark.parametrize(("mech", "d", "ep", "e1"), SMALL)
    def test_many_reports_approach_epsilon_perm(
        self, mech: str, d: int, ep: float, e1: float
    ) -> None:
        """200 reports repeating the most telling PRR reveal almost all of epsilon_perm.

        So a lifetime claim even 0.01 below epsilon_perm would be false: the bound is tight.
        """
        o = longitudinal(mech, d, ep, e1)
        view = channel_views(o)[0]
        x, x2 = next(
            (a, b)
            for a, b in itertools.permutations(range(d), 2)
            if max(o.prr_probability(z, a) / o.prr_probability(z, b) for z in view) > 1
        )
        star = max(view, key=lambda z: o.prr_probability(z, x) / o.prr_probability(z, x2))
        periods = 200

        def seq_prob(v: int) -> Fraction:
            return sum(
                (o.prr_probability(z, v) * o.irr_probability(star, z) ** periods for z in view),
                Fraction(0),
            )

        ratio = seq_prob(x) / seq_prob(x2)
        log_ratio = math.log(ratio.numerator) - math.log(ratio.denominator)
        assert o.epsilon_perm - 0.01 < log_ratio <= o.epsilon_perm + 1e-12


class TestAudit:
    """LDP-Auditor (tests/audit.py, as for the core oracles) on the real client path.

    Not seeded on purpose: it audits the shipped randomness (OS CSPRNG for the IRR, the HMAC
    PRR from a fresh random secret per draw). At 99.99% confidence a true claim is falsely
    refuted with probability at most 1e-4 per case. With 12 000 draws per input and the event
    "supports 0 and not 1" the bound at epsilon_1 = 1 lands near 0.9 with a sampling SD of
    about 0.025, so the power assertion (> 0.75 of the claim) is about 6 SD away.
    """

    TRIALS = 12_000
    CONFIDENCE = 0.9999

    @staticmethod
    def _event(o: LongitudinalOracle) -> Callable[[Any], bool]:
        """'The output supports 0 and not 1': likelihood ratio e^epsilon between x = 0 and 1."""
        if o.mechanism == "grr":
            return lambda y: bool(y == 0)
        if o.mechanism in ("sue", "oue"):
            return lambda y: bool(y & 1) and not y & 2
        if o.mechanism == "olh":
            g = o.base.g
            return lambda y: bool(y[1] == olh_hash(y[0], 0, g) != olh_hash(y[0], 1, g))
        return lambda y: 0 in y and 1 not in y

    def _audit(self, o: LongitudinalOracle, draw: Callable[[int], Any]) -> AuditResult:
        return audit(lambda: draw(0), lambda: draw(1), self._event(o), self.TRIALS, self.CONFIDENCE)

    @staticmethod
    def _oracle(mech: str) -> LongitudinalOracle:
        o = longitudinal(mech, 8 if mech == "ss" else 6, 2.0, 1.0)
        if mech == "ss":
            assert o.base.k >= 2, "audit SS where it is not just GRR"
        return o

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_one_report_audit_cannot_refute_epsilon_1(self, mech: str) -> None:
        """The per-report bound stays <= epsilon_1 yet refutes 0.75 epsilon_1 (it has power)."""
        o = self._oracle(mech)
        result = self._audit(o, lambda x: o.privatize(x, os.urandom(32), FIELD))
        assert not result.refutes(o.epsilon_1), result
        assert result.refutes(0.75 * o.epsilon_1), result

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_lifetime_audit_cannot_refute_epsilon_perm(self, mech: str) -> None:
        """The PRR (all that unboundedly many reports reveal) audits within epsilon_perm.

        It also refutes epsilon_1: an oracle that forgot its IRR would be caught.
        """
        o = self._oracle(mech)
        result = self._audit(o, lambda x: o.permanent_response(x, os.urandom(32), FIELD))
        assert not result.refutes(o.epsilon_perm), result
        assert result.refutes(0.75 * o.epsilon_perm), result
        assert result.refutes(o.epsilon_1), result


class TestMemoization:
    """The PRR is a pure function of (secret, field, value): same in any process, any period."""

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_fifty_periods_keep_the_prr_and_vary_the_report(self, mech: str) -> None:
        """Over 50 periods (fresh objects, as a new process builds them) the PRR never changes."""
        reports, prrs = [], set()
        rand = SeededSource(1)
        for _ in range(50):
            o = longitudinal(mech, 6, 2.0, 1.0)
            prrs.add(json.dumps(o.permanent_response(3, secret(0), FIELD)))
            reports.append(json.dumps(o.privatize(3, secret(0), FIELD, rand)))
        assert len(prrs) == 1
        assert len(set(reports)) > 1  # the IRR is fresh, so the report is no fingerprint

    def test_prr_is_identical_in_another_process(self) -> None:
        """A separate Python process computes the same PRRs from the same secrets."""
        code = (
            "import hashlib, json, sys\n"
            "from ldp.longitudinal import longitudinal\n"
            "out = []\n"
            "for mech in sys.argv[1:]:\n"
            "    o = longitudinal(mech, 6, 2.0, 1.0)\n"
            "    for i in range(5):\n"
            "        s = hashlib.sha256(b'test-secret/' + str(i).encode()).digest()\n"
            "        out.append(o.permanent_response(i % 6, s, 'os'))\n"
            "print(json.dumps(out))\n"
        )
        run = subprocess.run(
            [sys.executable, "-c", code, *MECHANISM_NAMES],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        here = [
            longitudinal(m, 6, 2.0, 1.0).permanent_response(i % 6, secret(i), "os")
            for m in MECHANISM_NAMES
            for i in range(5)
        ]
        assert json.loads(run.stdout) == here

    def test_new_value_draws_its_own_prr(self) -> None:
        """Switching values uses a new memo label; each value keeps its PRR (v1 behaviour)."""
        o = longitudinal("grr", 6, 2.0, 1.0)
        values = [1] * 20 + [4] * 15 + [1] * 15
        seen_prr: dict[int, int] = {}
        for period, v in enumerate(values):
            prr = o.permanent_response(v, secret(7), FIELD)
            assert seen_prr.setdefault(v, prr) == prr, f"PRR of {v} changed at period {period}"
        assert prr_label(FIELD, 1) != prr_label(FIELD, 4)
        # Epoch labels (v2) never equal a v1 label, and differ per epoch.
        assert prr_label(FIELD, 1, 7) not in (prr_label(FIELD, 1), prr_label(FIELD, 1, 8))

    def test_new_value_prr_is_a_draw_for_that_value(self) -> None:
        """Across 600 secrets the PRR of value 4 names 4 at rate p1, not at the stale rate q1."""
        o = longitudinal("grr", 6, 2.0, 1.0)
        n = 600
        keep = float(o.prr_keep)  # L-GRR exposes its PRR keep probability
        hits = sum(o.permanent_response(4, secret(i), FIELD) == 4 for i in range(n))
        # Binomial(n, p1): within 4.5 standard deviations.
        assert abs(hits - n * keep) < 4.5 * math.sqrt(n * keep * (1 - keep))

    def test_field_name_separates_streams_and_accepts_bytes(self) -> None:
        """The field is part of the label: str and its UTF-8 bytes agree, other fields differ."""
        o = longitudinal("oue", 16, 2.0, 1.0)
        assert o.permanent_response(3, secret(1), "os") == o.permanent_response(3, secret(1), b"os")
        prrs = {o.permanent_response(3, secret(1), f) for f in ("os", "arch", "command", "x")}
        assert len(prrs) > 1
        assert o.memo_keys(3, "os") == (b"prr/os/3",)


class TestAveragingAdversary:
    """Given the PRR, a user's reports carry no further information about the true value."""

    N = 3000

    @staticmethod
    def _key(o: LongitudinalOracle, wire: Any) -> str:
        # OLH: the seed is the PRR's own (checked separately); only the bucket is random.
        return str(wire[1]) if o.mechanism == "olh" else json.dumps(wire)

    @staticmethod
    def _prr_key(o: LongitudinalOracle, prr: Any) -> str:
        return str(prr[1]) if o.mechanism == "olh" else json.dumps(prr)

    def _matched_secrets(self, o: LongitudinalOracle) -> tuple[bytes, bytes]:
        """Secrets whose PRRs for values 0 and 1 coincide (OLH: same bucket)."""
        first: dict[str, bytes] = {}
        for i in range(20_000):
            first.setdefault(self._prr_key(o, o.permanent_response(0, secret(i), FIELD)), secret(i))
        for i in range(20_000, 40_000):
            key = self._prr_key(o, o.permanent_response(1, secret(i), FIELD))
            if key in first:
                return first[key], secret(i)
        raise AssertionError("no matching PRRs found")  # pragma: no cover

    def _counts(self, o: LongitudinalOracle, x: int, s: bytes, seed: int) -> Counter[str]:
        rand = SeededSource(seed)
        prr = o.permanent_response(x, s, FIELD)
        counts: Counter[str] = Counter()
        for _ in range(self.N):
            wire = o.privatize(x, s, FIELD, rand)
            if o.mechanism == "olh":
                assert wire[0] == prr[0]
            counts[self._key(o, wire)] += 1
        return counts

    @staticmethod
    def _pvalue(a: Counter[str], b: Counter[str]) -> float:
        keys = sorted(set(a) | set(b))
        table = np.array([[a[k] for k in keys], [b[k] for k in keys]])
        return float(stats.chi2_contingency(table).pvalue)

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_report_distribution_given_prr_ignores_the_true_value(self, mech: str) -> None:
        """Users with values 0 and 1 but the same PRR report alike (chi-square p > 0.001)."""
        o = longitudinal(mech, 8 if mech == "ss" else 4, 2.0, 1.0)
        s0, s1 = self._matched_secrets(o)
        assert self._pvalue(self._counts(o, 0, s0, 11), self._counts(o, 1, s1, 12)) > 1e-3

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_the_same_test_sees_a_different_prr(self, mech: str) -> None:
        """Power check: the same test separates two users whose PRRs differ (p < 1e-6)."""
        o = longitudinal(mech, 8 if mech == "ss" else 4, 2.0, 1.0)
        s0, _ = self._matched_secrets(o)
        key0 = self._prr_key(o, o.permanent_response(0, s0, FIELD))
        other = next(
            secret(i)
            for i in range(50_000, 60_000)
            if self._prr_key(o, o.permanent_response(0, secret(i), FIELD)) != key0
        )
        assert self._pvalue(self._counts(o, 0, s0, 11), self._counts(o, 0, other, 12)) < 1e-6


class TestEstimation:
    """The estimator with the composed p*, q* is unbiased with the analytic variance."""

    N = 4000
    REPS = 200

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_unbiased_with_analytic_variance(self, mech: str) -> None:
        """Over 200 seeded populations: mean within 4.5 SE of f; pooled variance within 15%."""
        d = 8
        o = longitudinal(mech, d, 2.0, 1.0)
        f = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])
        values = np.repeat(
            np.arange(d), np.round(f * self.N).astype(int)
        )  # exactly f * N per value
        rng = np.random.default_rng(2024)
        batch = o.simulate(np.tile(values, self.REPS), rng)
        raws = np.array(
            [
                o.estimate(batch[r * self.N : (r + 1) * self.N], consistency="none").raw
                for r in range(self.REPS)
            ]
        )
        analytic = np.array([o.variance(self.N, fi) for fi in f])
        # Mean of REPS unbiased estimates: SE = sqrt(var / REPS); 4.5 SE per item over 8 items.
        assert np.all(np.abs(raws.mean(axis=0) - f) < 4.5 * np.sqrt(analytic / self.REPS))
        # Pooled over 8 items the sample variance has relative SE ~ sqrt(2 / (8 * 199)) = 3.5%,
        # so 15% is more than 4 SE.
        ratio = raws.var(axis=0, ddof=1).sum() / analytic.sum()
        assert 0.85 < ratio < 1.15

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_client_path_round_trips_through_the_wire(self, mech: str) -> None:
        """privatize -> validate -> encode_batch -> estimate recovers f within 4.5 SE."""
        d, n = 5, 2500
        o = longitudinal(mech, d, 2.0, 1.0)
        f = np.array([0.4, 0.3, 0.2, 0.1, 0.0])
        values = np.repeat(np.arange(d), np.round(f * n).astype(int)).tolist()
        rand = SeededSource(5)
        wires = [o.privatize(int(x), secret(1000 + i), FIELD, rand) for i, x in enumerate(values)]
        for w in wires[:50]:
            o.validate(w)
        est = o.estimate(o.encode_batch(wires), consistency="none")
        sd = np.sqrt([o.variance(n, fi) for fi in f])
        assert np.all(np.abs(est.raw - f) < 4.5 * sd)
        assert est.std == pytest.approx(
            np.sqrt([o.variance(n, float(r)) for r in np.clip(est.raw, 0, 1)])
        )

    def test_periods_share_one_prr_per_user(self) -> None:
        """simulate_periods: two periods agree at the rate the PRR-shared channel predicts."""
        o = longitudinal("grr", 4, 2.0, 1.0)
        n = 20_000
        first, second = o.simulate_periods(np.zeros(n, dtype=np.int64), 2, np.random.default_rng(3))
        # P[same report] = sum_z P[z | 0] sum_y P[y | z]^2, exactly from the channel.
        same = sum(
            o.prr_probability(z, 0) * sum(o.irr_probability(y, z) ** 2 for y in range(4))
            for z in range(4)
        )
        rate = float(np.mean(first == second))
        assert abs(rate - float(same)) < 4.5 * math.sqrt(float(same) * (1 - float(same)) / n)
        with pytest.raises(ParameterError):
            o.simulate_periods([0], 0, np.random.default_rng(0))


class TestWire:
    """Validation, batching and support are the base oracle's, at epsilon_1."""

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_reports_validate_and_garbage_is_rejected(self, mech: str) -> None:
        """A real report validates; junk raises a DecodeError subclass."""
        o = longitudinal(mech, 8, 2.0, 1.0)
        o.validate(o.privatize(2, secret(3), FIELD))
        for junk in (None, "3", -1, [1 << 40, 0], [9, 9, 9], 1 << 70, 3.5):
            with pytest.raises(DecodeError):
                o.validate(junk)

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_bad_values_are_refused(self, mech: str) -> None:
        """A value outside [0, d) or of the wrong type raises ParameterError."""
        o = longitudinal(mech, 8, 2.0, 1.0)
        for bad in (-1, 8, True, "1", 1.0):
            with pytest.raises(ParameterError):
                o.privatize(bad, secret(0), FIELD)
        with pytest.raises(ParameterError):
            o.simulate(np.array([0, 9]), np.random.default_rng(0))


class TestClientPath:
    """The client side stays pure Python: no numpy on privatize or epoch memo updates."""

    def test_privatize_and_memo_never_import_numpy(self, tmp_path: Path) -> None:
        """Every longitudinal oracle, a set field and the epoch memo run without numpy."""
        code = (
            "import os, sys\n"
            "from ldp.epochs import EpochMemo\n"
            "from ldp.longitudinal import MECHANISM_NAMES, longitudinal\n"
            "from ldp.sets import SetOracle\n"
            "s = os.urandom(32)\n"
            "memo = EpochMemo(sys.argv[1])\n"
            "for m in MECHANISM_NAMES:\n"
            "    o = longitudinal(m, 8, 2.0, 1.0)\n"
            "    o.validate(o.privatize(3, s, 'os'))\n"
            "    memo.commit({'os': (5, o.epoch_response(3, s, 'os', 5))}, 80)\n"
            "so = SetOracle(8, 3, 2.0, 1.0)\n"
            "so.validate(so.privatize({1, 5}, s, 'modules'))\n"
            "memo.commit({'modules': (5, so.epoch_response({1, 5}, s, 'modules', 5))}, 80)\n"
            "print('numpy' in sys.modules, memo.epochs_reported('os', 80),"
            " memo.epochs_reported('modules', 80))\n"
        )
        run = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "epochs.json")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == ["False", "1", "1"]
