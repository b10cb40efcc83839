"""The significance rule and the interval drawn beside it never disagree (issue 15)."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldp.errors import ParameterError
from ldp.estimate import PooledChannel, pooled_frequencies
from ldp.significance import significance
from tests.test_pooled import V2, epoch_supports, field

SEED = 2026_1504


class TestSignificance:
    """significance(): one rule for the colour and the whisker."""

    @settings(max_examples=200, deadline=None)
    @given(
        raw=st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=2, max_size=20),
        scale=st.floats(1e-4, 0.5),
        level=st.floats(0.5, 0.999),
        rule=st.sampled_from(["bonferroni", "unadjusted"]),
    )
    def test_colour_and_interval_agree(
        self, raw: list[float], scale: float, level: float, rule: str
    ) -> None:
        """Significant exactly when the drawn interval's low end is above 0, for any input."""
        x = np.array(raw)
        std = np.full(x.size, scale)
        out = significance(x, std, level=level, rule=rule)
        np.testing.assert_array_equal(out.significant, out.low > 0)
        assert np.all(out.low <= out.high)

    def test_bonferroni_is_the_analyzers_test(self) -> None:
        """With bonferroni the verdicts equal FrequencyEstimate.significant (the shipped test)."""
        r = field(V2, "command").randomizer()
        support = np.array([300, 120, 90, 140, 125, *([100] * 9)])
        est = pooled_frequencies(support[None, :], 1000, PooledChannel.of(r), 0.0)
        out = significance(est.raw, est.std, level=0.95)
        np.testing.assert_array_equal(out.significant, est.significant(0.95))
        assert out.per_value_level == pytest.approx(1 - 0.05 / 14)

    def test_the_issues_contradiction_cannot_happen(self) -> None:
        """config 4.6% with std 1.6%: unadjusted draws [1.5%, 7.7%] and calls it significant;
        Bonferroni over 14 draws a wider interval reaching 0 and calls it not significant."""
        raw, std = np.array([0.046] + [0.0] * 13), np.array([0.0158] * 14)
        plain = significance(raw, std, rule="unadjusted")
        bonf = significance(raw, std, rule="bonferroni")
        assert plain.significant[0] and plain.low[0] == pytest.approx(0.015, abs=0.001)
        assert not bonf.significant[0] and bonf.low[0] == 0.0

    def test_sentence_and_json(self) -> None:
        """The sentence names the correction, the level and the count; to_dict is JSON-ready."""
        out = significance(np.array([0.5, 0.3, 0.2]), np.array([0.05] * 3))
        assert "Bonferroni-adjusted over the 3 values" in out.sentence
        assert "98.33%" in out.sentence and "95%" in out.sentence
        plain = significance(np.array([0.5, 0.5]), np.array([0.1] * 2), rule="unadjusted")
        assert "no correction" in plain.sentence
        assert plain.z == pytest.approx(NormalDist().inv_cdf(0.975))
        doc = json.loads(json.dumps(out.to_dict(), allow_nan=False))
        assert doc["items"][0]["significant"] is True

    def test_bad_arguments_are_refused(self) -> None:
        """Rule, level and shapes are checked."""
        with pytest.raises(ParameterError, match="rule"):
            significance([0.1], [0.1], rule="holm")
        with pytest.raises(ParameterError, match="level"):
            significance([0.1], [0.1], level=1.0)
        with pytest.raises(ParameterError, match="one length"):
            significance([0.1, 0.2], [0.1])

    def test_simulated_error_rates(self) -> None:
        """Through the real command channel: Bonferroni intervals cover every value at once at
        least 95% of the time; an unused value is unadjusted-significant about 2.5% of the time."""
        # 1,500 populations: a proportion near 0.95 has sd 0.0056, near 0.025 sd 0.0040; 4 of
        # those plus 0.01 for the normal approximation and the plug-in standard error.
        rng, reps, n = np.random.default_rng(SEED), 1500, 1000
        spec = field(V2, "command")
        values = np.repeat(np.arange(4), [500, 250, 150, 100])
        f = np.bincount(values, minlength=spec.d) / n
        supports = epoch_supports(rng, spec, values, n, 1, reps=reps)
        channel = PooledChannel.of(spec.randomizer())
        family, false_plain = 0, 0
        for s in supports:
            est = pooled_frequencies(s, n, channel, 0.0, "none")
            bonf = significance(est.raw, est.std)
            z = bonf.z
            family += bool(np.all(np.abs(est.raw - f) <= z * est.std))
            plain = significance(est.raw, est.std, rule="unadjusted")
            false_plain += int(plain.significant[4:].sum())
        assert family / reps > 0.95 - 4 * math.sqrt(0.95 * 0.05 / reps) - 0.01
        rate = false_plain / (reps * 10)
        assert abs(rate - 0.025) < 4 * math.sqrt(0.025 * 0.975 / (reps * 10)) + 0.01
