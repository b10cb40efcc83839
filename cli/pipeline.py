"""The period roll-over: turn a finished period's tally into sealed reports and start the sender.

``twentyi_telemetry.tracking`` calls :func:`maybe_roll_over` on every host command while
telemetry is on, holding the tally lock. Usually it only checks that the tally is current and
that the spool is empty. At the first command after a period (ISO week, UTC) ends, it builds that
period's
reports from the tally, seals them to the analyzer key, spools them, records their memo keys in
the ledger (digests only) and clears the tally; whenever spooled reports are due it starts the
detached sender (:mod:`cli.sender`), or, with ``TWENTYI_TELEMETRY_DEBUG=1``, prints them to
stderr instead and sends nothing.

It never raises into the host, never waits on the network, never writes a report in plaintext
outside the spool and never imports ``ldp``, ``httpx`` or ``cryptography`` unless a period
actually rolls over. Decisions where the issue left a choice:

- With no analyzer key configured, a finished period is discarded: nothing can be sealed, a
  plaintext report is never spooled, and keeping the raw tally for later would keep true values
  on disk. Reports already sealed wait in the spool for an endpoint.
- Each (kind, period) is reported at most once: the period is marked as reported (in
  ``reported.json`` in the state dir) *before* the report is built, so a crash between
  spooling and clearing the tally can lose a report but never send a second, freshly
  randomized one for the same week.
- The reports are built by ``cli.compose.compose``, the recipe ``20i telemetry preview``
  uses: the ``command`` field is one command drawn uniformly from the period's invocations
  with the OS CSPRNG, ``error_category`` the same over the recorded outcomes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from twentyi_telemetry.consent import Decision
from twentyi_telemetry.state import (
    Paths,
    count_spooled,
    ensure_dir,
    ensure_secret,
    read_small,
    write_atomic,
)
from twentyi_telemetry.tally import Tally, clear_tally, iso_period, read_tally

if TYPE_CHECKING:
    from ldp.budget import Ledger
    from ldp.sampling import RandomSource
    from ldp.schema import ReportKind

__all__ = [
    "Spawner",
    "maybe_roll_over",
    "reported_file",
    "roll_over",
    "start_sender",
]

#: Starts the detached sender for these paths and environment (``cli.sender.spawn``).
Spawner = Callable[[Paths, Mapping[str, str]], object]

_PERIOD = re.compile(r"\d{4}-W\d{2}", re.ASCII)
_KINDS = ("usage", "errors")


def reported_file(paths: Paths) -> Path:
    """The last period reported per kind: ``{"v": 1, "usage": "2026-W48", ...}``."""
    return paths.state_dir / "reported.json"


def maybe_roll_over(
    *,
    paths: Paths,
    decision: Decision,
    now: datetime,
    env: Mapping[str, str] | None = None,
    spawn: Spawner | None = None,
    rand: RandomSource | None = None,
    stderr: TextIO | None = None,
) -> None:
    """Roll a finished period over into the spool, then start the sender if reports are due.

    Called by ``twentyi_telemetry.tracking`` with the tally lock held. ``env`` (default
    ``os.environ``), ``spawn`` (default ``cli.sender.spawn``), ``rand`` (default the OS CSPRNG)
    and ``stderr``
    (for ``TWENTYI_TELEMETRY_DEBUG``) are parameters for tests. Never raises.
    """
    env = os.environ if env is None else env
    # A failed roll-over costs one period's reports, never the command.
    with contextlib.suppress(Exception):
        roll_over(paths, decision, now, env, rand)
    # A failed start leaves the spool as it is; the next command tries again.
    with contextlib.suppress(Exception):
        start_sender(paths, now, env, spawn, stderr)


# --- the roll-over ---------------------------------------------------------------------------


def _finished(tally: Tally, now: datetime) -> bool:
    """The tally's period is a real ISO week that ended before ``now``'s period began."""
    return bool(_PERIOD.fullmatch(tally.period)) and tally.period < iso_period(now)


def _read_reported(paths: Paths) -> dict[str, str]:
    try:
        raw = json.loads(read_small(reported_file(paths)))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable: the worst case is one more report for an unmarked period
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if k in _KINDS and isinstance(v, str)}


def _write_reported(paths: Paths, reported: dict[str, str]) -> None:
    document = {"v": 1, **{k: reported[k] for k in sorted(reported)}}
    write_atomic(reported_file(paths), json.dumps(document, sort_keys=True).encode())


def roll_over(
    paths: Paths,
    decision: Decision,
    now: datetime,
    env: Mapping[str, str],
    rand: RandomSource | None = None,
) -> list[Path]:
    """If the tally belongs to a finished period, spool its reports and clear it.

    Returns the spool files written (``[]`` if nothing rolled over). A kind is reported only
    if it is on now, was recorded entirely after its consent's as-of time, recorded something,
    and was not reported for this period already. Raises on failure (the caller swallows).
    """
    tally = read_tally(paths.tally_file)
    if tally is None or not _finished(tally, now):
        return []
    return _roll_over(paths, decision, tally, now, env, rand)


def _reportable_kinds(
    decision: Decision, tally: Tally, reported: Mapping[str, str]
) -> tuple[str, ...]:
    consent = decision.consent_file.consent if decision.consent_file is not None else None
    if consent is None:
        return ()
    kinds = []
    if decision.usage and tally.usage is not None and tally.usage.commands:
        as_of = consent.usage.as_of
        if as_of is not None and tally.usage.since >= as_of:
            kinds.append("usage")
    if decision.errors and tally.errors is not None and tally.errors.categories:
        as_of = consent.errors.as_of
        if as_of is not None and tally.errors.since >= as_of:
            kinds.append("errors")
    return tuple(k for k in kinds if tally.period > reported.get(k, ""))


def _roll_over(
    paths: Paths,
    decision: Decision,
    tally: Tally,
    now: datetime,
    env: Mapping[str, str],
    rand: RandomSource | None,
) -> list[Path]:
    from cli.spool import MAX_AGE

    reported = _read_reported(paths)
    kinds = _reportable_kinds(decision, tally, reported)
    if not kinds:
        clear_tally(paths.tally_file)
        return []

    from ldp.report import period_start
    from ldp.schema import shipped_schema

    schema = shipped_schema()
    period_end = period_start(tally.period) + timedelta(weeks=1)
    if tally.schema_version != schema.version or now - period_end > MAX_AGE:
        clear_tally(paths.tally_file)  # another schema's counts, or a week too old to send
        return []

    from cli.endpoint import resolve

    destination = resolve(paths, env)
    if destination.public_key is None:
        # Nothing can be sealed, and plaintext is never spooled: the period is discarded.
        clear_tally(paths.tally_file)
        return []
    public_key = destination.key()

    ensure_dir(paths.spool_dir)  # an unusable cache dir stops here, before anything is spent
    secret, _ = ensure_secret(paths)
    # At most once per (kind, period): mark first, so no crash can lead to a second report.
    _write_reported(paths, {**reported, **{k: tally.period for k in kinds}})

    from cli import spool
    from cli.compose import compose
    from ldp.budget import Ledger
    from ldp.envelope import seal

    ledger = Ledger(paths.ledger_file)
    written: list[Path] = []
    # The same recipe as `20i telemetry preview`; _reportable_kinds checked each kind recorded
    # something, so every kind yields a report.
    for kind, values, report in compose(tally, schema, secret, kinds, rand):
        plaintext = report.encode()
        # Digests only; a broken ledger file must not cost the report (it only over-counts
        # when it works, and `info` says when it does not).
        with contextlib.suppress(Exception):
            _record_memo_keys(ledger, schema.kind(kind), values, secret)
        path = spool.add(
            paths,
            kind=kind,
            period=tally.period,
            key=destination.public_key,
            sealed=seal(plaintext, public_key),
            plaintext=plaintext,
            now=now,
        )
        written.append(path)
    clear_tally(paths.tally_file)
    return written


def _record_memo_keys(
    ledger: Ledger, report_kind: ReportKind, values: Mapping[str, object], secret: bytes
) -> None:
    """Note in the ledger which permanent responses this report used (HMAC digests only)."""
    for spec in report_kind.fields:
        value = values[spec.name]
        if spec.kind == "categorical":
            x: int | frozenset[int] = spec.index(value)
        else:
            assert isinstance(value, Collection)  # set fields take a collection (true_values)
            x = spec.indices(value)
        ledger.record_value(spec.randomizer(), spec.name, x, secret)


# --- starting the sender ---------------------------------------------------------------------


def start_sender(
    paths: Paths,
    now: datetime,
    env: Mapping[str, str],
    spawn: Spawner | None = None,
    stderr: TextIO | None = None,
) -> bool:
    """Start the detached sender if reports are spooled, due and no sender runs; True if so.

    With ``TWENTYI_TELEMETRY_DEBUG`` set, print the reports that would be sent to ``stderr``
    (default ``sys.stderr``) instead, and start nothing.
    """
    if count_spooled(paths) == 0:  # the common case: one scandir, no further import
        return False
    from cli import sender, spool

    names = spool.spool_names(paths)
    if not names:
        return False

    if not sender.due(sender.read_schedule(paths), spool.created_of(names[-1]), now):
        return False
    if sender.debug_enabled(env):
        _print_debug(paths, env, names, sys.stderr if stderr is None else stderr)
        return False
    if sender.sender_running(paths):
        return False
    (sender.spawn if spawn is None else spawn)(paths, env)
    return True


def _print_debug(paths: Paths, env: Mapping[str, str], names: list[str], out: TextIO) -> None:
    """What the sender would post now, in plaintext, exactly as sealed; nothing is sent."""
    from cli import spool
    from cli.endpoint import resolve
    from cli.sender import ENV_DEBUG, reports_url, select
    from twentyi_telemetry.consent import decide

    destination = resolve(paths, env)
    entries = []
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            entries.append(spool.load(paths.spool_dir / name))
    sendable, _ = select(entries, decide(env, paths.consent_file), destination)
    where = (
        "no endpoint configured"
        if destination.endpoint is None
        else reports_url(destination.endpoint)
    )
    prefix = "20i telemetry debug:"
    out.write(
        f"{prefix} {ENV_DEBUG} is set, so nothing is sent; {len(sendable)} report(s) would be"
        f" sent to {where}\n"
    )
    for entry in sendable:
        out.write(f"{prefix} {entry.kind} {entry.period}: {entry.plaintext.decode('ascii')}\n")
    out.flush()
