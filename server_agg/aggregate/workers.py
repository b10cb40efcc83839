"""The local engine's process pool: :func:`count_source` and the code its workers run.

Worker functions and the per-process state set by :func:`_init_worker` live together here,
and this is the module the fork server preloads. The private key goes to these local worker
processes and nowhere else.
"""

from __future__ import annotations

import collections
import gc
import multiprocessing
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ldp.schema import Schema
from server_agg.aggregate.counting import count_ciphertexts, schema_map
from server_agg.aggregate.counts import Counts
from server_agg.aggregate.errors import AggregateError
from server_agg.aggregate.sources import ReadTask, Source, SplitSource
from server_agg.periods import PeriodWindow

#: Reports per chunk: large enough to amortize the per-chunk numpy work and process hand-off,
#: small enough that a chunk of 4 KiB reports stays a few MiB and that the last chunk, which
#: one worker may finish alone, costs little (about 60 ms).
DEFAULT_CHUNK: Final = 1000


# Set in each worker process by _init_worker; a worker serves one analysis.
_WORKER: dict[str, Any] = {}


def _init_worker(
    key_bytes: bytes,
    schema_texts: tuple[str, ...],
    kind: str | None,
    period: str | None,
    window: PeriodWindow | None = None,
) -> None:
    from ldp.schema import load_schema

    _WORKER["key"] = X25519PrivateKey.from_private_bytes(key_bytes)
    _WORKER["schemas"] = tuple(load_schema(text) for text in schema_texts)
    _WORKER["kind"] = kind
    _WORKER["period"] = period
    _WORKER["window"] = window


def _work(chunk: list[bytes]) -> Counts:
    return count_ciphertexts(
        chunk,
        _WORKER["key"],
        _WORKER["schemas"],
        kind=_WORKER["kind"],
        period=_WORKER["period"],
        window=_WORKER["window"],
    )


def _work_task(task: ReadTask) -> Counts:
    return _work(task.read())


def _private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def _start_method() -> str:
    """``fork`` on Linux in a single-threaded process, else ``forkserver`` where there is one
    (one clean server process, started once, that forks every worker with this module already
    imported), else ``spawn`` (a fresh interpreter and all imports per worker)."""
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    if "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return "spawn"


def count_source(
    source: Source,
    private_key: X25519PrivateKey,
    schemas: Sequence[Schema] | None = None,
    *,
    kind: str | None = None,
    period: str | None = None,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
    on_progress: Callable[[int], None] | None = None,
    window: PeriodWindow | None = None,
) -> Counts:
    """Count every report of ``source``; ``workers > 1`` opens envelopes in that many processes.

    With ``window``, reports dated outside it are rejected as ``implausible_period``.

    With one worker everything runs in this process (no start-up or hand-off cost). Workers
    are forked when that is safe (Linux, and this process has no other thread: a fork copies
    other threads' locks in an unknown state), which starts them in milliseconds; otherwise
    they come from a fork server (or are spawned where there is none). ``on_progress`` gets the
    number of items finished after each chunk.

    Sources that can be split (:class:`SplitSource`: stores and Parquet exports) are not read
    here: this process only lists tasks (rowid ranges, row-group slices) and each worker reads
    its own, so no ciphertext is read, pickled or copied by this process, whose CPU would
    otherwise compete with the workers'. Other sources are read here and handed over in chunks.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise AggregateError(f"workers ({workers!r}) must be an integer in [1, 256]")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise AggregateError(f"chunk size ({chunk_size!r}) must be an integer >= 1")
    schema_list = tuple(schema_map(schemas).values())
    total = Counts()
    if workers == 1:
        for chunk in source.chunks(chunk_size):
            total.add(
                count_ciphertexts(
                    chunk, private_key, schema_list, kind=kind, period=period, window=window
                )
            )
            if on_progress is not None:
                on_progress(len(chunk))
        return total
    method = _start_method()
    init_args = (
        _private_bytes(private_key),
        tuple(s.canonical_json() for s in schema_list),
        kind,
        period,
        window,
    )
    # Forked workers share this process's memory copy-on-write; a garbage collection in a
    # worker would write to every inherited object's header and copy page after page (measured:
    # about a quarter more CPU per report with a big parent). Frozen objects are never scanned.
    # (Left alone if the caller already froze objects: unfreezing is theirs to decide.)
    freeze = method == "fork" and gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # Only takes effect when the server starts (the first time); later calls are no-ops.
            context.set_forkserver_preload(["server_agg.aggregate.workers"])
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=init_args,
        ) as pool:
            submissions: Iterator[Future[Counts]]
            if isinstance(source, SplitSource):
                submissions = (pool.submit(_work_task, t) for t in source.tasks(chunk_size))
            else:
                submissions = (pool.submit(_work, c) for c in source.chunks(chunk_size))
            pending: collections.deque[Future[Counts]] = collections.deque()

            def finish_one() -> None:
                counts = pending.popleft().result()
                total.add(counts)
                if on_progress is not None:
                    on_progress(counts.read)  # every item of a chunk is read and counted once

            for future in submissions:
                pending.append(future)
                # Bounded memory: never more than two chunks per worker in flight.
                while len(pending) >= 2 * workers:
                    finish_one()
            while pending:
                finish_one()
    finally:
        if freeze:
            gc.unfreeze()
    return total
