"""Exact client randomness: dyadic probabilities, Bernoulli and uniform draws, keyed streams.

Exactness is shown by enumeration with scripted word sources (every outcome of a draw counted
once), statistical checks of the real OS CSPRNG use a chi-square at 1e-6 (the false-failure
rate of each such test, since the OS stream cannot be seeded).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import struct
import warnings
from collections import Counter
from collections.abc import Iterable
from fractions import Fraction
from itertools import permutations, product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, chisquare

from ldp.errors import ParameterError
from ldp.sampling import (
    PRECISION_BITS,
    SYSTEM,
    HmacSource,
    Prob,
    SystemSource,
    bernoulli,
    prob_down,
    prob_up,
    sample_distinct,
)

ALPHA_CSPRNG = 1e-6
KEY = bytes(range(32))


def scripted(words: Iterable[int]) -> SystemSource:
    """A source whose 32-bit words are the given ones, in order (randbelow logic unchanged)."""
    src = SystemSource()
    src.word = iter(words).__next__  # type: ignore[method-assign]
    return src


class Choices:
    """A source whose randbelow returns scripted values (checked against the requested bound)."""

    def __init__(self, values: Iterable[int]) -> None:
        self.values = iter(values)
        self.bounds: list[int] = []

    def word(self) -> int:  # pragma: no cover - the draws under test never ask for words
        raise AssertionError("unexpected word() call")

    def randbelow(self, n: int) -> int:
        self.bounds.append(n)
        v = next(self.values)
        assert 0 <= v < n
        return v


class TestProb:
    """Prob is the exact dyadic probability num / 2**bits."""

    def test_value_and_float(self) -> None:
        """value is the exact fraction, float() its nearest double."""
        p = Prob(3, 4)
        assert p.value == Fraction(3, 16)
        assert float(p) == 0.1875
        assert Prob(1 << 32).value == 1
        assert Prob(0).value == 0
        assert Prob(5).bits == PRECISION_BITS == 32

    @pytest.mark.parametrize(
        ("num", "bits", "named"),
        [
            (-1, 32, r"numerator \(-1\)"),
            ((1 << 32) + 1, 32, r"numerator \(4294967297\)"),
            (0, 0, r"bits \(0\)"),
            (0, 65, r"bits \(65\)"),
        ],
    )
    def test_out_of_range_is_a_parameter_error(self, num: int, bits: int, named: str) -> None:
        """A numerator outside [0, 2**bits] or bits outside [1, 64] is refused, naming the value."""
        with pytest.raises(ParameterError, match=named):
            Prob(num, bits)

    def test_is_frozen_and_hashable(self) -> None:
        """Probabilities are values: equal when equal, usable as keys, immutable."""
        assert Prob(7) == Prob(7)
        assert len({Prob(7), Prob(7), Prob(8)}) == 2
        with pytest.raises(AttributeError):
            Prob(7).num = 8  # type: ignore[misc]


class TestRounding:
    """prob_down / prob_up round to the grid in the direction the caller asks for."""

    @settings(max_examples=200)
    @given(x=st.floats(0, 1), bits=st.integers(1, 64))
    def test_down_is_the_largest_grid_point_below(self, x: float, bits: int) -> None:
        """prob_down(x) <= x < prob_down(x) + 2**-bits."""
        p = prob_down(x, bits)
        assert p.bits == bits
        assert p.value <= Fraction(x) < p.value + Fraction(1, 1 << bits)

    @settings(max_examples=200)
    @given(x=st.floats(0, 1), bits=st.integers(1, 64))
    def test_up_is_the_smallest_grid_point_above(self, x: float, bits: int) -> None:
        """prob_up(x) - 2**-bits < x <= prob_up(x)."""
        p = prob_up(x, bits)
        assert p.value - Fraction(1, 1 << bits) < Fraction(x) <= p.value

    def test_grid_points_are_exact(self) -> None:
        """Dyadic inputs on the grid are returned unchanged by both roundings."""
        for x in (0.0, 0.5, 0.25, 1.0, 3 / 1024):
            assert prob_down(x).value == prob_up(x).value == Fraction(x)

    def test_fractions_are_accepted_exactly(self) -> None:
        """A Fraction such as 1/3 rounds to floor / ceil of 2**32 / 3."""
        assert prob_down(Fraction(1, 3)).num == (1 << 32) // 3
        assert prob_up(Fraction(1, 3)).num == (1 << 32) // 3 + 1

    @pytest.mark.parametrize("bad", [-0.1, 1.1, math.nan, math.inf, "0.5", None])
    def test_non_probabilities_are_refused(self, bad: object) -> None:
        """Values outside [0, 1] or not numbers raise ParameterError naming the value."""
        for fn in (prob_down, prob_up):
            with pytest.raises(ParameterError, match="must be a number in"):
                fn(bad)  # type: ignore[arg-type]


class TestBernoulli:
    """bernoulli(Prob(N, b)) is true for exactly N of the 2**b equally likely words."""

    def test_boundary_word_at_32_bits(self) -> None:
        """Word N - 1 gives True and word N gives False: the comparison is strict."""
        p = Prob(1000)
        assert bernoulli(p, scripted([999])) is True
        assert bernoulli(p, scripted([1000])) is False

    @pytest.mark.parametrize(("num", "bits"), [(0, 4), (5, 4), (16, 4), (77, 8), (1, 1)])
    def test_exact_count_over_all_outcomes(self, num: int, bits: int) -> None:
        """Over every outcome of randbelow(2**bits), exactly num are True."""
        outcomes = range(1 << bits)
        src = Choices(outcomes)
        hits = sum(bernoulli(Prob(num, bits), src) for _ in outcomes)
        assert hits == num
        assert set(src.bounds) == {1 << bits}

    def test_certain_and_impossible(self) -> None:
        """Probability 0 is never true and probability 1 always, on the real CSPRNG."""
        assert not any(bernoulli(Prob(0)) for _ in range(2000))
        assert all(bernoulli(Prob(1 << 32)) for _ in range(2000))

    def test_system_frequency(self) -> None:
        """On the OS CSPRNG, 40 000 draws at p = 0.3 pass an exact binomial test at 1e-6."""
        p = prob_down(0.3)
        hits = sum(bernoulli(p) for _ in range(40_000))
        assert binomtest(hits, 40_000, float(p)).pvalue > ALPHA_CSPRNG


class TestRandbelow:
    """randbelow is exactly uniform: rejection sampling on masked words, no modulo bias."""

    @pytest.mark.parametrize("n", [2, 3, 5, 6, 7, 100, 1 << 16])
    def test_each_value_once_over_all_masked_words(self, n: int) -> None:
        """Feeding every masked word once (rejected ones first) yields each value exactly once."""
        bits = (n - 1).bit_length()
        # Every low-bits pattern once, largest first so the rejected ones come first, with junk
        # in the high bits that the mask must drop.
        words = [
            ((i * 0x9E3779B9) << bits | low) & 0xFFFFFFFF
            for i, low in enumerate(reversed(range(1 << bits)))
        ]
        src = scripted(words)
        values = [src.randbelow(n) for _ in range(n)]
        assert sorted(values) == list(range(n))
        with pytest.raises(StopIteration):  # and every word was consumed, none skipped
            src.word()

    def test_rejected_words_are_skipped_not_folded(self) -> None:
        """For n = 5 (3 bits) the masked words 5, 6, 7 are rejected, never reduced modulo 5."""
        assert scripted([5, 6, 7 | (1 << 20), 3]).randbelow(5) == 3

    def test_multi_word_bounds(self) -> None:
        """n above 2**32 joins two words high-first, masks to 41 bits and rejects values >= n."""
        n = (1 << 40) + 3
        mask = (1 << 41) - 1
        src = scripted([0xFFFFFFFF, 0x12345678, 0x01, 0x9ABCDEF0])
        assert ((0xFFFFFFFF << 32) | 0x12345678) & mask >= n  # first pair is rejected
        assert src.randbelow(n) == ((0x01 << 32) | 0x9ABCDEF0) & mask
        # The high word matters: 200 uniform draws all below 2**39 would have probability 2**-200.
        assert max(SYSTEM.randbelow(n) for _ in range(200)) > 1 << 39

    def test_trivial_and_invalid_bounds(self) -> None:
        """randbelow(1) is 0 without drawing; randbelow(0) and negatives are refused."""
        assert scripted([]).randbelow(1) == 0
        for bad in (0, -3):
            with pytest.raises(ParameterError, match=str(bad)):
                SYSTEM.randbelow(bad)

    def test_system_uniformity(self) -> None:
        """21 000 OS CSPRNG draws of randbelow(7) pass a chi-square at 1e-6."""
        counts = Counter(SYSTEM.randbelow(7) for _ in range(21_000))
        assert set(counts) == set(range(7))
        assert chisquare([counts[i] for i in range(7)]).pvalue > ALPHA_CSPRNG


class TestSystemSource:
    """The OS source gives 32-bit words and never replays words across a fork."""

    def test_words_are_32_bit_and_uniform(self) -> None:
        """Words lie in [0, 2**32) and their top 4 bits pass a chi-square at 1e-6."""
        words = [SYSTEM.word() for _ in range(16_000)]
        assert min(words) >= 0
        assert max(words) < 1 << 32
        counts = Counter(w >> 28 for w in words)
        assert chisquare([counts[i] for i in range(16)]).pvalue > ALPHA_CSPRNG

    def test_fork_does_not_replay_buffered_words(self) -> None:
        """Parent and child draw different words after a fork although the buffer was full."""
        src = SystemSource()
        src.word()  # fills the buffer; the child inherits it
        read, write = os.pipe()
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork in a threaded process; the child below only reads
            # urandom and writes a pipe, so it cannot deadlock on another thread's lock.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # child: report 8 words and leave without running any pytest teardown
            try:
                os.close(read)
                os.write(write, struct.pack("<8I", *(src.word() for _ in range(8))))
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            child = struct.unpack("<8I", pipe.read())
        os.waitpid(pid, 0)
        parent = tuple(src.word() for _ in range(8))
        assert child != parent


class TestHmacSource:
    """The keyed stream is deterministic, label-separated and pinned to its HMAC derivation."""

    def test_same_key_and_label_replay(self) -> None:
        """Two sources with the same key and label give the same words and draws."""
        a, b = HmacSource(KEY, b"prr/os/3"), HmacSource(KEY, b"prr/os/3")
        assert [a.word() for _ in range(20)] == [b.word() for _ in range(20)]
        assert [a.randbelow(1000) for _ in range(20)] == [b.randbelow(1000) for _ in range(20)]

    def test_labels_and_keys_separate_streams(self) -> None:
        """Another label or another key gives an unrelated stream."""

        def words(key: bytes, label: bytes) -> list[int]:
            src = HmacSource(key, label)
            return [src.word() for _ in range(8)]

        assert words(KEY, b"a") == words(KEY, b"a")
        assert words(KEY, b"a") != words(KEY, b"b")
        assert words(KEY, b"a") != words(bytes(32), b"a")
        # The counter has a fixed width, so distinct labels always give distinct HMAC messages.
        assert words(KEY, b"a") != words(KEY, b"a\x00")

    def test_stream_is_hmac_sha256_counter_mode_in_order(self) -> None:
        """Words are HMAC-SHA256(key, label 0x00 counter_be64) read little-endian, block by block.

        Memoized permanent responses depend on this derivation: changing it would silently
        re-randomize every user's memoized values, so it is pinned here.
        """
        src = HmacSource(KEY, b"label")
        expected: list[int] = []
        for counter in range(3):
            block = hmac.new(
                KEY, b"label\x00" + counter.to_bytes(8, "big"), hashlib.sha256
            ).digest()
            expected.extend(struct.unpack("<8I", block))
        assert [src.word() for _ in range(24)] == expected

    def test_short_keys_are_refused(self) -> None:
        """A key under 16 bytes is a ParameterError naming its length."""
        with pytest.raises(ParameterError, match="15"):
            HmacSource(bytes(15), b"x")

    def test_randbelow_is_uniform_on_a_fixed_key(self) -> None:
        """Deterministic: 12 000 keyed draws of randbelow(6) pass a chi-square at 1e-3."""
        src = HmacSource(KEY, b"uniform")
        counts = Counter(src.randbelow(6) for _ in range(12_000))
        assert chisquare([counts[i] for i in range(6)]).pvalue > 1e-3


class TestSampleDistinct:
    """sample_distinct draws k distinct values, every ordered k-tuple equally likely."""

    @pytest.mark.parametrize(("n", "k"), [(1, 1), (4, 0), (4, 2), (5, 3), (5, 5), (6, 4)])
    def test_every_ordered_tuple_exactly_once(self, n: int, k: int) -> None:
        """Over all randbelow outcomes, each ordered k-tuple of distinct values appears once."""
        seen = Counter()
        for script in product(*(range(n - i) for i in range(k))):
            src = Choices(script)
            seen[tuple(sample_distinct(n, k, src))] += 1
            assert src.bounds == [n - i for i in range(k)]
        assert seen == Counter(permutations(range(n), k))

    @settings(max_examples=100)
    @given(n=st.integers(0, 10_000), data=st.data())
    def test_values_are_distinct_and_in_range(self, n: int, data: st.DataObject) -> None:
        """k distinct values in [0, n) for any k in [0, n] (keyed source for reproducibility)."""
        k = data.draw(st.integers(0, min(n, 300)))
        out = sample_distinct(n, k, HmacSource(KEY, str((n, k)).encode()))
        assert len(out) == len(set(out)) == k
        assert all(0 <= v < n for v in out)

    @pytest.mark.parametrize(("n", "k"), [(3, 4), (3, -1), (0, 1)])
    def test_impossible_sizes_are_refused(self, n: int, k: int) -> None:
        """k outside [0, n] is a ParameterError naming k and the range."""
        with pytest.raises(ParameterError, match=rf"\({k}\) must be in \[0, {n}\]"):
            sample_distinct(n, k, SYSTEM)


class TestWords:
    """Bulk words come out exactly as the same number of single words would."""

    def test_words_match_single_draws_for_hmac(self) -> None:
        """An HMAC stream read in bulk equals the stream read one word at a time."""
        from ldp.sampling import HmacSource

        bulk = HmacSource(b"k" * 32, b"label")
        single = HmacSource(b"k" * 32, b"label")
        got = bulk.words(3) + bulk.words(20) + [bulk.word()] + bulk.words(9)
        assert got == [single.word() for _ in range(33)]

    def test_system_words_are_32_bit(self) -> None:
        """The OS source's bulk words are in [0, 2**32) and not all equal."""
        from ldp.sampling import SYSTEM

        words = SYSTEM.words(300)
        assert len(words) == 300
        assert all(0 <= w < 1 << 32 for w in words)
        assert len(set(words)) > 290
