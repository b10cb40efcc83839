"""Tests for twentyi_telemetry.tracking and .tally: host integration, the period tally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli import sender
from ldp.report import iso_period as report_iso_period
from ldp.schema import shipped_schema
from ldp.values import version_bucket
from twentyi_telemetry import consent as consent_module
from twentyi_telemetry import state as state_module
from twentyi_telemetry import tracking, worker
from twentyi_telemetry.consent import (
    NO_CONSENT,
    Consent,
    decide,
    read_consent,
    shipped_policy_version,
    write_consent,
)
from twentyi_telemetry.state import Paths
from twentyi_telemetry.tally import (
    Tally,
    current_tally,
    journal_file,
    journal_periods,
    shipped_domains,
)
from twentyi_telemetry.tally import iso_period as tally_iso_period

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday, week 2026-W48
QUIET: dict[str, str] = {}
#: The policy version this 20i ships: what `enable` writes into the consent file.
POLICY = shipped_policy_version() or ""


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    out = Paths(tmp_path / "config", tmp_path / "state", tmp_path / "cache")
    out.state_dir.mkdir(parents=True)  # as `enable` leaves it (host commands never create it)
    return out


def read_tally(paths: Paths, now: datetime = T0 + timedelta(hours=1)) -> Tally | None:
    """What the journal holds for ``now``'s period under the consent on disk."""
    on = read_consent(paths.consent_file).consent or NO_CONSENT
    return current_tally(
        paths.state_dir,
        tally_iso_period(now),
        on.usage.as_of if on.usage.enabled else None,
        on.errors.as_of if on.errors.enabled else None,
    )


def journals(paths: Paths) -> list[Path]:
    return [f for files in journal_periods(paths.state_dir).values() for f in files]


