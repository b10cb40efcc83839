"""`20i-agg`: the maintainers' command line (collector, keys, export, prune; analysis joins it).

Commands stay thin: parse options, call one function of a module, echo the result. Every
expected failure becomes one line on stderr and exit code 1, never a traceback. Heavy imports
(uvicorn, starlette, pyarrow) happen inside the commands so that ``--help`` starts fast. The
private key is never printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from server_agg.analyzer_cli import register as register_analyzer

__all__ = ["app", "main"]

#: ``ldp.report.SEALED_BYTES``, written out so that ``--help`` need not import cryptography
#: (tests/test_padding.py keeps the two equal).
SEALED_BYTES = 560

app = typer.Typer(
    name="20i-agg",
    help="Collect, store and export 20i telemetry reports (the maintainers' side).",
    no_args_is_help=True,
    add_completion=False,
    # Plain help: the rich renderer shows boolean flags as `--dry-run <bool>`, which typing
    # would make an error (as in `20i`, cli/app.py).
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> NoReturn:
    typer.echo(f"20i-agg: error: {message}", err=True)
    raise typer.Exit(1)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for private.pem and public.txt.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing key pair (old reports are lost).")
    ] = False,
) -> None:
    """Generate the analyzer's HPKE key pair (private key file mode 0600)."""
    from server_agg.keys import KeyFileError, generate

    try:
        files = generate(out, force=force)
    except KeyFileError as exc:
        _fail(str(exc))
    typer.echo(f"private key: {files.private_path} (mode 0600; keep it off the collector)")
    typer.echo(f"public key:  {files.public_text}")
    typer.echo(f"fingerprint: {files.fingerprint}")


@app.command()
def serve(
    store: Annotated[Path, typer.Option("--store", help="SQLite file (created if missing).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on; 0 picks one.")] = 8020,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="public.txt or a key directory, served to clients."),
    ] = None,
    rate_limit: Annotated[
        float, typer.Option("--rate-limit", help="Global requests/s (token bucket); 0 disables.")
    ] = 2000.0,
    burst: Annotated[int, typer.Option("--burst", help="Token bucket size (requests).")] = 2000,
    synchronous: Annotated[
        str,
        typer.Option(
            "--synchronous",
            help="SQLite sync: NORMAL survives a killed collector, FULL also power loss.",
        ),
    ] = "NORMAL",
    max_group: Annotated[
        int,
        typer.Option(
            "--max-group",
            hidden=True,
            help="Batches per commit at most; 1 turns group commit off (for benchmarks).",
        ),
    ] = 256,
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", help="Seconds a connection may wait idle.")
    ] = 5.0,
    header_timeout: Annotated[
        float,
        typer.Option("--header-timeout", help="Seconds from a request's first byte to its head."),
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option("--body-timeout", help="Seconds from a request's head to its body.")
    ] = 20.0,
    max_header_bytes: Annotated[
        int, typer.Option("--max-header-bytes", help="Largest request head (else 431).")
    ] = 16 * 1024,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections",
            help="Open connections at most; past it the oldest idle one is closed.",
        ),
    ] = 1000,
    sealed_length: Annotated[
        int,
        typer.Option(
            "--sealed-length",
            help="The one length of a sealed report (bytes; else 400); 0 accepts any length.",
        ),
    ] = SEALED_BYTES,
) -> None:
    """Run the collector (HTTP API of DESIGN section 4) until SIGTERM or Ctrl-C.

    Every sealed report has one length (``ldp.report.SEALED_BYTES``, issue 14), so by default
    a report of any other length is refused: it came from a client that does not pad (before
    0.2) or from no client at all, and storing it would keep a length that may say what it holds.
    """
    from server_agg.collector import CollectorError, RateLimit
    from server_agg.collector import serve as run_collector
    from server_agg.limits import ConnectionLimits

    try:
        limits = ConnectionLimits(
            idle_timeout=idle_timeout,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            max_header_bytes=max_header_bytes,
            max_connections=max_connections,
        )
    except ValueError as exc:
        _fail("--" + str(exc).replace("_", "-"))

    if sealed_length != 0 and not 48 <= sealed_length <= 4096:
        _fail(f"--sealed-length ({sealed_length}) must be 0 or in 48..4096 bytes")
    level = synchronous.upper()
    if level not in ("FULL", "NORMAL"):
        _fail(f"--synchronous ({synchronous!r}) must be FULL or NORMAL")
    if rate_limit < 0 or burst < 1:
        _fail(f"--rate-limit ({rate_limit:g}) must be >= 0 and --burst ({burst}) >= 1")
    limit = RateLimit(rate=rate_limit, burst=burst) if rate_limit > 0 else None

    def ready(bound_host: str, bound_port: int) -> None:
        key = "none" if public_key is None else str(public_key)
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host  # IPv6 literal
        typer.echo(
            f"20i-agg: listening on http://{shown}:{bound_port} (store {store}, public key {key})"
        )

    try:
        run_collector(
            store,
            host=host,
            port=port,
            public_key=public_key,
            rate_limit=limit,
            synchronous="FULL" if level == "FULL" else "NORMAL",
            max_group=max_group,
            limits=limits,
            sealed_length=sealed_length or None,
            on_ready=ready,
        )
    except CollectorError as exc:
        _fail(str(exc))


