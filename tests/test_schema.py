"""Tests for ldp.schema: strict loading, canonical JSON, ids, client caps, the shipped schema."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldp.errors import ParameterError, SchemaError
from ldp.schema import (
    EPSILON_CAPS,
    MAX_DOMAIN,
    FieldSpec,
    ReportKind,
    Schema,
    canonical_dumps,
    known_schemas,
    load_schema,
    shipped_schema,
)

#: The shipped schema's id. Changing the schema changes this on purpose: update it only together
#: with a deliberate schema change (and keep the old schema around for the analyzer).
SHIPPED_ID = "ecf03f5031dd97d1"
#: v1's id, which the analyzer must keep reading.
V1_ID = "f3d3f726b0024a19"

SHIPPED_TEXT = (Path(__file__).parents[1] / "ldp" / "data" / "schema-v2.json").read_text()
SCHEMA_DOC = Path(__file__).parents[1] / "docs" / "SCHEMA.md"


def shipped_doc() -> dict[str, Any]:
    """A fresh, mutable copy of the shipped schema document."""
    doc: dict[str, Any] = json.loads(SHIPPED_TEXT)
    return doc


def usage_field(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """The field ``name`` of the ``usage`` kind in a schema document."""
    fields: list[dict[str, Any]] = doc["kinds"][0]["fields"]
    return next(f for f in fields if f["name"] == name)


def small_field(name: str = "color", **overrides: Any) -> FieldSpec:
    """A valid categorical field to vary in tests."""
    args: dict[str, Any] = {
        "name": name,
        "kind": "categorical",
        "domain": ("red", "green", "other"),
        "epsilon_perm": 2.0,
        "epsilon_1": 1.0,
        "mechanism": "grr",
    }
    args.update(overrides)
    return FieldSpec(**args)


class TestShippedSchema:
    def test_loads(self) -> None:
        """The packaged schema parses and has the two report kinds with their fields in order."""
        schema = shipped_schema()
        assert schema.name == "20i"
        assert schema.version == 2
        assert schema.kind_names == ("usage", "errors")
        assert schema.kind("usage").field_names == ("cli_version", "platform", "command", "modules")
        assert schema.kind("errors").field_names == ("error_category",)

    def test_id_is_pinned(self) -> None:
        """The shipped schema's id is the pinned one, so any schema change is deliberate."""
        assert shipped_schema().id == SHIPPED_ID
        assert [s.id for s in known_schemas()] == [V1_ID, SHIPPED_ID]

    def test_respects_the_caps(self) -> None:
        """Every field's epsilons, the user-week sum over kinds and the yearly total are capped."""
        schema = shipped_schema()
        week = 0.0
        for spec in schema.fields:
            assert 0 < spec.epsilon_1 <= spec.epsilon_perm <= EPSILON_CAPS.epsilon_perm
            week += spec.epsilon_1
        assert week <= EPSILON_CAPS.week_epsilon
        assert sum(spec.year_bound() for spec in schema.fields) <= EPSILON_CAPS.year_epsilon
        assert (EPSILON_CAPS.epsilon_perm, EPSILON_CAPS.week_epsilon) == (4.0, 5.5)
        assert EPSILON_CAPS.year_epsilon == 20.0

    def test_fields_expire_within_a_year_of_review_and_not_soon(self) -> None:
        """Every shipped field expires at most a year after its review, and not within 90 days
        of today: renew it (a schema change with its CHANGELOG entry) before then."""
        import datetime as dt

        today = dt.datetime.now(dt.UTC).date()
        for spec in shipped_schema().fields:
            assert spec.reviewed is not None and spec.expires is not None, spec.name
            reviewed = dt.date.fromisoformat(spec.reviewed)
            expires = dt.date.fromisoformat(spec.expires)
            assert reviewed < expires <= reviewed + dt.timedelta(days=366)
            assert expires - today > dt.timedelta(days=90), f"{spec.name} expires {expires}"

    def test_mechanisms_are_explicit(self) -> None:
        """Shipped fields name their mechanism, so the wire format does not drift with "auto"."""
        for kind in shipped_schema().kinds:
            for spec in kind.fields:
                assert spec.mechanism != "auto", spec.name

    def test_mechanisms_have_the_smallest_variance(self) -> None:
        """Each pinned mechanism is the best of GRR, OUE, OLH and SS for its field (DESIGN 3)."""
        for kind in shipped_schema().kinds:
            for spec in kind.fields:
                pinned = spec.randomizer().variance(1)
                for other in ("grr", "oue", "olh", "ss"):
                    alternative = dataclasses.replace(spec, mechanism=other)
                    assert pinned <= alternative.randomizer().variance(1) * (1 + 1e-9), (
                        spec.name,
                        other,
                    )

    def test_errors_kind_includes_none(self) -> None:
        """error_category has "none", so sending it does not reveal that an error happened."""
        spec = shipped_schema().kind("errors").field("error_category")
        assert "none" in spec.domain
        assert spec.domain[-1] == "other"

    def test_modules_is_a_padded_set(self) -> None:
        """modules is a set field with a pad length and no "other" bucket."""
        spec = shipped_schema().kind("usage").field("modules")
        assert spec.kind == "set"
        assert spec.pad is not None and 1 <= spec.pad <= spec.d
        assert "other" not in spec.domain

    def test_randomizers_match_the_specs(self) -> None:
        """Each field's randomizer has the field's domain size and achieves at most its epsilons."""
        for kind in shipped_schema().kinds:
            for spec in kind.fields:
                r = spec.randomizer()
                assert r.d == spec.d
                assert r.mechanism == spec.mechanism
                assert r.epsilon_perm <= spec.epsilon_perm + 1e-12
                assert r.epsilon_1 <= spec.epsilon_1 + 1e-12
                # Rounding to 32-bit probabilities costs almost nothing.
                assert r.epsilon_1 > spec.epsilon_1 - 1e-3

    def test_is_cached(self) -> None:
        """shipped_schema() parses once and hands out the same object."""
        assert shipped_schema() is shipped_schema()


