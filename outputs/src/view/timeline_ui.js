/* The timeline's interaction: wheel zoom, drag pan, keyboard, hover tooltips, click details. */

Timeline.prototype.bind = function () {
  const wrap = this.wrap, cv = this.canvas;
  const local = e => { const r = cv.getBoundingClientRect(); return { x: e.clientX - r.left, y: e.clientY - r.top }; };
  wrap.addEventListener('wheel', e => {
    e.preventDefault();
    const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? wrap.clientHeight : 1;
    const dx = e.deltaX * unit, dy = e.deltaY * unit;
    const { W } = this.size(), k = this.scale(W);
    if (e.shiftKey) { wrap.scrollTop += dy || dx; return; }
    if (Math.abs(dx) > Math.abs(dy)) { this.panBy(dx / k); return; }
    const p = local(e);
    const t = p.x > TL.LABEL_W ? this.view.s + (p.x - TL.LABEL_W) / k : (this.view.s + this.view.e) / 2;
    this.zoomAt(t, Math.exp(dy * (e.ctrlKey ? 0.01 : 0.0018)));
  }, { passive: false });
  wrap.addEventListener('scroll', () => this.request());
  let drag = null;
  cv.addEventListener('mousedown', e => {
    if (e.button !== 0) return;
    wrap.focus({ preventScroll: true });
    const p = local(e);
    drag = { x: p.x, y: p.y, view: this.view, top: wrap.scrollTop, moved: false };
    e.preventDefault();
  });
  window.addEventListener('mousemove', e => {
    if (!drag) return;
    const p = local(e);
    const dx = p.x - drag.x, dy = p.y - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!drag.moved) { drag.moved = true; cv.classList.add('panning'); tooltip.hide(); }
    const k = this.scale(this.size().W);
    this.view = { s: drag.view.s - dx / k, e: drag.view.e - dx / k };
    this.clampView();
    wrap.scrollTop = drag.top - dy;
    this.request();
  });
  window.addEventListener('mouseup', e => {
    if (!drag) return;
    const was = drag;
    drag = null;
    cv.classList.remove('panning');
    if (!was.moved) this.click(local(e));
  });
  cv.addEventListener('mousemove', e => {
    if (drag && drag.moved) return;
    const p = local(e);
    this.mouse = p;
    const hit = this.hitAt(p.x, p.y);
    this.hover = hit;
    const html = hit ? this.describe(hit) : '';
    if (html) tooltip.show(html, e.clientX, e.clientY); else tooltip.hide();
    cv.style.cursor = hit && hit.type === 'group' ? 'pointer' : '';
    this.request();
  });
  cv.addEventListener('mouseleave', () => { this.mouse = null; this.hover = null; tooltip.hide(); this.request(); });
  cv.addEventListener('dblclick', e => {
    const hit = this.hitAt(local(e).x, local(e).y);
    if (hit && hit.type === 'span') this.zoomToSpan(hit.track, hit.i);
  });
  wrap.addEventListener('keydown', e => this.key(e));
  window.addEventListener('resize', () => { this.ovHist = null; this.request(); });
  document.getElementById('tl-reset').addEventListener('click', () => { this.fit(); this.request(); });
  document.getElementById('tl-zoom-in').addEventListener('click', () => this.zoomAt((this.view.s + this.view.e) / 2, 0.5));
  document.getElementById('tl-zoom-out').addEventListener('click', () => this.zoomAt((this.view.s + this.view.e) / 2, 2));
  document.getElementById('tl-search').addEventListener('input', e => this.setSearch(e.target.value));
  document.getElementById('tl-replay').addEventListener('click', () => this.replayAt(this.replayT !== undefined ? this.replayT : (this.view.s + this.view.e) / 2));
  this.bindOverview();
};

Timeline.prototype.key = function (e) {
  if (e.target && e.target.tagName === 'INPUT') return;
  const span = this.view.e - this.view.s;
  const k = this.scale(this.size().W);
  const at = this.mouse && this.mouse.x > TL.LABEL_W ? this.view.s + (this.mouse.x - TL.LABEL_W) / k : this.view.s + span / 2;
  const keys = {
    w: () => this.zoomAt(at, 0.7), s: () => this.zoomAt(at, 1 / 0.7),
    a: () => this.panBy(-span * 0.15), d: () => this.panBy(span * 0.15),
    '0': () => { this.fit(); this.request(); },
    f: () => { const s = this.selected; if (s && s.type === 'span') this.zoomToSpan(s.track, s.i); },
    r: () => this.replayAt(at),
    ',': () => this.replayStep(-1),
    '.': () => this.replayStep(1),
    escape: () => (this.replayT !== undefined ? this.replayStop() : this.select(null)),
  };
  const f = keys[e.key.toLowerCase()];
  if (f && !e.ctrlKey && !e.metaKey && !e.altKey) { f(); e.preventDefault(); }
};

