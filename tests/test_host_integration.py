"""End to end: the example host CLI behaves the same whatever state telemetry is in.

Runs ``examples/host_cli.py`` in subprocesses, as a user would, with the XDG dirs pointed at
temporary folders, and compares output and exit codes across telemetry on, off and broken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from twentyi_telemetry.consent import NO_CONSENT, shipped_policy_version, write_consent
from twentyi_telemetry.tally import Tally, fold_journal

POLICY = shipped_policy_version() or "1"  # the version `enable` records

REPO = Path(__file__).resolve().parent.parent
HOST = REPO / "examples" / "host_cli.py"
COMMANDS = (
    ("up", "--replicas", "2"),
    ("status", "--check"),
    ("down", "--timeout", "0"),
)
# DO_NOT_TRACK and the other switches are covered in-process (tests/test_tracking.py); here
# the scenarios the issue names: on, off, and broken config or state.
SCENARIOS = ("off", "on", "config-unwritable", "state-corrupt", "state-unwritable")
HEAVY = ("numpy", "httpx", "cryptography", "ldp")
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def environment(root: Path, scenario: str) -> dict[str, str]:
    """Build the user dirs for ``scenario`` under ``root`` and return the environment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DO_NOT_TRACK", "TWENTYI_TELEMETRY", "CI"}
        and not key.startswith(("TWENTYI_", "XDG_"))
    }
    dirs = {name: root / name for name in ("config", "state", "cache")}
    env.update(
        PYTHONPATH=str(REPO),
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(dirs["config"]),
        XDG_STATE_HOME=str(dirs["state"]),
        XDG_CACHE_HOME=str(dirs["cache"]),
    )
    consent_file = dirs["config"] / "20i" / "telemetry-consent.json"
    if scenario != "off":
        consent = NO_CONSENT.decided("usage", True, T0, POLICY, None)
        write_consent(consent_file, consent.decided("errors", True, T0, POLICY, None))
        if scenario not in {"state-unwritable", "config-unwritable"}:  # as `enable` leaves it
            (dirs["state"] / "20i" / "telemetry").mkdir(parents=True)
    if scenario == "config-unwritable":
        # As root, chmod cannot stop us: a regular file where the config dir goes can.
        consent_file.unlink()
        blocker = root / "config-blocker"
        blocker.write_text("not a directory")
        env["XDG_CONFIG_HOME"] = str(blocker)
    elif scenario == "state-corrupt":
        state = dirs["state"] / "20i" / "telemetry"
        (state / "tally.json").write_bytes(b"\x00{not a tally")
        (state / "secret").write_bytes(b"too short")
        (state / "epochs.json").write_text("[")
    elif scenario == "state-unwritable":
        dirs["state"].write_text("a file where the state dir should be")
    return env


