"""The epsilon budget: per-report epsilon, the yearly bound and this machine's actual spend."""

from __future__ import annotations

import hashlib
import json
import math
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from ldp.budget import per_report_epsilon, year_budget
from ldp.epochs import EpochMemo, epochs_touched, week_index
from ldp.errors import DecodeError
from ldp.longitudinal import FieldRandomizer, longitudinal
from ldp.report import build_report, epoch_responses
from ldp.schema import Schema, known_schemas, load_schema, shipped_schema
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


class TestYearBudget:
    """The yearly bound is epochs touched times epsilon per field; v1 has none."""

    def test_v2_bound_per_field_kind_and_total(self) -> None:
        """Each v2 field's bound is (ceil(51/R)+1) x its achieved epsilon; kinds and total add."""
        schema = shipped_schema()
        budget = year_budget(schema)
        for row in budget.fields:
            spec = schema.kind(row.kind).field(row.name)
            assert spec.epoch_weeks is not None
            expected = (math.ceil(51 / spec.epoch_weeks) + 1) * spec.randomizer().epsilon_perm
            assert row.bound == pytest.approx(expected, rel=1e-12)
        assert budget.total == pytest.approx(sum(r.bound for r in budget.fields))
        assert budget.total == pytest.approx(
            budget.kind_bound("usage") + budget.kind_bound("errors")
        )
        assert budget.total <= 20.0

    def test_v1_is_unbounded(self) -> None:
        """A v1 field (memo per value) has no finite yearly bound, and JSON says null."""
        v1 = known_schemas()[0]
        budget = year_budget(v1)
        assert math.isinf(budget.total)
        assert budget.to_json()["total"] is None

    def test_epochs_touched(self) -> None:
        """52 weeks meet at most ceil(51/R)+1 epochs: 52 for R=1, 5 for 16, 2 for 52."""
        assert [epochs_touched(r) for r in (1, 13, 16, 17, 26, 52)] == [52, 5, 5, 4, 3, 2]
        # Brute force over every alignment of a 52-week window against epochs of R weeks.
        for r in range(1, 53):
            worst = max(len({(start + t) // r for t in range(52)}) for start in range(r))
            assert worst == epochs_touched(r)

    def test_actual_spend_never_exceeds_the_bound(self, tmp_path: Path) -> None:
        """A machine reporting every week for 3 years: its spend in every trailing 52 weeks is
        within the bound, and reaches it in some weeks."""
        schema = _unexpiring(shipped_schema())
        memo = EpochMemo(tmp_path / "epochs.json")
        secret = hashlib.sha256(b"actual").digest()
        start = week_index("2027-W01")
        reached = False
        for week in range(start, start + 156):
            period = _period(week)
            values = {
                "cli_version": ["1.4", "1.5", "2.0"][week % 3],
                "platform": "linux-x86_64",
                "command": ["build", "deploy"][week % 2],
                "modules": {"docker"} if week % 2 else set(),
            }
            build_report(schema, "usage", period, values, secret, memo=memo)
            memo.commit(epoch_responses(schema, "usage", period, values, secret, memo), week)
            budget = year_budget(schema, kinds=("usage",), memo=memo, period=period)
            assert budget.actual_total is not None
            assert budget.actual_total <= budget.kind_bound("usage") + 1e-9
            reached = reached or budget.actual_total >= budget.kind_bound("usage") - 1e-9
        assert reached


def _unexpiring(schema: Schema) -> Schema:
    """The schema without review and expiry dates, for histories longer than a review cycle."""
    doc = schema.to_json()
    for kind in doc["kinds"]:
        for spec in kind["fields"]:
            spec.pop("reviewed", None)
            spec.pop("expires", None)
    return load_schema(json.dumps(doc))


def _period(week: int) -> str:
    from ldp.epochs import week_period

    return week_period(week)


class TestEpochMemo:
    """The memo freezes one response per field and epoch and counts epochs that reported."""

    def test_frozen_response_survives_a_changed_value(self, tmp_path: Path) -> None:
        """Inside an epoch the report repeats the first week's response whatever the value."""
        schema = _unexpiring(shipped_schema())
        spec = schema.kind("usage").field("command")
        assert spec.epoch_weeks is not None
        memo = EpochMemo(tmp_path / "epochs.json")
        secret = hashlib.sha256(b"freeze").digest()
        seen = {}
        commands = ["build", "deploy", "logs", "init", "up", "down"]
        start = week_index("2027-W10")
        for i, week in enumerate(range(start, start + 3 * spec.epoch_weeks)):
            period = _period(week)
            values = {"cli_version": "1.4", "platform": "linux-x86_64", "modules": set()}
            values["command"] = commands[i % len(commands)]
            report = build_report(schema, "usage", period, values, secret, memo=memo)
            responses = epoch_responses(schema, "usage", period, values, secret, memo)
            memo.commit(responses, week)
            epoch = responses["command"][0]
            seen.setdefault(epoch, report.fields["command"])
            assert report.fields["command"] == seen[epoch]
        assert len(seen) in (3, 4)

    def test_file_mode_and_no_true_values(self, tmp_path: Path) -> None:
        """The memo file is 0600 and holds responses (index lists), never a value's name."""
        schema = shipped_schema()
        memo = EpochMemo(tmp_path / "epochs.json")
        secret = hashlib.sha256(b"mode").digest()
        values = {
            "cli_version": "1.4",
            "platform": "macos-arm64",
            "command": "deploy",
            "modules": {"docker"},
        }
        memo.commit(epoch_responses(schema, "usage", "2027-W10", values, secret), 3000)
        assert stat.S_IMODE(memo.path.stat().st_mode) == 0o600
        text = memo.path.read_text()
        for word in ("deploy", "macos", "docker", "1.4"):
            assert word not in text
        assert set(json.loads(text)["fields"]) == {"cli_version", "platform", "command", "modules"}

    @pytest.mark.parametrize("content", ["{", "[]", '{"v": 2}', '{"v": 1, "fields": {"a": 1}}'])
    def test_damaged_memo_is_a_decode_error(self, tmp_path: Path, content: str) -> None:
        """A damaged memo file raises DecodeError rather than being trusted."""
        path = tmp_path / "epochs.json"
        path.write_text(content)
        with pytest.raises(DecodeError):
            EpochMemo(path).load()

    def test_purge(self, tmp_path: Path) -> None:
        """purge() removes the file; a missing file is an empty memo."""
        memo = EpochMemo(tmp_path / "epochs.json")
        memo.commit({"command": (1, [1, 2])}, 10)
        memo.purge()
        assert not memo.path.exists() and memo.load() == {}


class TestNoSecondDraw:
    """A damaged memo stops the report instead of drawing a second answer in one epoch."""

    def test_damaged_response_is_not_redrawn(self, tmp_path: Path) -> None:
        """An invalid frozen response, or a reported epoch whose response is gone, raises."""
        schema = _unexpiring(shipped_schema())
        memo = EpochMemo(tmp_path / "epochs.json")
        secret = hashlib.sha256(b"damaged").digest()
        values = {
            "cli_version": "1.4",
            "platform": "linux-x86_64",
            "command": "build",
            "modules": set(),
        }
        period = "2027-W10"
        responses = epoch_responses(schema, "usage", period, values, secret, memo)
        memo.commit(responses, week_index(period))
        doc = json.loads(memo.path.read_text())
        doc["fields"]["command"]["response"] = [99, 100]
        memo.path.write_text(json.dumps(doc))
        changed = {**values, "command": "deploy"}
        with pytest.raises(DecodeError):
            epoch_responses(schema, "usage", period, changed, secret, memo)
        del doc["fields"]["command"]["response"]
        memo.path.write_text(json.dumps(doc))
        with pytest.raises(DecodeError):
            epoch_responses(schema, "usage", period, changed, secret, memo)
        epoch = responses["command"][0]
        doc["fields"]["command"] = {"epoch": epoch - 1, "reported": {str(epoch): 1}}
        memo.path.write_text(json.dumps(doc))
        with pytest.raises(DecodeError):
            epoch_responses(schema, "usage", period, changed, secret, memo)

    def test_not_a_regular_file(self, tmp_path: Path) -> None:
        """A FIFO or a folder at the memo's path is a DecodeError at once, never a hang."""
        import os

        fifo = tmp_path / "fifo.json"
        os.mkfifo(fifo)
        with pytest.raises(DecodeError):
            EpochMemo(fifo).load()
        (tmp_path / "dir.json").mkdir()
        with pytest.raises(DecodeError):
            EpochMemo(tmp_path / "dir.json").load()
