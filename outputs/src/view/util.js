/* Shared helpers: formatting, colors, binary search, DOM and canvas plumbing, data decoding. */

const NS_PER_US = 1e3, NS_PER_MS = 1e6, NS_PER_S = 1e9;

function fmtDur(ns) {
  const a = Math.abs(ns);
  if (a < NS_PER_US) return Math.round(ns) + ' ns';
  if (a < NS_PER_MS) return (ns / NS_PER_US).toFixed(a < 1e4 ? 2 : 1) + ' µs';
  if (a < NS_PER_S) return (ns / NS_PER_MS).toFixed(a < 1e7 ? 3 : a < 1e8 ? 2 : 1) + ' ms';
  if (a < 600 * NS_PER_S) return (ns / NS_PER_S).toFixed(3) + ' s';
  const m = Math.floor(ns / 60e9);
  return m + ' min ' + ((ns - m * 60e9) / NS_PER_S).toFixed(1) + ' s';
}

/* A timestamp relative to the recording's start, with as many digits as `resolution` (ns)
   makes meaningful: seconds from one second on, else ms or µs. */
function fmtTs(ns, resolution) {
  const r = Math.max(1, resolution || 1);
  const digits = Math.min(9, Math.max(0, Math.ceil(-Math.log10(r / NS_PER_S) - 1e-9)));
  const a = Math.abs(ns);
  if (a >= NS_PER_S || r >= NS_PER_MS || ns === 0) return (ns / NS_PER_S).toFixed(digits) + ' s';
  if (a >= NS_PER_MS || r >= NS_PER_US) return (ns / NS_PER_MS).toFixed(Math.max(0, digits - 3)) + ' ms';
  return (ns / NS_PER_US).toFixed(Math.max(0, digits - 6)) + ' µs';
}

function fmtCount(n) {
  return Number(n).toLocaleString('en-US');
}

function fmtPct(x) {
  if (!isFinite(x)) return '–';
  return (x >= 10 ? x.toFixed(1) : x >= 0.1 ? x.toFixed(2) : x.toFixed(3)) + '%';
}

function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0, v = Number(n);
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(1)) + ' ' + units[i];
}

