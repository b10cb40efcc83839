"""`20i-agg --help` shows flags as users type them."""

from __future__ import annotations

import typer.main
from typer.testing import CliRunner

from server_agg.app import app

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


class TestHelpFlags:
    def test_every_command_renders_flags_as_typed(self) -> None:
        """No `<bool>` or BOOLEAN placeholder after a flag, in any command's help."""
        assert {"aggregate", "prune", "serve", "privacy"} <= set(COMMANDS)
        for command in COMMANDS:
            result = CliRunner().invoke(app, [command, "--help"])
            assert result.exit_code == 0, (command, result.output)
            assert "<bool>" not in result.stdout and "BOOLEAN" not in result.stdout, command
        prune = CliRunner().invoke(app, ["prune", "--help"]).stdout
        assert any(line.strip().startswith("--dry-run ") for line in prune.splitlines())
