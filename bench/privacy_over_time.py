"""Privacy over time (issue 17): the frontier of longitudinal schemes, the exact check of schema
v2's yearly bound, and week-to-week linkability of the real client's reports.

Schemes, per field and in total (both report kinds, one report of each a week):

* **S0** v1 today: a permanent response memoized per value, plus a fresh instantaneous one.
* **S1** fresh noise every week at v1's ``epsilon_1`` (1-week epochs).
* **S2** schema v2 (chosen): one response per field per staggered epoch of R weeks, frozen.
* **S3** S2's epochs and ``epsilon_perm``, plus an instantaneous step at 0.75 ``epsilon_perm``.
* **S2-min** S2 at the smallest epsilons whose weekly half-widths stay within 1.25x of v1's
  docs/SCHEMA.md table (``platform`` against ``os``, the tighter of the two v1 fields it joins).
* **S2-opt** frozen epochs with R and epsilon chosen per field for the smallest B_year that
  meets every target: S2-min's half-widths, lag <= 8 weeks for the 16-week fields of v2
  (``cli_version``, ``command``, ``error_category``) and ``command``'s 12-week half-width
  <= 0.06 at n = 1,000.

Every privacy number of a frozen scheme is checked with ``ldp.transcript``'s exact calculator;
accuracy comes from the randomizers' exact variances and ``ldp.estimate.pooled_variance``;
linkability runs ``ldp.report.build_report`` with a secret and an ``EpochMemo`` per simulated
client. Writes the ``privacy_over_time`` section of BENCHMARKS.md (about 4 minutes on one core):

    .venv/bin/python bench/privacy_over_time.py [--no-write]

Never imported by the packages; never run on real user data.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import tempfile
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]  # no stubs

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import results  # bench/ is a folder of scripts, not a package

from ldp.epochs import WINDOW_WEEKS, EpochMemo, epoch_index, week_index
from ldp.estimate import PooledChannel, epoch_pair_share, pooled_variance
from ldp.report import build_report, epoch_responses
from ldp.sampling import HmacSource
from ldp.schema import FieldSpec, ReportKind, Schema, known_schemas
from ldp.transcript import (
    Channel,
    epoch_groups,
    exact_loss,
    field_channel,
    fresh_groups,
    memo_groups,
)

SEED = 2026_17
Z95 = NormalDist().inv_cdf(0.975)
N_WEEK = 10_000  # docs/SCHEMA.md's n
N_POOL, POOL_WEEKS = 1_000, 12  # the analyzer issue's window
CLIENTS = 1_000
LAG_TARGET, POOL_TARGET = 8, 0.06  # issue 17: lag <= 8 weeks; 12-week command <= +/-0.06
S3_RATIO = 0.75  # S3: epsilon_1 = 0.75 epsilon_perm
V1, V2 = known_schemas()
REF_FIELD = {"platform": "os"}  # v1 field a v2 field's half-width is held against
VALUES_V1 = {
    "cli_version": "1.6",
    "os": "linux",
    "arch": "x86_64",
    "command": "build",
    "modules": ["docker", "git"],
    "error_category": "network",
}
VALUES_V2 = {**VALUES_V1, "platform": "linux-x86_64"}
WEEKS = ("2026-W50", "2026-W51")


# --------------------------------------------------------------------------- schemes


@dataclass(frozen=True)
class Scheme:
    """A name and its fields; ``memo`` True for v1's memo per value (no epochs)."""

    name: str
    doc: str
    fields: tuple[tuple[str, FieldSpec], ...]  # (kind, spec)
    memo: bool = False

    def schema(self) -> Schema | None:
        """The scheme as a schema the client code accepts (None if the caps refuse it)."""
        kinds = []
        for kind in ("usage", "errors"):
            specs = tuple(spec for k, spec in self.fields if k == kind)
            kinds.append(ReportKind(kind, specs))
        try:
            return Schema("bench", 2, tuple(kinds))
        except Exception:
            return None


def with_eps(spec: FieldSpec, perm: float, one: float, weeks: int | None) -> FieldSpec:
    """``spec`` at other epsilons and epoch length."""
    return replace(spec, epsilon_perm=perm, epsilon_1=one, epoch_weeks=weeks)


def half_width(r: Any, f: float, n: int = N_WEEK) -> float:
    """95% half-width of one value's weekly estimate from n reports (exact variance)."""
    return Z95 * math.sqrt(r.variance(n, f))


