"""The collector's HTTP API (DESIGN section 4) against the ASGI app, and `serve` start-up errors."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from typer.testing import CliRunner

from ldp.envelope import fingerprint, generate_keypair, public_key_to_text, seal
from server_agg.app import app as cli_app
from server_agg.collector import (
    MAX_BODY_BYTES,
    MAX_REPORT_BYTES,
    MAX_REPORTS,
    RateLimit,
    TokenBucket,
    create_app,
)
from server_agg.store import Store

JSON = {"content-type": "application/json"}


def _ct(n: int = 1, size: int = 120) -> list[bytes]:
    """``n`` distinct ciphertext-sized random byte strings."""
    return [os.urandom(size) for _ in range(n)]


def _body(reports: Sequence[bytes]) -> bytes:
    return json.dumps({"reports": [base64.b64encode(r).decode() for r in reports]}).encode()


class _FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class AppClient:
    """Synchronous requests into an ASGI app on one event loop, with its lifespan, via httpx.

    (Starlette's own AppClient now warns that its httpx backend is deprecated.)
    """

    def __init__(self, app: Starlette, client: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        self.app = app
        self._transport = httpx.ASGITransport(app=app, client=client)

    def __enter__(self) -> AppClient:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._lifespan = self.app.router.lifespan_context(self.app)
        self._portal.call(self._lifespan.__aenter__)
        self._client = httpx.AsyncClient(transport=self._transport, base_url="http://collector")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._portal.call(self._client.aclose)
        self._portal.call(self._lifespan.__aexit__, kind, exc, tb)
        self._portal_cm.__exit__(kind, exc, tb)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        call = functools.partial(self._client.request, method, url, **kwargs)
        return self._portal.call(call)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppClient, Store]]:
    """One app over one store for the property tests (Hypothesis dislikes per-test fixtures)."""
    store = Store(tmp_path_factory.mktemp("collector") / "store.db")
    app = create_app(store, rate_limit=None)
    with AppClient(app) as client:
        yield client, store
    store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store.db") as s:
        yield s


# -- Hypothesis strategies: well-formed, almost well-formed and hostile requests --------------

_printable = st.characters(min_codepoint=32, max_codepoint=126)
_json_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
_json_any = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_entry = st.one_of(
    st.binary(min_size=48, max_size=400).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),  # often too short
    st.binary(min_size=48, max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.text(max_size=30),
    _json_leaf,
)
_envelope = st.one_of(
    st.fixed_dictionaries({"reports": st.lists(_entry, max_size=MAX_REPORTS + 4)}),
    st.dictionaries(st.sampled_from(["reports", "report", "v", ""]), _json_any, max_size=3),
    _json_any,
)
_valid_entry = st.binary(min_size=48, max_size=300).map(lambda b: base64.b64encode(b).decode())
_bodies = st.one_of(
    _envelope.map(lambda doc: json.dumps(doc).encode()),
    # Mostly valid batches, some of them over the 64-report limit.
    st.lists(_valid_entry, min_size=1, max_size=MAX_REPORTS + 8).map(
        lambda reports: json.dumps({"reports": reports}).encode()
    ),
    st.binary(max_size=300),
    # Around the 256 KiB body limit.
    st.integers(MAX_BODY_BYTES - 4, MAX_BODY_BYTES + 4).map(lambda n: b" " * n),
    st.just(b"[" * 5000 + b"]" * 5000),  # nesting deep enough to exhaust the JSON decoder
)
_json_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
_content_types = st.one_of(
    st.sampled_from(
        [
            None,
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ]
    ),
    st.text(_printable, max_size=30),
)
_paths = st.one_of(
    st.sampled_from(["/v1/reports", "/v1/health", "/v1/public-key", "/", "/v1/reports/"]),
    # "//x" would be read as a network-path reference (host x) by the client, not sent as a
    # path; a real client cannot send it either, so such paths are not generated.
    st.text(st.sampled_from("abcv1/-_.%"), max_size=20)
    .map(lambda s: "/" + s)
    .filter(lambda p: not p.startswith("//")),
)
_methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])


def _check_answer(response: httpx.Response, method: str) -> None:
    """Shared contract: no 5xx; every error has a JSON reason; 429 says when to retry."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and method != "HEAD":
        reason = response.json()["error"]
        assert isinstance(reason, str) and reason
    if response.status_code == 429:
        assert int(response.headers["retry-after"]) >= 1


class TestContract:
    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(method=_methods, path=_paths, content_type=_content_types, body=_bodies)
    def test_no_5xx_for_any_request(
        self,
        shared: tuple[AppClient, Store],
        method: str,
        path: str,
        content_type: str | None,
        body: bytes,
    ) -> None:
        """Whatever the method, path, content type and body, the answer is never a 5xx."""
        client, _ = shared
        headers = {} if content_type is None else {"content-type": content_type}
        response = client.request(method, path, content=body, headers=headers)
        event(f"status {response.status_code}")  # shown by --hypothesis-show-statistics
        _check_answer(response, method)

    def test_no_5xx_for_any_report_post(self, shared: tuple[AppClient, Store]) -> None:
        """Posts of arbitrary bodies never get a 5xx, and reach 202, 400, 413 and 415 on the way."""
        client, _ = shared
        seen: Counter[int] = Counter()

        @settings(
            max_examples=300,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(content_type=st.one_of(_json_types, _content_types), body=_bodies)
        def post(content_type: str | None, body: bytes) -> None:
            headers = {} if content_type is None else {"content-type": content_type}
            response = client.post("/v1/reports", content=body, headers=headers)
            seen[response.status_code] += 1
            _check_answer(response, "POST")

        post()
        # The property above must not pass by exercising only one branch of the validator.
        assert {202, 400, 413, 415} <= set(seen), seen

    @settings(max_examples=100, deadline=None, database=None)
    @given(
        reports=st.lists(st.binary(min_size=48, max_size=MAX_REPORT_BYTES), min_size=1, max_size=8)
    )
    def test_valid_batches_are_acknowledged(
        self, shared: tuple[AppClient, Store], reports: list[bytes]
    ) -> None:
        """Any well-formed batch gets 202; its counts match what the store gained."""
        client, store = shared
        before = store.count()
        response = client.post("/v1/reports", content=_body(reports), headers=JSON)
        assert response.status_code == 202, response.text
        doc = response.json()
        assert doc["accepted"] + doc["duplicates"] == len(reports)
        assert doc["accepted"] == store.count() - before
        assert doc["accepted"] <= len(set(reports))


class TestAccepted:
    def test_batch_is_stored_and_counted(self, store: Store) -> None:
        """A 202 says how many reports were new and how many duplicates, and stores the bytes."""
        reports = _ct(5)
        with AppClient(create_app(store)) as client:
            first = client.post("/v1/reports", content=_body(reports), headers=JSON)
            again = client.post("/v1/reports", content=_body([*reports[:2], *_ct(1)]), headers=JSON)
        assert (first.status_code, first.json()) == (202, {"accepted": 5, "duplicates": 0})
        assert (again.status_code, again.json()) == (202, {"accepted": 1, "duplicates": 2})
        stored = {c for _, _, c in store.iter_reports()}
        assert set(reports) <= stored and len(stored) == 6

    def test_real_sealed_reports(self, store: Store) -> None:
        """Ciphertexts from ldp.envelope.seal pass the collector's checks unchanged."""
        _, public = generate_keypair()
        sealed = [seal(b'{"v":1}' * n, public) for n in (1, 50, 500)]
        with AppClient(create_app(store)) as client:
            response = client.post("/v1/reports", content=_body(sealed), headers=JSON)
        assert response.status_code == 202
        assert sorted(c for _, _, c in store.iter_reports()) == sorted(sealed)

    def test_charset_parameter_allowed(self, store: Store) -> None:
        """application/json with a charset parameter is still JSON."""
        with AppClient(create_app(store)) as client:
            response = client.post(
                "/v1/reports",
                content=_body(_ct(1)),
                headers={"content-type": "application/json; charset=utf-8"},
            )
        assert response.status_code == 202

    def test_health_and_public_key(self, store: Store) -> None:
        """Health answers ok; the public key is served in text form with its fingerprint."""
        _, public = generate_keypair()
        text = public_key_to_text(public)
        with AppClient(create_app(store, public_key_text=text)) as client:
            health = client.get("/v1/health")
            key = client.get("/v1/public-key")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert key.json() == {"public_key": text, "fingerprint": fingerprint(public)}

    def test_no_server_or_date_header_in_app(self, store: Store) -> None:
        """The app adds no header that identifies software or time."""
        with AppClient(create_app(store)) as client:
            response = client.post("/v1/reports", content=_body(_ct(1)), headers=JSON)
        assert set(response.headers) == {"content-length", "content-type"}


def _post(client: AppClient, body: bytes, content_type: str | None = "application/json") -> Any:
    headers = {} if content_type is None else {"content-type": content_type}
    return client.post("/v1/reports", content=body, headers=headers)


class TestErrors:
    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b"{not json", "not valid JSON"),
            (b"\xff\xfe\x00", "not valid JSON"),
            (b"[" * 100_000, "not valid JSON"),
            (b"[]", "JSON object"),
            (b'{"reports": [], "extra": 1}', "unexpected key"),
            (b'{"report": ["AAAA"]}', "unexpected key"),
            (b"{}", "missing key"),
            (b'{"reports": "AAAA"}', "must be a list"),
            (b'{"reports": []}', "is empty"),
            (b'{"reports": [7]}', "reports[0] must be a base64 string"),
            (b'{"reports": [""]}', "reports[0] is empty"),
            (json.dumps({"reports": ["A" * 64 + "!"]}).encode(), "not standard base64"),
            (
                json.dumps({"reports": [base64.urlsafe_b64encode(b"\xff" * 60).decode()]}).encode(),
                "not standard base64",
            ),
            (json.dumps({"reports": ["QUJD"]}).encode(), "reports[0] is 3 bytes"),
            (
                _body([b"x" * 60, b"y" * (MAX_REPORT_BYTES + 1)]),
                f"reports[1] is {MAX_REPORT_BYTES + 1} bytes",
            ),
            (
                json.dumps({"reports": ["A" * (MAX_REPORT_BYTES * 2)]}).encode(),
                "over the 8192-byte cap",
            ),
        ],
    )
    def test_400_with_reason(self, store: Store, body: bytes, reason: str) -> None:
        """Malformed bodies get 400 and a reason that says what is wrong; nothing is stored."""
        with AppClient(create_app(store)) as client:
            response = _post(client, body)
        assert response.status_code == 400
        assert reason in response.json()["error"]
        assert store.count() == 0

    def test_413_declared_length(self, store: Store) -> None:
        """A Content-Length over 256 KiB is refused before the body is read."""
        with AppClient(create_app(store)) as client:
            response = _post(client, b"x" * (MAX_BODY_BYTES + 1))
        assert response.status_code == 413
        assert str(MAX_BODY_BYTES) in response.json()["error"]

    def test_413_streamed_body(self, store: Store) -> None:
        """A chunked body with no Content-Length is cut off once it passes the limit."""

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b" " * 4096

        with AppClient(create_app(store)) as client:
            response = client.post("/v1/reports", content=chunks(), headers=JSON)
        assert response.status_code == 413

    def test_413_too_many_reports(self, store: Store) -> None:
        """More than 64 reports in one request is 413, within the byte limit."""
        with AppClient(create_app(store)) as client:
            response = _post(client, _body(_ct(MAX_REPORTS + 1, 48)))
            ok = _post(client, _body(_ct(MAX_REPORTS, 48)))
        assert response.status_code == 413 and "at most 64" in response.json()["error"]
        assert ok.status_code == 202

    @pytest.mark.parametrize("content_type", [None, "text/plain", "application/jsonx"])
    def test_415_wrong_type(self, store: Store, content_type: str | None) -> None:
        """Anything but application/json is 415, naming what was sent."""
        with AppClient(create_app(store)) as client:
            response = _post(client, _body(_ct(1)), content_type)
        assert response.status_code == 415
        assert "application/json" in response.json()["error"]

    def test_429_rate_limit_with_retry_after(self, store: Store) -> None:
        """Past the burst the bucket answers 429 with Retry-After until tokens refill."""
        clock = _FakeClock()
        app = create_app(store, rate_limit=RateLimit(rate=0.5, burst=2), clock=clock)
        with AppClient(app) as client:
            statuses = [_post(client, _body(_ct(1))).status_code for _ in range(2)]
            limited = _post(client, _body(_ct(1)))
            clock.now += 2.0
            after = _post(client, _body(_ct(1)))
        assert statuses == [202, 202]
        assert limited.status_code == 429 and "rate limit" in limited.json()["error"]
        assert limited.headers["retry-after"] == "2"  # 1 token at 0.5 tokens/s
        assert after.status_code == 202

    def test_429_when_store_queue_is_full(self, tmp_path: Path) -> None:
        """When more batches wait for the store than the queue holds, the rest get 429."""
        entered, release = threading.Event(), threading.Event()

        class SlowSink:
            def add_batches(self, batches: Sequence[Sequence[bytes]]) -> list[tuple[int, int]]:
                entered.set()
                release.wait(10)
                return [(len(b), 0) for b in batches]

            def ping(self) -> None:
                pass

        app = create_app(SlowSink(), rate_limit=None, max_pending=2, max_group=1)

        async def run() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

                def post() -> asyncio.Task[httpx.Response]:
                    body = _body(_ct(1))
                    return asyncio.create_task(
                        client.post("/v1/reports", content=body, headers=JSON)
                    )

                tasks = [post()]
                while not entered.is_set():  # the first batch is now inside a commit
                    await asyncio.sleep(0.01)
                tasks += [post() for _ in range(5)]
                await asyncio.sleep(0.2)
                release.set()
                return list(await asyncio.gather(*tasks))

        responses = asyncio.run(run())
        codes = sorted(r.status_code for r in responses)
        # One batch is being committed, two wait in the queue, three are turned away.
        assert codes == [202, 202, 202, 429, 429, 429]
        for r in responses:
            if r.status_code == 429:
                assert "overloaded" in r.json()["error"] and r.headers["retry-after"] == "1"

    def test_503_when_store_fails(self) -> None:
        """A store that cannot commit gives 503 with Retry-After (not bad input, not a crash)."""

        class BrokenSink:
            def add_batches(self, batches: Sequence[Sequence[bytes]]) -> list[tuple[int, int]]:
                raise OSError("disk full")

            def ping(self) -> None:
                raise OSError("disk gone")

        with AppClient(create_app(BrokenSink())) as client:
            response = _post(client, _body(_ct(1)))
            health = client.get("/v1/health")
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert health.status_code == 503 and health.json()["status"] == "unavailable"

    def test_503_logs_why(self, caplog: pytest.LogCaptureFixture) -> None:
        """Each 503 writes a warning naming the store's error (and no client address)."""

        class BrokenSink:
            def add_batches(self, batches: Sequence[Sequence[bytes]]) -> list[tuple[int, int]]:
                raise OSError("disk full")

            def ping(self) -> None:
                raise OSError("disk gone")

        with (
            caplog.at_level("WARNING", logger="server_agg.collector"),
            AppClient(create_app(BrokenSink())) as client,
        ):
            _post(client, _body(_ct(1)))
            client.get("/v1/health")
        messages = [r.getMessage() for r in caplog.records if r.name == "server_agg.collector"]
        assert any("503" in m and "disk full" in m for m in messages), messages
        assert any("503" in m and "disk gone" in m for m in messages), messages
        assert not any("127.0.0.1" in m for m in messages)

    def test_503_warnings_do_not_flood(self, caplog: pytest.LogCaptureFixture) -> None:
        """Twenty failing posts in a row log one warning, not twenty."""

        class BrokenSink:
            def add_batches(self, batches: Sequence[Sequence[bytes]]) -> list[tuple[int, int]]:
                raise OSError("disk full")

            def ping(self) -> None:
                pass

        with (
            caplog.at_level("WARNING", logger="server_agg.collector"),
            AppClient(create_app(BrokenSink())) as client,
        ):
            statuses = [_post(client, _body(_ct(1))).status_code for _ in range(20)]
        messages = [r.getMessage() for r in caplog.records if r.name == "server_agg.collector"]
        assert statuses == [503] * 20
        assert len(messages) == 1

    def test_junk_never_spends_a_token(self, store: Store) -> None:
        """With a bucket of one token, 20 bad requests all get their 4xx (never 429) and the
        next valid post is still accepted: the token is taken only after the cheap checks."""
        clock = _FakeClock()
        app = create_app(store, rate_limit=RateLimit(rate=0.001, burst=1), clock=clock)
        junk = [
            (b"", "application/json"),
            (b"{}", "application/json"),
            (b'{"reports": ["!!"]}', "application/json"),
            (_body(_ct(1)), "text/plain"),
        ]
        with AppClient(app) as client:
            statuses = [_post(client, body, kind).status_code for body, kind in junk * 5]
            valid = _post(client, _body(_ct(1)))
            limited = _post(client, _body(_ct(1)))
        assert 429 not in statuses and set(statuses) <= {400, 415}
        assert valid.status_code == 202
        assert limited.status_code == 429

    def test_fixed_sealed_length(self, store: Store) -> None:
        """With sealed_length, a report of any other length is a 400 naming both lengths."""
        app = create_app(store, sealed_length=560)
        with AppClient(app) as client:
            exact = _post(client, _body(_ct(2, size=560)))
            short = _post(client, _body(_ct(1, size=559)))
            mixed = _post(client, _body([*_ct(1, size=560), *_ct(1, size=561)]))
        assert exact.status_code == 202
        assert short.status_code == 400 and "559 bytes" in short.json()["error"]
        assert "560" in short.json()["error"]
        assert mixed.status_code == 400 and "reports[1]" in mixed.json()["error"]

    def test_sealed_length_must_be_possible(self, store: Store) -> None:
        """A sealed length below the HPKE overhead or over the per-report cap is refused."""
        for bad in (10, 9000):
            with pytest.raises(ValueError, match="sealed_length"):
                create_app(store, sealed_length=bad)

    def test_404_and_405_are_json(self, store: Store) -> None:
        """Unknown paths, wrong methods and a missing public key answer in the same JSON form."""
        with AppClient(create_app(store)) as client:
            missing = client.get("/v2/reports")
            wrong = client.get("/v1/reports")
            key = client.get("/v1/public-key")
        assert (missing.status_code, missing.json()) == (404, {"error": "not found"})
        assert (wrong.status_code, wrong.json()) == (405, {"error": "method not allowed"})
        assert key.status_code == 404 and "no public key" in key.json()["error"]