class TestCanonicalJson:
    def test_format(self) -> None:
        """Canonical JSON has sorted keys, no spaces and ASCII escapes."""
        assert canonical_dumps({"b": 1, "a": [1, 2], "c": "é"}) == '{"a":[1,2],"b":1,"c":"\\u00e9"}'

    def test_nan_is_refused(self) -> None:
        """NaN has no JSON spelling, so it cannot be canonical."""
        with pytest.raises(ValueError, match="JSON compliant"):
            canonical_dumps({"x": math.nan})

    def test_round_trip(self) -> None:
        """Loading a schema's canonical JSON gives an equal schema with the same id."""
        schema = shipped_schema()
        again = load_schema(schema.canonical_json())
        assert again == schema
        assert again.id == schema.id
        assert again.canonical_json() == schema.canonical_json()

    def test_layout_does_not_change_the_id(self) -> None:
        """Indentation and key order of the source text do not change the id."""
        doc = shipped_doc()
        text = json.dumps(doc, indent=7, sort_keys=False)
        reordered = json.dumps(dict(reversed(list(doc.items()))), indent=None)
        assert load_schema(text).id == shipped_schema().id
        assert load_schema(reordered).id == shipped_schema().id

    def test_integer_epsilons_are_normalized(self) -> None:
        """An epsilon written as 2 and as 2.0 gives the same schema and id."""
        doc = shipped_doc()
        for value in (1, 1.0):
            usage_field(doc, "platform")["epsilon_perm"] = value
            usage_field(doc, "platform")["epsilon_1"] = value
            if value == 1:
                first = load_schema(json.dumps(doc)).id
        assert load_schema(json.dumps(doc)).id == first

    def test_id_is_sha256_prefix(self) -> None:
        """The id is the first 16 hex digits of SHA-256 of the canonical JSON."""
        schema = shipped_schema()
        digest = hashlib.sha256(schema.canonical_json().encode("ascii")).hexdigest()
        assert schema.id == digest[:16]
        assert re.fullmatch(r"[0-9a-f]{16}", schema.id)

    @pytest.mark.parametrize(
        "change",
        [
            lambda doc: usage_field(doc, "platform").__setitem__("epsilon_1", 0.25),
            lambda doc: usage_field(doc, "platform").__setitem__(
                "domain", ["macos", "linux", "windows", "freebsd", "other"]
            ),
            lambda doc: usage_field(doc, "platform").__setitem__("doc", "edited"),
            lambda doc: doc.__setitem__("version", 3),
            lambda doc: doc["kinds"].reverse(),
        ],
        ids=["epsilon", "domain-order", "doc", "version", "kind-order"],
    )
    def test_any_change_changes_the_id(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Every edit to the document, even to a doc string, gives a different id."""
        doc = shipped_doc()
        change(doc)
        assert load_schema(json.dumps(doc)).id != shipped_schema().id

    def test_bytes_and_str_agree(self) -> None:
        """load_schema takes UTF-8 bytes or str with the same result."""
        assert load_schema(SHIPPED_TEXT.encode()) == load_schema(SHIPPED_TEXT)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets ``path`` (dot-separated, ints index lists) to ``value``."""

    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _del(path: str) -> Callable[[dict[str, Any]], None]:
    """An edit that deletes the key at ``path``."""

    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return edit


# Field indices in the shipped usage kind: 0 cli_version, 1 os, 2 arch, 3 command, 4 modules.
F = "kinds.0.fields"
BAD_DOCUMENTS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("top-unknown-key", _set("extra", 1), r"schema: unknown key 'extra'"),
    ("top-missing-key", _del("kinds"), r"schema: missing key 'kinds'"),
    ("kind-unknown-key", _set("kinds.0.epsilon", 1), r"kinds\[0\]: unknown key 'epsilon'"),
    ("field-unknown-key", _set(f"{F}.1.values", []), r"fields\[1\]: unknown key 'values'"),
    ("field-missing-key", _del(f"{F}.1.mechanism"), r"fields\[1\]: missing key 'mechanism'"),
    ("version-string", _set("version", "1"), r"version \('1'\) must be an integer"),
    ("version-bool", _set("version", True), r"version \(True\) must be an integer"),
    ("version-zero", _set("version", 0), r"version \(0\) must be in"),
    ("kinds-not-list", _set("kinds", {}), r"schema\.kinds must be a JSON array"),
    ("kind-not-object", _set("kinds.0", []), r"kinds\[0\] must be a JSON object"),
    ("no-kinds", _set("kinds", []), r"number of report kinds \(0\)"),
    ("no-fields", _set("kinds.1.fields", []), r"kind 'errors': number of fields \(0\)"),
    ("bad-name", _set("name", "Twenty I"), r"schema name \('Twenty I'\) must match"),
    ("bad-field-name", _set(f"{F}.1.name", "OS"), r"field name \('OS'\) must match"),
    ("long-field-name", _set(f"{F}.1.name", "x" * 33), r"field name .* at most 32"),
    ("bad-kind-name", _set("kinds.1.name", "err ors"), r"report kind name"),
    ("same-kind-twice", _set("kinds.1.name", "usage"), r"kind names must be unique"),
    (
        "same-field-twice",
        _set(f"{F}.2.name", "platform"),
        r"kind 'usage': field names must be unique",
    ),
    ("field-in-two-kinds", _set("kinds.1.fields.0.name", "platform"), r"unique across the schema"),
    ("field-kind", _set(f"{F}.1.kind", "ordinal"), r"kind \('ordinal'\) must be one of"),
    ("mechanism", _set(f"{F}.1.mechanism", "laplace"), r"mechanism \('laplace'\) must be one"),
    ("domain-not-list", _set(f"{F}.1.domain", "linux"), r"domain must be a JSON array"),
    ("domain-value-int", _set(f"{F}.1.domain.0", 7), r"domain value 7 must match"),
    ("domain-value-space", _set(f"{F}.1.domain.0", "my os"), r"domain value 'my os'"),
    ("domain-dupes", _set(f"{F}.1.domain.1", "linux-x86_64"), r"repeated: linux-x86_64"),
    ("domain-tiny", _set(f"{F}.1.domain", ["other"]), r"domain size \(1\) must be in \[2, 64\]"),
    (
        "domain-huge",
        _set(f"{F}.1.domain", [f"v{i}" for i in range(MAX_DOMAIN)] + ["other"]),
        r"domain size \(65\)",
    ),
    ("no-other", _set(f"{F}.1.domain", ["linux", "macos"]), r"must end with 'other'"),
    ("other-not-last", _set(f"{F}.1.domain", ["other", "linux"]), r"must end with 'other'"),
    ("pad-on-categorical", _set(f"{F}.1.pad", 2), r"pad \(2\) is only for set fields"),
    ("set-without-pad", _del(f"{F}.3.pad"), r"needs an integer pad, got None"),
    ("set-pad-bool", _set(f"{F}.3.pad", True), r"needs an integer pad, got True"),
    ("set-pad-zero", _set(f"{F}.3.pad", 0), r"pad \(0\) must be in \[1, 16\]"),
    ("set-pad-huge", _set(f"{F}.3.pad", 17), r"pad \(17\) must be in \[1, 16\]"),
    ("set-with-other", _set(f"{F}.3.domain.0", "other"), r"set domain has no 'other'"),
    ("epsilon-string", _set(f"{F}.1.epsilon_1", "0.5"), r"epsilon_1 \('0.5'\) must be a number"),
    ("epsilon-bool", _set(f"{F}.1.epsilon_1", True), r"epsilon_1 \(True\) must be a number"),
    ("epsilon-zero", _set(f"{F}.1.epsilon_1", 0), r"epsilon_1 \(0.0\) must be finite and > 0"),
    ("epsilon-negative", _set(f"{F}.1.epsilon_perm", -1), r"epsilon_perm \(-1.0\) must be"),
    ("doc-not-string", _set(f"{F}.1.doc", 5), r"doc must be a string"),
    ("doc-too-long", _set("doc", "x" * 1001), r"at most 1000 characters"),
]


