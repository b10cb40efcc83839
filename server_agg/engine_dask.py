"""The Dask engine: the analyzer's pipeline over Parquet row groups on a dask.distributed cluster.

Each task opens, decodes and counts one row group of one exported Parquet file (8192 reports
by default) with the local engine's own :func:`~server_agg.aggregate.count_ciphertexts`, and the
client adds the small :class:`~server_agg.aggregate.Counts` as they finish. Support counts are
integers, so the result equals the local engine's exactly, whatever the partitioning.

The private key never travels over the cluster's network: tasks carry the *path* of the key
file, and each worker reads it from there (a shared file system, as for the Parquet files, or
the same path on every worker). Nothing here writes a decrypted report anywhere.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from ldp.schema import Schema, load_schema
from server_agg.aggregate import (
    DEFAULT_DELTA,
    AggregateError,
    AggregateResult,
    Counts,
    check_filters,
    check_weeks,
    count_ciphertexts,
    finish,
    parquet_files,
    schema_map,
)
from server_agg.periods import PeriodWindow, plausible_periods

__all__ = ["count_parquet", "dask_aggregate", "partitions"]


def partitions(files: Sequence[Path]) -> list[tuple[str, int]]:
    """``(file, row group)`` pairs: the unit of work, read from the files' footers."""
    import pyarrow.parquet as pq

    out: list[tuple[str, int]] = []
    for path in files:
        try:
            groups = pq.ParquetFile(path).metadata.num_row_groups
        except (OSError, ValueError) as exc:
            raise AggregateError(f"cannot read Parquet file {path}: {exc}") from None
        out.extend((str(path), i) for i in range(groups))
    return out


@functools.lru_cache(maxsize=4)
def _worker_key(path: str, mtime_ns: int) -> Any:
    from server_agg.keys import load_private

    return load_private(path)


@functools.lru_cache(maxsize=8)
def _worker_schema(text: str) -> Schema:
    return load_schema(text)


def _count_partition(
    path: str,
    row_group: int,
    key_path: str,
    schema_texts: tuple[str, ...],
    kind: str | None,
    period: str | None,
    window: PeriodWindow | None = None,
) -> Counts:
    """One task: read a row group's ciphertexts and count them (runs on a worker)."""
    import os

    import pyarrow.parquet as pq

    key = _worker_key(key_path, os.stat(key_path).st_mtime_ns)
    schemas = [_worker_schema(t) for t in schema_texts]
    table = pq.ParquetFile(path).read_row_group(row_group, columns=["ciphertext"])
    return count_ciphertexts(
        table.column(0).to_pylist(), key, schemas, kind=kind, period=period, window=window
    )


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int, processes: bool) -> Iterator[Any]:
    """A client on ``scheduler``, or on a LocalCluster of ``workers`` single-thread workers."""
    # distributed's constructors carry no annotations; the Any-typed aliases keep mypy strict
    # everywhere else.
    import distributed

    Client: Any = distributed.Client
    LocalCluster: Any = distributed.LocalCluster
    if scheduler is not None:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def count_parquet(
    files: Sequence[Path],
    key_path: Path,
    schemas: Sequence[Schema] | None = None,
    *,
    kind: str | None = None,
    period: str | None = None,
    client: Any = None,
    scheduler: str | None = None,
    workers: int = 2,
    processes: bool = True,
    on_progress: Callable[[int], None] | None = None,
    window: PeriodWindow | None = None,
    ran_on: set[str] | None = None,
) -> Counts:
    """Count every report of ``files`` on a Dask cluster; returns the summed :class:`Counts`.

    Pass a running ``client``, or a ``scheduler`` address, or nothing for a temporary
    LocalCluster of ``workers`` workers (``processes=False`` runs them as threads of this
    process: quicker to start, but one interpreter lock, so no faster than one core).
    ``ran_on``, if given, receives the address of every worker that counted a partition.
    """
    import distributed

    as_completed: Any = distributed.as_completed
    parts = partitions(files)
    schema_texts = tuple(s.canonical_json() for s in schema_map(schemas).values())
    key = str(Path(key_path).resolve())
    total = Counts()
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(_client(scheduler, workers, processes))
        futures = [
            client.submit(
                _count_partition, path, group, key, schema_texts, kind, period, window, pure=False
            )
            for path, group in parts
        ]
        for future in as_completed(futures):
            total.add(future.result())
            if ran_on is not None:
                # The workers holding the finished result: the ones that computed it.
                for holders in client.who_has([future]).values():
                    ran_on.update(holders)
            if on_progress is not None:
                on_progress(1)
            future.release()
    return total


def dask_aggregate(
    parquet: Path,
    key_path: Path,
    *,
    schemas: Sequence[Schema] | None = None,
    kind: str | None = None,
    period: str | None = None,
    consistency: str = "auto",
    confidence: float = 0.95,
    delta: float | None = DEFAULT_DELTA,
    scheduler: str | None = None,
    workers: int = 2,
    processes: bool = True,
    client: Any = None,
    today: date | None = None,
    screen: bool = True,
    weeks: int | str = 1,
    trends: bool = True,
) -> AggregateResult:
    """The Dask engine end to end: count on the cluster, then estimate here.

    Periods, ``weeks`` and ``trends`` are as in :func:`server_agg.aggregate.aggregate`
    (``today``: UTC today).
    """
    check_filters(kind, period, schemas)
    check_weeks(weeks, period)
    window = plausible_periods(schema_map(schemas).values(), today)
    from server_agg.keys import PRIVATE_NAME

    key_path = Path(key_path)
    if key_path.is_dir():
        key_path = key_path / PRIVATE_NAME
    if not key_path.is_file():
        raise AggregateError(f"no private key file at {key_path}")
    started = time.perf_counter()
    ran_on: set[str] = set()
    counts = count_parquet(
        parquet_files(Path(parquet)),
        key_path,
        schemas,
        kind=kind,
        period=period if weeks == 1 else None,
        client=client,
        scheduler=scheduler,
        workers=workers,
        processes=processes,
        window=window,
        ran_on=ran_on,
    )
    filters = {k: v for k, v in (("kind", kind), ("period", period)) if v is not None}
    return finish(
        counts,
        schemas,
        period=period,
        weeks=weeks,
        consistency=consistency,
        confidence=confidence,
        delta=delta,
        source=f"parquet {parquet}",
        engine="dask",
        # The workers that counted something (on a real cluster, whatever it has), not the
        # size we would have asked a local cluster for.
        workers=len(ran_on),
        seconds=time.perf_counter() - started,
        filters=filters,
        screen=screen,
        trends=trends,
    )