class TestGroupCommit:
    def test_concurrent_requests_share_commits(self, store: Store) -> None:
        """Concurrent requests are committed in fewer transactions, each with its own counts."""
        app = create_app(store, rate_limit=None)
        batches = [_ct(3) for _ in range(40)]
        batches[5] = batches[4]  # an exact resend: all duplicates

        async def run() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return list(
                    await asyncio.gather(
                        *(
                            client.post("/v1/reports", content=_body(b), headers=JSON)
                            for b in batches
                        )
                    )
                )

        responses = asyncio.run(run())
        counts = sorted((r.json()["accepted"], r.json()["duplicates"]) for r in responses)
        assert counts == [(0, 3)] + [(3, 0)] * 39
        assert store.count() == 39 * 3
        assert app.state.committer.commits < len(batches)


class TestTokenBucket:
    def test_refills_at_rate_up_to_burst(self) -> None:
        """Tokens come back at `rate` per second and never exceed `burst`."""
        clock = _FakeClock()
        bucket = TokenBucket(RateLimit(rate=10.0, burst=3), clock)
        assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
        assert bucket.take() == pytest.approx(0.1)
        clock.now += 100.0
        assert [bucket.take() == 0.0 for _ in range(4)] == [True, True, True, False]

    @pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (float("inf"), 1), (1.0, 0)])
    def test_rejects_bad_limits(self, rate: float, burst: int) -> None:
        """A rate that is not finite and positive, or a burst below 1, is refused."""
        with pytest.raises(ValueError, match="must be"):
            RateLimit(rate=rate, burst=burst)


