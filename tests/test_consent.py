"""Tests for twentyi_telemetry.consent: the consent file and the precedence rules, below the CLI."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli.endpoint import load_defaults
from twentyi_telemetry import consent as consent_module
from twentyi_telemetry.consent import (
    NO_CONSENT,
    SOURCES,
    Consent,
    KindConsent,
    decide,
    env_override,
    read_consent,
    shipped_policy_version,
    write_consent,
)
from twentyi_telemetry.errors import ConsentWriteError

T0 = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
TRUTHY = ["1", "true", "TRUE", "yes", "on", "anything", " 1 "]
FALSY = ["", "0", "false", "False", "no", "OFF", " off "]
#: The policy version this 20i ships: what `enable` writes into the consent file.
POLICY = shipped_policy_version() or ""


def usage_on(moment: datetime = T0) -> Consent:
    return NO_CONSENT.decided("usage", True, moment, POLICY, "abcd")


class TestEnvOverride:
    @pytest.mark.parametrize("value", TRUTHY)
    def test_do_not_track_set_disables(self, value: str) -> None:
        """DO_NOT_TRACK set to anything but empty/0/false/no/off turns telemetry off."""
        override = env_override({"DO_NOT_TRACK": value})
        assert override is not None and override[0] == "DO_NOT_TRACK"

    @pytest.mark.parametrize("value", FALSY)
    def test_do_not_track_falsy_is_unset(self, value: str) -> None:
        """DO_NOT_TRACK empty, 0, false, no or off (any case) decides nothing."""
        assert env_override({"DO_NOT_TRACK": value}) is None

    @pytest.mark.parametrize("value", ["0", "false", "No", "off", "banana"])
    def test_kill_switch_disables(self, value: str) -> None:
        """TWENTYI_TELEMETRY=0 (or any unclear value) turns telemetry off."""
        override = env_override({"TWENTYI_TELEMETRY": value})
        assert override is not None and override[0] == "TWENTYI_TELEMETRY"

    @pytest.mark.parametrize("value", ["", "1", "true", "YES", "on"])
    def test_kill_switch_cannot_enable(self, value: str) -> None:
        """TWENTYI_TELEMETRY=1 and friends decide nothing: env can only disable."""
        assert env_override({"TWENTYI_TELEMETRY": value}) is None

    def test_ci_disables(self) -> None:
        """CI set means nothing is recorded or sent."""
        override = env_override({"CI": "true"})
        assert override is not None and override[0] == "CI"
        assert env_override({"CI": "false"}) is None

    def test_precedence_order(self) -> None:
        """DO_NOT_TRACK beats TWENTYI_TELEMETRY, which beats CI."""
        everything = {"DO_NOT_TRACK": "1", "TWENTYI_TELEMETRY": "0", "CI": "1"}
        assert env_override(everything)[0] == "DO_NOT_TRACK"  # type: ignore[index]
        del everything["DO_NOT_TRACK"]
        assert env_override(everything)[0] == "TWENTYI_TELEMETRY"  # type: ignore[index]


class TestConsentFile:
    def test_round_trip(self, tmp_path: Path) -> None:
        """What write_consent writes, read_consent reads back unchanged."""
        path = tmp_path / "c" / "telemetry-consent.json"
        consent = usage_on().decided("errors", True, T0 + timedelta(hours=1), POLICY, "abcd")
        write_consent(path, consent)
        read = read_consent(path)
        assert read.state == "ok" and read.consent == consent

    def test_file_shape(self, tmp_path: Path) -> None:
        """The file holds usage and errors separately, UTC as-of times and the versions."""
        path = tmp_path / "consent.json"
        write_consent(path, usage_on())
        document = json.loads(path.read_text())
        assert document == {
            "format": 1,
            "usage": {"enabled": True, "as_of": "2026-11-23T09:30:00Z"},
            "errors": {"enabled": False, "as_of": None},
            "policy_version": POLICY,
            "schema_id": "abcd",
        }

    def test_mode_0600_and_no_temp_left(self, tmp_path: Path) -> None:
        """The file is private to the user and the atomic write leaves no temp file."""
        path = tmp_path / "consent.json"
        old_umask = os.umask(0)
        try:
            write_consent(path, usage_on())
        finally:
            os.umask(old_umask)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in tmp_path.iterdir()] == ["consent.json"]

    def test_replace_is_atomic(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A write that fails before the rename leaves the old file intact and no temp file."""
        path = tmp_path / "consent.json"
        write_consent(path, usage_on())
        before = path.read_bytes()

        def broken_replace(src: object, dst: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken_replace)
        with pytest.raises(ConsentWriteError, match="No space left on device"):
            write_consent(path, NO_CONSENT.decided("usage", False, T0, POLICY, None))
        assert path.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["consent.json"]

    def test_missing_is_missing(self, tmp_path: Path) -> None:
        """No file means no consent and no problem."""
        read = read_consent(tmp_path / "nope.json")
        assert (read.state, read.consent, read.problem) == ("missing", None, None)

    @pytest.mark.parametrize(
        ("content", "fragment"),
        [
            (b"{not json", "not valid JSON"),
            (b"\xff\xfe", "not valid JSON"),
            (b"[]", "top level must be an object"),
            (b'{"format": 2}', "format is 2"),
            (b'{"format": 1, "policy_version": 1}', "policy_version"),
            (
                b'{"format": 1, "policy_version": "1", "usage": {"enabled": "yes"}}',
                "usage.enabled",
            ),
            (
                b'{"format": 1, "policy_version": "1", "schema_id": null,'
                b' "usage": {"enabled": true, "as_of": null}, "errors": {"enabled": false}}',
                "no as_of",
            ),
            (
                b'{"format": 1, "policy_version": "1", "schema_id": null,'
                b' "usage": {"enabled": true, "as_of": "2026-11-23T09:30:00"},'
                b' "errors": {"enabled": false, "as_of": null}}',
                "no time zone",
            ),
        ],
    )
    def test_garbled_is_unreadable(self, tmp_path: Path, content: bytes, fragment: str) -> None:
        """A garbled file means no consent, with a problem naming what is wrong."""
        path = tmp_path / "consent.json"
        path.write_bytes(content)
        read = read_consent(path)
        assert read.state == "unreadable" and read.consent is None
        assert read.problem is not None and fragment in read.problem

    def test_directory_is_unreadable(self, tmp_path: Path) -> None:
        """A directory where the file should be means no consent (root cannot read it either)."""
        path = tmp_path / "consent.json"
        path.mkdir()
        assert read_consent(path).state == "unreadable"

    def test_parent_is_a_file(self, tmp_path: Path) -> None:
        """A regular file where the config dir should be: unreadable, and writing fails cleanly."""
        (tmp_path / "config").write_text("I am a file")
        path = tmp_path / "config" / "consent.json"
        assert read_consent(path).state == "unreadable"
        with pytest.raises(ConsentWriteError, match=r"cannot write the consent file"):
            write_consent(path, usage_on())


