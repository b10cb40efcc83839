"""Tests for server_agg.render: JSON and CSV carry the documented columns and the same numbers,
the HTML report is self-contained with one chart per field and period, the table shows truth."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from ldp.envelope import generate_keypair, seal
from server_agg.aggregate import AggregateResult, MemorySource, aggregate
from server_agg.render import CSV_COLUMNS, FORMATS, render, to_csv, to_dict, to_html, to_table
from server_agg.simulate import GeneratorSource, make_population

PRIVATE, PUBLIC = generate_keypair()
PERIODS = ("2026-W50", "2026-W51")
POPULATION = make_population(300, seed=21, periods=PERIODS)
SEALED = [seal(p, PUBLIC) for p in POPULATION.reports(GeneratorSource(np.random.default_rng(22)))]
GARBAGE = [b"\x00" * 60, b"\x01" * 70]
RESULT: AggregateResult = aggregate(MemorySource(SEALED + GARBAGE), PRIVATE, delta=1e-6)
TRUTH = POPULATION.truth()


def _answer_rows(text: str) -> list[dict[str, str]]:
    """The CSV's rows of the answer (``view`` = ``estimate``); the trend rows after them are
    tested in tests/test_trends.py."""
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["view"] for r in rows} <= {"estimate", "trend"}
    return [r for r in rows if r["view"] == "estimate"]


def _items_per_group(result: AggregateResult) -> int:
    return sum(fr.estimate.d for g in result.groups for fr in g.fields)


class TestJson:
    """The JSON document has the documented layout and the estimator's numbers."""

    def test_layout_and_numbers(self) -> None:
        """Top-level keys, report totals and every item's numbers match the result."""
        doc = json.loads(render(RESULT, "json"))
        assert doc["format"] == "20i-agg/aggregate"
        assert doc["version"] == 1
        assert doc["reports"] == {
            "read": len(SEALED) + 2,
            "accepted": len(SEALED),
            "excluded": 0,
            "rejected": 2,
            "rejects": {"decrypt": 2},
        }
        assert [(g["kind"], g["period"]) for g in doc["groups"]] == [
            ("errors", PERIODS[0]),
            ("errors", PERIODS[1]),
            ("usage", PERIODS[0]),
            ("usage", PERIODS[1]),
        ]
        for g, group in zip(doc["groups"], RESULT.groups, strict=True):
            assert g["n"] == group.n
            assert g["privacy"]["central"]["delta"] == 1e-6
            for f, fr in zip(g["fields"], group.fields, strict=True):
                low, high = fr.estimate.ci(0.95)
                assert [i["value"] for i in f["items"]] == list(fr.spec.domain)
                assert [i["estimate"] for i in f["items"]] == fr.estimate.freq.tolist()
                assert [i["ci_low"] for i in f["items"]] == low.tolist()
                assert [i["ci_high"] for i in f["items"]] == high.tolist()
                assert [i["support"] for i in f["items"]] == list(fr.support)
                assert set(f["items"][0]) == {
                    "value",
                    "estimate",
                    "ci_low",
                    "ci_high",
                    "significant",
                    "interval_low",
                    "interval_high",
                    "p_top3",
                    "raw",
                    "std",
                    "support",
                }

    def test_truth_adds_truth_and_covered(self) -> None:
        """With a truth every item carries it and whether its CI covers it."""
        doc = to_dict(RESULT, TRUTH)
        item = doc["groups"][0]["fields"][0]["items"][0]
        key = (doc["groups"][0]["kind"], doc["groups"][0]["period"], "error_category")
        assert item["truth"] == TRUTH[key][0]
        assert item["covered"] == (item["ci_low"] <= item["truth"] <= item["ci_high"])

    def test_truth_of_wrong_length_is_refused(self) -> None:
        """A truth vector that does not match the field's values is an error, not a bad chart."""
        bad = {("usage", PERIODS[0], "platform"): [0.5, 0.5]}
        with pytest.raises(ValueError, match="truth for usage/2026-W50/platform has 2 values"):
            to_dict(RESULT, bad)


