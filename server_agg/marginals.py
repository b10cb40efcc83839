"""os and arch marginals derived from schema v2's joint ``platform`` field.

v2 asks one question, "which os-arch pair", so that combinations are estimated directly; the
one-dimensional views maintainers also want are sums of its cells. A marginal's estimate is the
sum of the pair estimates, and its standard error is exact for Subset Selection (the mechanism
v2 names): how many of a report's k items fall in a group of cells is, given the user's true
pair, an inclusion coin plus a hypergeometric draw, whose variance we plug the estimated
distribution into. Derived results carry ``derived_from = "platform"`` and are never counted
twice in a budget: they cost nothing beyond the platform report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ldp.estimate import FrequencyEstimate
from ldp.schema import OTHER, FieldSpec

__all__ = [
    "DERIVED_FROM",
    "groups_of",
    "marginal",
    "platform_marginals",
    "ss_group_variance",
    "sums_std",
]

#: The field the marginals are derived from.
DERIVED_FROM = "platform"


def groups_of(domain: tuple[str, ...], part: int) -> dict[str, list[int]]:
    """Cells of ``domain`` ("os-arch" pairs, then "other") grouped by the os (part 0) or arch
    (part 1) half; ``other`` keeps its own group, as in v1's domains."""
    out: dict[str, list[int]] = {}
    for i, value in enumerate(domain):
        name = OTHER if value == OTHER else value.split("-", 1)[part]
        out.setdefault(name, []).append(i)
    if OTHER in out:  # keep "other" last, as every categorical domain does
        out[OTHER] = out.pop(OTHER)
    return out


def sums_std(members: Sequence[Sequence[int]], cov: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Standard errors of sums of cells, one group of cell indices per sum, from the cells'
    covariance ``C``: ``sqrt(diag(A C A^T))`` with ``A`` the 0/1 membership matrix (what a
    pooled window's os and arch need: their exact one-week formula is
    :func:`ss_group_variance`)."""
    c = np.asarray(cov, dtype=np.float64)
    a = np.zeros((len(members), c.shape[0]))
    for row, idx in enumerate(members):
        a[row, list(idx)] = 1.0
    out: npt.NDArray[np.float64] = np.sqrt(np.clip(np.diag(a @ c @ a.T), 0.0, None))
    return out


def ss_group_variance(d: int, k: int, include: float, members: list[int], x: int) -> float:
    """Var[|S & A| | true value x] for a Subset Selection report S (k of d items, x in S with
    probability ``include``, the others uniform) and a group A of cells."""
    a = len(members)
    inside = 1 if x in members else 0
    others, in_a = d - 1, a - inside

    def hyper(draws: int) -> tuple[float, float]:
        if draws <= 0 or others <= 0:
            return 0.0, 0.0
        share = in_a / others
        var = draws * share * (1 - share) * (others - draws) / max(others - 1, 1)
        return draws * share, var

    mean_in, var_in = hyper(k - 1)
    mean_out, var_out = hyper(k)
    e1, e0 = inside + mean_in, mean_out
    return include * var_in + (1 - include) * var_out + include * (1 - include) * (e1 - e0) ** 2


@dataclass(frozen=True)
class Marginal:
    """A derived field: its spec (named ``os`` or ``arch``) and its estimate."""

    spec: FieldSpec
    estimate: FrequencyEstimate
    #: The platform cells summed into each value, in the spec's domain order.
    members: tuple[list[int], ...]

    def support(self, cells: tuple[int, ...]) -> tuple[int, ...]:
        """Support counts of the derived values: the sums of their cells' counts."""
        return tuple(sum(cells[i] for i in group) for group in self.members)


def marginal(spec: FieldSpec, estimate: FrequencyEstimate, name: str, part: int) -> Marginal:
    """The ``os`` (part 0) or ``arch`` (part 1) marginal of a platform estimate."""
    randomizer = spec.randomizer()
    if randomizer.mechanism != "ss":
        raise ValueError(
            f"marginals are derived for Subset Selection only, not {randomizer.mechanism}"
        )
    groups = groups_of(spec.domain, part)
    k = int(getattr(randomizer, "k"))  # noqa: B009 - SS-only attribute, not on the protocol
    p, q = randomizer.p_star, randomizer.q_star
    f = np.clip(estimate.raw, 0.0, None)
    f = f / f.sum() if f.sum() > 0 else np.full(spec.d, 1.0 / spec.d)
    raw, freq, std = [], [], []
    for members in groups.values():
        raw.append(float(estimate.raw[members].sum()))
        freq.append(float(estimate.freq[members].sum()))
        var = sum(f[x] * ss_group_variance(spec.d, k, p, members, x) for x in range(spec.d)) / (
            estimate.n * (p - q) ** 2
        )
        std.append(float(np.sqrt(var)))
    labels = tuple(groups)
    derived = FieldSpec(
        name=name,
        kind="categorical",
        domain=labels,
        epsilon_perm=spec.epsilon_perm,
        epsilon_1=spec.epsilon_1,
        mechanism=spec.mechanism,
        doc=f"Derived from {DERIVED_FROM}: the sum of its cells by {name}.",
        epoch_weeks=spec.epoch_weeks,
    )
    result = FrequencyEstimate(
        freq=np.asarray(freq),
        raw=np.asarray(raw),
        std=np.asarray(std),
        n=estimate.n,
        consistency=estimate.consistency,
        labels=labels,
    )
    return Marginal(derived, result, tuple(groups.values()))


def platform_marginals(spec: FieldSpec, estimate: FrequencyEstimate) -> tuple[Marginal, ...]:
    """The os and arch marginals of a platform estimate (empty for any other field)."""
    if spec.name != DERIVED_FROM or spec.randomizer().mechanism != "ss":
        return ()
    return (marginal(spec, estimate, "os", 0), marginal(spec, estimate, "arch", 1))
