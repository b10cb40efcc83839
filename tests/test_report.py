"""Tests for ldp.report: periods, building, canonical encoding and strict decoding of reports."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ldp.envelope import generate_keypair, open_sealed, seal
from ldp.errors import (
    DecodeError,
    MissingFieldError,
    OutOfRangeError,
    ParameterError,
    TooLargeError,
    UnknownFieldError,
    UnknownSchemaError,
    WrongTypeError,
)
from ldp.report import (
    MAX_REPORT_BYTES,
    PADDED_BYTES,
    REPORT_KEYS,
    Report,
    build_report,
    decode_report,
    iso_period,
    parse_period,
    period_start,
)
from ldp.sampling import HmacSource
from ldp.schema import MAX_DOMAIN, MAX_FIELDS, MAX_PAD, FieldSpec, ReportKind, Schema, known_schemas
from ldp.schema import shipped_schema as _shipped

SCHEMA = _shipped()
SCHEMAS = {SCHEMA.id: SCHEMA}
SECRET = bytes(range(32))
PERIOD = "2026-W48"
USAGE = {
    "cli_version": "1.4",
    "platform": "linux-x86_64",
    "command": "deploy",
    "modules": {"docker", "git"},
}
ERRORS = {"error_category": "network"}
PRIVATE, PUBLIC = generate_keypair()


def rng(label: str = "tests") -> HmacSource:
    """A seeded, deterministic random source (the same label gives the same draws)."""
    return HmacSource(b"test-seed-" * 4, label.encode())


def usage_report(label: str = "tests", **changes: Any) -> Report:
    """A usage report of the shipped schema, drawn with a seeded source."""
    return build_report(SCHEMA, "usage", PERIOD, {**USAGE, **changes}, SECRET, rng(label))


def encoded_obj(report: Report | None = None) -> dict[str, Any]:
    """The wire JSON object of a report, as a mutable dict."""
    obj: dict[str, Any] = json.loads((report or usage_report()).encode())
    return obj


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes of any value (to craft reports that are wrong only in content)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class TestIsoPeriod:
    @pytest.mark.parametrize(
        ("when", "expected"),
        [
            (datetime(2026, 11, 23, 0, 0, tzinfo=UTC), "2026-W48"),
            (datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC), "2026-W48"),
            (datetime(2026, 11, 30, 0, 0, tzinfo=UTC), "2026-W49"),
            (datetime(2026, 1, 5, 12, 0, tzinfo=UTC), "2026-W02"),
            (datetime(2027, 1, 1, 12, 0, tzinfo=UTC), "2026-W53"),
            (datetime(2024, 12, 30, 12, 0, tzinfo=UTC), "2025-W01"),
        ],
    )
    def test_known_weeks(self, when: datetime, expected: str) -> None:
        """ISO weeks, zero padded, including weeks that straddle a new year."""
        assert iso_period(when) == expected

    def test_converts_to_utc(self) -> None:
        """Sunday 23:30 in New York is already Monday in UTC: the next week."""
        when = datetime(2026, 11, 29, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
        assert iso_period(when) == "2026-W49"

    def test_naive_is_refused(self) -> None:
        """A naive datetime is refused: its week boundary would be guessed in local time."""
        with pytest.raises(ParameterError, match="must be timezone-aware"):
            iso_period(datetime(2026, 11, 23))

    def test_default_is_now(self) -> None:
        """Without an argument the period is the current UTC week."""
        before = iso_period(datetime.now(UTC))
        now = iso_period()
        after = iso_period(datetime.now(UTC))
        assert now in {before, after}

    @settings(max_examples=300)
    @given(
        st.datetimes(
            min_value=datetime(2000, 1, 1),  # Hypothesis takes naive bounds
            max_value=datetime(2200, 1, 1),
            timezones=st.timezones(),
        )
    )
    def test_round_trip(self, when: datetime) -> None:
        """A period parses back to its week, whose Monday 00:00 UTC starts a week holding it."""
        period = iso_period(when)
        assert parse_period(period) == when.astimezone(UTC).isocalendar()[:2]
        start = period_start(period)
        assert start <= when < start + timedelta(days=7)
        assert start.weekday() == 0


class TestParsePeriod:
    def test_valid(self) -> None:
        """A well-formed ISO week parses to (year, week)."""
        assert parse_period("2026-W48") == (2026, 48)
        assert parse_period("2026-W53") == (2026, 53)
        assert parse_period("2020-W01") == (2020, 1)

    @pytest.mark.parametrize(
        "period",
        [
            "2026-W8",
            "2026-w48",
            "2026W48",
            "2026-W00",
            "2026-W54",
            "2025-W53",
            "0000-W01",
            "2026-W48\n",
            " 2026-W48",
            "2026-W48-1",
            "\uff12\uff10\uff12\uff16-W48",
            "",
        ],
    )
    def test_invalid(self, period: str) -> None:
        """Anything but a real ISO week in the exact format is an OutOfRangeError."""
        with pytest.raises(OutOfRangeError):
            parse_period(period)

    def test_not_a_string(self) -> None:
        """A non-string period is a WrongTypeError."""
        with pytest.raises(WrongTypeError):
            parse_period(202648)


class TestBuildReport:
    def test_fields_are_the_kind_fields(self) -> None:
        """A report carries exactly its kind's fields, each a legal randomizer output."""
        report = usage_report()
        assert report.kind == "usage"
        assert report.period == PERIOD
        assert report.schema_id == SCHEMA.id
        assert report.v == 1
        assert set(report.fields) == set(SCHEMA.kind("usage").field_names)
        for spec in SCHEMA.kind("usage").fields:
            spec.randomizer().validate(report.fields[spec.name])

    def test_errors_kind(self) -> None:
        """The errors kind carries its single field."""
        report = build_report(SCHEMA, "errors", PERIOD, ERRORS, SECRET, rng())
        assert set(report.fields) == {"error_category"}

    def test_deterministic_given_the_random_source(self) -> None:
        """Same secret, values and random stream give the same report (no hidden randomness)."""
        assert usage_report("a") == usage_report("a")

    def test_frozen_whatever_the_random_source(self) -> None:
        """v2 epochs freeze the response: other random streams give the same report."""
        reports = {usage_report(f"run-{i}").encode() for i in range(20)}
        assert len(reports) == 1

    def test_v1_varies_with_the_random_source(self) -> None:
        """v1 adds fresh instantaneous noise: different random streams give different reports."""
        v1 = known_schemas()[0]
        values = {"cli_version": "1.4", "os": "linux", "arch": "x86_64", "command": "up"}
        values["modules"] = {"git"}
        reports = {
            build_report(v1, "usage", PERIOD, values, SECRET, rng(f"run-{i}")).encode()
            for i in range(20)
        }
        assert len(reports) > 1

    def test_unknown_strings_count_as_other(self) -> None:
        """An unknown categorical value is randomized exactly as "other" is."""
        weird = usage_report(command="/home/alice/secret-project", platform="Plan9-x")
        plain = usage_report(command="other", platform="other")
        assert weird == plain

    def test_unknown_set_items_are_dropped(self) -> None:
        """Unknown items of a set value are dropped before randomizing."""
        assert usage_report(modules={"docker", "alice-laptop"}) == usage_report(modules={"docker"})

    def test_set_accepts_any_collection(self) -> None:
        """A set value may be given as a list, tuple or frozenset."""
        expected = usage_report(modules={"docker", "git"})
        assert usage_report(modules=["git", "docker"]) == expected
        assert usage_report(modules=("docker", "git", "git")) == expected
        assert usage_report(modules=frozenset({"docker", "git"})) == expected

    @pytest.mark.parametrize(
        ("kind", "period", "values", "secret", "message"),
        [
            ("usage", PERIOD, {**USAGE, "user": "alice"}, SECRET, r"no field 'user'"),
            ("usage", PERIOD, {**USAGE, 1: "x", "b": "y"}, SECRET, r"no field 1 "),
            (
                "usage",
                PERIOD,
                {k: v for k, v in USAGE.items() if k != "platform"},
                SECRET,
                r"'platform'",
            ),
            (
                "usage",
                PERIOD,
                {**USAGE, "platform": 3},
                SECRET,
                r"'platform' takes a string, not int",
            ),
            ("usage", PERIOD, {**USAGE, "platform": None}, SECRET, r"takes a string, not NoneType"),
            ("usage", PERIOD, {**USAGE, "modules": "docker"}, SECRET, r"not str"),
            ("usage", PERIOD, {**USAGE, "modules": 5}, SECRET, r"collection of strings, not int"),
            ("usage", "2026-48", USAGE, SECRET, r"must look like 2026-W48"),
            ("usage", "2025-W53", USAGE, SECRET, r"not an ISO week"),
            ("bogus", PERIOD, USAGE, SECRET, r"no report kind 'bogus'"),
            ("errors", PERIOD, USAGE, SECRET, r"no field"),
            ("usage", PERIOD, USAGE, b"short", r"secret must be at least 32 bytes"),
            ("usage", PERIOD, USAGE, "x" * 32, r"secret must be at least 32 bytes"),
        ],
        ids=[
            "extra-field",
            "non-str-field",
            "missing-field",
            "int-value",
            "none-value",
            "string-as-set",
            "int-as-set",
            "period-format",
            "period-week",
            "unknown-kind",
            "wrong-kind",
            "short-secret",
            "str-secret",
        ],
    )
    def test_caller_errors(
        self, kind: str, period: str, values: dict[str, Any], secret: Any, message: str
    ) -> None:
        """Programming mistakes of the caller are ParameterErrors that say what is wrong."""
        with pytest.raises(ParameterError, match=message):
            build_report(SCHEMA, kind, period, values, secret, rng())

    def test_never_holds_the_true_values(self) -> None:
        """The report object holds integers only: no true value, not even a domain string."""
        report = usage_report()
        for wire in report.fields.values():
            items = wire if isinstance(wire, list) else [wire]
            assert all(type(x) is int for x in items)


