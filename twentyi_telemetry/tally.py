"""The period tally: which commands ran, with which modules, and which errors, per ISO week.

Host commands only ever *append* one line to the journal of the current period
(``journal-2026-W48.jsonl`` in the state dir): one ``write`` of a short line to a file opened
with ``O_APPEND``, which POSIX makes atomic between processes, so counting takes no lock, never
waits on another command and cannot lose or tear a count, whatever the others do or however
they crash. Only the detached worker (``cli.pipeline``, under the telemetry lock) reads
journals back: it *claims* a finished period's journal by renaming it, folds its lines into a
:class:`Tally`, reports it and deletes it. ``preview`` and ``status`` read the current one.

A line holds only strings already mapped into the schema's domains (unknown -> ``other``),
never arguments, paths or free text, and the ``as_of`` of the consent it was counted under, so
that only what was recorded under the consent in force is ever reported::

    {"e":{"a":"2026-11-24T09:00:00Z","x":"none"},
     "u":{"a":"2026-11-24T09:00:00Z","c":"up","m":["docker"],"v":"1.4"}}

``tally.json`` (:meth:`Tally.to_json`) is the single-file tally of earlier releases; the
roll-over still reads it, so counts made before an upgrade are not lost. Host path: never
imports numpy, httpx, cryptography, ``ldp`` or ``cli``.
"""

# No `from __future__ import annotations` here, unlike elsewhere: typing.NamedTuple compiles
# every string annotation into a ForwardRef, which cost a host command with telemetry on
# several milliseconds of import time. Self-references are quoted instead.

import functools
import json
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from twentyi_telemetry.consent import format_time, parse_time
from twentyi_telemetry.state import ensure_dir, open_regular, read_small

# Plain classes and a NamedTuple rather than dataclasses: a host command with telemetry on
# imports this module, and a dataclass costs about a millisecond to build.

__all__ = [
    "TALLY_FORMAT",
    "Domains",
    "ErrorsTally",
    "Tally",
    "UsageTally",
    "append_entry",
    "clear_tally",
    "current_tally",
    "encode_entry",
    "fold_journal",
    "iso_period",
    "journal_file",
    "journal_periods",
    "merge_legacy",
    "read_journal",
    "read_tally",
    "shipped_domains",
    "write_tally",
]

TALLY_FORMAT = 1
OTHER = "other"
#: Journal files: ``journal-<period>.jsonl``; a claimed one (being rolled over) is renamed to
#: ``journal-<period>.<random>.claimed``.
JOURNAL_PREFIX = "journal-"
JOURNAL_SUFFIX = ".jsonl"
CLAIMED_SUFFIX = ".claimed"
#: A journal stops growing past this size (about 150,000 commands in a week); the host then
#: skips counting rather than fill the disk.
MAX_JOURNAL_BYTES = 16 * 1024 * 1024
_JOURNAL_NAME = re.compile(r"journal-(\d{4}-W\d{2})(?:\.jsonl|\.[0-9a-f]{16}\.claimed)", re.ASCII)
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


#: The schema file the client sends under (the last of ``ldp.schema.SCHEMA_FILES``; a test
#: holds them equal).
SHIPPED_SCHEMA_FILE = "schema-v2.json"


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
    """The domains of the shipped schema (``ldp/data/schema-v2.json``), parsed as plain JSON.

    ``import ldp`` costs tens of milliseconds (it loads the mechanisms), too much for every
    host command, so the file is only read. It is located next to this package (the wheel
    installs ``ldp`` beside ``twentyi_telemetry``), never through the import system: a host
    with a module of its own named ``ldp`` must not change what is counted. The report
    builder re-validates everything with ``ldp.schema``.
    """
    path = _PACKAGE_ROOT / "ldp" / "data" / SHIPPED_SCHEMA_FILE
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
    """The single-file tally of earlier releases (``tally.json``), or ``None`` if there is none
    or it is unusable."""
    try:
        return Tally.from_json(read_small(path))
    except (OSError, ValueError):
        return None


def write_tally(path: Path, tally: Tally) -> None:
    """Write a single-file tally (the format of earlier releases; tests use it to stage one)."""
    ensure_dir(path.parent)
    fd = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, follow=False)
    with os.fdopen(fd, "wb") as handle:
        handle.write(tally.to_json())


def clear_tally(path: Path) -> None:
    """Forget a single-file tally (after a roll-over turned it into reports)."""
    path.unlink(missing_ok=True)


# --- the journal ---------------------------------------------------------------------------


def journal_file(state_dir: Path, period: str) -> Path:
    """Where host commands append what they count in ``period``."""
    return state_dir / f"{JOURNAL_PREFIX}{period}{JOURNAL_SUFFIX}"


def journal_periods(state_dir: Path) -> dict[str, list[Path]]:
    """Every journal file in ``state_dir`` (open or claimed), by period; regular files only."""
    found: dict[str, list[Path]] = {}
    try:
        with os.scandir(state_dir) as entries:
            for entry in entries:
                match = _JOURNAL_NAME.fullmatch(entry.name)
                if match and entry.is_file(follow_symlinks=False):
                    found.setdefault(match[1], []).append(Path(entry.path))
    except OSError:  # no state folder, or something unusable there: no journal to read
        return {}
    return {period: sorted(files) for period, files in sorted(found.items())}


