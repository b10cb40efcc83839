"""End to end: the example host CLI rolls a week over and its detached sender posts to a real
server on 127.0.0.1, whatever that server does.

The host is ``examples/host_cli.py`` run as a subprocess with the XDG dirs in a temporary
folder; the finished week is a tally written with last week's period. The success path uses
the real collector (``20i-agg serve``) and opens what it stored with the analyzer's private key;
failures use a small stub server (500, 429, 400, never answering) or a closed port. The sender's
hard deadline is shortened to DEADLINE_S through its testing hook, and every test checks that
no sender process outlives it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cli import sender, spool
from cli.pipeline import roll_over
from cli.sentlog import read_sent_log
from ldp.envelope import open_sealed
from ldp.report import SEALED_BYTES, decode_plaintext, decode_report, period_start, unpad
from ldp.schema import shipped_schema
from server_agg.keys import generate, load_private
from server_agg.store import Store
from twentyi_telemetry.consent import (
    NO_CONSENT,
    decide,
    read_consent,
    shipped_policy_version,
    write_consent,
)
from twentyi_telemetry.state import Paths, load_secret
from twentyi_telemetry.tally import (
    ErrorsTally,
    Tally,
    UsageTally,
    current_tally,
    iso_period,
    journal_file,
    write_tally,
)

POLICY = shipped_policy_version() or "1"  # the version `enable` records

REPO = Path(__file__).resolve().parent.parent
HOST = REPO / "examples" / "host_cli.py"
DEADLINE_S = 2.0
#: Start-up (interpreter, imports) before the sender arms its deadline; generous for loaded CI.
START_S = 3.0
#: DESIGN invariant 3: the host command must not wait for telemetry.
PROMPT_S = 2.0
UP = ("up", "--replicas", "2")


# --- servers -------------------------------------------------------------------------------


class Stub:
    """A tiny HTTP server that records every POST and answers as ``behaviour`` says."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.posts: list[bytes] = []
        self.release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                stub.posts.append(body)
                if stub.behaviour == "hang":
                    stub.release.wait(30)  # never answer while the test runs
                    return
                status, headers = {
                    "202": (202, {}),
                    "slow-202": (202, {}),
                    "500": (500, {}),
                    "429": (429, {"Retry-After": "86400"}),
                    "400": (400, {}),
                }[stub.behaviour]
                if stub.behaviour == "slow-202":
                    time.sleep(0.3)
                payload = (
                    b'{"accepted": 1, "duplicates": 0}' if status == 202 else b'{"error": "x"}'
                )
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return  # keep the test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reports(self) -> list[str]:
        return [r for body in self.posts for r in json.loads(body)["reports"]]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Iterator[Stub]:
    server = Stub(getattr(request, "param", "202"))
    yield server
    server.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


class Collector:
    """The real collector (``20i-agg serve``) on a free port, with a fresh key pair."""

    def __init__(self, root: Path) -> None:
        self.keys = generate(root / "keys")
        self.store = root / "store.db"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server_agg.app",
                "serve",
                "--store",
                str(self.store),
                "--port",
                "0",
                "--public-key",
                str(root / "keys"),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        if match is None:
            self.proc.kill()
            pytest.fail(f"collector did not start: {line!r} {self.proc.communicate()[1]!r}")
        self.url = match.group(0) + "/"

    def ciphertexts(self) -> list[bytes]:
        with Store(self.store, create=False) as store:
            return [c for _, _, c in store.iter_reports()]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    server = Collector(tmp_path_factory.mktemp("collector"))
    yield server
    server.close()


# --- the user's machine --------------------------------------------------------------------


