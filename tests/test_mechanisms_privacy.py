"""Every frequency oracle keeps its privacy claim: exactly (closed form) and empirically (audit).

The closed-form checks compute, with exact fractions of the rounded probabilities, the largest
ratio P[y | x] / P[y | x'] over outputs y and input pairs, and show it is at most
e^epsilon_achieved while exceeding e^(epsilon_achieved (1 - 1e-6)): the claim holds and is tight.
For small domains the output distribution of the real ``privatize`` code is enumerated exactly,
path by path. The empirical audit (tests/audit.py) runs the real CSPRNG path and must not refute
the claim, yet must refute a deliberately broken encoder kept here as a canary.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from fractions import Fraction
from itertools import combinations, pairwise

import numpy as np
import pytest

from ldp.mechanisms import GRR, MECHANISMS, OLH, OUE, SS, SUE, from_name, olh_hash, ue_draw
from ldp.sampling import SYSTEM, Prob, RandomSource
from tests.audit import audit

DS = (2, 3, 5, 8, 16, 64)
EPSILONS = (0.1, 0.5, 1.0, 2.0, 4.0, 8.0)
GRID = [(name, d, eps) for name in MECHANISMS for d in DS for eps in EPSILONS]
#: A float-rounding allowance for comparing logarithms of exact ratios (values are <= ~10).
LOG_SLACK = 1e-12
#: "Slightly smaller epsilon" for the tightness check.
TIGHT = 1 - 1e-6

Mech = GRR | SUE | OUE | OLH | SS


def log_fraction(r: Fraction) -> float:
    """ln of an exact positive fraction (numerator and denominator may exceed float range)."""
    return math.log(r.numerator) - math.log(r.denominator)


def worst_over_inputs(column: Sequence[Fraction]) -> Fraction:
    """max over (x, x') of P[y|x] / P[y|x'] for one output y: its largest over its smallest."""
    return max(column) / min(column)


# --------------------------------------------------------------------------- closed forms


def worst_ratio_grr(m: GRR) -> Fraction:
    """Every output y has P[y|y] = keep and P[y|x] = (1 - keep)/(d - 1) for x != y."""
    keep = m.keep.value
    other = (1 - keep) / (m.d - 1)
    return worst_over_inputs([keep, other])


def worst_ratio_ue(m: SUE | OUE) -> Fraction:
    """Only bits x and x' differ in law between inputs x and x'; maximise over their 4 values."""
    p, q = m.p_prob.value, m.q_prob.value
    law_true = {1: p, 0: 1 - p}
    law_false = {1: q, 0: 1 - q}
    return max(
        law_true[bx] * law_false[bxp] / (law_false[bx] * law_true[bxp])
        for bx in (0, 1)
        for bxp in (0, 1)
    )


def worst_ratio_olh(m: OLH, seeds: Sequence[int]) -> Fraction:
    """For a fixed seed the bucket is GRR over g of h(seed, x); maximise over seeds and buckets.

    P[(seed, b) | x] = 2^-32 P[b | h(seed, x)], so the seed's factor cancels in every ratio. For
    bucket b the column over x takes the value keep where h(seed, x) = b and the other value
    elsewhere, so its max/min is keep/other exactly when some but not all x hash to b.
    """
    keep = m.keep.value
    other = (1 - keep) / (m.g - 1)
    worst = Fraction(1)
    for seed in seeds:
        buckets = [olh_hash(seed, x, m.g) for x in range(m.d)]
        for b in set(buckets):
            # Buckets no x hashes to have a constant column (ratio 1); skip them.
            column = [keep if hit else other for hit in {h == b for h in buckets}]
            worst = max(worst, worst_over_inputs(column))
    return worst


def ss_output_probs(m: SS) -> tuple[Fraction, Fraction]:
    """P[Y | x] for a k-subset Y containing x, and for one not containing x."""
    inc = m.include.value
    return (
        inc / math.comb(m.d - 1, m.k - 1),
        (1 - inc) / math.comb(m.d - 1, m.k),
    )


def worst_ratio_ss(m: SS) -> Fraction:
    """Every k-subset (1 <= k <= d-1) contains some x and misses some x'."""
    assert 1 <= m.k <= m.d - 1
    return worst_over_inputs(list(ss_output_probs(m)))


def worst_ratio(m: Mech) -> Fraction:
    if isinstance(m, GRR):
        return worst_ratio_grr(m)
    if isinstance(m, SUE | OUE):
        return worst_ratio_ue(m)
    if isinstance(m, OLH):
        seeds = [int(s) for s in np.random.default_rng(20261128).integers(0, 1 << 32, 64)]
        return worst_ratio_olh(m, [0, 1, 2, 3, *seeds])
    return worst_ratio_ss(m)


