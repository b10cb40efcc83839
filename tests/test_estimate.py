"""Tests for ldp.estimate: debiasing, standard errors, CIs, significance and consistency steps.

Expected numbers come from the formulas in the module (Wang et al., USENIX Security 2017,
Theorem 2) evaluated by hand, from scipy.stats.norm for the quantiles, and, for the consistency
steps, from independent characterisations of their optima: Norm-Sub against a brute-force
search over active sets and the KKT conditions of the projection, MLE against the KKT
conditions and values of the Poisson log-likelihood it maximises.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from itertools import combinations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import norm

from ldp.errors import ParameterError
from ldp.estimate import (
    CONSISTENCY,
    FrequencyEstimate,
    apply_consistency,
    estimate_frequencies,
    frequency_variance,
    project_simplex,
)
from ldp.mechanisms import GRR, OLH, OUE, SS, from_name

FloatArray = npt.NDArray[np.float64]

# A small hand-checkable channel: p* = 0.6, q* = 0.2, so raw = (s/n - 0.2) / 0.4.
P, Q = 0.6, 0.2
SUPPORT = np.array([30.0, 50.0, 20.0, 10.0])
N = 100
RAW = np.array([0.25, 0.75, 0.0, -0.25])

# Subnormals are excluded: raw frequencies are never that small, and dividing by them overflows.
VECTORS = arrays(
    np.float64,
    st.integers(1, 7),
    elements=st.floats(-5, 5, allow_nan=False, allow_subnormal=False, width=64),
)


def hand_std(raw: FloatArray, n: int = N) -> FloatArray:
    f = np.clip(raw, 0, 1)
    return np.sqrt((Q * (1 - Q) / (P - Q) ** 2 + f * (1 - P - Q) / (P - Q)) / n)


def make(raw: list[float], std: list[float], n: int = 1000) -> FrequencyEstimate:
    r = np.array(raw)
    return FrequencyEstimate(
        freq=np.clip(r, 0, 1), raw=r, std=np.array(std), n=n, consistency="clip"
    )


class TestFrequencyVariance:
    """frequency_variance is Wang et al.'s formula with the f term."""

    def test_formula_at_zero_and_at_f(self) -> None:
        """(q(1-q)/(p-q)^2 + f(1-p-q)/(p-q)) / n, with f=None meaning 0; arrays broadcast."""
        assert frequency_variance(10, P, Q) == pytest.approx(0.16 / 0.16 / 10)
        assert frequency_variance(10, P, Q, 0.5) == pytest.approx((1.0 + 0.5 * 0.2 / 0.4) / 10)
        np.testing.assert_allclose(frequency_variance(10, P, Q, np.array([0.0, 0.5])), [0.1, 0.125])

    @pytest.mark.parametrize(
        ("n", "p", "q", "named"),
        [(0, P, Q, r"n \(0\)"), (10, 0.2, 0.2, r"q\* \(0.2\)"), (10, 0.5, -0.1, r"-0.1")],
    )
    def test_bad_parameters(self, n: int, p: float, q: float, named: str) -> None:
        """n < 1 or not 0 <= q* < p* <= 1 raise ParameterError naming the value."""
        with pytest.raises(ParameterError, match=named):
            frequency_variance(n, p, q)