def encode_entry(
    usage: tuple[str, str, list[str], str | None] | None,
    errors: tuple[str, str] | None,
) -> bytes:
    """One journal line: ``usage`` is ``(as_of, command, modules, cli_version)`` and ``errors``
    ``(as_of, category)``, every value already mapped into the schema's domains."""
    document: dict[str, object] = {}
    if usage is not None:
        as_of, command, modules, version = usage
        document["u"] = {"a": as_of, "c": command, "m": modules, "v": version}
    if errors is not None:
        document["e"] = {"a": errors[0], "x": errors[1]}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def append_entry(state_dir: Path, period: str, line: bytes) -> bool:
    """Append one line to ``period``'s journal; True if this call created the journal (the
    first command of a period here, when the host starts the worker).

    Never creates the state dir: a missing one means telemetry was purged (or never enabled)
    and raises ``FileNotFoundError``, so a command that was already counting while the user
    ran ``disable --purge`` cannot bring the folder back. Never blocks, never follows a link.
    """
    path = journal_file(state_dir, period)
    flags = os.O_WRONLY | os.O_APPEND
    created = False
    try:
        fd = open_regular(path, flags, follow=False)
    except FileNotFoundError:
        try:
            fd = open_regular(path, flags | os.O_CREAT | os.O_EXCL, 0o600, follow=False)
            created = True
        except FileExistsError:  # another command created it a moment ago
            fd = open_regular(path, flags, follow=False)
    try:
        if os.fstat(fd).st_size + len(line) <= MAX_JOURNAL_BYTES:
            # One write of a short line: with O_APPEND, concurrent appenders never interleave
            # (POSIX). Windows' C runtime seeks then writes, so there two commands finishing in
            # the same microsecond could overwrite one line; the reader skips a torn line.
            os.write(fd, line)
    finally:
        os.close(fd)
    return created


def read_journal(path: Path) -> bytes:
    """The bytes of one journal file (at most :data:`MAX_JOURNAL_BYTES`); never blocks."""
    with os.fdopen(open_regular(path, follow=False), "rb") as handle:
        return handle.read(MAX_JOURNAL_BYTES)


def fold_journal(
    tally: Tally,
    data: bytes,
    usage_as_of: datetime | None,
    errors_as_of: datetime | None,
    domains: Domains | None = None,
) -> int:
    """Add the journal lines in ``data`` to ``tally``; returns how many lines counted.

    A kind's line counts only if it was recorded under the consent in force
    (``usage_as_of`` / ``errors_as_of``; ``None``: that kind is off): nothing recorded before
    the latest opt-in may ever be reported. Values are mapped into the domains again, so a
    hand-edited journal cannot smuggle in anything else. Unreadable lines are skipped.
    """
    domains = shipped_domains() if domains is None else domains
    usage_key = None if usage_as_of is None else format_time(usage_as_of)
    errors_key = None if errors_as_of is None else format_time(errors_as_of)
    counted = 0
    for raw_line in data.split(b"\n"):
        if not raw_line.strip():
            continue
        try:
            line = json.loads(raw_line)
        except ValueError:
            continue
        if not isinstance(line, dict):
            continue
        usage, errors = line.get("u"), line.get("e")
        hit = False
        if usage_as_of is not None and isinstance(usage, dict) and usage.get("a") == usage_key:
            command, modules, version = usage.get("c"), usage.get("m"), usage.get("v")
            if isinstance(command, str) and isinstance(modules, list):
                if tally.usage is None:
                    tally.usage = UsageTally(since=usage_as_of)
                tally.usage.add(
                    domains.command_value(command),
                    domains.module_values(m for m in modules if isinstance(m, str)),
                    domains.version_value(version) if isinstance(version, str) else None,
                )
                hit = True
        if errors_as_of is not None and isinstance(errors, dict) and errors.get("a") == errors_key:
            category = errors.get("x")
            if isinstance(category, str):
                if tally.errors is None:
                    tally.errors = ErrorsTally(since=errors_as_of)
                tally.errors.add(domains.error_value(category))
                hit = True
        counted += hit
    return counted


def current_tally(
    state_dir: Path,
    period: str,
    usage_as_of: datetime | None,
    errors_as_of: datetime | None,
) -> Tally | None:
    """What ``period`` has recorded so far under the consent in force (``None``: nothing)."""
    tally = Tally(period, shipped_domains().schema_version)
    for path in journal_periods(state_dir).get(period, []):
        try:
            fold_journal(tally, read_journal(path), usage_as_of, errors_as_of)
        except OSError:
            continue
    legacy = read_tally(state_dir / "tally.json")
    if legacy is not None and legacy.period == period:
        merge_legacy(tally, legacy, usage_as_of, errors_as_of)
    return None if tally.usage is None and tally.errors is None else tally


def merge_legacy(
    tally: Tally, legacy: Tally, usage_as_of: datetime | None, errors_as_of: datetime | None
) -> None:
    """Add a single-file tally of an earlier release, if recorded under the consent in force."""
    if usage_as_of is not None and legacy.usage is not None and legacy.usage.since >= usage_as_of:
        if tally.usage is None:
            tally.usage = UsageTally(since=usage_as_of)
        for command, count in legacy.usage.commands.items():
            tally.usage.commands[command] = tally.usage.commands.get(command, 0) + count
        tally.usage.modules = sorted(set(tally.usage.modules) | set(legacy.usage.modules))
        tally.usage.cli_version = tally.usage.cli_version or legacy.usage.cli_version
    if (
        errors_as_of is not None
        and legacy.errors is not None
        and legacy.errors.since >= errors_as_of
    ):
        if tally.errors is None:
            tally.errors = ErrorsTally(since=errors_as_of)
        for category, count in legacy.errors.categories.items():
            tally.errors.categories[category] = tally.errors.categories.get(category, 0) + count
