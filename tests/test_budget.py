"""The epsilon ledger: per-report and lifetime epsilon, and the on-disk digest ledger."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from ldp.budget import (
    Ledger,
    lifetime_worst_case,
    memo_digest,
    per_report_epsilon,
)
from ldp.errors import DecodeError, ParameterError
from ldp.longitudinal import FieldRandomizer, longitudinal, prr_label
from ldp.sets import SetOracle

SECRET = hashlib.sha256(b"budget-test").digest()


@dataclass(frozen=True)
class Field:
    """A stand-in for ldp.schema.FieldSpec: a name and its randomizer."""

    name: str
    r: FieldRandomizer

    def randomizer(self) -> FieldRandomizer:
        return self.r


@dataclass(frozen=True)
class Kind:
    """A stand-in for ldp.schema.ReportKind."""

    fields: tuple[Field, ...]


def usage_kind() -> Kind:
    """Two categorical fields and one set field, with distinct epsilons."""
    return Kind(
        (
            Field("os", longitudinal("grr", 4, 2.0, 0.5)),
            Field("command", longitudinal("auto", 20, 3.0, 1.0)),
            Field("modules", SetOracle(6, 3, 2.0, 0.75)),
        )
    )


def digest(i: int) -> str:
    """The i-th distinct well-formed digest."""
    return hashlib.sha256(str(i).encode()).hexdigest()


class TestPerReportEpsilon:
    """One report costs the sum of its fields' achieved epsilon_1."""

    def test_sum_of_achieved_epsilon_1(self) -> None:
        """The sum equals the fields' achieved epsilon_1 and stays within the requested 2.25."""
        kind = usage_kind()
        expected = sum(f.r.epsilon_1 for f in kind.fields)
        assert per_report_epsilon(kind) == expected
        assert 2.25 - 1e-5 < per_report_epsilon(kind) <= 2.25

    def test_accepts_a_plain_sequence_of_fields(self) -> None:
        """A bare iterable of named fields works like a kind."""
        kind = usage_kind()
        assert per_report_epsilon(list(kind.fields)) == per_report_epsilon(kind)


class TestLifetimeWorstCase:
    """The worst case charges epsilon_perm for every memo key a field could ever use."""

    def test_categorical_counts_d_and_sets_count_d_plus_pad(self) -> None:
        """4 x 2.0 + 20 x 3.0 + (6 + 3) x 2.0 = 86, up to rounding of each epsilon_perm."""
        assert lifetime_worst_case(usage_kind()) == pytest.approx(86.0, abs=1e-4)
        assert lifetime_worst_case(usage_kind()) <= 86.0


class TestMemoDigest:
    """Digests are keyed by the secret and never reveal the label."""

    def test_deterministic_keyed_and_opaque(self) -> None:
        """Same inputs give the same 64-hex digest; another secret or label gives another."""
        label = prr_label("os", 2)
        d1 = memo_digest(SECRET, label)
        assert d1 == memo_digest(SECRET, label)
        assert len(d1) == 64 and int(d1, 16) >= 0
        assert d1 != memo_digest(b"x" * 32, label)
        assert d1 != memo_digest(SECRET, prr_label("os", 3))
        assert d1 != hashlib.sha256(label).hexdigest()

    def test_domain_separated_from_the_prr_stream(self) -> None:
        """A digest is not the HMAC block that seeds the PRR of the same label."""
        label = prr_label("os", 2)
        block = hmac.new(SECRET, label + b"\x00" + (0).to_bytes(8, "big"), hashlib.sha256)
        assert memo_digest(SECRET, label) != block.hexdigest()
        assert memo_digest(SECRET, label) != hmac.new(SECRET, label, hashlib.sha256).hexdigest()

    def test_short_secret_is_refused(self) -> None:
        """A secret under 16 bytes raises ParameterError naming its length."""
        with pytest.raises(ParameterError, match="8 bytes"):
            memo_digest(b"12345678", b"prr/os/1")


