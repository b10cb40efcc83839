"""Retention: `Store.prune` and `20i-agg prune` delete reports older than PRIVACY.md promises."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from server_agg.app import app
from server_agg.export import export, prune_exports, read_export
from server_agg.store import DEFAULT_KEEP_DAYS, Store, first_kept_day, utc_today

ROOT = Path(__file__).resolve().parent.parent


class _Clock:
    """A settable UTC date, so tests can write reports on several days."""

    def __init__(self, day: date) -> None:
        self.day = day

    def __call__(self) -> date:
        return self.day


def _reports(n: int, tag: bytes, size: int = 64) -> list[bytes]:
    """``n`` distinct ciphertext stand-ins of ``size`` bytes that start with ``tag``."""
    return [(tag + i.to_bytes(4, "big")).ljust(size, b"\xa5") for i in range(n)]


def _fill(path: Path, plan: list[tuple[date, list[bytes]]]) -> None:
    """Store each batch of ``plan`` as if it arrived on its day."""
    clock = _Clock(plan[0][0])
    with Store(path, clock=clock) as store:
        for day, batch in plan:
            clock.day = day
            store.add_batch(batch)


def _file_bytes(path: Path) -> bytes:
    """The database file and its write-ahead log, where deleted content could linger."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


class TestFirstKeptDay:
    """first_kept_day: the UTC day arithmetic of the retention period."""

    def test_keeps_today_and_the_days_before(self) -> None:
        """N days of retention keep today and the N - 1 days before it."""
        today = date(2026, 3, 1)
        assert first_kept_day(1, today) == today
        assert first_kept_day(2, today) == date(2026, 2, 28)
        assert first_kept_day(400, today) == today - timedelta(days=399)

    @pytest.mark.parametrize("bad", [0, -1, True, 1.5])
    def test_rejects_non_positive_or_non_integer(self, bad: object) -> None:
        """Zero, negative, boolean or fractional retentions are refused with the allowed range."""
        with pytest.raises(ValueError, match=r"keep_days \(.*\) must be an integer >= 1"):
            first_kept_day(bad, date(2026, 3, 1))  # type: ignore[arg-type]  # checked at run time

    def test_huge_retention_keeps_everything(self) -> None:
        """A retention longer than the calendar starts at the first representable day."""
        assert first_kept_day(10**12, date(2026, 3, 1)) == date.min


