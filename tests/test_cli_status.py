"""Tests for `20i telemetry status`: the precedence matrix through the real CLI, and its shape."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.endpoint import load_defaults
from cli.spool import MAX_REPORTS
from ldp.envelope import generate_keypair, public_key_to_text
from tests.cli_support import (  # noqa: F401 - fixtures
    ENV_NAMES,
    built_once_fixture,
    journal_tally,
    paths_fixture,
)
from twentyi_telemetry import tracking
from twentyi_telemetry.consent import NO_CONSENT, write_consent
from twentyi_telemetry.state import Paths, count_spooled
from twentyi_telemetry.tally import ErrorsTally, Tally, UsageTally, write_tally

T0 = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # 2026-W49: week 2026-W48 of T0 has ended
POLICY = CURRENT_POLICY = load_defaults()["policy_version"]
CONSENTS = ("none", "usage", "both", "disabled", "garbled", "old-policy")
# Every DNT spelling is covered by tests/test_consent.py; here one of each class is enough.
DNT_VALUES = (None, "", "False", "off", "1", "yes")
KILL_VALUES = (None, "0", "1")
CI_VALUES = (None, "true")


def set_consent(paths: Paths, state: str) -> None:
    if state == "none":
        return
    if state == "garbled":
        paths.consent_file.parent.mkdir(parents=True)
        paths.consent_file.write_text('{"format": 1, "usage": ')
        return
    if state == "old-policy":
        write_old_policy(paths)
        return
    consent = NO_CONSENT.decided("usage", True, T0, POLICY, None)
    if state == "both":
        consent = consent.decided("errors", True, T0, POLICY, None)
    if state == "disabled":
        consent = consent.decided("usage", False, T0, POLICY, None)
    write_consent(paths.consent_file, consent)
    paths.state_dir.mkdir(parents=True, exist_ok=True)  # as `enable` leaves it


def write_old_policy(paths: Paths) -> None:
    """A consent file as `enable` wrote it under policy version 0: usage and errors on."""
    paths.consent_file.parent.mkdir(parents=True, exist_ok=True)
    on = {"enabled": True, "as_of": "2026-11-23T09:30:00Z"}
    document = {"format": 1, "policy_version": "0", "schema_id": None, "usage": on, "errors": on}
    paths.consent_file.write_text(json.dumps(document))


def finished_tally() -> Tally:
    """Week 2026-W48, recorded after T0 under the old consent, with one command and error."""
    since = T0.replace(hour=10)
    tally = Tally("2026-W48", 1, UsageTally(since), ErrorsTally(since))
    assert tally.usage is not None and tally.errors is not None
    tally.usage.add("up", ["docker"], "1.4")
    tally.errors.add("network")
    return tally


def expected(
    state: str, dnt: str | None, kill: str | None, ci: str | None
) -> tuple[str, bool, bool]:
    """The rule of issue 5, written out independently of twentyi_telemetry.consent."""
    if dnt is not None and dnt.strip().lower() not in {"", "0", "false", "no", "off"}:
        return ("DO_NOT_TRACK", False, False)
    if kill == "0":
        return ("TWENTYI_TELEMETRY", False, False)
    if ci:
        return ("CI", False, False)
    return {
        "none": ("not-opted-in", False, False),
        "usage": ("consent", True, False),
        "both": ("consent", True, True),
        "disabled": ("consent", False, False),
        "garbled": ("unreadable-config", False, False),
        "old-policy": ("policy-changed", False, False),
    }[state]


def environment(dnt: str | None, kill: str | None, ci: str | None) -> dict[str, str | None]:
    return {"DO_NOT_TRACK": dnt, "TWENTYI_TELEMETRY": kill, "CI": ci}


class TestPrecedenceMatrix:
    @pytest.mark.parametrize("ci", CI_VALUES)
    @pytest.mark.parametrize("kill", KILL_VALUES)
    @pytest.mark.parametrize("dnt", DNT_VALUES)
    @pytest.mark.parametrize("state", CONSENTS)
    def test_status_names_the_deciding_source(
        self, paths: Paths, state: str, dnt: str | None, kill: str | None, ci: str | None
    ) -> None:
        """consent x DO_NOT_TRACK x TWENTYI_TELEMETRY x CI: on/off per kind and the source."""
        set_consent(paths, state)
        source, usage, errors = expected(state, dnt, kill, ci)
        env = environment(dnt, kill, ci)
        result = CliRunner().invoke(app, ["telemetry", "status", "--json"], env=env)
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert (document["source"], document["usage"]["on"], document["errors"]["on"]) == (
            source,
            usage,
            errors,
        )
        assert document["sending"] is False  # no endpoint is configured in this matrix

    @pytest.mark.parametrize(
        ("state", "env", "source"),
        [
            ("usage", {"DO_NOT_TRACK": "1"}, "DO_NOT_TRACK"),
            ("usage", {"TWENTYI_TELEMETRY": "0"}, "TWENTYI_TELEMETRY"),
            ("usage", {"CI": "true"}, "CI"),
            ("garbled", {}, "unreadable-config"),
            ("none", {}, "not-opted-in"),
            ("both", {}, "consent"),
        ],
    )
    def test_text_names_the_source(
        self, paths: Paths, state: str, env: dict[str, str], source: str
    ) -> None:
        """The plain-text status names the same deciding source as the JSON."""
        set_consent(paths, state)
        result = CliRunner().invoke(app, ["telemetry", "status"], env=env)
        assert result.exit_code == 0
        decided = next(line for line in result.stdout.splitlines() if line.startswith("decided"))
        assert decided.split()[2] == f"{source}:"


class TestStatusText:
    def test_not_opted_in(self, paths: Paths) -> None:
        """A fresh machine: both kinds off, not opted in, files and spool listed."""
        result = CliRunner().invoke(app, ["telemetry", "status"])
        assert result.exit_code == 0
        out = result.stdout
        assert "usage reports  off" in out and "error reports  off" in out
        assert "not-opted-in" in out and str(paths.consent_file) in out
        assert str(paths.state_dir) in out and str(paths.cache_dir) in out
        assert "wait in the spool" not in out  # nothing is on, so nothing waits
        assert "0 report(s)" in out

    def test_ci_says_nothing_is_sent(self, paths: Paths) -> None:
        """In CI status says that nothing is sent, even with consent on file."""
        set_consent(paths, "usage")
        result = CliRunner().invoke(app, ["telemetry", "status"], env={"CI": "1"})
        assert "nothing is recorded or sent in CI" in result.stdout
        assert "you opted in" in result.stdout

    def test_waiting_reports_counted(self, paths: Paths) -> None:
        """Sealed reports in the spool are counted; temp files and others are not."""
        paths.spool_dir.mkdir(parents=True)
        for name in ("a.sealed", "b.sealed", ".c.sealed.tmp", "notes.txt"):
            (paths.spool_dir / name).write_bytes(b"x")
        set_consent(paths, "usage")
        result = CliRunner().invoke(app, ["telemetry", "status", "--json"])
        assert json.loads(result.stdout)["spool"] == {"waiting": 2}


STATUS_KEYS = {
    "format",
    "usage",
    "errors",
    "source",
    "reason",
    "sending",
    "delivery",
    "consent_file",
    "paths",
    "endpoint",
    "spool",
    "notes",
}


class TestStatusJson:
    def test_shape(self, paths: Paths) -> None:
        """status --json has exactly the documented keys and types (docs/CLI.md)."""
        set_consent(paths, "usage")
        document = json.loads(CliRunner().invoke(app, ["telemetry", "status", "--json"]).stdout)
        assert set(document) == STATUS_KEYS and document["format"] == 1
        for kind in ("usage", "errors"):
            assert set(document[kind]) == {"on", "consent"}
            assert set(document[kind]["consent"]) == {"enabled", "as_of"}
        assert document["usage"]["consent"] == {"enabled": True, "as_of": "2026-11-23T09:30:00Z"}
        assert set(document["consent_file"]) == {
            "path",
            "state",
            "problem",
            "policy_version",
            "schema_id",
            "current_policy_version",
        }
        assert set(document["paths"]) == {
            "config_dir",
            "consent_file",
            "config_file",
            "state_dir",
            "cache_dir",
            "spool_dir",
            "sent_log",
        }
        assert set(document["endpoint"]) == {
            "url",
            "url_source",
            "public_key",
            "public_key_source",
            "public_key_fingerprint",
            "configured",
            "problems",
        }
        assert isinstance(document["notes"], list) and isinstance(document["reason"], str)


class TestPolicyChanged:
    def test_status_json_says_policy_changed(self, paths: Paths) -> None:
        """Consent to policy 0 is off for both kinds, names the versions and the fix."""
        write_old_policy(paths)
        result = CliRunner().invoke(app, ["telemetry", "status", "--json"])
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert document["source"] == "policy-changed"
        assert (document["usage"]["on"], document["errors"]["on"]) == (False, False)
        assert document["usage"]["consent"]["enabled"] is True  # the file is shown as it is
        assert document["consent_file"]["policy_version"] == "0"
        assert document["consent_file"]["current_policy_version"] == CURRENT_POLICY
        assert document["delivery"] == "off" and document["sending"] is False
        assert "run `20i telemetry enable` to accept the new policy" in document["reason"]

    def test_status_text_says_policy_changed(self, paths: Paths) -> None:
        """The text status names the source and tells the user what to run."""
        write_old_policy(paths)
        out = CliRunner().invoke(app, ["telemetry", "status"]).stdout
        decided = next(line for line in out.splitlines() if line.startswith("decided by"))
        assert decided.split()[2] == "policy-changed:" and "20i telemetry enable" in decided
        assert "off here (you opted in, but see 'decided by')" in out

    def test_host_path_records_nothing(self, paths: Paths, tmp_path: Path) -> None:
        """Under a changed policy a host command counts nothing and rolls nothing over."""
        write_old_policy(paths)
        write_tally(paths.tally_file, finished_tally())
        before = paths.tally_file.read_bytes()
        _, public = generate_keypair()
        env = {**os.environ, "TWENTYI_TELEMETRY_PUBLIC_KEY": public_key_to_text(public)}
        tracking.record("up", modules=["docker"], error="network", env=env, paths=paths, now=NOW)
        assert paths.tally_file.read_bytes() == before  # neither counted nor rolled over
        assert count_spooled(paths) == 0 and not paths.epochs_file.exists()
        assert sorted(p.name for p in paths.state_dir.iterdir()) == ["tally.json"]  # no journal
        assert not paths.cache_dir.exists()

    def test_enable_accepts_the_new_policy(self, paths: Paths) -> None:
        """`enable` records the shipped version; consent then decides and counting resumes."""
        write_old_policy(paths)
        assert CliRunner().invoke(app, ["telemetry", "enable"]).exit_code == 0
        document = json.loads(CliRunner().invoke(app, ["telemetry", "status", "--json"]).stdout)
        assert document["source"] == "consent"
        assert (document["usage"]["on"], document["errors"]["on"]) == (True, True)
        # Accepting the new policy re-dates consent: older counts are never reported under it.
        as_of = datetime.fromisoformat(document["usage"]["consent"]["as_of"])
        assert as_of > T0
        assert document["consent_file"]["policy_version"] == CURRENT_POLICY
        tracking.record("up", env=dict(os.environ), paths=paths, now=datetime.now(UTC))
        tally = journal_tally(paths)
        assert tally is not None and tally.usage is not None
        assert tally.usage.commands == {"up": 1}


class TestDelivery:
    @pytest.fixture
    def key(self) -> str:
        return public_key_to_text(generate_keypair()[1])

    def status(self, env: dict[str, str]) -> dict[str, object]:
        result = CliRunner().invoke(app, ["telemetry", "status", "--json"], env=env)
        assert result.exit_code == 0, result.output
        document: dict[str, object] = json.loads(result.stdout)
        return document

    def test_no_key_discards(self, paths: Paths) -> None:
        """Without an analyzer key status says finished weeks are discarded, not spooled."""
        set_consent(paths, "usage")
        for env in ({}, {"TWENTYI_TELEMETRY_ENDPOINT": "https://t.example/"}):
            document = self.status(env)
            assert document["delivery"] == "discard" and document["sending"] is False
            notes = document["notes"]
            assert isinstance(notes, list) and len(notes) == 1
            assert notes[0].startswith("no analyzer key is configured: finished weeks are")
            assert "wait in the spool" not in notes[0]

    def test_no_key_drops_waiting_reports(self, paths: Paths) -> None:
        """Reports already spooled cannot be sent without their key, and status says so."""
        set_consent(paths, "usage")
        paths.spool_dir.mkdir(parents=True)
        (paths.spool_dir / "a.sealed").write_bytes(b"x")
        notes = self.status({})["notes"]
        assert isinstance(notes, list)
        assert any(n.startswith("1 spooled report(s) cannot be sent") for n in notes)

    def test_key_without_endpoint_spools(self, paths: Paths, key: str) -> None:
        """With a key but no endpoint, reports are sealed and wait in the spool, bounded."""
        set_consent(paths, "usage")
        document = self.status({"TWENTYI_TELEMETRY_PUBLIC_KEY": key})
        assert document["delivery"] == "spool" and document["sending"] is False
        assert document["notes"] == [
            f"no endpoint is configured: finished weeks are sealed and wait in the spool until"
            f" one is (at most {MAX_REPORTS} reports, each dropped unsent after 8 weeks)"
        ]
        out = (
            CliRunner()
            .invoke(app, ["telemetry", "status"], env={"TWENTYI_TELEMETRY_PUBLIC_KEY": key})
            .stdout
        )
        rows = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("end"))
        assert rows == {"endpoint": "not configured"}

    def test_key_and_endpoint_send(self, paths: Paths, key: str) -> None:
        """With both configured, status says reports are sent and adds no note."""
        set_consent(paths, "usage")
        env = {"TWENTYI_TELEMETRY_PUBLIC_KEY": key, "TWENTYI_TELEMETRY_ENDPOINT": "https://t.ex/"}
        document = self.status(env)
        assert (document["delivery"], document["sending"], document["notes"]) == (
            "send",
            True,
            [],
        )

    def test_off_is_off(self, paths: Paths, key: str) -> None:
        """With telemetry off nothing is delivered, whatever is configured."""
        set_consent(paths, "disabled")
        assert self.status({"TWENTYI_TELEMETRY_PUBLIC_KEY": key})["delivery"] == "off"


class TestStateFolder:
    def test_missing_state_folder_is_noted(self, paths: Paths) -> None:
        """With telemetry on but the state folder gone, status says nothing is counted."""
        assert CliRunner().invoke(app, ["telemetry", "enable"]).exit_code == 0
        for child in paths.state_dir.iterdir():
            child.unlink()
        paths.state_dir.rmdir()
        document = json.loads(CliRunner().invoke(app, ["telemetry", "status", "--json"]).stdout)
        assert any("is missing, so nothing is counted" in n for n in document["notes"])