class TestEstimateFrequencies:
    """estimate_frequencies debiases support counts and attaches analytic standard errors."""

    def test_hand_example(self) -> None:
        """Support (30, 50, 20, 10) of 100 reports at p*=0.6, q*=0.2 gives raw (.25,.75,0,-.25)."""
        est = estimate_frequencies(SUPPORT, N, P, Q, consistency="none")
        np.testing.assert_allclose(est.raw, RAW, atol=1e-15)
        np.testing.assert_allclose(est.freq, RAW, atol=1e-15)
        np.testing.assert_allclose(est.std, hand_std(RAW), rtol=1e-12)
        assert est.n == N
        assert est.d == 4
        assert est.consistency == "none"
        assert est.labels is None

    def test_default_is_norm_sub(self) -> None:
        """Without a consistency argument, freq is the simplex projection of raw."""
        est = estimate_frequencies(SUPPORT, N, P, Q)
        assert est.consistency == "norm-sub"
        np.testing.assert_allclose(est.freq, project_simplex(est.raw))
        np.testing.assert_allclose(est.counts, est.freq * N)

    def test_scale_for_padded_set_fields(self) -> None:
        """scale multiplies raw and std (pad length); total=None clips each item to [0, 1]."""
        base = estimate_frequencies(SUPPORT, N, P, Q, consistency="none")
        est = estimate_frequencies(SUPPORT, N, P, Q, consistency="norm-sub", scale=3.0, total=None)
        np.testing.assert_allclose(est.raw, 3 * base.raw)
        np.testing.assert_allclose(est.std, 3 * hand_std(np.clip(3 * RAW, 0, 3) / 3))
        np.testing.assert_allclose(est.freq, np.clip(3 * base.raw, 0, 1))

    def test_labels_are_kept(self) -> None:
        """Labels are stored and name the rows of to_dict()."""
        labels = ("a", "b", "c", "other")
        est = estimate_frequencies(SUPPORT, N, P, Q, labels=labels)
        assert est.labels == labels
        assert [row["value"] for row in est.to_dict()["items"]] == list(labels)

    @pytest.mark.parametrize(
        ("kwargs", "named"),
        [
            ({"support": [[1.0, 2.0]]}, "vector"),
            ({"n": 0}, r"n \(0\)"),
            ({"n": 2.5}, r"n \(2.5\)"),
            ({"n": True}, r"n \(True\)"),
            ({"support": [-1.0, 5.0, 5.0, 5.0]}, r"\[0, n=100\]"),
            ({"support": [101.0, 5.0, 5.0, 5.0]}, r"\[0, n=100\]"),
            ({"labels": ("a", "b")}, "2 labels for 4 items"),
            ({"scale": 0.0}, r"scale \(0.0\)"),
            ({"scale": math.inf}, r"scale \(inf\)"),
            ({"consistency": "median"}, "median"),
        ],
    )
    def test_bad_parameters(self, kwargs: dict[str, object], named: str) -> None:
        """Malformed inputs raise ParameterError naming the value and what is allowed."""
        args: dict[str, object] = {"support": SUPPORT, "n": N, "p_star": P, "q_star": Q}
        args.update(kwargs)
        with pytest.raises(ParameterError, match=named):
            estimate_frequencies(**args)  # type: ignore[arg-type]


class TestConfidenceIntervals:
    """ci() is the normal-approximation interval, clipped to [0, 1]."""

    @pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99])
    def test_ci_is_freq_plus_minus_z_std(self, level: float) -> None:
        """Bounds are clip(freq -/+ z std) with z = norm.ppf(1/2 + level/2); raw=True uses raw."""
        est = estimate_frequencies(SUPPORT, N, P, Q, consistency="norm-sub")
        z = norm.ppf(0.5 + level / 2)
        low, high = est.ci(level)
        np.testing.assert_allclose(low, np.clip(est.freq - z * est.std, 0, 1), rtol=1e-12)
        np.testing.assert_allclose(high, np.clip(est.freq + z * est.std, 0, 1), rtol=1e-12)
        low_raw, high_raw = est.ci(level, raw=True)
        np.testing.assert_allclose(low_raw, np.clip(est.raw - z * est.std, 0, 1), rtol=1e-12)
        np.testing.assert_allclose(high_raw, np.clip(est.raw + z * est.std, 0, 1), rtol=1e-12)

    def test_higher_level_is_wider(self) -> None:
        """A 99% interval contains the 90% interval of the same estimate."""
        est = make([0.5, 0.3, 0.2], [0.05, 0.05, 0.05])
        lo90, hi90 = est.ci(0.9)
        lo99, hi99 = est.ci(0.99)
        assert np.all(lo99 < lo90)
        assert np.all(hi99 > hi90)

    def test_default_level_is_95(self) -> None:
        """ci() without a level is the 95% interval."""
        est = make([0.5, 0.5], [0.1, 0.1])
        np.testing.assert_array_equal(est.ci()[0], est.ci(0.95)[0])

    def test_ci_covers_the_truth_at_its_level(self) -> None:
        """Over 400 seeded GRR surveys, the 90% raw interval covers the truth 90% +- 3 s.e."""
        m = GRR(1.0, 4)
        truth = np.array([0.4, 0.3, 0.2, 0.1])
        xs = np.repeat(np.arange(4), (truth * 1000).astype(int))
        rng = np.random.default_rng(31)
        covered = 0
        for _ in range(400):
            low, high = m.estimate(m.privatize_many(xs, rng), consistency="none").ci(0.9, raw=True)
            covered += int(np.sum((low <= truth) & (truth <= high)))
        # 1600 item-intervals; binomial s.e. of the rate is sqrt(0.09/1600) = 0.0075, and items
        # within a survey are dependent, so allow 4 of those (0.03).
        assert abs(covered / 1600 - 0.9) < 0.03

    @pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5])
    def test_bad_levels(self, level: float) -> None:
        """Levels outside (0, 1) raise ParameterError naming the level."""
        est = make([0.5, 0.5], [0.1, 0.1])
        with pytest.raises(ParameterError, match=rf"\({level}\) must be in \(0, 1\)"):
            est.ci(level)


