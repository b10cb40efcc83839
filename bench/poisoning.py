"""Poisoning: how far crafted reports move the estimates, with and without the pattern screen.

An attacker holds the public key (it is public) and sends well-formed reports whose every field
is a subset holding its target value: the most gain per report LDP allows (Cao, Jia & Gong,
"Data Poisoning Attacks to Local Differential Privacy Protocols", USENIX Security 2021). The
*naive* attacker sends one crafted report over and over; the *pattern-randomizing* attacker
draws the other k-1 items of each subset at random, so no pattern repeats more than chance.

For 1% and 5% crafted reports among honest ones (seeded simulated population, the real client
code's channel), it reports the shift of each target's estimate and the largest shift of any
other value, with the screen off and on; then the screen's effect on honest data alone (how
often it trims, and how much the estimates move). Writes the ``poisoning`` section of
BENCHMARKS.md. Run: ``.venv/bin/python bench/poisoning.py [--honest 20000] [--seeds 5]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import machine_line, write_section
from ldp.report import pad
from ldp.schema import canonical_dumps, shipped_schema
from server_agg.aggregate import AggregateResult, count_plaintexts, finalize
from server_agg.poisoning import pattern_law
from server_agg.simulate import GeneratorSource, make_population

SCHEMA = shipped_schema()
PERIOD = "2026-W50"  # schema v2's release week: plausible for the analyzer
#: The values the attacker pushes, one per field of the usage kind (issue 16 used the first two).
TARGETS = {
    "command": "logout",
    "modules": "azure",
    "platform": "linux-riscv64",
    "cli_version": "0.9",
}


def _spec(name: str) -> Any:
    return SCHEMA.kind("usage").field(name)


def _patterns(name: str) -> str:
    """``name``: its number of possible output patterns, C(D, k), for the reading note."""
    law = pattern_law(_spec(name).randomizer())
    assert law is not None
    d, k, _ = law
    return f"`{name}`: {math.comb(d, k):,}"


def _target_index(name: str) -> int:
    return list(_spec(name).domain).index(TARGETS[name])


def _subset(name: str, rng: np.random.Generator | None) -> list[int]:
    """The target plus k-1 other items: fixed (lowest indices) or drawn at random."""
    law = pattern_law(_spec(name).randomizer())
    assert law is not None
    d, k, _ = law
    target = _target_index(name)
    others = [i for i in range(d) if i != target]
    if rng is None:
        chosen = others[: k - 1]
    else:
        chosen = [int(i) for i in rng.choice(others, size=k - 1, replace=False)]
    return sorted([target, *chosen])


def crafted(template: bytes, count: int, rng: np.random.Generator | None) -> list[bytes]:
    """``count`` crafted usage reports: every targeted field supports its target."""
    doc = json.loads(template)
    out = []
    for _ in range(count):
        fields = dict(doc["fields"])
        for name in TARGETS:
            fields[name] = _subset(name, rng)
        out.append(pad(canonical_dumps({**doc, "fields": fields}).encode()))
    return out


def estimate(items: list[bytes], screen: bool) -> AggregateResult:
    counts = count_plaintexts(items, kind="usage")
    # No consistency step: its clipping at 0 would hide shifts of rare values.
    return finalize(counts, delta=None, screen=screen, consistency="none")


def freqs(result: AggregateResult) -> dict[str, np.ndarray]:
    group = result.group("usage", PERIOD)
    return {fr.name: np.asarray(fr.estimate.freq, dtype=float) for fr in group.fields}


def run(honest_n: int, seeds: int) -> str:
    rows: dict[tuple[str, float, bool], list[dict[str, float]]] = {}
    honest_rows: list[dict[str, float]] = []
    started = time.perf_counter()
    for seed in range(seeds):
        population = make_population(honest_n, seed=1000 + seed, periods=(PERIOD,))
        honest = [
            r
            for r in population.reports(GeneratorSource(np.random.default_rng(2000 + seed)))
            if b'"kind":"usage"' in r
        ]
        base = freqs(estimate(honest, screen=False))
        screened = estimate(honest, screen=True)
        on = freqs(screened)
        trims = sum(len(fr.trims) for g in screened.groups for fr in g.fields)
        honest_rows.append(
            {
                "trims": float(trims),
                "max_move": max(float(np.max(np.abs(on[f] - base[f]))) for f in base),
            }
        )
        rng = np.random.default_rng(3000 + seed)
        for share in (0.01, 0.05):
            m = round(share * len(honest) / (1 - share))
            for attacker in ("naive", "randomizing"):
                bad = crafted(honest[0], m, rng if attacker == "randomizing" else None)
                for screen in (False, True):
                    got = freqs(estimate(honest + bad, screen))
                    row = {}
                    for name in TARGETS:
                        t = _target_index(name)
                        row[name] = float(got[name][t] - base[name][t])
                        rest = np.delete(got[name] - base[name], t)
                        row[f"{name}_others"] = float(np.max(np.abs(rest)))
                    rows.setdefault((attacker, share, screen), []).append(row)
    seconds = time.perf_counter() - started

    lines = [
        "## Poisoning: crafted reports vs the pattern screen",
        "",
        machine_line(),
        "",
        f"{honest_n:,} simulated users (about {len(honest):,} usage reports) per seed, "
        f"{seeds} seeds, period {PERIOD}; crafted usage reports added at 1% and 5% of the total. "
        "Each cell: mean shift of the target's estimated frequency over the seeds (percentage "
        "points, crafted minus honest-only; unbiased estimates without a consistency step), "
        "and in brackets the largest shift of any other value of that field. Targets: "
        + ", ".join(f"`{k}={v}`" for k, v in TARGETS.items())
        + ".",
        "",
        "| attacker | crafted | screen | "
        + " | ".join(f"{name}={TARGETS[name]}" for name in TARGETS)
        + " |",
        "|---|---|---|" + "---|" * len(TARGETS),
    ]
    for (attacker, share, screen), got in sorted(rows.items(), key=lambda kv: kv[0]):
        cells = []
        for name in TARGETS:
            shift = 100 * np.mean([r[name] for r in got])
            other = 100 * np.mean([r[f"{name}_others"] for r in got])
            cells.append(f"+{shift:.1f} ({other:.1f})")
        lines.append(
            f"| {attacker} | {100 * share:g}% | {'on' if screen else 'off'} | "
            + " | ".join(cells)
            + " |"
        )
    trims = sum(r["trims"] for r in honest_rows)
    move = max(r["max_move"] for r in honest_rows)
    lines += [
        "",
        f"Honest data alone: the screen trimmed {trims:g} patterns over {seeds} seeds x "
        f"{len(TARGETS) + 1} fields (bound: alpha = 1e-6 per field), and moved no estimate by "
        f"more than {100 * move:.2g} percentage points.",
        "",
        "Reading it: the screen cuts a naive attacker down to the bound's slack where a field "
        f"has many patterns ({_patterns('platform')}, {_patterns('cli_version')}) and barely "
        f"where it has few ({_patterns('command')}, {_patterns('modules')}: the share one "
        "pattern may honestly reach is large there). "
        "Against the pattern-randomizing attacker it does nothing: every one of its patterns "
        "stays within what honest clients produce (docs/THREAT-MODEL.md, section 4). "
        f"Run time {seconds:.0f} s (`bench/poisoning.py --honest {honest_n} --seeds {seeds}`).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--honest", type=int, default=20_000, help="simulated users per seed")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    body = run(args.honest, args.seeds)
    print(body)
    if not args.no_write:
        write_section("poisoning", body)


if __name__ == "__main__":
    main()
