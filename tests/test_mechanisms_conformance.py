"""Both randomizer paths draw from the analytic transition law: chi-square goodness of fit.

``privatize`` (client, OS CSPRNG, one report at a time; its wires go through ``encode_batch``)
and ``privatize_many`` (simulation, seeded numpy Generator) are tested with the same statistics
against the probabilities the mechanism claims (``p``, ``q``, ``include``, ``1/g``).

Significance levels: the seeded path is deterministic, so ALPHA_SEEDED = 1e-3 only says how
surprising the fixed sample would have to be. The CSPRNG path cannot be seeded, so its level is
its false-failure rate; ALPHA_CSPRNG = 1e-6 per test keeps the ~12 CSPRNG tests below ~1e-5 of
flaking together. With n = 20 000 the tests catch gross errors (a wrong formula, p and q
swapped, an off-by-one index) on both paths; the seeded path also catches an error of about
0.02 in a probability of 0.5 (checked by hand: p off by 0.02 gives p-value ~1e-3 for GRR).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy.stats import chi2, chisquare

from ldp.mechanisms import (
    GRR,
    MECHANISMS,
    OLH,
    OUE,
    SS,
    SUE,
    from_name,
    olh_hash,
    olh_hash_many,
)

ALPHA_SEEDED = 1e-3
ALPHA_CSPRNG = 1e-6
N = 20_000
PATHS = ("csprng", "seeded")

Mech = GRR | SUE | OUE | OLH | SS


def alpha_for(path: str) -> float:
    return ALPHA_CSPRNG if path == "csprng" else ALPHA_SEEDED


def exact_pq(m: GRR | SUE | OUE | OLH) -> tuple[float, float]:
    """The claimed keep / other (or bit) probabilities, from the exact Probs the client draws with.

    Expectations come from these rather than from the float properties ``p`` and ``q``, so a
    simulation path that drifted from the client's probabilities would show up here.
    """
    if isinstance(m, SUE | OUE):
        return float(m.p_prob), float(m.q_prob)
    buckets = m.g if isinstance(m, OLH) else m.d
    return float(m.keep), float((1 - m.keep.value) / (buckets - 1))


def draw(m: Mech, xs: npt.NDArray[np.int64], path: str, seed: int) -> Any:
    """Batch form of one report per input, from the CSPRNG client path or the seeded numpy path."""
    if path == "csprng":
        return m.encode_batch([m.privatize(int(x)) for x in xs])
    return m.privatize_many(xs, np.random.default_rng(seed))


def mixed_inputs(d: int, seed: int) -> npt.NDArray[np.int64]:
    return np.random.default_rng(seed).integers(0, d, N, dtype=np.int64)


def independent_binomials_pvalue(
    counts: npt.ArrayLike, trials: npt.ArrayLike, probs: npt.ArrayLike
) -> float:
    """P-value of sum z^2 ~ chi2(len) for independent binomial counts (normal approximation)."""
    c = np.asarray(counts, dtype=np.float64)
    t = np.asarray(trials, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    stat = float(np.sum((c - t * p) ** 2 / (t * p * (1 - p))))
    return float(chi2.sf(stat, c.size))


def transition_table_pvalue(
    xs: npt.NDArray[np.int64], ys: npt.NDArray[np.int64], law: npt.NDArray[np.float64]
) -> float:
    """Chi-square of the (x, y) table against row totals times P[y | x] (rows are fixed)."""
    d_in, d_out = law.shape
    observed = np.zeros((d_in, d_out))
    np.add.at(observed, (xs, ys), 1)
    rows = observed.sum(axis=1, keepdims=True)
    expected = rows * law
    # d_in * d_out cells, d_in row totals fixed: df = d_in * (d_out - 1).
    return float(chisquare(observed.ravel(), expected.ravel(), ddof=d_in - 1).pvalue)


class TestGrrConformance:
    """GRR reports x with probability keep, else any other value uniformly."""

    @pytest.mark.parametrize("path", PATHS)
    def test_transition_table_matches_keep_and_other(self, path: str) -> None:
        """The (input, output) table over mixed inputs fits P[y|x] = p if y = x else q."""
        m = GRR(1.0, 5)
        xs = mixed_inputs(m.d, 1)
        ys = draw(m, xs, path, 2)
        p, q = exact_pq(m)
        law = np.full((m.d, m.d), q)
        np.fill_diagonal(law, p)
        assert transition_table_pvalue(xs, ys, law) > alpha_for(path)

    def test_p_and_q_form_a_distribution(self) -> None:
        """p + (d - 1) q = 1, from the rounded keep probability."""
        m = GRR(0.7, 9)
        assert m.p + (m.d - 1) * m.q == pytest.approx(1, abs=1e-15)


GRID = [(name, d, eps) for name in MECHANISMS for d in (2, 5, 64) for eps in (0.1, 1.0, 8.0)]


class TestClaimedProbabilities:
    """The float properties the server uses agree with the exact Probs the client draws with."""

    @pytest.mark.parametrize(("name", "d", "epsilon"), GRID)
    def test_p_q_and_support_probabilities(self, name: str, d: int, epsilon: float) -> None:
        """p, q, p* and q* are the documented functions of the exact probabilities."""
        m = from_name(name, epsilon, d)
        if isinstance(m, SS):
            inc = m.include.value
            assert m.p == m.p_star == float(inc)
            q_star = (inc * (m.k - 1) + (1 - inc) * m.k) / (d - 1)
            assert m.q == m.q_star == pytest.approx(float(q_star), rel=1e-15)
            return
        p, q = exact_pq(m)
        assert (m.p, m.q) == (p, q)
        assert m.p_star == p
        assert m.q_star == (1 / m.g if isinstance(m, OLH) else q)


class TestUnaryConformance:
    """Unary encodings set the true bit with p and every other bit with q, independently."""

    @pytest.mark.parametrize("name", ["sue", "oue"])
    @pytest.mark.parametrize("path", PATHS)
    def test_per_bit_marginals(self, name: str, path: str) -> None:
        """Per input group and bit, the count of ones fits Binomial(group size, p or q)."""
        m = from_name(name, 1.0, 8)
        assert isinstance(m, SUE | OUE)
        xs = mixed_inputs(m.d, 3)
        bits = np.unpackbits(draw(m, xs, path, 4), axis=1, bitorder="little")[:, : m.d]
        counts, trials, probs = [], [], []
        for x in range(m.d):
            group = bits[xs == x]
            counts.extend(group.sum(axis=0))
            trials.extend([group.shape[0]] * m.d)
            probs.extend([exact_pq(m)[0] if i == x else exact_pq(m)[1] for i in range(m.d)])
        assert independent_binomials_pvalue(counts, trials, probs) > alpha_for(path)

    @pytest.mark.parametrize("name", ["sue", "oue"])
    @pytest.mark.parametrize("path", PATHS)
    def test_joint_law_is_the_product_of_bits(self, name: str, path: str) -> None:
        """For d = 3 the 8 bit patterns fit the product law, so bits really are independent."""
        m = from_name(name, 1.0, 3)
        assert isinstance(m, SUE | OUE)
        xs = mixed_inputs(m.d, 5)
        bits = np.unpackbits(draw(m, xs, path, 6), axis=1, bitorder="little")[:, : m.d]
        ys = bits.astype(np.int64) @ (1 << np.arange(m.d))
        law = np.ones((m.d, 1 << m.d))
        for x in range(m.d):
            for y in range(1 << m.d):
                for i in range(m.d):
                    on = exact_pq(m)[0] if i == x else exact_pq(m)[1]
                    law[x, y] *= on if (y >> i) & 1 else 1 - on
        assert transition_table_pvalue(xs, ys, law) > alpha_for(path)


class TestOlhConformance:
    """OLH reports a uniform seed and GRR over g of the item's bucket under that seed."""

    @pytest.mark.parametrize("path", PATHS)
    def test_bucket_offsets_follow_grr_over_g(self, path: str) -> None:
        """(bucket - h(seed, x)) mod g is 0 with p and each nonzero offset with (1 - p)/(g - 1)."""
        m = OLH(2.0, 16)
        xs = mixed_inputs(m.d, 7)
        out = draw(m, xs, path, 8)
        offsets = (out[:, 1] - olh_hash_many(out[:, 0], xs, m.g)) % m.g
        p, q = exact_pq(m)
        expected = np.array([p] + [q] * (m.g - 1)) * N
        assert chisquare(np.bincount(offsets, minlength=m.g), expected).pvalue > alpha_for(path)

    @pytest.mark.parametrize("path", PATHS)
    def test_seeds_are_uniform(self, path: str) -> None:
        """The top 4 bits of the 32-bit seeds fall in 16 equally likely bins."""
        m = OLH(1.0, 8)
        out = draw(m, mixed_inputs(m.d, 9), path, 10)
        assert out[:, 0].min() >= 0
        assert out[:, 0].max() < 1 << 32
        bins = np.bincount(out[:, 0] >> 28, minlength=16)
        assert chisquare(bins).pvalue > alpha_for(path)

    @pytest.mark.parametrize("path", PATHS)
    def test_other_items_are_supported_with_one_over_g(self, path: str) -> None:
        """An item v != x hashes to the reported bucket with probability q* = 1/g."""
        m = OLH(1.0, 8)
        xs = np.full(N, 0, dtype=np.int64)
        support = m.support(draw(m, xs, path, 11))
        # Item 0 with p*, and items 1 and 5 (taken one at a time: they share reports) with 1/g.
        for v in (1, 5):
            assert independent_binomials_pvalue([support[v]], [N], [m.q_star]) > alpha_for(path)
        assert independent_binomials_pvalue([support[0]], [N], [m.p_star]) > alpha_for(path)

    def test_python_and_numpy_hashes_agree(self) -> None:
        """The client's pure-Python hash and the server's numpy hash give identical buckets."""
        rng = np.random.default_rng(12)
        seeds = rng.integers(0, 1 << 32, 2000, dtype=np.int64)
        xs = rng.integers(0, 1 << 20, 2000, dtype=np.int64)
        seeds[:4] = [0, 1, (1 << 32) - 1, 0x9E3779B9]
        xs[:4] = [0, (1 << 20) - 1, 1, 0]
        for g in (2, 3, 8, 56, 2982):
            many = olh_hash_many(seeds, xs, g)
            one = [olh_hash(int(s), int(x), g) for s, x in zip(seeds, xs, strict=True)]
            assert many.tolist() == one
            assert many.min() >= 0
            assert many.max() < g

    def test_hash_buckets_are_uniform_over_seeds(self) -> None:
        """For a fixed item, h(seed, x) over uniform seeds is uniform on [0, g)."""
        rng = np.random.default_rng(13)
        seeds = rng.integers(0, 1 << 32, N, dtype=np.int64)
        for x in (0, 1, 1000):
            counts = np.bincount(olh_hash_many(seeds, x, 8), minlength=8)
            assert chisquare(counts).pvalue > ALPHA_SEEDED


