"""``20i telemetry``: the commands users run to see and control telemetry.

Thin on purpose: each command parses its options, calls one function of
``twentyi_telemetry.consent``, ``cli.status``, ``cli.disclosure``, ``cli.sentlog`` or
``twentyi_telemetry.state``, and echoes the result.
Nothing here prompts, sends anything or makes a network call; ``disable`` sends nothing, not
even a farewell. Errors become one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from twentyi_telemetry.consent import (
    NO_CONSENT,
    Consent,
    Kind,
    env_override,
    read_consent,
    write_consent,
)
from twentyi_telemetry.errors import CliError, ConsentWriteError
from twentyi_telemetry.state import Paths, ensure_secret, purge

__all__ = ["app"]

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="telemetry",
    help=(
        "See and control 20i's anonymous usage telemetry. It is off unless you run"
        " `20i telemetry enable`; DO_NOT_TRACK=1 or TWENTYI_TELEMETRY=0 turn it off whatever"
        " else says, and nothing is sent in CI."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON with a stable shape (see docs/CLI.md).")
]


def _one_line_errors(command: F) -> F:
    """Turn a :class:`CliError` into one line on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            typer.echo(f"20i: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]  # same signature, by functools.wraps


def _echo_json(document: object) -> None:
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


def _now() -> datetime:
    return datetime.now(UTC)


def _versions() -> tuple[str, str]:
    """The policy version and schema id a consent is given to."""
    from cli.endpoint import load_defaults
    from ldp.schema import shipped_schema

    return str(load_defaults().get("policy_version", "")), shipped_schema().id


def _current_consent(paths: Paths) -> Consent:
    # A missing or garbled file counts as "nothing decided": enable / disable rewrite it whole.
    return read_consent(paths.consent_file).consent or NO_CONSENT


@app.command()
@_one_line_errors
def status(json_output: JsonFlag = False) -> None:
    """Show whether usage and error reports are on, what decided it, and where files live."""
    from cli.status import render_status, status_document

    document = status_document(Paths.default(), os.environ)
    if json_output:
        _echo_json(document)
    else:
        typer.echo(render_status(document))


@app.command()
@_one_line_errors
def enable(
    errors: Annotated[
        bool,
        typer.Option(
            "--errors",
            help="Enable the separate error reports (one error category a week) instead of"
            " usage reports.",
        ),
    ] = False,
) -> None:
    """Opt in to usage reports (or, with --errors, error reports).

    Never prompts. Prints every file it writes: the consent file and, the first time, the
    local secret that keys the memoized randomized responses.
    """
    paths = Paths.default()
    kind: Kind = "errors" if errors else "usage"
    policy_version, schema_id = _versions()
    consent = _current_consent(paths).decided(kind, True, _now(), policy_version, schema_id)
    # A failed enable changes nothing on disk: a secret (and folders) made for it go again.
    missing = [p for p in (paths.state_dir, *paths.state_dir.parents) if not p.exists()]
    _, created = ensure_secret(paths)
    try:
        write_consent(paths.consent_file, consent)
    except CliError:
        if created:
            paths.secret_file.unlink(missing_ok=True)
            for folder in missing:  # innermost first
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    if created:
        typer.echo(f"wrote {paths.secret_file}")
    typer.echo(f"wrote {paths.consent_file}")
    what = "error reports" if errors else "usage telemetry"
    as_of = consent.kind(kind).as_of
    since = f" as of {as_of:%Y-%m-%d %H:%M} UTC" if as_of else ""
    override = env_override(os.environ)
    if override is None:
        typer.echo(f"{what.capitalize()} {'are' if errors else 'is'} on{since}.")
    else:  # the consent is recorded, but the environment keeps everything off here
        typer.echo(
            f"You opted in to {what}{since}, but it stays off in this environment: {override[1]}."
        )
    typer.echo("See what is collected with `20i telemetry info`; turn it off with `disable`.")


@app.command()
@_one_line_errors
def disable(
    errors: Annotated[
        bool,
        typer.Option("--errors", help="Disable only error reports; usage reports stay as is."),
    ] = False,
    purge_files: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="Also delete every local telemetry file (secret, memo ledger, this week's"
            " counts, spool, sent log) and their folders; each removed file is printed. The"
            " consent file stays: it records that you said no.",
        ),
    ] = False,
) -> None:
    """Opt out of usage and error reports (or, with --errors, error reports only).

    Sends nothing, not even a farewell: a report being sent right now is stopped, and
    reports already spooled are deleted unsent.
    """
    if errors and purge_files:
        raise typer.BadParameter(
            "--purge deletes all telemetry state, so use it without --errors", param_hint="--purge"
        )
    paths = Paths.default()
    consent = _current_consent(paths)
    now = _now()
    kinds: tuple[Kind, ...] = ("errors",) if errors else ("usage", "errors")
    for kind in kinds:
        consent = consent.decided(kind, False, now, consent.policy_version, consent.schema_id)
    failure: ConsentWriteError | None = None
    try:
        write_consent(paths.consent_file, consent)
        typer.echo(f"wrote {paths.consent_file}")
    except ConsentWriteError as exc:
        failure = exc  # still stop the worker and purge below, then report it
    from cli.sender import stop_and_lock

    # A worker that is sending right now is stopped, and none can start sending until we
    # are done: nothing is sent, and no file comes back, once this command returns.
    with stop_and_lock(paths, os.environ):
        removed = purge(paths) if purge_files else _drop_spooled(paths, kinds)
    for path in removed:
        typer.echo(f"removed {path}")
    if purge_files and not removed:
        typer.echo("no local telemetry files to remove")
    if failure is not None:
        raise failure
    typer.echo("Error reports are off." if errors else "Telemetry is off. Nothing was sent.")


