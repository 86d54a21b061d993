"""The status page (``GET /``) in a real browser against a real ``kidecar run`` (issue 10 §4).

Debian's chromium, driven by Playwright (tests/support/browser.py), loads the
page from the sidecar on loopback and presses its buttons like an operator:
Restart changes the plugin's pid on the page, a slow download moves the
progress bar, Roll back changes the version, and a sidecar that wants a token
gets it from the page's token field. Screenshots are kept under
``test-artifacts/status-page/``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import browser_page, screenshot
from tests.support.fake_game import FakeGame
from tests.support.hot_update_fixtures import sidecar_config
from tests.support.sidecar_process import Sidecar, start_sidecar
from tests.support.upstream_server import UpstreamServer

pytestmark = pytest.mark.slow

OLD = b"image default\n"
TOKEN = "status-page-token-0123456789"


@pytest.fixture
def sidecar(tmp_path: Path, file_dir: Path, game: FakeGame) -> Iterator[Sidecar]:
    running = start_sidecar(sidecar_config(file_dir, game), tmp_path, wait_ready=True)
    yield running
    assert running.stop() == 0
    assert running.alive_leftovers() == []


def pid_cell(page: Any, plugin: str) -> str:
    text: str = page.locator(f"#plugins tr[data-plugin='{plugin}'] td.pid").inner_text()
    return text.strip()


def test_page_shows_health_and_plugins_and_restart_changes_the_pid(sidecar: Sidecar) -> None:
    before = sidecar.wait_state("hot_update", "Running")
    served = sidecar.get("/")
    assert "frame-ancestors 'none'" in served.headers["Content-Security-Policy"]
    assert served.headers["Cache-Control"] == "no-store"
    with browser_page() as page:
        problems: list[str] = []  # script errors and policy violations ("Refused to ...")
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error"
                and not msg.text.startswith("Failed to load resource") else None)
        page.goto(sidecar.url + "/")
        assert page.title() == "kidecar status"
        assert page.locator("#health").inner_text() == "healthy"
        assert page.locator("#ready").inner_text() == "ready"
        names = page.locator("#plugins tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.plugin)")
        assert {"http", "hot_update"} <= set(names) and "storage" not in names
        assert pid_cell(page, "hot_update") == str(before["pid"])
        # kidecar's own children can be restarted, never stopped from the page
        assert page.locator("#plugins tr[data-plugin='http'] button[data-action=stop]").is_disabled()
        assert page.locator(
            "#plugins tr[data-plugin='hot_update'] button[data-action=start]").is_disabled()
        screenshot(page, "01-loaded")

        page.locator("#plugins tr[data-plugin='hot_update'] button[data-action=restart]").click()
        page.wait_for_function(
            "old => { const c = document.querySelector(\"#plugins tr[data-plugin='hot_update'] "
            "td.pid\"); return c && /^[0-9]+$/.test(c.textContent) && c.textContent !== old; }",
            arg=str(before["pid"]))
        after = sidecar.wait_state("hot_update", "Running")
        assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1
        page.wait_for_function(
            "pid => document.querySelector(\"#plugins tr[data-plugin='hot_update'] td.pid\")"
            ".textContent === pid", arg=str(after["pid"]))
        assert "restart hot_update: done" in page.locator("#notice").inner_text()
        screenshot(page, "02-restarted")
        assert problems == []


def test_progress_bar_moves_during_a_slow_download(sidecar: Sidecar,
                                                   upstream: UpstreamServer) -> None:
    size = 4_000_000
    slow = upstream.url(f"slow/big.bin?size={size}&rate=400000")  # about 10 s
    answer: dict[str, Any] = {}

    def post() -> None:
        answer["response"] = sidecar.post("/hot-update", data={"version": "v7", "url": slow},
                                          timeout=120)

    with browser_page() as page:
        page.goto(sidecar.url + "/")
        assert page.locator("#hu-progress").is_hidden()  # nothing downloads yet
        worker = threading.Thread(target=post)
        worker.start()
        try:
            page.wait_for_selector("#hu-progress", state="visible")
            assert page.locator("#hu-stage").inner_text() == "downloading"
            assert page.locator("#hu-target").inner_text() == "→ v7"
            first = _bar_percent(page)
            assert first < 100
            page.wait_for_function(
                "first => Number(document.querySelector('#hu-progress .bar')"
                ".getAttribute('aria-valuenow')) > first", arg=first)
            second = _bar_percent(page)
            width = page.locator("#hu-bar").evaluate("b => b.style.width")
            assert width == f"{second:g}%"
            assert "of 3.8 MiB" in page.locator("#hu-progress-text").inner_text()
            screenshot(page, "03-downloading")
        finally:
            worker.join(120)
        assert answer["response"].status_code == 200, answer["response"].text
        page.wait_for_function("() => document.querySelector('#hu-version').textContent === 'v7'")
        page.wait_for_selector("#hu-progress", state="hidden")
        assert page.locator("#history tbody tr").first.locator("td.name").inner_text() == "v7"
        screenshot(page, "04-downloaded")


def _bar_percent(page: Any) -> float:
    return float(page.locator("#hu-progress .bar").get_attribute("aria-valuenow"))


def test_roll_back_button_changes_the_version(sidecar: Sidecar, upstream: UpstreamServer,
                                              game: FakeGame) -> None:
    for version in ("v1", "v2"):
        url = upstream.add_file(f"{version}/index.html", f"game {version}\n".encode())
        response = sidecar.post("/hot-update", data={"version": version, "url": url})
        assert response.status_code == 200, response.text
    game.wait_for(lambda r: r["content"] == "game v2\n")
    with browser_page() as page:
        page.goto(sidecar.url + "/")
        assert page.locator("#hu-version").inner_text() == "v2"
        # only a named version other than the running one can be asked for
        enabled = page.locator("#kept button[data-rollback]:not([disabled])").evaluate_all(
            "bs => bs.map(b => b.dataset.rollback)")
        assert "v1" in enabled and "v2" not in enabled and "" not in enabled
        button = page.locator("#kept tr[data-version='v1'] button[data-rollback]")
        screenshot(page, "05-before-rollback")
        asked: list[str] = []
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        button.click()  # the operator changes their mind: nothing happens
        assert asked == ["Roll the game back to v1?"]
        assert sidecar.get("/hot-update").json()["version"] == "v2"
        page.once("dialog", lambda dialog: dialog.accept())
        button.click()
        page.wait_for_function(
            "() => document.querySelector('#hu-version').textContent === 'v1'", timeout=60_000)
        # each update, the rollback too, ends with a fresh hot_update process: the row
        # says so beside its restarts (a new pid, no restart), and its uptime is shown
        restarts = "tr[data-plugin='hot_update'] td:nth-child(4)"
        page.wait_for_function(
            f"""() => document.querySelector("{restarts}").textContent.includes("recycled")""",
            timeout=30_000)
        assert page.locator(restarts).inner_text().startswith("0 · ")  # no restart, recycles
        uptime = page.locator("tr[data-plugin='hot_update'] td:nth-child(5)").inner_text()
        assert uptime.endswith("s"), uptime  # 0s in the fresh process's first second
        screenshot(page, "06-rolled-back")
        assert page.locator("#kept tr[data-version='v1'] button[data-rollback]").is_disabled()
        assert page.locator("#history tbody tr").first.locator("td.name").inner_text() == "v1"
    assert sidecar.get("/hot-update").json()["version"] == "v1"
    game.wait_for(lambda r: r["content"] == "game v1\n")


def test_buttons_ask_for_the_token_when_the_sidecar_wants_one(
        tmp_path: Path, file_dir: Path, game: FakeGame) -> None:
    sidecar = start_sidecar(sidecar_config(file_dir, game, allowLoopbackWithoutToken=False), tmp_path,
                            env={"KIDECAR_TOKEN": TOKEN}, wait_ready=True)
    try:
        before = sidecar.wait_state("hot_update", "Running")
        with browser_page() as page:
            page.goto(sidecar.url + "/")
            assert page.locator("#access").is_hidden()
            restart = "#plugins tr[data-plugin='hot_update'] button[data-action=restart]"
            page.locator(restart).click()
            page.wait_for_selector("#access", state="visible")
            assert "missing bearer token" in page.locator("#notice").inner_text()
            assert sidecar.plugin("hot_update")["pid"] == before["pid"]  # refused: untouched
            screenshot(page, "07-token-asked")

            page.fill("#token", TOKEN)
            page.locator("#token-form button[type=submit]").click()
            assert page.locator("#token").input_value() == ""  # not left in the field
            assert page.evaluate("sessionStorage.getItem('kidecar-token')") == TOKEN
            page.locator(restart).click()
            page.wait_for_function(
                "old => { const c = document.querySelector(\"#plugins tr[data-plugin="
                "'hot_update'] td.pid\"); return /^[0-9]+$/.test(c.textContent) && "
                "c.textContent !== old; }", arg=str(before["pid"]))
            assert TOKEN not in page.content()  # the token is never drawn
        assert sidecar.wait_state("hot_update", "Running")["pid"] != before["pid"]
    finally:
        assert sidecar.stop() == 0
    assert sidecar.alive_leftovers() == []


def test_hostile_values_are_drawn_as_text(sidecar: Sidecar) -> None:
    """Plugin names, errors, URLs and messages reach the page as text, never as HTML.

    The sidecar's own ``/hot-update`` answer is rewritten on its way to the
    page (the page's script is the real one) with values a plugin or an
    upstream could produce.
    """
    evil = "<img src=x onerror=\"window.pwned=1\">"
    real = sidecar.get("/hot-update").json()
    hostile = dict(real, version=evil, url="http://127.0.0.1/" + evil,
                   lastError={"error": evil, "stage": evil},
                   history=[{"version": evil, "success": False, "message": evil,
                             "timestamp": 1.0}],
                   kept=[{"version": evil, "url": evil, "at": 1.0}])
    with browser_page() as page:
        page.route("**/hot-update", lambda route: route.fulfill(json=hostile))
        page.goto(sidecar.url + "/")
        page.wait_for_function(
            "v => document.querySelector('#hu-version').textContent === v", arg=evil)
        assert page.locator("#hu-error").inner_text().startswith(evil)
        assert page.locator("#kept button[data-rollback]").get_attribute("data-rollback") == evil
        assert page.locator("#hot-update img").count() == 0
        assert page.evaluate("window.pwned === undefined")


def test_stop_and_start_without_a_hot_update_plugin(tmp_path: Path) -> None:
    sidecar = start_sidecar({"plugins": [
        {"name": "sleeper", "binary": {"path": "sleep", "args": ["3600"]}}]}, tmp_path,
        wait_ready=True)
    try:
        before = sidecar.wait_state("sleeper", "Running")
        with browser_page() as page:
            page.goto(sidecar.url + "/")
            # no hot_update configured: the section says so and draws no empty tables
            assert "not configured" in page.locator("#hu-problem").inner_text()
            assert page.locator("#hu-body").is_hidden()
            row = "#plugins tr[data-plugin='sleeper']"
            asked: list[str] = []
            page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
            page.locator(f"{row} button[data-action=stop]").click()
            page.wait_for_function(
                "row => document.querySelector(row + ' .state').textContent === 'Stopped'",
                arg=row)
            assert page.locator(f"{row} td.pid").inner_text() == "–"
            assert page.locator(f"{row} button[data-action=stop]").is_disabled()
            assert asked == ["Stop sleeper? It stays stopped until Start."]
            assert sidecar.plugin("sleeper")["state"] == "Stopped"
            screenshot(page, "08-stopped")
            page.locator(f"{row} button[data-action=start]").click()
            page.wait_for_function(
                "row => document.querySelector(row + ' .state').textContent === 'Running'",
                arg=row)
        after = sidecar.wait_state("sleeper", "Running")
        assert after["pid"] != before["pid"]
    finally:
        assert sidecar.stop() == 0
    assert sidecar.alive_leftovers() == []


def test_credentials_in_urls_never_reach_the_page(sidecar: Sidecar,
                                                  upstream: UpstreamServer) -> None:
    secrets = ("s3cretpass", "t0psecret")
    url = upstream.add_file("v1/index.html", b"game v1\n").replace(
        "http://", "http://ops:s3cretpass@") + "?token=t0psecret"
    response = sidecar.post("/hot-update", data={"version": "v1", "url": url})
    assert response.status_code == 200, response.text
    failing = upstream.url("status/404/v2.html").replace(
        "http://", "http://ops:s3cretpass@") + "?token=t0psecret"
    assert sidecar.post("/hot-update", data={"version": "v2", "url": failing}).status_code == 502
    served = sidecar.get("/").text
    with browser_page() as page:
        page.goto(sidecar.url + "/")
        page.wait_for_function("() => document.querySelector('#hu-error').textContent !== ''")
        drawn = page.content()
        assert "***@127.0.0.1" in page.locator("#hu-url").inner_text()
        screenshot(page, "09-redacted")
    for secret in secrets:
        assert secret not in served and secret not in drawn


def test_a_script_that_slipped_in_would_not_run(sidecar: Sidecar) -> None:
    """Defence in depth: the page's policy runs only its own (nonce) script."""
    def inject(route: Any) -> None:
        served = route.fetch()
        route.fulfill(response=served, body=served.text().replace(
            "<main>", "<main><script>window.pwned = 1</script>"))

    with browser_page() as page:
        refused: list[str] = []
        page.on("console", lambda msg: refused.append(msg.text)
                if "Content Security Policy" in msg.text else None)
        page.route(sidecar.url + "/", inject)
        page.goto(sidecar.url + "/")
        page.wait_for_function("() => document.querySelector('#updated').textContent !== ''")
        assert page.evaluate("window.pwned === undefined")
        assert refused, "the injected script was not refused by the policy"
