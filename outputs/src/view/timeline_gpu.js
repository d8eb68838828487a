/* GPU operations on the timeline: their details (the same as the Perfetto timeline's args),
   the CPU call that launched each, and from a launching span, the GPU work it queued. */

/* An op of a GPU track: name, times, fixed details, and what launched it. */
Timeline.prototype.gpuInfo = function (tr, i) {
  const D = this.D, sp = tr.spans, g = tr.gpu;
  const attrs = sp.attrs && sp.attrs[i] ? JSON.parse(D.S[sp.attrs[i] - 1]) : {};
  const at = (col, none) => (col && col[i] !== null && col[i] !== undefined ? col[i] : none);
  const o = {
    name: D.S[sp.name[i]], start: sp.start[i], dur: sp.dur[i], attrs,
    corr: at(g.c, 0), queue: at(g.q, null), lt: at(g.lt, -1), li: at(g.li, -1), api: at(g.la, -1) >= 0 ? D.S[g.la[i]] : '',
  };
  if (attrs.bytes !== undefined && o.dur > 0 && (attrs.kind === 'memcpy' || attrs.kind === 'memset')) o.gbps = attrs.bytes / o.dur;
  return o;
};

/* Rows describing an op: its kind's details, bandwidth, correlation, queue delay, launch. */
Timeline.prototype.gpuRows = function (tr, i) {
  const o = this.gpuInfo(tr, i), a = o.attrs, rows = [['kind', a.kind]];
  if (a.grid) {
    rows.push(['grid', a.grid.join(' × ')], ['block', a.block.join(' × ')], ['registers', a.registers]);
    rows.push(['shared memory', fmtBytes(a.shared_static) + ' static, ' + fmtBytes(a.shared_dynamic) + ' dynamic']);
  }
  if (a.bytes !== undefined) rows.push(['bytes', fmtBytes(a.bytes) + ' (' + fmtCount(a.bytes) + ')']);
  if (a.direction) rows.push(['direction', a.direction]);
  if (a.src_device !== undefined) rows.push(['peer', 'device ' + a.src_device + ' → ' + a.dst_device]);
  if (a.value !== undefined) rows.push(['value', String(a.value)]);
  if (o.gbps !== undefined) rows.push(['bandwidth', o.gbps.toFixed(2) + ' GB/s']);
  if (a.graph_id) rows.push(['CUDA graph', a.graph_id + (a.graph_node ? ', node ' + a.graph_node : '')]);
  if (o.corr) rows.push(['correlation id', String(o.corr)]);
  if (o.queue !== null) rows.push(['queue delay', fmtDur(o.queue) + ' (launch call start to GPU start)']);
  if (o.api || o.lt >= 0) rows.push(['launched by', (o.api || 'a call') + (o.lt >= 0 ? ' on ' + this.threadLabel(this.D.tracks[o.lt]) : '')]);
  return rows;
};

Timeline.prototype.gpuWhere = function (tr) {
  const g = this.D.groups[tr.group] || {};
  const rows = [['device', g.title], ['track', tr.title]];
  if (tr.context !== undefined) rows.push(['context', String(tr.context)]);
  const proc = this.D.groups.find(x => x.kind === 'process' && x.pid === tr.pid);
  rows.push(['process', (proc ? proc.title + ' ' : '') + '(pid ' + tr.pid + ')']);
  return rows;
};

Timeline.prototype.describeGpu = function (h) {
  const o = this.gpuInfo(h.track, h.i);
  const rows = [['start', fmtTs(o.start, 1)], ['duration', fmtDur(o.dur)]].concat(this.gpuWhere(h.track).slice(0, 2), this.gpuRows(h.track, h.i));
  return '<div class="tt-name"><span class="swatch" style="background:' + this.colorOf(h.track.spans.name[h.i]).fill + '"></span>' + esc(o.name) + '</div>' + ttRows(rows);
};

