"""Tests for the researcher notebook that explains the privacy budget.

The notebook is executed end to end with nbclient; its own ``assert`` cells check every claim its
text makes, so a run without errors means the figures still show what the text says. The
committed notebook must carry no outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from ldp.schema import shipped_schema

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "epsilon_budget.ipynb"
#: One figure per section that has one: utility, channel, audit, attack, shuffling, mechanisms.
FIGURES = 6


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
