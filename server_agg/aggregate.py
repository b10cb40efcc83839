"""The analyzer's pipeline: sealed reports in, frequency estimates with confidence intervals out.

read (chunks of ciphertexts) -> open the HPKE envelope -> decode and validate against the known
schemas -> per-field *support vectors* grouped by (schema, kind, period) -> estimates with CIs
and a consistency step -> :class:`AggregateResult` (rendered by :mod:`server_agg.render`).

Support vectors are integer counts and therefore additive: any split of the input into chunks,
processes or Dask partitions gives exactly the same totals (:class:`Counts` is the unit that
gets summed). Memory stays bounded: input is streamed in chunks, and at most ``2 x workers``
chunks are in flight. A report that cannot be opened or validated is skipped and counted by
reason (:data:`REJECT_REASONS`); nothing in a report can stop the run. This module never writes
a decrypted report anywhere, and never sends the private key beyond the local worker processes.

The local engine opens envelopes in worker *processes*: ``cryptography``'s HPKE holds the GIL
(measured: two threads open 12% *fewer* reports per second than one), so threads cannot help.
"""

from __future__ import annotations

import collections
import functools
import gc
import json
import math
import multiprocessing
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ldp.envelope import open_sealed
from ldp.errors import (
    DecodeError,
    EnvelopeError,
    MissingFieldError,
    OutOfRangeError,
    PaddingError,
    ParameterError,
    TooLargeError,
    UnknownFieldError,
    UnknownSchemaError,
    WrongTypeError,
)
from ldp.report import (
    MAX_REPORT_BYTES,
    PADDED_BYTES,
    UNPADDED_SCHEMA_VERSIONS,
    decode_report,
    parse_period,
    unpad,
)
from ldp.schema import FieldSpec, Schema, canonical_dumps, known_schemas
from server_agg.marginals import platform_marginals
from server_agg.periods import PeriodWindow, plausible_periods
from server_agg.poisoning import PatternTrim, screen_field

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ldp.amplification import CentralEpsilon
    from ldp.estimate import FrequencyEstimate
    from server_agg.trends import GroupTrend
    from server_agg.weeks import Window
    from server_agg.windows import WindowChoice

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_DELTA",
    "REJECT_REASONS",
    "AggregateError",
    "AggregateResult",
    "Counts",
    "FieldResult",
    "GroupCounts",
    "GroupKey",
    "GroupResult",
    "KindPrivacy",
    "MemorySource",
    "ParquetSlice",
    "ParquetSource",
    "ReadTask",
    "Source",
    "SplitSource",
    "StoreRange",
    "StoreRowids",
    "StoreSource",
    "aggregate",
    "count_ciphertexts",
    "count_plaintexts",
    "count_source",
    "finalize",
    "kind_privacy",
    "reject_reason",
    "schema_map",
]

#: Reports per chunk: large enough to amortize the per-chunk numpy work and process hand-off,
#: small enough that a chunk of 4 KiB reports stays a few MiB and that the last chunk, which
#: one worker may finish alone, costs little (about 60 ms).
DEFAULT_CHUNK: Final = 1000
#: delta of the central (epsilon, delta) guarantee after shuffling, when none is given.
DEFAULT_DELTA: Final = 1e-6

#: Why a report was skipped, in display order. ``decrypt``: the HPKE envelope did not open
#: (random bytes, truncated, tampered, or sealed to another key); ``unknown_schema``: a schema id
#: this analyzer does not know; ``out_of_range``: a value, kind, period or version outside what
#: the schema allows; ``implausible_period``: a real ISO week, but before the report's schema
#: was released or after next week (:mod:`server_agg.periods`); ``wrong_type``: a value of the
#: wrong JSON type; ``unknown_field`` / ``missing_field``: fields that do not match the report
#: kind; ``too_large``: plaintext over 4 KiB; ``padding``: not padded to the one length with
#: spaces (``ldp.report.unpad``), or unpadded although its schema was never sent unpadded
#: (every version but 1); ``malformed``: anything else the strict decoder
#: refuses (bad JSON, not canonical); ``internal``: the decoder failed in an unexpected way (a
#: bug: counted, never fatal).
REJECT_REASONS: Final = (
    "decrypt",
    "unknown_schema",
    "out_of_range",
    "implausible_period",
    "wrong_type",
    "unknown_field",
    "missing_field",
    "too_large",
    "padding",
    "malformed",
    "internal",
)


class AggregateError(Exception):
    """The analysis cannot run (bad options, unreadable input); the message says which and why."""


#: Error class -> reject reason, most specific first (the decoder's errors subclass DecodeError).
_REASON_OF: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (EnvelopeError, "decrypt"),
    (UnknownSchemaError, "unknown_schema"),
    (OutOfRangeError, "out_of_range"),
    (WrongTypeError, "wrong_type"),
    (UnknownFieldError, "unknown_field"),
    (MissingFieldError, "missing_field"),
    (TooLargeError, "too_large"),
    (PaddingError, "padding"),
    (DecodeError, "malformed"),
)


def reject_reason(exc: BaseException) -> str:
    """The :data:`REJECT_REASONS` entry for an exception raised while opening or decoding."""
    for cls, reason in _REASON_OF:
        if isinstance(exc, cls):
            return reason
    return "internal"