Timeline.prototype.bindOverview = function () {
  const ov = this.ov;
  const toT = x => this.D.t0 + (x - TL.LABEL_W) / (ov.clientWidth - TL.LABEL_W) * (this.D.t1 - this.D.t0);
  const local = e => e.clientX - ov.getBoundingClientRect().left;
  ov.addEventListener('mousedown', e => {
    const x = Math.max(TL.LABEL_W, local(e));
    this.ovDrag = { x0: x, x1: x };
    e.preventDefault();
  });
  window.addEventListener('mousemove', e => {
    if (!this.ovDrag) return;
    this.ovDrag.x1 = Math.max(TL.LABEL_W, Math.min(ov.clientWidth, local(e)));
    this.request();
  });
  window.addEventListener('mouseup', () => {
    const d = this.ovDrag;
    if (!d) return;
    this.ovDrag = null;
    if (Math.abs(d.x1 - d.x0) < 3) {
      const t = toT(d.x0), half = (this.view.e - this.view.s) / 2;
      this.view = { s: t - half, e: t + half };
      this.clampView();
    } else {
      this.view = { s: toT(Math.min(d.x0, d.x1)), e: toT(Math.max(d.x0, d.x1)) };
    }
    this.request();
  });
};

Timeline.prototype.zoomToSpan = function (tr, i) {
  this.showRange(tr.spans.start[i], tr.spans.start[i] + tr.spans.dur[i]);
};

/* The item under (x, y), in canvas pixels, or null. */
Timeline.prototype.hitAt = function (x, y) {
  if (y < TL.RULER_H) return null;
  const cy = y - TL.RULER_H + this.wrap.scrollTop;
  const rows = this.rows;
  let lo = 0, hi = rows.length - 1;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (rows[mid].y <= cy) lo = mid; else hi = mid - 1; }
  const row = rows[lo];
  if (!row || cy < row.y || cy >= row.y + row.h) return null;
  if (row.type === 'group') return { type: 'group', group: row.group };
  const tr = row.track;
  if (x < TL.LABEL_W) return { type: 'track', track: tr };
  const k = this.scale(this.size().W), t = this.view.s + (x - TL.LABEL_W) / k, tol = 4 / k;
  const ry = cy - row.y;
  for (const s of row.strips) {
    if (ry < s.y - 1 || ry >= s.y + TL.STRIP_H + 1) continue;
    const set = s.set;
    if (s.def.interval && set.w) {
      let best = -1;
      for (let i = lowerBound(set.en, t - tol); i < set.t.length && set.t[i] <= t + tol; i++) {
        if (set.t[i] + set.w[i] >= t - tol) { best = i; if (set.t[i] <= t && set.t[i] + set.w[i] >= t) break; }
      }
      return best >= 0 ? { type: 'interval', track: tr, def: s.def, set, i: best, t: set.t[best] } : null;
    }
    const a = lowerBound(set.t, t - tol), b = lowerBound(set.t, t + tol);
    if (b - a === 0) return null;
    let best = a;
    for (let i = a; i < b; i++) if (Math.abs(set.t[i] - t) < Math.abs(set.t[best] - t)) best = i;
    return { type: 'sample', track: tr, def: s.def, set, i: best, t: set.t[best], count: b - a, window: 2 * tol };
  }
  if (row.markY >= 0 && ry >= row.markY - 1 && ry < row.markY + TL.MARK_H + 1) {
    let best = null, bestD = Infinity;
    for (const layer of tr.markers) {
      const a = lowerBound(layer.t, t - tol - 2 / k);
      for (let i = a; i < layer.t.length && layer.t[i] <= t + tol + 2 / k; i++) {
        const d = Math.abs(layer.t[i] - t) - layer.prio * 1e-9;
        if (d < bestD) { bestD = d; best = { type: layer.type, track: tr, i: layer.ix[i], t: layer.t[i] }; }
      }
    }
    return best;
  }
  if (row.spanY >= 0 && ry >= row.spanY) {
    const level = Math.floor((ry - row.spanY) / TL.ROW_H);
    const lv = tr.spans.levels[level];
    if (!lv) return null;
    const sp = tr.spans;
    let best = -1, bestD = Infinity;
    let i = lowerBound(lv.en, t - tol, 0, lv.n);
    for (let c = 0; i < lv.n && lv.st[i] <= t + tol && c < 4096; i++, c++) {
      const j = lv.ix[i], s = lv.st[i], e = s + sp.dur[j];
      if (e < t - tol) continue;
      const d = t < s ? s - t : t > e ? t - e : 0;
      if (d < bestD || (d === bestD && best >= 0 && sp.dur[j] < sp.dur[best])) { bestD = d; best = j; }
    }
    return best >= 0 ? { type: 'span', track: tr, i: best, t: sp.start[best] } : null;
  }
  if (row.counterY >= 0 && ry >= row.counterY) {
    const c = tr.counter, i = lowerBound(c.t, t + 1e-9) - 1;
    return i >= 0 ? { type: 'counter', track: tr, i } : null;
  }
  return null;
};

