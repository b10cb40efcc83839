"""Export stored reports to Parquet, partitioned by day, each report exactly once.

Layout: ``OUT/day=YYYY-MM-DD/part-NNNNNN.parquet`` (Hive partitioning, so
``pyarrow.dataset.dataset(OUT, partitioning="hive")`` yields columns ``ciphertext`` and
``day``); NNNNNN is the export run. Rows within a file are in a uniformly random order drawn
from the OS CSPRNG, so a file never reveals arrival order. Never writes anything but the
ciphertext; never decrypts.

Exactly once: a run first claims a rowid range in the store (:meth:`Store.claim_export`),
writes each day's file under a temporary name, fsyncs and renames it, and only then marks the
run done. An interrupted run stays pending and the next ``export`` redoes it with the same
file names, so files are replaced, never doubled, and no report is skipped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from server_agg.store import ExportClaim, Store

__all__ = [
    "ExportError",
    "ExportResult",
    "export",
    "prune_exports",
    "read_export",
    "shuffle",
]

_FETCH = 900  # rowids per query, under SQLite's bound-variable limit
_ROW_GROUP = 8192  # rows per Parquet row group
_LOCK_NAME = ".export.lock"


class ExportError(Exception):
    """The export cannot run or finish; the message names the directory or run."""


@dataclass
class ExportResult:
    """What one ``export`` call did: files written, reports exported, runs finished."""

    files: list[Path] = field(default_factory=list)
    rows: int = 0
    runs: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)


def shuffle(items: list[int], randbelow: Callable[[int], int] = secrets.randbelow) -> None:
    """Fisher-Yates in place; with the default CSPRNG every order is exactly equally likely."""
    for i in range(len(items) - 1, 0, -1):
        j = randbelow(i + 1)
        items[i], items[j] = items[j], items[i]


def _part_name(export_id: int) -> str:
    return f"part-{export_id:06d}.parquet"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Atomically move a complete, fsynced file into place (replacing a previous attempt)."""
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _write_day(
    store: Store,
    claim: ExportClaim,
    day: str,
    out: Path,
    randbelow: Callable[[int], int],
) -> tuple[Path, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rowids = store.export_rowids(claim, day)
    shuffle(rowids, randbelow)
    folder = out / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / _part_name(claim.export_id)
    tmp = folder / (final.name + ".tmp")
    schema = pa.schema([pa.field("ciphertext", pa.binary(), nullable=False)])
    # Ciphertexts are random bytes: compression would only cost time.
    written = 0
    with pq.ParquetWriter(tmp, schema, compression="none") as writer:
        for start in range(0, len(rowids), _ROW_GROUP):
            group = rowids[start : start + _ROW_GROUP]
            column: list[bytes] = []
            for s in range(0, len(group), _FETCH):
                chunk = group[s : s + _FETCH]
                found = store.ciphertexts(chunk)
                # Keep the shuffled order. A rowid missing here was deleted by a `prune` that
                # ran after the rowids were listed: retention wins, so it is not exported.
                column.extend(found[r] for r in chunk if r in found)
            if column:
                table = pa.table({"ciphertext": pa.array(column, pa.binary())}, schema)
                writer.write_table(table)
            written += len(column)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    _publish(tmp, final)
    return final, written


def _run(
    store: Store, claim: ExportClaim, out: Path, randbelow: Callable[[int], int]
) -> tuple[list[Path], int]:
    files, rows = [], 0
    for day in store.export_days(claim):
        path, n = _write_day(store, claim, day, out, randbelow)
        files.append(path)
        rows += n
    store.finish_export(claim.export_id)
    return files, rows


def _clean_tmp(out: Path, export_id: int) -> None:
    for tmp in out.glob(f"day=*/{_part_name(export_id)}.tmp"):
        tmp.unlink(missing_ok=True)


def export(
    store: Store,
    out_dir: str | Path,
    *,
    randbelow: Callable[[int], int] = secrets.randbelow,
) -> ExportResult:
    """Export every report not yet exported into ``out_dir``; finish an interrupted run first.

    An interrupted run must be finished in the directory it started in (its partial files are
    there); asking for another directory is an :class:`ExportError` naming the right one.
    """
    out = Path(out_dir).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create export directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ExportError(f"export directory {out} is not writable")
    with _exclusive(out):
        return _export(store, out, randbelow)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One export at a time per directory: two runs resuming the same pending run would trip
    over each other's temporary files."""
    import filelock  # flock on POSIX, LockFileEx on Windows; released when a holder dies

    lock = filelock.FileLock(str(out / _LOCK_NAME), timeout=0, mode=0o600)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ExportError(f"another export is already writing to {out}") from None
    except OSError as exc:
        raise ExportError(f"cannot create {out / _LOCK_NAME}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()


def _export(store: Store, out: Path, randbelow: Callable[[int], int]) -> ExportResult:
    result = ExportResult()
    pending = store.pending_export()
    if pending is not None:
        if Path(pending.out_dir) != out:
            raise ExportError(
                f"export run {pending.export_id} was interrupted while writing to "
                f"{pending.out_dir}; run export with --out {pending.out_dir} to finish it"
            )
        _clean_tmp(out, pending.export_id)
        files, rows = _run(store, pending, out, randbelow)
        result.files += files
        result.rows += rows
        result.runs.append(pending.export_id)
        result.resumed.append(pending.export_id)
    claim = store.claim_export(str(out))
    if claim is not None:
        files, rows = _run(store, claim, out, randbelow)
        result.files += files
        result.rows += rows
        result.runs.append(claim.export_id)
    return result


def prune_exports(out_dir: str | Path, before_day: str, *, dry_run: bool = False) -> list[Path]:
    """Delete the ``day=YYYY-MM-DD`` folders of an export older than ``before_day``.

    Retention covers exported copies too: they hold the same ciphertexts as the store. Takes
    the export lock, so it never removes a folder an export run is writing. Returns the
    folders deleted (or, with ``dry_run``, that would be).
    """
    out = Path(out_dir).resolve()
    if not out.is_dir():
        raise ExportError(f"no export directory at {out}")
    old = sorted(
        folder
        for folder in out.glob("day=*")
        if folder.is_dir() and folder.name.removeprefix("day=") < before_day
    )
    if dry_run or not old:
        return old
    with _exclusive(out):
        for folder in old:
            for item in folder.iterdir():
                item.unlink()
            folder.rmdir()
        _fsync_dir(out)
    return old


def read_export(out_dir: str | Path) -> dict[str, list[bytes]]:
    """Every exported ciphertext by day, in file order (for tests and the analyzer's tools)."""
    import pyarrow.parquet as pq

    days: dict[str, list[bytes]] = {}
    for path in sorted(Path(out_dir).glob("day=*/part-*.parquet")):
        day = path.parent.name.removeprefix("day=")
        column: Sequence[bytes] = pq.read_table(path).column("ciphertext").to_pylist()
        days.setdefault(day, []).extend(column)
    return days
