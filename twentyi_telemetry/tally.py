"""The current period's tally: which commands ran, with which modules, and which errors.

``twentyi_telemetry.tracking`` adds to it from host commands while telemetry is on; the period
roll-over (issue 6, ``cli.pipeline``) turns a finished period's tally into reports and clears
it. It holds
only strings from the schema's domains (mapped on the way in, unknown -> ``other``) and counts,
never arguments, paths or free text, and only what was recorded after the matching consent's
as-of time. Host path: never imports numpy, httpx, cryptography, or ``ldp`` itself.

File format (``tally.json`` in the state dir; JSON, version ``v`` = 1)::

    {"v": 1, "period": "2026-W48", "schema_version": 1,
     "usage": {"since": "2026-11-24T09:00:00Z", "commands": {"up": 3, "other": 1},
               "modules": ["docker"], "cli_version": "1.4"} | null,
     "errors": {"since": "2026-11-24T09:00:00Z", "categories": {"none": 3, "network": 1}} | null}
"""

# No `from __future__ import annotations` here, unlike elsewhere: typing.NamedTuple compiles
# every string annotation into a ForwardRef, which cost a host command with telemetry on
# several milliseconds of import time. Self-references are quoted instead.

import contextlib
import functools
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from twentyi_telemetry.consent import format_time, parse_time
from twentyi_telemetry.state import ensure_dir, read_small

# Plain classes and a NamedTuple rather than dataclasses: a host command with telemetry on
# imports this module, and a dataclass costs about a millisecond to build.

__all__ = [
    "TALLY_FORMAT",
    "Domains",
    "ErrorsTally",
    "Tally",
    "TallyBusyError",
    "UsageTally",
    "clear_tally",
    "iso_period",
    "locked",
    "read_tally",
    "shipped_domains",
    "write_tally",
]

TALLY_FORMAT = 1
OTHER = "other"
#: How long a host command may wait for another one's tally update, at most.
LOCK_TIMEOUT_S = 0.2
_LOCK_POLL_S = 0.005
#: Bounds on what a tally may hold, so a corrupt or hostile file cannot grow without limit.
_MAX_ENTRIES = 256
_MAX_COUNT = 2**53
#: The folder holding this package and its siblings ``ldp`` and ``cli``.
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_VERSION = re.compile(r"\s*[vV]?(\d{1,9})\.(\d{1,9})(?!\d)", re.ASCII)


def iso_period(moment: datetime) -> str:
    """The ISO week of ``moment`` in UTC, ``2026-W48`` (same as ``ldp.report.iso_period``)."""
    year, week, _ = moment.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


class Domains(NamedTuple):
    """The domains the tally maps into: the shipped schema's, read without importing ``ldp``."""

    schema_version: int
    command: tuple[str, ...]
    modules: tuple[str, ...]
    cli_version: tuple[str, ...]
    error_category: tuple[str, ...]

    def command_value(self, path: str) -> str:
        """The command path (``"up"``, ``"db migrate"``) if the schema lists it, else its
        top-level command if listed, else ``other``."""
        words = path.split()
        for candidate in (" ".join(words), words[0] if words else ""):
            if candidate in self.command:
                return candidate
        return OTHER

    def module_values(self, names: Iterable[str]) -> list[str]:
        """The known modules among ``names``, in domain order; unknown ones are dropped."""
        wanted = {n for n in names if isinstance(n, str)}
        return [m for m in self.modules if m in wanted]

    def version_value(self, version: str) -> str:
        """The ``major.minor`` bucket of ``version`` if listed, else ``other``.

        Same rule as ``ldp.values.version_bucket`` (a test holds them equal).
        """
        match = _VERSION.match(version) if isinstance(version, str) else None
        if match is None:
            return OTHER
        bucket = f"{int(match[1])}.{int(match[2])}"
        return bucket if bucket in self.cli_version else OTHER

    def error_value(self, category: str) -> str:
        """``category`` if the schema lists it, else ``other``."""
        return category if category in self.error_category else OTHER


@functools.cache
def shipped_domains() -> Domains:
    """The domains of ``ldp/data/schema-v1.json``, parsed as plain JSON.

    ``import ldp`` costs tens of milliseconds (it loads the mechanisms), too much for every
    host command, so the file is only read. It is located next to this package (the wheel
    installs ``ldp`` beside ``twentyi_telemetry``), never through the import system: a host
    with a module of its own named ``ldp`` must not change what is counted. The report
    builder re-validates everything with ``ldp.schema``.
    """
    path = _PACKAGE_ROOT / "ldp" / "data" / "schema-v1.json"
    document = json.loads(path.read_bytes())
    fields: dict[str, tuple[str, ...]] = {}
    for kind in document["kinds"]:
        for spec_json in kind["fields"]:
            fields[spec_json["name"]] = tuple(str(v) for v in spec_json["domain"])
    return Domains(
        schema_version=int(document["version"]),
        command=fields["command"],
        modules=fields["modules"],
        cli_version=fields["cli_version"],
        error_category=fields["error_category"],
    )


def _counts(raw: object, where: str) -> dict[str, int]:
    if not isinstance(raw, dict) or len(raw) > _MAX_ENTRIES:
        raise ValueError(f"{where} must be an object of at most {_MAX_ENTRIES} counts")
    out: dict[str, int] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_COUNT:
            raise ValueError(f"{where}[{key!r}] must be a positive integer, not {value!r}")
        out[str(key)] = value
    return out