class TestCsv:
    """The CSV has the documented header and one row per group, field and value."""

    def test_header_and_rows(self) -> None:
        """Header equals CSV_COLUMNS; rows cover every value; numbers round-trip."""
        rows = _answer_rows(to_csv(RESULT))
        assert list(rows[0]) == list(CSV_COLUMNS)
        assert len(rows) == _items_per_group(RESULT)
        usage = RESULT.group("usage", PERIODS[1])
        os_rows = [r for r in rows if r["field"] == "platform" and r["period"] == PERIODS[1]]
        assert [r["value"] for r in os_rows] == list(usage.field("platform").spec.domain)
        np.testing.assert_allclose(
            [float(r["estimate"]) for r in os_rows],
            usage.field("platform").estimate.freq,
            rtol=1e-5,
        )
        assert {r["significant"] for r in rows} <= {"true", "false"}
        assert all(int(r["n"]) > 0 for r in rows)

    def test_truth_columns(self) -> None:
        """With a truth the two extra columns come last."""
        header = to_csv(RESULT, TRUTH).splitlines()[0].split(",")
        assert header == [*CSV_COLUMNS, "truth", "covered"]


class _Collector(HTMLParser):
    """Collects tags and attributes of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


class TestHtml:
    """The HTML report is self-contained and has one chart per field and period."""

    def test_one_chart_per_field_and_period(self) -> None:
        """Every (kind, period, field) has its svg chart with one row per value."""
        page = to_html(RESULT, TRUTH)
        parser = _Collector()
        parser.feed(page)
        charts = [a for t, a in parser.tags if t == "svg" and a.get("class") == "field-chart"]
        expected = {(g.kind, g.period, fr.name) for g in RESULT.groups for fr in g.fields}
        found = {(a["data-kind"], a["data-period"], a["data-field"]) for a in charts}
        assert found == expected
        assert len(charts) == len(expected)
        rows = [a for t, a in parser.tags if t == "g" and a.get("class") == "row"]
        assert len(rows) == _items_per_group(RESULT)

    def test_no_external_resources(self) -> None:
        """No scripts, links, images or remote URLs; a CSP forbids them anyway."""
        page = to_html(RESULT)
        parser = _Collector()
        parser.feed(page)
        tags = {t for t, _ in parser.tags}
        assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
        for _, attrs in parser.tags:
            for name, value in attrs.items():
                assert name not in ("src", "href")
                if name != "xmlns":
                    assert "://" not in (value or "")
        assert "default-src 'none'" in page
        assert not re.search(r"url\(", page)

    def test_rejects_privacy_and_counts_are_shown(self) -> None:
        """Read/used/rejected counts, the reject reasons and the central epsilon are on the page."""
        page = to_html(RESULT)
        assert f"<b>{len(SEALED) + 2:,}</b>read" in page
        assert "<td>decrypt</td><td>2</td>" in page
        for group in RESULT.groups:
            central = group.privacy.central
            assert central is not None
            assert f"after shuffling these {central.n:,} reports" in page

    def test_labels_are_escaped(self) -> None:
        """Text from the input (the source description) is HTML-escaped."""
        from dataclasses import replace

        page = to_html(replace(RESULT, source="<script>alert(1)</script>"))
        assert "<script>" not in page
        assert "&lt;script&gt;" in page

    def test_empty_result_renders(self) -> None:
        """A result without valid reports still renders a page that says so."""
        empty = aggregate(MemorySource(GARBAGE), PRIVATE)
        page = to_html(empty)
        assert "No valid reports" in page
        assert "<svg" not in page


class TestTable:
    """The terminal table lists every field's values, and the truth when given."""

    def test_fields_values_and_truth(self) -> None:
        """Each field heading appears; with a truth, each field says how many CIs cover it."""
        text = to_table(RESULT, TRUTH, width=120)
        for group in RESULT.groups:
            for fr in group.fields:
                assert f"{group.kind} {group.period} · {fr.name}" in text
        assert text.count("drawn interval covers the truth for") == len(TRUTH)
        assert "rejected (decrypt 2)" in text

    def test_wrong_key_hint(self) -> None:
        """When nothing decrypts, the table says the key is probably the wrong one."""
        other, _ = generate_keypair()
        result = aggregate(MemorySource(SEALED[:20]), other)
        assert "every report failed to decrypt: is --key the private key" in to_table(result)

    def test_render_dispatch(self) -> None:
        """render() knows exactly the documented formats."""
        for fmt in FORMATS:
            assert render(RESULT, fmt)
        with pytest.raises(ValueError, match=r"format .* must be one of table, json, csv, html"):
            render(RESULT, "xml")