Timeline.prototype.spanInfo = function (tr, i) {
  const D = this.D, sp = tr.spans, raw = tr.raw.spans;
  const name = D.S[sp.name[i]];
  let args = null;
  if (sp.argc) {
    if (!sp.argOff) {
      sp.argOff = new Int32Array(sp.argc.length + 1);
      for (let j = 0; j < sp.argc.length; j++) sp.argOff[j + 1] = sp.argOff[j] + sp.argc[j];
    }
    args = sp.args.slice(sp.argOff[i], sp.argOff[i + 1]);
  }
  const ret = sp.ret ? sp.ret[i] : undefined;
  const attrs = sp.attrs && sp.attrs[i] ? JSON.parse(D.S[sp.attrs[i] - 1]) : null;
  const probe = tr.gpu ? null : D.probes.find(p => p.function === name) || null;
  return { name, start: sp.start[i], dur: sp.dur[i], depth: sp.depth[i], args, ret, attrs, probe, unfinished: raw && sp.ret && ret === null };
};

/* Time of direct children (the next depth) inside span i: its duration minus this is self time. */
Timeline.prototype.childTime = function (tr, i) {
  const sp = tr.spans, lv = sp.levels[sp.depth[i] + 1];
  if (!lv) return 0;
  const s = sp.start[i], e = s + sp.dur[i];
  let sum = 0;
  for (let j = lowerBound(lv.en, s, 0, lv.n); j < lv.n && lv.st[j] < e; j++) {
    const a = Math.max(s, lv.st[j]), b = Math.min(e, lv.st[j] + sp.dur[lv.ix[j]]);
    if (b > a) sum += b - a;
  }
  return sum;
};

Timeline.prototype.threadLabel = function (tr) {
  const g = this.D.groups[tr.group];
  if (tr.gpu) return (g ? g.title + ' ' : '') + tr.title + ' (pid ' + tr.pid + ')';
  return tr.title + (tr.tid !== undefined ? ' (' + tr.tid + ')' : '') + (g ? ' · ' + g.title : '');
};

