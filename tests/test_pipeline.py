"""The period roll-over and the sender start, in process (the real host process is in
test_sender_e2e.py): what is reported, when, sealed to whom, at most once, and what never is."""

from __future__ import annotations

import fcntl
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli import pipeline, sender, spool
from ldp.budget import memo_digest
from ldp.envelope import generate_keypair, open_sealed, public_key_to_text
from ldp.report import decode_report
from ldp.sampling import SystemSource
from ldp.schema import shipped_schema
from twentyi_telemetry.consent import (
    NO_CONSENT,
    Consent,
    Decision,
    decide,
    shipped_policy_version,
    write_consent,
)
from twentyi_telemetry.state import Paths, load_secret
from twentyi_telemetry.tally import (
    ErrorsTally,
    Tally,
    UsageTally,
    iso_period,
    read_tally,
    write_tally,
)

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # Monday of 2026-W49
LAST_WEEK = "2026-W48"
SINCE = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
AS_OF = NOW - timedelta(days=20)
#: The policy version this 20i ships: what `enable` writes into the consent file.
POLICY = shipped_policy_version() or ""


@pytest.fixture(scope="module")
def keys() -> tuple[Any, str]:
    private, public = generate_keypair()
    return private, public_key_to_text(public)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "state", tmp_path / "cache")


@pytest.fixture
def env(keys: tuple[Any, str]) -> dict[str, str]:
    return {
        "TWENTYI_TELEMETRY_ENDPOINT": "http://127.0.0.1:9/",
        "TWENTYI_TELEMETRY_PUBLIC_KEY": keys[1],
    }


def consent(usage: bool = True, errors: bool = True, as_of: datetime = AS_OF) -> Consent:
    c = NO_CONSENT.decided("usage", usage, as_of, POLICY, None)
    return c.decided("errors", errors, as_of, POLICY, None)


def tally(
    period: str = LAST_WEEK, since: datetime = SINCE, commands: dict[str, int] | None = None
) -> Tally:
    t = Tally(period, shipped_schema().version, UsageTally(since), ErrorsTally(since))
    assert t.usage is not None and t.errors is not None
    for command, count in (commands or {"up": 3, "status": 1}).items():
        for _ in range(count):
            t.usage.add(command, ["docker", "git"], "1.4")
    t.errors.add("none")
    t.errors.add("timeout")
    return t


def setup(
    paths: Paths, env: dict[str, str], c: Consent | None = None, t: Tally | None = None
) -> Decision:
    write_consent(paths.consent_file, consent() if c is None else c)
    paths.state_dir.mkdir(parents=True, exist_ok=True)  # tracking's lock creates it in real life
    write_tally(paths.tally_file, tally() if t is None else t)
    return decide(env, paths.consent_file)


class Scripted(SystemSource):
    """The CSPRNG, except that the first ``randbelow`` (the command sample) is scripted."""

    def __init__(self, first: int) -> None:
        super().__init__()
        self.first: int | None = first

    def randbelow(self, n: int) -> int:
        if self.first is not None:
            value, self.first = min(self.first, n - 1), None
            return value
        return super().randbelow(n)


def ledger_fields(paths: Paths) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = json.loads(paths.ledger_file.read_text())["fields"]
    return fields


def command_digest(paths: Paths, command: str) -> str:
    secret = load_secret(paths)
    assert secret is not None
    spec = next(f for f in shipped_schema().kind("usage").fields if f.name == "command")
    (label,) = spec.randomizer().memo_keys(spec.index(command), "command", secret)
    return memo_digest(secret, label)


