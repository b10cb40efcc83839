"""Constant-size reports (issue 14): one sealed length for every kind, schema and value."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pytest

from ldp.envelope import generate_keypair, open_sealed, seal
from ldp.errors import PaddingError, TooLargeError
from ldp.mechanisms import SS
from ldp.report import (
    PADDED_BYTES,
    SEALED_BYTES,
    Report,
    build_report,
    decode_plaintext,
    pad,
    unpad,
)
from ldp.sampling import HmacSource
from ldp.schema import FieldSpec, Schema, known_schemas
from server_agg.aggregate import REJECT_REASONS, count_ciphertexts, count_plaintexts

PRIVATE, PUBLIC = generate_keypair()
PERIOD = "2026-W49"
SCHEMAS = {s.id: s for s in known_schemas()}
V1, V2 = known_schemas()


def _ss(spec: FieldSpec) -> SS:
    """The Subset Selection oracle behind a field (every field of v1 and v2 is one)."""
    randomizer: Any = spec.randomizer()
    base = getattr(randomizer, "base", None) or randomizer.oracle.base
    assert isinstance(base, SS)
    return base


def _edge_values(spec: FieldSpec) -> list[object]:
    """Every domain edge: categorical first, last, ``other`` and an unknown string; sets of
    every size from empty to the whole domain (prefixes and suffixes) and unknown items."""
    domain = list(spec.domain)
    if spec.kind == "categorical":
        return [domain[0], domain[-2], domain[-1], "not-a-value"]
    out: list[object] = [set(), {"not-an-item"}]
    for size in range(1, len(domain) + 1):
        out += [set(domain[:size]), set(domain[-size:])]
    return out


def _pick(rng: np.random.Generator, options: list[object]) -> object:
    return options[int(rng.integers(len(options)))]


def _random_values(schema: Schema, kind: str, rng: np.random.Generator) -> dict[str, object]:
    values: dict[str, object] = {}
    for spec in schema.kind(kind).fields:
        edges = _edge_values(spec)
        if spec.kind == "categorical":
            values[spec.name] = _pick(rng, [*spec.domain, *edges])
        else:
            size = int(rng.integers(len(spec.domain) + 1))
            picked = {spec.domain[int(i)] for i in rng.choice(spec.d, size, replace=False)}
            values[spec.name] = _pick(rng, [picked, *edges])
    return values


class TestPad:
    def test_round_trip(self) -> None:
        """unpad(pad(r)) is r, and pad gives exactly PADDED_BYTES."""
        report = b'{"a":1}'
        padded = pad(report)
        assert len(padded) == PADDED_BYTES == 512
        assert padded.rstrip(b" ") == report and unpad(padded) == report

    def test_too_long_to_pad(self) -> None:
        """A report longer than the padded length is refused, never sent longer."""
        with pytest.raises(TooLargeError, match="padded length is 512"):
            pad(b"{" + b"1" * 600 + b"}")

    @pytest.mark.parametrize(
        ("data", "why"),
        [
            (b'{"a":1}' + b" " * 100, "must be 512"),
            (b'{"a":1}' + b" " * 506, "must be 512"),
            (b'{"a":1}' + b"\x00" * 505, "closing brace"),
            (b'{"a":1} ' + b"x" + b" " * 503, "closing brace"),
            (b" " * 512, "closing brace"),
        ],
    )
    def test_bad_padding(self, data: bytes, why: str) -> None:
        """Anything but a report then spaces up to exactly 512 bytes is a PaddingError."""
        with pytest.raises(PaddingError, match=why):
            unpad(data)


class TestOneLength:
    def test_every_kind_schema_and_value_has_one_sealed_length(self) -> None:
        """Reports of both schemas and every kind, for seeded random values and every domain
        edge and set size, all seal to exactly SEALED_BYTES (560) bytes."""
        rng = np.random.default_rng(14)
        lengths: set[int] = set()
        plain: set[int] = set()
        count = 0
        for schema in known_schemas():
            for kind in schema.kind_names:
                fields = schema.kind(kind).fields
                cases = [_random_values(schema, kind, rng) for _ in range(150)]
                # Each field walked through all of its edges, the others random.
                for spec in fields:
                    for edge in _edge_values(spec):
                        cases.append({**_random_values(schema, kind, rng), spec.name: edge})
                for i, values in enumerate(cases):
                    secret = rng.bytes(32)
                    rand = HmacSource(secret, f"case-{i}".encode())
                    report = build_report(schema, kind, PERIOD, values, secret, rand)
                    plain.add(len(report.encode()))
                    sealed = seal(report.padded(), PUBLIC)
                    lengths.add(len(sealed))
                    assert decode_plaintext(open_sealed(sealed, PRIVATE), SCHEMAS) == report
                    count += 1
        assert count > 600
        assert len(plain) > 5  # the unpadded lengths do vary: the padding is doing the work
        assert lengths == {SEALED_BYTES} == {560}

    @pytest.mark.parametrize("schema", known_schemas(), ids=lambda s: f"v{s.version}")
    def test_longest_possible_report_fits(self, schema: Schema) -> None:
        """The longest legal report of every kind (each field's k largest indices, so the most
        digits) is at most PADDED_BYTES, with room to spare for future schemas."""
        for kind in schema.kind_names:
            fields: dict[str, Any] = {}
            for spec in schema.kind(kind).fields:
                ss = _ss(spec)
                fields[spec.name] = list(range(ss.d - ss.k, ss.d))
                spec.randomizer().validate(fields[spec.name])
            longest = Report(schema.id, kind, "9999-W52", fields).encode()
            assert len(longest) <= PADDED_BYTES // 2
            assert len(pad(longest)) == PADDED_BYTES


def _usage(schema: Schema, seed: int) -> Report:
    rng = np.random.default_rng(seed)
    secret = rng.bytes(32)
    values = _random_values(schema, "usage", rng)
    return build_report(schema, "usage", PERIOD, values, secret, HmacSource(secret, b"u"))


class TestAnalyzerPadding:
    def test_padding_is_a_reject_reason(self) -> None:
        """Bad padding is counted under its own reason."""
        assert "padding" in REJECT_REASONS

    def test_padded_reports_of_both_schemas_count(self) -> None:
        """Padded v1 and v2 reports are opened, stripped and counted."""
        reports = [_usage(V1, i).padded() for i in range(20)]
        reports += [_usage(V2, i).padded() for i in range(30)]
        counts = count_ciphertexts([seal(r, PUBLIC) for r in reports], PRIVATE, known_schemas())
        assert counts.accepted == 50 and not counts.rejects

    def test_legacy_unpadded_v1_still_counts(self) -> None:
        """Unpadded v1 reports (what release 0.1.0 sent, already stored) are still read."""
        reports = [_usage(V1, i).encode() for i in range(20)]
        counts = count_plaintexts(reports, known_schemas())
        assert counts.accepted == 20 and not counts.rejects

    def test_unpadded_v2_is_refused(self) -> None:
        """A v2 report was never sent unpadded: one that comes so is a padding reject."""
        reports = [_usage(V2, i).encode() for i in range(10)]
        counts = count_plaintexts(reports, known_schemas())
        assert counts.accepted == 0 and counts.rejects == {"padding": 10}

    def test_bad_padding_in_a_chunk_is_counted_and_the_rest_kept(self) -> None:
        """A chunk with a few badly padded reports falls back to the per-report path: they are
        counted as padding rejects, every other report as before (fast and slow agree)."""
        good = [_usage(V2, i).padded() for i in range(40)] + [_usage(V1, 99).encode()]
        short = _usage(V2, 100).encode() + b" " * 10
        nul = _usage(V2, 101).encode().ljust(PADDED_BYTES, b"\x00")
        trailing = (_usage(V2, 102).encode() + b" x").ljust(PADDED_BYTES, b" ")
        mixed = count_plaintexts([*good, short, nul, trailing], known_schemas())
        alone = count_plaintexts(good[:40], known_schemas())
        assert mixed.rejects == {"padding": 3}
        assert mixed.accepted == 41
        v2 = next(k for k in alone.groups if k.schema_id == V2.id)
        for name, vector in alone.groups[v2].support.items():
            assert list(mixed.groups[v2].support[name]) == list(vector)

    def test_fast_and_strict_paths_agree_on_every_subset_of_forms(self) -> None:
        """Every mix of padded, legacy and bad plaintexts gives the same totals whether counted
        as one chunk or one report at a time."""
        forms = [
            _usage(V2, 1).padded(),
            _usage(V1, 2).padded(),
            _usage(V1, 3).encode(),
            _usage(V2, 4).encode(),
            _usage(V2, 5).encode() + b" ",
        ]
        for size in range(1, len(forms) + 1):
            for subset in combinations(forms, size):
                whole = count_plaintexts(list(subset), known_schemas())
                one_by_one = [count_plaintexts([x], known_schemas()) for x in subset]
                total = one_by_one[0]
                for part in one_by_one[1:]:
                    total.add(part)
                assert whole.to_plain() == total.to_plain()


class TestCollectorLength:
    def test_serve_default_is_the_sealed_length(self) -> None:
        """`20i-agg serve` refuses every length but SEALED_BYTES by default (its literal is
        the same number as ldp's)."""
        from server_agg import app

        assert app.SEALED_BYTES == SEALED_BYTES
