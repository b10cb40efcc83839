"""Set-valued fields: padding-and-sampling over a longitudinal oracle."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from scipy import stats

from ldp.errors import DecodeError, ParameterError
from ldp.estimate import frequency_variance
from ldp.longitudinal import MECHANISM_NAMES, longitudinal, prr_label
from ldp.mechanisms import olh_hash
from ldp.sampling import HmacSource
from ldp.sets import DEFAULT_PAD, SetOracle, pick_label

FIELD = "modules"


def secret(i: int) -> bytes:
    """The i-th deterministic 32-byte test secret."""
    return hashlib.sha256(b"set-secret/" + str(i).encode()).digest()


def random_sets(rng: np.random.Generator, n: int, d: int, max_size: int) -> np.ndarray:
    """n membership rows with sizes uniform on 0..max_size and uniformly chosen items."""
    sizes = rng.integers(0, max_size + 1, size=n)
    keys = rng.random((n, d))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    return ranks < sizes[:, None]


class TestParameters:
    """Construction validates d, pad and the items of a set."""

    def test_defaults_and_claims(self) -> None:
        """The oracle runs over d + pad items and forwards the achieved epsilons."""
        s = SetOracle(6, DEFAULT_PAD, 2.0, 1.0)
        inner = longitudinal("auto", 6 + DEFAULT_PAD, 2.0, 1.0)
        assert s.oracle.d == 6 + DEFAULT_PAD
        assert s.mechanism == inner.mechanism
        assert (s.epsilon_perm, s.epsilon_1) == (inner.epsilon_perm, inner.epsilon_1)
        assert (s.p_star, s.q_star) == (inner.p_star, inner.q_star)
        assert s.memo_space == 6 + DEFAULT_PAD
        assert "pad=3" in repr(s)

    @pytest.mark.parametrize(("d", "pad"), [(0, 1), (6, 0), (6, 7), (6, True), (6, 2.0), (True, 1)])
    def test_bad_sizes_are_refused(self, d: Any, pad: Any) -> None:
        """d must be >= 1 and pad an integer in [1, d]."""
        with pytest.raises(ParameterError):
            SetOracle(d, pad, 2.0, 1.0)

    def test_epsilons_are_validated_by_the_inner_oracle(self) -> None:
        """epsilon_1 > epsilon_perm is refused here too."""
        with pytest.raises(ParameterError, match="epsilon_1"):
            SetOracle(6, 2, 1.0, 1.5)

    @pytest.mark.parametrize("bad", [{6}, {-1}, {True}, {"a"}, "01", 3, None])
    def test_bad_sets_are_refused(self, bad: Any) -> None:
        """Items outside [0, d), non-integers and non-sets raise ParameterError."""
        with pytest.raises(ParameterError):
            SetOracle(6, 2, 2.0, 1.0).privatize(bad, secret(0), FIELD)


class TestPick:
    """The picked item is uniform over the padded set and memoized by the secret."""

    def test_unchanged_set_repicks_the_same_item_for_fifty_periods(self) -> None:
        """Fresh objects, any iteration order: the same set always picks the same item."""
        picks = set()
        for period in range(50):
            s = SetOracle(6, 3, 2.0, 1.0)
            value = [4, 1] if period % 2 else frozenset({1, 4})
            picks.add(s.pick(value, secret(0), FIELD))
            assert s.memo_keys(value, FIELD, secret(0)) == (prr_label(FIELD, next(iter(picks))),)
        assert len(picks) == 1

    def test_pick_is_uniform_over_the_padded_set(self) -> None:
        """Over 3000 secrets, {1, 4} padded to 3 picks 1, 4 and dummy 6 equally (chi-square)."""
        s = SetOracle(6, 3, 2.0, 1.0)
        counts = Counter(s.pick({1, 4}, secret(i), FIELD) for i in range(3000))
        assert set(counts) == {1, 4, 6}
        assert stats.chisquare([counts[1], counts[4], counts[6]]).pvalue > 1e-3

    def test_large_set_is_sampled_not_padded(self) -> None:
        """A set longer than pad picks uniformly among its own items, never a dummy."""
        s = SetOracle(6, 2, 2.0, 1.0)
        counts = Counter(s.pick({0, 2, 3, 5}, secret(i), FIELD) for i in range(4000))
        assert set(counts) == {0, 2, 3, 5}
        assert stats.chisquare([counts[i] for i in (0, 2, 3, 5)]).pvalue > 1e-3
        assert s.padded({0, 2, 3, 5}) == [0, 2, 3, 5]
        assert s.padded(set()) == [6, 7]

    def test_memo_keys_without_secret_over_count(self) -> None:
        """Without the secret every candidate's PRR label is listed (never an under-count)."""
        s = SetOracle(6, 3, 2.0, 1.0)
        assert s.memo_keys({1, 4}, FIELD) == tuple(prr_label(FIELD, i) for i in (1, 4, 6))
        assert pick_label(FIELD, [1, 4]) == b"pick/modules/1,4"

    def test_report_goes_through_the_picked_items_prr(self) -> None:
        """A set's report is the inner oracle's report of its picked item, same randomness."""
        s = SetOracle(6, 3, 2.0, 1.0, mechanism="oue")
        for i in range(20):
            item = s.pick({2, 3}, secret(i), FIELD)
            irr = HmacSource(secret(i), b"irr-test")  # a reproducible stand-in for the CSPRNG
            wire = s.privatize({2, 3}, secret(i), FIELD, HmacSource(secret(i), b"irr-test"))
            assert wire == s.oracle.privatize(item, secret(i), FIELD, irr)
            s.validate(wire)
        with pytest.raises(DecodeError):
            s.validate(1 << 9)