class TestLedger:
    """A small JSON file of digests, written atomically with mode 0600."""

    def test_record_counts_distinct_digests_across_instances(self, tmp_path: Path) -> None:
        """New digests count once, repeats are ignored, and a fresh instance sees them all."""
        ledger = Ledger(tmp_path / "state" / "ledger.json")
        assert ledger.count("os") == 0
        assert ledger.record("os", digest(1)) is True
        assert ledger.record("os", digest(1)) is False
        assert ledger.record("os", digest(2)) is True
        assert ledger.record("modules", digest(1)) is True
        again = Ledger(tmp_path / "state" / "ledger.json")
        assert again.count("os") == 2
        assert again.counts() == {"modules": 1, "os": 2}

    def test_actual_lifetime_epsilon(self, tmp_path: Path) -> None:
        """Actual spend is epsilon_perm times the recorded keys per field, over given kinds."""
        kind = usage_kind()
        ledger = Ledger(tmp_path / "ledger.json")
        os_r, cmd_r, mod_r = (f.r for f in kind.fields)
        ledger.record_value(os_r, "os", 1, SECRET)
        ledger.record_value(os_r, "os", 3, SECRET)
        ledger.record_value(os_r, "os", 1, SECRET)
        ledger.record_value(mod_r, "modules", frozenset({0, 2}), SECRET)
        ledger.record_value(mod_r, "modules", frozenset({2, 0}), SECRET)
        ledger.record("unrelated", digest(9))
        expected = 2 * os_r.epsilon_perm + 1 * mod_r.epsilon_perm
        assert ledger.actual_lifetime_epsilon(kind) == pytest.approx(expected)
        assert ledger.actual_lifetime_epsilon() == 0.0
        assert ledger.actual_lifetime_epsilon(kind) < lifetime_worst_case(kind)
        assert cmd_r.memo_space == 20

    def test_file_holds_only_digests_with_mode_0600(self, tmp_path: Path) -> None:
        """The file is owner-only and contains no label, value or field value string."""
        path = tmp_path / "ledger.json"
        ledger = Ledger(path)
        r = longitudinal("grr", 4, 2.0, 1.0)
        ledger.record_value(r, "os", 2, SECRET)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        raw = path.read_bytes()
        assert b"prr/" not in raw and b"pick/" not in raw
        doc = json.loads(raw)
        assert doc == {"fields": {"os": [memo_digest(SECRET, prr_label("os", 2))]}, "v": 1}

    def test_failed_write_keeps_the_old_file_and_no_temp(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the rename fails, the previous ledger is intact and no temporary file remains."""
        path = tmp_path / "ledger.json"
        ledger = Ledger(path)
        ledger.record("os", digest(1))
        before = path.read_bytes()

        def boom(src: str, dst: str) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(os, "replace", boom)
        with pytest.raises(OSError, match="disk full"):
            ledger.record("os", digest(2))
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json", "ledger.json.lock"]

    def test_concurrent_writers_lose_nothing(self, tmp_path: Path) -> None:
        """Four writers recording 25 digests each leave exactly 100 in the ledger."""
        path = tmp_path / "ledger.json"

        def writer(w: int) -> None:
            ledger = Ledger(path)
            for i in range(25):
                ledger.record("command", digest(w * 100 + i))

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert Ledger(path).count("command") == 100

    @pytest.mark.parametrize(
        "content",
        [
            "not json",
            "[]",
            '{"v": 2, "fields": {}}',
            '{"v": 1}',
            '{"v": 1, "fields": {"os": ["x"]}}',
        ],
    )
    def test_corrupt_file_raises_decode_error(self, tmp_path: Path, content: str) -> None:
        """A malformed ledger raises DecodeError naming the file, never a silent zero."""
        path = tmp_path / "ledger.json"
        path.write_text(content)
        with pytest.raises(DecodeError, match="ledger"):
            Ledger(path).count("os")

    @pytest.mark.parametrize("bad", ["", "ABC", "g" * 64, digest(1).upper(), 5])
    def test_malformed_digest_is_refused(self, tmp_path: Path, bad: object) -> None:
        """Only 64 lowercase hex digits are accepted as a digest."""
        with pytest.raises(ParameterError):
            Ledger(tmp_path / "ledger.json").record("os", bad)

    def test_purge_removes_the_ledger(self, tmp_path: Path) -> None:
        """purge deletes the file and its lock; purging again is harmless."""
        ledger = Ledger(tmp_path / "ledger.json")
        ledger.record("os", digest(1))
        ledger.purge()
        ledger.purge()
        assert list(tmp_path.iterdir()) == []
        assert ledger.count("os") == 0
