"""Adapters that drive the peer libraries (pure-ldp 1.2, multi-freq-ldpy 0.2.5) for the benchmark.

Each adapter wraps one peer mechanism and offers: the peer's own client (one report per call, as
shipped), its own server path (what ``bench/oracles.py`` times), its own estimators and
post-processing options applied to support counts (what the MSE runs score), and an exact
vectorized sampler of the same channel (a "twin") so that 20+ seeds per grid point stay
affordable. ``verify`` proves, on real client output, that the counts-based path reproduces the
peer's own server path. Benchmark-only code: nothing in ``ldp``, ``cli`` or ``server_agg`` may
import it, and it must never be used to randomize real data (the peers use non-CSPRNG noise).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
#: An estimator maps (channel summary, n) to a frequency vector.
Estimator = Callable[[Any, int], FloatArray]

#: pure-ldp's ``estimate_all(normalization=...)`` options, by name.
PURE_NORMALIZATIONS = {"none": 0, "additive": 1, "simplex": 2, "threshold-cut": 3}
#: multi-freq-ldpy's IBU defaults (``*_Aggregator_IBU`` keyword defaults).
IBU_ITER, IBU_TOL, IBU_ERR = 10_000, 1e-12, "max_abs"


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the peers' own warnings (small-n notices, numba, deprecated randint floats)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def _identity(x: int) -> int:
    return x


# --------------------------------------------------------------------------- library loading


def load_pure_ldp() -> dict[str, types.ModuleType]:
    """Import pure-ldp's oracles without running ``pure_ldp.frequency_oracles/__init__``.

    That ``__init__`` imports the RAPPOR server, which needs scikit-learn and statsmodels (not
    declared by pure-ldp 1.2.0 and not used here). The subpackages themselves import cleanly, so
    we register a bare package object with the right search path and import them directly.
    """
    name = "pure_ldp.frequency_oracles"
    if name not in sys.modules:
        import pure_ldp  # noqa: F401  (the parent package must be importable first)

        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:  # pragma: no cover
            raise ImportError("pure-ldp is not installed (pip install 'pure-ldp>=1.2')")
        pkg = types.ModuleType(name)
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__package__ = name
        sys.modules[name] = pkg
    subs = ("direct_encoding", "unary_encoding", "local_hashing", "histogram_encoding")
    mods = {s: importlib.import_module(f"{name}.{s}") for s in subs}
    mods["hadamard_response"] = importlib.import_module(f"{name}.hadamard_response")
    return mods


def _mfl(module: str) -> types.ModuleType:
    return importlib.import_module(f"multi_freq_ldpy.pure_frequency_oracles.{module}")


def _mfl_estimators() -> types.ModuleType:
    return importlib.import_module("multi_freq_ldpy.estimators.Histogram_estimator")


# --------------------------------------------------------------------------- xxh32 (numpy)

_M32 = 0xFFFFFFFF
_P1, _P2, _P3, _P4, _P5 = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1


def _rotl(x: npt.NDArray[np.uint32], r: int) -> npt.NDArray[np.uint32]:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def xxh32_str(seeds: npt.NDArray[np.uint32], value: int) -> npt.NDArray[np.uint32]:
    """``xxhash.xxh32(str(value), seed=s).intdigest()`` for every seed, vectorized.

    Both peers hash an item as ``xxh32(str(v), seed) % g`` with 64-bit seeds, of which xxh32
    keeps the low 32 bits; pass those. Only inputs shorter than 16 bytes (XXH32's short path).
    """
    data = str(value).encode()
    if len(data) >= 16:
        raise ValueError(f"item {value} is too long for the short-input xxh32 path")
    h = seeds + np.uint32((_P5 + len(data)) & _M32)
    i = 0
    while i + 4 <= len(data):
        word = int.from_bytes(data[i : i + 4], "little")
        h = _rotl(h + np.uint32(word * _P3 & _M32), 17) * np.uint32(_P4)
        i += 4
    for byte in data[i:]:
        h = _rotl(h + np.uint32(byte * _P5 & _M32), 11) * np.uint32(_P1)
    h ^= h >> np.uint32(15)
    h *= np.uint32(_P2)
    h ^= h >> np.uint32(13)
    h *= np.uint32(_P3)
    h ^= h >> np.uint32(16)
    return h


def xxh32_support(seeds: npt.ArrayLike, buckets: npt.ArrayLike, d: int, g: int) -> FloatArray:
    """Per-item count of local-hashing reports ``(bucket, seed)`` whose bucket the item hashes to.

    Exactly what the peers' aggregators count in their ``n x d`` Python loops.
    """
    s = (np.asarray(seeds, dtype=np.uint64) & np.uint64(_M32)).astype(np.uint32)
    y = np.asarray(buckets, dtype=np.uint32)
    gg = np.uint32(g)
    out = np.empty(d, dtype=np.float64)
    for v in range(d):
        out[v] = np.count_nonzero(xxh32_str(s, v) % gg == y)
    return out


# --------------------------------------------------------------------------- twins


def twin_grr(counts: IntArray, p: float, rng: np.random.Generator) -> FloatArray:
    """Support counts of k-ary randomized response, sampled exactly from the true counts.

    Each of the c_v users of value v keeps it with probability p, else reports one of the other
    d - 1 values uniformly: a binomial then a multinomial per value.
    """
    d = counts.size
    kept = rng.binomial(counts, p)
    moved = rng.multinomial(counts - kept, np.full(d - 1, 1.0 / (d - 1)))
    cols = np.arange(d - 1)[None, :]
    cols = cols + (cols >= np.arange(d)[:, None])
    full = np.zeros((d, d), dtype=np.int64)
    np.put_along_axis(full, cols, moved, axis=1)
    out: FloatArray = (full.sum(axis=0) + kept).astype(np.float64)
    return out


def twin_bits(counts: IntArray, p: float, q: float, rng: np.random.Generator) -> FloatArray:
    """Support counts when each item's bit is set independently: p if true, q otherwise (exact)."""
    n = int(counts.sum())
    return (rng.binomial(counts, p) + rng.binomial(n - counts, q)).astype(np.float64)


def twin_laplace_sum(counts: IntArray, scale: float, rng: np.random.Generator) -> FloatArray:
    """Per-item sums of one-hot vectors plus Laplace(scale) noise, exact.

    A sum of n Laplace(b) variables is Gamma(n, b) - Gamma(n, b).
    """
    n = int(counts.sum())
    d = counts.size
    return counts + rng.gamma(n, scale, d) - rng.gamma(n, scale, d)


def _true_values(counts: IntArray) -> IntArray:
    return np.repeat(np.arange(counts.size, dtype=np.int64), counts)


def twin_lh(counts: IntArray, g: int, p: float, rng: np.random.Generator) -> FloatArray:
    """Support counts of the peers' local hashing (xxh32 of ``str(v)``), report by report."""
    xs = _true_values(counts)
    seeds = rng.integers(0, 1 << 32, size=xs.size, dtype=np.uint64).astype(np.uint32)
    truth = np.empty(xs.size, dtype=np.int64)
    start = 0
    for v, c in enumerate(counts.tolist()):
        truth[start : start + c] = xxh32_str(seeds[start : start + c], v) % np.uint32(g)
        start += c
    other = rng.integers(0, g - 1, size=xs.size)
    other += other >= truth
    buckets = np.where(rng.random(xs.size) < p, truth, other)
    return xxh32_support(seeds, buckets, counts.size, g)


def twin_ss(counts: IntArray, k: int, p: float, rng: np.random.Generator) -> FloatArray:
    """Support counts of subset selection: with probability p the true value plus k - 1 uniform
    others, else k uniform others (random keys, k smallest)."""
    d = counts.size
    xs = _true_values(counts)
    out = np.zeros(d, dtype=np.float64)
    step = max(1, (1 << 22) // d)
    for start in range(0, xs.size, step):
        xc = xs[start : start + step]
        keys = rng.random((xc.size, d))
        keys[np.arange(xc.size), xc] = np.where(rng.random(xc.size) < p, -1.0, 2.0)
        chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
        out += np.bincount(chosen.ravel(), minlength=d)
    return out


# --------------------------------------------------------------------------- adapters


class Peer:
    """One mechanism of one peer library at one ``(epsilon, d)``.

    ``family`` is the mechanism family it is timed in (``grr``, ``ue``, ``olh``, ``ss``) or None
    if it only takes part in the MSE comparison. ``p_star``/``q_star`` describe its channel
    (P[a report supports v] when the true value is / is not v) when it has that form.
    """

    library: str = ""
    mechanism: str = ""
    family: str | None = None
    timed_config: str = ""
    p_star: float | None = None
    q_star: float | None = None

    def __init__(self, epsilon: float, d: int) -> None:
        self.epsilon = float(epsilon)
        self.d = int(d)

    @property
    def label(self) -> str:
        """Short name, e.g. ``pure-ldp OUE``."""
        return f"{self.library} {self.mechanism.upper()}"

    def client(self, xs: Sequence[int]) -> list[Any]:
        """The peer's own client, once per report (untimed; noise from the peer's own RNG)."""
        raise NotImplementedError

    def aggregate(self, reports: Sequence[Any], config: str | None = None) -> FloatArray:
        """The peer's own server path from reports to frequencies (what the benchmark times)."""
        raise NotImplementedError

    def support(self, reports: Sequence[Any]) -> Any:
        """The channel summary of own-client reports (support counts), vectorized."""
        raise NotImplementedError

    def channel(self) -> Hashable:
        """Key of the channel this peer's twin samples; equal keys share twin draws."""
        raise NotImplementedError

    def expected(self, counts: IntArray) -> tuple[FloatArray, FloatArray]:
        """Mean and variance of each entry of the channel summary, given the true counts.

        Each report supports item v independently with p* (true value v) or q* (otherwise).
        """
        if self.p_star is None or self.q_star is None:  # pragma: no cover - overridden
            raise NotImplementedError
        c = np.asarray(counts, dtype=np.float64)
        m = c.sum()
        p, q = self.p_star, self.q_star
        return c * p + (m - c) * q, c * p * (1 - p) + (m - c) * q * (1 - q)

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> Any:
        """A channel summary for data with these true counts, from the exact twin."""
        raise NotImplementedError

    def estimators(self) -> dict[str, Estimator]:
        """The peer's estimators / post-processing options, applied to a channel summary."""
        raise NotImplementedError


# pure-ldp ------------------------------------------------------------------------------------


class _Pure(Peer):
    """pure-ldp: a client object, a server object fed report by report, ``estimate_all``."""

    library = "pure-ldp"
    timed_config = "simplex"

    def _client_obj(self) -> Any:
        raise NotImplementedError

    def _server(self) -> Any:
        raise NotImplementedError

    def client(self, xs: Sequence[int]) -> list[Any]:
        privatise = self._client_obj().privatise
        with quiet():
            return [privatise(int(x)) for x in xs]

    def _estimate_all(self, server: Any, n: int, config: str) -> FloatArray:
        est = server.estimate_all(
            range(self.d), suppress_warnings=True, normalization=PURE_NORMALIZATIONS[config]
        )
        return np.asarray(est, dtype=np.float64) / n

    def aggregate(self, reports: Sequence[Any], config: str | None = None) -> FloatArray:
        with quiet():
            server = self._server()
            server.aggregate_all(reports)
            return self._estimate_all(server, len(reports), config or self.timed_config)

    def _from_support(self, support: FloatArray, n: int, config: str) -> FloatArray:
        with quiet():
            server = self._server()
            server.aggregated_data = np.array(support, dtype=np.float64)
            server.n = n
            return self._estimate_all(server, n, config)

    def estimators(self) -> dict[str, Estimator]:
        def make(cfg: str) -> Estimator:
            return lambda s, n: self._from_support(s, n, cfg)

        return {cfg: make(cfg) for cfg in PURE_NORMALIZATIONS}


class PureDE(_Pure):
    """pure-ldp direct encoding (GRR)."""

    mechanism, family = "grr", "grr"

    def __init__(self, epsilon: float, d: int) -> None:
        super().__init__(epsilon, d)
        e = math.exp(self.epsilon)
        self.p_star = e / (e + d - 1)
        self.q_star = 1 / (e + d - 1)

    def _client_obj(self) -> Any:
        return load_pure_ldp()["direct_encoding"].DEClient(self.epsilon, self.d, _identity)

    def _server(self) -> Any:
        return load_pure_ldp()["direct_encoding"].DEServer(self.epsilon, self.d, _identity)

    def support(self, reports: Sequence[Any]) -> FloatArray:
        arr = np.asarray(reports, dtype=np.int64)
        return np.bincount(arr, minlength=self.d).astype(np.float64)

    def channel(self) -> Hashable:
        return ("grr", self.d, round(float(self.p_star or 0), 12))

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> FloatArray:
        return twin_grr(counts, float(self.p_star or 0), rng)


def _sum_rows(reports: Sequence[Any], d: int) -> FloatArray:
    out = np.zeros(d, dtype=np.float64)
    step = 20_000
    for start in range(0, len(reports), step):
        out += np.asarray(reports[start : start + step], dtype=np.float64).sum(axis=0)
    return out


class PureUE(_Pure):
    """pure-ldp unary encoding, optimized (OUE) or symmetric (SUE)."""

    def __init__(self, epsilon: float, d: int, oue: bool = True) -> None:
        super().__init__(epsilon, d)
        self.oue = oue
        self.mechanism = "oue" if oue else "sue"
        self.family = "ue" if oue else None
        c = self._client_obj()
        self.p_star, self.q_star = float(c.p), float(c.q)

    def _client_obj(self) -> Any:
        mod = load_pure_ldp()["unary_encoding"]
        return mod.UEClient(self.epsilon, self.d, use_oue=self.oue, index_mapper=_identity)

    def _server(self) -> Any:
        mod = load_pure_ldp()["unary_encoding"]
        return mod.UEServer(self.epsilon, self.d, use_oue=self.oue, index_mapper=_identity)

    def support(self, reports: Sequence[Any]) -> FloatArray:
        return _sum_rows(reports, self.d)

    def channel(self) -> Hashable:
        return ("bits", self.d, round(self.p_star or 0, 12), round(self.q_star or 0, 12))

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> FloatArray:
        return twin_bits(counts, float(self.p_star or 0), float(self.q_star or 0), rng)


def _lh_rows(reports: Sequence[Any]) -> tuple[npt.NDArray[np.uint64], IntArray]:
    seeds = np.fromiter((int(r[1]) for r in reports), dtype=np.uint64, count=len(reports))
    buckets = np.fromiter((int(r[0]) for r in reports), dtype=np.int64, count=len(reports))
    return seeds, buckets


class PureLH(_Pure):
    """pure-ldp optimized local hashing (``use_olh=True``: g = round(e^eps) + 1)."""

    mechanism, family = "olh", "olh"

    def __init__(self, epsilon: float, d: int) -> None:
        super().__init__(epsilon, d)
        c = self._client_obj()
        self.g = int(c.g)
        self.p_star, self.q_star = float(c.p), 1.0 / self.g

    def _client_obj(self) -> Any:
        mod = load_pure_ldp()["local_hashing"]
        return mod.LHClient(self.epsilon, self.d, use_olh=True, index_mapper=_identity)

    def _server(self) -> Any:
        mod = load_pure_ldp()["local_hashing"]
        return mod.LHServer(self.epsilon, self.d, use_olh=True, index_mapper=_identity)

    def support(self, reports: Sequence[Any]) -> FloatArray:
        seeds, buckets = _lh_rows(reports)
        return xxh32_support(seeds, buckets, self.d, self.g)

    def channel(self) -> Hashable:
        return ("lh-xxh32", self.d, self.g, round(self.p_star or 0, 12))

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> FloatArray:
        return twin_lh(counts, self.g, float(self.p_star or 0), rng)


class PureHE(_Pure):
    """pure-ldp histogram encoding: summation (SHE) or thresholding (THE, optimal theta)."""

    def __init__(self, epsilon: float, d: int, the: bool) -> None:
        super().__init__(epsilon, d)
        self.the = the
        self.mechanism = "the" if the else "she"
        if the:
            server = self._server()
            self.theta = float(server.theta)
            self.p_star, self.q_star = float(server.p), float(server.q)

    def _client_obj(self) -> Any:
        mod = load_pure_ldp()["histogram_encoding"]
        return mod.HEClient(self.epsilon, self.d, index_mapper=_identity)

    def _server(self) -> Any:
        mod = load_pure_ldp()["histogram_encoding"]
        return mod.HEServer(self.epsilon, self.d, use_the=self.the, index_mapper=_identity)

    def aggregate(self, reports: Sequence[Any], config: str | None = None) -> FloatArray:
        # THE thresholds the report arrays in place; keep the caller's reports intact.
        return super().aggregate([np.array(r) for r in reports], config)

    def support(self, reports: Sequence[Any]) -> FloatArray:
        if not self.the:
            return _sum_rows(reports, self.d)
        out = np.zeros(self.d, dtype=np.float64)
        for start in range(0, len(reports), 20_000):
            block = np.asarray(reports[start : start + 20_000], dtype=np.float64)
            out += (block > self.theta).sum(axis=0)
        return out

    def channel(self) -> Hashable:
        if self.the:
            return ("bits", self.d, round(self.p_star or 0, 12), round(self.q_star or 0, 12))
        return ("laplace-sum", self.d, round(2 / self.epsilon, 12))

    def expected(self, counts: IntArray) -> tuple[FloatArray, FloatArray]:
        if self.the:
            return super().expected(counts)
        c = np.asarray(counts, dtype=np.float64)
        return c, np.full(c.size, c.sum() * 2 * (2 / self.epsilon) ** 2)

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> FloatArray:
        if self.the:
            return twin_bits(counts, float(self.p_star or 0), float(self.q_star or 0), rng)
        return twin_laplace_sum(counts, 2 / self.epsilon, rng)


class PureHR(_Pure):
    """pure-ldp Hadamard response (Acharya, Sun & Zhang 2019).

    Its channel, read off ``k2k_hadamard`` (``encode_symbol`` of ``Hadamard_Rand_high_priv`` for
    eps <= 1, of ``Hadamard_Rand_general_original`` for eps > 1), over K outputs:

    - eps <= 1: P[y | x] = 2 (1 - r) / K if popcount((x + 1) & y) is even, else 2 r / K, with
      r = 1 / (1 + e^eps);
    - eps > 1: with s = permute[x] in block s // (b - 1) at position s % (b - 1) + 1,
      P[y | x] = a / K + (1 - a) 2 / b if y is in that block and popcount(position & (y mod b))
      is even, else a / K; a = 2B / (2B - 1 + e^eps), B blocks of size b.

    The twin samples output histograms from this matrix; the fidelity check holds it against
    HR's own client.
    """

    mechanism = "hr"

    def __init__(self, epsilon: float, d: int) -> None:
        super().__init__(epsilon, d)
        with quiet():
            self._srv = load_pure_ldp()["hadamard_response"].HadamardResponseServer(
                self.epsilon, self.d, index_mapper=_identity
            )
        self.outputs = int(self._srv.hr.outsz)
        self.matrix = self._transition()

    def _transition(self) -> FloatArray:
        hr, k = self._srv.hr, self.outputs
        y = np.arange(k, dtype=np.int64)
        if self.epsilon <= 1:
            r = float(hr.pri_para)
            odd = np.bitwise_count((np.arange(self.d, dtype=np.int64)[:, None] + 1) & y) & 1
            return np.where(odd == 0, 2 * (1 - r) / k, 2 * r / k)
        b, blocks, tail = int(hr.partsz), int(hr.part), int(hr.tailbit)
        a = 2 * blocks / (2 * blocks - 1 + float(hr.exp))
        s = np.asarray(hr.permute, dtype=np.int64)[: self.d]
        block, pos = s // (b - 1), s % (b - 1) + 1
        same = (y[None, :] >> tail) == block[:, None]
        even = (np.bitwise_count(pos[:, None] & (y[None, :] & (b - 1))) & 1) == 0
        out: FloatArray = a / k + (1 - a) * (2 / b) * (same & even)
        return out

    def _client_obj(self) -> Any:
        mod = load_pure_ldp()["hadamard_response"]
        with quiet():
            return mod.HadamardResponseClient(
                self.epsilon, self.d, self._srv.get_hash_funcs(), index_mapper=_identity
            )

    def _server(self) -> Any:
        self._srv.reset()
        return self._srv

    def support(self, reports: Sequence[Any]) -> FloatArray:
        arr = np.asarray(reports, dtype=np.int64)
        return np.bincount(arr, minlength=self.outputs).astype(np.float64)

    def expected(self, counts: IntArray) -> tuple[FloatArray, FloatArray]:
        c = np.asarray(counts, dtype=np.float64)
        return c @ self.matrix, c @ (self.matrix * (1 - self.matrix))

    def channel(self) -> Hashable:
        return ("hr", self.library, self.d, self.epsilon)

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> FloatArray:
        per_value = rng.multinomial(counts, self.matrix / self.matrix.sum(axis=1, keepdims=True))
        out: FloatArray = per_value.sum(axis=0).astype(np.float64)
        return out

    def _from_support(self, support: FloatArray, n: int, config: str) -> FloatArray:
        # HR's server only appends reports and histograms them when estimating.
        with quiet():
            server = self._server()
            server.aggregated_data = np.repeat(
                np.arange(self.outputs), np.asarray(support, dtype=np.int64)
            )
            server.n = n
            return self._estimate_all(server, n, config)


# multi-freq-ldpy ----------------------------------------------------------------------------


class _Mfl(Peer):
    """multi-freq-ldpy: numba clients, ``*_Aggregator_MI`` / ``*_Aggregator_IBU`` functions."""

    library = "multi-freq-ldpy"
    timed_config = "MI"
    #: (p, q) exactly as the peer's aggregator computes them.
    p: float
    q: float

    def _mi(self, support: FloatArray, n: int) -> FloatArray:
        with quiet():
            return np.asarray(_mfl_estimators().MI(support, n, self.p, self.q), dtype=np.float64)

    def _ibu(self, support: FloatArray, n: int) -> FloatArray:
        a = np.eye(self.d)
        a[a == 1] = self.p
        a[a == 0] = self.q
        obs = np.asarray(support, dtype=np.float64)
        with quiet():
            out = _mfl_estimators().IBU(self.d, a, obs / obs.sum(), IBU_ITER, IBU_TOL, IBU_ERR)
        return np.asarray(out, dtype=np.float64)

    def estimators(self) -> dict[str, Estimator]:
        return {"MI": self._mi, "IBU": self._ibu}

    def aggregate(self, reports: Sequence[Any], config: str | None = None) -> FloatArray:
        with quiet():
            return np.asarray(self._aggregate(reports, config or "MI"), dtype=np.float64)

    def _aggregate(self, reports: Sequence[Any], config: str) -> Any:
        raise NotImplementedError


class MflGRR(_Mfl):
    """multi-freq-ldpy GRR."""

    mechanism, family = "grr", "grr"

    def __init__(self, epsilon: float, d: int) -> None:
        super().__init__(epsilon, d)
        self.p = float(np.exp(self.epsilon) / (np.exp(self.epsilon) + d - 1))
        self.q = (1 - self.p) / (d - 1)
        self.p_star, self.q_star = self.p, self.q

    def client(self, xs: Sequence[int]) -> list[Any]:
        fn, d, eps = _mfl("GRR").GRR_Client, self.d, self.epsilon
        with quiet():
            return [fn(int(x), d, eps) for x in xs]

    def _aggregate(self, reports: Sequence[Any], config: str) -> Any:
        mod = _mfl("GRR")
        if config == "IBU":
            return mod.GRR_Aggregator_IBU(reports, self.d, self.epsilon)
        return mod.GRR_Aggregator_MI(reports, self.d, self.epsilon)

    def support(self, reports: Sequence[Any]) -> FloatArray:
        arr = np.asarray(reports, dtype=np.int64)
        return np.bincount(arr, minlength=self.d).astype(np.float64)

    def channel(self) -> Hashable:
        return ("grr", self.d, round(self.p, 12))

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> FloatArray:
        return twin_grr(counts, self.p, rng)


class MflUE(_Mfl):
    """multi-freq-ldpy unary encoding, optimized (OUE) or symmetric (SUE)."""

    def __init__(self, epsilon: float, d: int, oue: bool = True) -> None:
        super().__init__(epsilon, d)
        self.oue = oue
        self.mechanism = "oue" if oue else "sue"
        self.family = "ue" if oue else None
        if oue:
            self.p, self.q = 0.5, float(1 / (np.exp(self.epsilon) + 1))
        else:
            self.p = float(np.exp(self.epsilon / 2) / (np.exp(self.epsilon / 2) + 1))
            self.q = 1 - self.p
        self.p_star, self.q_star = self.p, self.q

    def client(self, xs: Sequence[int]) -> list[Any]:
        fn, d, eps, opt = _mfl("UE").UE_Client, self.d, self.epsilon, self.oue
        with quiet():
            return [fn(int(x), d, eps, opt) for x in xs]

    def _aggregate(self, reports: Sequence[Any], config: str) -> Any:
        mod = _mfl("UE")
        if config == "IBU":
            return mod.UE_Aggregator_IBU(reports, self.d, self.epsilon, self.oue)
        return mod.UE_Aggregator_MI(reports, self.epsilon, self.oue)

    def support(self, reports: Sequence[Any]) -> FloatArray:
        return _sum_rows(reports, self.d)

    def channel(self) -> Hashable:
        return ("bits", self.d, round(self.p, 12), round(self.q, 12))

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> FloatArray:
        return twin_bits(counts, self.p, self.q, rng)


class MflLH(_Mfl):
    """multi-freq-ldpy optimized local hashing (``optimal=True``)."""

    mechanism, family = "olh", "olh"

    def __init__(self, epsilon: float, d: int) -> None:
        super().__init__(epsilon, d)
        self.g = round(float(np.exp(self.epsilon))) + 1
        self.p = float(np.exp(self.epsilon) / (np.exp(self.epsilon) + self.g - 1))
        self.q = 1 / self.g
        self.p_star, self.q_star = self.p, self.q

    def client(self, xs: Sequence[int]) -> list[Any]:
        fn, d, eps = _mfl("LH").LH_Client, self.d, self.epsilon
        with quiet():
            return [fn(int(x), d, eps, True) for x in xs]

    def _aggregate(self, reports: Sequence[Any], config: str) -> Any:
        mod = _mfl("LH")
        if config == "IBU":
            return mod.LH_Aggregator_IBU(reports, self.d, self.epsilon, True)
        return mod.LH_Aggregator_MI(reports, self.d, self.epsilon, True)

    def support(self, reports: Sequence[Any]) -> FloatArray:
        seeds, buckets = _lh_rows(reports)
        return xxh32_support(seeds, buckets, self.d, self.g)

    def channel(self) -> Hashable:
        return ("lh-xxh32", self.d, self.g, round(self.p, 12))

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> FloatArray:
        return twin_lh(counts, self.g, self.p, rng)


class MflSS(_Mfl):
    """multi-freq-ldpy subset selection (subset size max(1, rint(d / (e^eps + 1))))."""

    mechanism, family = "ss", "ss"

    def __init__(self, epsilon: float, d: int) -> None:
        super().__init__(epsilon, d)
        e = np.exp(self.epsilon)
        k = int(max(1, np.rint(d / (e + 1))))
        self.k = k
        self.p = float(k * e / (k * e + d - k))
        self.q = float(((k - 1) * (k * e) + (d - k) * k) / ((d - 1) * (k * e + d - k)))
        self.p_star, self.q_star = self.p, self.q

    def client(self, xs: Sequence[int]) -> list[Any]:
        fn, d, eps = _mfl("SS").SS_Client, self.d, self.epsilon
        with quiet():
            return [fn(int(x), d, eps) for x in xs]

    def _aggregate(self, reports: Sequence[Any], config: str) -> Any:
        mod = _mfl("SS")
        if config == "IBU":
            return mod.SS_Aggregator_IBU(reports, self.d, self.epsilon)
        return mod.SS_Aggregator_MI(reports, self.d, self.epsilon)

    def support(self, reports: Sequence[Any]) -> FloatArray:
        flat = np.concatenate([np.asarray(r, dtype=np.int64) for r in reports])
        return np.bincount(flat, minlength=self.d).astype(np.float64)

    def channel(self) -> Hashable:
        return ("ss", self.d, self.k, round(self.p, 12))

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> FloatArray:
        return twin_ss(counts, self.k, self.p, rng)


class MflHE(_Mfl):
    """multi-freq-ldpy histogram encoding: thresholding (THE, MI and IBU) or summation (SHE)."""

    def __init__(self, epsilon: float, d: int, the: bool) -> None:
        super().__init__(epsilon, d)
        self.the = the
        self.mechanism = "the" if the else "she"
        if the:
            from scipy.optimize import minimize_scalar

            mod = _mfl("HE")
            with quiet():
                res = minimize_scalar(
                    mod.find_tresh, bounds=[0.5, 1], method="bounded", args=(self.epsilon)
                )
            self.theta = float(res.x)
            self.p = float(1 - 0.5 * np.exp(self.epsilon * (self.theta - 1) / 2))
            self.q = float(0.5 * np.exp(-self.epsilon * self.theta / 2))
            self.p_star, self.q_star = self.p, self.q

    def client(self, xs: Sequence[int]) -> list[Any]:
        fn, d, eps = _mfl("HE").HE_Client, self.d, self.epsilon
        with quiet():
            return [fn(int(x), d, eps) for x in xs]

    def _aggregate(self, reports: Sequence[Any], config: str) -> Any:
        mod = _mfl("HE")
        if config == "IBU":
            return mod.HE_Aggregator_IBU(reports, self.d, self.epsilon, True)
        return mod.HE_Aggregator_MI(reports, self.d, self.epsilon, self.the)

    def support(self, reports: Sequence[Any]) -> FloatArray:
        if not self.the:
            return _sum_rows(reports, self.d)
        out = np.zeros(self.d, dtype=np.float64)
        for start in range(0, len(reports), 20_000):
            block = np.asarray(reports[start : start + 20_000], dtype=np.float64)
            out += (block > self.theta).sum(axis=0)
        return out

    def _she(self, sums: FloatArray, n: int) -> FloatArray:
        est = np.asarray(sums, dtype=np.float64).clip(0)
        with quiet():
            return np.asarray(np.nan_to_num(est / sum(est)), dtype=np.float64)

    def estimators(self) -> dict[str, Estimator]:
        if self.the:
            return super().estimators()
        return {"MI": self._she}

    def channel(self) -> Hashable:
        if self.the:
            return ("bits", self.d, round(self.p, 12), round(self.q, 12))
        return ("laplace-sum", self.d, round(2 / self.epsilon, 12))

    def expected(self, counts: IntArray) -> tuple[FloatArray, FloatArray]:
        if self.the:
            return super().expected(counts)
        c = np.asarray(counts, dtype=np.float64)
        return c, np.full(c.size, c.sum() * 2 * (2 / self.epsilon) ** 2)

    def simulate(self, counts: IntArray, rng: np.random.Generator) -> FloatArray:
        if self.the:
            return twin_bits(counts, self.p, self.q, rng)
        return twin_laplace_sum(counts, 2 / self.epsilon, rng)


# --------------------------------------------------------------------------- registry


def timed_peers(family: str, epsilon: float, d: int) -> list[Peer]:
    """The peers timed against our ``family`` oracle (their estimation path, default options)."""
    table: dict[str, list[Peer]] = {
        "grr": [PureDE(epsilon, d), MflGRR(epsilon, d)],
        "ue": [PureUE(epsilon, d, oue=True), MflUE(epsilon, d, oue=True)],
        "olh": [PureLH(epsilon, d), MflLH(epsilon, d)],
        "ss": [MflSS(epsilon, d)],
    }
    return table[family]


def all_peers(epsilon: float, d: int) -> list[Peer]:
    """Every peer mechanism that competes on full-domain frequency estimation.

    Left out, with the reason: multi-freq-ldpy ADP (returns exactly its GRR or OUE aggregator,
    both included); binary local hashing (g = 2; never better than OLH); pure-ldp FastLH (OLH
    restricted to k fixed hash functions, a heuristic that can only add error); Hadamard
    mechanism, Apple CMS, sketch response, private count sketch (sketches or hashing into a
    smaller domain, built for huge domains); RAPPOR (Bloom filters plus regression; needs
    scikit-learn and statsmodels, which pure-ldp does not declare).
    """
    peers: list[Peer] = [
        PureDE(epsilon, d),
        PureUE(epsilon, d, oue=True),
        PureUE(epsilon, d, oue=False),
        PureLH(epsilon, d),
        PureHE(epsilon, d, the=True),
        PureHE(epsilon, d, the=False),
        MflGRR(epsilon, d),
        MflUE(epsilon, d, oue=True),
        MflUE(epsilon, d, oue=False),
        MflLH(epsilon, d),
        MflSS(epsilon, d),
        MflHE(epsilon, d, the=True),
        MflHE(epsilon, d, the=False),
        PureHR(epsilon, d),
    ]
    return peers


def verify(peer: Peer, xs: Sequence[int]) -> float:
    """Largest gap between the peer's own server path and our counts-based path, over configs.

    Runs the peer's own client on ``xs``, then for every estimator option compares
    ``peer.aggregate(reports, option)`` (the peer's code end to end) with
    ``estimator(peer.support(reports), n)`` (what the MSE runs use).
    """
    reports = peer.client(xs)
    summary = peer.support(reports)
    worst = 0.0
    for cfg, estimator in peer.estimators().items():
        own = peer.aggregate(reports, cfg)
        ours = estimator(summary, len(reports))
        worst = max(worst, float(np.max(np.abs(own - ours))))
    return worst
