"""The collector's SQLite store: de-duplication, durability settings, reading, export ranges."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from server_agg.store import SCHEMA_VERSION, ExportClaim, Store, StoreError


def _reports(n: int, tag: bytes = b"r") -> list[bytes]:
    return [tag + i.to_bytes(4, "big") + b"\x00" * 48 for i in range(n)]


class _Clock:
    """A settable UTC date, so tests can write reports on several days."""

    def __init__(self, day: date) -> None:
        self.day = day

    def __call__(self) -> date:
        return self.day


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store.db")


class TestAddBatch:
    def test_counts_accepted_and_duplicates(self, store: Store) -> None:
        """A batch reports how many ciphertexts were new and how many were already stored."""
        assert store.add_batch(_reports(5)) == (5, 0)
        assert store.add_batch(_reports(7)) == (2, 5)
        assert store.count() == 7

    def test_duplicates_inside_one_batch_are_stored_once(self, store: Store) -> None:
        """The same ciphertext twice in one batch counts as one report and one duplicate."""
        one = _reports(1)[0]
        assert store.add_batch([one, one, one]) == (1, 2)
        assert store.count() == 1

    def test_group_commit_accounts_per_batch(self, store: Store) -> None:
        """add_batches gives each batch its own counts, earlier batches winning duplicates."""
        a, b = _reports(3, b"a"), _reports(3, b"b")
        assert store.add_batches([a, [*b, a[0]], b]) == [(3, 0), (3, 1), (0, 3)]
        assert store.count() == 6

    def test_committed_before_return(self, store: Store, tmp_path: Path) -> None:
        """Another connection sees a batch as soon as add_batch returns (it is committed)."""
        store.add_batch(_reports(4))
        with sqlite3.connect(tmp_path / "store.db") as other:
            assert other.execute("SELECT count(*) FROM reports").fetchone()[0] == 4

    def test_dedupes_by_sha256(self, store: Store) -> None:
        """The stored digest is the SHA-256 of the ciphertext."""
        report = _reports(1)[0]
        store.add_batch([report])
        row = store._db.execute("SELECT digest FROM reports").fetchone()
        assert row[0] == hashlib.sha256(report).digest()

    def test_large_group_spans_several_statements(self, store: Store) -> None:
        """A group bigger than one multi-row INSERT is stored completely."""
        batches = [_reports(64, bytes([i])) for i in range(20)]
        results = store.add_batches(batches)
        assert results == [(64, 0)] * 20
        assert store.count() == 1280

    @pytest.mark.parametrize(("bad", "error"), [("text", TypeError), (b"", ValueError)])
    def test_rejects_non_bytes_and_empty(self, store: Store, bad: object, error: type) -> None:
        """Only non-empty bytes are stored; a bad entry stores nothing of its batch."""
        with pytest.raises(error, match="report 1 of batch 0"):
            store.add_batch([b"x" * 50, bad])  # type: ignore[list-item]  # the point of the test
        assert store.count() == 0

    def test_keeps_the_day_from_its_clock(self, tmp_path: Path) -> None:
        """Each report carries the UTC date of the commit that stored it."""
        clock = _Clock(date(2026, 3, 1))
        with Store(tmp_path / "s.db", clock=clock) as s:
            s.add_batch(_reports(2, b"a"))
            clock.day = date(2026, 3, 2)
            s.add_batch(_reports(3, b"b"))
            assert s.days() == [("2026-03-01", 2), ("2026-03-02", 3)]
            assert s.count("2026-03-02") == 3


class TestStoredColumns:
    def test_schema_holds_only_ciphertext_digest_day(self, store: Store) -> None:
        """The reports table has exactly id, day, digest, ciphertext: nothing about a request."""
        columns = [r[1] for r in store._db.execute("PRAGMA table_info(reports)")]
        assert columns == ["id", "day", "digest", "ciphertext"]
        tables = {
            r[0]
            for r in store._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        assert tables == {"reports", "exports"}
        export_columns = [r[1] for r in store._db.execute("PRAGMA table_info(exports)")]
        assert export_columns == ["id", "first_id", "last_id", "out_dir", "state"]

    def test_day_column_refuses_finer_times(self, store: Store) -> None:
        """The schema itself rejects a day value that carries a time of day."""
        with pytest.raises(sqlite3.IntegrityError):
            store._db.execute(
                "INSERT INTO reports (day, digest, ciphertext) VALUES (?, ?, ?)",
                ("2026-03-01T10:00", b"\x00" * 32, b"x"),
            )


class TestDurabilitySettings:
    def test_wal_and_normal_sync_by_default(self, store: Store) -> None:
        """The store runs in WAL mode with synchronous=NORMAL (1) unless told otherwise."""
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1

    def test_full_sync_on_request(self, tmp_path: Path) -> None:
        """synchronous='FULL' sets SQLite's level 2; anything else is refused."""
        with Store(tmp_path / "f.db", synchronous="FULL") as s:
            assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2
        with pytest.raises(ValueError, match="'OFF'"):
            Store(tmp_path / "o.db", synchronous="OFF")  # type: ignore[arg-type]  # on purpose

    def test_integrity_check(self, store: Store) -> None:
        """integrity_check passes SQLite's verdict through."""
        store.add_batch(_reports(10))
        assert store.integrity_check() == "ok"


