"""The sent log: the plaintext of every report that actually left this machine.

``20i telemetry log`` reads it, so users can see exactly what was sent. The sender (issue 6)
appends one line per report accepted by the collector, built with :func:`encode_entry`, and
keeps the file bounded. It holds only what was sent (randomized reports), never true values.

Format (``sent-log.jsonl`` in the state dir): JSON Lines, oldest first, one object a line::

    {"endpoint": "https://...", "report": {<the plaintext report, as sealed>},
     "sent_at": "2026-11-28T10:00:00Z"}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from twentyi_telemetry.consent import format_time, parse_time
from twentyi_telemetry.errors import StateError
from twentyi_telemetry.state import open_regular

__all__ = ["MAX_LOG_BYTES", "SentLog", "SentReport", "encode_entry", "read_sent_log"]

#: The sender keeps the log under this size (dropping the oldest lines); we read no more.
MAX_LOG_BYTES = 256 * 1024


@dataclass(frozen=True)
class SentReport:
    """One report as sent: when, where, and its plaintext (a JSON object)."""

    sent_at: datetime
    endpoint: str | None
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, shared by the file and ``log --json``."""
        return {
            "sent_at": format_time(self.sent_at),
            "endpoint": self.endpoint,
            "report": self.report,
        }


@dataclass(frozen=True)
class SentLog:
    """The sent reports, newest first, and how many lines could not be read."""

    reports: tuple[SentReport, ...]
    skipped: int = 0


def encode_entry(plaintext: bytes, sent_at: datetime, endpoint: str | None) -> bytes:
    """The log line (with its newline) for a sent report whose plaintext is ``plaintext``."""
    entry = SentReport(sent_at, endpoint, json.loads(plaintext))
    return (json.dumps(entry.to_dict(), sort_keys=True, separators=(",", ":")) + "\n").encode()


def _parse_line(line: bytes) -> SentReport:
    raw = json.loads(line)
    if not isinstance(raw, dict):
        raise ValueError("a log line must be an object")
    endpoint, report = raw.get("endpoint"), raw.get("report")
    if endpoint is not None and not isinstance(endpoint, str):
        raise ValueError("endpoint must be a string or null")
    if not isinstance(report, dict):
        raise ValueError("report must be an object")
    return SentReport(parse_time(raw.get("sent_at"), "sent_at"), endpoint, report)


def read_sent_log(path: Path) -> SentLog:
    """Read the log, newest first; unreadable lines are skipped and counted, never fatal.

    A missing log is an empty one. Only the last :data:`MAX_LOG_BYTES` are read.
    """
    try:
        with os.fdopen(open_regular(path), "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - MAX_LOG_BYTES))
            data = handle.read()
    except FileNotFoundError:
        return SentLog(())
    except OSError as exc:
        raise StateError(f"cannot read the sent log {path}: {exc.strerror or exc}") from exc
    lines = data.split(b"\n")
    if size > MAX_LOG_BYTES:
        lines = lines[1:]  # the first line was cut by the seek
    reports: list[SentReport] = []
    skipped = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            reports.append(_parse_line(line))
        except (ValueError, UnicodeDecodeError):
            skipped += 1
    return SentLog(tuple(reversed(reports)), skipped)
