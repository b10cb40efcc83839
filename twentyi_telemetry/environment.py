"""The environment switches that turn telemetry off: DO_NOT_TRACK, TWENTYI_TELEMETRY and CI.

An environment variable can only ever disable telemetry, never enable it. Tiny on purpose:
every host command evaluates these before anything else, so this module imports nothing and
touches no file.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ENV_CI",
    "ENV_DO_NOT_TRACK",
    "ENV_KILL_SWITCH",
    "SOURCE_CI",
    "SOURCE_DO_NOT_TRACK",
    "SOURCE_KILL_SWITCH",
    "env_override",
    "kill_switch_asks_for_on",
]

ENV_DO_NOT_TRACK = "DO_NOT_TRACK"
ENV_KILL_SWITCH = "TWENTYI_TELEMETRY"
ENV_CI = "CI"
SOURCE_DO_NOT_TRACK = ENV_DO_NOT_TRACK
SOURCE_KILL_SWITCH = ENV_KILL_SWITCH
SOURCE_CI = ENV_CI

#: Values (after strip + lower-case) that leave DO_NOT_TRACK and CI *unset* in effect.
_UNSET_VALUES = frozenset({"", "0", "false", "no", "off"})
#: TWENTYI_TELEMETRY values that do nothing: the environment may never turn telemetry on.
_KILL_SWITCH_NEUTRAL = frozenset({"", "1", "true", "yes", "on"})
_ON_WORDS = frozenset({"1", "true", "yes", "on"})


def _is_set(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _UNSET_VALUES


def env_override(env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(source, reason)`` if the environment turns telemetry off, else ``None``.

    Precedence: DO_NOT_TRACK (anything but empty/0/false/no/off), then TWENTYI_TELEMETRY (any
    value but empty/1/true/yes/on disables: an unclear value errs towards off), then CI (same
    rule as DO_NOT_TRACK). Costs no file access.
    """
    dnt = env.get(ENV_DO_NOT_TRACK)
    if _is_set(dnt):
        return (
            SOURCE_DO_NOT_TRACK,
            f"{ENV_DO_NOT_TRACK}={dnt} is set, which turns all telemetry off whatever else says",
        )
    kill = env.get(ENV_KILL_SWITCH)
    if kill is not None and kill.strip().lower() not in _KILL_SWITCH_NEUTRAL:
        return (SOURCE_KILL_SWITCH, f"{ENV_KILL_SWITCH}={kill} is set, which turns telemetry off")
    if _is_set(env.get(ENV_CI)):
        return (SOURCE_CI, f"{ENV_CI} is set: nothing is recorded or sent in CI")
    return None


def kill_switch_asks_for_on(env: Mapping[str, str]) -> bool:
    """True if TWENTYI_TELEMETRY asks for "on", which it cannot do (``status`` says so)."""
    return env.get(ENV_KILL_SWITCH, "").strip().lower() in _ON_WORDS