class TestSignificance:
    """significant() flags items whose Bonferroni-corrected lower bound is above zero."""

    def test_bonferroni_threshold(self) -> None:
        """With d = 10 at 95%, z = norm.ppf(1 - 0.05/20) = 2.81: 2.5 s.e. is not enough, 2.9 is."""
        z_bonf = norm.ppf(1 - 0.05 / (2 * 10))
        assert 2.80 < z_bonf < 2.81
        raw = [2.5 * 0.01, 2.9 * 0.01, (z_bonf - 1e-6) * 0.01, (z_bonf + 1e-6) * 0.01] + [0.0] * 6
        est = make(raw, [0.01] * 10)
        assert est.significant(0.95).tolist() == [False, True, False, True] + [False] * 6
        # Uncorrected, 2.5 s.e. would clear the 95% two-sided z = 1.96: Bonferroni matters.
        assert norm.ppf(0.975) < 2.5

    @pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5])
    def test_bad_levels(self, level: float) -> None:
        """Levels outside (0, 1) raise ParameterError naming the level the caller passed."""
        est = make([0.5, 0.5], [0.1, 0.1])
        with pytest.raises(ParameterError, match=rf"\({level}\) must be in \(0, 1\)"):
            est.significant(level)

    def test_threshold_grows_with_d(self) -> None:
        """The same item (2.4 s.e.) is significant among 2 items but not among 50."""
        assert make([0.024, 0.0], [0.01, 0.01]).significant()[0]
        assert not make([0.024] + [0.0] * 49, [0.01] * 50).significant()[0]

    def test_uses_raw_not_the_projected_frequency(self) -> None:
        """An item with zero raw estimate is never significant, whatever freq says."""
        est = FrequencyEstimate(
            freq=np.array([0.5, 0.5]),
            raw=np.array([0.0, 1.0]),
            std=np.array([0.01, 0.01]),
            n=10,
            consistency="clip",
        )
        assert est.significant().tolist() == [False, True]

    def test_to_dict_is_json_and_consistent(self) -> None:
        """to_dict is JSON-serialisable and its rows agree with freq, ci and significant."""
        est = estimate_frequencies(SUPPORT, N, P, Q, labels=("a", "b", "c", "d"))
        doc = json.loads(json.dumps(est.to_dict(0.9)))
        assert doc["n"] == N
        assert doc["confidence"] == 0.9
        assert doc["consistency"] == "norm-sub"
        low, high = est.ci(0.9)
        sig = est.significant(0.9)
        for i, row in enumerate(doc["items"]):
            assert row["estimate"] == est.freq[i]
            assert row["raw"] == est.raw[i]
            assert row["std"] == est.std[i]
            assert (row["ci_low"], row["ci_high"]) == (low[i], high[i])
            assert row["significant"] == bool(sig[i])


def brute_force_projection(v: FloatArray, total: float) -> FloatArray:
    """Euclidean projection on {x >= 0, sum x = total} by trying every support set, exactly.

    On a support S the optimum is v - theta on S (theta fixed by the sum) and 0 elsewhere; the
    projection is the feasible candidate nearest to v. Exact rational arithmetic, because two
    candidates can differ by ~1e-9 in x while their float distances tie to the last bit.
    """
    exact = [Fraction(float(c)) for c in v]
    best: list[Fraction] | None = None
    best_dist: Fraction | None = None
    for size in range(1, len(exact) + 1):
        for support in combinations(range(len(exact)), size):
            theta = (sum(exact[i] for i in support) - Fraction(total)) / size
            x = [exact[i] - theta if i in support else Fraction(0) for i in range(len(exact))]
            if min(x) < 0:
                continue
            dist = sum((xi - vi) ** 2 for xi, vi in zip(x, exact, strict=True))
            if best_dist is None or dist < best_dist:
                best, best_dist = x, dist
    assert best is not None
    return np.array([float(c) for c in best])


