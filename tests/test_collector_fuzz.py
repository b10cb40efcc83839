"""A seeded fuzz of the collector's HTTP API on a real server: 10,000 requests, no 5xx.

Requests are drawn from a seeded numpy Generator (so a failure replays exactly): methods, paths,
content types, framings and bodies from well-formed batches to raw garbage, over kept-alive
connections. Every answer must be below 500; every 4xx must carry the JSON error shape; the
server must be healthy afterwards and must not have logged a traceback.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from ldp.report import SEALED_BYTES
from tests.test_collector_limits import collector, stderr_of

REQUESTS = 10_000
SEED = 16
TIME_LIMIT = 240.0  # seconds; the loop stops by itself well before pytest's timeout

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"BREW"]
PATHS = [
    b"/v1/reports",
    b"/v1/reports",
    b"/v1/reports",
    b"/v1/health",
    b"/v1/public-key",
    b"/",
    b"/v1/reports/",
    b"/v1/reports?x=1",
    b"/v1/%00",
    b"/v1/..%2f..%2fetc/passwd",
    b"/" + b"a" * 4000,
]
TYPES = [
    b"application/json",
    b"application/json",
    b"application/json; charset=utf-8",
    b"APPLICATION/JSON",
    b"text/plain",
    b"application/x-www-form-urlencoded",
    b"",
    b"\xff\xfe",
    None,
]


def _b64(rng: np.random.Generator, size: int) -> str:
    return base64.b64encode(rng.bytes(size)).decode()


def _body(rng: np.random.Generator) -> bytes:
    """One request body, from valid batches to every kind of wrong."""
    kind = int(rng.integers(0, 16))
    if kind <= 3:  # well-formed batches of look-alike ciphertexts (kind 3: of other lengths)
        n = int(rng.integers(1, 6))
        sizes = [int(rng.integers(48, 400)) if kind == 3 else SEALED_BYTES for _ in range(n)]
        reports = [_b64(rng, size) for size in sizes]
        return json.dumps({"reports": reports}).encode()
    if kind == 4:
        return b""
    if kind == 5:
        return rng.bytes(int(rng.integers(1, 2000)))
    if kind == 6:
        return b"[" * int(rng.integers(1, 100_000)) + b"]" * int(rng.integers(0, 3))
    if kind == 7:
        return json.dumps({"reports": [_b64(rng, 100)] * 65}).encode()
    if kind == 8:  # reports of every wrong type and shape
        wrong = [1, None, True, 1.5, [], {}, "", "!!!!", "QUJD", _b64(rng, 10), "A" * 20000]
        picks = rng.choice(len(wrong), size=int(rng.integers(1, 4)))
        return json.dumps({"reports": [wrong[int(i)] for i in picks]}).encode()
    if kind == 9:
        return json.dumps({"reports": [_b64(rng, 100)], "extra": 1}).encode()
    if kind == 10:
        return b'{"reports": ["' + _b64(rng, 60).encode() + b'"]' + rng.bytes(3)
    if kind == 11:
        return b"9" * int(rng.integers(1, 5000))
    if kind == 12:
        return json.dumps({"reports": "\u2603" * int(rng.integers(1, 50))}).encode()
    if kind == 13:
        return b"x" * (256 * 1024 + int(rng.integers(1, 1000)))
    if kind == 14:
        return json.dumps([{"reports": [_b64(rng, 100)]}]).encode()
    return json.dumps({"reports": [_b64(rng, 100)]}).encode("utf-16")


def _request(rng: np.random.Generator) -> tuple[bytes, bool, bool]:
    """``(raw request, framing is consistent, is HEAD)``."""
    if rng.random() < 0.08:  # raw garbage: not HTTP at all
        return rng.bytes(int(rng.integers(1, 300))) + b"\r\n\r\n", False, False
    method = METHODS[int(rng.integers(0, len(METHODS)))] if rng.random() < 0.4 else b"POST"
    path = PATHS[int(rng.integers(0, len(PATHS)))]
    body = _body(rng) if method != b"GET" or rng.random() < 0.1 else b""
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: fuzz"]
    content_type = TYPES[int(rng.integers(0, len(TYPES)))]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type)
    consistent = True
    framing = rng.random()
    if framing < 0.85:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    elif framing < 0.92 and body:
        lines.append(b"Transfer-Encoding: chunked")
        body = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    elif framing < 0.96 and body:
        # Declares less than is sent: the rest is read as a next request (then a close).
        lines.append(b"Content-Length: " + str(len(body) // 2).encode())
        consistent = False
    else:
        lines.append(b"Content-Length: " + [b"-1", b"abc", b"1e3", b" 12"][int(rng.integers(0, 4))])
        consistent = False
    for _ in range(int(rng.integers(0, 3))):
        lines.append(
            b"X-Fuzz-"
            + str(int(rng.integers(0, 99))).encode()
            + b": "
            + rng.bytes(8).hex().encode()
        )
    return b"\r\n".join(lines) + b"\r\n\r\n" + body, consistent, method == b"HEAD"


class _Conn:
    """One kept-alive connection with a minimal HTTP/1.1 response reader."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self, head_only: bool) -> tuple[int, dict[str, str], bytes] | None:
        """The next response, or ``None`` if the server closed without one."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                break
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split(" ")[1]), headers, body

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
class TestFuzz:
    def test_ten_thousand_requests_no_5xx(self, tmp_path: Path) -> None:
        """10,000 seeded requests: no 5xx, every 4xx in the JSON shape, healthy after."""
        rng = np.random.default_rng(SEED)
        statuses: dict[int, int] = {}
        bad: list[tuple[int, bytes]] = []
        sent = 0
        with collector(tmp_path, "--rate-limit", "0") as (proc, port):
            conn = _Conn(port)
            start = time.monotonic()
            try:
                while sent < REQUESTS and time.monotonic() - start < TIME_LIMIT:
                    raw, consistent, head_only = _request(rng)
                    sent += 1
                    try:
                        conn.sock.sendall(raw)
                        answer = conn.response(head_only)
                    except OSError:  # reset by the server after an error answer: fine
                        answer = None
                    if answer is not None:
                        status, headers, body = answer
                        statuses[status] = statuses.get(status, 0) + 1
                        if status >= 500:
                            bad.append((status, raw[:200]))
                        elif 400 <= status < 500 and not head_only:
                            doc = json.loads(body)
                            if headers.get("content-type") != "application/json" or not (
                                isinstance(doc, dict) and isinstance(doc.get("error"), str)
                            ):
                                bad.append((status, raw[:200]))
                    if answer is None or not consistent or headers.get("connection") == "close":
                        conn.close()
                        conn = _Conn(port)
            finally:
                conn.close()
            seconds = time.monotonic() - start
            health = _Conn(port)
            health.sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            after = health.response(head_only=False)
            health.close()
            proc.terminate()
            proc.communicate(timeout=30)
        err = stderr_of(tmp_path)
        assert sent >= REQUESTS, f"only {sent} requests in {seconds:.0f} s"
        assert bad == [], bad[:5]
        assert after is not None and after[0] == 200 and json.loads(after[2]) == {"status": "ok"}
        assert "Traceback" not in err and "Exception" not in err, err[-2000:]
        assert sum(statuses.values()) >= 0.9 * REQUESTS  # answers, not just resets
        assert statuses.get(202, 0) > 100 and statuses.get(400, 0) > 500, statuses