# --------------------------------------------------------------------------- additive counts


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


def schema_map(schemas: Sequence[Schema] | None) -> dict[str, Schema]:
    """Known schemas by id; ``None`` means the shipped one."""
    chosen = known_schemas() if schemas is None else tuple(schemas)
    if not chosen:
        raise AggregateError("at least one schema is needed to decode reports")
    return {s.id: s for s in chosen}


# The canonical encoding of a report is fixed byte for byte (sorted keys, no spaces, ASCII,
# integers without leading zeros), so a legal report of a given (schema, kind) matches one
# regular expression per kind, and each field's value is a short byte string that repeats across
# reports (a Subset Selection output over 10 values has only C(10, k) forms). The fast path
# matches that expression and validates each distinct value once, caching its support vector;
# anything it does not recognise goes to the strict decoder, which says why it is bad. The two
# agree on every input (tests/test_aggregate.py checks it with Hypothesis), and the fast path
# makes decoding cost a few microseconds next to the ~55 us of an HPKE open.
_INT: Final = rb"(?:0|[1-9][0-9]*)"
_VALUE: Final = rb"(" + _INT + rb"|\[(?:" + _INT + rb"(?:," + _INT + rb")*)?\])"
#: The period as the canonical encoding writes it; whether it is a real ISO week is
#: :func:`_period_ok`'s question.
_PERIOD_GROUP: Final = rb"([0-9]{4}-W[0-9]{2})"
_TAIL: Final = re.compile(
    rb'\},"kind":"([a-z0-9_]{1,32})","period":"'
    + _PERIOD_GROUP
    + rb'","schema":"([0-9a-f]{16})","v":1\}\Z'
)
_TAIL_START: Final = b'},"kind":"'
#: Distinct values cached per field; beyond it (OLH: one value per seed) values are validated
#: one by one and counted through ``encode_batch``.
_CACHE_LIMIT: Final = 4096


@dataclass
class _FieldCache:
    """Valid wire values of one field, as canonical bytes, with their one-report support."""

    randomizer: Any
    supports: dict[bytes, Any] = field(default_factory=dict)

    def lookup(self, raw: bytes) -> tuple[bool, Any]:
        """``(True, support)`` if cached; ``(True, wire)`` if valid but not cacheable;
        ``(False, None)`` if the value is not valid or not canonical (the strict decoder will
        say why)."""
        vec = self.supports.get(raw)
        if vec is not None:
            return True, vec
        try:
            wire = json.loads(raw)
            self.randomizer.validate(wire)
            if canonical_dumps(wire).encode("ascii") != raw:
                return False, None
        except Exception:  # the strict decoder re-reads the report and names the reason
            return False, None
        if len(self.supports) >= _CACHE_LIMIT:
            return True, wire
        vec = self.randomizer.support(self.randomizer.encode_batch([wire]))
        self.supports[raw] = vec
        return True, vec


class _KindPattern:
    """The byte pattern of one (schema, kind) and the caches of its fields."""

    def __init__(self, schema: Schema, kind: str) -> None:
        report_kind = schema.kind(kind)
        names = sorted(report_kind.field_names)
        body = b",".join(b'"' + n.encode("ascii") + b'":' + _VALUE for n in names)
        self.names = tuple(names)
        self.regex = re.compile(rb'\{"fields":\{' + body + rb"\}")
        self.fields = {n: _FieldCache(report_kind.field(n).randomizer()) for n in names}
        self.caches = tuple(self.fields[n] for n in names)
        self.supports = tuple(c.supports for c in self.caches)


# Per process: schema ids are content hashes, so a cache keyed by id is never stale.
_PATTERNS: dict[tuple[str, str], _KindPattern] = {}
_PERIODS: dict[bytes, bool] = {}


def _pattern(schema: Schema, kind: str) -> _KindPattern:
    key = (schema.id, kind)
    found = _PATTERNS.get(key)
    if found is None:
        # setdefault is atomic: threads that race here (Dask workers with processes=False)
        # all get the one stored pattern, so a value cached by one is seen by all.
        found = _PATTERNS.setdefault(key, _KindPattern(schema, kind))
    return found


def _period_ok(raw: bytes) -> bool:
    ok = _PERIODS.get(raw)
    if ok is None:
        try:
            parse_period(raw.decode("ascii"))
            ok = True
        except DecodeError:
            ok = False
        if len(_PERIODS) < _CACHE_LIMIT:
            _PERIODS[raw] = ok
    return ok


def _weighted_support(cache: _FieldCache, seen: Mapping[bytes, int]) -> npt.NDArray[np.int64]:
    """Sum of the cached support vectors of ``seen`` values, each times its count: one matrix
    product instead of a numpy call per distinct value."""
    import numpy as np

    vectors = np.array([cache.supports[raw] for raw in seen], dtype=np.int64)
    total: npt.NDArray[np.int64] = np.fromiter(seen.values(), np.int64, len(seen)) @ vectors
    return total


