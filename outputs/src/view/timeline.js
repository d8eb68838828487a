/* The timeline: tracks grouped by process on one canvas, drawn with level of detail.

   Per visible row the first item that can reach the window's start is a binary search away
   (running-max ends); items narrower than a pixel are merged into one block per pixel column,
   and the scan jumps (binary search again) to the first item starting in the next column, so
   a frame costs O(pixels × log n) whatever the number of items. */

const TL = { RULER_H: 26, LABEL_W: 210, GROUP_H: 26, ROW_H: 18, STRIP_H: 8, MARK_H: 13, COUNTER_H: 44, PAD: 4, MIN_H: 24 };
const TL_FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';
const TL_BOLD = '600 11.5px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';
const SET_COLORS = { cpu: [232, 116, 59], off_cpu: [92, 128, 190], gpu: [118, 185, 0], memory: [156, 93, 184] };

function textColorOn(hex) {
  const n = parseInt(hex.slice(1), 16);
  const l = 0.299 * (n >> 16) + 0.587 * ((n >> 8) & 255) + 0.114 * (n & 255);
  return l > 150 ? '#17202b' : '#ffffff';
}

class Timeline {
  constructor(D) {
    this.D = D;
    this.canvas = document.getElementById('tl-canvas');
    this.wrap = document.getElementById('tl-wrap');
    this.spacer = document.getElementById('tl-spacer');
    this.ov = document.getElementById('tl-overview');
    this.textCache = new Map();
    this.nameColor = new Map();
    this.hover = null;
    this.selected = null;
    this.mouse = null;
    this.match = null;
    this.pending = false;
    this.drawn = { spans: 0, items: 0 };
    this.setDefs = {};
    for (const s of D.sets) this.setDefs[s.id] = s;
    this.fit();
    this.layout();
    this.bind();
  }

  fit() {
    const pad = (this.D.t1 - this.D.t0) * 0.01;
    this.view = { s: this.D.t0 - pad, e: this.D.t1 + pad };
  }

  colorOf(nameIdx) {
    let c = this.nameColor.get(nameIdx);
    if (!c) {
      const fill = spanColor(this.D.S[nameIdx]);
      c = { fill, text: textColorOn(fill) };
      this.nameColor.set(nameIdx, c);
    }
    return c;
  }

  /* Rows top to bottom: a header per group, then its tracks, each with its parts' offsets. */
  layout() {
    const rows = [];
    let y = 0;
    for (const g of this.D.groups) {
      rows.push({ type: 'group', group: g, y, h: TL.GROUP_H });
      y += TL.GROUP_H;
      if (g.collapsed) continue;
      for (const tr of g.tracks) {
        let h = TL.PAD;
        const strips = [];
        for (const def of this.D.sets) {
          if (tr.sm[def.id]) { strips.push({ def, set: tr.sm[def.id], y: h }); h += TL.STRIP_H + 2; }
        }
        const markY = tr.markers.length ? h : -1;
        if (markY >= 0) h += TL.MARK_H + 2;
        const spanY = tr.spans ? h : -1;
        if (tr.spans) h += tr.spans.levels.length * TL.ROW_H;
        const counterY = tr.counter ? h : -1;
        if (tr.counter) h += TL.COUNTER_H;
        h = Math.max(h + TL.PAD, TL.MIN_H);
        rows.push({ type: 'track', track: tr, y, h, strips, markY, spanY, counterY });
        y += h;
      }
    }
    this.rows = rows;
    this.contentH = y;
  }

  size() {
    return { W: this.wrap.clientWidth, H: this.wrap.clientHeight };
  }

  scale(W) {
    return (W - TL.LABEL_W) / (this.view.e - this.view.s);
  }

  xOf(t, k) {
    return TL.LABEL_W + (t - this.view.s) * k;
  }

