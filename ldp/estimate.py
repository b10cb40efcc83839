"""Frequency estimates from support counts: debiasing, standard errors, CIs, consistency.

Written once against a channel's support probabilities ``p*`` and ``q*`` (the probability that a
report supports item v when the true value is / is not v), so plain oracles, longitudinal
oracles and set-valued fields share one estimator. Server side only: imports numpy.

Consistency steps turn the unbiased but noisy vector into a plausible one: ``norm-sub``
(Euclidean projection onto the probability simplex, Wang et al., NDSS 2020), ``clip``, ``mle``
(EM under a Poisson model of the support counts; for GRR this is the iterative Bayesian update
of Agrawal & Aggarwal 2001) and ``none``; ``auto`` (:mod:`ldp.consistency`) chooses among
Norm-Sub, clip and early-stopped EM from the data, given the estimate's covariance.

Pooled weeks (:func:`pooled_frequencies`): the same users report every week, and weeks that
share a user's memoized response are correlated, so W weeks are *not* one batch of W n
independent reports; :func:`pooled_variance` is the exact variance of their average.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from ldp.errors import ParameterError

__all__ = [
    "AUTO",
    "CONSISTENCY",
    "FrequencyEstimate",
    "PooledChannel",
    "apply_consistency",
    "check_window",
    "em_update",
    "epoch_pair_share",
    "estimate_frequencies",
    "frequency_variance",
    "pooled_frequencies",
    "pooled_variance",
    "project_simplex",
]

CONSISTENCY = ("norm-sub", "clip", "mle", "none")
#: The data-chosen step (:func:`ldp.consistency.choose_consistency`); it needs the covariance,
#: so it is not in :data:`CONSISTENCY` (the fixed steps every caller can ask for).
AUTO = "auto"

FloatArray = npt.NDArray[np.float64]


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ParameterError(f"confidence level ({level}) must be in (0, 1)")
    return NormalDist().inv_cdf(0.5 + level / 2)


def frequency_variance(n: int, p_star: float, q_star: float, f: Any = None) -> Any:
    """Variance of the unbiased frequency estimate of one item from ``n`` reports.

    ``(q*(1 - q*) / (p* - q*)^2 + f (1 - p* - q*) / (p* - q*)) / n`` (Wang et al., USENIX
    Security 2017, Theorem 2); ``f`` may be an array; ``None`` means 0.
    """
    if n < 1:
        raise ParameterError(f"number of reports n ({n}) must be >= 1")
    if not 0 <= q_star < p_star <= 1:
        raise ParameterError(f"need 0 <= q* ({q_star}) < p* ({p_star}) <= 1")
    gap = p_star - q_star
    base = q_star * (1 - q_star) / gap**2
    if f is None:
        return base / n
    return (base + np.asarray(f, dtype=np.float64) * (1 - p_star - q_star) / gap) / n


def project_simplex(v: npt.ArrayLike, total: float = 1.0) -> FloatArray:
    """Euclidean projection of ``v`` onto ``{x >= 0, sum(x) = total}`` (Norm-Sub)."""
    x = np.asarray(v, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    u = np.sort(x)[::-1]
    css = np.cumsum(u) - total
    idx = np.arange(1, x.size + 1)
    positive = np.nonzero(u - css / idx > 0)[0]
    # In exact arithmetic the first item always qualifies; in floating point a huge entry can
    # round it away, and then the largest item alone carries the total.
    rho = int(positive[-1]) if positive.size else 0
    theta = css[rho] / (rho + 1)
    out: FloatArray = np.maximum(x - theta, 0.0)
    if not out.sum() > 0:  # the same rounding can cancel the largest item: it takes the total
        out[int(np.argmax(x))] = total
    return out


def em_update(
    f: FloatArray, support: FloatArray, n: int, p_star: float, q_star: float
) -> FloatArray:
    """One EM step of ``mle`` from ``f``, *before* renormalisation (the caller divides by the
    sum, and stops if it is not positive). Public so that studies of the EM path (e.g.
    ``bench/em_path.py``) run exactly the analyzer's update."""
    d = support.size
    gap = p_star - q_star
    expected = n * (q_star * f.sum() + gap * f)
    ratio = np.divide(support, expected, out=np.zeros(d), where=expected > 0)
    out: FloatArray = f * (q_star * ratio.sum() + gap * ratio) / (p_star + (d - 1) * q_star)
    return out


