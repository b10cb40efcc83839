"""Fixtures shared by the tests of the `20i` CLI: isolated user dirs and a pre-built command.

Imported by name into each CLI test module (pytest finds fixtures in a module's namespace);
not a conftest.py, because ``built_once`` patches Typer's test runner for the `20i` app only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
import typer.main
import typer.testing

from cli.app import app
from twentyi_telemetry.consent import NO_CONSENT, read_consent
from twentyi_telemetry.state import Paths
from twentyi_telemetry.tally import Tally, current_tally, iso_period

#: Every variable that can override the user's consent or destination.
ENV_NAMES = (
    "DO_NOT_TRACK",
    "TWENTYI_TELEMETRY",
    "CI",
    "TWENTYI_TELEMETRY_ENDPOINT",
    "TWENTYI_TELEMETRY_PUBLIC_KEY",
)


# Fixtures are registered under their short names and imported under their function names,
# so a test's ``paths`` parameter never shadows an imported name.
@pytest.fixture(autouse=True, scope="module", name="built_once")
def built_once_fixture() -> Iterator[None]:
    """Build the Click command of `20i` once: Typer rebuilds it on every invoke (~20 ms)."""
    command = typer.main.get_command(app)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda _app: command)
        yield


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg: Path) -> Path:
    """Clear the telemetry variables, put the user dirs under ``xdg``; cd to an empty dir."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    for var, sub in (("XDG_CONFIG_HOME", "c"), ("XDG_STATE_HOME", "s"), ("XDG_CACHE_HOME", "k")):
        monkeypatch.setenv(var, str(xdg / sub))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture(name="paths")
def paths_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """Point every user dir at tmp_path, clear the telemetry variables, cd to an empty dir."""
    isolate(tmp_path, monkeypatch, tmp_path)
    return Paths.default()


def journal_tally(paths: Paths, now: datetime | None = None) -> Tally | None:
    """What the journal holds for ``now``'s period (default: this week) under the consent on
    disk: what ``preview`` would build reports from."""
    consent = read_consent(paths.consent_file).consent or NO_CONSENT
    moment = datetime.now(UTC) if now is None else now
    return current_tally(
        paths.state_dir,
        iso_period(moment),
        consent.usage.as_of if consent.usage.enabled else None,
        consent.errors.as_of if consent.errors.enabled else None,
    )