class TestPrivacy:
    """One report is epsilon_1-LDP for any two sets (closed form, small domain)."""

    @staticmethod
    def _set_channel(s: SetOracle, items: frozenset[int], outputs: list[Any]) -> list[Fraction]:
        padded = s.padded(items)
        share = Fraction(1, len(padded))
        return [sum(share * s.oracle.output_probability(y, i) for i in padded) for y in outputs]

    @staticmethod
    def _outputs(s: SetOracle) -> list[Any]:
        o = s.oracle
        if o.mechanism == "grr":
            return list(range(o.d))
        if o.mechanism in ("sue", "oue"):
            return list(range(1 << o.d))
        if o.mechanism == "olh":
            return [[777, b] for b in range(o.base.g)]
        return [list(c) for c in itertools.combinations(range(o.d), o.base.k)]

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    @pytest.mark.parametrize("pad", [1, 2])
    def test_any_two_sets_within_epsilon_1(self, mech: str, pad: int) -> None:
        """Max ratio over all set pairs and outputs is <= e^epsilon_1; tight when pad = 1."""
        s = SetOracle(3, pad, 2.0, 1.0, mechanism=mech)
        outs = self._outputs(s)
        if mech == "olh":  # a seed under which the three items hash apart, so ratios are real
            g = s.oracle.base.g
            seed = next(t for t in range(10_000) if len({olh_hash(t, i, g) for i in range(4)}) > 2)
            outs = [[seed, b] for b in range(g)]
        sets = [frozenset(c) for r in range(4) for c in itertools.combinations(range(3), r)]
        table = [self._set_channel(s, v, outs) for v in sets]
        worst = max(max(col) / min(col) for col in zip(*table, strict=True))
        log_worst = math.log(worst.numerator) - math.log(worst.denominator)
        assert log_worst <= s.epsilon_1 + 1e-12
        if pad == 1 and mech != "olh":
            assert log_worst > s.epsilon_1 - 1e-9