class TestLoadSchemaRefuses:
    @pytest.mark.parametrize(
        ("edit", "message"),
        [(edit, message) for _, edit, message in BAD_DOCUMENTS],
        ids=[name for name, _, _ in BAD_DOCUMENTS],
    )
    def test_bad_document(self, edit: Callable[[dict[str, Any]], None], message: str) -> None:
        """Each malformed document is refused with a SchemaError saying what and where."""
        doc = shipped_doc()
        edit(doc)
        with pytest.raises(SchemaError, match=message):
            load_schema(json.dumps(doc))

    def test_every_bad_document_differs_from_the_shipped_one(self) -> None:
        """Each edit above really changes the document (no case passes by testing nothing)."""
        for name, edit, _ in BAD_DOCUMENTS:
            doc = shipped_doc()
            edit(doc)
            # Compare texts: in Python True == 1, but not in JSON.
            assert json.dumps(doc) != json.dumps(shipped_doc()), name

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ('{"name": "a", "name": "b", "version": 1, "kinds": []}', r"duplicate key 'name'"),
            ('{"name": "a", "version": NaN, "kinds": []}', r"NaN is not allowed"),
            ('{"name": "a", "version": Infinity, "kinds": []}', r"Infinity is not allowed"),
            ("{", r"not valid JSON"),
            ("[]", r"schema must be a JSON object, got list"),
            ("[" * 100_000, r"at most 65536"),
        ],
        ids=["duplicate", "nan", "infinity", "truncated", "array", "too-large"],
    )
    def test_bad_text(self, text: str, message: str) -> None:
        """Text that is not one clean JSON object is refused with a SchemaError."""
        with pytest.raises(SchemaError, match=message):
            load_schema(text)

    def test_deep_nesting(self) -> None:
        """Deeply nested arrays are a SchemaError, not a RecursionError."""
        with pytest.raises(SchemaError):
            load_schema("[" * 30_000 + "]" * 30_000)

    def test_huge_epsilon_literal(self) -> None:
        """1e400 parses to infinity and is refused as not finite."""
        text = SHIPPED_TEXT.replace('"epsilon_1": 0.8', '"epsilon_1": 1e400', 1)
        assert text != SHIPPED_TEXT
        with pytest.raises(SchemaError, match=r"epsilon_1 \(inf\) must be finite"):
            load_schema(text)

    def test_not_utf8(self) -> None:
        """Bytes that are not UTF-8 are a SchemaError."""
        with pytest.raises(SchemaError, match="not valid UTF-8"):
            load_schema(b'{"name": "\xff"}')

    def test_not_text(self) -> None:
        """Only str and bytes are schema documents."""
        with pytest.raises(SchemaError, match="must be str or bytes, not dict"):
            load_schema({})  # type: ignore[arg-type]

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300) | st.text(max_size=300))
    def test_fuzz_only_raises_schema_error(self, data: bytes | str) -> None:
        """Arbitrary input either loads or raises SchemaError, nothing else."""
        with contextlib.suppress(SchemaError):
            load_schema(data)

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_fuzzed_values_only_raise_schema_error(self, data: st.DataObject) -> None:
        """Any value of the document replaced by random JSON gives SchemaError or a schema."""
        doc = shipped_doc()
        paths: list[tuple[Any, Any]] = []

        def collect(node: Any) -> None:
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                paths.append((node, key))
                if isinstance(child, dict | list):
                    collect(child)

        collect(doc)
        node, key = data.draw(st.sampled_from(paths))
        json_values = st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=5,
        )
        node[key] = data.draw(json_values)
        with contextlib.suppress(SchemaError):
            load_schema(json.dumps(doc))


