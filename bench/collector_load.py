"""Load a real `20i-agg serve` on loopback; write requests/s and latency to BENCHMARKS.md.

Each request carries one report of the one sealed length, 560 bytes, as a real client sends
since issue 14 (random bytes: the collector never decrypts, and every report is unique so none
is dropped as a duplicate); ``--reports-per-request`` sends more for comparison with the runs
before issue 14 (10). The server runs with its default ``--sealed-length 560``.
Phases, all against one server process on a fresh store:

* **paced**: requests start on a fixed schedule (default 1,000/s) over at most
  ``--concurrency`` keep-alive connections; latency runs from the *scheduled* start, so a
  server that falls behind is charged for the wait (no coordinated omission).
* **saturation**: ``--concurrency`` closed-loop connections, each sending its next request as
  soon as the last is answered.
* **httpx reference**: the same closed loop through ``httpx.AsyncClient``.

The first two phases use a minimal asyncio HTTP/1.1 client (pre-built request bytes, status
and Content-Length parsing only). Measured on this machine, httpx spends about 1.6 ms of CPU
per request and slows down sharply beyond a few dozen connections, so on 2 shared cores an
httpx-driven run measures httpx; the reference row shows that. The load generator still
shares the 2 cores with the server, so every number here is a floor. The server's own CPU
time per request is reported because it does not depend on what else the machine is doing.

Run: ``.venv/bin/python bench/collector_load.py`` (``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import machine_line, write_section  # noqa: E402  # needs ROOT on the path
from ldp.envelope import generate_keypair, seal  # noqa: E402
from ldp.report import SEALED_BYTES, pad  # noqa: E402

#: Reports per request: one, as a client sends since issue 14 (``--reports-per-request``).
REPORTS_PER_REQUEST = 1
#: A usage report (DESIGN section 4), padded and sealed once to size the random ciphertexts.
_SAMPLE = (
    b'{"fields":{"arch":1,"cli_version":3,"command":[3735928559,2],"modules":13,"os":0},'
    b'"kind":"usage","period":"2026-W48","schema":"0123456789abcdef","v":1}'
)


@dataclass
class Phase:
    """Outcome of one load phase."""

    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, 202 answers only
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    server_cpu: float = 0.0  # seconds of server CPU during the phase
    runs: list[Phase] = field(default_factory=list)  # all repetitions, when this is the best

    @property
    def ok(self) -> int:
        return self.statuses.get(202, 0)

    @property
    def other(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 202) + self.errors

    def record(self, status: int, latency: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 202:
            self.latencies.append(latency)

    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_bodies(n: int) -> list[bytes]:
    """``n`` request bodies of :data:`REPORTS_PER_REQUEST` unique report-sized ciphertexts."""
    _, public = generate_keypair()
    size = len(seal(pad(_SAMPLE), public))
    assert size == SEALED_BYTES, size
    return [
        json.dumps(
            {
                "reports": [
                    base64.b64encode(os.urandom(size)).decode() for _ in range(REPORTS_PER_REQUEST)
                ]
            }
        ).encode()
        for _ in range(n)
    ]


def start_server(store: Path, extra: list[str]) -> tuple[subprocess.Popen[str], str, int]:
    """Start ``20i-agg serve --port 0``; return it with its host and port."""
    command = [sys.executable, "-m", "server_agg.app", "serve", "--store", str(store)]
    proc = subprocess.Popen(
        [*command, "--port", "0", *extra], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://([\d.]+):(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, match.group(1), int(match.group(2))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Connection:
    """One keep-alive HTTP/1.1 connection that posts pre-built bodies (no parsing beyond need)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(
            b"POST /v1/reports HTTP/1.1\r\nHost: collector\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        at = lower.index(b"content-length:") + len(b"content-length:")
        await self.reader.readexactly(int(lower[at : lower.index(b"\r\n", at)]))
        if b"connection: close" in lower:
            self.close()
        return int(head[9:12])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def paced(host: str, port: int, bodies: list[bytes], rate: float, conns: int) -> Phase:
    """Start request i at ``i / rate`` seconds, on the first free of ``conns`` connections."""
    phase = Phase(f"paced {rate:,.0f} req/s, <= {conns} connections")
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(Connection(host, port))

    async def one(body: bytes, scheduled: float) -> None:
        conn = await pool.get()
        try:
            status = await conn.post(body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            conn.close()
            phase.errors += 1
        else:
            phase.record(status, time.perf_counter() - scheduled)
        finally:
            pool.put_nowait(conn)

    begin = time.perf_counter()
    tasks = []
    for i, body in enumerate(bodies):
        scheduled = begin + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body, scheduled)))
    await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - begin
    while not pool.empty():
        pool.get_nowait().close()
    return phase