class _Tally:
    """One chunk's counts in the making: per group, the rows of field values seen.

    Rows of cached values are kept whole and counted per field at the end of the chunk, in C
    (``Counter`` over one column), which is cheaper than a dict update per field and report.
    """

    def __init__(self) -> None:
        # group -> (pattern, rows whose every value is cached,
        #           per field position: (raw value, wire) pairs that were valid but not cacheable,
        #           rows with such a value: their cached values only, by position)
        self.groups: dict[
            GroupKey,
            tuple[_KindPattern, list[Sequence[bytes]], list[list[Any]], list[dict[int, bytes]]],
        ] = {}

    def add(
        self,
        key: GroupKey,
        pattern: _KindPattern,
        raws: Sequence[bytes],
        loose: Mapping[int, Any] | None,
    ) -> None:
        entry = self.groups.get(key)
        if entry is None:
            entry = self.groups[key] = (pattern, [], [[] for _ in pattern.names], [])
        if loose is None:
            entry[1].append(raws)
            return
        cached: dict[int, bytes] = {}
        for i, raw in enumerate(raws):
            if i in loose:
                entry[2][i].append(loose[i])
            else:
                cached[i] = raw
        entry[3].append(cached)

    def counts(self) -> dict[GroupKey, GroupCounts]:
        import numpy as np

        out = {}
        for key, (pattern, rows, loose, mixed) in self.groups.items():
            support = {}
            patterns = {}
            columns = list(zip(*rows, strict=True)) if rows else [() for _ in pattern.names]
            for i, name in enumerate(pattern.names):
                cache = pattern.fields[name]
                total = np.zeros(cache.randomizer.d, dtype=np.int64)
                seen = Counter(columns[i])
                seen.update(row[i] for row in mixed if i in row)
                if seen:
                    total += _weighted_support(cache, seen)
                patterns[name] = seen
                if loose[i]:
                    rnd = cache.randomizer
                    total += rnd.support(rnd.encode_batch(loose[i]))
                support[name] = total
            out[key] = GroupCounts(len(rows) + len(mixed), support, patterns)
        return out


#: (schema id, kind, period) as bytes -> the group and pattern (legal triples only).
_GROUPS: dict[tuple[bytes, bytes, bytes], tuple[GroupKey, _KindPattern]] = {}

_Parsed = tuple[GroupKey, _KindPattern, Sequence[bytes], "Mapping[int, Any] | None"]


def _group(
    schema_raw: bytes, kind_raw: bytes, period_raw: bytes, schemas: Mapping[str, Schema]
) -> tuple[GroupKey, _KindPattern] | None:
    schema = schemas.get(schema_raw.decode("ascii"))
    kind = kind_raw.decode("ascii")
    if schema is None or kind not in schema.kind_names or not _period_ok(period_raw):
        return None
    return GroupKey(schema.id, kind, period_raw.decode("ascii")), _pattern(schema, kind)


def _fast_parse(data: bytes, schemas: Mapping[str, Schema]) -> _Parsed | None:
    """The group and field values of a legal canonical report, or ``None`` to go the slow way."""
    if type(data) is not bytes or len(data) > MAX_REPORT_BYTES:
        return None
    tail = _TAIL.match(data, max(0, data.rfind(_TAIL_START)))
    if tail is None:
        return None
    triple = tail.groups()
    # The set of known schemas is part of the answer, so it is part of the cache key.
    slot = (triple[2], triple[0], triple[1])
    found = _GROUPS.get(slot)
    if found is None or found[0].schema_id not in schemas:
        found = _group(triple[2], triple[0], triple[1], schemas)
        if found is None:
            return None  # not cached: the strict decoder names the reason every time
        if len(_GROUPS) < _CACHE_LIMIT:
            _GROUPS[slot] = found
    key, pattern = found
    body = pattern.regex.match(data, 0, tail.start() + 1)
    if body is None or body.end() != tail.start() + 1:
        return None
    raws = body.groups()
    # The common case, every value already cached, checked in one C-level pass.
    if all(map(dict.__contains__, pattern.supports, raws)):
        return key, pattern, raws, None
    loose: dict[int, Any] | None = None
    for i, cache in enumerate(pattern.caches):
        raw = raws[i]
        if raw in cache.supports:
            continue
        ok, got = cache.lookup(raw)
        if not ok:
            return None
        if raw not in cache.supports:
            if loose is None:
                loose = {}
            loose[i] = got
    return key, pattern, raws, loose


#: A field value in the chunk pattern: only the characters a canonical value can have (no quote,
#: colon or brace, so a value cannot run into the next field); whether it is a legal value is
#: decided once per distinct value by :meth:`_FieldCache.lookup`, which also demands that it is
#: the value's canonical form.
_LOOSE_VALUE: Final = rb"([0-9,\[\]]{1,4096})"


class _ChunkPattern:
    """One expression for every legal report of every known (schema, kind), one per line.

    Each (schema, kind) is a branch with a group per field and a last group for the period,
    which is never empty, so a non-empty period marks the reports of that branch.
    """

    def __init__(self, schemas: Mapping[str, Schema]) -> None:
        branches = []
        #: Per branch: (schema id, kind, its kind pattern, index of its first group). Names are
        #: schema-validated ``[a-z0-9_]``, so they stand in the expression as they are.
        self.branches: list[tuple[str, str, _KindPattern, int]] = []
        first = 0
        for schema in schemas.values():
            for kind in sorted(schema.kind_names):
                pattern = _pattern(schema, kind)
                body = b",".join(
                    b'"' + n.encode("ascii") + b'":' + _LOOSE_VALUE for n in pattern.names
                )
                branches.append(
                    body
                    + rb'\},"kind":"'
                    + re.escape(kind.encode("ascii"))
                    + b'","period":"'
                    + _PERIOD_GROUP
                    + b'","schema":"'
                    + re.escape(schema.id.encode("ascii"))
                    + b'"'
                )
                self.branches.append((schema.id, kind, pattern, first))
                first += len(pattern.names) + 1
        self.regex = re.compile(rb'(?m)^\{"fields":\{(?:' + b"|".join(branches) + rb'),"v":1\}$')