class TestClosedFormPrivacy:
    """The exact worst-case likelihood ratio of every oracle matches its claimed epsilon."""

    @pytest.mark.parametrize(("name", "d", "epsilon"), GRID)
    def test_worst_ratio_is_within_claim_and_tight(self, name: str, d: int, epsilon: float) -> None:
        """max P[y|x]/P[y|x'] <= e^eps_achieved, eps_achieved <= eps, and it fails just below."""
        m = from_name(name, epsilon, d)
        log_worst = log_fraction(worst_ratio(m))
        assert m.epsilon_achieved <= epsilon
        assert log_worst <= m.epsilon_achieved + LOG_SLACK
        assert log_worst > m.epsilon_achieved * TIGHT

    @pytest.mark.parametrize(("name", "d", "epsilon"), GRID)
    def test_rounding_wastes_almost_no_budget(self, name: str, d: int, epsilon: float) -> None:
        """Rounding to 32-bit probabilities costs under 1e-6 (relative) of the requested epsilon."""
        m = from_name(name, epsilon, d)
        assert epsilon - m.epsilon_achieved < 1e-6 * epsilon

    @pytest.mark.parametrize(("d", "epsilon"), [(d, e) for d in DS for e in EPSILONS])
    def test_ss_ratio_matches_its_docstring_formula(self, d: int, epsilon: float) -> None:
        """The subset-count ratio equals include/(1-include) * (d-k)/k, the claimed e^eps."""
        m = SS(epsilon, d)
        inc = m.include.value
        with_x, without_x = ss_output_probs(m)
        assert with_x / without_x == inc / (1 - inc) * Fraction(d - m.k, m.k)

    def test_olh_seed_set_exercises_colliding_and_distinct_buckets(self) -> None:
        """The OLH check sees seeds where two items collide and where they differ (both cases)."""
        m = OLH(1.0, 8)
        same = [s for s in range(256) if olh_hash(s, 0, m.g) == olh_hash(s, 1, m.g)]
        assert 0 < len(same) < 256


# --------------------------------------------------------------------------- exact enumeration


class PathSource:
    """A RandomSource that follows one path of a draw tree and records the tree's branching.

    ``word()`` branches over the intervals between the given thresholds (each comparison
    ``word < N`` with N among them is decided alike by every word of an interval, so its lowest
    word stands for all, with probability width / 2^32); ``randbelow(n)`` branches n ways.
    """

    def __init__(self, thresholds: Sequence[int], prefix: Sequence[int]) -> None:
        cuts = sorted({0, 1 << 32, *thresholds})
        self.intervals = list(pairwise(cuts))
        self.prefix = prefix
        self.choices: list[int] = []
        self.arity: list[int] = []
        self.prob = Fraction(1)

    def _choose(self, arity: int) -> int:
        pos = len(self.choices)
        choice = self.prefix[pos] if pos < len(self.prefix) else 0
        self.choices.append(choice)
        self.arity.append(arity)
        return choice

    def word(self) -> int:
        lo, hi = self.intervals[self._choose(len(self.intervals))]
        self.prob *= Fraction(hi - lo, 1 << 32)
        return lo

    def randbelow(self, n: int) -> int:
        choice = self._choose(n)
        self.prob *= Fraction(1, n)
        return choice


def exact_distribution(
    run: Callable[[RandomSource], object], thresholds: Sequence[int]
) -> dict[Hashable, Fraction]:
    """The exact output law of ``run`` by depth-first enumeration of every random path."""
    dist: dict[Hashable, Fraction] = defaultdict(Fraction)
    prefix: list[int] = []
    while True:
        src = PathSource(thresholds, prefix)
        out = run(src)
        dist[tuple(out) if isinstance(out, list) else out] += src.prob
        i = len(src.choices) - 1
        while i >= 0 and src.choices[i] + 1 >= src.arity[i]:
            i -= 1
        if i < 0:
            return dict(dist)
        prefix = [*src.choices[:i], src.choices[i] + 1]


def thresholds_of(m: Mech) -> list[int]:
    if isinstance(m, GRR):
        return [m.keep.num]
    if isinstance(m, SUE | OUE):
        return [m.p_prob.num, m.q_prob.num]
    assert isinstance(m, SS)
    return [m.include.num]


def analytic_prob(m: Mech, x: int, y: Hashable) -> Fraction:
    """P[y | x] from the mechanism's definition (not from its code)."""
    if isinstance(m, GRR):
        keep = m.keep.value
        return keep if y == x else (1 - keep) / (m.d - 1)
    if isinstance(m, SUE | OUE):
        assert isinstance(y, int)
        p, q = m.p_prob.value, m.q_prob.value
        prob = Fraction(1)
        for i in range(m.d):
            on = (p if i == x else q) if (y >> i) & 1 else (1 - p if i == x else 1 - q)
            prob *= on
        return prob
    assert isinstance(y, tuple)
    with_x, without_x = ss_output_probs(m)
    return with_x if x in y else without_x


