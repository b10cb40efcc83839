"""Where sealed reports come from: in memory, the collector's SQLite store, a Parquet export.

A :class:`SplitSource` also hands out small picklable read tasks (rowids, row-group slices) so
that worker processes read their own ciphertexts. Sources only read: they never create,
convert or write an input file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from server_agg.aggregate.errors import AggregateError


class Source(Protocol):
    """Where sealed reports come from: a stream of chunks, and the total if known up front."""

    @property
    def description(self) -> str: ...

    def total(self) -> int | None: ...

    def chunks(self, size: int) -> Iterator[list[bytes]]: ...


class ReadTask(Protocol):
    """A picklable description of one chunk that a worker process reads for itself."""

    def read(self) -> list[bytes]: ...


@runtime_checkable
class SplitSource(Source, Protocol):
    """A source whose chunks worker processes can read themselves (no hand-off of ciphertexts).

    ``tasks(size)`` yields descriptions of about ``size`` reports each, cheap to produce and
    to pickle; read one by one they give every report exactly once, as ``chunks`` does.
    """

    def tasks(self, size: int) -> Iterator[ReadTask]: ...


@dataclass(frozen=True)
class MemorySource:
    """Ciphertexts already in memory (tests and benchmarks)."""

    items: Sequence[bytes]
    description: str = "memory"

    def total(self) -> int | None:
        """Number of items."""
        return len(self.items)

    def chunks(self, size: int) -> Iterator[list[bytes]]:
        """Consecutive slices of ``size`` items."""
        for start in range(0, len(self.items), size):
            yield list(self.items[start : start + size])


@dataclass(frozen=True)
class StoreSource:
    """The collector's SQLite store (read while the collector keeps writing; WAL allows it)."""

    path: Path
    day: str | None = None

    @property
    def description(self) -> str:
        """Shown in reports."""
        return f"store {self.path}" + (f" (day {self.day})" if self.day else "")

    def _open(self) -> Any:
        # Read-only: the analyzer never creates, converts or writes an input file.
        from server_agg.store import Store, StoreError

        try:
            return Store.open_read_only(self.path)
        except StoreError as exc:
            raise AggregateError(str(exc)) from None

    def total(self) -> int | None:
        """Reports in the store (on ``day``), counted before reading."""
        from server_agg.store import StoreError

        with self._open() as store:
            try:
                return int(store.count(self.day))
            except StoreError as exc:  # a damaged page, say: one line, not a traceback
                raise AggregateError(str(exc)) from None

    def chunks(self, size: int) -> Iterator[list[bytes]]:
        """Ciphertexts in a fresh uniformly random order (``Store.shuffled_rowids``, never
        arrival order), ``size`` per chunk."""
        from server_agg.store import StoreError

        with self._open() as store:
            try:
                rowids = store.shuffled_rowids(self.day)
                for start in range(0, len(rowids), size):
                    chunk = store.read_rowids(rowids[start : start + size])
                    if chunk:
                        yield chunk
            except StoreError as exc:
                raise AggregateError(str(exc)) from None

    def tasks(self, size: int) -> Iterator[StoreRowids]:
        """The shuffled rowids, ``size`` per task: the main process reads rowids only."""
        from server_agg.store import StoreError

        with self._open() as store:
            try:
                rowids = store.shuffled_rowids(self.day)
            except StoreError as exc:
                raise AggregateError(str(exc)) from None
        for start in range(0, len(rowids), size):
            yield StoreRowids(str(self.path), tuple(rowids[start : start + size]))


#: Per process (keyed by pid, so a forked child never uses its parent's connection): a
#: read-only connection per store, opened on a worker's first task and kept for the next ones.
_READERS: dict[tuple[int, str], Any] = {}


def _reader(path: str) -> Any:
    """This process's read-only connection to the store at ``path`` (opened once)."""
    from server_agg.store import Store

    slot = (os.getpid(), path)
    store = _READERS.get(slot)
    if store is None:
        store = _READERS[slot] = Store.open_read_only(path)
    return store


@dataclass(frozen=True)
class StoreRowids:
    """One task: the reports of a store with these rowids, read in this (shuffled) order."""

    path: str
    rowids: tuple[int, ...]

    def read(self) -> list[bytes]:
        """The ciphertexts, through this process's read-only connection to the store."""
        from server_agg.store import StoreError

        try:
            return list(_reader(self.path).read_rowids(self.rowids))
        except StoreError as exc:
            raise AggregateError(str(exc)) from None


