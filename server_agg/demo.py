"""``20i-agg demo`` (``make demo``): the whole system on one machine in under a minute.

Temporary analyzer keys, the real collector (uvicorn, in a child process) on a free loopback
port, a simulated population that runs the real client code and posts over HTTP, then the
analyzer on the collector's store: each field's estimates beside the simulated truth, with how
often the confidence intervals cover it, and a self-contained HTML report. Everything but the
report lives in a temporary directory that is removed at the end, and the collector is always
stopped, also on errors or Ctrl-C. Binds 127.0.0.1 only; nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from rich.console import Console

    from server_agg.aggregate import AggregateResult
    from server_agg.simulate import Population, PostStats

__all__ = [
    "DEFAULT_CLIENTS",
    "DEFAULT_PERIODS",
    "DEFAULT_SEED",
    "CollectorProcess",
    "DemoError",
    "DemoResult",
    "coverage",
    "demo_periods",
    "run_demo",
    "window_truth",
]

DEFAULT_CLIENTS: Final = 6_000
DEFAULT_SEED: Final = 2026
#: Weeks the demo simulates: enough for the window choice and a trend to show something.
DEFAULT_PERIODS: Final = 6
#: The demo's population shift: from the second week on, half as many users again arrive (a
#: Windows package of release 2.0, say), so platform and cli_version trends move.
DEMO_ARRIVALS: Final = {
    "share": 0.5,
    "categorical": {
        "platform": {"windows-x86_64": 7, "windows-arm64": 1, "linux-x86_64": 2},
        "cli_version": {"2.0": 1},
    },
}
_READY_TIMEOUT: Final = 30.0
_STOP_TIMEOUT: Final = 30.0
_PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent

_CHILD = """
import json, sys
from server_agg.collector import serve

def ready(host, port):
    print(json.dumps({"host": host, "port": port}), flush=True)

store, key, sync = sys.argv[1], sys.argv[2] or None, sys.argv[3]
serve(store, host="127.0.0.1", port=0, public_key=key, rate_limit=None,
      synchronous=sync, on_ready=ready)
