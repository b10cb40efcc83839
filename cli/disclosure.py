"""What ``20i telemetry info`` and ``preview`` tell the user: exactly what is collected and how.

``info`` documents every field (domain size, mechanism, epsilons, p* and q*), the epsilon
budget (worst case and this machine's actual), what is never collected, an example payload,
the endpoint and key fingerprint. ``preview`` shows the reports this period would produce.
Both build plain documents (the ``--json`` shapes, documented in docs/CLI.md), make no network
call and change no state: the example and a secret-less preview use a throwaway secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from cli.compose import compose_reports
from cli.endpoint import resolve
from twentyi_telemetry.consent import decide
from twentyi_telemetry.errors import StateError
from twentyi_telemetry.state import SECRET_BYTES, Paths, load_secret, regular_or_absent
from twentyi_telemetry.tally import current_tally, iso_period, journal_periods

if TYPE_CHECKING:
    from ldp.schema import Schema

__all__ = [
    "INFO_FORMAT",
    "NEVER_COLLECTED",
    "PREVIEW_FORMAT",
    "info_document",
    "preview_document",
    "render_info",
    "render_preview",
]

INFO_FORMAT = 1
PREVIEW_FORMAT = 1

NEVER_COLLECTED = (
    "identifiers of any kind: no user, machine, install or session id",
    "user names, host names, home or working directories, file paths, project names",
    "command arguments, option values, file contents, environment variables",
    "IP addresses (the collector sees them in transit and never stores them)",
    "precise times (a report names its ISO week; the collector keeps only the day)",
    "true values: every field is randomized on this machine before it leaves",
)

_KIND_CONSENT = {
    "usage": "`20i telemetry enable`",
    "errors": "`20i telemetry enable --errors` (separate consent)",
}
_EXAMPLE_VALUES: dict[str, dict[str, object]] = {
    "usage": {"cli_version": "1.4", "command": "status", "modules": frozenset({"docker"})},
    "errors": {"error_category": "none"},
}


def _schema() -> Schema:
    from ldp.schema import shipped_schema

    return shipped_schema()


def policy_location() -> str:
    """Where the installed privacy policy is (shown by ``info``)."""
    return str(resources.files("cli").joinpath("data/PRIVACY.md"))


def _field_row(spec: Any) -> dict[str, Any]:
    randomizer = spec.randomizer()
    return {
        "name": spec.name,
        "kind": spec.kind,
        "doc": spec.doc,
        "domain": list(spec.domain),
        "domain_size": spec.d,
        "pad": spec.pad,
        "mechanism": randomizer.mechanism,
        "epsilon_perm": randomizer.epsilon_perm,
        "epsilon_1": randomizer.epsilon_1,
        "p_star": randomizer.p_star,
        "q_star": randomizer.q_star,
    }


def _example(schema: Schema, kind: str) -> dict[str, Any]:
    from ldp.report import build_report
    from ldp.values import arch_value, os_value

    values = dict(_EXAMPLE_VALUES[kind])
    if kind == "usage":
        values.update(os=os_value(), arch=arch_value())
    # A throwaway secret: the example shows the format without spending this machine's
    # permanent responses or touching its ledger.
    report = build_report(
        schema, kind, iso_period(datetime.now(UTC)), values, os.urandom(SECRET_BYTES)
    )
    return {"kind": kind, "true_values": _jsonable(values), "report": report.to_json()}


def _jsonable(values: Mapping[str, object]) -> dict[str, object]:
    return {k: sorted(v) if isinstance(v, frozenset) else v for k, v in values.items()}


def info_document(paths: Paths, env: Mapping[str, str]) -> dict[str, Any]:
    """Everything ``info`` shows, as plain JSON values (stable shape, ``format`` = 1)."""
    from ldp.budget import Ledger, lifetime_worst_case, per_report_epsilon
    from ldp.errors import DecodeError

    schema = _schema()
    ledger = Ledger(paths.ledger_file)
    ledger_problem = None
    kinds = []
    for kind in schema.kinds:
        try:
            if not regular_or_absent(paths.ledger_file):  # a FIFO there would hang the read
                raise OSError(f"{paths.ledger_file} is not a regular file")
            actual: float | None = ledger.actual_lifetime_epsilon(kind)
        except (DecodeError, OSError) as exc:
            actual, ledger_problem = None, str(exc)
        kinds.append(
            {
                "name": kind.name,
                "doc": kind.doc,
                "consent": _KIND_CONSENT.get(kind.name, "`20i telemetry enable`"),
                "fields": [_field_row(spec) for spec in kind.fields],
                "epsilon": {
                    "per_report": per_report_epsilon(kind),
                    "lifetime_worst_case": lifetime_worst_case(kind),
                    "lifetime_actual": actual,
                },
                "example": _example(schema, kind.name),
            }
        )
    destination = resolve(paths, env)
    decision = decide(env, paths.consent_file)
    return {
        "format": INFO_FORMAT,
        "schema": {"name": schema.name, "version": schema.version, "id": schema.id},
        "on": {"usage": decision.usage, "errors": decision.errors, "source": decision.source},
        "kinds": kinds,
        "never_collected": list(NEVER_COLLECTED),
        "ledger": {"path": str(paths.ledger_file), "problem": ledger_problem},
        "endpoint": destination.to_dict(),
        "policy": {"path": policy_location(), "command": "20i telemetry policy"},
    }


def preview_document(paths: Paths, env: Mapping[str, str], now: datetime) -> dict[str, Any]:
    """The reports the current period would produce, randomized, without sending or saving."""
    decision = decide(env, paths.consent_file)
    period = iso_period(now)
    notes: list[str] = []
    if not decision.any_on:
        notes.append(f"telemetry is off ({decision.source}): no report would be produced")
    consent = decision.consent_file.consent if decision.consent_file is not None else None
    tally = current_tally(
        paths.state_dir,
        period,
        consent.usage.as_of if consent is not None and decision.usage else None,
        consent.errors.as_of if consent is not None and decision.errors else None,
    )
    waiting = [p for p in journal_periods(paths.state_dir) if p < period]
    if decision.any_on and waiting:
        notes.append(
            f"{', '.join(waiting)} ended and will be reported by the background worker"
            " that the next command starts"
        )
    try:
        secret = load_secret(paths)
    except StateError as exc:
        secret = None
        notes.append(str(exc))
    if secret is None:
        notes.append(
            "no local secret yet: previewed with a throwaway one, so the permanent"
            " randomized responses differ from the ones real reports will use"
        )
        secret = os.urandom(SECRET_BYTES)
    kinds = tuple(k for k, on in (("usage", decision.usage), ("errors", decision.errors)) if on)
    if decision.any_on and (tally is None or not any(getattr(tally, k) is not None for k in kinds)):
        notes.append("nothing recorded this period yet: no report would be produced")
    reports = []
    if tally is not None and kinds:
        for report in compose_reports(tally, _schema(), secret, kinds):
            encoded = report.encode()
            reports.append(
                {
                    "kind": report.kind,
                    "period": report.period,
                    "bytes": len(encoded),
                    "plaintext": encoded.decode("ascii"),
                    "report": report.to_json(),
                }
            )
    return {
        "format": PREVIEW_FORMAT,
        "period": period,
        "on": {"usage": decision.usage, "errors": decision.errors, "source": decision.source},
        "reports": reports,
        "notes": notes,
    }


def _fmt(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.2f}"


def render_info(doc: dict[str, Any]) -> str:
    """The info document as text for a terminal."""
    schema = doc["schema"]
    out = [
        f"20i telemetry collects these reports (schema {schema['name']} v{schema['version']},"
        f" id {schema['id']}). Every field is randomized on this machine (local differential"
        " privacy) before it is sealed and sent; epsilon_perm bounds what all reports of one"
        " value ever reveal, epsilon_1 what one report reveals.",
    ]
    header = ("field", "kind", "values", "mechanism", "eps_perm", "eps_1", "p*", "q*")
    for kind in doc["kinds"]:
        out.append("")
        out.append(f"{kind['name']} reports: {kind['doc']} Consent: {kind['consent']}.")
        rows = [header] + [
            (
                f["name"],
                f["kind"] + (f" (pad {f['pad']})" if f["pad"] else ""),
                str(f["domain_size"]),
                f["mechanism"],
                f"{f['epsilon_perm']:.2f}",
                f"{f['epsilon_1']:.2f}",
                f"{f['p_star']:.4f}",
                f"{f['q_star']:.4f}",
            )
            for f in kind["fields"]
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        out.extend(
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        )
        for f in kind["fields"]:
            out.append(f"  {f['name']}: {', '.join(f['domain'])}")
        eps = kind["epsilon"]
        out.append(
            f"  epsilon per report {_fmt(eps['per_report'])}; lifetime worst case"
            f" {_fmt(eps['lifetime_worst_case'])}, this machine so far"
            f" {_fmt(eps['lifetime_actual'])}"
        )
        example = kind["example"]
        shown = ", ".join(
            f"{name}={'{' + ','.join(v) + '}' if isinstance(v, list) else v}"
            for name, v in example["true_values"].items()
        )
        out.append(f"  example payload for {shown} (made with a throwaway secret):")
        out.append("    " + _compact(example["report"]))
    out.append("")
    out.append("Never collected:")
    out.extend(f"  - {item}" for item in doc["never_collected"])
    endpoint = doc["endpoint"]
    out.append("")
    out.append(f"endpoint      {endpoint['url'] or 'not configured'}")
    out.append(f"analyzer key  {endpoint['public_key_fingerprint'] or 'not configured'}")
    out.append(f"policy        {doc['policy']['path']} (or run `{doc['policy']['command']}`)")
    if doc["ledger"]["problem"]:
        out.append(f"note: the epsilon ledger is unreadable: {doc['ledger']['problem']}")
    return "\n".join(out)


def _compact(obj: object) -> str:
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def render_preview(doc: dict[str, Any]) -> str:
    """The preview document as text for a terminal."""
    out = [f"period {doc['period']}: {len(doc['reports'])} report(s) would be sealed and sent"]
    for report in doc["reports"]:
        out.append(f"{report['kind']} ({report['bytes']} bytes, exactly as sealed):")
        out.append("  " + report["plaintext"])
    out.extend(f"note: {note}" for note in doc["notes"])
    out.append("Nothing was sent and nothing was saved.")
    return "\n".join(out)
