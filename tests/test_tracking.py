"""Tests for twentyi_telemetry.tracking and .tally: host integration, the period tally."""

from __future__ import annotations

import json
import sys
import time
import types
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli import sender
from ldp.envelope import generate_keypair, public_key_to_text
from ldp.report import iso_period as report_iso_period
from ldp.schema import shipped_schema
from ldp.values import version_bucket
from twentyi_telemetry import consent as consent_module
from twentyi_telemetry import state as state_module
from twentyi_telemetry import tracking
from twentyi_telemetry.consent import (
    NO_CONSENT,
    Consent,
    decide,
    shipped_policy_version,
    write_consent,
)
from twentyi_telemetry.state import Paths, count_spooled
from twentyi_telemetry.tally import Tally, locked, read_tally, shipped_domains
from twentyi_telemetry.tally import iso_period as tally_iso_period

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday, week 2026-W48
QUIET: dict[str, str] = {}
#: The policy version this 20i ships: what `enable` writes into the consent file.
POLICY = shipped_policy_version() or ""


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "state", tmp_path / "cache")


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
        assert reads == [] and not paths.tally_file.exists()

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
        assert not paths.tally_file.exists()

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
        tally = read_tally(paths.tally_file)
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
        tally = read_tally(paths.tally_file)
        assert tally is not None and tally.usage is not None
        assert tally.usage.commands == {"other": 1, "telemetry": 1}
        assert tally.usage.modules == ["docker"] and tally.usage.cli_version == "other"
        assert b"alice" not in paths.tally_file.read_bytes()

    def test_errors_need_their_own_consent(self, paths: Paths) -> None:
        """Error categories are tallied only with errors consent; None counts as none."""
        write_consent(paths.consent_file, consent(usage=False, errors=True))
        record(paths, "up")
        record(paths, "up", error="timeout")
        record(paths, "up", error="some-new-category")
        tally = read_tally(paths.tally_file)
        assert tally is not None and tally.usage is None and tally.errors is not None
        assert tally.errors.categories == {"none": 1, "timeout": 1, "other": 1}

    def test_new_period_starts_fresh(self, paths: Paths) -> None:
        """A tally from an earlier week is not mixed into this week's counts."""
        write_consent(paths.consent_file, consent())
        record(paths, "up")
        record(paths, "down", now=T0 + timedelta(days=7))
        tally = read_tally(paths.tally_file)
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
        tally = read_tally(paths.tally_file)
        assert tally is not None and tally.usage is not None
        assert tally.usage.commands == {"down": 1} and tally.usage.since > later

    def test_withdrawn_kind_is_dropped(self, paths: Paths) -> None:
        """Disabling usage while errors stay on drops the usage counts at the next command."""
        write_consent(paths.consent_file, consent(usage=True, errors=True))
        record(paths, "up")
        write_consent(
            paths.consent_file,
            consent(usage=True, errors=True).decided("usage", False, T0, POLICY, None),
        )
        record(paths, "down")
        tally = read_tally(paths.tally_file)
        assert tally is not None and tally.usage is None
        assert tally.errors is not None and tally.errors.categories == {"none": 2}

    def test_corrupt_tally_is_replaced(self, paths: Paths) -> None:
        """A garbled tally file is replaced by a fresh one rather than breaking anything."""
        write_consent(paths.consent_file, consent())
        paths.tally_file.parent.mkdir(parents=True)
        paths.tally_file.write_bytes(b"\x00garbage{")
        record(paths, "up")
        tally = read_tally(paths.tally_file)
        assert tally is not None and tally.usage is not None and tally.usage.commands == {"up": 1}

    @pytest.mark.parametrize("breakage", ["state-dir-is-file", "tally-is-dir", "modules-raise"])
    def test_never_raises(self, paths: Paths, breakage: str) -> None:
        """Broken state or a failing modules provider never raises into the host."""
        write_consent(paths.consent_file, consent())
        modules: Any = ["docker"]
        if breakage == "state-dir-is-file":
            paths.state_dir.parent.mkdir(parents=True, exist_ok=True)
            paths.state_dir.write_text("not a dir")
        elif breakage == "tally-is-dir":
            paths.tally_file.mkdir(parents=True)
        else:

            def modules() -> list[str]:
                raise RuntimeError("host bug")

        record(paths, "up", modules=modules)  # must not raise
        if breakage == "modules-raise":
            tally = read_tally(paths.tally_file)
            assert tally is not None and tally.usage is not None
            assert tally.usage.commands == {"up": 1} and tally.usage.modules == []

    def test_busy_lock_gives_up_quickly(self, paths: Paths) -> None:
        """If another process holds the tally lock, the command skips counting promptly."""
        write_consent(paths.consent_file, consent())
        with locked(paths.tally_lock):
            started = time.monotonic()
            record(paths, "up")
            elapsed = time.monotonic() - started
        assert elapsed < 2.0 and not paths.tally_file.exists()

    def test_tally_file_format(self, paths: Paths) -> None:
        """The tally is the documented JSON: version, period, per-kind counts, mode 0600."""
        write_consent(paths.consent_file, consent(usage=True, errors=True))
        record(paths, "status", modules=["git"], version="1.0.3", error="auth")
        document = json.loads(paths.tally_file.read_text())
        assert document == {
            "v": 1,
            "period": "2026-W48",
            "schema_version": 1,
            "usage": {
                "since": "2026-11-24T11:00:00Z",
                "commands": {"status": 1},
                "modules": ["git"],
                "cli_version": "1.0",
            },
            "errors": {"since": "2026-11-24T11:00:00Z", "categories": {"auth": 1}},
        }
        assert paths.tally_file.stat().st_mode & 0o777 == 0o600
        assert Tally.from_json(paths.tally_file.read_bytes()).to_json() == (
            paths.tally_file.read_bytes()
        )


