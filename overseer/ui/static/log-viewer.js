// The log viewer of the execution page (SPEC §12). No framework, no build step.
//
// - The text is read from the output routes (`stdout`, `stderr`, `output`) with `?offset=`, as a
//   stream, in windows of at most WINDOW bytes: the first lines show while the rest arrives, and a
//   log larger than a window is read window by window as the reader scrolls, follows or searches.
// - Rows are virtual: the page holds a DOM node for each visible line only, whatever the length
//   of the log; the scroll bar maps to line numbers (scaled past SPACER_MAX pixels).
// - ANSI SGR sequences (16, 256 and 24-bit colours, bold, dim, italic, underline, strike,
//   inverse, hidden, resets) become styles; every other escape sequence and control character
//   is dropped; a carriage return keeps what was written after it. Text is only ever set as
//   text: nothing of the log is parsed as HTML.
// - Search covers the whole log (time-sliced, so the page never freezes); `#L<n>` links to a line.

const WINDOW = globalThis.OVERSEER_LOG_WINDOW || 50 * 1024 * 1024; // bytes per request at most
const SPACER_MAX = 8_000_000; // px: browsers stop growing an element somewhere past 17 M px
const CHECKPOINT = 256; // lines between two remembered ANSI states
const LINE_SHOWN = 20_000; // characters of one line drawn at most (search sees them all)
const SLICE_MS = 14; // longest stretch of searching between two frames
const PAD = 6; // px of padding above and below the rows

