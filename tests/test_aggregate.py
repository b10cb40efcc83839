"""Tests for server_agg.aggregate: rejects by reason, exact additive counts, the decoding fast
path against the strict decoder, sources, filters, estimation and privacy parameters."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ldp.budget import per_report_epsilon
from ldp.envelope import generate_keypair, seal
from ldp.errors import DecodeError
from ldp.report import decode_plaintext, pad, unpad
from ldp.schema import Schema, canonical_dumps, load_schema, shipped_schema
from server_agg import aggregate as agg
from server_agg.aggregate import (
    REJECT_REASONS,
    AggregateError,
    Counts,
    MemorySource,
    ParquetSource,
    StoreSource,
    count_ciphertexts,
    count_plaintexts,
    count_source,
    counting,
    finalize,
    kind_privacy,
    reject_reason,
)
from server_agg.aggregate.workers import _start_method
from server_agg.export import export
from server_agg.simulate import GeneratorSource, make_population
from server_agg.store import Store, StoreError

SCHEMA = shipped_schema()
PRIVATE, PUBLIC = generate_keypair()
OTHER_PRIVATE, OTHER_PUBLIC = generate_keypair()
PERIOD = "2026-W50"

NO_ERRORS = {
    "categorical": {},
    "sets": {},
    "resample": [],
    "errors_share": 0.5,
}


def _plaintexts(clients: int, seed: int, periods: tuple[str, ...] = (PERIOD,)) -> list[bytes]:
    """Real client reports of a seeded population, with seeded (reproducible) noise."""
    population = make_population(clients, seed=seed, periods=periods)
    return list(population.reports(GeneratorSource(np.random.default_rng(seed + 1))))


VALID = _plaintexts(150, seed=11)
SEALED = [seal(p, PUBLIC) for p in VALID]


def _edit(plaintext: bytes, **changes: Any) -> bytes:
    """A report with top-level keys or fields replaced, re-encoded canonically and padded."""
    doc = json.loads(plaintext)
    fields = changes.pop("fields", {})
    doc["fields"].update(fields)
    doc.update(changes)
    return pad(canonical_dumps(doc).encode())


def _reference(items: list[bytes], known: tuple[Schema, ...] = (SCHEMA,)) -> dict[str, Any]:
    """What the strict decoder alone says, in the same plain form as ``Counts.to_plain``."""
    schemas = {s.id: s for s in known}
    rejects: Counter[str] = Counter()
    groups: dict[str, dict[str, Any]] = {}
    for data in items:
        try:
            report = decode_plaintext(data, schemas)
        except Exception as exc:  # the reference counts every failure, like the analyzer
            rejects[reject_reason(exc)] += 1
            continue
        key = "/".join((report.schema_id, report.kind, report.period))
        group = groups.setdefault(key, {"n": 0, "support": {}})
        group["n"] += 1
        for spec in schemas[report.schema_id].kind(report.kind).fields:
            rnd = spec.randomizer()
            vec = rnd.support(rnd.encode_batch([report.fields[spec.name]]))
            old = group["support"].get(spec.name)
            group["support"][spec.name] = vec if old is None else old + vec
    for group in groups.values():
        group["support"] = {k: [int(x) for x in v] for k, v in sorted(group["support"].items())}
    return {
        "read": len(items),
        "excluded": 0,
        "rejects": dict(sorted(rejects.items())),
        "groups": dict(sorted(groups.items())),
    }


def _garbage(rng: np.random.Generator) -> tuple[list[bytes], Counter[str]]:
    """Every kind of bad input the analyzer must skip, sealed or not, with its expected reason."""
    good = VALID[0]
    usage = unpad(next(p for p in VALID if b'"kind":"usage"' in p))
    items: list[tuple[bytes, str]] = []
    for size in (1, 47, 48, 64, 190, 500):  # the store refuses empty items
        items.append((rng.bytes(size), "decrypt"))  # random bytes
    items += [(seal(p, OTHER_PUBLIC), "decrypt") for p in VALID[:5]]  # sealed to another key
    truncated = seal(good, PUBLIC)[:-1]
    items.append((truncated, "decrypt"))
    bad_plaintexts = [
        (_edit(usage, fields={"platform": [0, 99, 1, 2]}), "out_of_range"),
        (_edit(usage, fields={"cli_version": [7, 6, 5]}), "out_of_range"),
        (_edit(usage, period="2026-W60"), "out_of_range"),
        (_edit(usage, kind="crashes"), "out_of_range"),
        (_edit(usage, v=2), "out_of_range"),
        (_edit(usage, schema="0123456789abcdef"), "unknown_schema"),
        (_edit(usage, schema="not-an-id"), "unknown_schema"),
        (_edit(usage, fields={"platform": "linux"}), "wrong_type"),
        (_edit(usage, fields={"platform": [True, 1]}), "wrong_type"),
        (_edit(usage, fields={"hostname": 1}), "unknown_field"),
        (pad(usage.replace(b'"platform":', b'"platform_":')), "unknown_field"),
        (b"x" * 5000, "too_large"),
        (b"", "malformed"),
        (b"not json at all", "malformed"),
        (pad(usage.replace(b",", b", ", 1)), "malformed"),  # valid JSON, not canonical
        (usage, "padding"),  # a v2 report that was never padded
        (usage + b" ", "padding"),  # padded to the wrong length
        (b"[1,2,3]", "wrong_type"),
    ]
    doc = json.loads(usage)
    del doc["fields"]["modules"]
    bad_plaintexts.append((pad(canonical_dumps(doc).encode()), "missing_field"))
    items += [(seal(p, PUBLIC), reason) for p, reason in bad_plaintexts]
    return [i for i, _ in items], Counter(r for _, r in items)


class TestRejectReason:
    """reject_reason maps each error class to its documented reason."""

    def test_every_reason_is_documented(self) -> None:
        """Every reason the function can return is listed in REJECT_REASONS (the period check
        names its own, implausible_period, without an exception)."""
        from ldp import errors

        samples = [
            errors.EnvelopeError("x"),
            errors.UnknownSchemaError("x"),
            errors.OutOfRangeError("x"),
            errors.WrongTypeError("x"),
            errors.UnknownFieldError("x"),
            errors.MissingFieldError("x"),
            errors.TooLargeError("x"),
            errors.PaddingError("x"),
            DecodeError("x"),
            RuntimeError("x"),
        ]
        reasons = [reject_reason(e) for e in samples]
        assert reasons == [r for r in REJECT_REASONS if r != "implausible_period"]


class TestGarbage:
    """Bad input is skipped and counted by reason, and never changes the estimates."""

    def test_mixed_store_counts_rejects_by_reason(self, tmp_path: Path) -> None:
        """Garbage mixed into a store is counted per reason; valid reports count as if alone."""
        garbage, expected = _garbage(np.random.default_rng(5))
        mixed = list(SEALED)
        for i, item in enumerate(garbage):
            mixed.insert((7 * i) % len(mixed), item)
        with Store(tmp_path / "mixed.sqlite") as store:
            store.add_batch(mixed)
        with Store(tmp_path / "clean.sqlite") as store:
            store.add_batch(SEALED)
        dirty = count_source(StoreSource(tmp_path / "mixed.sqlite"), PRIVATE, chunk_size=37)
        clean = count_source(StoreSource(tmp_path / "clean.sqlite"), PRIVATE)
        assert dirty.read == len(mixed)
        assert dict(dirty.rejects) == dict(expected)
        assert dirty.accepted == len(SEALED)
        assert dirty.to_plain()["groups"] == clean.to_plain()["groups"]

    def test_result_reports_rejects_in_documented_order(self) -> None:
        """The result lists rejects in REJECT_REASONS order and the totals add up."""
        garbage, expected = _garbage(np.random.default_rng(6))
        result = agg.aggregate(MemorySource(SEALED + garbage), PRIVATE, delta=None)
        assert list(result.rejects) == [r for r in REJECT_REASONS if r in expected]
        assert result.rejected == sum(expected.values())
        assert result.read == result.accepted + result.rejected + result.excluded

    def test_non_bytes_items_are_rejects_not_crashes(self) -> None:
        """A damaged source yielding non-bytes items still cannot stop the run."""
        counts = count_ciphertexts([None, 12, "text", SEALED[0]], PRIVATE)  # type: ignore[list-item]
        assert counts.rejects == Counter({"decrypt": 3})
        assert counts.accepted == 1

    def test_unexpected_decoder_failure_is_counted_as_internal(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A decoder bug (any exception) is counted as 'internal' and the run goes on."""

        def broken(data: bytes, schemas: object) -> object:
            raise RuntimeError("decoder bug")

        monkeypatch.setattr(counting, "decode_report", broken)
        counts = count_plaintexts([b"{}", b"[]", VALID[0]])
        assert counts.rejects == Counter({"internal": 2})
        assert counts.accepted == 1  # a canonical report never reaches the strict decoder


