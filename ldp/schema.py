"""What a report may contain: fields, their domains and epsilons, and the client's epsilon caps.

A schema is data (``ldp/data/schema-v1.json`` ships with the client) so that client, collector
and analyzer agree on one document, named by its id: the first 16 hex digits of SHA-256 of its
canonical JSON. The caps in :data:`EPSILON_CAPS` are pinned in the client: no schema, wherever it
comes from, may ask for more, and one that does is refused, never clipped. Nothing here
randomizes or sends anything; the accuracy each shipped field gets is tabulated (and kept true
by a test) in ``docs/SCHEMA.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

from ldp.errors import ParameterError, SchemaError

if TYPE_CHECKING:
    from ldp.longitudinal import FieldRandomizer

__all__ = [
    "EPSILON_CAPS",
    "FIELD_KINDS",
    "MAX_DOMAIN",
    "MAX_FIELDS",
    "MAX_PAD",
    "MECHANISMS",
    "OTHER",
    "EpsilonCaps",
    "FieldSpec",
    "ReportKind",
    "Schema",
    "canonical_dumps",
    "load_schema",
    "shipped_schema",
]

OTHER: Final = "other"
FIELD_KINDS: Final = ("categorical", "set")
MECHANISMS: Final = ("auto", "grr", "sue", "oue", "olh", "ss")

# Size limits chosen so that the largest legal report (MAX_FIELDS fields, each a Subset
# Selection list over MAX_DOMAIN + MAX_PAD items) still fits the wire format's 4 KiB.
MAX_DOMAIN: Final = 64
MAX_PAD: Final = 16
MAX_FIELDS: Final = 12
MAX_KINDS: Final = 8
MAX_DOC: Final = 1000
MAX_SCHEMA_BYTES: Final = 64 * 1024

# Names travel in every report, so they are short, lowercase ASCII identifiers; domain values
# never travel (reports carry indices) but are kept to a tame alphabet all the same.
_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,31}", re.ASCII)
_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,31}", re.ASCII)
# Absorbs binary rounding in sums of decimal epsilons (0.1 + 0.2 + ...), nothing more.
_SUM_SLACK = Fraction(1, 10**9)


@dataclass(frozen=True)
class EpsilonCaps:
    """Upper bounds on epsilon that the client enforces on every schema it loads.

    ``epsilon_perm`` bounds each field's permanent (lifetime, per value) epsilon;
    ``report_epsilon_1`` bounds the sum of the per-report epsilons of one report kind
    (sequential composition). Each field's ``epsilon_1`` is also below its own
    ``epsilon_perm``: one report is a post-processing of the permanent response, and the gap
    is the instantaneous noise that keeps reports from being linked across periods.
    """

    epsilon_perm: float = 4.0
    report_epsilon_1: float = 4.0


#: The client's caps. RAPPOR as deployed in Chrome used a permanent epsilon of about 4.4.
EPSILON_CAPS: Final = EpsilonCaps()


def canonical_dumps(obj: object) -> str:
    """JSON with sorted keys, no spaces, ASCII only, no NaN: one text per value."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _fail(message: str) -> NoReturn:
    raise SchemaError(message)


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        _fail(f"{what} ({name!r}) must match {_NAME.pattern} (lowercase ASCII, at most 32 chars)")
    return name


def _check_epsilon(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"{what} ({value!r}) must be a number")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        _fail(f"{what} ({value!r}) must be finite and > 0")
    return value


def _check_doc(doc: object, what: str) -> str:
    if not isinstance(doc, str) or len(doc) > MAX_DOC:
        _fail(f"{what} doc must be a string of at most {MAX_DOC} characters")
    return doc


