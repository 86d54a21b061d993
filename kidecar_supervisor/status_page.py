"""``GET /``: the status page an operator uses (issue 10 §4).

Server-rendered HTML, so the first paint (and a browser without JavaScript)
shows everything: health, the plugins with their Restart / Stop / Start
buttons, the hot update with its stage and progress, the kept versions with
Roll back, and the recent history. A little inline JavaScript then polls the
same JSON the API serves (``/healthz``, ``/readyz``, ``/plugins``,
``/hot-update``) once a second and redraws with ``textContent`` only; no
front-end build step, nothing fetched from outside the pod.

Every value comes from plugins, configs and URLs, so every one is escaped
(``html.escape`` here, DOM text nodes in the script). The page shows only
what ``GET /hot-update`` gives: the plugin redacts credentials in URLs.

Buttons post to the mutating routes. On the pod's loopback no token is
needed; from elsewhere the server answers 401/403 and the page offers a
field for the bearer token, kept in ``sessionStorage`` (gone with the tab)
and sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import datetime
import html
import json
from dataclasses import dataclass
from typing import Any

from kidecar_supervisor.states import ChildState

POLL_INTERVAL_MS = 1000
HISTORY_ROWS = 10
#: the recycle count's tooltip: a recycle is routine, not a failure
RECYCLED_TITLE = "fresh processes started after a settled update (routine, not failures)"
#: a button that cannot do anything in this state is shown disabled (the script reads these too)
NO_START_STATES = (ChildState.RUNNING.value, ChildState.STARTING.value)
NO_STOP_STATES = (ChildState.STOPPED.value, ChildState.STOPPING.value,
                  ChildState.COMPLETED.value)
#: plugin states and hot update stages drawn green / red; the rest (under way) amber
GOOD_STATES = ("running", "succeeded", "idle", "completed")
BAD_STATES = ("failed", "rolledback", "backoff")


@dataclass(frozen=True)
class Answer:
    """One JSON answer of the API as the page sees it: status and body."""

    status: int
    body: Any = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> str:
        if isinstance(self.body, dict) and self.body.get("error"):
            return str(self.body["error"])
        return f"HTTP {self.status}"


@dataclass(frozen=True)
class PageData:
    """What the server asked the supervisor for before rendering."""

    health: Answer
    ready: Answer
    plugins: Answer
    hot_update: Answer


def content_security_policy(nonce: str) -> str:
    """The page runs only its own script (``nonce``), talks only to this sidecar, and
    cannot be framed: a value that slipped past escaping still could not run, and no
    other site can overlay its buttons (clickjacking a Stop)."""
    return (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


def render(data: PageData, nonce: str) -> str:
    """The whole page: head, the four sections, and the polling script (run by ``nonce``)."""
    initial = json.dumps({"pollMs": POLL_INTERVAL_MS, "historyRows": HISTORY_ROWS,
                          "noStart": NO_START_STATES, "noStop": NO_STOP_STATES,
                          "good": GOOD_STATES, "bad": BAD_STATES,
                          "recycledTitle": RECYCLED_TITLE})
    return "".join((
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        # no favicon request (a 404 in every log); data: is allowed by the policy
        "<title>kidecar status</title><link rel=icon href='data:,'>",
        "<style>", _CSS, "</style></head><body>",
        _header(data.health, data.ready),
        "<main>",
        "<div id=notice role=status hidden></div>",
        _token_box(),
        _plugins_section(data.plugins),
        _hot_update_section(data.hot_update),
        "</main>",
        # JSON in a script element: '<' is escaped so no value can close the element
        "<script id=page-config type=application/json>",
        initial.replace("<", "\\u003c"), "</script>",
        f"<script nonce='{_e(nonce)}'>", _SCRIPT, "</script></body></html>",
    ))


# -- sections (the script redraws the same ids) ---------------------------------------


def _header(health: Answer, ready: Answer) -> str:
    return (
        "<header><h1>kidecar</h1>"
        f"<span id=health class='pill {_pill_class(health)}'>{_e(_health_text(health))}</span>"
        f"<span id=ready class='pill {_pill_class(ready)}'>{_e(_ready_text(ready))}</span>"
        f"<span id=meta class=muted>{_e(_meta_text(health))}</span>"
        "<span id=updated class=muted></span></header>")


def _token_box() -> str:
    return (
        "<section id=access class=card hidden><h2>Access</h2>"
        "<p id=access-why class=muted>Changes from outside the pod need the sidecar's "
        "bearer token (KIDECAR_TOKEN or http.tokenFile).</p>"
        "<form id=token-form><input id=token type=password autocomplete=off "
        "placeholder='bearer token' aria-label='bearer token'>"
        "<button type=submit>Use token</button>"
        "<button type=button id=token-forget>Forget</button></form>"
        "<p class=muted>Kept in this tab only (sessionStorage).</p></section>")


def _plugins_section(plugins: Answer) -> str:
    head = ("<section class=card><h2>Plugins</h2><table id=plugins><thead><tr>"
            "<th>name</th><th>state</th><th>pid</th><th>restarts</th><th>uptime</th>"
            "<th>last error</th><th></th></tr></thead><tbody>")
    if not plugins.ok or not isinstance(plugins.body, list):
        rows = f"<tr><td colspan=7 class=bad>{_e(plugins.error())}</td></tr>"
    else:
        rows = "".join(_plugin_row(row) for row in plugins.body if isinstance(row, dict))
    return head + rows + "</tbody></table></section>"


def _plugin_row(row: dict[str, Any]) -> str:
    name = str(row.get("name", ""))
    state = str(row.get("state", ""))
    cells = [
        f"<td class=name>{_e(name)}{' <span class=tag>kidecar</span>' if row.get('internal') else ''}</td>",
        f"<td><span class='state {_state_class(state)}'>{_e(state)}</span></td>",
        f"<td class='pid num'>{_e(row.get('pid') or '–')}</td>",
        f"<td class=num>{_e(row.get('restarts', 0))}{_recycled(row)}</td>",
        f"<td class=num>{_e(_uptime(row))}</td>",
        f"<td class=error>{_e(row.get('lastError') or '')}</td>",
        "<td class=actions>" + "".join(
            _action_button(name, action, _why_disabled(row, action))
            for action in ("restart", "stop", "start")) + "</td>",
    ]
    return f"<tr data-plugin='{_e(name)}'>" + "".join(cells) + "</tr>"


def _recycled(row: dict[str, Any]) -> str:
    """`` · 2 recycled`` beside the restarts: a new pid with no restart is explained."""
    recycles = int(_number(row.get("recycles")))
    if recycles <= 0:
        return ""
    return f" <span class=muted title='{_e(RECYCLED_TITLE)}'>· {recycles} recycled</span>"


def _uptime(row: dict[str, Any]) -> str:
    """A running process shows ``0s`` in its first second, not a blank."""
    return format_duration(row.get("uptime")) or ("0s" if row.get("pid") else "")


def _why_disabled(row: dict[str, Any], action: str) -> str:
    """Why ``action`` can do nothing for this plugin now; empty when it can."""
    state = str(row.get("state", ""))
    if row.get("internal") and action != "restart":
        return "part of kidecar itself: restart only"
    if action == "start" and state in NO_START_STATES:
        return f"already {state.lower()}"
    if action == "stop" and state in NO_STOP_STATES:
        return f"already {state.lower()}"
    return ""


def _action_button(name: str, action: str, why_disabled: str) -> str:
    title = why_disabled or f"{action} {name}"
    return (f"<button data-plugin='{_e(name)}' data-action='{action}' title='{_e(title)}'"
            f"{' disabled' if why_disabled else ''}>{action.capitalize()}</button>")


def _hot_update_section(answer: Answer) -> str:
    parts = ["<section class=card id=hot-update><h2>Hot update</h2>"]
    if not answer.ok or not isinstance(answer.body, dict):
        # no hot_update plugin (404) or it does not answer: say so, draw no empty tables
        parts.append(f"<p id=hu-problem class=muted>{_e(answer.error())}</p>")
        parts.append("<div id=hu-body hidden>" + _hot_update_body({}) + "</div>")
    else:
        parts.append("<p id=hu-problem class=muted hidden></p>")
        parts.append("<div id=hu-body>" + _hot_update_body(answer.body) + "</div>")
    parts.append("</section>")
    return "".join(parts)


def _hot_update_body(status: dict[str, Any]) -> str:
    stage = stage_of(status)
    running = status.get("running") or {}
    progress = progress_of(status)
    last_error = status.get("lastError") or {}
    return "".join((
        "<dl class=facts>",
        f"<dt>version</dt><dd id=hu-version class=big>{_e(status.get('version') or 'none yet')}</dd>",
        f"<dt>stage</dt><dd><span id=hu-stage class='state {_state_class(stage)}'>"
        f"{_e(stage)}</span> <span id=hu-target class=muted>"
        f"{_e(_target_text(running))}</span></dd>",
        f"<dt>url</dt><dd id=hu-url class=mono>{_e(status.get('url') or '')}</dd>",
        f"<dt>applied</dt><dd id=hu-applied>{_e(format_time(status.get('appliedAt')))}</dd>",
        f"<dt>last error</dt><dd id=hu-error class=error>{_e(_error_text(last_error))}</dd>",
        "</dl>",
        f"<div id=hu-progress{'' if progress else ' hidden'}>",
        "<div class=bar role=progressbar aria-valuemin=0 aria-valuemax=100",
        f" aria-valuenow={progress['percent'] if progress else 0}>",
        f"<div id=hu-bar class=fill style='width:{progress['percent'] if progress else 0}%'>"
        "</div></div>",
        f"<p id=hu-progress-text class=muted>{_e(progress['text'] if progress else '')}</p>",
        "</div>",
        "<h3>Kept versions</h3><table id=kept><thead><tr><th>version</th><th>url</th>"
        "<th>size</th><th>kept</th><th></th></tr></thead><tbody>",
        _kept_rows(status.get("kept"), str(status.get("version") or "")),
        "</tbody></table>",
        "<h3>Recent history</h3><table id=history><thead><tr><th>when</th><th>version</th>"
        "<th>result</th><th>message</th></tr></thead><tbody>",
        _history_rows(status.get("history")),
        "</tbody></table>",
    ))


def _kept_rows(kept: Any, current: str) -> str:
    """One row per kept copy; the version running now has nothing to roll back to."""
    if not isinstance(kept, list) or not kept:
        return "<tr class=empty><td colspan=5 class=muted>no kept versions</td></tr>"
    rows = []
    for entry in kept:
        if not isinstance(entry, dict):
            continue
        version = str(entry.get("version") or "")
        title = _why_no_rollback(version, current)
        tag = " <span class=tag>running</span>" if version and version == current else ""
        label = _e(version) if version else "<span class=muted>no version</span>"
        rows.append(
            f"<tr data-version='{_e(version)}'><td class=name>{label}{tag}</td>"
            f"<td class=mono>{_e(entry.get('url') or '')}</td>"
            f"<td class=num>{_e(_size_text(entry.get('bytes')))}</td>"
            f"<td class=when>{_e(format_time(entry.get('at')))}</td>"
            f"<td class=actions><button data-rollback='{_e(version)}' "
            f"title='{_e(title or f'put {version} back, reload and confirm it')}'"
            f"{' disabled' if title else ''}>Roll back</button></td></tr>")
    return "".join(rows)


def _why_no_rollback(version: str, current: str) -> str:
    """Why a kept copy cannot be asked for by name; empty when it can."""
    if not version:  # the file found in place before any update: nothing names it
        return "a copy without a version cannot be asked for"
    if version == current:
        return "running now"
    return ""


def _size_text(size: Any) -> str:
    return format_bytes(_number(size)) if isinstance(size, int | float) else ""


def _history_rows(history: Any) -> str:
    if not isinstance(history, list) or not history:
        return "<tr class=empty><td colspan=4 class=muted>no updates yet</td></tr>"
    rows = []
    for entry in history[:HISTORY_ROWS]:
        if not isinstance(entry, dict):
            continue
        good = bool(entry.get("success"))
        rows.append(
            f"<tr><td class=when>{_e(format_time(entry.get('timestamp')))}</td>"
            f"<td class=name>{_e(entry.get('version') or '')}</td>"
            f"<td><span class='state {'good' if good else 'bad'}'>"
            f"{'succeeded' if good else 'failed'}</span></td>"
            f"<td>{_e(entry.get('message') or '')}</td></tr>")
    return "".join(rows)


# -- values (the script has a twin of each) ----------------------------------------------


def stage_of(status: dict[str, Any]) -> str:
    """The issue 10 ``stage`` when the plugin gives it, else its older ``state``."""
    return str(status.get("stage") or status.get("state") or "unknown")


def progress_of(status: dict[str, Any]) -> dict[str, Any] | None:
    """``{percent, text}`` for the bar while a download runs, None otherwise."""
    progress = status.get("progress")
    if not isinstance(progress, dict):
        return None
    done = _number(progress.get("bytes"))
    total = _number(progress.get("total"))
    rate = _number(progress.get("rate"))
    percent = round(min(100.0, 100.0 * done / total), 1) if total else 0.0
    text = format_bytes(done) + (f" of {format_bytes(total)} ({percent:g}%)" if total else "")
    if rate:
        text += f" at {format_bytes(rate)}/s"
    return {"percent": percent, "text": text}


def format_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop always returns


def format_duration(seconds: Any) -> str:
    """``3h 2m``, ``4m 10s``, ``12s``; empty for a process that is not running."""
    total = int(_number(seconds))
    if total <= 0:
        return ""
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_time(stamp: Any) -> str:
    """A Unix time as UTC (pods log in UTC); empty when unknown."""
    value = _number(stamp)
    if value <= 0:
        return ""
    moment = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _health_text(health: Answer) -> str:
    return "healthy" if health.ok else f"unhealthy: {health.error()}"


def _ready_text(ready: Answer) -> str:
    if ready.ok:
        return "ready"
    reason = ready.error()  # /readyz says "not ready: <plugins>" itself
    return reason if reason.startswith("not ready") else f"not ready: {reason}"


def _meta_text(health: Answer) -> str:
    if not health.ok or not isinstance(health.body, dict):
        return ""
    body = health.body
    return f"kidecar {body.get('version', '')} · up {format_duration(body.get('uptime'))}"


def _target_text(running: dict[str, Any]) -> str:
    if not running.get("version"):
        return ""
    return f"→ {running['version']}" + (" (restoring)" if running.get("restoring") else "")


def _error_text(last_error: dict[str, Any]) -> str:
    if not last_error:
        return ""
    stage = f" ({last_error['stage']})" if last_error.get("stage") else ""
    return f"{last_error.get('error', '')}{stage}"


def _pill_class(answer: Answer) -> str:
    return "good" if answer.ok else "bad"


def _state_class(state: str) -> str:
    lowered = state.lower()
    if lowered in GOOD_STATES:
        return "good"
    if lowered in BAD_STATES:
        return "bad"
    return "busy"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
:root{--bg:#f4f5f7;--card:#fff;--ink:#1d2330;--muted:#6b7383;--line:#e3e6eb;
--good:#1f7a3f;--good-bg:#e3f4e8;--bad:#b42318;--bad-bg:#fde8e6;--busy:#8a5a00;--busy-bg:#fff2d6;
--accent:#2f5fd0}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--ink)}
header{display:flex;flex-wrap:wrap;align-items:center;gap:10px;padding:14px 24px;
background:#1d2330;color:#fff}
header h1{font-size:20px;margin:0 12px 0 0;letter-spacing:.5px}
header .muted{color:#b9c0cc}
main{max-width:1200px;margin:0 auto;padding:18px 24px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 18px;
margin-bottom:18px;box-shadow:0 1px 2px rgba(0,0,0,.04)}
h2{font-size:16px;margin:0 0 10px}h3{font-size:14px;margin:18px 0 6px;color:var(--muted)}
table{width:100%;border-collapse:collapse}
th{font-weight:600;color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.4px}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}
tr:last-child td{border-bottom:none}
.num{font-variant-numeric:tabular-nums}.mono{font-family:ui-monospace,Menlo,monospace;
font-size:12px;word-break:break-all}
.name{font-weight:600}.muted{color:var(--muted)}.when{white-space:nowrap}
.error{color:var(--bad);max-width:380px;word-break:break-word}
.pill,.state{display:inline-block;border-radius:999px;padding:2px 10px;font-size:12px;
font-weight:600}
.good{background:var(--good-bg);color:var(--good)}.bad{background:var(--bad-bg);color:var(--bad)}
.busy{background:var(--busy-bg);color:var(--busy)}
td.bad{background:none}
.tag{font-size:11px;color:var(--muted);font-weight:400;border:1px solid var(--line);
border-radius:4px;padding:0 4px;margin-left:4px}
.actions{white-space:nowrap;text-align:right}
button{font:inherit;font-size:13px;padding:4px 12px;margin-left:4px;border-radius:6px;
border:1px solid #c5cad3;background:#fff;cursor:pointer}
button:hover:not(:disabled){border-color:var(--accent);color:var(--accent)}
button:disabled{opacity:.4;cursor:not-allowed}
button[data-action=stop]{color:var(--bad)}
button[data-rollback]{border-color:var(--accent);color:var(--accent)}
dl.facts{display:grid;grid-template-columns:110px 1fr;gap:4px 12px;margin:0}
dt{color:var(--muted)}dd{margin:0}dd.big{font-size:18px;font-weight:700}
.bar{height:14px;background:#e8ebf0;border-radius:7px;overflow:hidden;margin-top:12px}
.fill{height:100%;background:linear-gradient(90deg,#3b6fe0,#5b8cff);transition:width .4s}
#notice{padding:10px 14px;border-radius:6px;margin-bottom:14px;background:var(--busy-bg);
color:var(--busy);font-weight:600}
#notice.good{background:var(--good-bg);color:var(--good)}
#notice.bad{background:var(--bad-bg);color:var(--bad)}
#token-form input{font:inherit;padding:4px 8px;width:320px;border:1px solid #c5cad3;
border-radius:6px}
"""