def _mle(
    support: FloatArray,
    n: int,
    p_star: float,
    q_star: float,
    *,
    max_iter: int = 10_000,
    tol: float = 1e-12,
) -> FloatArray:
    """EM for support counts s_v ~ Poisson(n (q* + (p* - q*) f_v)) with f on the simplex."""
    d = support.size
    f = np.full(d, 1.0 / d)
    s = np.maximum(support, 0.0)
    for _ in range(max_iter):
        new = em_update(f, s, n, p_star, q_star)
        total = new.sum()
        if total <= 0:
            break
        new /= total
        if np.max(np.abs(new - f)) < tol:
            f = new
            break
        f = new
    return f


def apply_consistency(
    raw: npt.ArrayLike,
    method: str,
    *,
    support: npt.ArrayLike | None = None,
    n: int | None = None,
    p_star: float | None = None,
    q_star: float | None = None,
    total: float | None = 1.0,
    cov: npt.ArrayLike | None = None,
) -> FloatArray:
    """Post-process a raw estimate; ``total=None`` means the items are not a distribution.

    For ``total=None`` (set-valued fields: each item is the fraction of users having it) every
    method but ``none`` clips each frequency to ``[0, 1]``. ``auto`` needs ``cov`` (the raw
    estimate's covariance, :func:`ldp.covariance.frequency_covariance`), ``p_star`` and
    ``q_star``.
    """
    x = np.asarray(raw, dtype=np.float64)
    if method not in CONSISTENCY and method != AUTO:
        raise ParameterError(f"consistency ({method!r}) must be one of {[*CONSISTENCY, AUTO]}")
    if method == "none":
        return x.copy()
    if total is None:
        return np.clip(x, 0.0, 1.0)
    if method == AUTO:
        if cov is None or p_star is None or q_star is None:
            raise ParameterError("consistency 'auto' needs cov, p_star and q_star")
        from ldp.consistency import choose_consistency

        freq: FloatArray = choose_consistency(x / total, cov, p_star, q_star).freq * total
        return freq
    if method == "norm-sub":
        return project_simplex(x, total)
    if method == "clip":
        c = np.maximum(x, 0.0)
        s = c.sum()
        return c / s * total if s > 0 else np.full(x.size, total / x.size)
    if support is None or n is None or p_star is None or q_star is None:
        raise ParameterError("consistency 'mle' needs support, n, p_star and q_star")
    return _mle(np.asarray(support, dtype=np.float64), n, p_star, q_star) * total


@dataclass(frozen=True, eq=False)
class FrequencyEstimate:
    """Estimated frequencies of d items, with analytic standard errors.

    ``raw`` is the unbiased estimate; ``freq`` the estimate after the ``consistency`` step;
    ``std`` the analytic standard error of ``raw`` (plug-in of ``raw`` for the f term).
    """

    freq: FloatArray
    raw: FloatArray
    std: FloatArray
    n: int
    consistency: str
    labels: tuple[str, ...] | None = None
    #: With ``auto``: the :class:`ldp.consistency.ConsistencyChoice` (``consistency`` then
    #: names the chosen step).
    choice: Any = None

    @property
    def d(self) -> int:
        """Number of items."""
        return int(self.freq.size)

    @property
    def counts(self) -> FloatArray:
        """Estimated number of reports per item."""
        return self.freq * self.n

    def ci(self, level: float = 0.95, *, raw: bool = False) -> tuple[FloatArray, FloatArray]:
        """Normal-approximation confidence interval per item, clipped to ``[0, 1]``."""
        z = _z(level)
        centre = self.raw if raw else self.freq
        return np.clip(centre - z * self.std, 0.0, 1.0), np.clip(centre + z * self.std, 0.0, 1.0)

    def significant(self, level: float = 0.95) -> npt.NDArray[np.bool_]:
        """Items whose frequency is above 0 at ``level``, Bonferroni-corrected over d items."""
        _z(level)  # validates the caller's level, named as given
        z = _z(1 - (1 - level) / max(1, self.d))
        return np.asarray(self.raw - z * self.std > 0)

    def to_dict(self, level: float = 0.95) -> dict[str, Any]:
        """A JSON-ready mapping with one row per item."""
        low, high = self.ci(level)
        sig = self.significant(level)
        names = self.labels or tuple(str(i) for i in range(self.d))
        out: dict[str, Any] = {
            "n": self.n,
            "consistency": self.consistency,
            "confidence": level,
            "items": [
                {
                    "value": names[i],
                    "estimate": float(self.freq[i]),
                    "raw": float(self.raw[i]),
                    "std": float(self.std[i]),
                    "ci_low": float(low[i]),
                    "ci_high": float(high[i]),
                    "significant": bool(sig[i]),
                }
                for i in range(self.d)
            ],
        }
        if self.choice is not None:
            out["consistency_choice"] = self.choice.to_dict()
        return out


