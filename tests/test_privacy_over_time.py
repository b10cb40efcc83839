"""Every yearly privacy number is checked against the exact transcript loss of the real channels.

The calculator (``ldp.transcript``) enumerates every transcript of the randomizers the client
uses; these tests run it on adversarial pairs of histories (values that change every week, at
epoch boundaries, in the middle of epochs, at every stagger offset) and on the reviewers'
table in issue 17, and check it against a brute-force enumeration on a tiny channel.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Hashable, Sequence

import numpy as np
import pytest

from ldp.epochs import epoch_offset
from ldp.errors import SchemaError
from ldp.longitudinal import longitudinal
from ldp.schema import FieldSpec, known_schemas, load_schema, shipped_schema
from ldp.transcript import (
    Channel,
    Group,
    epoch_groups,
    exact_loss,
    field_channel,
    fresh_groups,
    memo_groups,
)

V1, V2 = known_schemas()
WEEKS = 52


def v1_field(name: str) -> FieldSpec:
    """A field of the v1 schema (the scheme shipped before v2)."""
    for spec in V1.fields:
        if spec.name == name:
            return spec
    raise KeyError(name)


def v2_field(name: str) -> FieldSpec:
    """A field of the shipped v2 schema."""
    for spec in V2.fields:
        if spec.name == name:
            return spec
    raise KeyError(name)


def v1_loss(name: str, a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Exact loss of two histories under v1's memo-per-value channel."""
    channel = field_channel(v1_field(name).randomizer())
    return exact_loss(channel, memo_groups(a), memo_groups(b))


def v2_loss(spec: FieldSpec, a: Sequence[Hashable], b: Sequence[Hashable], offset: int) -> float:
    """Exact loss of two 52-week histories under v2's epochs at one stagger offset."""
    assert spec.epoch_weeks is not None
    channel = field_channel(spec.randomizer())
    groups_a = epoch_groups(a, spec.epoch_weeks, offset)
    groups_b = epoch_groups(b, spec.epoch_weeks, offset)
    return exact_loss(channel, groups_a, groups_b)


class TestCalculator:
    """The calculator equals brute force over every transcript on a tiny channel."""

    @staticmethod
    def brute(channel: Channel, groups: list[Group], transcript: tuple[int, ...]) -> float:
        """P[transcript | groups], summing over every hidden draw of every group."""
        total = 1.0
        for weeks, value in groups:
            row = channel.prior[channel.row(value)]
            total *= sum(
                row[s] * math.prod(channel.emit[s, transcript[t]] for t in weeks)
                for s in range(len(row))
            )
        return total

    @pytest.mark.parametrize(
        ("a", "b"),
        [((0, 0, 0), (0, 0, 1)), ((0, 1, 0), (1, 0, 1)), ((0, 1, 2), (2, 2, 2))],
    )
    @pytest.mark.parametrize("scheme", ["memo", "fresh", "epoch"])
    def test_matches_brute_force(self, a: tuple[int, ...], b: tuple[int, ...], scheme: str) -> None:
        """Max log-ratio over all 3^3 transcripts of a GRR(d=3) memo+IRR channel, by hand."""
        channel = field_channel(longitudinal("grr", 3, 1.5, 0.7))

        def groups(h: tuple[int, ...]) -> list[Group]:
            if scheme == "memo":
                return memo_groups(h)
            if scheme == "fresh":
                return fresh_groups(h)
            return epoch_groups(h, 2, 1)

        best = 0.0
        for transcript in itertools.product(range(3), repeat=3):
            pa = self.brute(channel, groups(a), transcript)
            pb = self.brute(channel, groups(b), transcript)
            if pa > 0 or pb > 0:
                best = max(best, abs(math.log(pa) - math.log(pb)))
        assert exact_loss(channel, groups(a), groups(b)) == pytest.approx(best, rel=1e-9)

    def test_unreachable_transcript_is_infinite(self) -> None:
        """A transcript possible under one history only is an infinite loss."""
        channel = Channel((0, 1), np.eye(2), np.eye(2))
        assert math.isinf(exact_loss(channel, fresh_groups([0]), fresh_groups([1])))


class TestV1Table:
    """The reviewers' numbers for the v1 scheme, reproduced: changes leak past the stated bound."""

    def test_os_change_after_four_weeks_exceeds_what_v1_stated(self) -> None:
        """linux 8 weeks vs linux 4 + macos 4: 5.64, over the 4.0 v1 stated for two values."""
        assert v1_loss("os", [0, 0], [0, 1]) == pytest.approx(1.3119, abs=1e-3)
        loss = v1_loss("os", [0] * 8, [0] * 4 + [1] * 4)
        assert loss == pytest.approx(5.6357, abs=1e-3)
        assert loss > 2 * v1_field("os").randomizer().epsilon_perm

    @pytest.mark.parametrize("name", ["cli_version", "os", "arch"])
    def test_two_reports_of_one_value_are_not_additive(self, name: str) -> None:
        """Two reports of one unchanged value reveal more than 2 x epsilon_1 (os: 1.46 > 1.2)."""
        loss = v1_loss(name, [0, 0], [1, 1])
        assert loss > 2 * v1_field(name).randomizer().epsilon_1

    def test_v1_schema_is_not_sendable(self) -> None:
        """v1 has no finite yearly bound, so the client refuses to send under it."""
        assert not V1.sendable and V2.sendable and shipped_schema() is V2


