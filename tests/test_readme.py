"""The README works word for word: every command it shows is run here or by CI.

`make test` is what CI runs; `make demo` is `20i-agg demo`, which tests/test_demo.py runs; every
other command in the README runs below, verbatim but for the walkthrough's port, which the
test picks itself (servers in tests never use a fixed port).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    """The bodies of the README's fenced blocks in ``language``."""
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def console_commands() -> list[str]:
    """Every ``$ command`` line of the README's console blocks."""
    return [
        line[2:].strip()
        for body in blocks("console")
        for line in body.splitlines()
        if line.startswith("$ ")
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """The user's environment with XDG dirs in a temp dir and telemetry overrides removed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TWENTYI_") and k not in {"DO_NOT_TRACK", "CI"}
    }
    for name in ("CONFIG", "STATE", "CACHE", "DATA"):
        env[f"XDG_{name}_HOME"] = str(tmp_path / name.lower())
    return env


class TestReadme:
    """The README's commands run as written."""

    def test_two_commands_come_first(self) -> None:
        """The first console block is exactly `make demo` then `make test`."""
        assert console_commands()[:2] == ["make demo", "make test"]

    def test_make_targets_exist(self) -> None:
        """Both make targets are defined, and `make demo` runs `20i-agg demo`."""
        makefile = (ROOT / "Makefile").read_text()
        assert re.search(r"^demo:", makefile, flags=re.M)
        assert re.search(r"^test:", makefile, flags=re.M)
        assert "20i-agg demo" in makefile
        assert "make test" in (ROOT / ".ci" / "run").read_text()

    def test_host_cli_commands(self, isolated_env: dict[str, str]) -> None:
        """The integration section's commands succeed from the repository root."""
        others = [c for c in console_commands() if not c.startswith("make ")]
        assert others, "the README shows host CLI commands"
        for command in others:
            out = subprocess.run(  # noqa: S602 - the README's own command line, as a user types it
                command,
                shell=True,
                cwd=ROOT,
                env=isolated_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, (command, out.stderr)
            assert "Traceback" not in out.stderr

    @pytest.mark.slow
    def test_self_hosting_walkthrough(self, isolated_env: dict[str, str]) -> None:
        """The self-hosting block runs end to end and the analyzer prints every usage field."""
        (script,) = blocks("bash")
        assert "PORT=8020" in script
        script = script.replace("PORT=8020", f"PORT={free_port()}")
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=isolated_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=240)
        finally:
            # The walkthrough starts a collector in the background: never leave it running.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 0, stderr
        for field in ("cli_version", "platform", "os", "arch", "command", "modules"):
            assert field in stdout


class TestReadmeIntegration:
    """The README's integration snippet works as written, installed or not."""

    SETUP = (
        "import sys, typer\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        "def up() -> None:\n"
        "    print('up')\n"
        "@app.command()\n"
        "def down() -> None:\n"
        "    print('down')\n"
        "enabled_modules = ['docker']\n"
        "__version__ = '1.4.2'\n"
    )
    BLOCK = (
        "import importlib.abc\n"
        "class Gone(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'twentyi_telemetry':\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, Gone())\n"
    )

    @pytest.mark.parametrize("installed", [True, False])
    def test_snippet_runs(self, isolated_env: dict[str, str], installed: bool) -> None:
        """The snippet instruments the app when the package is there, and is a no-op when it
        is not; the app runs the same either way."""
        [snippet] = blocks("python")
        code = self.SETUP + ("" if installed else self.BLOCK) + snippet
        code += "cb = app.registered_commands[0].callback\n"
        code += "print(getattr(cb, '__twentyi_tracked__', False))\napp(['up'])\n"
        result = subprocess.run(
            [sys.executable, "-c", code], env=isolated_env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [str(installed), "up"]
