"""Tests for where telemetry keeps its files and how the CLI copes with broken config."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
import typer.testing
from typer.testing import CliRunner

from cli.app import app, main
from ldp.envelope import fingerprint, generate_keypair, public_key_to_text
from tests.cli_support import (  # noqa: F401 - fixtures
    ENV_NAMES,
    built_once_fixture,
    isolate,
    journal_tally,
)
from twentyi_telemetry import state as state_module
from twentyi_telemetry import tracking
from twentyi_telemetry.state import Paths

EVERY_COMMAND = (
    ["enable"],
    ["enable", "--errors"],
    ["status"],
    ["status", "--json"],
    ["info", "--json"],
    ["preview"],
    ["log"],
    ["policy"],
    ["disable", "--errors"],
    ["disable"],
    ["disable", "--purge"],
)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Clear the telemetry variables, point the user dirs at tmp_path; return an empty cwd."""
    return isolate(tmp_path, monkeypatch, tmp_path / "xdg")


def run(*args: str, env: dict[str, str | None] | None = None) -> typer.testing.Result:
    return CliRunner().invoke(app, ["telemetry", *args], env=env)


def status(env: dict[str, str | None] | None = None) -> dict[str, Any]:
    result = run("status", "--json", env=env)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


class TestStateLocation:
    def test_paths_follow_xdg(self, work: Path, tmp_path: Path) -> None:
        """Consent goes under XDG_CONFIG_HOME/20i, state and cache under telemetry folders."""
        paths = Paths.default()
        xdg = tmp_path / "xdg"
        assert paths.consent_file == xdg / "c" / "20i" / "telemetry-consent.json"
        assert paths.state_dir == xdg / "s" / "20i" / "telemetry"
        assert paths.spool_dir == xdg / "k" / "20i" / "telemetry" / "spool"

    def test_no_command_touches_the_working_directory(self, work: Path, tmp_path: Path) -> None:
        """Every command, and host recording, leaves the working directory and HOME empty."""
        for args in EVERY_COMMAND[:2]:
            assert run(*args).exit_code == 0
        tracking.record("up", modules=["docker"], version="1.4.0")
        assert journal_tally(Paths.default()) is not None
        for args in EVERY_COMMAND[2:]:
            result = run(*args)
            assert result.exit_code == 0, (args, result.output)
        assert list(work.iterdir()) == []
        assert not (tmp_path / "home").exists()
        written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
        assert written == {"xdg"}


