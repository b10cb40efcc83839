"""What ``20i telemetry status`` reports: on or off per report kind, why, and where things are.

Builds one plain document (the ``--json`` shape, documented in docs/CLI.md) and renders it as
text. Reads the environment, the consent file, the user config and the spool directory;
writes nothing and makes no network call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cli.endpoint import Destination, resolve
from cli.spool import MAX_AGE, MAX_REPORTS
from twentyi_telemetry.consent import KINDS, Consent, Decision, decide, shipped_policy_version
from twentyi_telemetry.state import Paths, count_spooled

__all__ = ["STATUS_FORMAT", "delivery", "render_status", "status_document"]

STATUS_FORMAT = 1


def delivery(decision: Decision, destination: Destination) -> str:
    """What ``cli.pipeline`` does with a finished week here and now (``delivery`` in ``--json``).

    ``off``: nothing is recorded. ``discard``: no analyzer key, so nothing can be sealed and
    the week is dropped (a report is never spooled in plaintext). ``spool``: reports are sealed
    and wait for an endpoint. ``send``: sealed, spooled and sent by the background sender.
    """
    if not decision.any_on:
        return "off"
    if destination.public_key is None:
        return "discard"
    if destination.endpoint is None:
        return "spool"
    return "send"


def _notes(decision: Decision, destination: Destination, waiting: int) -> list[str]:
    notes = list(decision.notes)
    outcome = delivery(decision, destination)
    if outcome == "discard":
        notes.append(
            "no analyzer key is configured: finished weeks are discarded, never spooled"
            " (reports are only ever kept sealed to that key)"
        )
        if waiting:
            notes.append(
                f"{waiting} spooled report(s) cannot be sent without the analyzer key they were"
                " sealed to: the next send attempt drops them unsent"
            )
    elif outcome == "spool":
        weeks = MAX_AGE.days // 7
        notes.append(
            "no endpoint is configured: finished weeks are sealed and wait in the spool until"
            f" one is (at most {MAX_REPORTS} reports, each dropped unsent after {weeks} weeks)"
        )
    if waiting and outcome == "off":
        notes.append(f"{waiting} spooled report(s) will not be sent while telemetry is off")
    notes.extend(destination.problems)
    return notes


def _state_notes(paths: Paths, decision: Decision) -> list[str]:
    """Host commands never create the state folder (so a purge cannot be undone by one that
    was still counting): if it is gone while telemetry is on, say that nothing is counted."""
    if decision.any_on and not paths.state_dir.is_dir():
        return [
            f"the telemetry state folder {paths.state_dir} is missing, so nothing is counted;"
            " run `20i telemetry enable` again to recreate it"
        ]
    return []


def status_document(paths: Paths, env: Mapping[str, str]) -> dict[str, Any]:
    """The status as plain JSON values (stable shape, ``format`` = 1)."""
    decision = decide(env, paths.consent_file, inspect=True)
    consent_file = decision.consent_file
    assert consent_file is not None  # inspect=True always reads it
    consent: Consent | None = consent_file.consent
    destination = resolve(paths, env)
    waiting = count_spooled(paths)
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        on = decision.usage if kind == "usage" else decision.errors
        entry = None if consent is None else consent.kind(kind)
        kinds[kind] = {
            "on": on,
            "consent": {"enabled": False, "as_of": None} if entry is None else entry.to_dict(),
        }
    return {
        "format": STATUS_FORMAT,
        **kinds,
        "source": decision.source,
        "reason": decision.reason,
        "sending": decision.any_on and destination.configured,
        "delivery": delivery(decision, destination),
        "consent_file": {
            "path": str(consent_file.path),
            "state": consent_file.state,
            "problem": consent_file.problem,
            "policy_version": None if consent is None else consent.policy_version,
            "schema_id": None if consent is None else consent.schema_id,
            "current_policy_version": shipped_policy_version(),
        },
        "paths": paths.as_dict(),
        "endpoint": destination.to_dict(),
        "spool": {"waiting": waiting},
        "notes": _notes(decision, destination, waiting) + _state_notes(paths, decision),
    }


def _onoff(kind: dict[str, Any]) -> str:
    consent = kind["consent"]
    if kind["on"]:
        return f"on (since {consent['as_of']})"
    if consent["enabled"]:
        return "off here (you opted in, but see 'decided by')"
    return "off"


def render_status(doc: dict[str, Any]) -> str:
    """The status as aligned ``label  value`` lines for a terminal."""
    endpoint = doc["endpoint"]
    consent_file = doc["consent_file"]
    file_state = consent_file["state"]
    if consent_file["problem"]:
        file_state += f": {consent_file['problem']}"
    url = endpoint["url"] or "not configured"
    if endpoint["url"]:
        url += f" (from {endpoint['url_source']})"
    key = endpoint["public_key_fingerprint"] or "not configured"
    if endpoint["public_key_fingerprint"]:
        key += f" (from {endpoint['public_key_source']})"
    rows = [
        ("usage reports", _onoff(doc["usage"])),
        ("error reports", _onoff(doc["errors"])),
        ("decided by", f"{doc['source']}: {doc['reason']}"),
        ("consent file", f"{consent_file['path']} ({file_state})"),
        ("user config", doc["paths"]["config_file"]),
        ("state dir", doc["paths"]["state_dir"]),
        ("cache dir", doc["paths"]["cache_dir"]),
        ("endpoint", url),
        ("analyzer key", key),
        ("waiting", f"{doc['spool']['waiting']} report(s) in {doc['paths']['spool_dir']}"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {value}" for label, value in rows]
    lines.extend(f"note: {note}" for note in doc["notes"])
    return "\n".join(lines)
