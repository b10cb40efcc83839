"""Tests for ldp.amplification: shuffle amplification bounds of Feldman, McMillan & Talwar 2021.

Where the expected numbers come from:

* The paper's example (n = 1e5, eps0 = 4, delta = 1e-6) as printed by the reference
  implementation, apple/ml-shuffling-amplification (README, and reproduced by running its
  ``example.py``): numerical upper bound 0.172790550755978, lower bound 0.1675385583317841
  (10 bisection steps from 0.5378, so each is within 0.5378 / 2**10 = 5.3e-4 of where its own
  delta crosses 1e-6), closed form (its ``closedformanalysis``) 0.5378040242374512.
* Theorem 3.1 evaluated by hand for the same example: e^4 = 54.59815, log(4/delta) = 15.20180,
  8 sqrt(e^4 * 15.20180 / 1e5) = 0.728830, 8 e^4 / 1e5 = 0.004368, (e^4 - 1)/(e^4 + 1) = 0.964028,
  log(1 + 0.964028 * 0.733198) = 0.534634.
* Independent brute force: the clone pair's hockey-stick divergence summed term by term with
  ``math.comb``, and the exact delta of shuffled binary randomized response (the bound must
  dominate it, since the theorem covers every eps0-LDP randomizer).
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats  # type: ignore[import-untyped]  # scipy ships no type information

from ldp import amplification
from ldp.amplification import (
    CentralEpsilon,
    central_epsilon,
    closed_form,
    closed_form_limit,
    numerical,
    numerical_delta,
)
from ldp.errors import ParameterError

ROOT = Path(__file__).resolve().parents[1]

# Reference implementation output for the paper's example (see the module docstring).
REF_NUMERICAL_UPPER = 0.172790550755978
REF_NUMERICAL_LOWER = 0.1675385583317841
REF_BISECTION_STEP = 0.5378040242374512 / 2**10
REF_CLOSED_FORM = 0.5378040242374512
THEOREM_CLOSED_FORM = 0.534634  # by hand, module docstring

TOL = amplification.DEFAULT_TOL


def brute_clone_delta(eps0: float, n: int, eps: float) -> float:
    """Hockey-stick divergence of the clone pair, term by term (no thresholds, no scipy)."""
    p = math.exp(-eps0)
    alpha = math.exp(eps0) / (math.exp(eps0) + 1.0)
    total = 0.0
    for c in range(n):
        weight = math.comb(n - 1, c) * p**c * (1.0 - p) ** (n - 1 - c)
        inner = 0.0
        for a in range(c + 2):
            below = math.comb(c, a - 1) / 2**c if a >= 1 else 0.0
            at = math.comb(c, a) / 2**c if a <= c else 0.0
            p_a = alpha * below + (1.0 - alpha) * at
            q_a = (1.0 - alpha) * below + alpha * at
            inner += max(0.0, p_a - math.exp(eps) * q_a)
        total += weight * inner
    return total


def shuffled_rr_delta(eps0: float, n: int, eps: float) -> float:
    """Exact delta of the count of ones after shuffling binary randomized response.

    User 1 holds 0 or 1; k of the other n - 1 users hold 1. The analyst sees the number of
    reported ones. Worst case over k and over the direction of the divergence.
    """
    keep = math.exp(eps0) / (math.exp(eps0) + 1.0)
    worst = 0.0
    for k in range(n):
        others = np.convolve(
            stats.binom.pmf(np.arange(k + 1), k, keep),
            stats.binom.pmf(np.arange(n - k), n - 1 - k, 1.0 - keep),
        )
        if_zero = np.convolve(others, [keep, 1.0 - keep])
        if_one = np.convolve(others, [1.0 - keep, keep])
        for first, second in ((if_zero, if_one), (if_one, if_zero)):
            worst = max(worst, float(np.maximum(first - math.exp(eps) * second, 0.0).sum()))
    return worst


class TestClosedForm:
    def test_paper_example_matches_theorem(self) -> None:
        """The paper's example gives the value of Theorem 3.1 worked out by hand."""
        assert closed_form(4.0, 10**5, 1e-6) == pytest.approx(THEOREM_CLOSED_FORM, abs=1e-6)

    def test_paper_example_within_five_percent_of_reference(self) -> None:
        """The reference implementation's closed form is within 5% of ours, and not smaller."""
        value = closed_form(4.0, 10**5, 1e-6)
        assert abs(value / REF_CLOSED_FORM - 1.0) < 0.05
        assert value <= REF_CLOSED_FORM

    def test_validity_limit_formula(self) -> None:
        """The validity limit is log(n / (16 log(2/delta))), as in the theorem."""
        assert closed_form_limit(10**5, 1e-6) == pytest.approx(
            math.log(1e5 / (16 * math.log(2e6))), rel=1e-12
        )

    def test_just_inside_validity_range_works(self) -> None:
        """An eps0 at the validity limit is accepted."""
        limit = closed_form_limit(10**5, 1e-6)
        assert 0.0 < closed_form(limit, 10**5, 1e-6) <= limit

    def test_outside_validity_range_raises(self) -> None:
        """An eps0 above log(n / (16 log(2/delta))) is refused, naming the values and limit."""
        limit = closed_form_limit(10**5, 1e-6)
        with pytest.raises(ParameterError, match=r"eps0 \(6\.1\).*n=100000.*6\.0656"):
            closed_form(6.1, 10**5, 1e-6)
        assert limit < 6.1

    def test_too_few_reports_for_any_eps0_raises(self) -> None:
        """With n < 16 log(2/delta) no eps0 qualifies, and the error says how many are needed."""
        assert closed_form_limit(100, 1e-6) < 0
        with pytest.raises(ParameterError, match=r"n >= 16 log\(2/delta\) = 232\.1.*\(100\)"):
            closed_form(0.01, 100, 1e-6)

    def test_capped_at_eps0_at_edge_of_validity(self) -> None:
        """Where the formula exceeds eps0 (small eps0, smallest valid n), eps0 is returned."""
        eps0, delta = 0.01, 1e-6
        n = math.ceil(16 * math.exp(eps0) * math.log(2 / delta))
        assert eps0 <= closed_form_limit(n, delta)
        raw = math.log1p(
            math.tanh(eps0 / 2)
            * (8 * math.sqrt(math.exp(eps0) * math.log(4 / delta) / n) + 8 * math.exp(eps0) / n)
        )
        assert raw > eps0  # the case this test is about
        assert closed_form(eps0, n, delta) == eps0

    @settings(max_examples=60, deadline=None)
    @given(
        eps0=st.floats(0.01, 8.0),
        n=st.integers(10**3, 10**9),
        more=st.integers(0, 10**9),
        bump=st.floats(0.0, 2.0),
    )
    def test_monotone_in_n_and_eps0(self, eps0: float, n: int, more: int, bump: float) -> None:
        """More reports never raise the bound; a larger eps0 never lowers it."""
        if eps0 + bump > closed_form_limit(n, 1e-6):
            return
        base = closed_form(eps0, n, 1e-6)
        assert closed_form(eps0, n + more, 1e-6) <= base
        assert closed_form(eps0 + bump, n, 1e-6) >= base
        assert base <= eps0


