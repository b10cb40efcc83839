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
from twentyi_telemetry.state import SECRET_BYTES, Paths, load_secret
from twentyi_telemetry.tally import current_tally, iso_period, journal_periods

if TYPE_CHECKING:
    from ldp.sampling import RandomSource
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
        "epoch_weeks": spec.epoch_weeks,
        "expires": spec.expires,
        "epsilon_perm": randomizer.epsilon_perm,
        "epsilon_1": randomizer.epsilon_1,
        "p_star": randomizer.p_star,
        "q_star": randomizer.q_star,
    }


def _example(schema: Schema, kind: str, now: datetime, rand: RandomSource | None) -> dict[str, Any]:
    from ldp.report import build_report
    from ldp.values import arch_value, os_value

    values = dict(_EXAMPLE_VALUES[kind])
    if kind == "usage":
        machine = {"os": os_value(), "arch": arch_value()}
        machine["platform"] = f"{machine['os']}-{machine['arch']}"
        values.update((k, v) for k, v in machine.items() if k in schema.kind(kind).field_names)
    # A throwaway secret: the example shows the format without spending this machine's
    # epoch responses or touching its epoch memo.
    secret = os.urandom(SECRET_BYTES) if rand is None else bytes(32)
    if rand is None:
        report = build_report(schema, kind, iso_period(now), values, secret)
    else:
        report = build_report(schema, kind, iso_period(now), values, secret, rand)
    return {"kind": kind, "true_values": _jsonable(values), "report": report.to_json()}


def _jsonable(values: Mapping[str, object]) -> dict[str, object]:
    return {k: sorted(v) if isinstance(v, frozenset) else v for k, v in values.items()}


def info_document(
    paths: Paths,
    env: Mapping[str, str],
    now: datetime | None = None,
    rand: RandomSource | None = None,
) -> dict[str, Any]:
    """Everything ``info`` shows, as plain JSON values (stable shape, ``format`` = 1).

    ``now`` and ``rand`` (defaults: the clock and the OS CSPRNG, with a throwaway secret) make
    the example payloads reproducible, for the examples in docs/CLI.md.
    """
    now = datetime.now(UTC) if now is None else now
    from ldp.budget import per_report_epsilon, year_budget
    from ldp.epochs import EpochMemo
    from ldp.errors import DecodeError

    schema = _schema()
    memo_problem = None
    try:
        # EpochMemo opens only a regular file, without blocking (a FIFO is a DecodeError).
        memo = EpochMemo(paths.epochs_file)
        year = year_budget(schema, memo=memo, period=iso_period(now))
    except (DecodeError, OSError) as exc:
        year, memo_problem = year_budget(schema), str(exc)
    kinds = []
    for kind in schema.kinds:
        actual = [f.actual for f in year.fields if f.kind == kind.name]
        kinds.append(
            {
                "name": kind.name,
                "doc": kind.doc,
                "consent": _KIND_CONSENT.get(kind.name, "`20i telemetry enable`"),
                "fields": [_field_row(spec) for spec in kind.fields],
                "epsilon": {
                    "per_report": per_report_epsilon(kind),
                    "year_bound": year.kind_bound(kind.name),
                    "year_actual": None
                    if any(a is None for a in actual)
                    else sum(a or 0.0 for a in actual),
                },
                "example": _example(schema, kind.name, now, rand),
            }
        )
    destination = resolve(paths, env)
    decision = decide(env, paths.consent_file)
    return {
        "format": INFO_FORMAT,
        "schema": {"name": schema.name, "version": schema.version, "id": schema.id},
        "on": {"usage": decision.usage, "errors": decision.errors, "source": decision.source},
        "kinds": kinds,
        "year": year.to_json(),
        "never_collected": list(NEVER_COLLECTED),
        "memo": {"path": str(paths.epochs_file), "problem": memo_problem},
        "endpoint": destination.to_dict(),
        "policy": {"path": policy_location(), "command": "20i telemetry policy"},
    }