class UsageTally:
    """Usage recorded this period since ``since`` (never before the usage consent)."""

    __slots__ = ("cli_version", "commands", "modules", "since")

    def __init__(
        self,
        since: datetime,
        commands: dict[str, int] | None = None,
        modules: list[str] | None = None,
        cli_version: str | None = None,
    ) -> None:
        self.since = since
        self.commands: dict[str, int] = {} if commands is None else commands
        self.modules: list[str] = [] if modules is None else modules  # union, sorted
        self.cli_version = cli_version  # bucket of the latest invocation

    def add(self, command: str, modules: list[str] | None, cli_version: str | None) -> None:
        """Count one invocation of ``command`` (already mapped into the domain)."""
        self.commands[command] = min(self.commands.get(command, 0) + 1, _MAX_COUNT)
        if modules:
            self.modules = sorted(set(self.modules) | set(modules))
        if cli_version is not None:
            self.cli_version = cli_version

    def to_dict(self) -> dict[str, Any]:
        """JSON form (see the module docstring)."""
        return {
            "since": format_time(self.since),
            "commands": dict(sorted(self.commands.items())),
            "modules": list(self.modules),
            "cli_version": self.cli_version,
        }

    @classmethod
    def from_dict(cls, raw: object) -> "UsageTally":
        """Strict parse; ``ValueError`` on anything unexpected."""
        if not isinstance(raw, dict):
            raise ValueError("usage must be an object")
        modules = raw.get("modules", [])
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise ValueError("usage.modules must be a list of strings")
        version = raw.get("cli_version")
        if version is not None and not isinstance(version, str):
            raise ValueError("usage.cli_version must be a string or null")
        return cls(
            since=parse_time(raw.get("since"), "usage.since"),
            commands=_counts(raw.get("commands", {}), "usage.commands"),
            modules=modules[:_MAX_ENTRIES],
            cli_version=version,
        )


class ErrorsTally:
    """Error categories recorded this period (``none`` for a command that succeeded)."""

    __slots__ = ("categories", "since")

    def __init__(self, since: datetime, categories: dict[str, int] | None = None) -> None:
        self.since = since
        self.categories: dict[str, int] = {} if categories is None else categories

    def add(self, category: str) -> None:
        """Count one invocation's outcome (already mapped into the domain)."""
        self.categories[category] = min(self.categories.get(category, 0) + 1, _MAX_COUNT)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (see the module docstring)."""
        categories = dict(sorted(self.categories.items()))
        return {"since": format_time(self.since), "categories": categories}

    @classmethod
    def from_dict(cls, raw: object) -> "ErrorsTally":
        """Strict parse; ``ValueError`` on anything unexpected."""
        if not isinstance(raw, dict):
            raise ValueError("errors must be an object")
        return cls(
            since=parse_time(raw.get("since"), "errors.since"),
            categories=_counts(raw.get("categories", {}), "errors.categories"),
        )


class Tally:
    """Everything recorded in one period, per report kind (``None``: that kind is off)."""

    __slots__ = ("errors", "period", "schema_version", "usage")

    def __init__(
        self,
        period: str,
        schema_version: int,
        usage: UsageTally | None = None,
        errors: ErrorsTally | None = None,
    ) -> None:
        self.period = period
        self.schema_version = schema_version
        self.usage = usage
        self.errors = errors

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tally):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable, like a dataclass

    def __repr__(self) -> str:
        return f"Tally.from_json({self.to_json()!r})"

    def to_json(self) -> bytes:
        """Compact JSON (see the module docstring)."""
        document = {
            "v": TALLY_FORMAT,
            "period": self.period,
            "schema_version": self.schema_version,
            "usage": None if self.usage is None else self.usage.to_dict(),
            "errors": None if self.errors is None else self.errors.to_dict(),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Tally":
        """Strict parse; ``ValueError`` on anything unexpected."""
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        if not isinstance(raw, dict) or raw.get("v") != TALLY_FORMAT:
            raise ValueError(f"not a version {TALLY_FORMAT} tally")
        period, version = raw.get("period"), raw.get("schema_version")
        if not isinstance(period, str) or isinstance(version, bool) or not isinstance(version, int):
            raise ValueError("period must be a string and schema_version an integer")
        usage, errors = raw.get("usage"), raw.get("errors")
        return cls(
            period=period,
            schema_version=version,
            usage=None if usage is None else UsageTally.from_dict(usage),
            errors=None if errors is None else ErrorsTally.from_dict(errors),
        )


def read_tally(path: Path) -> Tally | None:
    """The stored tally, or ``None`` if there is none or it is unusable (it is then replaced)."""
    try:
        return Tally.from_json(read_small(path))
    except (OSError, ValueError):
        return None


def write_tally(path: Path, tally: Tally) -> None:
    """Rewrite the tally in place (mode 0600 when created); hold :func:`locked` while calling.

    Not a temp file and rename, unlike every other file we write: on ext4, renaming over an
    existing file forces its data to disk (``auto_da_alloc``), several milliseconds on every
    host command. Writers hold the tally lock, so they never interleave; a crash mid-write
    leaves a torn file, which reads as no tally: a lost count, nothing worse.
    """
    data = tally.to_json()
    ensure_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.truncate()


def clear_tally(path: Path) -> None:
    """Forget the tally (after a roll-over turned it into reports)."""
    path.unlink(missing_ok=True)


class TallyBusyError(OSError):
    """Another process held the tally lock for longer than a host command may wait."""


@contextlib.contextmanager
def locked(lock_path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX ``flock``) while in the block.

    Polls without blocking and gives up with :class:`TallyBusyError` after ``timeout``
    seconds, so a host command never hangs on a stuck peer. Where ``fcntl`` does not exist
    (Windows) the block runs unlocked: a lost update there costs one count, nothing more.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    ensure_dir(lock_path.parent)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TallyBusyError(f"{lock_path} is held by another process") from None
                time.sleep(_LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # closing releases the flock
