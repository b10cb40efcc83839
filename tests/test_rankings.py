"""Covariance of the debiased frequency vector, and the rankings read from it (issue 15).

Simulations run the real randomizers' numpy paths (``simulate_prr``, ``simulate_picks``) through
``tests.test_pooled.epoch_supports`` (frozen, staggered epochs as in schema v2).
"""

from __future__ import annotations

import itertools
import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from ldp.covariance import estimate_covariance, frequency_covariance, pair_support
from ldp.errors import ParameterError
from ldp.estimate import PooledChannel, epoch_pair_share, pooled_frequencies, pooled_variance
from ldp.longitudinal import longitudinal
from ldp.rankings import rank
from server_agg.marginals import groups_of, ss_group_variance
from tests.test_pooled import V1, V2, epoch_supports, field

SEED = 2026_15


class TestPairSupport:
    """The joint support probabilities of two items in one response."""

    @pytest.mark.parametrize(("d", "k"), [(6, 2), (7, 3), (5, 1)])
    def test_subset_selection_matches_enumeration(self, d: int, k: int) -> None:
        """a and b equal the probabilities counted over every k-subset (x = 0; pairs 0/1, 1/2)."""
        p = 0.55
        inside = [s for s in itertools.combinations(range(d), k) if 0 in s]
        outside = [s for s in itertools.combinations(range(d), k) if 0 not in s]

        def prob(event: tuple[int, int]) -> float:
            hit_in = sum(1 for s in inside if set(event) <= set(s)) / len(inside)
            hit_out = sum(1 for s in outside if set(event) <= set(s)) / len(outside)
            return p * hit_in + (1 - p) * hit_out

        q = (p * (k - 1) + (1 - p) * k) / (d - 1)
        s = pair_support("ss", d, p, q, k)
        assert s.a == pytest.approx(prob((0, 1)), abs=1e-12)
        assert s.b == pytest.approx(prob((1, 2)), abs=1e-12)

    def test_grr_supports_one_item(self) -> None:
        """A GRR response supports exactly one item, so no two together."""
        s = pair_support("grr", 5, 0.6, 0.1)
        assert (s.a, s.b) == (0.0, 0.0)

    def test_unknown_mechanism_and_bad_k_are_refused(self) -> None:
        """Errors name the bad value."""
        with pytest.raises(ParameterError, match="mechanism"):
            pair_support("rappor", 5, 0.6, 0.1)
        with pytest.raises(ParameterError, match="k"):
            pair_support("ss", 5, 0.6, 0.1, 5)