class TestPrune:
    """Store.prune deletes by arrival day, counts unexported reports, and leaves no trace."""

    def test_deletes_older_days_and_keeps_newer(self, tmp_path: Path) -> None:
        """Reports that arrived before the cutoff go, the others stay with their rowids."""
        path = tmp_path / "store.db"
        days = [date(2025, 1, 1), date(2025, 1, 30), date(2025, 1, 31), date(2025, 2, 1)]
        _fill(path, [(d, _reports(13, d.isoformat().encode())) for d in days])
        with Store(path) as store:
            kept_before = [r for r in store.iter_reports() if r[1] >= "2025-01-31"]
            result = store.prune("2025-01-31", window=7)  # 52 rowids in windows of 7
            assert (result.deleted, result.unexported, result.dry_run) == (26, 26, False)
            assert result.before_day == "2025-01-31"
            assert store.days() == [("2025-01-31", 13), ("2025-02-01", 13)]
            assert sorted(store.iter_reports()) == sorted(kept_before)
            assert store.integrity_check() == "ok"

    def test_retention_boundary_in_utc_days(self, tmp_path: Path) -> None:
        """A report that arrived on day D is kept through D + N - 1 and deleted on D + N."""
        path = tmp_path / "store.db"
        arrived = date(2025, 5, 10)
        _fill(path, [(arrived, _reports(4, b"x"))])
        with Store(path) as store:
            last_kept = arrived + timedelta(days=DEFAULT_KEEP_DAYS - 1)
            assert store.prune(first_kept_day(DEFAULT_KEEP_DAYS, last_kept)).deleted == 0
            assert store.count() == 4
            deleting = arrived + timedelta(days=DEFAULT_KEEP_DAYS)
            assert store.prune(first_kept_day(DEFAULT_KEEP_DAYS, deleting)).deleted == 4
            assert store.count() == 0

    def test_dry_run_counts_and_deletes_nothing(self, tmp_path: Path) -> None:
        """A dry run reports exactly what the real run then deletes, and changes nothing."""
        path = tmp_path / "store.db"
        _fill(path, [(date(2025, 1, 1), _reports(9, b"o")), (date(2025, 3, 1), _reports(5, b"n"))])
        with Store(path) as store:
            before = list(store.iter_reports())
            dry = store.prune(date(2025, 2, 1), dry_run=True, window=4)
            assert (dry.deleted, dry.unexported, dry.dry_run, dry.checkpointed) == (
                9,
                9,
                True,
                False,
            )
            assert sorted(store.iter_reports()) == sorted(before)
            real = store.prune(date(2025, 2, 1), window=4)
            assert (real.deleted, real.unexported) == (dry.deleted, dry.unexported)

    def test_counts_reports_no_finished_export_covered(self, tmp_path: Path) -> None:
        """Expired reports outside done export runs, pending ones included, count as unexported."""
        path = tmp_path / "store.db"
        old = date(2024, 1, 1)
        _fill(path, [(old, _reports(10, b"a"))])
        with Store(path, clock=_Clock(old)) as store:
            done = store.claim_export(str(tmp_path / "out"))
            assert done is not None
            store.finish_export(done.export_id)  # rowids 1..10 exported
            store.add_batch(_reports(6, b"b"))
            pending = store.claim_export(str(tmp_path / "out"))  # rowids 11..16, unfinished
            assert pending is not None
            store.add_batch(_reports(4, b"c"))  # rowids 17..20, never claimed
            result = store.prune("2024-06-01")
            assert (result.deleted, result.unexported) == (20, 10)

    def test_export_still_works_after_a_prune(self, tmp_path: Path) -> None:
        """Pruning never-exported reports leaves an export that ships each survivor exactly once."""
        path = tmp_path / "store.db"
        out = tmp_path / "parquet"
        clock = _Clock(date(2024, 1, 1))
        with Store(path, clock=clock) as store:
            store.add_batch(_reports(8, b"a"))
            assert export(store, out).rows == 8
            store.add_batch(_reports(5, b"b"))  # expires before any export covers it
            clock.day = date(2025, 6, 1)
            fresh = _reports(7, b"c")
            store.add_batch(fresh)
            assert store.prune("2025-01-01").unexported == 5
            assert export(store, out).rows == 7
            exported = read_export(out)
            assert sorted(exported["2025-06-01"]) == sorted(fresh)
            assert len(exported["2024-01-01"]) == 8
            store.add_batch(_reports(2, b"d"))  # rowids are never reused after the prune
            assert export(store, out).rows == 2

    def test_deleted_bytes_are_not_left_in_the_files(self, tmp_path: Path) -> None:
        """After a prune neither the file nor its WAL holds a deleted ciphertext or digest."""
        path = tmp_path / "store.db"
        # Small reports sit inside table pages; 5000-byte ones spill into overflow pages.
        expired = _reports(40, b"EXPIRED-") + _reports(10, b"EXPIRED-BIG-", size=5000)
        kept = _reports(30, b"KEPT-")
        clock = _Clock(date(2024, 1, 1))
        with Store(path, clock=clock) as store:
            store.add_batch(expired)
            clock.day = date(2025, 6, 1)
            store.add_batch(kept)
            # Still open, so the expired pages sit in the WAL as well as (after a checkpoint)
            # in the file: both places must be overwritten.
            store._query("PRAGMA wal_checkpoint(PASSIVE)")
            assert b"EXPIRED-" in path.read_bytes()
            assert b"EXPIRED-" in path.with_name(path.name + "-wal").read_bytes()
            # Freed overflow pages are zeroed only with secure_delete fully ON: prune must set
            # it itself, whatever the connection had.
            store._query("PRAGMA secure_delete = OFF")
            result = store.prune("2025-01-01")
            assert result.deleted == 50 and result.checkpointed
            data = _file_bytes(path)
            assert b"EXPIRED-" not in data
            assert not [c for c in expired if hashlib.sha256(c).digest() in data]
            assert all(c in data for c in kept)
            assert store.integrity_check() == "ok"

    def test_every_connection_overwrites_slack(self, tmp_path: Path) -> None:
        """A store opens with secure_delete FAST, so page splits leave no stale copies behind."""
        with Store(tmp_path / "store.db") as store:
            assert store._query("PRAGMA secure_delete") == [(2,)]

    def test_restores_the_connection_setting(self, tmp_path: Path) -> None:
        """secure_delete is switched on for the deletion only; the connection gets its own back."""
        path = tmp_path / "store.db"
        _fill(path, [(date(2024, 1, 1), _reports(3, b"z"))])
        with Store(path) as store:
            for setting in (0, 2):  # OFF, FAST
                store._query(f"PRAGMA secure_delete = {('OFF', 'ON', 'FAST')[setting]}")
                store.prune("2025-01-01")
                assert store._query("PRAGMA secure_delete") == [(setting,)]

    @pytest.mark.parametrize("bad", ["2025-1-01", "yesterday", datetime(2025, 1, 1, 12)])
    def test_rejects_a_bad_day(self, tmp_path: Path, bad: object) -> None:
        """The cutoff must be a YYYY-MM-DD string or a date, never a time of day."""
        with Store(tmp_path / "store.db") as store, pytest.raises((ValueError, TypeError)):
            store.prune(bad)  # type: ignore[arg-type]  # checked at run time

    def test_rejects_a_bad_window(self, tmp_path: Path) -> None:
        """The window of rowids per transaction must be a positive integer."""
        with (
            Store(tmp_path / "store.db") as store,
            pytest.raises(ValueError, match=r"window \(0\) must be an integer >= 1"),
        ):
            store.prune("2025-01-01", window=0)


