"""The plaintext report: build it from true values, encode it canonically, decode it strictly.

``build_report`` is the only place where true values meet the randomizers, and what it returns
holds randomizer outputs only: integers and lists of integers under the schema's own names.
A true value, or any string the user's machine supplied, never reaches a report.
``decode_report`` accepts exactly what ``Report.encode`` produces and refuses everything else
with a typed :class:`~ldp.errors.DecodeError`, so the analyzer can count and skip bad input.
What gets sealed is :meth:`Report.padded`: the report followed by spaces up to exactly
:data:`PADDED_BYTES`, so that every sealed report of every kind and schema has one length and
the length of a ciphertext says nothing about what it holds (:func:`unpad` is the strict
inverse).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeAlias

from ldp.envelope import MIN_SEALED_LEN
from ldp.errors import (
    DecodeError,
    MissingFieldError,
    OutOfRangeError,
    PaddingError,
    ParameterError,
    TooLargeError,
    UnknownFieldError,
    UnknownSchemaError,
    WrongTypeError,
)
from ldp.sampling import SYSTEM, RandomSource
from ldp.schema import FieldSpec, Schema, canonical_dumps

if TYPE_CHECKING:
    from ldp.epochs import EpochMemo

__all__ = [
    "FORMAT_VERSION",
    "MAX_REPORT_BYTES",
    "PADDED_BYTES",
    "REPORT_KEYS",
    "SEALED_BYTES",
    "UNPADDED_SCHEMA_VERSIONS",
    "Report",
    "Wire",
    "build_report",
    "decode_plaintext",
    "decode_report",
    "iso_period",
    "longest_report",
    "pad",
    "parse_period",
    "period_start",
    "unpad",
]

FORMAT_VERSION: Final = 1
MAX_REPORT_BYTES: Final = 4096
#: The top-level keys of a report, in canonical (sorted) order.
REPORT_KEYS: Final = ("fields", "kind", "period", "schema", "v")
SECRET_BYTES: Final = 32
#: Every plaintext is padded to exactly this many bytes before it is sealed (DESIGN section 4).
#: The longest report of the shipped schemas is under 200 bytes (every field a Subset
#: Selection list of one- or two-digit indices); 512 leaves room for schemas with more or
#: larger fields, and a report that does not fit cannot be sent (``TooLargeError``).
PADDED_BYTES: Final = 512
#: The one length of a sealed report: the padded plaintext plus HPKE's 32-byte encapsulated
#: key and 16-byte tag.
SEALED_BYTES: Final = PADDED_BYTES + MIN_SEALED_LEN
#: Schema versions whose reports went out unpadded (release 0.1.0 shipped v1): reports of
#: these that are already stored are still read unpadded; from version 2 on, every report is
#: padded, and an unpadded one is refused (``PaddingError``).
UNPADDED_SCHEMA_VERSIONS: Final = frozenset({1})
_PAD: Final = b" "

#: A field's value on the wire: an index or bitmask, or a list of integers (OLH, SS).
Wire: TypeAlias = int | list[int]

_PERIOD = re.compile(r"(\d{4})-W(\d{2})", re.ASCII)
_SCHEMA_ID = re.compile(r"[0-9a-f]{16}", re.ASCII)


def _show(value: object, limit: int = 40) -> str:
    """A short repr for error messages (decoded input can be up to 4 KiB)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- periods -------------------------------------------------------------------------------


def iso_period(when: datetime | None = None) -> str:
    """The ISO week of ``when`` (default: now) in UTC, as ``"2026-W48"``.

    ``when`` must carry a time zone: a naive datetime is ambiguous, and a week boundary
    guessed in local time would put reports in the wrong period.
    """
    if when is None:
        when = datetime.now(UTC)
    if when.tzinfo is None or when.utcoffset() is None:
        raise ParameterError(f"period time ({when.isoformat()}) must be timezone-aware")
    year, week, _ = when.astimezone(UTC).isocalendar()
    return f"{year:04d}-W{week:02d}"


def parse_period(period: object) -> tuple[int, int]:
    """``"2026-W48"`` -> ``(2026, 48)``; :class:`OutOfRangeError` unless it is a real ISO week."""
    if not isinstance(period, str):
        raise WrongTypeError(f"period must be a string, not {type(period).__name__}")
    match = _PERIOD.fullmatch(period)
    if match is None:
        raise OutOfRangeError(f"period ({_show(period)}) must look like 2026-W48")
    year, week = int(match[1]), int(match[2])
    try:
        date.fromisocalendar(year, week, 1)
    except ValueError:
        raise OutOfRangeError(f"period ({period}) is not an ISO week of year {year}") from None
    return year, week


