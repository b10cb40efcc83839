"""The user's consent, and the precedence rules that decide whether telemetry is on.

Consent is a small JSON file in the user config dir, written only by ``20i telemetry enable``
and ``disable`` (atomically, mode 0600), holding usage and errors consent separately with the
date of each decision and the privacy policy version it was given to. Environment variables
can only turn telemetry off, never on. Reading it is all a host command pays when telemetry is
off, so this module never imports numpy, httpx or cryptography, and never writes anything while
deciding.

Consent covers one policy version (``policy_version`` in
``twentyi_telemetry/data/defaults.json``, the version at the top of PRIVACY.md). A consent file
that enables something under another version turns everything off (source ``policy-changed``)
until ``20i telemetry enable`` accepts the new
one, as PRIVACY.md promises. The schema id recorded next to it does not need re-consent on its
own: a schema can only change with a release, the client caps its epsilons whatever it says,
and any change that matters to users (what is collected, how strongly it is protected) also
bumps the policy version. The policy version is the contract with the user.
"""

# No `from __future__ import annotations` here, unlike elsewhere: typing.NamedTuple compiles
# every string annotation into a ForwardRef, which cost a host command with telemetry on
# several milliseconds of import time. Self-references are quoted instead.

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from twentyi_telemetry.environment import (
    ENV_CI,
    ENV_DO_NOT_TRACK,
    ENV_KILL_SWITCH,
    SOURCE_CI,
    SOURCE_DO_NOT_TRACK,
    SOURCE_KILL_SWITCH,
    env_override,
    kill_switch_asks_for_on,
)
from twentyi_telemetry.errors import ConsentWriteError
from twentyi_telemetry.state import read_small, write_atomic

# The records below are NamedTuples, not dataclasses, because a host command with telemetry
# on imports this module: a dataclass costs about a millisecond to build, a NamedTuple a tenth.

__all__ = [
    "ENV_CI",
    "ENV_DO_NOT_TRACK",
    "ENV_KILL_SWITCH",
    "FORMAT",
    "KINDS",
    "NO_CONSENT",
    "SOURCES",
    "Consent",
    "ConsentFile",
    "Decision",
    "Kind",
    "KindConsent",
    "decide",
    "env_override",
    "format_time",
    "parse_time",
    "read_consent",
    "shipped_policy_version",
    "write_consent",
]

FORMAT = 1

Kind = Literal["usage", "errors"]
KINDS: tuple[Kind, ...] = ("usage", "errors")

# What `status` names as the deciding source (stable strings, documented in docs/CLI.md),
# in order of precedence.
SOURCE_UNREADABLE = "unreadable-config"
SOURCE_NOT_OPTED_IN = "not-opted-in"
SOURCE_POLICY_CHANGED = "policy-changed"
SOURCE_CONSENT = "consent"
SOURCES = (
    SOURCE_DO_NOT_TRACK,
    SOURCE_KILL_SWITCH,
    SOURCE_CI,
    SOURCE_UNREADABLE,
    SOURCE_NOT_OPTED_IN,
    SOURCE_POLICY_CHANGED,
    SOURCE_CONSENT,
)

#: The distribution defaults (endpoint, analyzer key, policy version), package data.
_DEFAULTS_FILE = Path(__file__).parent / "data" / "defaults.json"