class TestBrokenConfig:
    def test_garbled_consent(self, work: Path) -> None:
        """A garbled consent file: off, status says why, enable repairs it."""
        paths = Paths.default()
        paths.consent_file.parent.mkdir(parents=True)
        paths.consent_file.write_text("{{{ definitely not json")
        document = status()
        assert document["source"] == "unreadable-config"
        assert "not valid JSON" in str(document["consent_file"])
        text = run("status").stdout
        assert "unreadable-config" in text and "garbled" in text
        tracking.record("up")  # the host is unaffected
        assert run("enable").exit_code == 0
        assert status()["source"] == "consent"

    def test_consent_path_is_a_directory(
        self, work: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A directory where the consent file belongs: off; enable fails with one line, exit 1."""
        paths = Paths.default()
        paths.consent_file.mkdir(parents=True)
        assert status()["source"] == "unreadable-config"
        assert main(["telemetry", "enable"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("20i: error: cannot write the consent file")
        assert "Traceback" not in err

    def test_config_dir_cannot_exist(
        self, work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """XDG_CONFIG_HOME is a regular file: status works, enable exits 1 with one line."""
        blocker = tmp_path / "blocker"
        blocker.write_text("a file, not a directory")
        monkeypatch.setenv("XDG_CONFIG_HOME", str(blocker))
        assert status()["usage"] == {"on": False, "consent": {"enabled": False, "as_of": None}}
        result = run("enable")
        assert result.exit_code == 1
        assert result.stderr.startswith("20i: error: cannot write the consent file")
        assert result.stderr.count("\n") == 1
        assert run("disable").exit_code == 1
        tracking.record("up")  # the host is unaffected

    def test_read_only_config_dir(self, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A read-only config dir (EROFS, simulated: tests run as root) fails enable cleanly."""
        paths = Paths.default()
        paths.config_dir.mkdir(parents=True)
        real_open = os.open

        def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if str(path).startswith(str(paths.config_dir)) and flags & os.O_CREAT:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(state_module.os, "open", read_only)
        result = run("enable")
        assert result.exit_code == 1
        assert result.stderr == (
            f"20i: error: cannot write the consent file {paths.consent_file}:"
            " Read-only file system\n"
        )
        assert status()["source"] == "not-opted-in"

    def test_state_dir_cannot_exist(
        self, work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An impossible state dir makes enable fail before consent is written."""
        blocker = tmp_path / "state-blocker"
        blocker.write_text("x")
        monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
        result = run("enable")
        assert result.exit_code == 1
        assert result.stderr.startswith("20i: error: cannot write the telemetry secret")
        assert status()["source"] == "not-opted-in"

    def test_corrupt_secret(self, work: Path) -> None:
        """A secret of the wrong length is reported in one line, and --purge clears it."""
        assert run("enable").exit_code == 0
        Paths.default().secret_file.write_bytes(b"short")
        result = run("preview")
        assert result.exit_code == 0 and "expected 32" in result.stdout
        assert run("disable", "--purge").exit_code == 0
        assert run("enable").exit_code == 0


class TestEndpointConfig:
    def test_defaults_are_unconfigured(self, work: Path) -> None:
        """The distribution ships no endpoint or key yet: finished weeks are discarded."""
        run("enable")
        document = status()
        endpoint = document["endpoint"]
        assert isinstance(endpoint, dict)
        assert (endpoint["url"], endpoint["configured"], document["sending"]) == (
            None,
            False,
            False,
        )
        assert document["delivery"] == "discard"
        assert any("finished weeks are discarded" in note for note in document["notes"])
        assert not any("wait in the spool" in note for note in document["notes"])

    def test_user_config_then_env(self, work: Path) -> None:
        """The user config sets endpoint and key; the environment overrides both."""
        _, public = generate_keypair()
        _, other = generate_keypair()
        paths = Paths.default()
        paths.config_dir.mkdir(parents=True)
        paths.config_file.write_text(
            json.dumps(
                {"endpoint": "https://self.example/", "public_key": public_key_to_text(public)}
            )
        )
        run("enable")
        endpoint = status()["endpoint"]
        assert isinstance(endpoint, dict)
        assert (endpoint["url"], endpoint["url_source"]) == ("https://self.example/", "config")
        assert endpoint["public_key_fingerprint"] == fingerprint(public)
        env = {
            "TWENTYI_TELEMETRY_ENDPOINT": "http://127.0.0.1:9/",
            "TWENTYI_TELEMETRY_PUBLIC_KEY": public_key_to_text(other),
        }
        document = status(env)
        endpoint = document["endpoint"]
        assert isinstance(endpoint, dict)
        assert (endpoint["url_source"], endpoint["public_key_source"]) == ("env", "env")
        assert endpoint["public_key_fingerprint"] == fingerprint(other)
        assert document["sending"] is True

    @pytest.mark.parametrize(
        ("env", "problem"),
        [
            ({"TWENTYI_TELEMETRY_ENDPOINT": "ftp://x"}, "must be an https:// URL"),
            ({"TWENTYI_TELEMETRY_ENDPOINT": "https://t.example:99999/"}, "port must be in"),
            ({"TWENTYI_TELEMETRY_ENDPOINT": "https://t.example:0/"}, "port must be in"),
            ({"TWENTYI_TELEMETRY_ENDPOINT": "https://t.example:/"}, "port must be in"),
            ({"TWENTYI_TELEMETRY_ENDPOINT": "https://u:pw@t.example/"}, "user or password"),
            ({"TWENTYI_TELEMETRY_ENDPOINT": "https://u@t.example/"}, "user or password"),
            ({"TWENTYI_TELEMETRY_ENDPOINT": "http://t.example/"}, "must be https://"),
            ({"TWENTYI_TELEMETRY_ENDPOINT": "http://10.0.0.1:8020/"}, "must be https://"),
            ({"TWENTYI_TELEMETRY_PUBLIC_KEY": "20i-pk1:nope"}, "public key from"),
        ],
    )
    def test_invalid_env_is_reported(self, work: Path, env: dict[str, str], problem: str) -> None:
        """An invalid override leaves the setting unconfigured and says what is wrong."""
        endpoint = status(env)["endpoint"]
        assert isinstance(endpoint, dict) and endpoint["configured"] is False
        assert any(problem in p for p in endpoint["problems"])

    @pytest.mark.parametrize(
        "url",
        [
            "https://t.example/",
            "https://t.example:8443/telemetry",
            "http://127.0.0.1:8020/",
            "http://localhost:8020/",
            "http://[::1]:8020/v1/reports",
        ],
    )
    def test_valid_endpoints_are_accepted(self, work: Path, url: str) -> None:
        """https anywhere, http only to this machine, any port in range."""
        endpoint = status({"TWENTYI_TELEMETRY_ENDPOINT": url})["endpoint"]
        assert isinstance(endpoint, dict) and endpoint["url"] == url, endpoint["problems"]

    def test_garbled_user_config(self, work: Path) -> None:
        """A garbled user config is reported and sends nothing; status still exits 0."""
        paths = Paths.default()
        paths.config_dir.mkdir(parents=True)
        paths.config_file.write_text('{"endpiont": "https://typo.example"}')
        endpoint = status()["endpoint"]
        assert isinstance(endpoint, dict) and endpoint["url"] is None
        assert "unknown keys ['endpiont']" in endpoint["problems"][0]
