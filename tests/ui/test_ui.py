"""The web UI in a real Chromium (SPEC §12): the jobs list and its filter, a run started from the
typed run form landing on its live log, a refused value showing the server's own message, the
signal buttons, ANSI colours, and the live state and events. Real server, real jobs, real browser."""
from __future__ import annotations

import re

import pytest

from ..waiting import wait_finished, wait_for
from .ui_browser import _browser, _page, _ui  # noqa: F401 - the fixtures

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

GATE = "while [ ! -e {{ gate }} ]; do sleep 0.05; done"
TYPED = {
    "description": "every kind of field",
    "command": ("echo n={{ n }}; echo ratio={{ ratio }}; echo flag={{ flag }}; echo color={{ color }}; "
                "echo items {{ items }}; echo when={{ when }}; echo conf={{ conf }}; echo who={{ who }}; "
                + GATE + "; echo done"),
    "vars": [{"name": "n", "type": "int", "default": 3, "description": "how many"},
             {"name": "ratio", "type": "float", "default": 0.5},
             {"name": "flag", "type": "bool", "default": False},
             {"name": "color", "type": "enum", "values": ["red", "blue"], "default": "red"},
             {"name": "items", "type": "seq", "default": ["a", "b"]},
             {"name": "when", "type": "timestamp", "default": "2026-01-02T03:04:05Z"},
             {"name": "conf", "type": "map", "default": {"k": "v"}},
             {"name": "who", "type": "str", "default": "world"},
             {"name": "gate", "type": "str", "default": "/nonexistent"}],
}
ANSI = (r"printf '\033[31mred\033[0m plain \033[1;38;5;208mbold256\033[0m \033[38;2;10;200;30mtrue\033[0m"
        r" <b>tag</b> &amp;\n\033[32mgreen\ncarried\033[0m \033[4;3munder\033[0m\n"
        r"\033]0;a title\007\033[2Kprogress 10%%\rprogress 100%%\n'")
JOBS = {
    "greet.yml": {"command": "echo hello {{ who }}", "description": "says hello",
                  "vars": [{"name": "who", "default": "world"}]},
    "report.yml": {"command": "echo report", "description": "the nightly report",
                   "schedule": [{"frequency": "0 3 * * *"}]},
    "typed.yml": TYPED,
    "ticker.yml": {"command": "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"},
    "ansi.yml": {"command": ANSI},
    "team/backup.yaml": {"command": "echo backup >&2; exit 3", "description": "fails on purpose"},
    "long.yml": {"command": "printf 'word %.0s' $(seq 1 300); echo; echo short"},
}


def rows(page) -> list[str]:
    return page.locator(".jobs-table tbody .job-name").all_inner_texts()


def row_height(page, line: int) -> float:
    return page.locator(".log-row", has=page.locator(".log-num", has_text=re.compile(f"^{line}$"))).evaluate(
        "el => el.getBoundingClientRect().height")


def test_the_jobs_page_lists_every_job_and_the_filter_narrows_it(ui, page):
    a = ui(JOBS)
    assert a.post("/jobs/team.backup").status_code == 201
    a.finished("team.backup", 1)
    page.goto(a.base + "/")
    expect(page).to_have_url(a.base + "/ui/")
    expect(page.locator(".jobs-table tbody tr")).to_have_count(7)
    assert rows(page) == ["ansi", "greet", "long", "report", "team.backup", "ticker", "typed"]
    backup = page.locator("tr", has=page.get_by_role("link", name="team.backup", exact=True))
    expect(backup.locator(".badge")).to_have_text("fail")
    expect(backup).to_contain_text("fails on purpose")
    expect(page.locator("tr", has_text="report").locator("time")).to_have_count(1)  # its next run
    page.keyboard.press("/")
    expect(page.get_by_label("Filter")).to_be_focused()
    page.keyboard.type("nightly")  # descriptions count too
    expect(page.locator(".jobs-table tbody tr")).to_have_count(1)
    assert rows(page) == ["report"]
    expect(page).to_have_url(re.compile(r"/ui/\?q=nightly$"))
    page.get_by_label("Filter").fill("zzz")
    expect(page.locator(".empty")).to_contain_text("No job matches “zzz”")
    page.get_by_label("Filter").fill("")
    expect(page.locator(".jobs-table tbody tr")).to_have_count(7)