def preview_document(
    paths: Paths, env: Mapping[str, str], now: datetime, rand: RandomSource | None = None
) -> dict[str, Any]:
    """The reports the current period would produce, randomized, without sending or saving.

    ``delivery`` says what would really happen to them at the end of the week (as in
    ``status``); each report's ``values`` names, per field, the values its randomized output
    points at. ``rand`` (default the OS CSPRNG) is for reproducible examples.
    """
    from cli.status import delivery

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
    schema = _schema()
    if tally is not None and kinds:
        from ldp.epochs import EpochMemo
        from ldp.errors import DecodeError

        # Read only: the preview shows the epoch's frozen responses and never commits any.
        memo = EpochMemo(paths.epochs_file)
        try:
            built = compose_reports(tally, schema, secret, kinds, rand, memo)
        except DecodeError as exc:
            built = []
            notes.append(
                f"{exc}: no report can be built until it is fixed (a report is never drawn"
                " twice in one epoch); `20i telemetry disable --purge` resets it"
            )
        for report in built:
            encoded = report.encode()
            reports.append(
                {
                    "kind": report.kind,
                    "period": report.period,
                    "bytes": len(encoded),
                    "plaintext": encoded.decode("ascii"),
                    "report": report.to_json(),
                    "values": value_names(schema, report.kind, report.fields),
                }
            )
    return {
        "format": PREVIEW_FORMAT,
        "period": period,
        "on": {"usage": decision.usage, "errors": decision.errors, "source": decision.source},
        "delivery": delivery(decision, resolve(paths, env)),
        "reports": reports,
        "notes": notes,
    }


