"""Privacy amplification by shuffling: the central (epsilon, delta) of n shuffled eps0-LDP reports.

Implements Feldman, McMillan & Talwar, "Hiding Among the Clones: A Simple and Nearly Optimal
Analysis of Privacy Amplification by Shuffling" (FOCS 2021, arXiv:2012.12803): the closed form of
their Theorem 3.1 and their numerical "clones" bound (Appendix E), reimplemented: their code,
apple/ml-shuffling-amplification, was read to check the algorithm and its numbers, and nothing
of it is copied (the sum over clone counts here is exact, theirs is stepped). This module states
guarantees for the analyzer's documentation: it never randomizes anything and never touches a
report. Neighbouring datasets differ in one user's value (replacement), as in the paper. Pure
Python at import; :func:`numerical` imports numpy and scipy when called.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ldp.errors import ParameterError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "EPS0_MAX",
    "N_MAX",
    "CentralEpsilon",
    "central_epsilon",
    "closed_form",
    "closed_form_limit",
    "numerical",
    "numerical_delta",
]

#: Largest local epsilon accepted. A randomizer whose output probabilities may differ by a
#: factor e**100 promises nothing locally, and the bound's arithmetic (e**(2 * eps0)) stays far
#: from float overflow below it.
EPS0_MAX = 100.0
#: Largest number of reports accepted: float64 counts integers exactly up to 2**53.
N_MAX = 2**53

#: Default relative tolerance of :func:`numerical` on epsilon (the answer is rounded *up* to a
#: point of a fixed geometric grid, so it stays a valid bound).
DEFAULT_TOL = 1e-3
#: Smallest positive epsilon :func:`numerical` resolves; below it the answer is 0 if delta
#: already holds at eps = 0 (the shuffled outputs are within total variation delta).
_EPS_FLOOR = 1e-12
#: :func:`numerical` evaluates the clone bound at min(n, _N_NUMERICAL). The bound only improves
#: with n (more users, more clones), so this stays valid, and it keeps every call well under a
#: second (scipy's incomplete beta slows down as the clone count grows).
_N_NUMERICAL = 10**9

#: Probability mass of the clone count left out on each side of the range summed exactly, as a
#: fraction of delta. The left-out mass is added to delta in full (as if it leaked everything),
#: so truncation keeps the bound valid and costs at most 2e-6 * delta.
_TAIL_FRACTION = 1e-6
#: The same left-out mass, absolute, for :func:`numerical_delta` (which has no target delta).
_DELTA_TAIL = 1e-15
#: Above this many clone counts, neighbouring counts are grouped (see :func:`_clone_grid`).
_MAX_POINTS = 2048

Method = Literal["numerical", "closed-form", "local"]


# --------------------------------------------------------------------------- validation


def _real(name: str, value: object) -> float:
    """``value`` as a finite float; numpy scalars are accepted, bools are not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} ({value!r}) must be a real number")
    result = float(value)
    if not math.isfinite(result):
        raise ParameterError(f"{name} ({value!r}) must be finite")
    return result


def _check_eps0(eps0: object) -> float:
    value = _real("eps0", eps0)
    if not 0.0 < value <= EPS0_MAX:
        raise ParameterError(f"eps0 ({eps0!r}) must be in (0, {EPS0_MAX:g}]")
    return value


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ParameterError(f"n ({n!r}) must be an integer (a number of reports)")
    value = int(n)
    if not 1 <= value <= N_MAX:
        raise ParameterError(f"n ({n!r}) must be in [1, 2**53]")
    return value


def _check_delta(delta: object) -> float:
    value = _real("delta", delta)
    if not 0.0 < value < 1.0:
        raise ParameterError(f"delta ({delta!r}) must be in (0, 1)")
    return value


def _check_eps(eps: object) -> float:
    value = _real("eps", eps)
    if value < 0.0:
        raise ParameterError(f"eps ({eps!r}) must be >= 0")
    return value


def _check_tol(tol: object) -> float:
    value = _real("tol", tol)
    if not 0.0 < value <= 1.0:
        raise ParameterError(f"tol ({tol!r}) must be in (0, 1]")
    return value


# --------------------------------------------------------------------------- closed form