class TestEstimation:
    """pad x the oracle estimate is unbiased for sets up to pad items, with the exact variance."""

    N = 4000
    REPS = 150

    @pytest.mark.parametrize("mech", MECHANISM_NAMES)
    def test_unbiased_with_exact_variance(self, mech: str) -> None:
        """Over 150 seeded populations: mean within 4.5 SE of f; pooled variance within 15%."""
        d, pad = 6, 3
        s = SetOracle(d, pad, 2.0, 1.0, mechanism=mech)
        rng = np.random.default_rng(99)
        member = random_sets(rng, self.N, d, pad)
        f = member.mean(axis=0)
        batch = s.simulate(np.tile(member, (self.REPS, 1)), rng)
        raws = np.array(
            [
                s.estimate(batch[r * self.N : (r + 1) * self.N], consistency="none").raw
                for r in range(self.REPS)
            ]
        )
        analytic = np.array([s.variance(self.N, fi) for fi in f])
        # SE of the mean of REPS estimates is sqrt(var / REPS); 4.5 SE per item over 6 items.
        assert np.all(np.abs(raws.mean(axis=0) - f) < 4.5 * np.sqrt(analytic / self.REPS))
        # Pooled over 6 items, the sample variance's relative SE is ~ sqrt(2 / (6 * 149)) = 4.7%
        # (picks add between-user variation that the exact formula includes), so 15% is > 3 SE.
        ratio = raws.var(axis=0, ddof=1).sum() / analytic.sum()
        assert 0.85 < ratio < 1.15

    def test_truncation_bias_matches_the_documented_formula(self) -> None:
        """Sets larger than pad are under-counted by 1 - pad/|v| per item, as documented."""
        d, pad, n, reps = 6, 2, 4000, 60
        s = SetOracle(d, pad, 3.0, 2.0)
        rng = np.random.default_rng(7)
        member = random_sets(rng, n, d, 5)
        sizes = member.sum(axis=1)
        f = member.mean(axis=0)
        expected = (member * np.minimum(1.0, pad / np.maximum(sizes, 1))[:, None]).mean(axis=0)
        batch = s.simulate(np.tile(member, (reps, 1)), rng)
        mean = np.mean(
            [s.estimate(batch[r * n : (r + 1) * n], consistency="none").raw for r in range(reps)],
            axis=0,
        )
        # The exact variance bounds the spread (it assumes |v| <= pad, which over-states it
        # here since big sets pick each item less often); 4.5 SE per item.
        se = np.sqrt(np.array([s.variance(n, fi) for fi in f]) / reps)
        assert np.all(np.abs(mean - expected) < 4.5 * se)
        assert np.all(expected < f - 0.1)  # the bias is real and large for these sizes

    def test_consistency_clips_to_unit_interval_not_simplex(self) -> None:
        """Set frequencies are clipped to [0, 1] and need not sum to 1; 'none' keeps raw."""
        s = SetOracle(4, 2, 2.0, 1.0)
        n = 100
        support = np.array([0, n, int(n * s.q_star), n // 2])
        est = s.estimate_from_support(support, n)
        assert np.all((est.freq >= 0) & (est.freq <= 1))
        assert est.freq[0] == 0.0 and est.freq[1] == 1.0
        assert est.raw[0] < 0 < 1 < est.raw[1]
        assert np.array_equal(s.estimate_from_support(support, n, consistency="none").freq, est.raw)
        with pytest.raises(ParameterError, match="4 entries"):
            s.estimate_from_support(np.zeros(6), n)

    def test_standard_errors_use_the_exact_set_variance(self) -> None:
        """std is sqrt of the exact set variance at the clipped raw estimate."""
        s = SetOracle(4, 2, 2.0, 1.0)
        est = s.estimate_from_support(np.array([10, 40, 70, 100]), 200)
        want = [math.sqrt(s.variance(200, float(f))) for f in np.clip(est.raw, 0, 1)]
        assert est.std == pytest.approx(want)
        # Random picks add exactly f (pad - 1) / n over Wang et al.'s formula at f / pad.
        for f in (0.0, 0.3, 0.9):
            wang = 4 * frequency_variance(200, s.p_star, s.q_star, f / 2)
            assert s.variance(200, f) - wang == pytest.approx(f / 200, abs=1e-15)

    def test_client_path_round_trips_through_the_wire(self) -> None:
        """privatize -> encode_batch -> estimate recovers item frequencies within 4.5 SE."""
        d, pad, n = 5, 2, 3000
        s = SetOracle(d, pad, 3.0, 2.0)
        rng = np.random.default_rng(1)
        member = random_sets(rng, n, d, pad)
        f = member.mean(axis=0)
        wires = [
            s.privatize(np.flatnonzero(row).tolist(), secret(i), FIELD)
            for i, row in enumerate(member)
        ]
        est = s.estimate(s.encode_batch(wires), consistency="none")
        assert np.all(np.abs(est.raw - f) < 4.5 * np.sqrt([s.variance(n, fi) for fi in f]))

    def test_membership_accepts_sets_or_a_boolean_matrix(self) -> None:
        """Simulation takes a list of sets or an (n, d) bool matrix; wrong shapes are refused."""
        s = SetOracle(4, 2, 2.0, 1.0)
        m = s.membership([{0, 3}, set(), [1]])
        assert m.tolist() == [[True, False, False, True], [False] * 4, [False, True, False, False]]
        assert s.membership(m) is m
        with pytest.raises(ParameterError):
            s.membership(np.zeros((2, 5), dtype=bool))
        picks = s.simulate_picks(m, np.random.default_rng(0))
        assert picks[0] in (0, 3) and picks[1] in (4, 5) and picks[2] in (1, 4)
