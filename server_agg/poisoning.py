"""A screen against naive poisoning: report patterns more frequent than the channel allows.

Every field of the shipped schemas reports a k-subset of its D items (Subset Selection, alone or
under padding-and-sampling). The channel treats all items other than the user's alike, so given
the user's item x every k-subset holding x is equally likely, and so is every one without it:
P(S | x) = p*/C(D-1, k-1) if x is in S, else (1-p*)/C(D-1, k). The first is the larger (p* >
k/D), so whatever the true distribution, one pattern S turns up in at most a share
``pi_max = p*/C(D-1, k-1)`` of honest reports. An attacker who sends the same crafted report
over and over (the cheapest way to push one value) piles up far more of one pattern.

:func:`screen_field` counts each pattern of a field against a binomial tail bound at ``pi_max``
(Chernoff, with a Bonferroni share of ``alpha`` per pattern) and excludes the excess beyond the
bound from that field's estimate, returning what it excluded so the output can say so. Honest
data is flagged with probability at most ``alpha`` per field, whatever its distribution.

What it cannot stop: an attacker who spreads crafted reports over many patterns (each holding
the target, the rest drawn at random) keeps every pattern under the bound and keeps almost all
of the gain; and up to the bound's slack, ``n * (pi_max - pi_S)`` reports of one pattern pass.
docs/THREAT-MODEL.md gives the numbers. It never sees who sent what: it reads counts only.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["DEFAULT_ALPHA", "PatternTrim", "honest_limit", "pattern_law", "screen_field"]

#: Chance, per field and group, that honest data gets anything excluded (an upper bound).
DEFAULT_ALPHA: Final = 1e-6


@dataclass(frozen=True)
class PatternTrim:
    """One over-represented pattern of a field: seen ``count`` times, honest at most ``limit``;
    ``count - limit`` reports were left out of the field's estimate."""

    field: str
    pattern: tuple[str, ...]
    count: int
    limit: int

    @property
    def excluded(self) -> int:
        """Reports of this pattern left out of the estimate."""
        return self.count - self.limit


def pattern_law(randomizer: Any) -> tuple[int, int, float] | None:
    """``(D, k, pi_max)`` of a field's channel, or ``None`` when it is not a subset channel.

    ``D`` and ``k`` are those of the Subset Selection that writes the wire value (inside
    padding-and-sampling, the oracle's ``d + pad`` items); ``pi_max`` as in the module docstring.
    """
    oracle = getattr(randomizer, "oracle", randomizer)
    k = getattr(oracle, "k", None)
    if getattr(oracle, "mechanism", None) != "ss" or not isinstance(k, int):
        return None
    d = int(oracle.d)
    p_star = float(oracle.p_star)
    if not 0 < k < d:
        return None
    return d, k, p_star / math.comb(d - 1, k - 1)


def _kl(a: float, b: float) -> float:
    """Kullback-Leibler divergence of Bernoulli(a) from Bernoulli(b), for 0 < b < 1."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def honest_limit(n: int, pi: float, alpha: float) -> int:
    """The smallest t with P(Binomial(n, pi) >= t + 1) <= alpha by the Chernoff bound
    exp(-n KL((t+1)/n || pi)); counts above t are flagged. Conservative: the true tail is
    smaller, so honest data is flagged even less often than ``alpha``."""
    if n <= 0:
        return 0
    target = math.log(1 / alpha)
    lo, hi = math.floor(n * pi), n  # P(X >= n*pi + 1) is never tiny enough below the mean
    while lo < hi:
        mid = (lo + hi) // 2
        a = (mid + 1) / n
        if a >= 1 or n * _kl(a, pi) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def screen_field(
    name: str,
    randomizer: Any,
    n: int,
    support: npt.NDArray[np.int64],
    patterns: Mapping[bytes, int] | Counter[bytes],
    labels: tuple[str, ...] | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> tuple[npt.NDArray[np.int64], int, tuple[PatternTrim, ...]]:
    """``(support, n, trims)`` of one field after excluding over-represented patterns.

    ``patterns`` maps each wire value (canonical JSON bytes) to how many reports carried it.
    A field whose channel is not a subset channel, or with no pattern counts, is unchanged.
    """
    law = pattern_law(randomizer)
    if law is None or not patterns or n <= 0:
        return support, n, ()
    d, k, pi_max = law
    limit = honest_limit(n, pi_max, alpha / math.comb(d, k))
    flagged = [(raw, c) for raw, c in patterns.items() if c > limit]
    if not flagged:
        return support, n, ()
    trims = []
    out = support.copy()
    kept = n
    for raw, count in sorted(flagged, key=lambda item: (-item[1], item[0])):
        wire = json.loads(raw)
        excess = count - limit
        out = out - excess * randomizer.support(randomizer.encode_batch([wire]))
        kept -= excess
        items = tuple(
            labels[i] if labels is not None and 0 <= i < len(labels) else str(i)
            for i in _items(wire)
        )
        trims.append(PatternTrim(name, items, count, limit))
    return out, kept, tuple(trims)


def _items(wire: Any) -> list[int]:
    """The item indices of a subset wire value (a sorted index list)."""
    if isinstance(wire, list):
        return [int(i) for i in wire]
    return []