class TestEncode:
    def test_exact_layout(self) -> None:
        """The encoding is the wire format of DESIGN.md section 4, byte for byte."""
        report = Report(
            schema_id="0123456789abcdef",
            kind="usage",
            period="2026-W48",
            fields={"os": 0, "arch": 1, "command": [5, 2], "modules": 13, "cli_version": 3},
        )
        assert report.encode() == (
            b'{"fields":{"arch":1,"cli_version":3,"command":[5,2],"modules":13,"os":0},'
            b'"kind":"usage","period":"2026-W48","schema":"0123456789abcdef","v":1}'
        )

    def test_built_report_is_canonical(self) -> None:
        """A built report encodes to ASCII, sorted keys, no whitespace, at most 4 KiB."""
        data = usage_report().encode()
        assert data.isascii()
        assert b" " not in data and b"\n" not in data
        assert len(data) <= MAX_REPORT_BYTES
        obj = json.loads(data)
        assert list(obj) == sorted(obj) == list(REPORT_KEYS)
        assert list(obj["fields"]) == sorted(obj["fields"])

    def test_too_large_is_refused(self) -> None:
        """A report that would exceed 4 KiB is never handed out."""
        report = Report("0123456789abcdef", "usage", PERIOD, {"x": list(range(2000))})
        with pytest.raises(TooLargeError, match=r"at most 4096"):
            report.encode()

    def test_largest_legal_report_fits(self) -> None:
        """A schema at every size limit still encodes under 4 KiB (Subset Selection), but a
        report over the padded length is never handed out: its length would give it away."""
        domain = tuple(f"v{i}" for i in range(MAX_DOMAIN))
        fields = tuple(
            FieldSpec(f"f{i:02d}_" + "x" * 28, "set", domain, 0.6, 0.3, "ss", pad=MAX_PAD)
            for i in range(MAX_FIELDS)
        )
        schema = Schema("big", 1, (ReportKind("k", fields),))
        values = {f.name: set(domain) for f in fields}
        with pytest.raises(TooLargeError, match=r"padded length is 512"):
            build_report(schema, "k", PERIOD, values, SECRET, rng())
        # The same fields without the padding check (no epochs here: one privatize each).
        wires = {
            f.name: list(f.randomizer().privatize(f.indices(values[f.name]), SECRET, f.name))
            for f in fields
        }
        report = Report(schema.id, "k", PERIOD, wires)
        size = len(report.encode())
        assert PADDED_BYTES < size <= MAX_REPORT_BYTES
        assert decode_report(report.encode(), {schema.id: schema}) == report


