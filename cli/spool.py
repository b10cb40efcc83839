"""The spool: sealed reports waiting for the detached sender, one file each, bounded.

Files live in ``Paths.spool_dir`` (the user cache dir), are written atomically (temp file and
rename, mode 0600) and named so that sorting the names sorts them by age. The spool never holds
more than :data:`MAX_REPORTS` files or anything older than :data:`MAX_AGE` (the oldest go
first), never holds a true value, and never sends anything. Light on purpose: a host command
lists it (no ``ldp``, ``httpx`` or ``cryptography`` at module level).

A spool file holds the sealed report *and* its plaintext. The plaintext is the randomized
report exactly as sealed, less its padding of spaces (no true value, nothing identifying): it
is what the collector will receive and what ``20i telemetry log`` must show once the report
was accepted, and it is deleted together with the sealed copy.

File format (``<created>-<kind>-<period>-<random>.sealed``; JSON, ``v`` = 1)::

    {"v": 1, "created": "2026-11-30T09:00:00Z", "kind": "usage", "period": "2026-W48",
     "key": "20i-pk1:...", "sealed": "<base64>", "plaintext": "<canonical report JSON>"}
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from twentyi_telemetry.state import SPOOL_SUFFIX, Paths, ensure_dir, read_small, write_atomic

__all__ = [
    "MAX_AGE",
    "MAX_REPORTS",
    "SPOOL_FORMAT",
    "SpoolEntry",
    "add",
    "created_of",
    "load",
    "prune",
    "remove",
    "spool_names",
]

SPOOL_FORMAT = 1
#: The spool keeps at most this many reports (also the collector's per-request cap).
MAX_REPORTS = 64
#: Reports older than this are dropped unsent: a report that could not be delivered in eight
#: weeks describes a period nobody analyses any more.
MAX_AGE = timedelta(weeks=8)
#: Temp files of an interrupted atomic write are removed once they are this old.
_STALE_TEMP_S = 3600.0

_NAME = re.compile(
    r"(?P<created>\d{8}T\d{12}Z)-(?P<kind>[a-z]{1,16})-(?P<period>\d{4}-W\d{2})-[0-9a-f]{8}"
    + re.escape(SPOOL_SUFFIX),
    re.ASCII,
)
_KIND = re.compile(r"[a-z]{1,16}", re.ASCII)
_PERIOD = re.compile(r"\d{4}-W\d{2}", re.ASCII)
_NAME_TIME = "%Y%m%dT%H%M%S%fZ"


class SpoolEntry:
    """One spooled report, as read back from its file."""

    __slots__ = ("created", "key", "kind", "path", "period", "plaintext", "sealed")

    def __init__(
        self,
        path: Path,
        created: datetime,
        kind: str,
        period: str,
        key: str,
        sealed: bytes,
        plaintext: bytes,
    ) -> None:
        self.path = path
        self.created = created
        self.kind = kind
        self.period = period
        self.key = key  # the analyzer key it is sealed to ("20i-pk1:..."): public
        self.sealed = sealed
        self.plaintext = plaintext

    def __repr__(self) -> str:
        return f"SpoolEntry({self.path.name!r})"


def spool_names(paths: Paths) -> list[str]:
    """Names of the spooled reports, oldest first (``[]`` if the spool does not exist)."""
    try:
        with os.scandir(paths.spool_dir) as entries:
            names = [
                entry.name
                for entry in entries
                if entry.name.endswith(SPOOL_SUFFIX)
                and not entry.name.startswith(".")
                and entry.is_file(follow_symlinks=False)
            ]
    except OSError:
        return []
    names.sort()  # the name starts with the creation time, so this is age order
    return names


def created_of(name: str) -> datetime | None:
    """When the report in the spool file ``name`` was spooled; ``None`` if it is not ours."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match["created"], _NAME_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def _name(created: datetime, kind: str, period: str) -> str:
    stamp = created.astimezone(UTC).strftime(_NAME_TIME)
    return f"{stamp}-{kind}-{period}-{os.urandom(4).hex()}{SPOOL_SUFFIX}"


