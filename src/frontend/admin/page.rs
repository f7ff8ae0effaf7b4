//! `GET /`: the status page. One self-contained HTML document — its style and script inline, no
//! external asset, no framework — rendered on the server from the snapshot (so it shows every
//! worker even without JavaScript), then refreshed from `/status` every two seconds while open.
//! Every text from the cluster is escaped (a worker's `STATUS=` line is its own words); the
//! script writes only `textContent`.

use std::fmt::Write as _;

use crate::supervisor::snapshot::{LastExit, Snapshot, WorkerRole, WorkerView, short_duration};

/// HTML-escapes `text`.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1048576 => format!("{:.1} KiB", b as f64 / 1024.0),
        1048576..1073741824 => format!("{:.1} MiB", b as f64 / 1048576.0),
        _ => format!("{:.2} GiB", b as f64 / 1073741824.0),
    }
}

/// The LAST EXIT cell as `ctl status` shows it (`replaced: reload, 5m ago`) and its tooltip (the
/// reason in words).
fn last_exit(exit: Option<&LastExit>, now: f64) -> (String, String) {
    match exit {
        None => ("–".to_string(), String::new()),
        Some(e) => (
            format!("{}, {} ago", e.short(), short_duration(now - e.at)),
            e.reason.clone(),
        ),
    }
}

fn row(out: &mut String, w: &WorkerView, now: f64) {
    let role = match w.role {
        WorkerRole::Slot => "",
        WorkerRole::Replacement => " new",
        WorkerRole::Leaving => " old",
    };
    let state = w.state.name();
    let (exit, reason) = last_exit(w.last_exit.as_ref(), now);
    let _ = write!(
        out,
        "<tr class=\"{role}\"><td class=\"num\">{}</td><td class=\"num\">{}</td><td><span class=\"pill {state}\">{state}{}</span></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td title=\"{}\">{}</td><td class=\"num\">{:.2} s</td><td class=\"num\">{}</td><td>{}</td><td class=\"status\">{}</td></tr>",
        match &w.group {
            Some(group) => esc(&format!("{group}.{}", w.id)),
            None => w.id.to_string(),
        },
        w.pid.map_or("–".to_string(), |p| p.to_string()),
        esc(role),
        w.generation,
        w.started_at
            .map_or("–".to_string(), |s| short_duration(now - s)),
        w.restarts,
        esc(&reason),
        esc(&exit),
        w.cpu_seconds,
        w.rss_bytes.map_or("–".to_string(), bytes),
        esc(w.cpus.as_deref().unwrap_or("any")),
        esc(w.status.as_deref().unwrap_or("")),
    );
}

