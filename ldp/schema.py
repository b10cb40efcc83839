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
from datetime import date, timedelta
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
    "SCHEMA_FILES",
    "EpsilonCaps",
    "FieldSpec",
    "ReportKind",
    "Schema",
    "canonical_dumps",
    "collects_more",
    "known_schemas",
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

    ``epsilon_perm`` bounds each field's permanent response (per epoch in schema v2, per
    value in v1); ``week_epsilon`` bounds what one user-week of reports of *every* kind can
    cost together (the sum of ``epsilon_1`` over all fields of all kinds: a user with both
    consents sends one report of each); ``year_epsilon`` bounds the proven loss of all reports
    in any 52 weeks (:meth:`Schema.year_bound`), which only epoch fields have: a schema without
    epochs has no finite yearly bound, and the client refuses to send under it. Each field's
    ``epsilon_1`` is at most its ``epsilon_perm`` (strictly below without epochs).
    """

    epsilon_perm: float = 4.0
    week_epsilon: float = 5.5
    year_epsilon: float = 20.0


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
    #: Schema v2: the epoch length R in weeks (the response is frozen for R weeks).
    epoch_weeks: int | None = None
    #: Schema v2: ISO date of the field's last review of necessity and scope.
    reviewed: str | None = None
    #: Schema v2: ISO date after which the client stops collecting the field (<= a year on).
    expires: str | None = None

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
        if self.epoch_weeks is None and one >= perm:
            # Without epochs, equal epsilons would leave no instantaneous noise: every report
            # of a value would repeat its memoized response for ever.
            _fail(f"{where}: epsilon_1 ({one}) must be below its epsilon_perm ({perm})")
        if self.epoch_weeks is not None:
            weeks = self.epoch_weeks
            if isinstance(weeks, bool) or not isinstance(weeks, int) or not 1 <= weeks <= 52:
                _fail(f"{where}: epoch_weeks ({weeks!r}) must be an integer in [1, 52]")
            if one > perm:
                _fail(f"{where}: epsilon_1 ({one}) must be at most its epsilon_perm ({perm})")
        if self.mechanism == "olh" and self.epoch_weeks is None:
            _fail(
                f"{where}: longitudinal OLH without epochs memoizes a seed per value, so its "
                "reports show when the value changes; give the field epoch_weeks"
            )
        _check_dates(self.reviewed, self.expires, where)
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
        # Absent in v1, so v1's canonical JSON (and its id) stay as they were.
        for key in ("epoch_weeks", "reviewed", "expires"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def expired(self, when: date) -> bool:
        """True once ``when`` is past the field's expiry (a field with none never expires)."""
        return self.expires is not None and when > date.fromisoformat(self.expires)

    def year_bound(self) -> float:
        """The proven loss of all this field's reports in any 52 weeks, whatever the history.

        ``epochs_touched(R)`` epochs at most, each one permanent response at the achieved
        ``epsilon_perm`` (docs/PRIVACY-OVER-TIME.md); ``inf`` for a field without epochs.
        """
        if self.epoch_weeks is None:
            return math.inf
        from ldp.epochs import epochs_touched

        return epochs_touched(self.epoch_weeks) * self.randomizer().epsilon_perm