class TestFrequencyCovariance:
    """The exact covariance matrix."""

    @pytest.mark.parametrize("weeks", [1, 4, 12])
    @pytest.mark.parametrize("schema", [V1, V2])
    def test_diagonal_is_the_pooled_variance(self, schema: object, weeks: int) -> None:
        """Every field's diagonal equals pooled_variance at the same frequencies."""
        for spec in schema.fields:  # type: ignore[attr-defined]
            r = spec.randomizer()
            f = np.linspace(0.3, 0.0, spec.d)
            f = f / f.sum() if spec.kind == "categorical" else f
            share = epoch_pair_share(spec.epoch_weeks, weeks)
            c = frequency_covariance(r, 500, f, weeks=weeks, share=share)
            expected = pooled_variance(PooledChannel.of(r), 500, weeks, share, f)
            np.testing.assert_allclose(np.diag(c), expected, rtol=1e-12)
            np.testing.assert_allclose(c, c.T, atol=1e-15)
            if spec.kind == "categorical":  # a set field's pairwise bound need not be PSD
                assert np.linalg.eigvalsh(c).min() > -1e-12 * np.abs(c).max()

    def test_subset_selection_sum_is_constant(self) -> None:
        """Every SS report supports k items, so the estimates' sum has zero variance."""
        for spec in V2.fields:
            if spec.kind != "categorical":
                continue
            f = np.full(spec.d, 1.0 / spec.d)
            c = frequency_covariance(spec.randomizer(), 1000, f)
            assert abs(c.sum()) < 1e-12 * np.trace(c)

    def test_group_variance_matches_the_marginals_derivation(self) -> None:
        """1' C 1 over a group of platform cells is server_agg.marginals' exact SS variance."""
        spec = field(V2, "platform")
        r = spec.randomizer()
        f = np.linspace(3.0, 1.0, spec.d)
        f /= f.sum()
        c = frequency_covariance(r, 700, f)
        for members in groups_of(spec.domain, 0).values():
            var = sum(
                f[x] * ss_group_variance(spec.d, r.k, r.p_star, members, x) for x in range(spec.d)
            ) / (700 * (r.p_star - r.q_star) ** 2)
            assert c[np.ix_(members, members)].sum() == pytest.approx(var, rel=1e-10)

    def test_grr_is_the_multinomial_given_the_inputs(self) -> None:
        """For GRR the off-diagonal is -(q^2 + q (p - q)(f_i + f_j)) / (n (p - q)^2)."""
        r = longitudinal("grr", 4, 2.0, 2.0)
        f = np.array([0.4, 0.3, 0.2, 0.1])
        c = frequency_covariance(r, 100, f)
        p, q = r.p_star, r.q_star
        expected = -(q * q + q * (p - q) * (f[0] + f[1])) / (100 * (p - q) ** 2)
        assert c[0, 1] == pytest.approx(expected, rel=1e-12)

    @pytest.mark.parametrize(("name", "weeks"), [("command", 1), ("command", 12), ("platform", 4)])
    def test_simulated_group_and_difference_variances(self, name: str, weeks: int) -> None:
        """Through the real randomizers, Var of a 7-value group sum and of top differences match."""
        # 3,000 populations: a sample variance has relative sd sqrt(2/2999) = 0.026; we allow 4
        # of those. The group of 7 of 14 command values has variance about 0.5x the sum of
        # its diagonal (the shared k slots), far outside that band: ignoring C would fail.
        rng, reps, n = np.random.default_rng(SEED), 3000, 200
        spec = field(V2, name)
        r = spec.randomizer()
        values = np.repeat(np.arange(4), [80, 50, 40, 30])
        supports = epoch_supports(rng, spec, values, n, weeks, reps=reps)
        channel, share = PooledChannel.of(r), epoch_pair_share(spec.epoch_weeks, weeks)
        raws = np.array([pooled_frequencies(s, n, channel, share, "none").raw for s in supports])
        f = np.bincount(values, minlength=spec.d) / n
        c = frequency_covariance(r, n, f, weeks=weeks, share=share)
        tol = 4 * math.sqrt(2 / (reps - 1))
        group = list(range(7))
        ratio = np.var(raws[:, group].sum(axis=1), ddof=1) / c[np.ix_(group, group)].sum()
        assert abs(ratio - 1) < tol
        assert c[np.ix_(group, group)].sum() < 0.8 * np.trace(c[np.ix_(group, group)])
        for i, j in ((0, 1), (1, 2), (3, 9)):
            v = c[i, i] + c[j, j] - 2 * c[i, j]
            assert abs(np.var(raws[:, i] - raws[:, j], ddof=1) / v - 1) < tol

    def test_set_field_pairs_are_conservative(self) -> None:
        """For modules (items 0 and 1 always held together) Var(f0 - f1) is not under-stated."""
        rng, reps, n = np.random.default_rng(SEED + 1), 3000, 200
        spec = field(V2, "modules")
        r = spec.randomizer()
        values = np.zeros((n, spec.d), dtype=bool)
        values[:100, [0, 1]] = True
        values[100:150, 2] = True
        supports = epoch_supports(rng, spec, values, n, 1, reps=reps)
        channel = PooledChannel.of(r)
        raws = np.array([pooled_frequencies(s, n, channel, 0.0, "none").raw for s in supports])
        c = frequency_covariance(r, n, values.mean(axis=0))
        tol = 4 * math.sqrt(2 / (reps - 1))
        # Items 0 and 1 are held together, so min(f0, f1) is their true joint share: exact.
        v01 = c[0, 0] + c[1, 1] - 2 * c[0, 1]
        assert abs(np.var(raws[:, 0] - raws[:, 1], ddof=1) / v01 - 1) < tol
        # Items 0 and 2 are never held together: the bound over-states, never under-states.
        v02 = c[0, 0] + c[2, 2] - 2 * c[0, 2]
        assert np.var(raws[:, 0] - raws[:, 2], ddof=1) / v02 < 1 + tol

    def test_estimate_covariance_plugs_in_the_clipped_raw(self) -> None:
        """The diagonal of estimate_covariance is the estimate's std squared."""
        spec = field(V2, "command")
        r = spec.randomizer()
        support = np.array([300, 120, 90, *([100] * 11)])
        est = pooled_frequencies(support[None, :], 1000, PooledChannel.of(r), 0.0)
        np.testing.assert_allclose(np.diag(estimate_covariance(est, r)), est.std**2, rtol=1e-12)

    def test_bad_arguments_are_refused(self) -> None:
        """n, weeks, share and the length of f are checked."""
        r = field(V2, "command").randomizer()
        f = np.full(14, 1 / 14)
        for kwargs in ({"n": 0}, {"weeks": 0}, {"share": 0.9, "weeks": 4}):
            args = {"n": 10, "weeks": 1, "share": 0.0, **kwargs}
            with pytest.raises(ParameterError):
                frequency_covariance(r, args.pop("n"), f, **args)  # type: ignore[arg-type]
        with pytest.raises(ParameterError, match="14 entries"):
            frequency_covariance(r, 10, f[:3])


