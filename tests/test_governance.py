"""Governance: what is collected changes only with a release note, and collecting more asks again.

CHANGELOG.md must name every schema id the library knows and the current policy text; a schema
that collects more than its predecessor ships with a higher policy version, so every consent
given to the older one stops covering it (``cli.consent``: source ``policy-changed``). Expired
fields are no longer read by the client.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from datetime import date, timedelta
from pathlib import Path

from cli.endpoint import load_defaults
from ldp.report import build_report, period_start
from ldp.schema import collects_more, known_schemas, load_schema, shipped_schema

REPO = Path(__file__).resolve().parent.parent
CHANGELOG = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
ENTRY = re.compile(r"\*\*Schema v(\d+)\*\* \(`([0-9a-f]{16})`\), policy version (\S+?)[.,:]")


def policy_hash() -> str:
    """First 12 hex digits of SHA-256 of the shipped policy text."""
    return hashlib.sha256((REPO / "PRIVACY.md").read_bytes()).hexdigest()[:12]


class TestChangelog:
    """The release notes name what ships."""

    def test_every_known_schema_has_an_entry(self) -> None:
        """Each schema version the library knows is named, with its id, in CHANGELOG.md."""
        entries = {int(v): sid for v, sid, _ in ENTRY.findall(CHANGELOG)}
        for schema in known_schemas():
            assert entries.get(schema.version) == schema.id, (
                f"CHANGELOG.md needs a Telemetry entry '**Schema v{schema.version}** "
                f"(`{schema.id}`), policy version N.'"
            )

    def test_current_policy_text_is_named(self) -> None:
        """The policy text that ships is named by its hash (edit PRIVACY.md, add an entry)."""
        assert f"policy text `{policy_hash()}`" in CHANGELOG, (
            f"PRIVACY.md changed: add a Telemetry entry naming policy text `{policy_hash()}`"
        )

    def test_shipped_policy_version_is_the_newest_entry(self) -> None:
        """The policy version the client ships is the one the shipped schema's entry names."""
        versions = {sid: pv for _, sid, pv in ENTRY.findall(CHANGELOG)}
        assert versions[shipped_schema().id] == str(load_defaults()["policy_version"])

    def test_collecting_more_bumps_the_policy_version(self) -> None:
        """Between consecutive schemas, collecting more means a new policy version."""
        versions = {sid: pv for _, sid, pv in ENTRY.findall(CHANGELOG)}
        schemas = known_schemas()
        for old, new in itertools.pairwise(schemas):
            if collects_more(old, new):
                assert versions[new.id] != versions[old.id], (old.id, new.id)
        v1, v2 = schemas[0], schemas[1]
        assert "new field 'platform'" in collects_more(v1, v2)
        assert collects_more(v2, v2) == ()


class TestCollectsMore:
    """collects_more names every way a schema can ask for more."""

    def test_each_kind_of_more(self) -> None:
        """A larger epsilon, a new value and a new field are each reported; less is not."""
        base = shipped_schema()
        doc = base.to_json()
        fields = doc["kinds"][0]["fields"]
        fields[0]["epsilon_perm"] = fields[0]["epsilon_1"] = 0.75
        fields[1]["domain"].insert(0, "linux-mips64")
        more = load_schema(__import__("json").dumps(doc))
        reasons = collects_more(base, more)
        assert "cli_version: larger epsilon per report" in reasons
        assert "platform: new values linux-mips64" in reasons
        assert "cli_version: larger bound over any 52 weeks" in reasons
        assert collects_more(more, base) == ()


class TestExpiry:
    """Past its expiry a field's true value is no longer read."""

    def test_expired_field_reports_a_constant(self) -> None:
        """After expiry two different commands give the same answer; before, they need not."""
        schema = shipped_schema()
        spec = schema.kind("usage").field("command")
        assert spec.expires is not None
        after = date.fromisoformat(spec.expires) + timedelta(days=7)
        period = f"{after.isocalendar()[0]}-W{after.isocalendar()[1]:02d}"
        assert period_start(period).date() > date.fromisoformat(spec.expires)
        secret = bytes(range(32))
        base = {"cli_version": "1.4", "platform": "linux-x86_64", "modules": set()}
        seen = set()
        for command in ("build", "deploy", "logs", "init", "up", "down", "status"):
            report = build_report(schema, "usage", period, {**base, "command": command}, secret)
            seen.add(tuple(report.fields["command"]))
            assert set(report.fields) == set(schema.kind("usage").field_names)
        assert len(seen) == 1
