"""The detached sender: post the spool to the collector once, then exit by a hard deadline.

A host command starts it (``python -m cli.sender``, see :func:`spawn`) in a session of its own
with no terminal and never waits for it. It takes an exclusive lock (one sender at a time; the
kernel releases the lock of a dead sender, so a stale lock cannot block anyone), re-checks the
environment and the consent right before posting, makes one bounded attempt with httpx
(connect 1 s, whole attempt at most 5 s, proxies from the environment honoured, redirects never
followed) and records the outcome: 2xx deletes the reports and appends their plaintext to the
sent log, other 4xx (but 408 and 429) drop them, anything else keeps them with a persisted
backoff. SIGALRM kills it at its hard deadline whatever the server does: no orphans. It never
sends a report whose kind is off or whose consent is newer than the report, and never sends
anything while ``TWENTYI_TELEMETRY_DEBUG`` is set.

Module level stays light (no httpx): a host command imports this module to read the schedule.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from cli import spool
from cli.spool import SpoolEntry
from twentyi_telemetry.consent import (
    SOURCE_CONSENT,
    Decision,
    decide,
    env_override,
    format_time,
    parse_time,
)
from twentyi_telemetry.state import Paths, ensure_dir, read_small, write_atomic

if TYPE_CHECKING:
    import httpx

    from cli.endpoint import Destination

__all__ = [
    "ATTEMPT_S",
    "CONNECT_S",
    "ENV_DEADLINE",
    "ENV_DEBUG",
    "HARD_DEADLINE_S",
    "MAX_BACKOFF",
    "MIN_INTERVAL",
    "Outcome",
    "Schedule",
    "append_sent_log",
    "debug_enabled",
    "due",
    "lock_file",
    "main",
    "read_schedule",
    "reports_url",
    "run",
    "schedule_file",
    "select",
    "sender_running",
    "spawn",
    "write_schedule",
]

ENV_DEBUG = "TWENTYI_TELEMETRY_DEBUG"
#: Testing hook: the sender's hard deadline in seconds (1 to 60; default HARD_DEADLINE_S).
ENV_DEADLINE = "TWENTYI_TELEMETRY_SENDER_DEADLINE"
HARD_DEADLINE_S = 10.0
#: One attempt (every request of it) takes at most this long; connecting at most CONNECT_S.
ATTEMPT_S = 5.0
CONNECT_S = 1.0
#: At most one attempt per MIN_INTERVAL, unless a report was spooled after the last
#: successful attempt; after failures the wait doubles up to MAX_BACKOFF.
MIN_INTERVAL = timedelta(hours=6)
MAX_BACKOFF = timedelta(hours=48)
#: A request carries at most this many reports and this many body bytes (DESIGN section 4
#: allows 64 and 256 KiB; the margin covers the JSON around the base64).
BATCH_REPORTS = 64
BATCH_BYTES = 200 * 1024
#: Status codes kept for a retry although they are 4xx: the request was not judged, only
#: refused for now (429) or timed out (408).
_RETRY_4XX = frozenset({408, 429})
_SCHEDULE_FORMAT = 1
_USER_AGENT = "20i-telemetry/1"  # fixed: httpx's default would name the Python library version
_ON_WORDS = frozenset({"1", "true", "yes", "on"})


# --- paths of the sender's own files --------------------------------------------------------


def schedule_file(paths: Paths) -> Path:
    """When the sender last tried and may next try (in the cache dir, next to the spool)."""
    return paths.cache_dir / "sender.json"


def lock_file(paths: Paths) -> Path:
    """Held (``flock``) by the running sender, which writes its pid into it."""
    return paths.cache_dir / "sender.lock"


def debug_enabled(env: Mapping[str, str]) -> bool:
    """``TWENTYI_TELEMETRY_DEBUG`` is 1/true/yes/on: print what would be sent, send nothing."""
    return env.get(ENV_DEBUG, "").strip().lower() in _ON_WORDS


# --- the schedule -------------------------------------------------------------------------


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


def _backoff(failures: int, retry_after: float | None) -> timedelta:
    """Wait after ``failures`` failed attempts in a row: 6 h, 12 h, 24 h, then 48 h; at least
    what the server asked for with Retry-After, at most MAX_BACKOFF."""
    wait = MIN_INTERVAL * (1 << min(max(failures - 1, 0), 8))
    if retry_after is not None:
        wait = max(wait, timedelta(seconds=retry_after))
    return min(wait, MAX_BACKOFF)


# --- locking --------------------------------------------------------------------------------


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive ``flock`` on ``path``, or ``None`` if another holds it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def sender_running(paths: Paths) -> bool:
    """Whether a sender holds the lock right now (never creates the lock file)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no detached sender there
        return True
    try:
        fd = os.open(lock_file(paths), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock, if it got one
    return False


# --- starting the detached process -----------------------------------------------------------

_children: list[Any] = []


def spawn(paths: Paths, env: Mapping[str, str]) -> int | None:
    """Start the detached sender for ``paths`` and return its pid (``None`` if impossible).

    The child gets its own session, ``/dev/null`` for stdin, stdout and stderr, no inherited
    file descriptor and ``/`` as working directory, so it can neither write into the host's
    output nor keep the host's pipes (or a terminal) open. The host never waits for it.
    """
    import subprocess

    if not sys.executable or not hasattr(os, "setsid"):
        return None

    class _Detached(subprocess.Popen[bytes]):
        def __del__(self) -> None:
            # Detached on purpose: its exit status is never wanted, so no ResourceWarning
            # ("still running") into the host's stderr; init reaps it once the host is gone.
            return

    # Reap earlier senders of a long-running host, so they do not linger as zombies.
    _children[:] = [child for child in _children if child.poll() is None]
    package_root = str(Path(__file__).resolve().parent.parent)
    child_env = dict(env)
    inherited = child_env.get("PYTHONPATH")
    child_env["PYTHONPATH"] = (
        package_root if not inherited else os.pathsep.join((package_root, inherited))
    )
    args = [
        sys.executable,
        "-P",  # do not put the working directory ("/") on sys.path
        "-m",
        "cli.sender",
        "--config-dir",
        str(paths.config_dir),
        "--state-dir",
        str(paths.state_dir),
        "--cache-dir",
        str(paths.cache_dir),
    ]
    child = _Detached(
        args,  # our own interpreter and module: no shell, no user input
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
        cwd=os.path.abspath(os.sep),
        env=child_env,
    )
    _children.append(child)
    return child.pid


# --- what may be sent -----------------------------------------------------------------------


def select(
    entries: Sequence[SpoolEntry], decision: Decision, destination: Destination
) -> tuple[list[SpoolEntry], list[SpoolEntry]]:
    """Split spooled reports into ``(sendable, never_sendable)`` under the current decision.

    Never sendable (to be deleted): reports of a kind the user turned off in the consent file,
    reports spooled before the kind's current consent (an opt-out and opt-in happened since),
    and reports sealed to another analyzer key than the configured one. When the environment
    turned telemetry off (DO_NOT_TRACK, the kill switch, CI), or the consent file is
    unreadable, nothing is sendable and nothing is deleted: the switch may be local to one
    shell.
    """
    consent = decision.consent_file.consent if decision.consent_file is not None else None
    if decision.source != SOURCE_CONSENT or consent is None:
        return [], []
    sendable: list[SpoolEntry] = []
    never: list[SpoolEntry] = []
    kinds = {"usage": (decision.usage, consent.usage), "errors": (decision.errors, consent.errors)}
    for entry in entries:
        on, kind_consent = kinds.get(entry.kind, (False, None))
        as_of = None if kind_consent is None else kind_consent.as_of
        if (
            on
            and as_of is not None
            and entry.created >= as_of.replace(microsecond=0)
            and entry.key == destination.public_key
        ):
            sendable.append(entry)
        else:
            never.append(entry)
    return sendable, never


def reports_url(endpoint: str) -> str:
    """The collector's ``POST /v1/reports`` URL for a configured endpoint.

    The endpoint may name the collector's base URL (``https://t.example/`` or a sub-path such
    as ``https://example.org/telemetry``) or the reports URL itself.
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/reports"):
        path += "/v1/reports"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


# --- the sent log ---------------------------------------------------------------------------


def append_sent_log(path: Path, lines: Sequence[bytes]) -> None:
    """Append encoded sent-log lines, then keep the log under ``sentlog.MAX_LOG_BYTES``.

    When the log grows past the bound, the oldest lines are dropped until it is at most three
    quarters of it (so the rewrite happens once per many reports). Raises ``OSError``.
    """
    from cli.sentlog import MAX_LOG_BYTES

    if not lines:
        return
    ensure_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"".join(lines))
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size <= MAX_LOG_BYTES:
        return
    kept = read_tail_lines(path, MAX_LOG_BYTES * 3 // 4)
    write_atomic(path, kept)


def read_tail_lines(path: Path, budget: int) -> bytes:
    """The newest whole lines of ``path`` whose total size is at most ``budget`` bytes."""
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.splitlines(keepends=True)
    kept: list[bytes] = []
    total = 0
    for line in reversed(lines):
        if total + len(line) > budget:
            break
        kept.append(line)
        total += len(line)
    return b"".join(reversed(kept))


def _check_writable_log(path: Path) -> None:
    """Raise ``OSError`` unless the sent log can be appended to: a report that cannot be
    logged is not sent, so ``20i telemetry log`` always shows everything that left."""
    ensure_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.close(fd)


# --- one attempt ----------------------------------------------------------------------------


class Outcome:
    """What one sender run did (for tests and the debug output; never shown to the host)."""

    __slots__ = ("detail", "dropped", "kept", "sent", "state")

    def __init__(
        self, state: str, sent: int = 0, dropped: int = 0, kept: int = 0, detail: str = ""
    ) -> None:
        #: "busy", "empty", "not-due", "off", "debug", "not-configured", "unwritable",
        #: "sent", "failed" (some kept for a retry)
        self.state = state
        self.sent = sent
        self.dropped = dropped
        self.kept = kept
        self.detail = detail

    def __repr__(self) -> str:
        return (
            f"Outcome({self.state!r}, sent={self.sent}, dropped={self.dropped},"
            f" kept={self.kept}, detail={self.detail!r})"
        )


def _batches(entries: Sequence[SpoolEntry]) -> list[list[SpoolEntry]]:
    batches: list[list[SpoolEntry]] = []
    current: list[SpoolEntry] = []
    size = 0
    for entry in entries:
        encoded = 4 * ((len(entry.sealed) + 2) // 3) + 3  # base64 plus quotes and comma
        if current and (len(current) >= BATCH_REPORTS or size + encoded > BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(entry)
        size += encoded
    if current:
        batches.append(current)
    return batches


def _body(batch: Sequence[SpoolEntry]) -> bytes:
    import base64

    reports = [base64.b64encode(entry.sealed).decode("ascii") for entry in batch]
    return json.dumps({"reports": reports}, separators=(",", ":")).encode("ascii")


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if absent."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 10**7))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _post_batches(
    url: str,
    batches: Sequence[Sequence[SpoolEntry]],
    results: list[tuple[int, str | None] | BaseException],
    attempt_s: float,
    transport: httpx.BaseTransport | None,
) -> None:
    """Post each batch in turn, appending ``(status, Retry-After)`` or the exception to
    ``results``; stops at the first batch that is not answered with 2xx or a final 4xx."""
    import httpx

    timeout = httpx.Timeout(attempt_s, connect=min(CONNECT_S, attempt_s))
    headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
    try:
        with httpx.Client(
            timeout=timeout,
            trust_env=True,  # HTTPS_PROXY / ALL_PROXY / NO_PROXY from the environment
            follow_redirects=False,  # a redirect must not move reports to another host
            headers=headers,
            transport=transport,
        ) as client:
            for batch in batches:
                response = client.post(url, content=_body(batch))
                status = response.status_code
                results.append((status, response.headers.get("retry-after")))
                if not (200 <= status < 300 or (400 <= status < 500 and status not in _RETRY_4XX)):
                    return
    except Exception as exc:  # network errors, timeouts, a bad proxy URL: keep and back off
        results.append(exc)


def _attempt(
    url: str,
    batches: Sequence[Sequence[SpoolEntry]],
    attempt_s: float,
    transport: httpx.BaseTransport | None,
) -> list[tuple[int, str | None] | BaseException]:
    """Run the posts in a daemon thread and stop waiting after ``attempt_s`` seconds.

    httpx's timeouts bound each connect and each read or write, not a whole request that a
    server drips out slowly; the thread bounds the whole attempt. Batches without an answer
    by then count as network failures (their reports stay spooled).
    """
    import threading

    results: list[tuple[int, str | None] | BaseException] = []
    worker = threading.Thread(
        target=_post_batches,
        args=(url, batches, results, attempt_s, transport),
        name="20i-telemetry-sender",
        daemon=True,
    )
    worker.start()
    worker.join(attempt_s)
    done = list(results)
    if worker.is_alive():
        done.append(TimeoutError(f"no answer within {attempt_s:g} s"))
    return done


def run(
    paths: Paths,
    env: Mapping[str, str],
    *,
    now: datetime | None = None,
    transport: httpx.BaseTransport | None = None,
    attempt_s: float = ATTEMPT_S,
    force: bool = False,
) -> Outcome:
    """One sender run: lock, check, post the spool once, record the outcome.

    ``transport`` replaces the network in tests (``httpx.MockTransport``); ``force`` ignores
    the schedule. Raises ``OSError`` only if the lock itself cannot be taken.
    """
    ensure_dir(paths.cache_dir)
    fd = _try_lock(lock_file(paths))
    if fd is None:
        return Outcome("busy")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return _run_locked(paths, env, now, transport, attempt_s, force)
    finally:
        os.close(fd)


def _run_locked(
    paths: Paths,
    env: Mapping[str, str],
    now: datetime | None,
    transport: httpx.BaseTransport | None,
    attempt_s: float,
    force: bool,
) -> Outcome:
    now = datetime.now(UTC) if now is None else now
    spool.prune(paths, now)
    names = spool.spool_names(paths)
    if not names:
        return Outcome("empty")
    schedule = read_schedule(paths)
    if not force and not due(schedule, spool.created_of(names[-1]), now):
        return Outcome("not-due", kept=len(names))
    if debug_enabled(env):
        return Outcome("debug", kept=len(names))
    override = env_override(env)
    if override is not None:
        return Outcome("off", kept=len(names), detail=override[0])

    from cli.endpoint import resolve

    destination = resolve(paths, env)
    entries, dropped = _load_all(paths, names)
    decision = decide(env, paths.consent_file)  # right before posting: disable wins at once
    sendable, never = select(entries, decision, destination)
    for entry in never:
        dropped += _delete(entry.path)
    if not decision.any_on:
        kept = len(entries) - len(never)
        return Outcome("off", dropped=dropped, kept=kept, detail=decision.source)
    if not sendable:
        return Outcome("empty", dropped=dropped)
    schedule.last_attempt = now
    if destination.endpoint is None:
        # Reports wait (bounded by the spool) until an endpoint is configured; look again in
        # MIN_INTERVAL rather than at every host command.
        schedule.next_attempt = now + MIN_INTERVAL
        _save(paths, schedule)
        return Outcome("not-configured", dropped=dropped, kept=len(sendable))
    try:
        _check_writable_log(paths.sent_log)
    except OSError as exc:
        schedule.next_attempt = now + MIN_INTERVAL
        _save(paths, schedule)
        return Outcome("unwritable", dropped=dropped, kept=len(sendable), detail=str(exc))
    # Persist "tried now" before the network: a sender killed mid-attempt leaves no reason
    # for the next host command to start another one straight away.
    schedule.next_attempt = now + _backoff(schedule.failures + 1, None)
    write_schedule(paths, schedule)

    batches = _batches(sendable)
    url = reports_url(destination.endpoint)
    results = _attempt(url, batches, attempt_s, transport)
    sent = kept = 0
    retry_after: float | None = None
    failure = ""
    log_lines: list[bytes] = []
    from cli.sentlog import encode_entry

    sent_at = datetime.now(UTC)
    for index, batch in enumerate(batches):
        result = results[index] if index < len(results) else None
        if isinstance(result, tuple) and 200 <= result[0] < 300:
            for entry in batch:
                log_lines.append(encode_entry(entry.plaintext, sent_at, url))
                _delete(entry.path)
            sent += len(batch)
        elif isinstance(result, tuple) and 400 <= result[0] < 500 and result[0] not in _RETRY_4XX:
            for entry in batch:
                dropped += _delete(entry.path)
            failure = failure or f"HTTP {result[0]}: dropped"
        else:
            kept += len(batch)
            if isinstance(result, tuple):
                failure = failure or f"HTTP {result[0]}"
                after = _retry_after(result[1], now)
                if after is not None:
                    retry_after = after if retry_after is None else max(retry_after, after)
            elif isinstance(result, BaseException):
                failure = failure or f"{type(result).__name__}: {result}"
            else:
                failure = failure or "not attempted"
    # Checked writable just before; if it fails now, resending the reports would be worse.
    with contextlib.suppress(OSError):
        append_sent_log(paths.sent_log, log_lines)
    if kept:
        schedule.failures = min(schedule.failures + 1, 63)
        schedule.next_attempt = now + _backoff(schedule.failures, retry_after)
    else:
        schedule.failures = 0
        schedule.next_attempt = now + MIN_INTERVAL
    _save(paths, schedule)
    return Outcome("failed" if kept else "sent", sent, dropped, kept, failure)


def _load_all(paths: Paths, names: Sequence[str]) -> tuple[list[SpoolEntry], int]:
    entries: list[SpoolEntry] = []
    dropped = 0
    for name in names:
        try:
            entries.append(spool.load(paths.spool_dir / name))
        except (OSError, ValueError):
            dropped += _delete(paths.spool_dir / name)  # corrupt: it can never be sent
    return entries, dropped


def _delete(path: Path) -> int:
    try:
        return int(spool.remove(path))
    except OSError:
        return 0


def _save(paths: Paths, schedule: Schedule) -> None:
    # A read-only cache dir: nothing was sent, and the next run decides again.
    with contextlib.suppress(OSError):
        write_schedule(paths, schedule)


# --- the process ----------------------------------------------------------------------------


def hard_deadline(env: Mapping[str, str]) -> float:
    """The process lifetime in seconds: ``TWENTYI_TELEMETRY_SENDER_DEADLINE`` (a testing hook,
    clamped to [1, 60]) or HARD_DEADLINE_S."""
    raw = env.get(ENV_DEADLINE, "").strip()
    try:
        value = float(raw) if raw else HARD_DEADLINE_S
    except ValueError:
        value = HARD_DEADLINE_S
    if value != value:  # NaN
        value = HARD_DEADLINE_S
    return min(max(value, 1.0), 60.0)


def _arm_deadline(seconds: float) -> None:
    """Let the kernel end this process after ``seconds``: SIGALRM's default action terminates
    it even if Python is stuck in a C call, so no sender outlives its deadline."""
    import signal

    if hasattr(signal, "setitimer"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        # A host that blocks SIGALRM passes its signal mask on through fork and exec.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
        signal.setitimer(signal.ITIMER_REAL, seconds)


def main(argv: Sequence[str] | None = None, stderr: TextIO | None = None) -> int:
    """``python -m cli.sender --config-dir C --state-dir S --cache-dir K``: one run; exit 0.

    Prints nothing (its output goes to /dev/null anyway) unless given ``stderr``.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cli.sender", add_help=False)
    for option in ("--config-dir", "--state-dir", "--cache-dir"):
        parser.add_argument(option, required=True)
    parser.add_argument("--force", action="store_true")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return 2
    deadline = hard_deadline(os.environ)
    _arm_deadline(deadline)
    # Leave time for start-up and bookkeeping inside the deadline.
    attempt_s = min(ATTEMPT_S, max(0.5, deadline / 2))
    paths = Paths(Path(args.config_dir), Path(args.state_dir), Path(args.cache_dir))
    try:
        outcome = run(paths, os.environ, attempt_s=attempt_s, force=args.force)
    except Exception as exc:  # a detached process has nobody to tell; exit quietly
        outcome = Outcome("error", detail=f"{type(exc).__name__}: {exc}")
    if stderr is not None:
        stderr.write(f"{outcome!r}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
