/* Start-up: decode the data, render every tab once, then mark the page ready. */

function showTab(name, views) {
  for (const b of document.querySelectorAll('#mp-tabs button')) b.classList.toggle('active', b.dataset.tab === name);
  for (const s of document.querySelectorAll('.tab')) s.classList.toggle('active', s.id === 'tab-' + name);
  tooltip.hide();
  if (name === 'timeline') views.timeline.draw();
  if (name === 'flame') views.flame.draw();
}

function header(D) {
  const m = D.meta;
  document.getElementById('mp-title').textContent = m.command || '(unknown command)';
  const procs = D.groups.filter(g => g.kind === 'process').length;
  const samples = D.tracks.reduce((a, t) => a + (t.sm.cpu ? t.sm.cpu.t.length : 0), 0);
  const parts = [
    fmtDur(m.dur_ns || D.t1 - D.t0),
    procs + (procs === 1 ? ' process' : ' processes'),
    D.tracks.filter(t => t.kind === 'thread').length + ' threads',
    fmtCount(D.spanCount) + ' spans',
    fmtCount(samples) + ' CPU samples',
  ];
  if (D.gpuOpCount) parts.push(fmtCount(D.gpuOpCount) + ' GPU ops');
  if (m.hostname) parts.push(m.hostname);
  const lost = m.lost ? Object.keys(m.lost).reduce((a, k) => a + (k.endsWith('errors') ? 0 : m.lost[k] || 0), 0) : 0;
  if (lost) parts.push(fmtCount(lost) + ' records lost');
  document.getElementById('mp-subtitle').textContent = parts.join(' · ');
}

function start() {
  const body = document.body;
  let D;
  try {
    const t0 = performance.now();
    D = loadData();
    const t1 = performance.now();
    header(D);
    const views = { timeline: new Timeline(D), flame: new Flame(D) };
    const t2 = performance.now();
    const tables = renderReport(D);
    const drawn = views.timeline.draw();
    const frames = views.flame.draw();
    const t3 = performance.now();
    // Where start-up time went: until this script ran (HTML parsing), data decoding, building
    // the views (span rows, flame tree), and the first drawing.
    body.setAttribute('data-mp-timing', 'html ' + t0.toFixed(0) + ' ms, data ' + (t1 - t0).toFixed(0) + ' ms, views ' + (t2 - t1).toFixed(0) + ' ms, draw ' + (t3 - t2).toFixed(0) + ' ms');
    for (const b of document.querySelectorAll('#mp-tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab, views));
    document.addEventListener('keydown', e => {
      if (e.target && (e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT')) return;
      const tab = { 1: 'timeline', 2: 'flame', 3: 'report' }[e.key];
      if (tab && !e.ctrlKey && !e.metaKey && !e.altKey) showTab(tab, views);
      else if (document.getElementById('tab-timeline').classList.contains('active') && e.target === body) views.timeline.key(e);
    });
    body.setAttribute('data-mp-spans-drawn', String(drawn.spans));
    body.setAttribute('data-mp-items-drawn', String(drawn.items));
    body.setAttribute('data-mp-flame-frames', String(frames));
    body.setAttribute('data-mp-tables', String(tables));
    body.setAttribute('data-mp-ready-ms', performance.now().toFixed(0));
    body.setAttribute('data-mp-ready', '1');
    window.mpViewer = views;
    const initial = location.hash.replace('#', '');
    if (initial === 'flame' || initial === 'report') showTab(initial, views);
    // #replay=<ns since the start>: open the timeline in replay at that instant.
    const replay = /^replay=(-?[0-9.]+)$/.exec(initial);
    if (replay) views.timeline.replayAt(Number(replay[1]));
    window.addEventListener('hashchange', () => {
      const tab = location.hash.replace('#', '');
      if (tab === 'timeline' || tab === 'flame' || tab === 'report') showTab(tab, views);
    });
  } catch (e) {
    const banner = document.getElementById('mp-banner');
    banner.hidden = false;
    banner.textContent = 'The viewer failed to start: ' + (e && e.message ? e.message : e);
    window.mpReportError('start: ' + (e && e.stack ? e.stack : e));
  }
  window.mpFlushErrors();
}

start();