def period_start(period: str) -> datetime:
    """Monday 00:00 UTC of the ISO week ``period``."""
    year, week = parse_period(period)
    monday = date.fromisocalendar(year, week, 1)
    return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """One plaintext report: randomized field values under a schema id, kind and period."""

    schema_id: str
    kind: str
    period: str
    fields: Mapping[str, Wire]
    v: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The report as the JSON object of the wire format."""
        return {
            "fields": dict(self.fields),
            "kind": self.kind,
            "period": self.period,
            "schema": self.schema_id,
            "v": self.v,
        }

    def encode(self) -> bytes:
        """Canonical JSON bytes (sorted keys, compact, ASCII); :class:`TooLargeError` over 4 KiB."""
        data = canonical_dumps(self.to_json()).encode("ascii")
        if len(data) > MAX_REPORT_BYTES:
            raise TooLargeError(f"report is {len(data)} bytes, at most {MAX_REPORT_BYTES}")
        return data

    def padded(self) -> bytes:
        """What is sealed: :meth:`encode` padded with spaces to :data:`PADDED_BYTES`."""
        return pad(self.encode())


def pad(report: bytes) -> bytes:
    """``report`` followed by spaces up to exactly :data:`PADDED_BYTES` bytes.

    Spaces, because JSON ignores whitespace after a value, so the padded plaintext is still
    one JSON document, and because a canonical report never ends in a space, so the padding
    is unambiguous. :class:`TooLargeError` if the report does not fit: a longer plaintext
    would give its sender away by its length.
    """
    if len(report) > PADDED_BYTES:
        raise TooLargeError(f"report is {len(report)} bytes; the padded length is {PADDED_BYTES}")
    if report.endswith(_PAD):
        raise ParameterError("a report to pad must not end with a space")
    return report + _PAD * (PADDED_BYTES - len(report))


def unpad(data: bytes) -> bytes:
    """The report inside a padded plaintext; :class:`PaddingError` unless ``data`` is exactly
    :data:`PADDED_BYTES` bytes of a report (ending in ``}``) followed only by spaces.

    Whether the report itself is legal and canonical is :func:`decode_report`'s question.
    """
    if len(data) != PADDED_BYTES:
        raise PaddingError(f"padded report is {len(data)} bytes, must be {PADDED_BYTES}")
    report = bytes(data).rstrip(_PAD)
    if not report.endswith(b"}"):
        raise PaddingError("padding must be spaces after the report's closing brace")
    return report


def _check_wire_shape(name: str, wire: object) -> Wire:
    """An int or a flat list of ints, nothing else: no bools, floats, strings or nesting."""
    if isinstance(wire, int) and not isinstance(wire, bool):
        return wire
    if isinstance(wire, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in wire):
        return wire
    raise WrongTypeError(
        f"field {name!r}: value ({_show(wire)}) must be an integer or a list of integers"
    )


def _true_input(spec: FieldSpec, true_value: object) -> int | frozenset[int]:
    """The randomizer input of one field: a domain index, or the set's item indices."""
    if spec.kind == "categorical":
        if not isinstance(true_value, str):
            raise ParameterError(
                f"field {spec.name!r} takes a string, not {type(true_value).__name__}"
            )
        return spec.index(true_value)
    if not isinstance(true_value, Collection):
        raise ParameterError(
            f"field {spec.name!r} takes a collection of strings, not {type(true_value).__name__}"
        )
    return spec.indices(true_value)


def _expired_input(spec: FieldSpec) -> int | frozenset[int]:
    """What an expired field reports: a constant (``other`` or the empty set), so its reports
    carry nothing about the user while the report keeps its shape."""
    return len(spec.domain) - 1 if spec.kind == "categorical" else frozenset()


