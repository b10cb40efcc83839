"""The covariance matrix of a debiased frequency vector, exact for the shipped channels.

A report supports a *set* of items (one item for GRR, k for Subset Selection, any for unary
encodings and OLH), so two items' estimates are correlated: for Subset Selection the k slots are
shared, and the covariance is negative. Rankings and comparisons need it. Server side only:
imports numpy. Never sees a report, only probabilities and estimated frequencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ldp.errors import ParameterError
from ldp.estimate import FrequencyEstimate, PooledChannel, check_window

__all__ = ["PairSupport", "estimate_covariance", "frequency_covariance", "pair_support"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PairSupport:
    """Support probabilities of one response of a multinomial-like channel over ``d`` items.

    Given the user's true value x, the response supports x with probability ``p`` and any other
    item with ``q``; it supports two distinct items i and j together with probability ``a`` when
    one of them is x and ``b`` when neither is. These four numbers fix the conditional
    covariance of the support indicators: ``Cov(Y_i, Y_j | x) = [a or b] - m_i m_j``.
    """

    p: float
    q: float
    a: float
    b: float


def pair_support(mechanism: str, d: int, p: float, q: float, k: int | None = None) -> PairSupport:
    """The pair probabilities of a response with support probabilities ``p`` and ``q``.

    - ``grr``: one item per response, ``a = b = 0``.
    - ``ss``: a k-subset with x inside with probability ``p`` and the rest uniform:
      ``a = p (k-1)/(d-1)``, ``b = [p (k-1)(k-2) + (1-p) k (k-1)] / ((d-1)(d-2))``. Linear in
      ``p``, so it also holds for a mixture with a uniform subset (v1's instantaneous step).
    - ``sue``, ``oue``: independent bits given x, ``a = p q``, ``b = q**2``.
    - ``olh``: item i is supported when its (pairwise independent) hash hits the reported bucket,
      independently of the other items' hashes: ``a = p q``, ``b = q**2`` with ``q = 1/g``.
    """
    if mechanism == "grr":
        return PairSupport(p, q, 0.0, 0.0)
    if mechanism == "ss":
        if k is None or not 1 <= k < d:
            raise ParameterError(f"subset size k ({k!r}) must be in [1, d - 1 = {d - 1}]")
        a = p * (k - 1) / (d - 1)
        b = (p * (k - 1) * (k - 2) + (1 - p) * k * (k - 1)) / ((d - 1) * (d - 2)) if d > 2 else 0.0
        return PairSupport(p, q, a, b)
    if mechanism in ("sue", "oue", "olh"):
        return PairSupport(p, q, p * q, q * q)
    raise ParameterError(f"mechanism ({mechanism!r}) must be one of grr, ss, sue, oue, olh")


def _per_user(s: PairSupport, f: FloatArray, pad: int, joint: FloatArray | None) -> FloatArray:
    """``(1/n) sum_u Cov(Y_u | x_u)`` over a population with frequencies ``f`` (summing to 1
    for a categorical field); a set field picks one of ``pad`` slots and has pair shares
    ``joint`` (the share of users having both items)."""
    d = f.size
    g = s.p - s.q
    hit = s.q + g / pad  # a holder of item i supports it with this probability
    fi = f[:, None] + f[None, :]
    both = s.a * fi / pad + s.b * (1 - fi / pad)
    pairs = joint if joint is not None else np.zeros((d, d))
    means = s.q**2 + s.q * g * fi / pad + g**2 * pairs / pad**2
    out: FloatArray = both - means
    diag = f * hit * (1 - hit) + (1 - f) * s.q * (1 - s.q)
    out[np.diag_indices(d)] = diag
    return out


def frequency_covariance(
    randomizer: Any,
    n: int,
    f: npt.ArrayLike,
    *,
    weeks: int = 1,
    share: float = 0.0,
) -> FloatArray:
    """Covariance of the unbiased (``raw``) frequency vector of a field, pooled over W weeks.

    For ``n`` users with fixed inputs (the population that reported: the same finite-population
    view as :func:`ldp.estimate.frequency_variance`), independent across users, the support
    vector has covariance ``sum_u Cov(Y_u | x_u)``; with frequencies ``f``:

        C_ij = [(f_i + f_j) a + (1 - f_i - f_j) b - q**2 - q (p - q)(f_i + f_j)] / (n (p - q)**2)

    off the diagonal and :func:`ldp.estimate.frequency_variance` on it. W weeks of one
    population average to ``[C*(p*, q*) / W + rho keep**2 C1(p1, q1)]`` (the notation of
    :func:`ldp.estimate.pooled_variance`, whose values are this matrix's diagonal). A set field
    (padding-and-sampling, pad l, estimate scaled by l) picks one of l slots per draw; its
    ``m_i m_j`` term needs the share of users having *both* items, which reports cannot reveal:
    we take ``min(f_i, f_j)``, the largest possible, which makes every ``Var(f_i - f_j)`` as
    large as it can be (comparisons stay conservative). Taken for every pair at once, those
    shares need not be those of one population whose sets fit the pad, so a set field's matrix
    is a pairwise bound and may have small negative eigenvalues (:func:`ldp.rankings.rank`
    clips them).

    Parameters
    ----------
    randomizer
        The field's randomizer (``FieldSpec.randomizer()``): a longitudinal oracle or a
        :class:`ldp.sets.SetOracle`.
    n : int
        Users reporting in every week.
    f : array_like
        Frequencies to evaluate at (plug in the clipped raw estimate, as the analyzer does).
    weeks : int
        Window length W.
    share : float
        ``rho`` (:func:`ldp.estimate.epoch_pair_share`); 0 for one week.

    Returns
    -------
    ndarray
        The ``(d, d)`` covariance, symmetric (positive semi-definite for a categorical field).
    """
    check_window(n, weeks, share)
    channel = PooledChannel.of(randomizer)
    inner = getattr(randomizer, "oracle", randomizer) if channel.pad is not None else randomizer
    mech, d_inner = str(inner.mechanism), int(inner.d)
    k = int(inner.k) if mech == "ss" else None
    if mech == "olh":
        d_inner = max(d_inner, 3)  # OLH's pair probabilities do not depend on d
    freq = np.clip(np.asarray(f, dtype=np.float64), 0.0, 1.0)
    d = int(randomizer.d)
    if freq.shape != (d,):
        raise ParameterError(f"f must have {d} entries, got shape {freq.shape}")
    pad = 1 if channel.pad is None else channel.pad
    joint = np.minimum(freq[:, None], freq[None, :]) if channel.pad is not None else None
    star = pair_support(mech, d_inner, channel.p_star, channel.q_star, k)
    cov = _per_user(star, freq, pad, joint) / weeks
    if share > 0:
        memo = pair_support(mech, d_inner, channel.p1, channel.q1, k)
        cov = cov + share * channel.keep**2 * _per_user(memo, freq, pad, joint)
    out: FloatArray = pad**2 * cov / (int(n) * (channel.p_star - channel.q_star) ** 2)
    return out


def estimate_covariance(
    estimate: FrequencyEstimate, randomizer: Any, *, weeks: int = 1, share: float = 0.0
) -> FloatArray:
    """:func:`frequency_covariance` of an estimate, at its clipped ``raw`` (the plug-in that
    gives ``estimate.std`` on the diagonal)."""
    f = np.clip(estimate.raw, 0.0, 1.0)
    return frequency_covariance(randomizer, estimate.n, f, weeks=weeks, share=share)