class TestFastPath:
    """The byte-pattern fast path agrees with the strict decoder on every input."""

    def test_valid_reports_skip_the_strict_decoder(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Canonical valid reports are counted without calling decode_report at all."""
        calls = Counter[str]()
        real = counting.decode_report

        def spy(data: bytes, schemas: Any) -> Any:
            calls["n"] += 1
            return real(data, schemas)

        monkeypatch.setattr(counting, "decode_report", spy)
        counts = count_plaintexts(VALID)
        assert counts.accepted == len(VALID)
        assert calls["n"] == 0

    def test_counts_equal_the_strict_decoder(self) -> None:
        """On valid reports and all the garbage, counts equal a decode_report-only reference."""
        garbage, _ = _garbage(np.random.default_rng(7))
        plain = [b for b in garbage if len(b) < 48] + VALID  # unsealed bytes are plaintexts here
        assert count_plaintexts(plain).to_plain() == _reference(plain)

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        index=st.integers(0, len(VALID) - 1),
        position=st.integers(0, 400),
        action=st.sampled_from(["replace", "insert", "delete"]),
        byte=st.sampled_from(list(b'0123456789[],:"{}- .eE+abcdefW\\\x00\xff\n')),
        among_valid=st.booleans(),
    )
    def test_mutated_reports_match_strict_decoder(
        self, index: int, position: int, action: str, byte: int, among_valid: bool
    ) -> None:
        """A one-byte mutation of a valid report is judged exactly as decode_report judges it,
        alone or in the middle of a chunk of valid reports (the chunk-wide pass must then
        either accept everything rightly or hand the chunk to the per-report path)."""
        data = bytearray(VALID[index])
        position %= len(data) + (action == "insert")
        if action == "replace" and position < len(data):
            data[position] = byte
        elif action == "insert":
            data.insert(position, byte)
        elif position < len(data):
            del data[position]
        items = [*VALID[:10], bytes(data), *VALID[10:20]] if among_valid else [bytes(data)]
        assert count_plaintexts(items).to_plain() == _reference(items)

    def test_valid_chunks_take_one_pass(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A chunk of valid reports (two kinds, two periods) never goes report by report, and
        counts exactly what the strict decoder counts, with and without filters."""
        calls = Counter[str]()
        real = counting._fast_parse

        def spy(data: bytes, schemas: Any) -> Any:
            calls["n"] += 1
            return real(data, schemas)

        mixed = _plaintexts(80, seed=5, periods=(PERIOD, "2026-W51"))
        monkeypatch.setattr(counting, "_fast_parse", spy)
        assert count_plaintexts(mixed).to_plain() == _reference(mixed)
        filtered = count_plaintexts(mixed, kind="usage", period="2026-W51").to_plain()
        assert calls["n"] == 0
        # The same filters on the report-by-report path give the same counts.
        monkeypatch.setattr(counting, "_count_chunk", lambda *args: None)
        assert count_plaintexts(mixed, kind="usage", period="2026-W51").to_plain() == filtered
        assert calls["n"] == len(mixed)
        assert filtered["excluded"] == len(mixed) - 80

    def test_two_schemas_in_one_chunk(self) -> None:
        """Reports of two known schema versions with the same kinds and fields, mixed in one
        chunk, are counted per schema exactly as the strict decoder counts them."""
        doc = json.loads(SCHEMA.canonical_json())
        doc["version"] += 1
        newer = load_schema(json.dumps(doc))
        assert newer.id != SCHEMA.id
        moved = [_edit(p, schema=newer.id) for p in VALID[::2]]
        mixed = [*moved, *VALID[1::2]]
        counts = count_plaintexts(mixed, (SCHEMA, newer)).to_plain()
        assert counts == _reference(mixed, (SCHEMA, newer))
        assert {key.split("/")[0] for key in counts["groups"]} == {SCHEMA.id, newer.id}
        # Only the shipped schema known: the newer reports are rejects, the rest still count.
        assert count_plaintexts(mixed).to_plain() == _reference(mixed)

    @pytest.mark.parametrize(
        "odd",
        [
            b"\n",  # an empty line between two reports
            VALID[0] + b"\n" + VALID[1],  # two valid reports in one plaintext
            VALID[0] + b"\n",
            b"\n" + VALID[0],
            VALID[0].replace(b"[", b"[,", 1),
        ],
    )
    def test_line_tricks_are_judged_report_by_report(self, odd: bytes) -> None:
        """Newlines inside a plaintext cannot make the chunk-wide pass count a report twice."""
        items = [*VALID[:5], odd, *VALID[5:10]]
        assert count_plaintexts(items).to_plain() == _reference(items)

    @settings(max_examples=200, deadline=None)
    @given(
        field=st.sampled_from(["cli_version", "platform", "command", "modules"]),
        value=st.one_of(
            st.integers(-3, 2**70),
            st.lists(st.integers(-2, 20), max_size=6),
            st.lists(st.integers(0, 15), min_size=2, max_size=5, unique=True).map(sorted),
        ),
    )
    def test_replaced_field_values_match_strict_decoder(self, field: str, value: Any) -> None:
        """Any integer or list as a field value is judged exactly as decode_report judges it."""
        usage = next(p for p in VALID if b'"kind":"usage"' in p)
        items = [_edit(usage, fields={field: value})]
        assert count_plaintexts(items).to_plain() == _reference(items)


class TestCounts:
    """Counts are exact integers and additive over any split of the input."""

    def test_chunking_does_not_change_counts(self) -> None:
        """Chunks of 1, 7 and all items give identical counts."""
        results = [
            count_source(MemorySource(SEALED), PRIVATE, chunk_size=size).to_plain()
            for size in (1, 7, len(SEALED))
        ]
        assert results[0] == results[1] == results[2]

    def test_add_is_exact_and_order_free(self) -> None:
        """Adding the counts of two halves, in either order, equals counting the whole."""
        half = len(SEALED) // 2
        a = count_ciphertexts(SEALED[:half], PRIVATE)
        b = count_ciphertexts(SEALED[half:], PRIVATE)
        whole = count_ciphertexts(SEALED, PRIVATE).to_plain()
        left = Counts().add(a).add(b).to_plain()
        right = Counts().add(b).add(a).to_plain()
        assert left == right == whole

    def test_worker_processes_equal_one_process(self) -> None:
        """Two spawned worker processes give exactly the single-process counts."""
        one = count_source(MemorySource(SEALED), PRIVATE, workers=1, chunk_size=40)
        two = count_source(MemorySource(SEALED), PRIVATE, workers=2, chunk_size=40)
        assert one.to_plain() == two.to_plain()

    def test_workers_from_a_threaded_caller(self) -> None:
        """With another thread running, workers come from a fork server and count the same."""
        import threading

        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            assert _start_method() == "forkserver"
            two = count_source(MemorySource(SEALED), PRIVATE, workers=2, chunk_size=40)
        finally:
            stop.set()
            thread.join()
        assert two.to_plain() == count_source(MemorySource(SEALED), PRIVATE).to_plain()

    def test_progress_sees_every_item(self) -> None:
        """The progress callback is told about every item exactly once."""
        seen: list[int] = []
        count_source(MemorySource(SEALED), PRIVATE, chunk_size=50, on_progress=seen.append)
        assert sum(seen) == len(SEALED)

    @pytest.mark.parametrize("workers", [0, -1, 257, True])
    def test_bad_worker_count_is_refused(self, workers: Any) -> None:
        """A worker count outside [1, 256] is an AggregateError naming it."""
        with pytest.raises(AggregateError, match=r"workers .* must be an integer in \[1, 256\]"):
            count_source(MemorySource(SEALED), PRIVATE, workers=workers)


class TestSources:
    """Stores and Parquet exports are read completely and identically."""

    def test_parquet_export_equals_store(self, tmp_path: Path) -> None:
        """The Parquet export of a store (several days) counts exactly like the store."""
        days = iter([date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)])
        current = {"day": next(days)}
        with Store(tmp_path / "s.sqlite", clock=lambda: current["day"]) as store:
            for start in range(0, len(SEALED), 60):
                store.add_batch(SEALED[start : start + 60])
                current["day"] = next(days, current["day"])
            export(store, tmp_path / "out")
        source = ParquetSource(tmp_path / "out")
        assert len(source.files()) == 3
        assert source.total() == len(SEALED)
        from_parquet = count_source(source, PRIVATE, chunk_size=33).to_plain()
        from_store = count_source(StoreSource(tmp_path / "s.sqlite"), PRIVATE).to_plain()
        assert from_parquet == from_store

    def test_store_source_reads_one_day(self, tmp_path: Path) -> None:
        """StoreSource(day=...) reads only that day's reports."""
        current = {"day": date(2026, 3, 2)}
        with Store(tmp_path / "s.sqlite", clock=lambda: current["day"]) as store:
            store.add_batch(SEALED[:40])
            current["day"] = date(2026, 3, 3)
            store.add_batch(SEALED[40:100])
        source = StoreSource(tmp_path / "s.sqlite", day="2026-03-03")
        assert source.total() == 60
        assert count_source(source, PRIVATE).read == 60

    def test_missing_inputs_are_clear_errors(self, tmp_path: Path) -> None:
        """A missing store, an empty export directory and a file without the column are named."""
        with pytest.raises(AggregateError, match="no store at"):
            StoreSource(tmp_path / "nope.sqlite").total()
        (tmp_path / "empty").mkdir()
        with pytest.raises(AggregateError, match=r"no \*\.parquet files"):
            ParquetSource(tmp_path / "empty").total()
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"other": [1, 2]}), tmp_path / "bad.parquet")
        with pytest.raises(AggregateError, match="no 'ciphertext' column"):
            list(ParquetSource(tmp_path / "bad.parquet").chunks(10))