@app.command("export")
def export_command(
    store: Annotated[Path, typer.Option("--store", help="The collector's SQLite file.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for day=*/part-*.parquet.")],
) -> None:
    """Write not-yet-exported reports as shuffled Parquet files, one per day (exactly once)."""
    from server_agg.export import ExportError, export
    from server_agg.store import Store, StoreError

    try:
        with Store(store, create=False) as opened:
            result = export(opened, out)
    except (StoreError, ExportError) as exc:
        _fail(str(exc))
    if result.resumed:
        typer.echo(f"finished interrupted export run(s) {', '.join(map(str, result.resumed))}")
    if not result.files:
        typer.echo("nothing new to export")
        return
    typer.echo(f"exported {result.rows} reports in {len(result.files)} file(s) under {out}")
    for path in result.files:
        typer.echo(f"  {path}")


@app.command()
def prune(
    store: Annotated[
        Path | None, typer.Option("--store", help="The collector's SQLite file.")
    ] = None,
    exports: Annotated[
        Path | None,
        typer.Option(
            "--exports", help="A Parquet export directory whose old day=* folders go too."
        ),
    ] = None,
    keep_days: Annotated[
        int,
        typer.Option("--keep-days", help="Keep reports that arrived in the last N UTC days."),
    ] = 400,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be deleted.")
    ] = False,
) -> None:
    """Delete reports past the retention period (PRIVACY.md); safe while `serve` runs."""
    from server_agg.export import ExportError, prune_exports
    from server_agg.store import Store, StoreError, first_kept_day, utc_today

    if keep_days < 1:
        _fail(f"--keep-days ({keep_days}) must be >= 1")
    if store is None and exports is None:
        _fail("name what to prune: --store PATH, --exports DIR, or both")
    before = first_kept_day(keep_days, utc_today())
    verb = "would delete" if dry_run else "deleted"
    if store is not None:
        try:
            with Store(store, create=False) as opened:
                result = opened.prune(before, dry_run=dry_run)
        except StoreError as exc:
            _fail(str(exc))
        typer.echo(
            f"{verb} {result.deleted} reports that arrived before {result.before_day} "
            f"(keeping {keep_days} days)"
        )
        if result.unexported:
            typer.echo(
                f"20i-agg: warning: {result.unexported} of them were never exported to Parquet; "
                f"retention {'would delete' if dry_run else 'deletes'} them anyway",
                err=True,
            )
        if result.deleted and not dry_run and not result.checkpointed:
            typer.echo(
                "20i-agg: note: the store was busy, so the write-ahead log keeps old copies of "
                "the deleted pages until SQLite's next full checkpoint",
                err=True,
            )
    if exports is not None:
        try:
            folders = prune_exports(exports, before.isoformat(), dry_run=dry_run)
        except ExportError as exc:
            _fail(str(exc))
        typer.echo(f"{verb} {len(folders)} export day folders before {before.isoformat()}")


register_analyzer(app)


def main() -> None:
    """Console-script entry point (``20i-agg``)."""
    app()


if __name__ == "__main__":
    main()
