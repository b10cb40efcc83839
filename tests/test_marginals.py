"""os and arch marginals derived from v2's platform field: sums of cells, exact variance."""

from __future__ import annotations

import numpy as np
import pytest

from ldp.schema import shipped_schema
from server_agg.marginals import groups_of, platform_marginals, ss_group_variance

SPEC = shipped_schema().kind("usage").field("platform")


class TestGroups:
    """Cells group by their os or arch half, with other last."""

    def test_groups(self) -> None:
        """Every cell lands in exactly one os group and one arch group; other stays alone."""
        for part in (0, 1):
            groups = groups_of(SPEC.domain, part)
            assert list(groups)[-1] == "other" and groups["other"] == [SPEC.d - 1]
            assert sorted(i for g in groups.values() for i in g) == list(range(SPEC.d))
        assert set(groups_of(SPEC.domain, 0)) == {"linux", "macos", "windows", "freebsd", "other"}


class TestVariance:
    """The group-count variance matches a seeded simulation of the real SS channel."""

    def test_against_simulation(self) -> None:
        """Empirical Var|S & A| over 200,000 draws is within 4 standard errors of the formula
        (the sample variance's standard error is about sqrt(2/N) * Var for a bounded count)."""
        randomizer = SPEC.randomizer()
        k = randomizer.k  # type: ignore[attr-defined]
        members = groups_of(SPEC.domain, 0)["linux"]
        rng = np.random.default_rng(3)
        n = 200_000
        for x in (members[0], SPEC.index("macos-arm64")):
            subsets = randomizer.simulate(np.full(n, x), rng)
            counts = np.isin(subsets, members).sum(axis=1)
            expected = ss_group_variance(SPEC.d, k, randomizer.p_star, members, x)
            tolerance = 4 * np.sqrt(2 / n) * expected + 1e-9
            assert abs(counts.var() - expected) < tolerance


class TestMarginals:
    """Marginal estimates are sums of the platform cells; std is honest."""

    def test_sum_and_coverage(self) -> None:
        """Over 400 seeded populations of 2,000 users the linux and arm64 marginals' 95%
        intervals cover the truth 95% +/- 3.3 points (4 binomial standard errors at 400)."""
        randomizer = SPEC.randomizer()
        rng = np.random.default_rng(5)
        truth = np.zeros(SPEC.d)
        truth[
            [SPEC.index("linux-x86_64"), SPEC.index("macos-arm64"), SPEC.index("linux-arm64")]
        ] = (
            0.5,
            0.3,
            0.2,
        )
        covered = np.zeros(2)
        runs = 400
        for _ in range(runs):
            values = rng.choice(SPEC.d, size=2000, p=truth)
            estimate = randomizer.estimate(randomizer.simulate(values, rng))
            os_m, arch_m = platform_marginals(SPEC, estimate)
            linux = list(os_m.estimate.labels or ()).index("linux")
            arm = list(arch_m.estimate.labels or ()).index("arm64")
            members = os_m.members[linux]
            assert os_m.estimate.raw[linux] == pytest.approx(estimate.raw[members].sum())
            for j, (m, i, true) in enumerate(((os_m, linux, 0.7), (arch_m, arm, 0.5))):
                low = m.estimate.raw[i] - 1.96 * m.estimate.std[i]
                high = m.estimate.raw[i] + 1.96 * m.estimate.std[i]
                covered[j] += low <= true <= high
        assert np.all(np.abs(covered / runs - 0.95) < 4 * np.sqrt(0.95 * 0.05 / runs))


class TestV1StillAggregates:
    """v1 reports keep aggregating next to v2 ones, each under its own schema."""

    def test_mixed_store(self) -> None:
        """A mix of v1 and v2 reports gives one group per schema; v1 shows its own os and
        arch, v2 its platform plus the derived marginals."""
        from ldp.schema import known_schemas
        from server_agg.aggregate import count_plaintexts, finalize
        from server_agg.simulate import make_population

        v1, v2 = known_schemas()
        plain = []
        for schema in (v1, v2):
            population = make_population(300, seed=4, schema=schema, periods=("2026-W50",))
            plain += list(population.reports())
        result = finalize(count_plaintexts(plain))  # the default: every known schema
        usage = {g.schema_id: g for g in result.groups if g.kind == "usage"}
        assert set(usage) == {v1.id, v2.id}
        old = [(f.name, f.derived_from) for f in usage[v1.id].fields]
        new = [(f.name, f.derived_from) for f in usage[v2.id].fields]
        assert ("os", None) in old and ("arch", None) in old
        assert ("platform", None) in new
        assert ("os", "platform") in new and ("arch", "platform") in new
        assert usage[v1.id].n == usage[v2.id].n == 300