def consent(usage: bool = True, errors: bool = False, as_of: datetime = T0) -> Consent:
    out = NO_CONSENT
    if usage:
        out = out.decided("usage", True, as_of, POLICY, None)
    if errors:
        out = out.decided("errors", True, as_of, POLICY, None)
    return out


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Log every small-file read made through twentyi_telemetry.state.read_small, by any module."""
    reads: list[Path] = []
    real = state_module.read_small

    def counted(path: Path) -> bytes:
        reads.append(path)
        return real(path)

    for module in (state_module, consent_module, tracking):
        monkeypatch.setattr(module, "read_small", counted)
    return reads


def record(paths: Paths, command: str, **kwargs: Any) -> None:
    kwargs.setdefault("env", QUIET)
    kwargs.setdefault("now", T0 + timedelta(hours=1))
    tracking.record(command, paths=paths, **kwargs)


class TestRecordOff:
    @pytest.mark.parametrize(
        "env", [{}, {"DO_NOT_TRACK": "1"}, {"TWENTYI_TELEMETRY": "0"}, {"CI": "true"}]
    )
    def test_creates_nothing(self, paths: Paths, tmp_path: Path, env: dict[str, str]) -> None:
        """With telemetry off (not opted in, or env), recording writes no file anywhere."""
        record(paths, "up", env=env, modules=["docker"])
        assert all_files(tmp_path) == []

    def test_env_off_reads_no_file(self, paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
        """DO_NOT_TRACK costs no file access at all, even with consent on disk."""
        write_consent(paths.consent_file, consent())
        reads = count_reads(monkeypatch)
        record(paths, "up", env={"DO_NOT_TRACK": "1"})
        assert reads == [] and journals(paths) == []

    def test_off_reads_one_small_file(self, paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
        """Not opted in costs exactly one read, of the consent file, and never calls modules."""
        reads = count_reads(monkeypatch)
        calls: list[int] = []
        record(paths, "up", modules=lambda: calls.append(1) or ["docker"])
        assert reads == [paths.consent_file] and calls == []

    def test_disabled_consent_records_nothing(self, paths: Paths) -> None:
        """After disable, host commands add nothing to the tally."""
        write_consent(paths.consent_file, consent().decided("usage", False, T0, POLICY, None))
        record(paths, "up")
        assert journals(paths) == []

    @pytest.mark.parametrize(
        "content",
        [
            b"",
            b"{",
            b"[]",
            b'{"usage": {"enabled": "true"}}',
            b'{"usage": {"enabled": false}, "errors": {"enabled": false}}',
            b'{"format": 1, "usage": {"enabled": true}}',
            b'{"format": 2, "usage": {"enabled": true, "as_of": "2026-11-24T10:00:00Z"}}',
            consent().to_json(),
            consent(usage=False, errors=True).to_json(),
            consent().decided("usage", False, T0, POLICY, None).to_json(),
        ],
    )
    def test_precheck_never_hides_consent(self, paths: Paths, content: bytes) -> None:
        """The cheap pre-check only says "off" when the strict decision is off too."""
        paths.consent_file.parent.mkdir(parents=True, exist_ok=True)
        paths.consent_file.write_bytes(content)
        strict = decide({}, paths.consent_file).any_on
        assert tracking._may_be_on(paths) or not strict


class TestRecordOn:
    def test_counts_commands_modules_version(self, paths: Paths) -> None:
        """Each invocation is counted under its domain name, with modules and version bucket."""
        write_consent(paths.consent_file, consent())
        record(paths, "up", modules=["docker", "git"], version="1.4.2")
        record(paths, "up", modules=lambda: ["ssh"], version="1.5.0")
        record(paths, "down")
        tally = read_tally(paths)
        assert tally is not None and tally.period == "2026-W48"
        assert tally.usage is not None and tally.errors is None
        assert tally.usage.commands == {"up": 2, "down": 1}
        assert tally.usage.modules == ["docker", "git", "ssh"]
        assert tally.usage.cli_version == "1.5"

    def test_unknown_names_map_to_other(self, paths: Paths) -> None:
        """Names outside the schema's domains are stored as other or dropped, never raw."""
        write_consent(paths.consent_file, consent())
        record(paths, "deploy-to-alice-laptop", modules=["docker", "/home/alice"], version="9.9")
        record(paths, "telemetry status")
        tally = read_tally(paths)
        assert tally is not None and tally.usage is not None
        assert tally.usage.commands == {"other": 1, "telemetry": 1}
        assert tally.usage.modules == ["docker"] and tally.usage.cli_version == "other"
        assert all(b"alice" not in f.read_bytes() for f in journals(paths))

    def test_errors_need_their_own_consent(self, paths: Paths) -> None:
        """Error categories are tallied only with errors consent; None counts as none."""
        write_consent(paths.consent_file, consent(usage=False, errors=True))
        record(paths, "up")
        record(paths, "up", error="timeout")
        record(paths, "up", error="some-new-category")
        tally = read_tally(paths)
        assert tally is not None and tally.usage is None and tally.errors is not None
        assert tally.errors.categories == {"none": 1, "timeout": 1, "other": 1}

    def test_new_period_starts_fresh(self, paths: Paths) -> None:
        """A tally from an earlier week is not mixed into this week's counts."""
        write_consent(paths.consent_file, consent())
        record(paths, "up")
        record(paths, "down", now=T0 + timedelta(days=7))
        tally = read_tally(paths, T0 + timedelta(days=7))
        assert tally is not None and tally.period == "2026-W49"
        assert tally.usage is not None and tally.usage.commands == {"down": 1}

    def test_nothing_before_reconsent_survives(self, paths: Paths) -> None:
        """Counts made before the latest opt-in are dropped when consent is re-dated."""
        write_consent(paths.consent_file, consent())
        record(paths, "up")
        later = T0 + timedelta(hours=5)
        again = consent().decided("usage", False, later, POLICY, None)
        write_consent(paths.consent_file, again.decided("usage", True, later, POLICY, None))
        record(paths, "down", now=later + timedelta(minutes=1))
        tally = read_tally(paths)
        assert tally is not None and tally.usage is not None
        assert tally.usage.commands == {"down": 1} and tally.usage.since == later

    def test_withdrawn_kind_is_dropped(self, paths: Paths) -> None:
        """Disabling usage while errors stay on drops the usage counts at the next command."""
        write_consent(paths.consent_file, consent(usage=True, errors=True))
        record(paths, "up")
        write_consent(
            paths.consent_file,
            consent(usage=True, errors=True).decided("usage", False, T0, POLICY, None),
        )
        record(paths, "down")
        tally = read_tally(paths)
        assert tally is not None and tally.usage is None
        assert tally.errors is not None and tally.errors.categories == {"none": 2}

    def test_garbled_journal_lines_are_skipped(self, paths: Paths) -> None:
        """A garbled line in the journal costs nothing but itself."""
        write_consent(paths.consent_file, consent())
        journal_file(paths.state_dir, "2026-W48").write_bytes(b"\x00garbage{\n[1]\n")
        record(paths, "up")
        tally = read_tally(paths)
        assert tally is not None and tally.usage is not None and tally.usage.commands == {"up": 1}

    @pytest.mark.parametrize(
        "breakage", ["state-dir-is-file", "journal-is-dir", "journal-is-fifo", "modules-raise"]
    )
    def test_never_raises(self, paths: Paths, breakage: str) -> None:
        """Broken state or a failing modules provider never raises into the host."""
        write_consent(paths.consent_file, consent())
        modules: Any = ["docker"]
        if breakage == "state-dir-is-file":
            paths.state_dir.rmdir()
            paths.state_dir.write_text("not a dir")
        elif breakage == "journal-is-dir":
            journal_file(paths.state_dir, "2026-W48").mkdir()
        elif breakage == "journal-is-fifo":
            os.mkfifo(journal_file(paths.state_dir, "2026-W48"))
        else:

            def modules() -> list[str]:
                raise RuntimeError("host bug")

        record(paths, "up", modules=modules)  # must not raise (nor hang)
        if breakage == "modules-raise":
            tally = read_tally(paths)
            assert tally is not None and tally.usage is not None
            assert tally.usage.commands == {"up": 1} and tally.usage.modules == []

    def test_counting_takes_no_lock(self, paths: Paths) -> None:
        """A worker holding the telemetry lock (or a crashed one's stale lock file) neither
        delays a host command nor costs its count (it waited 200 ms and lost it before)."""
        write_consent(paths.consent_file, consent())
        with sender.locked(paths, timeout=0) as got:
            assert got
            started = time.monotonic()
            for _ in range(20):
                record(paths, "up")
            elapsed = time.monotonic() - started
        tally = read_tally(paths)
        assert tally is not None and tally.usage is not None and tally.usage.commands == {"up": 20}
        assert elapsed < 0.5  # 20 commands; each used to wait 200 ms for a busy lock

    def test_missing_state_folder_is_never_recreated(self, paths: Paths, tmp_path: Path) -> None:
        """A command that decided "on" just before `disable --purge` removed the state folder
        does not bring it back (nor counts)."""
        write_consent(paths.consent_file, consent())
        paths.state_dir.rmdir()
        record(paths, "up")
        assert not paths.state_dir.exists() and all_files(tmp_path) == [paths.consent_file]

    def test_journal_format(self, paths: Paths) -> None:
        """A journal line is the documented JSON (domain values and the consent's as_of only);
        the file is mode 0600 and named for the period."""
        write_consent(paths.consent_file, consent(usage=True, errors=True))
        record(paths, "status", modules=["git"], version="1.0.3", error="auth")
        [path] = journals(paths)
        assert path.name == "journal-2026-W48.jsonl"
        assert json.loads(path.read_bytes()) == {
            "u": {"a": "2026-11-24T10:00:00Z", "c": "status", "m": ["git"], "v": "1.0"},
            "e": {"a": "2026-11-24T10:00:00Z", "x": "auth"},
        }
        assert path.stat().st_mode & 0o777 == 0o600


