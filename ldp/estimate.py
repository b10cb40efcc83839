"""Frequency estimates from support counts: debiasing, standard errors, CIs, consistency.

Written once against a channel's support probabilities ``p*`` and ``q*`` (the probability that a
report supports item v when the true value is / is not v), so plain oracles, longitudinal
oracles and set-valued fields share one estimator. Server side only: imports numpy.

Consistency steps turn the unbiased but noisy vector into a plausible one: ``norm-sub``
(Euclidean projection onto the probability simplex, Wang et al., NDSS 2020), ``clip``, ``mle``
(EM under a Poisson model of the support counts; for GRR this is the iterative Bayesian update
of Agrawal & Aggarwal 2001) and ``none``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from ldp.errors import ParameterError

__all__ = [
    "CONSISTENCY",
    "FrequencyEstimate",
    "apply_consistency",
    "em_update",
    "estimate_frequencies",
    "frequency_variance",
    "project_simplex",
]

CONSISTENCY = ("norm-sub", "clip", "mle", "none")

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
) -> FloatArray:
    """Post-process a raw estimate; ``total=None`` means the items are not a distribution.

    For ``total=None`` (set-valued fields: each item is the fraction of users having it) every
    method but ``none`` clips each frequency to ``[0, 1]``.
    """
    x = np.asarray(raw, dtype=np.float64)
    if method not in CONSISTENCY:
        raise ParameterError(f"consistency ({method!r}) must be one of {list(CONSISTENCY)}")
    if method == "none":
        return x.copy()
    if total is None:
        return np.clip(x, 0.0, 1.0)
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
        return {
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
) -> FrequencyEstimate:
    """Debias support counts of ``n`` reports: ``scale * (s / n - q*) / (p* - q*)``.

    ``scale`` is the pad length for padding-and-sampling set fields (pass ``total=None`` there).
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
    freq = apply_consistency(
        raw, consistency, support=s, n=n, p_star=p_star, q_star=q_star, total=total
    )
    # Items that are not a distribution are only ever clipped: record what was done.
    applied = consistency if total is not None or consistency == "none" else "clip"
    return FrequencyEstimate(freq=freq, raw=raw, std=std, n=n, consistency=applied, labels=labels)
