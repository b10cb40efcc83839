"""Empirical privacy audit: a Clopper-Pearson lower bound on epsilon, in the style of LDP-Auditor.

Arcolezi & Gambs, "Revealing the True Cost of Locally Differentially Private Protocols: An
Auditing Perspective", PETS 2024. Run a randomizer many times on two inputs x and x', count how
often a distinguishing event E happens, and bound P[E | x] from below and P[E | x'] from above
with exact (Clopper-Pearson) intervals; ln(lower / upper) is then a lower bound on the epsilon of
the randomizer, valid at the stated confidence. An audit can only ever *refute* a privacy claim
(the bound exceeds it) or fail to refute it; it never proves one, so it complements, and must
never replace, the closed-form checks. Reusable for any oracle (plain, longitudinal, set-valued):
pass zero-argument samplers, or count the events yourself and call :func:`epsilon_lower_bound`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from scipy.stats import beta

__all__ = ["AuditResult", "audit", "cp_lower", "cp_upper", "epsilon_lower_bound"]

T = TypeVar("T")


def _check_counts(hits: int, trials: int) -> None:
    if not (isinstance(trials, int) and trials >= 1):
        raise ValueError(f"trials ({trials!r}) must be an integer >= 1")
    if not (isinstance(hits, int) and 0 <= hits <= trials):
        raise ValueError(f"hits ({hits!r}) must be an integer in [0, {trials}]")


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha ({alpha}) must be in (0, 1)")


def cp_lower(hits: int, trials: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound: P[p >= bound] >= 1 - alpha for any true p."""
    _check_counts(hits, trials)
    _check_alpha(alpha)
    if hits == 0:
        return 0.0
    return float(beta.ppf(alpha, hits, trials - hits + 1))


def cp_upper(hits: int, trials: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound: P[p <= bound] >= 1 - alpha for any true p."""
    _check_counts(hits, trials)
    _check_alpha(alpha)
    if hits == trials:
        return 1.0
    return float(beta.ppf(1 - alpha, hits + 1, trials - hits))


@dataclass(frozen=True)
class AuditResult:
    """Outcome of one audit: the empirical epsilon lower bound and the counts behind it."""

    epsilon_lower: float
    """``max(0, ln(p_lower / p_prime_upper))``: epsilon is at least this, at ``confidence``."""
    p_lower: float
    """Lower confidence bound on P[E | x]."""
    p_prime_upper: float
    """Upper confidence bound on P[E | x']."""
    hits: int
    trials: int
    hits_prime: int
    trials_prime: int
    confidence: float

    def refutes(self, epsilon: float) -> bool:
        """True if the data show, at ``confidence``, that the randomizer is not epsilon-LDP."""
        return self.epsilon_lower > epsilon


def epsilon_lower_bound(
    hits: int,
    trials: int,
    hits_prime: int,
    trials_prime: int,
    confidence: float = 0.99,
) -> AuditResult:
    """Lower bound on epsilon from event counts under x (``hits``) and under x' (``hits_prime``).

    Each one-sided interval is taken at ``(1 - confidence) / 2`` (Bonferroni), so both hold at
    once with probability at least ``confidence``; when they hold, ``p_lower <= P[E|x]`` and
    ``p_prime_upper >= P[E|x']``, hence ``ln(p_lower / p_prime_upper) <= ln(P[E|x] / P[E|x'])
    <= epsilon``. A false refutation of a true claim therefore has probability at most
    ``1 - confidence``, whatever the sample sizes.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence ({confidence}) must be in (0, 1)")
    alpha = (1 - confidence) / 2
    low = cp_lower(hits, trials, alpha)
    high = cp_upper(hits_prime, trials_prime, alpha)
    eps = max(0.0, math.log(low / high)) if low > 0 else 0.0
    return AuditResult(
        epsilon_lower=eps,
        p_lower=low,
        p_prime_upper=high,
        hits=hits,
        trials=trials,
        hits_prime=hits_prime,
        trials_prime=trials_prime,
        confidence=confidence,
    )


def audit(
    draw: Callable[[], T],
    draw_prime: Callable[[], T],
    event: Callable[[T], bool],
    trials: int,
    confidence: float = 0.99,
) -> AuditResult:
    """Run ``draw`` (randomizer on x) and ``draw_prime`` (on x') ``trials`` times each.

    ``event`` should be likely under x and unlikely under x' (for a frequency oracle: "the output
    supports x and not x'"); the bound is only as tight as the event is discriminating.
    """
    if not (isinstance(trials, int) and trials >= 1):
        raise ValueError(f"trials ({trials!r}) must be an integer >= 1")
    hits = sum(1 for _ in range(trials) if event(draw()))
    hits_prime = sum(1 for _ in range(trials) if event(draw_prime()))
    return epsilon_lower_bound(hits, trials, hits_prime, trials, confidence)
