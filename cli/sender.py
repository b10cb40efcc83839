"""The detached worker: roll finished periods over, post one report, exit by a deadline.

A host command starts it (:func:`twentyi_telemetry.worker.start`: ``python -I`` with this
distribution first on ``sys.path``) in a session of its own with no terminal, and never waits
for it. It first checks the environment and the consent and touches nothing if telemetry is
off; then it takes the telemetry lock (``filelock``: one worker at a time, released by the
kernel when a worker dies, so a stale lock blocks nobody) and checks again under it, so a
``disable`` that took the lock before it always wins. Under the lock it rolls finished periods
over (``cli.pipeline``: build, randomize, seal and spool their reports) and makes one bounded
attempt to post ONE spooled report, picked uniformly at random (OS CSPRNG), alone in its
request on a connection of its own, with httpx (connect 1 s, whole attempt at most 5 s, proxies
from the environment honoured, redirects never followed): 2xx deletes it and appends its
plaintext to the sent log, other 4xx (but 408 and 429) drop it, anything else keeps it with a
persisted backoff. Reports leave spread in time: a run that has just spooled reports sends
none, and after every attempt the next one waits a fresh random gap (:data:`GAP_MIN` to
:data:`GAP_MAX`), so a week's usage and errors reports never leave together and a backlog
drains one report per host invocation that finds the gap over (issue 14: otherwise the
collector, which sees the address, would see which reports belong together). SIGALRM ends it
at its hard deadline whatever the server does: no orphans. It never sends a report whose kind
is off or whose consent is newer than the report, and never sends anything while
``TWENTYI_TELEMETRY_DEBUG`` is set.

``disable`` stops a running worker (:func:`stop_and_lock`) and holds the lock while it writes
and purges, so nothing is sent, and no file reappears, after it returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from cli import spool
from cli.spool import SpoolEntry
from twentyi_telemetry.consent import SOURCE_CONSENT, Decision, decide, env_override
from twentyi_telemetry.state import Paths, count_spooled, ensure_dir, open_regular, write_atomic
from twentyi_telemetry.worker import (
    ENV_DEBUG,
    MIN_INTERVAL,
    Schedule,
    debug_enabled,
    due,
    lock_file,
    pid_file,
    read_schedule,
    schedule_file,
    write_schedule,
)
from twentyi_telemetry.worker import running as sender_running
from twentyi_telemetry.worker import start as spawn

if TYPE_CHECKING:
    import httpx

    from cli.endpoint import Destination
    from ldp.sampling import RandomSource

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
    "locked",
    "main",
    "read_schedule",
    "reports_url",
    "run",
    "schedule_file",
    "select",
    "sender_running",
    "spawn",
    "stop_and_lock",
    "write_schedule",
]

#: Testing hook: the sender's hard deadline in seconds (1 to 60; default HARD_DEADLINE_S).
ENV_DEADLINE = "TWENTYI_TELEMETRY_SENDER_DEADLINE"
HARD_DEADLINE_S = 10.0
#: One attempt (every request of it) takes at most this long; connecting at most CONNECT_S.
ATTEMPT_S = 5.0
CONNECT_S = 1.0
#: At most one attempt per MIN_INTERVAL (``twentyi_telemetry.worker``), unless a report was
#: spooled after the last successful attempt; after failures the wait doubles up to MAX_BACKOFF.
MAX_BACKOFF = timedelta(hours=48)
#: Between two reports leaving this machine, and between spooling and the first of them: a
#: gap drawn uniformly (in seconds, OS CSPRNG) from [GAP_MIN, GAP_MAX], independently each
#: time. Long enough that two reports are never seen together, short enough that a week's two
#: reports are out within a day or two of the first host command that finds them due.
GAP_MIN = timedelta(hours=1)
GAP_MAX = timedelta(hours=12)
#: Status codes kept for a retry although they are 4xx: the request was not judged, only
#: refused for now (429) or timed out (408).
_RETRY_4XX = frozenset({408, 429})
_USER_AGENT = "20i-telemetry/1"  # fixed: httpx's default would name the Python library version


def random_gap(rand: RandomSource | None = None) -> timedelta:
    """A gap uniform on [GAP_MIN, GAP_MAX] in whole seconds, drawn with ``rand`` (default the
    OS CSPRNG, ``ldp.sampling.SYSTEM``)."""
    from ldp.sampling import SYSTEM

    low, high = int(GAP_MIN.total_seconds()), int(GAP_MAX.total_seconds())
    return timedelta(seconds=low + (rand or SYSTEM).randbelow(high - low + 1))


def _backoff(failures: int, retry_after: float | None) -> timedelta:
    """Wait after ``failures`` failed attempts in a row: 6 h, 12 h, 24 h, then 48 h; at least
    what the server asked for with Retry-After, at most MAX_BACKOFF."""
    wait = MIN_INTERVAL * (1 << min(max(failures - 1, 0), 8))
    if retry_after is not None:
        wait = max(wait, timedelta(seconds=retry_after))
    return min(wait, MAX_BACKOFF)


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
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600, follow=False)
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
    with os.fdopen(open_regular(path, follow=False), "rb") as handle:
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
    os.close(open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600, follow=False))


# --- one attempt ----------------------------------------------------------------------------


class Outcome:
    """What one sender run did (for tests and the debug output; never shown to the host)."""

    __slots__ = ("detail", "dropped", "kept", "sent", "state")

    def __init__(
        self, state: str, sent: int = 0, dropped: int = 0, kept: int = 0, detail: str = ""
    ) -> None:
        #: "busy", "empty", "not-due", "off", "debug", "not-configured", "unwritable",
        #: "waiting" (just spooled: a random gap first), "sent", "failed" (kept for a retry);
        #: ``kept``: sendable reports still spooled
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


def _body(entry: SpoolEntry) -> bytes:
    """One report, alone in its request body (DESIGN section 4: one report per request)."""
    import base64

    report = base64.b64encode(entry.sealed).decode("ascii")
    return json.dumps({"reports": [report]}, separators=(",", ":")).encode("ascii")


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


def _post_one(
    url: str,
    entry: SpoolEntry,
    results: list[tuple[int, str | None] | BaseException],
    attempt_s: float,
    transport: httpx.BaseTransport | None,
) -> None:
    """Post one report on a client (so a connection) of its own, appending
    ``(status, Retry-After)`` or the exception to ``results``."""
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
            response = client.post(url, content=_body(entry))
            results.append((response.status_code, response.headers.get("retry-after")))
    except Exception as exc:  # network errors, timeouts, a bad proxy URL: keep and back off
        results.append(exc)


def _attempt(
    url: str,
    entry: SpoolEntry,
    attempt_s: float,
    transport: httpx.BaseTransport | None,
) -> list[tuple[int, str | None] | BaseException]:
    """Run the post in a daemon thread and stop waiting after ``attempt_s`` seconds.

    httpx's timeouts bound each connect and each read or write, not a whole request that a
    server drips out slowly; the thread bounds the whole attempt. No answer by then counts as
    a network failure (the report stays spooled).
    """
    import threading

    results: list[tuple[int, str | None] | BaseException] = []
    worker = threading.Thread(
        target=_post_one,
        args=(url, entry, results, attempt_s, transport),
        name="20i-telemetry-sender",
        daemon=True,
    )
    worker.start()
    worker.join(attempt_s)
    done = list(results)
    if worker.is_alive():
        done.append(TimeoutError(f"no answer within {attempt_s:g} s"))
    return done


@contextlib.contextmanager
def locked(paths: Paths, timeout: float) -> Iterator[bool]:
    """Hold the telemetry lock while in the block; yields False if it was not free in time.

    ``filelock`` (``flock`` on POSIX, ``LockFileEx`` on Windows): the kernel releases the lock
    of a process that dies, so a crashed holder never blocks anyone. Anything but a regular
    file at the lock's path is refused (``OSError``) rather than locked.
    """
    import filelock

    path = lock_file(paths)
    ensure_dir(path.parent)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OSError(f"{path} is not a regular file")
    lock = filelock.FileLock(str(path), timeout=timeout, mode=0o600)
    try:
        lock.acquire(poll_interval=0.01)
    except filelock.Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _stop_running_worker(paths: Paths) -> None:
    """Ask the worker that holds the lock to end now (SIGTERM); it may be mid-request."""
    import signal

    if not sender_running(paths):
        return
    with contextlib.suppress(OSError, ValueError):
        fd = open_regular(pid_file(paths), follow=False)
        with os.fdopen(fd, "rb") as handle:
            pid = int(handle.read(32).strip())
        if pid > 1 and pid != os.getpid():
            os.kill(pid, signal.SIGTERM)


@contextlib.contextmanager
def stop_and_lock(paths: Paths, env: Mapping[str, str]) -> Iterator[None]:
    """For ``disable``: stop a running worker and hold the lock while in the block.

    Call it *after* writing the new consent. A worker that has not taken the lock yet will
    find the consent off once it has it; one that holds it is stopped (SIGTERM) and its lock
    released by the kernel, at most its hard deadline later. So once the block ends, no worker
    is sending, and none will. Without a lock file no worker has got past its first check.
    Raises ``StateError`` if the lock cannot be had in that time.
    """
    from twentyi_telemetry.errors import StateError

    path = lock_file(paths)
    if not (path.exists() or path.is_symlink()):
        yield
        return
    _stop_running_worker(paths)
    try:
        with locked(paths, timeout=hard_deadline(env) + 1.0) as got:
            if not got:
                raise StateError(f"a telemetry worker still holds {path}; try again shortly")
            yield
    except OSError as exc:
        raise StateError(f"cannot lock {path}: {exc.strerror or exc}") from exc


def _forget_lock(paths: Paths) -> None:
    """Remove the lock file and the folders made for it, if telemetry turned off meanwhile."""
    for path in (pid_file(paths), lock_file(paths)):
        with contextlib.suppress(OSError):
            path.unlink()
    for folder in (paths.cache_dir, paths.cache_dir.parent):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def run(
    paths: Paths,
    env: Mapping[str, str],
    *,
    now: datetime | None = None,
    transport: httpx.BaseTransport | None = None,
    attempt_s: float = ATTEMPT_S,
    force: bool = False,
    rand: RandomSource | None = None,
) -> Outcome:
    """One worker run: check, lock, check again, roll over, post the spool once, record.

    ``transport`` replaces the network in tests (``httpx.MockTransport``); ``force`` ignores
    the schedule and the gap after spooling; ``rand`` the randomness of the roll-over, of the
    pick and of the gaps (default the OS CSPRNG). With telemetry off nothing is touched, not
    even the lock. Raises ``OSError`` only if the lock itself cannot be taken.
    """
    first = decide(env, paths.consent_file)
    if not first.any_on:
        return Outcome("off", kept=count_spooled(paths), detail=first.source)
    with locked(paths, timeout=0) as got:
        if not got:
            return Outcome("busy")
        try:
            with contextlib.suppress(OSError):
                write_atomic(pid_file(paths), f"{os.getpid()}\n".encode(), durable=False)
            decision = decide(env, paths.consent_file)
            if not decision.any_on:  # `disable` came in between: leave nothing behind
                _forget_lock(paths)
                return Outcome("off", detail=decision.source)
            now = datetime.now(UTC) if now is None else now
            from cli.pipeline import roll_over

            # A failed roll-over costs one period's reports, never the spool already waiting.
            spooled: list[Path] = []
            with contextlib.suppress(Exception):
                spooled = roll_over(paths, decision, now, env, rand)
            return _run_locked(paths, env, now, transport, attempt_s, force, rand, bool(spooled))
        finally:
            with contextlib.suppress(OSError):
                pid_file(paths).unlink()


def _run_locked(
    paths: Paths,
    env: Mapping[str, str],
    now: datetime | None,
    transport: httpx.BaseTransport | None,
    attempt_s: float,
    force: bool,
    rand: RandomSource | None = None,
    just_spooled: bool = False,
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
    # Rounded up to the second the schedule file keeps: a report spooled by this run (its
    # name has microseconds) must not look newer than this attempt and make the next host
    # command start a worker before the random gap is over.
    schedule.last_attempt = now.replace(microsecond=0) + timedelta(
        seconds=1 if now.microsecond else 0
    )
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
    if just_spooled and not force:
        # Reports spooled by this run wait a random gap, so that when they leave says nothing
        # about when the period rolled over (the first host command of a week).
        schedule.next_attempt = now + random_gap(rand)
        _save(paths, schedule)
        return Outcome("waiting", dropped=dropped, kept=len(sendable))
    # Persist "tried now" before the network: a sender killed mid-attempt leaves no reason
    # for the next host command to start another one straight away.
    schedule.next_attempt = now + max(_backoff(schedule.failures + 1, None), random_gap(rand))
    write_schedule(paths, schedule)

    from ldp.sampling import SYSTEM

    # One report, picked uniformly among the sendable ones: the order in which a backlog
    # leaves says nothing about the order in which it was made.
    entry = sendable[(rand or SYSTEM).randbelow(len(sendable))]
    url = reports_url(destination.endpoint)
    results = _attempt(url, entry, attempt_s, transport)
    result = results[0] if results else None
    sent = kept = 0
    failure = ""
    retry_after: float | None = None
    if isinstance(result, tuple) and 200 <= result[0] < 300:
        from cli.sentlog import encode_entry

        # Checked writable just before; if it fails now, resending the report would be worse.
        with contextlib.suppress(OSError):
            append_sent_log(paths.sent_log, [encode_entry(entry.plaintext, datetime.now(UTC), url)])
        _delete(entry.path)
        sent = 1
    elif isinstance(result, tuple) and 400 <= result[0] < 500 and result[0] not in _RETRY_4XX:
        dropped += _delete(entry.path)
        failure = f"HTTP {result[0]}: dropped"
    else:
        kept = 1
        if isinstance(result, tuple):
            failure = f"HTTP {result[0]}"
            retry_after = _retry_after(result[1], now)
        elif isinstance(result, BaseException):
            failure = f"{type(result).__name__}: {result}"
        else:
            failure = "not attempted"
    waiting = len(sendable) - (0 if kept else 1)  # still spooled, for later runs
    if kept:
        schedule.failures = min(schedule.failures + 1, 63)
        schedule.next_attempt = now + _backoff(schedule.failures, retry_after)
    else:
        schedule.failures = 0
        # The next report (if any) leaves after a fresh random gap, at a later host command.
        schedule.next_attempt = now + random_gap(rand)
    _save(paths, schedule)
    return Outcome("failed" if kept else "sent", sent, dropped, waiting, failure)


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