class TestRollOver:
    def test_finished_period_is_sealed_and_spooled(
        self, paths: Paths, env: dict[str, str], keys: tuple[Any, str]
    ) -> None:
        """A finished week becomes one sealed report per kind; the tally is cleared."""
        decision = setup(paths, env)
        written = pipeline.roll_over(paths, decision, NOW, env)
        schema = shipped_schema()
        kinds = set()
        for path in written:
            entry = spool.load(path)
            assert entry.key == keys[1]
            plaintext = open_sealed(entry.sealed, keys[0])
            assert plaintext == entry.plaintext
            report = decode_report(plaintext, {schema.id: schema})
            assert (report.period, report.kind) == (LAST_WEEK, entry.kind)
            kinds.add(report.kind)
        assert kinds == {"usage", "errors"} and len(written) == 2
        assert read_tally(paths.tally_file) is None
        marked = json.loads(pipeline.reported_file(paths).read_text())
        assert (marked["usage"], marked["errors"]) == (LAST_WEEK, LAST_WEEK)

    def test_ledger_holds_digests_only(self, paths: Paths, env: dict[str, str]) -> None:
        """Every field's memo key is in the ledger as a 64-hex digest; no value or label is."""
        pipeline.roll_over(paths, setup(paths, env), NOW, env)
        fields = ledger_fields(paths)
        expected = {f.name for k in shipped_schema().kinds for f in k.fields}
        assert set(fields) == expected
        assert all(len(d) == 1 and len(d[0]) == 64 for d in fields.values())
        raw = paths.ledger_file.read_text()
        for word in ("docker", "linux", "prr/", "1.4", "up", "timeout"):
            assert f'"{word}' not in raw

    @pytest.mark.parametrize(("first", "command"), [(0, "status"), (1, "up"), (3, "up")])
    def test_command_is_one_sampled_invocation(
        self, paths: Paths, env: dict[str, str], first: int, command: str
    ) -> None:
        """The command is drawn over invocations (status x1, up x3, sorted keys) by the source."""
        pipeline.roll_over(paths, setup(paths, env), NOW, env, rand=Scripted(first))
        assert ledger_fields(paths)["command"] == [command_digest(paths, command)]

    def test_current_period_is_left_alone(self, paths: Paths, env: dict[str, str]) -> None:
        """A tally of the running week is neither reported nor cleared."""
        decision = setup(paths, env, t=tally(period=iso_period(NOW)))
        assert pipeline.roll_over(paths, decision, NOW, env) == []
        assert read_tally(paths.tally_file) is not None and spool.spool_names(paths) == []

    def test_at_most_once_per_period(self, paths: Paths, env: dict[str, str]) -> None:
        """A week already reported is not reported again, even if its tally comes back."""
        decision = setup(paths, env)
        assert len(pipeline.roll_over(paths, decision, NOW, env)) == 2
        write_tally(paths.tally_file, tally())  # e.g. a crash before the tally was cleared
        assert pipeline.roll_over(paths, decision, NOW + timedelta(hours=1), env) == []
        assert len(spool.spool_names(paths)) == 2

    def test_nothing_from_before_the_consent(self, paths: Paths, env: dict[str, str]) -> None:
        """A kind whose tally starts before its consent's as-of time is never reported."""
        c = NO_CONSENT.decided("usage", True, SINCE + timedelta(hours=1), POLICY, None)
        c = c.decided("errors", True, AS_OF, POLICY, None)
        decision = setup(paths, env, c=c)
        written = pipeline.roll_over(paths, decision, NOW, env)
        assert [spool.load(p).kind for p in written] == ["errors"]
        assert "command" not in ledger_fields(paths)

    def test_kind_off_is_not_reported(self, paths: Paths, env: dict[str, str]) -> None:
        """With error reports off, only the usage report is built."""
        decision = setup(paths, env, c=consent(errors=False))
        written = pipeline.roll_over(paths, decision, NOW, env)
        assert [spool.load(p).kind for p in written] == ["usage"]

    def test_no_key_discards_the_period(
        self, paths: Paths, env: dict[str, str], tmp_path: Path
    ) -> None:
        """Without an analyzer key nothing is built or spooled, and no plaintext is written."""
        env = {"TWENTYI_TELEMETRY_ENDPOINT": env["TWENTYI_TELEMETRY_ENDPOINT"]}
        decision = setup(paths, env)
        assert pipeline.roll_over(paths, decision, NOW, env) == []
        assert read_tally(paths.tally_file) is None
        assert spool.spool_names(paths) == [] and not paths.ledger_file.exists()
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert b'"fields"' not in path.read_bytes(), path

    def test_unusable_cache_dir_breaks_nothing(self, tmp_path: Path, env: dict[str, str]) -> None:
        """A cache dir that cannot exist: no exception, nothing spooled, nothing spent."""
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where the cache dir should be")
        paths = Paths(tmp_path / "config", tmp_path / "state", blocker / "cache")
        decision = setup(paths, env)
        spawned: list[Paths] = []
        pipeline.maybe_roll_over(
            paths=paths, decision=decision, now=NOW, env=env, spawn=lambda p, e: spawned.append(p)
        )
        assert spool.spool_names(paths) == [] and spawned == []
        assert not pipeline.reported_file(paths).exists() and not paths.ledger_file.exists()

    @pytest.mark.parametrize("case", ["too-old", "other-schema"])
    def test_stale_tallies_are_dropped(self, paths: Paths, env: dict[str, str], case: str) -> None:
        """A week older than the spool's age limit, or another schema's counts, is discarded."""
        t = tally()
        if case == "too-old":
            t.period = iso_period(NOW - spool.MAX_AGE - timedelta(weeks=2))
        else:
            t.schema_version += 1
        decision = setup(paths, env, t=t)
        assert pipeline.roll_over(paths, decision, NOW, env) == []
        assert read_tally(paths.tally_file) is None and spool.spool_names(paths) == []