def closed_form_limit(n: int, delta: float) -> float:
    """The largest eps0 for which Theorem 3.1 applies: ``log(n / (16 log(2/delta)))``.

    It is negative (no eps0 qualifies) when ``n < 16 log(2/delta)``.
    """
    n, delta = _check_n(n), _check_delta(delta)
    return math.log(n) - math.log(16.0 * math.log(2.0 / delta))


def _closed_form_value(eps0: float, n: int, delta: float) -> float:
    e0 = math.exp(eps0)
    # (e^eps0 - 1) / (e^eps0 + 1) written as tanh(eps0 / 2), exact for tiny eps0.
    shrink = math.tanh(eps0 / 2.0)
    growth = 8.0 * math.sqrt(e0 * math.log(4.0 / delta) / n) + 8.0 * e0 / n
    return math.log1p(shrink * growth)


def closed_form(eps0: float, n: int, delta: float) -> float:
    """Central epsilon after shuffling n eps0-LDP reports, by Theorem 3.1 of Feldman et al. 2021.

    For ``eps0 <= log(n / (16 log(2/delta)))`` the shuffled output is (eps, delta)-DP with::

        eps = log(1 + (e^eps0 - 1)/(e^eps0 + 1) * (8 sqrt(e^eps0 log(4/delta) / n) + 8 e^eps0 / n))

    The result is capped at eps0: shuffling is post-processing of n eps0-DP reports, so eps0
    always holds, and near the edge of the validity range the formula can exceed it slightly.

    The reference implementation (apple/ml-shuffling-amplification, ``closedformanalysis``)
    evaluates an intermediate form of the proof, with ``1 + e^-(eps0 + eps')`` in place of
    ``1 + e^-eps0`` and the stricter regime ``log(4/delta)``; it is never smaller than the
    theorem's value (0.5378 against 0.5346 at n=1e5, eps0=4, delta=1e-6).

    Raises
    ------
    ParameterError
        For a parameter out of range, or eps0 outside the theorem's validity condition.
    """
    eps0, n, delta = _check_eps0(eps0), _check_n(n), _check_delta(delta)
    limit = closed_form_limit(n, delta)
    if eps0 > limit:
        if limit < 0:
            raise ParameterError(
                f"the closed form needs n >= 16 log(2/delta) = "
                f"{16.0 * math.log(2.0 / delta):.1f} for delta={delta:g}; n ({n}) is too small "
                f"for any eps0"
            )
        raise ParameterError(
            f"eps0 ({eps0:g}) is outside the closed form's validity range for n={n}, "
            f"delta={delta:g}: it needs eps0 <= log(n / (16 log(2/delta))) = {limit:.4f}"
        )
    return min(eps0, _closed_form_value(eps0, n, delta))


# --------------------------------------------------------------------------- numerical bound
#
# The clone reduction (Feldman et al. 2021, Section 3): each of the other n - 1 users is,
# with probability p = e^-eps0, a "clone" that looks like user 1's report on x1 or on x1' with
# probability 1/2 each. With C ~ Bin(n - 1, p) clones, A ~ Bin(C, 1/2) and
# alpha = e^eps0 / (e^eps0 + 1), the shuffled output is a post-processing of
#     P = (A + D, C - A + 1 - D),  Q = (A + 1 - D, C - A + D),  D ~ Bernoulli(alpha),
# so delta(eps) <= sum_c Pr[C = c] * H_c(eps), where H_c is the hockey-stick divergence
# sum_a max(0, P_c(a) - e^eps Q_c(a)) of the conditional laws on a (the first coordinate):
#     P_c(a) = alpha b_c(a - 1) + (1 - alpha) b_c(a)
#     Q_c(a) = (1 - alpha) b_c(a - 1) + alpha b_c(a)
# with b_c the Bin(c, 1/2) pmf. The reverse divergence (Q_c against P_c) is the same, since
# a -> c + 1 - a swaps P_c and Q_c, so one direction suffices. P_c(a) / Q_c(a) increases with
# a, so the positive part is the tail a >= k + 1 beyond k = floor((c + 1) * f) with
#     f = (e^(eps0 + eps) - 1) / ((e^eps0 - 1)(e^eps + 1)),
# and summing P_c - e^eps Q_c over that tail gives, with S_c(j) = Pr[Bin(c, 1/2) >= j],
#     G_c(k) = alpha (1 - e^(eps - eps0)) b_c(k) - (e^eps - 1) S_c(k + 1).
# G_c(k) is at most H_c for every integer k (it is P(T) - e^eps Q(T) for one set T), and equals
# it at the true threshold; taking the max over k - 1, k, k + 1 makes the result immune to float
# rounding in (c + 1) * f. H_c is non-increasing in c (one more clone is an independent fair coin
# added to a: a post-processing), which lets large ranges of c be grouped safely.


