/* Flame graphs (icicle: the root on top) of any sample set: CPU, off-CPU, GPU later.

   Samples are first summed per (process, stack), then each distinct stack is walked once into a
   tree whose children are ordered heaviest first. Drawing walks the tree from the focused node
   and stops at frames narrower than a third of a pixel. */

const FG = { ROW_H: 18, TOP: 2 };

class Flame {
  constructor(D) {
    this.D = D;
    this.canvas = document.getElementById('fg-canvas');
    this.wrap = document.getElementById('fg-wrap');
    this.empty = document.getElementById('fg-empty');
    this.textCache = new Map();
    this.hover = null;
    this.query = '';
    this.drawnFrames = 0;
    this.pending = false;
    const withData = D.sets.find(s => D.tracks.some(t => t.sm[s.id]));
    this.setId = (withData || D.sets[0] || { id: 'cpu' }).id;
    this.scope = 'all';
    this.buildControls();
    this.build();
    this.bind();
  }

  setDef() {
    return this.D.sets.find(s => s.id === this.setId) || { id: this.setId, title: this.setId, unit: 'samples' };
  }

  buildControls() {
    const D = this.D, box = document.getElementById('fg-sets');
    box.replaceChildren();
    const defs = D.sets.slice();
    if (!defs.some(s => s.id === 'gpu')) defs.push({ id: 'gpu', title: 'GPU', missing: true });
    for (const def of defs) {
      const has = !def.missing && D.tracks.some(t => t.sm[def.id]);
      const b = el('button', { text: def.title, 'data-set': def.id });
      if (!has) { b.disabled = true; b.title = 'No ' + def.title + ' samples in this recording'; }
      if (def.id === this.setId) b.classList.add('active');
      b.addEventListener('click', () => { this.setId = def.id; this.buildControls(); this.build(); this.draw(); });
      box.append(b);
    }
    const scope = document.getElementById('fg-scope');
    scope.replaceChildren(el('option', { value: 'all', text: 'All threads' }));
    for (const g of D.groups) {
      const tracks = g.tracks.filter(t => t.sm[this.setId]);
      if (!tracks.length) continue;
      scope.append(el('option', { value: 'g' + g.index, text: g.title + ' (' + g.sub + ')' }));
      for (const t of tracks) scope.append(el('option', { value: 't' + t.index, text: '\u00a0\u00a0' + t.title + ' (' + t.sub + ')' }));
    }
    scope.value = [...scope.options].some(o => o.value === this.scope) ? this.scope : 'all';
    this.scope = scope.value;
  }

  /* Sums the selected samples per (process, stack) and grows the tree. */
  build() {
    const D = this.D, nG = Math.max(1, D.groups.length);
    const agg = new Map();
    for (const tr of D.tracks) {
      const set = tr.sm[this.setId];
      if (!set) continue;
      if (this.scope[0] === 'g' && 'g' + tr.group !== this.scope) continue;
      if (this.scope[0] === 't' && 't' + tr.index !== this.scope) continue;
      const s = set.s, w = set.w;
      for (let i = 0; i < s.length; i++) {
        const key = s[i] * nG + tr.group;
        agg.set(key, (agg.get(key) || 0) + (w ? w[i] : 1));
      }
    }
    const root = { f: -1e9, w: 0, self: 0, depth: 0, parent: null, kids: new Map(), x: 0, list: null, color: '', text: '' };
    let maxDepth = 0;
    const child = (node, f) => {
      let c = node.kids.get(f);
      if (!c) { c = { f, w: 0, self: 0, depth: node.depth + 1, parent: node, kids: new Map(), x: 0, list: null, color: '', text: '' }; node.kids.set(f, c); }
      return c;
    };
    const o = D.stacks.o, fl = D.stacks.f;
    for (const [key, w] of agg) {
      const stack = Math.floor(key / nG), g = key - stack * nG;
      root.w += w;
      let node = child(root, -1 - g);
      node.w += w;
      if (stack + 1 < o.length) {
        for (let j = o[stack]; j < o[stack + 1]; j++) { node = child(node, fl[j]); node.w += w; }
      }
      node.self += w;
      if (node.depth > maxDepth) maxDepth = node.depth;
    }
    // Heaviest first, offsets in weight units.
    const order = [root];
    while (order.length) {
      const n = order.pop();
      n.list = [...n.kids.values()].sort((a, b) => b.w - a.w);
      let x = n.x;
      for (const c of n.list) { c.x = x; x += c.w; order.push(c); }
      n.kids = null;
    }
    this.root = root;
    this.focus = root;
    this.maxDepth = maxDepth;
    this.matchCache = new Map();
    this.updateSearch();
    const def = this.setDef();
    document.getElementById('fg-total').textContent = root.w ? 'total ' + this.fmtWeight(root.w) : '';
    this.empty.hidden = root.w > 0;
    this.empty.textContent = 'No ' + def.title + ' samples' + (this.scope === 'all' ? ' in this recording.' : ' for this selection.');
  }

