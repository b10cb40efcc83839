"""The data-chosen consistency step ``auto`` and its pieces (issue 15).

Risk checks draw the unbiased estimate from its normal model ``N(f, C)`` with the command
channel's exact covariance (``ldp.covariance``): SURE's unbiasedness is a statement about that
model, and drawing from it directly keeps the tests fast.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ldp.consistency import (
    bootstrap_rows,
    choose_consistency,
    em_rows,
    project_rows,
    risk_rows,
    step_rows,
    sure_rows,
)
from ldp.covariance import frequency_covariance
from ldp.errors import ParameterError
from ldp.estimate import (
    PooledChannel,
    apply_consistency,
    em_update,
    epoch_pair_share,
    estimate_frequencies,
    pooled_frequencies,
    project_simplex,
)
from tests.test_pooled import V2, field

SEED = 2026_1505
COMMAND = field(V2, "command")
R = COMMAND.randomizer()
P, Q = R.p_star, R.q_star
PEAKED = np.array([0.8, 0.1, 0.05, 0.05, *([0.0] * 10)])
FLAT = np.linspace(1.5, 0.5, 14) / np.linspace(1.5, 0.5, 14).sum()


def draws(f: np.ndarray, n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """m unbiased estimates from N(f, C(f)) and that covariance."""
    c = frequency_covariance(R, n, f)
    vals, vecs = np.linalg.eigh(c)
    root = vecs * np.sqrt(np.clip(vals, 0, None))
    z = np.random.default_rng(seed).standard_normal((m, f.size))
    return f + z @ root.T, c


class TestSteps:
    """The batched steps equal the analyzer's one-vector steps."""

    def test_project_rows_is_norm_sub(self) -> None:
        """Every row's projection equals ldp.estimate.project_simplex."""
        y = np.random.default_rng(SEED).normal(0.05, 0.2, (300, 9))
        expected = np.stack([project_simplex(row) for row in y])
        np.testing.assert_allclose(project_rows(y), expected, atol=1e-12)

    def test_em_rows_is_the_analyzers_update(self) -> None:
        """T batched iterations equal T calls of em_update with renormalisation."""
        y, _ = draws(FLAT, 300, 3, SEED)
        n = 300
        out = em_rows(y, P, Q, (7, 40))
        for row, raw in enumerate(y):
            support = n * (Q + (P - Q) * raw)
            f = np.full(14, 1 / 14)
            for t in range(1, 41):
                f = em_update(f, support, n, P, Q)
                f /= f.sum()
                if t in (7, 40):
                    np.testing.assert_allclose(out[t][row], f, rtol=1e-10)

    def test_mle_is_the_capped_em(self) -> None:
        """step 'mle' equals apply_consistency's mle (both EM from uniform, 10,000 at most)."""
        y, _ = draws(PEAKED, 1000, 1, SEED + 1)
        support = 1000 * (Q + (P - Q) * y[0])
        ref = apply_consistency(y[0], "mle", support=support, n=1000, p_star=P, q_star=Q)
        np.testing.assert_allclose(step_rows(y, "mle", P, Q)[0], ref, atol=1e-8)

    def test_unknown_step_is_refused(self) -> None:
        """Names other than norm-sub, clip, mle and em-T are errors naming the value."""
        with pytest.raises(ParameterError, match="em-T"):
            step_rows(np.zeros((1, 3)), "em-0", P, Q)


class TestSure:
    """Stein's unbiased risk estimate with the channel's covariance."""

    @pytest.mark.parametrize("method", ["norm-sub", "clip"])
    def test_closed_form_divergence_matches_finite_differences(self, method: str) -> None:
        """tr(C J) of the closed-form Jacobian equals a central finite difference."""
        y, c = draws(FLAT, 300, 5, SEED + 2)
        sure = sure_rows(y, c, P, Q, (method,))[method][1]
        h = 1e-6
        for row in range(5):
            g0 = step_rows(y[row : row + 1], method, P, Q)[0]
            jac = np.empty((14, 14))
            for j in range(14):
                up, down = y[row].copy(), y[row].copy()
                up[j] += h
                down[j] -= h
                jac[:, j] = (
                    step_rows(up[None], method, P, Q) - step_rows(down[None], method, P, Q)
                )[0] / (2 * h)
            div = float(np.sum(c * jac.T))
            expected = ((g0 - y[row]) ** 2).sum() + 2 * div - np.trace(c)
            assert sure[row] == pytest.approx(expected, rel=1e-5, abs=1e-9)

    @pytest.mark.parametrize("truth", ["peaked", "flat"])
    def test_sure_is_unbiased(self, truth: str) -> None:
        """Averaged over draws, SURE equals the true squared error for every candidate."""
        # 1,500 draws: the mean of SURE - loss has standard error sd / sqrt(1500); allow 4 of
        # those (the finite-difference EM Jacobian adds far less).
        f = PEAKED if truth == "peaked" else FLAT
        y, c = draws(f, 300, 1500, SEED + 3)
        methods = ("norm-sub", "clip", "em-30", "em-300")
        for method, (g, risk) in sure_rows(y, c, P, Q, methods).items():
            diff = risk - ((g - f) ** 2).sum(axis=1)
            assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(diff.size), method

    def test_bootstrap_is_the_risk_at_the_pilot(self) -> None:
        """At the truth as pilot, the bootstrap risk estimates the true risk of each step."""
        # 400 draws: the bootstrap mean has Monte Carlo sd/sqrt(400); compare with the mean loss
        # over 1,500 independent draws, allowing 4 combined standard errors.
        f = PEAKED
        _, c = draws(f, 1000, 1, SEED + 4)
        boot = bootstrap_rows(f[None, :], c, P, Q, ("norm-sub", "clip"), draws=400, seed=1)
        y, _ = draws(f, 1000, 1500, SEED + 5)
        for method in ("norm-sub", "clip"):
            loss = ((step_rows(y, method, P, Q) - f) ** 2).sum(axis=1)
            se = loss.std(ddof=1) * math.sqrt(1 / 1500 + 1 / 400)
            assert abs(boot[method][0] - loss.mean()) < 4 * se