def _mixed_store(path: Path) -> tuple[int, Counter[str]]:
    """A store over three days with garbage mixed in; returns its size and expected rejects."""
    garbage, expected = _garbage(np.random.default_rng(9))
    mixed = list(SEALED)
    for i, item in enumerate(garbage):
        mixed.insert((11 * i) % len(mixed), item)
    days = iter([date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)])
    current = {"day": next(days)}
    with Store(path, clock=lambda: current["day"]) as store:
        for start in range(0, len(mixed), 70):
            store.add_batch(mixed[start : start + 70])
            current["day"] = next(days, current["day"])
    return len(mixed), expected


class TestWorkerReads:
    """With several workers, stores and Parquet exports are read by the workers themselves."""

    def test_store_workers_equal_one_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two workers reading rowid ranges count exactly like one process, rejects included."""
        n, expected = _mixed_store(tmp_path / "s.sqlite")
        source = StoreSource(tmp_path / "s.sqlite")
        one = count_source(source, PRIVATE)

        def refuse(*args: object) -> None:
            raise AssertionError("the main process read ciphertexts")

        monkeypatch.setattr(StoreSource, "chunks", refuse)
        seen: list[int] = []
        two = count_source(source, PRIVATE, workers=2, chunk_size=37, on_progress=seen.append)
        assert two.to_plain() == one.to_plain()
        assert dict(two.rejects) == dict(expected)
        assert two.read == n
        assert sum(seen) == n == source.total()
        assert len(seen) == -(-n // 37)  # one call per range of 37 reports

    def test_store_workers_read_one_day(self, tmp_path: Path) -> None:
        """A day filter gives each worker only that day's reports, as one process reads them."""
        _mixed_store(tmp_path / "s.sqlite")
        source = StoreSource(tmp_path / "s.sqlite", day="2026-03-03")
        seen: list[int] = []
        two = count_source(source, PRIVATE, workers=2, chunk_size=16, on_progress=seen.append)
        assert two.to_plain() == count_source(source, PRIVATE).to_plain()
        assert sum(seen) == two.read == source.total() == 70

    def test_parquet_workers_equal_one_process(self, tmp_path: Path) -> None:
        """Two workers reading row-group slices count exactly like one process."""
        n, expected = _mixed_store(tmp_path / "s.sqlite")
        with Store(tmp_path / "s.sqlite") as store:
            export(store, tmp_path / "out")
        source = ParquetSource(tmp_path / "out")
        seen: list[int] = []
        two = count_source(source, PRIVATE, workers=2, chunk_size=33, on_progress=seen.append)
        assert two.to_plain() == count_source(source, PRIVATE, chunk_size=33).to_plain()
        assert (
            two.to_plain() == count_source(StoreSource(tmp_path / "s.sqlite"), PRIVATE).to_plain()
        )
        assert dict(two.rejects) == dict(expected)
        assert sum(seen) == n == source.total()

    def test_tasks_cover_every_item_once(self, tmp_path: Path) -> None:
        """Reading every task gives the same items as reading the chunks (a store's in a fresh
        random order each read, so compared as multisets; an export's in its file order)."""
        _mixed_store(tmp_path / "s.sqlite")
        with Store(tmp_path / "s.sqlite") as store:
            export(store, tmp_path / "out")
        for source in (
            StoreSource(tmp_path / "s.sqlite"),
            StoreSource(tmp_path / "s.sqlite", day="2026-03-04"),
            ParquetSource(tmp_path / "out"),
        ):
            from_tasks = [item for task in source.tasks(23) for item in task.read()]
            from_chunks = [item for chunk in source.chunks(23) for item in chunk]
            if isinstance(source, StoreSource):
                from_tasks, from_chunks = sorted(from_tasks), sorted(from_chunks)
            assert from_tasks == from_chunks
            assert all(len(task.read()) <= 23 for task in source.tasks(23))

    def test_worker_connection_is_read_only(self, tmp_path: Path) -> None:
        """The workers' connection refuses writes, and a missing store is named."""
        _mixed_store(tmp_path / "s.sqlite")
        reader = Store.open_read_only(tmp_path / "s.sqlite")
        try:
            with pytest.raises(StoreError, match="cannot write"):
                reader.add_batch([b"x" * 40])
            assert len(reader.read_range(1, 10**9)) == reader.count()
        finally:
            reader.close()
        with pytest.raises(AggregateError, match="no store at"):
            agg.StoreRange(str(tmp_path / "nope.sqlite"), 1, 10).read()


