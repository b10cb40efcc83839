"""Invariant 4: no payload carries the user name, host name, paths or any string of its own.

Reports are built from hostile true values (the machine's identity, paths, random text) and the
plaintext is checked two ways: every JSON string in it is a key of the format, a field name,
the kind, the period or the schema id; and none of the identifying strings occurs in its bytes.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldp.envelope import generate_keypair, open_sealed, seal
from ldp.report import REPORT_KEYS, build_report, decode_report
from ldp.sampling import SYSTEM, HmacSource
from ldp.schema import Schema, shipped_schema
from ldp.values import platform_value, version_bucket

SCHEMA = shipped_schema()
PERIOD = "2026-W48"


def _identity() -> list[str]:
    """Strings that identify this user or machine, as a careless host might pass them on."""
    found = [
        getpass.getuser(),
        socket.gethostname(),
        socket.getfqdn(),
        str(Path.home()),
        os.getcwd(),
        *(os.environ.get(k, "") for k in ("USER", "LOGNAME", "HOSTNAME", "HOME", "PWD")),
        # Synthetic ones, so the test bites even where the real ones are short or generic.
        "alice-quux-7f3k",
        "alices-macbook.local",
        "/home/alice-quux-7f3k/projects/secret-client",
        "C:\\Users\\alice-quux-7f3k",
    ]
    return sorted({s for s in found if s})


IDENTITY = _identity()


def allowed_strings(schema: Schema) -> set[str]:
    """Every string a payload of ``schema`` may contain, whatever the period."""
    names = {f.name for kind in schema.kinds for f in kind.fields}
    return set(REPORT_KEYS) | names | set(schema.kind_names) | {schema.id}


def walk(node: Any, out: list[Any]) -> None:
    """Collect every key and scalar of a decoded JSON value."""
    if isinstance(node, dict):
        for key, value in node.items():
            out.append(key)
            walk(value, out)
    elif isinstance(node, list):
        for item in node:
            walk(item, out)
    else:
        out.append(node)


def check_payload(plaintext: bytes, period: str, schema: Schema = SCHEMA) -> None:
    """Assert invariant 4 for one plaintext report."""
    atoms: list[Any] = []
    walk(json.loads(plaintext), atoms)
    allowed = allowed_strings(schema) | {period}
    for atom in atoms:
        if isinstance(atom, str):
            assert atom in allowed, f"string {atom!r} is not a format key or schema name"
        else:
            assert type(atom) is int, f"{atom!r} is neither a string nor an integer"
    # The byte-level check catches what a JSON walk cannot (escapes, fragments). A needle that
    # is itself part of the format's vocabulary (say a user called "kind") cannot be told apart
    # in the bytes; for those the walk above is the proof.
    vocabulary = " ".join(sorted(allowed))
    text = plaintext.decode("ascii")
    for needle in IDENTITY:
        if needle not in vocabulary and not needle.isdigit():
            assert needle not in text, f"{needle!r} leaked into {text}"


def hostile_value(draw: st.DrawFn, domain: tuple[str, ...]) -> str:
    """A domain value, or an identifying string, or arbitrary text, or a mix of them."""
    return draw(
        st.sampled_from(domain)
        | st.sampled_from(IDENTITY)
        | st.text(max_size=30)
        | st.builds(lambda a, b: a + b, st.sampled_from(domain), st.sampled_from(IDENTITY))
    )


@st.composite
def usage_values(draw: st.DrawFn) -> dict[str, Any]:
    """True values for a usage report, most of them hostile."""
    out: dict[str, Any] = {}
    for spec in SCHEMA.kind("usage").fields:
        if spec.kind == "set":
            items = st.sampled_from(spec.domain) | st.sampled_from(IDENTITY) | st.text(max_size=20)
            out[spec.name] = draw(st.sets(items, max_size=8))
        else:
            out[spec.name] = hostile_value(draw, spec.domain)
    return out


class TestPayloadInvariant:
    def test_identity_strings_are_present(self) -> None:
        """The needles include this machine's user, host, home and working directory."""
        assert getpass.getuser() in IDENTITY
        assert socket.gethostname() in IDENTITY
        assert str(Path.home()) in IDENTITY
        assert os.getcwd() in IDENTITY

    def test_check_catches_a_leak(self) -> None:
        """The checker itself fails on a payload that carries a foreign string."""
        report = build_report(SCHEMA, "errors", PERIOD, {"error_category": "none"}, bytes(32))
        obj = json.loads(report.encode())
        obj["fields"]["error_category"] = IDENTITY[0]
        with pytest.raises(AssertionError):
            check_payload(json.dumps(obj).encode(), PERIOD)

    @settings(max_examples=300, deadline=None)
    @given(values=usage_values(), secret=st.binary(min_size=32, max_size=32))
    def test_usage_reports(self, values: dict[str, Any], secret: bytes) -> None:
        """Usage reports built from hostile values carry no string outside the format."""
        report = build_report(SCHEMA, "usage", PERIOD, values, secret, SYSTEM)
        check_payload(report.encode(), PERIOD)

    @settings(max_examples=100, deadline=None)
    @given(
        value=st.sampled_from(SCHEMA.kind("errors").field("error_category").domain)
        | st.sampled_from(IDENTITY)
        | st.text(max_size=30),
        secret=st.binary(min_size=32, max_size=32),
    )
    def test_errors_reports(self, value: str, secret: bytes) -> None:
        """Errors reports built from hostile values carry no string outside the format."""
        report = build_report(SCHEMA, "errors", PERIOD, {"error_category": value}, secret)
        check_payload(report.encode(), PERIOD)

    def test_this_machine(self) -> None:
        """Reports from this machine's real values, over many periods, pass the check."""
        values = {
            "cli_version": version_bucket(
                "1.4.2rc1", SCHEMA.kind("usage").field("cli_version").domain
            ),
            "platform": platform_value(),
            "command": "deploy",
            "modules": {"docker", "git"},
        }
        secret = os.urandom(32)
        for week in range(1, 53):
            period = f"2027-W{week:02d}"
            report = build_report(SCHEMA, "usage", period, values, secret, HmacSource(secret, b"t"))
            check_payload(report.encode(), period)

    def test_sealed_payload_opens_to_a_clean_report(self) -> None:
        """What the analyzer opens from a sealed report is as clean as what was sealed."""
        private, public = generate_keypair()
        values = {name: IDENTITY[-1] for name in SCHEMA.kind("usage").field_names}
        values["modules"] = set(IDENTITY)
        report = build_report(SCHEMA, "usage", PERIOD, values, os.urandom(32))
        opened = open_sealed(seal(report.encode(), public), private)
        check_payload(opened, PERIOD)
        assert decode_report(opened, {SCHEMA.id: SCHEMA}) == report