_CHUNK_PATTERNS: dict[tuple[str, ...], _ChunkPattern] = {}


def _legacy_schemas(schemas: Mapping[str, Schema]) -> dict[str, Schema]:
    """The schemas whose reports may come unpadded (``UNPADDED_SCHEMA_VERSIONS``)."""
    return {i: s for i, s in schemas.items() if s.version in UNPADDED_SCHEMA_VERSIONS}


def _strip_chunk(
    plaintexts: list[bytes], schemas: Mapping[str, Schema]
) -> tuple[list[bytes], Mapping[str, Schema]] | None:
    """The reports of a chunk and the schemas they may be of: every plaintext padded (spaces
    stripped; any schema) or every one unpadded (as is; legacy schemas only). ``None`` for a
    mix, or anything else odd: the per-report path then judges each one.

    Stripping cannot accept bad padding: the chunk pattern demands that each stripped line
    ends with the report's closing brace, so what was stripped was spaces up to the length.
    """
    for item in plaintexts:
        if type(item) is not bytes:
            return None
    if set(map(len, plaintexts)) == {PADDED_BYTES}:
        return [item.rstrip(b" ") for item in plaintexts], schemas
    legacy = _legacy_schemas(schemas)
    if not legacy or any(len(x) == PADDED_BYTES or x.endswith(b" ") for x in plaintexts):
        return None
    return plaintexts, legacy


def _chunk_columns(
    plaintexts: list[bytes], schemas: Mapping[str, Schema]
) -> tuple[_ChunkPattern, list[tuple[bytes, ...]]] | None:
    """The chunk pattern and the columns of its groups if *every* plaintext is one whole line
    matching a branch, else ``None``."""
    if not plaintexts:
        return None
    for item in plaintexts:
        if type(item) is not bytes:
            return None
    if max(map(len, plaintexts)) > MAX_REPORT_BYTES:
        return None
    joined = b"\n".join(plaintexts)
    if joined.count(b"\n") != len(plaintexts) - 1:
        return None  # a newline inside a plaintext: one line would not be one report
    ids = tuple(schemas)
    chunk_pattern = _CHUNK_PATTERNS.get(ids)
    if chunk_pattern is None:
        chunk_pattern = _CHUNK_PATTERNS.setdefault(ids, _ChunkPattern(schemas))
    # ^...$ per line and no newline inside a report: each match is one whole line, so as many
    # matches as reports means every report matched.
    rows = chunk_pattern.regex.findall(joined)
    if len(rows) != len(plaintexts):
        return None
    return chunk_pattern, list(zip(*rows, strict=True))


def _values_by_period(
    columns: list[tuple[bytes, ...]], first: int, fields: int, periods: Counter[bytes]
) -> dict[bytes, list[Counter[bytes]]]:
    """Per period, per field of one branch: how often each value occurs (with one period, the
    common case, the columns are counted directly, without pairing values with periods)."""
    period_column = columns[first + fields]
    out: dict[bytes, list[Counter[bytes]]] = {p: [] for p in periods}
    for i in range(fields):
        column = columns[first + i]
        if len(periods) == 1:
            values = Counter(column)
            values.pop(b"", None)  # the reports of other branches
            out[next(iter(periods))].append(values)
            continue
        split: dict[bytes, Counter[bytes]] = {p: Counter() for p in periods}
        for (p, raw), count in Counter(zip(period_column, column, strict=True)).items():
            if p:
                split[p][raw] = count
        for p, values in split.items():
            out[p].append(values)
    return out


def _all_cached(cache: _FieldCache, values: Iterable[bytes]) -> bool:
    """Validate (once) and cache every value; ``False`` if one is invalid or not cacheable."""
    for raw in values:
        if raw not in cache.supports:
            ok, _ = cache.lookup(raw)
            if not ok or raw not in cache.supports:
                return False
    return True


