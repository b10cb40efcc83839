"""Stores the analyzer and the maintainers' commands are pointed at: damaged, empty, foreign.

Every input error is one line on stderr and exit 1; readers open stores read-only and leave
every input file byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from server_agg.app import app
from server_agg.keys import generate
from server_agg.store import Store, StoreError


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(result: Result, needle: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert needle in result.stderr, result.stderr


def _foreign(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.executemany("INSERT INTO notes (text) VALUES (?)", [(f"note {i}",) for i in range(50)])
    db.commit()
    db.close()
    return path


def _damaged(path: Path) -> Path:
    """A store of 3,000 reports with every eighth page after the first overwritten by 0xff."""
    with Store(path) as store:
        for _ in range(30):
            store.add_batch([os.urandom(200) for _ in range(100)])
    pages = path.stat().st_size // 4096
    with open(path, "r+b") as handle:
        for page in range(2, pages, 8):
            handle.seek(page * 4096)
            handle.write(b"\xff" * 4096)
    return path


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    generate(out)
    return out


def _aggregate(key_dir: Path, store: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        app, ["aggregate", "--key", str(key_dir), "--store", str(store), *extra]
    )


class TestDamagedStore:
    @pytest.mark.parametrize("workers", [None, "1", "2"])
    def test_damaged_page_is_one_line(
        self, tmp_path: Path, key_dir: Path, workers: str | None
    ) -> None:
        """A store with damaged pages gives one line naming the damage and exit 1."""
        store = _damaged(tmp_path / "s.db")
        extra = () if workers is None else ("--workers", workers)
        _one_line_error(_aggregate(key_dir, store, *extra), "malformed")

    def test_damaged_store_left_unchanged(self, tmp_path: Path, key_dir: Path) -> None:
        """Reading a damaged store changes none of its bytes."""
        store = _damaged(tmp_path / "s.db")
        before = _digest(store)
        _aggregate(key_dir, store)
        assert _digest(store) == before


class TestForeignFiles:
    def test_foreign_sqlite_file_unchanged(self, tmp_path: Path, key_dir: Path) -> None:
        """aggregate on an unrelated SQLite file: one line; the file is byte for byte unchanged."""
        path = _foreign(tmp_path / "other.db")
        before = _digest(path)
        _one_line_error(_aggregate(key_dir, path), "not a 20i store")
        assert _digest(path) == before
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        db.close()

    def test_empty_file_unchanged(self, tmp_path: Path, key_dir: Path) -> None:
        """aggregate on a 0-byte file: one line, and the file stays 0 bytes."""
        path = tmp_path / "empty.db"
        path.touch()
        _one_line_error(_aggregate(key_dir, path), "not a 20i store")
        assert path.stat().st_size == 0

    def test_random_bytes_file_unchanged(self, tmp_path: Path, key_dir: Path) -> None:
        """aggregate on a file that is not SQLite at all: one line, file unchanged."""
        path = tmp_path / "junk.db"
        path.write_bytes(os.urandom(8192))
        before = _digest(path)
        _one_line_error(_aggregate(key_dir, path), "not a database")
        assert _digest(path) == before

    @pytest.mark.parametrize(
        "command",
        [["export", "--out", "EXPORTS"], ["prune", "--keep-days", "1"]],
    )
    def test_writers_refuse_foreign_file(self, tmp_path: Path, command: list[str]) -> None:
        """export and prune refuse an unrelated SQLite file in one line and leave it unchanged."""
        path = _foreign(tmp_path / "other.db")
        before = _digest(path)
        args = [a.replace("EXPORTS", str(tmp_path / "out")) for a in command]
        result = CliRunner().invoke(app, [args[0], "--store", str(path), *args[1:]])
        _one_line_error(result, "not a 20i store")
        assert _digest(path) == before

    def test_store_refuses_foreign_file_even_with_create(self, tmp_path: Path) -> None:
        """Store(create=True) refuses a foreign SQLite file instead of adding tables to it."""
        path = _foreign(tmp_path / "other.db")
        before = _digest(path)
        with pytest.raises(StoreError, match="not a 20i store"):
            Store(path)
        assert _digest(path) == before

    def test_store_still_creates_in_an_empty_file(self, tmp_path: Path) -> None:
        """A 0-byte file is still a fine place for the collector to create its store."""
        path = tmp_path / "new.db"
        path.touch()
        with Store(path) as store:
            store.add_batch([b"x" * 100])
            assert store.count() == 1


class TestReadersAreReadOnly:
    def test_aggregate_leaves_a_real_store_unchanged(self, tmp_path: Path, key_dir: Path) -> None:
        """aggregate on a real, closed store leaves its database file byte for byte unchanged."""
        path = tmp_path / "s.db"
        with Store(path) as store:
            store.add_batch([os.urandom(150) for _ in range(50)])
        before = _digest(path)
        result = _aggregate(key_dir, path, "--format", "json")
        assert result.exit_code == 0, result.output
        assert _digest(path) == before