class TestReportFitsThePad:
    """A schema whose longest report cannot be padded to PADDED_BYTES is refused at load."""

    def test_oversized_kind_is_refused(self) -> None:
        """Eight wide Subset Selection fields at a small epsilon send ~30 two-digit indices
        each: far over 512 bytes, so the kind could never be sent; the error says so."""
        doc = shipped_doc()
        usage = doc["kinds"][0]
        template = usage_field(doc, "command")
        # Only cli_version kept, so that the epsilon caps hold and the size is what fails.
        usage["fields"] = [usage_field(doc, "cli_version")]
        for i in range(8):
            usage["fields"].append(
                {
                    **template,
                    "name": f"wide_{i}",
                    "domain": [f"v{j}" for j in range(60)] + ["other"],
                    "epsilon_perm": 0.1,
                    "epsilon_1": 0.1,
                    "epoch_weeks": 52,
                }
            )
        with pytest.raises(SchemaError, match=r"kind 'usage': its longest report is \d+ bytes"):
            load_schema(json.dumps(doc))

    def test_shipped_schemas_fit_with_room(self) -> None:
        """Every kind of every known schema is at most half the padded length at its longest."""
        from ldp.report import PADDED_BYTES, longest_report

        for schema in known_schemas():
            for kind in schema.kind_names:
                assert 100 < longest_report(schema, kind) <= PADDED_BYTES // 2