def others_uniformity_pvalue(subsets: npt.NDArray[np.int64], x: int, d: int) -> float:
    """Chi-square that the items other than x are chosen uniformly (sampling without replacement).

    Report j picks K_j of the m = d - 1 others uniformly, so the count vector C has mean T/m
    (T = sum K_j) and covariance c (I - J/m) with c = sum_j (K_j/m)(1 - K_j/m) m/(m - 1);
    hence sum_i (C_i - T/m)^2 / c is chi2 with m - 1 degrees of freedom.
    """
    m = d - 1
    others = subsets[subsets != x]
    k_j = (subsets != x).sum(axis=1).astype(np.float64)
    counts = np.bincount(others, minlength=d)
    counts = np.delete(counts, x)
    total = k_j.sum()
    c = float(np.sum((k_j / m) * (1 - k_j / m)) * m / (m - 1))
    stat = float(np.sum((counts - total / m) ** 2) / c)
    return float(chi2.sf(stat, m - 1))


def subset_law(m: SS, subsets: Sequence[tuple[int, ...]]) -> npt.NDArray[np.float64]:
    """P[Y | x] for every x and listed Y: include / C(d-1, k-1) if x in Y else ..."""
    inc = float(m.include)
    with_x = inc / math.comb(m.d - 1, m.k - 1)
    without_x = (1 - inc) / math.comb(m.d - 1, m.k)
    return np.array([[with_x if x in y else without_x for y in subsets] for x in range(m.d)])


