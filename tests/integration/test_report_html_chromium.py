"""The HTML report in a real headless Chromium: hostile names stay text, charts draw.

The test setup installs Debian's ``chromium`` when /usr/bin/chromium is missing, and
drives it with Playwright for Python (no browser download). The screenshots are kept
in ``test-artifacts/`` at the top of the repository for people to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from report_support import HOSTILE, T0, S, record_service

import holter.testing
from holter.reports import report
from holter.store.sqlite import Store

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ensure_chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("Chromium is missing and cannot be installed here (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True,
                   timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env,
                   capture_output=True, timeout=900)
    assert os.path.exists(CHROMIUM), "apt-get installed no /usr/bin/chromium"
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    path = ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def hostile_html(tmp_path_factory) -> Path:
    """A report whose app, tag values, span names and title are all hostile strings."""
    folder = tmp_path_factory.mktemp("hostile")
    db = str(folder / "hostile.db")
    end = record_service(db, minutes=5, app=HOSTILE[0], routes=HOSTILE[1:5])
    with holter.testing.FakeClock(start_ns=T0 + 60 * S) as clock, \
            holter.testing.monitor(db=db, app=HOSTILE[5]) as mon:
        for name in HOSTILE:
            with mon.span(name, **{"x": name}):
                clock.advance(0.01)
            mon.counter("events").inc(kind=name)
        mon.flush()
    store = Store.open(db, create=False)
    try:
        out = folder / "hostile.html"
        report(store, output=out, period="1h", title=HOSTILE[4],
               now_ns=end + S)  # type: ignore[arg-type]
    finally:
        store.close()
    return out


def open_page(browser, path: Path, width: int = 1280):
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: problems.append(f"request: {r.url}")
            if not r.url.startswith(("file:", "data:", "about:")) else None)
    page.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page.goto(path.as_uri())
    page.wait_for_function("window.chartReady === true", timeout=15000)
    return page, problems


def test_hostile_names_stay_text_and_the_page_renders(browser, hostile_html: Path) -> None:
    html = hostile_html.read_text()
    for text in HOSTILE[:2]:
        assert text not in html, f"{text!r} reached the page unescaped"
    page, problems = open_page(browser, hostile_html)
    try:
        assert page.evaluate("window.__pwned") is None, "a hostile string ran as code"
        assert page.evaluate("window.__violations") == [], "something tried to run or load"
        assert problems == []
        assert page.evaluate("window.chartErrors || 0") == 0
        # only the two inline scripts holter wrote, no element made of data
        assert page.evaluate("document.scripts.length") == 3  # + the JSON data block
        assert page.evaluate("document.querySelectorAll('img, svg, iframe, a').length") == 0
        # the hostile strings are shown, as text
        body = page.inner_text("body")
        for text in HOSTILE:
            assert text in body, text
        assert page.inner_text("h1") == HOSTILE[4]
        # real charts: uPlot drew canvases with the hostile route names in their legends
        assert page.evaluate("document.querySelectorAll('.uplot canvas').length") >= 3
        legends = page.evaluate(
            "Array.from(document.querySelectorAll('.u-legend .u-label')).map(e => e.textContent)")
        assert "p95" in legends
        # tables sort on a click
        first = "document.querySelector('#metrics-table tbody tr td').textContent"
        page.click("#metrics-table thead th:nth-child(4)")
        page.click("#metrics-table thead th:nth-child(4)")
        assert isinstance(page.evaluate(first), str)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-hostile.png"), full_page=True)
    finally:
        page.close()


def test_report_is_readable_on_a_phone(browser, hostile_html: Path) -> None:
    page, problems = open_page(browser, hostile_html, width=390)
    try:
        assert problems == []
        # the page does not scroll sideways: wide tables scroll inside their own box
        assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
        widths = page.evaluate(
            "Array.from(document.querySelectorAll('.uplot'))"
            ".map(e => e.getBoundingClientRect().right)")
        assert widths and max(widths) <= 390
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-phone.png"), full_page=False)
    finally:
        page.close()