def value_names(schema: Schema, kind: str, fields: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per field, the domain values a randomized output points at (supports), by name.

    A field's output is a mechanism's wire value (for ``ss``, a list of indices): several
    values, only one of which may be true, or none. Padding items of a set field, which stand
    for nothing, are left out.
    """
    names: dict[str, list[str]] = {}
    for spec in schema.kind(kind).fields:
        randomizer = spec.randomizer()
        support = randomizer.support(randomizer.encode_batch([fields[spec.name]]))
        names[spec.name] = [spec.domain[i] for i in range(len(spec.domain)) if support[i]]
    return names


def _fmt(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.2f}"


def _wrap(text: str, indent: str = "") -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=92, initial_indent=indent, subsequent_indent=indent)


def _listing(names: list[str], last: str = "or") -> str:
    if not names:
        return "nothing"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"


def plain_info(kind: dict[str, Any]) -> str:
    """One paragraph for someone who has never heard of differential privacy, built only from
    the numbers in the ``info`` document (so it stays true when they change)."""
    import math

    fields = kind["fields"]
    names = [f["name"] for f in fields]
    widest = max(fields, key=lambda f: f["domain_size"])
    eps = kind["epsilon"]
    per, bound, actual = eps["per_report"], eps["year_bound"], eps["year_actual"]
    used = (
        "this machine's use of it cannot be read right now"
        if actual is None
        else f"this machine's reports of the last 52 weeks have used {actual:.2f} of it"
    )
    epochs = sorted({f["epoch_weeks"] for f in fields if f["epoch_weeks"]})
    return (
        f"At most once a week, one {kind['name']} report is sent, with {len(fields)}"
        f" field{'s' if len(fields) != 1 else ''} ({_listing(names, 'and')}). Each field is"
        " randomized on this machine before the report is sealed, so a report never says for"
        f" sure what is true: its {widest['name']} field, for example, points at the true value"
        f" with probability {widest['p_star']:.0%} and at any one other value with"
        f" probability {widest['q_star']:.0%}. Each field's answer is drawn once per"
        f" {' or '.join(str(w) for w in epochs)} weeks and repeated until then, so repeating"
        " it reveals nothing new, and neither does when your values change. How much reports"
        " can reveal is measured by epsilon (smaller is more private). One report reveals at"
        f" most epsilon = {per:.2f}: whatever anyone believed about you before, seeing it can"
        " change the odds of any conclusion about you by a factor of at most"
        f" {math.exp(per):.0f}. All {kind['name']} reports of any 52 weeks together reveal at"
        f" most {bound:.2f}, whatever you do (a proven bound); {used}."
    )


#: The technical table's columns: (header, what it means, how to show a field's value).
_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("field", "", lambda f: f["name"]),
    ("kind", "categorical: one value; set: several, padded", lambda f: f["kind"]),
    ("values", "how many values it can take", lambda f: str(f["domain_size"])),
    (
        "pad",
        "set fields: items per report (real ones, then dummies)",
        lambda f: str(f["pad"]) if f["pad"] else "-",
    ),
    (
        "mechanism",
        "the randomizer (ss: names several values, one may be true)",
        lambda f: f["mechanism"],
    ),
    ("R", "weeks an answer is kept (one epoch)", lambda f: str(f["epoch_weeks"])),
    (
        "eps",
        "epsilon of one epoch's answer (all its reports)",
        lambda f: f"{f['epsilon_perm']:.2f}",
    ),
    ("p*", "chance a report points at the true value", lambda f: f"{f['p_star']:.4f}"),
    ("q*", "chance it points at a given other value", lambda f: f"{f['q_star']:.4f}"),
)


def technical_table(fields: list[dict[str, Any]], indent: str = "  ") -> list[str]:
    """The per-field table of ``info``, with a legend: the one place its columns are defined."""
    rows = [tuple(c[0] for c in _COLUMNS)] + [
        tuple(show(f) for _, _, show in _COLUMNS) for f in fields
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    out = [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]
    out.extend(f"{indent}  {header}: {meaning}" for header, meaning, _ in _COLUMNS if meaning)
    return out


def render_info(doc: dict[str, Any]) -> str:
    """The info document as text: plain words first, then the technical details."""
    schema = doc["schema"]
    out = ["What 20i telemetry collects, in plain words:"]
    for kind in doc["kinds"]:
        out.append("")
        out.extend(_wrap(plain_info(kind), "  "))
    out.append("")
    out.append("Never collected:")
    out.extend(f"  - {item}" for item in doc["never_collected"])
    out.append("")
    out.append(
        f"Technical details (schema {schema['name']} v{schema['version']}, id {schema['id']}):"
    )
    for kind in doc["kinds"]:
        out.append("")
        out.extend(_wrap(f"{kind['name']} reports: {kind['doc']} Consent: {kind['consent']}."))
        out.extend(technical_table(kind["fields"]))
        for f in kind["fields"]:
            out.extend(_wrap(f"{f['name']}: {', '.join(f['domain'])}", "  "))
        eps = kind["epsilon"]
        out.append(
            f"  epsilon per report at most {_fmt(eps['per_report'])}; any 52 weeks at most"
            f" {_fmt(eps['year_bound'])} (proven bound); this machine's last 52 weeks"
            f" {_fmt(eps['year_actual'])}"
        )
        example = kind["example"]
        shown = ", ".join(
            f"{name}={'{' + ','.join(v) + '}' if isinstance(v, list) else v}"
            for name, v in example["true_values"].items()
        )
        out.append(f"  example payload for {shown} (made with a throwaway secret):")
        out.append("    " + _compact(example["report"]))
    endpoint = doc["endpoint"]
    out.append("")
    out.append(f"endpoint      {endpoint['url'] or 'not configured'}")
    out.append(f"analyzer key  {endpoint['public_key_fingerprint'] or 'not configured'}")
    out.append(f"policy        {doc['policy']['path']} (or run `{doc['policy']['command']}`)")
    out.append(
        f"all kinds, any 52 weeks: at most {_fmt(doc['year']['total'])} (docs/PRIVACY-OVER-TIME.md)"
    )
    if doc["memo"]["problem"]:
        out.append(f"note: the epoch memo is unreadable: {doc['memo']['problem']}")
    return "\n".join(out)


def _compact(obj: object) -> str:
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


#: What happens to this week's reports at its end, per ``delivery`` (see ``cli.status``).
_FATE = {
    "send": "At the end of the week each report is sealed to the analyzer's key and sent.",
    "spool": (
        "At the end of the week each report is sealed and kept on this machine until an"
        " endpoint is configured; nothing is sent before that."
    ),
    "discard": (
        "Nothing will be sent: no analyzer key is configured, so at the end of the week these"
        " reports are discarded, never stored in plaintext."
    ),
    "off": "Telemetry is off here, so no report is produced or sent.",
}


def plain_preview(doc: dict[str, Any]) -> str:
    """The paragraph that leads ``preview``: what the reports are and what will become of
    them (the same ``delivery`` as ``status``, so the two never disagree)."""
    count = len(doc["reports"])
    lead = (
        f"This is what this week ({doc['period']}) would report if it ended now:"
        f" {count} report{'s' if count != 1 else ''}, randomized exactly as"
        f" {'they' if count != 1 else 'it'} would be sealed. Each field names a few values, of"
        " which at most one is true, so a report does not reveal what you did."
        if count
        else f"Nothing would be reported for this week ({doc['period']}) so far."
    )
    return f"{lead} {_FATE.get(doc.get('delivery', 'off'), '')}".strip()


def render_preview(doc: dict[str, Any]) -> str:
    """The preview document as text: plain words first, then each report with its values."""
    out = _wrap(plain_preview(doc))
    for report in doc["reports"]:
        out.append("")
        out.append(f"{report['kind']} report ({report['bytes']} bytes, exactly as sealed):")
        out.append("  " + report["plaintext"])
        out.append("  the randomized fields point at:")
        width = max((len(name) for name in report["values"]), default=0)
        out.extend(
            f"    {name.ljust(width)}  {_listing(names)}"
            for name, names in report["values"].items()
        )
    if doc["notes"]:
        out.append("")
    out.extend(f"note: {note}" for note in doc["notes"])
    out.append("Nothing was sent and nothing was saved.")
    return "\n".join(out)