async def saturate(
    host: str, port: int, bodies: Iterator[bytes], conns: int, seconds: float
) -> Phase:
    """``conns`` connections, each posting again as soon as it has an answer."""
    phase = Phase(f"saturation, {conns} connections")

    async def worker(deadline: float) -> None:
        conn = Connection(host, port)
        for body in bodies:
            if time.perf_counter() > deadline:
                break
            started = time.perf_counter()
            try:
                status = await conn.post(body)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                phase.errors += 1
                continue
            phase.record(status, time.perf_counter() - started)
        conn.close()

    begin = time.perf_counter()
    await asyncio.gather(*(worker(begin + seconds) for _ in range(conns)))
    phase.seconds = time.perf_counter() - begin
    return phase


async def httpx_reference(
    host: str, port: int, bodies: Iterator[bytes], conns: int, seconds: float
) -> Phase:
    """The saturation loop through httpx.AsyncClient, for comparison."""
    phase = Phase(f"httpx.AsyncClient, {conns} connections")
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(
        base_url=f"http://{host}:{port}", limits=limits, timeout=30
    ) as client:

        async def worker(deadline: float) -> None:
            for body in bodies:
                if time.perf_counter() > deadline:
                    break
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/reports", content=body, headers=headers)
                except httpx.HTTPError:
                    phase.errors += 1
                    continue
                phase.record(response.status_code, time.perf_counter() - started)

        begin = time.perf_counter()
        await asyncio.gather(*(worker(begin + seconds) for _ in range(conns)))
        phase.seconds = time.perf_counter() - begin
    return phase