/* Tooltip HTML for a hit. */
Timeline.prototype.describe = function (h) {
  const D = this.D;
  const head = (name, color) => '<div class="tt-name">' + (color ? '<span class="swatch" style="background:' + color + '"></span>' : '') + esc(name) + '</div>';
  if (h.type === 'span' && h.track.gpu) return this.describeGpu(h);
  if (h.type === 'span') {
    const s = this.spanInfo(h.track, h.i);
    const rows = [['start', fmtTs(s.start, 1)], ['duration', fmtDur(s.dur) + (s.unfinished ? ' (still running at the end)' : '')], ['thread', this.threadLabel(h.track)], ['depth', String(s.depth)]];
    if (s.args) rows.push(['args', s.args.map(fmtInt).join(', ')]);
    if (s.ret !== undefined && s.ret !== null) rows.push(['returned', fmtInt(s.ret)]);
    if (s.attrs) for (const k in s.attrs) rows.push([k, typeof s.attrs[k] === 'object' ? JSON.stringify(s.attrs[k]) : String(s.attrs[k])]);
    return head(s.name, this.colorOf(h.track.spans.name[h.i]).fill) + ttRows(rows);
  }
  if (h.type === 'event') {
    const ev = h.track.ev, kind = D.S[ev.k[h.i]];
    return head(kind.replace(/_/g, ' '), eventColor(kind)) + ttRows([['time', fmtTs(ev.time[h.i], 1)], ['message', D.S[ev.m[h.i]]], ['value', ev.v[h.i] === null ? '' : String(ev.v[h.i])], ['thread', this.threadLabel(h.track)]]);
  }
  if (h.type === 'log') {
    const lg = h.track.lg, lv = lg.lv[h.i], msg = D.S[lg.m[h.i]];
    return head((LEVEL_NAMES[lv] || 'log') + ' ' + (lg.o[h.i] ? 'stderr' : 'stdout'), LEVEL_COLORS[lv]) +
      ttRows([['time', fmtTs(lg.time[h.i], 1)], ['thread', this.threadLabel(h.track)]]) +
      '<div class="tt-stack">' + esc(msg.length > 400 ? msg.slice(0, 400) + '…' : msg) + '</div>';
  }
  if (h.type === 'sample') {
    const rows = [['time', fmtTs(h.t, 1)], ['thread', this.threadLabel(h.track)]];
    if (h.count > 1) rows.push(['nearby', h.count + ' samples within ' + fmtDur(h.window)]);
    return head(h.def.title + ' sample') + ttRows(rows) + '<div class="tt-stack">' + esc(stackText(D, h.set.s[h.i], 14)) + '</div>';
  }
  if (h.type === 'interval') {
    return head(h.def.title + ': ' + fmtDur(h.set.w[h.i])) + ttRows([['blocked at', fmtTs(h.set.t[h.i], 1)], ['thread', this.threadLabel(h.track)]]) +
      '<div class="tt-stack">' + esc(stackText(D, h.set.s[h.i], 14)) + '</div>';
  }
  if (h.type === 'counter') {
    const c = h.track.counter;
    return head(h.track.title) + ttRows([['value', c.v[h.i].toFixed(1) + ' ' + c.unit], ['at', fmtTs(c.t[h.i], 1)], ['process', (D.groups[h.track.group] || {}).title]]);
  }
  if (h.type === 'group') {
    const g = h.group;
    return head(g.title) + ttRows([['', g.sub], ['command', g.cmd || ''], ['', 'click to ' + (g.collapsed ? 'expand' : 'collapse')]]);
  }
  if (h.type === 'track') {
    const tr = h.track;
    const rows = [['', tr.sub]];
    if (tr.spans) rows.push(['spans', fmtCount(tr.spans.start.length)]);
    for (const id in tr.sm) rows.push([(this.setDefs[id] || { title: id }).title + ' samples', fmtCount(tr.sm[id].t.length)]);
    if (tr.ev) rows.push(['events', fmtCount(tr.ev.time.length)]);
    if (tr.lg) rows.push(['log lines', fmtCount(tr.lg.time.length)]);
    return head(tr.title) + ttRows(rows);
  }
  return '';
};

Timeline.prototype.click = function (p) {
  const hit = this.hitAt(p.x, p.y);
  if (hit && hit.type === 'group') {
    hit.group.collapsed = !hit.group.collapsed;
    this.layout();
    this.request();
    return;
  }
  this.select(hit && hit.type !== 'counter' ? hit : null);
};

