"""The HTML report in a real headless browser: Debian's Chromium, driven by Playwright.

Skipped when /usr/bin/chromium is missing, unless TWENTYI_REQUIRE_BROWSER=1 (set by .ci/run),
in which case a missing browser is a failure: in CI this test can never be skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ldp.envelope import generate_keypair, seal
from server_agg.aggregate import AggregateResult, MemorySource, aggregate
from server_agg.render import to_html
from server_agg.simulate import GeneratorSource, make_population

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PERIODS = ("2026-W50", "2026-W51")


def _result() -> tuple[AggregateResult, dict[tuple[str, str, str], list[float]]]:
    private, public = generate_keypair()
    population = make_population(250, seed=31, periods=PERIODS)
    sealed = [
        seal(p, public) for p in population.reports(GeneratorSource(np.random.default_rng(3)))
    ]
    result = aggregate(MemorySource([*sealed, b"\x07" * 80]), private, delta=1e-6)
    return result, population.truth()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (skipped without it, unless CI requires it)."""
    if not CHROMIUM.exists():
        if os.environ.get("TWENTYI_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and TWENTYI_REQUIRE_BROWSER=1 requires it")
        pytest.skip(f"{CHROMIUM} is not installed (CI installs it and requires this test)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AggregateResult]:
    """The HTML report of two periods of both kinds, with a simulated truth, on disk."""
    result, truth = _result()
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(to_html(result, truth), encoding="utf-8")
    return path, result


class TestReportInChromium:
    """The report loads cleanly and shows every chart."""

    def test_no_console_errors_and_every_chart_drawn(
        self, browser: Any, report: tuple[Path, AggregateResult]
    ) -> None:
        """No console message, page error or network request; every field's chart is visible."""
        path, result = report
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        messages: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri(), wait_until="load")
        assert messages == []
        assert requests == [path.as_uri()]  # the page itself, nothing else
        for group in result.groups:
            for fr in group.fields:
                selector = (
                    f'svg.field-chart[data-kind="{group.kind}"]'
                    f'[data-period="{group.period}"][data-field="{fr.name}"]'
                )
                chart = page.locator(selector)
                assert chart.count() == 1, selector
                box = chart.bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 100
                assert chart.locator("g.row").count() == fr.estimate.d
                bars = chart.locator("rect.bar")
                assert bars.count() == fr.estimate.d
        page.close()

    def test_bars_are_proportional_to_estimates(
        self, browser: Any, report: tuple[Path, AggregateResult]
    ) -> None:
        """Within a chart, rendered bar widths are in the ratio of the estimates."""
        path, result = report
        page = browser.new_page()
        page.goto(path.as_uri())
        group = result.group("usage", PERIODS[0])
        fr = group.field("os")
        chart = page.locator(
            f'svg.field-chart[data-period="{PERIODS[0]}"][data-field="os"][data-kind="usage"]'
        )
        widths = [
            float(w)
            for w in chart.locator("rect.bar").evaluate_all(
                "els => els.map(e => e.getBBox().width)"
            )
        ]
        top = int(np.argmax(fr.estimate.freq))
        for width, freq in zip(widths, fr.estimate.freq, strict=True):
            # SVG coordinates are written with one decimal: 0.05 units of rounding per bar.
            assert width == pytest.approx(widths[top] * freq / fr.estimate.freq[top], abs=0.11)
        page.close()

    def test_trend_charts_are_drawn_inside_their_plot(
        self, browser: Any, report: tuple[Path, AggregateResult]
    ) -> None:
        """Every field's trend chart is visible, two fit side by side on a wide page, and each
        drawn line's points lie inside the chart, their band around them."""
        path, result = report
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(path.as_uri())
        charts = page.locator("svg.trend-chart")
        expected = sum(len(t.fields) for t in result.trends)
        assert expected > 0 and charts.count() == expected
        boxes = [charts.nth(i).bounding_box() for i in range(charts.count())]
        assert all(b is not None and b["width"] > 300 and b["height"] > 100 for b in boxes)
        tops = [b["y"] for b in boxes if b is not None]
        assert len(set(tops)) < len(tops)  # some charts share a row
        for i in range(charts.count()):
            chart = charts.nth(i)
            inside = chart.evaluate(
                """svg => {
                  const view = svg.viewBox.baseVal;
                  const lines = [...svg.querySelectorAll('polyline.line')];
                  return lines.length > 0 && lines.every(line => {
                    const b = line.getBBox();
                    const band = line.previousElementSibling.getBBox();
                    return b.x >= 0 && b.y >= 0 && b.x + b.width <= view.width
                      && b.y + b.height <= view.height
                      && band.y <= b.y + 0.5 && band.y + band.height >= b.y + b.height - 0.5;
                  });
                }"""
            )
            assert inside, i
        page.close()
