"""The local engine end to end: :func:`aggregate` checks options, counts a source in worker
processes and finishes the counts into an :class:`~server_agg.aggregate.results.AggregateResult`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ldp.schema import Schema
from server_agg.aggregate.counting import schema_map
from server_agg.aggregate.progress import _Progress
from server_agg.aggregate.results import (
    DEFAULT_DELTA,
    AggregateResult,
    check_filters,
    check_weeks,
    finish,
)
from server_agg.aggregate.sources import Source
from server_agg.aggregate.workers import DEFAULT_CHUNK, count_source
from server_agg.periods import plausible_periods


def aggregate(
    source: Source,
    private_key: X25519PrivateKey,
    *,
    schemas: Sequence[Schema] | None = None,
    kind: str | None = None,
    period: str | None = None,
    consistency: str = "auto",
    confidence: float = 0.95,
    delta: float | None = DEFAULT_DELTA,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool | None = False,
    today: date | None = None,
    screen: bool = True,
    weeks: int | str = 1,
    trends: bool = True,
) -> AggregateResult:
    """Run the local engine end to end; ``progress=None`` shows a bar only on a terminal.

    Reports dated outside [their schema's release, the week after ``today``'s] are rejected
    as ``implausible_period`` (``today``: UTC today when ``None``). ``weeks > 1`` pools the
    ``weeks`` ISO weeks ending at ``period``, ``"auto"`` a window chosen per kind from the data
    (:mod:`server_agg.weeks`); ``trends`` adds each kind's estimates week by week (or window by
    window).
    """
    check_filters(kind, period, schemas)
    check_weeks(weeks, period)
    window = plausible_periods(schema_map(schemas).values(), today)
    started = time.perf_counter()
    total = source.total() if progress is not False else None
    with _Progress(total, progress) as bar:
        counts = count_source(
            source,
            private_key,
            schemas,
            kind=kind,
            period=period if weeks == 1 else None,
            workers=workers,
            chunk_size=chunk_size,
            on_progress=bar.advance,
            window=window,
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
        source=source.description,
        engine="local",
        workers=workers,
        seconds=time.perf_counter() - started,
        filters=filters,
        screen=screen,
        trends=trends,
    )
