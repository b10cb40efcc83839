"""`disable` wins against a worker that is sending: nothing is sent, and with `--purge` no file
comes back, once the command has returned.

Before, `disable --purge` while the sender waited on a slow collector removed the files, then
the sender got its answer and wrote `sent-log.jsonl` (with the report's plaintext) and
`sender.json` back, and the collector took the report seconds after the opt-out. Here a slow
collector (a raw socket on loopback that waits before reading anything) holds a real worker
mid-request while `20i telemetry disable` runs in a process of its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli import spool
from ldp.envelope import generate_keypair, public_key_to_text
from twentyi_telemetry import worker
from twentyi_telemetry.consent import NO_CONSENT, shipped_policy_version, write_consent
from twentyi_telemetry.state import Paths
from twentyi_telemetry.tally import iso_period

REPO = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC)
SLOW_S = 3.0  # how long the collector waits before it reads a request


class SlowCollector:
    """Accepts connections on 127.0.0.1, waits SLOW_S, then reads and answers 202; notes when
    each connection arrived and when each chunk of bytes was read."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/"
        self.connected = threading.Event()
        self.arrivals: list[float] = []
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop and time.monotonic() < deadline:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.arrivals.append(time.monotonic())
            self.connected.set()
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        """Read the request as it comes (noting when), answer only SLOW_S later, then note
        anything more the client sends on the connection."""
        conn.settimeout(0.2)
        data = b""
        deadline = time.monotonic() + 30
        with contextlib.suppress(OSError), conn:
            while time.monotonic() < deadline:
                head, sep, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if sep and length and len(body) >= int(length[1]):
                    break
                with contextlib.suppress(TimeoutError):
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    self.arrivals.append(time.monotonic())
                    data += chunk
            time.sleep(SLOW_S)
            conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    if not conn.recv(65536):
                        return
                    self.arrivals.append(time.monotonic())

    def close(self) -> None:
        self.stop = True
        self.thread.join(timeout=5)
        self.server.close()


@pytest.fixture
def collector() -> Iterator[SlowCollector]:
    server = SlowCollector()
    yield server
    server.close()


def machine(root: Path, url: str) -> tuple[Paths, dict[str, str]]:
    """Telemetry on, one sealed report spooled for ``url``; the environment to run 20i with."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DO_NOT_TRACK", "CI"} and not k.startswith(("TWENTYI_", "XDG_"))
    }
    key = public_key_to_text(generate_keypair()[1])
    env.update(
        PYTHONPATH=str(REPO),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_STATE_HOME=str(root / "state"),
        XDG_CACHE_HOME=str(root / "cache"),
        TWENTYI_TELEMETRY_ENDPOINT=url,
        TWENTYI_TELEMETRY_PUBLIC_KEY=key,
        TWENTYI_TELEMETRY_SENDER_DEADLINE="10",
    )
    paths = Paths(
        root / "config" / "20i", root / "state" / "20i" / "telemetry", root / "cache" / "20i"
    )
    paths = Paths(paths.config_dir, paths.state_dir, paths.cache_dir / "telemetry")
    as_of = NOW - timedelta(days=30)
    policy = shipped_policy_version() or ""
    write_consent(paths.consent_file, NO_CONSENT.decided("usage", True, as_of, policy, None))
    paths.state_dir.mkdir(parents=True)
    period = iso_period(NOW - timedelta(weeks=1))
    plaintext = b'{"fields":{},"kind":"usage","period":"' + period.encode() + b'"}'
    spool.add(
        paths,
        kind="usage",
        period=period,
        key=key,
        sealed=b"s" * 200,
        plaintext=plaintext,
        now=NOW - timedelta(minutes=5),
    )
    return paths, env


def leftovers(root: Path) -> list[str]:
    """Everything under our `20i` folders of the state and cache dirs (the XDG dirs themselves
    belong to the user)."""
    return sorted(
        str(p.relative_to(root))
        for xdg in ("state", "cache")
        for p in [root / xdg / "20i", *(root / xdg / "20i").rglob("*")]
        if p.exists() or p.is_symlink()
    )


@pytest.mark.parametrize("purge", [True, False])
def test_disable_stops_a_worker_mid_request(
    tmp_path: Path, collector: SlowCollector, purge: bool
) -> None:
    """While the worker waits on the collector, `disable` returns only once it is stopped;
    afterwards no byte reaches the collector and (with --purge) no file reappears."""
    paths, env = machine(tmp_path, collector.url)
    running = subprocess.Popen(worker.worker_command(paths), env=env, cwd="/")
    try:
        assert collector.connected.wait(20), "the worker never reached the collector"
        args = ["telemetry", "disable", *(["--purge"] if purge else [])]
        done = subprocess.run(
            [sys.executable, "-m", "cli.app", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        returned = time.monotonic()
        assert done.returncode == 0, done.stderr
        assert running.poll() is not None, "the worker still runs after disable returned"
        after = leftovers(tmp_path)
        time.sleep(SLOW_S + 1.0)  # past the collector's answer, had anyone waited for it
        assert leftovers(tmp_path) == after  # nothing came back
        if purge:
            assert after == [], after  # and nothing was left: no file, no empty folder
        else:
            assert spool.spool_names(paths) == []  # dropped unsent by disable
            assert not paths.sent_log.exists() or paths.sent_log.read_bytes() == b""
        assert all(t <= returned for t in collector.arrivals), "sent after disable returned"
    finally:
        if running.poll() is None:
            running.kill()
        running.wait(timeout=10)
