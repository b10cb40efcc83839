"""Exact randomness for the client: Bernoulli(N / 2**32) and uniform draws from a CSPRNG.

Every probability a mechanism uses is a rational ``N / 2**bits``, rounded by the caller in the
direction that keeps the achieved epsilon at or below the requested one, and a draw is
``word < N`` for a uniform word. No floating point touches the noise, and nothing here ever
uses ``random`` or numpy's global generator. :data:`SYSTEM` reads the OS CSPRNG; an
:class:`HmacSource` is a deterministic stream keyed by the local secret, used only for the
memoized permanent responses, so its output never leaves the device except through a mechanism.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from ldp.errors import ParameterError

__all__ = [
    "PRECISION_BITS",
    "SYSTEM",
    "HmacSource",
    "Prob",
    "RandomSource",
    "SystemSource",
    "bernoulli",
    "prob_down",
    "prob_up",
    "sample_distinct",
]

PRECISION_BITS = 32
_WORD = 1 << 32


@dataclass(frozen=True)
class Prob:
    """The probability ``num / 2**bits``, exactly."""

    num: int
    bits: int = PRECISION_BITS

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 64:
            raise ParameterError(f"precision bits ({self.bits}) must be in [1, 64]")
        if not 0 <= self.num <= (1 << self.bits):
            raise ParameterError(f"numerator ({self.num}) must be in [0, 2**{self.bits}]")

    @property
    def value(self) -> Fraction:
        """The exact probability as a fraction."""
        return Fraction(self.num, 1 << self.bits)

    def __float__(self) -> float:
        return self.num / (1 << self.bits)


def _check_unit(x: float | Fraction) -> Fraction:
    if not (isinstance(x, int | float | Fraction) and 0.0 <= x <= 1.0):
        raise ParameterError(f"probability ({x!r}) must be a number in [0, 1]")
    return Fraction(x)


def prob_down(x: float | Fraction, bits: int = PRECISION_BITS) -> Prob:
    """The largest ``N / 2**bits`` that is at most ``x``."""
    return Prob(math.floor(_check_unit(x) * (1 << bits)), bits)


def prob_up(x: float | Fraction, bits: int = PRECISION_BITS) -> Prob:
    """The smallest ``N / 2**bits`` that is at least ``x``."""
    return Prob(math.ceil(_check_unit(x) * (1 << bits)), bits)


class RandomSource(Protocol):
    """Where a mechanism's uniform randomness comes from."""

    def word(self) -> int:
        """A uniform integer in ``[0, 2**32)``."""
        ...

    def randbelow(self, n: int) -> int:
        """A uniform integer in ``[0, n)``."""
        ...


class _BufferedSource:
    """Hands out 32-bit words from blocks of bytes; uniform draws by rejection sampling."""

    def __init__(self) -> None:
        self._words: list[int] = []

    def _block(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _refill(self) -> None:
        raw = self._block()
        self._words = list(struct.unpack(f"<{len(raw) // 4}I", raw))

    def word(self) -> int:
        """A uniform integer in ``[0, 2**32)``."""
        if not self._words:
            self._refill()
        return self._words.pop()

    def words(self, count: int) -> list[int]:
        """The next ``count`` words, in the order :meth:`word` would return them."""
        out: list[int] = []
        while len(out) < count:
            if not self._words:
                self._refill()
            take = min(count - len(out), len(self._words))
            chunk = self._words[-take:]
            del self._words[-take:]
            chunk.reverse()  # word() pops from the end
            out += chunk
        return out

    def randbelow(self, n: int) -> int:
        """A uniform integer in ``[0, n)``, exactly (rejection sampling, no modulo bias)."""
        if n <= 0:
            raise ParameterError(f"randbelow bound ({n}) must be >= 1")
        if n == 1:
            return 0
        bits = (n - 1).bit_length()
        words = (bits + 31) // 32
        mask = (1 << bits) - 1
        while True:
            value = 0
            for _ in range(words):
                value = (value << 32) | self.word()
            value &= mask
            if value < n:
                return value


class SystemSource(_BufferedSource):
    """The OS CSPRNG (``os.urandom``), buffered; the buffer is discarded after a fork."""

    _BLOCK = 256

    def __init__(self) -> None:
        super().__init__()
        self._pid = os.getpid()

    def _block(self) -> bytes:
        return os.urandom(self._BLOCK)

    def _forget_after_fork(self) -> None:
        pid = os.getpid()
        if pid != self._pid:  # a forked child must never replay its parent's words
            self._pid = pid
            self._words = []

    def word(self) -> int:
        """A uniform integer in ``[0, 2**32)`` from the OS CSPRNG."""
        self._forget_after_fork()
        return super().word()

    def words(self, count: int) -> list[int]:
        """The next ``count`` words from the OS CSPRNG."""
        self._forget_after_fork()
        return super().words(count)


class HmacSource(_BufferedSource):
    """A deterministic stream: HMAC-SHA256(key, label || counter) blocks.

    The same key and label give the same draws in any process on any day; this is what makes a
    permanent randomized response memoized without storing it. The key is the local secret and
    must never leave the device.
    """

    def __init__(self, key: bytes, label: bytes) -> None:
        super().__init__()
        if len(key) < 16:
            raise ParameterError(f"HMAC key length ({len(key)} bytes) must be >= 16")
        self._key = key
        self._label = label
        self._counter = 0

    def _block(self) -> bytes:
        msg = self._label + b"\x00" + self._counter.to_bytes(8, "big")
        self._counter += 1
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def _refill(self) -> None:
        super()._refill()
        # Consume words in stream order so the draw sequence is easy to reason about.
        self._words.reverse()


SYSTEM = SystemSource()


def bernoulli(prob: Prob, rand: RandomSource = SYSTEM) -> bool:
    """True with probability exactly ``prob``."""
    if prob.bits == PRECISION_BITS:
        return rand.word() < prob.num
    return rand.randbelow(1 << prob.bits) < prob.num


def sample_distinct(n: int, k: int, rand: RandomSource = SYSTEM) -> list[int]:
    """``k`` distinct integers drawn uniformly from ``range(n)`` (sparse Fisher-Yates), unsorted."""
    if not 0 <= k <= n:
        raise ParameterError(f"sample size ({k}) must be in [0, {n}]")
    swapped: dict[int, int] = {}
    out = []
    for i in range(k):
        j = i + rand.randbelow(n - i)
        out.append(swapped.get(j, j))
        swapped[j] = swapped.get(i, i)
    return out