class TestSubsetSelectionConformance:
    """SS includes x with probability include, and fills the rest uniformly."""

    @pytest.mark.parametrize("path", PATHS)
    def test_inclusion_of_x_and_of_the_others(self, path: str) -> None:
        """x is in the subset with p*; the other items are equally likely (exact covariance)."""
        m = SS(1.0, 16)
        assert m.k >= 3
        x = 6
        out = draw(m, np.full(N, x, dtype=np.int64), path, 14)
        hits = int((out == x).any(axis=1).sum())
        assert independent_binomials_pvalue([hits], [N], [m.p_star]) > alpha_for(path)
        assert others_uniformity_pvalue(out, x, m.d) > alpha_for(path)

    @pytest.mark.parametrize("path", PATHS)
    def test_other_items_are_supported_with_q_star(self, path: str) -> None:
        """A fixed item v != x is in the subset with probability q*."""
        m = SS(0.5, 16)
        out = draw(m, np.full(N, 0, dtype=np.int64), path, 15)
        hits = int((out == 9).any(axis=1).sum())
        assert independent_binomials_pvalue([hits], [N], [m.q_star]) > alpha_for(path)

    @pytest.mark.parametrize("path", PATHS)
    def test_full_subset_law_over_mixed_inputs(self, path: str) -> None:
        """For d = 5 the (input, subset) table fits the exact law over all C(5, k) subsets."""
        m = SS(0.5, 5)
        assert m.k == 2
        subsets = list(combinations(range(m.d), m.k))
        index = {y: i for i, y in enumerate(subsets)}
        xs = mixed_inputs(m.d, 16)
        out = draw(m, xs, path, 17)
        ys = np.array([index[tuple(row)] for row in out.tolist()], dtype=np.int64)
        assert transition_table_pvalue(xs, ys, subset_law(m, subsets)) > alpha_for(path)