def test_a_run_from_the_form_with_typed_values_lands_on_its_live_log(ui, page, tmp_path):
    a = ui(JOBS)
    gate = tmp_path / "gate"
    page.goto(a.base + "/ui/jobs/typed")
    form = page.locator("#run-form")
    kinds = {"n": "number", "ratio": "number", "when": "datetime-local", "who": "text", "gate": "text",
             "flag": "checkbox"}
    for name, kind in kinds.items():
        expect(form.get_by_label(name, exact=True)).to_have_attribute("type", kind)
    expect(form.get_by_label("color", exact=True)).to_have_js_property("tagName", "SELECT")
    for name in ("items", "conf"):
        expect(form.get_by_label(name, exact=True)).to_have_js_property("tagName", "TEXTAREA")
    expect(form.get_by_label("n", exact=True)).to_have_value("3")  # defaults filled in
    expect(form.get_by_label("when", exact=True)).to_have_value("2026-01-02T03:04:05")
    expect(form.get_by_label("items", exact=True)).to_have_value("a\nb")
    expect(form.get_by_label("color", exact=True)).to_have_value("red")
    form.get_by_label("n", exact=True).fill("42")
    form.get_by_label("ratio", exact=True).fill("2.5")
    form.get_by_label("flag", exact=True).check()
    form.get_by_label("color", exact=True).select_option("blue")
    form.get_by_label("items", exact=True).fill("x\ny z")
    form.get_by_label("when", exact=True).fill("2026-05-06T07:08:09")
    form.get_by_label("conf", exact=True).fill('{"a": 1}')
    form.get_by_label("who", exact=True).fill("Ada <b>Lovelace</b>")
    form.get_by_label("gate", exact=True).fill(str(gate))
    form.get_by_role("button", name="Run").click()
    expect(page).to_have_url(a.base + "/ui/jobs/typed/1")
    log = page.get_by_role("log")
    expect(log).to_contain_text("n=42")  # while it runs: the gate is not there yet
    expect(log).to_contain_text("who=Ada <b>Lovelace</b>")
    params = a.get("/jobs/typed/1").json()["params"]
    assert params == {"n": 42, "ratio": 2.5, "flag": True, "color": "blue", "items": ["x", "y z"],
                      "when": "2026-05-06T07:08:09Z", "conf": {"a": 1}, "who": "Ada <b>Lovelace</b>",
                      "gate": str(gate)}
    expect(page.locator("#run-badge .badge")).to_have_text("running")
    gate.touch()
    expect(log).to_contain_text("done")
    expect(page.locator("#run-badge .badge")).to_have_text("complete")  # live, no reload
    expect(page.locator('[data-field="exit_code"]')).to_have_text("0")
    expect(page.locator("#timeline .tl-name")).to_have_text(["queued", "start", "complete"])
    assert page.locator(".log-text b").count() == 0  # the value is text, not markup


def test_a_refused_value_shows_the_servers_message_next_to_the_form(ui, page):
    a = ui(JOBS)
    expected = a.post("/jobs/typed", data={"n": "4.5"}).json()["error"]
    assert "n" in expected
    page.goto(a.base + "/ui/jobs/typed")
    form = page.locator("#run-form")
    form.get_by_label("n", exact=True).fill("4.5")
    form.get_by_label("who", exact=True).fill("kept")
    form.get_by_role("button", name="Run").click()
    alert = page.locator("#run-form").get_by_role("alert")
    expect(alert).to_have_text(expected)
    expect(page).to_have_url(a.base + "/ui/jobs/typed")
    expect(page.locator("#run-form").get_by_label("who", exact=True)).to_have_value("kept")
    assert a.get("/jobs/typed").json()["executions"] == []  # nothing was created
    a.delete("/jobs/greet")  # inactive: the server says so, the form says it too
    page.goto(a.base + "/ui/jobs/greet")
    expect(page.get_by_role("button", name="Run")).to_be_disabled()
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_role("button", name="Deactivate")).to_be_visible()
    assert a.system.is_active("greet")


