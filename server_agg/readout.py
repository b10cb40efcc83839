"""What the outputs say about one field beyond its estimates: significance and ranking.

One :class:`FieldReadout` per field, computed once per rendering from the field's unbiased
estimate and its exact covariance (:mod:`ldp.covariance`): the significance rule with the
intervals to draw (:mod:`ldp.significance`: the colour is ``low > 0`` of the drawn interval, so
the two never disagree) and the ranking (:mod:`ldp.rankings`, seeded: the same counts always
give the same page). Analysis only: it sees estimates, never a report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ldp.covariance import estimate_covariance
from ldp.rankings import Ranking, rank
from ldp.significance import Significance, significance
from server_agg.marginals import groups_of

if TYPE_CHECKING:
    from server_agg.aggregate import FieldResult, GroupResult

__all__ = [
    "RANK_K",
    "RANK_SEED",
    "SIGNIFICANCE_RULE",
    "FieldReadout",
    "field_covariance",
    "readout",
]

FloatArray = npt.NDArray[np.float64]

#: The analyzer's significance test: Bonferroni over the field's values, at ``--confidence``.
SIGNIFICANCE_RULE = "bonferroni"
#: Rankings ask "is this value among the k most used" for this k (fewer for smaller fields).
RANK_K = 3
#: Seed of the ranking's Monte Carlo draws: fixed, so that a page can be reproduced.
RANK_SEED = 0
#: Derived marginals (server_agg.marginals): which half of the "os-arch" platform cells.
_PARTS = {"os": 0, "arch": 1}


@dataclass(frozen=True, eq=False)
class FieldReadout:
    """Significance, ranking and covariance of one field.

    ``p_top`` holds, for every value in domain order, the probability that it is among the
    field's true top ``ranking.k``; ``ranking`` shows only the ``k + 2`` highest values.
    """

    significance: Significance
    ranking: Ranking
    p_top: FloatArray
    cov: FloatArray


def field_covariance(group: GroupResult, fr: FieldResult) -> FloatArray:
    """The exact covariance of ``fr``'s unbiased estimate, at its clipped raw estimate (pooled
    over ``fr.weeks`` weeks with pair share ``fr.share`` for ``aggregate --weeks``).

    A marginal derived from the platform field (``fr.derived_from``) sums platform cells, so its
    covariance is ``A C A^T`` with C the platform's and A the cell-membership matrix.
    """
    if fr.derived_from is None:
        return estimate_covariance(
            fr.estimate, fr.spec.randomizer(), weeks=fr.weeks, share=fr.share
        )
    source = group.field(fr.derived_from)
    cells = estimate_covariance(
        source.estimate, source.spec.randomizer(), weeks=source.weeks, share=source.share
    )
    members = groups_of(source.spec.domain, _PARTS[fr.name])
    a = np.zeros((len(members), source.spec.d))
    for row, idx in enumerate(members.values()):
        a[row, idx] = 1.0
    out: FloatArray = a @ cells @ a.T
    return out


def readout(group: GroupResult, fr: FieldResult, level: float) -> FieldReadout:
    """Significance at ``level`` (rule :data:`SIGNIFICANCE_RULE`) and the top-k ranking."""
    est = fr.estimate
    labels = tuple(fr.spec.domain)
    sig = significance(est.raw, est.std, level=level, rule=SIGNIFICANCE_RULE, labels=labels)
    cov = field_covariance(group, fr)
    k = min(RANK_K, est.d)
    # One set of draws for every value (the CSV's per-value column), then the short list shown.
    full = rank(est.raw, cov, labels, k=k, top=est.d, seed=RANK_SEED)
    p_top = np.zeros(est.d)
    p_top[list(full.order)] = full.top_k
    shown = min(est.d, k + 2)
    names = {labels[v] for v in full.order[:shown]}
    ranking = dataclasses.replace(
        full,
        order=full.order[:shown],
        top_k=full.top_k[:shown],
        pairs=tuple(p for p in full.pairs if p.more in names and p.less in names),
    )
    return FieldReadout(significance=sig, ranking=ranking, p_top=p_top, cov=cov)