def _count_chunk(
    plaintexts: list[bytes],
    schemas: Mapping[str, Schema],
    kind: str | None,
    period: str | None,
    window: PeriodWindow | None = None,
) -> tuple[dict[GroupKey, GroupCounts], int, int] | None:
    """``(groups, excluded, implausible)`` of a chunk in which *every* report is legal and
    canonical, else ``None`` (the caller then judges report by report, and the strict decoder
    names reasons).

    One regular-expression pass over the chunk joined by newlines finds every report's field
    values; the columns of values are counted in C (``Counter``) and each distinct value is
    validated once. Per report this costs about a third of parsing reports one by one. It can
    only accept what the per-report path accepts: every line must match a branch whole, every
    period must be a real ISO week and every distinct value must be valid and canonical.
    """
    stripped = _strip_chunk(plaintexts, schemas)
    if stripped is None:
        return None
    found = _chunk_columns(*stripped)
    if found is None:
        return None
    chunk_pattern, columns = found
    groups: dict[GroupKey, GroupCounts] = {}
    excluded = implausible = 0
    for schema_id, report_kind, pattern, first in chunk_pattern.branches:
        periods = Counter(columns[first + len(pattern.names)])
        periods.pop(b"", None)  # the reports of other branches
        if not periods:
            continue
        if not all(map(_period_ok, periods)):
            return None
        by_period = _values_by_period(columns, first, len(pattern.names), periods)
        for fields in by_period.values():
            if not all(map(_all_cached, pattern.caches, fields)):
                return None
        for raw_period, n in periods.items():
            text = raw_period.decode("ascii")
            if window is not None and not window.allows(schema_id, text):
                implausible += n
                continue
            if (kind is not None and report_kind != kind) or (
                period is not None and text != period
            ):
                excluded += n
                continue
            support = {
                name: _weighted_support(cache, values)
                for name, cache, values in zip(
                    pattern.names, pattern.caches, by_period[raw_period], strict=True
                )
            }
            patterns = dict(zip(pattern.names, by_period[raw_period], strict=True))
            groups[GroupKey(schema_id, report_kind, text)] = GroupCounts(n, support, patterns)
    return groups, excluded, implausible


def _count_decoded(
    items: Iterable[bytes],
    schemas: Mapping[str, Schema],
    kind: str | None,
    period: str | None,
    private_key: X25519PrivateKey | None = None,
    window: PeriodWindow | None = None,
) -> Counts:
    """Open (with a key), decode, validate, judge the period, filter and count one chunk."""
    counts = Counts()
    rejects = counts.rejects
    tally = _Tally()
    # Open the whole chunk first, then parse it: alternating OpenSSL and interpreter work per
    # report measured about 4 us/report slower (each evicts the other's caches).
    plaintexts: list[bytes] = []
    read = 0
    if private_key is None:
        plaintexts = list(items)
        read = len(plaintexts)
    else:
        for item in items:
            read += 1
            try:
                plaintexts.append(open_sealed(item, private_key))
            except Exception:  # EnvelopeError, or a non-bytes item from a damaged source
                rejects["decrypt"] += 1
    fast = _count_chunk(plaintexts, schemas, kind, period, window)
    if fast is not None:
        counts.read = read
        counts.groups, counts.excluded, implausible = fast
        if implausible:
            rejects["implausible_period"] += implausible
        return counts
    verdicts: dict[tuple[str, str], bool] = {}
    for item in plaintexts:
        # ldp.report.decode_plaintext's rule, with the fast parser in the middle.
        unpadded = not (
            isinstance(item, bytes | bytearray | memoryview)
            and (len(item) == PADDED_BYTES or item[-1:] == b" ")
        )
        if not unpadded:
            try:
                item = unpad(item)
            except PaddingError:
                rejects["padding"] += 1
                continue
        parsed = _fast_parse(item, schemas)
        if parsed is None:
            try:
                report = decode_report(item, schemas)
            except Exception as exc:  # invariant 7: a report can never stop the run
                rejects[reject_reason(exc)] += 1
                continue
            # A report the strict decoder accepts is canonical; only an uncacheable value or
            # a cache bypass brings it here. Count it the same way.
            parsed = _slow_parse(report, schemas)
        key, pattern, raws, loose = parsed
        if unpadded and schemas[key.schema_id].version not in UNPADDED_SCHEMA_VERSIONS:
            rejects["padding"] += 1
            continue
        if window is not None:
            ok = verdicts.get((key.schema_id, key.period))
            if ok is None:
                ok = verdicts[key.schema_id, key.period] = window.allows(key.schema_id, key.period)
            if not ok:
                rejects["implausible_period"] += 1
                continue
        if (kind is not None and key.kind != kind) or (period is not None and key.period != period):
            counts.excluded += 1
            continue
        tally.add(key, pattern, raws, loose)
    counts.read = read
    counts.groups = tally.counts()
    return counts


def _slow_parse(report: Any, schemas: Mapping[str, Schema]) -> _Parsed:
    pattern = _pattern(schemas[report.schema_id], report.kind)
    raws = []
    loose: dict[int, Any] = {}
    for i, (name, cache) in enumerate(zip(pattern.names, pattern.caches, strict=True)):
        wire = report.fields[name]
        raw = canonical_dumps(wire).encode("ascii")
        raws.append(raw)
        cache.lookup(raw)
        if raw not in cache.supports:
            loose[i] = wire
    return GroupKey(report.schema_id, report.kind, report.period), pattern, raws, loose or None


def count_plaintexts(
    plaintexts: Iterable[bytes],
    schemas: Sequence[Schema] | None = None,
    *,
    kind: str | None = None,
    period: str | None = None,
    window: PeriodWindow | None = None,
) -> Counts:
    """Count already-opened reports (tests and simulations that skip the envelope).

    With ``window``, reports dated outside it are rejected as ``implausible_period``.
    """
    return _count_decoded(plaintexts, schema_map(schemas), kind, period, None, window)


def count_ciphertexts(
    ciphertexts: Iterable[bytes],
    private_key: X25519PrivateKey,
    schemas: Sequence[Schema] | None = None,
    *,
    kind: str | None = None,
    period: str | None = None,
    window: PeriodWindow | None = None,
) -> Counts:
    """Open, decode, validate and count one chunk of sealed reports (``window``: as above)."""
    return _count_decoded(ciphertexts, schema_map(schemas), kind, period, private_key, window)


