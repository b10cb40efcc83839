"""From counts to results: estimates with CIs, the poisoning screen and privacy per group.

:func:`finalize` (one week) and :func:`finish` (or several weeks pooled, through
:mod:`server_agg.weeks`) turn :class:`~server_agg.aggregate.counts.Counts` into an
:class:`AggregateResult`; :func:`check_filters` and :func:`check_weeks` refuse bad options
before anything is read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from ldp.errors import DecodeError, ParameterError
from ldp.report import parse_period
from ldp.schema import FieldSpec, Schema
from server_agg.aggregate.counting import schema_map
from server_agg.aggregate.counts import Counts
from server_agg.aggregate.errors import REJECT_REASONS, AggregateError
from server_agg.marginals import platform_marginals
from server_agg.poisoning import PatternTrim, screen_field

if TYPE_CHECKING:
    from ldp.amplification import CentralEpsilon
    from ldp.estimate import FrequencyEstimate
    from server_agg.trends import GroupTrend
    from server_agg.weeks import Window
    from server_agg.windows import WindowChoice

#: delta of the central (epsilon, delta) guarantee after shuffling, when none is given.
DEFAULT_DELTA: Final = 1e-6


@dataclass(frozen=True)
class FieldResult:
    """One field's estimate within a group, with the spec it was estimated under."""

    spec: FieldSpec
    estimate: FrequencyEstimate
    support: tuple[int, ...]
    #: Patterns the poisoning screen found over-represented; their excess is not in the estimate.
    trims: tuple[PatternTrim, ...] = ()
    #: For a marginal derived from another field (v2's os and arch): that field's name.
    derived_from: str | None = None
    #: Weeks pooled into the estimate (``aggregate --weeks``) and their epoch pair share
    #: (:func:`ldp.estimate.epoch_pair_share`), which fix its covariance.
    weeks: int = 1
    share: float = 0.0

    @property
    def name(self) -> str:
        """The field name."""
        return self.spec.name


@dataclass(frozen=True)
class KindPrivacy:
    """The privacy parameters of one report kind (achieved epsilons, as the client spends them).

    ``epsilon_report`` is one report's epsilon (sequential composition over fields);
    ``epsilon_year`` the proven bound on all of a user's reports of this kind in any 52 weeks
    (``ldp.budget``; ``inf`` for v1, whose per-value memo has none); ``central`` the central
    (epsilon, delta) after shuffling the group's n reports (Feldman, McMillan & Talwar 2021), or
    ``None`` when not computed.
    """

    kind: str
    epsilon_report: float
    epsilon_year: float
    fields: tuple[tuple[str, str, float, float], ...]  # (name, mechanism, eps_perm, eps_1)
    central: CentralEpsilon | None = None


@dataclass(frozen=True)
class GroupResult:
    """Estimates for one (schema, kind, period): one :class:`FieldResult` per field."""

    schema_id: str
    kind: str
    period: str
    n: int
    fields: tuple[FieldResult, ...]
    privacy: KindPrivacy
    #: The weeks pooled into the group (``aggregate --weeks``); ``None``: the one week
    #: ``period``.
    window: Window | None = None
    #: With ``--weeks auto``: the window length chosen for this group and why.
    choice: WindowChoice | None = None

    def field(self, name: str) -> FieldResult:
        """The result of field ``name``."""
        for result in self.fields:
            if result.name == name:
                return result
        raise KeyError(f"group {self.kind}/{self.period} has no field {name!r}")


@dataclass(frozen=True)
class AggregateResult:
    """What one analysis found: estimates per group, how many reports were used or skipped."""

    groups: tuple[GroupResult, ...]
    read: int
    excluded: int
    rejects: Mapping[str, int]
    confidence: float
    consistency: str
    delta: float | None
    source: str = ""
    engine: str = "local"
    workers: int = 1
    seconds: float = 0.0
    filters: Mapping[str, str] = field(default_factory=dict)
    #: The weeks pooled (``aggregate --weeks W``, :mod:`server_agg.weeks`); ``None``: one
    #: group per ISO week, or windows chosen per group (``--weeks auto``, see
    #: :attr:`GroupResult.choice`).
    window: Window | None = None
    #: Each (schema, kind)'s estimates week by week or window by window (:mod:`server_agg.trends`).
    trends: tuple[GroupTrend, ...] = ()

    @property
    def accepted(self) -> int:
        """Reports that went into some estimate."""
        return sum(g.n for g in self.groups)

    @property
    def rejected(self) -> int:
        """Reports skipped as undecryptable or invalid."""
        return sum(self.rejects.values())

    def group(self, kind: str, period: str | None = None) -> GroupResult:
        """The group of ``kind`` (and ``period``; the only one of its kind when omitted)."""
        found = [g for g in self.groups if g.kind == kind and period in (None, g.period)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} groups match kind={kind!r} period={period!r}")
        return found[0]


@functools.cache
def _central(eps0: float, n: int, delta: float) -> CentralEpsilon:
    from ldp.amplification import central_epsilon

    return central_epsilon(eps0, n, delta)


def kind_privacy(
    schema: Schema, kind: str, n: int | None = None, delta: float | None = DEFAULT_DELTA
) -> KindPrivacy:
    """Privacy parameters of ``kind``; with ``n`` and ``delta``, also the central epsilon."""
    report_kind = schema.kind(kind)
    rows = []
    for spec in report_kind.fields:
        randomizer = spec.randomizer()
        rows.append(
            (spec.name, randomizer.mechanism, randomizer.epsilon_perm, randomizer.epsilon_1)
        )
    year = math.fsum(spec.year_bound() for spec in report_kind.fields)
    eps_report = math.fsum(r[3] for r in rows)
    central = None
    if n is not None and delta is not None and n >= 1:
        central = _central(eps_report, n, delta)
    return KindPrivacy(kind, eps_report, year, tuple(rows), central)