def test_stop_continue_terminate_and_kill_from_the_buttons(ui, page):
    a = ui(JOBS)
    run = a.post("/jobs/ticker").json()
    page.goto(f"{a.base}/ui/jobs/ticker/{run['id']}")
    state = page.locator('[data-field="state"]')
    expect(state).to_have_text("running")
    expect(page.get_by_role("log")).to_contain_text("tick 3")
    expect(page.get_by_role("button", name="Continue")).to_be_disabled()
    page.get_by_role("button", name="Stop").click()
    expect(state).to_have_text("stopped")
    expect(page.locator("#run-badge .badge")).to_have_text("stop")
    expect(page.get_by_role("button", name="Continue")).to_be_enabled()
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    page.get_by_role("button", name="Continue").click()
    expect(state).to_have_text("running")
    expect(page.locator("#timeline .tl-name")).to_have_text(["queued", "start", "stop", "continue"])
    dialogs = []
    page.once("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.get_by_role("button", name="Kill").click()  # asks first: dismissed, nothing happens
    expect(page.locator(".signal-group")).to_be_visible()
    assert dialogs and "Kill ticker #1" in dialogs[0]
    assert a.get("/jobs/ticker/1").json()["state"] == "running"
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Terminate").click()
    expect(state).to_have_text("finished")
    expect(page.locator("#run-badge .badge")).to_have_text("fail")
    expect(page.locator(".signal-group")).to_be_hidden()
    assert [e["name"] for e in a.get("/jobs/ticker/1").json()["events"]][-2:] == ["terminate", "fail"]
    page.get_by_role("button", name="Repeat").click()
    expect(page).to_have_url(f"{a.base}/ui/jobs/ticker/2")
    assert a.get("/jobs/ticker/2").json()["trigger"] == "repeat"
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Kill").click()
    expect(page.locator("#run-badge .badge")).to_have_text("fail")
    assert a.get("/jobs/ticker/2").json()["signal"] == "SIGKILL"


def test_a_signal_the_server_refuses_shows_its_message(ui, page):
    a = ui(JOBS)
    run = a.post("/jobs/ticker").json()
    page.goto(f"{a.base}/ui/jobs/ticker/{run['id']}")
    expect(page.locator('[data-field="state"]')).to_have_text("running")
    assert a.put("/jobs/ticker/1", json={"event": "kill"}).status_code == 202  # behind the page's back
    wait_finished(a.system, "ticker", 1)
    # the page may not have heard yet: a click on Stop gets the server's 409, shown by the buttons
    page.evaluate("document.querySelectorAll('[data-enabled-in]').forEach(b => b.disabled = false)")
    page.get_by_role("button", name="Stop").click()
    alert = page.locator("#action-msg").get_by_role("alert")
    expect(alert).to_contain_text("is not running")


def test_ansi_colours_are_styles_and_nothing_is_markup(ui, page):
    a = ui(JOBS)
    run = a.post("/jobs/ansi").json()
    a.finished("ansi", run["id"])
    page.goto(f"{a.base}/ui/jobs/ansi/{run['id']}")
    log = page.get_by_role("log")
    texts = log.locator(".log-text")
    expect(texts).to_have_text(["red plain bold256 true <b>tag</b> &amp;", "green", "carried under",
                                "progress 100%"])
    body = log.inner_text()
    assert "\x1b" not in body and "[31m" not in body and "a title" not in body
    assert log.locator(".log-text b").count() == 0
    style = """el => ({cls: el.className, color: getComputedStyle(el).color,
                      weight: getComputedStyle(el).fontWeight, style: getComputedStyle(el).fontStyle,
                      deco: getComputedStyle(el).textDecorationLine})"""
    def span(text: str) -> dict:
        return log.locator(".log-text span", has_text=re.compile(f"^{text}$")).evaluate(style)

    red = span("red")
    assert red["cls"] == "fg1" and red["color"] == "rgb(196, 39, 29)"
    orange = span("bold256")
    assert orange["color"] == "rgb(255, 135, 0)" and orange["weight"] == "700"
    assert span("true")["color"] == "rgb(10, 200, 30)"
    assert span("green")["cls"] == "fg2"
    assert span("carried")["cls"] == "fg2"  # the colour carries over the line end
    under = span("under")
    assert under["deco"] == "underline" and under["style"] == "italic"
    page.emulate_media(color_scheme="dark")  # the dark theme has its own palette
    assert span("red")["color"] == "rgb(249, 112, 102)"


def test_the_log_tabs_search_permalinks_and_download(ui, page):
    a = ui(JOBS)
    run = a.post("/jobs/team.backup").json()
    a.finished("team.backup", run["id"])
    page.goto(f"{a.base}/ui/jobs/greet")
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("log")).to_contain_text("hello world")
    page.goto(f"{a.base}/ui/jobs/team.backup/1")
    log = page.get_by_role("log")
    expect(log).to_contain_text("backup")
    page.get_by_role("tab", name="stdout").click()
    expect(page.get_by_role("tab", name="stdout")).to_have_attribute("aria-selected", "true")
    expect(log.locator(".log-row:not([hidden])")).to_have_count(0)
    expect(page.locator('[data-log="info"]')).to_have_text("no output")
    page.get_by_role("tab", name="stderr").click()
    expect(log).to_contain_text("backup")
    download = page.get_by_role("link", name="Download")
    expect(download).to_have_attribute("href", "/ui/jobs/team.backup/1/stderr?download=1")
    with page.expect_download() as got:
        download.click()
    assert got.value.suggested_filename == "team.backup-1-stderr.log"
    with open(got.value.path(), "rb") as f:
        assert f.read() == b"backup\n"
    page.goto(f"{a.base}/ui/jobs/greet/1#L1")
    expect(page.locator(".log-row.is-target .log-num")).to_have_text("1")
    page.keyboard.press("/")
    search = page.get_by_label("Search")
    expect(search).to_be_focused()
    search.fill("world")
    search.press("Enter")
    expect(page.locator("mark.hit.current")).to_have_text("world")
    expect(page.locator("#log-matches")).to_have_text("1 of 1")
    search.fill("nothing like it")
    search.press("Enter")
    expect(page.locator("#log-matches")).to_have_text("no match")