def _check_dates(reviewed: object, expires: object, where: str) -> None:
    if reviewed is None and expires is None:
        return
    try:
        start = date.fromisoformat(reviewed) if isinstance(reviewed, str) else None
        end = date.fromisoformat(expires) if isinstance(expires, str) else None
    except ValueError as exc:
        _fail(f"{where}: reviewed and expires must be ISO dates (YYYY-MM-DD): {exc}")
    if start is None or end is None:
        _fail(f"{where}: reviewed and expires go together, as ISO date strings")
    if not start < end <= start + timedelta(days=366):
        _fail(
            f"{where}: expires ({expires}) must be after reviewed ({reviewed}) and at most a "
            "year later: collection is reviewed at least yearly"
        )


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
        # Caps per user-week and per year across kinds: a user with both consents sends one
        # report of each kind a week, so the kinds' costs add.
        week = sum((Fraction(f.epsilon_1) for k in self.kinds for f in k.fields), Fraction(0))
        if week > Fraction(EPSILON_CAPS.week_epsilon) + _SUM_SLACK:
            _fail(
                f"per-week epsilon over all kinds (sum of epsilon_1, {float(week):g}) exceeds "
                f"the client cap {EPSILON_CAPS.week_epsilon}"
            )
        year = math.fsum(spec.year_bound() for k in self.kinds for spec in k.fields)
        if math.isfinite(year) and year > EPSILON_CAPS.year_epsilon + 1e-9:
            _fail(
                f"yearly bound over all kinds ({year:.4g}) exceeds the client cap "
                f"{EPSILON_CAPS.year_epsilon}"
            )

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

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        """Every field of every kind, in schema order."""
        return tuple(spec for kind in self.kinds for spec in kind.fields)

    @property
    def sendable(self) -> bool:
        """True if every field has epochs: only then is the yearly loss finite and capped."""
        return all(spec.epoch_weeks is not None for spec in self.fields)

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
        optional=("pad", "doc", "epoch_weeks", "reviewed", "expires"),
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
        epoch_weeks=raw.get("epoch_weeks"),
        reviewed=raw.get("reviewed"),
        expires=raw.get("expires"),
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
                randomizer = spec.randomizer()
            except ParameterError as exc:
                _fail(f"field {spec.name!r}: no randomizer accepts these parameters: {exc}")
            if randomizer.mechanism == "olh" and spec.epoch_weeks is None:
                _fail(
                    f"field {spec.name!r}: 'auto' resolves to OLH, whose memoized seed changes "
                    "with the value without epochs; name another mechanism or add epoch_weeks"
                )
    from ldp.report import PADDED_BYTES, longest_report  # ldp.report imports this module

    for kind in schema.kinds:
        longest = longest_report(schema, kind.name)
        if longest > PADDED_BYTES:
            _fail(
                f"kind {kind.name!r}: its longest report is {longest} bytes, more than the "
                f"{PADDED_BYTES}-byte padded length every report is sealed at; it could never "
                "be sent (use fewer or smaller fields)"
            )
    return schema


def collects_more(old: Schema, new: Schema) -> tuple[str, ...]:
    """What ``new`` collects beyond ``old``, in words (empty if nothing).

    More is a new report kind or field, a new domain value, a larger epsilon per report, or a
    larger yearly bound. Any of these needs fresh consent: a release that ships such a schema
    must bump the policy version (tests/test_governance.py holds the two together), and the
    client sends nothing under a consent given to an older policy version.
    """
    reasons: list[str] = []
    for kind in new.kind_names:
        if kind not in old.kind_names:
            reasons.append(f"new report kind {kind!r}")
    before = {spec.name: spec for spec in old.fields}
    for spec in new.fields:
        prev = before.get(spec.name)
        if prev is None:
            reasons.append(f"new field {spec.name!r}")
            continue
        added = [v for v in spec.domain if v not in prev.domain]
        if added:
            reasons.append(f"{spec.name}: new values {', '.join(added)}")
        if spec.randomizer().epsilon_1 > prev.randomizer().epsilon_1 + 1e-9:
            reasons.append(f"{spec.name}: larger epsilon per report")
        if spec.year_bound() > prev.year_bound() + 1e-9:
            reasons.append(f"{spec.name}: larger bound over any 52 weeks")
    return tuple(reasons)


#: Schema versions this library knows, oldest first; the last is the one the client sends.
SCHEMA_FILES: Final = ("schema-v1.json", "schema-v2.json")


@functools.cache
def known_schemas() -> tuple[Schema, ...]:
    """Every schema version this library can read, oldest first (the analyzer reads them all)."""
    files = resources.files("ldp").joinpath("data")
    return tuple(
        load_schema(files.joinpath(name).read_text(encoding="utf-8")) for name in SCHEMA_FILES
    )


def shipped_schema() -> Schema:
    """The schema the client sends: the newest of :func:`known_schemas` (v2)."""
    return known_schemas()[-1]