_LOG_2PI = math.log(2.0 * math.pi)
# Loader's asymptotic series for the Stirling error (Loader 2000, "Fast and Accurate Computation
# of Binomial Probabilities"); below _STIRLING_SERIES_FROM, lgamma is accurate enough directly.
_STIRLING = (1.0 / 12, 1.0 / 360, 1.0 / 1260, 1.0 / 1680, 1.0 / 1188)
_STIRLING_SERIES_FROM = 16.0
#: Terms of the bd0 series; it converges like 0.01**j where it is used (|v| < 0.1).
_BD0_TERMS = 12


def _stirlerr(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``lgamma(x + 1) - (x + 1/2) log x + x - log sqrt(2 pi)`` for x >= 1, to ~1e-15."""
    import numpy as np
    from scipy import special  # type: ignore[import-untyped]  # scipy ships no type information

    s0, s1, s2, s3, s4 = _STIRLING
    xx = x * x
    series = (s0 - (s1 - (s2 - (s3 - s4 / xx) / xx) / xx) / xx) / x
    small = np.minimum(x, _STIRLING_SERIES_FROM)
    direct = special.gammaln(small + 1.0) - (small + 0.5) * np.log(small) + small - _LOG_2PI / 2
    return np.where(x < _STIRLING_SERIES_FROM, direct, series)


def _bd0(x: npt.NDArray[np.float64], m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``x log(x / m) + m - x`` for x, m > 0, without cancellation when x is close to m."""
    import numpy as np

    d = x - m
    v = d / (x + m)
    near = np.abs(d) < 0.1 * (x + m)
    total = d * v
    term = 2.0 * x * v
    for j in range(1, _BD0_TERMS + 1):
        term = term * v * v
        total = total + term / (2 * j + 1)
    direct = x * np.log(x / m) + m - x
    return np.where(near, total, direct)


def _binom_pmf(
    k: npt.NDArray[np.float64], n: npt.NDArray[np.float64] | float, p: float, q: float
) -> npt.NDArray[np.float64]:
    """Pr[Bin(n, p) = k] for integer-valued k in [0, n], with q = 1 - p given exactly.

    Loader's saddle-point form: relative error ~1e-14 for any n up to 2**53, where
    ``lgamma``-based formulas lose everything. Avoids scipy.stats, which takes a second to import.
    """
    import numpy as np

    n_arr = np.broadcast_to(np.asarray(n, dtype=np.float64), k.shape)
    inner = (k > 0) & (k < n_arr)
    # Placeholders keep the masked-out lanes finite (numpy warnings are errors in the tests).
    ki = np.where(inner, k, 1.0)
    ni = np.where(inner, n_arr, 2.0)
    log_core = (
        _stirlerr(ni)
        - _stirlerr(ki)
        - _stirlerr(ni - ki)
        - _bd0(ki, ni * p)
        - _bd0(ni - ki, ni * q)
        - 0.5 * (_LOG_2PI + np.log(ki) + np.log1p(-ki / ni))
    )
    with np.errstate(under="ignore"):
        edge = np.where(k == 0, np.exp(n_arr * math.log(q)), np.exp(n_arr * math.log(p)))
        return np.where(inner, np.exp(log_core), edge)


def _binom_cdf(j: npt.NDArray[np.float64], n: int, p: float, q: float) -> npt.NDArray[np.float64]:
    """Pr[Bin(n, p) <= j] = I_q(n - j, j + 1), with q = 1 - p given exactly."""
    import numpy as np
    from scipy import special

    inside = (j >= 0) & (j < n)
    js = np.clip(j, 0, max(n - 1, 0))
    value = special.betainc(np.maximum(n - js, 1.0), js + 1.0, q)
    return np.where(inside, value, np.where(j < 0, 0.0, 1.0))


def _binom_sf(j: float, n: int, p: float) -> float:
    """Pr[Bin(n, p) > j] = I_p(j + 1, n - j)."""
    from scipy import special

    if j < 0:
        return 1.0
    if j >= n:
        return 0.0
    return float(special.betainc(j + 1.0, n - j, p))


@dataclass(frozen=True)
class _CloneGrid:
    """Clone counts to evaluate, with the probability mass each one stands for."""

    counts: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]
    outside: float