class TestOpen:
    def test_unwritable_directory(self, tmp_path: Path) -> None:
        """A store in a missing directory is a StoreError naming the path."""
        with pytest.raises(StoreError, match=r"cannot open store .*nowhere"):
            Store(tmp_path / "nowhere" / "s.db")

    def test_path_is_a_directory(self, tmp_path: Path) -> None:
        """A store path that is a directory is a StoreError, not a traceback."""
        (tmp_path / "dir.db").mkdir()
        with pytest.raises(StoreError, match="cannot open store"):
            Store(tmp_path / "dir.db")

    def test_missing_without_create(self, tmp_path: Path) -> None:
        """create=False refuses to conjure an empty store from a wrong path."""
        with pytest.raises(StoreError, match="no store at"):
            Store(tmp_path / "typo.db", create=False)

    def test_newer_schema_refused(self, tmp_path: Path) -> None:
        """A store written by a newer version is not touched."""
        with sqlite3.connect(tmp_path / "s.db") as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(StoreError, match="newer"):
            Store(tmp_path / "s.db")

    def test_reopen_keeps_reports(self, tmp_path: Path) -> None:
        """Closing and reopening a store keeps what was committed."""
        with Store(tmp_path / "s.db") as s:
            s.add_batch(_reports(3))
        with Store(tmp_path / "s.db", create=False) as s:
            assert s.count() == 3
            assert s.add_batch(_reports(3)) == (0, 3)


class TestIterReports:
    def test_yields_all_once_across_chunks(self, store: Store) -> None:
        """Every report comes back once, with its rowid, whatever the chunk size (in a random
        order: tests/test_store_order.py checks that it is unrelated to arrival)."""
        reports = _reports(25)
        store.add_batch(reports)
        got = list(store.iter_reports(chunk=7))
        assert sorted(got) == [(i + 1, got[0][1], r) for i, r in enumerate(reports)]

    def test_filters_by_day(self, tmp_path: Path) -> None:
        """With day= only that day's reports come back."""
        clock = _Clock(date(2026, 1, 1))
        with Store(tmp_path / "s.db", clock=clock) as s:
            s.add_batch(_reports(3, b"a"))
            clock.day = date(2026, 1, 2)
            s.add_batch(_reports(4, b"b"))
            assert [d for _, d, _ in s.iter_reports(day="2026-01-02", chunk=2)] == [
                "2026-01-02"
            ] * 4

    @pytest.mark.parametrize(
        ("kwargs", "match"), [({"chunk": 0}, "chunk"), ({"day": "1/2"}, "day")]
    )
    def test_rejects_bad_arguments(
        self, store: Store, kwargs: dict[str, object], match: str
    ) -> None:
        """A chunk below 1 or a day not in YYYY-MM-DD form is a ValueError naming it."""
        with pytest.raises(ValueError, match=match):
            list(store.iter_reports(**kwargs))  # type: ignore[arg-type]  # kwargs vary by case


class TestExportBookkeeping:
    def test_claims_cover_each_rowid_once(self, store: Store) -> None:
        """Successive claims are adjacent ranges; nothing new means no claim."""
        assert store.claim_export("/out") is None
        store.add_batch(_reports(5, b"a"))
        first = store.claim_export("/out")
        assert first == ExportClaim(1, 0, 5, "/out")
        store.finish_export(first.export_id)
        assert store.claim_export("/out") is None
        store.add_batch(_reports(2, b"b"))
        second = store.claim_export("/out")
        assert second is not None and (second.first_id, second.last_id) == (5, 7)

    def test_pending_run_blocks_new_claims(self, store: Store) -> None:
        """While a run is pending it is returned by pending_export and no new run starts."""
        store.add_batch(_reports(3))
        claim = store.claim_export("/out")
        assert store.pending_export() == claim
        with pytest.raises(StoreError, match="pending"):
            store.claim_export("/out")
        assert claim is not None
        store.finish_export(claim.export_id)
        assert store.pending_export() is None
        with pytest.raises(StoreError, match="not pending"):
            store.finish_export(claim.export_id)

    def test_rowids_and_ciphertexts_by_day(self, tmp_path: Path) -> None:
        """A claim's rows can be listed per day and fetched by rowid."""
        clock = _Clock(date(2026, 5, 1))
        with Store(tmp_path / "s.db", clock=clock) as s:
            s.add_batch(_reports(2, b"a"))
            clock.day = date(2026, 5, 3)
            s.add_batch(_reports(3, b"b"))
            claim = s.claim_export("/out")
            assert claim is not None
            assert s.export_days(claim) == ["2026-05-01", "2026-05-03"]
            ids = s.export_rowids(claim, "2026-05-03")
            assert ids == [3, 4, 5]
            assert s.ciphertexts(ids) == dict(zip(ids, _reports(3, b"b"), strict=True))
            with pytest.raises(ValueError, match="at most 900"):
                s.ciphertexts(list(range(901)))
