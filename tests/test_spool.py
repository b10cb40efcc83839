"""The spool: one atomic 0600 file per sealed report, ordered by age, bounded in count and age."""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli import spool
from twentyi_telemetry.state import Paths, count_spooled

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PLAINTEXT = b'{"fields":{"error_category":3},"kind":"errors","period":"2026-W48","v":1}'


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "state", tmp_path / "cache")


def add(paths: Paths, now: datetime = NOW, kind: str = "usage", sealed: bytes = b"s" * 60) -> Path:
    return spool.add(
        paths,
        kind=kind,
        period="2026-W48",
        key="20i-pk1:key",
        sealed=sealed,
        plaintext=PLAINTEXT,
        now=now,
    )


class TestAdd:
    def test_round_trip(self, paths: Paths) -> None:
        """A spooled report reads back with its kind, period, key, ciphertext and plaintext."""
        path = add(paths, sealed=bytes(range(256)))
        entry = spool.load(path)
        assert (entry.kind, entry.period, entry.key) == ("usage", "2026-W48", "20i-pk1:key")
        assert entry.sealed == bytes(range(256)) and entry.plaintext == PLAINTEXT
        assert entry.created == NOW
        assert spool.created_of(path.name) == NOW

    def test_atomic_private_file(self, paths: Paths) -> None:
        """The file is mode 0600, in the spool dir, and no temp file is left behind."""
        path = add(paths)
        assert path.parent == paths.spool_dir
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sorted(p.name for p in paths.spool_dir.iterdir()) == [path.name]
        assert count_spooled(paths) == 1  # issue 5's `status` counts it

    def test_names_sort_by_age(self, paths: Paths) -> None:
        """Listing returns the oldest report first, whatever the order of writing."""
        times = [NOW - timedelta(hours=h) for h in (1, 30, 5, 0)]
        written = {add(paths, now=t).name: t for t in times}
        names = spool.spool_names(paths)
        assert [written[n] for n in names] == sorted(times)

    def test_rejects_bad_names(self, paths: Paths) -> None:
        """A kind or period that could not come from a report is refused before writing."""
        for kind, period in (("../x", "2026-W48"), ("usage", "2026-48"), ("", "2026-W48")):
            with pytest.raises(ValueError, match=r"kind|period"):
                spool.add(
                    paths, kind=kind, period=period, key="k", sealed=b"s", plaintext=b"{}", now=NOW
                )
        assert spool.spool_names(paths) == []

    def test_unwritable_spool_raises_oserror(self, tmp_path: Path) -> None:
        """A cache dir that cannot exist (its parent is a file) is an OSError, nothing else."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        paths = Paths(tmp_path / "c", tmp_path / "s", blocker / "cache")
        with pytest.raises(OSError):
            add(paths)
        assert spool.spool_names(paths) == []


class TestBounds:
    def test_cap_drops_oldest(self, paths: Paths) -> None:
        """Past MAX_REPORTS files, the oldest go first and the newest MAX_REPORTS stay."""
        extra = 5
        times = [NOW - timedelta(minutes=m) for m in range(spool.MAX_REPORTS + extra)]
        for moment in reversed(times):  # oldest written first, as in real life
            add(paths, now=moment)
        names = spool.spool_names(paths)
        assert len(names) == spool.MAX_REPORTS
        kept = [spool.created_of(n) for n in names]
        assert kept == sorted(times)[extra:]

    def test_cap_holds_when_new_report_is_older(self, paths: Paths) -> None:
        """Even a report whose clock ran behind cannot push the spool over the cap."""
        for minute in range(spool.MAX_REPORTS):
            add(paths, now=NOW + timedelta(minutes=minute))
        add(paths, now=NOW - timedelta(days=1))
        assert len(spool.spool_names(paths)) == spool.MAX_REPORTS
        assert min(spool.created_of(n) or NOW for n in spool.spool_names(paths)) == NOW

    def test_age_limit(self, paths: Paths) -> None:
        """Reports older than eight weeks are dropped; one just inside the limit stays."""
        old = add(paths, now=NOW - spool.MAX_AGE - timedelta(seconds=1))
        edge = add(paths, now=NOW - spool.MAX_AGE + timedelta(minutes=1))
        removed = spool.prune(paths, NOW)
        assert removed == [old]
        assert spool.spool_names(paths) == [edge.name]

    def test_foreign_and_stale_temp_files(self, paths: Paths) -> None:
        """Files not named by the spool are removed; fresh temp files of a writer stay."""
        keep = add(paths)
        foreign = paths.spool_dir / "not-a-report.sealed"
        foreign.write_bytes(b"x")
        stale = paths.spool_dir / ".x.sealed.0011aabbccdd.tmp"
        stale.write_bytes(b"x")
        old = time.time() - 2 * 3600
        os.utime(stale, (old, old))
        fresh = paths.spool_dir / ".y.sealed.0011aabbccdd.tmp"
        fresh.write_bytes(b"x")
        removed = spool.prune(paths, NOW)
        assert sorted(removed) == sorted([foreign, stale])
        assert keep.exists() and fresh.exists()

    def test_missing_spool_is_empty(self, paths: Paths) -> None:
        """No spool dir means no reports, and pruning it is a no-op."""
        assert spool.spool_names(paths) == []
        assert spool.prune(paths, NOW) == []


class TestLoad:
    @pytest.mark.parametrize(
        "mutate",
        [
            lambda d: d.update(v=2),
            lambda d: d.update(sealed="not base64!"),
            lambda d: d.update(plaintext="[1, 2]"),
            lambda d: d.update(plaintext="{not json"),
            lambda d: d.update(kind="Usage"),
            lambda d: d.update(period="week 48"),
            lambda d: d.pop("key"),
        ],
        ids=["version", "base64", "not-object", "not-json", "kind", "period", "no-key"],
    )
    def test_rejects_corrupt_files(self, paths: Paths, mutate: object) -> None:
        """A spool file that is not exactly what add() writes is a ValueError naming it."""
        path = add(paths)
        document = json.loads(path.read_bytes())
        assert callable(mutate)
        mutate(document)
        path.write_text(json.dumps(document))
        with pytest.raises(ValueError, match=path.name):
            spool.load(path)

    def test_rejects_foreign_name(self, paths: Paths) -> None:
        """A file whose name the spool did not give it is not loaded."""
        path = add(paths)
        renamed = path.with_name("report.sealed")
        path.rename(renamed)
        with pytest.raises(ValueError, match="not a spool file name"):
            spool.load(renamed)
