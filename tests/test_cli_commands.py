"""Tests for the `20i telemetry` commands: enable, disable, info, preview, log, policy, help."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
import typer.testing
from typer.testing import CliRunner

from cli import status as status_module
from cli.app import app, main
from cli.compose import compose, compose_reports, sample_count
from cli.sentlog import encode_entry
from ldp.budget import per_report_epsilon
from ldp.envelope import generate_keypair, public_key_to_text
from ldp.epochs import EpochMemo, week_index
from ldp.report import decode_report
from ldp.sampling import HmacSource
from ldp.schema import shipped_schema
from tests.cli_support import ENV_NAMES, built_once_fixture, paths_fixture  # noqa: F401 - fixtures
from twentyi_telemetry import tracking
from twentyi_telemetry.consent import read_consent
from twentyi_telemetry.state import SECRET_BYTES, Paths, ensure_dir
from twentyi_telemetry.tally import (
    ErrorsTally,
    Tally,
    UsageTally,
    iso_period,
    journal_file,
    journal_periods,
)

REPO = Path(__file__).resolve().parent.parent
KEY = public_key_to_text(generate_keypair()[1])
URL = "https://telemetry.example/"
COMMANDS = ("status", "enable", "disable", "info", "preview", "log", "policy")


def run(*args: str, env: dict[str, str | None] | None = None) -> typer.testing.Result:
    return CliRunner().invoke(app, ["telemetry", *args], env=env)


def run_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class TestEnable:
    def test_writes_consent_and_secret(self, paths: Paths) -> None:
        """enable writes the consent file and the secret, prints both, and turns usage on."""
        result = run("enable")
        assert result.exit_code == 0
        assert f"wrote {paths.consent_file}" in result.stdout
        assert f"wrote {paths.secret_file}" in result.stdout
        assert len(paths.secret_file.read_bytes()) == SECRET_BYTES
        assert paths.secret_file.stat().st_mode & 0o777 == 0o600
        consent = read_consent(paths.consent_file).consent
        assert consent is not None and consent.usage.enabled and not consent.errors.enabled
        assert consent.schema_id == shipped_schema().id and consent.policy_version == "2"
        status = run_json("status")
        assert status["usage"]["on"] and not status["errors"]["on"]

    def test_errors_separately(self, paths: Paths) -> None:
        """enable --errors turns on error reports only."""
        assert run("enable", "--errors").exit_code == 0
        status = run_json("status")
        assert (status["usage"]["on"], status["errors"]["on"]) == (False, True)

    def test_twice_keeps_date_and_secret(self, paths: Paths) -> None:
        """A second enable keeps the first as-of time and does not replace the secret."""
        run("enable")
        first, secret = paths.consent_file.read_bytes(), paths.secret_file.read_bytes()
        result = run("enable")
        assert f"wrote {paths.secret_file}" not in result.stdout
        assert json.loads(paths.consent_file.read_bytes())["usage"] == json.loads(first)["usage"]
        assert paths.secret_file.read_bytes() == secret

    def test_notes_env_override(self, paths: Paths) -> None:
        """Enabling under DO_NOT_TRACK records the choice but says telemetry stays off."""
        result = run("enable", env={"DO_NOT_TRACK": "1"})
        assert result.exit_code == 0 and "stays off in this environment" in result.stdout
        assert run("status", "--json", env={"DO_NOT_TRACK": "1"}).stdout.count('"on": false') == 2
        # never a line claiming it is on (it said "Usage telemetry is on" first, before)
        assert " is on" not in result.stdout

    def test_failed_enable_changes_nothing(self, paths: Paths, tmp_path: Path) -> None:
        """An unwritable config dir: one error line, and no secret or folder left behind."""
        paths.config_dir.parent.mkdir(parents=True)
        paths.config_dir.write_text("a file where the config dir should be")
        before = sorted(tmp_path.rglob("*"))
        result = run("enable")
        assert result.exit_code == 1 and "20i: error: " in result.output
        assert sorted(tmp_path.rglob("*")) == before

    def test_every_folder_is_private(self, paths: Paths) -> None:
        """Every folder telemetry creates is mode 0700, the 20i folders above ours included
        (they were 0755)."""
        run("enable")
        tracking.record("up", paths=paths, env={})
        ensure_dir(paths.spool_dir)  # as the worker makes it
        for folder in (
            paths.config_dir,
            paths.state_dir,
            paths.state_dir.parent,
            paths.cache_dir.parent,
        ):
            assert folder.stat().st_mode & 0o777 == 0o700, folder

    def test_never_prompts(self, paths: Paths) -> None:
        """No command reads stdin: with stdin closed they all still finish."""
        for args in (["enable"], ["enable", "--errors"], ["disable", "--purge"]):
            result = CliRunner().invoke(app, ["telemetry", *args], input=None)
            assert result.exit_code == 0, result.output


class TestDisable:
    def test_turns_everything_off(self, paths: Paths) -> None:
        """disable turns usage and errors off and records when."""
        run("enable")
        run("enable", "--errors")
        result = run("disable")
        assert result.exit_code == 0 and f"wrote {paths.consent_file}" in result.stdout
        status = run_json("status")
        assert status["source"] == "consent"
        assert not status["usage"]["on"] and not status["errors"]["on"]
        assert status["usage"]["consent"]["enabled"] is False

    def test_errors_only(self, paths: Paths) -> None:
        """disable --errors leaves usage reports on."""
        run("enable")
        run("enable", "--errors")
        assert run("disable", "--errors").exit_code == 0
        status = run_json("status")
        assert (status["usage"]["on"], status["errors"]["on"]) == (True, False)

    def test_without_prior_consent_sticks(self, paths: Paths) -> None:
        """disable on a fresh machine writes an explicit opt-out."""
        assert run("disable").exit_code == 0
        consent = read_consent(paths.consent_file).consent
        assert consent is not None and consent.usage.as_of is not None
        assert not consent.usage.enabled

    def test_sends_nothing(self, paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
        """disable (with --purge) opens no socket: no farewell report."""
        run("enable")

        def no_network(*args: object, **kwargs: object) -> None:
            raise AssertionError("disable tried to use the network")

        monkeypatch.setattr(socket.socket, "connect", no_network)
        monkeypatch.setattr(socket, "create_connection", no_network)
        assert run("disable", "--purge").exit_code == 0

    def test_purge_removes_every_file(self, paths: Paths) -> None:
        """--purge deletes secret, epoch memo, tally, spool and log, printing each one."""
        run("enable")
        run("enable", "--errors")
        tracking.record("up", paths=paths, env={})
        EpochMemo(paths.epochs_file).commit({"command": (1, [1, 2])}, 10)
        paths.spool_dir.mkdir(parents=True)
        (paths.spool_dir / "r1.sealed").write_bytes(b"sealed")
        paths.sent_log.write_bytes(b"{}\n")
        before = set(snapshot(paths.state_dir)) | set(snapshot(paths.cache_dir))
        journal = journal_file(paths.state_dir, iso_period(datetime.now(UTC)))
        assert {str(journal), str(paths.secret_file), str(paths.epochs_file)} <= before
        result = run("disable", "--purge")
        assert result.exit_code == 0
        removed = {
            line.removeprefix("removed ")
            for line in result.stdout.splitlines()
            if line.startswith("removed ")
        }
        assert removed == before
        assert not paths.state_dir.exists() and not paths.cache_dir.exists()
        # no empty folder survives either: our `20i` folders in the state and cache dirs go too
        assert not paths.state_dir.parent.exists() and not paths.cache_dir.parent.exists()
        assert read_consent(paths.consent_file).consent is not None  # the opt-out stays

    def test_purge_with_nothing(self, paths: Paths) -> None:
        """--purge on a clean machine says there was nothing to remove."""
        result = run("disable", "--purge")
        assert result.exit_code == 0 and "no local telemetry files to remove" in result.stdout

    def test_purge_refuses_errors_only(self, paths: Paths) -> None:
        """--errors --purge is a usage error: purge removes what usage reports need."""
        result = run("disable", "--errors", "--purge")
        assert result.exit_code == 2 and "--purge" in result.stderr


class TestPolicy:
    def test_prints_the_repo_policy(self, paths: Paths) -> None:
        """policy prints PRIVACY.md, shipped as package data through a relative symlink."""
        result = run("policy")
        assert result.exit_code == 0
        assert (
            result.stdout == (REPO / "PRIVACY.md").read_text(encoding="utf-8").rstrip("\n") + "\n"
        )
        link = REPO / "cli" / "data" / "PRIVACY.md"
        assert link.is_symlink() and os.readlink(link) == "../../PRIVACY.md"


class TestLog:
    def test_empty(self, paths: Paths) -> None:
        """Without a sent log, log says nothing was sent."""
        result = run("log")
        assert result.exit_code == 0 and "No reports have been sent" in result.stdout
        assert run_json("log") == {
            "format": 1,
            "path": str(paths.sent_log),
            "reports": [],
            "skipped": 0,
        }

    def test_newest_first_and_skips_garbage(self, paths: Paths) -> None:
        """Sent reports are listed newest first; unreadable lines are skipped and counted."""
        paths.state_dir.mkdir(parents=True)
        lines = [
            encode_entry(
                json.dumps({"kind": "usage", "period": f"2026-W{w}"}).encode(),
                datetime(2026, 11, w - 30, tzinfo=UTC),
                "https://t.example/v1/reports",
            )
            for w in (46, 47, 48)
        ]
        paths.sent_log.write_bytes(lines[0] + lines[1] + b"not json\n" + lines[2])
        document = run_json("log")
        assert [r["report"]["period"] for r in document["reports"]] == [
            "2026-W48",
            "2026-W47",
            "2026-W46",
        ]
        assert document["skipped"] == 1
        assert set(document["reports"][0]) == {"sent_at", "endpoint", "report"}
        assert document["reports"][0]["sent_at"] == "2026-11-18T00:00:00Z"
        text = run("log", "--limit", "1").stdout
        assert "2026-W48" in text and "2026-W47" not in text and "1 unreadable" in text


class TestInfo:
    def test_json_shape_and_numbers(self, paths: Paths) -> None:
        """info --json lists every field with its mechanism, epsilons, p* and q*, and budgets."""
        schema = shipped_schema()
        document = run_json("info")
        assert set(document) == {
            "format",
            "schema",
            "on",
            "kinds",
            "year",
            "never_collected",
            "memo",
            "endpoint",
            "policy",
        }
        assert document["schema"] == {"name": "20i", "version": 2, "id": schema.id}
        assert document["year"]["total"] == pytest.approx(
            sum(spec.year_bound() for spec in schema.fields)
        )
        assert [k["name"] for k in document["kinds"]] == list(schema.kind_names)
        for kind in document["kinds"]:
            spec_kind = schema.kind(kind["name"])
            assert kind["epsilon"]["per_report"] == pytest.approx(per_report_epsilon(spec_kind))
            assert kind["epsilon"]["year_actual"] == 0.0
            assert kind["epsilon"]["year_bound"] >= kind["epsilon"]["per_report"]
            for row in kind["fields"]:
                randomizer = spec_kind.field(row["name"]).randomizer()
                assert row["domain_size"] == len(row["domain"])
                assert row["mechanism"] == randomizer.mechanism
                assert (row["p_star"], row["q_star"]) == (randomizer.p_star, randomizer.q_star)
                assert row["epsilon_1"] <= row["epsilon_perm"]
            report = kind["example"]["report"]
            data = json.dumps(report, sort_keys=True, separators=(",", ":")).encode()
            assert decode_report(data, {schema.id: schema}).kind == kind["name"]
        assert len(document["never_collected"]) >= 5
        assert document["policy"]["path"].endswith("PRIVACY.md")

    def test_actual_spend_from_the_epoch_memo(self, paths: Paths) -> None:
        """This machine's yearly spend counts the epochs that reported in the last 52 weeks."""
        from datetime import UTC, datetime

        from ldp.report import iso_period

        week = week_index(iso_period(datetime.now(UTC)))
        memo = EpochMemo(paths.epochs_file)
        memo.commit({"command": (1, [1, 2])}, week - 60)  # outside the window
        memo.commit({"command": (2, [1, 2])}, week - 20)
        memo.commit({"command": (3, [1, 3])}, week - 1)
        usage = run_json("info")["kinds"][0]
        command = next(f for f in usage["fields"] if f["name"] == "command")
        assert usage["epsilon"]["year_actual"] == pytest.approx(2 * command["epsilon_perm"])

    def test_text_and_no_network(self, paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
        """info prints the table, budget, never-collected list and policy; no network call."""

        def no_network(*args: object, **kwargs: object) -> None:
            raise AssertionError("info tried to use the network")

        monkeypatch.setattr(socket.socket, "connect", no_network)
        result = run("info")
        assert result.exit_code == 0, result.output
        for fragment in (
            "eps",
            "p*",
            "epsilon per report",
            "52 weeks",
            "Never collected",
            "policy",
        ):
            assert fragment in result.stdout
        assert not paths.state_dir.exists()  # info changes no state

    def test_unreadable_memo_is_reported(self, paths: Paths) -> None:
        """A garbled epoch memo makes the actual spend unknown, not the command fail."""
        paths.state_dir.mkdir(parents=True)
        paths.epochs_file.write_text("{")
        document = run_json("info")
        assert document["kinds"][0]["epsilon"]["year_actual"] is None
        assert document["memo"]["problem"]


class TestPreview:
    def test_reports_from_tally_change_nothing(self, paths: Paths) -> None:
        """preview shows valid randomized reports for this period and changes no file."""
        run("enable")
        run("enable", "--errors")
        for command in ("up", "up", "status"):
            tracking.record(command, modules=["docker"], version="1.4.0", env={}, paths=paths)
        before = snapshot(paths.state_dir.parent.parent)
        document = run_json("preview")
        assert snapshot(paths.state_dir.parent.parent) == before
        assert set(document) == {"format", "period", "on", "delivery", "reports", "notes"}
        schema = shipped_schema()
        assert [r["kind"] for r in document["reports"]] == ["usage", "errors"]
        for report in document["reports"]:
            assert set(report) == {"kind", "period", "bytes", "plaintext", "report", "values"}
            decoded = decode_report(report["plaintext"].encode(), {schema.id: schema})
            assert decoded.period == document["period"] == report["period"]
            assert report["bytes"] == len(report["plaintext"])
        assert document["notes"] == []
        assert "Nothing was sent" in run("preview").stdout

    @pytest.mark.parametrize(
        ("env", "delivery", "says"),
        [
            ({}, "discard", "Nothing will be sent: no analyzer key is configured"),
            ({"TWENTYI_TELEMETRY_PUBLIC_KEY": KEY}, "spool", "kept on this machine until"),
            (
                {"TWENTYI_TELEMETRY_PUBLIC_KEY": KEY, "TWENTYI_TELEMETRY_ENDPOINT": URL},
                "send",
                "sealed to the analyzer's key and sent",
            ),
        ],
    )
    def test_says_what_will_really_happen(
        self, paths: Paths, env: dict[str, str | None], delivery: str, says: str
    ) -> None:
        """preview agrees with status on the week's fate (it said "would be sealed and sent"
        while status said the week would be discarded for want of a key)."""
        run("enable")
        tracking.record("up", env={}, paths=paths)
        status = json.loads(run("status", "--json", env=env).stdout)
        document = json.loads(run("preview", "--json", env=env).stdout)
        assert document["delivery"] == status["delivery"] == delivery
        text = " ".join(run("preview", env=env).stdout.split())
        assert says in text and "would be sealed and sent" not in text

    def test_plain_words_and_value_names(self, paths: Paths) -> None:
        """preview leads with a plain paragraph and names the values each field points at;
        info leads with plain words before its table, numbers taken from the document."""
        run("enable")
        tracking.record("up", modules=["docker"], env={}, paths=paths)
        document = run_json("preview")
        [report] = document["reports"]
        schema = shipped_schema()
        for spec in schema.kind("usage").fields:
            names = report["values"][spec.name]
            assert set(names) <= set(spec.domain)
            wire = report["report"]["fields"][spec.name]
            if spec.kind == "categorical":  # ss: the index list, by name
                assert names == [spec.domain[i] for i in wire]
        text = run("preview").stdout
        assert text.startswith("This is what this week")
        assert "the randomized fields point at:" in text
        info = run("info").stdout
        doc = run_json("info")
        plain, technical = info.split("Technical details", 1)
        per_report = doc["kinds"][0]["epsilon"]["per_report"]
        assert f"epsilon = {per_report:.2f}" in " ".join(plain.split())
        assert "p*" not in plain and "ss" not in plain.split() and "p*" in technical

    def test_off_produces_nothing(self, paths: Paths) -> None:
        """With telemetry off there is no report to preview, and it says why."""
        document = run_json("preview")
        assert document["reports"] == [] and "not-opted-in" in document["notes"][0]

    def test_without_secret_uses_a_throwaway(self, paths: Paths) -> None:
        """A missing secret is not created by preview; it says it used a throwaway one."""
        run("enable")
        tracking.record("up", env={}, paths=paths)
        paths.secret_file.unlink()
        document = run_json("preview")
        assert len(document["reports"]) == 1 and not paths.secret_file.exists()
        assert any("throwaway" in note for note in document["notes"])


class TestCompose:
    def test_sample_count_is_proportional(self) -> None:
        """Each key is picked by exactly count-many of the total equally likely draws."""

        class Sweep:
            def __init__(self) -> None:
                self.next = 0

            def randbelow(self, n: int) -> int:
                value, self.next = self.next % n, self.next + 1
                return value

        counts = {"up": 3, "down": 1, "status": 2}
        sweep = Sweep()
        picks = [sample_count(counts, sweep) for _ in range(6)]
        assert {key: picks.count(key) for key in counts} == counts

    def test_one_report_per_recorded_kind(self) -> None:
        """A tally with usage only makes one usage report; an empty errors tally makes none."""
        moment = datetime(2026, 11, 24, tzinfo=UTC)
        tally = Tally(
            "2026-W48", 1, UsageTally(moment, {"up": 2}, ["git"], "1.4"), ErrorsTally(moment, {})
        )
        reports = compose_reports(tally, shipped_schema(), b"s" * 32, ("usage", "errors"))
        assert [(r.kind, r.period) for r in reports] == [("usage", "2026-W48")]

    def test_compose_returns_reports_with_their_values(self) -> None:
        """compose (roll-over) and compose_reports (preview) build the same reports."""
        moment = datetime(2026, 11, 24, tzinfo=UTC)
        usage = UsageTally(moment, {"up": 2}, ["git"], "1.4")
        tally = Tally("2026-W48", 1, usage, ErrorsTally(moment, {"timeout": 1}))
        secret = b"s" * 32
        composed = compose(tally, shipped_schema(), secret, rand=HmacSource(secret, b"t"))
        reports = compose_reports(tally, shipped_schema(), secret, rand=HmacSource(secret, b"t"))
        assert [c.report.encode() for c in composed] == [r.encode() for r in reports]
        assert [c.kind for c in composed] == ["usage", "errors"]
        assert composed[0].values["command"] == "up" and composed[0].values["cli_version"] == "1.4"
        assert composed[1].values == {"error_category": "timeout"}


class TestHelp:
    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_command_has_help(self, command: str) -> None:
        """`20i telemetry <command> --help` exits 0 and describes the command."""
        result = run(command, "--help")
        assert result.exit_code == 0 and f"telemetry {command}" in result.stdout
        assert "--help" in result.stdout

    def test_group_and_root_help(self) -> None:
        """`20i --help` and `20i telemetry --help` list what is below them."""
        root = CliRunner().invoke(app, ["--help"])
        group = run("--help")
        assert root.exit_code == group.exit_code == 0 and "telemetry" in root.stdout
        for command in COMMANDS:
            assert command in group.stdout

    @pytest.mark.parametrize("command", ["status", "info", "preview", "log"])
    def test_json_flag_is_documented(self, command: str) -> None:
        """Every command that takes --json says so in its help."""
        assert "--json" in run(command, "--help").stdout


class TestBadOptions:
    @pytest.mark.parametrize(
        "args",
        [
            ["status", "--bogus"],
            ["enable", "extra"],
            ["log", "--limit", "0"],
            ["log", "--limit", "many"],
            ["frobnicate"],
        ],
    )
    def test_exit_code_two(self, args: list[str]) -> None:
        """Unknown options, stray arguments and bad values exit with code 2."""
        assert run(*args).exit_code == 2

    def test_main_prints_one_line(self, paths: Paths, capsys: pytest.CaptureFixture[str]) -> None:
        """Through main(), a usage error is one line on stderr naming the command and --help."""
        assert main(["telemetry", "status", "--bogus"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            "20i telemetry status: error: No such option: --bogus"
            " (see `20i telemetry status --help`)\n"
        )


class TestMain:
    def test_success(self, paths: Paths, capsys: pytest.CaptureFixture[str]) -> None:
        """main() returns 0 after a successful command."""
        assert main(["telemetry", "status"]) == 0
        assert "usage reports" in capsys.readouterr().out

    def test_no_arguments_shows_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`20i` alone prints its help and succeeds."""
        assert main([]) == 0
        assert "telemetry" in capsys.readouterr().out

    def test_unexpected_error_is_one_line(
        self, paths: Paths, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bug still ends as one line and exit code 1, never a traceback."""

        def broken(*args: object) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(status_module, "status_document", broken)
        assert main(["telemetry", "status"]) == 1
        err = capsys.readouterr().err
        assert err == "20i: internal error: RuntimeError: boom\n"

    def test_module_entry_point(self, paths: Paths) -> None:
        """`python -m cli.app` runs the CLI before the package is installed."""
        result = subprocess.run(
            [sys.executable, "-m", "cli.app", "telemetry", "status", "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["source"] == "not-opted-in"


class TestNotCounted:
    def test_telemetry_commands_leave_the_tally_alone(self, paths: Paths) -> None:
        """The telemetry commands themselves are never counted in the tally."""
        run("enable")
        for command in ("status", "info", "preview", "log", "policy"):
            run(command)
        assert journal_periods(paths.state_dir) == {}


class TestHelpFlags:
    @pytest.mark.parametrize("command", COMMANDS)
    def test_flags_render_as_users_type_them(self, command: str) -> None:
        """`--help` shows a flag as it is typed (`--json`), never with a value placeholder
        such as `--json <bool>`, which typing would make an error."""
        result = run(command, "--help")
        assert result.exit_code == 0
        assert "<bool>" not in result.stdout and "BOOLEAN" not in result.stdout
        for line in result.stdout.splitlines():
            for flag in ("--json", "--errors", "--purge"):
                if line.strip().startswith(flag):
                    assert line.strip().split()[0] == flag, line