/// The page for `snapshot` (measured).
pub fn render(snapshot: &Snapshot) -> String {
    let c = &snapshot.cluster;
    let now = c.started_at + c.uptime_seconds;
    let state = c.state.name();
    let title = match &c.name {
        Some(name) => format!("recluster · {}", esc(name)),
        None => format!("recluster · pid {}", c.pid),
    };
    let mut rows = String::new();
    for w in &snapshot.workers {
        row(&mut rows, w, now);
    }
    let sockets: Vec<String> = c
        .sockets
        .iter()
        .map(|s| match &s.steering {
            Some(by) => format!(
                "{} ({}, steered by {})",
                esc(&s.address),
                esc(&s.name),
                esc(by)
            ),
            None => format!("{} ({})", esc(&s.address), esc(&s.name)),
        })
        .collect();
    let generation = match c.reloading_to {
        Some(to) => format!("{} → {to}", c.generation),
        None => c.generation.to_string(),
    };
    PAGE.replace("{{title}}", &title)
        .replace("{{state}}", state)
        .replace("{{pid}}", &c.pid.to_string())
        .replace("{{ready}}", &c.ready.to_string())
        .replace("{{workers}}", &c.workers.to_string())
        .replace("{{generation}}", &generation)
        .replace("{{restarts}}", &c.restarts.to_string())
        .replace("{{uptime}}", &short_duration(c.uptime_seconds))
        .replace(
            "{{sockets}}",
            &if sockets.is_empty() {
                "workers bind their own".to_string()
            } else {
                sockets.join(", ")
            },
        )
        .replace("{{version}}", env!("RECLUSTER_VERSION"))
        .replace("{{rows}}", &rows)
}

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style>
:root { --bg: #f6f7f9; --card: #fff; --ink: #1d2330; --muted: #6b7385; --line: #e3e6ec;
  --ok: #1a7f4b; --ok-bg: #e3f5eb; --warn: #9a6400; --warn-bg: #fdf1d8; --bad: #b42318;
  --bad-bg: #fde7e5; --info: #2457c5; --info-bg: #e5edfc; }
@media (prefers-color-scheme: dark) { :root { --bg: #12151b; --card: #1b1f27; --ink: #e6e9ef;
  --muted: #959cab; --line: #2b313c; --ok: #5fd39a; --ok-bg: #163526; --warn: #f0b54a;
  --warn-bg: #3a2d12; --bad: #ff8a80; --bad-bg: #3d1b19; --info: #8fb1ff; --info-bg: #1b2a4a; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display: flex; align-items: center; gap: 12px; padding: 18px 28px;
  border-bottom: 1px solid var(--line); background: var(--card); }
header h1 { font-size: 18px; margin: 0; font-weight: 650; }
header .sub { color: var(--muted); }
header .live { margin-left: auto; color: var(--muted); font-size: 12px; }
main { padding: 22px 28px; max-width: 1280px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px;
  margin-bottom: 20px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 22px; font-weight: 650; margin-top: 2px; font-variant-numeric: tabular-nums; }
.card .v.small { font-size: 14px; font-weight: 500; word-break: break-all; }
table { width: 100%; border-collapse: collapse; background: var(--card); border: 1px solid var(--line);
  border-radius: 10px; overflow: hidden; }
th, td { padding: 8px 12px; text-align: left; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-size: 12px; color: var(--muted); font-weight: 600; text-transform: uppercase;
  letter-spacing: .04em; background: var(--bg); }
tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.status { color: var(--muted); white-space: normal; max-width: 320px; }
tr.new td, tr.old td { opacity: .75; }
.pill { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px;
  font-weight: 600; background: var(--info-bg); color: var(--info); }
.pill.ready, .pill.running { background: var(--ok-bg); color: var(--ok); }
.pill.starting, .pill.spawning, .pill.waiting, .pill.reloading, .pill.draining {
  background: var(--warn-bg); color: var(--warn); }
.pill.stopping, .pill.done { background: var(--bad-bg); color: var(--bad); }
footer { color: var(--muted); font-size: 12px; margin-top: 14px; }
</style>
</head>
<body>
<header>
  <h1 id="title">{{title}}</h1>
  <span class="pill {{state}}" id="state">{{state}}</span>
  <span class="live" id="live">updated now</span>
</header>
<main>
  <section class="cards">
    <div class="card"><div class="k">Ready</div><div class="v" id="ready">{{ready}} / {{workers}}</div></div>
    <div class="card"><div class="k">Generation</div><div class="v" id="generation">{{generation}}</div></div>
    <div class="card"><div class="k">Restarts</div><div class="v" id="restarts">{{restarts}}</div></div>
    <div class="card"><div class="k">Uptime</div><div class="v" id="uptime">{{uptime}}</div></div>
    <div class="card"><div class="k">Sockets</div><div class="v small" id="sockets">{{sockets}}</div></div>
  </section>
  <table>
    <thead><tr><th class="num">ID</th><th class="num">PID</th><th>State</th><th class="num">Gen</th>
      <th class="num">Uptime</th><th class="num">Restarts</th><th>Last exit</th><th class="num">CPU</th>
      <th class="num">RSS</th><th>CPUs</th><th>Status</th></tr></thead>
    <tbody id="workers">{{rows}}</tbody>
  </table>
  <footer>recluster {{version}} · pid {{pid}} · read-only; change the cluster with <code>recluster ctl</code></footer>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
function dur(s) {
  s = Math.max(0, Math.floor(s));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + Math.floor(s % 3600 / 60) + "m";
  return Math.floor(s / 86400) + "d" + Math.floor(s % 86400 / 3600) + "h";
}
function size(b) {
  if (b < 1024) return b + " B";
  if (b < 1048576) return (b / 1024).toFixed(1) + " KiB";
  if (b < 1073741824) return (b / 1048576).toFixed(1) + " MiB";
  return (b / 1073741824).toFixed(2) + " GiB";
}
function cell(tr, text, cls, title) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  if (title) td.title = title;
  td.textContent = text;
  tr.appendChild(td);
  return td;
}
function render(s) {
  const c = s.cluster, now = c.started_at + c.uptime_seconds;
  $("state").textContent = c.state;
  $("state").className = "pill " + c.state;
  $("ready").textContent = c.ready + " / " + c.workers;
  $("generation").textContent = c.reloading_to === null ? c.generation : c.generation + " → " + c.reloading_to;
  $("restarts").textContent = c.restarts;
  $("uptime").textContent = dur(c.uptime_seconds);
  const rows = [];
  for (const w of s.workers) {
    const tr = document.createElement("tr");
    const role = w.role === "replacement" ? " new" : w.role === "leaving" ? " old" : "";
    tr.className = role;
    cell(tr, w.group === null || w.group === undefined ? w.id : w.group + "." + w.id, "num");
    cell(tr, w.pid === null ? "–" : w.pid, "num");
    const st = cell(tr, "", "");
    const pill = document.createElement("span");
    pill.className = "pill " + w.state;
    pill.textContent = w.state + role;
    st.appendChild(pill);
    cell(tr, w.generation, "num");
    cell(tr, w.started_at === null ? "–" : dur(now - w.started_at), "num");
    cell(tr, w.restarts, "num");
    const e = w.last_exit;
    const what = e === null ? "" : (e.what ? e.what : (e.code !== null ? "exit " + e.code : e.signal));
    cell(tr, e === null ? "–" : what + ", " + dur(now - e.at) + " ago", "", e === null ? "" : e.reason);
    cell(tr, w.cpu_seconds.toFixed(2) + " s", "num");
    cell(tr, w.rss_bytes === null ? "–" : size(w.rss_bytes), "num");
    cell(tr, w.cpus === null ? "any" : w.cpus, "");
    cell(tr, w.status === null ? "" : w.status, "status");
    rows.push(tr);
  }
  $("workers").replaceChildren(...rows);
}
let last = Date.now();
async function refresh() {
  try {
    const r = await fetch("/status", { cache: "no-store" });
    if (!r.ok) throw new Error(r.status);
    render(await r.json());
    last = Date.now();
    $("live").textContent = "updated " + new Date(last).toLocaleTimeString();
  } catch (e) {
    $("live").textContent = "not reachable since " + new Date(last).toLocaleTimeString();
  }
}
setInterval(refresh, 2000);
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_every_worker_and_escapes_what_workers_say() {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "cluster": {"pid": 7, "name": null, "started_at": 0.0, "uptime_seconds": 100.0,
                "state": "running", "generation": 0, "reloading_to": null, "workers": 2,
                "ready": 2, "restarts": 0, "reloads_completed": 0, "reloads_abandoned": 0,
                "sockets": [], "control": null},
            "workers": [
                {"id": 0, "role": "slot", "pid": 4711, "generation": 0, "state": "ready",
                 "started_at": 1.0, "ready_at": 2.0, "restarts": 0, "last_exit": null,
                 "cpu_seconds": 0.5, "rss_bytes": 5242880, "cpus": "0", "status": "<script>x</script>"},
                {"id": 1, "role": "slot", "pid": 4712, "generation": 0, "state": "ready",
                 "started_at": 1.0, "ready_at": 2.0, "restarts": 0, "last_exit": null,
                 "cpu_seconds": 0.5, "rss_bytes": null, "cpus": null, "status": null}
            ]
        }))
        .unwrap();
        let page = render(&snapshot);
        assert!(page.contains(">4711<") && page.contains(">4712<"));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!page.contains("<script>x"));
        assert!(!page.contains("{{"), "every placeholder is filled");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external asset"
        );
    }
}