class TestOlhHashBroadcasting:
    """olh_hash_many broadcasts like numpy: one seed against many items is a legal call."""

    def test_scalar_seed_against_all_items(self) -> None:
        """A scalar seed hashes every item, equal to the pure-Python hash, without warnings."""
        items = np.arange(64)
        for seed in (0, 12345, (1 << 32) - 1):
            buckets = olh_hash_many(seed, items, 8)
            assert buckets.tolist() == [olh_hash(seed, int(x), 8) for x in items]


class TestUnaryDrawPaths:
    """The bulk and word-at-a-time paths of ue_draw agree draw for draw."""

    def test_bulk_and_single_word_paths_agree(self) -> None:
        """With the same HMAC stream, a source without words() gives the same bitmasks."""
        from ldp.mechanisms import ue_draw
        from ldp.sampling import HmacSource, prob_down, prob_up

        class OneWordAtATime:
            def __init__(self) -> None:
                self.inner = HmacSource(b"s" * 32, b"x")

            def word(self) -> int:
                return self.inner.word()

            def randbelow(self, n: int) -> int:
                return self.inner.randbelow(n)

        p, q = prob_down(0.7), prob_up(0.2)
        for bits in (0, 1, 5, (1 << 64) - 1, 1 << 63, 12345678901234):
            for d in (1, 8, 64, 65):
                bulk = ue_draw(bits, d, p, q, HmacSource(b"s" * 32, b"x"))
                assert bulk == ue_draw(bits, d, p, q, OneWordAtATime()), (bits, d)
