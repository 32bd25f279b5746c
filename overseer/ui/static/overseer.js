// The pages' small behaviours: fresh relative times and durations, tables that refresh while the
// tab is visible, `/` to the filter box, and on an execution page its live updates (one
// Server-Sent Events stream, closed while the tab is hidden) and the log viewer.

const OUTCOMES = ["complete", "fail", "time-out", "lost"];

function tone(run) {
  if (!run) return "none";
  if (run.state === "finished") return OUTCOMES.includes(run.status) ? run.status : "other";
  return ["running", "queued", "stopped"].includes(run.state) ? run.state : "other";
}

function parseTime(value) {
  const t = value ? Date.parse(value) : NaN;
  return Number.isNaN(t) ? null : t;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  let minutes = Math.floor(seconds / 60);
  const secs = Math.floor(seconds % 60);
  if (minutes < 60) return secs ? `${minutes} min ${String(secs).padStart(2, "0")} s` : `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  minutes %= 60;
  if (hours < 48) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

function ago(ms) {
  let delta = (Date.now() - ms) / 1000;
  const future = delta < 0;
  delta = Math.abs(delta);
  let text;
  if (delta < 45) return future ? `in ${Math.floor(delta)} s` : "just now";
  if (delta < 3600) text = `${Math.round(delta / 60)} min`;
  else if (delta < 172800) text = `${Math.round(delta / 3600)} h`;
  else text = `${Math.round(delta / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

function localTitle(el, ms) {
  const when = new Date(ms);
  el.title = `${when.toLocaleString()} (${when.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")})`;
}

function refreshTimes() {
  for (const el of document.querySelectorAll("time[data-ago]")) {
    const ms = parseTime(el.getAttribute("datetime"));
    if (ms === null) continue;
    const text = ago(ms);
    if (el.textContent !== text) el.textContent = text;
    if (!el.dataset.local) { localTitle(el, ms); el.dataset.local = "1"; }
  }
  for (const el of document.querySelectorAll("[data-since]")) {
    const ms = parseTime(el.dataset.since);
    const out = el.querySelector("[data-duration]") || el;
    if (ms !== null) out.textContent = duration(Math.max(0, (Date.now() - ms) / 1000));
  }
}

function offsets() {
  const timeline = document.getElementById("timeline");
  if (!timeline) return;
  const start = parseTime(timeline.dataset.created);
  for (const el of timeline.querySelectorAll("time[data-offset]")) setOffset(el, start);
}

function setOffset(el, start) {
  const ms = parseTime(el.getAttribute("datetime"));
  if (ms === null || start === null) return;
  const d = Math.max(0, (ms - start) / 1000);
  el.textContent = d === 0 ? new Date(ms).toLocaleTimeString() : `+${duration(d)}`;
  localTitle(el, ms);
}

// tables that refresh themselves while the tab is visible (and nothing in them is being used)
function startRefreshing() {
  for (const el of document.querySelectorAll("[data-refresh]")) {
    const id = el.id;
    const every = Math.max(2, Number(el.dataset.refresh) || 10) * 1000;
    setInterval(() => {
      const current = document.getElementById(id);
      if (!current || document.hidden || !window.htmx) return;
      if (current.contains(document.activeElement) && document.activeElement !== document.body) return;
      window.htmx.ajax("GET", location.pathname + location.search, { target: `#${id}`, select: `#${id}`, swap: "outerHTML" });
    }, every);
  }
}

document.addEventListener("keydown", (e) => {
  if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey || document.getElementById("log-search")) return;
  const t = e.target;
  if (t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
  const box = document.querySelector("[data-slash-focus]");
  if (box) { e.preventDefault(); box.focus(); box.select(); }
});

// -- the execution page ---------------------------------------------------------------------------
class LiveExecution {
  constructor(root, viewer) {
    this.root = root;
    this.viewer = viewer;
    this.url = root.dataset.stream;
    this.events = Number(root.dataset.events) || 0;
    this.state = root.dataset.state;
    this.source = null;
    this.retry = 1000;
    this.created = parseTime(document.getElementById("timeline").dataset.created);
    document.addEventListener("visibilitychange", () => (document.hidden ? this.close() : this.open()));
    window.addEventListener("pagehide", () => this.close());
    this.open();
  }

  open() {
    if (this.source || this.state === "finished" || document.hidden) return;
    const source = new EventSource(`${this.url}?last_event_id=${this.events}`);
    this.source = source;
    source.addEventListener("event", (e) => {
      this.events = Number(e.lastEventId) || this.events + 1;
      this.addEvent(JSON.parse(e.data));
    });
    source.addEventListener("state", (e) => this.update(JSON.parse(e.data)));
    source.addEventListener("end", () => { this.close(); this.state = "finished"; this.viewer?.finish(); });
    source.addEventListener("open", () => { this.retry = 1000; });
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
      this.source = null; // refused (all stream slots taken, or the session ended): try again later
      setTimeout(() => this.open(), this.retry);
      this.retry = Math.min(this.retry * 2, 30000);
    });
  }

  close() {
    if (this.source) { this.source.close(); this.source = null; }
  }

  field(name) { return this.root.querySelector(`[data-field="${name}"]`); }

  setText(name, text) {
    const el = this.field(name);
    if (el && el.textContent !== text) el.textContent = text;
  }

  setTime(name, value) {
    const el = this.field(name);
    if (!el) return;
    if (!value) { el.textContent = "—"; return; }
    const time = document.createElement("time");
    time.setAttribute("datetime", value);
    time.dataset.ago = "";
    el.replaceChildren(time);
    refreshTimes();
  }

  update(run) {
    const was = this.state;
    this.state = run.state;
    this.root.dataset.state = run.state;
    const badge = this.root.querySelector("#run-badge .badge");
    if (badge) {
      const t = tone(run);
      badge.className = `badge tone-${t}`;
      badge.dataset.tone = t;
      badge.querySelector(".badge-text").textContent = run.state === "running" && run.status === "start" ? "running" : run.status;
    }
    this.setText("state", run.state);
    this.setText("status", run.status);
    this.setText("exit_code", run.exit_code === null || run.exit_code === undefined ? "—"
      : `${run.exit_code}${run.signal ? ` · ${run.signal}` : ""}`);
    this.setText("pid", run.pid === null || run.pid === undefined ? "—" : String(run.pid));
    this.setText("signal", run.signal || "—");
    this.setText("events_count", String(run.events_count));
    if (run.started_at && this.field("started_at")?.querySelector("time")?.getAttribute("datetime") !== run.started_at) {
      this.setTime("started_at", run.started_at);
    }
    if (run.ended_at) this.setTime("ended_at", run.ended_at);
    const dur = this.field("duration");
    if (dur) {
      if (run.state !== "finished" && run.started_at) dur.dataset.since = run.started_at;
      else {
        delete dur.dataset.since;
        const start = parseTime(run.started_at), end = parseTime(run.ended_at);
        dur.querySelector("[data-duration]").textContent = start !== null && end !== null ? duration((end - start) / 1000) : "—";
      }
    }
    for (const button of this.root.querySelectorAll("[data-enabled-in]")) {
      button.disabled = !button.dataset.enabledIn.split(" ").includes(run.state);
    }
    const signals = this.root.querySelector(".signal-group");
    if (signals) signals.hidden = run.state === "finished";
    this.progress(run.progress);
    this.outputs(run.outputs);
    this.artifacts(run.artifacts);
    if (this.viewer && run.sizes) this.viewer.grow(run.sizes);
    if (run.state === "finished" && was !== "finished") {
      document.getElementById("run-announce").textContent = `The run is finished: ${run.status}.`;
      this.viewer?.finish();
    }
  }

  addEvent(event) {
    const timeline = document.getElementById("timeline");
    const li = document.createElement("li");
    li.className = `tl-item tl-src-${event.source} tl-ev-${event.name}`;
    const dot = document.createElement("span");
    dot.className = "tl-dot";
    dot.setAttribute("aria-hidden", "true");
    const body = document.createElement("div");
    body.className = "tl-body";
    const head = document.createElement("div");
    head.className = "tl-head";
    const name = document.createElement("span");
    name.className = "tl-name";
    name.textContent = event.name;
    const source = document.createElement("span");
    source.className = "tl-source";
    source.textContent = event.source;
    const time = document.createElement("time");
    time.className = "tl-time";
    time.setAttribute("datetime", event.time);
    time.dataset.offset = "";
    setOffset(time, this.created);
    head.append(name, source, time);
    body.append(head);
    if (event.cause) {
      const cause = document.createElement("div");
      cause.className = "tl-cause";
      cause.textContent = event.cause;
      body.append(cause);
    }
    li.append(dot, body);
    timeline.append(li);
    timeline.scrollTop = timeline.scrollHeight;
  }

  progress(p) {
    const card = document.getElementById("progress");
    if (!card || !p) return;
    card.hidden = false;
    const done = Number(p.done) || 0, total = Number(p.total) || 0;
    const bar = card.querySelector(".progress");
    const pct = total > 0 ? Math.max(0, Math.min(100, (done / total) * 100)) : 0;
    const fill = card.querySelector(".progress-fill");
    fill.className = "progress-fill";
    fill.style.width = `${pct}%`;
    bar.setAttribute("aria-valuenow", String(done));
    bar.setAttribute("aria-valuemax", String(total || 100));
    card.querySelector('[data-progress="text"]').textContent = total ? `${done} / ${total}` : String(done);
    card.querySelector('[data-progress="message"]').textContent = p.message || "";
  }

  outputs(values) {
    const card = document.getElementById("outputs");
    if (!card || !values || typeof values !== "object" || !Object.keys(values).length) return;
    card.hidden = false;
    const list = card.querySelector("[data-outputs]");
    const nodes = [];
    for (const [key, value] of Object.entries(values)) {
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.className = "mono";
      dd.textContent = typeof value === "string" ? value : JSON.stringify(value);
      nodes.push(dt, dd);
    }
    list.replaceChildren(...nodes);
  }

  artifacts(items) {
    const card = document.getElementById("artifacts");
    if (!card || !Array.isArray(items) || !items.length) return;
    card.hidden = false;
    const list = card.querySelector("[data-artifacts]");
    list.replaceChildren(...items.map((a) => {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "mono";
      name.textContent = typeof a === "string" ? a : a.name;
      li.append(name);
      if (a && a.size !== undefined) {
        const size = document.createElement("span");
        size.className = "faint";
        size.textContent = ` ${a.size} bytes`;
        li.append(size);
      }
      return li;
    }));
  }
}

async function executionPage() {
  const root = document.getElementById("execution");
  if (!root) return;
  const log = document.getElementById("log");
  let viewer = null;
  try {
    const { LogViewer } = await import(log.dataset.module);
    viewer = new LogViewer(log, { base: log.dataset.base, sizes: JSON.parse(log.dataset.sizes), live: log.dataset.live === "true" });
    window.overseerLog = viewer; // for the browser tests and the curious
  } catch (err) {
    log.querySelector('[data-log="info"]').textContent = `The log viewer could not start: ${err}`;
  }
  new LiveExecution(root, viewer);
}

refreshTimes();
offsets();
setInterval(refreshTimes, 1000);
startRefreshing();
executionPage();