// -- ANSI ------------------------------------------------------------------------------------------
const ESCAPES = /\x1b(?:\[([0-?]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\|$)|[PX^_][^\x1b]*(?:\x1b\\|$)|[ -/]*[0-~]|$)|\x9b([0-?]*)[ -/]*([@-~])/g;
const CONTROLS = /[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]/g;
const PLAIN = { fg: null, bg: null, b: false, d: false, i: false, u: false, s: false, v: false, h: false };
const CUBE = [0, 95, 135, 175, 215, 255];

function color256(n) {
  if (!(n >= 0 && n <= 255)) return null;
  if (n < 16) return n;
  if (n >= 232) { const g = 8 + (n - 232) * 10; return `rgb(${g},${g},${g})`; }
  n -= 16;
  return `rgb(${CUBE[Math.floor(n / 36)]},${CUBE[Math.floor(n / 6) % 6]},${CUBE[n % 6]})`;
}

function rgb(r, g, b) {
  const ok = (x) => Number.isInteger(x) && x >= 0 && x <= 255;
  return ok(r) && ok(g) && ok(b) ? `rgb(${r},${g},${b})` : null;
}

/** The SGR state after the parameters `params` (the text between `ESC[` and `m`). */
export function applySgr(params, state) {
  const s = { ...state };
  const parts = params === "" ? ["0"] : params.split(";");
  for (let k = 0; k < parts.length; k++) {
    const part = parts[k];
    if (part.includes(":")) { // ITU form: 38:5:n, 38:2:cs:r:g:b (or 38:2:r:g:b), 4:0..5
      const sub = part.split(":").map((x) => (x === "" ? -1 : Number(x)));
      const code = sub[0];
      if (code === 38 || code === 48) {
        let c = null;
        if (sub[1] === 5) c = color256(sub[2]);
        else if (sub[1] === 2) c = sub.length >= 6 ? rgb(sub[3], sub[4], sub[5]) : rgb(sub[2], sub[3], sub[4]);
        if (code === 38) s.fg = c; else s.bg = c;
      } else if (code === 4) s.u = sub[1] !== 0;
      continue;
    }
    const code = part === "" ? 0 : Number(part);
    if (code === 0 || Number.isNaN(code)) Object.assign(s, PLAIN);
    else if (code === 1) s.b = true;
    else if (code === 2) s.d = true;
    else if (code === 3) s.i = true;
    else if (code === 4 || code === 21) s.u = true;
    else if (code === 7) s.v = true;
    else if (code === 8) s.h = true;
    else if (code === 9) s.s = true;
    else if (code === 22) { s.b = false; s.d = false; }
    else if (code === 23) s.i = false;
    else if (code === 24) s.u = false;
    else if (code === 27) s.v = false;
    else if (code === 28) s.h = false;
    else if (code === 29) s.s = false;
    else if (code >= 30 && code <= 37) s.fg = code - 30;
    else if (code === 39) s.fg = null;
    else if (code >= 40 && code <= 47) s.bg = code - 40;
    else if (code === 49) s.bg = null;
    else if (code >= 90 && code <= 97) s.fg = code - 90 + 8;
    else if (code >= 100 && code <= 107) s.bg = code - 100 + 8;
    else if (code === 38 || code === 48) {
      let c = null;
      const mode = Number(parts[k + 1]);
      if (mode === 5) { c = color256(Number(parts[k + 2])); k += 2; }
      else if (mode === 2) { c = rgb(Number(parts[k + 2]), Number(parts[k + 3]), Number(parts[k + 4])); k += 4; }
      else k += 1;
      if (code === 38) s.fg = c; else s.bg = c;
    }
  }
  return s;
}

/** A line as segments of text with the SGR state each is drawn in, and the state after it. */
export function parseLine(raw, state) {
  let line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
  const cr = line.lastIndexOf("\r");
  if (cr !== -1) { // a carriage return: what was written after it is what shows
    state = advance(line.slice(0, cr), state);
    line = line.slice(cr + 1);
  }
  const segments = [];
  let last = 0;
  if (line.indexOf("\x1b") === -1 && line.indexOf("\x9b") === -1) {
    segments.push({ text: line.replace(CONTROLS, ""), state });
    return { segments, state };
  }
  ESCAPES.lastIndex = 0;
  for (let m; (m = ESCAPES.exec(line)) !== null;) {
    if (m.index > last) segments.push({ text: line.slice(last, m.index).replace(CONTROLS, ""), state });
    const params = m[1] !== undefined ? m[1] : m[3];
    const final = m[2] !== undefined ? m[2] : m[4];
    if (final === "m" && /^[0-9;:]*$/.test(params)) state = applySgr(params, state);
    last = ESCAPES.lastIndex;
    if (m[0].length === 0) { ESCAPES.lastIndex++; break; } // a lone ESC at the end
  }
  if (last < line.length) segments.push({ text: line.slice(last).replace(CONTROLS, ""), state });
  return { segments, state };
}

/** The SGR state after a whole line (only its escape sequences are looked at). */
export function advance(raw, state) {
  if (raw.indexOf("\x1b") === -1 && raw.indexOf("\x9b") === -1) return state;
  ESCAPES.lastIndex = 0;
  for (let m; (m = ESCAPES.exec(raw)) !== null;) {
    const params = m[1] !== undefined ? m[1] : m[3];
    const final = m[2] !== undefined ? m[2] : m[4];
    if (final === "m" && /^[0-9;:]*$/.test(params)) state = applySgr(params, state);
    if (m[0].length === 0) break;
  }
  return state;
}

/** A line's text as shown: escape sequences and control characters removed. */
export function plainText(raw) {
  if (raw.indexOf("\x1b") === -1 && raw.indexOf("\r") === -1 && raw.indexOf("\x9b") === -1) {
    return CONTROLS.test(raw) ? raw.replace(CONTROLS, "") : raw;
  }
  return parseLine(raw, PLAIN).segments.map((s) => s.text).join("");
}

function styleSpan(span, st) {
  let fg = st.fg, bg = st.bg;
  if (st.v) { [fg, bg] = [bg === null ? "var(--log-bg)" : bg, fg === null ? "var(--log-text)" : fg]; }
  const cls = [];
  if (st.b) cls.push("a-b");
  if (st.d) cls.push("a-d");
  if (st.i) cls.push("a-i");
  if (st.u) cls.push("a-u");
  if (st.s) cls.push("a-s");
  if (st.h) cls.push("a-h");
  if (typeof fg === "number") cls.push(`fg${fg}`); else if (fg) span.style.color = fg;
  if (typeof bg === "number") cls.push(`bg${bg}`); else if (bg) span.style.backgroundColor = bg;
  if (cls.length) span.className = cls.join(" ");
}

const isPlain = (st) => st === PLAIN || (st.fg === null && st.bg === null && !st.b && !st.d && !st.i
  && !st.u && !st.s && !st.v && !st.h);

// -- the text of one stream ------------------------------------------------------------------------
export class LogData {
  constructor(url, onGrow) {
    this.url = url;
    this.onGrow = onGrow;
    this.lines = []; // complete lines
    this.partial = ""; // the text after the last newline
    this.partialVersion = 0;
    this.bytes = 0; // bytes read so far
    this.known = 0; // bytes the stream is known to have
    this.decoder = new TextDecoder("utf-8");
    this.loading = null;
    this.error = null;
    this.states = [PLAIN]; // the ANSI state at the start of lines 0, CHECKPOINT, 2 * CHECKPOINT, ...
  }

  get count() { return this.lines.length + (this.partial !== "" ? 1 : 0); }
  get more() { return this.known > this.bytes; }
  line(i) { return i < this.lines.length ? this.lines[i] : this.partial; }
  setKnown(size) {
    if (size > this.known) { this.known = size; this.error = null; } // news from the server: try again
  }

  /** Read from where the last read ended, up to WINDOW bytes (one request at a time). */
  load() {
    if (!this.loading) {
      this.loading = this._load()
        .catch((err) => { this.error = String(err.message || err); this.onGrow(); })
        .finally(() => { this.loading = null; });
    }
    return this.loading;
  }

  async _load() {
    const resp = await fetch(`${this.url}?offset=${this.bytes}`, { credentials: "same-origin", cache: "no-store" });
    if (!resp.ok) {
      let message = `HTTP ${resp.status}`;
      try { message = (await resp.json()).error || message; } catch (_) { /* not JSON */ }
      this.error = message;
      this.onGrow();
      return;
    }
    this.error = null;
    const reader = resp.body.getReader();
    let read = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const piece = read + value.byteLength > WINDOW ? value.subarray(0, WINDOW - read) : value;
      this.bytes += piece.byteLength; // the next window starts at exactly this byte
      read += piece.byteLength;
      this._append(this.decoder.decode(piece, { stream: true }));
      this.onGrow();
      if (read >= WINDOW) { reader.cancel().catch(() => {}); break; }
    }
    if (this.bytes > this.known) this.known = this.bytes;
    this.onGrow();
  }

  _append(text) {
    if (!text) return;
    let nl = text.indexOf("\n");
    if (nl === -1) { this.partial += text; this.partialVersion++; return; }
    this.lines.push(this.partial + text.slice(0, nl));
    let start = nl + 1;
    while ((nl = text.indexOf("\n", start)) !== -1) {
      this.lines.push(text.slice(start, nl));
      start = nl + 1;
    }
    this.partial = text.slice(start);
    this.partialVersion++;
  }

  /** The ANSI state at the start of line `i` (colours carry over line ends). */
  stateAt(i) {
    const k = Math.floor(i / CHECKPOINT);
    while (this.states.length <= k && this.states.length * CHECKPOINT <= this.lines.length) {
      const j = this.states.length - 1;
      let st = this.states[j];
      for (let l = j * CHECKPOINT; l < (j + 1) * CHECKPOINT; l++) st = advance(this.lines[l], st);
      this.states.push(st);
    }
    const from = Math.min(k, this.states.length - 1);
    let st = this.states[from];
    for (let l = from * CHECKPOINT; l < i; l++) st = advance(this.line(l), st);
    return st;
  }
}