def epoch_responses(
    schema: Schema,
    kind: str,
    period: str,
    values: Mapping[str, object],
    secret: bytes,
    memo: EpochMemo | None = None,
    include_expired: bool = False,
) -> dict[str, tuple[int, Any]]:
    """Each epoch field's (epoch, frozen response) for a report of ``kind`` in ``period``.

    The response frozen in ``memo`` for the current epoch wins (a damaged one raises
    ``DecodeError``: the report stops rather than draw twice in one epoch); otherwise it is
    drawn from the secret, the field, the epoch and this week's value, so every process draws
    the same one. The client always passes its memo; without one (simulations, examples with a
    throwaway secret) a value that changes inside an epoch would draw again.
    An expired field's input is a constant (``other``, or the empty set): its response costs
    nothing and behaves like any other field's; it is left out unless ``include_expired``, so
    that it is never recorded as spend.
    """
    from ldp.epochs import epoch_index, epoch_offset, week_index

    report_kind = schema.kind(kind)
    week = week_index(period)
    monday = period_start(period).date()
    out: dict[str, tuple[int, Any]] = {}
    for spec in report_kind.fields:
        if spec.epoch_weeks is None:
            continue
        offset = epoch_offset(secret, spec.name, spec.epoch_weeks)
        epoch = epoch_index(week, offset, spec.epoch_weeks)
        randomizer = spec.randomizer()
        if spec.expired(monday):
            if include_expired:
                constant = randomizer.epoch_response(_expired_input(spec), secret, spec.name, epoch)
                out[spec.name] = (epoch, constant)
            continue
        frozen = None if memo is None else memo.frozen(spec.name, epoch)
        if frozen is not None:
            # A damaged entry is never redrawn: the value may have changed since the epoch's
            # first report, and a second draw in one epoch would break the yearly bound.
            randomizer.validate(frozen)
        if frozen is None:
            if spec.name not in values:
                raise ParameterError(f"no value for field {spec.name!r} of kind {kind!r}")
            frozen = randomizer.epoch_response(
                _true_input(spec, values[spec.name]), secret, spec.name, epoch
            )
        out[spec.name] = (epoch, frozen)
    return out


def build_report(
    schema: Schema,
    kind: str,
    period: str,
    values: Mapping[str, object],
    secret: bytes,
    rand: RandomSource = SYSTEM,
    memo: EpochMemo | None = None,
) -> Report:
    """Randomize every field of ``kind`` and return the report that may leave the machine.

    ``values`` maps each field name to its true value: a string for a categorical field
    (unknown strings count as ``"other"``) or a collection of strings for a set field
    (unknown items are dropped). ``secret`` is the local key of the permanent responses.
    Fields with epochs (schema v2) report their epoch's frozen response (``memo``, else drawn;
    see :func:`epoch_responses`; recording it is the caller's step, after the report is kept);
    fields without (v1) their value's memoized one. The true values are used only as
    randomizer inputs and never stored.
    """
    report_kind = schema.kind(kind)
    try:
        parse_period(period)
    except DecodeError as exc:
        raise ParameterError(str(exc)) from None
    if not isinstance(secret, bytes) or len(secret) < SECRET_BYTES:
        raise ParameterError(f"secret must be at least {SECRET_BYTES} bytes")
    unknown = [name for name in values if name not in report_kind.field_names]
    if unknown:
        raise ParameterError(
            f"kind {kind!r} has no field {_show(unknown[0])} "
            f"(fields: {', '.join(report_kind.field_names)})"
        )
    for spec in report_kind.fields:
        if spec.name not in values:
            raise ParameterError(f"no value for field {spec.name!r} of kind {kind!r}")
    frozen = epoch_responses(schema, kind, period, values, secret, memo, include_expired=True)
    monday = period_start(period).date()
    fields: dict[str, Wire] = {}
    for spec in report_kind.fields:
        randomizer = spec.randomizer()
        if spec.name in frozen:
            wire = randomizer.instantaneous(frozen[spec.name][1], rand)
        else:
            expired = spec.expired(monday)
            x = _expired_input(spec) if expired else _true_input(spec, values[spec.name])
            wire = randomizer.privatize(x, secret, spec.name, rand)
        if isinstance(wire, tuple):
            wire = list(wire)
        # Belt and braces: what leaves the machine is a legal output of this field, and by
        # its shape cannot carry a string.
        fields[spec.name] = _check_wire_shape(spec.name, wire)
        randomizer.validate(fields[spec.name])
    report = Report(schema_id=schema.id, kind=kind, period=period, fields=fields)
    report.padded()  # raises TooLargeError rather than hand out a report nobody will accept
    return report


# --- strict decoding -----------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DecodeError(f"duplicate key {_show(key)} in report")
        out[key] = value
    return out


def _no_float(token: str) -> NoReturn:
    raise WrongTypeError(f"number {_show(token)} is not an integer; reports hold integers only")