  request() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  draw() {
    const { W, H } = this.size();
    if (W <= TL.LABEL_W || H <= TL.RULER_H) return this.drawn;
    this.spacer.style.height = Math.max(0, this.contentH + TL.RULER_H - H) + 'px';
    this.canvas.style.width = W + 'px';
    const ctx = fitCanvas(this.canvas, W, H);
    const k = this.scale(W), top = this.wrap.scrollTop;
    this.H = H;
    this.drawn = { spans: 0, items: 0 };
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, W, H);
    ctx.font = TL_FONT;
    ctx.textBaseline = 'alphabetic';
    this.drawGrid(ctx, W, H, k);
    for (const row of this.rows) {
      const y = TL.RULER_H + row.y - top;
      if (y + row.h < TL.RULER_H || y > H) continue;
      if (row.type === 'group') this.drawGroup(ctx, row, y, W);
      else this.drawTrack(ctx, row, y, W, k);
    }
    this.drawCursor(ctx, W, H, k);
    this.drawRuler(ctx, W, k);
    this.drawOverview();
    const r = document.getElementById('tl-range');
    if (r) r.textContent = fmtTs(this.view.s, (this.view.e - this.view.s) / 1000) + ' – ' + fmtTs(this.view.e, (this.view.e - this.view.s) / 1000) + '  (' + fmtDur(this.view.e - this.view.s) + ')';
    return this.drawn;
  }

  tickStep(k) {
    const min = 110 / k;
    const p = Math.pow(10, Math.floor(Math.log10(min)));
    for (const m of [1, 2, 5, 10]) if (p * m >= min) return p * m;
    return p * 10;
  }

  drawGrid(ctx, W, H, k) {
    const step = this.tickStep(k);
    ctx.fillStyle = '#eef1f5';
    for (let t = Math.ceil(this.view.s / step) * step; t <= this.view.e; t += step) {
      const x = Math.round(this.xOf(t, k));
      if (x >= TL.LABEL_W) ctx.fillRect(x, TL.RULER_H, 1, H - TL.RULER_H);
    }
  }

  drawRuler(ctx, W, k) {
    ctx.fillStyle = '#fbfcfd';
    ctx.fillRect(0, 0, W, TL.RULER_H);
    ctx.fillStyle = '#dfe3e8';
    ctx.fillRect(0, TL.RULER_H - 1, W, 1);
    const step = this.tickStep(k);
    ctx.fillStyle = '#5b6673';
    ctx.font = TL_FONT;
    for (let t = Math.ceil(this.view.s / step) * step; t <= this.view.e; t += step) {
      const x = Math.round(this.xOf(t, k));
      if (x < TL.LABEL_W) continue;
      ctx.fillRect(x, TL.RULER_H - 7, 1, 6);
      ctx.fillText(fmtTs(t, step), x + 3, 16);
    }
    ctx.fillStyle = '#fbfcfd';
    ctx.fillRect(0, 0, TL.LABEL_W, TL.RULER_H - 1);
    ctx.fillStyle = '#6b7785';
    ctx.fillText('time since start', 10, 16);
    if (this.mouse && this.mouse.x > TL.LABEL_W) {
      const t = this.view.s + (this.mouse.x - TL.LABEL_W) / k;
      const label = fmtTs(t, step / 100);
      const w = ctx.measureText(label).width + 10;
      const x = Math.min(this.mouse.x + 1, W - w);
      ctx.fillStyle = '#1d2330';
      ctx.fillRect(x, 3, w, 18);
      ctx.fillStyle = '#ffffff';
      ctx.fillText(label, x + 5, 16);
    }
  }

  drawCursor(ctx, W, H, k) {
    if (this.replayT !== undefined) {
      const x = this.xOf(this.replayT, k);
      if (x >= TL.LABEL_W && x <= W) { ctx.fillStyle = 'rgba(214,69,65,.85)'; ctx.fillRect(Math.round(x) - 1, TL.RULER_H, 2, H); }
    }
    const sel = this.selected;
    if (sel && sel.t !== undefined) {
      const x = this.xOf(sel.t, k);
      if (x >= TL.LABEL_W && x <= W) { ctx.fillStyle = 'rgba(59,111,216,.55)'; ctx.fillRect(Math.round(x), TL.RULER_H, 1, H); }
    }
    if (this.mouse && this.mouse.x > TL.LABEL_W) {
      ctx.fillStyle = 'rgba(29,35,48,.35)';
      ctx.fillRect(Math.round(this.mouse.x), TL.RULER_H, 1, H);
    }
  }

  drawGroup(ctx, row, y, W) {
    const g = row.group;
    ctx.fillStyle = '#eef1f5';
    ctx.fillRect(0, y, W, row.h);
    ctx.fillStyle = '#d7dce3';
    ctx.fillRect(0, y + row.h - 1, W, 1);
    ctx.fillStyle = '#1f2933';
    ctx.font = TL_BOLD;
    const arrow = g.collapsed ? '▸' : '▾';
    const title = arrow + '  ' + g.title;
    ctx.fillText(title, 10, y + 17);
    const tw = ctx.measureText(title).width;
    ctx.font = TL_FONT;
    ctx.fillStyle = '#6b7785';
    const extra = g.sub + (g.cmd ? '   ' + g.cmd : '') + '   ' + g.tracks.length + (g.tracks.length === 1 ? ' track' : ' tracks');
    ctx.fillText(fitText(ctx, extra, W - tw - 40, null), 10 + tw + 12, y + 17);
  }

  drawTrack(ctx, row, y, W, k) {
    const tr = row.track;
    ctx.save();
    ctx.beginPath();
    ctx.rect(TL.LABEL_W, Math.max(y, TL.RULER_H), W - TL.LABEL_W, row.h);
    ctx.clip();
    for (const s of row.strips) {
      if (s.def.interval && s.set.w) this.drawIntervals(ctx, s, y + s.y, W, k);
      else this.drawDensity(ctx, s, y + s.y, W, k);
    }
    if (row.markY >= 0) this.drawMarkers(ctx, tr, y + row.markY, W, k);
    if (row.spanY >= 0) {
      const lv = tr.spans.levels;
      for (let l = 0; l < lv.length; l++) {
        const ly = y + row.spanY + l * TL.ROW_H;
        if (ly + TL.ROW_H < TL.RULER_H || ly > this.H) continue;
        this.drawSpanRow(ctx, tr, lv[l], l, ly, W, k);
      }
    }
    if (row.counterY >= 0) this.drawCounter(ctx, tr, y + row.counterY, W, k);
    ctx.restore();
    // Label column and separator.
    ctx.fillStyle = '#fbfcfd';
    ctx.fillRect(0, y, TL.LABEL_W, row.h);
    ctx.fillStyle = '#e3e7ec';
    ctx.fillRect(TL.LABEL_W - 1, y, 1, row.h);
    ctx.fillRect(0, y + row.h - 1, W, 1);
    ctx.font = TL_BOLD;
    ctx.fillStyle = '#1f2933';
    const title = fitText(ctx, tr.title, TL.LABEL_W - 28, this.textCache);
    ctx.fillText(title, 22, y + 16);
    const tw = ctx.measureText(title).width;
    ctx.font = TL_FONT;
    ctx.fillStyle = '#8591a0';
    if (tr.sub && tw + 30 < TL.LABEL_W - 40) ctx.fillText(fitText(ctx, tr.sub, TL.LABEL_W - tw - 36, null), 22 + tw + 6, y + 16);
    ctx.fillStyle = tr.kind === 'counter' ? '#8f6cc4' : tr.kind === 'spans' ? '#3fa7a8' : '#9aa6b8';
    ctx.fillRect(10, y + 8, 4, 10);
    if (tr.counter) {
      ctx.fillStyle = '#8591a0';
      ctx.fillText('max ' + tr.counter.max.toFixed(1) + ' ' + tr.counter.unit, 22, y + 31);
    }
  }

  drawSpanRow(ctx, tr, lv, level, y, W, k) {
    const sp = tr.spans, st = lv.st, en = lv.en, ix = lv.ix, n = lv.n, dur = sp.dur, names = sp.name;
    const vs = this.view.s, ve = this.view.e, base = TL.LABEL_W, h = TL.ROW_H - 2, match = this.match;
    let i = lowerBound(en, vs, 0, n);
    let bx0 = -1, bx1 = -1, bfill = '', balpha = 1;
    const flush = () => {
      if (bx0 < 0) return;
      ctx.globalAlpha = balpha;
      ctx.fillStyle = bfill;
      ctx.fillRect(bx0, y + 1, bx1 - bx0, h);
      this.drawn.spans++;
      bx0 = bx1 = -1;
    };
    while (i < n) {
      const s = st[i];
      if (s > ve) break;
      const j = ix[i], e = s + dur[j];
      if (e < vs) { i++; continue; }
      const xa = base + (s - vs) * k, xb = base + (e - vs) * k;
      const alpha = match && !match[names[j]] ? 0.18 : 1;
      if (xb - xa < 1) {
        const px = Math.floor(xa);
        if (bx0 >= 0 && px <= bx1) { if (px + 1 > bx1) bx1 = px + 1; }
        else { flush(); bx0 = px; bx1 = px + 1; bfill = this.colorOf(names[j]).fill; balpha = alpha; }
        // Every later item starting in this pixel column is covered by the block: jump past them,
        // but keep the last one if it reaches into the next column.
        const tNext = vs + (px + 1 - base) / k;
        let nx = lowerBound(st, tNext, i + 1, n);
        if (nx - 1 > i && st[nx - 1] + dur[ix[nx - 1]] >= tNext) nx--;
        i = nx;
        continue;
      }
      flush();
      const c = this.colorOf(names[j]);
      const x0 = Math.max(xa, base - 2), x1 = Math.min(xb, W + 2);
      ctx.globalAlpha = alpha;
      ctx.fillStyle = c.fill;
      ctx.fillRect(x0, y + 1, x1 - x0, h);
      this.drawn.spans++;
      if (x1 - x0 > 26) {
        const label = fitText(ctx, this.D.S[names[j]], x1 - x0 - 8, this.textCache);
        if (label) { ctx.fillStyle = c.text; ctx.fillText(label, x0 + 4, y + 13); }
      }
      i++;
    }
    flush();
    ctx.globalAlpha = 1;
    const sel = this.selected;
    if (sel && sel.type === 'span' && sel.track === tr && sp.depth[sel.i] === level) {
      const xa = Math.max(base, base + (sp.start[sel.i] - vs) * k), xb = Math.min(W, base + (sp.start[sel.i] + dur[sel.i] - vs) * k);
      if (xb >= base && xa <= W) {
        ctx.strokeStyle = '#111827';
        ctx.lineWidth = 2;
        ctx.strokeRect(xa - 1, y, Math.max(2, xb - xa + 2), h + 2);
      }
    }
  }

  drawMarkers(ctx, tr, y, W, k) {
    const vs = this.view.s, ve = this.view.e, base = TL.LABEL_W, slack = 5 / k;
    for (const layer of tr.markers) {
      const t = layer.t, n = t.length;
      ctx.fillStyle = layer.color;
      let i = lowerBound(t, vs - slack, 0, n);
      while (i < n && t[i] <= ve + slack) {
        const x = base + (t[i] - vs) * k;
        if (layer.type === 'event') {
          const cy = y + TL.MARK_H / 2;
          ctx.beginPath();
          ctx.moveTo(x, cy - 5); ctx.lineTo(x + 4.5, cy); ctx.lineTo(x, cy + 5); ctx.lineTo(x - 4.5, cy);
          ctx.closePath();
          ctx.fill();
        } else {
          ctx.fillRect(Math.round(x) - 1, y + 1, 2, TL.MARK_H - 2);
        }
        this.drawn.items++;
        i = lowerBound(t, vs + (Math.floor(x) + 3 - base) / k, i + 1, n);
      }
    }
  }

  /* Samples as a heat strip: columns wide enough to expect a few samples from a busy thread,
     shaded by the share of a fully busy thread; zoomed in past that, one tick per sample. */
  drawDensity(ctx, strip, y, W, k) {
    const t = strip.set.t, n = t.length, hz = strip.def.hz || 0;
    const rgb = SET_COLORS[strip.def.id] || [120, 120, 120];
    const vs = this.view.s, base = TL.LABEL_W;
    const pxPerSample = hz ? k * 1e9 / hz : 0;
    if (pxPerSample > 8) {
      ctx.fillStyle = 'rgb(' + rgb.join(',') + ')';
      let i = lowerBound(t, vs - 2 / k, 0, n);
      while (i < n && t[i] <= this.view.e) {
        const x = base + (t[i] - vs) * k;
        ctx.fillRect(Math.round(x) - 1, y, 2, TL.STRIP_H);
        this.drawn.items++;
        i = lowerBound(t, vs + (Math.floor(x) + 2 - base) / k, i + 1, n);
      }
      return;
    }
    const colW = hz ? Math.min(32, Math.max(2, Math.ceil(4 * pxPerSample))) : 2;
    // Expected samples per column for one fully busy thread; without a rate, relative to 4.
    const full = hz ? colW / pxPerSample : 4;
    let i = lowerBound(t, vs, 0, n);
    for (let px = base; px < W && i < n; px += colW) {
      const tb = vs + (px + colW - base) / k;
      if (t[i] >= tb) continue;
      const j = lowerBound(t, tb, i, n);
      const u = Math.min(1, (j - i) / full);
      ctx.fillStyle = 'rgba(' + rgb[0] + ',' + rgb[1] + ',' + rgb[2] + ',' + (0.15 + 0.85 * u).toFixed(2) + ')';
      ctx.fillRect(px, y, colW, TL.STRIP_H);
      this.drawn.items++;
      i = j;
    }
  }

  drawIntervals(ctx, strip, y, W, k) {
    const set = strip.set, st = set.t, en = set.en, w = set.w, n = st.length;
    const rgb = SET_COLORS[strip.def.id] || [120, 120, 120];
    const vs = this.view.s, ve = this.view.e, base = TL.LABEL_W;
    ctx.fillStyle = 'rgba(' + rgb[0] + ',' + rgb[1] + ',' + rgb[2] + ',0.75)';
    let i = lowerBound(en, vs, 0, n);
    while (i < n && st[i] <= ve) {
      const e = st[i] + w[i];
      if (e < vs) { i++; continue; }
      const xa = Math.max(base - 1, base + (st[i] - vs) * k), xb = Math.min(W + 1, base + (e - vs) * k);
      const px = Math.floor(xa);
      ctx.fillRect(xa, y, Math.max(1, xb - xa), TL.STRIP_H);
      this.drawn.items++;
      if (xb - xa < 1) {
        const tNext = vs + (px + 1 - base) / k;
        let nx = lowerBound(st, tNext, i + 1, n);
        if (nx - 1 > i && st[nx - 1] + w[nx - 1] >= tNext) nx--;
        i = nx;
      } else i++;
    }
  }

  drawCounter(ctx, tr, y, W, k) {
    const c = tr.counter, t = c.t, v = c.v, n = t.length;
    const vs = this.view.s, ve = this.view.e, base = TL.LABEL_W, h = TL.COUNTER_H - 6;
    const max = c.unit === '%' ? Math.max(c.max, 100) : (c.max || 1);
    const yb = y + TL.COUNTER_H - 3;
    let i = Math.max(0, lowerBound(t, vs, 0, n) - 1);
    const last = Math.min(n - 1, lowerBound(t, ve, 0, n));
    // Step chart; points within one pixel column collapse to their maximum.
    const xs = [], ys = [];
    for (; i <= last; i++) {
      const x = Math.max(base - 1, Math.min(W + 1, base + (t[i] - vs) * k));
      const val = isNaN(v[i]) ? 0 : v[i];
      const yy = yb - Math.min(1, val / max) * h;
      if (xs.length && Math.floor(xs[xs.length - 1]) === Math.floor(x)) {
        if (yy < ys[ys.length - 1]) ys[ys.length - 1] = yy;
      } else { xs.push(x); ys.push(yy); }
    }
    if (!xs.length) return;
    ctx.beginPath();
    ctx.moveTo(xs[0], yb);
    for (let j = 0; j < xs.length; j++) {
      ctx.lineTo(xs[j], j ? ys[j - 1] : yb);
      ctx.lineTo(xs[j], ys[j]);
    }
    ctx.lineTo(xs[xs.length - 1], yb);
    ctx.closePath();
    ctx.fillStyle = 'rgba(143,108,196,.22)';
    ctx.fill();
    ctx.beginPath();
    ctx.moveTo(xs[0], ys[0]);
    for (let j = 1; j < xs.length; j++) { ctx.lineTo(xs[j], ys[j - 1]); ctx.lineTo(xs[j], ys[j]); }
    ctx.strokeStyle = '#8f6cc4';
    ctx.lineWidth = 1.25;
    ctx.stroke();
    this.drawn.items += xs.length;
    if (c.unit === '%' && max > 100) {
      const y100 = yb - 100 / max * h;
      ctx.fillStyle = 'rgba(143,108,196,.35)';
      ctx.fillRect(base, Math.round(y100), W - base, 1);
    }
  }

  /* The overview: CPU samples and span starts over the whole recording, and the window. */
  drawOverview() {
    const W = this.ov.clientWidth, H = 44;
    if (!W) return;
    const ctx = fitCanvas(this.ov, W, H);
    const D = this.D, x0 = TL.LABEL_W, w = W - x0;
    if (!this.ovHist || this.ovHist.w !== w) this.ovHist = this.histogram(w);
    const hist = this.ovHist;
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, W, H);
    ctx.fillStyle = '#6b7785';
    ctx.font = TL_FONT;
    ctx.fillText('overview', 10, 16);
    ctx.fillStyle = '#a3adb9';
    ctx.fillText(fmtDur(D.t1 - D.t0) + ' recorded', 10, 32);
    const bar = (arr, max, color, top, hh) => {
      ctx.fillStyle = color;
      for (let i = 0; i < w; i++) if (arr[i]) { const bh = Math.max(1, arr[i] / max * hh); ctx.fillRect(x0 + i, top + hh - bh, 1, bh); }
    };
    bar(hist.spans, hist.spanMax || 1, 'rgba(92,143,214,.75)', 4, 17);
    bar(hist.cpu, hist.cpuMax || 1, 'rgba(232,116,59,.75)', 23, 17);
    const k = w / (D.t1 - D.t0);
    const a = x0 + (this.view.s - D.t0) * k, b = x0 + (this.view.e - D.t0) * k;
    ctx.fillStyle = 'rgba(29,35,48,.12)';
    if (a > x0) ctx.fillRect(x0, 0, a - x0, H);
    if (b < W) ctx.fillRect(b, 0, W - b, H);
    ctx.strokeStyle = '#3b6fd8';
    ctx.lineWidth = 1;
    ctx.strokeRect(Math.max(x0, a) + 0.5, 0.5, Math.max(2, Math.min(W, b) - Math.max(x0, a) - 1), H - 1);
    if (this.ovDrag) {
      ctx.fillStyle = 'rgba(59,111,216,.18)';
      ctx.fillRect(Math.min(this.ovDrag.x0, this.ovDrag.x1), 0, Math.abs(this.ovDrag.x1 - this.ovDrag.x0), H);
    }
  }

  histogram(w) {
    const D = this.D, k = w / (D.t1 - D.t0);
    const cpu = new Float64Array(w), spans = new Float64Array(w);
    for (const tr of D.tracks) {
      const s = tr.sm.cpu;
      if (s) for (let i = 0; i < s.t.length; i++) { const b = Math.floor((s.t[i] - D.t0) * k); if (b >= 0 && b < w) cpu[b]++; }
      if (tr.spans) {
        const st = tr.spans.start;
        for (let i = 0; i < st.length; i++) { const b = Math.floor((st[i] - D.t0) * k); if (b >= 0 && b < w) spans[b]++; }
      }
    }
    let cpuMax = 0, spanMax = 0;
    for (let i = 0; i < w; i++) { if (cpu[i] > cpuMax) cpuMax = cpu[i]; if (spans[i] > spanMax) spanMax = spans[i]; }
    return { w, cpu, spans, cpuMax, spanMax };
  }

  zoomAt(t, factor) {
    const span = this.view.e - this.view.s;
    const full = (this.D.t1 - this.D.t0) * 1.5;
    const next = Math.min(full, Math.max(50, span * factor));
    const f = next / span;
    this.view = { s: t - (t - this.view.s) * f, e: t + (this.view.e - t) * f };
    this.clampView();
    this.request();
  }

  panBy(ns) {
    this.view = { s: this.view.s + ns, e: this.view.e + ns };
    this.clampView();
    this.request();
  }

  clampView() {
    const D = this.D, span = this.view.e - this.view.s, margin = (D.t1 - D.t0) * 0.25;
    let s = this.view.s;
    if (s + span > D.t1 + margin) s = D.t1 + margin - span;
    if (s < D.t0 - margin) s = D.t0 - margin;
    this.view = { s, e: s + span };
  }

  showRange(s, e) {
    const pad = (e - s) * 0.1 || 1000;
    this.view = { s: s - pad, e: e + pad };
    this.request();
  }

  setSearch(q) {
    const info = document.getElementById('tl-search-info');
    q = q.trim().toLowerCase();
    if (!q) { this.match = null; info.textContent = ''; this.request(); return; }
    const m = new Uint8Array(this.D.S.length);
    let names = 0, count = 0;
    for (const tr of this.D.tracks) {
      if (!tr.spans) continue;
      const nm = tr.spans.name;
      for (let i = 0; i < nm.length; i++) {
        const n = nm[i];
        if (m[n] === 0) { m[n] = this.D.S[n].toLowerCase().includes(q) ? 1 : 2; if (m[n] === 1) names++; }
        if (m[n] === 1) count++;
      }
    }
    for (let i = 0; i < m.length; i++) if (m[i] === 2) m[i] = 0;
    this.match = m;
    info.textContent = fmtCount(count) + ' spans (' + names + ' names)';
    this.request();
  }
}
