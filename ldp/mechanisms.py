"""Frequency oracles: GRR, SUE, OUE, OLH and Subset Selection, each carrying its own claim.

A mechanism is a small frozen object built from ``(epsilon, d)``. Its probabilities are exact
rationals ``N / 2**32`` rounded so that the epsilon they *achieve* (``epsilon_achieved``) is at
most the one asked for. The same object randomizes on the client (``privatize``: pure Python,
OS CSPRNG, never imports numpy) and debiases on the server (``support`` / ``estimate``: numpy),
so the two sides can never disagree. Variances are the exact formulas of Wang, Blocki, Li & Jha,
"Locally Differentially Private Protocols for Frequency Estimation", USENIX Security 2017.
A raw value passed to ``privatize`` must never be written anywhere; only its output may leave.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ldp.errors import OutOfRangeError, ParameterError, WrongTypeError
from ldp.sampling import SYSTEM, Prob, RandomSource, bernoulli, prob_down, prob_up, sample_distinct

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ldp.estimate import FrequencyEstimate

__all__ = [
    "GRR",
    "MECHANISMS",
    "OLH",
    "OUE",
    "SS",
    "SUE",
    "Mechanism",
    "choose",
    "from_name",
    "grr_draw",
    "grr_draw_many",
    "olh_hash",
    "olh_hash_many",
    "subset_draw",
    "ue_draw",
    "ue_draw_many",
    "uniform_subset",
]

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
#: Largest OLH seed + 1: seeds are 32-bit words.
OLH_SEEDS = 1 << 32
#: Reports processed per chunk in the vectorized OLH support, bounding memory to ~32 MiB.
_OLH_CHUNK_CELLS = 1 << 22


# --------------------------------------------------------------------------- validation


def _check_epsilon(epsilon: float) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise ParameterError(f"epsilon ({epsilon!r}) must be a number")
    if not (math.isfinite(epsilon) and 0 < epsilon <= 20):
        raise ParameterError(f"epsilon ({epsilon}) must be > 0 and <= 20")
    return float(epsilon)


def _check_d(d: int, minimum: int = 2) -> int:
    if isinstance(d, bool) or not isinstance(d, int):
        raise ParameterError(f"domain size d ({d!r}) must be an integer")
    if not minimum <= d <= 1 << 20:
        raise ParameterError(f"domain size d ({d}) must be in [{minimum}, {1 << 20}]")
    return d


def _check_index(x: int, d: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ParameterError(f"value index ({x!r}) must be an integer")
    if not 0 <= x < d:
        raise ParameterError(f"value index ({x}) must be in [0, {d})")
    return x


def _is_int(v: object) -> bool:
    return type(v) is int  # bool is not an int on the wire


def _log_ratio(ratio: Fraction) -> float:
    """ln of an exact positive fraction without overflow."""
    return math.log(ratio.numerator) - math.log(ratio.denominator)


# --------------------------------------------------------------------------- low-level draws


def grr_draw(x: int, d: int, keep: Prob, rand: RandomSource = SYSTEM) -> int:
    """``x`` with probability ``keep``, else uniform on the other ``d - 1`` values."""
    if bernoulli(keep, rand):
        return x
    y = rand.randbelow(d - 1)
    return y + (y >= x)


def ue_draw(bits: int, d: int, p: Prob, q: Prob, rand: RandomSource = SYSTEM) -> int:
    """Each bit i independently 1 with probability ``p`` if bit i of ``bits`` is set, else ``q``.

    Word i of the source decides bit i, in stream order, whichever path is taken below.
    """
    pn, qn = p.num, q.num
    if p.bits != 32 or q.bits != 32:  # pragma: no cover - all shipped probabilities are 32-bit
        raise ParameterError("ue_draw needs 32-bit probabilities")
    many = getattr(rand, "words", None)
    if many is None:  # a minimal RandomSource: one word at a time
        word = rand.word
        out = 0
        for i in range(d):
            if word() < (pn if (bits >> i) & 1 else qn):
                out |= 1 << i
        return out
    words: list[int] = many(d)
    # Every bit as if it were a q bit, in one pass (the hot path of a 64-item field) ...
    out = int("".join(["1" if w < qn else "0" for w in reversed(words)]) or "0", 2)
    # ... then the few p bits redone with their own threshold on the same word.
    rest = bits & ((1 << d) - 1)
    while rest:
        low = rest & -rest
        i = low.bit_length() - 1
        out = (out | low) if words[i] < pn else (out & ~low)
        rest ^= low
    return out


def uniform_subset(d: int, k: int, rand: RandomSource = SYSTEM) -> list[int]:
    """A uniform ``k``-subset of ``range(d)``, sorted."""
    return sorted(sample_distinct(d, k, rand))


def subset_draw(x: int, d: int, k: int, include: Prob, rand: RandomSource = SYSTEM) -> list[int]:
    """With probability ``include``: x and k-1 uniform others; else k uniform others. Sorted."""
    if bernoulli(include, rand):
        others = sample_distinct(d - 1, k - 1, rand)
        chosen = [y + (y >= x) for y in others]
        chosen.append(x)
    else:
        chosen = [y + (y >= x) for y in sample_distinct(d - 1, k, rand)]
    return sorted(chosen)


def _splitmix64(z: int) -> int:
    z = (z + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def olh_hash(seed: int, x: int, g: int) -> int:
    """Bucket in ``[0, g)`` of ``x`` under the hash chosen by ``seed`` (multiply-add-shift)."""
    a = _splitmix64(seed) | 1
    b = _splitmix64(seed ^ _GOLDEN)
    top = (((a * x + b) & _M64) >> 32) & 0xFFFFFFFF
    return (top * g) >> 32


def _splitmix64_many(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    import numpy as np

    z = z + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def olh_hash_many(seeds: npt.ArrayLike, xs: npt.ArrayLike, g: int) -> npt.NDArray[np.int64]:
    """Vectorized :func:`olh_hash`, broadcasting ``seeds`` against ``xs``."""
    import numpy as np

    # At least 1-d: numpy warns on wrapping *scalar* uint64 arithmetic, never on arrays.
    s = np.atleast_1d(np.asarray(seeds, dtype=np.uint64))
    a = _splitmix64_many(s) | np.uint64(1)
    b = _splitmix64_many(s ^ np.uint64(_GOLDEN))
    top = (a * np.asarray(xs, dtype=np.uint64) + b) >> np.uint64(32)
    return ((top * np.uint64(g)) >> np.uint64(32)).astype(np.int64)


def grr_draw_many(
    xs: npt.ArrayLike, d: int, keep: float, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """numpy twin of :func:`grr_draw` for simulations."""
    import numpy as np

    x = np.asarray(xs, dtype=np.int64)
    other = rng.integers(0, d - 1, size=x.shape, dtype=np.int64)
    other += other >= x
    return np.where(rng.random(x.shape) < keep, x, other)


def ue_draw_many(
    ones: npt.NDArray[np.bool_], p: float, q: float, rng: np.random.Generator
) -> npt.NDArray[np.bool_]:
    """numpy twin of :func:`ue_draw` on a boolean matrix of true bits."""
    import numpy as np

    u = rng.random(ones.shape)
    return np.where(ones, u < p, u < q)


def _onehot(xs: npt.NDArray[np.int64], d: int) -> npt.NDArray[np.bool_]:
    import numpy as np

    out = np.zeros((xs.shape[0], d), dtype=bool)
    out[np.arange(xs.shape[0]), xs] = True
    return out


def _as_indices(xs: npt.ArrayLike, d: int) -> npt.NDArray[np.int64]:
    import numpy as np

    x = np.asarray(xs, dtype=np.int64).ravel()
    if x.size and (x.min() < 0 or x.max() >= d):
        raise ParameterError(f"value indices must be in [0, {d})")
    return x


# --------------------------------------------------------------------------- mechanisms


class Mechanism(Protocol):
    """What every frequency oracle offers: the claim, the client path and the server path."""

    name: ClassVar[str]
    epsilon: float
    d: int

    @property
    def p(self) -> float: ...
    @property
    def q(self) -> float: ...
    @property
    def epsilon_achieved(self) -> float: ...
    @property
    def p_star(self) -> float: ...
    @property
    def q_star(self) -> float: ...
    def variance(self, n: int, f: float | None = None) -> float: ...
    def privatize(self, x: int, rand: RandomSource = SYSTEM) -> Any: ...
    def privatize_many(self, xs: npt.ArrayLike, rng: np.random.Generator) -> Any: ...
    def validate(self, wire: object) -> None: ...
    def encode_batch(self, wires: Sequence[object]) -> Any: ...
    def support(self, batch: Any) -> npt.NDArray[np.int64]: ...
    def estimate(self, batch: Any, consistency: str = "norm-sub") -> FrequencyEstimate: ...
    def estimate_from_support(
        self, support: npt.ArrayLike, n: int, consistency: str = "norm-sub"
    ) -> FrequencyEstimate: ...


class _Base:
    """Shared variance and estimation, written once against ``p_star`` and ``q_star``."""

    name: ClassVar[str]
    epsilon: float
    d: int

    @property
    def p_star(self) -> float:
        raise NotImplementedError  # pragma: no cover

    @property
    def q_star(self) -> float:
        raise NotImplementedError  # pragma: no cover

    def variance(self, n: int, f: float | None = None) -> float:
        """Variance of one item's frequency estimate from ``n`` reports (true frequency ``f``).

        ``(q*(1 - q*) / (p* - q*)^2 + f (1 - p* - q*) / (p* - q*)) / n``, in pure Python so the
        client can choose a mechanism without importing numpy.
        """
        if isinstance(n, bool) or n < 1:
            raise ParameterError(f"number of reports n ({n}) must be >= 1")
        p, q = self.p_star, self.q_star
        gap = p - q
        return (q * (1 - q) / gap**2 + (f or 0.0) * (1 - p - q) / gap) / n

    def support(self, batch: Any) -> npt.NDArray[np.int64]:
        raise NotImplementedError  # pragma: no cover

    def estimate_from_support(
        self, support: npt.ArrayLike, n: int, consistency: str = "norm-sub"
    ) -> FrequencyEstimate:
        """Debias per-item support counts of ``n`` reports (the additive path)."""
        from ldp.estimate import estimate_frequencies

        return estimate_frequencies(support, n, self.p_star, self.q_star, consistency)

    def estimate(self, batch: Any, consistency: str = "norm-sub") -> FrequencyEstimate:
        """Frequencies with standard errors from a batch of outputs."""
        return self.estimate_from_support(self.support(batch), len(batch), consistency)


class _KaryResponse(_Base):
    """k-ary randomized response over ``symbols`` symbols, shared by GRR (d) and OLH (g).

    Keeps the true symbol with p = e^eps / (e^eps + m - 1), rounded down, else reports one of
    the other m - 1 uniformly, so q = (1 - p) / (m - 1) and the achieved epsilon is
    ln(p (m - 1) / (1 - p)).
    """

    @property
    def symbols(self) -> int:
        raise NotImplementedError  # pragma: no cover

    def _check_keep(self) -> None:
        if self.keep.value * self.symbols <= 1:
            raise ParameterError(f"epsilon ({self.epsilon}) is too small for 32-bit probabilities")

    @cached_property
    def keep(self) -> Prob:
        """P[report the true symbol], exact."""
        e = math.exp(self.epsilon)
        return prob_down(e / (e + self.symbols - 1))

    @property
    def p(self) -> float:
        return float(self.keep)

    @property
    def q(self) -> float:
        return float((1 - self.keep.value) / (self.symbols - 1))

    @property
    def epsilon_achieved(self) -> float:
        k = self.keep.value
        return _log_ratio(k * (self.symbols - 1) / (1 - k))

    @property
    def p_star(self) -> float:
        return self.p


@dataclass(frozen=True)
class GRR(_KaryResponse):
    """Generalized (k-ary) randomized response.

    Keeps the true value with p = e^eps / (e^eps + d - 1) (rounded down), else reports one of the
    other d - 1 values uniformly, so q = (1 - p) / (d - 1) and the achieved epsilon is
    ln(p (d - 1) / (1 - p)). Wire value: the reported index. Variance (Wang et al. 2017, eq. 4):
    (d - 2 + e^eps) / ((e^eps - 1)^2 n) at f = 0.
    """

    name: ClassVar[str] = "grr"
    epsilon: float
    d: int

    def __post_init__(self) -> None:
        _check_epsilon(self.epsilon)
        _check_d(self.d)
        self._check_keep()

    @property
    def symbols(self) -> int:
        """The true value is one of d symbols."""
        return self.d

    @property
    def q_star(self) -> float:
        return self.q

    def privatize(self, x: int, rand: RandomSource = SYSTEM) -> int:
        """One report: the randomized index."""
        return grr_draw(_check_index(x, self.d), self.d, self.keep, rand)

    def privatize_many(self, xs: npt.ArrayLike, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Simulation path: same distribution as :meth:`privatize`, vectorized."""
        return grr_draw_many(_as_indices(xs, self.d), self.d, self.p, rng)

    def validate(self, wire: object) -> None:
        """Raise unless ``wire`` is an index in ``[0, d)``."""
        if not _is_int(wire):
            raise WrongTypeError(f"grr output must be an integer, not {type(wire).__name__}")
        assert isinstance(wire, int)
        if not 0 <= wire < self.d:
            raise OutOfRangeError(f"grr output ({wire}) must be in [0, {self.d})")

    def encode_batch(self, wires: Sequence[object]) -> npt.NDArray[np.int64]:
        """Wire values to an int64 array, validating every one."""
        import numpy as np

        for w in wires:
            self.validate(w)
        return np.asarray(wires, dtype=np.int64).reshape(len(wires))

    def support(self, batch: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """How many reports name each item: one bincount, O(n + d)."""
        import numpy as np

        return np.bincount(np.asarray(batch, dtype=np.int64), minlength=self.d)[: self.d]


#: The widening steps of :func:`_bit_counts`: (shift, mask, rows added). Counters ``shift`` bits
#: wide are split into counters twice as wide (``mask`` keeps the low half of each new lane, in
#: every byte), then ``rows added`` of them are summed. The new lanes hold at most 3, 15 and 255,
#: and 3 * 1, 5 * 3 and 17 * 15 are exactly those: no sum ever carries into the next lane.
_WIDEN = ((1, 0x55, 3), (2, 0x33, 5), (4, 0x0F, 17))
#: Rows one pass of the three steps folds into byte counters: 3 * 5 * 17.
_BIT_BLOCK = 255
#: Packed bytes per chunk of :func:`_bit_counts`; its temporaries take about five times this.
_BIT_CHUNK_BYTES = 1 << 20
#: Unpacked bits per chunk of the small-batch path of :func:`_bit_counts`.
_BIT_UNPACK_CELLS = 1 << 22


def _bit_counts(packed: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """How many rows of a 2-d uint8 array have each bit set: entry ``8 j + b`` is bit b of byte j.

    Vertical counters in the style of SWAR popcounts, so numpy only ever adds whole contiguous
    blocks of bytes: see :func:`_widen_and_add`. Exact integer counting, so the result is the
    same as summing ``unpackbits(packed, bitorder="little")`` down the rows; batches smaller than
    one block of 255 rows take that route, which is cheaper for them. Memory stays bounded.
    """
    import numpy as np

    n, width = packed.shape
    totals = np.zeros((8, width), dtype=np.int64)  # totals[b, j]: rows with bit b of byte j set
    if n < _BIT_BLOCK:
        step = max(1, _BIT_UNPACK_CELLS // (8 * max(1, width)))
        for start in range(0, n, step):
            bits = np.unpackbits(packed[start : start + step], axis=1, bitorder="little")
            totals += bits.sum(axis=0, dtype=np.int64).reshape(width, 8).T
        return totals.T.reshape(-1)
    blocks = max(1, _BIT_CHUNK_BYTES // (_BIT_BLOCK * max(1, width)))
    rows = _BIT_BLOCK * min(blocks, -(-n // _BIT_BLOCK))
    for start in range(0, n, rows):
        chunk = packed[start : start + rows]
        if chunk.shape[0] < rows:  # all-zero rows count nothing: they fill up the last chunk
            chunk = np.concatenate([chunk, np.zeros((rows - chunk.shape[0], width), np.uint8)])
        totals += _widen_and_add(chunk)
    return totals.T.reshape(-1)


def _widen_and_add(chunk: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Bit counts ``out[b, j]`` of a chunk whose row count is a multiple of 255.

    Every byte starts as eight 1-bit counters, one per bit. Step one splits each byte in two: the
    even bits (``& 0x55``) and the odd bits moved down (``>> 1 & 0x55``), each now a 2-bit lane
    holding 0 or 1; adding 3 rows gives at most 3, which still fits, so lanes never carry into each
    other. Steps two and three repeat this into 4-bit lanes (``0x33``, 5 rows, at most 15) and
    8-bit lanes (``0x0F``, 17 rows, at most 255). Whichever rows are added together does not
    matter for the total, so row r is added to rows r + m, r + 2m, ... (m = rows / group): whole
    contiguous slabs, one numpy call each. After step k, ``lanes[o]`` counts, in each lane, the
    bit at offset o from the lane's start (the low halves keep o, the moved-down high halves get
    o + shift), so after step three ``lanes[b]`` holds in byte j the count of bit b of byte j.
    """
    import numpy as np

    lanes = chunk[None]
    for shift, mask, group in _WIDEN:
        m = np.uint8(mask)
        half = lanes.shape[0]
        split = np.empty((2 * half, *lanes.shape[1:]), dtype=np.uint8)
        np.bitwise_and(lanes, m, out=split[:half])
        np.right_shift(lanes, np.uint8(shift), out=split[half:])
        split[half:] &= m
        size = split.shape[1] // group
        lanes = split[:, :size] + split[:, size : 2 * size]
        for i in range(2, group):
            lanes += split[:, i * size : (i + 1) * size]
    counts: npt.NDArray[np.int64] = lanes.sum(axis=1, dtype=np.int64)
    return counts


@dataclass(frozen=True)
class _UnaryEncoding(_Base):
    """Unary encoding: one bit per item, each flipped independently (Wang et al. 2017, sec. 4.3).

    Bit of the true item is 1 with p, every other bit with q; the achieved epsilon is
    ln(p (1 - q) / ((1 - p) q)). Wire value: an integer bitmask (bit i = item i).
    Batch form: ``packbits(bits, bitorder="little")`` rows.
    """

    epsilon: float
    d: int

    def __post_init__(self) -> None:
        _check_epsilon(self.epsilon)
        _check_d(self.d)
        if self.p_prob.value <= self.q_prob.value:
            raise ParameterError(f"epsilon ({self.epsilon}) is too small for 32-bit probabilities")

    @cached_property
    def p_prob(self) -> Prob:
        raise NotImplementedError  # pragma: no cover

    @cached_property
    def q_prob(self) -> Prob:
        raise NotImplementedError  # pragma: no cover

    @property
    def p(self) -> float:
        return float(self.p_prob)

    @property
    def q(self) -> float:
        return float(self.q_prob)

    @property
    def epsilon_achieved(self) -> float:
        p, q = self.p_prob.value, self.q_prob.value
        return _log_ratio(p * (1 - q) / ((1 - p) * q))

    @property
    def p_star(self) -> float:
        return self.p

    @property
    def q_star(self) -> float:
        return self.q

    def privatize(self, x: int, rand: RandomSource = SYSTEM) -> int:
        """One report: the randomized bitmask."""
        return ue_draw(1 << _check_index(x, self.d), self.d, self.p_prob, self.q_prob, rand)

    def privatize_many(self, xs: npt.ArrayLike, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
        """Simulation path: packed rows with the same distribution as :meth:`privatize`."""
        import numpy as np

        x = _as_indices(xs, self.d)
        rows = []
        step = max(1, _OLH_CHUNK_CELLS // self.d)
        for start in range(0, x.shape[0], step):
            bits = ue_draw_many(_onehot(x[start : start + step], self.d), self.p, self.q, rng)
            rows.append(np.packbits(bits, axis=1, bitorder="little"))
        if not rows:
            return np.zeros((0, (self.d + 7) // 8), dtype=np.uint8)
        return np.concatenate(rows)

    def validate(self, wire: object) -> None:
        """Raise unless ``wire`` is a bitmask in ``[0, 2**d)``."""
        if not _is_int(wire):
            raise WrongTypeError(f"{self.name} output must be an integer bitmask")
        assert isinstance(wire, int)
        if not 0 <= wire < 1 << self.d:
            raise OutOfRangeError(f"{self.name} output ({wire}) must be in [0, 2**{self.d})")

    def encode_batch(self, wires: Sequence[object]) -> npt.NDArray[np.uint8]:
        """Wire bitmasks to packed little-endian rows, validating every one."""
        import numpy as np

        nbytes = (self.d + 7) // 8
        buf = bytearray()
        for w in wires:
            self.validate(w)
            assert isinstance(w, int)
            buf += w.to_bytes(nbytes, "little")
        return np.frombuffer(bytes(buf), dtype=np.uint8).reshape(len(wires), nbytes)

    def support(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
        """Per-item count of set bits over packed rows: vertical byte counters, O(n d / 8)."""
        import numpy as np

        nbytes = (self.d + 7) // 8
        packed = np.asarray(batch, dtype=np.uint8)
        if packed.size == 0:
            return np.zeros(self.d, dtype=np.int64)
        if packed.ndim != 2 or packed.shape[1] != nbytes:
            raise ParameterError(
                f"{self.name} batch shape {packed.shape} must be (n, {nbytes}) packed rows"
            )
        return _bit_counts(packed)[: self.d]


@dataclass(frozen=True)
class SUE(_UnaryEncoding):
    """Symmetric unary encoding (basic RAPPOR): p = e^(eps/2) / (e^(eps/2) + 1), q = 1 - p."""

    name: ClassVar[str] = "sue"

    @cached_property
    def p_prob(self) -> Prob:
        h = math.exp(self.epsilon / 2)
        return prob_down(h / (h + 1))

    @cached_property
    def q_prob(self) -> Prob:
        return prob_up(1 / (math.exp(self.epsilon / 2) + 1))


@dataclass(frozen=True)
class OUE(_UnaryEncoding):
    """Optimized unary encoding (Wang et al. 2017): p = 1/2, q = 1 / (e^eps + 1).

    Variance 4 e^eps / ((e^eps - 1)^2 n) at f = 0, independent of d.
    """

    name: ClassVar[str] = "oue"

    @cached_property
    def p_prob(self) -> Prob:
        return Prob(1 << 31)

    @cached_property
    def q_prob(self) -> Prob:
        return prob_up(1 / (math.exp(self.epsilon) + 1))


#: Reports per chunk of the OLH support; the per-report arrays of a chunk take about 2 MiB.
_OLH_CHUNK_ROWS = 1 << 16
#: From this many reports in a chunk on, stepping through the d items (a few numpy calls each)
#: beats hashing every (report, item) cell at once by broadcasting.
_OLH_SCAN_MIN = 1024


def _olh_intervals(
    b: npt.NDArray[np.uint64], y: npt.NDArray[np.int64], g: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Per report (hash multiplier a, offset ``b``, bucket ``y``): ``(start, width)`` such that
    :func:`olh_hash` puts item v in bucket y iff ``(start + a v) mod 2**64 < width``.

    olh_hash takes t = top 32 bits of x = (a v + b) mod 2**64 and returns floor(t g / 2**32)
    (exact, as t g < 2**64 for g < 2**32; here g < 2**29 as epsilon <= 20). That equals y iff
    y 2**32 / g <= t < (y + 1) 2**32 / g, i.e. iff lo <= t < hi with lo = ceil(y 2**32 / g) and
    hi = ceil((y + 1) 2**32 / g), i.e. iff L <= x < H with L = lo 2**32 and H = hi 2**32. For
    0 <= L <= H <= 2**64 and 0 <= x < 2**64 that holds iff (x - L) mod 2**64 < H - L: if x >= L
    the difference is x - L itself; if x < L it wraps to x - L + 2**64 >= 2**64 - L >= H - L.
    So start = (b - L) mod 2**64 and width = H - L. Both fit in 64 bits although H = 2**64 for
    the last bucket: y <= g - 1 gives lo <= 2**32 - floor(2**32 / g) < 2**32, and g >= 2 gives
    hi - lo <= ceil(2**32 / g) <= 2**31. A bucket outside [0, g) matches no item in olh_hash
    (as uint64 a negative one is >= 2**63); it gets width 0, which nothing is below.
    """
    import numpy as np

    gg, shift = np.uint64(g), np.uint64(32)
    yu = y.astype(np.uint64)
    valid = yu < gg
    # y < g < 2^29, so (y + 1) 2^32 + g - 1 < 2^62 never wraps. An invalid y may wrap here, but
    # its width is zeroed below, and no start is below 0.
    lo = yu << shift
    lo += gg - np.uint64(1)
    hi = lo + (np.uint64(1) << shift)
    lo //= gg  # ceil(y 2^32 / g) = floor((y 2^32 + g - 1) / g)
    hi //= gg
    hi -= lo
    hi <<= shift
    width = np.where(valid, hi, np.uint64(0))
    lo <<= shift
    start = b - lo
    return start, width


def _olh_counts(rows: npt.NDArray[np.int64], d: int, g: int) -> npt.NDArray[np.int64]:
    """How many reports ``[seed, y]`` put each item of ``[0, d)`` in their bucket y.

    Big chunks step through the items: count ``start < width`` (see :func:`_olh_intervals`),
    then add ``a`` to every start (mod 2**64), which moves each report on to the next item: two
    numpy passes per item instead of hashing. Small chunks hash every (report, item) cell at
    once, exactly as :func:`olh_hash_many`, in blocks of bounded size.
    """
    import numpy as np

    counts = np.zeros(d, dtype=np.int64)
    for first in range(0, rows.shape[0], _OLH_CHUNK_ROWS):
        chunk = rows[first : first + _OLH_CHUNK_ROWS]
        seeds = chunk[:, 0].astype(np.uint64)  # as olh_hash_many casts them
        a = _splitmix64_many(seeds) | np.uint64(1)
        b = _splitmix64_many(seeds ^ np.uint64(_GOLDEN))
        k = seeds.shape[0]
        if k >= _OLH_SCAN_MIN:
            start, width = _olh_intervals(b, chunk[:, 1], g)
            hit = np.empty(k, dtype=bool)
            for v in range(d):
                np.less(start, width, out=hit)
                counts[v] += np.count_nonzero(hit)
                start += a
            continue
        y = chunk[:, 1:2].astype(np.uint64)
        shift, gg = np.uint64(32), np.uint64(g)
        step = max(1, _OLH_CHUNK_CELLS // k)
        for v0 in range(0, d, step):
            items = np.arange(v0, min(d, v0 + step), dtype=np.uint64)[None, :]
            buckets = (((a[:, None] * items + b[:, None]) >> shift) * gg) >> shift
            counts[v0 : v0 + items.shape[1]] += np.count_nonzero(buckets == y, axis=0)
    return counts


@dataclass(frozen=True)
class OLH(_KaryResponse):
    """Optimized local hashing (Wang et al. 2017, sec. 4.4).

    The client draws a 32-bit seed choosing a hash h into g = max(2, round(e^eps) + 1) buckets and
    reports ``[seed, GRR_g(h(x))]`` with keep probability p = e^eps / (e^eps + g - 1) (rounded
    down). Any item v hashing to the reported bucket is supported, so p* = p and q* = 1 / g.
    Variance at f = 0: q*(1 - q*) / ((p* - q*)^2 n), about 4 e^eps / ((e^eps - 1)^2 n).
    """

    name: ClassVar[str] = "olh"
    epsilon: float
    d: int
    g: int = field(init=False)

    def __post_init__(self) -> None:
        _check_epsilon(self.epsilon)
        _check_d(self.d)
        object.__setattr__(self, "g", max(2, round(math.exp(self.epsilon)) + 1))
        self._check_keep()

    @property
    def symbols(self) -> int:
        """Randomized response runs over the g hash buckets."""
        return self.g

    @property
    def q_star(self) -> float:
        return 1.0 / self.g

    def privatize(self, x: int, rand: RandomSource = SYSTEM) -> list[int]:
        """One report: ``[seed, bucket]``."""
        _check_index(x, self.d)
        seed = rand.word()
        return [seed, grr_draw(olh_hash(seed, x, self.g), self.g, self.keep, rand)]

    def privatize_many(self, xs: npt.ArrayLike, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Simulation path: an ``(n, 2)`` array of ``[seed, bucket]`` rows."""
        import numpy as np

        x = _as_indices(xs, self.d)
        seeds = rng.integers(0, OLH_SEEDS, size=x.shape[0], dtype=np.int64)
        buckets = grr_draw_many(olh_hash_many(seeds, x, self.g), self.g, self.p, rng)
        return np.stack([seeds, buckets], axis=1)

    def validate(self, wire: object) -> None:
        """Raise unless ``wire`` is ``[seed, bucket]`` with seed < 2**32 and bucket < g."""
        if not isinstance(wire, list | tuple) or len(wire) != 2:
            raise WrongTypeError("olh output must be a list [seed, bucket]")
        seed, bucket = wire
        if not (_is_int(seed) and _is_int(bucket)):
            raise WrongTypeError("olh seed and bucket must be integers")
        if not 0 <= seed < OLH_SEEDS:
            raise OutOfRangeError(f"olh seed ({seed}) must be in [0, 2**32)")
        if not 0 <= bucket < self.g:
            raise OutOfRangeError(f"olh bucket ({bucket}) must be in [0, {self.g})")

    def encode_batch(self, wires: Sequence[object]) -> npt.NDArray[np.int64]:
        """Wire pairs to an ``(n, 2)`` int64 array, validating every one."""
        import numpy as np

        for w in wires:
            self.validate(w)
        return np.asarray(wires, dtype=np.int64).reshape(len(wires), 2)

    def support(self, batch: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Per-item count of reports whose bucket the item hashes to (chunked, bounded memory).

        Exactly the counts of :func:`olh_hash` per report, by an interval test that needs two
        numpy passes per item instead of hashing: see :func:`_olh_intervals`.
        """
        import numpy as np

        rows = np.asarray(batch, dtype=np.int64).reshape(-1, 2)
        return _olh_counts(rows, self.d, self.g)


@dataclass(frozen=True)
class SS(_Base):
    """Subset selection (Ye & Barg 2018; Wang et al. 2016).

    Reports a k-subset of the domain: P[Y | x] is proportional to e^eps if x is in Y, else 1.
    Realized as: with probability include = k e^eps / (k e^eps + d - k) (rounded down), x plus
    k - 1 uniform others; else k uniform others. The subset size k minimizes the exact variance
    (about d / (e^eps + 1)). p* = include, q* = (include (k - 1) + (1 - include) k) / (d - 1).
    Wire value: the sorted list of k indices.
    """

    name: ClassVar[str] = "ss"
    epsilon: float
    d: int
    k: int = field(init=False)

    def __post_init__(self) -> None:
        _check_epsilon(self.epsilon)
        _check_d(self.d)
        object.__setattr__(self, "k", self._best_k())
        if self.p_star <= self.q_star:
            raise ParameterError(f"epsilon ({self.epsilon}) is too small for 32-bit probabilities")

    def _include_for(self, k: int) -> Prob:
        e = math.exp(self.epsilon)
        return prob_down(k * e / (k * e + self.d - k))

    def _stars(self, k: int) -> tuple[float, float]:
        inc = self._include_for(k).value
        q = (inc * (k - 1) + (1 - inc) * k) / (self.d - 1)
        return float(inc), float(q)

    def _best_k(self) -> int:
        # The optimum sits near d / (e^eps + 1) (Ye & Barg 2018); search a generous window.
        k0 = max(1, round(self.d / (math.exp(self.epsilon) + 1)))
        best_k, best_var = 1, math.inf
        for k in range(max(1, k0 // 2 - 1), min(self.d - 1, 2 * k0 + 2) + 1):
            p, q = self._stars(k)
            if p <= q:
                continue
            var = q * (1 - q) / (p - q) ** 2
            if var < best_var:
                best_k, best_var = k, var
        return best_k

    @cached_property
    def include(self) -> Prob:
        """P[the true value is in the reported subset], exact."""
        return self._include_for(self.k)

    @property
    def p(self) -> float:
        return float(self.include)

    @property
    def q(self) -> float:
        return self.q_star

    @property
    def epsilon_achieved(self) -> float:
        inc = self.include.value
        return _log_ratio(inc / (1 - inc) * Fraction(self.d - self.k, self.k))

    @property
    def p_star(self) -> float:
        return float(self.include)

    @property
    def q_star(self) -> float:
        return self._stars(self.k)[1]

    def privatize(self, x: int, rand: RandomSource = SYSTEM) -> list[int]:
        """One report: the sorted subset."""
        return subset_draw(_check_index(x, self.d), self.d, self.k, self.include, rand)

    def privatize_many(self, xs: npt.ArrayLike, rng: np.random.Generator) -> npt.NDArray[np.int64]:
        """Simulation path: an ``(n, k)`` array of sorted subsets."""
        import numpy as np

        x = _as_indices(xs, self.d)
        out = np.empty((x.shape[0], self.k), dtype=np.int64)
        step = max(1, _OLH_CHUNK_CELLS // self.d)
        for start in range(0, x.shape[0], step):
            xc = x[start : start + step]
            rows = np.arange(xc.shape[0])
            keys = rng.random((xc.shape[0], self.d))
            inside = rng.random(xc.shape[0]) < self.p
            # -1 forces x into the k smallest keys, 2 keeps it out; others stay uniform.
            keys[rows, xc] = np.where(inside, -1.0, 2.0)
            part = np.argpartition(keys, self.k - 1, axis=1)[:, : self.k]
            out[start : start + step] = np.sort(part, axis=1)
        return out

    def validate(self, wire: object) -> None:
        """Raise unless ``wire`` is a strictly increasing list of k indices in ``[0, d)``."""
        if not isinstance(wire, list | tuple):
            raise WrongTypeError("ss output must be a list of indices")
        if len(wire) != self.k:
            raise OutOfRangeError(f"ss output must have {self.k} indices, got {len(wire)}")
        prev = -1
        for v in wire:
            if not _is_int(v):
                raise WrongTypeError("ss indices must be integers")
            if not prev < v < self.d:
                raise OutOfRangeError(
                    f"ss indices must be strictly increasing and in [0, {self.d}), got {wire}"
                )
            prev = v

    def encode_batch(self, wires: Sequence[object]) -> npt.NDArray[np.int64]:
        """Wire subsets to an ``(n, k)`` int64 array, validating every one."""
        import numpy as np

        for w in wires:
            self.validate(w)
        return np.asarray(wires, dtype=np.int64).reshape(len(wires), self.k)

    def support(self, batch: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """How many subsets contain each item: one bincount over n * k indices."""
        import numpy as np

        flat = np.asarray(batch, dtype=np.int64).ravel()
        return np.bincount(flat, minlength=self.d)[: self.d]


MECHANISMS: dict[str, type[GRR] | type[SUE] | type[OUE] | type[OLH] | type[SS]] = {
    "grr": GRR,
    "sue": SUE,
    "oue": OUE,
    "olh": OLH,
    "ss": SS,
}

#: Candidates of :func:`choose`, in tie-break order. SUE is never better than OUE.
_CHOICES = ("grr", "oue", "olh", "ss")


def from_name(name: str, epsilon: float, d: int) -> GRR | SUE | OUE | OLH | SS:
    """Build the mechanism called ``name``."""
    try:
        cls = MECHANISMS[name]
    except KeyError:
        raise ParameterError(f"mechanism ({name!r}) must be one of {sorted(MECHANISMS)}") from None
    return cls(epsilon, d)


def choose(d: int, epsilon: float) -> GRR | OUE | OLH | SS:
    """The oracle with the smallest exact variance at f = 0 for this ``(d, epsilon)``."""
    best: GRR | OUE | OLH | SS | None = None
    for name in _CHOICES:
        cls = MECHANISMS[name]
        mech = cls(epsilon, d)
        assert not isinstance(mech, SUE)
        if best is None or mech.variance(1) < best.variance(1):
            best = mech
    assert best is not None
    return best
