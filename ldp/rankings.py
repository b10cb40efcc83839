"""Rankings a person can read: which values are in the top k, and which is used more.

From an unbiased frequency vector and its covariance (:func:`ldp.covariance.frequency_covariance`)
the estimate is treated as normal, ``N(truth, C)``. A pair statement "a is used more than b:
97%" is ``Phi((raw_a - raw_b) / sd(raw_a - raw_b))``: the posterior probability of ``a > b``
under a flat prior, and equally one minus the one-sided p-value of "b >= a". Top-k
probabilities come from seeded Monte Carlo draws of ``N(raw, C)``. Server side only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from ldp.errors import ParameterError

__all__ = ["PairStatement", "Ranking", "percent", "rank"]

FloatArray = npt.NDArray[np.float64]
_NORMAL = NormalDist()


def percent(p: float) -> str:
    """A probability as people read it: never "100%" or "0%" for a Monte Carlo or normal tail."""
    if p >= 0.995:
        return "over 99%"
    if p < 0.005:
        return "under 1%"
    return f"{p:.0%}"


@dataclass(frozen=True)
class PairStatement:
    """``more`` is used more than ``less`` with probability ``confidence`` (>= 0.5)."""

    more: str
    less: str
    confidence: float
    difference: float
    std: float

    def sentence(self) -> str:
        """``"build is used more than deploy: 97%"``."""
        return f"{self.more} is used more than {self.less}: {percent(self.confidence)}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "more": self.more,
            "less": self.less,
            "confidence": self.confidence,
            "difference": self.difference,
            "std": self.std,
            "sentence": self.sentence(),
        }


@dataclass(frozen=True, eq=False)
class Ranking:
    """The top values of one field, how sure each is to be in the top k, and pair statements.

    ``order`` lists the ``top`` highest values by the unbiased estimate; ``top_k[i]`` is the
    probability that value ``order[i]`` is among the k most used; ``top_set`` the probability
    that the shown top k is exactly the true top k (as a set); ``pairs`` compares every two
    shown values, the more used first.
    """

    labels: tuple[str, ...]
    k: int
    order: tuple[int, ...]
    estimate: FloatArray
    top_k: FloatArray
    top_set: float
    pairs: tuple[PairStatement, ...]
    draws: int
    seed: int

    def statements(self) -> list[str]:
        """One sentence per shown value and per neighbouring pair, in rank order."""
        out = [
            f"{self.labels[v]} is in the top {self.k}: {percent(float(p))}"
            for v, p in zip(self.order, self.top_k, strict=True)
        ]
        names = [self.labels[v] for v in self.order]
        for a, b in itertools.pairwise(names):
            pair = next(s for s in self.pairs if {s.more, s.less} == {a, b})
            out.append(pair.sentence())
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "k": self.k,
            "method": (
                "normal approximation with the exact covariance; top-k by "
                f"{self.draws} seeded Monte Carlo draws (seed {self.seed})"
            ),
            "top": [
                {
                    "value": self.labels[v],
                    "rank": r + 1,
                    "estimate": float(self.estimate[v]),
                    "top_k_probability": float(p),
                }
                for r, (v, p) in enumerate(zip(self.order, self.top_k, strict=True))
            ],
            "top_set_probability": self.top_set,
            "pairs": [s.to_dict() for s in self.pairs],
            "statements": self.statements(),
        }


def _sqrt_psd(cov: FloatArray) -> FloatArray:
    """A matrix root of a covariance (eigen-decomposition: the matrix is singular when every
    report supports the same number of items, since the estimates then sum to a constant)."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    root: FloatArray = vecs * np.sqrt(np.clip(vals, 0.0, None))
    return root


def rank(
    raw: npt.ArrayLike,
    cov: npt.ArrayLike,
    labels: tuple[str, ...] | None = None,
    *,
    k: int = 3,
    top: int | None = None,
    draws: int = 20_000,
    seed: int = 0,
) -> Ranking:
    """Rank a field's values from its unbiased estimate ``raw`` and covariance ``cov``.

    Parameters
    ----------
    raw : array_like
        The unbiased estimate (``FrequencyEstimate.raw``), the centre of the normal model.
    cov : array_like
        Its ``(d, d)`` covariance (:func:`ldp.covariance.frequency_covariance`).
    labels : tuple of str, optional
        Value names.
    k : int
        Size of the top set asked about, ``1 <= k <= d``.
    top : int, optional
        How many values to show (default ``min(d, k + 2)``).
    draws : int
        Monte Carlo draws for the top-k probabilities; their standard error is at most
        ``0.5 / sqrt(draws)`` (0.0035 at the default).
    seed : int
        Seed of the draws (the same inputs always give the same numbers).

    Returns
    -------
    Ranking
    """
    x = np.asarray(raw, dtype=np.float64)
    c = np.asarray(cov, dtype=np.float64)
    d = x.size
    if x.ndim != 1 or c.shape != (d, d):
        raise ParameterError(f"need a vector and a (d, d) covariance, got {x.shape}, {c.shape}")
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(c)):
        raise ParameterError("estimate and covariance must be finite")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d:
        raise ParameterError(f"k ({k!r}) must be an integer in [1, d = {d}]")
    shown = min(d, k + 2) if top is None else top
    if isinstance(shown, bool) or not isinstance(shown, int) or not k <= shown <= d:
        raise ParameterError(f"top ({top!r}) must be an integer in [k = {k}, d = {d}]")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 100:
        raise ParameterError(f"draws ({draws!r}) must be an integer >= 100")
    names = labels if labels is not None else tuple(str(i) for i in range(d))
    if len(names) != d:
        raise ParameterError(f"{len(names)} labels for {d} values")
    # Stable order: ties go to the earlier domain value, as everywhere in the outputs.
    order = tuple(int(i) for i in np.argsort(-x, kind="stable")[:shown])
    rng = np.random.default_rng(seed)
    sample = x + rng.standard_normal((draws, d)) @ _sqrt_psd(c).T
    # Rank of each value in each draw: how many values beat it (ties cannot happen a.s.).
    kth = -np.partition(-sample, k - 1, axis=1)[:, k - 1]
    inside = sample >= kth[:, None]
    top_k = inside[:, list(order)].mean(axis=0)
    shown_top = np.zeros(d, dtype=bool)
    shown_top[list(order[:k])] = True
    top_set = float(np.mean(np.all(inside == shown_top, axis=1)))
    pairs = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            diff = float(x[a] - x[b])
            var = float(c[a, a] + c[b, b] - 2 * c[a, b])
            sd = math.sqrt(max(var, 0.0))
            p = _NORMAL.cdf(diff / sd) if sd > 0 else (1.0 if diff > 0 else 0.5)
            more, less = (a, b) if p >= 0.5 else (b, a)
            pairs.append(
                PairStatement(
                    more=names[more],
                    less=names[less],
                    confidence=max(p, 1 - p),
                    difference=abs(diff),
                    std=sd,
                )
            )
    return Ranking(
        labels=tuple(names),
        k=k,
        order=order,
        estimate=x.copy(),
        top_k=np.asarray(top_k, dtype=np.float64),
        top_set=top_set,
        pairs=tuple(pairs),
        draws=draws,
        seed=seed,
    )