class TestNumerical:
    def test_paper_example_within_reference_bracket(self) -> None:
        """The paper's example lies between the reference's lower and upper numerical bounds."""
        value = numerical(4.0, 10**5, 1e-6)
        # Each reference bound is within one bisection step of its crossing; ours is rounded up
        # by at most a factor 1 + TOL.
        assert value >= REF_NUMERICAL_LOWER - REF_BISECTION_STEP
        assert value <= REF_NUMERICAL_UPPER * (1 + TOL)

    def test_paper_example_within_five_percent_of_reference(self) -> None:
        """The issue's acceptance check: within 5% of the reference's upper bound (about 0.17)."""
        assert abs(numerical(4.0, 10**5, 1e-6) / REF_NUMERICAL_UPPER - 1.0) < 0.05

    def test_delta_holds_at_answer_and_fails_one_step_below(self) -> None:
        """The answer is the smallest grid point whose delta is at most the target."""
        value = numerical(4.0, 10**5, 1e-6)
        assert numerical_delta(4.0, 10**5, value) <= 1e-6
        assert numerical_delta(4.0, 10**5, value / (1 + TOL) ** 1.01) > 1e-6

    @pytest.mark.parametrize("eps0", [1.0, 2.0, 4.0, 8.0])
    @pytest.mark.parametrize("n", [10**3, 10**4, 10**5, 10**6])
    def test_never_worse_than_closed_form_or_eps0(self, eps0: float, n: int) -> None:
        """Over the documented table, numerical <= eps0 and <= the closed form where valid."""
        value = numerical(eps0, n, 1e-6)
        assert 0.0 < value <= eps0
        if eps0 <= closed_form_limit(n, 1e-6):
            assert value <= closed_form(eps0, n, 1e-6)

    def test_single_user_is_randomized_response(self) -> None:
        """With n = 1 the bound is exactly that of eps0 randomized response, rounded up."""
        eps0, delta = 1.0, 0.01
        exact = math.log(math.exp(eps0) - delta * (math.exp(eps0) + 1))
        value = numerical(eps0, 1, delta)
        assert exact <= value <= exact * (1 + TOL)

    def test_no_clones_gives_no_amplification(self) -> None:
        """With e^-eps0 * n far below 1 almost nobody is a clone, so the answer is near eps0."""
        assert numerical(8.0, 1000, 1e-6) > 7.99

    def test_tiny_eps0_is_still_bounded_by_eps0(self) -> None:
        """An eps0 below the grid's floor comes back as eps0 or less, never as more."""
        assert numerical(1e-13, 10, 1e-6) <= 1e-13

    def test_huge_n_is_evaluated_at_the_cap(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Beyond the cap the bound is that of the cap (valid: it only improves with n)."""
        monkeypatch.setattr(amplification, "_N_NUMERICAL", 10**6)  # the real cap is 1e9: slow
        capped = numerical(0.7, 10**6, 1e-6)
        assert numerical(0.7, amplification.N_MAX, 1e-6) == capped
        assert amplification.closed_form(0.7, amplification.N_MAX, 1e-6) < capped

    def test_fast_for_ten_million_reports(self) -> None:
        """n = 1e7 at eps0 = log 2 (the widest clone range) takes well under a second of CPU."""
        numerical(1.0, 10**4, 1e-6)  # imports numpy and scipy outside the timed part
        start = time.process_time()
        numerical(math.log(2.0), 10**7, 1e-6)
        assert time.process_time() - start < 1.0

    def test_grouped_clone_counts_stay_an_upper_bound(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Grouping clone counts (used for huge n) can only raise delta and the answer, slightly."""
        exact_delta = numerical_delta(1.0, 10**6, 0.004)
        exact_eps = numerical(1.0, 10**6, 1e-6)
        monkeypatch.setattr(amplification, "_MAX_POINTS", 64)
        grouped_delta = numerical_delta(1.0, 10**6, 0.004)
        grouped_eps = numerical(1.0, 10**6, 1e-6)
        assert exact_delta <= grouped_delta <= exact_delta * 1.2
        assert exact_eps <= grouped_eps <= exact_eps * 1.05

    @settings(max_examples=25, deadline=None)
    @given(
        eps0=st.floats(0.1, 8.0),
        n=st.integers(2, 10**6),
        more=st.integers(0, 10**6),
        bump=st.floats(0.0, 2.0),
    )
    def test_monotone_in_n_and_eps0(self, eps0: float, n: int, more: int, bump: float) -> None:
        """More reports never raise the bound, a larger eps0 never lowers it, eps0 caps it."""
        base = numerical(eps0, n, 1e-6)
        # The answer is a point of a fixed grid, so a violation would be at least one grid
        # step (factor 1 + TOL); one step of slack covers the conservative rounding in the tail
        # truncation and grouping, which differ between the two calls.
        assert numerical(eps0, n + more, 1e-6) <= base * (1 + TOL)
        assert numerical(eps0 + bump, n, 1e-6) * (1 + TOL) >= base
        assert base <= eps0


class TestNumericalDelta:
    @pytest.mark.parametrize(("eps0", "n"), [(0.5, 12), (1.0, 30), (3.0, 40), (6.0, 25)])
    @pytest.mark.parametrize("fraction", [0.0, 0.1, 0.4, 0.8])
    def test_equals_brute_force_clone_sum(self, eps0: float, n: int, fraction: float) -> None:
        """The threshold formula equals the clone pair's divergence summed term by term."""
        eps = fraction * eps0
        assert numerical_delta(eps0, n, eps) == pytest.approx(
            brute_clone_delta(eps0, n, eps), rel=1e-9, abs=1e-14
        )

    @pytest.mark.parametrize(("eps0", "n"), [(0.5, 10), (1.0, 20), (2.0, 30)])
    @pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 0.9])
    def test_dominates_shuffled_randomized_response(
        self, eps0: float, n: int, fraction: float
    ) -> None:
        """The bound is at least the exact delta of shuffled binary randomized response."""
        eps = fraction * eps0
        assert shuffled_rr_delta(eps0, n, eps) <= numerical_delta(eps0, n, eps) + 1e-12

    def test_zero_at_and_above_eps0(self) -> None:
        """At eps >= eps0 an eps0-LDP output leaks nothing beyond eps: delta is 0."""
        assert numerical_delta(2.0, 1000, 2.0) == 0.0
        assert numerical_delta(2.0, 1000, 3.0) == 0.0

    def test_decreasing_in_eps(self) -> None:
        """delta(eps) does not increase with eps."""
        deltas = [numerical_delta(2.0, 10**4, eps) for eps in np.linspace(0.0, 2.0, 41)]
        assert all(b <= a for a, b in itertools.pairwise(deltas))

    def test_large_clone_counts_match_brute_force(self) -> None:
        """For a single large clone count, the formula matches a direct sum over a."""
        eps0, c, eps = 0.7, 5 * 10**7, 2.2e-4
        alpha = 1 / (1 + math.exp(-eps0))
        half = math.sqrt(c) / 2
        a = np.arange(int(c / 2 - 14 * half), int(c / 2 + 14 * half) + 2)
        below, at = stats.binom.pmf(a - 1, c, 0.5), stats.binom.pmf(a, c, 0.5)
        direct = np.maximum(
            alpha * below + (1 - alpha) * at - math.exp(eps) * ((1 - alpha) * below + alpha * at),
            0.0,
        ).sum()
        grid = amplification._CloneGrid(np.array([float(c)]), np.ones(1), 0.0)
        assert amplification._delta_on_grid(eps, eps0, grid) == pytest.approx(direct, rel=1e-8)


