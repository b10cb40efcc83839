"""The period roll-over and the sender start, in process (the real host process is in
test_sender_e2e.py): what is reported, when, sealed to whom, at most once, and what never is."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli import pipeline, sender, spool
from ldp.envelope import generate_keypair, open_sealed, public_key_to_text
from ldp.report import decode_plaintext, unpad
from ldp.sampling import SystemSource
from ldp.schema import shipped_schema
from twentyi_telemetry.consent import (
    NO_CONSENT,
    Consent,
    Decision,
    decide,
    format_time,
    shipped_policy_version,
    write_consent,
)
from twentyi_telemetry.state import Paths, load_secret
from twentyi_telemetry.tally import (
    ErrorsTally,
    Tally,
    UsageTally,
    append_entry,
    current_tally,
    encode_entry,
    iso_period,
    journal_file,
    journal_periods,
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


def memo_fields(paths: Paths) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(paths.epochs_file.read_text())["fields"]
    return fields


def command_response(paths: Paths, command: str) -> Any:
    """The epoch response the client draws for ``command`` in LAST_WEEK's epoch."""
    secret = load_secret(paths)
    assert secret is not None
    spec = shipped_schema().kind("usage").field("command")
    epoch = memo_fields(paths)["command"]["epoch"]
    return spec.randomizer().epoch_response(spec.index(command), secret, "command", epoch)


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
            assert unpad(plaintext) == entry.plaintext  # sealed padded, logged without
            report = decode_plaintext(plaintext, {schema.id: schema})
            assert (report.period, report.kind) == (LAST_WEEK, entry.kind)
            kinds.add(report.kind)
        assert kinds == {"usage", "errors"} and len(written) == 2
        assert read_tally(paths.tally_file) is None
        marked = json.loads(pipeline.reported_file(paths).read_text())
        assert (marked["usage"], marked["errors"]) == (LAST_WEEK, LAST_WEEK)

    def test_memo_holds_responses_only(self, paths: Paths, env: dict[str, str]) -> None:
        """Every field froze one epoch response that reported this week; no true value is kept."""
        pipeline.roll_over(paths, setup(paths, env), NOW, env)
        fields = memo_fields(paths)
        expected = {f.name for k in shipped_schema().kinds for f in k.fields}
        assert set(fields) == expected
        assert all(len(entry["reported"]) == 1 for entry in fields.values())
        raw = paths.epochs_file.read_text()
        for word in ("docker", "linux", "prr/", "1.4", "up", "timeout"):
            assert f'"{word}' not in raw

    @pytest.mark.parametrize(("first", "command"), [(0, "status"), (1, "up"), (3, "up")])
    def test_command_is_one_sampled_invocation(
        self, paths: Paths, env: dict[str, str], first: int, command: str
    ) -> None:
        """The command is drawn over invocations (status x1, up x3, sorted keys) by the source."""
        pipeline.roll_over(paths, setup(paths, env), NOW, env, rand=Scripted(first))
        assert memo_fields(paths)["command"]["response"] == command_response(paths, command)

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
        assert "command" not in memo_fields(paths)

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
        assert spool.spool_names(paths) == [] and not paths.epochs_file.exists()
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert b'"fields"' not in path.read_bytes(), path

    def test_unusable_cache_dir_breaks_nothing(self, tmp_path: Path, env: dict[str, str]) -> None:
        """A cache dir that cannot exist: nothing spooled, nothing spent, journal kept."""
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where the cache dir should be")
        paths = Paths(tmp_path / "config", tmp_path / "state", blocker / "cache")
        decision = setup(paths, env)
        with pytest.raises(OSError):
            pipeline.roll_over(paths, decision, NOW, env)
        assert spool.spool_names(paths) == []
        assert not pipeline.reported_file(paths).exists() and not paths.epochs_file.exists()

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


def append(paths: Paths, period: str, command: str, as_of: datetime = AS_OF) -> None:
    """One host command's journal line, as ``twentyi_telemetry.tracking`` appends it."""
    usage = (format_time(as_of), command, ["docker"], "1.4")
    append_entry(paths.state_dir, period, encode_entry(usage, (format_time(as_of), "none")))