def v1_reference() -> dict[str, tuple[float, float]]:
    """docs/SCHEMA.md's v1 half-widths (rare, f = 0.5), recomputed from the randomizers."""
    return {
        s.name: (half_width(s.randomizer(), 0.0), half_width(s.randomizer(), 0.5))
        for s in V1.fields
    }


def min_epsilon(spec: FieldSpec, ref: tuple[float, float]) -> float:
    """Smallest epsilon (0.01 steps) of a frozen field within 1.25x of ``ref`` at both f."""
    eps = 0.30
    while True:
        r = with_eps(spec, eps, eps, spec.epoch_weeks).randomizer()
        if (
            half_width(r, 0.0) <= 1.25 * ref[0] + 1e-12
            and half_width(r, 0.5) <= 1.25 * ref[1] + 1e-12
        ):
            return eps
        eps = round(eps + 0.01, 2)


def lag_weeks(epoch_weeks: int) -> int:
    """Weeks (the step's week counted as 1) until half of a population step shows."""
    return math.ceil(epoch_weeks / 2)


def pooled_half_width(r: Any, epoch_weeks: int | None) -> float:
    """12-week pooled 95% half-width of a rare value at N_POOL weekly users."""
    share = epoch_pair_share(epoch_weeks, POOL_WEEKS)
    return Z95 * math.sqrt(pooled_variance(PooledChannel.of(r), N_POOL, POOL_WEEKS, share))


def optimal_field(spec: FieldSpec, floor: float) -> FieldSpec:
    """S2-opt: the (R, epsilon) of smallest yearly bound meeting the targets, ``floor`` being
    the smallest epsilon within 1.25x of v1. Ties go to the shorter lag, then the longer R."""
    lag_bound = spec.epoch_weeks is not None and spec.epoch_weeks <= 16
    best: tuple[float, int, int, FieldSpec] | None = None
    for weeks in range(1, WINDOW_WEEKS + 1):
        if lag_bound and lag_weeks(weeks) > LAG_TARGET:
            continue
        eps = floor
        while spec.name == "command":
            cand = with_eps(spec, eps, eps, weeks)
            if pooled_half_width(cand.randomizer(), weeks) <= POOL_TARGET:
                break
            eps = round(eps + 0.01, 2)
        cand = with_eps(spec, eps, eps, weeks)
        key = (round(cand.year_bound(), 9), lag_weeks(weeks), -weeks, cand)
        if best is None or key[:3] < best[:3]:
            best = key
    assert best is not None
    return best[3]


def kinds_of(schema: Schema) -> tuple[tuple[str, FieldSpec], ...]:
    """(kind, field) pairs of a schema."""
    return tuple((k.name, f) for k in schema.kinds for f in k.fields)


def schemes() -> list[Scheme]:
    """S0, S1, S2, S3, S2-min and S2-opt."""
    ref = v1_reference()
    v1 = kinds_of(V1)
    v2 = kinds_of(V2)
    s1 = tuple((k, with_eps(f, f.epsilon_1, f.epsilon_1, 1)) for k, f in v1)
    s3 = tuple(
        (k, with_eps(f, f.epsilon_perm, round(S3_RATIO * f.epsilon_perm, 3), f.epoch_weeks))
        for k, f in v2
    )
    smin, sopt = [], []
    for k, f in v2:
        eps = min_epsilon(f, ref[REF_FIELD.get(f.name, f.name)])
        smin.append((k, with_eps(f, eps, eps, f.epoch_weeks)))
        sopt.append((k, optimal_field(f, eps)))
    return [
        Scheme("S0", "v1 today: memo per value + IRR", v1, memo=True),
        Scheme("S1", "fresh noise weekly at v1 epsilon_1", s1),
        Scheme("S2", "v2 frozen epochs (chosen)", v2),
        Scheme("S3", f"v2 epochs + IRR at {S3_RATIO} epsilon_perm", s3),
        Scheme("S2-min", "v2 frozen, smallest epsilons within 1.25x of v1", tuple(smin)),
        Scheme("S2-opt", "frozen, R and epsilon of least B_year meeting all targets", tuple(sopt)),
    ]


# --------------------------------------------------------------------------- exact losses


def pair_values(channel: Channel, spec: FieldSpec) -> tuple[Hashable, Hashable, Hashable]:
    """Three inputs any two of which differ maximally (for a set: disjoint pad-sized sets)."""
    if spec.kind == "set":
        assert spec.pad is not None
        p = spec.pad
        x, y, z = (frozenset(range(i * p, (i + 1) * p)) for i in range(3))
        return x, y, z
    return channel.values[0], channel.values[1], channel.values[2]