def add(
    paths: Paths,
    *,
    kind: str,
    period: str,
    key: str,
    sealed: bytes,
    plaintext: bytes,
    now: datetime,
) -> Path:
    """Spool one sealed report atomically (mode 0600), then enforce the bounds.

    Raises ``ValueError`` for a kind or period that could not come from a report, and
    ``OSError`` if the spool cannot be written (the caller drops the report: plaintext is
    never written anywhere else).
    """
    if not _KIND.fullmatch(kind):
        raise ValueError(f"report kind ({kind!r}) must be 1 to 16 lower-case letters")
    if not _PERIOD.fullmatch(period):
        raise ValueError(f"period ({period!r}) must look like 2026-W48")
    if now.tzinfo is None:
        raise ValueError(f"now ({now.isoformat()}) must be timezone-aware")
    import base64  # here: host commands that only list the spool should not pay for it

    document = {
        "v": SPOOL_FORMAT,
        "created": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kind": kind,
        "period": period,
        "key": key,
        "sealed": base64.b64encode(sealed).decode("ascii"),
        "plaintext": plaintext.decode("ascii"),
    }
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")
    ensure_dir(paths.spool_dir)
    path = paths.spool_dir / _name(now, kind, period)
    write_atomic(path, data)
    prune(paths, now)
    return path


def load(path: Path) -> SpoolEntry:
    """Read one spool file; ``ValueError`` if it is not a well-formed one, ``OSError`` if
    unreadable."""
    import base64
    import binascii

    created = created_of(path.name)
    if created is None:
        raise ValueError(f"{path.name} is not a spool file name")
    raw = json.loads(read_small(path))
    if not isinstance(raw, dict) or raw.get("v") != SPOOL_FORMAT:
        raise ValueError(f"{path.name} is not a version {SPOOL_FORMAT} spool file")
    kind, period, key = raw.get("kind"), raw.get("period"), raw.get("key")
    sealed, plaintext = raw.get("sealed"), raw.get("plaintext")
    if not (isinstance(kind, str) and _KIND.fullmatch(kind)):
        raise ValueError(f"{path.name}: kind ({kind!r}) is not a report kind")
    if not (isinstance(period, str) and _PERIOD.fullmatch(period)):
        raise ValueError(f"{path.name}: period ({period!r}) must look like 2026-W48")
    if not isinstance(key, str) or not isinstance(sealed, str) or not isinstance(plaintext, str):
        raise ValueError(f"{path.name}: key, sealed and plaintext must be strings")
    try:
        sealed_bytes = base64.b64decode(sealed, validate=True)
    except binascii.Error:
        raise ValueError(f"{path.name}: sealed is not base64") from None
    try:
        plaintext_bytes = plaintext.encode("ascii")
        report = json.loads(plaintext_bytes)
    except (UnicodeError, json.JSONDecodeError):
        raise ValueError(f"{path.name}: plaintext is not an ASCII JSON report") from None
    if not isinstance(report, dict):
        raise ValueError(f"{path.name}: plaintext must be a JSON object")
    return SpoolEntry(path, created, kind, period, key, sealed_bytes, plaintext_bytes)


def remove(path: Path) -> bool:
    """Delete one spool file; True if it was there. ``OSError`` if it cannot be deleted."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def prune(paths: Paths, now: datetime) -> list[Path]:
    """Enforce the bounds: drop files older than :data:`MAX_AGE`, then the oldest beyond
    :data:`MAX_REPORTS`; also files whose name is not ours and stale temp files.

    Returns what was removed. Never raises: a file that cannot be removed stays.
    """
    removed: list[Path] = []
    spool = paths.spool_dir
    oldest_allowed = now - MAX_AGE
    keep: list[str] = []
    for name in spool_names(paths):
        created = created_of(name)
        if created is None or created < oldest_allowed:
            _drop(spool / name, removed)
        else:
            keep.append(name)
    for name in keep[: max(0, len(keep) - MAX_REPORTS)]:  # oldest first
        _drop(spool / name, removed)
    _drop_stale_temps(spool, removed)
    return removed


def _drop(path: Path, removed: list[Path]) -> None:
    try:
        if remove(path):
            removed.append(path)
    except OSError:
        return


def _drop_stale_temps(spool: Path, removed: list[Path]) -> None:
    """Remove ``.<name>.<hex>.tmp`` files an interrupted ``write_atomic`` left behind."""
    cutoff = time.time() - _STALE_TEMP_S
    try:
        with os.scandir(spool) as entries:
            stale = [
                Path(entry.path)
                for entry in entries
                if entry.name.startswith(".")
                and entry.name.endswith(".tmp")
                and entry.is_file(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_mtime < cutoff
            ]
    except OSError:
        return
    for path in stale:
        _drop(path, removed)
