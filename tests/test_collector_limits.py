"""A real `20i-agg serve` under slow clients, huge headers, piles of sockets and junk floods.

Every server binds 127.0.0.1 on a port it picks; every loop is bounded in count and in time.
The deadlines are shortened (about a second) so the tests are fast; the code path is the same.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ldp.report import SEALED_BYTES

ROOT = Path(__file__).resolve().parent.parent
IDLE, HEAD, BODY = 1.0, 1.5, 1.5
#: Slack for a loaded 2-core machine between a deadline and the close being seen.
SLACK = 2.0


@contextlib.contextmanager
def collector(tmp_path: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A collector process on a port of its own choosing; stopped (by pid) afterwards.

    Its stderr goes to ``tmp_path / "stderr.txt"`` (see :func:`stderr_of`): a pipe nobody reads
    would fill up and block the server's logging.
    """
    err = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115  # closed in the finally below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server_agg.app",
            "serve",
            "--store",
            str(tmp_path / "store.db"),
            "--port",
            "0",
            "--idle-timeout",
            str(IDLE),
            "--header-timeout",
            str(HEAD),
            "--body-timeout",
            str(BODY),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if match is None:
            proc.kill()
            proc.communicate(timeout=10)
            pytest.fail(f"collector did not start: {line!r} {stderr_of(tmp_path)!r}")
        yield proc, int(match.group(1))
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server fails the test
            proc.kill()
            proc.communicate()
        err.close()


def stderr_of(tmp_path: Path) -> str:
    """What the collector started by :func:`collector` in ``tmp_path`` wrote to stderr."""
    return (tmp_path / "stderr.txt").read_text()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _closed_after(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends), or None."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")  # pragma: no cover


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _body(n: int = 3) -> bytes:
    return json.dumps(
        {"reports": [base64.b64encode(os.urandom(SEALED_BYTES)).decode() for _ in range(n)]}
    ).encode()


class TestDeadlines:
    def test_idle_connection_closed(self, tmp_path: Path) -> None:
        """A connection that never sends a byte is closed at the idle deadline."""
        with collector(tmp_path) as (_, port):
            socks = [_connect(port) for _ in range(20)]
            waited = [_closed_after(s, IDLE + SLACK) for s in socks]
            for s in socks:
                s.close()
        assert all(w is not None and w <= IDLE + SLACK for w in waited), waited

    def test_slow_header_closed(self, tmp_path: Path) -> None:
        """A head sent a byte at a time is cut at the head deadline, with a JSON 408."""
        with collector(tmp_path) as (_, port):
            sock = _connect(port)
            sock.sendall(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            start = time.monotonic()
            received = b""
            sock.settimeout(0.05)
            closed = False
            for _ in range(int((HEAD + SLACK) / 0.1)):  # bounded: one byte per 0.1 s
                try:
                    sock.sendall(b"a")
                except OSError:
                    closed = True
                    break
                try:
                    chunk = sock.recv(4096)
                    if chunk == b"":
                        closed = True
                        break
                    received += chunk
                except TimeoutError:
                    pass
                time.sleep(0.05)
            elapsed = time.monotonic() - start
            sock.close()
        assert closed and elapsed <= HEAD + SLACK
        if received:  # the close may overtake the 408 (a reset drops unread data)
            assert _status(received) == 408
            assert b'"error"' in received

    def test_slow_body_closed(self, tmp_path: Path) -> None:
        """A body sent a byte at a time is cut at the body deadline."""
        with collector(tmp_path) as (_, port):
            sock = _connect(port)
            sock.sendall(
                b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000\r\n\r\n{"
            )
            start = time.monotonic()
            closed = False
            for _ in range(int((BODY + SLACK) / 0.1)):  # bounded: one byte per 0.1 s
                try:
                    sock.sendall(b" ")
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)
            if not closed:
                closed = _closed_after(sock, 0.5) is not None
            elapsed = time.monotonic() - start
            sock.close()
        assert closed and elapsed <= BODY + SLACK

    def test_many_half_sent_requests_all_closed(self, tmp_path: Path) -> None:
        """200 half-sent requests (head or body unfinished) are all closed within the deadlines."""
        with collector(tmp_path) as (_, port):
            socks = []
            for i in range(200):
                sock = _connect(port)
                if i % 2:
                    sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
                else:
                    sock.sendall(
                        b"POST /v1/reports HTTP/1.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{"
                    )
                socks.append(sock)
            deadline = time.monotonic() + max(HEAD, BODY) + SLACK
            open_ones = 0
            for sock in socks:
                if _closed_after(sock, max(0.0, deadline - time.monotonic()) + 0.2) is None:
                    open_ones += 1
                sock.close()
        assert open_ones == 0

    def test_honest_keep_alive_client_unaffected(self, tmp_path: Path) -> None:
        """A client posting on one kept-alive connection within the idle deadline keeps it."""
        with collector(tmp_path, "--rate-limit", "0") as (_, port):
            statuses = []
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}")
            with client:
                for _ in range(5):
                    response = client.post(
                        "/v1/reports",
                        content=_body(),
                        headers={"content-type": "application/json"},
                    )
                    statuses.append(response.status_code)
                    time.sleep(IDLE / 4)
        assert statuses == [202] * 5