  fmtWeight(w) {
    const unit = this.setDef().unit;
    return unit === 'ns' ? fmtDur(w) : unit === 'bytes' ? fmtBytes(w) : fmtCount(w) + ' samples';
  }

  label(n) {
    return n.text || (n.text = this.makeLabel(n));
  }

  makeLabel(n) {
    if (n.f === -1e9) return 'all';
    if (n.f < 0) { const g = this.D.groups[-1 - n.f]; return g ? g.title + ' (' + g.pid + ')' : 'process'; }
    const D = this.D;
    return frameLabel(D, n.f) + (D.frames.i[n.f] ? ' [inlined]' : '');
  }

  kind(n) {
    return n.f < 0 ? -1 : this.D.frames.k[n.f];
  }

  matches(n) {
    if (!this.matcher || n.f < 0) return false;
    let m = this.matchCache.get(n.f);
    if (m === undefined) { m = this.matcher(this.label(n)); this.matchCache.set(n.f, m); }
    return m;
  }

  updateSearch() {
    const q = this.query.trim();
    const info = document.getElementById('fg-match');
    this.matchCache = new Map();
    this.matcher = null;
    if (!q) { info.textContent = ''; return; }
    if (q.length > 2 && q[0] === '/' && q.lastIndexOf('/') > 0) {
      try {
        const re = new RegExp(q.slice(1, q.lastIndexOf('/')), q.slice(q.lastIndexOf('/') + 1) || 'i');
        this.matcher = s => re.test(s);
      } catch (e) { info.textContent = 'bad regex'; return; }
    } else {
      const ql = q.toLowerCase();
      this.matcher = s => s.toLowerCase().includes(ql);
    }
    // Matched weight: matched frames without a matched ancestor, so nothing counts twice.
    let total = 0;
    const walk = [this.root];
    while (walk.length) {
      const n = walk.pop();
      if (this.matches(n)) { total += n.w; continue; }
      for (const c of n.list) walk.push(c);
    }
    this.matched = total;
    info.textContent = 'matched ' + fmtPct(this.root.w ? 100 * total / this.root.w : 0) + ' (' + this.fmtWeight(total) + ')';
  }

  request() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  width() {
    return this.wrap.clientWidth || Math.max(300, document.documentElement.clientWidth - 20);
  }