def all_outputs(m: Mech) -> list[Hashable]:
    if isinstance(m, GRR):
        return list(range(m.d))
    if isinstance(m, SUE | OUE):
        return list(range(1 << m.d))
    assert isinstance(m, SS)
    return list(combinations(range(m.d), m.k))


SMALL = [
    (name, d, eps)
    for name in ("grr", "sue", "oue", "ss")
    for d in (2, 3, 4, 5, 6)
    for eps in EPSILONS
]


class TestEnumeratedPrivacy:
    """For d <= 6 the real ``privatize`` code's output law, enumerated exactly, keeps the claim."""

    @pytest.mark.parametrize(("name", "d", "epsilon"), SMALL)
    def test_enumerated_law_matches_definition_and_claim(
        self, name: str, d: int, epsilon: float
    ) -> None:
        """Each output's exact probability is the analytic one; worst ratio is e^eps_achieved."""
        m = from_name(name, epsilon, d)
        assert not isinstance(m, OLH)
        outputs = all_outputs(m)
        table: dict[Hashable, list[Fraction]] = {y: [] for y in outputs}
        for x in range(d):
            law = exact_distribution(lambda src, x=x: m.privatize(x, src), thresholds_of(m))
            assert set(law) <= set(outputs)
            assert sum(law.values()) == 1
            for y in outputs:
                prob = law.get(y, Fraction(0))
                assert prob == analytic_prob(m, x, y), (x, y)
                table[y].append(prob)
        log_worst = max(log_fraction(worst_over_inputs(col)) for col in table.values())
        assert log_worst <= m.epsilon_achieved + LOG_SLACK
        assert log_worst > m.epsilon_achieved * TIGHT

    def test_enumeration_finds_every_path_of_a_known_tree(self) -> None:
        """The enumerator itself is exact: two fair coins and a 3-way die give 12 equal paths."""
        fair = 1 << 31

        def run(src: RandomSource) -> tuple[bool, bool, int]:
            return (src.word() < fair, src.word() < fair, src.randbelow(3))

        law = exact_distribution(run, [fair])
        assert len(law) == 12
        assert set(law.values()) == {Fraction(1, 12)}


# --------------------------------------------------------------------------- empirical audit

#: Draws per input. With the event "supports x and not x'" the expected audit bound at
#: epsilon = 1 is about 0.91-0.93 (Clopper-Pearson at 99.99%, one-sided 5e-5 each side) with a
#: sampling standard deviation of about 0.017 (delta method: sqrt((1-p)/(n p) + (1-q)/(n q))),
#: so the power assertion below (bound >= 0.75 epsilon) sits about 9 standard deviations away.
AUDIT_TRIALS = 30_000
#: The bound is a valid 99.99%-confidence bound: the CSPRNG path cannot be seeded, so a false
#: refutation of a true claim happens with probability at most 1e-4 per mechanism.
AUDIT_CONFIDENCE = 0.9999


def distinguishing_event(m: Mech | BrokenUnary, x: int, xp: int) -> Callable[[object], bool]:
    """'The output supports x and not x'': the event whose likelihood ratio is e^eps exactly."""
    if isinstance(m, GRR):
        return lambda y: y == x
    if isinstance(m, SUE | OUE | BrokenUnary):
        return lambda y: bool((y >> x) & 1) and not (y >> xp) & 1  # type: ignore[operator]
    if isinstance(m, OLH):

        def olh_event(y: object) -> bool:
            seed, bucket = y  # type: ignore[misc]
            return bool(bucket == olh_hash(seed, x, m.g) != olh_hash(seed, xp, m.g))

        return olh_event
    return lambda y: x in y and xp not in y  # type: ignore[operator]


class BrokenUnary:
    """CANARY, never to be fixed: unary encoding whose true bit is never cleared (p = 1).

    It claims the epsilon of the OUE it wraps, but an output with bit x set and bit x' clear is
    impossible under x', so its true epsilon is infinite. The audit must catch it.
    """

    name = "broken-ue"

    def __init__(self, epsilon: float, d: int) -> None:
        self.inner = OUE(epsilon, d)
        self.d = d
        self.epsilon = self.inner.epsilon

    def privatize(self, x: int, rand: RandomSource = SYSTEM) -> int:
        return ue_draw(1 << x, self.d, Prob(1 << 32), self.inner.q_prob, rand)


AUDITED = [("grr", 4), ("sue", 4), ("oue", 4), ("olh", 4), ("ss", 8)]