def _clone_grid(eps0: float, n: int, tail: float) -> _CloneGrid:
    """The clone counts C ~ Bin(n - 1, e^-eps0) worth summing one by one.

    The range is mean +- t with t from Bernstein's inequality, so each side left out has mass
    at most ``tail``; the exact left-out mass is reported in ``outside`` (the caller charges it
    in full, so the range only affects tightness, never validity). When more than
    ``_MAX_POINTS`` counts remain, consecutive counts are grouped and each group is represented
    by its smallest count, the one with the largest divergence, so the sum stays an upper bound.
    """
    import numpy as np

    trials = n - 1
    if trials == 0:
        return _CloneGrid(np.zeros(1), np.ones(1), 0.0)
    p, q = math.exp(-eps0), -math.expm1(-eps0)
    mean, var = trials * p, trials * p * q
    log_inv = math.log(1.0 / tail)
    spread = log_inv / 3.0 + math.sqrt((log_inv / 3.0) ** 2 + 2.0 * log_inv * var)
    lo = max(0, math.floor(mean - spread))
    hi = min(trials, math.ceil(mean + spread))
    below = float(_binom_cdf(np.array([lo - 1.0]), trials, p, q)[0])
    outside = below + _binom_sf(hi, trials, p)
    count = hi - lo + 1
    if count <= _MAX_POINTS:
        counts = np.arange(lo, hi + 1, dtype=np.float64)
        weights = _binom_pmf(counts, float(trials), p, q)
    else:
        step = -(-count // _MAX_POINTS)
        counts = np.arange(lo, hi + 1, step, dtype=np.float64)
        ends = np.minimum(counts + (step - 1), hi)
        upper = _binom_cdf(ends, trials, p, q)
        lower = _binom_cdf(counts - 1.0, trials, p, q)
        weights = np.clip(upper - lower, 0.0, None)
    return _CloneGrid(counts, weights, outside)


def _delta_on_grid(eps: float, eps0: float, grid: _CloneGrid) -> float:
    """Upper bound on the delta of the clone pair at ``eps`` (see the comment above)."""
    import numpy as np
    from scipy import special

    if eps >= eps0:
        return 0.0
    c = grid.counts
    alpha = 1.0 / (1.0 + math.exp(-eps0))
    keep = alpha * -math.expm1(eps - eps0)  # alpha - e^eps (1 - alpha), > 0 below eps0
    grow = math.expm1(eps)
    frac = math.expm1(eps0 + eps) / (math.expm1(eps0) * (math.exp(eps) + 1.0))
    k = np.clip(np.floor((c + 1.0) * frac), 0.0, c)
    b_k = _binom_pmf(k, c, 0.5, 0.5)
    # S_c(k + 1) = Pr[B > k] = I_{1/2}(k + 1, c - k) for k < c, and 0 for k = c.
    s_next = np.where(k < c, special.betainc(k + 1.0, np.maximum(c - k, 1.0), 0.5), 0.0)
    b_prev = b_k * k / (c - k + 1.0)  # b_c(k - 1); 0 when k = 0
    b_next = b_k * (c - k) / (k + 1.0)  # b_c(k + 1); 0 when k = c
    g_prev = keep * b_prev - grow * (s_next + b_k)
    g_at = keep * b_k - grow * s_next
    g_next = keep * b_next - grow * np.maximum(s_next - b_next, 0.0)
    h = np.maximum(np.maximum(g_prev, g_at), np.maximum(g_next, 0.0))
    return min(1.0, float(np.dot(grid.weights, h)) + grid.outside)


def numerical_delta(eps0: float, n: int, eps: float) -> float:
    """Delta at ``eps`` after shuffling n eps0-LDP reports, by the clone reduction.

    An upper bound on the delta of the shuffled output of any eps0-LDP randomizer: the sum over
    the clone count is exact except for tails of mass at most 1e-15 each, which are charged in
    full. Imports numpy and scipy.
    """
    eps0, n, eps = _check_eps0(eps0), _check_n(n), _check_eps(eps)
    if eps >= eps0:
        return 0.0
    grid = _clone_grid(eps0, n, _DELTA_TAIL)
    return _delta_on_grid(eps, eps0, grid)


def numerical(eps0: float, n: int, delta: float, *, tol: float = DEFAULT_TOL) -> float:
    """Central epsilon after shuffling n eps0-LDP reports, by the numerical clone bound.

    Feldman et al. 2021, Appendix E: the upper-bound variant of
    ``numericalanalysis`` in their reference implementation, with an exact sum over the clone
    count in place of its stepped intervals. The answer is the smallest point of the fixed grid
    ``{0} u {(1 + tol)**j >= 1e-12}`` (j integer, capped at eps0) whose delta, computed as in
    :func:`numerical_delta`, is at most ``delta``; so ``tol`` is a *relative* tolerance, the
    answer is always a valid bound, never more than eps0, and monotone in n and eps0 (the grid
    does not depend on them). Beyond n = 1e9 the bound is evaluated at n = 1e9, which is valid
    and keeps the call fast. Imports numpy and scipy.

    Raises
    ------
    ParameterError
        For a parameter out of range (``tol`` must be in (0, 1]).
    """
    eps0, n, delta = _check_eps0(eps0), _check_n(n), _check_delta(delta)
    tol = _check_tol(tol)
    grid = _clone_grid(eps0, min(n, _N_NUMERICAL), _TAIL_FRACTION * delta)
    step = math.log1p(tol)
    first = math.floor(math.log(_EPS_FLOOR) / step)  # its candidate is 0
    # The candidate of `last` is eps0 itself, where delta is 0.
    last = max(first + 1, math.ceil(math.log(eps0) / step))

    def candidate(index: int) -> float:
        return 0.0 if index <= first else min(math.exp(index * step), eps0)

    def holds(index: int) -> bool:
        return _delta_on_grid(candidate(index), eps0, grid) <= delta

    high = last
    if eps0 <= closed_form_limit(n, delta):
        # The closed form is a good start; checked anyway, since a bisection needs a true bound.
        start = math.ceil(math.log(_closed_form_value(eps0, n, delta)) / step)
        start = min(last, max(first + 1, start))
        if holds(start):
            high = start
    if holds(first):
        return candidate(first)
    low = first  # invariant: index `low` fails, index `high` holds
    while high - low > 1:
        mid = (low + high) // 2
        if holds(mid):
            high = mid
        else:
            low = mid
    return candidate(high)


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class CentralEpsilon:
    """A central (eps, delta)-DP guarantee for n shuffled eps0-LDP reports, and how it was got.

    ``method`` is ``"numerical"`` (:func:`numerical`), ``"closed-form"`` (:func:`closed_form`)
    or ``"local"`` (no amplification could be computed, so eps = eps0, which always holds).
    """

    eps: float
    delta: float
    n: int
    eps0: float
    method: Method

    def __str__(self) -> str:
        return (
            f"({self.eps:.4g}, {self.delta:.3g})-DP after shuffling {self.n} reports of "
            f"{self.eps0:g}-LDP ({self.method})"
        )


def central_epsilon(
    eps0: float, n: int, delta: float, *, tol: float = DEFAULT_TOL
) -> CentralEpsilon:
    """The smallest valid central epsilon among the numerical bound, the closed form and eps0.

    The numerical bound is used whenever numpy and scipy are importable (it is never worse than
    the closed form in practice); the closed form only inside its validity range; eps0 itself
    (``method="local"``) when neither applies.
    """
    eps0, n, delta = _check_eps0(eps0), _check_n(n), _check_delta(delta)
    tol = _check_tol(tol)
    best = CentralEpsilon(eps0, delta, n, eps0, "local")
    if eps0 <= closed_form_limit(n, delta):
        value = closed_form(eps0, n, delta)
        if value < best.eps:
            best = CentralEpsilon(value, delta, n, eps0, "closed-form")
    try:
        value = numerical(eps0, n, delta, tol=tol)
    except ImportError:  # a client install without the analysis extras: keep what we have
        return best
    if value < best.eps:
        best = CentralEpsilon(value, delta, n, eps0, "numerical")
    return best