# --------------------------------------------------------------------------- sources


class Source(Protocol):
    """Where sealed reports come from: a stream of chunks, and the total if known up front."""

    @property
    def description(self) -> str: ...

    def total(self) -> int | None: ...

    def chunks(self, size: int) -> Iterator[list[bytes]]: ...


class ReadTask(Protocol):
    """A picklable description of one chunk that a worker process reads for itself."""

    def read(self) -> list[bytes]: ...


@runtime_checkable
class SplitSource(Source, Protocol):
    """A source whose chunks worker processes can read themselves (no hand-off of ciphertexts).

    ``tasks(size)`` yields descriptions of about ``size`` reports each, cheap to produce and
    to pickle; read one by one they give every report exactly once, as ``chunks`` does.
    """

    def tasks(self, size: int) -> Iterator[ReadTask]: ...


@dataclass(frozen=True)
class MemorySource:
    """Ciphertexts already in memory (tests and benchmarks)."""

    items: Sequence[bytes]
    description: str = "memory"

    def total(self) -> int | None:
        """Number of items."""
        return len(self.items)

    def chunks(self, size: int) -> Iterator[list[bytes]]:
        """Consecutive slices of ``size`` items."""
        for start in range(0, len(self.items), size):
            yield list(self.items[start : start + size])


@dataclass(frozen=True)
class StoreSource:
    """The collector's SQLite store (read while the collector keeps writing; WAL allows it)."""

    path: Path
    day: str | None = None

    @property
    def description(self) -> str:
        """Shown in reports."""
        return f"store {self.path}" + (f" (day {self.day})" if self.day else "")

    def _open(self) -> Any:
        # Read-only: the analyzer never creates, converts or writes an input file.
        from server_agg.store import Store, StoreError

        try:
            return Store.open_read_only(self.path)
        except StoreError as exc:
            raise AggregateError(str(exc)) from None

    def total(self) -> int | None:
        """Reports in the store (on ``day``), counted before reading."""
        from server_agg.store import StoreError

        with self._open() as store:
            try:
                return int(store.count(self.day))
            except StoreError as exc:  # a damaged page, say: one line, not a traceback
                raise AggregateError(str(exc)) from None

    def chunks(self, size: int) -> Iterator[list[bytes]]:
        """Ciphertexts in a fresh uniformly random order (``Store.shuffled_rowids``, never
        arrival order), ``size`` per chunk."""
        from server_agg.store import StoreError

        with self._open() as store:
            try:
                rowids = store.shuffled_rowids(self.day)
                for start in range(0, len(rowids), size):
                    chunk = store.read_rowids(rowids[start : start + size])
                    if chunk:
                        yield chunk
            except StoreError as exc:
                raise AggregateError(str(exc)) from None

    def tasks(self, size: int) -> Iterator[StoreRowids]:
        """The shuffled rowids, ``size`` per task: the main process reads rowids only."""
        from server_agg.store import StoreError

        with self._open() as store:
            try:
                rowids = store.shuffled_rowids(self.day)
            except StoreError as exc:
                raise AggregateError(str(exc)) from None
        for start in range(0, len(rowids), size):
            yield StoreRowids(str(self.path), tuple(rowids[start : start + size]))


#: Per process (keyed by pid, so a forked child never uses its parent's connection): a
#: read-only connection per store, opened on a worker's first task and kept for the next ones.
_READERS: dict[tuple[int, str], Any] = {}


def _reader(path: str) -> Any:
    """This process's read-only connection to the store at ``path`` (opened once)."""
    from server_agg.store import Store

    slot = (os.getpid(), path)
    store = _READERS.get(slot)
    if store is None:
        store = _READERS[slot] = Store.open_read_only(path)
    return store


@dataclass(frozen=True)
class StoreRowids:
    """One task: the reports of a store with these rowids, read in this (shuffled) order."""

    path: str
    rowids: tuple[int, ...]

    def read(self) -> list[bytes]:
        """The ciphertexts, through this process's read-only connection to the store."""
        from server_agg.store import StoreError

        try:
            return list(_reader(self.path).read_rowids(self.rowids))
        except StoreError as exc:
            raise AggregateError(str(exc)) from None


@dataclass(frozen=True)
class StoreRange:
    """One task: the reports with ``first <= rowid <= last`` (on ``day``) of one store, in
    arrival order (:class:`StoreSource` hands out :class:`StoreRowids` instead)."""

    path: str
    first: int
    last: int
    day: str | None = None

    def read(self) -> list[bytes]:
        """The range's ciphertexts, through this process's read-only connection to the store."""
        from server_agg.store import Store, StoreError

        slot = (os.getpid(), self.path)
        try:
            store = _READERS.get(slot)
            if store is None:
                store = _READERS[slot] = Store.open_read_only(self.path)
            return list(store.read_range(self.first, self.last, self.day))
        except StoreError as exc:
            raise AggregateError(str(exc)) from None


