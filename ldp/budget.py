"""The epsilon budget: what one report costs, what any 52 weeks can cost, what this machine spent.

Per report, the fields of a report kind compose sequentially: the sum of their ``epsilon_1``.
Over any 52 weeks (schema v2's epochs, docs/PRIVACY-OVER-TIME.md), a field's reports reveal
at most one permanent response per epoch they touch: ``epochs_touched(R) * epsilon_perm``,
whatever the values do. That is the *yearly bound*, a theorem that ``ldp.transcript`` checks
exactly on adversarial histories. This machine's *actual* spend counts the epochs that really
sent a report in the last 52 weeks (``ldp.epochs.EpochMemo``), so it is never above the bound.
A v1 field (a memo per value, no epochs) has no finite yearly bound: ``inf``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ldp.longitudinal import FieldRandomizer

if TYPE_CHECKING:
    from ldp.epochs import EpochMemo
    from ldp.schema import Schema

__all__ = [
    "FieldLike",
    "FieldYear",
    "KindLike",
    "YearBudget",
    "per_report_epsilon",
    "year_budget",
]


class FieldLike(Protocol):
    """A named field that resolves to a randomizer (``ldp.schema.FieldSpec`` is one)."""

    @property
    def name(self) -> str: ...
    def randomizer(self) -> FieldRandomizer: ...


class KindLike(Protocol):
    """A report kind: a sequence of fields (``ldp.schema.ReportKind`` is one)."""

    @property
    def fields(self) -> Sequence[FieldLike]: ...


def _fields(kind: KindLike | Iterable[FieldLike]) -> list[FieldLike]:
    items = kind.fields if hasattr(kind, "fields") else kind
    return list(items)


def per_report_epsilon(kind: KindLike | Iterable[FieldLike]) -> float:
    """Epsilon of one report of this kind: the sum of its fields' achieved ``epsilon_1``."""
    return sum(f.randomizer().epsilon_1 for f in _fields(kind))


@dataclass(frozen=True)
class FieldYear:
    """One field's yearly line: its epsilon per epoch, epochs per 52 weeks, bound and spend."""

    kind: str
    name: str
    epsilon: float
    epoch_weeks: int | None
    epochs: int | None
    bound: float
    actual: float | None

    def to_json(self) -> dict[str, Any]:
        """The line as JSON values (``null`` for an unbounded v1 field's bound)."""
        return {
            "kind": self.kind,
            "field": self.name,
            "epsilon_per_epoch": self.epsilon,
            "epoch_weeks": self.epoch_weeks,
            "epochs_per_52_weeks": self.epochs,
            "year_bound": self.bound if math.isfinite(self.bound) else None,
            "actual": self.actual,
        }


@dataclass(frozen=True)
class YearBudget:
    """The yearly bound of a schema's fields (and this machine's spend beside it).

    ``total`` is the bound for a user who sends every kind in ``kinds``; ``actual_total``
    what this machine's reports of the last 52 weeks can have revealed, at most ``total``.
    """

    fields: tuple[FieldYear, ...]
    kinds: tuple[str, ...]

    def kind_bound(self, kind: str) -> float:
        """Bound of one report kind's fields over any 52 weeks."""
        return math.fsum(f.bound for f in self.fields if f.kind == kind)

    @property
    def total(self) -> float:
        """Bound over any 52 weeks for all kinds together."""
        return math.fsum(f.bound for f in self.fields)

    @property
    def actual_total(self) -> float | None:
        """This machine's spend over the last 52 weeks, if a memo was given."""
        spent = [f.actual for f in self.fields]
        return None if any(a is None for a in spent) else math.fsum(a or 0.0 for a in spent)

    def to_json(self) -> dict[str, Any]:
        """Per field, per kind and total, as JSON values (``null`` where unbounded)."""

        def num(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "window_weeks": 52,
            "fields": [f.to_json() for f in self.fields],
            "kinds": {k: num(self.kind_bound(k)) for k in self.kinds},
            "total": num(self.total),
            "actual_total": self.actual_total,
        }


def year_budget(
    schema: Schema,
    kinds: Sequence[str] | None = None,
    memo: EpochMemo | None = None,
    period: str | None = None,
) -> YearBudget:
    """The yearly bound per field, per kind and in total; with ``memo`` and ``period``, this
    machine's actual spend over the 52 weeks ending with ``period`` beside it."""
    from ldp.epochs import epochs_touched, week_index

    names = tuple(schema.kind_names if kinds is None else kinds)
    week = None if period is None else week_index(period)
    rows = []
    for kind_name in names:
        for spec in schema.kind(kind_name).fields:
            eps = spec.randomizer().epsilon_perm
            weeks = spec.epoch_weeks
            actual = None
            if memo is not None and week is not None:
                actual = memo.actual_spend([(spec.name, eps)], week)[spec.name]
            rows.append(
                FieldYear(
                    kind=kind_name,
                    name=spec.name,
                    epsilon=eps,
                    epoch_weeks=weeks,
                    epochs=None if weeks is None else epochs_touched(weeks),
                    bound=spec.year_bound(),
                    actual=actual,
                )
            )
    return YearBudget(tuple(rows), names)