/* The details panel of a GPU op, with a way to its launch span (or launch time). */
Timeline.prototype.selectGpu = function (hit, body, kv, title) {
  const tr = hit.track, i = hit.i, o = this.gpuInfo(tr, i);
  const rows = [['start', fmtTs(o.start, 1), true], ['end', fmtTs(o.start + o.dur, 1), true], ['duration', fmtDur(o.dur)]]
    .concat(this.gpuWhere(tr), this.gpuRows(tr, i));
  body.append(title(o.name, this.colorOf(tr.spans.name[i]).fill), kv(rows));
  const actions = [el('button', { text: 'Zoom to op (F)', onclick: () => this.zoomToSpan(tr, i) })];
  const launcher = o.lt >= 0 ? this.D.tracks[o.lt] : null;
  if (launcher && o.li >= 0 && launcher.spans) {
    actions.push(el('button', { text: 'Show launch span', onclick: () => this.reveal(launcher, o.li, o.start, o.start + o.dur) }));
  } else if (launcher && o.queue !== null) {
    const t = o.start - o.queue;
    actions.push(el('button', { text: 'Show launch time', onclick: () => { this.scrollToTrack(launcher); this.showRange(Math.min(t, o.start), o.start + o.dur); } }));
  }
  body.append(el('div', { cls: 'details-actions' }, actions));
};

/* GPU ops launched by span i of a thread track, as [track, index] pairs (index built once). */
Timeline.prototype.gpuOpsOf = function (tr, i) {
  if (!this.launched) {
    const m = new Map();
    for (const g of this.D.tracks) {
      if (!g.gpu || !g.gpu.lt || !g.gpu.li) continue;
      const lt = g.gpu.lt, li = g.gpu.li;
      for (let j = 0; j < lt.length; j++) {
        if (lt[j] < 0 || li[j] < 0) continue;
        const key = lt[j] * 4294967296 + li[j];
        let a = m.get(key);
        if (!a) m.set(key, a = []);
        a.push([g, j]);
      }
    }
    this.launched = m;
  }
  return this.launched.get(tr.index * 4294967296 + i) || [];
};

/* Lists the GPU work a CPU span launched, each a link to the op. */
Timeline.prototype.appendGpuWork = function (hit, body) {
  const ops = this.gpuOpsOf(hit.track, hit.i);
  if (!ops.length) return;
  body.append(el('div', { cls: 'panel-title', text: 'GPU work launched (' + ops.length + ')' }));
  const list = el('ol', { cls: 'stack' });
  const s = hit.track.spans.start[hit.i];
  for (const [g, j] of ops.slice(0, 50)) {
    const o = this.gpuInfo(g, j);
    const li = el('li', null, [el('a', {
      href: '#', text: o.name,
      onclick: e => { e.preventDefault(); this.reveal(g, j, Math.min(s, o.start), o.start + o.dur); },
    })]);
    li.append(el('span', { cls: 'mod', text: '  ' + fmtDur(o.dur) + ' on ' + (this.D.groups[g.group] || {}).title + ' ' + g.title + (o.queue !== null ? ', queued ' + fmtDur(o.queue) : '') }));
    list.append(li);
  }
  if (ops.length > 50) list.append(el('li', { cls: 'mod', text: '… ' + (ops.length - 50) + ' more' }));
  body.append(list);
};

/* Scrolls the track list so `tr` is in view, expanding its group. */
Timeline.prototype.scrollToTrack = function (tr) {
  const g = this.D.groups[tr.group];
  if (g && g.collapsed) { g.collapsed = false; this.layout(); this.draw(); }
  const row = this.rows.find(r => r.type === 'track' && r.track === tr);
  if (!row) return;
  const H = this.wrap.clientHeight - TL.RULER_H, top = this.wrap.scrollTop;
  if (row.y < top || row.y + row.h > top + H) this.wrap.scrollTop = Math.max(0, row.y - H / 3);
};

/* Selects span i of `tr`, scrolled into view, showing [s, e] (or the span) on the time axis. */
Timeline.prototype.reveal = function (tr, i, s, e) {
  const a = tr.spans.start[i], b = a + tr.spans.dur[i];
  this.scrollToTrack(tr);
  const from = Math.min(a, s === undefined ? a : s), to = Math.max(b, e === undefined ? b : e);
  if (from < this.view.s || to > this.view.e) this.showRange(from, to);
  this.select({ type: 'span', track: tr, i, t: a });
};