def format_time(moment: datetime) -> str:
    """UTC, second precision, ``Z`` suffix: the one timestamp form in our files."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object, where: str) -> datetime:
    """Parse one of our timestamps (aware ISO 8601) to UTC; ``ValueError`` names ``where``."""
    if not isinstance(text, str):
        raise ValueError(f"{where} must be an ISO timestamp string, not {type(text).__name__}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{where} ({text!r}) is not an ISO timestamp") from None
    if moment.tzinfo is None:
        raise ValueError(f"{where} ({text!r}) has no time zone")
    return moment.astimezone(UTC)


class KindConsent(NamedTuple):
    """Consent for one report kind: on or off, and when the user last decided."""

    enabled: bool = False
    as_of: datetime | None = None  # None: never decided

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, shared by the consent file and ``status --json``."""
        return {
            "enabled": self.enabled,
            "as_of": None if self.as_of is None else format_time(self.as_of),
        }

    @classmethod
    def from_dict(cls, raw: object, where: str) -> "KindConsent":
        """Strict: anything but ``{"enabled": bool, "as_of": str | null}`` is a ValueError."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be an object, not {type(raw).__name__}")
        enabled = raw.get("enabled")
        if not isinstance(enabled, bool):
            raise ValueError(f"{where}.enabled must be true or false, not {enabled!r}")
        as_of = raw.get("as_of")
        moment = None if as_of is None else parse_time(as_of, f"{where}.as_of")
        if enabled and moment is None:
            raise ValueError(f"{where} is enabled but has no as_of date")
        return cls(enabled=enabled, as_of=moment)


class Consent(NamedTuple):
    """What the user consented to, and to which policy and schema version."""

    usage: KindConsent
    errors: KindConsent
    policy_version: str
    schema_id: str | None

    def kind(self, kind: Kind) -> "KindConsent":
        """Consent for ``"usage"`` or ``"errors"``."""
        return self.usage if kind == "usage" else self.errors

    def decided(
        self,
        kind: Kind,
        enabled: bool,
        now: datetime,
        policy_version: str,
        schema_id: str | None,
    ) -> "Consent":
        """A copy with ``kind`` switched and dated ``now`` (unchanged kinds keep their date).

        Accepting a new policy version re-dates every enabled kind to ``now``: what was counted
        under the old policy is never reported under the new one.
        """
        base = self
        if self.policy_version != policy_version:
            usage, errors = (
                KindConsent(True, now) if k.enabled else k for k in (self.usage, self.errors)
            )
            base = Consent(
                usage, errors, policy_version=self.policy_version, schema_id=self.schema_id
            )
        current = base.kind(kind)
        unchanged = current.enabled == enabled and current.as_of is not None
        updated = current if unchanged else KindConsent(enabled, now)
        usage, errors = (updated, base.errors) if kind == "usage" else (base.usage, updated)
        return Consent(usage, errors, policy_version=policy_version, schema_id=schema_id)

    def to_json(self) -> bytes:
        """The file form: indented, sorted keys, trailing newline, so users can read it."""
        document = {
            "format": FORMAT,
            "usage": self.usage.to_dict(),
            "errors": self.errors.to_dict(),
            "policy_version": self.policy_version,
            "schema_id": self.schema_id,
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Consent":
        """Parse a consent file strictly; ``ValueError`` says what is wrong with it."""
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"top level must be an object, not {type(raw).__name__}")
        version = raw.get("format")
        if version != FORMAT:
            raise ValueError(f"format is {version!r}, this 20i reads format {FORMAT}")
        policy = raw.get("policy_version")
        if not isinstance(policy, str):
            raise ValueError(f"policy_version must be a string, not {policy!r}")
        schema_id = raw.get("schema_id")
        if schema_id is not None and not isinstance(schema_id, str):
            raise ValueError(f"schema_id must be a string or null, not {schema_id!r}")
        return cls(
            usage=KindConsent.from_dict(raw.get("usage"), "usage"),
            errors=KindConsent.from_dict(raw.get("errors"), "errors"),
            policy_version=policy,
            schema_id=schema_id,
        )


NO_CONSENT = Consent(KindConsent(), KindConsent(), policy_version="", schema_id=None)


class ConsentFile(NamedTuple):
    """The consent file as read: its consent, or why there is none."""

    path: Path
    consent: Consent | None
    problem: str | None = None  # set when the file exists but cannot be used

    @property
    def state(self) -> Literal["ok", "missing", "unreadable"]:
        """``ok``, ``missing`` (never opted in) or ``unreadable`` (garbled, wrong type, ...)."""
        if self.consent is not None:
            return "ok"
        return "missing" if self.problem is None else "unreadable"


def read_consent(path: Path) -> ConsentFile:
    """Read the consent file; never raises: a missing or bad file simply means no consent."""
    try:
        data = read_small(path)
    except FileNotFoundError:
        return ConsentFile(path, None)
    except NotADirectoryError:
        # A parent of the path is a regular file: nobody could ever have written consent here.
        return ConsentFile(path, None, f"{path.parent} is not a directory")
    except OSError as exc:
        return ConsentFile(path, None, f"cannot read it: {exc.strerror or exc}")
    try:
        return ConsentFile(path, Consent.from_json(data))
    except ValueError as exc:
        return ConsentFile(path, None, f"garbled: {exc}")


def write_consent(path: Path, consent: Consent) -> None:
    """Write the consent file atomically (temp file + rename), mode 0600."""
    try:
        write_atomic(path, consent.to_json())
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConsentWriteError(f"cannot write the consent file {path}: {reason}") from exc


def shipped_policy_version() -> str | None:
    """The privacy policy version this 20i ships, or ``None`` if its package data is unusable.

    Read as a plain small file rather than through ``cli.endpoint.load_defaults``: importing
    ``importlib.resources`` would cost a host command with telemetry on more than the read
    itself. Only a 20i imported from a zip falls back to it. ``None`` makes :func:`decide` keep
    telemetry off: consent cannot be matched to a policy this 20i cannot name.
    """
    try:
        try:
            data = read_small(_DEFAULTS_FILE)
        except (FileNotFoundError, NotADirectoryError):
            from importlib import resources  # not unpacked on disk (a zip import)

            data = resources.files("twentyi_telemetry").joinpath("data/defaults.json").read_bytes()
        version = json.loads(data).get("policy_version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) and version else None


class Decision(NamedTuple):
    """Whether usage and error reports are on, what decided it, and why (one sentence)."""

    usage: bool
    errors: bool
    source: str
    reason: str
    consent_file: ConsentFile | None  # None when the environment decided without reading it
    notes: tuple[str, ...] = ()

    @property
    def any_on(self) -> bool:
        """True if at least one report kind is on."""
        return self.usage or self.errors


def decide(env: Mapping[str, str], consent_path: Path, *, inspect: bool = False) -> Decision:
    """Apply the precedence rules; reads the consent file only if the environment did not
    already decide (or if ``inspect`` asks for it, as ``status`` does)."""
    notes: list[str] = []
    override = env_override(env)
    consent_file = read_consent(consent_path) if override is None or inspect else None
    opted_in = (
        consent_file is not None
        and consent_file.consent is not None
        and (consent_file.consent.usage.enabled or consent_file.consent.errors.enabled)
    )
    if kill_switch_asks_for_on(env) and not opted_in:
        notes.append(
            f"{ENV_KILL_SWITCH}={env.get(ENV_KILL_SWITCH)} cannot turn telemetry on;"
            " only `20i telemetry enable` can"
        )
    if override is not None:
        source, reason = override
        return Decision(False, False, source, reason, consent_file, tuple(notes))
    assert consent_file is not None  # read above whenever there is no override
    if consent_file.problem is not None:
        reason = (
            f"the consent file is unusable ({consent_file.problem}), so telemetry is off;"
            " `20i telemetry enable` or `disable` rewrites it"
        )
        return Decision(False, False, SOURCE_UNREADABLE, reason, consent_file, tuple(notes))
    consent = consent_file.consent
    if consent is None or (consent.usage.as_of is None and consent.errors.as_of is None):
        reason = "telemetry is off until you run `20i telemetry enable`"
        return Decision(False, False, SOURCE_NOT_OPTED_IN, reason, consent_file, tuple(notes))
    if consent.usage.enabled or consent.errors.enabled:
        shipped = shipped_policy_version()
        if consent.policy_version != shipped:
            reason = _policy_changed_reason(consent, shipped)
            return Decision(False, False, SOURCE_POLICY_CHANGED, reason, consent_file, tuple(notes))
    parts = []
    for kind in KINDS:
        entry = consent.kind(kind)
        if entry.as_of is not None:
            verb = "enabled" if entry.enabled else "disabled"
            parts.append(f"{kind} {verb} on {format_time(entry.as_of)}")
    reason = "your choice in the consent file: " + ", ".join(parts)
    return Decision(
        consent.usage.enabled,
        consent.errors.enabled,
        SOURCE_CONSENT,
        reason,
        consent_file,
        tuple(notes),
    )


def _policy_changed_reason(consent: Consent, shipped: str | None) -> str:
    if shipped is None:
        return (
            f"this 20i cannot read its own privacy policy version ({_DEFAULTS_FILE}), so"
            " telemetry is off; reinstalling 20i fixes it"
        )
    # One `enable` accepts the new policy for the whole file (both kinds keep their choice);
    # name the command that re-accepts without switching on a kind the user left off.
    command = (
        "`20i telemetry enable`" if consent.usage.enabled else "`20i telemetry enable --errors`"
    )
    agreed = consent.policy_version or "none"
    return (
        f"you agreed to privacy policy version {agreed}, and this 20i ships version {shipped}:"
        f" telemetry is off until you run {command} to accept the new policy"
        " (`20i telemetry policy` shows it)"
    )