/* Display form of an integer column value: numbers as they are, hex strings as they are. */
function fmtInt(v) {
  if (v === null || v === undefined) return '–';
  if (typeof v === 'string') return v;
  return String(v) + (Math.abs(v) >= 4096 ? ' (0x' + (v < 0 ? '-' + (-v).toString(16) : v.toString(16)) + ')' : '');
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function hashStr(s) {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
  return h >>> 0;
}

/* A muted, distinguishable palette for spans (Perfetto-like). */
const SPAN_PALETTE = [
  '#5c8fd6', '#e3894b', '#5aa469', '#c9574f', '#8f6cc4', '#3fa7a8', '#d4a83a', '#d1679e',
  '#7d8c3c', '#4f79a8', '#b5713a', '#6b9e8f', '#a55aa0', '#5f9ec7', '#c78752', '#78a34e',
  '#b85d6c', '#8a7fd0', '#459a73', '#c29545',
];

function spanColor(name) {
  return SPAN_PALETTE[hashStr(name) % SPAN_PALETTE.length];
}

/* Flame-graph colors: warm for user code, amber for the kernel, green for JIT code, grey for
   unknown frames; blues for off-CPU graphs. Deterministic per name. */
function frameColor(name, kind, palette) {
  const h = hashStr(name);
  const f = (h & 0xffff) / 0xffff, g = ((h >>> 16) & 0xff) / 0xff;
  if (kind === 3) return 'hsl(210,6%,' + Math.round(72 + 10 * f) + '%)';
  if (kind === -1) return 'hsl(250,18%,' + Math.round(74 + 8 * f) + '%)';
  if (palette === 'cold') {
    if (kind === 1) return 'hsl(' + Math.round(180 + 20 * f) + ',45%,' + Math.round(62 + 10 * g) + '%)';
    return 'hsl(' + Math.round(205 + 30 * f) + ',55%,' + Math.round(64 + 12 * g) + '%)';
  }
  if (kind === 1) return 'hsl(' + Math.round(30 + 12 * f) + ',80%,' + Math.round(58 + 10 * g) + '%)';
  if (kind === 2) return 'hsl(' + Math.round(95 + 30 * f) + ',45%,' + Math.round(56 + 10 * g) + '%)';
  // Python functions: yellows, as py-spy and speedscope draw them.
  if (kind === 4) return 'hsl(' + Math.round(48 + 10 * f) + ',85%,' + Math.round(56 + 10 * g) + '%)';
  return 'hsl(' + Math.round(4 + 44 * f) + ',78%,' + Math.round(60 + 10 * g) + '%)';
}

const LEVEL_NAMES = ['', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'];
const LEVEL_COLORS = ['#9aa4b1', '#9aa4b1', '#4a90d9', '#e0a100', '#d93b30', '#8e0c3a'];
const EVENT_COLORS = {
  process_start: '#2e9d5b', process_exit: '#6b7785', thread_start: '#5aa469', thread_exit: '#8d97a3',
  thread_rename: '#8f6cc4', exec: '#3b6fd8', signal: '#e0a100', fatal_signal: '#c0241a',
  model_load: '#7b4fd0', api_error: '#d93b30',
};
function eventColor(kind) { return EVENT_COLORS[kind] || '#6b7785'; }
const EVENT_PRIORITY = { fatal_signal: 9, api_error: 8, signal: 6, model_load: 5, exec: 4 };

/* First index i in [lo, hi) with arr[i] >= x (hi if none). */
function lowerBound(arr, x, lo, hi) {
  lo = lo === undefined ? 0 : lo;
  hi = hi === undefined ? arr.length : hi;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (arr[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

function el(tag, props, children) {
  const e = document.createElement(tag);
  if (props) {
    for (const k in props) {
      if (k === 'text') e.textContent = props[k];
      else if (k === 'cls') e.className = props[k];
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), props[k]);
      else e.setAttribute(k, props[k]);
    }
  }
  for (const c of children || []) e.append(c);
  return e;
}

/* Sizes a canvas to CSS pixels, backed by device pixels; returns its 2D context, scaled. */
function fitCanvas(canvas, w, h) {
  const dpr = window.devicePixelRatio || 1;
  const bw = Math.max(1, Math.round(w * dpr)), bh = Math.max(1, Math.round(h * dpr));
  if (canvas.width !== bw || canvas.height !== bh) {
    canvas.width = bw;
    canvas.height = bh;
    canvas.style.height = h + 'px';
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/* Text cut to fit `maxW` pixels, with an ellipsis, using a per-string width cache. */
function fitText(ctx, text, maxW, cache) {
  let w = cache ? cache.get(text) : undefined;
  if (w === undefined) {
    w = ctx.measureText(text).width;
    if (cache) cache.set(text, w);
  }
  if (w <= maxW) return text;
  const n = Math.floor(text.length * maxW / w) - 1;
  return n < 2 ? '' : text.slice(0, n) + '…';
}

const tooltip = {
  node: null,
  show(html, x, y) {
    const t = this.node || (this.node = document.getElementById('mp-tooltip'));
    t.innerHTML = html;
    t.hidden = false;
    const pad = 14, w = t.offsetWidth, h = t.offsetHeight;
    let left = x + pad, top = y + pad;
    if (left + w > window.innerWidth - 4) left = Math.max(4, x - w - pad);
    if (top + h > window.innerHeight - 4) top = Math.max(4, y - h - pad);
    t.style.left = left + 'px';
    t.style.top = top + 'px';
  },
  hide() {
    const t = this.node || (this.node = document.getElementById('mp-tooltip'));
    t.hidden = true;
  },
};

function ttRows(rows) {
  return '<table>' + rows.filter(r => r && r[1] !== undefined && r[1] !== '')
    .map(r => '<tr><td>' + esc(r[0]) + '</td><td>' + esc(r[1]) + '</td></tr>').join('') + '</table>';
}

/* ---- data decoding ---- */

/* Delta-encoded times to absolute (relative to the recording's start) ns. */
function undelta(d) {
  const out = new Float64Array(d.length);
  let t = 0;
  for (let i = 0; i < d.length; i++) { t += d[i]; out[i] = t; }
  return out;
}

/* Running maximum of ends: monotone, so the first item that may reach time t is a binary search
   away even when items of one row overlap. */
function prefixMaxEnds(starts, durs) {
  const out = new Float64Array(starts.length);
  let m = -Infinity;
  for (let i = 0; i < starts.length; i++) {
    const e = starts[i] + durs[i];
    if (e > m) m = e;
    out[i] = m;
  }
  return out;
}

/* Splits a track's spans into rows by depth: per row the start times, running-max ends and the
   span indices, in start order. */
function buildLevels(sp) {
  const n = sp.start.length;
  let maxDepth = 0;
  for (let i = 0; i < n; i++) if (sp.depth[i] > maxDepth) maxDepth = sp.depth[i];
  const counts = new Int32Array(maxDepth + 1);
  for (let i = 0; i < n; i++) counts[sp.depth[i]]++;
  const levels = [];
  for (let l = 0; l <= maxDepth; l++) levels.push({ ix: new Int32Array(counts[l]), st: new Float64Array(counts[l]), en: null, n: 0 });
  for (let i = 0; i < n; i++) {
    const lv = levels[sp.depth[i]];
    lv.ix[lv.n] = i;
    lv.st[lv.n] = sp.start[i];
    lv.n++;
  }
  for (const lv of levels) {
    const en = new Float64Array(lv.n);
    let m = -Infinity;
    for (let j = 0; j < lv.n; j++) {
      const e = lv.st[j] + sp.dur[lv.ix[j]];
      if (e > m) m = e;
      en[j] = m;
    }
    lv.en = en;
  }
  return levels;
}

/* Marker layers of a track (events by kind, logs by level), drawn lowest priority first so the
   most severe stays visible where markers crowd one pixel. */
function buildMarkerLayers(track, S) {
  const layers = [];
  const group = (times, keyOf, make) => {
    const by = new Map();
    for (let i = 0; i < times.length; i++) {
      const k = keyOf(i);
      let a = by.get(k);
      if (!a) by.set(k, a = []);
      a.push(i);
    }
    for (const [k, ix] of by) {
      const t = new Float64Array(ix.length);
      for (let j = 0; j < ix.length; j++) t[j] = times[ix[j]];
      layers.push(Object.assign({ t, ix: Int32Array.from(ix) }, make(k)));
    }
  };
  if (track.ev) {
    const ev = track.ev;
    group(ev.time, i => ev.k[i], k => ({ type: 'event', kind: S[k], color: eventColor(S[k]), prio: 10 + (EVENT_PRIORITY[S[k]] || 0) }));
  }
  if (track.lg) {
    const lg = track.lg;
    group(lg.time, i => lg.lv[i], k => ({ type: 'log', level: k, color: LEVEL_COLORS[k], prio: k }));
  }
  layers.sort((a, b) => a.prio - b.prio);
  return layers;
}

/* Parses the embedded data and turns its columns into typed arrays. */
function loadData() {
  const raw = JSON.parse(document.getElementById('mp-data').textContent);
  if (raw.v !== 1) throw new Error('unsupported viewer data version ' + raw.v);
  const S = raw.strings;
  let end = raw.meta.dur_ns || 0, start = 0;
  const touch = (a, b) => { if (a < start) start = a; if (b > end) end = b; };
  const tracks = raw.tracks.map((t, index) => {
    const tr = { index, raw: t, group: t.group, kind: t.kind, title: t.title, sub: t.sub || '', pid: t.pid, tid: t.tid };
    if (t.gpu) Object.assign(tr, { gpu: t.gpu, device: t.device, stream: t.stream, context: t.context });
    if (t.spans && t.spans.s.length) {
      const s = t.spans;
      const sp = {
        start: undelta(s.s), dur: Float64Array.from(s.d), name: Int32Array.from(s.n), depth: Int32Array.from(s.l),
        argc: s.ac || null, args: s.a || null, argOff: null, ret: s.r || null, attrs: s.t || null,
      };
      sp.levels = buildLevels(sp);
      tr.spans = sp;
      for (const lv of sp.levels) if (lv.n) touch(lv.st[0], lv.en[lv.n - 1]);
    }
    if (t.ev && t.ev.t.length) {
      tr.ev = { time: undelta(t.ev.t), k: t.ev.k, m: t.ev.m, v: t.ev.v, st: t.ev.st };
      touch(tr.ev.time[0], tr.ev.time[tr.ev.time.length - 1]);
    }
    if (t.lg && t.lg.t.length) {
      tr.lg = { time: undelta(t.lg.t), lv: Int8Array.from(t.lg.lv), m: t.lg.m, o: t.lg.o };
      touch(tr.lg.time[0], tr.lg.time[tr.lg.time.length - 1]);
    }
    tr.markers = buildMarkerLayers(tr, S);
    tr.sm = {};
    for (const id in (t.sm || {})) {
      const c = t.sm[id];
      if (!c.t.length) continue;
      const set = { t: undelta(c.t), s: Int32Array.from(c.s), w: c.w ? Float64Array.from(c.w) : null, en: null };
      const def = raw.sets.find(x => x.id === id);
      if (def && def.interval && set.w) set.en = prefixMaxEnds(set.t, set.w);
      tr.sm[id] = set;
      touch(set.t[0], set.en ? set.en[set.en.length - 1] : set.t[set.t.length - 1]);
    }
    if (t.c && t.c.t.length) {
      const v = Float64Array.from(t.c.v.map(x => (x === null ? NaN : x)));
      let max = 0;
      for (let i = 0; i < v.length; i++) if (v[i] > max) max = v[i];
      tr.counter = { unit: t.c.unit || '', t: undelta(t.c.t), v, max };
    }
    return tr;
  });
  const groups = raw.groups.map((g, i) => Object.assign({ index: i, tracks: [], collapsed: false }, g));
  for (const tr of tracks) (groups[tr.group] || groups[0]).tracks.push(tr);
  const fr = raw.frames, st = raw.stacks;
  return {
    raw, S, meta: raw.meta, sets: raw.sets, groups, tracks, probes: raw.probes || [], report: raw.report,
    frames: { n: Int32Array.from(fr.n), m: Int32Array.from(fr.m), k: Int8Array.from(fr.k), i: Int8Array.from(fr.i), f: Int32Array.from(fr.f), ln: Int32Array.from(fr.ln) },
    stacks: { o: Int32Array.from(st.o), f: Int32Array.from(st.f) },
    t0: Math.min(0, start), t1: Math.max(end, start + 1),
    spanCount: tracks.reduce((a, t) => a + (t.spans && !t.gpu ? t.spans.start.length : 0), 0),
    gpuOpCount: tracks.reduce((a, t) => a + (t.spans && t.gpu ? t.spans.start.length : 0), 0),
  };
}

/* A frame's display name: kernel frames marked, inlined ones too. */
function frameLabel(D, f) {
  return D.S[D.frames.n[f]];
}

/* The frames of stack `s`, outermost first. */
function stackFrames(D, s) {
  if (s < 0 || s + 1 >= D.stacks.o.length) return [];
  return Array.from(D.stacks.f.subarray(D.stacks.o[s], D.stacks.o[s + 1]));
}

/* A stack as a <ol> of frames, innermost first, for the details panel. */
function stackList(D, s, limit) {
  const frames = stackFrames(D, s).reverse();
  const ol = el('ol', { cls: 'stack' });
  frames.slice(0, limit || 64).forEach(f => {
    const li = el('li', { cls: D.frames.k[f] === 1 ? 'kernel' : '' });
    li.append(frameLabel(D, f) + (D.frames.i[f] ? ' [inlined]' : ''));
    const m = D.frames.m[f];
    const file = D.frames.f[f];
    const where = (m >= 0 ? D.S[m] : '') + (file >= 0 ? ' ' + D.S[file] + (D.frames.ln[f] ? ':' + D.frames.ln[f] : '') : '');
    if (where) li.append(el('span', { cls: 'mod', text: '  ' + where }));
    ol.append(li);
  });
  if (frames.length > (limit || 64)) ol.append(el('li', { cls: 'mod', text: '… ' + (frames.length - (limit || 64)) + ' more' }));
  return ol;
}

/* Innermost frames of a stack as text, for tooltips. */
function stackText(D, s, n) {
  const frames = stackFrames(D, s).reverse();
  const lines = frames.slice(0, n).map(f => frameLabel(D, f) + (D.frames.k[f] === 1 ? ' [k]' : ''));
  if (frames.length > n) lines.push('… ' + (frames.length - n) + ' more');
  return lines.join('\n');
}
