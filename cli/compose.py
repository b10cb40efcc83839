"""Turn a period's tally into the reports it produces: the one recipe ``preview`` and the
roll-over (issue 6) share, so what ``20i telemetry preview`` shows is what would be sealed.

True values exist only inside :func:`true_values` and :func:`compose` and go straight into the
randomizers; :func:`compose` hands them back next to each report only so that the roll-over can
freeze each epoch's response in the epoch memo (randomized responses only). Nothing here
writes them anywhere, and nothing here sends anything. Imports ``ldp`` (and so its
mechanisms): never call this on a host command's fast path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from twentyi_telemetry.tally import Tally

if TYPE_CHECKING:
    from ldp.epochs import EpochMemo
    from ldp.report import Report
    from ldp.sampling import RandomSource
    from ldp.schema import Schema

__all__ = ["Composed", "compose", "compose_reports", "sample_count", "true_values"]


def sample_count(counts: dict[str, int], rand: RandomSource) -> str:
    """One key drawn with probability proportional to its count (uniform over invocations).

    DESIGN section 3: the ``command`` field is one command sampled from the period's
    invocations; the same holds for ``error_category``. Keys are visited in sorted order so
    the draw depends only on the counts and the random source.
    """
    total = sum(counts.values())
    if total <= 0:
        raise ValueError(f"cannot sample from empty counts {counts!r}")
    pick = rand.randbelow(total)
    for key in sorted(counts):
        if pick < counts[key]:
            return key
        pick -= counts[key]
    raise AssertionError("unreachable: pick < total")  # pragma: no cover


def true_values(
    kind: str, tally: Tally, rand: RandomSource, os: str, arch: str
) -> dict[str, object] | None:
    """The true field values of ``kind`` for this tally, or ``None`` if it recorded nothing.

    ``os`` and ``arch`` are this machine's (``ldp.values.os_value()`` / ``arch_value()``);
    ``platform`` (schema v2) is the two joined as ``os-arch``. A schema takes the fields it has.
    """
    if kind == "usage":
        usage = tally.usage
        if usage is None or not usage.commands:
            return None
        return {
            "cli_version": usage.cli_version or "other",
            "os": os,
            "arch": arch,
            "platform": f"{os}-{arch}",
            "command": sample_count(usage.commands, rand),
            "modules": frozenset(usage.modules),
        }
    if kind == "errors":
        errors = tally.errors
        if errors is None or not errors.categories:
            return None
        return {"error_category": sample_count(errors.categories, rand)}
    raise ValueError(f"report kind ({kind!r}) must be 'usage' or 'errors'")


class Composed(NamedTuple):
    """One report of a tally, with the true values it randomized (never to be stored)."""

    kind: str
    values: dict[str, object]
    report: Report


def compose(
    tally: Tally,
    schema: Schema,
    secret: bytes,
    kinds: tuple[str, ...] = ("usage", "errors"),
    rand: RandomSource | None = None,
    memo: EpochMemo | None = None,
) -> list[Composed]:
    """The randomized reports this tally produces for the report kinds in ``kinds``, in order.

    ``kinds`` lists the kinds whose consent is on; a kind that recorded nothing this period
    produces no report. ``rand`` defaults to the OS CSPRNG; it draws the sampled command and
    error category as well as every instantaneous response.
    """
    from ldp.report import build_report
    from ldp.sampling import SYSTEM
    from ldp.values import arch_value, os_value

    source = SYSTEM if rand is None else rand
    machine = {"os": os_value(), "arch": arch_value()}
    composed = []
    for kind in kinds:
        values = true_values(kind, tally, source, **machine)
        if values is not None:
            wanted = schema.kind(kind).field_names
            values = {name: value for name, value in values.items() if name in wanted}
            report = build_report(schema, kind, tally.period, values, secret, source, memo)
            composed.append(Composed(kind, values, report))
    return composed


def compose_reports(
    tally: Tally,
    schema: Schema,
    secret: bytes,
    kinds: tuple[str, ...] = ("usage", "errors"),
    rand: RandomSource | None = None,
    memo: EpochMemo | None = None,
) -> list[Report]:
    """Only the reports of :func:`compose` (what ``preview`` shows; it reads the memo and
    never writes it)."""
    return [item.report for item in compose(tally, schema, secret, kinds, rand, memo)]