class TestFilters:
    """--kind and --period leave valid reports out and count them as excluded."""

    def test_kind_and_period_filters(self) -> None:
        """Only the asked kind and period are estimated; the others are excluded, not rejected."""
        two_weeks = [seal(p, PUBLIC) for p in _plaintexts(60, seed=3, periods=(PERIOD, "2026-W51"))]
        result = agg.aggregate(
            MemorySource(two_weeks), PRIVATE, kind="usage", period="2026-W51", delta=None
        )
        assert [(g.kind, g.period) for g in result.groups] == [("usage", "2026-W51")]
        assert result.groups[0].n == 60
        assert result.excluded == len(two_weeks) - 60
        assert result.rejected == 0

    @pytest.mark.parametrize(
        ("kind", "period", "message"),
        [
            ("crashes", None, r"kind \('crashes'\) must be one of errors, usage"),
            (None, "2026-13", "must look like 2026-W48"),
            (None, "2026-W54", "is not an ISO week"),
        ],
    )
    def test_bad_filters_are_refused_before_reading(
        self, kind: str | None, period: str | None, message: str
    ) -> None:
        """An unknown kind or a non-week period is an AggregateError naming the value."""
        with pytest.raises(AggregateError, match=message):
            agg.aggregate(MemorySource([]), PRIVATE, kind=kind, period=period)


