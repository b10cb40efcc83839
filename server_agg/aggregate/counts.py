"""The additive unit of the analysis: :class:`Counts` per :class:`GroupKey`.

Everything the analyzer learns before estimation is integer counts, so any split of the input
(chunks, processes, Dask partitions) adds up to exactly the same totals. Plain data: the
decoders name a report's group with :class:`GroupKey`, the counting fills these in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class GroupKey(NamedTuple):
    """Reports are counted separately per schema, report kind and period."""

    schema_id: str
    kind: str
    period: str


@dataclass
class GroupCounts:
    """``n`` valid reports of one group and, per field, how many of them support each item.

    ``patterns`` counts, per field, each distinct wire value (canonical bytes) seen: what the
    poisoning screen (:mod:`server_agg.poisoning`) tests against the channel's law. Values too
    varied to cache (OLH seeds) are not in it.
    """

    n: int
    support: dict[str, npt.NDArray[np.int64]]
    patterns: dict[str, Counter[bytes]] = field(default_factory=dict)

    def add(self, other: GroupCounts) -> None:
        """Add another chunk's counts of the same group (in place)."""
        self.n += other.n
        for name, vector in other.support.items():
            mine = self.support.get(name)
            self.support[name] = vector.copy() if mine is None else mine + vector
        for name, seen in other.patterns.items():
            self.patterns.setdefault(name, Counter()).update(seen)


@dataclass
class Counts:
    """Everything the analyzer learns from a pile of reports before estimation; additive.

    ``read`` counts every input item, ``excluded`` the valid reports left out by the kind or
    period filter, ``rejects`` the skipped ones by reason; the rest are in ``groups``.
    """

    read: int = 0
    excluded: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    groups: dict[GroupKey, GroupCounts] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        """Valid reports counted into a group."""
        return sum(g.n for g in self.groups.values())

    def add(self, other: Counts) -> Counts:
        """Add ``other`` into ``self``; returns ``self`` so it folds with ``functools.reduce``."""
        self.read += other.read
        self.excluded += other.excluded
        self.rejects.update(other.rejects)
        for key, group in other.groups.items():
            mine = self.groups.get(key)
            if mine is None:
                self.groups[key] = GroupCounts(
                    group.n,
                    {k: v.copy() for k, v in group.support.items()},
                    {k: Counter(v) for k, v in group.patterns.items()},
                )
            else:
                mine.add(group)
        return self

    def to_plain(self) -> dict[str, Any]:
        """Plain Python values (lists of ints), for exact comparisons and JSON debugging."""
        return {
            "read": self.read,
            "excluded": self.excluded,
            "rejects": dict(sorted((k, v) for k, v in self.rejects.items() if v)),
            "groups": {
                "/".join(key): {
                    "n": g.n,
                    "support": {k: [int(x) for x in v] for k, v in sorted(g.support.items())},
                }
                for key, g in sorted(self.groups.items())
            },
        }
