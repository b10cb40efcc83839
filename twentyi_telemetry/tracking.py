"""Host integration: count each host command in the period tally, without ever touching the host.

One line in the host: ``twentyi_telemetry.instrument(app, modules=..., version=...)`` for a
Typer app, or ``twentyi_telemetry.record(command, ...)`` from anything else. With telemetry off
the whole cost is reading the environment and at most one small file (the consent). With it
on, the host only counts: one line appended to the period's journal, no lock, no wait. At the
first command of a period, or when spooled reports are due, it starts the detached worker
(:mod:`twentyi_telemetry.worker`), which builds, seals, spools and sends in its own process.
This module never imports numpy, httpx, cryptography, ``ldp`` or ``cli``, never prints, never
raises into the host, never changes its output or exit code, and never waits on the network.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from twentyi_telemetry.environment import env_override
from twentyi_telemetry.state import Paths, read_small

if TYPE_CHECKING:
    import typer

__all__ = ["default_error_category", "instrument", "record"]

Modules = Iterable[str] | Callable[[], Iterable[str]] | None
ErrorClassifier = Callable[[BaseException | None], str]
F = TypeVar("F", bound=Callable[..., Any])

#: Marks a callback already wrapped by :func:`instrument`, so instrumenting twice counts once.
_TRACKED = "__twentyi_tracked__"


def record(
    command: str,
    *,
    modules: Modules = None,
    version: str | None = None,
    error: str | None = None,
    env: Mapping[str, str] | None = None,
    paths: Paths | None = None,
    now: datetime | None = None,
) -> None:
    """Count one invocation of ``command`` if telemetry is on; otherwise do (almost) nothing.

    ``modules`` is the set of enabled optional modules, or a callable returning it (called
    only when usage telemetry is on). ``version`` is the host's version (bucketed to
    major.minor). ``error`` is the invocation's error category from the schema (``None``:
    no error). Names outside the schema's domains count as ``other``. Never raises.
    """
    # Telemetry must never break a host command (invariant 3 of the design).
    with contextlib.suppress(Exception):
        _record(command, modules, version, error, env, paths, now)


def _record(
    command: str,
    modules: Modules,
    version: str | None,
    error: str | None,
    env: Mapping[str, str] | None,
    paths: Paths | None,
    now: datetime | None,
) -> None:
    env = os.environ if env is None else env
    if env_override(env) is not None:  # no file access at all
        return
    paths = Paths.default() if paths is None else paths
    if not _may_be_on(paths):  # the one small file read
        return
    _record_on(command, modules, version, error, env, paths, now)


def _may_be_on(paths: Paths) -> bool:
    """False if the consent file certainly does not enable anything (the common case).

    A cheap pre-check so the off path imports nothing but this module,
    ``twentyi_telemetry.environment`` and ``twentyi_telemetry.state``: it only looks for an
    ``"enabled": true``. When it says "maybe", the full, strict
    ``twentyi_telemetry.consent.decide`` runs and has the final word.
    """
    try:
        document = json.loads(read_small(paths.consent_file))
    except (OSError, ValueError):
        return False
    if not isinstance(document, dict):
        return False
    return any(
        isinstance(entry, dict) and entry.get("enabled") is True
        for entry in (document.get("usage"), document.get("errors"))
    )


def _record_on(
    command: str,
    modules: Modules,
    version: str | None,
    error: str | None,
    env: Mapping[str, str],
    paths: Paths,
    now: datetime | None,
) -> None:
    """Append one journal line; start the worker at the first command of a period or when
    spooled reports are due. Takes no lock and waits for nothing (see ``tally``)."""
    from twentyi_telemetry.consent import decide, format_time
    from twentyi_telemetry.tally import append_entry, encode_entry, iso_period, shipped_domains

    decision = decide(env, paths.consent_file)
    if not decision.any_on:
        return
    consent = decision.consent_file.consent if decision.consent_file else None
    if consent is None:  # pragma: no cover - decide() only turns telemetry on from a consent
        return
    now = datetime.now(UTC) if now is None else now
    domains = shipped_domains()
    usage = errors = None
    if decision.usage and consent.usage.as_of is not None:
        usage = (
            format_time(consent.usage.as_of),
            domains.command_value(command),
            domains.module_values(_call_modules(modules)),
            None if version is None else domains.version_value(version),
        )
    if decision.errors and consent.errors.as_of is not None:
        category = domains.error_value("none" if error is None else error)
        errors = (format_time(consent.errors.as_of), category)
    if usage is None and errors is None:  # pragma: no cover - any_on implies one of them
        return
    try:
        first_of_period = append_entry(
            paths.state_dir, iso_period(now), encode_entry(usage, errors)
        )
    except FileNotFoundError:
        return  # no state folder: purged a moment ago (or never enabled); never recreate it
    from twentyi_telemetry import worker

    if first_of_period or worker.spool_due(paths, now):
        if worker.debug_enabled(env):
            import sys

            worker.print_debug(paths, sys.stderr)
        worker.start(paths, env)


def _call_modules(modules: Modules) -> list[str]:
    try:
        values = modules() if callable(modules) else modules
        return [] if values is None else [m for m in values if isinstance(m, str)]
    except Exception:  # the host's provider failed: record the command without modules
        return []


# --- Typer integration ---------------------------------------------------------------------

_CATEGORY_BY_TYPE: tuple[tuple[type[BaseException], str], ...] = (
    (TimeoutError, "timeout"),
    (PermissionError, "permission"),
    (FileNotFoundError, "not_found"),
    (FileExistsError, "conflict"),
    (ConnectionError, "network"),
    (ValueError, "invalid_input"),
)


def default_error_category(exc: BaseException | None) -> str:
    """Map how a command ended to the schema's ``error_category`` (a host may pass its own).

    ``None`` or a zero exit is ``none``; a non-zero ``typer.Exit`` / ``SystemExit`` or an
    interrupt is ``other``; a few built-in exception types have their own category; any
    other exception is ``internal``.
    """
    if exc is None:
        return "none"
    code = getattr(exc, "exit_code", getattr(exc, "code", None))
    if isinstance(exc, SystemExit) or type(exc).__name__ == "Exit":
        return "none" if code in (0, None) else "other"
    if isinstance(exc, KeyboardInterrupt):
        return "other"
    for kind, category in _CATEGORY_BY_TYPE:
        if isinstance(exc, kind):
            return category
    return "internal"


def instrument(
    app: typer.Typer,
    *,
    modules: Modules = None,
    version: str | None = None,
    classify_error: ErrorClassifier = default_error_category,
    env: Mapping[str, str] | None = None,
    paths: Paths | None = None,
) -> typer.Typer:
    """Record every command of ``app`` (and of its sub-apps) when it runs; returns ``app``.

    Call it after the commands are registered. Each command's callback is wrapped so that,
    once it has finished (normally or not), :func:`record` counts it under its command path
    (``"up"``, ``"db migrate"``); the exception, if any, is re-raised untouched. Help and
    usage errors never reach a callback, so they are not counted.
    """
    _instrument(app, (), modules, version, classify_error, env, paths)
    return app


def _instrument(
    app: typer.Typer,
    prefix: tuple[str, ...],
    modules: Modules,
    version: str | None,
    classify_error: ErrorClassifier,
    env: Mapping[str, str] | None,
    paths: Paths | None,
) -> None:
    for info in app.registered_commands:
        if info.callback is None:
            continue
        name = info.name if isinstance(info.name, str) else _command_name(info.callback)
        info.callback = _wrap(
            info.callback, " ".join((*prefix, name)), modules, version, classify_error, env, paths
        )
    for group in app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        group_name = group.name if isinstance(group.name, str) else sub.info.name
        if not isinstance(group_name, str):
            continue
        _instrument(sub, (*prefix, group_name), modules, version, classify_error, env, paths)


def _command_name(callback: Callable[..., Any]) -> str:
    # Typer's own rule (typer.main.get_command_name): lower-case, underscores to dashes.
    return callback.__name__.lower().replace("_", "-")


def _wrap(
    callback: F,
    command: str,
    modules: Modules,
    version: str | None,
    classify_error: ErrorClassifier,
    env: Mapping[str, str] | None,
    paths: Paths | None,
) -> F:
    if getattr(callback, _TRACKED, False):
        return callback

    @functools.wraps(callback)
    def tracked(*args: Any, **kwargs: Any) -> Any:
        outcome: BaseException | None = None
        try:
            return callback(*args, **kwargs)
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            try:
                category = classify_error(outcome)
            except Exception:
                category = "internal" if outcome is not None else "none"
            record(command, modules=modules, version=version, error=category, env=env, paths=paths)

    setattr(tracked, _TRACKED, True)
    return tracked  # type: ignore[return-value]  # same signature, by functools.wraps