class TestCentralAssumption:
    """The central epsilon after shuffling is never printed without its assumption (issue 14)."""

    def test_every_format_states_it(self) -> None:
        """Table, JSON (per group) and HTML say, next to the central epsilon, that it assumes
        the collector and the analyzer do not collude and that reports are stored unordered."""
        from server_agg.analyzer_cli import CENTRAL_ASSUMPTION as cli_text
        from server_agg.render import CENTRAL_ASSUMPTION

        assert cli_text is CENTRAL_ASSUMPTION  # one constant
        assert "do not collude" in CENTRAL_ASSUMPTION and "unordered" in CENTRAL_ASSUMPTION
        centrals = [g["privacy"]["central"] for g in to_dict(RESULT)["groups"]]
        assert centrals and all(c["assumption"] == CENTRAL_ASSUMPTION for c in centrals)
        table = " ".join(to_table(RESULT, width=400).split())
        assert table.count("after shuffling") == table.count(CENTRAL_ASSUMPTION) == len(centrals)
        page = to_html(RESULT)
        assert page.count("after shuffling") == page.count(CENTRAL_ASSUMPTION) == len(centrals)


def _fields(result: AggregateResult) -> list[tuple[str, str, str]]:
    return [(g.kind, g.period, fr.name) for g in result.groups for fr in g.fields]