class TestDecided:
    def test_reenable_keeps_date(self) -> None:
        """Enabling what is already enabled keeps the original as-of time."""
        later = usage_on().decided("usage", True, T0 + timedelta(days=3), POLICY, "abcd")
        assert later.usage.as_of == T0

    def test_disable_redates(self) -> None:
        """Disabling records when the user changed their mind."""
        off = usage_on().decided("usage", False, T0 + timedelta(days=3), POLICY, "abcd")
        assert off.usage == KindConsent(False, T0 + timedelta(days=3))

    def test_kinds_are_separate(self) -> None:
        """Enabling errors leaves usage untouched and vice versa."""
        both = usage_on().decided("errors", True, T0 + timedelta(days=1), POLICY, "abcd")
        assert both.usage == KindConsent(True, T0)
        assert both.errors == KindConsent(True, T0 + timedelta(days=1))

    def test_new_policy_redates_every_enabled_kind(self) -> None:
        """Accepting a new policy dates all enabled kinds anew, so older counts are never sent."""
        old = NO_CONSENT.decided("usage", True, T0, "0", "abcd").decided(
            "errors", True, T0, "0", "abcd"
        )
        later = T0 + timedelta(days=10)
        accepted = old.decided("usage", True, later, POLICY, "abcd")
        assert accepted.usage == KindConsent(True, later)
        assert accepted.errors == KindConsent(True, later)
        assert accepted.policy_version == POLICY


