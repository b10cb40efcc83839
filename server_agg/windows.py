"""One field over a window of W weeks: the pooled estimate, ``auto``, significance and ranking.

The statistical core of issue 15 in one call per field, for the aggregate and render modules to
wire in: :func:`field_window` pools the weekly support counts of a window
(:func:`ldp.estimate.pooled_frequencies`), computes the exact covariance
(:mod:`ldp.covariance`), applies the consistency step (``auto`` by default,
:mod:`ldp.consistency`), and attaches the significance rule with its matching intervals
(:mod:`ldp.significance`) and the ranking (:mod:`ldp.rankings`). :func:`choose_window` picks the
shortest window whose half-widths meet a target. Only aggregates pass through here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ldp.covariance import frequency_covariance
from ldp.errors import ParameterError
from ldp.estimate import AUTO, FrequencyEstimate, PooledChannel, epoch_pair_share
from ldp.estimate import pooled_frequencies as _pooled
from ldp.rankings import Ranking, rank
from ldp.schema import FieldSpec
from ldp.significance import Significance, significance

__all__ = [
    "FieldWidth",
    "FieldWindow",
    "HalfWidth",
    "WindowChoice",
    "choose_window",
    "field_window",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class FieldWindow:
    """Everything the outputs show for one field over ``weeks`` weeks."""

    name: str
    weeks: int
    share: float
    estimate: FrequencyEstimate
    cov: FloatArray
    significance: Significance
    ranking: Ranking

    @property
    def half_width(self) -> float:
        """The largest unadjusted half-width ``z std`` over the values, at ``level`` (the
        figure the window rule and the issue's targets speak of)."""
        z = NormalDist().inv_cdf(0.5 + self.significance.level / 2)
        return float(np.max(z * self.estimate.std))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping: the estimate (with the ``auto`` choice), significance with its
        sentence and intervals, and the ranking."""
        return {
            "field": self.name,
            "weeks": self.weeks,
            "epoch_pair_share": self.share,
            "estimate": self.estimate.to_dict(self.significance.level),
            "intervals_for": "raw (the unbiased estimate)",
            "significance": self.significance.to_dict(),
            "ranking": self.ranking.to_dict(),
        }


def field_window(
    spec: FieldSpec,
    supports: npt.ArrayLike,
    n: int,
    *,
    consistency: str = AUTO,
    level: float = 0.95,
    rule: str = "bonferroni",
    k: int = 3,
    seed: int = 0,
) -> FieldWindow:
    """Pool a field's weekly support counts and derive everything shown about it.

    Parameters
    ----------
    spec : FieldSpec
        The field (its randomizer and ``epoch_weeks`` fix the channel and the pooling).
    supports : array_like
        ``(W, d)`` support counts, one row per consecutive week, from the same ``n`` users.
    n : int
        Users reporting in every week.
    consistency : str
        ``auto`` (default) or a fixed step; set fields are only clipped.
    level, rule : float, str
        Significance level and rule (:func:`ldp.significance.significance`).
    k : int
        Top-k size of the ranking (at most d).
    seed : int
        Seed of the ranking's Monte Carlo draws and ``auto``'s bootstrap.

    Returns
    -------
    FieldWindow
    """
    s = np.asarray(supports, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != spec.d:
        raise ParameterError(f"supports must be (weeks, {spec.d}), got {s.shape}")
    weeks = int(s.shape[0])
    randomizer: Any = spec.randomizer()
    share = epoch_pair_share(spec.epoch_weeks, weeks)
    channel = PooledChannel.of(randomizer)

    def cov_at(f: FloatArray) -> FloatArray:
        return frequency_covariance(randomizer, n, f, weeks=weeks, share=share)

    est = _pooled(s, n, channel, share, consistency, spec.domain, cov=cov_at)
    cov = cov_at(np.clip(est.raw, 0.0, 1.0))
    sig = significance(est.raw, est.std, level=level, rule=rule, labels=spec.domain)
    ranking = rank(est.raw, cov, spec.domain, k=min(k, spec.d), seed=seed)
    return FieldWindow(spec.name, weeks, share, est, cov, sig, ranking)


class HalfWidth(Protocol):
    """What :func:`choose_window` reads of a field: its name and largest half-width."""

    @property
    def name(self) -> str: ...

    @property
    def half_width(self) -> float: ...


@dataclass(frozen=True)
class FieldWidth:
    """A :class:`HalfWidth` by value: one field's largest half-width over a candidate window
    (when only the standard errors were computed, not a whole :class:`FieldWindow`)."""

    name: str
    half_width: float


@dataclass(frozen=True)
class WindowChoice:
    """The window length chosen and the sentence that says why."""

    weeks: int
    met: bool
    half_widths: dict[str, float]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "weeks": self.weeks,
            "met": self.met,
            "half_widths": dict(self.half_widths),
            "reason": self.reason,
        }


def choose_window(
    candidates: Mapping[int, Sequence[HalfWidth]],
    target: float = 0.05,
    *,
    tolerance: float = 0.05,
) -> WindowChoice:
    """The shortest window whose every field has half-width ``<= target``.

    ``candidates`` maps a window length W to the fields computed over the last W weeks (for
    example W = 1, 2, ..., 12; :class:`FieldWindow` or any :class:`HalfWidth`). When no window
    meets the target, waiting longer is worth it only while it narrows some interval: the
    choice is then the shortest window in which every field's half-width is within
    ``tolerance`` (relative) of what the longest window gives it, and the reason says which
    field falls short and by how much. (A field memoized for a year, like v2's ``modules``,
    hardly narrows with pooling; without this rule it would drag every small project's answer
    to the longest window, weeks behind, for nothing.)
    """
    if not candidates:
        raise ParameterError("candidates must hold at least one window")
    for weeks in sorted(candidates):
        widths = {f.name: f.half_width for f in candidates[weeks]}
        if widths and max(widths.values()) <= target:
            widest = max(widths, key=widths.__getitem__)
            return WindowChoice(
                weeks,
                True,
                widths,
                f"{_weeks(weeks)}: the shortest window in which every field's half-width is "
                f"at most {100 * target:g} points (widest: {widest}, {widths[widest]:.3f})",
            )
    longest = max(candidates)
    best = {f.name: f.half_width for f in candidates[longest]}
    worst = max(best, key=best.__getitem__)
    for weeks in sorted(candidates):
        widths = {f.name: f.half_width for f in candidates[weeks]}
        if all(widths[name] <= (1 + tolerance) * best[name] for name in best):
            break
    tail = (
        ""
        if weeks == longest
        else f"; longer windows would narrow no field's interval by more than {tolerance:.0%}"
    )
    return WindowChoice(
        weeks,
        False,
        widths,
        f"{_weeks(weeks)}: no window of up to {_weeks(longest)} (as far as the data reaches) "
        f"brings every field's half-width to {100 * target:g} points ({worst} stays at "
        f"{best[worst]:.3f} over {_weeks(longest)}){tail}",
    )


def _weeks(count: int) -> str:
    return "1 week" if count == 1 else f"{count} weeks"
