"""The sender's decisions, in process, with httpx.MockTransport standing in for the network.

What each answer does to the spool, the sent log and the schedule; when an attempt is due;
which spooled reports may be sent under the current consent; locking; the debug switch. The
real detached process against real servers is in test_sender_e2e.py.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cli import sender, spool
from cli.endpoint import resolve
from cli.sentlog import MAX_LOG_BYTES, read_sent_log
from ldp.envelope import generate_keypair, open_sealed, public_key_to_text
from ldp.sampling import HmacSource
from twentyi_telemetry import worker
from twentyi_telemetry.consent import (
    NO_CONSENT,
    Consent,
    decide,
    shipped_policy_version,
    write_consent,
)
from twentyi_telemetry.state import Paths

POLICY = shipped_policy_version() or "1"  # the version `enable` records

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
AS_OF = NOW - timedelta(days=20)
ENDPOINT = "https://collector.test/"
URL = "https://collector.test/v1/reports"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(scope="module")
def keys() -> tuple[object, str]:
    private, public = generate_keypair()
    return private, public_key_to_text(public)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "state", tmp_path / "cache")


@pytest.fixture
def env(keys: tuple[object, str]) -> dict[str, str]:
    return {"TWENTYI_TELEMETRY_ENDPOINT": ENDPOINT, "TWENTYI_TELEMETRY_PUBLIC_KEY": keys[1]}


def consent(usage: bool = True, errors: bool = True, as_of: datetime = AS_OF) -> Consent:
    c = NO_CONSENT.decided("usage", usage, as_of, POLICY, None)
    return c.decided("errors", errors, as_of, POLICY, None)


@pytest.fixture
def opted_in(paths: Paths) -> Paths:
    write_consent(paths.consent_file, consent())
    return paths


def plaintext(kind: str, n: int) -> bytes:
    return json.dumps(
        {"fields": {"x": n}, "kind": kind, "period": "2026-W48", "schema": "s", "v": 1},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def put(paths: Paths, key: str, n: int = 1, kind: str = "usage", when: datetime = NOW) -> None:
    """Spool ``n`` reports, the i-th one spooled i seconds before ``when``."""
    for i in range(n):
        text = plaintext(kind, i)
        spool.add(
            paths,
            kind=kind,
            period="2026-W48",
            key=key,
            sealed=b"sealed:" + text,
            plaintext=text,
            now=when - timedelta(seconds=i),
        )


class Recorder:
    """A MockTransport handler that records requests and answers from a script."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def reports(self) -> list[bytes]:
        out: list[bytes] = []
        for request in self.requests:
            out.extend(base64.b64decode(r) for r in json.loads(request.content)["reports"])
        return out


def run(paths: Paths, env: dict[str, str], handler: Handler, **kw: object) -> sender.Outcome:
    return sender.run(paths, env, now=NOW, transport=httpx.MockTransport(handler), **kw)  # type: ignore[arg-type]