class TestEpsilonCaps:
    def test_epsilon_perm_over_cap(self) -> None:
        """A field over the permanent cap is refused naming the field, the value and the cap."""
        doc = shipped_doc()
        usage_field(doc, "command")["epsilon_perm"] = 4.5
        with pytest.raises(
            SchemaError, match=r"field 'command': epsilon_perm \(4\.5\) exceeds the client cap 4\.0"
        ):
            load_schema(json.dumps(doc))

    @pytest.mark.parametrize("epsilon_1", [2.0, 2.5])
    def test_epsilon_1_not_below_epsilon_perm(self, epsilon_1: float) -> None:
        """One report must reveal less than all reports of a value; equal leaves no IRR noise."""
        with pytest.raises(
            SchemaError,
            match=rf"field 'color': epsilon_1 \({epsilon_1}\) must be below its epsilon_perm "
            r"\(2\.0\)",
        ):
            small_field(epsilon_1=epsilon_1)

    def test_per_week_sum_over_cap(self) -> None:
        """A schema whose epsilon_1 sum over all kinds exceeds the weekly cap is refused."""
        one = ReportKind("k", tuple(small_field(f"f{i}", epsilon_1=1.5) for i in range(3)))
        two = ReportKind("j", tuple(small_field(f"g{i}", epsilon_1=0.5) for i in range(3)))
        with pytest.raises(
            SchemaError,
            match=r"per-week epsilon over all kinds \(sum of epsilon_1, 6\) exceeds the client "
            r"cap 5\.5",
        ):
            Schema("s", 1, (one, two))
        Schema("s", 1, (one,))  # 4.5 alone is fine: the cap is per user-week, not per kind

    def test_yearly_bound_over_cap(self) -> None:
        """Epoch fields whose yearly bound sums above 20 are refused."""
        fields = tuple(
            small_field(f"f{i}", epsilon_perm=1.0, epsilon_1=1.0, epoch_weeks=13) for i in range(5)
        )
        with pytest.raises(SchemaError, match=r"yearly bound over all kinds \(25\) exceeds"):
            Schema("s", 1, (ReportKind("k", fields),))

    def test_exactly_at_the_caps(self) -> None:
        """Epsilons equal to the caps are allowed: the caps are inclusive."""
        pair = (small_field("a", epsilon_perm=4.0, epsilon_1=3.0), small_field("b", epsilon_1=1.0))
        kind = ReportKind("k", pair)
        assert kind.epsilon_1 == 4.0
        assert kind.fields[0].randomizer().epsilon_perm <= 4.0
        tenths = ReportKind("t", tuple(small_field(f"f{i}", epsilon_1=0.4) for i in range(10)))
        assert math.isclose(tenths.epsilon_1, 4.0)

    def test_just_over_the_cap(self) -> None:
        """A sum a millionth over the cap is refused (the rounding slack is far smaller)."""
        fields = (
            small_field("a", epsilon_perm=3.0, epsilon_1=2.0),
            small_field("b", epsilon_perm=3.0, epsilon_1=2.0),
            small_field("c", epsilon_perm=3.0, epsilon_1=1.500001),
        )
        with pytest.raises(SchemaError, match="exceeds the client cap"):
            Schema("s", 1, (ReportKind("k", fields),))

    def test_server_cannot_raise_caps(self) -> None:
        """A schema text that asks for more than the caps never loads, whatever else it says."""
        doc = shipped_doc()
        for field in doc["kinds"][0]["fields"]:
            field["epsilon_perm"] = 8.0
            field["epsilon_1"] = 4.0
        with pytest.raises(SchemaError, match=r"epsilon_perm \(8\.0\) exceeds the client cap"):
            load_schema(json.dumps(doc))
        # Nor can it carry caps of its own: there is no such key.
        doc = shipped_doc()
        doc["caps"] = {"epsilon_perm": 8.0}
        with pytest.raises(SchemaError, match="unknown key 'caps'"):
            load_schema(json.dumps(doc))


