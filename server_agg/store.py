"""The collector's durable store: opaque HPKE ciphertexts and their arrival day, in SQLite (WAL).

A report is kept as (ciphertext, SHA-256 of it for de-duplication, arrival day as
``YYYY-MM-DD`` in UTC). It must never hold anything else about a request: no client address,
no header, no time finer than the day. A write returns only after its transaction is committed,
so the collector can acknowledge exactly what is durable.

Durability: WAL mode with ``synchronous=NORMAL`` by default. COMMIT returns once the
transaction's frames are written to the WAL file; they are then in the kernel's page cache,
which outlives the process, so a commit survives SIGKILL, an OOM kill or a crash of the
collector (the SIGKILL test proves it). Only an OS crash or power loss before the next
checkpoint can drop the last commits, and the database stays consistent even then (WAL frames
are checksummed). ``synchronous=FULL`` also fsyncs the WAL at every commit, for power loss.

Order: rowids follow arrival (exports and prune use them as a watermark), so no reader is
handed them in that order: :meth:`Store.iter_reports` and :meth:`Store.shuffled_rowids` (what
the analyzer reads through) draw a fresh uniformly random order from the OS CSPRNG for every
read, and exports shuffle each file. Arrival order would let a reader regroup the reports one
client sent close together, and the central epsilon after shuffling assumes there is none.

Retention: :meth:`Store.prune` deletes reports past the retention period (PRIVACY.md). Every
connection runs with ``secure_delete`` (FAST while collecting, ON while pruning), so a deleted
report's bytes are overwritten, not left in page slack, free pages or the write-ahead log.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DEFAULT_KEEP_DAYS",
    "SCHEMA_VERSION",
    "ExportClaim",
    "PruneResult",
    "Store",
    "StoreError",
    "first_kept_day",
    "utc_today",
]

#: Bumped whenever the table layout changes; a store newer than the code is refused.
SCHEMA_VERSION = 1

#: Retention promised in PRIVACY.md: a report is deleted 400 days after the day it arrived
#: (a little over a year, so that a week can be compared with the same week a year earlier).
DEFAULT_KEEP_DAYS = 400

_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS reports (
    -- Arrival order inside this store, never reused: exports use it as a watermark.
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- UTC date of arrival, the only time kept.
    day        TEXT    NOT NULL CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    -- SHA-256 of the ciphertext: the same report posted twice is stored once.
    digest     BLOB    NOT NULL UNIQUE CHECK (length(digest) = 32),
    ciphertext BLOB    NOT NULL CHECK (length(ciphertext) > 0)
)""",
    """
CREATE TABLE IF NOT EXISTS exports (
    -- One export run covers the reports with first_id < id <= last_id.
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    first_id INTEGER NOT NULL,
    last_id  INTEGER NOT NULL CHECK (last_id > first_id),
    out_dir  TEXT    NOT NULL,
    state    TEXT    NOT NULL CHECK (state IN ('pending', 'done'))
)""",
)


class StoreError(Exception):
    """The store cannot be opened, read or written; the message says which file and why."""


def utc_today() -> date:
    """The current date in UTC: the only clock reading the store ever keeps."""
    return datetime.now(UTC).date()


def first_kept_day(keep_days: int, today: date) -> date:
    """The oldest arrival day that ``keep_days`` days of retention keep, counted in UTC days.

    The kept days are ``today`` and the ``keep_days - 1`` days before it, so a report that
    arrived on day D is deleted by the first prune on or after day D + ``keep_days``.
    """
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or keep_days < 1:
        raise ValueError(f"keep_days ({keep_days!r}) must be an integer >= 1")
    try:
        return today - timedelta(days=keep_days - 1)
    except OverflowError:  # further back than year 1: nothing can be that old
        return date.min


@dataclass(frozen=True)
class PruneResult:
    """What one :meth:`Store.prune` did (or, with ``dry_run``, would do).

    ``unexported`` counts the deleted reports that no finished export run covered: their only
    copy is gone. ``checkpointed`` is ``False`` when the write-ahead log could not be emptied
    because another connection was busy (SQLite's later checkpoints then overwrite it), and
    always ``False`` for a dry run or when nothing was deleted.
    """

    before_day: str
    deleted: int
    unexported: int
    dry_run: bool
    checkpointed: bool