class TestEmpiricalAudit:
    """LDP-Auditor on the real CSPRNG path: no refutation of true claims, refutation of false."""

    @pytest.mark.parametrize(("name", "d"), AUDITED)
    def test_audit_cannot_refute_the_claim_but_rejects_a_smaller_one(
        self, name: str, d: int
    ) -> None:
        """The 99.99% lower bound stays <= the claimed epsilon yet exceeds 0.75 of it."""
        m = from_name(name, 1.0, d)
        if isinstance(m, SS):
            assert m.k >= 2, "audit SS where it is not just GRR"
        event = distinguishing_event(m, 0, 1)
        result = audit(
            lambda: m.privatize(0), lambda: m.privatize(1), event, AUDIT_TRIALS, AUDIT_CONFIDENCE
        )
        assert not result.refutes(m.epsilon), result
        assert result.refutes(0.75 * m.epsilon), result

    def test_audit_flags_the_broken_unary_canary(self) -> None:
        """The never-cleared-bit encoder is refuted far above its claimed epsilon."""
        broken = BrokenUnary(1.0, 4)
        assert all((broken.privatize(2) >> 2) & 1 for _ in range(200))
        event = distinguishing_event(broken, 0, 1)
        result = audit(
            lambda: broken.privatize(0),
            lambda: broken.privatize(1),
            event,
            AUDIT_TRIALS,
            AUDIT_CONFIDENCE,
        )
        assert result.hits_prime == 0
        assert result.refutes(broken.epsilon), result
        assert result.epsilon_lower > 3 * broken.epsilon, result

    def test_audit_flags_an_understated_epsilon(self) -> None:
        """A GRR built for epsilon 1.5 but claiming 1 is refuted (bound ~1.42, sd ~0.015)."""
        loose = GRR(1.5, 4)
        event = distinguishing_event(loose, 0, 1)
        result = audit(
            lambda: loose.privatize(0),
            lambda: loose.privatize(1),
            event,
            AUDIT_TRIALS,
            AUDIT_CONFIDENCE,
        )
        assert result.refutes(1.0), result


class TestClopperPearson:
    """The audit helper's exact intervals agree with scipy's and its bound is conservative."""

    @pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (10, 10), (37, 1000), (999, 1000)])
    def test_two_one_sided_bounds_are_scipys_exact_interval(self, k: int, n: int) -> None:
        """cp_lower/cp_upper at alpha/2 each equal scipy's two-sided Clopper-Pearson interval."""
        from scipy.stats import binomtest

        from tests.audit import cp_lower, cp_upper

        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert cp_lower(k, n, 0.025) == pytest.approx(ci.low, abs=1e-12)
        assert cp_upper(k, n, 0.025) == pytest.approx(ci.high, abs=1e-12)

    def test_bound_from_counts_is_the_log_ratio_of_the_bounds(self) -> None:
        """epsilon_lower is ln(p_lower / p_prime_upper), floored at 0."""
        from tests.audit import epsilon_lower_bound

        r = epsilon_lower_bound(700, 1000, 300, 1000, confidence=0.99)
        assert r.p_lower < 0.7
        assert r.p_prime_upper > 0.3
        assert r.epsilon_lower == pytest.approx(math.log(r.p_lower / r.p_prime_upper))
        assert 0 < r.epsilon_lower < math.log(0.7 / 0.3)
        assert epsilon_lower_bound(300, 1000, 700, 1000).epsilon_lower == 0.0
        assert epsilon_lower_bound(0, 1000, 0, 1000).epsilon_lower == 0.0

    def test_bad_arguments_are_rejected(self) -> None:
        """Counts outside [0, trials] and confidences outside (0, 1) raise ValueError."""
        from tests.audit import epsilon_lower_bound

        with pytest.raises(ValueError, match="hits"):
            epsilon_lower_bound(11, 10, 0, 10)
        with pytest.raises(ValueError, match="trials"):
            epsilon_lower_bound(0, 0, 0, 10)
        with pytest.raises(ValueError, match="confidence"):
            epsilon_lower_bound(1, 10, 0, 10, confidence=1.0)

    def test_false_refutation_rate_is_below_one_minus_confidence(self) -> None:
        """Over 1000 seeded simulated audits of a true 1-LDP event, <= 1% + 3 s.e. refute eps=1."""
        from tests.audit import epsilon_lower_bound

        rng = np.random.default_rng(7)
        p, q, n, reps = math.e / (1 + math.e), 1 / (1 + math.e), 500, 1000
        hits = rng.binomial(n, p, reps)
        hits_prime = rng.binomial(n, q, reps)
        refuted = sum(
            epsilon_lower_bound(int(h), n, int(hp), n, 0.99).refutes(1.0)
            for h, hp in zip(hits, hits_prime, strict=True)
        )
        # Binomial(1000, <= 0.01): mean <= 10, s.d. <= 3.15; 3 s.d. above the mean gives 19.
        assert refuted <= 19
