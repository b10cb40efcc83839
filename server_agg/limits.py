"""Connection limits for the collector: what uvicorn alone does not bound, bounded here.

Uvicorn (0.55) times out only an idle keep-alive connection *after* a response; it has no
deadline for a request's head or body, no header size limit under httptools, and no bound on
open connections short of the process's file limit. A slow client can therefore hold a socket
(and, with a header that never ends, unbounded memory) forever. :func:`guarded_protocol`
subclasses uvicorn's httptools protocol and adds, per connection:

- a deadline for each phase: ``idle`` (open with no request in progress), ``head`` (from a
  request's first byte to its last header line) and ``body`` (from the head to the last body
  byte); a connection that misses one is closed (a late head first gets a JSON ``408``);
- a header size limit, counted on the raw bytes *before* the parser buffers them, answered
  with a JSON ``431`` and a close;
- a bound on open connections: when a new one would pass it, the oldest connection that has no
  request in progress (idle, or still sending its head) is closed to make room, so a pile of
  idle or slow sockets can never lock out a health check or an honest client. The first such
  eviction in each ten seconds is logged (counts only; this module never logs an address).

It also answers uvicorn's own "malformed request" ``400`` in the collector's JSON shape.
Everything here happens on the event loop; nothing is stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import resource
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ConnectionLimits",
    "SameLineThrottle",
    "fd_headroom",
    "guarded_protocol",
    "raise_fd_limit",
]

_log = logging.getLogger("server_agg.collector")

#: File descriptors kept free for everything that is not a client connection (the listening
#: socket, the store and its WAL, worker threads, logging, Python's own files).
_FD_RESERVE = 64
#: At most one eviction warning per this many seconds.
_LOG_EVERY = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """Deadlines (seconds) per connection phase, the header size limit and the connection bound.

    The defaults leave an honest client orders of magnitude of slack (a report batch is a few
    KiB sent in milliseconds) while keeping a slow client's socket for seconds, not forever.
    """

    idle_timeout: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1000

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "header_timeout", "body_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} ({value!r}) must be a finite number of seconds > 0")
        if self.max_header_bytes < 256:
            raise ValueError(f"max_header_bytes ({self.max_header_bytes}) must be >= 256")
        if self.max_connections < 1:
            raise ValueError(f"max_connections ({self.max_connections}) must be >= 1")


def raise_fd_limit() -> int:
    """Raise this process's soft open-files limit to its hard limit; return the soft limit.

    The common default soft limit (1,024) is what let 1,100 idle sockets starve the collector.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):  # not allowed here: keep the soft limit we have
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


def fd_headroom(soft_limit: int) -> int:
    """The most client connections a soft open-files limit leaves room for."""
    return max(1, soft_limit - _FD_RESERVE)