def _drop_spooled(paths: Paths, kinds: tuple[Kind, ...]) -> list[Path]:
    """Delete the spooled reports of the kinds just turned off: they will never be sent."""
    from cli import spool

    removed = []
    for name in spool.spool_names(paths):
        path = paths.spool_dir / name
        try:
            kind = spool.load(path).kind
        except (OSError, ValueError):
            continue
        if kind in kinds and spool.remove(path):
            removed.append(path)
    return removed


@app.command()
@_one_line_errors
def info(json_output: JsonFlag = False) -> None:
    """Explain what is collected: every field, its mechanism and epsilons, and the budget."""
    from cli.disclosure import info_document, render_info

    document = info_document(Paths.default(), os.environ)
    if json_output:
        _echo_json(document)
    else:
        typer.echo(render_info(document))


@app.command()
@_one_line_errors
def preview(json_output: JsonFlag = False) -> None:
    """Show the report(s) this period would produce, randomized. Sends and saves nothing."""
    from cli.disclosure import preview_document, render_preview

    document = preview_document(Paths.default(), os.environ, _now())
    if json_output:
        _echo_json(document)
    else:
        typer.echo(render_preview(document))


@app.command()
@_one_line_errors
def log(
    json_output: JsonFlag = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, help="Show at most this many reports."),
    ] = None,
) -> None:
    """Show the reports actually sent from this machine (plaintext), newest first."""
    from cli.sentlog import read_sent_log

    paths = Paths.default()
    sent = read_sent_log(paths.sent_log)
    reports = sent.reports if limit is None else sent.reports[:limit]
    if json_output:
        _echo_json(
            {
                "format": 1,
                "path": str(paths.sent_log),
                "reports": [r.to_dict() for r in reports],
                "skipped": sent.skipped,
            }
        )
        return
    if not reports:
        typer.echo(f"No reports have been sent from this machine ({paths.sent_log}).")
    for entry in reports:
        where = entry.endpoint or "unknown endpoint"
        report = entry.report
        typer.echo(
            f"{entry.to_dict()['sent_at']}  {report.get('kind', '?')}  {report.get('period', '?')}"
            f"  -> {where}"
        )
        typer.echo("  " + json.dumps(report, sort_keys=True, separators=(",", ":")))
    if sent.skipped:
        typer.echo(f"note: {sent.skipped} unreadable line(s) in {paths.sent_log} were skipped")


@app.command()
@_one_line_errors
def policy() -> None:
    """Print the privacy policy (PRIVACY.md, shipped with 20i)."""
    try:
        text = resources.files("cli").joinpath("data/PRIVACY.md").read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"the privacy policy is missing from this install: {exc}") from exc
    typer.echo(text.rstrip("\n"))