def test_wrap_toggles_long_lines(ui, page):
    a = ui(JOBS)
    run = a.post("/jobs/long").json()
    a.finished("long", run["id"])
    page.goto(f"{a.base}/ui/jobs/long/{run['id']}")
    expect(page.get_by_role("log").locator(".log-text").last).to_have_text("short")
    one_line = row_height(page, 2)
    assert row_height(page, 1) == one_line  # not wrapped: one line, scrolled sideways
    wrap = page.get_by_role("button", name="Wrap")
    wrap.click()
    expect(wrap).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".logview.wrap")).to_have_count(1)
    assert row_height(page, 1) > 3 * one_line and row_height(page, 2) == one_line
    wrap.click()
    expect(wrap).to_have_attribute("aria-pressed", "false")
    assert row_height(page, 1) == one_line


def test_one_stream_per_tab_given_back_while_the_tab_is_hidden(ui, page):
    a = ui(JOBS)
    run = a.post("/jobs/ticker").json()
    page.goto(f"{a.base}/ui/jobs/ticker/{run['id']}")
    expect(page.get_by_role("log")).to_contain_text("tick 2")
    wait_for(lambda: a.server.app.open_follows == 1, what="the page's one stream")
    hide = """hidden => { Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});
                         document.dispatchEvent(new Event('visibilitychange')); }"""
    page.evaluate(hide, True)
    wait_for(lambda: a.server.app.open_follows == 0, what="the hidden tab to give its stream back")
    assert a.put("/jobs/ticker/1", json={"event": "while-hidden"}).status_code == 202
    page.evaluate(hide, False)  # shown again: it resumes after the last event it had
    expect(page.locator("#timeline .tl-name")).to_have_text(["queued", "start", "while-hidden"])
    wait_for(lambda: a.server.app.open_follows == 1, what="the stream to be open again")
    ticks = page.get_by_role("log").locator(".log-text", has_text=re.compile(r"^tick \d+$"))
    before = int(ticks.last.inner_text().split()[-1])
    expect(ticks.last).not_to_have_text(f"tick {before}")  # and the log goes on
