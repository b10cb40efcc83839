"""A real `20i-agg serve` process: acknowledged reports survive SIGKILL; SIGTERM is graceful."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ldp.report import SEALED_BYTES
from server_agg.store import Store

ROOT = Path(__file__).resolve().parent.parent
REPORTS_PER_REQUEST = 10
JSON = {"content-type": "application/json"}


def _start(store: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Start the collector on a port of its own choosing; return it and its base URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server_agg.app",
            "serve",
            "--store",
            str(store),
            "--port",
            "0",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if match is None:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"collector did not start: {line!r} {err!r}")
    return proc, match.group(0)


def _batch() -> list[bytes]:
    return [os.urandom(SEALED_BYTES) for _ in range(REPORTS_PER_REQUEST)]


def _body(reports: list[bytes]) -> bytes:
    return json.dumps({"reports": [base64.b64encode(r).decode() for r in reports]}).encode()


async def _load_until_killed(
    url: str, proc: subprocess.Popen[str], workers: int, kill_after: float
) -> tuple[list[bytes], int]:
    """Post fresh batches from ``workers`` tasks; SIGKILL the server mid-load.

    Returns the reports that got a 202 and the number of requests that failed in transport
    (in flight when the process died).
    """
    acked: list[bytes] = []
    failed = 0
    stop = asyncio.Event()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failed
        while not stop.is_set():
            batch = _batch()
            try:
                response = await client.post(
                    "/v1/reports",
                    content=_body(batch),
                    headers={"content-type": "application/json"},
                )
            except httpx.TransportError:
                failed += 1
                return
            if response.status_code == 202:
                acked.extend(batch)

    async def killer() -> None:
        await asyncio.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        await asyncio.sleep(0.2)
        stop.set()

    limits = httpx.Limits(max_connections=workers)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:
        await asyncio.gather(killer(), *(worker(client) for _ in range(workers)))
    return acked, failed


@pytest.mark.slow
class TestSigkill:
    def test_acknowledged_reports_survive_repeated_sigkill(self, tmp_path: Path) -> None:
        """Killed four times mid-load, the store holds every acknowledged report and is intact."""
        store_path = tmp_path / "store.db"
        acked: list[bytes] = []
        previous: list[bytes] = []
        # Both durability levels; FULL's slower commits also widen the window in which an
        # acknowledgement sent before its commit would be lost (a mutant doing so is caught).
        for cycle, sync in enumerate(["NORMAL", "FULL", "NORMAL", "FULL"]):
            proc, url = _start(store_path, "--rate-limit", "0", "--synchronous", sync)
            try:
                if previous:
                    # The restarted server already has the last cycle's acknowledged reports.
                    resend = httpx.post(
                        f"{url}/v1/reports",
                        content=_body(previous[-REPORTS_PER_REQUEST:]),
                        headers=JSON,
                    )
                    assert resend.json() == {"accepted": 0, "duplicates": REPORTS_PER_REQUEST}
                got, failed = asyncio.run(_load_until_killed(url, proc, 16, 0.6 + 0.2 * cycle))
            finally:
                proc.kill()
                proc.communicate(timeout=10)
            assert proc.returncode == -signal.SIGKILL
            assert got, f"cycle {cycle}: no request was acknowledged before the kill"
            assert failed > 0, f"cycle {cycle}: the kill did not interrupt any request"
            acked += got
            previous = got
        with Store(store_path, create=False) as store:
            assert store.integrity_check() == "ok"
            stored = [c for _, _, c in store.iter_reports()]
        assert len(stored) == len(set(stored))
        missing = set(acked) - set(stored)
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged reports were lost"


def _http_head(response: bytes) -> tuple[int, dict[str, str]]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), {k.lower(): v for k, v in headers.items()}


@pytest.mark.slow
class TestSigterm:
    def test_in_flight_request_finishes_before_exit(self, tmp_path: Path) -> None:
        """SIGTERM during a half-sent request: it still gets its 202, then the server exits."""
        store_path = tmp_path / "store.db"
        proc, url = _start(store_path)
        port = int(url.rsplit(":", 1)[1])
        batch = _batch()
        body = _body(batch)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                client_port = sock.getsockname()[1]
                sock.sendall(
                    b"POST /v1/reports HTTP/1.1\r\nHost: collector\r\n"
                    b"Content-Type: application/json\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:100]
                )
                time.sleep(0.3)  # the request is now in the app, waiting for its body
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.5)
                assert proc.poll() is None, "the server quit with a request in flight"
                sock.sendall(body[100:])
                response = b""
                while b"\r\n\r\n" not in response or not response.endswith(b"}"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    response += chunk
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        status, headers = _http_head(response)
        assert status == 202
        assert json.loads(response.split(b"\r\n\r\n", 1)[1]) == {
            "accepted": REPORTS_PER_REQUEST,
            "duplicates": 0,
        }
        # uvicorn re-raises the signal after its graceful shutdown, as a service manager expects.
        assert proc.returncode == -signal.SIGTERM
        assert "server" not in headers and "date" not in headers
        # No access log, no client address or port anywhere in the output.
        output = out + err
        assert "POST" not in output and str(client_port) not in output
        with Store(store_path, create=False) as store:
            assert sorted(c for _, _, c in store.iter_reports()) == sorted(batch)
            assert store.integrity_check() == "ok"