class TestWorkerStart:
    """The host only counts; it starts the detached worker when there is work for it."""

    def test_first_command_of_a_period_starts_the_worker(
        self, paths: Paths, worker_starts: list[Paths]
    ) -> None:
        """Only the command that opens a period's journal starts the worker."""
        write_consent(paths.consent_file, consent())
        record(paths, "up", now=T0 + timedelta(hours=1))
        record(paths, "down", now=T0 + timedelta(hours=2))
        assert worker_starts == [paths]
        record(paths, "up", now=T0 + timedelta(days=7))  # week 2026-W49
        assert worker_starts == [paths, paths]

    def test_the_host_never_imports_the_heavy_side(self, paths: Paths) -> None:
        """Counting, even at a period's first command, imports no ``cli``, ``ldp``, httpx or
        cryptography module (it used to build and seal the report in the host)."""
        write_consent(paths.consent_file, consent())
        code = (
            "import sys\n"
            "from datetime import datetime, UTC\n"
            "from twentyi_telemetry import record, worker\n"
            "from twentyi_telemetry.state import Paths\n"
            "from pathlib import Path\n"
            "worker.start = lambda paths, env: None\n"
            f"p = Paths(Path({str(paths.config_dir)!r}), Path({str(paths.state_dir)!r}),"
            f" Path({str(paths.cache_dir)!r}))\n"
            "record('up', paths=p, env={})\n"
            "heavy = {'cli', 'ldp', 'httpx', 'cryptography', 'numpy', 'filelock'}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]"
        assert len(journals(paths)) == 1

    @pytest.mark.parametrize("consent_state", ["none", "old-policy"])
    def test_not_started_when_off(
        self, paths: Paths, worker_starts: list[Paths], consent_state: str
    ) -> None:
        """With telemetry off (also under a changed policy) nothing is counted or started."""
        if consent_state == "old-policy":
            old = NO_CONSENT.decided("usage", True, T0, "0", None)
            write_consent(paths.consent_file, old.decided("errors", True, T0, "0", None))
        record(paths, "up", error="network")
        assert worker_starts == [] and journals(paths) == []

    def test_debug_prints_the_spool(
        self, paths: Paths, worker_starts: list[Paths], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With TWENTYI_TELEMETRY_DEBUG in record()'s env the host prints what waits to be
        sent; the worker it starts sends nothing."""
        write_consent(paths.consent_file, consent())
        record(paths, "up", env={"TWENTYI_TELEMETRY_DEBUG": "1"})
        err = capsys.readouterr().err
        assert "TWENTYI_TELEMETRY_DEBUG is set, so nothing is sent" in err
        assert worker_starts == [paths]

    def test_frozen_host_starts_no_worker(
        self, paths: Paths, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """In a frozen application sys.executable is the host itself: never run it."""
        monkeypatch.undo()  # the real worker.start
        spawned: list[Any] = []
        monkeypatch.setattr(sys, "frozen", True, raising=False)
        monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: spawned.append(a))
        assert worker.start(paths, {}) is None
        assert spawned == []

    def test_worker_runs_isolated_from_the_host(self, paths: Paths) -> None:
        """The worker command runs ``python -I`` with our folder first on sys.path, so a
        host's own ``cli`` module (or PYTHONPATH) can never stand in for ours."""
        argv = worker.worker_command(paths)
        assert argv[0] == sys.executable and argv[1] == "-I" and argv[2] == "-c"
        assert repr(str(worker.PACKAGE_ROOT)) in argv[3] and "from cli.sender import" in argv[3]


class TestDomains:
    def test_match_the_shipped_schema(self) -> None:
        """The cheap domain reader agrees with ldp.schema's validated schema."""
        domains = shipped_domains()
        schema = shipped_schema()
        usage, errors = schema.kind("usage"), schema.kind("errors")
        assert domains.schema_version == schema.version
        assert domains.command == usage.field("command").domain
        assert domains.modules == usage.field("modules").domain
        assert domains.cli_version == usage.field("cli_version").domain
        assert domains.error_category == errors.field("error_category").domain

    @pytest.mark.parametrize(
        "moment",
        [
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
            datetime(2027, 1, 3, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2020, 12, 31, 12, tzinfo=UTC),
        ],
    )
    def test_period_matches_ldp(self, moment: datetime) -> None:
        """The tally's ISO week equals ldp.report.iso_period, across year boundaries."""
        assert tally_iso_period(moment) == report_iso_period(moment)

    @pytest.mark.parametrize(
        "version",
        ["1.4.2", "v1.4", "01.04", "1.4rc1", "1", "1.44", "2.0.0", "x", "", " 1.5.9 ", "1.4.2.7"],
    )
    def test_version_rule_matches_ldp(self, version: str) -> None:
        """The version bucket equals ldp.values.version_bucket's for the same domain."""
        domains = shipped_domains()
        assert domains.version_value(version) == version_bucket(version, domains.cli_version)


def make_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    sub = typer.Typer()

    @app.command()
    def up(replicas: int = 1) -> None:
        typer.echo(f"up {replicas}")

    @app.command("status")
    def show_status(check: bool = False) -> None:
        typer.echo("down")
        if check:
            raise typer.Exit(3)

    @app.command()
    def crash() -> None:
        raise PermissionError("denied")

    @sub.command()
    def migrate() -> None:
        typer.echo("migrated")

    app.add_typer(sub, name="telemetry")
    return app


class TestInstrument:
    def test_records_each_command(self, paths: Paths) -> None:
        """Commands are counted under their names, sub-commands under their group path."""
        write_consent(paths.consent_file, consent(usage=True, errors=True))
        app = tracking.instrument(make_app(), modules=["docker"], env=QUIET, paths=paths)
        runner = CliRunner()
        assert runner.invoke(app, ["up", "--replicas", "2"]).stdout == "up 2\n"
        assert runner.invoke(app, ["status", "--check"]).exit_code == 3
        crashed = runner.invoke(app, ["crash"])
        assert isinstance(crashed.exception, PermissionError)
        assert runner.invoke(app, ["telemetry", "migrate"]).exit_code == 0
        assert runner.invoke(app, ["up", "--help"]).exit_code == 0
        assert runner.invoke(app, ["up", "--replicas", "x"]).exit_code == 2
        tally = read_tally(paths, datetime.now(UTC))
        assert tally is not None and tally.usage is not None and tally.errors is not None
        # help and usage errors never reach a command, so they are not counted
        assert tally.usage.commands == {"up": 1, "status": 1, "other": 1, "telemetry": 1}
        assert tally.errors.categories == {"none": 2, "other": 1, "permission": 1}

    def test_same_behaviour_on_and_off(self, paths: Paths) -> None:
        """Output and exit codes of an instrumented app do not depend on telemetry."""
        runner = CliRunner()
        results = []
        for on in (False, True):
            if on:
                write_consent(paths.consent_file, consent())
            app = tracking.instrument(make_app(), env=QUIET, paths=paths)
            results.append(
                [
                    (r.exit_code, r.stdout, type(r.exception).__name__)
                    for r in (
                        runner.invoke(app, args)
                        for args in (["up"], ["status", "--check"], ["crash"], ["nope"])
                    )
                ]
            )
        assert results[0] == results[1]

    def test_instrument_twice_counts_once(self, paths: Paths) -> None:
        """Instrumenting an app twice does not double-count."""
        write_consent(paths.consent_file, consent())
        app = make_app()
        tracking.instrument(app, env=QUIET, paths=paths)
        tracking.instrument(app, env=QUIET, paths=paths)
        CliRunner().invoke(app, ["up"])
        tally = read_tally(paths, datetime.now(UTC))
        assert tally is not None and tally.usage is not None and tally.usage.commands == {"up": 1}

    @pytest.mark.parametrize(
        ("outcome", "category"),
        [
            (None, "none"),
            (typer.Exit(0), "none"),
            (SystemExit(0), "none"),
            (typer.Exit(2), "other"),
            (KeyboardInterrupt(), "other"),
            (TimeoutError(), "timeout"),
            (PermissionError(), "permission"),
            (FileNotFoundError(), "not_found"),
            (ConnectionRefusedError(), "network"),
            (ValueError(), "invalid_input"),
            (RuntimeError(), "internal"),
        ],
    )
    def test_default_error_category(self, outcome: BaseException | None, category: str) -> None:
        """How a command ended maps onto the schema's error categories."""
        assert tracking.default_error_category(outcome) == category
        assert category in shipped_domains().error_category