@dataclass(frozen=True)
class FieldSpec:
    """One field of a report kind: its domain, its epsilons and how it is randomized.

    ``kind`` is ``"categorical"`` (one value, the domain ends with the ``"other"`` bucket) or
    ``"set"`` (a subset of the domain, padded and sampled to ``pad`` items; unknown items are
    dropped, so a set domain has no ``"other"``). ``mechanism`` names the base frequency oracle;
    ``"auto"`` lets :mod:`ldp.longitudinal` pick the smallest variance, which ties the wire
    format to the library version, so shipped schemas name their mechanism explicitly.
    """

    name: str
    kind: Literal["categorical", "set"]
    domain: tuple[str, ...]
    epsilon_perm: float
    epsilon_1: float
    mechanism: str = "auto"
    pad: int | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        name = _check_name(self.name, "field name")
        where = f"field {name!r}"
        if self.kind not in FIELD_KINDS:
            _fail(f"{where}: kind ({self.kind!r}) must be one of {', '.join(FIELD_KINDS)}")
        if self.mechanism not in MECHANISMS:
            _fail(f"{where}: mechanism ({self.mechanism!r}) must be one of {', '.join(MECHANISMS)}")
        if not isinstance(self.domain, tuple):
            _fail(f"{where}: domain must be a tuple of strings")
        for value in self.domain:
            if not isinstance(value, str) or not _VALUE.fullmatch(value):
                _fail(f"{where}: domain value {value!r} must match {_VALUE.pattern}")
        if len(set(self.domain)) != len(self.domain):
            dupes = sorted({v for v in self.domain if self.domain.count(v) > 1})
            _fail(f"{where}: domain values must be unique; repeated: {', '.join(dupes)}")
        if not 2 <= len(self.domain) <= MAX_DOMAIN:
            _fail(f"{where}: domain size ({len(self.domain)}) must be in [2, {MAX_DOMAIN}]")
        if self.kind == "categorical":
            if self.domain[-1] != OTHER:
                _fail(f"{where}: a categorical domain must end with {OTHER!r}")
            if self.pad is not None:
                _fail(f"{where}: pad ({self.pad!r}) is only for set fields")
        else:
            if OTHER in self.domain:
                _fail(f"{where}: a set domain has no {OTHER!r} bucket (unknown items are dropped)")
            if isinstance(self.pad, bool) or not isinstance(self.pad, int):
                _fail(f"{where}: a set field needs an integer pad, got {self.pad!r}")
            if not 1 <= self.pad <= MAX_PAD:
                _fail(f"{where}: pad ({self.pad}) must be in [1, {MAX_PAD}]")
        perm = _check_epsilon(self.epsilon_perm, f"{where}: epsilon_perm")
        one = _check_epsilon(self.epsilon_1, f"{where}: epsilon_1")
        _check_doc(self.doc, where)
        if perm > EPSILON_CAPS.epsilon_perm:
            _fail(
                f"{where}: epsilon_perm ({perm}) exceeds the client cap {EPSILON_CAPS.epsilon_perm}"
            )
        if one >= perm:
            # Equal epsilons would leave no instantaneous noise: every report would repeat the
            # memoized response and link the user's reports across periods.
            _fail(f"{where}: epsilon_1 ({one}) must be below its epsilon_perm ({perm})")
        # Store plain floats so that equal schemas have equal canonical JSON (1 and 1.0).
        object.__setattr__(self, "epsilon_perm", perm)
        object.__setattr__(self, "epsilon_1", one)

    @property
    def d(self) -> int:
        """Number of values the analyzer estimates (the domain size)."""
        return len(self.domain)

    def randomizer(self) -> FieldRandomizer:
        """The field randomizer for this spec (built once per distinct parameter set)."""
        return _randomizer(
            self.kind, self.d, self.pad, self.epsilon_perm, self.epsilon_1, self.mechanism
        )

    def index(self, value: object) -> int:
        """Index of a categorical value; anything not in the domain is the ``"other"`` bucket."""
        if self.kind != "categorical":
            raise ParameterError(f"field {self.name!r} is a set field; use indices()")
        if isinstance(value, str):
            try:
                return self.domain.index(value)
            except ValueError:
                pass
        return len(self.domain) - 1

    def indices(self, values: Iterable[object]) -> frozenset[int]:
        """Indices of the known items of a set value; unknown items are dropped."""
        if self.kind != "set":
            raise ParameterError(f"field {self.name!r} is categorical; use index()")
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise ParameterError(
                f"field {self.name!r} takes a collection of strings, not {type(values).__name__}"
            )
        positions = {v: i for i, v in enumerate(self.domain)}
        return frozenset(positions[v] for v in values if isinstance(v, str) and v in positions)

    def to_json(self) -> dict[str, Any]:
        """The field as it appears in the schema document."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "domain": list(self.domain),
            "epsilon_perm": self.epsilon_perm,
            "epsilon_1": self.epsilon_1,
            "mechanism": self.mechanism,
        }
        if self.pad is not None:
            out["pad"] = self.pad
        if self.doc:
            out["doc"] = self.doc
        return out


@functools.cache
def _randomizer(
    kind: str, d: int, pad: int | None, epsilon_perm: float, epsilon_1: float, mechanism: str
) -> FieldRandomizer:
    # Imported here: the randomizers pull in the mechanisms, which a schema that is only being
    # parsed or displayed does not need.
    from ldp.longitudinal import longitudinal
    from ldp.sets import SetOracle

    if kind == "set":
        assert pad is not None  # FieldSpec guarantees it
        return SetOracle(d, pad, epsilon_perm, epsilon_1, mechanism=mechanism)
    return longitudinal(mechanism, d, epsilon_perm, epsilon_1)


@dataclass(frozen=True)
class ReportKind:
    """A kind of report (``usage``, ``errors``): the fields one report of it carries."""

    name: str
    fields: tuple[FieldSpec, ...]
    doc: str = ""

    def __post_init__(self) -> None:
        name = _check_name(self.name, "report kind name")
        if not isinstance(self.fields, tuple) or not all(
            isinstance(f, FieldSpec) for f in self.fields
        ):
            _fail(f"kind {name!r}: fields must be a tuple of FieldSpec")
        if not 1 <= len(self.fields) <= MAX_FIELDS:
            _fail(
                f"kind {name!r}: number of fields ({len(self.fields)}) must be in [1, {MAX_FIELDS}]"
            )
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            _fail(f"kind {name!r}: field names must be unique")
        _check_doc(self.doc, f"kind {name!r}")
        total = sum((Fraction(f.epsilon_1) for f in self.fields), Fraction(0))
        if total > Fraction(EPSILON_CAPS.report_epsilon_1) + _SUM_SLACK:
            _fail(
                f"kind {name!r}: per-report epsilon (sum of epsilon_1 over fields, "
                f"{float(total):g}) exceeds the client cap {EPSILON_CAPS.report_epsilon_1}"
            )

    @property
    def field_names(self) -> tuple[str, ...]:
        """Field names in schema order."""
        return tuple(f.name for f in self.fields)

    @property
    def epsilon_1(self) -> float:
        """Requested per-report epsilon: the sum of the fields' ``epsilon_1``."""
        return math.fsum(f.epsilon_1 for f in self.fields)

    def field(self, name: str) -> FieldSpec:
        """The field called ``name``; :class:`ParameterError` lists the fields if none is."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise ParameterError(
            f"kind {self.name!r} has no field {name!r} (fields: {', '.join(self.field_names)})"
        )

    def to_json(self) -> dict[str, Any]:
        """The kind as it appears in the schema document."""
        out: dict[str, Any] = {"name": self.name, "fields": [f.to_json() for f in self.fields]}
        if self.doc:
            out["doc"] = self.doc
        return out


@dataclass(frozen=True)
class Schema:
    """A versioned set of report kinds; ``schema.id`` names it on the wire."""

    name: str
    version: int
    kinds: tuple[ReportKind, ...]
    doc: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "schema name")
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            _fail(f"schema version ({self.version!r}) must be an integer")
        if not 1 <= self.version <= 1_000_000:
            _fail(f"schema version ({self.version}) must be in [1, 1000000]")
        if not isinstance(self.kinds, tuple) or not all(
            isinstance(k, ReportKind) for k in self.kinds
        ):
            _fail("schema kinds must be a tuple of ReportKind")
        if not 1 <= len(self.kinds) <= MAX_KINDS:
            _fail(f"number of report kinds ({len(self.kinds)}) must be in [1, {MAX_KINDS}]")
        kind_names = [k.name for k in self.kinds]
        if len(set(kind_names)) != len(kind_names):
            _fail("report kind names must be unique")
        # One name, one meaning: a field name is the label its permanent responses are
        # memoized under, so two kinds must not reuse it for different things.
        seen: dict[str, str] = {}
        for kind in self.kinds:
            for spec in kind.fields:
                if spec.name in seen:
                    _fail(
                        f"field {spec.name!r} appears in kinds {seen[spec.name]!r} and "
                        f"{kind.name!r}; field names must be unique across the schema"
                    )
                seen[spec.name] = kind.name
        _check_doc(self.doc, "schema")

    @property
    def kind_names(self) -> tuple[str, ...]:
        """Report kind names in schema order."""
        return tuple(k.name for k in self.kinds)

    def kind(self, name: str) -> ReportKind:
        """The report kind called ``name``; :class:`ParameterError` lists the kinds if none is."""
        for kind in self.kinds:
            if kind.name == name:
                return kind
        raise ParameterError(
            f"schema {self.name!r} v{self.version} has no report kind {name!r} "
            f"(kinds: {', '.join(self.kind_names)})"
        )

    def to_json(self) -> dict[str, Any]:
        """The schema document as plain JSON values."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "kinds": [k.to_json() for k in self.kinds],
        }
        if self.doc:
            out["doc"] = self.doc
        return out

    def canonical_json(self) -> str:
        """The one canonical text of this schema (sorted keys, compact, ASCII)."""
        return canonical_dumps(self.to_json())

    @functools.cached_property
    def id(self) -> str:
        """First 16 hex digits of SHA-256 of the canonical JSON: the schema's name on the wire."""
        return hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()[:16]