def stored(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return int(db.execute("SELECT count(*) FROM reports").fetchone()[0])


def table(phases: list[Phase], note: str, load_before: float, repeat: int) -> str:
    fast = all(importlib.util.find_spec(m) for m in ("httptools", "uvloop"))
    stack = "httptools + uvloop" if fast else "h11 + asyncio (httptools/uvloop not installed)"
    load = os.getloadavg()[0]
    lines = [
        "## Collector (`20i-agg serve`)",
        "",
        machine_line(),
        "",
        f"One `20i-agg serve` process on loopback (uvicorn with {stack}, SQLite WAL, rate "
        "limiter off: its default 2,000 req/s would cap the closed loop), a fresh store per "
        "configuration, driven from a second "
        f"process on the same {os.cpu_count()} cores. {REPORTS_PER_REQUEST} report(s) of "
        f"{SEALED_BYTES} bytes per request (clients send one since issue 14); latency is the "
        "time to a `202`, which is sent only after the batch is committed. Target: >= 1,000 "
        "requests/s with p99 < 50 ms.",
        "",
        f"The cores are shared with other work (1-minute load average {load_before:.1f} before, "
        f"{load:.1f} after), so each phase ran {repeat} times and the table shows the least "
        "disturbed run (lowest p99 when paced, highest rate otherwise); the last two columns "
        "give the spread over all runs. Server CPU per request does not depend on the "
        "neighbours much and bounds the capacity: 1 core / (CPU per request).",
        "",
        "| configuration | load | requests | 202/s | p50 ms | p99 ms | not 202 "
        "| server CPU us/request | 202/s, all runs | p99 ms, all runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for p in phases:
        per = 1e6 * p.server_cpu / max(1, p.ok + p.other)
        config, load_name = p.name.split(": ", 1)
        rates = " / ".join(f"{r.rate():,.0f}" for r in p.runs)
        tails = " / ".join(f"{1000 * r.percentile(0.99):.0f}" for r in p.runs)
        lines.append(
            f"| {config} | {load_name} | {p.ok + p.other:,} | {p.rate():,.0f} "
            f"| {1000 * p.percentile(0.5):.1f} | {1000 * p.percentile(0.99):.1f} | {p.other} "
            f"| {per:,.0f} | {rates} | {tails} |"
        )
    lines += ["", note]
    return "\n".join(lines)


#: Request bodies made per second of saturation phase.
SATURATION_SUPPLY = 15_000

#: (label, extra `serve` options, phases to run)
#: Every server runs with its rate limiter off: with one report per request, a closed loop on
#: loopback goes past the default 2,000 requests/s, and the phase would measure the limiter's
#: 429s rather than the collector (the limiter is tested in tests/test_collector_limits.py).
NO_LIMIT = ["--rate-limit", "0"]
CONFIGS = [
    ("NORMAL (default), group commit", NO_LIMIT, ("paced", "saturation", "httpx")),
    ("FULL, group commit", [*NO_LIMIT, "--synchronous", "FULL"], ("paced", "saturation")),
    ("NORMAL, commit per request", [*NO_LIMIT, "--max-group", "1"], ("saturation",)),
]


def run_config(
    label: str, extra: list[str], kinds: tuple[str, ...], args: argparse.Namespace
) -> tuple[list[Phase], int, int]:
    """Run the phases against one fresh server; return them, reports acked, reports stored."""
    warm = make_bodies(300)
    paced_sets = [make_bodies(int(args.rate * args.seconds)) for _ in range(args.repeat)]
    # Separate supplies, so a fast saturation phase cannot starve the httpx one of bodies.
    # Enough for a closed loop far above what 2 cores serve (about 8,600 req/s were measured
    # with one report per request); a phase that runs out of bodies ends early and says 0/s.
    rest = iter(make_bodies(int(SATURATION_SUPPLY * args.seconds * args.repeat)))
    slow = iter(make_bodies(int(1000 * args.seconds * args.repeat) if "httpx" in kinds else 0))
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.db"
        proc, host, port = start_server(store, extra)
        try:
            asyncio.run(saturate(host, port, iter(warm), 8, 60.0))  # imports, pages, sockets
            for kind in kinds:
                runs = []
                for repetition in range(args.repeat):
                    if kind == "paced":
                        coro = paced(
                            host, port, paced_sets[repetition], args.rate, args.concurrency
                        )
                    elif kind == "saturation":
                        coro = saturate(host, port, rest, args.concurrency, args.seconds)
                    else:
                        coro = httpx_reference(
                            host, port, slow, args.httpx_concurrency, args.seconds
                        )
                    before = cpu_seconds(proc.pid)
                    phase = asyncio.run(coro)
                    phase.server_cpu = cpu_seconds(proc.pid) - before
                    phase.name = f"{label}: {phase.name}"
                    runs.append(phase)
                    print(phase.name, f"{phase.rate():,.0f}/s", phase.statuses, file=sys.stderr)
                # Other people's jobs share these cores: the least disturbed repetition is the
                # best estimate of the collector itself (the table shows the spread as well).
                key = (lambda p: p.percentile(0.99)) if kind == "paced" else (lambda p: -p.rate())
                best = min(runs, key=key)
                best.runs = runs
                phases.append(best)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        acked = (sum(r.ok for p in phases for r in p.runs) + len(warm)) * REPORTS_PER_REQUEST
        return phases, acked, stored(store)


def main() -> None:
    global REPORTS_PER_REQUEST  # a script's one setting, read by its helpers
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="paced requests/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each phase")
    parser.add_argument("--concurrency", type=int, default=32, help="connections, at most")
    parser.add_argument("--httpx-concurrency", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print, do not touch the file")
    parser.add_argument("--reports-per-request", type=int, default=REPORTS_PER_REQUEST)
    args = parser.parse_args()
    REPORTS_PER_REQUEST = args.reports_per_request

    load_before = os.getloadavg()[0]
    if load_before > 1.0:
        print(f"warning: load average {load_before:.1f}; results will be noisy", file=sys.stderr)
    phases: list[Phase] = []
    acked = total = 0
    for label, extra, kinds in CONFIGS:
        got, a, t = run_config(label, extra, kinds, args)
        phases += got
        acked += a
        total += t
    note = (
        f"Check: {acked:,} reports were acknowledged with a `202` over all runs and the stores "
        f"held {total:,} after the servers stopped."
    )
    body = table(phases, note, load_before, args.repeat)
    print(body)
    if not args.no_write:
        write_section("collector", body)


if __name__ == "__main__":
    main()