class TestRollOverSeam:
    def test_pipeline_runs_before_counting(
        self, paths: Paths, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """cli.pipeline.maybe_roll_over, when present, sees the tally before this command."""
        seen: list[tuple[Any, ...]] = []

        def maybe_roll_over(**kwargs: Any) -> None:
            tally = read_tally(kwargs["paths"].tally_file)
            seen.append((kwargs["decision"].source, kwargs["now"], tally))

        fake = types.ModuleType("cli.pipeline")
        fake.maybe_roll_over = maybe_roll_over  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "cli.pipeline", fake)
        write_consent(paths.consent_file, consent())
        record(paths, "up", now=T0 + timedelta(hours=1))
        record(paths, "down", now=T0 + timedelta(hours=2))
        assert [s[0] for s in seen] == ["consent", "consent"]
        assert seen[0][1] == T0 + timedelta(hours=1) and seen[0][2] is None
        assert seen[1][2].usage.commands == {"up": 1}

    def test_pipeline_failure_still_counts(
        self, paths: Paths, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failing pipeline never costs the host command or its count."""
        fake = types.ModuleType("cli.pipeline")

        def maybe_roll_over(**kwargs: Any) -> None:
            raise RuntimeError("pipeline bug")

        fake.maybe_roll_over = maybe_roll_over  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "cli.pipeline", fake)
        write_consent(paths.consent_file, consent())
        record(paths, "up")
        tally = read_tally(paths.tally_file)
        assert tally is not None and tally.usage is not None and tally.usage.commands == {"up": 1}

    @pytest.mark.parametrize("consent_state", ["none", "old-policy"])
    def test_pipeline_not_called_when_off(
        self, paths: Paths, monkeypatch: pytest.MonkeyPatch, consent_state: str
    ) -> None:
        """With telemetry off (also under a changed policy) the pipeline is never called."""
        calls: list[int] = []
        fake = types.ModuleType("cli.pipeline")
        fake.maybe_roll_over = lambda **kwargs: calls.append(1)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "cli.pipeline", fake)
        if consent_state == "old-policy":
            old = NO_CONSENT.decided("usage", True, T0, "0", None)
            write_consent(paths.consent_file, old.decided("errors", True, T0, "0", None))
        record(paths, "up", error="network")
        assert calls == [] and not paths.tally_file.exists()

    def test_pipeline_gets_the_hosts_env(
        self, paths: Paths, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The real pipeline resolves the key and the debug switch from record()'s env."""
        for name in ("TWENTYI_TELEMETRY_PUBLIC_KEY", "TWENTYI_TELEMETRY_DEBUG"):
            monkeypatch.delenv(name, raising=False)  # only the env passed in may supply them
        key = public_key_to_text(generate_keypair()[1])
        env = {"TWENTYI_TELEMETRY_PUBLIC_KEY": key, "TWENTYI_TELEMETRY_DEBUG": "1"}
        write_consent(paths.consent_file, consent())
        record(paths, "up", env=env, now=T0 + timedelta(hours=1))  # week 2026-W48
        record(paths, "down", env=env, now=T0 + timedelta(days=7))  # W49 rolls W48 over
        assert count_spooled(paths) == 1  # sealed to the key from env, not discarded
        err = capsys.readouterr().err  # debug (from env) printed instead of starting a sender
        assert "TWENTYI_TELEMETRY_DEBUG is set, so nothing is sent" in err
        assert not sender.lock_file(paths).exists()


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
        tally = read_tally(paths.tally_file)
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
        tally = read_tally(paths.tally_file)
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
