"""The analyzer's commands of ``20i-agg``: ``aggregate``, ``simulate``, ``demo``, ``privacy``.

``register(app)`` adds them to the ``20i-agg`` typer app. Commands stay thin: parse options,
call one function, print. Expected failures become one line on stderr and exit code 1, never a
traceback. Heavy imports (numpy, pyarrow, dask, rich) happen inside the commands so that
``20i-agg --help`` starts fast. The private key is read only by ``aggregate`` (and ``demo``,
for its own temporary key) and is never printed.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from server_agg.render import CENTRAL_ASSUMPTION

__all__ = ["register"]

#: Above this many stored reports the local engine uses every core unless told otherwise.
AUTO_PARALLEL_REPORTS = 50_000


class Engine(StrEnum):
    """Where the counting runs."""

    local = "local"
    dask = "dask"


class Consistency(StrEnum):
    """Post-processing of the unbiased estimates (see ldp.estimate; auto: ldp.consistency)."""

    auto = "auto"
    norm_sub = "norm-sub"
    clip = "clip"
    mle = "mle"
    none = "none"


class Format(StrEnum):
    """Output formats (documented in server_agg.render and docs/ANALYZER.md)."""

    table = "table"
    json = "json"
    csv = "csv"
    html = "html"


def _fail(message: str) -> NoReturn:
    typer.echo(f"20i-agg: error: {message}", err=True)
    raise typer.Exit(1)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror}")
    typer.echo(f"wrote {out}", err=True)


def _weeks(text: str) -> int | str:
    """``--weeks``: ``auto`` or an integer in [1, 12]."""
    from server_agg.weeks import AUTO_WEEKS, MAX_WEEKS

    if text.strip().lower() == AUTO_WEEKS:
        return AUTO_WEEKS
    try:
        weeks = int(text)
    except ValueError:
        weeks = 0
    if not 1 <= weeks <= MAX_WEEKS:
        _fail(f"--weeks ({text!r}) must be {AUTO_WEEKS} or an integer in [1, {MAX_WEEKS}]")
    return weeks


def aggregate(
    key: Annotated[
        Path, typer.Option("--key", help="The analyzer's private.pem, or its key directory.")
    ],
    store: Annotated[
        Path | None, typer.Option("--store", help="The collector's SQLite store to read.")
    ] = None,
    parquet: Annotated[
        Path | None,
        typer.Option("--parquet", help="An export directory (day=*/part-*.parquet) to read."),
    ] = None,
    period: Annotated[
        str | None, typer.Option("--period", help="Only this ISO week, e.g. 2026-W48.")
    ] = None,
    weeks: Annotated[
        str,
        typer.Option(
            "--weeks",
            help="auto: per kind, the shortest window of up to 12 ISO weeks ending at --period "
            "(default: the latest week) with every half-width <= 5 points; W: pool the W weeks "
            "ending at --period; 1: one group per week.",
        ),
    ] = "auto",
    trends: Annotated[
        bool,
        typer.Option(
            "--trends/--no-trends",
            help="Also show each field week by week (or window by window) with intervals.",
        ),
    ] = True,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only this report kind (usage, errors).")
    ] = None,
    engine: Annotated[Engine, typer.Option("--engine", help="local, or dask.")] = Engine.local,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Dask scheduler address (else a local cluster)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Processes (local) or local-cluster workers (dask). Default: local engine "
            f"uses every core above {AUTO_PARALLEL_REPORTS:,} reports, else 1; dask 2.",
            min=1,
            max=256,
        ),
    ] = None,
    consistency: Annotated[
        Consistency,
        typer.Option(
            "--consistency",
            help="Consistency step after debiasing; auto chooses one per field from the data.",
        ),
    ] = Consistency.auto,
    confidence: Annotated[
        float, typer.Option("--confidence", help="Confidence level of the intervals.")
    ] = 0.95,
    delta: Annotated[
        float, typer.Option("--delta", help="delta of the central epsilon after shuffling.")
    ] = 1e-6,
    fmt: Annotated[
        Format, typer.Option("--format", help="table, json, csv or html.")
    ] = Format.table,
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
    screen: Annotated[
        bool,
        typer.Option(
            "--screen/--no-screen",
            help="Leave out the excess of report patterns the channel cannot produce that often "
            "(poisoning screen; what it leaves out is listed).",
        ),
    ] = True,
) -> None:
    """Decrypt, validate and count stored reports; print estimates with confidence intervals."""
    from ldp.errors import LdpError
    from server_agg.aggregate import AggregateError, ParquetSource, Source, StoreSource
    from server_agg.aggregate import aggregate as run_local
    from server_agg.keys import KeyFileError, load_private, private_key_exposure
    from server_agg.render import render, table_renderables

    if (store is None) == (parquet is None):
        _fail("give exactly one of --store PATH or --parquet DIR")
    if not 0 < confidence < 1:
        _fail(f"--confidence ({confidence}) must be in (0, 1)")
    if not 0 < delta < 1:
        _fail(f"--delta ({delta}) must be in (0, 1)")
    if scheduler is not None and engine is not Engine.dask:
        _fail("--scheduler needs --engine dask")
    window = _weeks(weeks)
    try:
        exposure = private_key_exposure(key)
    except KeyFileError as exc:
        _fail(str(exc))
    if exposure is not None:
        typer.echo(f"20i-agg: warning: {exposure}", err=True)
    try:
        if engine is Engine.dask:
            if parquet is None:
                _fail("--engine dask reads Parquet exports: give --parquet DIR (20i-agg export)")
            from server_agg.engine_dask import dask_aggregate

            result = dask_aggregate(
                parquet,
                key,
                kind=kind,
                period=period,
                consistency=consistency.value,
                confidence=confidence,
                delta=delta,
                scheduler=scheduler,
                workers=workers or 2,
                screen=screen,
                weeks=window,
                trends=trends,
            )
        else:
            private = load_private(key)
            source: Source = StoreSource(store) if store is not None else ParquetSource(parquet)  # type: ignore[arg-type]  # exactly one is set, checked above
            if workers is None:
                total = source.total() or 0
                workers = (os.cpu_count() or 1) if total > AUTO_PARALLEL_REPORTS else 1
            result = run_local(
                source,
                private,
                kind=kind,
                period=period,
                consistency=consistency.value,
                confidence=confidence,
                delta=delta,
                workers=workers,
                progress=None,
                screen=screen,
                weeks=window,
                trends=trends,
            )
    except (AggregateError, KeyFileError, LdpError) as exc:
        _fail(str(exc))
    if fmt is Format.table and out is None:
        from rich.console import Console

        console = Console()
        for item in table_renderables(result):
            console.print(item)
        return
    _write(render(result, fmt.value), out)


def simulate(
    clients: Annotated[int, typer.Option("--clients", help="Simulated users.", min=1)],
    endpoint: Annotated[str, typer.Option("--endpoint", help="Collector base URL.")],
    public_key: Annotated[
        Path, typer.Option("--public-key", help="public.txt or a key directory.")
    ],
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the population (values, secrets).")
    ] = None,
    periods: Annotated[
        int, typer.Option("--periods", help="Consecutive weeks every user reports.", min=1)
    ] = 1,
    last_period: Annotated[
        str | None, typer.Option("--period", help="Last week reported (default: this week).")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="JSON file overriding the default population model."),
    ] = None,
    truth_out: Annotated[
        Path | None, typer.Option("--truth-out", help="Write the simulated truth here (JSON).")
    ] = None,
) -> None:
    """Simulate users running the real client code and post their sealed reports."""
    from ldp.errors import LdpError
    from server_agg.keys import KeyFileError, load_public
    from server_agg.simulate import (
        DEFAULT_MODEL,
        SimulationError,
        load_model,
        make_population,
        post_reports,
        recent_periods,
        write_truth,
    )

    try:
        key = load_public(public_key)
        chosen = load_model(model.read_text(encoding="utf-8")) if model else DEFAULT_MODEL
        population = make_population(
            clients, seed=seed, model=chosen, periods=recent_periods(periods, last_period)
        )
        stats = post_reports(population.sealed(key), endpoint)
    except (SimulationError, KeyFileError, LdpError, OSError) as exc:
        _fail(str(exc))
    typer.echo(
        f"posted {stats.sent} reports of {clients} users ({', '.join(population.periods)}) "
        f"in {stats.requests} requests, {stats.seconds:.1f} s: {stats.accepted} accepted, "
        f"{stats.duplicates} duplicates, {stats.retries} retries"
    )
    if truth_out is not None:
        write_truth(population, truth_out)
        typer.echo(f"truth written to {truth_out}")


def demo(
    clients: Annotated[
        int, typer.Option("--clients", help="Simulated users in the first week.", min=1)
    ] = 6_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the population.")] = 2026,
    periods: Annotated[
        int,
        typer.Option(
            "--periods",
            help="Consecutive weeks simulated (users arrive along the way: a population shift).",
            min=1,
            max=52,
        ),
    ] = 6,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Analyzer processes (default: up to 2).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the HTML report.")] = Path(
        "demo-report.html"
    ),
) -> None:
    """Keys, collector, simulated users, analysis and an HTML report, all on this machine."""
    from rich.console import Console

    from server_agg.demo import DemoError, run_demo

    console = Console()
    try:
        run_demo(
            clients=clients,
            seed=seed,
            periods=periods,
            workers=workers,
            out=out,
            console=console,
            say=lambda text: console.print(
                f"[bold cyan]demo:[/] {text}", highlight=False, soft_wrap=True
            ),
        )
    except DemoError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted (the collector was stopped)")


def privacy(
    n: Annotated[
        int, typer.Option("--n", help="Reports shuffled together (for the central epsilon).", min=1)
    ] = 10_000,
    delta: Annotated[float, typer.Option("--delta", help="delta of the central bound.")] = 1e-6,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the numbers as JSON (per field, kind, total).")
    ] = False,
) -> None:
    """The shipped schema's epsilons: per report, over any 52 weeks, and central after
    shuffling n."""
    import json

    from ldp.budget import year_budget
    from ldp.errors import LdpError
    from ldp.schema import shipped_schema
    from server_agg.aggregate import kind_privacy

    if not 0 < delta < 1:
        _fail(f"--delta ({delta}) must be in (0, 1)")
    schema = shipped_schema()
    try:
        infos = [kind_privacy(schema, kind.name, n, delta) for kind in schema.kinds]
    except LdpError as exc:
        _fail(str(exc))
    year = year_budget(schema)
    if as_json:
        doc = {
            "schema": {"name": schema.name, "version": schema.version, "id": schema.id},
            "year": year.to_json(),
            "kinds": {
                info.kind: {
                    "per_report": info.epsilon_report,
                    "year": year.kind_bound(info.kind),
                    "central": None
                    if info.central is None
                    else {"epsilon": info.central.eps, "delta": delta, "n": n},
                }
                for info in infos
            },
            "central_assumption": CENTRAL_ASSUMPTION,
        }
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"schema {schema.name} v{schema.version} (id {schema.id})", highlight=False)
    for info in infos:
        table = Table(title=f"report kind {info.kind}", title_justify="left")
        for column in ("field", "mechanism", "epoch (weeks)", "ε per epoch", "ε any 52 weeks"):
            table.add_column(column, justify="left" if column == "field" else "right")
        for row in year.fields:
            if row.kind == info.kind:
                table.add_row(
                    row.name,
                    schema.kind(info.kind).field(row.name).randomizer().mechanism,
                    str(row.epoch_weeks),
                    f"{row.epsilon:.4g}",
                    f"{row.bound:.4g}",
                )
        console.print(table)
        central = info.central
        console.print(f"  one report: ε = {info.epsilon_report:.4g}", highlight=False)
        console.print(
            f"  any 52 weeks, whatever the values do (proven bound): ε = "
            f"{year.kind_bound(info.kind):.4g}",
            highlight=False,
        )
        if central is not None:
            console.print(
                f"  after shuffling {n:,} reports: ({central.eps:.4g}, {delta:.3g})-DP "
                f"({central.method} bound, Feldman, McMillan & Talwar 2021), "
                f"assuming {CENTRAL_ASSUMPTION}",
                highlight=False,
            )
    console.print(
        f"all kinds together, any 52 weeks: ε = {year.total:.4g} (docs/PRIVACY-OVER-TIME.md)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``aggregate``, ``simulate``, ``demo`` and ``privacy`` to the ``20i-agg`` app."""
    app.command("aggregate")(aggregate)
    app.command("simulate")(simulate)
    app.command("demo")(demo)
    app.command("privacy")(privacy)


if __name__ == "__main__":  # pragma: no cover
    _app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(_app)
    _app(sys.argv[1:])