def estimate_frequencies(
    support: npt.ArrayLike,
    n: int,
    p_star: float,
    q_star: float,
    consistency: str = "norm-sub",
    labels: tuple[str, ...] | None = None,
    *,
    scale: float = 1.0,
    total: float | None = 1.0,
    cov: npt.ArrayLike | Callable[[FloatArray], Any] | None = None,
) -> FrequencyEstimate:
    """Debias support counts of ``n`` reports: ``scale * (s / n - q*) / (p* - q*)``.

    ``scale`` is the pad length for padding-and-sampling set fields (pass ``total=None`` there).
    ``consistency="auto"`` needs ``cov``: the raw estimate's covariance, or a function of the
    clipped raw estimate that returns it (e.g. ``lambda f: frequency_covariance(r, n, f)``);
    the result's ``consistency`` is then the chosen step and ``choice`` says why.
    """
    s = np.asarray(support, dtype=np.float64)
    if s.ndim != 1:
        raise ParameterError(f"support must be a vector, got shape {s.shape}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ParameterError(f"number of reports n ({n}) must be an integer >= 1")
    n = int(n)
    if s.size and (s.min() < 0 or s.max() > n):
        raise ParameterError(f"support counts must be in [0, n={n}]")
    if labels is not None and len(labels) != s.size:
        raise ParameterError(f"{len(labels)} labels for {s.size} items")
    if not (math.isfinite(scale) and scale > 0):
        raise ParameterError(f"scale ({scale}) must be > 0")
    gap = p_star - q_star
    raw = scale * (s / n - q_star) / gap
    var = frequency_variance(n, p_star, q_star, np.clip(raw / scale, 0.0, 1.0))
    std = scale * np.sqrt(var)
    if consistency == AUTO and total is not None:
        if cov is None:
            raise ParameterError("consistency 'auto' needs cov (the raw estimate's covariance)")
        from ldp.consistency import choose_consistency

        matrix = cov(np.clip(raw, 0.0, 1.0)) if callable(cov) else cov
        choice = choose_consistency(raw, matrix, p_star, q_star)
        return FrequencyEstimate(
            freq=choice.freq * total,
            raw=raw,
            std=std,
            n=n,
            consistency=choice.method,
            labels=labels,
            choice=choice,
        )
    freq = apply_consistency(
        raw, consistency, support=s, n=n, p_star=p_star, q_star=q_star, total=total
    )
    # Items that are not a distribution are only ever clipped: record what was done.
    applied = consistency if total is not None or consistency == "none" else "clip"
    return FrequencyEstimate(freq=freq, raw=raw, std=std, n=n, consistency=applied, labels=labels)


# --------------------------------------------------------------------------- pooled weeks


@dataclass(frozen=True)
class PooledChannel:
    """A longitudinal field's support probabilities, split into its two steps.

    A report supports value v with probability ``c + keep * B``, where ``B`` says whether the
    user's memoized (permanent) response supports v and ``c`` is a constant; ``B`` is 1 with
    probability ``p1`` when the input is v and ``q1`` when it is not. So one report has
    ``p* = c + keep p1`` and ``q* = c + keep q1``: ``p* - q* = keep (p1 - q1)``. Frozen epochs
    (schema v2, ``epsilon_1 == epsilon_perm``) have ``keep = 1`` and ``p* = p1``.

    Parameters
    ----------
    p_star, q_star : float
        Support probabilities of one report (the composed channel).
    p1, q1 : float
        Support probabilities of the memoized response.
    keep : float
        ``r = p2 - q2``: how much of the memo a report passes on.
    pad : int or None
        Pad length of a set field (padding-and-sampling, :class:`ldp.sets.SetOracle`), whose
        user *having* item v reports it with ``b = q + (p - q) / pad`` in either step and whose
        estimate is scaled by ``pad``; ``None`` for a categorical field.
    """

    p_star: float
    q_star: float
    p1: float
    q1: float
    keep: float
    pad: int | None = None

    def __post_init__(self) -> None:
        for name in ("p_star", "q_star", "p1", "q1", "keep"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ParameterError(f"{name} ({value}) must be in [0, 1]")
        if not self.q_star < self.p_star or not self.q1 < self.p1:
            raise ParameterError(
                f"need q* ({self.q_star}) < p* ({self.p_star}) and q1 ({self.q1}) < p1 ({self.p1})"
            )
        gap = self.keep * (self.p1 - self.q1)
        if not math.isclose(self.p_star - self.q_star, gap, rel_tol=1e-9, abs_tol=1e-12):
            raise ParameterError(
                f"p* - q* ({self.p_star - self.q_star}) must equal keep (p1 - q1) ({gap})"
            )
        if self.pad is not None and (isinstance(self.pad, bool) or self.pad < 1):
            raise ParameterError(f"pad ({self.pad!r}) must be an integer >= 1 or None")

    @classmethod
    def of(cls, randomizer: Any) -> PooledChannel:
        """The channel of a field randomizer (``FieldSpec.randomizer()``): L-GRR, L-SS, L-SUE,
        L-OSUE, L-OLH (``q1 = 1/g``, a uniform hash) or a set field over any of them."""
        if hasattr(randomizer, "oracle") and hasattr(randomizer, "pad"):
            inner = cls.of(randomizer.oracle)
            return cls(inner.p_star, inner.q_star, inner.p1, inner.q1, inner.keep, randomizer.pad)
        mech = randomizer.mechanism
        p_star, q_star = float(randomizer.p_star), float(randomizer.q_star)
        if mech == "ss":
            d, k = randomizer.d, randomizer.k
            p1 = float(randomizer.prr_include)
            q1 = (p1 * (k - 1) + (1 - p1) * k) / (d - 1)
            keep = float(randomizer.irr_keep)
        elif mech in ("grr", "olh"):
            m = randomizer.d if mech == "grr" else randomizer.g
            p1 = float(randomizer.prr_keep)
            q1 = (1 - p1) / (m - 1) if mech == "grr" else 1 / m
            p2 = float(randomizer.irr_keep)
            keep = p2 - (1 - p2) / (m - 1)
        elif mech in ("sue", "oue"):
            p1, q1 = (float(x) for x in randomizer.prr_bits)
            p2, q2 = (float(x) for x in randomizer.irr_bits)
            keep = p2 - q2
        else:
            raise ParameterError(f"mechanism ({mech!r}) has no pooled channel")
        return cls(p_star, q_star, p1, q1, keep)


def epoch_pair_share(epoch_weeks: int | None, weeks: int) -> float:
    """``rho``: the expected share of ordered pairs of distinct weeks, among the ``W**2`` of a
    window of ``weeks`` consecutive weeks, in which one user reports from the same memo.

    ``rho = (E[sum_e w_e**2] - W) / W**2``, with ``w_e`` the weeks of the window in the user's
    epoch e. With epochs of ``R = epoch_weeks`` weeks and an offset uniform over ``0..R-1``
    (schema v2's HMAC stagger), two weeks ``delta`` apart share an epoch with probability
    ``max(0, 1 - delta / R)``, so ``E[sum_e w_e**2] = W + 2 sum_{delta=1}^{W-1} (W - delta)
    max(0, 1 - delta / R)``. ``R = 1`` is fresh noise (``rho = 0``); ``epoch_weeks=None`` is one
    memo for the whole window (v1's memo per value, for a value that does not change):
    ``rho = 1 - 1/W``.
    """
    if isinstance(weeks, bool) or not isinstance(weeks, int) or weeks < 1:
        raise ParameterError(f"weeks ({weeks!r}) must be an integer >= 1")
    if epoch_weeks is None:
        return 1 - 1 / weeks
    if isinstance(epoch_weeks, bool) or not isinstance(epoch_weeks, int) or epoch_weeks < 1:
        raise ParameterError(f"epoch_weeks ({epoch_weeks!r}) must be an integer >= 1 or None")
    pairs = sum(
        2 * (weeks - delta) * (epoch_weeks - delta) for delta in range(1, min(weeks, epoch_weeks))
    )
    return pairs / epoch_weeks / weeks**2


def check_window(n: int, weeks: int, share: float) -> None:
    """Validate a pooled window's users ``n``, length ``weeks`` and pair share ``rho``."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ParameterError(f"number of users n ({n!r}) must be an integer >= 1")
    if isinstance(weeks, bool) or not isinstance(weeks, int) or weeks < 1:
        raise ParameterError(f"weeks ({weeks!r}) must be an integer >= 1")
    if not 0 <= share <= 1 - 1 / weeks + 1e-12:
        raise ParameterError(f"share ({share}) must be in [0, 1 - 1/W = {1 - 1 / weeks:.6g}]")


def pooled_variance(channel: PooledChannel, n: int, weeks: int, share: float, f: Any = None) -> Any:
    """Exact variance of the pooled estimate of one value's frequency averaged over W weeks.

    With the same ``n`` users reporting in each of ``W = weeks`` weeks, each with an unchanging
    input (a fraction ``f`` has v), and ``share`` the :func:`epoch_pair_share` of the scheme::

        Var = [ (f p*(1-p*) + (1-f) q*(1-q*)) / W
                + share * keep**2 * (f p1(1-p1) + (1-f) q1(1-q1)) ] / (n (p* - q*)**2)

    For a set field, ``p*`` and ``p1`` in the brackets become the holder's ``b = q + (p - q) /
    pad`` and the whole is multiplied by ``pad**2`` (at ``W = 1`` this is
    :class:`ldp.sets.SetOracle`'s variance). At ``W = 1`` a categorical field gives
    :func:`frequency_variance`.

    Parameters
    ----------
    channel : PooledChannel
        The field's two-step support probabilities.
    n : int
        Users reporting in every week of the window.
    weeks : int
        Window length W.
    share : float
        ``rho`` in ``[0, 1 - 1/W]``: see :func:`epoch_pair_share`.
    f : float or array_like, optional
        True (pooled) frequency of the value; ``None`` means 0.

    Returns
    -------
    float or ndarray
        The variance (an array if ``f`` is one).
    """
    check_window(n, weeks, share)
    c = channel
    pad = 1 if c.pad is None else c.pad
    hit_star = c.q_star + (c.p_star - c.q_star) / pad
    hit_1 = c.q1 + (c.p1 - c.q1) / pad
    freq = 0.0 if f is None else np.asarray(f, dtype=np.float64)
    fresh = freq * hit_star * (1 - hit_star) + (1 - freq) * c.q_star * (1 - c.q_star)
    memo = freq * hit_1 * (1 - hit_1) + (1 - freq) * c.q1 * (1 - c.q1)
    var = pad**2 * (fresh / weeks + share * c.keep**2 * memo) / (n * (c.p_star - c.q_star) ** 2)
    return float(var) if np.ndim(var) == 0 else var


def pooled_frequencies(
    supports: npt.ArrayLike,
    n: int,
    channel: PooledChannel,
    share: float,
    consistency: str = "norm-sub",
    labels: tuple[str, ...] | None = None,
    *,
    cov: npt.ArrayLike | Callable[[FloatArray], Any] | None = None,
) -> FrequencyEstimate:
    """Unbiased frequencies averaged over W weeks, with their exact standard errors.

    ``supports`` is a ``(W, d)`` array: week t's support counts from the same ``n`` users.
    The estimate ``scale * (mean_t s_t / n - q*) / (p* - q*)`` (``scale`` = the pad of a set
    field, else 1) is unbiased for the frequency of the randomizers' inputs averaged over the
    weeks (for schema v2: each user's value when the epoch began); its ``std`` is
    :func:`pooled_variance` at the clipped estimate. A set field's items are only clipped
    (``total=None`` in :func:`estimate_frequencies`).

    Parameters
    ----------
    supports : array_like
        Support counts, one row per week.
    n : int
        Users reporting in every week.
    channel : PooledChannel
        The field's channel (:meth:`PooledChannel.of`).
    share : float
        The scheme's :func:`epoch_pair_share` for ``W`` weeks.
    consistency : str
        One of :data:`CONSISTENCY`, or :data:`AUTO` (then give ``cov``).
    labels : tuple of str, optional
        Item names.
    cov : array_like or callable, optional
        For ``auto``: the pooled estimate's covariance, or a function of the clipped raw
        estimate returning it (``ldp.covariance.frequency_covariance`` with this ``weeks`` and
        ``share``).

    Returns
    -------
    FrequencyEstimate
        With ``n`` the users per week.
    """
    s = np.asarray(supports, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1:
        raise ParameterError(f"supports must be a (weeks, d) array, got shape {s.shape}")
    weeks = int(s.shape[0])
    pad = channel.pad
    est = estimate_frequencies(
        s.mean(axis=0),
        n,
        channel.p_star,
        channel.q_star,
        consistency,
        labels,
        scale=1.0 if pad is None else float(pad),
        total=1.0 if pad is None else None,
        cov=cov,
    )
    var = pooled_variance(channel, est.n, weeks, share, np.clip(est.raw, 0.0, 1.0))
    return replace(est, std=np.sqrt(var))