class TestFieldSpec:
    def test_index_maps_unknown_to_other(self) -> None:
        """Known values map to their index; anything else to the last index, "other"."""
        spec = small_field()
        assert spec.index("red") == 0
        assert spec.index("green") == 1
        assert spec.index("other") == 2
        assert spec.index("blue") == 2
        assert spec.index("") == 2
        assert spec.index(None) == 2
        assert spec.index("RED") == 2

    def test_indices_drop_unknown_items(self) -> None:
        """A set value keeps only the items the domain lists."""
        spec = FieldSpec("mods", "set", ("a", "b", "c"), 2.0, 1.0, "oue", pad=2)
        assert spec.indices({"a", "c", "zzz", "/home/alice"}) == frozenset({0, 2})
        assert spec.indices([]) == frozenset()
        assert spec.indices(["b", "b"]) == frozenset({1})

    def test_indices_refuse_a_bare_string(self) -> None:
        """A string is not a set of strings (it would iterate over characters)."""
        spec = FieldSpec("mods", "set", ("a", "b", "c"), 2.0, 1.0, "oue", pad=2)
        with pytest.raises(ParameterError, match="collection of strings, not str"):
            spec.indices("abc")

    def test_index_and_indices_match_the_field_kind(self) -> None:
        """index() is for categorical fields, indices() for set fields."""
        with pytest.raises(ParameterError, match="categorical; use index"):
            small_field().indices({"red"})
        with pytest.raises(ParameterError, match="set field; use indices"):
            FieldSpec("mods", "set", ("a", "b"), 2.0, 1.0, "oue", pad=1).index("a")

    def test_epsilons_are_floats(self) -> None:
        """Integer epsilons are stored as floats so equal specs serialize identically."""
        spec = small_field(epsilon_perm=2, epsilon_1=1)
        assert isinstance(spec.epsilon_perm, float)
        assert spec == small_field()

    def test_domain_must_be_a_tuple(self) -> None:
        """A list domain is refused, so a spec stays immutable and hashable."""
        with pytest.raises(SchemaError, match="domain must be a tuple"):
            small_field(domain=["red", "other"])

    def test_randomizer_is_cached(self) -> None:
        """Equal specs share one randomizer object."""
        assert small_field().randomizer() is small_field().randomizer()

    def test_schema_of_specs_has_an_id(self) -> None:
        """A schema built in code has a canonical JSON that loads back to itself."""
        schema = Schema("demo", 3, (ReportKind("k", (small_field(),)),))
        assert load_schema(schema.canonical_json()) == schema
        assert schema.kind("k").field("color") == small_field()
        with pytest.raises(ParameterError, match=r"no report kind 'x' \(kinds: k\)"):
            schema.kind("x")
        with pytest.raises(ParameterError, match=r"no field 'x' \(fields: color\)"):
            schema.kind("k").field("x")

    def test_copy_is_equal(self) -> None:
        """Schemas are values: a deep copy is equal and has the same id."""
        schema = shipped_schema()
        assert copy.deepcopy(schema) == schema
        assert copy.deepcopy(schema).id == schema.id