class TestStartSender:
    def run(
        self, paths: Paths, env: dict[str, str], decision: Decision, now: datetime = NOW
    ) -> tuple[list[Paths], str]:
        spawned: list[Paths] = []
        err = io.StringIO()
        pipeline.maybe_roll_over(
            paths=paths,
            decision=decision,
            now=now,
            env=env,
            spawn=lambda p, e: spawned.append(p),
            stderr=err,
        )
        return spawned, err.getvalue()

    def test_roll_over_starts_the_sender(self, paths: Paths, env: dict[str, str]) -> None:
        """The command that rolls the week over starts the sender, once, and prints nothing."""
        spawned, err = self.run(paths, env, setup(paths, env))
        assert spawned == [paths] and err == ""

    def test_not_due_or_empty_starts_nothing(self, paths: Paths, env: dict[str, str]) -> None:
        """No sender for an empty spool, nor during the backoff after a failed attempt."""
        decision = setup(paths, env, t=tally(period=iso_period(NOW)))
        assert self.run(paths, env, decision)[0] == []
        write_tally(paths.tally_file, tally())
        sender.write_schedule(paths, sender.Schedule(NOW, NOW + timedelta(hours=6), 1))
        assert self.run(paths, env, decision)[0] == []
        assert len(spool.spool_names(paths)) == 2  # rolled over, waiting for the backoff
        assert self.run(paths, env, decision, NOW + timedelta(hours=6))[0] == [paths]

    def test_running_sender_is_not_doubled(self, paths: Paths, env: dict[str, str]) -> None:
        """While a sender holds the lock, host commands start no other."""
        paths.cache_dir.mkdir(parents=True)
        fd = os.open(sender.lock_file(paths), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            assert self.run(paths, env, setup(paths, env))[0] == []
        finally:
            os.close(fd)
        assert self.run(paths, env, decide(env, paths.consent_file))[0] == [paths]

    def test_debug_prints_and_starts_nothing(
        self, paths: Paths, env: dict[str, str], keys: tuple[Any, str]
    ) -> None:
        """TWENTYI_TELEMETRY_DEBUG=1 prints each report exactly as sealed, and sends nothing."""
        debug = {**env, "TWENTYI_TELEMETRY_DEBUG": "1"}
        spawned, err = self.run(paths, debug, setup(paths, debug))
        assert spawned == []
        entries = [spool.load(paths.spool_dir / n) for n in spool.spool_names(paths)]
        assert len(entries) == 2
        assert "nothing is sent" in err and "http://127.0.0.1:9/v1/reports" in err
        for entry in entries:
            assert open_sealed(entry.sealed, keys[0]).decode() in err

    def test_never_raises(self, paths: Paths, env: dict[str, str]) -> None:
        """A spawner that fails, or a garbled tally, never reaches the host."""

        def broken(p: Paths, e: object) -> None:
            raise OSError("no fork for you")

        decision = setup(paths, env)
        pipeline.maybe_roll_over(paths=paths, decision=decision, now=NOW, env=env, spawn=broken)
        paths.tally_file.write_bytes(b"\x00garbage")
        pipeline.maybe_roll_over(paths=paths, decision=decision, now=NOW, env=env, spawn=broken)
        assert len(spool.spool_names(paths)) == 2


class TestHostPath:
    def test_no_heavy_imports_without_roll_over(self, paths: Paths, env: dict[str, str]) -> None:
        """With a current tally and an empty spool, the check imports no ldp, httpx or crypto."""
        setup(paths, env, t=tally(period=iso_period(datetime.now(UTC))))
        probe = (
            "import json, sys\n"
            "from datetime import UTC, datetime\n"
            "from twentyi_telemetry.consent import decide\n"
            "from cli.pipeline import maybe_roll_over\n"
            "from twentyi_telemetry.state import Paths\n"
            "paths = Paths(*map(__import__('pathlib').Path, sys.argv[1:4]))\n"
            "decision = decide({}, paths.consent_file)\n"
            "maybe_roll_over(paths=paths, decision=decision, now=datetime.now(UTC), env={})\n"
            "heavy = {'ldp', 'httpx', 'cryptography', 'numpy', 'subprocess'}\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & heavy)))\n"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                probe,
                *map(str, (paths.config_dir, paths.state_dir, paths.cache_dir)),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == []


class TestPolicyChange:
    def test_spool_waits_for_reconsent(self, paths: Paths, env: dict[str, str]) -> None:
        """Under a changed policy the sender posts nothing and keeps the spool until enable."""
        assert len(pipeline.roll_over(paths, setup(paths, env), NOW, env)) == 2
        write_consent(paths.consent_file, consent()._replace(policy_version="0"))
        requests: list[httpx.Request] = []

        def accept(request: httpx.Request) -> httpx.Response:
            requests.append(request)
            return httpx.Response(202)

        transport = httpx.MockTransport(accept)
        outcome = sender.run(paths, env, now=NOW, transport=transport, force=True)
        assert (outcome.state, outcome.detail, outcome.kept) == ("off", "policy-changed", 2)
        assert requests == [] and len(spool.spool_names(paths)) == 2
        write_consent(paths.consent_file, consent())  # `enable` records the shipped version
        outcome = sender.run(paths, env, now=NOW, transport=transport, force=True)
        assert (outcome.state, outcome.sent) == ("sent", 2) and len(requests) == 1
        assert spool.spool_names(paths) == []