  draw() {
    const W = this.width();
    const H = Math.min(30000, FG.TOP + (this.maxDepth + 1) * FG.ROW_H + 8);
    this.canvas.style.width = W + 'px';
    const ctx = fitCanvas(this.canvas, W, H);
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, W, H);
    ctx.font = TL_FONT;
    this.drawnFrames = 0;
    this.crumbs();
    if (!this.root.w) return 0;
    const f = this.focus, scale = W / f.w;
    const palette = this.setId === 'off_cpu' ? 'cold' : 'warm';
    const box = (n, x, w, dim) => {
      const y = FG.TOP + n.depth * FG.ROW_H;
      const matched = this.matcher && this.matches(n);
      ctx.globalAlpha = dim ? 0.55 : this.matcher && !matched ? 0.45 : 1;
      if (!n.color) n.color = frameColor(this.label(n), this.kind(n), palette);
      ctx.fillStyle = matched ? '#d63fd6' : n.color;
      ctx.fillRect(x, y, Math.max(0.5, w - (w > 3 ? 1 : 0)), FG.ROW_H - 1);
      if (this.hover === n) { ctx.globalAlpha = 1; ctx.strokeStyle = '#1d2330'; ctx.lineWidth = 1; ctx.strokeRect(x + 0.5, y + 0.5, Math.max(1, w - 2), FG.ROW_H - 2); }
      if (w > 28) {
        const text = fitText(ctx, this.label(n), w - 8, this.textCache);
        if (text) { ctx.globalAlpha = dim ? 0.7 : 1; ctx.fillStyle = '#1b1f24'; ctx.fillText(text, x + 4, y + 12.5); }
      }
      ctx.globalAlpha = 1;
      this.drawnFrames++;
    };
    for (let a = f.parent; a; a = a.parent) box(a, 0, W, true);
    const stack = [f];
    while (stack.length) {
      const n = stack.pop();
      const x = (n.x - f.x) * scale, w = n.w * scale;
      if (w < 0.34) continue;
      box(n, x, w, false);
      for (const c of n.list) stack.push(c);
    }
    return this.drawnFrames;
  }

  crumbs() {
    const bar = document.getElementById('fg-crumbs');
    bar.replaceChildren();
    const path = [];
    for (let n = this.focus; n; n = n.parent) path.unshift(n);
    path.forEach((n, i) => {
      if (i) bar.append(' › ');
      if (n === this.focus) bar.append(el('b', { text: this.label(n) }));
      else bar.append(el('a', { text: this.label(n), onclick: () => { this.focus = n; this.draw(); } }));
    });
    if (this.focus !== this.root) bar.append(el('span', { cls: 'muted', text: '   ' + fmtPct(100 * this.focus.w / this.root.w) + ' of all' }));
    else bar.append(el('span', { cls: 'muted', text: '   click a frame to zoom in' }));
  }

  /* The node at canvas point (x, y). */
  nodeAt(x, y) {
    const depth = Math.floor((y - FG.TOP) / FG.ROW_H);
    if (depth < 0 || !this.root.w) return null;
    const f = this.focus, W = this.width(), scale = W / f.w;
    if (depth < f.depth) { let a = f; while (a && a.depth > depth) a = a.parent; return a; }
    let n = f;
    const t = f.x + x / scale;
    while (n && n.depth < depth) n = n.list.find(c => t >= c.x && t < c.x + c.w);
    return n && n.depth === depth && t >= n.x && t < n.x + n.w ? n : null;
  }

  bind() {
    const cv = this.canvas;
    const local = e => { const r = cv.getBoundingClientRect(); return { x: e.clientX - r.left, y: e.clientY - r.top }; };
    cv.addEventListener('mousemove', e => {
      const p = local(e), n = this.nodeAt(p.x, p.y);
      if (n !== this.hover) { this.hover = n; this.request(); }
      if (!n) { tooltip.hide(); cv.style.cursor = ''; return; }
      cv.style.cursor = 'pointer';
      const D = this.D, rows = [['total', this.fmtWeight(n.w) + ' · ' + fmtPct(100 * n.w / this.root.w) + ' of all']];
      if (this.focus !== this.root) rows.push(['of zoomed', fmtPct(100 * n.w / this.focus.w)]);
      rows.push(['self', this.fmtWeight(n.self) + ' · ' + fmtPct(100 * n.self / this.root.w)]);
      if (n.f >= 0) {
        const m = D.frames.m[n.f], file = D.frames.f[n.f];
        if (m >= 0) rows.push(['module', D.S[m]]);
        if (file >= 0) rows.push(['source', D.S[file] + (D.frames.ln[n.f] ? ':' + D.frames.ln[n.f] : '')]);
        rows.push(['kind', ['user', 'kernel', 'JIT', 'unknown', 'Python'][D.frames.k[n.f]] + (D.frames.i[n.f] ? ', inlined' : '')]);
      }
      tooltip.show('<div class="tt-name">' + esc(this.label(n)) + '</div>' + ttRows(rows), e.clientX, e.clientY);
    });
    cv.addEventListener('mouseleave', () => { this.hover = null; tooltip.hide(); this.request(); });
    cv.addEventListener('click', e => {
      const p = local(e), n = this.nodeAt(p.x, p.y);
      if (!n) return;
      this.focus = n === this.focus && n.parent ? n.parent : n;
      this.draw();
    });
    const search = document.getElementById('fg-search');
    search.addEventListener('input', () => { this.query = search.value; this.updateSearch(); this.draw(); });
    document.getElementById('fg-reset').addEventListener('click', () => {
      search.value = '';
      this.query = '';
      this.updateSearch();
      this.focus = this.root;
      this.draw();
    });
    document.getElementById('fg-scope').addEventListener('change', e => { this.scope = e.target.value; this.build(); this.draw(); });
    window.addEventListener('resize', () => this.request());
  }
}