# --- loading -------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            _fail(f"duplicate key {key!r} in schema JSON")
        out[key] = value
    return out


def _no_constant(token: str) -> NoReturn:
    _fail(f"{token} is not allowed in schema JSON")


def _object(
    obj: object, where: str, required: Collection[str], optional: Collection[str]
) -> dict[str, Any]:
    if not isinstance(obj, dict):
        _fail(f"{where} must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join(sorted([*required, *optional]))
        _fail(f"{where}: unknown key {unknown[0]!r} (allowed: {allowed})")
    missing = sorted(set(required) - set(obj))
    if missing:
        _fail(f"{where}: missing key {missing[0]!r}")
    return obj


def _list(obj: object, where: str) -> list[Any]:
    if not isinstance(obj, list):
        _fail(f"{where} must be a JSON array, got {type(obj).__name__}")
    return obj


def _field_from_json(obj: object, where: str) -> FieldSpec:
    raw = _object(
        obj,
        where,
        required=("name", "kind", "domain", "epsilon_perm", "epsilon_1", "mechanism"),
        optional=("pad", "doc"),
    )
    domain = _list(raw["domain"], f"{where}.domain")
    return FieldSpec(
        name=raw["name"],
        kind=raw["kind"],
        domain=tuple(domain),
        epsilon_perm=raw["epsilon_perm"],
        epsilon_1=raw["epsilon_1"],
        mechanism=raw["mechanism"],
        pad=raw.get("pad"),
        doc=raw.get("doc", ""),
    )


def _kind_from_json(obj: object, where: str) -> ReportKind:
    raw = _object(obj, where, required=("name", "fields"), optional=("doc",))
    fields = _list(raw["fields"], f"{where}.fields")
    return ReportKind(
        name=raw["name"],
        fields=tuple(_field_from_json(f, f"{where}.fields[{i}]") for i, f in enumerate(fields)),
        doc=raw.get("doc", ""),
    )


def load_schema(text: str | bytes) -> Schema:
    """Parse and validate a schema document; :class:`SchemaError` says what is wrong and where.

    Strict on purpose: unknown or duplicate keys, wrong types, NaN, epsilons over
    :data:`EPSILON_CAPS` and parameters that no randomizer accepts are all refused.
    """
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_SCHEMA_BYTES:
            _fail(f"schema is {len(text)} bytes, at most {MAX_SCHEMA_BYTES} allowed")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            _fail("schema is not valid UTF-8")
    if not isinstance(text, str):
        _fail(f"schema must be str or bytes, not {type(text).__name__}")
    if len(text) > MAX_SCHEMA_BYTES:
        _fail(f"schema is {len(text)} characters, at most {MAX_SCHEMA_BYTES} allowed")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except SchemaError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit, deep nesting
        _fail(f"schema is not valid JSON: {exc}")
    raw = _object(obj, "schema", required=("name", "version", "kinds"), optional=("doc",))
    kinds = _list(raw["kinds"], "schema.kinds")
    schema = Schema(
        name=raw["name"],
        version=raw["version"],
        kinds=tuple(_kind_from_json(k, f"schema.kinds[{i}]") for i, k in enumerate(kinds)),
        doc=raw.get("doc", ""),
    )
    for kind in schema.kinds:
        for spec in kind.fields:
            try:
                spec.randomizer()
            except ParameterError as exc:
                _fail(f"field {spec.name!r}: no randomizer accepts these parameters: {exc}")
    return schema


@functools.cache
def shipped_schema() -> Schema:
    """The 20i v1 schema that ships with the client (``ldp/data/schema-v1.json``)."""
    text = resources.files("ldp").joinpath("data", "schema-v1.json").read_text(encoding="utf-8")
    return load_schema(text)
