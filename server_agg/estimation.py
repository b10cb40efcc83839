"""One field's estimate as the analyzer makes it: debias, then the consistency step, ``auto``
included, and the line that says which step each field got and why.

``auto`` (the analyzer's default) chooses per categorical field among Norm-Sub, clip and
early-stopped EM by estimated risk (:mod:`ldp.consistency`, with the exact covariance of
:mod:`ldp.covariance`); set fields are only ever clipped. The unbiased estimate, its standard
errors and so the intervals are the same whichever step is chosen. Only aggregates pass here.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from ldp.estimate import AUTO, CONSISTENCY, FrequencyEstimate

if TYPE_CHECKING:
    from server_agg.aggregate import FieldResult

__all__ = ["ANALYZER_CONSISTENCY", "DEFAULT_CONSISTENCY", "consistency_note", "estimate_field"]

#: What ``aggregate --consistency`` accepts: ``auto`` first (the default), then the fixed steps.
ANALYZER_CONSISTENCY: Final = (AUTO, *CONSISTENCY)
DEFAULT_CONSISTENCY: Final = AUTO


def estimate_field(
    randomizer: Any,
    kind: str,
    support: npt.ArrayLike,
    n: int,
    consistency: str,
    labels: tuple[str, ...],
) -> FrequencyEstimate:
    """The field's estimate under ``consistency`` (one of :data:`ANALYZER_CONSISTENCY`).

    A fixed step is exactly ``randomizer.estimate_from_support``. ``auto`` debiases the same
    way, then lets :func:`ldp.consistency.choose_consistency` pick the step for a categorical
    field from its exact covariance at the clipped raw estimate (seeded, so reproducible); the
    result's ``consistency`` names the chosen step and ``choice`` says why. A set field under
    ``auto`` is clipped, as under every fixed step but ``none``.
    """
    if consistency != AUTO:
        est: FrequencyEstimate = randomizer.estimate_from_support(
            support, n, consistency=consistency, labels=labels
        )
        return est
    if kind != "categorical":
        clipped: FrequencyEstimate = randomizer.estimate_from_support(
            support, n, consistency="clip", labels=labels
        )
        return clipped
    from ldp.consistency import choose_consistency
    from ldp.covariance import frequency_covariance

    base: FrequencyEstimate = randomizer.estimate_from_support(
        support, n, consistency="none", labels=labels
    )
    cov = frequency_covariance(randomizer, base.n, np.clip(base.raw, 0.0, 1.0))
    choice = choose_consistency(base.raw, cov, randomizer.p_star, randomizer.q_star)
    return dataclasses.replace(base, freq=choice.freq, consistency=choice.method, choice=choice)


def consistency_note(fr: FieldResult, option: str) -> str:
    """One line: the step this field's estimate got under ``--consistency option``, and why."""
    est = fr.estimate
    if est.choice is not None:
        return f"consistency: {est.choice.reason}"  # "auto chose em-300: smallest ..."
    if fr.derived_from is not None:
        return (
            f"consistency: {est.consistency}, as the {fr.derived_from} field it sums "
            "(its cells' estimates added up)"
        )
    if fr.spec.kind != "categorical" and est.consistency == "clip":
        return (
            "consistency: clip (a set field's shares need not sum to 1: each is clipped to [0, 1])"
        )
    return f"consistency: {est.consistency} (--consistency {option})"