def adversarial_pairs(
    x: Hashable, y: Hashable, z: Hashable, weeks: int, offset: int, t_len: int = WINDOW_WEEKS
) -> dict[str, tuple[list[Hashable], list[Hashable]]]:
    """History pairs over ``t_len`` weeks for one stagger offset."""
    epoch = [epoch_index(t, offset, weeks) for t in range(t_len)]
    phase = [(t + offset) % weeks for t in range(t_len)]
    cyc = (x, y, z)
    return {
        "b changes every week": ([x] * t_len, [(y, z)[t % 2] for t in range(t_len)]),
        "both change every week": (
            [cyc[t % 3] for t in range(t_len)],
            [cyc[(t + 1) % 3] for t in range(t_len)],
        ),
        "b changes at epoch starts": ([x] * t_len, [(y, z)[e % 2] for e in epoch]),
        "b differs in each epoch's first half": (
            [x] * t_len,
            [y if p < weeks / 2 else x for p in phase],
        ),
        "b changes mid-epoch, after the draw": (
            [x] * t_len,
            [x if p < weeks / 2 else y for p in phase],
        ),
    }


def verify_bound(spec: FieldSpec, offsets: Sequence[int]) -> tuple[dict[str, float], str, int]:
    """Exact 52-week losses over adversarial pairs and stagger offsets.

    Returns the maximum per history pattern, where the overall maximum occurred, and how many
    pairs were computed.
    """
    assert spec.epoch_weeks is not None
    weeks = spec.epoch_weeks
    channel = field_channel(spec.randomizer())
    x, y, z = pair_values(channel, spec)
    worst: dict[str, float] = {}
    top, where, runs = -1.0, "", 0
    for offset in offsets:
        for name, (a, b) in adversarial_pairs(x, y, z, weeks, offset).items():
            loss = exact_loss(
                channel, epoch_groups(a, weeks, offset), epoch_groups(b, weeks, offset)
            )
            runs += 1
            worst[name] = max(worst.get(name, -1.0), loss)
            if loss > top:
                top, where = loss, f"{name}, offset {offset}"
    return worst, where, runs


def v1_change_loss(spec: FieldSpec) -> tuple[float, str]:
    """Exact loss of v1: x for h weeks then y for h weeks vs x for 2h, largest h enumerable."""
    channel = field_channel(spec.randomizer())
    x, y, _ = pair_values(channel, spec)
    best = (math.nan, "not enumerable")
    for h in (1, 2, 3, 4):
        try:
            loss = exact_loss(channel, memo_groups([x] * 2 * h), memo_groups([x] * h + [y] * h))
        except Exception:
            break
        best = (loss, f"{h}+{h} wk")
    return best


def fresh_year_loss(spec: FieldSpec) -> float:
    """Exact 52-week loss of fresh noise between one value and another, every week."""
    channel = field_channel(spec.randomizer())
    x, y, _ = pair_values(channel, spec)
    a, b = [x] * WINDOW_WEEKS, [y] * WINDOW_WEEKS
    return exact_loss(channel, fresh_groups(a), fresh_groups(b))


# --------------------------------------------------------------------------- frontier


@dataclass(frozen=True)
class Row:
    """One line of the frontier table."""

    scheme: str
    field: str
    eps_perm: float
    eps_1: float
    weeks: int | None
    year: float
    exact: str
    hw_rare: float
    hw_half: float
    vs_v1: float
    pooled: float
    lag_half: int
    lag_full: int


def frontier(
    scheme: Scheme, ref: dict[str, tuple[float, float]], exact: dict[str, str]
) -> list[Row]:
    """Per-field rows of one scheme."""
    rows = []
    for _, spec in scheme.fields:
        r = spec.randomizer()
        weeks = None if scheme.memo else spec.epoch_weeks
        pooled = pooled_half_width(r, weeks)
        rare, half = half_width(r, 0.0), half_width(r, 0.5)
        rr, rh = ref[REF_FIELD.get(spec.name, spec.name)]
        lag = weeks or 1
        rows.append(
            Row(
                scheme.name,
                spec.name,
                r.epsilon_perm,
                r.epsilon_1,
                weeks,
                spec.year_bound() if not scheme.memo else math.inf,
                exact.get(spec.name, ""),
                rare,
                half,
                max(rare / rr, half / rh),
                pooled,
                math.ceil(lag / 2),
                lag,
            )
        )
    return rows


