"""The status page's server-rendered HTML, as a pure function of the API's answers.

The browser tests (tests/process/test_status_page.py) press its buttons; these
check what the first paint says for every shape of answer: hostile values
escaped, today's and issue 10's ``GET /hot-update`` fields, refusals shown.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kidecar_supervisor.status_page import (
    Answer,
    PageData,
    content_security_policy,
    format_bytes,
    format_duration,
    format_time,
    progress_of,
    render,
    stage_of,
)

EVIL = "<img src=x onerror=alert(1)>"
NONCE = "n0nce-Abc_123"

PLUGINS = [
    {"name": "storage", "internal": True, "state": "Running", "pid": 11, "restarts": 0,
     "uptime": 42.0, "lastError": None},
    {"name": "hot_update", "internal": False, "state": "Running", "pid": 12, "restarts": 2,
     "uptime": 3725.0, "lastError": "exited with 1"},
    {"name": "probe", "internal": False, "state": "Stopped", "pid": None, "restarts": 0,
     "uptime": 0.0, "lastError": None},
]


def page(plugins: Answer | None = None, hot_update: Answer | None = None,
         health: Answer | None = None, ready: Answer | None = None) -> str:
    return render(PageData(
        health=health or Answer(200, {"status": "ok", "version": "0.1.0", "uptime": 65.0}),
        ready=ready or Answer(200, {"status": "ready"}),
        plugins=plugins or Answer(200, PLUGINS),
        hot_update=hot_update or Answer(200, {"version": "v2", "state": "idle"})), NONCE)


def button(html: str, plugin: str, action: str) -> str:
    match = re.search(rf"<button data-plugin='{plugin}' data-action='{action}'[^>]*>", html)
    assert match, f"no {action} button for {plugin}"
    return match.group(0)


def test_health_plugins_and_their_buttons() -> None:
    html = page()
    assert "<span id=health class='pill good'>healthy</span>" in html
    assert "<span id=ready class='pill good'>ready</span>" in html
    assert "kidecar 0.1.0 · up 1m 5s" in html
    assert "<tr data-plugin='hot_update'>" in html
    assert "<td class='pid num'>12</td>" in html and "1h 2m" in html and "exited with 1" in html
    # kidecar's own children: Restart only
    assert "disabled" in button(html, "storage", "stop")
    assert "disabled" in button(html, "storage", "start")
    assert "disabled" not in button(html, "storage", "restart")
    # a running plugin cannot be started, a stopped one cannot be stopped
    assert "disabled" in button(html, "hot_update", "start")
    assert "disabled" not in button(html, "hot_update", "stop")
    assert "disabled" in button(html, "probe", "stop")
    assert "disabled" not in button(html, "probe", "start")


def test_unhealthy_and_unreachable_are_said_not_hidden() -> None:
    html = page(health=Answer(503, {"error": "plugin(s) failed: probe"}),
                ready=Answer(503, {"error": "not ready: probe"}),
                plugins=Answer(503, {"error": "supervisor unavailable: timed out"}),
                hot_update=Answer(404, {"error": "unknown plugin 'hot_update'"}))
    assert "<span id=health class='pill bad'>unhealthy: plugin(s) failed: probe</span>" in html
    assert "<span id=ready class='pill bad'>not ready: probe</span>" in html
    assert "<td colspan=7 class=bad>supervisor unavailable: timed out</td>" in html
    assert "<p id=hu-problem class=muted>unknown plugin &#x27;hot_update&#x27;</p>" in html
    assert "<div id=hu-body hidden>" in html  # no empty version/kept/history tables
    assert Answer(500).error() == "HTTP 500"


def test_every_value_is_escaped() -> None:
    hostile_plugin = dict(PLUGINS[1], name=EVIL, state=EVIL, lastError=EVIL)
    status = {"version": EVIL, "url": "http://h/" + EVIL, "stage": EVIL,
              "running": {"version": EVIL}, "lastError": {"error": EVIL, "stage": EVIL},
              "kept": [{"version": EVIL, "url": EVIL, "at": 1.0}],
              "history": [{"version": EVIL, "message": EVIL, "success": False,
                           "timestamp": 1.0}]}
    html = page(plugins=Answer(200, [hostile_plugin]), hot_update=Answer(200, status),
                health=Answer(503, {"error": EVIL}))
    assert "<img" not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") >= 12
    # attribute values too: a quote cannot end data-plugin / data-rollback early
    quoted = page(plugins=Answer(200, [dict(PLUGINS[1], name="a' onclick='x")]))
    assert "data-plugin='a&#x27; onclick=&#x27;x'" in quoted
    assert "onclick='x" not in quoted


def test_todays_hot_update_fields_work() -> None:
    """``GET /hot-update`` before issue 10: ``state``, progress with ``percent``, no ``kept``."""
    status = {"version": "v3", "url": "http://127.0.0.1/v3.bin", "state": "downloading",
              "running": {"version": "v4", "url": "u", "restoring": False},
              "progress": {"bytes": 1_048_576, "total": 4_194_304, "percent": 25.0},
              "history": [{"version": "v3", "success": True, "message": "applied",
                           "timestamp": 1_700_000_000.0}]}
    html = page(hot_update=Answer(200, status))
    assert "<dd id=hu-version class=big>v3</dd>" in html
    assert "<span id=hu-stage class='state busy'>downloading</span>" in html
    assert "→ v4" in html
    assert "<div id=hu-progress>" in html and "style='width:25.0%'" in html
    assert "1.0 MiB of 4.0 MiB (25%)" in html
    assert "no kept versions" in html
    assert "2023-11-14 22:13:20 UTC" in html and "succeeded" in html


def test_issue_10_fields_stage_rate_and_kept_versions() -> None:
    status = {"version": "v3", "state": "idle", "stage": "rolledBack",
              "progress": {"bytes": 512, "total": None, "rate": 2048.0},
              "kept": [{"version": "v3", "url": "http://127.0.0.1/v3", "at": 1_800_000_000.0,
                        "bytes": 3 * 1024 * 1024},
                       {"version": "v2", "url": "http://127.0.0.1/v2", "at": 1_700_000_000.0},
                       {"version": "v1", "url": "http://127.0.0.1/v1", "at": 1_600_000_000.0},
                       {"version": "", "url": "", "at": 1_500_000_000.0, "bytes": 14}]}
    html = page(hot_update=Answer(200, status))
    assert "<span id=hu-stage class='state bad'>rolledBack</span>" in html
    # the image's own file (kept before the first update) has no name to ask for
    assert re.search(r"<button data-rollback='' title='[^']*without a version[^']*' disabled>",
                     html)
    html = html.replace("<button data-rollback=''", "<button unnamed")
    assert "512 B at 2.0 KiB/s" in html and "style='width:0.0%'" in html
    buttons = re.findall(r"<button data-rollback='([^']*)'[^>]*>Roll back</button>", html)
    assert buttons == ["v3", "v2", "v1"]  # newest first, as the plugin lists them
    # the version running now is kept too, but rolling back to it does nothing
    assert re.search(r"<button data-rollback='v3' title='running now' disabled>", html)
    assert re.search(r"<button data-rollback='v2' title='[^']*'>", html)
    assert "v3 <span class=tag>running</span>" in html and "3.0 MiB" in html


def test_no_download_no_bar() -> None:
    html = page(hot_update=Answer(200, {"version": "", "state": "idle", "progress": None}))
    assert "<div id=hu-progress hidden>" in html
    assert "<dd id=hu-version class=big>none yet</dd>" in html
    assert "no updates yet" in html


def test_the_script_gets_its_settings_as_json() -> None:
    match = re.search(r"<script id=page-config type=application/json>(.*?)</script>", page())
    assert match
    config: dict[str, Any] = json.loads(match.group(1))
    assert config["pollMs"] == 1000 and "Running" in config["noStart"]
    assert "innerHTML" not in page()  # the script draws text nodes only


def test_values() -> None:
    assert stage_of({"stage": "confirming", "state": "reloading"}) == "confirming"
    assert stage_of({"state": "reloading"}) == "reloading"
    assert stage_of({}) == "unknown"
    assert progress_of({"progress": None}) is None
    assert progress_of({"progress": {"bytes": 300, "total": 200}}) == {
        "percent": 100.0, "text": "300 B of 200 B (100%)"}
    assert progress_of({"progress": {"bytes": True, "total": "x"}}) == {
        "percent": 0.0, "text": "0 B"}
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(5 * 1024**4) == "5120.0 GiB"
    assert format_duration(None) == "" and format_duration(0.4) == ""
    assert format_duration(59.9) == "59s" and format_duration(90061) == "1d 1h"
    assert format_time(None) == "" and format_time(0) == ""


def test_only_the_pages_own_script_runs() -> None:
    html = page()
    scripts = re.findall(r"<script([^>]*)>", html)
    # the settings block is data (not run); the one script that runs carries the nonce
    assert scripts == [" id=page-config type=application/json", f" nonce='{NONCE}'"]
    policy = content_security_policy(NONCE)
    assert f"script-src 'nonce-{NONCE}'" in policy and "unsafe-inline'; connect" in policy
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert "unsafe-eval" not in policy and "script-src 'unsafe-inline'" not in policy


def test_a_recycled_plugin_says_so_beside_its_restarts_and_shows_its_first_second() -> None:
    """A new pid with 0 restarts is explained (a recycle after an update, issue 16), and
    a process in its first second shows 0s instead of a blank uptime."""
    rows = [{"name": "hot_update", "state": "Running", "pid": 31, "restarts": 0,
             "recycles": 2, "uptime": 0.2, "lastError": None},
            {"name": "probe", "state": "Stopped", "pid": None, "restarts": 1,
             "recycles": 0, "uptime": 0.0, "lastError": None}]
    html = page(plugins=Answer(200, rows))
    cells = re.findall(r"<td class=num>(.*?)</td>", html)
    assert cells[:2] == ["0 <span class=muted title='fresh processes started after a settled "
                         "update (routine, not failures)'>· 2 recycled</span>", "0s"], cells
    assert cells[2:4] == ["1", ""], cells  # stopped: no recycle note, no uptime