def run_host(args: tuple[str, ...], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, str(HOST), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Run every command in every scenario once (two at a time: the machine has two cores)."""
    roots = {s: tmp_path_factory.mktemp(s) for s in SCENARIOS}
    envs = {s: environment(roots[s], s) for s in SCENARIOS}
    cwd = tmp_path_factory.mktemp("cwd")
    jobs = [(s, c) for s in SCENARIOS for c in COMMANDS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: run_host(job[1], envs[job[0]], cwd), jobs))
    return {
        "results": dict(zip(jobs, results, strict=True)),
        "roots": roots,
        "envs": envs,
        "cwd": cwd,
    }


class TestHostIntegration:
    @pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
    def test_identical_in_every_scenario(
        self, outcomes: dict[str, object], command: tuple[str, ...]
    ) -> None:
        """Output and exit code are the same with telemetry on, off, opted out and broken."""
        results = outcomes["results"]
        assert isinstance(results, dict)
        reference = results[("off", command)]
        for scenario in SCENARIOS:
            assert results[(scenario, command)] == reference, scenario

    def test_exit_codes_are_the_hosts(self, outcomes: dict[str, object]) -> None:
        """The host's own exit codes come through: 0, 3 and an uncaught exception's 1."""
        results = outcomes["results"]
        assert isinstance(results, dict)
        codes = [results[("on", command)][0] for command in COMMANDS]
        assert codes == [0, 3, 1]
        assert "TimeoutError: service did not stop within 0 s" in results[("on", COMMANDS[2])][2]

    def test_on_counts_commands_and_errors(self, outcomes: dict[str, object]) -> None:
        """With consent, the tally counts each command run and how it ended."""
        roots = outcomes["roots"]
        assert isinstance(roots, dict)
        state = roots["on"] / "state" / "20i" / "telemetry"
        [journal] = state.glob("journal-*.jsonl")
        tally = Tally(journal.name[8:16], 1)
        fold_journal(tally, journal.read_bytes(), T0, T0)
        assert tally.usage is not None and tally.errors is not None
        assert tally.usage.commands == {"up": 1, "status": 1, "down": 1}
        assert tally.usage.modules == ["docker", "git"] and tally.usage.cli_version == "1.4"
        assert tally.errors.categories == {"none": 1, "other": 1, "timeout": 1}

    @pytest.mark.parametrize("scenario", ["off", "config-unwritable"])
    def test_off_writes_nothing(self, outcomes: dict[str, object], scenario: str) -> None:
        """With telemetry off, host commands create no state or cache files."""
        roots = outcomes["roots"]
        assert isinstance(roots, dict)
        assert not (roots[scenario] / "state").exists()
        assert not (roots[scenario] / "cache").exists()

    def test_working_directory_stays_empty(self, outcomes: dict[str, object]) -> None:
        """No scenario writes anything into the working directory."""
        cwd = outcomes["cwd"]
        assert isinstance(cwd, Path) and list(cwd.iterdir()) == []

    @pytest.mark.parametrize("scenario", ["off", "on"])
    def test_no_heavy_imports(self, outcomes: dict[str, object], scenario: str) -> None:
        """A host command imports neither numpy, httpx, cryptography nor ldp (no roll-over)."""
        envs = outcomes["envs"]
        assert isinstance(envs, dict)
        probe = (
            "import json, runpy, sys\n"
            f"sys.argv = [{str(HOST)!r}, 'status']\n"
            "try:\n"
            f"    runpy.run_path({str(HOST)!r}, run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            f"heavy = {HEAVY!r}\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env=envs[scenario],
            cwd=outcomes["cwd"],
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.splitlines()[-1]) == []


# --- removable, and never shadowed ----------------------------------------------------------

#: Runs the host with our packages made impossible to import, as after `pip uninstall`.
UNINSTALLED = """
import importlib.abc, runpy, sys

class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"twentyi_telemetry", "cli", "ldp", "server_agg"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Uninstalled())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class TestRemovable:
    """The documented integration works unchanged without the package, and our import name
    cannot be shadowed by a host's own modules."""

    def test_host_runs_with_the_package_uninstalled(
        self, outcomes: dict[str, object], tmp_path: Path
    ) -> None:
        """Uninstalled: same output and exit codes as with telemetry off (it was exit 1 with
        ModuleNotFoundError before)."""
        results, envs = outcomes["results"], outcomes["envs"]
        assert isinstance(results, dict) and isinstance(envs, dict)
        for command in COMMANDS:
            result = subprocess.run(
                [sys.executable, "-c", UNINSTALLED, str(HOST), *command],
                capture_output=True,
                text=True,
                env=envs["on"],
                cwd=tmp_path,
                timeout=60,
                check=False,
            )
            assert (result.returncode, result.stdout) == results[("off", command)][:2]

    def test_a_host_owned_cli_module_changes_nothing(self, tmp_path: Path) -> None:
        """A host with its own ``cli.py`` next to it still counts (it got ImportError before),
        never has its ``cli`` imported by telemetry, and its worker still rolls weeks over."""
        host_dir = tmp_path / "host"
        host_dir.mkdir()
        (host_dir / "host_cli.py").write_text(HOST.read_text())
        marker = tmp_path / "host-cli-imported"
        (host_dir / "cli.py").write_text(
            f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        )
        env = environment(tmp_path / "root", "on")
        env["TWENTYI_TELEMETRY_PUBLIC_KEY"] = "20i-pk1:" + "A" * 43
        state = tmp_path / "root" / "state" / "20i" / "telemetry"
        last_week = Tally("2026-W01", 1)
        (state / "tally.json").write_bytes(last_week.to_json())
        result = subprocess.run(
            [sys.executable, str(host_dir / "host_cli.py"), "up"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert len(list(state.glob("journal-*.jsonl"))) == 1  # counted
        assert not marker.exists()  # the host's cli module was never imported by us
        # The worker (started by that command, isolated) ran our cli.sender: it claimed and
        # cleared last week's tally even though the host's folder has a cli.py.
        deadline = time.monotonic() + 30
        while (state / "tally.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (state / "tally.json").exists()
        assert not marker.exists()


class TestFrozenHost:
    def test_frozen_host_counts_and_never_reruns_itself(self, tmp_path: Path) -> None:
        """A simulated frozen app (``sys.frozen`` set, ``sys.executable`` its own binary, here
        a script that notes being run): the first command of a week is counted and starts no
        process at all (before, it re-ran the host binary with ``-P -m cli.sender``)."""
        binary = tmp_path / "frozen-host"
        ran = tmp_path / "host-binary-ran"
        binary.write_text(f"#!/bin/sh\ntouch {ran}\n")
        binary.chmod(0o755)
        env = environment(tmp_path / "root", "on")
        code = (
            "import sys\n"
            f"sys.frozen = True\nsys.executable = {str(binary)!r}\n"
            "from twentyi_telemetry import record\n"
            "record('up')\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        state = tmp_path / "root" / "state" / "20i" / "telemetry"
        assert len(list(state.glob("journal-*.jsonl"))) == 1  # counted, first of its week
        time.sleep(0.5)  # a worker would have been started by now
        assert not ran.exists()
        assert not (tmp_path / "root" / "cache" / "20i" / "telemetry" / "sender.lock").exists()