class TestAnswers:
    def test_2xx_sends_logs_and_empties(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """A 202 deletes the report, appends its plaintext to the sent log, resets backoff and
        waits a random gap; one report per run and per request, until the spool is empty."""
        put(opted_in, keys[1], 3)
        recorder = Recorder(httpx.Response(202, json={"accepted": 1, "duplicates": 0}))
        for left in (2, 1, 0):
            outcome = run(opted_in, env, recorder, force=True)
            assert (outcome.state, outcome.sent, outcome.kept) == ("sent", 1, left)
            assert len(spool.spool_names(opted_in)) == left
            schedule = sender.read_schedule(opted_in)
            assert schedule.failures == 0 and schedule.next_attempt is not None
            assert sender.GAP_MIN <= schedule.next_attempt - NOW <= sender.GAP_MAX
        assert len(recorder.requests) == 3
        for request in recorder.requests:
            assert str(request.url) == URL and request.method == "POST"
            assert request.headers["content-type"] == "application/json"
            assert "python" not in request.headers["user-agent"].lower()
            assert len(json.loads(request.content)["reports"]) == 1
        assert sorted(recorder.reports()) == sorted(
            b"sealed:" + plaintext("usage", i) for i in range(3)
        )
        logged = read_sent_log(opted_in.sent_log).reports
        assert sorted(json.dumps(r.report, sort_keys=True) for r in logged) == sorted(
            json.dumps(json.loads(plaintext("usage", i)), sort_keys=True) for i in range(3)
        )
        assert {r.endpoint for r in logged} == {URL}

    @pytest.mark.parametrize("status", [400, 404, 413, 415])
    def test_final_4xx_drops(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str], status: int
    ) -> None:
        """A 4xx other than 408/429 drops the report it answers, unsent and unlogged."""
        put(opted_in, keys[1], 2)
        outcome = run(opted_in, env, Recorder(httpx.Response(status, json={"error": "no"})))
        assert (outcome.state, outcome.dropped, outcome.sent, outcome.kept) == ("sent", 1, 0, 1)
        assert len(spool.spool_names(opted_in)) == 1
        assert read_sent_log(opted_in.sent_log).reports == ()

    @pytest.mark.parametrize(
        "answer",
        [
            httpx.Response(500),
            httpx.Response(503, headers={"Retry-After": "5"}),
            httpx.Response(429, headers={"Retry-After": "1"}),
            httpx.Response(408),
            httpx.Response(307, headers={"Location": "https://elsewhere.test/v1/reports"}),
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
        ],
        ids=["500", "503", "429", "408", "redirect", "connect-error", "read-timeout"],
    )
    def test_retryable_keeps_with_backoff(
        self,
        opted_in: Paths,
        env: dict[str, str],
        keys: tuple[object, str],
        answer: httpx.Response | Exception,
    ) -> None:
        """5xx, 429, 408, a redirect or a network error keep the reports and back off 6 h."""
        put(opted_in, keys[1], 2)
        recorder = Recorder(answer)
        outcome = run(opted_in, env, recorder)
        assert (outcome.state, outcome.kept, outcome.sent) == ("failed", 2, 0)
        assert len(spool.spool_names(opted_in)) == 2
        assert len(recorder.requests) == 1  # the redirect was not followed
        assert read_sent_log(opted_in.sent_log).reports == ()
        schedule = sender.read_schedule(opted_in)
        assert schedule.failures == 1 and schedule.next_attempt == NOW + sender.MIN_INTERVAL

    def test_backoff_doubles_and_honours_retry_after(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """Each failure in a row doubles the wait, capped at 48 h; Retry-After can lengthen it."""
        put(opted_in, keys[1])
        waits = []
        for _ in range(5):
            run(opted_in, env, Recorder(httpx.Response(500)), force=True)
            waits.append(sender.read_schedule(opted_in).next_attempt - NOW)  # type: ignore[operator]
        assert waits == [timedelta(hours=h) for h in (6, 12, 24, 48, 48)]
        sender.write_schedule(opted_in, sender.Schedule())
        run(opted_in, env, Recorder(httpx.Response(429, headers={"Retry-After": "86400"})))
        assert sender.read_schedule(opted_in).next_attempt == NOW + timedelta(hours=24)
        date = "Tue, 01 Dec 2026 21:00:00 GMT"  # 36 h after NOW
        run(opted_in, env, Recorder(httpx.Response(503, headers={"Retry-After": date})), force=True)
        assert sender.read_schedule(opted_in).next_attempt == NOW + timedelta(hours=36)

    def test_pick_is_uniform_over_the_spool_by_rand(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """The report sent is the one ``rand`` picks among all sendable ones (the CSPRNG by
        default), not the oldest: a backlog leaves in an order unrelated to its making."""
        put(opted_in, keys[1], 4)  # plaintext i spooled i seconds before NOW: 3 is oldest

        class Pick:
            def __init__(self, choice: int) -> None:
                self.choice = choice
                self.asked: list[int] = []

            def randbelow(self, n: int) -> int:
                self.asked.append(n)
                return min(self.choice, n - 1)

        recorder = Recorder(httpx.Response(202))
        first = Pick(0)
        run(opted_in, env, recorder, force=True, rand=first)
        assert 4 in first.asked  # the pick was drawn among all four
        last = Pick(10**6)
        run(opted_in, env, recorder, force=True, rand=last)
        assert recorder.reports() == [
            b"sealed:" + plaintext("usage", 3),
            b"sealed:" + plaintext("usage", 0),
        ]

    def test_gap_is_random_and_keeps_the_next_report_back(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """After a report leaves, the next may not leave before a gap drawn from rand, within
        [GAP_MIN, GAP_MAX]; a host command before it starts no attempt."""
        gaps = set()
        for seed in range(5):
            put(opted_in, keys[1], 2)
            rand = HmacSource(bytes(32), f"gap-{seed}".encode())
            run(opted_in, env, Recorder(httpx.Response(202)), force=True, rand=rand)
            schedule = sender.read_schedule(opted_in)
            assert schedule.next_attempt is not None
            gap = schedule.next_attempt - NOW
            assert sender.GAP_MIN <= gap <= sender.GAP_MAX
            newest = spool.created_of(spool.spool_names(opted_in)[-1])
            assert not sender.due(schedule, newest, NOW + sender.GAP_MIN - timedelta(seconds=1))
            assert sender.due(schedule, newest, NOW + gap)
            gaps.add(gap)
            for name in spool.spool_names(opted_in):
                spool.remove(opted_in.spool_dir / name)
        assert len(gaps) == 5

    def test_a_failure_sends_one_request(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """A failing collector is asked once per run, and every report stays spooled."""
        put(opted_in, keys[1], 2)
        recorder = Recorder(httpx.Response(503))
        outcome = run(opted_in, env, recorder)
        assert len(recorder.requests) == 1 and outcome.kept == 2


class TestSchedule:
    def test_due_rules(self) -> None:
        """Due when never tried, when the wait is over, or after a success when a new report
        came; never during a failure backoff."""
        new = NOW + timedelta(minutes=1)
        assert sender.due(sender.Schedule(), None, NOW)
        ok = sender.Schedule(NOW, NOW + sender.MIN_INTERVAL, 0)
        assert not sender.due(ok, NOW - timedelta(minutes=1), NOW + timedelta(hours=1))
        assert sender.due(ok, new, NOW + timedelta(hours=1))
        assert sender.due(ok, None, NOW + sender.MIN_INTERVAL)
        failing = sender.Schedule(NOW, NOW + sender.MIN_INTERVAL, 2)
        assert not sender.due(failing, new, NOW + timedelta(hours=1))
        assert sender.due(failing, new, NOW + sender.MIN_INTERVAL)

    def test_not_due_sends_nothing(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """Within the interval after an attempt, a run posts nothing."""
        put(opted_in, keys[1], when=NOW - timedelta(hours=2))
        sender.write_schedule(
            opted_in, sender.Schedule(NOW - timedelta(hours=1), NOW + timedelta(hours=5), 0)
        )
        recorder = Recorder(httpx.Response(202))
        assert run(opted_in, env, recorder).state == "not-due"
        assert recorder.requests == []

    def test_garbled_schedule_means_never_tried(self, paths: Paths) -> None:
        """An unreadable schedule file does not block sending forever."""
        paths.cache_dir.mkdir(parents=True)
        sender.schedule_file(paths).write_text("{garbage")
        schedule = sender.read_schedule(paths)
        assert (schedule.next_attempt, schedule.failures) == (None, 0)

    def test_round_trip(self, paths: Paths) -> None:
        """The schedule survives a write and a read."""
        sender.write_schedule(paths, sender.Schedule(NOW, NOW + timedelta(hours=6), 3))
        schedule = sender.read_schedule(paths)
        assert (schedule.last_attempt, schedule.next_attempt, schedule.failures) == (
            NOW,
            NOW + timedelta(hours=6),
            3,
        )


class TestConsentAtSendTime:
    def test_do_not_track_sends_nothing_keeps_spool(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """DO_NOT_TRACK set after reports were spooled: nothing is posted, nothing deleted."""
        put(opted_in, keys[1], 2)
        recorder = Recorder(httpx.Response(202))
        outcome = run(opted_in, {**env, "DO_NOT_TRACK": "1"}, recorder)
        assert outcome.state == "off" and recorder.requests == []
        assert len(spool.spool_names(opted_in)) == 2

    def test_disable_drops_spooled_reports(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """After `disable`, spooled reports are never sent, and the worker touches nothing
        (`disable` itself deletes them, under the lock)."""
        put(opted_in, keys[1], 2)
        write_consent(opted_in.consent_file, consent(False, False, NOW - timedelta(minutes=1)))
        recorder = Recorder(httpx.Response(202))
        outcome = run(opted_in, env, recorder)
        assert (outcome.state, outcome.dropped) == ("off", 0)
        assert recorder.requests == [] and not sender.lock_file(opted_in).exists()

    def test_disable_errors_keeps_usage(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """`disable --errors` drops error reports and still sends usage reports."""
        put(opted_in, keys[1], 1, kind="usage")
        put(opted_in, keys[1], 1, kind="errors")
        write_consent(opted_in.consent_file, consent(True, False))
        recorder = Recorder(httpx.Response(202))
        outcome = run(opted_in, env, recorder)
        assert (outcome.sent, outcome.dropped) == (1, 1)
        assert recorder.reports() == [b"sealed:" + plaintext("usage", 0)]

    def test_reenabled_after_spooling_drops(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """A report spooled before the current consent's as-of time is never sent."""
        put(opted_in, keys[1], 1, when=NOW - timedelta(days=2))
        write_consent(opted_in.consent_file, consent(as_of=NOW - timedelta(days=1)))
        recorder = Recorder(httpx.Response(202))
        assert run(opted_in, env, recorder).dropped == 1
        assert recorder.requests == []

    def test_other_key_drops(self, opted_in: Paths, env: dict[str, str]) -> None:
        """Reports sealed to another analyzer key than the configured one are dropped."""
        _, other = generate_keypair()
        put(opted_in, public_key_to_text(other), 1)
        recorder = Recorder(httpx.Response(202))
        assert run(opted_in, env, recorder).dropped == 1 and recorder.requests == []

    def test_select_keeps_everything_when_environment_decides(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """Under CI or the kill switch nothing is sendable and nothing is marked for deletion."""
        put(opted_in, keys[1], 2)
        entries = [spool.load(opted_in.spool_dir / n) for n in spool.spool_names(opted_in)]
        for extra in ({"CI": "true"}, {"TWENTYI_TELEMETRY": "0"}):
            both = {**env, **extra}
            decision = decide(both, opted_in.consent_file)
            assert sender.select(entries, decision, resolve(opted_in, both)) == ([], [])


class TestGuards:
    def test_debug_sends_nothing(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """With TWENTYI_TELEMETRY_DEBUG=1 the sender posts nothing and keeps the spool."""
        put(opted_in, keys[1])
        recorder = Recorder(httpx.Response(202))
        outcome = run(opted_in, {**env, "TWENTYI_TELEMETRY_DEBUG": "1"}, recorder)
        assert outcome.state == "debug" and recorder.requests == []
        assert len(spool.spool_names(opted_in)) == 1

    def test_no_endpoint_waits(self, opted_in: Paths, keys: tuple[object, str]) -> None:
        """Without an endpoint, reports wait and the next look is MIN_INTERVAL later."""
        put(opted_in, keys[1])
        env = {"TWENTYI_TELEMETRY_PUBLIC_KEY": keys[1]}
        outcome = run(opted_in, env, Recorder(httpx.Response(202)))
        assert outcome.state == "not-configured" and len(spool.spool_names(opted_in)) == 1
        assert sender.read_schedule(opted_in).next_attempt == NOW + sender.MIN_INTERVAL

    def test_unwritable_state_sends_nothing(
        self, tmp_path: Path, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """If the sent log cannot be written, nothing is sent (the log must show all sent)."""
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where the state dir should be")
        paths = Paths(tmp_path / "config", blocker / "state", tmp_path / "cache")
        write_consent(paths.consent_file, consent())
        put(paths, keys[1])
        recorder = Recorder(httpx.Response(202))
        assert run(paths, env, recorder).state == "unwritable"
        assert recorder.requests == [] and len(spool.spool_names(paths)) == 1

    def test_one_sender_at_a_time(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """While another process holds the lock, a run does nothing; the probe sees it."""
        put(opted_in, keys[1])
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl, os, sys, time\n"
                "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                "print('locked', flush=True)\n"
                "sys.stdin.read()\n",
                str(sender.lock_file(opted_in)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            assert sender.sender_running(opted_in)
            recorder = Recorder(httpx.Response(202))
            assert run(opted_in, env, recorder).state == "busy"
            assert recorder.requests == []
        finally:
            holder.communicate("", timeout=10)
        # the holder is gone, and with it its lock: no stale lock can block the next sender
        assert not sender.sender_running(opted_in)
        assert run(opted_in, env, Recorder(httpx.Response(202))).state == "sent"
        assert not worker.pid_file(opted_in).exists()  # written while running, removed after

    def test_corrupt_spool_file_is_dropped(
        self, opted_in: Paths, env: dict[str, str], keys: tuple[object, str]
    ) -> None:
        """A spool file that cannot be read back is deleted, the others are sent."""
        put(opted_in, keys[1], 2)
        first = opted_in.spool_dir / spool.spool_names(opted_in)[0]
        first.write_text("{garbage")
        recorder = Recorder(httpx.Response(202))
        outcome = run(opted_in, env, recorder)
        assert (outcome.sent, outcome.dropped) == (1, 1) and spool.spool_names(opted_in) == []


class TestSentLog:
    def test_bounded(self, tmp_path: Path) -> None:
        """The log never grows past MAX_LOG_BYTES; the newest lines are kept, whole."""
        log = tmp_path / "state" / "sent-log.jsonl"
        line = json.dumps({"pad": "x" * 1000}).encode() + b"\n"
        total = 0
        for i in range(400):
            sender.append_sent_log(log, [line.replace(b"x", str(i % 10).encode(), 1)])
            total += len(line)
            assert log.stat().st_size <= MAX_LOG_BYTES
        assert total > MAX_LOG_BYTES
        lines = log.read_bytes().splitlines(keepends=True)
        assert all(len(x) == len(line) for x in lines)
        assert lines[-1].startswith(b'{"pad": "9')  # the last appended line (i = 399)
        assert oct(log.stat().st_mode & 0o777) == oct(0o600)


class TestHelpers:
    @pytest.mark.parametrize(
        ("endpoint", "url"),
        [
            ("https://t.example", "https://t.example/v1/reports"),
            ("https://t.example/", "https://t.example/v1/reports"),
            ("https://x.example/telemetry/", "https://x.example/telemetry/v1/reports"),
            ("http://127.0.0.1:8020/v1/reports", "http://127.0.0.1:8020/v1/reports"),
        ],
    )
    def test_reports_url(self, endpoint: str, url: str) -> None:
        """The endpoint may be the collector's base URL or its reports URL."""
        assert sender.reports_url(endpoint) == url

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [("", 10.0), ("3", 3.0), ("0.1", 1.0), ("1e9", 60.0), ("nan", 10.0), ("soon", 10.0)],
    )
    def test_hard_deadline(self, raw: str, expected: float) -> None:
        """The deadline hook is clamped to [1, 60] s; junk means the default."""
        assert sender.hard_deadline({sender.ENV_DEADLINE: raw}) == expected

    def test_deadline_kills_a_stuck_process(self) -> None:
        """The armed deadline ends a stuck process by SIGALRM, even if it was ignored or blocked."""
        import signal
        import time

        start = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import signal, time\n"
                "from cli.sender import _arm_deadline\n"
                "signal.signal(signal.SIGALRM, signal.SIG_IGN)  # as a host might leave it\n"
                "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
                "_arm_deadline(1.0)\n"
                "time.sleep(5)\n",
            ],
            cwd=REPO,
            timeout=20,
            check=False,
        )
        assert result.returncode == -signal.SIGALRM
        assert time.monotonic() - start < 10

    def test_decrypts_what_it_posts(self, keys: tuple[object, str]) -> None:
        """The body is {"reports": [base64]} of exactly the spooled ciphertexts."""
        from ldp.envelope import public_key_from_text, seal

        sealed = seal(b'{"a":1}', public_key_from_text(keys[1]))
        entry = spool.SpoolEntry(Path("x"), NOW, "usage", "2026-W48", keys[1], sealed, b"{}")
        body = json.loads(sender._body(entry))
        assert set(body) == {"reports"}
        assert open_sealed(base64.b64decode(body["reports"][0]), keys[0]) == b'{"a":1}'  # type: ignore[arg-type]
