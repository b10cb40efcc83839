"""deployctl: a small host CLI showing how a Typer app integrates 20i telemetry.

The integration is a guarded import at the top and one ``instrument(...)`` line near the end:
every command is counted in the local period tally when (and only when) the user ran
``20i telemetry enable``. With telemetry off it costs one small file read; it never changes
this CLI's output or exit codes, and with the telemetry package uninstalled this CLI works the
same. Run it from the repository root::

    PYTHONPATH=. python examples/host_cli.py up --replicas 3
"""

from __future__ import annotations

import typer

try:  # telemetry is optional: without the package, deployctl works exactly the same
    from twentyi_telemetry import instrument
except ImportError:
    instrument = None

__version__ = "1.4.2"

app = typer.Typer(
    help="deployctl: start, stop and inspect a (pretend) service.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.command()
def up(
    replicas: int = typer.Option(1, min=1, max=16, help="How many replicas to start."),
) -> None:
    """Start the service."""
    typer.echo(f"starting {replicas} replica(s)")
    for index in range(replicas):
        typer.echo(f"  replica {index + 1}: started")
    typer.echo("service is up")


@app.command()
def down(
    timeout: int = typer.Option(10, min=0, help="Seconds to wait for a clean stop (0 fails)."),
) -> None:
    """Stop the service."""
    if timeout == 0:
        typer.echo("stopping with no time to stop cleanly", err=True)
        raise TimeoutError("service did not stop within 0 s")
    typer.echo(f"stopping (waiting up to {timeout} s)")
    typer.echo("service is down")


@app.command()
def status(
    check: bool = typer.Option(False, "--check", help="Exit with code 3 if the service is down."),
) -> None:
    """Show whether the service runs."""
    typer.echo("service: down (0 replicas)")
    if check:
        raise typer.Exit(3)


def enabled_modules() -> list[str]:
    """The optional modules this install has enabled (read from its own config in real life)."""
    return ["docker", "git"]


# The whole telemetry integration: one line, after the commands are registered.
if instrument is not None:
    instrument(app, modules=enabled_modules, version=__version__)


if __name__ == "__main__":
    app()