def render_frontier(rows: list[Row], schemes_: list[Scheme]) -> str:
    """The frontier as a markdown table, with a total line per scheme."""
    head = (
        "| scheme | field | eps_perm | eps_1 | R (wk) | B_year | exact loss | hw rare | hw f=.5 "
        "| hw / v1 | 12-wk hw, n=1k | lag half | lag full |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    out = [head]
    for s in schemes_:
        mine = [r for r in rows if r.scheme == s.name]
        for r in mine:
            year = "unbounded" if math.isinf(r.year) else f"{r.year:.2f}"
            out.append(
                f"| {r.scheme} | {r.field} | {r.eps_perm:.3g} | {r.eps_1:.3g} | "
                f"{'memo/value' if r.weeks is None else r.weeks} | {year} | {r.exact} | "
                f"{r.hw_rare:.4f} | {r.hw_half:.4f} | {r.vs_v1:.2f} | {r.pooled:.3f} | "
                f"{r.lag_half} | {r.lag_full} |\n"
            )
        total = math.fsum(r.year for r in mine)
        tot = "unbounded" if math.isinf(total) else f"**{total:.2f}**"
        week = math.fsum(r.eps_1 for r in mine)
        worst = max(r.vs_v1 for r in mine)
        out.append(
            f"| {s.name} | **total** ({s.doc}) | | {week:.3g}/wk | | {tot} | | | | "
            f"max {worst:.2f} | | | |\n"
        )
    return "".join(out)


# --------------------------------------------------------------------------- linkability


def outputs_index(r: Any) -> dict[tuple[int, ...], int]:
    """Wire value (as a tuple) -> column of ``field_channel(r)`` (SS k-subsets)."""
    oracle = r.oracle if hasattr(r, "oracle") else r
    return {c: i for i, c in enumerate(combinations(range(oracle.d), oracle.k))}


def client_reports(
    schema: Schema, kind: str, values: dict[str, Any], tmp: Path
) -> list[list[dict[str, Any]]]:
    """Two consecutive weeks of reports of ``kind`` from CLIENTS clients with equal values.

    Each client has its own secret and EpochMemo, and follows the pipeline's order: build,
    freeze the epoch's responses in the memo, next week build again.
    """
    rng = np.random.default_rng(SEED)
    names = schema.kind(kind).field_names
    vals = {k: v for k, v in values.items() if k in names}
    weeks: list[list[dict[str, Any]]] = [[], []]
    for c in range(CLIENTS):
        secret = rng.bytes(32)
        memo = EpochMemo(tmp / f"{schema.id}-{kind}-{c}.json")
        for w, period in enumerate(WEEKS):
            rand = HmacSource(hashlib.sha256(b"bench-irr").digest(), f"{c}/{period}".encode())
            report = build_report(schema, kind, period, vals, secret, rand, memo)
            memo.commit(
                epoch_responses(schema, kind, period, vals, secret, memo), week_index(period)
            )
            weeks[w].append(dict(report.fields))
    return weeks


def link_scores(
    schema: Schema, kind: str, memo: bool, weeks: list[list[dict[str, Any]]], values: dict[str, Any]
) -> npt.NDArray[np.float64]:
    """Log likelihood ratio (same client vs different) of every (week-1, week-2) pair.

    Per field, the two reports share the hidden response with probability pi (1 for v1's memo
    of an unchanged value; 1 - 1/R for epochs, the chance no epoch starts between the weeks
    under a uniform stagger): P[y1, y2 | same] = pi sum_s P[s|x] P[y1|s] P[y2|s] +
    (1 - pi) P[y1] P[y2]. Fields are independent given the client, so the logs add.
    """
    total = np.zeros((CLIENTS, CLIENTS))
    for spec in schema.kind(kind).fields:
        r = spec.randomizer()
        ch = field_channel(r)
        col = outputs_index(r)
        x = spec.indices(values[spec.name]) if spec.kind == "set" else spec.index(values[spec.name])
        prior = ch.prior[ch.row(x)]
        y1 = np.array([col[tuple(rep[spec.name])] for rep in weeks[0]])
        y2 = np.array([col[tuple(rep[spec.name])] for rep in weeks[1]])
        marginal = prior @ ch.emit
        joint = (ch.emit[:, y1] * prior[:, None]).T @ ch.emit[:, y2]
        pi = 1.0 if memo else 1 - 1 / (spec.epoch_weeks or 1)
        ratio = pi * joint / np.outer(marginal[y1], marginal[y2]) + (1 - pi)
        total += np.log(ratio)
    return total


def linkability(
    schema: Schema, kind: str, memo: bool, values: dict[str, Any], tmp: Path
) -> tuple[float, float]:
    """(exact-tuple matching with random tie-break, maximum-likelihood assignment) success."""
    weeks = client_reports(schema, kind, values, tmp)
    keys = [
        [
            tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in rep.items()))
            for rep in wk
        ]
        for wk in weeks
    ]
    counts: dict[Any, int] = {}
    for key in keys[1]:
        counts[key] = counts.get(key, 0) + 1
    # Expected success of "pick uniformly among next week's identical reports".
    exact = float(
        np.mean([1 / counts[k] if k == keys[1][i] else 0.0 for i, k in enumerate(keys[0])])
    )
    # Shuffle next week's reports: the assignment must not profit from the clients' order
    # (linear_sum_assignment breaks ties between equal scores by position).
    perm = np.random.default_rng(SEED + 1).permutation(CLIENTS)
    shuffled = [weeks[0], [weeks[1][j] for j in perm]]
    scores = link_scores(schema, kind, memo, shuffled, values)
    _, cols = linear_sum_assignment(scores, maximize=True)
    ml = float(np.mean(perm[cols] == np.arange(CLIENTS)))
    return exact, ml


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    start = time.perf_counter()
    ref = v1_reference()
    all_schemes = schemes()

    # Exact checks.
    checks = []
    v2_exact: dict[str, str] = {}
    for _, spec in kinds_of(V2):
        assert spec.epoch_weeks is not None
        R = spec.epoch_weeks
        worst, where, runs = verify_bound(spec, range(R))  # every stagger offset
        checks.append((spec.name, R, R, runs, worst, spec.year_bound(), where))
        v2_exact[spec.name] = f"max {max(worst.values()):.2f}"
    v1_exact = {}
    for _, spec in kinds_of(V1):
        loss, label = v1_change_loss(spec)
        v1_exact[spec.name] = "not enumerable" if math.isnan(loss) else f"{loss:.2f} ({label})"
    if v1_exact.get("command") == "not enumerable":
        v1_exact["command"] = "120.7 (52 wk, issue 17; not enumerable here)"
    s1_exact = {}
    for _, spec in all_schemes[1].fields:
        s1_exact[spec.name] = f"{fresh_year_loss(spec):.2f} (52 wk)"
    exact_by = {"S0": v1_exact, "S1": s1_exact, "S2": v2_exact}
    exact_by["S3"] = {spec.name: "bound only" for _, spec in all_schemes[3].fields}
    for scheme in all_schemes[4:]:  # S2-min, S2-opt: the worst offset only
        exact_by[scheme.name] = {}
        for _, spec in scheme.fields:
            assert spec.epoch_weeks is not None
            worst, _, _ = verify_bound(spec, [spec.epoch_weeks - 1])
            exact_by[scheme.name][spec.name] = f"max {max(worst.values()):.2f}"
    rows = [row for s in all_schemes for row in frontier(s, ref, exact_by[s.name])]
    t_exact = time.perf_counter() - start

    # Linkability.
    links = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in all_schemes:
            if s.name in ("S1", "S2-opt"):
                continue  # S1: independent weeks (chance); S2-opt: S2's structure, other R
            schema = V1 if s.memo else s.schema()
            assert schema is not None, s.name
            values = VALUES_V1 if s.memo else VALUES_V2
            for kind in ("usage", "errors"):
                exact, ml = linkability(schema, kind, s.memo, values, Path(tmp))
                links.append((s.name, kind, exact, ml))
    elapsed = time.perf_counter() - start

    body = render(rows, all_schemes, checks, links, t_exact, elapsed)
    print(body)
    if not args.no_write:
        results.write_section("privacy_over_time", body)