class TestFinalize:
    """Estimates are the randomizers' own, per group, with the privacy parameters."""

    def test_estimates_are_the_randomizers_estimates(self) -> None:
        """Each field's estimate equals estimate_from_support on the summed support."""
        counts = count_plaintexts(VALID)
        result = finalize(counts, consistency="clip", confidence=0.9, delta=None)
        for group in result.groups:
            support = counts.groups[agg.GroupKey(group.schema_id, group.kind, group.period)]
            for fr in group.fields:
                if fr.derived_from is not None:
                    continue  # os and arch marginals: tests/test_marginals.py
                expected = fr.spec.randomizer().estimate_from_support(
                    support.support[fr.name], group.n, consistency="clip", labels=fr.spec.domain
                )
                np.testing.assert_array_equal(fr.estimate.freq, expected.freq)
                np.testing.assert_array_equal(fr.estimate.std, expected.std)
                assert fr.estimate.labels == fr.spec.domain

    def test_auto_is_the_default_and_chooses_per_field(self) -> None:
        """By default each categorical field gets the step choose_consistency picks from its
        exact covariance; raw and std are the randomizer's whatever the step; sets are clipped."""
        from ldp.consistency import AUTO_CANDIDATES, choose_consistency
        from ldp.covariance import frequency_covariance

        counts = count_plaintexts(VALID)
        result = finalize(counts, delta=None)
        assert result.consistency == "auto"
        for group in result.groups:
            support = counts.groups[agg.GroupKey(group.schema_id, group.kind, group.period)]
            for fr in group.fields:
                if fr.derived_from is not None:
                    continue
                randomizer = fr.spec.randomizer()
                ref = randomizer.estimate_from_support(
                    support.support[fr.name], group.n, consistency="none", labels=fr.spec.domain
                )
                np.testing.assert_array_equal(fr.estimate.raw, ref.raw)
                np.testing.assert_array_equal(fr.estimate.std, ref.std)
                if fr.spec.kind != "categorical":
                    assert fr.estimate.consistency == "clip" and fr.estimate.choice is None
                    continue
                cov = frequency_covariance(randomizer, group.n, np.clip(ref.raw, 0.0, 1.0))
                choice = choose_consistency(ref.raw, cov, randomizer.p_star, randomizer.q_star)
                assert fr.estimate.consistency == choice.method in AUTO_CANDIDATES
                np.testing.assert_array_equal(fr.estimate.freq, choice.freq)
                assert fr.estimate.choice.reason == choice.reason

    def test_privacy_parameters_match_the_budget(self) -> None:
        """Per-report and yearly epsilon are ldp.budget's; the central one needs n and delta."""
        for kind in SCHEMA.kinds:
            info = kind_privacy(SCHEMA, kind.name, n=5000, delta=1e-6)
            assert info.epsilon_report == pytest.approx(per_report_epsilon(kind), rel=1e-12)
            assert info.epsilon_year == pytest.approx(
                sum(spec.year_bound() for spec in kind.fields), rel=1e-12
            )
            assert info.central is not None
            assert 0 < info.central.eps < info.epsilon_report
            assert kind_privacy(SCHEMA, kind.name).central is None

    def test_empty_input_gives_no_groups(self) -> None:
        """No valid report means no groups, not a crash."""
        result = agg.aggregate(MemorySource([b"junk" * 20]), PRIVATE)
        assert result.groups == ()
        assert result.rejects == {"decrypt": 1}

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"consistency": "magic"}, "consistency .* must be one of"),
            ({"confidence": 1.0}, r"confidence \(1.0\) must be in \(0, 1\)"),
            ({"delta": 0.0}, r"delta \(0.0\) must be in \(0, 1\)"),
        ],
    )
    def test_bad_options_are_refused(self, options: dict[str, Any], message: str) -> None:
        """Bad consistency, confidence or delta is an AggregateError naming the value."""
        with pytest.raises(AggregateError, match=message):
            finalize(Counts(), **options)


