"""The fast server-side support counts of UE and OLH equal naive report-by-report counts.

``_UnaryEncoding.support`` folds packed rows into byte counters and ``OLH.support`` replaces
hashing by an interval test; both are exact integer computations, so every test here demands
equality with a reference that is plainly right: ``unpackbits`` summed down the rows for unary
encoding, and :func:`olh_hash` per report and item (or its numpy twin ``olh_hash_many``, which
test_mechanisms_estimation checks against it) for local hashing. Sizes are chosen to hit the
edges of the chunking: empty and one-row batches, the 255-row blocks, partial last chunks, d not
a multiple of 8 or 16, and both OLH paths (broadcast below 1024 reports, per-item scan above).
"""

from __future__ import annotations

import bisect

import numpy as np
import numpy.typing as npt
import pytest

from ldp.errors import ParameterError
from ldp.mechanisms import (
    _GOLDEN,
    OLH,
    OUE,
    SUE,
    _olh_intervals,
    _splitmix64,
    olh_hash,
    olh_hash_many,
)

M64 = 1 << 64


def unpacked_support(packed: npt.NDArray[np.uint8], d: int) -> list[int]:
    """Reference unary support: unpack every bit and sum down the rows."""
    bits = np.unpackbits(packed, axis=1, count=d, bitorder="little")
    return [int(c) for c in bits.sum(axis=0, dtype=np.int64)]