class TestRank:
    """Top-k probabilities and pair statements."""

    def test_pair_confidence_is_the_normal_tail(self) -> None:
        """With independent errors, confidence is Phi(diff / sqrt(var_a + var_b))."""
        raw = np.array([0.40, 0.35, 0.25])
        cov = np.diag([0.02, 0.03, 0.01]) ** 2
        out = rank(raw, cov, ("build", "deploy", "init"), k=1)
        pair = next(p for p in out.pairs if p.more == "build" and p.less == "deploy")
        expected = NormalDist().cdf(0.05 / math.sqrt(0.02**2 + 0.03**2))
        assert pair.confidence == pytest.approx(expected, abs=1e-12)
        assert pair.sentence() == f"build is used more than deploy: {expected:.0%}"

    def test_top_k_probabilities_sum_to_k(self) -> None:
        """Every draw has exactly k values in its top k, so over all values they sum to k."""
        r = field(V2, "command").randomizer()
        f = np.array([0.2, 0.18, 0.17, 0.15, 0.1, 0.1, 0.05, 0.05, *([0.0] * 6)])
        cov = frequency_covariance(r, 1000, f)
        out = rank(f, cov, k=3, top=14, draws=5000, seed=1)
        assert out.top_k.sum() == pytest.approx(3.0, abs=1e-9)
        assert out.order[:3] == (0, 1, 2)

    def test_clear_leader_and_tie(self) -> None:
        """A value far ahead is top-1 for sure; two equal values split about evenly."""
        raw = np.array([0.6, 0.2, 0.2])
        cov = np.diag([1e-4, 1e-4, 1e-4])
        out = rank(raw, cov, k=1)
        assert out.top_k[0] == 1.0
        tie = next(p for p in out.pairs if {p.more, p.less} == {"1", "2"})
        assert tie.confidence == 0.5
        # Monte Carlo: 20,000 draws, standard error 0.0035; 5 of those.
        two = rank(raw, cov, k=2, draws=20_000)
        assert two.top_k[1] == pytest.approx(0.5, abs=0.018)

    def test_same_seed_same_numbers_and_json(self) -> None:
        """The result is reproducible and to_dict is JSON-ready with readable statements."""
        raw = np.array([0.5, 0.3, 0.15, 0.05])
        cov = np.diag([0.03, 0.03, 0.02, 0.01]) ** 2
        a = rank(raw, cov, ("a", "b", "c", "d"), k=2, seed=7)
        b = rank(raw, cov, ("a", "b", "c", "d"), k=2, seed=7)
        np.testing.assert_array_equal(a.top_k, b.top_k)
        doc = json.loads(json.dumps(a.to_dict()))
        assert doc["top"][0]["value"] == "a" and doc["k"] == 2
        assert "a is in the top 2: over 99%" in doc["statements"]
        assert "a is used more than b: over 99%" in doc["statements"]

    def test_bad_arguments_are_refused(self) -> None:
        """Shapes, k, top and draws are checked."""
        raw, cov = np.zeros(3), np.eye(3)
        for kwargs in ({"k": 0}, {"k": 4}, {"top": 1, "k": 2}, {"draws": 10}):
            with pytest.raises(ParameterError):
                rank(raw, cov, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ParameterError, match="covariance"):
            rank(raw, np.eye(2))

    def test_equal_truths_are_ordered_falsely_at_the_stated_rate(self) -> None:
        """Through the real command channel, "a more than b: >= 95%" for a true tie is said 5% of
        the time, as a one-sided test at 5% should."""
        # 2,000 populations: a proportion near 0.05 has sd 0.0049; 4 of those plus 0.01 for the
        # normal approximation and the plug-in covariance.
        rng, reps, n = np.random.default_rng(SEED + 2), 2000, 300
        spec = field(V2, "command")
        r = spec.randomizer()
        values = np.repeat(np.arange(4), [90, 90, 60, 60])
        supports = epoch_supports(rng, spec, values, n, 1, reps=reps)
        channel = PooledChannel.of(r)
        said = 0
        for s in supports:
            est = pooled_frequencies(s, n, channel, 0.0, "none")
            out = rank(est.raw, estimate_covariance(est, r), k=1, top=14, draws=100)
            pair = next(p for p in out.pairs if {p.more, p.less} == {"0", "1"})
            said += pair.more == "0" and pair.confidence >= 0.95
        rate = said / reps
        assert abs(rate - 0.05) < 4 * math.sqrt(0.05 * 0.95 / reps) + 0.01