class TestSignificanceAgreesWithPicture:
    """Every format calls a value significant exactly when its shown interval starts above 0."""

    def test_json_verdict_is_the_interval_and_keeps_the_old_test(self) -> None:
        """JSON: significant <=> interval_low > 0, the same verdicts as the estimate's own test."""
        doc = to_dict(RESULT, TRUTH)
        verdicts = []
        for g, group in zip(doc["groups"], RESULT.groups, strict=True):
            for f, fr in zip(g["fields"], group.fields, strict=True):
                assert f["significance"]["rule"] == "bonferroni"
                assert f["significance"]["level"] == 0.95
                assert "Bonferroni-adjusted" in f["significance"]["sentence"]
                old = fr.estimate.significant(0.95).tolist()
                assert [i["significant"] for i in f["items"]] == old
                for item in f["items"]:
                    verdicts.append(item["significant"])
                    assert item["significant"] == (item["interval_low"] > 0)
                    assert item["interval_low"] <= item["raw"] <= item["interval_high"] or (
                        item["raw"] < 0 or item["raw"] > 1
                    )
        assert True in verdicts and False in verdicts  # both cases are exercised

    def test_csv_verdict_is_the_interval(self) -> None:
        """CSV: the significant column is true exactly when interval_low is above 0."""
        rows = _answer_rows(to_csv(RESULT))
        assert {r["significance_rule"] for r in rows} == {"bonferroni"}
        for r in rows:
            assert (r["significant"] == "true") == (float(r["interval_low"]) > 0)

    def test_table_verdict_is_the_printed_interval(self) -> None:
        """Table: "yes" exactly when the printed interval's low end is above 0; one sentence
        per field says what significant means."""
        # Without the trend tables (tests/test_trends.py), whose rows have no verdict column.
        text = to_table(dataclasses.replace(RESULT, trends=()), TRUTH, width=160)
        rows = [
            [c.strip() for c in line.strip("│").split("│")]
            for line in text.splitlines()
            if line.startswith("│")
        ]
        assert len(rows) == _items_per_group(RESULT)
        for row in rows:
            low = float(re.match(r"\[([0-9.]+)%,", row[2]).group(1))  # type: ignore[union-attr]
            assert (row[3] == "yes") == (low > 0), row
        assert text.count("Significant = the 95% interval, Bonferroni-adjusted over the") == len(
            _fields(RESULT)
        )

    def test_html_colour_is_the_drawn_whisker(self) -> None:
        """HTML: a bar is dark exactly when its whisker starts right of the axis and its
        tooltip's interval starts above 0; every chart carries the sentence."""
        page = to_html(RESULT, TRUTH)
        rows = re.findall(r'<g class="row".*?</g>', page)
        assert len(rows) == _items_per_group(RESULT)
        for row in rows:
            bar = re.search(r'<rect class="bar( weak)?" x="([0-9.]+)"', row)
            whisker = re.search(r'<line class="whisker" x1="([0-9.]+)"', row)
            tip = re.search(r"interval \[([0-9.]+)%,", row)
            assert bar and whisker and tip
            dark = bar.group(1) is None
            assert dark == (float(whisker.group(1)) > float(bar.group(2))), row
            assert dark == (float(tip.group(1)) > 0), row
        assert page.count('<p class="note significance">Significant = the 95% interval') == len(
            _fields(RESULT)
        )


class TestRanking:
    """Each field's ranking is in every format, seeded, and computed from the exact covariance."""

    def test_json_ranking_per_field(self) -> None:
        """A ranking object per field whose top-k probabilities match the items' p_top3."""
        doc = to_dict(RESULT)
        for g in doc["groups"]:
            for f in g["fields"]:
                ranking = f["ranking"]
                d = len(f["items"])
                assert ranking["k"] == min(3, d)
                assert len(ranking["top"]) == min(d, ranking["k"] + 2)
                p_top = {i["value"]: i["p_top3"] for i in f["items"]}
                for entry in ranking["top"]:
                    assert entry["top_k_probability"] == p_top[entry["value"]]
                # Every draw has exactly k values in its top k.
                assert sum(p_top.values()) == pytest.approx(ranking["k"], abs=1e-9)
                assert all(0.5 <= p["confidence"] <= 1 for p in ranking["pairs"])

    def test_reproducible(self) -> None:
        """The same result renders the same rankings (seeded draws)."""
        first = [f["ranking"] for g in to_dict(RESULT)["groups"] for f in g["fields"]]
        second = [f["ranking"] for g in to_dict(RESULT)["groups"] for f in g["fields"]]
        assert first == second

    def test_pair_confidence_uses_the_exact_covariance(self) -> None:
        """A pair statement's confidence is Phi(diff / sd(diff)) with ldp.covariance's matrix."""
        from statistics import NormalDist

        from ldp.covariance import estimate_covariance

        group = RESULT.group("usage", PERIODS[0])
        fr = group.field("command")
        doc = to_dict(RESULT)
        g = next(x for x in doc["groups"] if (x["kind"], x["period"]) == ("usage", PERIODS[0]))
        pair = next(f for f in g["fields"] if f["name"] == "command")["ranking"]["pairs"][0]
        cov = estimate_covariance(fr.estimate, fr.spec.randomizer())
        a, b = fr.spec.domain.index(pair["more"]), fr.spec.domain.index(pair["less"])
        sd = float(np.sqrt(cov[a, a] + cov[b, b] - 2 * cov[a, b]))
        diff = float(fr.estimate.raw[a] - fr.estimate.raw[b])
        assert pair["confidence"] == pytest.approx(NormalDist().cdf(diff / sd), abs=1e-12)

    def test_derived_marginal_covariance_matches_its_std(self) -> None:
        """os/arch (sums of platform cells) get A C A^T, whose diagonal is close to the
        marginal's own analytic variance (the two plug in slightly different frequencies)."""
        from server_agg.readout import field_covariance

        group = RESULT.group("usage", PERIODS[0])
        for name in ("os", "arch"):
            fr = group.field(name)
            assert fr.derived_from == "platform"
            cov = field_covariance(group, fr)
            np.testing.assert_allclose(np.sqrt(np.diag(cov)), fr.estimate.std, rtol=0.1)

    def test_csv_table_and_html_show_it(self) -> None:
        """CSV has p_top3 per value; the table and the page list the ranking per field."""
        rows = _answer_rows(to_csv(RESULT))
        doc = to_dict(RESULT)
        expected = [i["p_top3"] for g in doc["groups"] for f in g["fields"] for i in f["items"]]
        np.testing.assert_allclose([float(r["p_top3"]) for r in rows], expected, rtol=1e-5)
        n_fields = len(_fields(RESULT))
        assert to_table(RESULT, width=160).count("in the top 3 (probability): ") == n_fields
        page = to_html(RESULT)
        assert page.count('<ul class="ranking note">') == n_fields
        assert "is used more than" in page