"""


class DemoError(Exception):
    """The demo could not run (collector did not start, reports were lost, ...)."""


class CollectorProcess:
    """The real collector (``server_agg.collector.serve``) in a child process on 127.0.0.1.

    A child process rather than a thread, so that on two cores the collector's request
    handling does not compete with the simulated clients for one interpreter lock. The port is
    picked by the OS (port 0) and read back from the child's ready line. Use as a context
    manager; leaving it always stops the child (SIGTERM, then SIGKILL after a timeout).
    """

    def __init__(
        self, store: Path, public_key: Path | None = None, *, synchronous: str = "NORMAL"
    ) -> None:
        self.store = store
        self.public_key = public_key
        self.synchronous = synchronous
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None

    def start(self) -> str:
        """Start the child and wait until it listens; returns its base URL."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115  # closed in stop()
        key = "" if self.public_key is None else str(self.public_key)
        self._proc = subprocess.Popen(  # noqa: S603  # our own interpreter and code, no shell
            [sys.executable, "-c", _CHILD, str(self.store), key, self.synchronous],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
        )
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], _READY_TIMEOUT)
        line = self._proc.stdout.readline() if ready else ""
        try:
            doc = json.loads(line)
            self.url = f"http://{doc['host']}:{int(doc['port'])}"
        except (ValueError, KeyError, TypeError):
            detail = self._child_error()
            self.stop()
            raise DemoError(f"the collector did not start: {detail or 'no ready line'}") from None
        return self.url

    def _child_error(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().strip()[-2000:]

    @property
    def running(self) -> bool:
        """Whether the child process is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> int | None:
        """Stop the child gracefully (it finishes in-flight commits); its exit status."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            code = proc.returncode
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return code

    def __enter__(self) -> CollectorProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class FieldCoverage:
    """How many of a field's values have a CI that contains the simulated truth."""

    kind: str
    period: str
    field: str
    covered: int
    values: int


def coverage(
    result: AggregateResult, truth: dict[tuple[str, str, str], list[float]]
) -> list[FieldCoverage]:
    """Per field, how many CIs (at the result's confidence) contain the truth.

    The CIs are ``raw +- z std``, around the unbiased estimate: those have the nominal coverage
    whatever consistency step (``auto`` by default) moved the shown estimate.
    """
    out = []
    for group in result.groups:
        for fr in group.fields:
            values = truth.get((group.kind, group.period, fr.name))
            if values is None:
                continue
            low, high = fr.estimate.ci(result.confidence, raw=True)
            covered = sum(int(lo <= t <= hi) for lo, t, hi in zip(low, values, high, strict=True))
            out.append(FieldCoverage(group.kind, group.period, fr.name, covered, len(values)))
    return out


def demo_periods(count: int, today: date | None = None) -> tuple[tuple[str, ...], date]:
    """``count`` consecutive weeks to simulate and the day the analyzer takes for today.

    They end this week, unless that would start before the shipped schema's release (reports
    dated earlier are implausible, :mod:`server_agg.periods`): then they start at the release
    and the analyzer is told that today is the last simulated week's Monday."""
    from ldp.report import period_start
    from ldp.schema import shipped_schema
    from server_agg.periods import SCHEMA_RELEASES, iso_week
    from server_agg.simulate import recent_periods

    day = datetime.now(UTC).date() if today is None else today
    schema = shipped_schema()
    release = SCHEMA_RELEASES.get((schema.name, schema.version))
    last = iso_week(day)
    if release is not None:
        earliest_end = period_start(release).date() + timedelta(weeks=count - 1)
        if earliest_end > day:
            day = earliest_end
            last = iso_week(day)
    return recent_periods(count, last), day


def window_truth(
    population: Population, result: AggregateResult
) -> dict[tuple[str, str, str], list[float]]:
    """The population's truth per week, plus per pooled group the truth its estimate is
    unbiased for: the report-weighted mean of its weeks' frequencies."""
    truth = population.truth()
    weights = population.counts()
    out = dict(truth)
    for group in result.groups:
        if group.window is None:
            continue
        periods = group.window.periods
        total = sum(weights[(group.kind, p)] for p in periods)
        for fr in group.fields:
            rows = [truth[(group.kind, p, fr.name)] for p in periods]
            out[(group.kind, group.period, fr.name)] = [
                sum(weights[(group.kind, p)] * row[i] for p, row in zip(periods, rows, strict=True))
                / max(total, 1)
                for i in range(len(rows[0]))
            ]
    return out


def shift_line(result: AggregateResult, kind: str = "usage", name: str = "platform") -> str | None:
    """One sentence on how the top value of a field's trend moved, first point to last."""
    for trend in result.trends:
        if trend.kind != kind:
            continue
        field = trend.field(name)
        first, last = field.points[0], field.points[-1]
        low, high = last.interval(result.confidence)
        lines = []
        for i in field.top(2):
            lines.append(
                f"{field.values[i]} {100 * first.raw[i]:.1f}% ({first.label}) -> "
                f"{100 * last.raw[i]:.1f}% ({last.label}, interval {100 * low[i]:.1f}%.."
                f"{100 * high[i]:.1f}%)"
            )
        return f"trend of {kind} {name}: " + "; ".join(lines)
    return None


@dataclass(frozen=True)
class DemoResult:
    """What the demo did, for the command to print and the tests to check."""

    result: AggregateResult
    population: Population
    posted: PostStats
    coverage: tuple[FieldCoverage, ...]
    #: The truth the coverage was measured against (:func:`window_truth`).
    truth: dict[tuple[str, str, str], list[float]]
    report_path: Path
    collector_exit: int | None
    seconds: float


def run_demo(
    *,
    clients: int = DEFAULT_CLIENTS,
    seed: int = DEFAULT_SEED,
    periods: int = DEFAULT_PERIODS,
    workers: int | None = None,
    out: Path = Path("demo-report.html"),
    console: Console | None = None,
    say: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demo end to end; prints with ``console`` (tables) and ``say`` (progress lines)."""
    from server_agg.aggregate import StoreSource, aggregate
    from server_agg.keys import generate, load_private, load_public
    from server_agg.render import table_renderables, to_html
    from server_agg.simulate import DEFAULT_MODEL, make_population, post_reports

    def note(text: str) -> None:
        if say is not None:
            say(text)

    started = time.perf_counter()
    if workers is None:
        workers = max(1, min(2, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="20i-demo-") as tmp:
        root = Path(tmp)
        keys = generate(root / "keys")
        note(f"analyzer key pair in a temporary directory (fingerprint {keys.fingerprint})")
        store = root / "reports.sqlite"
        weeks, today = demo_periods(periods)
        model = {**DEFAULT_MODEL, "arrivals": DEMO_ARRIVALS}
        population = make_population(clients, seed=seed, model=model, periods=weeks)
        with CollectorProcess(store, keys.public_path) as collector:
            note(f"collector listening on {collector.url} (store {store.name})")
            public = load_public(keys.public_path)
            total = population.report_count()
            arrived = len(population.users) - clients
            joined = f", {arrived} more arrive along the way (mostly Windows, 2.0)"
            note(
                f"{clients} simulated users report for {len(weeks)} weeks ({weeks[0]}.."
                f"{weeks[-1]}){joined if arrived else ''}: {total} reports (real client code: "
                "frozen epochs, HPKE seal, HTTP POST)"
            )
            posted = post_reports(population.sealed(public), collector.url)
            note(
                f"posted {posted.sent} reports in {posted.requests} requests "
                f"({posted.seconds:.1f} s): {posted.accepted} accepted, "
                f"{posted.duplicates} duplicates"
            )
            exit_code = collector.stop()
            note("collector stopped")
        if posted.accepted != total:
            raise DemoError(f"the collector accepted {posted.accepted} of {total} reports")
        result = aggregate(
            StoreSource(store),
            load_private(keys.private_path),
            workers=workers,
            progress=None,
            weeks="auto",
            today=today,
        )
        note(
            f"analyzer: {result.read} reports decrypted, validated and counted in "
            f"{result.seconds:.1f} s with {workers} worker process(es); {result.accepted} of "
            "them are in the windows chosen (--weeks auto), the rest feed the trends"
        )
    truth = window_truth(population, result)
    cover = tuple(coverage(result, truth))
    if console is not None:
        for item in table_renderables(result, truth):
            console.print(item)
    out.write_text(to_html(result, truth, title="20i telemetry demo"), encoding="utf-8")
    covered = sum(c.covered for c in cover)
    values = sum(c.values for c in cover)
    note(
        f"{100 * result.confidence:g}% CIs around the unbiased estimates cover the simulated "
        f"truth for {covered}/{values} "
        f"values ({100 * covered / max(values, 1):.1f}%)"
    )
    for group in result.groups:
        if group.choice is not None:
            note(f"{group.kind} window: {group.choice.reason}")
    shift = shift_line(result)
    if shift is not None:
        note(shift)
    note(f"report written to {out}")
    seconds = time.perf_counter() - started
    note(f"demo finished in {seconds:.1f} s")
    return DemoResult(result, population, posted, cover, truth, out, exit_code, seconds)


def _main(argv: list[str]) -> Any:  # pragma: no cover - debugging entry
    return run_demo(clients=int(argv[0]) if argv else DEFAULT_CLIENTS, say=print)


if __name__ == "__main__":  # pragma: no cover
    _main(sys.argv[1:])
