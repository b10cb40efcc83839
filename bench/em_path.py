"""Why iterative Bayesian update (IBU) beats Norm-Sub at a few grid points: the EM path.

multi-freq-ldpy's IBU is EM on the support counts started from the uniform distribution and
stopped after at most 10,000 iterations; our ``consistency="mle"`` is the same update with the
same cap. Stopping early is a regularizer (the estimate stays between uniform and the maximum
likelihood estimate), and how strong it is depends on d, epsilon and n only through how fast EM
happens to move. This script follows the EM path on exactly the reports and seeds of
``bench/oracles.py``'s MSE comparison and records the MSE after 1k, 3k, 10k, 30k and 100k
iterations, relative to our default (adaptive mechanism + Norm-Sub). Writes the ``em_path``
section of BENCHMARKS.md (about 8 minutes on one core).

    .venv/bin/python bench/em_path.py [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import oracles  # bench/ is a folder of scripts, not a package
import results

from ldp.estimate import apply_consistency, em_update
from ldp.mechanisms import choose

CHECKPOINTS = (1_000, 3_000, 10_000, 30_000, 100_000)
#: The cap of multi-freq-ldpy's IBU and of our ``mle``.
IBU_CAP = 10_000
TOL = 1e-12  # IBU's early stop: largest change of one frequency below this
CV_EVERY = 250  # iterations between two held-out checks


def _em_iterates(
    support: npt.NDArray[np.float64], n: int, p: float, q: float
) -> Iterator[tuple[int, npt.NDArray[np.float64], bool]]:
    """``(iterations done, iterate, converged)`` of EM from the uniform distribution, with the
    update of ``ldp.estimate``'s ``mle`` (:func:`ldp.estimate.em_update`); ends after the last
    checkpoint or once no frequency changes by TOL."""
    f = np.full(support.size, 1.0 / support.size)
    for done in range(1, CHECKPOINTS[-1] + 1):
        new = em_update(f, support, n, p, q)
        new /= new.sum()
        converged = bool(np.max(np.abs(new - f)) < TOL)
        f = new
        yield done, f, converged
        if converged:
            return


def em_path(
    support: npt.NDArray[np.float64], n: int, p: float, q: float
) -> dict[int, npt.NDArray[np.float64]]:
    """The EM iterate after each checkpoint's number of iterations (once the change falls below
    TOL, later checkpoints repeat it)."""
    out: dict[int, npt.NDArray[np.float64]] = {}
    f = np.full(support.size, 1.0 / support.size)
    for done, f, _converged in _em_iterates(support, n, p, q):
        if done in CHECKPOINTS:
            out[done] = f
    return {stop: out.get(stop, f) for stop in CHECKPOINTS}


def held_out_stop(
    fit: npt.NDArray[np.float64],
    n_fit: int,
    held: npt.NDArray[np.float64],
    n_held: int,
    p: float,
    q: float,
) -> npt.NDArray[np.float64]:
    """EM on one half's support counts, stopped where the other half is most likely: every
    CV_EVERY iterations up to the last checkpoint, the held-out half's log-likelihood under
    independent Binomial(n_held, q + (p - q) f_v) support counts (the model EM itself fits)."""
    best, best_ll = np.full(fit.size, 1.0 / fit.size), -np.inf
    for done, f, converged in _em_iterates(fit, n_fit, p, q):
        if done % CV_EVERY == 0 or converged:
            pi = q + (p - q) * f
            ll = float(np.sum(held * np.log(pi) + (n_held - held) * np.log1p(-pi)))
            if ll > best_ll:
                best, best_ll = f, ll
    return best


def run(grid: oracles.Grid) -> list[dict[str, Any]]:
    rows = []
    for d in grid.ds:
        truth_f = oracles.zipf(d)
        for eps in grid.epsilons:
            mech = choose(d, eps)
            started = time.perf_counter()
            ns: list[float] = []
            path: dict[int, list[float]] = {c: [] for c in CHECKPOINTS}
            held_out: list[float] = []
            for seed in range(oracles.seeds_for(grid, d)):
                # The same draws as bench/oracles.py's MSE comparison, seed for seed.
                rng = np.random.default_rng([oracles.SEED, d, round(eps * 1000), 2, seed])
                counts = rng.multinomial(grid.mse_n, truth_f)
                truth = counts / grid.mse_n
                xs = np.repeat(np.arange(d, dtype=np.int64), counts)
                batch = mech.privatize_many(xs, rng)
                est = mech.estimate(batch)
                ns.append(float(np.mean((est.freq - truth) ** 2)))
                support = mech.support(batch).astype(np.float64)
                iterates = em_path(support, grid.mse_n, mech.p_star, mech.q_star)
                if seed == 0:  # the 10k checkpoint is our `mle` option, bit for bit
                    ours = apply_consistency(
                        est.raw,
                        "mle",
                        support=support,
                        n=grid.mse_n,
                        p_star=mech.p_star,
                        q_star=mech.q_star,
                    )
                    assert np.allclose(ours, iterates[IBU_CAP], rtol=0, atol=1e-12)
                for stop, f in iterates.items():
                    path[stop].append(float(np.mean((f - truth) ** 2)))
                # Two-fold: a random half of the reports fits, the other half picks the stop,
                # and the other way round; the estimate is the mean of the two.
                split = np.random.default_rng([oracles.SEED, d, round(eps * 1000), 3, seed])
                order = split.permutation(grid.mse_n)
                half = grid.mse_n // 2
                assert isinstance(batch, np.ndarray)
                first = mech.support(batch[order[:half]]).astype(np.float64)
                second = support - first
                p, q = mech.p_star, mech.q_star
                cv = (
                    held_out_stop(first, half, second, grid.mse_n - half, p, q)
                    + held_out_stop(second, grid.mse_n - half, first, half, p, q)
                ) / 2
                held_out.append(float(np.mean((cv - truth) ** 2)))
            base = float(np.mean(ns))
            ratios = {c: float(np.mean(v)) / base for c, v in path.items()}
            cv_ratio = float(np.mean(held_out)) / base
            rows.append(
                {
                    "d": d,
                    "eps": eps,
                    "mech": mech.name,
                    "ns": base,
                    "ratios": ratios,
                    "cv": cv_ratio,
                }
            )
            oracles.log(
                f"em path d={d} eps={eps}: Norm-Sub {base:.3e}, "
                + ", ".join(f"{c // 1000}k {r:.3f}" for c, r in ratios.items())
                + f", held-out stop {cv_ratio:.3f}"
                + f" ({time.perf_counter() - started:.0f}s)"
            )
    return rows


def render(rows: list[dict[str, Any]], grid: oracles.Grid, minutes: float) -> str:
    head = " | ".join(f"EM {c // 1000}k" for c in CHECKPOINTS)
    lines = [
        f"| d | eps | ours | Norm-Sub MSE | {head} | best stop | held-out stop |",
        "|---|---|---|---|" + "---|" * len(CHECKPOINTS) + "---|---|",
    ]
    never = 0
    for row in rows:
        ratios = row["ratios"]
        best = min(ratios, key=ratios.get)
        cells = " | ".join(f"**{r:.3f}**" if c == best else f"{r:.3f}" for c, r in ratios.items())
        if ratios[IBU_CAP] > 1.01:
            never += 1
        stop = f"{best // 1000}k" if ratios[best] < 0.995 else "none (Norm-Sub)"
        lines.append(
            f"| {row['d']} | {row['eps']} | {row['mech'].upper()} | {row['ns']:.3e} | {cells} | "
            f"{stop} | {row['cv']:.3f} |"
        )
    cv = [row["cv"] for row in rows]
    cv_worst = max(rows, key=lambda row: row["cv"])
    cv_better = sum(r < 0.995 for r in cv)
    cv_worse = sum(r > 1.005 for r in cv)
    seeds = ", ".join(f"{oracles.seeds_for(grid, d)} at d={d}" for d in grid.ds)
    return f"""## The EM path: why IBU's edge at some grid points is where it stops