// -- search ------------------------------------------------------------------------------------------
class Search {
  constructor(query) {
    this.query = query;
    const flags = query !== query.toLowerCase() ? "" : "i"; // smart case: a capital makes it exact
    const source = query.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    this.test = new RegExp(source, flags);
    this.all = new RegExp(source, flags + "g");
    this.hits = []; // matching line numbers (of complete lines), ascending
    this.scanned = 0; // complete lines looked at
    this.currentLine = -1; // the line of the current match
  }

  matches(raw) { return this.test.test(raw) || (this._escaped(raw) && this.test.test(plainText(raw))); }
  _escaped(raw) { return raw.indexOf("\x1b") !== -1 || raw.indexOf("\r") !== -1; }

  ranges(text) {
    const out = [];
    this.all.lastIndex = 0;
    for (let m; (m = this.all.exec(text)) !== null;) {
      if (m[0].length === 0) { this.all.lastIndex++; continue; }
      out.push([m.index, m.index + m[0].length]);
    }
    return out;
  }
}

// -- the viewer --------------------------------------------------------------------------------------
export class LogViewer {
  constructor(root, { base, sizes, live }) {
    this.root = root;
    this.base = base;
    this.live = live;
    this.body = root.querySelector(".log-body");
    this.spacer = root.querySelector(".log-spacer");
    this.inner = document.createElement("div");
    this.inner.className = "log-rows-inner";
    root.querySelector(".log-rows").append(this.inner);
    this.info = root.querySelector('[data-log="info"]');
    this.modeText = root.querySelector('[data-log="mode"]');
    this.searchBox = root.querySelector("#log-search");
    this.matchText = root.querySelector(".log-matches");
    this.followButton = root.querySelector('[data-action="follow"]');
    this.wrapButton = root.querySelector('[data-action="wrap"]');
    this.download = root.querySelector('[data-action="download"]');
    this.tabs = [...root.querySelectorAll('[role="tab"]')];
    this.sizes = { ...sizes };
    this.sources = {};
    this.stream = "output";
    this.follow = live;
    this.wrap = false;
    this.search = null;
    this.target = null; // the #L line (0-based)
    this.pool = [];
    this.expectTop = null;
    this.frame = 0;
    this.rowHeight = this._measure();
    this._bind();
    this._readHash();
    this.select(this.stream);
  }