class TestChooseConsistency:
    """auto: the choice, its reasons, and how estimate_frequencies exposes it."""

    def test_auto_finds_the_better_step_on_average(self) -> None:
        """On a peaked truth auto is far better than clip; on a flat one far better than
        Norm-Sub (where early-stopped EM, shrinking towards uniform, wins)."""
        # 200 draws per truth; the margins below are several times the observed spread of the
        # MSE ratios between seeds (about 5%).
        for f, rival, worse in ((PEAKED, "clip", 1.5), (FLAT, "norm-sub", 1.3)):
            y, c = draws(f, 1000, 200, SEED + 6)
            scored = risk_rows(y, c, P, Q)
            names = list(scored)
            risk = np.stack([(scored[k][1] + scored[k][2]) / 2 for k in names])
            pick = np.argmin(risk, axis=0)
            est = np.stack([scored[k][0] for k in names])[pick, np.arange(200)]
            auto = ((est - f) ** 2).sum(axis=1).mean()
            other = ((scored[rival][0] - f) ** 2).sum(axis=1).mean()
            assert auto * worse < other

    def test_choice_is_reproducible_and_explained(self) -> None:
        """Same inputs and seed give the same choice; the reason names it; to_dict is JSON."""
        y, c = draws(PEAKED, 3000, 1, SEED + 7)
        a = choose_consistency(y[0], c, P, Q, seed=3)
        b = choose_consistency(y[0], c, P, Q, seed=3)
        assert a.method == b.method and a.risks == b.risks
        assert a.method == min(a.risks, key=lambda k: a.risks[k])
        assert a.reason.startswith(f"auto chose {a.method}")
        assert a.freq.sum() == pytest.approx(1.0) and a.freq.min() >= 0
        doc = json.loads(json.dumps(a.to_dict()))
        assert set(doc["risks"]) == set(doc["sure"]) == set(doc["bootstrap"])

    def test_weekly_sure_is_averaged(self) -> None:
        """With weekly estimates the SURE half is the mean over weeks."""
        y, c = draws(FLAT, 1000, 4, SEED + 8)
        out = choose_consistency(y.mean(axis=0), c / 4, P, Q, weekly=y, weekly_cov=c)
        assert out.weeks == 4
        expected = sure_rows(y, c, P, Q, ("norm-sub",))["norm-sub"][1].mean()
        assert out.sure["norm-sub"] == pytest.approx(expected)

    def test_estimate_frequencies_auto(self) -> None:
        """consistency='auto' with a covariance function names the chosen step and keeps why."""
        support = np.array([300, 120, 90, 140, 125, *([100] * 9)])
        est = estimate_frequencies(
            support, 1000, P, Q, "auto", cov=lambda f: frequency_covariance(R, 1000, f)
        )
        assert est.choice is not None and est.consistency == est.choice.method
        assert est.to_dict()["consistency_choice"]["method"] == est.consistency
        np.testing.assert_allclose(est.freq, est.choice.freq)

    def test_pooled_auto_and_set_fields(self) -> None:
        """pooled_frequencies passes auto through; a set field is only clipped."""
        channel = PooledChannel.of(R)
        share = epoch_pair_share(16, 4)
        supports = np.tile(np.array([300, 120, 90, 140, 125, *([100] * 9)]), (4, 1))
        est = pooled_frequencies(
            supports,
            1000,
            channel,
            share,
            "auto",
            cov=lambda f: frequency_covariance(R, 1000, f, weeks=4, share=share),
        )
        assert est.choice is not None
        modules = field(V2, "modules").randomizer()
        sets = pooled_frequencies(
            np.full((1, 8), 300.0), 1000, PooledChannel.of(modules), 0.0, "auto"
        )
        assert sets.consistency == "clip" and sets.choice is None

    def test_auto_needs_the_covariance(self) -> None:
        """Without a covariance auto is refused, naming what is missing."""
        with pytest.raises(ParameterError, match="cov"):
            estimate_frequencies(np.full(14, 100), 1000, P, Q, "auto")
        with pytest.raises(ParameterError, match="cov"):
            apply_consistency(np.full(14, 1 / 14), "auto", p_star=P, q_star=Q)
        out = apply_consistency(
            np.full(14, 1 / 14), "auto", p_star=P, q_star=Q, cov=np.eye(14) * 1e-4
        )
        assert out.sum() == pytest.approx(1.0)
        with pytest.raises(ParameterError, match="cov must be"):
            choose_consistency(np.zeros(3), np.eye(2), P, Q)