def parquet_files(directory: Path) -> list[Path]:
    """The Parquet files of an export directory (``day=*/part-*.parquet``), sorted."""
    if directory.is_file():
        return [directory]
    if not directory.is_dir():
        raise AggregateError(f"no Parquet export at {directory} (not a file or directory)")
    files = sorted(p for p in directory.rglob("*.parquet") if p.is_file())
    if not files:
        raise AggregateError(f"no *.parquet files under {directory}")
    return files


def parquet_row_count(path: Path) -> int:
    """Rows in one Parquet file, from its footer (nothing else is read)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise AggregateError(f"cannot read Parquet file {path}: {exc}") from None


def iter_parquet(path: Path, size: int) -> Iterator[list[bytes]]:
    """The ``ciphertext`` column of one file, ``size`` rows at a time (bounded memory)."""
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        if "ciphertext" not in handle.schema_arrow.names:
            raise AggregateError(f"Parquet file {path} has no 'ciphertext' column")
        for batch in handle.iter_batches(batch_size=size, columns=["ciphertext"]):
            yield batch.column(0).to_pylist()
    except (OSError, ValueError) as exc:
        raise AggregateError(f"cannot read Parquet file {path}: {exc}") from None


@dataclass(frozen=True)
class ParquetSource:
    """An export directory of ``day=YYYY-MM-DD/part-NNNNNN.parquet`` files (or one file)."""

    path: Path

    @property
    def description(self) -> str:
        """Shown in reports."""
        return f"parquet {self.path}"

    def files(self) -> list[Path]:
        """The files read, in order."""
        return parquet_files(self.path)

    def total(self) -> int | None:
        """Rows over all files, from the footers."""
        return sum(parquet_row_count(p) for p in self.files())

    def chunks(self, size: int) -> Iterator[list[bytes]]:
        """Every file's ciphertexts, ``size`` per chunk."""
        for path in self.files():
            yield from iter_parquet(path, size)

    def tasks(self, size: int) -> Iterator[ParquetSlice]:
        """Slices of ``size`` rows of each row group, in file order; only footers are read here."""
        import pyarrow.parquet as pq

        for path in self.files():
            try:
                handle = pq.ParquetFile(path)
                if "ciphertext" not in handle.schema_arrow.names:
                    raise AggregateError(f"Parquet file {path} has no 'ciphertext' column")
                meta = handle.metadata
                groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            except (OSError, ValueError) as exc:
                raise AggregateError(f"cannot read Parquet file {path}: {exc}") from None
            for group, rows in enumerate(groups):
                for start in range(0, rows, size):
                    yield ParquetSlice(str(path), group, start, min(start + size, rows))


#: Per process: the row group read last, as ``((pid, path, mtime, row group), ciphertexts)``.
#: Consecutive slices of a row group mostly go to the same few workers, so each worker reads
#: a row group about once; at most one row group per process is held.
_ROW_GROUP: list[tuple[tuple[int, str, int, int], list[bytes]]] = []


@dataclass(frozen=True)
class ParquetSlice:
    """One task: rows ``start`` to ``stop`` (exclusive) of one row group of a Parquet file."""

    path: str
    row_group: int
    start: int
    stop: int

    def read(self) -> list[bytes]:
        """The slice's ciphertexts (the row group is read once per process and kept)."""
        import pyarrow.parquet as pq

        try:
            slot = (os.getpid(), self.path, os.stat(self.path).st_mtime_ns, self.row_group)
            if not _ROW_GROUP or _ROW_GROUP[0][0] != slot:
                _ROW_GROUP.clear()  # free the previous row group before reading the next
                table = pq.ParquetFile(self.path).read_row_group(
                    self.row_group, columns=["ciphertext"]
                )
                _ROW_GROUP.append((slot, table.column(0).to_pylist()))
            return _ROW_GROUP[0][1][self.start : self.stop]
        except (OSError, ValueError, KeyError) as exc:
            raise AggregateError(f"cannot read Parquet file {self.path}: {exc}") from None


# --------------------------------------------------------------------------- local engine

# Set in each worker process by _init_worker; a worker serves one analysis.
_WORKER: dict[str, Any] = {}


def _init_worker(
    key_bytes: bytes,
    schema_texts: tuple[str, ...],
    kind: str | None,
    period: str | None,
    window: PeriodWindow | None = None,
) -> None:
    from ldp.schema import load_schema

    _WORKER["key"] = X25519PrivateKey.from_private_bytes(key_bytes)
    _WORKER["schemas"] = tuple(load_schema(text) for text in schema_texts)
    _WORKER["kind"] = kind
    _WORKER["period"] = period
    _WORKER["window"] = window


def _work(chunk: list[bytes]) -> Counts:
    return count_ciphertexts(
        chunk,
        _WORKER["key"],
        _WORKER["schemas"],
        kind=_WORKER["kind"],
        period=_WORKER["period"],
        window=_WORKER["window"],
    )


def _work_task(task: ReadTask) -> Counts:
    return _work(task.read())


def _private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def _start_method() -> str:
    """``fork`` on Linux in a single-threaded process, else ``forkserver`` where there is one
    (one clean server process, started once, that forks every worker with this module already
    imported), else ``spawn`` (a fresh interpreter and all imports per worker)."""
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    if "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return "spawn"