def _table(text: str, start: str, end: str | None = None) -> list[list[str]]:
    """The body rows of the first Markdown table after ``start`` (cells stripped)."""
    tail = text[text.index(start) :]
    lines = tail.splitlines()[1:]
    rows: list[list[str]] = []
    for line in lines:
        if end is not None and line.startswith(end):
            break
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[2:]  # header and separator


def _half_width(spec: FieldSpec, n: int, f: float | None) -> float:
    """95% CI half-width of one value's frequency: 1.96 standard errors of the exact variance."""
    return 1.96 * math.sqrt(spec.randomizer().variance(n, f))


class TestSchemaDoc:
    def test_accuracy_table_is_current(self) -> None:
        """The accuracy table in docs/SCHEMA.md matches what the randomizers give at n = 10,000."""
        expected = [
            [
                kind.name,
                spec.name,
                str(spec.d),
                str(spec.pad or ""),
                spec.randomizer().mechanism,
                str(spec.epsilon_perm),
                str(spec.epsilon_1),
                f"{_half_width(spec, 10_000, None):.4f}",
                f"{_half_width(spec, 10_000, 0.5):.4f}",
            ]
            for kind in shipped_schema().kinds
            for spec in kind.fields
        ]
        rows = _table(SCHEMA_DOC.read_text(), "<!-- accuracy-table", "<!-- end")
        rendered = "\n".join("| " + " | ".join(row) + " |" for row in expected)
        assert rows == expected, f"docs/SCHEMA.md is stale; the rows should be:\n{rendered}"

    def test_half_widths_are_plausible(self) -> None:
        """Cross-check: each half-width lies between the ideal direct oracle and a loose bound."""
        for kind in shipped_schema().kinds:
            for spec in kind.fields:
                width = _half_width(spec, 10_000, None)
                # No oracle beats randomized response on 2 values at the same epsilon_1:
                # variance e^eps / (e^eps - 1)^2 / n (Wang et al. 2017, GRR with d = 2).
                e = math.exp(spec.epsilon_1)
                floor = 1.96 * math.sqrt(e / (e - 1) ** 2 / 10_000)
                assert floor < width < 0.1, spec.name

    def test_domains_in_doc(self) -> None:
        """The "What is collected" table lists each field's domain exactly."""
        rows = _table(SCHEMA_DOC.read_text(), "## What is collected")
        listed = {row[1].strip("`"): row[3] for row in rows}
        for kind in shipped_schema().kinds:
            for spec in kind.fields:
                assert listed.pop(spec.name) == ", ".join(spec.domain)
        assert listed == {}

    def test_id_in_doc(self) -> None:
        """The schema id quoted in docs/SCHEMA.md is the shipped one."""
        assert f"**`{shipped_schema().id}`**" in SCHEMA_DOC.read_text()


class TestYearTable:
    def test_year_table_is_current(self) -> None:
        """docs/SCHEMA.md's yearly table matches each field's epochs and proven bound."""
        from ldp.epochs import epochs_touched

        expected = [
            [
                kind.name,
                spec.name,
                f"{spec.randomizer().epsilon_perm:.4g}",
                str(spec.epoch_weeks),
                str(epochs_touched(spec.epoch_weeks or 1)),
                f"{spec.year_bound():.4g}",
            ]
            for kind in shipped_schema().kinds
            for spec in kind.fields
        ]
        rows = _table(SCHEMA_DOC.read_text(), "<!-- year-table", "<!-- end")
        assert rows == expected
        total = sum(spec.year_bound() for spec in shipped_schema().fields)
        assert f"**{total:.4g}**" in SCHEMA_DOC.read_text()
