"""Longitudinal randomized response: a memoized permanent response plus a fresh one per report.

A CLI reports every period; fresh noise each time would average away. So each true value first
goes through a *permanent* randomized response (PRR, ``epsilon_perm``) drawn from
``HmacSource(secret, b"prr/" + field + b"/" + value)``, identical in every process on every day,
and every report then adds a fresh *instantaneous* response (IRR) from the OS CSPRNG, tuned so
that one report costs ``epsilon_1`` (RAPPOR, Erlingsson et al. CCS 2014; Arcolezi et al.,
"Improving the utility of locally differentially private protocols for longitudinal and
multidimensional frequency estimates", 2022). The PRR is recomputed on demand and must never be
stored, logged or sent on its own; the secret never leaves the user's state directory.

The math, for every base oracle (probabilities are exact ``N / 2**32``, rounded so the achieved
epsilons stay at or below the requested ones; the achieved values are what we report):

* **GRR** (``d`` values). PRR keeps x with ``p1 = e^ep / (e^ep + d - 1)``, ``q1 = (1-p1)/(d-1)``.
  IRR is GRR on the PRR value with keep ``p2``, ``q2 = (1-p2)/(d-1)``. The composition is again
  GRR: ``P = p1 p2 + (1-p1) q2 = q1 + p2 (p1 - q1)`` and ``Q = (1 - P)/(d-1)``. Solving
  ``P / Q = e^e1`` gives ``p2 = (P_t - q1) / (p1 - q1)`` with ``P_t = e^e1 / (e^e1 + d - 1)``.
  (The L-GRR ``p2`` of multi-freq-ldpy, taken from the authors' analysis notebook, matches
  ``Q = p1 q2 + q1 p2``, which omits the PRR-to-third-value path; for d > 2 it under-spends,
  e.g. 0.86 instead of 1 at d = 5, (ep, e1) = (2, 1). We solve on the exact composed channel.)
* **UE**, per bit: PRR ``(p1, q1)``, IRR ``(p2, q2)`` = P[out 1 | PRR bit 1 / 0], composed
  ``p* = p1 p2 + (1-p1) q2``, ``q* = q1 p2 + (1-q1) q2``, epsilon
  ``ln(p*(1-q*) / (q*(1-p*)))``. ``sue`` is L-SUE (RAPPOR): SUE PRR, symmetric IRR with
  ``p2 = (P_t - q1) / (p1 - q1)``, ``P_t = e^(e1/2) / (e^(e1/2) + 1)``. ``oue`` is L-OSUE (the
  best UE chaining in Arcolezi et al.): OUE PRR (``p1 = 1/2``, ``q1 = 1/(e^ep + 1)``), symmetric
  IRR with ``p2 = (1 - q1 - Q_t) / (1 - 2 q1)``, ``Q_t = 1/(e^e1 + 1)``; then ``p* = 1/2`` and
  ``q* = Q_t``: one report is exactly OUE at ``e1``.
* **OLH**: the 32-bit seed and the PRR bucket ``GRR_g(h_seed(x))`` are memoized; the IRR is GRR
  over ``g`` buckets on the PRR bucket (LOLOHA-style, Arcolezi et al. EDBT 2023, but memoized per
  value). Same algebra as GRR with ``d -> g``; ``p* = P``, ``q* = 1/g``. The memoized seed
  repeats in every report of that value and so links those reports to each other; what they
  reveal together is still bounded by ``epsilon_perm``. ``auto`` never prefers OLH on a tie,
  and over d in [2, 512] and epsilon_1 in [0.1, 6] GRR or SS always beat it.
* **SS** (``k``-subsets): PRR includes x with ``p1 = k e^ep / (k e^ep + d - k)``. The IRR keeps
  the PRR subset with probability ``r``, else draws a fresh uniform k-subset. The mixture is
  again SS with inclusion ``P = r p1 + (1 - r) k / d``, so ``r = (P_t - k/d) / (p1 - k/d)``,
  ``P_t = k e^e1 / (k e^e1 + d - k)``; ``p* = P``, ``q* = (P (k-1) + (1-P) k) / (d-1)``.

In every case one report is exactly the base oracle at ``e1`` (up to rounding), so the wire form,
validation and support are the base oracle's at ``epsilon_1`` (its ``g`` and ``k`` are the
variance-optimal ones for one report). Given the PRR, reports are independent of the true value,
so any number of reports of one value reveal at most the PRR: ``epsilon_perm``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ldp.errors import ParameterError
from ldp.mechanisms import (
    GRR,
    OLH,
    OUE,
    SS,
    SUE,
    grr_draw,
    grr_draw_many,
    olh_hash,
    olh_hash_many,
    subset_draw,
    ue_draw,
    ue_draw_many,
    uniform_subset,
)
from ldp.sampling import SYSTEM, HmacSource, Prob, RandomSource, bernoulli, prob_down, prob_up

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ldp.estimate import FrequencyEstimate

__all__ = [
    "AUTO_CANDIDATES",
    "MECHANISM_NAMES",
    "FieldRandomizer",
    "LongitudinalOracle",
    "field_bytes",
    "longitudinal",
    "prr_label",
]

#: Base oracles a longitudinal oracle can be built on.
MECHANISM_NAMES = ("grr", "sue", "oue", "olh", "ss")
#: Candidates of ``mechanism="auto"``, in tie-break order (L-SUE never beats L-OSUE).
AUTO_CANDIDATES = ("grr", "oue", "olh", "ss")

_ONE = Prob(1 << 32)
_HALF = Prob(1 << 31)


class FieldRandomizer(Protocol):
    """What a schema field resolves to; the report builder and the analyzer use only this."""

    @property
    def mechanism(self) -> str: ...
    @property
    def d(self) -> int: ...
    @property
    def epsilon_perm(self) -> float: ...
    @property
    def epsilon_1(self) -> float: ...
    @property
    def p_star(self) -> float: ...
    @property
    def q_star(self) -> float: ...
    @property
    def memo_space(self) -> int: ...
    def privatize(
        self, value: Any, secret: bytes, field: str | bytes, rand: RandomSource = SYSTEM
    ) -> Any: ...
    def memo_keys(
        self, value: Any, field: str | bytes, secret: bytes | None = None
    ) -> tuple[bytes, ...]: ...
    def epoch_response(self, value: Any, secret: bytes, field: str | bytes, epoch: int) -> Any: ...
    def instantaneous(self, prr: Any, rand: RandomSource = SYSTEM) -> Any: ...
    def validate(self, wire: object) -> None: ...
    def encode_batch(self, wires: Sequence[object]) -> Any: ...
    def support(self, batch: Any) -> npt.NDArray[np.int64]: ...
    def estimate_from_support(
        self,
        support: npt.ArrayLike,
        n: int,
        consistency: str = "norm-sub",
        labels: tuple[str, ...] | None = None,
    ) -> FrequencyEstimate: ...
    def variance(self, n: int, f: float | None = None) -> float: ...
    def simulate(self, values: Any, rng: np.random.Generator) -> Any: ...


# --------------------------------------------------------------------------- labels


def field_bytes(field: str | bytes) -> bytes:
    """A field name as the bytes used in memo labels (UTF-8 for text)."""
    if isinstance(field, bytes):
        return field
    if isinstance(field, str):
        return field.encode("utf-8")
    raise ParameterError(f"field name ({field!r}) must be str or bytes")


def prr_label(field: str | bytes, value: int, epoch: int | None = None) -> bytes:
    """``b"prr/" + field + b"/" + decimal value``: the HMAC label of one value's PRR.

    The value is the last ``/``-separated component and contains only digits, so distinct
    (field, value) pairs never share a label. With an ``epoch`` (schema v2) the label is
    ``b"prr/" + field + b"/e" + epoch + b"/" + value``: one more component, so it never equals
    a v1 label, and each epoch draws afresh.
    """
    tail = str(value).encode("ascii")
    if epoch is not None:
        tail = b"e" + str(epoch).encode("ascii") + b"/" + tail
    return b"prr/" + field_bytes(field) + b"/" + tail


# --------------------------------------------------------------------------- checks and rounding


def _check_epsilons(epsilon_perm: float, epsilon_1: float) -> None:
    for name, eps in (("epsilon_perm", epsilon_perm), ("epsilon_1", epsilon_1)):
        if isinstance(eps, bool) or not isinstance(eps, int | float):
            raise ParameterError(f"{name} ({eps!r}) must be a number")
        if not (math.isfinite(eps) and 0 < eps <= 20):
            raise ParameterError(f"{name} ({eps}) must be > 0 and <= 20")
    if not epsilon_1 <= epsilon_perm:
        raise ParameterError(
            f"epsilon_1 ({epsilon_1}) must be <= epsilon_perm ({epsilon_perm}): one report can "
            "never cost more than all reports of the same value"
        )


def _check_value(x: object, d: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ParameterError(f"value index ({x!r}) must be an integer")
    if not 0 <= x < d:
        raise ParameterError(f"value index ({x}) must be in [0, {d})")
    return x


def _log(ratio: Fraction) -> float:
    return math.log(ratio.numerator) - math.log(ratio.denominator)


def _largest_ok(x: float | Fraction, ok: Callable[[Fraction], bool]) -> Prob:
    """The largest ``N / 2**32 <= x`` (clamped to [0, 1]) for which ``ok`` holds.

    ``x`` is the closed-form solution; rounding it down already satisfies ``ok`` except when
    float error in the closed form lands one step too high, hence the short walk down.
    """
    p = prob_down(min(max(Fraction(x), Fraction(0)), Fraction(1)))
    while not ok(p.value):
        if p.num == 0:  # pragma: no cover - ok(0) holds for every use below
            raise ParameterError("no probability satisfies the privacy constraint")
        p = Prob(p.num - 1)
    return p


def _smallest_ok(x: float | Fraction, ok: Callable[[Fraction], bool]) -> Prob:
    """The smallest ``N / 2**32 >= x`` (clamped to [0, 1]) for which ``ok`` holds."""
    p = prob_up(min(max(Fraction(x), Fraction(0)), Fraction(1)))
    while not ok(p.value):
        if p.num == 1 << 32:  # pragma: no cover - ok(1) holds for every use below
            raise ParameterError("no probability satisfies the privacy constraint")
        p = Prob(p.num + 1)
    return p


def _grr_ratio(keep: Fraction, m: int) -> Fraction:
    """P[y = x] / P[y = x'] of GRR over ``m`` values keeping with probability ``keep``."""
    return keep * (m - 1) / (1 - keep)


def _ue_ratio(p: Fraction, q: Fraction) -> Fraction:
    return p * (1 - q) / (q * (1 - p))


def _ss_ratio(include: Fraction, d: int, k: int) -> Fraction:
    return include * (d - k) / ((1 - include) * k)


# --------------------------------------------------------------------------- oracles


@dataclass(frozen=True)
class LongitudinalOracle:
    """A base frequency oracle made longitudinal: memoized PRR, then a fresh IRR per report.

    Build with :func:`longitudinal`. ``epsilon_perm`` / ``epsilon_1`` are the *achieved*
    epsilons of the rounded probabilities; the requested ones are kept for display.
    """

    mechanism: ClassVar[str]
    d: int
    requested_epsilon_perm: float
    requested_epsilon_1: float
    #: The base oracle at ``epsilon_1``: wire form, validation and support are its own.
    base: GRR | SUE | OUE | OLH | SS = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_epsilons(self.requested_epsilon_perm, self.requested_epsilon_1)
        if isinstance(self.d, bool) or not isinstance(self.d, int) or self.d < 2:
            raise ParameterError(f"domain size d ({self.d!r}) must be an integer >= 2")
        object.__setattr__(self, "base", self._make_base())
        self._solve()

    # -- subclass hooks -------------------------------------------------------------------------

    def _make_base(self) -> GRR | SUE | OUE | OLH | SS:
        raise NotImplementedError  # pragma: no cover

    def _solve(self) -> None:
        raise NotImplementedError  # pragma: no cover

    @property
    def epsilon_perm(self) -> float:
        """Achieved epsilon of the PRR: what all reports of one value can ever reveal."""
        raise NotImplementedError  # pragma: no cover

    @property
    def epsilon_1(self) -> float:
        """Achieved epsilon of one report (PRR then IRR)."""
        raise NotImplementedError  # pragma: no cover

    @property
    def p_star(self) -> float:
        """P[a report supports v | true value v] of the composed channel."""
        raise NotImplementedError  # pragma: no cover

    @property
    def q_star(self) -> float:
        """P[a report supports v | true value is not v] of the composed channel."""
        raise NotImplementedError  # pragma: no cover

    def permanent(self, x: int, rand: RandomSource) -> Any:
        """The PRR of ``x`` drawn from ``rand`` (an HmacSource on the client), in wire form."""
        raise NotImplementedError  # pragma: no cover

    def instantaneous(self, prr: Any, rand: RandomSource = SYSTEM) -> Any:
        """One IRR on top of a PRR (wire form in, wire form out)."""
        raise NotImplementedError  # pragma: no cover

    def prr_probability(self, prr: Any, x: int) -> Fraction:
        """Exact P[PRR = prr | x] (for OLH: given the PRR's seed)."""
        raise NotImplementedError  # pragma: no cover

    def irr_probability(self, wire: Any, prr: Any) -> Fraction:
        """Exact P[report = wire | PRR = prr]."""
        raise NotImplementedError  # pragma: no cover

    def output_probability(self, wire: Any, x: int) -> Fraction:
        """Exact P[report = wire | x] of the composed channel (for OLH: given the seed)."""
        raise NotImplementedError  # pragma: no cover

    def simulate_prr(self, values: npt.ArrayLike, rng: np.random.Generator) -> Any:
        """numpy path: one PRR per user, batch form."""
        raise NotImplementedError  # pragma: no cover

    def simulate_irr(self, prr_batch: Any, rng: np.random.Generator) -> Any:
        """numpy path: one fresh IRR per row of a PRR batch, batch form."""
        raise NotImplementedError  # pragma: no cover

    # -- shared surface -------------------------------------------------------------------------

    @property
    def memo_space(self) -> int:
        """How many distinct PRRs one user can ever draw for this field: one per value."""
        return self.d

    def memo_keys(
        self, value: int, field: str | bytes, secret: bytes | None = None
    ) -> tuple[bytes, ...]:
        """The label of the PRR this value uses (the ledger stores only its HMAC digest)."""
        return (prr_label(field, _check_value(value, self.d)),)

    def permanent_response(self, value: int, secret: bytes, field: str | bytes) -> Any:
        """The memoized PRR of ``value``: recomputed from the secret, never stored or sent."""
        x = _check_value(value, self.d)
        return self.permanent(x, HmacSource(secret, prr_label(field, x)))

    def epoch_response(self, value: int, secret: bytes, field: str | bytes, epoch: int) -> Any:
        """The PRR of ``value`` for one epoch (schema v2): drawn from the secret, field, epoch
        and value, so that every process computes the same one; frozen by ``ldp.epochs``."""
        x = _check_value(value, self.d)
        return self.permanent(x, HmacSource(secret, prr_label(field, x, epoch)))

    def privatize(
        self, value: int, secret: bytes, field: str | bytes, rand: RandomSource = SYSTEM
    ) -> Any:
        """One report of ``value``: its memoized PRR, then a fresh IRR from ``rand``."""
        return self.instantaneous(self.permanent_response(value, secret, field), rand)

    def validate(self, wire: object) -> None:
        """Raise a ``DecodeError`` subclass unless ``wire`` is a legal report."""
        self.base.validate(wire)

    def encode_batch(self, wires: Sequence[object]) -> Any:
        """Wire values to the batch form, validating every one."""
        return self.base.encode_batch(wires)

    def support(self, batch: Any) -> npt.NDArray[np.int64]:
        """How many reports support each of the ``d`` values."""
        return self.base.support(batch)

    def variance(self, n: int, f: float | None = None) -> float:
        """Variance of one value's frequency estimate from ``n`` reports (Wang et al. 2017).

        ``(q*(1 - q*) / (p* - q*)^2 + f (1 - p* - q*) / (p* - q*)) / n``, in pure Python so that
        ``auto`` can compare oracles on the client without importing numpy.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ParameterError(f"number of reports n ({n!r}) must be an integer >= 1")
        p, q = self.p_star, self.q_star
        gap = p - q
        freq = 0.0 if f is None else float(f)
        return (q * (1 - q) / gap**2 + freq * (1 - p - q) / gap) / n

    def estimate_from_support(
        self,
        support: npt.ArrayLike,
        n: int,
        consistency: str = "norm-sub",
        labels: tuple[str, ...] | None = None,
    ) -> FrequencyEstimate:
        """Debias summed support counts of ``n`` reports with the composed channel's p*, q*."""
        from ldp.estimate import estimate_frequencies

        return estimate_frequencies(support, n, self.p_star, self.q_star, consistency, labels)

    def estimate(self, batch: Any, consistency: str = "norm-sub") -> FrequencyEstimate:
        """Frequencies with standard errors from a batch of reports."""
        return self.estimate_from_support(self.support(batch), len(batch), consistency)

    def simulate(self, values: npt.ArrayLike, rng: np.random.Generator) -> Any:
        """numpy path: one report per user through the composed channel, batch form."""
        return self.simulate_irr(self.simulate_prr(values, rng), rng)

    def simulate_periods(
        self, values: npt.ArrayLike, periods: int, rng: np.random.Generator
    ) -> list[Any]:
        """numpy path: ``periods`` reports per user sharing one PRR per user (values fixed)."""
        if periods < 1:
            raise ParameterError(f"periods ({periods}) must be >= 1")
        prr = self.simulate_prr(values, rng)
        return [self.simulate_irr(prr, rng) for _ in range(periods)]

    def _indices(self, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
        import numpy as np

        x = np.asarray(values, dtype=np.int64).ravel()
        if x.size and (x.min() < 0 or x.max() >= self.d):
            raise ParameterError(f"value indices must be in [0, {self.d})")
        return x


class _GrrLike(LongitudinalOracle):
    """Shared algebra of a GRR PRR and a GRR IRR over ``m`` symbols (GRR: m = d; OLH: m = g)."""

    _p1: Prob
    _p2: Prob

    @property
    def _m(self) -> int:
        raise NotImplementedError  # pragma: no cover

    def _solve(self) -> None:
        m = self._m
        ep, e1 = self.requested_epsilon_perm, self.requested_epsilon_1
        big = math.exp(ep)
        p1 = _largest_ok(big / (big + m - 1), lambda k: _log(_grr_ratio(k, m)) <= ep)
        q1 = (1 - p1.value) / (m - 1)
        small = math.exp(e1)
        target = Fraction(small / (small + m - 1))
        p2 = _largest_ok(
            (target - q1) / (p1.value - q1),
            lambda k: _log(_grr_ratio(q1 + k * (p1.value - q1), m)) <= e1,
        )
        object.__setattr__(self, "_p1", p1)
        object.__setattr__(self, "_p2", p2)

    @property
    def prr_keep(self) -> Prob:
        """P[PRR symbol = true symbol], exact."""
        return self._p1

    @property
    def irr_keep(self) -> Prob:
        """P[reported symbol = PRR symbol], exact."""
        return self._p2

    @property
    def _composed_keep(self) -> Fraction:
        p1, p2 = self._p1.value, self._p2.value
        q1 = (1 - p1) / (self._m - 1)
        return q1 + p2 * (p1 - q1)

    @property
    def epsilon_perm(self) -> float:
        return _log(_grr_ratio(self._p1.value, self._m))

    @property
    def epsilon_1(self) -> float:
        return _log(_grr_ratio(self._composed_keep, self._m))

    def _grr_prob(self, y: int, x: int, keep: Prob) -> Fraction:
        k = keep.value
        return k if y == x else (1 - k) / (self._m - 1)


@dataclass(frozen=True)
class _LGRR(_GrrLike):
    """L-GRR: GRR PRR, GRR IRR on the PRR value; one report is GRR at ``epsilon_1``."""

    mechanism: ClassVar[str] = "grr"
    base: GRR = field(init=False, repr=False)

    def _make_base(self) -> GRR:
        return GRR(self.requested_epsilon_1, self.d)

    @property
    def _m(self) -> int:
        return self.d

    @property
    def p_star(self) -> float:
        return float(self._composed_keep)

    @property
    def q_star(self) -> float:
        return float((1 - self._composed_keep) / (self.d - 1))

    def permanent(self, x: int, rand: RandomSource) -> int:
        return grr_draw(x, self.d, self._p1, rand)

    def instantaneous(self, prr: int, rand: RandomSource = SYSTEM) -> int:
        return grr_draw(prr, self.d, self._p2, rand)

    def prr_probability(self, prr: int, x: int) -> Fraction:
        return self._grr_prob(prr, x, self._p1)

    def irr_probability(self, wire: int, prr: int) -> Fraction:
        return self._grr_prob(wire, prr, self._p2)

    def output_probability(self, wire: int, x: int) -> Fraction:
        k = self._composed_keep
        return k if wire == x else (1 - k) / (self.d - 1)

    def simulate_prr(self, values: npt.ArrayLike, rng: np.random.Generator) -> Any:
        return grr_draw_many(self._indices(values), self.d, float(self._p1), rng)

    def simulate_irr(self, prr_batch: Any, rng: np.random.Generator) -> Any:
        return grr_draw_many(prr_batch, self.d, float(self._p2), rng)


@dataclass(frozen=True)
class _LOLH(_GrrLike):
    """L-OLH: memoized ``[seed, GRR_g(h_seed(x))]``, then GRR over g on the bucket."""

    mechanism: ClassVar[str] = "olh"
    base: OLH = field(init=False, repr=False)

    def _make_base(self) -> OLH:
        return OLH(self.requested_epsilon_1, self.d)

    @property
    def g(self) -> int:
        """Number of hash buckets (the base OLH's choice at ``epsilon_1``)."""
        return self.base.g

    @property
    def _m(self) -> int:
        return self.base.g

    @property
    def p_star(self) -> float:
        return float(self._composed_keep)

    @property
    def q_star(self) -> float:
        return 1.0 / self.base.g

    def permanent(self, x: int, rand: RandomSource) -> list[int]:
        seed = rand.word()
        return [seed, grr_draw(olh_hash(seed, x, self.g), self.g, self._p1, rand)]

    def instantaneous(self, prr: list[int], rand: RandomSource = SYSTEM) -> list[int]:
        seed, bucket = prr
        return [seed, grr_draw(bucket, self.g, self._p2, rand)]

    def prr_probability(self, prr: list[int], x: int) -> Fraction:
        seed, bucket = prr
        return self._grr_prob(bucket, olh_hash(seed, x, self.g), self._p1)

    def irr_probability(self, wire: list[int], prr: list[int]) -> Fraction:
        if wire[0] != prr[0]:
            return Fraction(0)
        return self._grr_prob(wire[1], prr[1], self._p2)

    def output_probability(self, wire: list[int], x: int) -> Fraction:
        seed, bucket = wire
        k = self._composed_keep
        return k if bucket == olh_hash(seed, x, self.g) else (1 - k) / (self.g - 1)

    def simulate_prr(self, values: npt.ArrayLike, rng: np.random.Generator) -> Any:
        import numpy as np

        from ldp.mechanisms import OLH_SEEDS

        x = self._indices(values)
        seeds = rng.integers(0, OLH_SEEDS, size=x.shape[0], dtype=np.int64)
        buckets = grr_draw_many(olh_hash_many(seeds, x, self.g), self.g, float(self._p1), rng)
        return np.stack([seeds, buckets], axis=1)

    def simulate_irr(self, prr_batch: Any, rng: np.random.Generator) -> Any:
        import numpy as np

        rows = np.asarray(prr_batch, dtype=np.int64).reshape(-1, 2)
        buckets = grr_draw_many(rows[:, 1], self.g, float(self._p2), rng)
        return np.stack([rows[:, 0], buckets], axis=1)


@dataclass(frozen=True)
class _LUE(LongitudinalOracle):
    """Unary encoding with per-bit PRR ``(p1, q1)`` and per-bit IRR ``(p2, q2)``."""

    base: SUE | OUE = field(init=False, repr=False)
    _p1: Prob = field(init=False, repr=False)
    _q1: Prob = field(init=False, repr=False)
    _p2: Prob = field(init=False, repr=False)
    _q2: Prob = field(init=False, repr=False)

    @property
    def prr_bits(self) -> tuple[Prob, Prob]:
        """(P[PRR bit 1 | true bit 1], P[PRR bit 1 | true bit 0]), exact."""
        return self._p1, self._q1

    @property
    def irr_bits(self) -> tuple[Prob, Prob]:
        """(P[report bit 1 | PRR bit 1], P[report bit 1 | PRR bit 0]), exact."""
        return self._p2, self._q2

    @property
    def _composed(self) -> tuple[Fraction, Fraction]:
        p1, q1, p2, q2 = (v.value for v in (self._p1, self._q1, self._p2, self._q2))
        return p1 * p2 + (1 - p1) * q2, q1 * p2 + (1 - q1) * q2

    @property
    def epsilon_perm(self) -> float:
        return _log(_ue_ratio(self._p1.value, self._q1.value))

    @property
    def epsilon_1(self) -> float:
        return _log(_ue_ratio(*self._composed))

    @property
    def p_star(self) -> float:
        return float(self._composed[0])

    @property
    def q_star(self) -> float:
        return float(self._composed[1])

    def permanent(self, x: int, rand: RandomSource) -> int:
        return ue_draw(1 << x, self.d, self._p1, self._q1, rand)

    def instantaneous(self, prr: int, rand: RandomSource = SYSTEM) -> int:
        return ue_draw(prr, self.d, self._p2, self._q2, rand)

    @staticmethod
    def _bits_prob(out: int, bits: int, d: int, p: Fraction, q: Fraction) -> Fraction:
        prob = Fraction(1)
        for i in range(d):
            one = p if (bits >> i) & 1 else q
            prob *= one if (out >> i) & 1 else 1 - one
        return prob

    def prr_probability(self, prr: int, x: int) -> Fraction:
        return self._bits_prob(prr, 1 << x, self.d, self._p1.value, self._q1.value)

    def irr_probability(self, wire: int, prr: int) -> Fraction:
        return self._bits_prob(wire, prr, self.d, self._p2.value, self._q2.value)

    def output_probability(self, wire: int, x: int) -> Fraction:
        return self._bits_prob(wire, 1 << x, self.d, *self._composed)

    def simulate_prr(self, values: npt.ArrayLike, rng: np.random.Generator) -> Any:
        import numpy as np

        x = self._indices(values)
        ones = np.zeros((x.shape[0], self.d), dtype=bool)
        ones[np.arange(x.shape[0]), x] = True
        bits = ue_draw_many(ones, float(self._p1), float(self._q1), rng)
        return np.packbits(bits, axis=1, bitorder="little")

    def simulate_irr(self, prr_batch: Any, rng: np.random.Generator) -> Any:
        import numpy as np

        packed = np.asarray(prr_batch, dtype=np.uint8)
        ones = np.unpackbits(packed, axis=1, count=self.d, bitorder="little").astype(bool)
        bits = ue_draw_many(ones, float(self._p2), float(self._q2), rng)
        return np.packbits(bits, axis=1, bitorder="little")


@dataclass(frozen=True)
class _LSUE(_LUE):
    """L-SUE (RAPPOR): SUE PRR at ``epsilon_perm``, symmetric IRR; one report is SUE at e1."""

    mechanism: ClassVar[str] = "sue"
    base: SUE = field(init=False, repr=False)

    def _make_base(self) -> SUE:
        return SUE(self.requested_epsilon_1, self.d)

    def _solve(self) -> None:
        ep, e1 = self.requested_epsilon_perm, self.requested_epsilon_1
        h = math.exp(ep / 2)
        p1 = _largest_ok(h / (h + 1), lambda p: _log(_ue_ratio(p, 1 - p)) <= ep)
        q1 = Prob((1 << 32) - p1.num)
        h1 = math.exp(e1 / 2)
        target = Fraction(h1 / (h1 + 1))
        lo = q1.value

        def ok(p2: Fraction) -> bool:
            star = p1.value * p2 + lo * (1 - p2)
            return _log(_ue_ratio(star, 1 - star)) <= e1

        p2 = _largest_ok((target - lo) / (p1.value - lo), ok)
        for name, value in (
            ("_p1", p1),
            ("_q1", q1),
            ("_p2", p2),
            ("_q2", Prob(_ONE.num - p2.num)),
        ):
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class _LOSUE(_LUE):
    """L-OSUE: OUE PRR at ``epsilon_perm``, symmetric IRR; one report is OUE at ``epsilon_1``."""

    mechanism: ClassVar[str] = "oue"
    base: OUE = field(init=False, repr=False)

    def _make_base(self) -> OUE:
        return OUE(self.requested_epsilon_1, self.d)

    def _solve(self) -> None:
        ep, e1 = self.requested_epsilon_perm, self.requested_epsilon_1
        half = _HALF.value
        q1 = _smallest_ok(1 / (math.exp(ep) + 1), lambda q: _log(_ue_ratio(half, q)) <= ep)
        target = Fraction(1 / (math.exp(e1) + 1))
        lo = q1.value

        def ok(p2: Fraction) -> bool:
            star = lo * p2 + (1 - lo) * (1 - p2)
            return _log(_ue_ratio(half, star)) <= e1

        p2 = _largest_ok((1 - lo - target) / (1 - 2 * lo), ok)
        for name, value in (
            ("_p1", _HALF),
            ("_q1", q1),
            ("_p2", p2),
            ("_q2", Prob(_ONE.num - p2.num)),
        ):
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class _LSS(LongitudinalOracle):
    """L-SS: SS PRR at ``epsilon_perm``; the IRR keeps it with probability r, else redraws."""

    mechanism: ClassVar[str] = "ss"
    base: SS = field(init=False, repr=False)
    _p1: Prob = field(init=False, repr=False)
    _r: Prob = field(init=False, repr=False)

    def _make_base(self) -> SS:
        return SS(self.requested_epsilon_1, self.d)

    @property
    def k(self) -> int:
        """Subset size (the base SS's variance-optimal choice at ``epsilon_1``)."""
        return self.base.k

    def _solve(self) -> None:
        d, k = self.d, self.base.k
        ep, e1 = self.requested_epsilon_perm, self.requested_epsilon_1
        big = math.exp(ep)
        p1 = _largest_ok(k * big / (k * big + d - k), lambda p: _log(_ss_ratio(p, d, k)) <= ep)
        uniform = Fraction(k, d)
        small = math.exp(e1)
        target = Fraction(k * small / (k * small + d - k))
        r = _largest_ok(
            (target - uniform) / (p1.value - uniform),
            lambda r: _log(_ss_ratio(r * p1.value + (1 - r) * uniform, d, k)) <= e1,
        )
        object.__setattr__(self, "_p1", p1)
        object.__setattr__(self, "_r", r)

    @property
    def prr_include(self) -> Prob:
        """P[true value in the PRR subset], exact."""
        return self._p1

    @property
    def irr_keep(self) -> Prob:
        """P[the report is the PRR subset itself rather than a fresh uniform one], exact."""
        return self._r

    @property
    def _include(self) -> Fraction:
        r = self._r.value
        return r * self._p1.value + (1 - r) * Fraction(self.k, self.d)

    @property
    def epsilon_perm(self) -> float:
        return _log(_ss_ratio(self._p1.value, self.d, self.k))

    @property
    def epsilon_1(self) -> float:
        return _log(_ss_ratio(self._include, self.d, self.k))

    @property
    def p_star(self) -> float:
        return float(self._include)

    @property
    def q_star(self) -> float:
        inc = self._include
        return float((inc * (self.k - 1) + (1 - inc) * self.k) / (self.d - 1))

    def permanent(self, x: int, rand: RandomSource) -> list[int]:
        return subset_draw(x, self.d, self.k, self._p1, rand)

    def instantaneous(self, prr: list[int], rand: RandomSource = SYSTEM) -> list[int]:
        if bernoulli(self._r, rand):
            return list(prr)
        return uniform_subset(self.d, self.k, rand)

    def _ss_prob(self, subset: Sequence[int], x: int, include: Fraction) -> Fraction:
        d, k = self.d, self.k
        if x in subset:
            return include / math.comb(d - 1, k - 1)
        return (1 - include) / math.comb(d - 1, k)

    def prr_probability(self, prr: list[int], x: int) -> Fraction:
        return self._ss_prob(prr, x, self._p1.value)

    def irr_probability(self, wire: list[int], prr: list[int]) -> Fraction:
        r = self._r.value
        fresh = (1 - r) / math.comb(self.d, self.k)
        return fresh + (r if list(wire) == list(prr) else 0)

    def output_probability(self, wire: list[int], x: int) -> Fraction:
        return self._ss_prob(wire, x, self._include)

    def _subsets_with(
        self, x: npt.NDArray[np.int64], include: float, rng: np.random.Generator
    ) -> npt.NDArray[np.int64]:
        import numpy as np

        keys = rng.random((x.shape[0], self.d))
        inside = rng.random(x.shape[0]) < include
        # -1 forces x into the k smallest keys, 2 keeps it out; the others stay uniform.
        keys[np.arange(x.shape[0]), x] = np.where(inside, -1.0, 2.0)
        part = np.argpartition(keys, self.k - 1, axis=1)[:, : self.k]
        return np.sort(part, axis=1).astype(np.int64)

    def simulate_prr(self, values: npt.ArrayLike, rng: np.random.Generator) -> Any:
        return self._subsets_with(self._indices(values), float(self._p1), rng)

    def simulate_irr(self, prr_batch: Any, rng: np.random.Generator) -> Any:
        import numpy as np

        prr = np.asarray(prr_batch, dtype=np.int64).reshape(-1, self.k)
        n = prr.shape[0]
        fresh = np.sort(
            np.argpartition(rng.random((n, self.d)), self.k - 1, axis=1)[:, : self.k], axis=1
        )
        keep = rng.random(n) < float(self._r)
        return np.where(keep[:, None], prr, fresh).astype(np.int64)


_CLASSES: dict[str, type[LongitudinalOracle]] = {
    "grr": _LGRR,
    "sue": _LSUE,
    "oue": _LOSUE,
    "olh": _LOLH,
    "ss": _LSS,
}


def longitudinal(
    mechanism: str, d: int, epsilon_perm: float, epsilon_1: float
) -> LongitudinalOracle:
    """A longitudinal oracle over ``d`` values: memoized PRR at ``epsilon_perm``, IRR at e1.

    ``mechanism`` is one of ``grr``, ``sue`` (L-SUE, RAPPOR), ``oue`` (L-OSUE), ``olh``, ``ss``,
    or ``auto``: the candidate of :data:`AUTO_CANDIDATES` with the smallest composed variance at
    f = 0 (ties broken in that order). Requires ``0 < epsilon_1 <= epsilon_perm``; equal
    epsilons make the IRR the identity (schema v2's frozen epochs).
    """
    if mechanism == "auto":
        _check_epsilons(epsilon_perm, epsilon_1)
        best: LongitudinalOracle | None = None
        for name in AUTO_CANDIDATES:
            oracle = _CLASSES[name](d, epsilon_perm, epsilon_1)
            if best is None or oracle.variance(1) < best.variance(1):
                best = oracle
        assert best is not None
        return best
    try:
        cls = _CLASSES[mechanism]
    except KeyError:
        allowed = [*MECHANISM_NAMES, "auto"]
        raise ParameterError(f"mechanism ({mechanism!r}) must be one of {allowed}") from None
    return cls(d, epsilon_perm, epsilon_1)