class TestNormSub:
    """Norm-Sub is the Euclidean projection onto the probability simplex."""

    @settings(max_examples=150, deadline=None)
    @given(v=VECTORS)
    # Found by Hypothesis: item 1 belongs to the support by 4e-9, a float-distance tie.
    @example(v=np.array([-1.4748577e-08, -0.333333333, 0.0, 0.0]))
    def test_matches_brute_force_over_active_sets(self, v: FloatArray) -> None:
        """The projection equals the nearest feasible candidate over all 2^d - 1 support sets."""
        np.testing.assert_allclose(project_simplex(v), brute_force_projection(v, 1.0), atol=1e-9)

    @settings(max_examples=150, deadline=None)
    @given(v=VECTORS, total=st.sampled_from([1.0, 0.5, 3.0]))
    def test_kkt_conditions(self, v: FloatArray, total: float) -> None:
        """x >= 0, sum x = total, x = max(v - theta, 0) for one theta, and <v - x, y - x> <= 0."""
        x = project_simplex(v, total)
        assert x.min() >= 0
        assert x.sum() == pytest.approx(total, abs=1e-9)
        inside = x > 0
        theta = float(np.mean(v[inside] - x[inside]))
        np.testing.assert_allclose(x[inside], v[inside] - theta, atol=1e-9)
        assert np.all(v[~inside] <= theta + 1e-9)
        # Optimality against every vertex total * e_i of the simplex (hence against all of it).
        residual = v - x
        for i in range(v.size):
            vertex = np.zeros_like(v)
            vertex[i] = total
            assert residual @ (vertex - x) <= 1e-9

    @settings(max_examples=60, deadline=None)
    @given(v=VECTORS, shift=st.floats(-3, 3))
    def test_shift_invariant_and_order_preserving(self, v: FloatArray, shift: float) -> None:
        """Adding a constant changes nothing; larger raw values never get smaller projections."""
        x = project_simplex(v)
        np.testing.assert_allclose(project_simplex(v + shift), x, atol=1e-9)
        order = np.argsort(v, kind="stable")
        assert np.all(np.diff(x[order]) >= -1e-12)

    def test_points_on_the_simplex_are_fixed(self) -> None:
        """A vector already on the simplex projects to itself."""
        rng = np.random.default_rng(32)
        for d in (1, 2, 5, 30):
            p = rng.dirichlet(np.ones(d))
            np.testing.assert_allclose(project_simplex(p), p, atol=1e-12)

    def test_hand_example_and_dispatch(self) -> None:
        """(0.25, 0.75, 0, -0.25) is on the simplex already except the negative: it drops to 0."""
        np.testing.assert_allclose(project_simplex(RAW), [0.25, 0.75, 0.0, 0.0], atol=1e-15)
        np.testing.assert_allclose(project_simplex([0.6, 0.6, -0.2]), [0.5, 0.5, 0.0], atol=1e-15)
        np.testing.assert_array_equal(apply_consistency(RAW, "norm-sub"), project_simplex(RAW))
        assert project_simplex(np.array([])).size == 0


class TestClip:
    """Clip zeroes negatives and rescales to the total."""

    @settings(max_examples=100, deadline=None)
    @given(v=VECTORS)
    def test_is_the_normalised_positive_part(self, v: FloatArray) -> None:
        """Result is max(v, 0) / sum(max(v, 0)), or uniform when nothing is positive."""
        x = apply_consistency(v, "clip")
        pos = np.maximum(v, 0)
        expected = pos / pos.sum() if pos.sum() > 0 else np.full(v.size, 1 / v.size)
        np.testing.assert_allclose(x, expected, rtol=1e-12)
        assert x.sum() == pytest.approx(1)

    def test_none_is_an_identity_copy(self) -> None:
        """'none' returns an equal, independent array."""
        out = apply_consistency(RAW, "none")
        np.testing.assert_array_equal(out, RAW)
        out[0] = 9
        assert RAW[0] == 0.25

    @pytest.mark.parametrize("method", [m for m in CONSISTENCY if m != "none"])
    def test_items_that_are_not_a_distribution_are_clipped(self, method: str) -> None:
        """With total=None every method but 'none' clips each item to [0, 1]."""
        v = np.array([-0.2, 0.4, 1.3])
        np.testing.assert_array_equal(apply_consistency(v, method, total=None), [0.0, 0.4, 1.0])

    def test_unknown_method(self) -> None:
        """An unknown consistency step is a ParameterError listing the allowed ones."""
        with pytest.raises(ParameterError, match="norm-sub"):
            apply_consistency(RAW, "median")
        assert CONSISTENCY == ("norm-sub", "clip", "mle", "none")


