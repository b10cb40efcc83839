"""Starting the detached worker that does everything but counting, out of the host's process.

The host only counts (:mod:`twentyi_telemetry.tally`). At the first command of a period, or
when sealed reports in the spool are due, it starts the worker: ``cli.sender`` in a fresh
interpreter, in isolated mode (``python -I``: no ``PYTHON*`` variables, no working directory
or script folder on ``sys.path``, no user site), with this distribution's folder first on
``sys.path``, so a host's own ``cli`` module can never be run in its place. The worker rolls
finished periods over (builds, randomizes, seals and spools their reports) and posts the spool,
under the telemetry lock, then exits by a hard deadline.

Frozen hosts (PyInstaller and the like set ``sys.frozen``): ``sys.executable`` is then the
host's own binary, and running it with our arguments would run the host again. No worker is
started there: the host still counts, and finished periods wait in the journal until a
program that is not frozen (``20i``, or any other host with this package) starts the worker;
periods older than the spool's age limit are then dropped unsent.

Nothing here imports ``cli``, ``ldp``, httpx or cryptography; starting the worker costs the
host one ``fork``/``exec`` and never a wait.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from twentyi_telemetry.consent import format_time, parse_time
from twentyi_telemetry.state import SPOOL_SUFFIX, Paths, count_spooled, read_small, write_atomic

__all__ = [
    "ENV_DEBUG",
    "MIN_INTERVAL",
    "Schedule",
    "debug_enabled",
    "due",
    "is_frozen",
    "lock_file",
    "pid_file",
    "print_debug",
    "read_schedule",
    "running",
    "schedule_file",
    "spool_due",
    "start",
    "worker_command",
    "write_schedule",
]

#: At most one attempt per MIN_INTERVAL, unless a report was spooled after the last
#: successful attempt (see :func:`due`).
MIN_INTERVAL = timedelta(hours=6)
ENV_DEBUG = "TWENTYI_TELEMETRY_DEBUG"
_ON_WORDS = frozenset({"1", "true", "yes", "on"})
_SCHEDULE_FORMAT = 1
#: The worker waits this long before its imports, leaving the CPU to the host command.
START_DELAY_S = 0.25
#: The folder holding ``twentyi_telemetry`` and its siblings ``cli`` and ``ldp``.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def schedule_file(paths: Paths) -> Path:
    """When the worker last tried to send and may next try (next to the spool)."""
    return paths.cache_dir / "sender.json"


def lock_file(paths: Paths) -> Path:
    """The telemetry lock: held by the worker while it rolls over and sends, and by
    ``disable`` while it stops a worker and purges."""
    return paths.cache_dir / "sender.lock"


def pid_file(paths: Paths) -> Path:
    """The pid of the worker holding the lock (so ``disable`` can stop it at once)."""
    return paths.cache_dir / "sender.pid"


class Schedule:
    """The persisted attempt schedule: last attempt, earliest next one, failures in a row."""

    __slots__ = ("failures", "last_attempt", "next_attempt")

    def __init__(
        self,
        last_attempt: datetime | None = None,
        next_attempt: datetime | None = None,
        failures: int = 0,
    ) -> None:
        self.last_attempt = last_attempt
        self.next_attempt = next_attempt
        self.failures = failures

    def to_json(self) -> bytes:
        """Compact JSON: ``{"v": 1, "last_attempt": ..., "next_attempt": ..., "failures": n}``."""
        document = {
            "v": _SCHEDULE_FORMAT,
            "last_attempt": None if self.last_attempt is None else format_time(self.last_attempt),
            "next_attempt": None if self.next_attempt is None else format_time(self.next_attempt),
            "failures": self.failures,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Schedule:
        """Strict parse; ``ValueError`` on anything unexpected."""
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != _SCHEDULE_FORMAT:
            raise ValueError(f"not a version {_SCHEDULE_FORMAT} sender schedule")
        failures = raw.get("failures")
        if isinstance(failures, bool) or not isinstance(failures, int) or not 0 <= failures < 64:
            raise ValueError(f"failures ({failures!r}) must be an integer in [0, 64)")
        last, nxt = raw.get("last_attempt"), raw.get("next_attempt")
        return cls(
            None if last is None else parse_time(last, "last_attempt"),
            None if nxt is None else parse_time(nxt, "next_attempt"),
            failures,
        )


def read_schedule(paths: Paths) -> Schedule:
    """The stored schedule; a missing or unusable file means "never tried"."""
    try:
        return Schedule.from_json(read_small(schedule_file(paths)))
    except (OSError, ValueError):
        return Schedule()


def write_schedule(paths: Paths, schedule: Schedule) -> None:
    """Replace the schedule atomically (mode 0600); raises ``OSError``."""
    write_atomic(schedule_file(paths), schedule.to_json())


def due(schedule: Schedule, newest: datetime | None, now: datetime) -> bool:
    """Whether an attempt may start now.

    Yes if the persisted next-attempt time has passed, or if the last attempt succeeded and a
    report was spooled after it (a new report need not wait for the interval; a failing
    collector always gets its full backoff).
    """
    if schedule.next_attempt is None or now >= schedule.next_attempt:
        return True
    return (
        schedule.failures == 0
        and newest is not None
        and (schedule.last_attempt is None or newest > schedule.last_attempt)
    )


def _newest_spooled(paths: Paths) -> datetime | None:
    """When the newest report was spooled: its file name starts with the UTC time
    (``20261130T080112123456Z-usage-2026-W48-1a2b3c4d.sealed``, see ``cli.spool``)."""
    try:
        names = [n for n in os.listdir(paths.spool_dir) if n.endswith(SPOOL_SUFFIX)]
    except OSError:
        return None
    for name in sorted(names, reverse=True):
        try:
            return datetime.strptime(name.split("-", 1)[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def spool_due(paths: Paths, now: datetime) -> bool:
    """Sealed reports wait in the spool and the schedule lets the worker try now."""
    if count_spooled(paths) == 0:  # the common case: one scandir
        return False
    return due(read_schedule(paths), _newest_spooled(paths), now)


def running(paths: Paths) -> bool:
    """Whether a worker holds the telemetry lock right now (never creates the lock file)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no detached worker there
        return True
    from twentyi_telemetry.state import open_regular

    try:
        fd = open_regular(lock_file(paths), os.O_RDWR, follow=False)
    except OSError:
        return False  # no lock file (or something unusable there: the worker will say so)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock, if it got one
    return False


