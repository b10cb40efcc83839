"""Tests for the documents that explain the privacy budget: the researcher notebook and PRIVACY.md.

The notebook is executed end to end with nbclient; its own ``assert`` cells check every claim its
text makes, so a run without errors means the figures still show what the text says. The
committed notebook must carry no outputs. PRIVACY.md quotes numbers, paths, commands and a policy
version for users: each is recomputed here from the library and the CLI, so the policy cannot
silently drift from the code.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import nbformat
import platformdirs.windows
import pytest
import typer.main
from nbclient import NotebookClient
from platformdirs.macos import MacOS
from platformdirs.unix import Unix
from platformdirs.windows import Windows

from cli import sentlog, spool
from cli.endpoint import load_defaults
from cli.telemetry import app as telemetry_app
from ldp.amplification import central_epsilon
from ldp.budget import per_report_epsilon, year_budget
from ldp.epochs import epochs_touched
from ldp.schema import shipped_schema
from twentyi_telemetry.state import APP_NAME, SUBDIR

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "epsilon_budget.ipynb"
PRIVACY = REPO / "PRIVACY.md"
#: One figure per section that has one (the attack shares section 4 with the audit): budget,
#: utility, channel, audit, attack, shuffling, mechanisms, privacy over time.
FIGURES = 8


def _section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a Markdown document."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _table_rows(section: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``section``, cells stripped."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _execute(nb: Any, cwd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``nb`` in a fresh python3 kernel started in ``cwd``, with its files under tmp_path."""
    # The kernel inherits this environment: no GUI backend, and Jupyter's and IPython's
    # runtime files (connection file, history) go to tmp_path rather than the user's home.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        startup_timeout=60,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()


def _outputs(nb: Any) -> list[dict[str, Any]]:
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