def targets(rows: list[Row]) -> list[str]:
    """Issue 17's targets, per frozen-epoch scheme, read off the rows."""
    out = [
        "Issue 17's targets (B_year <= 20, stretch <= 12; weekly hw <= 1.25x v1; lag <= 8"
        " weeks for cli_version and command; 12-week `command` hw <= 0.06 at n = 1,000):",
        "",
    ]
    for name in ("S2", "S3", "S2-min", "S2-opt"):
        mine = {r.field: r for r in rows if r.scheme == name}
        year = math.fsum(r.year for r in mine.values())
        worst = max(r.vs_v1 for r in mine.values())
        lag = max(mine["cli_version"].lag_half, mine["command"].lag_half)
        pooled = mine["command"].pooled
        out.append(
            f"- {name}: B_year {year:.2f} ({'meets' if year <= 20 else 'misses'} 20, "
            f"{'meets' if year <= 12 else 'misses'} 12); hw {worst:.2f}x "
            f"({'meets' if worst <= 1.25 + 1e-9 else 'misses'}); lag {lag} "
            f"({'meets' if lag <= 8 else 'misses'}); 12-week command +/-{pooled:.3f} "
            f"({'meets' if pooled <= 0.06 else 'misses'})."
        )
    return [*out, ""]


def render(
    rows: list[Row],
    schemes_: list[Scheme],
    checks: list[Any],
    links: list[Any],
    t_exact: float,
    elapsed: float,
) -> str:
    """The section's markdown."""
    lines = [
        "## Privacy over time (issue 17): the frontier, the exact yearly bound, linkability",
        "",
        f"{results.machine_line()} `bench/privacy_over_time.py`, {elapsed:.0f} s"
        f" ({t_exact:.0f} s of exact enumeration).",
        "",
        "Both report kinds, one report of each a week. **B_year**: proven loss of all reports in"
        " any 52 weeks, whatever the values do (`epochs_touched(R) * epsilon_perm`; S1: 52 x"
        " epsilon_1; S0: none). **exact loss**: `ldp.transcript.exact_loss` on the real"
        " channels: S0, x for h weeks then y for h weeks vs x throughout (grows with every"
        " change); S1, 52 weeks of one value vs another; S2, the maximum over the adversarial"
        " 52-week pairs below; S2-min and S2-opt, the same pairs at the offset R - 1. **hw**:"
        f" weekly 95% half-width at n = {N_WEEK:,} (rare: f = 0); **hw / v1**: the larger"
        " ratio to docs/SCHEMA.md's v1 row (platform against os); **12-wk hw**: pooled over 12"
        f" weeks at n = {N_POOL:,} weekly users, rare value (`ldp.estimate.pooled_variance`;"
        " S0 assumes the value does not change, the best case for v1's memo). **lag**: weeks,"
        " counting the week of a 0 -> 50% step as 1, until the expected weekly estimate shows"
        " half of it (ceil(R/2)) and all of it (R).",
        "",
        render_frontier(rows, schemes_),
        *targets(rows),
        "### Exact check of schema v2's yearly bound (52-week histories)",
        "",
        "Histories per stagger offset: b changes every week (a constant); both change every"
        " week; b changes exactly at its epoch starts; b differs from a in the first half of each"
        " epoch; b changes mid-epoch (after the draw, so only a window's partial first epoch"
        " can show it). Values: three distinct domain values (sets: disjoint sets of pad items).",
        "",
        "| field | R | offsets | pairs | every week | both every week | at epoch starts "
        "| first half | mid-epoch, after draw | **max exact** | **bound** | worst pair |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, R, n_off, runs, worst, bound, where in checks:
        top = max(worst.values())
        ok = "" if top <= bound + 1e-9 else " **EXCEEDS**"
        per = " | ".join(f"{v:.2f}" for v in worst.values())
        lines.append(
            f"| {name} | {R} | {n_off} | {runs} | {per} | **{top:.4f}**{ok} | **{bound:.4f}** "
            f"| {where} |"
        )
    lines += [
        "",
        f"### Linkability: {CLIENTS:,} clients with identical values, two consecutive weeks",
        "",
        "The real client (`build_report`, a secret and an `EpochMemo` per client, the pipeline's"
        " build-then-freeze order), weeks " + " and ".join(WEEKS) + ". **exact match**: link a"
        " report to one of next week's identical reports at random (expected success). **ML**:"
        " the maximum-likelihood one-to-one assignment (Hungarian) under each field's exact"
        " channel, a field's two reports sharing the hidden response with probability 1 (v1,"
        " unchanged value) or 1 - 1/R (epochs). Chance: 1/1,000 = 0.1%. S1 (fresh draws) is"
        " chance by construction; S2-opt (not run) has S2's structure with other R.",
        "",
        "| scheme | kind | exact match | ML assignment | best | chance |",
        "|---|---|---|---|---|---|",
    ]
    for name, kind, exact, ml in links:
        lines.append(
            f"| {name} | {kind} | {100 * exact:.1f}% | {100 * ml:.1f}% | "
            f"**{100 * max(exact, ml):.1f}%** | 0.1% |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