def debug_enabled(env: Mapping[str, str]) -> bool:
    """``TWENTYI_TELEMETRY_DEBUG`` is 1/true/yes/on: print what would be sent, send nothing."""
    return env.get(ENV_DEBUG, "").strip().lower() in _ON_WORDS


def print_debug(paths: Paths, out: TextIO) -> None:
    """With ``TWENTYI_TELEMETRY_DEBUG``: the plaintext of every spooled report, exactly as
    sealed, on the host's stderr (the worker, started all the same, sends nothing)."""
    lines = []
    try:
        names = sorted(n for n in os.listdir(paths.spool_dir) if n.endswith(SPOOL_SUFFIX))
    except OSError:
        names = []
    for name in names:
        try:
            entry = json.loads(read_small(paths.spool_dir / name))
            lines.append(f"{entry['kind']} {entry['period']}: {entry['plaintext']}")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    prefix = "20i telemetry debug:"
    out.write(
        f"{prefix} {ENV_DEBUG} is set, so nothing is sent; {len(lines)} report(s) wait in"
        f" {paths.spool_dir}\n"
    )
    out.writelines(f"{prefix} {line}\n" for line in lines)
    out.flush()


def is_frozen() -> bool:
    """The host is a frozen application (PyInstaller, cx_Freeze, py2exe, Nuitka onefile)."""
    return bool(getattr(sys, "frozen", False)) or hasattr(sys, "_MEIPASS")


def worker_command(paths: Paths, python: str | None = None) -> list[str]:
    """The argv that runs the worker for ``paths`` (isolated mode, our folder first)."""
    # Background work: lower priority, and a moment's pause before the imports, so that the
    # worker does not compete for the CPU with the host command that started it.
    boot = (
        "import os, sys, time; os.nice(10) if hasattr(os, 'nice') else None; "
        f"time.sleep({START_DELAY_S}); sys.path.insert(0, {str(PACKAGE_ROOT)!r}); "
        "from cli.sender import main; sys.exit(main())"
    )
    return [
        python or sys.executable,
        "-I",  # isolated: ignore PYTHON* variables, the user site and the working directory
        "-c",
        boot,
        "--config-dir",
        str(paths.config_dir),
        "--state-dir",
        str(paths.state_dir),
        "--cache-dir",
        str(paths.cache_dir),
    ]


_children: list[Any] = []


def start(paths: Paths, env: Mapping[str, str]) -> int | None:
    """Start the detached worker for ``paths``; its pid, or ``None`` if none was started.

    None is started in a frozen host, where there is no interpreter to start (see the module
    docstring), without ``os.setsid`` (Windows), or while a worker already runs. The child
    gets its own session, ``/dev/null`` for stdin, stdout and stderr, no inherited file
    descriptor and ``/`` as working directory, so it can neither write into the host's output
    nor keep the host's pipes (or a terminal) open. The host never waits for it.
    """
    if is_frozen() or not sys.executable or not hasattr(os, "setsid") or running(paths):
        return None
    import subprocess

    class _Detached(subprocess.Popen[bytes]):
        def __del__(self) -> None:
            # Detached on purpose: its exit status is never wanted, so no ResourceWarning
            # ("still running") into the host's stderr; init reaps it once the host is gone.
            return

    # Reap earlier workers of a long-running host, so they do not linger as zombies.
    _children[:] = [child for child in _children if child.poll() is None]
    child = _Detached(
        worker_command(paths),  # our own interpreter and module: no shell, no user input
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
        cwd=os.path.abspath(os.sep),
        env=dict(env),
    )
    _children.append(child)
    return child.pid
