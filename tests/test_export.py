"""Parquet export: day partitions, CSPRNG-shuffled rows, each report exactly once."""

from __future__ import annotations

import fcntl
import itertools
import math
import os
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

import server_agg.export as export_module
from server_agg.app import app
from server_agg.export import ExportError, export, read_export, shuffle
from server_agg.store import ExportClaim, Store


class _Clock:
    def __init__(self, day: date) -> None:
        self.day = day

    def __call__(self) -> date:
        return self.day


def _reports(n: int, tag: bytes) -> list[bytes]:
    return [tag + i.to_bytes(4, "big") + bytes(48) for i in range(n)]


@pytest.fixture
def clock() -> _Clock:
    return _Clock(date(2026, 2, 1))


@pytest.fixture
def store(tmp_path: Path, clock: _Clock) -> Store:
    """A store with 30 reports on 2026-02-01 and 20 on 2026-02-03."""
    s = Store(tmp_path / "store.db", clock=clock)
    s.add_batch(_reports(30, b"a"))
    clock.day = date(2026, 2, 3)
    s.add_batch(_reports(20, b"b"))
    return s


def _all_exported(out: Path) -> list[bytes]:
    return [c for rows in read_export(out).values() for c in rows]


def _assert_exactly_once(store: Store, out: Path) -> None:
    exported = Counter(_all_exported(out))
    stored = Counter(c for _, _, c in store.iter_reports())
    assert exported == stored, "an export lost or duplicated reports"


class _Crash(Exception):
    """Stands in for the process dying at a chosen point."""


