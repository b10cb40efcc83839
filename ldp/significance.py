"""Which values are "significant", stated so that the drawn interval can never disagree.

A value is called significant exactly when the interval drawn for it lies above 0: the rule and
the picture are one computation. With ``bonferroni`` (the analyzer's test) the drawn intervals
are the Bonferroni-adjusted ones, each at ``1 - (1 - level) / d``, which hold together for all d
values of the field with probability at least ``level``; with ``unadjusted`` every value gets the
plain ``level`` interval and a test at ``1 - level`` of its own. Intervals are around the
unbiased (``raw``) estimate, the one whose coverage is measured. Server side only (numpy).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from ldp.errors import ParameterError

__all__ = ["RULES", "Significance", "significance"]

FloatArray = npt.NDArray[np.float64]

#: ``bonferroni``: family-wise over the field's values; ``unadjusted``: one value at a time.
RULES = ("bonferroni", "unadjusted")


@dataclass(frozen=True, eq=False)
class Significance:
    """Per value: the interval to draw, and whether it is significant (its low end > 0).

    ``low`` and ``high`` are ``raw -/+ z std`` clipped to ``[0, 1]``; a value is significant if
    and only if ``raw - z std > 0``, which is also ``low > 0``.
    """

    rule: str
    level: float
    values: int
    z: float
    per_value_level: float
    low: FloatArray
    high: FloatArray
    significant: npt.NDArray[np.bool_]
    labels: tuple[str, ...]

    @property
    def sentence(self) -> str:
        """The one line the table and the page print under the field."""
        if self.rule == "bonferroni":
            return (
                f"Significant = the {self.level:.0%} interval, Bonferroni-adjusted over the "
                f"{self.values} values (each drawn at {self.per_value_level:.2%}), lies above 0; "
                "intervals are around the unbiased estimate."
            )
        return (
            f"Significant = the {self.level:.0%} interval of that value alone (no correction "
            f"for its {self.values} values) lies above 0; intervals are around the unbiased "
            "estimate."
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping: the rule, its sentence and one row per value."""
        return {
            "rule": self.rule,
            "level": self.level,
            "per_value_level": self.per_value_level,
            "z": self.z,
            "sentence": self.sentence,
            "items": [
                {
                    "value": name,
                    "ci_low": float(lo),
                    "ci_high": float(hi),
                    "significant": bool(sig),
                }
                for name, lo, hi, sig in zip(
                    self.labels, self.low, self.high, self.significant, strict=True
                )
            ],
        }


def significance(
    raw: npt.ArrayLike,
    std: npt.ArrayLike,
    *,
    level: float = 0.95,
    rule: str = "bonferroni",
    labels: tuple[str, ...] | None = None,
) -> Significance:
    """Significance and the matching intervals for one field.

    Parameters
    ----------
    raw, std : array_like
        The unbiased estimate and its standard errors (``FrequencyEstimate.raw``, ``.std``).
    level : float
        Confidence level in (0, 1): family-wise for ``bonferroni``, per value otherwise.
    rule : str
        One of :data:`RULES`.
    labels : tuple of str, optional
        Value names.

    Returns
    -------
    Significance
    """
    x = np.asarray(raw, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    if x.ndim != 1 or s.shape != x.shape:
        raise ParameterError(f"raw and std must be vectors of one length, got {x.shape}, {s.shape}")
    if not 0 < level < 1:
        raise ParameterError(f"confidence level ({level}) must be in (0, 1)")
    if rule not in RULES:
        raise ParameterError(f"rule ({rule!r}) must be one of {list(RULES)}")
    d = x.size
    per_value = 1 - (1 - level) / d if rule == "bonferroni" else level
    z = NormalDist().inv_cdf(0.5 + per_value / 2)
    lower = x - z * s
    names = labels if labels is not None else tuple(str(i) for i in range(d))
    if len(names) != d:
        raise ParameterError(f"{len(names)} labels for {d} values")
    return Significance(
        rule=rule,
        level=level,
        values=d,
        z=z,
        per_value_level=per_value,
        low=np.clip(lower, 0.0, 1.0),
        high=np.clip(x + z * s, 0.0, 1.0),
        significant=np.asarray(lower > 0),
        labels=tuple(names),
    )