@dataclass(frozen=True)
class ExportClaim:
    """One export run: the reports with ``first_id < rowid <= last_id``, written to ``out_dir``."""

    export_id: int
    first_id: int
    last_id: int
    out_dir: str


class Store:
    """A SQLite file of sealed reports; safe to share between threads (one lock, one connection).

    Parameters
    ----------
    path:
        The database file; its directory must exist.
    create:
        Create the file and tables if missing; with ``False`` a missing file is a
        :class:`StoreError` (the analyzer should not conjure an empty store out of a typo).
    synchronous:
        ``"NORMAL"`` (default: a commit survives a killed process, not a crashed machine) or
        ``"FULL"`` (fsync per commit: survives power loss). See the module docstring.
    clock:
        Returns today's UTC date; injected by tests that need several days.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        synchronous: Literal["FULL", "NORMAL"] = "NORMAL",
        clock: Callable[[], date] = utc_today,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous ({synchronous!r}) must be 'FULL' or 'NORMAL'")
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        if not create and not self.path.is_file():
            raise StoreError(f"no store at {self.path}")
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so we know when it is durable.
            self._db = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=10.0,
                cached_statements=1024,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        try:
            self._setup(synchronous, create)
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        except StoreError:
            self._db.close()
            raise

    def _setup(self, synchronous: str, create: bool) -> None:
        db = self._db
        db.execute("PRAGMA busy_timeout = 10000")
        # Before anything writes: a file that is not ours is never touched (no tables, no WAL
        # switch, no user_version), and without ``create`` an empty file is no store either.
        found = _identify(db, self.path)
        if found == "empty" and not create:
            raise StoreError(f"{self.path} is not a 20i store (an empty database)")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL is required")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        # Zero the slack that page splits and deletions leave, at no extra I/O: without it a
        # page keeps stale copies of rows it once held, which a prune could not reach. (Some
        # SQLite builds default to ON, others to OFF: say it here.) prune() switches to ON.
        db.execute("PRAGMA secure_delete = FAST")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise sqlite3.OperationalError(
                f"schema version {version} is newer than this program's ({SCHEMA_VERSION})"
            )
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (the last one to close also checkpoints the WAL into the file)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def add_batch(self, reports: Sequence[bytes]) -> tuple[int, int]:
        """Store one batch in one transaction; return ``(accepted, duplicates)`` once committed."""
        return self.add_batches([reports])[0]

    def add_batches(self, batches: Sequence[Sequence[bytes]]) -> list[tuple[int, int]]:
        """Store several batches in ONE transaction (group commit); per batch ``(accepted, dups)``.

        A duplicate is a ciphertext whose SHA-256 is already stored (or appears earlier in the
        same call). Nothing is visible, and nothing may be acknowledged, before the COMMIT that
        this method waits for; if it raises, none of the batches was stored.
        """
        day = self._clock().isoformat()
        if not _DAY_RE.fullmatch(day):
            raise ValueError(f"clock returned {day!r}, expected a YYYY-MM-DD date")
        hashed: list[list[tuple[bytes, bytes]]] = []
        for b, batch in enumerate(batches):
            items: Sequence[object] = batch  # checked at run time: callers are not all typed
            pairs = []
            for i, report in enumerate(items):
                if not isinstance(report, bytes):
                    kind = type(report).__name__
                    raise TypeError(f"report {i} of batch {b} is {kind}, not bytes")
                if not report:
                    raise ValueError(f"report {i} of batch {b} is empty")
                pairs.append((hashlib.sha256(report).digest(), report))
            hashed.append(pairs)
        with self._write() as db:
            results, new_rows = self._dedupe(hashed)
            for start in range(0, len(new_rows), _ROWS_PER_INSERT):
                chunk = new_rows[start : start + _ROWS_PER_INSERT]
                db.execute(_insert_sql(len(chunk)), _flatten(day, chunk))
        return results

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction under the lock: ``BEGIN IMMEDIATE``, then ``COMMIT`` when
        the block ends, ``ROLLBACK`` if it raises; SQLite errors become :class:`StoreError`."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write to store {self.path}: {exc}") from None

    def _dedupe(
        self, hashed: list[list[tuple[bytes, bytes]]]
    ) -> tuple[list[tuple[int, int]], list[tuple[bytes, bytes]]]:
        """Per batch ``(accepted, duplicates)`` and the rows to insert; inside the transaction.

        Looking the digests up first lets the insert be a few multi-row statements. Each
        statement is one ``sqlite3_step``, and the ``sqlite3`` module hands the GIL back and
        forth around every step: per-row statements made the event loop and this thread wait
        on each other hundreds of times per commit.
        """
        digests = [d for pairs in hashed for d, _ in pairs]
        seen: set[bytes] = set()
        for start in range(0, len(digests), _ROWS_PER_INSERT):
            chunk = digests[start : start + _ROWS_PER_INSERT]
            marks = ",".join("?" * len(chunk))
            found = self._db.execute(
                f"SELECT digest FROM reports WHERE digest IN ({marks})",  # noqa: S608  # only '?'
                chunk,
            ).fetchall()
            seen.update(bytes(row[0]) for row in found)
        results: list[tuple[int, int]] = []
        new_rows: list[tuple[bytes, bytes]] = []
        for pairs in hashed:
            accepted = 0
            for digest, report in pairs:
                if digest not in seen:
                    seen.add(digest)
                    new_rows.append((digest, report))
                    accepted += 1
            results.append((accepted, len(pairs) - accepted))
        return results, new_rows

    # -- reading ---------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read store {self.path}: {exc}") from None

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the store answers a trivial query (health check)."""
        self._query("SELECT 1 FROM reports LIMIT 1")

    def count(self, day: str | None = None) -> int:
        """Number of stored reports, on ``day`` (``YYYY-MM-DD``) or in total."""
        if day is None:
            rows = self._query("SELECT count(*) FROM reports")
        else:
            rows = self._query("SELECT count(*) FROM reports WHERE day = ?", (_check_day(day),))
        return int(rows[0][0])

    def days(self) -> list[tuple[str, int]]:
        """``(day, number of reports)`` for every day present, oldest first."""
        rows = self._query("SELECT day, count(*) FROM reports GROUP BY day ORDER BY day")
        return [(str(d), int(n)) for d, n in rows]

    def iter_reports(
        self,
        day: str | None = None,
        chunk: int = 1000,
        randbelow: Callable[[int], int] | None = None,
    ) -> Iterator[tuple[int, str, bytes]]:
        """Yield ``(rowid, day, ciphertext)`` in a uniformly random order (never arrival order).

        The order is :meth:`shuffled_rowids`'s; ciphertexts are fetched ``min(chunk, 900)`` per
        short query, so a long iteration never holds the lock or a read transaction that would
        stop the collector from checkpointing. Reports committed after the iteration started
        are not included; reports pruned meanwhile are skipped.
        """
        if chunk < 1:
            raise ValueError(f"chunk ({chunk}) must be >= 1")
        step = min(chunk, _IN_LIMIT)
        rowids = self.shuffled_rowids(day, randbelow)
        for start in range(0, len(rowids), step):
            group = rowids[start : start + step]
            marks = ",".join("?" * len(group))
            rows = self._query(
                f"SELECT id, day, ciphertext FROM reports WHERE id IN ({marks})",  # noqa: S608  # only '?' marks
                group,
            )
            found = {int(r[0]): (str(r[1]), bytes(r[2])) for r in rows}
            for rowid in group:
                if rowid in found:
                    yield rowid, *found[rowid]

    def shuffled_rowids(
        self, day: str | None = None, randbelow: Callable[[int], int] | None = None
    ) -> list[int]:
        """The rowids of every report (on ``day``), in a uniformly random order.

        By default the OS CSPRNG, so every order is equally likely and none can be predicted
        from another: one ``os.urandom`` read gives each rowid a 64-bit key, and the rowids are
        sorted by key (ties, at odds of about n^2 / 2^65, keep arrival order). That is one
        system call instead of one per rowid. Tests pass a seeded ``randbelow`` instead, which
        drives a Fisher-Yates shuffle. Only rowids are listed, in keyset windows: 8 bytes a
        report, then each reader fetches its own ciphertexts (:meth:`read_rowids`).
        """
        where, params = ("", []) if day is None else (" AND day = ?", [_check_day(day)])
        rowids: list[int] = []
        last = 0
        while True:
            rows = self._query(
                f"SELECT id FROM reports WHERE id > ?{where} ORDER BY id LIMIT ?",  # noqa: S608  # where is one of two constant strings
                [last, *params, _LIST_WINDOW],
            )
            rowids += [int(r[0]) for r in rows]
            if len(rows) < _LIST_WINDOW:
                break
            last = rowids[-1]
        if randbelow is None:
            keys = os.urandom(8 * len(rowids))
            order = sorted(range(len(rowids)), key=lambda i: keys[8 * i : 8 * i + 8])
            return [rowids[i] for i in order]
        for i in range(len(rowids) - 1, 0, -1):
            j = randbelow(i + 1)
            rowids[i], rowids[j] = rowids[j], rowids[i]
        return rowids

    def read_rowids(self, rowids: Sequence[int]) -> list[bytes]:
        """The ciphertexts of ``rowids``, in that order (900 per query); pruned ones skipped."""
        out: list[bytes] = []
        for start in range(0, len(rowids), _IN_LIMIT):
            group = list(rowids[start : start + _IN_LIMIT])
            found = self.ciphertexts(group)
            out += [found[i] for i in group if i in found]
        return out

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"``, or the problems found, one per line."""
        rows = self._query("PRAGMA integrity_check")
        return "\n".join(str(r[0]) for r in rows)

    # -- retention -------------------------------------------------------------------------------

    def prune(
        self, before_day: str | date, *, dry_run: bool = False, window: int = 1000
    ) -> PruneResult:
        """Delete every report that arrived before ``before_day``; with ``dry_run`` only count.

        Retention wins over export bookkeeping: reports no finished export covered are deleted
        too, and counted in ``unexported`` so the caller can warn. Rowids are never reused
        (AUTOINCREMENT), so export ranges stay valid and later claims are unaffected.

        Safe beside a running collector: the table is walked in windows of ``window`` rowids,
        each read in its own short query and each deletion in its own short write transaction,
        so the collector's commits wait milliseconds at most. ``secure_delete`` overwrites the
        deleted rows (and their digests) with zeros; a final ``wal_checkpoint(TRUNCATE)`` then
        writes the zeroed pages into the database file and empties the write-ahead log, which
        held the old page images. There is no VACUUM: it would lock the collector out for as
        long as it copies the whole file, and secure_delete already leaves nothing to recover;
        free pages are reused by later reports.
        """
        if isinstance(before_day, datetime):
            raise TypeError(f"before_day ({before_day!r}) must be a date, not a datetime")
        cutoff = _check_day(before_day.isoformat() if isinstance(before_day, date) else before_day)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window ({window!r}) must be an integer >= 1")
        # Reports stored from now on arrived today, not before any cutoff that a retention of
        # one day or more gives (first_kept_day): the walk can stop at today's last rowid.
        top = int(self._query("SELECT coalesce(max(id), 0) FROM reports")[0][0])
        deleted = unexported = 0
        secure = ("OFF", "ON", "FAST")[int(self._query("PRAGMA secure_delete")[0][0])]
        try:
            if not dry_run:
                self._query("PRAGMA secure_delete = ON")
            for low in range(0, top, window):
                bounds = (low, low + window, cutoff)
                found, lost = self._query(_EXPIRED_SQL, bounds)[0]
                if not found:
                    continue
                if dry_run:
                    deleted += int(found)
                    unexported += int(lost)
                    continue
                found, lost = self._delete_window(bounds)
                deleted += found
                unexported += lost
        finally:
            if not dry_run:
                self._query(f"PRAGMA secure_delete = {secure}")
        checkpointed = False
        if deleted and not dry_run:
            # Blocks new writers while it waits (busy timeout) for readers to move on; the
            # deletions are committed either way, so a failure only delays the overwrite.
            try:
                busy = self._query("PRAGMA wal_checkpoint(TRUNCATE)")[0][0]
            except StoreError:
                busy = 1
            checkpointed = int(busy) == 0
        return PruneResult(cutoff, deleted, unexported, dry_run, checkpointed)

    def _delete_window(self, bounds: tuple[int, int, str]) -> tuple[int, int]:
        """Count and delete one window's expired reports in one short write transaction."""
        with self._write() as db:
            found, lost = db.execute(_EXPIRED_SQL, bounds).fetchone()
            db.execute("DELETE FROM reports WHERE id > ? AND id <= ? AND day < ?", bounds)
        return int(found), int(lost or 0)

    # -- export bookkeeping ----------------------------------------------------------------------

    def pending_export(self) -> ExportClaim | None:
        """The export run that was claimed but not finished (interrupted), if any."""
        rows = self._query(
            "SELECT id, first_id, last_id, out_dir FROM exports WHERE state = 'pending' "
            "ORDER BY id LIMIT 1"
        )
        return _claim(rows[0]) if rows else None

    def claim_export(self, out_dir: str) -> ExportClaim | None:
        """Reserve every report not yet covered by an export run; ``None`` if there is none.

        The range is fixed in one write transaction: rowids only grow and SQLite has one writer
        at a time, so every report committed later gets a rowid above ``last_id`` and falls into
        the next run. Refuses while another run is still pending (finish that one first).
        """
        with self._write() as db:
            pending = db.execute(
                "SELECT id FROM exports WHERE state = 'pending' LIMIT 1"
            ).fetchone()
            if pending is not None:
                raise StoreError(f"export {pending[0]} is still pending; finish it first")
            first = db.execute("SELECT coalesce(max(last_id), 0) FROM exports").fetchone()[0]
            last = db.execute("SELECT coalesce(max(id), 0) FROM reports").fetchone()[0]
            if last <= first:
                return None
            cur = db.execute(
                "INSERT INTO exports (first_id, last_id, out_dir, state) "
                "VALUES (?, ?, ?, 'pending')",
                (first, last, out_dir),
            )
            assert cur.lastrowid is not None
            return ExportClaim(cur.lastrowid, int(first), int(last), out_dir)

    def finish_export(self, export_id: int) -> None:
        """Mark a run done, after all its files are durably in place."""
        with self._lock:
            try:
                cur = self._db.execute(
                    "UPDATE exports SET state = 'done' WHERE id = ? AND state = 'pending'",
                    (export_id,),
                )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write to store {self.path}: {exc}") from None
        if cur.rowcount != 1:
            raise StoreError(f"export {export_id} is not pending")

    def export_days(self, claim: ExportClaim) -> list[str]:
        """The days that have reports inside the claimed range, oldest first."""
        rows = self._query(
            "SELECT DISTINCT day FROM reports WHERE id > ? AND id <= ? ORDER BY day",
            (claim.first_id, claim.last_id),
        )
        return [str(r[0]) for r in rows]

    def export_rowids(self, claim: ExportClaim, day: str) -> list[int]:
        """Rowids of one day's reports inside the claimed range."""
        rows = self._query(
            "SELECT id FROM reports WHERE id > ? AND id <= ? AND day = ? ORDER BY id",
            (claim.first_id, claim.last_id, _check_day(day)),
        )
        return [int(r[0]) for r in rows]

    def ciphertexts(self, rowids: Sequence[int]) -> dict[int, bytes]:
        """Ciphertexts by rowid (at most 900 rowids per call, under SQLite's variable limit)."""
        if len(rowids) > 900:
            raise ValueError(f"asked for {len(rowids)} rowids at once, at most 900")
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        rows = self._query(
            f"SELECT id, ciphertext FROM reports WHERE id IN ({marks})",  # noqa: S608  # only '?' marks
            list(rowids),
        )
        return {int(i): bytes(c) for i, c in rows}

    # -- parallel reading (analyzer workers) -----------------------------------------------------

    @classmethod
    def open_read_only(cls, path: str | Path) -> Store:
        """A connection that can only read: for processes that must never write to the store.

        The analyzer's worker processes each read their own rowid ranges through one of these.
        Unlike the constructor it creates nothing, takes no write lock (the collector keeps
        committing) and refuses every write (``mode=ro`` and ``query_only``).
        """
        store = cls.__new__(cls)
        store.path = Path(path)
        store._clock = utc_today
        store._lock = threading.Lock()
        if not store.path.is_file():
            raise StoreError(f"no store at {store.path}")
        try:
            store._db = sqlite3.connect(
                store.path.resolve().as_uri() + "?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=10.0,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {store.path}: {exc}") from None
        try:
            store._db.execute("PRAGMA busy_timeout = 10000")
            store._db.execute("PRAGMA query_only = 1")
            if _identify(store._db, store.path) != "store":
                raise StoreError(f"{store.path} is not a 20i store (an empty database)")
        except sqlite3.Error as exc:
            store._db.close()
            raise StoreError(f"cannot open store {store.path}: {exc}") from None
        except StoreError:
            store._db.close()
            raise
        return store

    def rowid_ranges(
        self, day: str | None = None, size: int = 1000
    ) -> Iterator[tuple[int, int, int]]:
        """``(first, last, rows)``: consecutive rowid ranges holding ``size`` reports each.

        ``rows`` reports (on ``day``, if given) have ``first <= rowid <= last``; the last range
        may hold fewer. Only rowids are read, one short query per range (keyset pagination, as
        :meth:`iter_reports`), so splitting a big store costs little and holds no transaction.
        Reports committed while the ranges are listed may or may not be included.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size ({size!r}) must be an integer >= 1")
        where, params = ("", []) if day is None else (" AND day = ?", [_check_day(day)])
        sql = (
            "SELECT count(*), max(id) FROM (SELECT id FROM reports "  # noqa: S608  # where is one of two constant strings
            f"WHERE id > ?{where} ORDER BY id LIMIT ?)"
        )
        last = 0
        while True:
            rows, top = self._query(sql, [last, *params, size])[0]
            if not rows:
                return
            yield last + 1, int(top), int(rows)
            if rows < size:
                return
            last = int(top)

    def read_range(self, first: int, last: int, day: str | None = None) -> list[bytes]:
        """The ciphertexts with ``first <= rowid <= last`` (and on ``day``), in rowid order."""
        where, params = ("", []) if day is None else (" AND day = ?", [_check_day(day)])
        rows = self._query(
            f"SELECT ciphertext FROM reports WHERE id BETWEEN ? AND ?{where} ORDER BY id",  # noqa: S608  # where is one of two constant strings
            [first, last, *params],
        )
        return [bytes(row[0]) for row in rows]


#: Rowids per ``IN (...)`` query, under SQLite's bound-variable limit; rowids per listing query.
_IN_LIMIT = 900
_LIST_WINDOW = 100_000

#: Expired reports in one rowid window, and how many of them no finished export run covered.
_EXPIRED_SQL = """
SELECT count(*), coalesce(sum(NOT EXISTS (
    SELECT 1 FROM exports e WHERE e.state = 'done' AND r.id > e.first_id AND r.id <= e.last_id
)), 0)
FROM reports r WHERE r.id > ? AND r.id <= ? AND r.day < ?
"""

#: Rows per multi-row INSERT (3 variables each, far under SQLite's 32766-variable limit).
_ROWS_PER_INSERT = 256


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_sql(rows: int) -> str:
    values = ",".join(["(?,?,?)"] * rows)
    return f"INSERT INTO reports (day, digest, ciphertext) VALUES {values}"  # noqa: S608  # only '?'


def _flatten(day: str, rows: list[tuple[bytes, bytes]]) -> list[object]:
    flat: list[object] = []
    for digest, report in rows:
        flat += (day, digest, report)
    return flat


#: The columns of the reports table; a table of that name with others is not ours.
_REPORT_COLUMNS = frozenset({"id", "day", "digest", "ciphertext"})


def _identify(db: sqlite3.Connection, path: Path) -> Literal["empty", "store"]:
    """``"empty"`` (no tables, never versioned) or ``"store"`` (ours, of a version this code
    reads); anything else is a :class:`StoreError`. Reads only: safe on any input file."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    tables.discard("sqlite_sequence")  # SQLite's own AUTOINCREMENT bookkeeping
    if not tables and version == 0:
        return "empty"
    if version > SCHEMA_VERSION and "reports" in tables:
        raise sqlite3.OperationalError(
            f"schema version {version} is newer than this program's ({SCHEMA_VERSION})"
        )
    columns = {str(r[1]) for r in db.execute("PRAGMA table_info(reports)")}
    if 1 <= version <= SCHEMA_VERSION and columns == _REPORT_COLUMNS:
        return "store"
    shown = ", ".join(sorted(tables)[:5]) or "none"
    raise StoreError(
        f"{path} is not a 20i store (an SQLite database with tables {shown}, user_version "
        f"{version}); refusing to touch it"
    )


def _check_day(day: str) -> str:
    if not isinstance(day, str) or not _DAY_RE.fullmatch(day):
        raise ValueError(f"day ({day!r}) must be a YYYY-MM-DD date")
    return day


def _claim(row: tuple[Any, ...]) -> ExportClaim:
    export_id, first, last, out_dir = row
    return ExportClaim(int(export_id), int(first), int(last), str(out_dir))