class TestHeaderLimit:
    def test_oversized_header_gets_431_json(self, tmp_path: Path) -> None:
        """A 64 KiB header line gets 431 with the JSON error shape, then a close."""
        with collector(tmp_path) as (_, port):
            sock = _connect(port)
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536)
            sock.settimeout(5)
            response = sock.recv(4096)
            sock.close()
        head, _, body = response.partition(b"\r\n\r\n")
        assert _status(response) == 431
        assert b"application/json" in head
        assert "error" in json.loads(body)

    def test_header_just_under_limit_served(self, tmp_path: Path) -> None:
        """A request head of 15 KiB, under the 16 KiB default, is still served."""
        with collector(tmp_path) as (_, port):
            sock = _connect(port)
            sock.sendall(
                b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 15000 + b"\r\n\r\n"
            )
            sock.settimeout(5)
            response = sock.recv(4096)
            sock.close()
        assert _status(response) == 200

    def test_never_ending_headers_keep_rss_bounded(self, tmp_path: Path) -> None:
        """Four clients streaming 16 MiB of header each leave the server's RSS within 30 MiB."""
        with collector(tmp_path) as (proc, port):
            httpx.get(f"http://127.0.0.1:{port}/v1/health")  # warm up before measuring
            before = _rss_kib(proc.pid)
            sent = [0] * 4

            def stream(i: int) -> None:
                sock = _connect(port)
                sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
                chunk = b"a" * 65536
                try:
                    for _ in range(256):  # bounded: 16 MiB at most
                        sock.sendall(chunk)
                        sent[i] += len(chunk)
                except OSError:
                    pass  # closed by the server, as it should be
                sock.close()

            threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            after = _rss_kib(proc.pid)
            health = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
        assert health.status_code == 200
        assert after - before < 30 * 1024, (before, after)
        assert max(sent) < 16 * 1024 * 1024  # every stream was cut short


class TestConnectionBound:
    def test_health_answers_with_bound_reached(self, tmp_path: Path) -> None:
        """With 3x the bound in idle sockets open, health answers 200 and the oldest are closed."""
        bound = 30
        with collector(tmp_path, "--max-connections", str(bound), "--idle-timeout", "60") as (
            _,
            port,
        ):
            socks = [_connect(port) for _ in range(3 * bound)]
            time.sleep(0.3)
            start = time.monotonic()
            statuses = [
                httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code
                for _ in range(10)
            ]
            elapsed = time.monotonic() - start
            closed = sum(_closed_after(s, 0.05) is not None for s in socks)
            for s in socks:
                s.close()
        assert statuses == [200] * 10
        assert elapsed < 5
        assert closed >= 2 * bound - 1  # everything over the bound, oldest first

    def test_bound_hit_is_logged(self, tmp_path: Path) -> None:
        """Reaching the bound writes one warning line naming the bound (and no address)."""
        with collector(tmp_path, "--max-connections", "5", "--idle-timeout", "60") as (
            proc,
            port,
        ):
            socks = [_connect(port) for _ in range(12)]
            httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
            for s in socks:
                s.close()
            proc.terminate()
            proc.communicate(timeout=30)
        err = stderr_of(tmp_path)
        assert "connection bound of 5 reached" in err
        assert "127.0.0.1" not in err


class TestJunkFlood:
    def test_honest_posts_rarely_429_under_junk_flood(self, tmp_path: Path) -> None:
        """Under a flood of empty POSTs far above the rate limit, honest posts get 429 < 5%."""
        rate = 50
        with collector(tmp_path, "--rate-limit", str(rate), "--burst", str(rate)) as (_, port):
            stop = threading.Event()
            junk = [0] * 4
            junk_request = (
                b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 0\r\n\r\n"
            )

            def flood(i: int) -> None:
                sock = _connect(port)
                try:
                    for _ in range(20_000):  # bounded in count, and stopped after the run
                        if stop.is_set():
                            break
                        sock.sendall(junk_request)
                        response = sock.recv(4096)
                        if not response:
                            sock.close()
                            sock = _connect(port)
                            continue
                        junk[i] += 1
                except OSError:
                    pass
                finally:
                    sock.close()

            threads = [threading.Thread(target=flood, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            statuses = []
            start = time.monotonic()
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                    for _ in range(40):  # bounded: 40 honest posts, about 4 s
                        response = client.post(
                            "/v1/reports",
                            content=_body(),
                            headers={"content-type": "application/json"},
                        )
                        statuses.append(response.status_code)
                        time.sleep(0.05)
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=30)
            seconds = time.monotonic() - start
        # The flood must really exceed the limit for the test to mean anything.
        assert sum(junk) > 3 * rate * seconds, (sum(junk), seconds)
        assert statuses.count(429) / len(statuses) < 0.05, statuses
        assert set(statuses) <= {202, 429}