class Machine:
    """One user's XDG dirs under a temporary root, and the environment pointing at them."""

    def __init__(self, root: Path, endpoint: str | None, public_key: str | None) -> None:
        self.root = root
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DO_NOT_TRACK", "CI"}
            and not k.startswith(("TWENTYI_", "XDG_"))
            and not k.lower().endswith("_proxy")
        }
        self.env.update(
            PYTHONPATH=str(REPO),
            HOME=str(root / "home"),
            XDG_CONFIG_HOME=str(root / "config"),
            XDG_STATE_HOME=str(root / "state"),
            XDG_CACHE_HOME=str(root / "cache"),
            TWENTYI_TELEMETRY_SENDER_DEADLINE=str(DEADLINE_S),
        )
        if endpoint is not None:
            self.env["TWENTYI_TELEMETRY_ENDPOINT"] = endpoint
        if public_key is not None:
            self.env["TWENTYI_TELEMETRY_PUBLIC_KEY"] = public_key
        # platformdirs on Linux: <XDG_*_HOME>/20i, and our own "telemetry" folder below it
        self.paths = Paths(
            root / "config" / "20i",
            root / "state" / "20i" / "telemetry",
            root / "cache" / "20i" / "telemetry",
        )
        (root / "cwd").mkdir(exist_ok=True)

    def opt_in(self, errors: bool = True, as_of: datetime | None = None) -> None:
        """Consent as `20i telemetry enable` writes it, by default two weeks ago."""
        as_of = datetime.now(UTC) - timedelta(days=14) if as_of is None else as_of
        consent = NO_CONSENT.decided("usage", True, as_of, POLICY, None)
        if errors:
            consent = consent.decided("errors", True, as_of, POLICY, None)
        write_consent(self.paths.consent_file, consent)

    def finished_week(self) -> str:
        """A tally of last week (so the next command rolls it over); returns its period."""
        now = datetime.now(UTC)
        period = iso_period(now - timedelta(weeks=1))
        since = period_start(period) + timedelta(hours=1)
        tally = Tally(period, shipped_schema().version, UsageTally(since), ErrorsTally(since))
        assert tally.usage is not None and tally.errors is not None
        tally.usage.add("deploy", ["docker"], "1.4")
        tally.errors.add("none")
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        write_tally(self.paths.tally_file, tally)
        return period

    def host(self, *args: str, **extra_env: str) -> tuple[tuple[int, str, str], float]:
        """Run the host CLI; return ``((exit code, stdout, stderr), seconds)``."""
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, str(HOST), *args],
            capture_output=True,
            text=True,
            env={**self.env, **extra_env},
            cwd=self.root / "cwd",
            timeout=60,
            check=False,
        )
        return (result.returncode, result.stdout, result.stderr), time.monotonic() - start

    def run_module(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args],
            capture_output=True,
            text=True,
            env={**self.env, **extra_env},
            cwd=self.root / "cwd",
            timeout=60,
            check=False,
        )

    def run_sender(self, **extra_env: str) -> None:
        """Run the sender directly (as the host would start it), ignoring its schedule."""
        result = self.run_module(
            "cli.sender",
            "--config-dir",
            str(self.paths.config_dir),
            "--state-dir",
            str(self.paths.state_dir),
            "--cache-dir",
            str(self.paths.cache_dir),
            "--force",
            **extra_env,
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")

    def senders(self) -> list[int]:
        """Live (not zombie) sender processes started for this machine."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            ours = any(b"cli.sender" in part for part in cmdline) and (
                str(self.paths.cache_dir).encode() in cmdline
            )
            if ours and state != "Z":  # a zombie has exited; only its parent has not reaped it
                found.append(int(proc.name))
        return found

    def wait_senders_gone(self, started: float) -> float:
        """Wait until no sender runs; fail if one outlives its deadline. Returns the time."""
        limit = started + START_S + DEADLINE_S + 0.5
        while self.senders():
            if time.monotonic() > limit:
                pytest.fail(f"sender(s) {self.senders()} outlived the {DEADLINE_S} s deadline")
            time.sleep(0.05)
        return time.monotonic()

    def spooled(self) -> int:
        return len(spool.spool_names(self.paths))

    def make_due(self) -> None:
        """Let the random gap run out now (as if the hours had passed): the next host command
        starts a worker, which sends one report."""
        sender.write_schedule(self.paths, sender.Schedule())

    def roll_over_by_host(self, expected: tuple[int, str, str]) -> None:
        """A host command rolls the finished week over; the worker spools both reports and,
        having just spooled them, sends nothing yet (a random gap first)."""
        outcome = self.host(*UP)
        assert_host_unchanged(outcome, expected)
        self.wait_senders_gone(time.monotonic())
        assert self.spooled() == 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], Any]:
    """The host's own output and exit codes with telemetry off."""
    machine = Machine(tmp_path_factory.mktemp("off"), None, None)
    return {args: machine.host(*args)[0] for args in (UP, ("status", "--check"))}


def assert_host_unchanged(
    outcome: tuple[tuple[int, str, str], float], expected: tuple[int, str, str]
) -> None:
    result, seconds = outcome
    assert result == expected
    assert seconds < PROMPT_S, f"host took {seconds:.2f} s"


# --- the tests -----------------------------------------------------------------------------


class TestSuccessPath:
    def test_report_arrives_sealed_and_is_logged(
        self, tmp_path: Path, collector: Collector, reference: dict[tuple[str, ...], Any]
    ) -> None:
        """The real collector stores both reports sealed; they open to the week's fields; the
        spool empties and `20i telemetry log` shows exactly what was sent."""
        machine = Machine(tmp_path, collector.url, collector.keys.public_text)
        machine.opt_in()
        period = machine.finished_week()
        before = len(collector.ciphertexts())
        machine.roll_over_by_host(reference[UP])
        assert len(collector.ciphertexts()) == before  # nothing leaves with the roll-over
        for left in (1, 0):  # one report per worker run, each after its gap
            machine.make_due()
            assert_host_unchanged(machine.host(*UP), reference[UP])
            machine.wait_senders_gone(time.monotonic())
            assert machine.spooled() == left

        stored = collector.ciphertexts()[before:]
        assert {len(c) for c in stored} == {SEALED_BYTES}
        private = load_private(collector.keys.private_path)
        schema = shipped_schema()
        plaintexts = sorted(unpad(open_sealed(c, private)) for c in stored)
        reports = [decode_report(p, {schema.id: schema}) for p in plaintexts]
        assert sorted(r.kind for r in reports) == ["errors", "usage"]
        assert {r.period for r in reports} == {period}
        assert {tuple(sorted(r.fields)) for r in reports} == {
            tuple(sorted(f.name for f in kind.fields)) for kind in schema.kinds
        }

        log = machine.run_module("cli.app", "telemetry", "log", "--json")
        assert log.returncode == 0, log.stderr
        logged = json.loads(log.stdout)["reports"]
        assert (
            sorted(
                json.dumps(e["report"], sort_keys=True, separators=(",", ":")).encode()
                for e in logged
            )
            == plaintexts
        )
        assert {e["endpoint"] for e in logged} == {collector.url + "v1/reports"}

        # The next command within the interval starts no sender and sends nothing more.
        assert_host_unchanged(machine.host(*UP), reference[UP])
        assert machine.senders() == []
        assert len(collector.ciphertexts()) == before + 2


@pytest.mark.parametrize(
    ("stub", "kept", "posts"),
    [("500", True, 1), ("429", True, 1), ("400", False, 1), ("hang", True, 1)],
    indirect=["stub"],
)
class TestFailingServer:
    def test_host_unharmed_and_spool_as_specified(
        self,
        tmp_path: Path,
        stub: Stub,
        kept: bool,
        posts: int,
        reference: dict[tuple[str, ...], Any],
        collector: Collector,
    ) -> None:
        """Host output, exit code and speed are unchanged; the sender exits by its deadline;
        500, 429 and silence keep the report with a backoff, 400 drops it (the next waits its
        random gap)."""
        machine = Machine(tmp_path, stub.url, collector.keys.public_text)
        machine.opt_in()
        machine.finished_week()
        machine.roll_over_by_host(reference[UP])
        machine.make_due()
        outcome = machine.host(*UP)
        ended = time.monotonic()
        assert_host_unchanged(outcome, reference[UP])
        machine.wait_senders_gone(ended)
        assert len(stub.posts) == posts
        assert machine.spooled() == (2 if kept else 1)
        assert read_sent_log(machine.paths.sent_log).reports == ()
        schedule = sender.read_schedule(machine.paths)
        assert schedule.failures == (1 if kept else 0)
        assert schedule.next_attempt is not None
        wait = schedule.next_attempt - datetime.now(UTC)
        if kept:
            expected = timedelta(hours=24 if stub.behaviour == "429" else 6)  # Retry-After 1 d
            assert expected - timedelta(minutes=1) < wait <= expected
        else:
            assert sender.GAP_MIN - timedelta(minutes=1) < wait <= sender.GAP_MAX

        # Backing off: the next command starts no sender.
        assert_host_unchanged(machine.host("status", "--check"), reference[("status", "--check")])
        assert machine.senders() == []
        time.sleep(0.2)
        assert len(stub.posts) == posts


class TestServerDown:
    def test_connection_refused(
        self, tmp_path: Path, reference: dict[tuple[str, ...], Any], collector: Collector
    ) -> None:
        """With nothing listening, the host is unaffected and the reports wait, backing off."""
        machine = Machine(tmp_path, closed_port_url(), collector.keys.public_text)
        machine.opt_in()
        machine.finished_week()
        machine.roll_over_by_host(reference[UP])
        machine.make_due()
        outcome = machine.host(*UP)
        ended = time.monotonic()
        assert_host_unchanged(outcome, reference[UP])
        machine.wait_senders_gone(ended)
        assert machine.spooled() == 2
        assert sender.read_schedule(machine.paths).failures == 1


class TestConcurrentHosts:
    @pytest.mark.parametrize("stub", ["slow-202"], indirect=True)
    def test_one_sender_no_duplicate(
        self,
        tmp_path: Path,
        stub: Stub,
        reference: dict[tuple[str, ...], Any],
        collector: Collector,
    ) -> None:
        """Two host commands at once roll the week over once; two more, once it is due, post
        one report once."""
        machine = Machine(tmp_path, stub.url, collector.keys.public_text)
        machine.opt_in()
        machine.finished_week()

        def two_hosts() -> None:
            procs = [
                subprocess.Popen(
                    [sys.executable, str(HOST), *UP],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=machine.env,
                    cwd=machine.root / "cwd",
                )
                for _ in range(2)
            ]
            results = []
            for proc in procs:
                out, err = proc.communicate(timeout=60)
                results.append((proc.returncode, out, err))
            ended = time.monotonic()
            assert results == [reference[UP]] * 2
            machine.wait_senders_gone(ended)

        two_hosts()
        assert stub.posts == [] and machine.spooled() == 2
        machine.make_due()
        two_hosts()
        assert len(stub.posts) == 1 and len(stub.reports()) == 1
        assert machine.spooled() == 1
        assert len(read_sent_log(machine.paths.sent_log).reports) == 1


class TestReadOnlyCache:
    def test_unusable_cache_dir(
        self,
        tmp_path: Path,
        stub: Stub,
        reference: dict[tuple[str, ...], Any],
        collector: Collector,
    ) -> None:
        """A cache dir that cannot be created (as root, a file in its way): nothing breaks and
        nothing is sent."""
        machine = Machine(tmp_path, stub.url, collector.keys.public_text)
        machine.opt_in()
        machine.finished_week()
        blocker = tmp_path / "cache-blocker"
        blocker.write_text("a regular file where the cache dir should be")
        machine.env["XDG_CACHE_HOME"] = str(blocker)
        for _ in range(2):
            assert_host_unchanged(machine.host(*UP), reference[UP])
            assert machine.senders() == []
        time.sleep(0.2)
        assert stub.posts == []
        assert list((tmp_path / "cwd").iterdir()) == []


class TestConsent:
    def test_consent_mid_period_counts_only_later_commands(
        self,
        tmp_path: Path,
        stub: Stub,
        reference: dict[tuple[str, ...], Any],
        collector: Collector,
    ) -> None:
        """Commands before `enable` are not counted; the report is built from later ones."""
        machine = Machine(tmp_path, stub.url, collector.keys.public_text)
        assert_host_unchanged(machine.host(*UP), reference[UP])  # before consent
        enable = machine.run_module("cli.app", "telemetry", "enable")
        assert enable.returncode == 0, enable.stderr
        expected = reference[("status", "--check")]
        assert_host_unchanged(machine.host("status", "--check"), expected)
        machine.wait_senders_gone(time.monotonic())  # the first command of the week starts one
        consent = read_consent(machine.paths.consent_file).consent
        assert consent is not None
        this_week = iso_period(datetime.now(UTC))
        tally = current_tally(machine.paths.state_dir, this_week, consent.usage.as_of, None)
        assert tally is not None and tally.usage is not None
        assert tally.usage.commands == {"status": 1}
        # Let the week end: the same journal, one week earlier.
        last_week = iso_period(datetime.now(UTC) - timedelta(weeks=1))
        journal_file(machine.paths.state_dir, this_week).rename(
            journal_file(machine.paths.state_dir, last_week)
        )
        outcome = machine.host(*UP)
        ended = time.monotonic()
        assert_host_unchanged(outcome, reference[UP])
        machine.wait_senders_gone(ended)
        assert machine.spooled() == 1  # usage only: error reports were not enabled
        machine.make_due()
        assert_host_unchanged(machine.host(*UP), reference[UP])
        machine.wait_senders_gone(time.monotonic())
        assert len(stub.reports()) == 1 and machine.spooled() == 0
        # The epoch memo froze the response of "status", the week's only command.
        secret = load_secret(machine.paths)
        assert secret is not None
        spec = shipped_schema().kind("usage").field("command")
        memo = json.loads(machine.paths.epochs_file.read_text())["fields"]["command"]
        response = spec.randomizer().epoch_response(
            spec.index("status"), secret, "command", memo["epoch"]
        )
        assert memo["response"] == response

    def test_do_not_track_and_disable_after_spooling(
        self,
        tmp_path: Path,
        stub: Stub,
        reference: dict[tuple[str, ...], Any],
        collector: Collector,
    ) -> None:
        """Reports already spooled are not sent once DO_NOT_TRACK is set, nor after `disable`
        (which also deletes them)."""
        machine = Machine(tmp_path, stub.url, collector.keys.public_text)
        machine.opt_in()
        machine.finished_week()
        decision = decide(machine.env, machine.paths.consent_file)
        assert len(roll_over(machine.paths, decision, datetime.now(UTC), machine.env)) == 2

        assert_host_unchanged(machine.host(*UP, DO_NOT_TRACK="1"), reference[UP])
        assert machine.senders() == []
        machine.run_sender(DO_NOT_TRACK="1")
        assert stub.posts == [] and machine.spooled() == 2

        disable = machine.run_module("cli.app", "telemetry", "disable")
        assert disable.returncode == 0, disable.stderr
        machine.run_sender()
        assert stub.posts == [] and machine.spooled() == 0


class TestDebug:
    def test_debug_prints_and_sends_nothing(
        self,
        tmp_path: Path,
        stub: Stub,
        reference: dict[tuple[str, ...], Any],
        collector: Collector,
    ) -> None:
        """TWENTYI_TELEMETRY_DEBUG=1 prints the spooled reports to stderr, keeps stdout and the
        exit code, and sends nothing (the worker still rolls the week over)."""
        machine = Machine(tmp_path, stub.url, collector.keys.public_text)
        machine.opt_in()
        machine.finished_week()
        outcome = machine.host(*UP, TWENTYI_TELEMETRY_DEBUG="1")  # starts the roll-over
        machine.wait_senders_gone(time.monotonic())
        (code, out, err), seconds = machine.host(*UP, TWENTYI_TELEMETRY_DEBUG="1")
        assert (code, out) == reference[UP][:2] and seconds < PROMPT_S
        assert outcome[0][:2] == reference[UP][:2]
        machine.wait_senders_gone(time.monotonic())
        assert stub.posts == []
        entries = [
            spool.load(machine.paths.spool_dir / n) for n in spool.spool_names(machine.paths)
        ]
        assert len(entries) == 2
        private = load_private(collector.keys.private_path)
        for entry in entries:
            assert unpad(open_sealed(entry.sealed, private)).decode() in err
        assert "nothing is sent" in err
        machine.run_sender(TWENTYI_TELEMETRY_DEBUG="1")
        assert stub.posts == [] and machine.spooled() == 2


class TestOneReportPerRequest:
    """Issue 14: what the collector sees is one report per request, a week's reports apart."""

    def test_each_request_holds_one_report_and_kinds_leave_apart(
        self,
        tmp_path: Path,
        stub: Stub,
        reference: dict[tuple[str, ...], Any],
        collector: Collector,
    ) -> None:
        """Through the real host and worker processes to a capture server on 127.0.0.1: every
        request body holds exactly one report of the one sealed length, and the week's usage
        and errors reports arrive in different requests."""
        machine = Machine(tmp_path, stub.url, collector.keys.public_text)
        machine.opt_in()
        period = machine.finished_week()
        machine.roll_over_by_host(reference[UP])
        assert stub.posts == []
        for _ in range(2):
            machine.make_due()
            assert_host_unchanged(machine.host(*UP), reference[UP])
            machine.wait_senders_gone(time.monotonic())
        assert len(stub.posts) == 2 and machine.spooled() == 0
        private = load_private(collector.keys.private_path)
        schema = shipped_schema()
        kinds = []
        for body in stub.posts:
            (one,) = json.loads(body)["reports"]  # exactly one report per request body
            sealed = base64.b64decode(one)
            assert len(sealed) == SEALED_BYTES
            report = decode_plaintext(open_sealed(sealed, private), {schema.id: schema})
            assert report.period == period
            kinds.append(report.kind)
        assert sorted(kinds) == ["errors", "usage"]  # one kind per request

    def test_reports_leave_spread_in_time(self, tmp_path: Path, stub: Stub) -> None:
        """With the clock injected: host commands every 20 minutes for two days start the
        worker whenever the host would (``spool_due``); nothing leaves with the roll-over, and
        the two reports leave alone, each at least GAP_MIN after the previous event."""
        from ldp.sampling import HmacSource
        from twentyi_telemetry.worker import spool_due

        keys = generate(tmp_path / "keys")
        machine = Machine(tmp_path, stub.url, keys.public_text)
        machine.opt_in()
        machine.finished_week()
        start = datetime.now(UTC)
        rand = HmacSource(bytes(32), b"spread-in-time")
        outcomes: list[tuple[datetime, str]] = []
        for step in range(int(timedelta(days=2) / timedelta(minutes=20))):
            now = start + step * timedelta(minutes=20)
            if step and not spool_due(machine.paths, now):
                continue  # the host would start no worker
            outcome = sender.run(machine.paths, machine.env, now=now, rand=rand)
            outcomes.append((now, outcome.state))
            if outcome.state == "empty":
                break
        sends = [t for t, state in outcomes if state == "sent"]
        assert outcomes[0] == (start, "waiting")  # the roll-over run spools and sends nothing
        assert len(sends) == 2 and len(stub.posts) == 2
        assert all(len(json.loads(body)["reports"]) == 1 for body in stub.posts)
        assert sends[0] - start >= sender.GAP_MIN
        assert sends[1] - sends[0] >= sender.GAP_MIN
        assert sends[1] - start <= 2 * sender.GAP_MAX + timedelta(minutes=40)