def random_rows(rng: np.random.Generator, n: int, d: int) -> npt.NDArray[np.uint8]:
    """Uniform packed rows with the padding bits above d cleared, as encode_batch makes them."""
    packed = rng.integers(0, 256, size=(n, (d + 7) // 8), dtype=np.uint8)
    if d % 8:
        packed[:, -1] &= np.uint8((1 << (d % 8)) - 1)
    return packed


def hashed_support(rows: npt.NDArray[np.int64], d: int, g: int) -> list[int]:
    """Reference OLH support: olh_hash for every (report, item), in plain Python."""
    counts = [0] * d
    for seed, bucket in rows.tolist():
        for v in range(d):
            counts[v] += olh_hash(seed, v, g) == bucket
    return counts


def olh_rows(rng: np.random.Generator, n: int, d: int, g: int) -> npt.NDArray[np.int64]:
    """Reports ``[seed, bucket]`` half with their item's true bucket, half with a uniform one.

    True buckets make sure some items are supported even when g is large.
    """
    seeds = rng.integers(0, 1 << 32, size=n, dtype=np.int64)
    xs = rng.integers(0, d, size=n, dtype=np.int64)
    true = olh_hash_many(seeds, xs, g)
    buckets = np.where(rng.random(n) < 0.5, true, rng.integers(0, g, size=n))
    return np.stack([seeds, buckets], axis=1)


class TestUnarySupport:
    """OUE/SUE support: per-item set-bit counts of packed little-endian rows."""

    @pytest.mark.parametrize("d", [2, 7, 8, 9, 13, 16, 17, 32, 100, 256, 1000])
    @pytest.mark.parametrize("n", [0, 1, 2, 254, 255, 256, 1000, 4321])
    def test_random_rows_match_unpacked_bits(self, n: int, d: int) -> None:
        """Support of uniform random rows equals the unpackbits count, for every n and d."""
        rows = random_rows(np.random.default_rng([n, d]), n, d)
        support = OUE(1.0, d).support(rows)
        assert support.dtype == np.int64
        assert support.shape == (d,)
        assert support.tolist() == unpacked_support(rows, d)

    @pytest.mark.parametrize("n", [255, 256, 509, 510, 511, 7000])
    def test_all_ones_fill_every_counter_without_carry(self, n: int) -> None:
        """Rows of all ones drive every byte counter to its 255 limit: each item counts n."""
        d = 100
        rows = np.full((n, (d + 7) // 8), 0xFF, dtype=np.uint8)
        rows[:, -1] = 0x0F  # bits 96..99 only
        assert OUE(1.0, d).support(rows).tolist() == [n] * d

    def test_single_bit_columns_are_counted_in_their_own_item(self) -> None:
        """A batch where only item i is ever set supports item i alone, for every i."""
        d = 24
        m = OUE(2.0, d)
        for i in range(d):
            rows = np.zeros((600, 3), dtype=np.uint8)
            rows[::2, i // 8] = 1 << (i % 8)
            expected = [0] * d
            expected[i] = 300
            assert m.support(rows).tolist() == expected

    def test_many_chunks_with_a_partial_last_one(self) -> None:
        """With d = 2^14 (510 rows per 1 MiB chunk) 1200 rows span three chunks and still match."""
        d = 1 << 14
        rows = random_rows(np.random.default_rng(5), 1200, d)
        assert SUE(1.0, d).support(rows).tolist() == unpacked_support(rows, d)

    def test_strided_batch_is_read_correctly(self) -> None:
        """A non-contiguous view of rows (every other row) gives the count of those rows."""
        d = 40
        rows = random_rows(np.random.default_rng(6), 2000, d)
        view = rows[::2]
        assert OUE(1.0, d).support(view).tolist() == unpacked_support(view, d)

    @pytest.mark.parametrize("d", [2, 9, 64, 130])
    def test_csprng_wire_path_matches_bitmask_count(self, d: int) -> None:
        """encode_batch of real privatize outputs gives the support counted from the bitmasks."""
        m = OUE(1.0, d)
        xs = np.random.default_rng(d).integers(0, d, 300)
        wires = [m.privatize(int(x)) for x in xs]
        expected = [sum((w >> v) & 1 for w in wires) for v in range(d)]
        assert m.support(m.encode_batch(wires)).tolist() == expected

    def test_wrong_row_width_is_rejected(self) -> None:
        """Rows of the wrong byte width raise a ParameterError naming the expected shape."""
        with pytest.raises(ParameterError, match=r"\(n, 2\)"):
            OUE(1.0, 16).support(np.zeros((5, 3), dtype=np.uint8))

    def test_empty_list_gives_zero_support(self) -> None:
        """An empty batch of any shape supports nothing."""
        assert OUE(1.0, 12).support(np.zeros((0,), dtype=np.uint8)).tolist() == [0] * 12


class TestOlhSupport:
    """OLH support: per item, the reports whose bucket olh_hash maps it to."""

    @pytest.mark.parametrize(
        ("epsilon", "d"),
        [(0.5, 2), (1.0, 7), (2.0, 33), (4.0, 8), (8.0, 5), (20.0, 3)],
    )
    @pytest.mark.parametrize("n", [0, 1, 3, 1023, 1024, 1500])
    def test_matches_olh_hash_per_report(self, n: int, epsilon: float, d: int) -> None:
        """Both paths (broadcast under 1024 reports, per-item scan from 1024) equal olh_hash."""
        m = OLH(epsilon, d)
        rows = olh_rows(np.random.default_rng([n, d]), n, d, m.g)
        support = m.support(rows)
        assert support.dtype == np.int64
        assert support.tolist() == hashed_support(rows, d, m.g)

    @pytest.mark.parametrize("d", [256, 1000])
    def test_large_domains_match_the_numpy_hash(self, d: int) -> None:
        """For d in {256, 1000} the scan equals olh_hash_many item by item."""
        m = OLH(1.0, d)
        rows = olh_rows(np.random.default_rng(d), 3000, d, m.g)
        expected = [
            int(np.count_nonzero(olh_hash_many(rows[:, 0], v, m.g) == rows[:, 1])) for v in range(d)
        ]
        assert m.support(rows).tolist() == expected

    def test_chunk_boundary_and_short_tail(self) -> None:
        """2^16 + 5 reports: one full scanned chunk, then a 5-report broadcast tail."""
        m = OLH(2.0, 4)
        rows = olh_rows(np.random.default_rng(7), (1 << 16) + 5, m.d, m.g)
        expected = [
            int(np.count_nonzero(olh_hash_many(rows[:, 0], v, m.g) == rows[:, 1]))
            for v in range(m.d)
        ]
        assert m.support(rows).tolist() == expected
        tail = rows[-5:]
        assert m.support(tail).tolist() == hashed_support(tail, m.d, m.g)

    @pytest.mark.parametrize("n", [10, 2000])
    def test_out_of_range_buckets_support_nothing(self, n: int) -> None:
        """Buckets -1, g and 2^40 (never produced by olh_hash) support no item on either path."""
        m = OLH(1.0, 6)
        rng = np.random.default_rng(8)
        seeds = rng.integers(0, 1 << 32, size=n, dtype=np.int64)
        for bucket in (-1, m.g, 1 << 40):
            rows = np.stack([seeds, np.full(n, bucket, dtype=np.int64)], axis=1)
            assert m.support(rows).tolist() == [0] * m.d

    @pytest.mark.parametrize("n", [40, 1100])
    def test_csprng_wire_path_matches_olh_hash(self, n: int) -> None:
        """encode_batch of real privatize outputs gives the olh_hash count of the wire pairs."""
        m = OLH(1.0, 10)
        xs = np.random.default_rng(n).integers(0, m.d, n)
        wires = [m.privatize(int(x)) for x in xs]
        expected = [sum(olh_hash(s, v, m.g) == y for s, y in wires) for v in range(m.d)]
        assert m.support(m.encode_batch(wires)).tolist() == expected


def first_t(y: int, g: int) -> int:
    """Smallest 32-bit t with (t g) >> 32 >= y, by bisection on the monotone bucket map."""
    return bisect.bisect_left(range(1 << 32), y, key=lambda t: (t * g) >> 32)


class TestOlhIntervals:
    """The interval test behind OLH.support, probed at the exact edges of every bucket."""

    @pytest.mark.parametrize("g", [2, 3, 7, 56, 1_001, (1 << 20) + 1, 485_165_196])
    def test_bucket_edges_and_wraparound(self, g: int) -> None:
        """Hash values just inside and outside each bucket's edges, the top of 2^64 included."""
        buckets = sorted({0, 1, g // 2, g - 2, g - 1}) if g > 8 else list(range(g))
        rng = np.random.default_rng(g)
        for y in buckets:
            # The bucket holds top-32-bit values t in [lo, hi), found here by bisection rather
            # than the ceiling formula the implementation uses; hi = 2^32 for the last bucket.
            lo, hi = first_t(y, g), first_t(y + 1, g)
            assert (lo, hi) == (-(-(y << 32) // g), -(-((y + 1) << 32) // g))
            low_bits = [0, 1, (1 << 32) - 1, *rng.integers(0, 1 << 32, 3).tolist()]
            ts = [lo - 1, lo, lo + 1, hi - 2, hi - 1, hi, hi + 1]
            xs = [((t << 32) + low) % M64 for t in ts for low in low_bits]
            for y_probe in (y, (y + 1) % g):
                b = np.array(xs, dtype=np.uint64)
                start, width = _olh_intervals(b, np.full(b.shape, y_probe, dtype=np.int64), g)
                got = (start < width).tolist()
                assert got == [((x >> 32) * g) >> 32 == y_probe for x in xs]

    @pytest.mark.parametrize("g", [2, 5, 403, 485_165_196])
    def test_stepping_by_the_multiplier_tracks_the_hash(self, g: int) -> None:
        """(start + a v) mod 2^64 < width iff olh_hash puts item v in the bucket, v up to 300."""
        rng = np.random.default_rng(g + 1)
        n = 400
        seeds = rng.integers(0, 1 << 32, size=n, dtype=np.int64)
        items = rng.integers(0, 300, size=n, dtype=np.int64)
        hashed = olh_hash_many(seeds, items, g)
        buckets = np.where(rng.random(n) < 0.5, hashed, rng.integers(0, g, size=n))
        a, b = [], []
        for s in seeds.tolist():  # olh_hash's own multiplier and offset, in Python
            a.append(_splitmix64(s) | 1)
            b.append(_splitmix64(s ^ _GOLDEN))
        start, width = _olh_intervals(np.array(b, dtype=np.uint64), buckets, g)
        for i in range(n):
            at = (int(start[i]) + a[i] * int(items[i])) % M64
            assert (at < int(width[i])) == (olh_hash(int(seeds[i]), int(items[i]), g) == buckets[i])