def finalize(
    counts: Counts,
    schemas: Sequence[Schema] | None = None,
    *,
    consistency: str = "auto",
    confidence: float = 0.95,
    delta: float | None = DEFAULT_DELTA,
    source: str = "",
    engine: str = "local",
    workers: int = 1,
    seconds: float = 0.0,
    filters: Mapping[str, str] | None = None,
    screen: bool = True,
) -> AggregateResult:
    """Turn counts into estimates: debias, standard errors, consistency; privacy per group.

    ``delta=None`` skips the central-epsilon computation (slow for small n; simulations that
    only need the estimates use it). With ``screen`` (the default), each field's patterns are
    tested against the channel's law and an over-represented pattern's excess is left out of
    that field's estimate, listed in :attr:`FieldResult.trims` (:mod:`server_agg.poisoning`).
    """
    from server_agg.estimation import ANALYZER_CONSISTENCY, estimate_field

    if consistency not in ANALYZER_CONSISTENCY:
        raise AggregateError(
            f"consistency ({consistency!r}) must be one of {', '.join(ANALYZER_CONSISTENCY)}"
        )
    if not 0 < confidence < 1:
        raise AggregateError(f"confidence ({confidence}) must be in (0, 1)")
    if delta is not None and not 0 < delta < 1:
        raise AggregateError(f"delta ({delta}) must be in (0, 1)")
    by_id = schema_map(schemas)
    groups = []
    for key in sorted(counts.groups, key=lambda k: (k.kind, k.period, k.schema_id)):
        group = counts.groups[key]
        schema = by_id.get(key.schema_id)
        if schema is None:
            raise AggregateError(f"counts hold schema {key.schema_id}, which was not given")
        results = []
        for spec in schema.kind(key.kind).fields:
            support = group.support[spec.name]
            randomizer = spec.randomizer()
            n_field = group.n
            trims: tuple[PatternTrim, ...] = ()
            if screen and spec.name in group.patterns:
                support, n_field, trims = screen_field(
                    spec.name,
                    randomizer,
                    group.n,
                    support,
                    group.patterns[spec.name],
                    labels=spec.domain,
                )
            estimate = estimate_field(
                randomizer, spec.kind, support, n_field, consistency, spec.domain
            )
            cells = tuple(int(x) for x in support)
            results.append(FieldResult(spec, estimate, cells, trims=trims))
            # v2's joint platform field also answers the one-dimensional questions.
            for derived in platform_marginals(spec, estimate):
                results.append(
                    FieldResult(
                        derived.spec,
                        derived.estimate,
                        derived.support(cells),
                        derived_from=spec.name,
                    )
                )
        privacy = kind_privacy(schema, key.kind, group.n, delta)
        groups.append(
            GroupResult(key.schema_id, key.kind, key.period, group.n, tuple(results), privacy)
        )
    rejects = {r: counts.rejects[r] for r in REJECT_REASONS if counts.rejects.get(r)}
    rejects.update({r: c for r, c in sorted(counts.rejects.items()) if c and r not in rejects})
    return AggregateResult(
        groups=tuple(groups),
        read=counts.read,
        excluded=counts.excluded,
        rejects=rejects,
        confidence=confidence,
        consistency=consistency,
        delta=delta,
        source=source,
        engine=engine,
        workers=workers,
        seconds=seconds,
        filters=dict(filters or {}),
    )


def check_weeks(weeks: int | str, period: str | None) -> None:
    """Refuse a window length out of range, or a fixed window without the week it ends at."""
    from server_agg.weeks import AUTO_WEEKS, MAX_WEEKS

    if weeks == AUTO_WEEKS:
        return
    if isinstance(weeks, bool) or not isinstance(weeks, int) or not 1 <= weeks <= MAX_WEEKS:
        raise AggregateError(
            f"weeks ({weeks!r}) must be {AUTO_WEEKS!r} or an integer in [1, {MAX_WEEKS}]"
        )
    if weeks > 1 and period is None:
        raise AggregateError(f"weeks ({weeks}) needs period: the ISO week the window ends at")


def finish(
    counts: Counts,
    schemas: Sequence[Schema] | None,
    *,
    period: str | None,
    weeks: int | str,
    consistency: str,
    confidence: float,
    trends: bool = True,
    **options: Any,
) -> AggregateResult:
    """:func:`finalize`, or with ``weeks`` above 1 or ``"auto"`` its pooled form over the
    window ending at ``period`` (:func:`server_agg.weeks.finalize_weeks`). With ``trends``,
    every (schema, kind) seen over at least two weeks also gets its trend."""
    check_weeks(weeks, period)
    if weeks == 1:
        result = finalize(
            counts, schemas, consistency=consistency, confidence=confidence, **options
        )
        if not trends:
            return result
        from server_agg.trends import week_trends

        return replace(result, trends=week_trends(result.groups, schema_map(schemas)))
    from server_agg.weeks import finalize_weeks

    return finalize_weeks(
        counts,
        schemas,
        period=period,
        weeks=weeks,
        consistency=consistency,
        confidence=confidence,
        trends=trends,
        **options,
    )


def check_filters(kind: str | None, period: str | None, schemas: Sequence[Schema] | None) -> None:
    """Refuse a kind no known schema has, or a period that is not an ISO week, before reading."""
    if kind is not None:
        known = sorted({k for s in schema_map(schemas).values() for k in s.kind_names})
        if kind not in known:
            raise AggregateError(f"kind ({kind!r}) must be one of {', '.join(known)}")
    if period is not None:
        try:
            parse_period(period)
        except (DecodeError, ParameterError) as exc:
            raise AggregateError(str(exc)) from None