class TestNoMetadataStored:
    def test_store_holds_no_address_header_or_time(self, tmp_path: Path) -> None:
        """After requests full of identifying metadata, no trace of it is in the store files."""
        canaries = {
            "client": "203.0.113.77",
            "forwarded": "198.51.100.99",
            "agent": "CanaryAgent/9.9",
            "cookie": "session=canary-cookie",
        }
        store = Store(tmp_path / "store.db")
        app = create_app(store, rate_limit=None)
        reports = _ct(20)

        async def run() -> None:
            transport = httpx.ASGITransport(app=app, client=(canaries["client"], 50123))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for chunk in (reports[:10], reports[10:]):
                    response = await client.post(
                        "/v1/reports",
                        content=_body(chunk),
                        headers={
                            **JSON,
                            "x-forwarded-for": canaries["forwarded"],
                            "user-agent": canaries["agent"],
                            "cookie": canaries["cookie"],
                        },
                    )
                    assert response.status_code == 202

        asyncio.run(run())
        rows = store._db.execute("SELECT * FROM reports").fetchall()
        store.close()
        assert len(rows) == 20
        for _id, day, digest, ciphertext in rows:
            assert isinstance(day, str) and len(day) == 10 and day[4] == day[7] == "-"
            assert len(digest) == 32 and ciphertext in reports
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        for value in canaries.values():
            assert value.encode() not in raw
        assert b"50123" not in raw