Timeline.prototype.select = function (hit) {
  this.selected = hit;
  if (hit) this.replayT = undefined;
  const body = document.getElementById('tl-details-body');
  body.replaceChildren();
  body.className = '';
  this.request();
  if (!hit) { body.className = 'muted'; body.textContent = 'Click a span, marker or sample to see its details.'; return; }
  const D = this.D;
  const kv = rows => {
    const t = el('table', { cls: 'kv' });
    for (const [k, v, mono] of rows) {
      if (v === undefined || v === null || v === '') continue;
      t.append(el('tr', null, [el('td', { text: k }), el('td', { text: String(v), cls: mono ? 'mono' : '' })]));
    }
    return t;
  };
  const title = (text, color) => {
    const d = el('div', { cls: 'detail-name' });
    if (color) d.append(el('span', { cls: 'swatch', style: 'background:' + color }));
    d.append(text);
    return d;
  };
  const g = D.groups[hit.track.group] || {};
  const where = g.kind === 'gpu' ? [['device', g.title], ['track', hit.track.title], ['process', 'pid ' + hit.track.pid]]
    : [['thread', hit.track.title + (hit.track.tid !== undefined ? ' (tid ' + hit.track.tid + ')' : '')], ['process', g.title + ' (pid ' + g.pid + ')']];
  if (hit.type === 'span' && hit.track.gpu) {
    this.selectGpu(hit, body, kv, title);
  } else if (hit.type === 'span') {
    const s = this.spanInfo(hit.track, hit.i), self = s.dur - this.childTime(hit.track, hit.i);
    const rows = [['start', fmtTs(s.start, 1), true], ['end', fmtTs(s.start + s.dur, 1), true], ['duration', fmtDur(s.dur) + (s.unfinished ? ' (still running at the end)' : '')], ['self time', fmtDur(self)], ['depth', s.depth]].concat(where);
    if (s.args) s.args.forEach((a, j) => rows.push(['arg ' + j, fmtInt(a), true]));
    if (s.ret !== undefined) rows.push(['returned', s.ret === null ? '(did not return)' : fmtInt(s.ret), true]);
    if (s.attrs) for (const k in s.attrs) rows.push([k, typeof s.attrs[k] === 'object' ? JSON.stringify(s.attrs[k]) : s.attrs[k], true]);
    if (s.probe) rows.push(['probe', s.probe.spec, true], ['file', s.probe.path, true], ['pack', s.probe.pack || '']);
    body.append(title(s.name, this.colorOf(hit.track.spans.name[hit.i]).fill), kv(rows));
    const actions = el('div', { cls: 'details-actions' }, [el('button', { text: 'Zoom to span (F)', onclick: () => this.zoomToSpan(hit.track, hit.i) })]);
    body.append(actions);
    this.appendGpuWork(hit, body);
  } else if (hit.type === 'event') {
    const ev = hit.track.ev, kind = D.S[ev.k[hit.i]];
    body.append(title(kind.replace(/_/g, ' '), eventColor(kind)), kv([['time', fmtTs(ev.time[hit.i], 1), true], ['message', D.S[ev.m[hit.i]]], ['value', ev.v[hit.i] === null ? '' : ev.v[hit.i], true]].concat(where)));
    if (ev.st[hit.i] >= 0) { body.append(el('div', { cls: 'panel-title', text: 'Stack (innermost first)' }), stackList(D, ev.st[hit.i])); }
  } else if (hit.type === 'log') {
    const lg = hit.track.lg, lv = lg.lv[hit.i];
    body.append(title(LEVEL_NAMES[lv] || 'Log line', LEVEL_COLORS[lv]), kv([['time', fmtTs(lg.time[hit.i], 1), true], ['stream', lg.o[hit.i] ? 'stderr' : 'stdout'], ['level', LEVEL_NAMES[lv] || 'none']].concat(where)));
    body.append(el('pre', { cls: 'stack', style: 'white-space:pre-wrap', text: D.S[lg.m[hit.i]] }));
  } else if (hit.type === 'sample' || hit.type === 'interval') {
    const set = hit.set, i = hit.i;
    const rows = [[hit.type === 'interval' ? 'blocked at' : 'time', fmtTs(set.t[i], 1), true]];
    if (hit.type === 'interval') rows.push(['blocked for', fmtDur(set.w[i])]);
    body.append(title(hit.def.title + (hit.type === 'interval' ? ' interval' : ' sample')), kv(rows.concat(where)));
    body.append(el('div', { cls: 'panel-title', text: 'Stack (innermost first)' }), stackList(D, set.s[i]));
  } else if (hit.type === 'track') {
    const tr = hit.track, rows = [['kind', tr.kind]].concat(where);
    if (tr.spans) rows.push(['spans', fmtCount(tr.spans.start.length)], ['max depth', tr.spans.levels.length]);
    for (const id in tr.sm) rows.push([(this.setDefs[id] || { title: id }).title + ' samples', fmtCount(tr.sm[id].t.length)]);
    if (tr.sm.off_cpu && tr.sm.off_cpu.w) { let s = 0; for (const w of tr.sm.off_cpu.w) s += w; rows.push(['off-CPU time', fmtDur(s)]); }
    if (tr.ev) rows.push(['events', fmtCount(tr.ev.time.length)]);
    if (tr.lg) rows.push(['log lines', fmtCount(tr.lg.time.length)]);
    body.append(title(tr.title), kv(rows));
  }
};