def count_source(
    source: Source,
    private_key: X25519PrivateKey,
    schemas: Sequence[Schema] | None = None,
    *,
    kind: str | None = None,
    period: str | None = None,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
    on_progress: Callable[[int], None] | None = None,
    window: PeriodWindow | None = None,
) -> Counts:
    """Count every report of ``source``; ``workers > 1`` opens envelopes in that many processes.

    With ``window``, reports dated outside it are rejected as ``implausible_period``.

    With one worker everything runs in this process (no start-up or hand-off cost). Workers
    are forked when that is safe (Linux, and this process has no other thread: a fork copies
    other threads' locks in an unknown state), which starts them in milliseconds; otherwise
    they come from a fork server (or are spawned where there is none). ``on_progress`` gets the
    number of items finished after each chunk.

    Sources that can be split (:class:`SplitSource`: stores and Parquet exports) are not read
    here: this process only lists tasks (rowid ranges, row-group slices) and each worker reads
    its own, so no ciphertext is read, pickled or copied by this process, whose CPU would
    otherwise compete with the workers'. Other sources are read here and handed over in chunks.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise AggregateError(f"workers ({workers!r}) must be an integer in [1, 256]")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise AggregateError(f"chunk size ({chunk_size!r}) must be an integer >= 1")
    schema_list = tuple(schema_map(schemas).values())
    total = Counts()
    if workers == 1:
        for chunk in source.chunks(chunk_size):
            total.add(
                count_ciphertexts(
                    chunk, private_key, schema_list, kind=kind, period=period, window=window
                )
            )
            if on_progress is not None:
                on_progress(len(chunk))
        return total
    method = _start_method()
    init_args = (
        _private_bytes(private_key),
        tuple(s.canonical_json() for s in schema_list),
        kind,
        period,
        window,
    )
    # Forked workers share this process's memory copy-on-write; a garbage collection in a
    # worker would write to every inherited object's header and copy page after page (measured:
    # about a quarter more CPU per report with a big parent). Frozen objects are never scanned.
    # (Left alone if the caller already froze objects: unfreezing is theirs to decide.)
    freeze = method == "fork" and gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # Only takes effect when the server starts (the first time); later calls are no-ops.
            context.set_forkserver_preload(["server_agg.aggregate"])
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=init_args,
        ) as pool:
            submissions: Iterator[Future[Counts]]
            if isinstance(source, SplitSource):
                submissions = (pool.submit(_work_task, t) for t in source.tasks(chunk_size))
            else:
                submissions = (pool.submit(_work, c) for c in source.chunks(chunk_size))
            pending: collections.deque[Future[Counts]] = collections.deque()

            def finish_one() -> None:
                counts = pending.popleft().result()
                total.add(counts)
                if on_progress is not None:
                    on_progress(counts.read)  # every item of a chunk is read and counted once

            for future in submissions:
                pending.append(future)
                # Bounded memory: never more than two chunks per worker in flight.
                while len(pending) >= 2 * workers:
                    finish_one()
            while pending:
                finish_one()
    finally:
        if freeze:
            gc.unfreeze()
    return total


# --------------------------------------------------------------------------- results


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


class _Progress:
    """A rich progress bar on stderr when it is a terminal; nothing at all otherwise.

    Refreshed by hand on each chunk rather than by rich's refresh thread, so that the process
    stays single-threaded and worker processes can be forked.
    """

    def __init__(self, total: int | None, enabled: bool | None) -> None:
        self._bar: Any = None
        self._task: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("reports"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            auto_refresh=False,
        )
        self._task = self._bar.add_task("reports", total=total)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, k: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, k)
            self._bar.refresh()


def aggregate(
    source: Source,
    private_key: X25519PrivateKey,
    *,
    schemas: Sequence[Schema] | None = None,
    kind: str | None = None,
    period: str | None = None,
    consistency: str = "auto",
    confidence: float = 0.95,
    delta: float | None = DEFAULT_DELTA,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool | None = False,
    today: date | None = None,
    screen: bool = True,
    weeks: int | str = 1,
    trends: bool = True,
) -> AggregateResult:
    """Run the local engine end to end; ``progress=None`` shows a bar only on a terminal.

    Reports dated outside [their schema's release, the week after ``today``'s] are rejected
    as ``implausible_period`` (``today``: UTC today when ``None``). ``weeks > 1`` pools the
    ``weeks`` ISO weeks ending at ``period``, ``"auto"`` a window chosen per kind from the data
    (:mod:`server_agg.weeks`); ``trends`` adds each kind's estimates week by week (or window by
    window).
    """
    check_filters(kind, period, schemas)
    check_weeks(weeks, period)
    window = plausible_periods(schema_map(schemas).values(), today)
    started = time.perf_counter()
    total = source.total() if progress is not False else None
    with _Progress(total, progress) as bar:
        counts = count_source(
            source,
            private_key,
            schemas,
            kind=kind,
            period=period if weeks == 1 else None,
            workers=workers,
            chunk_size=chunk_size,
            on_progress=bar.advance,
            window=window,
        )
    filters = {k: v for k, v in (("kind", kind), ("period", period)) if v is not None}
    return finish(
        counts,
        schemas,
        period=period,
        weeks=weeks,
        consistency=consistency,
        confidence=confidence,
        delta=delta,
        source=source.description,
        engine="local",
        workers=workers,
        seconds=time.perf_counter() - started,
        filters=filters,
        screen=screen,
        trends=trends,
    )