def _histories(spec: FieldSpec, rng: np.random.Generator) -> list[tuple[list[Hashable], ...]]:
    """Adversarial 52-week pairs: constant vs changing every week, alternating, differing only
    mid-epoch, and seeded random pairs."""
    channel = field_channel(spec.randomizer())
    values = list(channel.values)
    x, y = values[0], values[-1]
    weekly = [values[t % len(values)] for t in range(WEEKS)]
    pairs: list[tuple[list[Hashable], ...]] = [
        ([x] * WEEKS, weekly),
        ([x] * WEEKS, [y] * WEEKS),
        ([x, y] * (WEEKS // 2), [y, x] * (WEEKS // 2)),
        ([x] * 26 + [y] * 26, [x] * WEEKS),
    ]
    for _ in range(2):
        pairs.append(
            (
                [values[i] for i in rng.integers(0, len(values), WEEKS)],
                [values[i] for i in rng.integers(0, len(values), WEEKS)],
            )
        )
    return pairs


@pytest.mark.parametrize("name", [spec.name for spec in V2.fields])
class TestV2YearlyBound:
    """For every v2 field, no pair of 52-week histories loses more than the stated bound."""

    def test_bound_holds_on_adversarial_pairs_at_every_offset(self, name: str) -> None:
        """Exact loss <= year_bound for every pair and stagger offset; the bound is reached."""
        spec = v2_field(name)
        assert spec.epoch_weeks is not None
        bound = spec.year_bound()
        rng = np.random.default_rng(17)
        pairs = _histories(spec, rng)
        worst = 0.0
        for offset in range(spec.epoch_weeks):
            for a, b in pairs:
                loss = v2_loss(spec, a, b, offset)
                assert loss <= bound + 1e-9, (offset, a, b)
                worst = max(worst, loss)
        # Tight: values that differ in every epoch's first week reach it.
        assert worst == pytest.approx(bound, rel=1e-9)

    def test_change_inside_an_epoch_reveals_nothing(self, name: str) -> None:
        """Histories that differ only after each epoch's first week have loss 0."""
        spec = v2_field(name)
        assert spec.epoch_weeks is not None
        values = list(field_channel(spec.randomizer()).values)
        secret = hashlib.sha256(b"mid-epoch").digest()
        offset = epoch_offset(secret, name, spec.epoch_weeks)
        groups = epoch_groups([values[0]] * WEEKS, spec.epoch_weeks, offset)
        changed = [values[0]] * WEEKS
        for weeks, _ in groups:
            for t in weeks[1:]:
                changed[t] = values[-1]
        assert v2_loss(spec, [values[0]] * WEEKS, changed, offset) == 0.0


class TestV2Table:
    """The reviewers' history pairs, under v2: each within its field's stated yearly bound."""

    def test_platform_change_at_half_year(self) -> None:
        """linux 52 weeks vs linux 26 then macos 26 (v1: 45.95): at most platform's bound."""
        spec = v2_field("platform")
        linux = spec.index("linux-x86_64")
        mac = spec.index("macos-arm64")
        for offset in range(0, 52, 7):
            loss = v2_loss(spec, [linux] * 52, [linux] * 26 + [mac] * 26, offset)
            assert loss <= spec.year_bound() + 1e-9

    def test_command_one_vs_two_alternating(self) -> None:
        """One command every week vs two alternating (v1: 120.7 over 52 weeks): <= 8.0."""
        spec = v2_field("command")
        build, deploy = spec.index("build"), spec.index("deploy")
        for offset in range(16):
            loss = v2_loss(spec, [build] * 52, [build, deploy] * 26, offset)
            assert loss <= spec.year_bound() + 1e-9

    def test_total_is_the_sum_over_fields(self) -> None:
        """Fields draw independently, so the loss of a whole history adds over fields: the
        worst pairs of every field together reach the stated total."""
        total = 0.0
        for spec in V2.fields:
            assert spec.epoch_weeks is not None
            values = list(field_channel(spec.randomizer()).values)
            flip = [values[(t // spec.epoch_weeks) % 2] for t in range(WEEKS)]
            total += v2_loss(spec, [values[0]] * WEEKS, flip[:], 0) + 0.0
        assert total <= sum(spec.year_bound() for spec in V2.fields) + 1e-9


class TestOlhRefused:
    """Longitudinal OLH without epochs is refused: its seed changes with the value."""

    def test_schema_refuses_olh_without_epochs(self) -> None:
        """A v1-style field naming OLH is refused with a reason."""
        doc = V1.to_json()
        doc["kinds"][0]["fields"][3]["mechanism"] = "olh"
        with pytest.raises(SchemaError, match="OLH"):
            load_schema(__import__("json").dumps(doc))