class TestPrivacyCommand:
    """``20i-agg privacy`` prints the shipped schema's epsilons."""

    def test_prints_every_kind_and_field(self) -> None:
        """Every kind's per-report epsilon and every field appear, with the central bound."""
        from server_agg.app import app

        result = CliRunner().invoke(app, ["privacy", "--n", "20000", "--delta", "1e-6"])
        assert result.exit_code == 0, result.output
        for kind in SCHEMA.kinds:
            info = kind_privacy(SCHEMA, kind.name, 20000, 1e-6)
            assert f"one report: ε = {info.epsilon_report:.4g}" in result.output
            assert info.central is not None
            assert f"({info.central.eps:.4g}, 1e-06)-DP" in result.output
            for spec in kind.fields:
                assert spec.name in result.output
            assert (
                f"any 52 weeks, whatever the values do (proven bound): ε = {info.epsilon_year:.4g}"
                in result.output
            )
        assert "do not collude" in result.output

    def test_json_has_year_bounds_per_kind_and_total(self) -> None:
        """--json gives per-kind and total bounds over any 52 weeks, equal to the fields' sum."""
        from server_agg.app import app

        result = CliRunner().invoke(app, ["privacy", "--json", "--n", "5000"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["schema"]["id"] == SCHEMA.id
        total = 0.0
        for kind in SCHEMA.kinds:
            bound = sum(spec.year_bound() for spec in kind.fields)
            assert doc["kinds"][kind.name]["year"] == pytest.approx(bound)
            assert doc["year"]["kinds"][kind.name] == pytest.approx(bound)
            total += bound
        assert doc["year"]["total"] == pytest.approx(total) and total <= 20.0
        assert "do not collude" in doc["central_assumption"]

    def test_bad_delta_is_one_line_error(self) -> None:
        """A delta outside (0, 1) is one error line and exit code 1."""
        from server_agg.app import app

        result = CliRunner().invoke(app, ["privacy", "--delta", "2"])
        assert result.exit_code == 1
        assert "--delta (2.0) must be in (0, 1)" in result.output