class Captured:
    """Records the tallies the roll-over builds reports from (the counts that were kept)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tallies: list[Tally] = []
        real = pipeline._roll_over

        def spy(paths: Paths, decision: Decision, tally: Tally, *args: Any) -> list[Path]:
            self.tallies.append(Tally.from_json(tally.to_json()))
            return real(paths, decision, tally, *args)

        monkeypatch.setattr(pipeline, "_roll_over", spy)

    def count(self, period: str) -> int:
        return sum(
            sum(t.usage.commands.values())
            for t in self.tallies
            if t.period == period and t.usage is not None
        )


class TestJournalRollOver:
    """Finished periods' journals become reports; no count is lost or counted twice."""

    def test_finished_journal_is_reported_and_deleted(
        self, paths: Paths, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Last week's journal is claimed, reported and deleted; this week's is untouched."""
        write_consent(paths.consent_file, consent())
        paths.state_dir.mkdir(parents=True)
        for command in ("up", "up", "status"):
            append(paths, LAST_WEEK, command)
        append(paths, iso_period(NOW), "down")
        captured = Captured(monkeypatch)
        written = pipeline.roll_over(paths, decide(env, paths.consent_file), NOW, env)
        assert len(written) == 2 and captured.count(LAST_WEEK) == 3
        assert list(journal_periods(paths.state_dir)) == [iso_period(NOW)]

    def test_lines_from_before_the_consent_are_not_reported(
        self, paths: Paths, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Lines counted under an earlier consent (before a re-opt-in) are dropped."""
        write_consent(paths.consent_file, consent())
        paths.state_dir.mkdir(parents=True)
        append(paths, LAST_WEEK, "up", as_of=AS_OF - timedelta(days=30))
        append(paths, LAST_WEEK, "status")
        captured = Captured(monkeypatch)
        pipeline.roll_over(paths, decide(env, paths.consent_file), NOW, env)
        assert captured.count(LAST_WEEK) == 1

    def test_late_lines_are_carried_over(
        self, paths: Paths, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A count that reaches a week's journal after the week was reported is not dropped:
        it moves to the current week."""
        write_consent(paths.consent_file, consent())
        paths.state_dir.mkdir(parents=True)
        append(paths, LAST_WEEK, "up")
        decision = decide(env, paths.consent_file)
        assert len(pipeline.roll_over(paths, decision, NOW, env)) == 2
        append(paths, LAST_WEEK, "status")  # a command that finished a moment too late
        assert pipeline.roll_over(paths, decision, NOW + timedelta(minutes=1), env) == []
        current = current_tally(paths.state_dir, iso_period(NOW), AS_OF, AS_OF)
        assert current is not None and current.usage is not None
        assert current.usage.commands == {"status": 1}
        assert list(journal_periods(paths.state_dir)) == [iso_period(NOW)]

    def test_claimed_leftovers_of_a_crashed_worker_are_reported_once(
        self, paths: Paths, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A worker that died after claiming a journal: the next run reports its lines."""
        write_consent(paths.consent_file, consent())
        paths.state_dir.mkdir(parents=True)
        append(paths, LAST_WEEK, "up")
        journal = journal_file(paths.state_dir, LAST_WEEK)
        journal.rename(journal.with_name(f"journal-{LAST_WEEK}.0123456789abcdef.claimed"))
        captured = Captured(monkeypatch)
        assert len(pipeline.roll_over(paths, decide(env, paths.consent_file), NOW, env)) == 2
        assert captured.count(LAST_WEEK) == 1 and journal_periods(paths.state_dir) == {}

    def test_parallel_commands_across_a_roll_over_lose_no_count(
        self, paths: Paths, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Four processes each count 60 commands, alternating last week and this week, while
        the roll-over runs over and over: every count ends up reported or in this week."""
        write_consent(paths.consent_file, consent())
        paths.state_dir.mkdir(parents=True)
        code = (
            "import sys\n"
            "from datetime import datetime, timedelta\n"
            "from pathlib import Path\n"
            "from twentyi_telemetry import tracking, worker\n"
            "from twentyi_telemetry.state import Paths\n"
            "worker.start = lambda paths, env: None\n"
            "p = Paths(*map(Path, sys.argv[1:4]))\n"
            "now = datetime.fromisoformat(sys.argv[4])\n"
            "for i in range(60):\n"
            "    when = now - timedelta(weeks=1) if i % 2 else now\n"
            "    tracking.record('up', paths=p, env={}, now=when)\n"
        )
        argv = [sys.executable, "-c", code, *map(str, (paths.config_dir, paths.state_dir))]
        argv += [str(paths.cache_dir), NOW.isoformat()]
        captured = Captured(monkeypatch)
        decision = decide(env, paths.consent_file)
        procs = [subprocess.Popen(argv, cwd=REPO) for _ in range(4)]
        deadline = time.monotonic() + 60
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            pipeline.roll_over(paths, decision, NOW, env)
        assert all(p.wait(timeout=60) == 0 for p in procs)
        pipeline.roll_over(paths, decision, NOW, env)
        current = current_tally(paths.state_dir, iso_period(NOW), AS_OF, AS_OF)
        assert current is not None and current.usage is not None
        assert captured.count(LAST_WEEK) + sum(current.usage.commands.values()) == 4 * 60


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
        for left in (1, 0):  # one report per run and per request
            outcome = sender.run(paths, env, now=NOW, transport=transport, force=True)
            assert (outcome.state, outcome.sent, outcome.kept) == ("sent", 1, left)
        assert len(requests) == 2
        assert spool.spool_names(paths) == []


class TestSendableOnly:
    """The worker never builds a report under a schema without a finite yearly bound."""

    def test_v1_schema_is_never_sent(
        self, paths: Paths, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a v1-style schema shipped (no epochs), the finished week produces no report."""
        import ldp.schema
        from ldp.schema import known_schemas

        v1 = known_schemas()[0]
        monkeypatch.setattr(ldp.schema, "shipped_schema", lambda: v1)
        old = tally()
        old.schema_version = v1.version  # counted under the schema now shipped
        decision = setup(paths, env, t=old)
        assert pipeline.roll_over(paths, decision, NOW, env) == []
        assert spool.spool_names(paths) == []