class TestNotebookFile:
    def test_is_valid(self) -> None:
        """The committed notebook is valid nbformat 4 and names the python3 kernel."""
        nb = nbformat.read(NOTEBOOK, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"

    def test_has_no_outputs(self) -> None:
        """Outputs are stripped in git: no outputs, no execution counts, no run metadata."""
        nb = nbformat.read(NOTEBOOK, as_version=4)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert code
        for cell in code:
            assert cell.outputs == [], cell.source[:60]
            assert cell.execution_count is None, cell.source[:60]
            assert "execution" not in cell.metadata, cell.source[:60]

    def test_text_precedes_every_figure(self) -> None:
        """Every code cell that draws a figure follows a Markdown cell explaining it."""
        nb = nbformat.read(NOTEBOOK, as_version=4)
        drawing = [i for i, cell in enumerate(nb.cells) if "show(fig)" in cell.source]
        assert len(drawing) == FIGURES
        for i in drawing:
            assert nb.cells[i - 1].cell_type == "markdown"


@pytest.mark.slow
class TestNotebookRuns:
    def test_runs_clean_from_notebooks_dir(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Run in notebooks/: every cell (and so every asserted claim) passes, with its figures."""
        nb = nbformat.read(NOTEBOOK, as_version=4)
        _execute(nb, NOTEBOOK.parent, tmp_path, monkeypatch)
        outputs = _outputs(nb)
        assert not [o for o in outputs if o.output_type == "error"]
        # Nothing on stderr: no warning (deprecations included) from the library or the plots.
        stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        assert stderr == []
        pngs = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(pngs) == FIGURES

    def test_finds_the_repo_from_the_root(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Started in the repository root, the setup cell finds the repo and imports ldp."""
        nb = nbformat.read(NOTEBOOK, as_version=4)
        first = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
        nb.cells = nb.cells[: first + 1]
        _execute(nb, REPO, tmp_path, monkeypatch)
        text = "".join(o.text for o in _outputs(nb) if o.output_type == "stream")
        assert f"id {shipped_schema().id}; repository {REPO}" in text


def _flat(text: str) -> str:
    """``text`` with every run of whitespace made one space, so line wrapping does not matter."""
    return " ".join(text.split())


class TestPrivacyPolicy:
    text = PRIVACY.read_text(encoding="utf-8")

    def test_version_is_the_clis(self) -> None:
        """The policy version at the top is the one `enable` records in the consent file."""
        match = re.search(r"^- Policy version: (\S+)$", self.text, re.MULTILINE)
        assert match is not None and self.text.index(match.group(0)) < 200
        assert match.group(1) == str(load_defaults()["policy_version"])

    def test_schema_id(self) -> None:
        """The schema id quoted at the top is the shipped schema's."""
        schema = shipped_schema()
        line = f"- Schema: 20i v{schema.version} (`{schema.id}`)"
        assert line in self.text.splitlines()[3]

    def test_collected_fields_and_values(self) -> None:
        """The collected-fields table names every usage field and lists its values exactly."""
        usage = shipped_schema().kind("usage")
        rows = _table_rows(_section(self.text, "What is collected, and why"))
        assert [row[0].strip("`") for row in rows] == list(usage.field_names)
        for row, spec in zip(rows, usage.fields, strict=True):
            assert row[2] == ", ".join(spec.domain), spec.name
        errors = shipped_schema().kind("errors").field("error_category")
        assert f"({', '.join(errors.domain)})" in _flat(self.text)

    def test_epsilon_table(self) -> None:
        """Each field's epsilon per epoch, odds factor, epoch and yearly bound are the library's."""
        expected = []
        for spec in shipped_schema().fields:
            r = spec.randomizer()
            assert spec.epoch_weeks is not None
            expected.append(
                [
                    f"`{spec.name}`",
                    str(spec.epsilon_perm),
                    f"{math.exp(r.epsilon_perm):.2f}",
                    str(spec.epoch_weeks),
                    str(epochs_touched(spec.epoch_weeks)),
                    f"{spec.year_bound():.4g}",
                ]
            )
        rows = _table_rows(_section(self.text, "What the epsilons mean"))
        assert rows == expected

    def test_budget_sentences(self) -> None:
        """Per-report and yearly epsilons quoted are those of ldp.budget."""
        schema = shipped_schema()
        usage, errors = schema.kind("usage"), schema.kind("errors")
        year = year_budget(schema)
        section = _flat(_section(self.text, "What the epsilons mean"))
        assert f"costs epsilon {per_report_epsilon(usage):.4g} at most" in section
        assert f"one errors report costs {per_report_epsilon(errors):.4g} at most" in section
        assert (
            f"reveal at most epsilon {year.kind_bound('usage'):.4g}, of errors reports"
            f" {year.kind_bound('errors'):.4g}, and of both together {year.total:.4g}" in section
        )
        assert f"epsilon {year.total:.4g} at most for both kinds" in _flat(self.text)

    def test_worked_example(self) -> None:
        """Every percentage in the platform example is recomputed from its randomizer."""
        spec = shipped_schema().kind("usage").field("platform")
        oracle: Any = spec.randomizer()
        d, k = spec.d, oracle.k
        e1 = math.exp(oracle.epsilon_1)
        assert float(oracle.irr_keep) == 1.0  # frozen: every report repeats the epoch's answer
        expected = {
            f"{100 * oracle.p_star:.1f}%",  # the set contains your platform
            f"{100 * oracle.q_star:.1f}%",  # ... or a given other platform
            f"{100 * e1 / (1 + e1):.1f}%",  # posterior from an even prior, one epoch
            "95%",  # the confidence level of the accuracy sentence
        }
        section = _flat(_section(self.text, "How the noise works: an example"))
        assert set(re.findall(r"\d+(?:\.\d+)?%", section)) == expected
        assert f"There are {d} possible values" in section
        assert f"a set of {k} of the {d} values" in section
        assert f"epoch* of {spec.epoch_weeks} weeks" in section
        # 95% half-width at n = 10,000 for a frequency near 1/2, in whole percentage points.
        width = 1.96 * math.sqrt(oracle.variance(10_000, 0.5))
        assert f"to within about {round(100 * width)} percentage points from 10,000" in section

    def test_shuffling_numbers(self) -> None:
        """The central epsilon quoted for 100,000 shuffled usage reports is the library's."""
        eps0 = per_report_epsilon(shipped_schema().kind("usage"))
        central = central_epsilon(round(eps0, 6), 100_000, 1e-6)
        assert (
            f"as private as epsilon {central.eps:.2f} instead of {eps0:.1f}"
            " (with a one-in-a-million chance" in _flat(self.text)
        )

    def test_local_limits(self) -> None:
        """Spool and sent-log limits quoted are the CLI's constants."""
        flat = _flat(self.text)
        assert f"at most {spool.MAX_REPORTS} of them, and are dropped unsent" in flat
        assert f"dropped unsent after {spool.MAX_AGE.days // 7} weeks" in flat
        assert spool.MAX_AGE.days % 7 == 0  # quoted in whole weeks
        assert f"up to {sentlog.MAX_LOG_BYTES // 1024} KiB" in flat

    def test_commands_exist(self) -> None:
        """Every `20i telemetry ...` command and option the policy names exists in the CLI."""
        group: Any = typer.main.get_command(telemetry_app)
        quoted = re.findall(r"`20i telemetry ([a-z]+)((?: --[a-z]+)*)`", self.text)
        assert {name for name, _ in quoted} == set(group.commands)
        for name, options in quoted:
            known = {opt for param in group.commands[name].params for opt in param.opts}
            assert set(options.split()) <= known, (name, options)

    def test_environment_variables(self) -> None:
        """The environment switches and endpoint overrides named are the CLI's."""
        from cli.endpoint import ENV_ENDPOINT, ENV_PUBLIC_KEY
        from twentyi_telemetry.environment import ENV_CI, ENV_DO_NOT_TRACK, ENV_KILL_SWITCH

        for name in (ENV_DO_NOT_TRACK, ENV_KILL_SWITCH, ENV_CI, ENV_ENDPOINT, ENV_PUBLIC_KEY):
            assert f"`{name}" in self.text, name

    def test_state_paths(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The table of local files gives platformdirs' user dirs for 20i on each platform."""
        home = "/home/someone"
        monkeypatch.setenv("HOME", home)
        for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(var, raising=False)
        # Windows folders come from the shell API; give the one we quote by its variable name.
        monkeypatch.setattr(
            platformdirs.windows,
            "get_win_folder",
            lambda csidl: {"CSIDL_LOCAL_APPDATA": "%LOCALAPPDATA%"}[csidl],
        )

        def shown(path: str, windows: bool) -> str:
            path = path.replace(home, "~", 1)
            return path.replace("/", "\\") if windows else path

        columns = []
        for cls in (Unix, MacOS, Windows):
            dirs = cls(APP_NAME, appauthor=False)
            win = cls is Windows
            sep = "\\" if win else "/"
            columns.append(
                [
                    f"`{shown(os.path.join(dirs.user_config_dir, 'telemetry-consent.json'), win)}`",
                    f"`{shown(os.path.join(dirs.user_state_dir, SUBDIR), win)}{sep}`",
                    f"`{shown(os.path.join(dirs.user_cache_dir, SUBDIR), win)}{sep}`",
                ]
            )
        rows = _table_rows(_section(self.text, "Where local files live"))
        assert [row[1:] for row in rows] == [list(col) for col in zip(*columns, strict=True)]
