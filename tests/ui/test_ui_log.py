"""The log viewer with a 1,000,000-line output in a real Chromium (SPEC §12: the page never holds
a DOM node per line; search reaches the last line), and a log larger than one window read window
by window through ``?offset=``."""
from __future__ import annotations

import time

import pytest

from .ui_browser import _browser, _page, _ui  # noqa: F401 - the fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]
expect = pytest.importorskip("playwright.sync_api").expect

def current_line(page):
    """The line number of the row holding the current match."""
    return page.locator(".log-row", has=page.locator("mark.hit.current")).locator(".log-num")


MILLION = {"million.yml": {"command": "seq 1 1000000 | sed 's/^/line /'"}}


def test_a_million_lines_stay_usable_and_search_reaches_the_last(ui, page):
    a = ui(MILLION)
    run = a.post("/jobs/million").json()
    a.finished("million", run["id"])
    assert a.get("/jobs/million/1/stdout").content.count(b"\n") == 1_000_000
    started = time.monotonic()
    page.goto(f"{a.base}/ui/jobs/million/1")
    log = page.get_by_role("log")
    expect(log.locator(".log-num").first).to_have_text("1")
    first_lines = time.monotonic() - started
    expect(page.locator('[data-log="info"]')).to_contain_text("1,000,000 lines", timeout=60_000)
    loaded = time.monotonic() - started
    rows = page.evaluate("document.querySelectorAll('.log-row').length")
    nodes = page.evaluate("document.getElementsByTagName('*').length")
    assert rows < 120 and nodes < 800, (rows, nodes)  # a node per visible line, not per line
    search = page.get_by_label("Search")
    search.fill("line 1000000")
    started = time.monotonic()
    search.press("Enter")
    expect(page.locator("mark.hit.current")).to_have_text("line 1000000")
    found = time.monotonic() - started
    expect(current_line(page)).to_have_text("1000000")
    expect(page.locator("#log-matches")).to_have_text("1 of 1")
    search.fill("line 4242")  # 111 lines: 4242, 42420..42429 and 424200..424299
    search.press("Enter")
    expect(page.locator("#log-matches")).to_have_text("1 of 111")
    search.press("Enter")
    expect(current_line(page)).to_have_text("42420")
    search.press("Shift+Enter")
    expect(current_line(page)).to_have_text("4242")
    page.goto(f"{a.base}/ui/jobs/million/1#L777777")  # a permalink deep into it
    expect(page.locator(".log-row.is-target .log-text")).to_have_text("line 777777", timeout=60_000)
    page.locator(".log-body").focus()
    page.keyboard.press("End")
    expect(page.locator(".log-row:not([hidden]) .log-text").last).to_have_text("line 1000000")
    assert page.evaluate("document.querySelectorAll('.log-row').length") < 120
    print(f"\n1,000,000 lines: first lines {first_lines:.2f} s, all read {loaded:.2f} s, "
          f"search to the last line {found:.3f} s, {rows} rows and {nodes} elements in the page")


def test_a_log_larger_than_a_window_is_read_window_by_window(ui, page):
    a = ui({"big.yml": {"command": "seq 1 200000"}})
    run = a.post("/jobs/big").json()
    a.finished("big", run["id"])
    size = len(a.get("/jobs/big/1/output").content)
    offsets = []
    page.on("request", lambda r: "/ui/jobs/big/1/output?offset=" in r.url
            and offsets.append(int(r.url.rsplit("=", 1)[1])))
    page.add_init_script("window.OVERSEER_LOG_WINDOW = 300000")  # bytes: a window of a test's size
    page.goto(f"{a.base}/ui/jobs/big/1")
    expect(page.locator('[data-log="info"]')).to_contain_text(" of ")  # the first window only
    assert offsets == [0]
    page.locator(".log-body").focus()
    page.keyboard.press("End")  # following the end reads the rest, window after window
    expect(page.locator('[data-log="info"]')).to_have_text(f"200,000 lines · {size / 1024 / 1024:.1f} MB")
    assert offsets == [n * 300000 for n in range(-(-size // 300000))], offsets
    expect(page.locator(".log-row:not([hidden]) .log-text").last).to_have_text("200000")
    page.get_by_label("Search").fill("100000")
    page.get_by_label("Search").press("Enter")
    expect(current_line(page)).to_have_text("100000")