class TestDecide:
    def test_missing_file(self, tmp_path: Path) -> None:
        """Without a consent file telemetry is off: not opted in."""
        decision = decide({}, tmp_path / "c.json")
        assert (decision.usage, decision.errors, decision.source) == (False, False, "not-opted-in")

    def test_consent_decides(self, tmp_path: Path) -> None:
        """With a readable file and a quiet environment, the file decides per kind."""
        path = tmp_path / "c.json"
        write_consent(path, usage_on())
        decision = decide({}, path)
        assert (decision.usage, decision.errors, decision.source) == (True, False, "consent")

    def test_garbled_file(self, tmp_path: Path) -> None:
        """A garbled file is off with source unreadable-config and the problem in the reason."""
        path = tmp_path / "c.json"
        path.write_text("{")
        decision = decide({}, path)
        assert decision.source == "unreadable-config" and "not valid JSON" in decision.reason
        assert not decision.any_on

    def test_env_decides_without_reading(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the environment turns telemetry off, the consent file is not even opened."""
        reads: list[Path] = []
        monkeypatch.setattr(consent_module, "read_small", lambda p: reads.append(p) or b"")
        decision = decide({"DO_NOT_TRACK": "1"}, tmp_path / "c.json")
        assert decision.source == "DO_NOT_TRACK" and decision.consent_file is None
        assert reads == []

    def test_inspect_reads_anyway(self, tmp_path: Path) -> None:
        """status asks to see the file even when the environment decides."""
        path = tmp_path / "c.json"
        write_consent(path, usage_on())
        decision = decide({"CI": "1"}, path, inspect=True)
        assert decision.source == "CI" and not decision.any_on
        assert decision.consent_file is not None and decision.consent_file.consent == usage_on()

    def test_kill_switch_one_notes(self, tmp_path: Path) -> None:
        """TWENTYI_TELEMETRY=1 without consent stays off and says why."""
        decision = decide({"TWENTYI_TELEMETRY": "1"}, tmp_path / "c.json")
        assert decision.source == "not-opted-in"
        assert any("cannot turn telemetry on" in note for note in decision.notes)

    def test_sources_are_the_documented_ones(self) -> None:
        """The source names are the stable strings docs/CLI.md lists."""
        assert SOURCES == (
            "DO_NOT_TRACK",
            "TWENTYI_TELEMETRY",
            "CI",
            "unreadable-config",
            "not-opted-in",
            "policy-changed",
            "consent",
        )


class TestPolicyVersion:
    def test_shipped_version_is_the_defaults_one(self) -> None:
        """The cheap read agrees with the package-data loader the CLI uses to write consent."""
        assert shipped_policy_version() == load_defaults()["policy_version"]

    def test_old_policy_turns_everything_off(self, tmp_path: Path) -> None:
        """Consent given to another policy version is off, named policy-changed, with the fix."""
        path = tmp_path / "c.json"
        old = usage_on().decided("errors", True, T0, "0", "abcd")
        write_consent(path, old)
        decision = decide({}, path)
        assert (decision.usage, decision.errors, decision.source) == (
            False,
            False,
            "policy-changed",
        )
        assert "version 0" in decision.reason and f"version {shipped_policy_version()}" in (
            decision.reason
        )
        assert "run `20i telemetry enable` to accept the new policy" in decision.reason

    def test_errors_only_is_told_to_enable_errors(self, tmp_path: Path) -> None:
        """With only error reports on, the fix named is `enable --errors` (usage stays off)."""
        path = tmp_path / "c.json"
        write_consent(path, NO_CONSENT.decided("errors", True, T0, "0", None))
        decision = decide({}, path)
        assert decision.source == "policy-changed"
        assert "`20i telemetry enable --errors`" in decision.reason

    def test_missing_version_is_a_change(self, tmp_path: Path) -> None:
        """A consent with an empty policy version (never accepted one) is not consent."""
        path = tmp_path / "c.json"
        write_consent(path, NO_CONSENT.decided("usage", True, T0, "", None))
        assert decide({}, path).source == "policy-changed"

    def test_opt_out_under_old_policy_stays_consent(self, tmp_path: Path) -> None:
        """Nothing enabled: the old version changes nothing, the user's "no" decides."""
        path = tmp_path / "c.json"
        write_consent(path, NO_CONSENT.decided("usage", False, T0, "0", None))
        decision = decide({}, path)
        assert decision.source == "consent" and not decision.any_on

    def test_schema_change_alone_keeps_consent(self, tmp_path: Path) -> None:
        """Another schema id under the same policy version needs no re-consent (documented)."""
        path = tmp_path / "c.json"
        current = shipped_policy_version()
        assert current is not None
        write_consent(path, NO_CONSENT.decided("usage", True, T0, current, "0000000000000000"))
        decision = decide({}, path)
        assert decision.source == "consent" and decision.usage

    def test_environment_still_comes_first(self, tmp_path: Path) -> None:
        """DO_NOT_TRACK outranks a policy change, as it outranks everything."""
        path = tmp_path / "c.json"
        write_consent(path, NO_CONSENT.decided("usage", True, T0, "0", None))
        assert decide({"DO_NOT_TRACK": "1"}, path, inspect=True).source == "DO_NOT_TRACK"

    def test_unreadable_shipped_version_fails_closed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If this 20i cannot name its own policy version, no consent matches it: off."""
        broken = tmp_path / "defaults.json"
        broken.write_text('{"policy_version": 1}')  # a number, not the string version
        monkeypatch.setattr(consent_module, "_DEFAULTS_FILE", broken)
        assert shipped_policy_version() is None
        path = tmp_path / "c.json"
        write_consent(path, usage_on())
        decision = decide({}, path)
        assert decision.source == "policy-changed" and not decision.any_on
        assert "cannot read its own privacy policy version" in decision.reason