class TestExport:
    def test_partitions_by_day_in_hive_layout(self, store: Store, tmp_path: Path) -> None:
        """Each day gets its own day=YYYY-MM-DD folder; pyarrow reads day back as a column."""
        result = export(store, tmp_path / "out")
        assert result.rows == 50 and result.runs == [1]
        assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in result.files) == [
            "day=2026-02-01/part-000001.parquet",
            "day=2026-02-03/part-000001.parquet",
        ]
        table = ds.dataset(tmp_path / "out", format="parquet", partitioning="hive").to_table()
        assert table.column_names == ["ciphertext", "day"]
        days = Counter(str(d) for d in table.column("day").to_pylist())
        assert days == {"2026-02-01": 30, "2026-02-03": 20}
        _assert_exactly_once(store, tmp_path / "out")

    def test_rerun_exports_only_new_reports(
        self, store: Store, clock: _Clock, tmp_path: Path
    ) -> None:
        """A second export with nothing new writes nothing; later reports go into a new part."""
        out = tmp_path / "out"
        export(store, out)
        again = export(store, out)
        assert again.files == [] and again.rows == 0
        store.add_batch(_reports(5, b"c"))
        third = export(store, out)
        assert third.rows == 5 and [p.name for p in third.files] == ["part-000002.parquet"]
        _assert_exactly_once(store, out)

    def test_prune_during_export_wins(
        self, store: Store, clock: _Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Reports pruned after an export listed them are left out, not an error: the export
        finishes with the rest, and every report still stored is exported exactly once."""
        out = tmp_path / "out"
        real_rowids = Store.export_rowids

        def rowids_then_prune(self: Store, claim: ExportClaim, day: str) -> list[int]:
            listed = real_rowids(self, claim, day)
            if day == "2026-02-01":
                self.prune("2026-02-02")  # retention runs between listing and reading
            return listed

        monkeypatch.setattr(Store, "export_rowids", rowids_then_prune)
        result = export(store, out)
        assert result.rows == 20 and result.runs == [1]
        assert {day: len(rows) for day, rows in read_export(out).items()} == {
            "2026-02-01": 0,
            "2026-02-03": 20,
        }
        _assert_exactly_once(store, out)
        monkeypatch.undo()
        assert export(store, out).rows == 0  # the run is done, not left pending

    @pytest.mark.parametrize("crash_at", ["before-rename", "after-first-file", "before-done"])
    def test_interrupted_export_is_finished_once(
        self, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str
    ) -> None:
        """An export killed at any step is completed by the next run, nothing lost or doubled."""
        out = tmp_path / "out"
        published: list[Path] = []
        real_publish, real_finish = export_module._publish, Store.finish_export

        def publish(tmp: Path, final: Path) -> None:
            if crash_at == "before-rename":
                raise _Crash
            real_publish(tmp, final)
            published.append(final)
            if crash_at == "after-first-file":
                raise _Crash

        def finish(self: Store, export_id: int) -> None:
            raise _Crash

        monkeypatch.setattr(export_module, "_publish", publish)
        if crash_at == "before-done":
            monkeypatch.setattr(Store, "finish_export", finish)
        with pytest.raises(_Crash):
            export(store, out)
        assert store.pending_export() is not None
        assert (
            len(published)
            == {"before-rename": 0, "after-first-file": 1, "before-done": 2}[crash_at]
        )
        monkeypatch.setattr(export_module, "_publish", real_publish)
        monkeypatch.setattr(Store, "finish_export", real_finish)
        store.add_batch(_reports(7, b"late"))  # arrives between the crash and the re-run
        result = export(store, out)
        assert result.resumed == [1] and result.runs == [1, 2]
        assert store.pending_export() is None
        assert not list(out.rglob("*.tmp"))
        _assert_exactly_once(store, out)

    def test_interrupted_run_must_finish_in_its_directory(
        self, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Resuming into another directory is refused, naming the directory to use."""

        def crash(tmp: Path, final: Path) -> None:
            raise _Crash

        monkeypatch.setattr(export_module, "_publish", crash)
        with pytest.raises(_Crash):
            export(store, tmp_path / "first")
        monkeypatch.undo()
        with pytest.raises(ExportError, match=r"--out .*first"):
            export(store, tmp_path / "second")
        export(store, tmp_path / "first")
        _assert_exactly_once(store, tmp_path / "first")

    def test_rows_are_not_in_arrival_order(self, tmp_path: Path) -> None:
        """File order is a uniform shuffle: ascents between neighbours match a random order."""
        n = 2000
        with Store(tmp_path / "s.db") as s:
            arrival = _reports(n, b"r")
            for start in range(0, n, 100):
                s.add_batch(arrival[start : start + 100])
            export(s, tmp_path / "out")
        rows = _all_exported(tmp_path / "out")
        assert sorted(rows) == sorted(arrival) and rows != arrival
        rank = {c: i for i, c in enumerate(arrival)}
        ascents = sum(rank[a] < rank[b] for a, b in itertools.pairwise(rows))
        # For a uniform permutation of n items the number of ascents has mean (n-1)/2 and
        # variance (n+1)/12 (Eulerian numbers); arrival order would give n-1. Allow 5 sd
        # (false alarm < 1e-6 with the real CSPRNG).
        mean, sd = (n - 1) / 2, math.sqrt((n + 1) / 12)
        assert abs(ascents - mean) < 5 * sd

    def test_one_export_per_directory_at_a_time(self, store: Store, tmp_path: Path) -> None:
        """While another export holds the directory's lock, export refuses instead of racing."""
        out = tmp_path / "out"
        out.mkdir()
        fd = os.open(out / ".export.lock", os.O_WRONLY | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with pytest.raises(ExportError, match="another export"):
                export(store, out)
        finally:
            os.close(fd)
        assert export(store, out).rows == 50

    def test_unwritable_output(self, store: Store, tmp_path: Path) -> None:
        """An output path that is a file is an ExportError naming it."""
        (tmp_path / "file").write_text("x")
        with pytest.raises(ExportError, match="cannot create export directory"):
            export(store, tmp_path / "file" / "out")


class TestShuffle:
    def test_every_order_equally_likely(self) -> None:
        """Fisher-Yates over 3 items gives each of the 6 orders with probability 1/6."""
        rng = np.random.default_rng(20260201)
        trials = 6000
        seen: Counter[tuple[int, ...]] = Counter()
        for _ in range(trials):
            items = [0, 1, 2]
            shuffle(items, lambda k: int(rng.integers(k)))
            seen[tuple(items)] += 1
        assert len(seen) == 6
        # Each count is Binomial(6000, 1/6): mean 1000, sd sqrt(6000 * 1/6 * 5/6) = 28.9.
        sd = math.sqrt(trials * (1 / 6) * (5 / 6))
        assert all(abs(count - trials / 6) < 5 * sd for count in seen.values())


class TestExportCommand:
    def test_exports_and_reports(self, store: Store, tmp_path: Path) -> None:
        """`20i-agg export` writes the files and says how many reports it exported."""
        store.close()
        runner = CliRunner()
        args = ["export", "--store", str(tmp_path / "store.db"), "--out", str(tmp_path / "o")]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        assert "exported 50 reports in 2 file(s)" in first.stdout
        second = runner.invoke(app, args)
        assert second.exit_code == 0 and "nothing new to export" in second.stdout

    def test_missing_store_is_one_line(self, tmp_path: Path) -> None:
        """A store path that does not exist is one line on stderr and exit code 1."""
        result = CliRunner().invoke(
            app, ["export", "--store", str(tmp_path / "no.db"), "--out", str(tmp_path / "o")]
        )
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1 and "no store at" in result.stderr
        assert not (tmp_path / "no.db").exists()