class TestPruneBesideAWriter:
    """prune runs while another connection keeps storing reports, as `serve` does."""

    def test_writer_keeps_committing_during_a_prune(self, tmp_path: Path) -> None:
        """Every batch the writer stored survives, the expired ones go, the file stays sound."""
        path = tmp_path / "store.db"
        _fill(path, [(date(2024, 1, 1), _reports(2000, b"old"))])
        writer = Store(path, clock=_Clock(date(2025, 6, 1)))
        stored: list[int] = []
        errors: list[BaseException] = []
        stop = threading.Event()
        started = threading.Event()

        def write() -> None:
            i = 0
            try:
                while not stop.is_set():
                    accepted, _ = writer.add_batch(_reports(5, b"new%06d-" % i))
                    stored.append(accepted)
                    i += 1
                    started.set()
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)
                started.set()

        thread = threading.Thread(target=write)
        thread.start()
        try:
            assert started.wait(10)
            with Store(path) as pruner:
                real_delete = pruner._delete_window
                waits = [3]

                def delete_then_wait_for_writer(bounds: tuple[int, int, str]) -> tuple[int, int]:
                    # After each of the first windows, give the writer up to 5 s to commit: it
                    # can only if the prune holds no transaction between windows. (Without the
                    # wait a fast prune could finish before the writer thread is scheduled.)
                    out = real_delete(bounds)
                    if waits[0] > 0:
                        waits[0] -= 1
                        seen, deadline = len(stored), time.monotonic() + 5
                        while len(stored) == seen and time.monotonic() < deadline:
                            time.sleep(0.001)
                    return out

                pruner._delete_window = delete_then_wait_for_writer  # type: ignore[method-assign]
                at_start = len(stored)
                result = pruner.prune("2025-01-01", window=20)  # 100 short write transactions
                during = len(stored) - at_start
        finally:
            stop.set()
            thread.join(10)
            writer.close()
        assert not errors, errors
        assert result.deleted == 2000
        assert during > 0, "the writer never committed while the prune ran"
        with Store(path) as store:
            assert store.days() == [("2025-06-01", sum(stored))]
            assert store.integrity_check() == "ok"