def _busy_port() -> Iterator[tuple[socket.socket, int]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock, sock.getsockname()[1]
    finally:
        sock.close()


class TestServeCommand:
    def _serve(self, *args: str) -> Any:
        return CliRunner().invoke(cli_app, ["serve", *args])

    def _one_line_error(self, result: Any, needle: str) -> None:
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1, result.stderr
        assert needle in result.stderr and "Traceback" not in result.output

    def test_port_in_use(self, tmp_path: Path) -> None:
        """A port that is taken is one line on stderr and exit code 1."""
        for _sock, port in _busy_port():
            result = self._serve("--store", str(tmp_path / "s.db"), "--port", str(port))
            self._one_line_error(result, "address already in use")

    def test_unwritable_store(self, tmp_path: Path) -> None:
        """A store path in a missing directory is one line and exit code 1."""
        result = self._serve("--store", str(tmp_path / "missing" / "s.db"), "--port", "0")
        self._one_line_error(result, "cannot open store")

    def test_missing_key_dir(self, tmp_path: Path) -> None:
        """A --public-key that does not exist is one line and exit code 1."""
        result = self._serve(
            "--store", str(tmp_path / "s.db"), "--public-key", str(tmp_path / "nokeys")
        )
        self._one_line_error(result, "no key file or key directory")

    def test_bad_options(self, tmp_path: Path) -> None:
        """Out-of-range options name the value and the allowed range."""
        store = str(tmp_path / "s.db")
        self._one_line_error(
            self._serve("--store", store, "--synchronous", "OFF"), "FULL or NORMAL"
        )
        self._one_line_error(self._serve("--store", store, "--port", "70000"), "0..65535")
        self._one_line_error(self._serve("--store", store, "--rate-limit", "-1"), ">= 0")
        self._one_line_error(
            self._serve("--store", store, "--sealed-length", "7"), "0 or in 48..4096 bytes"
        )
        self._one_line_error(self._serve("--store", store, "--max-group", "0"), ">= 1")
        self._one_line_error(self._serve("--store", store, "--idle-timeout", "0"), "--idle-timeout")
        self._one_line_error(
            self._serve("--store", store, "--max-header-bytes", "10"), "--max-header-bytes"
        )
        self._one_line_error(
            self._serve("--store", store, "--max-connections", "0"), "--max-connections"
        )