class TestBinomPmf:
    @pytest.mark.parametrize(
        ("n", "p", "rtol"),
        [
            (1, 0.3, 1e-12),
            (10, 0.5, 1e-12),
            (1000, math.exp(-4), 1e-12),
            (10**7, 0.5, 1e-10),
            # scipy's own pmf drifts at this size: its mass over +-10 sd missed 1 by 1.6e-14
            # and ours by 4e-16 when this test was written (too slow to keep as a test), so
            # only a looser pointwise agreement is meaningful.
            (10**12, math.exp(-0.7), 1e-8),
        ],
    )
    def test_matches_scipy(self, n: int, p: float, rtol: float) -> None:
        """Loader's pmf agrees with scipy.stats.binom.pmf over the bulk and at the edges."""
        mean, sd = n * p, math.sqrt(n * p * (1 - p))
        ks = np.unique(
            [*np.clip(np.round(mean + sd * np.linspace(-8, 8, 33)), 0, n).tolist(), 0, n]
        ).astype(np.float64)
        ours = amplification._binom_pmf(ks, float(n), p, 1.0 - p)
        theirs = stats.binom.pmf(ks, n, p)
        big = theirs > 1e-300
        assert np.allclose(ours[big], theirs[big], rtol=rtol, atol=0.0)

    @pytest.mark.parametrize(("n", "p"), [(10**4, 0.5), (10**8, 0.3), (10**10, math.exp(-0.7))])
    def test_sums_to_one(self, n: int, p: float) -> None:
        """The pmf over mean +- 10 sd sums to 1 within float rounding (the tails are < 1e-22)."""
        mean, sd = n * p, math.sqrt(n * p * (1 - p))
        ks = np.arange(math.floor(mean - 10 * sd), math.ceil(mean + 10 * sd) + 1, dtype=np.float64)
        total = float(amplification._binom_pmf(ks, float(n), p, 1.0 - p).sum())
        assert abs(total - 1.0) < 1e-13