MSE of EM (iterative Bayesian update) on our default mechanism's reports after 1k to 100k
iterations, divided by the MSE of our default (Norm-Sub) on the same reports: below 1, EM at
that iteration count is better. The 10k column is multi-freq-ldpy's IBU cap and our
`consistency="mle"` (checked equal bit for bit); EM stops earlier only if no frequency changes
by 1e-12. Same truth, reports and seeds as the MSE comparison in the *oracles* section
(n = 1e5; seeds: {seeds}). Best column in bold; "best stop" is the iteration count
that does best with hindsight, where it beats Norm-Sub by at least 0.5%. "held-out stop" is a
rule that needs no truth: EM on a random half of the reports, stopped (checked every
{CV_EVERY} iterations, up to {CHECKPOINTS[-1] // 1000}k) where the other half's support counts
are most likely, and the other way round; the estimate is the mean of the two. Script:
`python bench/em_path.py` ({minutes:.1f} min).

{chr(10).join(lines)}

Reading: started from the uniform distribution, EM's MSE first falls and then rises back
towards that of the maximum likelihood estimate, which is close to Norm-Sub's wherever EM
gets there within 100k iterations. Stopping early shrinks towards uniform, which suits the
benchmark's full-support Zipf truth, and the best stopping point moves by orders of magnitude
with d and epsilon: the 10,000-iteration cap is near it at some grid points and far from it at
others ({never} of {len(rows)} points are more than 1% worse than Norm-Sub at 10k, up to several
times). No fixed iteration count is at least as good as Norm-Sub at every point; where to stop
would itself have to be estimated from the reports. The held-out rule does that and is at least
0.5% better than Norm-Sub at {cv_better} of {len(rows)} points, but it is worse at
{cv_worse} (up to {cv_worst["cv"]:.2f}x at d={cv_worst["d"]}, eps={cv_worst["eps"]}), and
where IBU beats us it stays well short of the best stop, so as a default it would not meet the
target either (a candidate for a later, deliberate change of default). This is why the
issue-2 target "our default (adaptive + Norm-Sub) no worse than the best peer configuration at
every grid point" is not met where the best peer configuration is a capped IBU: there the
peers' best of 45 configurations (picked after the fact) is about as good as the best EM stop
on our reports chosen with hindsight.

{results.machine_line()}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    grid = oracles.Grid()
    started = time.perf_counter()
    rows = run(grid)
    body = render(rows, grid, (time.perf_counter() - started) / 60)
    if args.no_write:
        print(body)
    else:
        results.write_section("em_path", body)
        print("wrote the em_path section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