def _exact_keys(obj: dict[str, Any], allowed: Collection[str], where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise UnknownFieldError(
            f"{where}: unknown key {_show(unknown[0])} (allowed: {', '.join(sorted(allowed))})"
        )
    missing = sorted(set(allowed) - set(obj))
    if missing:
        raise MissingFieldError(f"{where}: missing key {missing[0]!r}")


def _string(obj: dict[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise WrongTypeError(f"report {key!r} must be a string, not {type(value).__name__}")
    return value


def decode_report(data: bytes, schemas: Mapping[str, Schema]) -> Report:
    """Parse and validate one plaintext report against the schemas known by id.

    Accepts exactly the canonical bytes :meth:`Report.encode` produces for a legal report;
    anything else raises a :class:`~ldp.errors.DecodeError` subclass saying what is wrong.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WrongTypeError(f"report must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_REPORT_BYTES:
        raise TooLargeError(f"report is {len(data)} bytes, at most {MAX_REPORT_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("report is not valid UTF-8") from None
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_constant=_no_float,
        )
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit, deep nesting
        raise DecodeError(f"report is not valid JSON: {_show(str(exc), 80)}") from None
    if not isinstance(obj, dict):
        raise WrongTypeError(f"report must be a JSON object, not {type(obj).__name__}")
    _exact_keys(obj, REPORT_KEYS, "report")

    version = obj["v"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise WrongTypeError(f"report 'v' must be an integer, not {type(version).__name__}")
    if version != FORMAT_VERSION:
        raise OutOfRangeError(f"report format version ({version}) must be {FORMAT_VERSION}")

    schema_id = _string(obj, "schema")
    schema = schemas.get(schema_id) if _SCHEMA_ID.fullmatch(schema_id) else None
    if schema is None:
        raise UnknownSchemaError(f"unknown schema id {_show(schema_id)}")

    kind_name = _string(obj, "kind")
    if kind_name not in schema.kind_names:
        raise OutOfRangeError(
            f"report kind ({_show(kind_name)}) must be one of {', '.join(schema.kind_names)}"
        )
    report_kind = schema.kind(kind_name)
    period = _string(obj, "period")
    parse_period(period)

    fields = obj["fields"]
    if not isinstance(fields, dict):
        raise WrongTypeError(f"report 'fields' must be an object, not {type(fields).__name__}")
    _exact_keys(fields, report_kind.field_names, f"fields of kind {kind_name!r}")
    checked: dict[str, Wire] = {}
    for spec in report_kind.fields:
        wire = _check_wire_shape(spec.name, fields[spec.name])
        spec.randomizer().validate(wire)
        checked[spec.name] = wire

    report = Report(schema_id=schema_id, kind=kind_name, period=period, fields=checked)
    # One report, one byte string: no whitespace, key order or escaping variants.
    if report.encode() != data:
        raise DecodeError("report is not in canonical form (sorted keys, compact, ASCII)")
    return report


def decode_plaintext(data: bytes, schemas: Mapping[str, Schema]) -> Report:
    """Decode an opened envelope: a padded report, or an unpadded one of a legacy schema.

    A plaintext of :data:`PADDED_BYTES`, or one that ends in a space, must be padded exactly
    (:func:`unpad`); any other is an unpadded report, accepted only if its schema's version is
    in :data:`UNPADDED_SCHEMA_VERSIONS` (reports sent before padding). Everything else raises
    the :class:`~ldp.errors.DecodeError` subclass that says why.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WrongTypeError(f"report must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) == PADDED_BYTES or data.endswith(_PAD):
        return decode_report(unpad(data), schemas)
    report = decode_report(data, schemas)
    version = schemas[report.schema_id].version
    if version not in UNPADDED_SCHEMA_VERSIONS:
        raise PaddingError(
            f"reports of schema version {version} must be padded to {PADDED_BYTES} bytes"
        )
    return report


def _longest_wire(randomizer: Any) -> Wire:
    """The wire value with the most characters a field's randomizer can send: every index,
    bitmask or seed at its largest (a set field sends its inner oracle's wire)."""
    from ldp.mechanisms import OLH_SEEDS

    base = getattr(randomizer, "base", None) or randomizer.oracle.base
    name, d = str(base.name), int(base.d)
    if name == "grr":
        return d - 1
    if name in ("sue", "oue"):
        return (1 << d) - 1
    if name == "olh":
        return [OLH_SEEDS - 1, int(base.g) - 1]
    if name == "ss":
        return list(range(d - int(base.k), d))
    raise ParameterError(f"no longest wire value known for mechanism {name!r}")


def longest_report(schema: Schema, kind: str) -> int:
    """Bytes of the longest report of ``kind`` that ``schema`` allows (every field's longest
    wire value, the longest period): it must fit :data:`PADDED_BYTES`, or that kind could never
    be sent. Over :data:`MAX_REPORT_BYTES` counts as ``MAX_REPORT_BYTES + 1``."""
    fields = {spec.name: _longest_wire(spec.randomizer()) for spec in schema.kind(kind).fields}
    try:
        return len(Report(schema.id, kind, "9999-W52", fields).encode())
    except TooLargeError:
        return MAX_REPORT_BYTES + 1