class TestConsistencyChoice:
    """The step each field got, and why, is in every format (auto is the default)."""

    def test_json_names_the_step_and_its_reason(self) -> None:
        """Categorical fields carry auto's choice; sets say clip; marginals follow platform."""
        from ldp.consistency import AUTO_CANDIDATES

        doc = to_dict(RESULT)
        assert doc["consistency"] == "auto"
        seen = set()
        for g, group in zip(doc["groups"], RESULT.groups, strict=True):
            for f, fr in zip(g["fields"], group.fields, strict=True):
                assert f["consistency"] == fr.estimate.consistency
                if fr.derived_from is not None:
                    assert f["consistency"] == group.field(fr.derived_from).estimate.consistency
                    assert f["consistency_choice"] is None
                    seen.add("derived")
                elif fr.spec.kind == "set":
                    assert f["consistency"] == "clip" and f["consistency_choice"] is None
                    seen.add("set")
                else:
                    choice = f["consistency_choice"]
                    assert choice["method"] == f["consistency"] in AUTO_CANDIDATES
                    assert choice["reason"] in f["consistency_note"]
                    seen.add("auto")
        assert seen == {"derived", "set", "auto"}

    def test_csv_table_and_html_say_it_per_field(self) -> None:
        """CSV has the step and note per row; the table and the page one line per field."""
        rows = _answer_rows(to_csv(RESULT))
        steps = {(r["period"], r["field"]): r["consistency_step"] for r in rows}
        for group in RESULT.groups:
            for fr in group.fields:
                assert steps[(group.period, fr.name)] == fr.estimate.consistency
        assert all(r["consistency_note"].startswith("consistency: ") for r in rows)
        n_fields = len(_fields(RESULT))
        text = to_table(RESULT, width=200)
        assert text.count("consistency: ") == n_fields
        assert text.count("consistency: auto chose ") >= 1
        assert to_html(RESULT).count('<p class="note consistency">consistency: ') == n_fields

    def test_fixed_step_is_named_as_asked(self) -> None:
        """With a fixed --consistency the line names it and no choice is reported."""
        fixed = aggregate(MemorySource(SEALED), PRIVATE, delta=None, consistency="norm-sub")
        doc = to_dict(fixed)
        fields = [f for g in doc["groups"] for f in g["fields"]]
        assert all(f["consistency_choice"] is None for f in fields)
        assert "consistency: norm-sub (--consistency norm-sub)" in to_table(fixed, width=200)