class TestDecodeReport:
    def test_round_trip(self) -> None:
        """decode(encode(report)) gives the same report back."""
        report = usage_report()
        assert decode_report(report.encode(), SCHEMAS) == report

    def test_round_trip_through_the_envelope(self) -> None:
        """build -> encode -> seal -> open -> decode gives the same report."""
        for kind, values in (("usage", USAGE), ("errors", ERRORS)):
            report = build_report(SCHEMA, kind, PERIOD, values, SECRET, rng(kind))
            sealed = seal(report.encode(), PUBLIC)
            assert decode_report(open_sealed(sealed, PRIVATE), SCHEMAS) == report

    @settings(max_examples=60, deadline=None)
    @given(
        values=st.fixed_dictionaries(
            {
                name: st.sampled_from(spec.domain) | st.text(max_size=10)
                if spec.kind == "categorical"
                else st.sets(st.sampled_from(spec.domain) | st.text(max_size=5), max_size=5)
                for name, spec in ((f.name, f) for f in SCHEMA.kind("usage").fields)
            }
        ),
        week=st.integers(1, 52),
        label=st.text(max_size=8),
    )
    def test_round_trip_any_values(self, values: dict[str, Any], week: int, label: str) -> None:
        """For any true values, sealing and opening a built report decodes to the same report."""
        report = build_report(SCHEMA, "usage", f"2027-W{week:02d}", values, SECRET, rng(label))
        opened = open_sealed(seal(report.encode(), PUBLIC), PRIVATE)
        assert opened == report.encode()
        assert decode_report(opened, SCHEMAS) == report

    def test_accepts_bytes_likes(self) -> None:
        """bytearray and memoryview decode like bytes."""
        data = usage_report().encode()
        assert decode_report(bytearray(data), SCHEMAS) == decode_report(memoryview(data), SCHEMAS)

    # Each case: a way to spoil a valid report, and the error it must give.
    SPOILED: ClassVar[list[tuple[str, Any, type[DecodeError]]]] = [
        ("str-input", "{}", WrongTypeError),
        ("too-large", b" " * (MAX_REPORT_BYTES + 1), TooLargeError),
        ("not-utf8", b'{"kind":"\xff"}', DecodeError),
        ("not-json", b'{"fields":', DecodeError),
        ("empty", b"", DecodeError),
        ("top-array", b"[]", WrongTypeError),
        ("top-int", b"1", WrongTypeError),
        ("nan", b"NaN", WrongTypeError),
        ("infinity", b"[-Infinity]", WrongTypeError),
        ("float", b"[1.0]", WrongTypeError),
        ("exponent", b"[1e400]", WrongTypeError),
        ("deep", b"[" * 2000 + b"]" * 2000, DecodeError),
    ]

    @pytest.mark.parametrize(
        ("data", "error"), [(d, e) for _, d, e in SPOILED], ids=[n for n, _, _ in SPOILED]
    )
    def test_malformed_bytes(self, data: Any, error: type[DecodeError]) -> None:
        """Bytes that are not one JSON object of integers and strings raise the typed error."""
        with pytest.raises(error):
            decode_report(data, SCHEMAS)

    def test_duplicate_keys(self) -> None:
        """A key given twice is refused, even with the same value (no ambiguity to resolve)."""
        data = usage_report().encode()
        doubled = data.replace(b'"v":1}', b'"v":1,"v":1}')
        assert doubled != data
        with pytest.raises(DecodeError, match="duplicate key 'v'"):
            decode_report(doubled, SCHEMAS)

    def test_non_canonical(self) -> None:
        """Whitespace or a different key order is refused: one report has one encoding."""
        obj = encoded_obj()
        spaced = json.dumps(obj, sort_keys=True).encode()
        unsorted = json.dumps(dict(reversed(list(obj.items()))), separators=(",", ":")).encode()
        for data in (spaced, unsorted, canonical(obj) + b"\n"):
            with pytest.raises(DecodeError, match="canonical form"):
                decode_report(data, SCHEMAS)
        assert decode_report(canonical(obj), SCHEMAS) == usage_report()

    @staticmethod
    def _spoil(path: tuple[str, ...], value: Any) -> bytes:
        obj = encoded_obj()
        node = obj
        for key in path[:-1]:
            node = node[key]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return canonical(obj)

    @pytest.mark.parametrize(
        ("path", "value", "error", "message"),
        [
            (("user",), "alice", UnknownFieldError, r"unknown key 'user'"),
            (("period",), KeyError, MissingFieldError, r"missing key 'period'"),
            (("v",), True, WrongTypeError, r"'v' must be an integer"),
            (("v",), "1", WrongTypeError, r"'v' must be an integer"),
            (("v",), 2, OutOfRangeError, r"version \(2\) must be 1"),
            (("schema",), "ffffffffffffffff", UnknownSchemaError, r"unknown schema id"),
            (("schema",), "../../etc/passwd", UnknownSchemaError, r"unknown schema id"),
            (("schema",), 7, WrongTypeError, r"'schema' must be a string"),
            (("kind",), "telemetry", OutOfRangeError, r"must be one of usage, errors"),
            (("kind",), None, WrongTypeError, r"'kind' must be a string"),
            (("period",), "2026-W60", OutOfRangeError, r"not an ISO week"),
            (("period",), "last week", OutOfRangeError, r"must look like"),
            (("period",), ["2026-W48"], WrongTypeError, r"'period' must be a string"),
            (("fields",), [], WrongTypeError, r"'fields' must be an object"),
            (("fields", "hostname"), 1, UnknownFieldError, r"unknown key 'hostname'"),
            (("fields", "platform"), KeyError, MissingFieldError, r"missing key 'platform'"),
            (("fields", "platform"), True, WrongTypeError, r"integer or a list of integers"),
            (("fields", "platform"), "linux", WrongTypeError, r"integer or a list of integers"),
            (("fields", "platform"), None, WrongTypeError, r"integer or a list of integers"),
            (("fields", "platform"), [[1]], WrongTypeError, r"integer or a list of integers"),
            (
                ("fields", "platform"),
                [True, False],
                WrongTypeError,
                r"integer or a list of integers",
            ),
            (("fields", "platform"), {"a": 1}, WrongTypeError, r"integer or a list of integers"),
        ],
    )
    def test_spoiled_report(
        self, path: tuple[str, ...], value: Any, error: type[DecodeError], message: str
    ) -> None:
        """Each spoiled part of an otherwise valid report raises its typed error."""
        with pytest.raises(error, match=message):
            decode_report(self._spoil(path, value), SCHEMAS)

    def test_fields_of_the_other_kind(self) -> None:
        """A usage report relabelled as an errors report fails on its fields."""
        with pytest.raises(UnknownFieldError):
            decode_report(self._spoil(("kind",), "errors"), SCHEMAS)

    @pytest.mark.parametrize("name", list(SCHEMA.kind("usage").field_names))
    def test_out_of_range_field_values(self, name: str) -> None:
        """Outputs outside each field's range are refused by the field's own validator."""
        rand = SCHEMA.kind("usage").field(name).randomizer()
        legal = usage_report().fields[name]
        spoiled: list[Any] = [-1, 2**64, [-1], list(range(100))]
        if isinstance(legal, list):
            spoiled += [[*legal, 0], legal[:-1], [x + 2**40 for x in legal]]
        for value in spoiled:
            with pytest.raises((OutOfRangeError, WrongTypeError)):
                rand.validate(value)
            with pytest.raises((OutOfRangeError, WrongTypeError)):
                decode_report(self._spoil(("fields", name), value), SCHEMAS)

    def test_unknown_schema_with_empty_registry(self) -> None:
        """Without the schema, even a perfect report is refused as unknown."""
        with pytest.raises(UnknownSchemaError):
            decode_report(usage_report().encode(), {})

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=MAX_REPORT_BYTES + 10))
    def test_fuzz_random_bytes(self, data: bytes) -> None:
        """Random bytes only ever raise DecodeError subclasses."""
        with pytest.raises(DecodeError):
            decode_report(data, SCHEMAS)

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_fuzz_mutations(self, data: st.DataObject) -> None:
        """Bit flips, truncations and insertions of a valid report decode or raise DecodeError."""
        buf = bytearray(usage_report(data.draw(st.text(max_size=4), label="label")).encode())
        for _ in range(data.draw(st.integers(1, 3), label="edits")):
            op = data.draw(st.sampled_from(["flip", "cut", "insert"]), label="op")
            pos = data.draw(st.integers(0, len(buf) - 1), label="pos")
            if op == "flip":
                buf[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
            elif op == "cut":
                del buf[pos:]
                if not buf:
                    break
            else:
                buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=4), label="ins")
        try:
            report = decode_report(bytes(buf), SCHEMAS)
        except DecodeError:
            return
        # Some flips land on another legal output (a digit of an index): then it must be a
        # canonical, fully valid report.
        assert report.encode() == bytes(buf)

    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=True)
        | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=8,
    )

    @settings(max_examples=500, deadline=None)
    @given(st.data())
    def test_fuzz_json_values(self, data: st.DataObject) -> None:
        """Replacing any part of a valid report by random JSON decodes or raises DecodeError."""
        obj = encoded_obj()
        slots: list[tuple[dict[str, Any], str]] = [(obj, k) for k in obj]
        slots += [(obj["fields"], k) for k in obj["fields"]]
        node, key = data.draw(st.sampled_from(slots))
        node[key] = data.draw(self.json_values)
        if data.draw(st.booleans(), label="extra key"):
            node[data.draw(st.text(max_size=8), label="new key")] = data.draw(self.json_values)
        try:
            text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
        except ValueError:
            return
        with contextlib.suppress(DecodeError):
            decode_report(text.encode(), SCHEMAS)

    def test_error_messages_are_short(self) -> None:
        """An error quoting hostile input stays short (the input can be 4 KiB)."""
        with pytest.raises(UnknownSchemaError) as info:
            decode_report(self._spoil(("schema",), "x" * 3000), SCHEMAS)
        assert len(str(info.value)) < 200
        assert re.search(r"unknown schema id 'x+\.\.\.", str(info.value))
