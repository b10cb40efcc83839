"""Storage that forgets arrival order (issue 14): readers never see a day in arrival order.

Reports are inserted in a known order (report i carries i); the read order is compared with it.
Under the claim, the read order is a uniformly random permutation of the arrival order, and
these statistics have known laws (no fitting, no hope):

- Spearman's rank correlation rho between arrival and read positions: mean 0, variance
  1/(n - 1), asymptotically normal (Kendall & Stuart). We accept |rho| <= 4.5 / sqrt(n - 1):
  a correct shuffle fails with probability 2 * P(Z > 4.5) = 6.8e-6; arrival order gives 1.
- Adjacency: how many of the n - 1 pairs that arrived one after the other are next to each
  other when read (what would let a reader regroup a client's batch). Each pair is adjacent
  with probability 2 / n, so the count is close to Poisson with mean 2(n - 1)/n < 2; we accept
  at most 11 (P(Poisson(2) >= 12) = 1.4e-6); arrival order gives n - 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from server_agg.aggregate import StoreSource
from server_agg.store import Store

N = 2000
RHO_LIMIT = 4.5 / math.sqrt(N - 1)
ADJACENT_LIMIT = 11
DAY = date(2026, 12, 7)


def _payload(i: int) -> bytes:
    return f"report-{i:06d}".encode().ljust(560, b".")


def _index(payload: bytes) -> int:
    return int(payload[7:13])


def spearman(order: Sequence[int]) -> float:
    """Spearman's rho between positions 0..n-1 and the arrival indices read at them."""
    n = len(order)
    ranks = np.asarray(order, dtype=np.float64)
    positions = np.arange(n, dtype=np.float64)
    d2 = float(np.sum((ranks - positions) ** 2))
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


def adjacent_pairs(order: Sequence[int]) -> int:
    """Pairs (i, i + 1) of arrival indices that are read next to each other (either way)."""
    where = {index: pos for pos, index in enumerate(order)}
    return sum(abs(where[i] - where[i + 1]) == 1 for i in range(len(order) - 1))


def _seeded(seed: int) -> Callable[[int], int]:
    rng = np.random.default_rng(seed)
    return lambda n: int(rng.integers(n))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite"
    with Store(path, clock=lambda: DAY) as store:
        # One request per report, in a known order: rowids 1..N follow i.
        results = store.add_batches([[_payload(i)] for i in range(N)])
        assert results == [(1, 0)] * N
    return path


class TestStatistics:
    def test_the_statistics_see_arrival_order(self) -> None:
        """The two statistics reject arrival order (and a mild local shuffle) outright."""
        arrival = list(range(N))
        assert spearman(arrival) == pytest.approx(1.0)
        assert adjacent_pairs(arrival) == N - 1
        blocks = [i ^ 1 for i in range(N)]  # pairs swapped: still arrival order, locally
        assert spearman(blocks) > RHO_LIMIT and adjacent_pairs(blocks) > ADJACENT_LIMIT


class TestReadOrder:
    def test_iter_reports_is_independent_of_arrival(self, store_path: Path) -> None:
        """iter_reports (seeded) reads every report once, in an order unrelated to arrival."""
        with Store(store_path, create=False) as store:
            rows = list(store.iter_reports(chunk=300, randbelow=_seeded(14)))
        order = [_index(c) for _, _, c in rows]
        assert sorted(order) == list(range(N))
        assert {d for _, d, _ in rows} == {DAY.isoformat()}
        assert abs(spearman(order)) <= RHO_LIMIT
        assert adjacent_pairs(order) <= ADJACENT_LIMIT

    def test_reads_differ_between_reads(self, store_path: Path) -> None:
        """Two reads draw two orders: the order is not a fixed property a reader can learn."""
        with Store(store_path, create=False) as store:
            a = store.shuffled_rowids(randbelow=_seeded(1))
            b = store.shuffled_rowids(randbelow=_seeded(2))
        assert sorted(a) == sorted(b) == list(range(1, N + 1)) and a != b

    def test_analyzer_source_reads_a_csprng_order(self, store_path: Path) -> None:
        """StoreSource (what `20i-agg aggregate --store` reads, chunks and worker tasks) uses
        the OS CSPRNG: every report once, order independent of arrival."""
        source = StoreSource(store_path)
        for chunks in (
            list(source.chunks(500)),
            [task.read() for task in source.tasks(500)],
        ):
            order = [_index(c) for chunk in chunks for c in chunk]
            assert sorted(order) == list(range(N))
            assert abs(spearman(order)) <= RHO_LIMIT
            assert adjacent_pairs(order) <= ADJACENT_LIMIT

    def test_one_day_only(self, tmp_path: Path) -> None:
        """With a day, only that day's reports are read, shuffled."""
        path = tmp_path / "two-days.sqlite"
        days = iter([date(2026, 12, 6)] * 1 + [date(2026, 12, 7)] * 1)
        with Store(path, clock=lambda: next(days)) as store:
            store.add_batch([_payload(i) for i in range(10)])
            store.add_batch([_payload(i) for i in range(10, 20)])
            got = sorted(_index(c) for _, _, c in store.iter_reports(day="2026-12-07"))
        assert got == list(range(10, 20))
