"""The analyzer's pipeline: sealed reports in, frequency estimates with confidence intervals out.

read (chunks of ciphertexts) -> open the HPKE envelope -> decode and validate against the known
schemas -> per-field *support vectors* grouped by (schema, kind, period) -> estimates with CIs
and a consistency step -> :class:`AggregateResult` (rendered by :mod:`server_agg.render`).

Support vectors are integer counts and therefore additive: any split of the input into chunks,
processes or Dask partitions gives exactly the same totals (:class:`Counts` is the unit that
gets summed). Memory stays bounded: input is streamed in chunks, and at most ``2 x workers``
chunks are in flight. A report that cannot be opened or validated is skipped and counted by
reason (:data:`REJECT_REASONS`); nothing in a report can stop the run. This module never writes
a decrypted report anywhere, and never sends the private key beyond the local worker processes.

The local engine opens envelopes in worker *processes*: ``cryptography``'s HPKE holds the GIL
(measured: two threads open 12% *fewer* reports per second than one), so threads cannot help.

The package's modules are its nouns, in pipeline order: :mod:`~server_agg.aggregate.sources`
(where ciphertexts come from), :mod:`~server_agg.aggregate.decoders` (the fast and the strict
way to read a plaintext), :mod:`~server_agg.aggregate.counting` (one chunk into
:mod:`~server_agg.aggregate.counts`), :mod:`~server_agg.aggregate.workers` (the process pool),
:mod:`~server_agg.aggregate.results` (estimates), :mod:`~server_agg.aggregate.progress`, and
:mod:`~server_agg.aggregate.pipeline` (:func:`aggregate`, end to end); refusals and reject
reasons are in :mod:`~server_agg.aggregate.errors`. Import from here: the submodules are
implementation detail.
"""

from __future__ import annotations

from server_agg.aggregate.counting import count_ciphertexts, count_plaintexts, schema_map
from server_agg.aggregate.counts import Counts, GroupCounts, GroupKey
from server_agg.aggregate.errors import REJECT_REASONS, AggregateError, reject_reason
from server_agg.aggregate.pipeline import aggregate
from server_agg.aggregate.results import (
    DEFAULT_DELTA,
    AggregateResult,
    FieldResult,
    GroupResult,
    KindPrivacy,
    check_filters,
    check_weeks,
    finalize,
    finish,
    kind_privacy,
)
from server_agg.aggregate.sources import (
    MemorySource,
    ParquetSlice,
    ParquetSource,
    ReadTask,
    Source,
    SplitSource,
    StoreRange,
    StoreRowids,
    StoreSource,
    parquet_files,
)
from server_agg.aggregate.workers import DEFAULT_CHUNK, count_source

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_DELTA",
    "REJECT_REASONS",
    "AggregateError",
    "AggregateResult",
    "Counts",
    "FieldResult",
    "GroupCounts",
    "GroupKey",
    "GroupResult",
    "KindPrivacy",
    "MemorySource",
    "ParquetSlice",
    "ParquetSource",
    "ReadTask",
    "Source",
    "SplitSource",
    "StoreRange",
    "StoreRowids",
    "StoreSource",
    "aggregate",
    "check_filters",
    "check_weeks",
    "count_ciphertexts",
    "count_plaintexts",
    "count_source",
    "finalize",
    "finish",
    "kind_privacy",
    "parquet_files",
    "reject_reason",
    "schema_map",
]