class TestCentralEpsilon:
    def test_prefers_numerical(self) -> None:
        """For the paper's example the numerical bound is chosen and reported with its inputs."""
        result = central_epsilon(4.0, 10**5, 1e-6)
        assert result == CentralEpsilon(numerical(4.0, 10**5, 1e-6), 1e-6, 10**5, 4.0, "numerical")

    def test_falls_back_to_closed_form(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without scipy the closed form is used where it is valid."""

        def unavailable(*args: object, **kwargs: object) -> float:
            raise ImportError("no scipy here")

        monkeypatch.setattr(amplification, "numerical", unavailable)
        result = central_epsilon(4.0, 10**5, 1e-6)
        assert result.method == "closed-form"
        assert result.eps == closed_form(4.0, 10**5, 1e-6)

    def test_falls_back_to_local(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without scipy and outside the closed form's range, eps0 itself is the answer."""

        def unavailable(*args: object, **kwargs: object) -> float:
            raise ImportError("no scipy here")

        monkeypatch.setattr(amplification, "numerical", unavailable)
        result = central_epsilon(4.0, 1000, 1e-6)
        assert (result.eps, result.method) == (4.0, "local")

    def test_no_amplification_is_reported_as_local(self) -> None:
        """When shuffling gains nothing at the grid's resolution, the method says so."""
        result = central_epsilon(8.0, 1000, 1e-6)
        assert (result.eps, result.method) == (8.0, "local")

    def test_str_names_the_guarantee(self) -> None:
        """The text form states eps, delta, n, eps0 and the method."""
        text = str(central_epsilon(4.0, 10**5, 1e-6))
        assert text.startswith("(0.16")
        assert "1e-06)-DP after shuffling 100000 reports of 4-LDP (numerical)" in text


class TestValidation:
    @pytest.mark.parametrize(
        ("eps0", "message"),
        [
            (0.0, r"eps0 \(0\.0\) must be in \(0, 100\]"),
            (-1.0, r"eps0 \(-1\.0\) must be in \(0, 100\]"),
            (101.0, r"eps0 \(101\.0\) must be in \(0, 100\]"),
            (math.inf, r"eps0 \(inf\) must be finite"),
            (math.nan, r"eps0 \(nan\) must be finite"),
            (True, r"eps0 \(True\) must be a real number"),
            ("1", r"eps0 \('1'\) must be a real number"),
        ],
    )
    def test_bad_eps0(self, eps0: object, message: str) -> None:
        """A bad eps0 is refused by every entry point, naming the value and the range."""
        for call in (closed_form, numerical, central_epsilon):
            with pytest.raises(ParameterError, match=message):
                call(eps0, 1000, 1e-6)  # type: ignore[arg-type]  # bad types on purpose

    @pytest.mark.parametrize(
        ("n", "message"),
        [
            (0, r"n \(0\) must be in \[1, 2\*\*53\]"),
            (-5, r"n \(-5\) must be in \[1, 2\*\*53\]"),
            (2**53 + 1, r"n \(9007199254740993\) must be in \[1, 2\*\*53\]"),
            (1000.0, r"n \(1000\.0\) must be an integer"),
            (True, r"n \(True\) must be an integer"),
        ],
    )
    def test_bad_n(self, n: object, message: str) -> None:
        """A bad n is refused by every entry point, naming the value and the range."""
        for call in (closed_form, numerical, central_epsilon):
            with pytest.raises(ParameterError, match=message):
                call(1.0, n, 1e-6)  # type: ignore[arg-type]  # bad types on purpose

    @pytest.mark.parametrize("delta", [0.0, 1.0, -1e-6, 1.5, math.nan])
    def test_bad_delta(self, delta: float) -> None:
        """A delta outside (0, 1) is refused by every entry point, naming the value."""
        for call in (closed_form, numerical, central_epsilon):
            with pytest.raises(ParameterError, match=rf"delta \({delta!r}\) must be"):
                call(1.0, 1000, delta)

    @pytest.mark.parametrize("tol", [0.0, -0.1, 1.5, math.inf])
    def test_bad_tol(self, tol: float) -> None:
        """A tolerance outside (0, 1] is refused, naming the value."""
        with pytest.raises(ParameterError, match=rf"tol \({tol!r}\) must be"):
            numerical(1.0, 1000, 1e-6, tol=tol)

    def test_bad_eps_for_delta(self) -> None:
        """numerical_delta refuses a negative eps."""
        with pytest.raises(ParameterError, match=r"eps \(-0\.5\) must be >= 0"):
            numerical_delta(1.0, 1000, -0.5)

    def test_numpy_scalars_accepted(self) -> None:
        """numpy integers and floats are valid inputs."""
        value = numerical(np.float64(4.0), np.int64(10**5), np.float64(1e-6))  # type: ignore[arg-type]  # typed as int, accepted at run time
        assert value == numerical(4.0, 10**5, 1e-6)


class TestImport:
    def test_import_needs_no_numpy(self) -> None:
        """Importing the module (and the closed form) loads neither numpy nor scipy."""
        code = (
            "import sys; from ldp.amplification import closed_form; closed_form(4.0, 10**5, 1e-6);"
            "assert 'numpy' not in sys.modules and 'scipy' not in sys.modules, 'heavy import'"
        )
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
