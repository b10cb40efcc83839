"""Tests for `20i telemetry status`: the precedence matrix through the real CLI, and its shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
import typer.main
import typer.testing
from typer.testing import CliRunner

from cli.app import app
from cli.consent import NO_CONSENT, write_consent
from cli.state import Paths

ENV_NAMES = (
    "DO_NOT_TRACK",
    "TWENTYI_TELEMETRY",
    "CI",
    "TWENTYI_TELEMETRY_ENDPOINT",
    "TWENTYI_TELEMETRY_PUBLIC_KEY",
)
T0 = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
CONSENTS = ("none", "usage", "both", "disabled", "garbled")
# Every DNT spelling is covered by tests/test_consent.py; here one of each class is enough.
DNT_VALUES = (None, "", "False", "off", "1", "yes")
KILL_VALUES = (None, "0", "1")
CI_VALUES = (None, "true")


@pytest.fixture(autouse=True, scope="module")
def built_once() -> Iterator[None]:
    """Build the Click command of `20i` once: Typer rebuilds it on every invoke (~20 ms)."""
    command = typer.main.get_command(app)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda _app: command)
        yield


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """Point every user dir at tmp_path, clear the telemetry variables, cd to an empty dir."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    for var, sub in (("XDG_CONFIG_HOME", "c"), ("XDG_STATE_HOME", "s"), ("XDG_CACHE_HOME", "k")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return Paths.default()


def set_consent(paths: Paths, state: str) -> None:
    if state == "none":
        return
    if state == "garbled":
        paths.consent_file.parent.mkdir(parents=True)
        paths.consent_file.write_text('{"format": 1, "usage": ')
        return
    consent = NO_CONSENT.decided("usage", True, T0, "1", None)
    if state == "both":
        consent = consent.decided("errors", True, T0, "1", None)
    if state == "disabled":
        consent = consent.decided("usage", False, T0, "1", None)
    write_consent(paths.consent_file, consent)


def expected(
    state: str, dnt: str | None, kill: str | None, ci: str | None
) -> tuple[str, bool, bool]:
    """The rule of issue 5, written out independently of cli.consent."""
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
        assert "not configured: reports wait in the spool" in out
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