@dataclass(frozen=True)
class StoreRange:
    """One task: the reports with ``first <= rowid <= last`` (on ``day``) of one store, in
    arrival order (:class:`StoreSource` hands out :class:`StoreRowids` instead)."""

    path: str
    first: int
    last: int
    day: str | None = None

    def read(self) -> list[bytes]:
        """The range's ciphertexts, through this process's read-only connection to the store."""
        from server_agg.store import Store, StoreError

        slot = (os.getpid(), self.path)
        try:
            store = _READERS.get(slot)
            if store is None:
                store = _READERS[slot] = Store.open_read_only(self.path)
            return list(store.read_range(self.first, self.last, self.day))
        except StoreError as exc:
            raise AggregateError(str(exc)) from None


def parquet_files(directory: Path) -> list[Path]:
    """The Parquet files of an export directory (``day=*/part-*.parquet``), sorted."""
    if directory.is_file():
        return [directory]
    if not directory.is_dir():
        raise AggregateError(f"no Parquet export at {directory} (not a file or directory)")
    files = sorted(p for p in directory.rglob("*.parquet") if p.is_file())
    if not files:
        raise AggregateError(f"no *.parquet files under {directory}")
    return files


def parquet_row_count(path: Path) -> int:
    """Rows in one Parquet file, from its footer (nothing else is read)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise AggregateError(f"cannot read Parquet file {path}: {exc}") from None


def iter_parquet(path: Path, size: int) -> Iterator[list[bytes]]:
    """The ``ciphertext`` column of one file, ``size`` rows at a time (bounded memory)."""
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        if "ciphertext" not in handle.schema_arrow.names:
            raise AggregateError(f"Parquet file {path} has no 'ciphertext' column")
        for batch in handle.iter_batches(batch_size=size, columns=["ciphertext"]):
            yield batch.column(0).to_pylist()
    except (OSError, ValueError) as exc:
        raise AggregateError(f"cannot read Parquet file {path}: {exc}") from None


@dataclass(frozen=True)
class ParquetSource:
    """An export directory of ``day=YYYY-MM-DD/part-NNNNNN.parquet`` files (or one file)."""

    path: Path

    @property
    def description(self) -> str:
        """Shown in reports."""
        return f"parquet {self.path}"

    def files(self) -> list[Path]:
        """The files read, in order."""
        return parquet_files(self.path)

    def total(self) -> int | None:
        """Rows over all files, from the footers."""
        return sum(parquet_row_count(p) for p in self.files())

    def chunks(self, size: int) -> Iterator[list[bytes]]:
        """Every file's ciphertexts, ``size`` per chunk."""
        for path in self.files():
            yield from iter_parquet(path, size)

    def tasks(self, size: int) -> Iterator[ParquetSlice]:
        """Slices of ``size`` rows of each row group, in file order; only footers are read here."""
        import pyarrow.parquet as pq

        for path in self.files():
            try:
                handle = pq.ParquetFile(path)
                if "ciphertext" not in handle.schema_arrow.names:
                    raise AggregateError(f"Parquet file {path} has no 'ciphertext' column")
                meta = handle.metadata
                groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            except (OSError, ValueError) as exc:
                raise AggregateError(f"cannot read Parquet file {path}: {exc}") from None
            for group, rows in enumerate(groups):
                for start in range(0, rows, size):
                    yield ParquetSlice(str(path), group, start, min(start + size, rows))


#: Per process: the row group read last, as ``((pid, path, mtime, row group), ciphertexts)``.
#: Consecutive slices of a row group mostly go to the same few workers, so each worker reads
#: a row group about once; at most one row group per process is held.
_ROW_GROUP: list[tuple[tuple[int, str, int, int], list[bytes]]] = []


@dataclass(frozen=True)
class ParquetSlice:
    """One task: rows ``start`` to ``stop`` (exclusive) of one row group of a Parquet file."""

    path: str
    row_group: int
    start: int
    stop: int

    def read(self) -> list[bytes]:
        """The slice's ciphertexts (the row group is read once per process and kept)."""
        import pyarrow.parquet as pq

        try:
            slot = (os.getpid(), self.path, os.stat(self.path).st_mtime_ns, self.row_group)
            if not _ROW_GROUP or _ROW_GROUP[0][0] != slot:
                _ROW_GROUP.clear()  # free the previous row group before reading the next
                table = pq.ParquetFile(self.path).read_row_group(
                    self.row_group, columns=["ciphertext"]
                )
                _ROW_GROUP.append((slot, table.column(0).to_pylist()))
            return _ROW_GROUP[0][1][self.start : self.stop]
        except (OSError, ValueError, KeyError) as exc:
            raise AggregateError(f"cannot read Parquet file {self.path}: {exc}") from None
