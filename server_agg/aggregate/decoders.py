"""The two ways a plaintext report is read: the fast byte-pattern parsers and the strict path.

:func:`_fast_parse` (one report) and :class:`_ChunkPattern` (a whole chunk in one regular
expression pass) recognise legal canonical reports and validate each distinct field value
once; anything they do not recognise goes to the strict decoder (``ldp.report.decode_report``,
called by :mod:`server_agg.aggregate.counting`), whose result :func:`_slow_parse` turns into
the same shape. Decrypted bytes are only parsed here, never stored or logged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ldp.errors import DecodeError
from ldp.report import MAX_REPORT_BYTES, PADDED_BYTES, UNPADDED_SCHEMA_VERSIONS, parse_period
from ldp.schema import Schema, canonical_dumps
from server_agg.aggregate.counts import GroupKey

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
