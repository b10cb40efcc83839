"""The period roll-over: turn finished periods' journals into sealed reports in the spool.

Runs only in the detached worker (``cli.sender.run``), under the telemetry lock, never in a
host command. For every period that has ended (ISO week, UTC) it *claims* the period's journal
(renames it, so host commands still finishing that week start a fresh file), waits a moment for
a command that opened the old file just before the rename to finish its one ``write``, folds
the lines recorded under the consent in force into a tally, builds that period's reports from
it (freezing each field's epoch response in the epoch memo first), seals them to the analyzer
key, spools them and deletes the claimed files. Decisions where the issue left a choice:

- With no analyzer key configured, a finished period is discarded: nothing can be sealed, a
  plaintext report is never spooled, and keeping the raw tally for later would keep true values
  on disk. Reports already sealed wait in the spool for an endpoint.
- Each (kind, period) is reported at most once: the period is marked as reported (in
  ``reported.json`` in the state dir) *before* the report is built, so a crash between
  spooling and deleting the journal can lose a report but never send a second, freshly
  randomized one for the same week. Journal files claimed by a worker that crashed are
  deleted once their period is marked.
- A count that reaches a period's journal after that period was reported (a command that
  started in the last instant of the week, or a machine that slept through the roll-over)
  is not dropped: it is carried into the current period's journal.
- The reports are built by ``cli.compose.compose``, the recipe ``20i telemetry preview``
  uses: the ``command`` field is one command drawn uniformly from the period's invocations
  with the OS CSPRNG, ``error_category`` the same over the recorded outcomes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from twentyi_telemetry.consent import Decision
from twentyi_telemetry.state import (
    Paths,
    ensure_dir,
    ensure_secret,
    read_small,
    write_atomic,
)
from twentyi_telemetry.tally import (
    CLAIMED_SUFFIX,
    JOURNAL_SUFFIX,
    Tally,
    append_entry,
    clear_tally,
    fold_journal,
    iso_period,
    journal_periods,
    merge_legacy,
    read_journal,
    read_tally,
    shipped_domains,
)

if TYPE_CHECKING:
    from ldp.sampling import RandomSource

__all__ = ["SETTLE_S", "reported_file", "roll_over"]

_PERIOD = re.compile(r"\d{4}-W\d{2}", re.ASCII)
_KINDS = ("usage", "errors")


def reported_file(paths: Paths) -> Path:
    """The last period reported per kind: ``{"v": 1, "usage": "2026-W48", ...}``."""
    return paths.state_dir / "reported.json"


# --- the roll-over ---------------------------------------------------------------------------

#: How long a claimed journal is left alone before it is read: a command that opened it just
#: before the rename finishes its single ``write`` well within this.
SETTLE_S = 0.05


def _read_reported(paths: Paths) -> dict[str, str]:
    try:
        raw = json.loads(read_small(reported_file(paths)))
    except (OSError, ValueError):
        return {}  # missing or unreadable: the worst case is one more report for a period
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if k in _KINDS and isinstance(v, str)}


def _write_reported(paths: Paths, reported: dict[str, str]) -> None:
    document = {"v": 1, **{k: reported[k] for k in sorted(reported)}}
    write_atomic(reported_file(paths), json.dumps(document, sort_keys=True).encode())


def _claim(path: Path) -> Path | None:
    """Rename an open journal so that no host command appends to it any more."""
    claimed = path.with_name(
        path.name.removesuffix(JOURNAL_SUFFIX) + f".{os.urandom(8).hex()}{CLAIMED_SUFFIX}"
    )
    try:
        os.rename(path, claimed)
    except OSError:
        return None
    return claimed


def roll_over(
    paths: Paths,
    decision: Decision,
    now: datetime,
    env: Mapping[str, str],
    rand: RandomSource | None = None,
) -> list[Path]:
    """Roll every finished period over into the spool; returns the spool files written.

    Hold the telemetry lock while calling. A kind is reported only if it is on now, recorded
    something under its current consent, and was not reported for that period already.
    Raises on failure (the worker swallows it); claimed journals then stay for the next run.
    """
    current = iso_period(now)
    journals = {p: files for p, files in journal_periods(paths.state_dir).items() if p < current}
    legacy = read_tally(paths.tally_file)
    if legacy is not None and not (_PERIOD.fullmatch(legacy.period) and legacy.period < current):
        legacy = None
    if legacy is not None and legacy.schema_version != shipped_domains().schema_version:
        clear_tally(paths.tally_file)  # another schema's counts: they cannot be reported
        legacy = None
    if not journals and legacy is None:
        return []
    fresh: set[Path] = set()
    for files in journals.values():
        for path in list(files):
            if path.name.endswith(JOURNAL_SUFFIX):
                files.remove(path)
                claimed = _claim(path)
                if claimed is not None:
                    files.append(claimed)
                    fresh.add(claimed)
    if fresh:
        time.sleep(SETTLE_S)
    consent = decision.consent_file.consent if decision.consent_file is not None else None
    usage_as_of = consent.usage.as_of if consent is not None and decision.usage else None
    errors_as_of = consent.errors.as_of if consent is not None and decision.errors else None
    periods = sorted(set(journals) | ({legacy.period} if legacy is not None else set()))
    written: list[Path] = []
    for period in periods:
        files = journals.get(period, [])
        reported = _read_reported(paths)
        on = [k for k in _KINDS if getattr(decision, k)]
        if on and all(period <= reported.get(k, "") for k in on) and legacy is None:
            # Already reported: carry late counts into the current period, drop leftovers.
            _carry_over(paths, current, [f for f in files if f in fresh])
        else:
            tally = Tally(period, shipped_domains().schema_version)
            for path in files:
                with contextlib.suppress(OSError):
                    fold_journal(tally, read_journal(path), usage_as_of, errors_as_of)
            if legacy is not None and legacy.period == period:
                merge_legacy(tally, legacy, usage_as_of, errors_as_of)
            written += _roll_over(paths, decision, tally, now, env, rand)
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if legacy is not None and legacy.period == period:
            clear_tally(paths.tally_file)
    return written


def _carry_over(paths: Paths, current: str, files: list[Path]) -> None:
    """Append the lines of a reported period's late journal to the current period's."""
    for path in files:
        with contextlib.suppress(OSError):
            data = read_journal(path)
            lines = [line + b"\n" for line in data.split(b"\n") if line.strip()]
            for line in lines:
                append_entry(paths.state_dir, current, line)


def _reportable_kinds(
    decision: Decision, tally: Tally, reported: Mapping[str, str]
) -> tuple[str, ...]:
    kinds = []
    if decision.usage and tally.usage is not None and tally.usage.commands:
        kinds.append("usage")
    if decision.errors and tally.errors is not None and tally.errors.categories:
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
        return []

    from ldp.report import period_start
    from ldp.schema import shipped_schema

    schema = shipped_schema()
    period_end = period_start(tally.period) + timedelta(weeks=1)
    if tally.schema_version != schema.version or now - period_end > MAX_AGE:
        return []  # another schema's counts, or a week too old to send
    if not schema.sendable:
        return []  # no epochs, so no finite bound over a year: never send under it

    from cli.endpoint import resolve

    destination = resolve(paths, env)
    if destination.public_key is None:
        # Nothing can be sealed, and plaintext is never spooled: the period is discarded.
        return []
    public_key = destination.key()

    ensure_dir(paths.spool_dir)  # an unusable cache dir stops here, before anything is spent
    secret, _ = ensure_secret(paths)
    # At most once per (kind, period): mark first, so no crash can lead to a second report.
    _write_reported(paths, {**reported, **{k: tally.period for k in kinds}})

    from cli import spool
    from cli.compose import compose
    from ldp.envelope import seal
    from ldp.epochs import EpochMemo, week_index
    from ldp.report import epoch_responses

    memo = EpochMemo(paths.epochs_file)
    written: list[Path] = []
    # The same recipe as `20i telemetry preview`; _reportable_kinds checked each kind recorded
    # something, so every kind yields a report.
    for kind, values, report in compose(tally, schema, secret, kinds, rand, memo):
        plaintext = report.encode()
        # Freeze the epoch's responses *before* the report can leave: a crash after this only
        # over-counts the spend, while the other order could let a later week of the same
        # epoch draw a second response. A memo that cannot be read or written (damaged, or not
        # a regular file) stops the report rather than risk a second draw.
        memo.commit(
            epoch_responses(schema, kind, tally.period, values, secret, memo),
            week_index(tally.period),
        )
        path = spool.add(
            paths,
            kind=kind,
            period=tally.period,
            key=destination.public_key,
            # Padded: every sealed report has one length, whatever it says (ldp.report.pad).
            sealed=seal(report.padded(), public_key),
            plaintext=plaintext,
            now=now,
        )
        written.append(path)
    return written