class TestPruneCommand:
    """`20i-agg prune`: one line of result, warnings and errors as one line each."""

    @pytest.fixture
    def store_path(self, tmp_path: Path) -> Path:
        """Three reports 500 days old and two 10 days old, by the real UTC date."""
        path = tmp_path / "store.db"
        today = utc_today()
        _fill(
            path,
            [
                (today - timedelta(days=500), _reports(3, b"o")),
                (today - timedelta(days=10), _reports(2, b"n")),
            ],
        )
        return path

    def _run(self, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, ["prune", *args])
        return result.exit_code, result.stdout, result.stderr

    def _cutoffs(self, keep: int = DEFAULT_KEEP_DAYS) -> set[str]:
        """The cutoff the command prints (two if the test straddles midnight UTC)."""
        return {first_kept_day(keep, utc_today() - timedelta(days=d)).isoformat() for d in (0, 1)}

    def test_deletes_and_warns_about_unexported(self, store_path: Path) -> None:
        """The default retention deletes the old reports and warns they were never exported."""
        code, out, err = self._run("--store", str(store_path))
        assert code == 0, err
        match = re.fullmatch(
            r"deleted 3 reports that arrived before (\S+) \(keeping 400 days\)\n", out
        )
        assert match is not None and match.group(1) in self._cutoffs()
        assert err == (
            "20i-agg: warning: 3 of them were never exported to Parquet; "
            "retention deletes them anyway\n"
        )
        with Store(store_path, create=False) as store:
            assert store.count() == 2

    def test_dry_run_deletes_nothing(self, store_path: Path) -> None:
        """--dry-run says what it would delete and leaves the store as it was."""
        code, out, err = self._run("--store", str(store_path), "--keep-days", "5", "--dry-run")
        assert code == 0, err
        assert out.startswith("would delete 5 reports that arrived before ")
        assert "retention would delete them anyway" in err
        with Store(store_path, create=False) as store:
            assert store.count() == 5

    def test_no_warning_when_everything_was_exported(self, store_path: Path) -> None:
        """Deleting only exported reports prints no warning."""
        with Store(store_path, create=False) as store:
            claim = store.claim_export(str(store_path.parent / "out"))
            assert claim is not None
            store.finish_export(claim.export_id)
        code, out, err = self._run("--store", str(store_path))
        assert (code, err) == (0, "")
        assert out.startswith("deleted 3 reports")

    def test_missing_store_is_one_line(self, tmp_path: Path) -> None:
        """A store path that does not exist is one line on stderr, and is not created."""
        code, _, err = self._run("--store", str(tmp_path / "no.db"))
        assert code == 1
        assert err.count("\n") == 1 and "no store at" in err
        assert not (tmp_path / "no.db").exists()

    @pytest.mark.parametrize("keep", ["0", "-3"])
    def test_bad_keep_days_is_one_line(self, store_path: Path, keep: str) -> None:
        """A retention of zero or fewer days is refused in one line, before touching the store."""
        code, _, err = self._run("--store", str(store_path), "--keep-days", keep)
        assert code == 1
        assert err == f"20i-agg: error: --keep-days ({keep}) must be >= 1\n"
        with Store(store_path, create=False) as store:
            assert store.count() == 5

    def test_default_is_the_promised_retention(self) -> None:
        """The command's default and PRIVACY.md's promise are both DEFAULT_KEEP_DAYS."""
        command = typer.main.get_command(app)
        prune = command.commands["prune"]  # type: ignore[attr-defined]  # a click Group
        (option,) = [p for p in prune.params if p.name == "keep_days"]
        assert option.default == DEFAULT_KEEP_DAYS
        policy = " ".join((ROOT / "PRIVACY.md").read_text(encoding="utf-8").split())
        assert f"delete stored reports {DEFAULT_KEEP_DAYS} days after the day they arrived" in (
            policy
        )
        assert "`20i-agg prune`" in policy


class TestPruneExports:
    """Retention reaches exported copies: old `day=*` folders of a Parquet export go too."""

    @pytest.fixture
    def exported(self, tmp_path: Path) -> Path:
        """An export of three reports 500 days old and two 10 days old."""
        path = tmp_path / "store.db"
        today = utc_today()
        _fill(
            path,
            [
                (today - timedelta(days=500), _reports(3, b"o")),
                (today - timedelta(days=10), _reports(2, b"n")),
            ],
        )
        out = tmp_path / "out"
        with Store(path, create=False) as store:
            export(store, out)
        return out

    def test_deletes_old_day_folders_only(self, exported: Path) -> None:
        """The folder of the old day goes; the recent day's reports stay readable."""
        before = first_kept_day(DEFAULT_KEEP_DAYS, utc_today()).isoformat()
        assert len(read_export(exported)) == 2
        removed = prune_exports(exported, before)
        assert [p.name for p in removed] == [
            f"day={(utc_today() - timedelta(days=500)).isoformat()}"
        ]
        assert not removed[0].exists()
        assert sorted(len(v) for v in read_export(exported).values()) == [2]

    def test_dry_run_removes_nothing(self, exported: Path) -> None:
        """A dry run names the folders and leaves them in place."""
        removed = prune_exports(exported, utc_today().isoformat(), dry_run=True)
        assert len(removed) == 2 and all(p.exists() for p in removed)

    def test_command_prunes_store_and_exports(self, exported: Path) -> None:
        """`prune --store --exports` prints one line for each and deletes from both."""
        store_path = exported.parent / "store.db"
        result = CliRunner().invoke(
            app, ["prune", "--store", str(store_path), "--exports", str(exported)]
        )
        assert result.exit_code == 0, result.stderr
        assert result.stdout.splitlines()[0].startswith("deleted 3 reports")
        assert result.stdout.splitlines()[1].startswith("deleted 1 export day folders before ")
        assert result.stderr == ""  # everything deleted had been exported
        assert sorted(len(v) for v in read_export(exported).values()) == [2]

    def test_command_needs_a_target(self) -> None:
        """Without --store or --exports the command says what to name, in one line."""
        result = CliRunner().invoke(app, ["prune"])
        assert result.exit_code == 1
        assert result.stderr == (
            "20i-agg: error: name what to prune: --store PATH, --exports DIR, or both\n"
        )

    def test_missing_export_directory_is_one_line(self, tmp_path: Path) -> None:
        """An export path that does not exist is one error line."""
        result = CliRunner().invoke(app, ["prune", "--exports", str(tmp_path / "nope")])
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1 and "no export directory" in result.stderr
