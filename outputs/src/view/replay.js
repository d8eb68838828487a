/* Replay: the state of every thread at one instant of the timeline — its nearest CPU sample's
   stack (or the blocked interval it was in), the probed calls open then, the last event and
   log line before it — and stepping from event to event (any track's events and log lines).
   Started with the Replay button, R, or #replay=<ns> in the URL; , and . step; Esc leaves. */

/* Index of the last element of sorted `a` at or before `t`, or -1. */
function lastAtOrBefore(a, t) {
  let lo = 0, hi = a.length;
  while (lo < hi) { const m = (lo + hi) >> 1; if (a[m] <= t) lo = m + 1; else hi = m; }
  return lo - 1;
}

/* What thread track `tr` was doing at `t`, or null when nothing is known near it. */
Timeline.prototype.stateAt = function (tr, t) {
  const D = this.D, st = { stack: -1, blocked: false, sampleAgo: 0, spans: [], event: null, log: null };
  const hz = (D.meta.frequency_hz || 99);
  const cpu = tr.sm.cpu;
  if (cpu) {
    const i = lastAtOrBefore(cpu.t, t);
    // A sample stands for its thread until the next one would have come (3 periods).
    if (i >= 0 && t - cpu.t[i] <= 3e9 / hz) { st.stack = cpu.s[i]; st.sampleAgo = t - cpu.t[i]; }
  }
  const off = tr.sm.off_cpu;
  if (st.stack < 0 && off && off.w) {
    const i = lastAtOrBefore(off.t, t);
    if (i >= 0 && off.t[i] + off.w[i] >= t) { st.stack = off.s[i]; st.blocked = true; st.sampleAgo = t - off.t[i]; }
  }
  if (tr.spans) {
    const sp = tr.spans;
    // Open spans: started at or before t, not yet over; the scan is bounded by the start index.
    const last = lastAtOrBefore(sp.start, t);
    for (let i = last; i >= 0 && st.spans.length < 16; i--) {
      if (sp.start[i] + sp.dur[i] >= t) st.spans.push(i);
      if (t - sp.start[i] > 600e9) break;
    }
    st.spans.sort((a, b) => sp.depth[a] - sp.depth[b]);
  }
  if (tr.ev) {
    const i = lastAtOrBefore(tr.ev.time, t);
    if (i >= 0) st.event = i;
  }
  if (tr.lg) {
    const i = lastAtOrBefore(tr.lg.time, t);
    if (i >= 0) st.log = i;
  }
  if (st.stack < 0 && !st.spans.length && st.event === null && st.log === null) return null;
  return st;
};

/* Shows the state of every thread at `t` in the details panel, and marks `t`. */
Timeline.prototype.replayAt = function (t) {
  const D = this.D;
  t = Math.max(D.t0, Math.min(D.t1, t));
  this.replayT = t;
  this.selected = null;
  if (t < this.view.s || t > this.view.e) this.panBy(t - (this.view.s + this.view.e) / 2);
  this.request();
  const body = document.getElementById('tl-details-body');
  body.replaceChildren();
  body.className = '';
  const head = el('div', { cls: 'detail-name', text: 'Replay at ' + fmtTs(t, 1) });
  const nav = el('div', { cls: 'details-actions' }, [
    el('button', { text: '◀ event (,)', onclick: () => this.replayStep(-1) }),
    el('button', { text: 'event ▶ (.)', onclick: () => this.replayStep(1) }),
    el('button', { text: 'Leave (Esc)', onclick: () => this.replayStop() }),
  ]);
  body.append(head, nav);
  let shown = 0;
  for (const tr of D.tracks) {
    if (tr.gpu || tr.kind !== 'thread') continue;
    const st = this.stateAt(tr, t);
    if (!st) continue;
    shown++;
    const g = D.groups[tr.group] || {};
    const box = el('div', { cls: 'replay-thread' });
    box.setAttribute('data-tid', String(tr.tid));
    box.append(el('div', { cls: 'replay-title', text: tr.title + (tr.tid !== undefined ? ' (tid ' + tr.tid + ')' : '') + ' · ' + (g.title || '') }));
    if (st.stack >= 0) {
      box.append(el('div', { cls: 'muted', text: (st.blocked ? 'blocked, since ' : 'on CPU, sampled ') + fmtDur(st.sampleAgo) + ' before' }));
      box.append(stackList(D, st.stack, 8));
    }
    if (st.spans.length) {
      const ul = el('ul', { cls: 'replay-spans' });
      for (const i of st.spans) {
        ul.append(el('li', { text: D.S[tr.spans.name[i]] + ' — open for ' + fmtDur(t - tr.spans.start[i]) }));
      }
      box.append(el('div', { cls: 'muted', text: 'open calls' }), ul);
    }
    if (st.event !== null) {
      const ev = tr.ev;
      box.append(el('div', { cls: 'replay-last', text: 'last event: ' + D.S[ev.k[st.event]].replace(/_/g, ' ') + ' — ' + D.S[ev.m[st.event]] + ' (' + fmtDur(t - ev.time[st.event]) + ' before)' }));
    }
    if (st.log !== null) {
      box.append(el('div', { cls: 'replay-last mono', text: 'last log line: ' + D.S[tr.lg.m[st.log]] + ' (' + fmtDur(t - tr.lg.time[st.log]) + ' before)' }));
    }
    body.append(box);
  }
  if (!shown) body.append(el('div', { cls: 'muted', text: 'No thread has a sample, an open call, an event or a log line at or before this instant.' }));
  document.body.setAttribute('data-mp-replay-t', String(Math.round(t)));
  document.body.setAttribute('data-mp-replay-threads', String(shown));
};

/* Moves the replay to the previous (-1) or next (1) event or log line of any thread. */
Timeline.prototype.replayStep = function (dir) {
  const t = this.replayT === undefined ? (this.view.s + this.view.e) / 2 : this.replayT;
  let best = dir > 0 ? Infinity : -Infinity;
  for (const tr of this.D.tracks) {
    for (const a of [tr.ev && tr.ev.time, tr.lg && tr.lg.time]) {
      if (!a || !a.length) continue;
      const i = lastAtOrBefore(a, t);
      if (dir > 0) {
        // The first strictly after t.
        let j = i + 1;
        while (j < a.length && a[j] <= t) j++;
        if (j < a.length && a[j] < best) best = a[j];
      } else {
        let j = i;
        while (j >= 0 && a[j] >= t) j--;
        if (j >= 0 && a[j] > best) best = a[j];
      }
    }
  }
  if (isFinite(best)) this.replayAt(best);
};

/* Leaves replay. */
Timeline.prototype.replayStop = function () {
  this.replayT = undefined;
  document.body.removeAttribute('data-mp-replay-t');
  this.select(null);
};
