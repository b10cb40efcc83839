"""docs/THREAT-MODEL.md's gain table is the shipped channels' own numbers."""

from __future__ import annotations

from pathlib import Path

from ldp.schema import shipped_schema
from server_agg.poisoning import pattern_law

DOC = (Path(__file__).resolve().parent.parent / "docs" / "THREAT-MODEL.md").read_text()


class TestGainTable:
    def test_rows_match_the_channels(self) -> None:
        """Each field's D, k, p*, q* and gain per crafted report ((1 - q*)/(p* - q*), times the
        pad for a set field) are printed as the code computes them."""
        for kind in shipped_schema().kinds:
            for spec in kind.fields:
                randomizer = spec.randomizer()
                oracle = getattr(randomizer, "oracle", randomizer)
                p, q = oracle.p_star, oracle.q_star
                law = pattern_law(randomizer)
                assert law is not None
                d, k, _ = law
                pad = spec.pad or 1
                gain = pad * (1 - q) / (p - q)
                cells = f"| {d} | {k} | {p:.3f} | {q:.3f} | {gain:.2f}x | {k} |"
                row = next(line for line in DOC.splitlines() if f"| {spec.name} |" in line)
                assert row.startswith(f"| {kind.name} | {spec.name} |") and row.endswith(cells)