# The script redraws with createElement/textContent only: no value is ever parsed as HTML.
_SCRIPT = r"""
"use strict";
const CONFIG = JSON.parse(document.getElementById("page-config").textContent);
const TOKEN_KEY = "kidecar-token";
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }

function recycled(row) {
  const count = Math.floor(num(row.recycles));
  if (count <= 0) return [];
  return [" ", el("span", {class: "muted", title: CONFIG.recycledTitle}, `· ${count} recycled`)];
}

function formatBytes(value) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i++; }
  return i === 0 ? `${value.toFixed(0)} B` : `${value.toFixed(1)} ${units[i]}`;
}

function formatDuration(seconds) {
  const total = Math.floor(num(seconds));
  if (total <= 0) return "";
  const d = Math.floor(total / 86400), h = Math.floor(total % 86400 / 3600);
  const m = Math.floor(total % 3600 / 60), s = total % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function formatTime(stamp) {
  const v = num(stamp);
  if (v <= 0) return "";
  return new Date(v * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function stateClass(state) {
  const s = String(state || "").toLowerCase();
  if (CONFIG.good.includes(s)) return "good";
  if (CONFIG.bad.includes(s)) return "bad";
  return "busy";
}

function errorOf(answer) {
  return answer.body && answer.body.error ? String(answer.body.error) : `HTTP ${answer.status}`;
}

async function getJSON(path) {
  try {
    const response = await fetch(path, {cache: "no-store"});
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    return {ok: response.ok, status: response.status, body};
  } catch (e) {
    return {ok: false, status: 0, body: {error: "sidecar unreachable"}};
  }
}

function drawHeader(health, ready) {
  const h = $("health"), r = $("ready");
  h.textContent = health.ok ? "healthy" : `unhealthy: ${errorOf(health)}`;
  h.className = `pill ${health.ok ? "good" : "bad"}`;
  const reason = errorOf(ready);  // /readyz says "not ready: <plugins>" itself
  r.textContent = ready.ok ? "ready"
    : reason.startsWith("not ready") ? reason : `not ready: ${reason}`;
  r.className = `pill ${ready.ok ? "good" : "bad"}`;
  $("meta").textContent = health.ok && health.body
    ? `kidecar ${health.body.version || ""} · up ${formatDuration(health.body.uptime)}` : "";
  $("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
}

function whyDisabled(row, action) {
  const state = String(row.state || "");
  if (row.internal && action !== "restart") return "part of kidecar itself: restart only";
  if (action === "start" && CONFIG.noStart.includes(state)) return `already ${state.toLowerCase()}`;
  if (action === "stop" && CONFIG.noStop.includes(state)) return `already ${state.toLowerCase()}`;
  return "";
}

function actionButton(name, action, why) {
  return el("button", {
    dataset: {plugin: name, action},
    title: why || `${action} ${name}`,
    disabled: Boolean(why),
  }, action.charAt(0).toUpperCase() + action.slice(1));
}

function drawPlugins(answer) {
  const body = $("plugins").tBodies[0];
  if (!answer.ok || !Array.isArray(answer.body)) {
    body.replaceChildren(el("tr", {}, el("td", {colspan: 7, class: "bad"}, errorOf(answer))));
    return;
  }
  body.replaceChildren(...answer.body.map((row) => {
    const name = String(row.name || "");
    const nameCell = el("td", {class: "name"}, name);
    if (row.internal) nameCell.append(" ", el("span", {class: "tag"}, "kidecar"));
    return el("tr", {dataset: {plugin: name}},
      nameCell,
      el("td", {}, el("span", {class: `state ${stateClass(row.state)}`}, row.state || "")),
      el("td", {class: "pid num"}, row.pid || "–"),
      el("td", {class: "num"}, String(row.restarts ?? 0), ...recycled(row)),
      el("td", {class: "num"}, formatDuration(row.uptime) || (row.pid ? "0s" : "")),
      el("td", {class: "error"}, row.lastError || ""),
      el("td", {class: "actions"}, ...["restart", "stop", "start"].map(
        (a) => actionButton(name, a, whyDisabled(row, a)))));
  }));
}

function progressOf(status) {
  const p = status.progress;
  if (!p || typeof p !== "object") return null;
  const done = num(p.bytes), total = num(p.total), rate = num(p.rate);
  const percent = total ? Math.round(Math.min(100, 100 * done / total) * 10) / 10 : 0;
  let text = formatBytes(done) + (total ? ` of ${formatBytes(total)} (${percent}%)` : "");
  if (rate) text += ` at ${formatBytes(rate)}/s`;
  return {percent, text};
}

function drawHotUpdate(answer) {
  const status = answer.ok && answer.body && typeof answer.body === "object" ? answer.body : {};
  const problem = $("hu-problem");
  problem.hidden = answer.ok;
  problem.textContent = answer.ok ? "" : errorOf(answer);
  $("hu-body").hidden = !answer.ok;
  const stage = String(status.stage || status.state || "unknown");
  $("hu-version").textContent = status.version || "none yet";
  $("hu-stage").textContent = stage;
  $("hu-stage").className = `state ${stateClass(stage)}`;
  const running = status.running || {};
  $("hu-target").textContent = running.version
    ? `→ ${running.version}${running.restoring ? " (restoring)" : ""}` : "";
  $("hu-url").textContent = status.url || "";
  $("hu-applied").textContent = formatTime(status.appliedAt);
  const err = status.lastError || {};
  $("hu-error").textContent = err.error ? `${err.error}${err.stage ? ` (${err.stage})` : ""}` : "";
  const progress = progressOf(status);
  $("hu-progress").hidden = !progress;
  if (progress) {
    $("hu-bar").style.width = `${progress.percent}%`;
    $("hu-bar").parentElement.setAttribute("aria-valuenow", String(progress.percent));
    $("hu-progress-text").textContent = progress.text;
  }
  const kept = Array.isArray(status.kept) ? status.kept : [];
  $("kept").tBodies[0].replaceChildren(...(kept.length ? kept.map(keptRow(status.version))
    : [el("tr", {class: "empty"}, el("td", {colspan: 5, class: "muted"}, "no kept versions"))]));
  const history = Array.isArray(status.history) ? status.history.slice(0, CONFIG.historyRows) : [];
  $("history").tBodies[0].replaceChildren(...(history.length ? history.map((h) => el("tr", {},
      el("td", {class: "when"}, formatTime(h.timestamp)),
      el("td", {class: "name"}, h.version || ""),
      el("td", {}, el("span", {class: `state ${h.success ? "good" : "bad"}`},
                      h.success ? "succeeded" : "failed")),
      el("td", {}, h.message || "")))
    : [el("tr", {class: "empty"}, el("td", {colspan: 4, class: "muted"}, "no updates yet"))]));
}

function keptRow(current) {
  return (k) => {
    const version = String(k.version || "");
    const why = !version ? "a copy without a version cannot be asked for"
      : version === current ? "running now" : "";
    const name = el("td", {class: "name"}, version || el("span", {class: "muted"}, "no version"));
    if (version && version === current) name.append(" ", el("span", {class: "tag"}, "running"));
    return el("tr", {dataset: {version}},
      name,
      el("td", {class: "mono"}, k.url || ""),
      el("td", {class: "num"}, typeof k.bytes === "number" ? formatBytes(k.bytes) : ""),
      el("td", {class: "when"}, formatTime(k.at)),
      el("td", {class: "actions"}, el("button", {
        dataset: {rollback: version}, disabled: Boolean(why),
        title: why || `put ${version} back, reload and confirm it`,
      }, "Roll back")));
  };
}

let polling = false;
async function refresh() {
  if (polling) return;
  polling = true;
  try {
    const [health, ready, plugins, hot] = await Promise.all(
      ["/healthz", "/readyz", "/plugins", "/hot-update"].map(getJSON));
    drawHeader(health, ready);
    drawPlugins(plugins);
    drawHotUpdate(hot);
  } finally {
    polling = false;
  }
}

function notice(text, kind) {
  const box = $("notice");
  box.textContent = text;
  box.className = kind || "";
  box.hidden = !text;
}

async function mutate(path, body, label) {
  const headers = {"Content-Type": "application/json"};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  notice(`${label}…`);
  let answer;
  try {
    const response = await fetch(path, {method: "POST", headers, body: JSON.stringify(body)});
    let parsed = null;
    try { parsed = await response.json(); } catch (e) { parsed = null; }
    answer = {ok: response.ok, status: response.status, body: parsed};
  } catch (e) {
    answer = {ok: false, status: 0, body: {error: "sidecar unreachable"}};
  }
  if (answer.status === 401 || answer.status === 403) {
    $("access").hidden = false;
    $("access-why").textContent = `${label} refused: ${errorOf(answer)}`;
  }
  notice(answer.ok ? `${label}: done` : `${label} failed: ${errorOf(answer)}`,
         answer.ok ? "good" : "bad");
  refresh();
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button || button.disabled) return;
  // what takes the game down or changes its files is confirmed first; a restart is not
  if (button.dataset.action) {
    const {plugin, action} = button.dataset;
    if (action === "stop" && !confirm(`Stop ${plugin}? It stays stopped until Start.`)) return;
    mutate(`/plugins/${encodeURIComponent(plugin)}/${action}`, {}, `${action} ${plugin}`);
  } else if (button.dataset.rollback !== undefined) {
    const version = button.dataset.rollback;  // always named: never "whatever is previous"
    if (!version || !confirm(`Roll the game back to ${version}?`)) return;
    mutate("/hot-update/rollback", {version}, `roll back to ${version}`);
  }
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  notice(value ? "token kept for this tab" : "", "good");
});
$("token-forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  notice("token forgotten", "good");
});
if (sessionStorage.getItem(TOKEN_KEY)) $("access").hidden = false;

refresh();
setInterval(refresh, CONFIG.pollMs);
"""