  get data() { return this.sources[this.stream]; }

  _measure() {
    const probe = document.createElement("div");
    probe.className = "log-row";
    probe.textContent = "0";
    this.inner.append(probe);
    const h = probe.getBoundingClientRect().height || 20;
    probe.remove();
    return h;
  }

  _bind() {
    this.body.addEventListener("scroll", () => this._scrolled(), { passive: true });
    new ResizeObserver(() => this.schedule()).observe(this.body);
    this.tabs.forEach((tab, index) => {
      tab.addEventListener("click", () => this.select(tab.dataset.stream));
      tab.addEventListener("keydown", (e) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
        if (step === undefined) return;
        e.preventDefault();
        const next = this.tabs[(index + step + this.tabs.length) % this.tabs.length];
        next.focus();
        this.select(next.dataset.stream);
      });
    });
    this.followButton.addEventListener("click", () => this.setFollow(!this.follow));
    this.wrapButton.addEventListener("click", () => this.setWrap(!this.wrap));
    let typing = 0;
    this.searchBox.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => this.find(this.searchBox.value, 1, true), 160);
    });
    this.searchBox.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        clearTimeout(typing);
        this.find(this.searchBox.value, e.shiftKey ? -1 : 1, false);
      } else if (e.key === "Escape") {
        this.searchBox.value = "";
        this.find("", 1, true);
        this.body.focus();
      }
    });
    this.root.querySelector('[data-search="next"]').addEventListener("click", () => this.find(this.searchBox.value, 1, false));
    this.root.querySelector('[data-search="prev"]').addEventListener("click", () => this.find(this.searchBox.value, -1, false));
    document.addEventListener("keydown", (e) => {
      const t = e.target;
      const typingHere = t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
      if (typingHere || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "/") { e.preventDefault(); this.searchBox.focus(); this.searchBox.select(); }
      else if (e.key === "End" && (t === this.body || t === document.body)) { e.preventDefault(); this.setFollow(true); }
      else if (e.key === "Home" && t === document.body) { e.preventDefault(); this.setFollow(false); this._setTop(0); }
    });
    this.inner.addEventListener("click", (e) => {
      const num = e.target.closest(".log-num");
      if (!num) return;
      e.preventDefault();
      const line = Number(num.dataset.line);
      this.target = line;
      history.replaceState(null, "", `#L${line + 1}`);
      this.setFollow(false);
      this.invalidate();
    });
    window.addEventListener("hashchange", () => { this._readHash(); this._goToTarget(); });
  }

  _readHash() {
    const m = /^#L(\d+)$/.exec(location.hash);
    if (m && Number(m[1]) > 0) { this.target = Number(m[1]) - 1; this.follow = false; this.pendingTarget = true; }
  }

  // -- streams and loading -----------------------------------------------------------------------
  select(stream) {
    this.stream = stream;
    if (!this.sources[stream]) {
      const data = new LogData(`${this.base}/${stream}`, () => this._grew(data));
      data.setKnown(this.sizes[stream] || 0);
      this.sources[stream] = data;
    }
    for (const tab of this.tabs) {
      const on = tab.dataset.stream === stream;
      tab.setAttribute("aria-selected", on ? "true" : "false");
      tab.tabIndex = on ? 0 : -1;
    }
    this.download.href = `${this.base}/${stream}?download=1`;
    this.invalidate();
    this._maybeLoad();
    if (this.search) this.find(this.search.query, 1, true); // the same search in this stream
  }

  /** New sizes of the streams (from the page's live updates). */
  grow(sizes) {
    Object.assign(this.sizes, sizes);
    for (const [name, data] of Object.entries(this.sources)) data.setKnown(sizes[name] || 0);
    this._maybeLoad();
    this.schedule();
  }

  finish() { this.live = false; this.schedule(); }

  _grew(data) {
    if (data !== this.data) return;
    this.schedule();
    if (!data.loading) queueMicrotask(() => this._maybeLoad());
  }

  _maybeLoad() {
    const data = this.data;
    if (!data || data.loading || !data.more || data.error) return;
    const first = data.bytes === 0;
    const needed = first || this.follow || this._nearEnd() || (this.target !== null && this.target >= data.count);
    if (needed) data.load().then(() => this._maybeLoad());
  }

  _nearEnd() {
    const rows = this.body.clientHeight / this.rowHeight;
    return this.lastShown === undefined || this.lastShown >= this.data.count - 2 * rows;
  }

  // -- follow, wrap, scrolling ---------------------------------------------------------------------
  setFollow(on) {
    this.follow = on;
    this.followButton.setAttribute("aria-pressed", on ? "true" : "false");
    if (on) { this.target = null; this._maybeLoad(); }
    this.invalidate();
  }

  setWrap(on) {
    this.wrap = on;
    this.wrapButton.setAttribute("aria-pressed", on ? "true" : "false");
    this.root.classList.toggle("wrap", on);
    this.invalidate();
  }

  _setTop(top) {
    this.expectTop = Math.round(top);
    this.body.scrollTop = top;
  }

  _scrolled() {
    const top = this.body.scrollTop;
    if (this.expectTop !== null && Math.abs(top - this.expectTop) <= 1) {
      this.expectTop = null;
      this.schedule();
      return;
    }
    this.expectTop = null;
    const atEnd = top >= this.body.scrollHeight - this.body.clientHeight - 2;
    if (this.follow && !atEnd) this.setFollow(false);
    else if (!this.follow && atEnd && this.live) this.setFollow(true);
    this.schedule();
    this._maybeLoad();
  }

  scrollToLine(line) {
    const { total, maxScroll, visible } = this._geometry();
    const exact = Math.max(0, Math.min(line - visible / 3, total - visible));
    const span = Math.max(1e-9, total - visible);
    this._setTop(maxScroll > 0 ? (exact / span) * maxScroll : 0);
    this.invalidate();
  }

  _goToTarget() {
    if (this.target === null || !this.data) return;
    if (this.target < this.data.count) {
      this.pendingTarget = false;
      this.setFollow(false);
      this.scrollToLine(this.target);
    } else {
      this._maybeLoad();
    }
  }

  // -- drawing -------------------------------------------------------------------------------------
  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  }

  invalidate() {
    for (const row of this.pool) row.key = null;
    this.schedule();
  }

  _geometry() {
    const data = this.data;
    const total = data.count + (data.more || data.error ? 1 : 0);
    const viewport = this.body.clientHeight;
    const height = Math.min(total * this.rowHeight + 2 * PAD, SPACER_MAX);
    return { total, viewport, height, maxScroll: Math.max(0, height - viewport), visible: (viewport - 2 * PAD) / this.rowHeight };
  }

  render() {
    const data = this.data;
    if (!data) return;
    if (this.pendingTarget && this.target !== null && this.target < data.count) this._goToTarget();
    const { total, viewport, height, maxScroll, visible } = this._geometry();
    this.spacer.style.height = `${height}px`;
    if (this.follow && Math.abs(this.body.scrollTop - maxScroll) > 1) this._setTop(maxScroll);
    const top = Math.min(this.body.scrollTop, maxScroll);
    const span = Math.max(0, total - visible);
    const exact = maxScroll > 0 ? (top / maxScroll) * span : 0;
    const count = Math.min(total, Math.ceil(visible) + 2);
    const gutter = String(Math.max(data.count, 1)).length;
    this.root.style.setProperty("--gutter", `${Math.max(gutter, 3)}ch`);
    let first;
    let shift;
    const atEnd = maxScroll > 0 && top >= maxScroll - 1;
    if (this.wrap && (atEnd || (this.follow && total > visible))) {
      first = Math.max(0, total - count);
      shift = null; // bottom-aligned below, once the rows' height is known
    } else {
      first = Math.min(Math.floor(exact), Math.max(0, total - count));
      shift = this.wrap ? 0 : (exact - Math.floor(exact)) * this.rowHeight;
    }
    while (this.pool.length < count) {
      const row = document.createElement("div");
      row.className = "log-row";
      const num = document.createElement("a");
      num.className = "log-num";
      const text = document.createElement("span");
      text.className = "log-text";
      row.append(num, text);
      row.num = num;
      row.text = text;
      this.pool.push(row);
      this.inner.append(row);
    }
    for (let k = 0; k < this.pool.length; k++) {
      const row = this.pool[k];
      const line = first + k;
      if (k >= count || line >= total) { row.hidden = true; row.key = null; continue; }
      row.hidden = false;
      this._drawRow(row, line, data);
    }
    this.lastShown = first + count - 1;
    if (shift === null) {
      const rowsHeight = this.inner.offsetHeight;
      this.inner.style.transform = `translateY(${Math.min(0, viewport - rowsHeight)}px)`;
    } else {
      this.inner.style.transform = `translateY(${-shift}px)`;
    }
    this._status();
  }

  _drawRow(row, line, data) {
    const search = this.search;
    const isPartial = line >= data.lines.length;
    const key = `${line}|${isPartial ? data.partialVersion : ""}|${search ? search.query + search.currentLine : ""}|${this.target === line}|${data.more}|${data.error}|${data.loading !== null}`;
    if (row.key === key) return;
    row.key = key;
    row.classList.toggle("is-target", this.target === line);
    if (line >= data.count) { // the row after the loaded text
      row.num.textContent = "";
      row.num.removeAttribute("href");
      row.text.className = "log-text log-more";
      row.text.textContent = data.error ? `Cannot read the output: ${data.error}`
        : `… ${formatBytes(data.known - data.bytes)} more${data.loading ? ": loading" : ""}`;
      return;
    }
    row.text.className = "log-text";
    row.num.textContent = String(line + 1);
    row.num.href = `#L${line + 1}`;
    row.num.dataset.line = String(line);
    const raw = data.line(line);
    const { segments } = parseLine(raw, data.stateAt(line));
    const currentLine = search ? search.currentLine : -1;
    const hits = search ? search.ranges(segments.map((s) => s.text).join("")) : [];
    const nodes = [];
    let pos = 0;
    let hit = 0;
    let shown = 0;
    for (const seg of segments) {
      let text = seg.text;
      if (shown + text.length > LINE_SHOWN) text = text.slice(0, Math.max(0, LINE_SHOWN - shown));
      shown += text.length;
      let offset = 0;
      while (offset < text.length) {
        while (hit < hits.length && hits[hit][1] <= pos + offset) hit++;
        let end = text.length;
        let marked = false;
        if (hit < hits.length) {
          const [a, b] = hits[hit];
          if (a <= pos + offset) { marked = true; end = Math.min(text.length, b - pos); }
          else end = Math.min(text.length, a - pos);
        }
        const piece = text.slice(offset, end);
        let node;
        if (isPlain(seg.state) && !marked) node = document.createTextNode(piece);
        else {
          const span = document.createElement("span");
          styleSpan(span, seg.state);
          span.textContent = piece;
          node = span;
        }
        if (marked) {
          const mark = document.createElement("mark");
          mark.className = line === currentLine ? "hit current" : "hit";
          mark.append(node);
          node = mark;
        }
        nodes.push(node);
        offset = end;
      }
      pos += seg.text.length;
      if (shown >= LINE_SHOWN) break;
    }
    const full = segments.reduce((n, s) => n + s.text.length, 0);
    if (full > LINE_SHOWN) {
      const more = document.createElement("span");
      more.className = "log-more";
      more.textContent = ` … ${full - LINE_SHOWN} more characters (Download has them)`;
      nodes.push(more);
    }
    row.text.replaceChildren(...nodes);
  }

  _status() {
    const data = this.data;
    const lines = data.count;
    let info = lines === 0 && !data.more ? (this.live ? "no output yet" : "no output")
      : `${lines.toLocaleString("en")} line${lines === 1 ? "" : "s"} · ${formatBytes(data.bytes)}`;
    if (data.more) info += ` of ${formatBytes(data.known)}`;
    if (this.info.textContent !== info) this.info.textContent = info;
    const mode = this.follow ? (this.live ? "following" : "at the end") : (this.live ? "paused: End follows again" : "");
    if (this.modeText.textContent !== mode) this.modeText.textContent = mode;
  }

  // -- search ----------------------------------------------------------------------------------------
  /** Search for `query`; `step` 1 is the next match, -1 the previous one; `fresh` starts from the
   *  top of the view (as the user types) rather than from the current match. */
  async find(query, step, fresh) {
    if (!query) {
      this.search = null;
      this.matchText.textContent = "";
      this.matchText.classList.remove("none");
      this.invalidate();
      return;
    }
    if (!this.search || this.search.query !== query || this.search.data !== this.data) {
      this.search = new Search(query); // the hits are those of one stream
      this.search.data = this.data;
      fresh = true;
    }
    const search = this.search;
    const from = fresh || search.currentLine < 0 ? this._topLine() - (step > 0 ? 1 : 0) : search.currentLine;
    const line = await this._hitFrom(search, from, step);
    if (search !== this.search) return;
    search.currentLine = line;
    if (line < 0) {
      this.matchText.textContent = "no match";
      this.matchText.classList.add("none");
      this.invalidate();
      return;
    }
    this.matchText.classList.remove("none");
    this._countText();
    this.setFollow(false);
    this.scrollToLine(line);
    this._countInBackground(search);
  }

  _countText() {
    const s = this.search;
    if (!s || s.currentLine < 0) return;
    const done = this._scannedAll(s);
    let lo = 0, hi = s.hits.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (s.hits[mid] < s.currentLine) lo = mid + 1; else hi = mid; }
    const total = s.hits.length + (this._tailHit(s) >= 0 ? 1 : 0);
    this.matchText.textContent = `${(lo + 1).toLocaleString("en")} of ${total.toLocaleString("en")}${done ? "" : "+"}`;
  }

  _topLine() {
    const { total, maxScroll, visible } = this._geometry();
    return maxScroll > 0 ? Math.floor((this.body.scrollTop / maxScroll) * Math.max(0, total - visible)) : 0;
  }

  _scannedAll(search) {
    const d = this.data;
    return search.scanned >= d.lines.length && (!d.more || d.error !== null) && !d.loading;
  }

  /** The line after the last newline, when it is scanned as far as the rest and matches. */
  _tailHit(search) {
    const d = this.data;
    return search.scanned >= d.lines.length && d.partial !== "" && search.matches(d.partial) ? d.lines.length : -1;
  }

  /** The nearest matching line after `from` (step 1) or before it (-1), among those scanned. */
  _pick(search, from, step) {
    const hits = search.hits;
    const tail = this._tailHit(search);
    let lo = 0, hi = hits.length;
    if (step > 0) {
      while (lo < hi) { const mid = (lo + hi) >> 1; if (hits[mid] > from) hi = mid; else lo = mid + 1; }
      if (lo < hits.length) return hits[lo];
      return tail > from ? tail : -1;
    }
    if (tail >= 0 && tail < from) return tail;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (hits[mid] < from) lo = mid + 1; else hi = mid; }
    return lo > 0 ? hits[lo - 1] : -1;
  }

  /** The matching line next to `from`, wrapping around the end; -1 when the log has none.
   *  Scans (and reads windows of the log) as far as it must. */
  async _hitFrom(search, from, step) {
    for (;;) {
      const all = this._scannedAll(search);
      if (step > 0) {
        const line = this._pick(search, from, 1);
        if (line >= 0) return line;
        if (all) return this._pick(search, -1, 1);
      } else if (search.scanned >= from || all) {
        const line = this._pick(search, from, -1);
        if (line >= 0) return line;
        if (all) return this._pick(search, Infinity, -1);
      }
      if (!(await this._scanMore(search)) || search !== this.search) return -1;
    }
  }

  /** Scan one more stretch of the log, reading its next window when the read part is scanned;
   *  false when nothing is left. */
  _scanMore(search) {
    const d = this.data;
    if (search.scanned < d.lines.length) return this._scanSlice(search).then(() => true);
    if (d.loading) return d.loading.then(() => true);
    if (d.more && d.error === null) return d.load().then(() => true);
    return Promise.resolve(false);
  }

  _scanSlice(search) {
    return new Promise((resolve) => {
      setTimeout(() => {
        const lines = this.data.lines;
        const end = performance.now() + SLICE_MS;
        let i = search.scanned;
        while (i < lines.length) {
          if (search.matches(lines[i])) search.hits.push(i);
          i++;
          if ((i & 1023) === 0 && performance.now() > end) break;
        }
        search.scanned = i;
        resolve();
      }, 0);
    });
  }

  /** Count the rest of the matches of what is read, without holding the page. */
  async _countInBackground(search) {
    if (this.counting === search) return;
    this.counting = search;
    while (search === this.search && search.scanned < this.data.lines.length) {
      await this._scanSlice(search);
      this._countText();
    }
    this._countText();
    if (this.counting === search) this.counting = null;
  }
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GB`;
}