class SameLineThrottle(logging.Filter):
    """Let a given log line through at most once per ``every`` seconds, counting the rest.

    Uvicorn logs one warning per malformed request; a flood of garbage would otherwise become a
    flood of log lines (and, with a stderr nobody drains, a blocked server).
    """

    def __init__(self, message: str, every: float = _LOG_EVERY) -> None:
        super().__init__()
        self.message = message
        self.every = every
        self._last = -math.inf
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass the first line of each period, with how many were dropped before it."""
        if record.getMessage() != self.message:
            return True
        now = time.monotonic()
        if now - self._last < self.every:
            self._dropped += 1
            return False
        if self._dropped:
            record.msg = f"{self.message} ({self._dropped} more not logged)"
            record.args = ()
        self._last = now
        self._dropped = 0
        return True


def _json_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode("ascii")
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode("ascii") + body


class _Registry:
    """The open connections of one server, oldest first, and the eviction log's state."""

    def __init__(self) -> None:
        self.open: dict[Any, None] = {}  # insertion-ordered set
        self.evicted_since_log = 0
        self.last_log = -math.inf


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """A uvicorn ``http`` protocol class enforcing ``limits`` (pass it as ``Config(http=...)``).

    Built per server so that each server counts its own connections.
    """
    # Imported here: uvicorn is heavy and only `serve` needs it.
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    registry = _Registry()
    too_large = _json_response(
        431,
        "Request Header Fields Too Large",
        f"request head over {limits.max_header_bytes} bytes",
    )
    head_timeout = _json_response(
        408, "Request Timeout", f"request head not received within {limits.header_timeout:g} s"
    )

    class GuardedProtocol(HttpToolsProtocol):
        """Uvicorn's httptools protocol with phase deadlines, a header limit and a bound."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._phase = "idle"  # idle -> head -> body -> busy (app answering) -> idle
            self._deadline: asyncio.TimerHandle | None = None
            self._head_bytes = 0
            self._tail = b""  # the last 3 bytes of the head so far: a split "\r\n\r\n"

        # -- deadlines ---------------------------------------------------------------------

        def _arm(self, phase: str, seconds: float | None) -> None:
            self._phase = phase
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if seconds is not None:
                self._deadline = self.loop.call_later(seconds, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            if self.transport is None or self.transport.is_closing():
                return
            if self._phase == "head":
                self.transport.write(head_timeout)
            self.transport.close()

        # -- connection bound --------------------------------------------------------------

        # uvicorn narrows the transport type the same way (asyncio serves us a Transport).
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            registry.open[self] = None
            self._arm("idle", limits.idle_timeout)
            if len(registry.open) > limits.max_connections:
                self._evict()

        def _evict(self) -> None:
            """Close the oldest connection with no request in progress (not this one)."""
            victim = None
            for conn in registry.open:
                if conn is not self and conn._phase in ("idle", "head"):
                    victim = conn
                    break
            if victim is None:
                return  # every other connection is mid-request: they finish within deadlines
            registry.open.pop(victim, None)
            victim.transport.close()
            registry.evicted_since_log += 1
            now = time.monotonic()
            if now - registry.last_log >= _LOG_EVERY:
                _log.warning(
                    "connection bound of %d reached: closed %d connection(s) that had no "
                    "request in progress, oldest first",
                    limits.max_connections,
                    registry.evicted_since_log,
                )
                registry.evicted_since_log = 0
                registry.last_log = now

        def connection_lost(self, exc: Exception | None) -> None:
            registry.open.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

        # -- header limit ------------------------------------------------------------------

        def data_received(self, data: bytes) -> None:
            if self._phase == "closed":
                return  # refused (431, 400): nothing more is parsed or buffered
            if self._phase in ("idle", "busy"):
                # The first byte of a request (in "busy", a pipelined one).
                self._head_bytes = 0
                self._tail = b""
                self._arm("head", limits.header_timeout)
            if self._phase == "head":
                room = limits.max_header_bytes - self._head_bytes
                if len(data) > room:
                    end = (self._tail + data).find(b"\r\n\r\n")
                    if end < 0 or end + 4 - len(self._tail) > room:
                        self._refuse(too_large)
                        return
                self._head_bytes += len(data)
                self._tail = (self._tail + data)[-3:]
            super().data_received(data)

        def _refuse(self, response: bytes) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._phase = "closed"
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            """Uvicorn's answer to a request the parser refuses, in the collector's JSON."""
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._phase = "closed"
            if not self.transport.is_closing():
                self.transport.write(_json_response(400, "Bad Request", "malformed HTTP request"))
                self.transport.close()

        # -- parser and response callbacks -------------------------------------------------

        def on_headers_complete(self) -> None:
            self._arm("body", limits.body_timeout)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            if self._phase != "body":
                return
            if self.cycle is not None and self.cycle.response_complete:
                # Answered before the body ended (a 415 or 413): waiting for the next request.
                self._arm("idle", limits.idle_timeout)
            else:
                self._arm("busy", None)  # our app answers within its own bounds

        def on_response_complete(self) -> None:
            queued = bool(self.pipeline)
            super().on_response_complete()
            if self._phase == "busy" and not queued and not self.transport.is_closing():
                self._arm("idle", limits.idle_timeout)

        def timeout_keep_alive_handler(self) -> None:
            """Uvicorn's keep-alive timer: our idle deadline already covers it."""

    return GuardedProtocol
