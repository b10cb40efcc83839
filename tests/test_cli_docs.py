"""docs/CLI.md's JSON examples are what the code prints (they showed a stale schema id and a
lifetime epsilon from an older schema before)."""

from __future__ import annotations

from tests import cli_examples


class TestCliDocs:
    def test_json_examples_are_current(self) -> None:
        """Every generated block equals a fresh run of the real code; refresh them with
        `.venv/bin/python -m tests.cli_examples --write`."""
        current = cli_examples.DOC.read_text()
        assert current.count("<!-- generated: ") == 5
        assert cli_examples.render(current) == current

    def test_examples_show_the_shipped_schema(self) -> None:
        """The examples name the schema id this code ships (the stale id is gone)."""
        from ldp.schema import shipped_schema

        text = cli_examples.DOC.read_text()
        assert shipped_schema().id in text and "354e285053fc3cf6" not in text
