"""The errors the 20i CLI raises on purpose; ``cli.app.main`` turns each into one line.

Never raised into a host command: ``twentyi_telemetry.tracking`` swallows everything. The tree::

    CliError                 base of everything cli raises on purpose; exit code 1
    ├── ConsentWriteError    the consent file could not be written (enable / disable)
    ├── StateError           a telemetry state file could not be read, written or removed
    └── ConfigError          endpoint or analyzer key configuration is invalid
"""

from __future__ import annotations

__all__ = ["CliError", "ConfigError", "ConsentWriteError", "StateError"]


class CliError(Exception):
    """Base of the errors the CLI raises on purpose; the message is one readable line."""

    exit_code = 1


class ConsentWriteError(CliError):
    """The consent file (or its directory) could not be written."""


class StateError(CliError):
    """A telemetry state file could not be read, written or removed."""


class ConfigError(CliError):
    """The endpoint or analyzer key from config or environment is not usable."""
