"""No telemetry path ever blocks: a FIFO, a socket, a folder or a symlink loop at any path the
client reads or writes.

Before, a FIFO at the consent file hung every host command forever, telemetry on or off
(``open`` of a FIFO waits for a writer). Each case here puts one such thing at one path, then
runs a host command, the worker and every ``20i telemetry`` command under a watchdog
(SIGALRM): each must return (any exit code, a one-line error at most), never hang.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cli import sender, spool
from cli.app import main
from ldp.envelope import generate_keypair, public_key_to_text
from twentyi_telemetry import tracking, worker
from twentyi_telemetry.consent import NO_CONSENT, shipped_policy_version, write_consent
from twentyi_telemetry.state import Paths
from twentyi_telemetry.tally import iso_period, journal_file

NOW = datetime.now(UTC)
THIS_WEEK = iso_period(NOW)
LAST_WEEK = iso_period(NOW - timedelta(weeks=1))
#: Every path the client reads or writes, relative to the three XDG roots.
TARGETS = {
    "consent": lambda p: p.consent_file,
    "config": lambda p: p.config_file,
    "secret": lambda p: p.secret_file,
    "epoch-memo": lambda p: p.epochs_file,
    "reported": lambda p: p.state_dir / "reported.json",
    "legacy-tally": lambda p: p.tally_file,
    "journal": lambda p: journal_file(p.state_dir, THIS_WEEK),
    "finished-journal": lambda p: journal_file(p.state_dir, LAST_WEEK),
    "sent-log": lambda p: p.sent_log,
    "schedule": lambda p: worker.schedule_file(p),
    "lock": lambda p: worker.lock_file(p),
    "pid": lambda p: worker.pid_file(p),
    "spooled-report": lambda p: p.spool_dir / spool_name(),
    "state-dir": lambda p: p.state_dir,
    "cache-dir": lambda p: p.cache_dir,
}
KINDS = ("fifo", "socket", "directory", "symlink-loop")
WATCHDOG_S = 5.0


def spool_name() -> str:
    return f"{NOW:%Y%m%dT%H%M%S}000000Z-usage-{LAST_WEEK}-0123abcd.sealed"


class Hung(Exception):
    """The watchdog fired: something waited forever."""


@pytest.fixture
def watchdog() -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise Hung("a telemetry path blocked")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, WATCHDOG_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def plant(path: Path, kind: str) -> None:
    """Put a ``kind`` where ``path`` should be (replacing whatever is there)."""
    if path.is_dir() and not path.is_symlink():
        for child in sorted(path.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() and not child.is_symlink() else child.unlink()
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink-loop":
        path.symlink_to(path.name)
    else:  # a socket, bound where the path is short enough, then moved into place
        with tempfile.TemporaryDirectory(dir="/tmp") as short:
            server = socket.socket(socket.AF_UNIX)
            server.bind(os.path.join(short, "s"))
            os.rename(os.path.join(short, "s"), path)
            server.close()


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Paths, dict[str, str]]:
    """Telemetry on, a key and an endpoint, last week's journal and a spooled report."""
    for name in ("CONFIG", "STATE", "CACHE"):
        monkeypatch.setenv(f"XDG_{name}_HOME", str(tmp_path / name.lower()))
    for name in ("DO_NOT_TRACK", "CI", "TWENTYI_TELEMETRY", "TWENTYI_TELEMETRY_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    paths = Paths.default()
    key = public_key_to_text(generate_keypair()[1])
    monkeypatch.setenv("TWENTYI_TELEMETRY_PUBLIC_KEY", key)
    monkeypatch.setenv("TWENTYI_TELEMETRY_ENDPOINT", "http://127.0.0.1:9/")
    as_of = NOW - timedelta(days=30)
    policy = shipped_policy_version() or ""
    consent = NO_CONSENT.decided("usage", True, as_of, policy, None)
    write_consent(paths.consent_file, consent.decided("errors", True, as_of, policy, None))
    paths.state_dir.mkdir(parents=True)
    tracking.record("up", paths=paths, now=NOW - timedelta(weeks=1))
    paths.spool_dir.mkdir(parents=True)
    (paths.spool_dir / spool_name()).write_text("{}")
    return paths, dict(os.environ)


def refuse(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_nothing_blocks(
    machine: tuple[Paths, dict[str, str]],
    target: str,
    kind: str,
    watchdog: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A host command, the worker and every `20i telemetry` command return promptly."""
    paths, env = machine
    plant(TARGETS[target](paths), kind)
    tracking.record("status", paths=paths, env=env)  # never raises, never hangs
    # The worker may fail (quietly, in its own process); it must not hang.
    with contextlib.suppress(OSError):
        sender.run(paths, env, transport=httpx.MockTransport(refuse), force=True)
    for args in (["status"], ["info"], ["preview"], ["log"], ["enable"], ["disable"]):
        code = main(["telemetry", *args])
        assert code in (0, 1), (args, code)
    assert main(["telemetry", "disable", "--purge"]) in (0, 1)
    for line in capsys.readouterr().err.splitlines():
        assert line.startswith("20i: error: "), line  # one readable line, no traceback
    assert spool.SPOOL_FORMAT  # the module stayed importable throughout