def poisson_loglik(f: FloatArray, s: FloatArray, n: int, p: float, q: float) -> float:
    """Log-likelihood of support counts s_v ~ Poisson(n (q* + (p* - q*) f_v)), f on the simplex."""
    lam = n * (q + (p - q) * f)
    return float(np.sum(s * np.log(lam) - lam))


def simulate_support(m: GRR | OUE | OLH | SS, truth: FloatArray, n: int, seed: int) -> FloatArray:
    rng = np.random.default_rng(seed)
    xs = rng.choice(truth.size, n, p=truth)
    return m.support(m.privatize_many(xs, rng)).astype(np.float64)


MLE_CASES = [("grr", 1.0), ("oue", 1.0), ("olh", 1.0), ("ss", 0.5)]
MLE_TRUTH = np.array([0.4, 0.3, 0.2, 0.1, 0.0, 0.0])


class TestMle:
    """The 'mle' step maximises the Poisson likelihood of the support counts on the simplex."""

    @pytest.mark.parametrize(("name", "epsilon"), MLE_CASES)
    def test_on_simplex_and_certified_optimal(self, name: str, epsilon: float) -> None:
        """The result is a distribution whose likelihood is certified within 0.01 of the max."""
        m = from_name(name, epsilon, MLE_TRUTH.size)
        n = 5000
        s = simulate_support(m, MLE_TRUTH, n, 33)
        f = apply_consistency(
            m.estimate_from_support(s, n, "none").raw,
            "mle",
            support=s,
            n=n,
            p_star=m.p_star,
            q_star=m.q_star,
        )
        assert f.min() >= 0
        assert f.sum() == pytest.approx(1, abs=1e-12)
        p, q = m.p_star, m.q_star
        r = s / (n * (q + (p - q) * f))
        grad = n * (q * r.sum() + (p - q) * r) - n * (p + (f.size - 1) * q)
        # Concavity gives L(f*) - L(f) <= grad.(f* - f) <= max(grad) - grad.f (the Frank-Wolfe
        # duality gap): a certificate that f is within that many nats of the maximum. 0.01 nats
        # is statistically nothing (a 95% likelihood-ratio interval spans 1.92 nats); EM, which
        # converges slowly near the simplex boundary, leaves gaps of ~1e-8 to ~7e-3 here.
        assert float(grad.max() - grad @ f) <= 0.01

    @pytest.mark.parametrize(("name", "epsilon"), MLE_CASES)
    def test_likelihood_beats_other_distributions(self, name: str, epsilon: float) -> None:
        """Its log-likelihood is at least the truth's, Norm-Sub's, clip's and 300 random points'."""
        m = from_name(name, epsilon, MLE_TRUTH.size)
        n = 5000
        s = simulate_support(m, MLE_TRUTH, n, 34)
        est = m.estimate_from_support(s, n, consistency="mle")
        assert est.consistency == "mle"
        best = poisson_loglik(est.freq, s, n, m.p_star, m.q_star)
        rivals = [MLE_TRUTH, project_simplex(est.raw), apply_consistency(est.raw, "clip")]
        rivals += list(np.random.default_rng(35).dirichlet(np.ones(MLE_TRUTH.size), 300))
        for rival in rivals:
            assert poisson_loglik(np.asarray(rival), s, n, m.p_star, m.q_star) <= best + 1e-6

    def test_grr_interior_mle_is_the_unbiased_estimate(self) -> None:
        """For GRR the multinomial MLE is raw itself when raw is inside the simplex."""
        m = GRR(2.0, 4)
        s = simulate_support(m, np.array([0.4, 0.3, 0.2, 0.1]), 20_000, 36)
        est = m.estimate_from_support(s, 20_000, consistency="mle")
        assert est.raw.min() > 0
        assert est.raw.sum() == pytest.approx(1)
        np.testing.assert_allclose(est.freq, est.raw, atol=1e-8)

    def test_needs_the_channel(self) -> None:
        """Called without support, n, p* or q*, 'mle' raises ParameterError."""
        with pytest.raises(ParameterError, match="mle"):
            apply_consistency(RAW, "mle")
        with pytest.raises(ParameterError, match="mle"):
            apply_consistency(RAW, "mle", support=SUPPORT, n=N, p_star=P)
