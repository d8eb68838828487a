/* The report tab: the headline as cards, each section as a sortable table (or why it is absent),
   and the recording's own facts. */

const RP_PAGE = 500;

function cellText(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/* A sort key: numbers as numbers, "12.5 ms" / "3.2 s" / "40%" as their number in a common unit,
   everything else as lower-case text. */
function sortKey(v) {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') return cellText(v).toLowerCase();
  const m = /^\s*(-?[\d,]*\.?\d+(?:e[+-]?\d+)?)\s*(ns|µs|us|ms|s|min|%|B|KiB|MiB|GiB|TiB|k|M|G)?\s*$/i.exec(v);
  if (!m) return v.toLowerCase();
  const x = parseFloat(m[1].replace(/,/g, ''));
  const mult = { ns: 1, 'µs': 1e3, us: 1e3, ms: 1e6, s: 1e9, min: 6e10, b: 1, kib: 1024, mib: 1048576, gib: 1073741824, tib: 1099511627776, k: 1e3, m: 1e6, g: 1e9 };
  return x * (m[2] ? mult[m[2].toLowerCase()] || (m[2] === 'M' ? 1e6 : 1) : 1);
}

function renderTable(section) {
  const cols = section.columns || [];
  const rows = (section.rows || []).slice();
  const table = el('table', { cls: 'data' });
  const thead = el('thead'), tbody = el('tbody');
  table.append(thead, tbody);
  const numeric = cols.map((_, c) => rows.length > 0 && rows.every(r => r[c] === null || r[c] === undefined || typeof sortKey(r[c]) === 'number'));
  let sortCol = -1, asc = false, limit = RP_PAGE;
  const more = el('div', { cls: 'more' });
  const fill = () => {
    tbody.replaceChildren();
    for (const r of rows.slice(0, limit)) {
      const tr = el('tr');
      cols.forEach((_, c) => tr.append(el('td', { text: cellText(r[c]), cls: numeric[c] ? 'num' : 'text' })));
      tbody.append(tr);
    }
    more.replaceChildren();
    if (rows.length > limit) {
      more.append(el('button', { text: 'Show all ' + fmtCount(rows.length) + ' rows', onclick: () => { limit = Infinity; fill(); } }));
    }
  };
  const hr = el('tr');
  cols.forEach((name, c) => {
    const th = el('th', { text: name, title: 'Sort by ' + name });
    if (numeric[c]) th.style.textAlign = 'right';
    th.addEventListener('click', () => {
      asc = sortCol === c ? !asc : !numeric[c];
      sortCol = c;
      rows.sort((a, b) => {
        const x = sortKey(a[c]), y = sortKey(b[c]);
        const cmp = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : typeof x === 'number' ? -1 : 1;
        return asc ? cmp : -cmp;
      });
      for (const h of hr.children) h.classList.remove('sorted', 'asc');
      th.classList.add('sorted');
      if (asc) th.classList.add('asc');
      fill();
    });
    hr.append(th);
  });
  thead.append(hr);
  fill();
  const box = el('div');
  box.append(table, more);
  return box;
}

/* Renders the report into #rp-body; returns how many tables it drew. */
function renderReport(D) {
  const body = document.getElementById('rp-body');
  body.replaceChildren();
  const report = D.report && typeof D.report === 'object' ? D.report : {};
  let tables = 0;
  const headline = Array.isArray(report.headline) ? report.headline : [];
  if (headline.length) {
    body.append(el('h2', { text: 'Summary' }));
    const cards = el('div', { cls: 'cards' });
    for (const kv of headline) {
      if (!Array.isArray(kv)) continue;
      cards.append(el('div', { cls: 'card' }, [el('div', { cls: 'k', text: cellText(kv[0]) }), el('div', { cls: 'v', text: cellText(kv[1]) })]));
    }
    body.append(cards);
  }
  const sections = Array.isArray(report.sections) ? report.sections : [];
  for (const s of sections) {
    if (!s || typeof s !== 'object') continue;
    const h = el('h2', { text: s.title || s.id || 'Section' });
    if (s.id) h.id = 'rp-' + s.id;
    body.append(h);
    if (s.absent) {
      body.append(el('div', { cls: 'absent', text: 'Not recorded: ' + s.absent }));
    } else if (!s.rows || !s.rows.length) {
      body.append(el('div', { cls: 'absent', text: 'Nothing in this recording.' }));
    } else {
      body.append(renderTable(s));
      tables++;
    }
  }
  if (!headline.length && !sections.length) body.append(el('div', { cls: 'absent', text: 'No report was embedded in this page.' }));
  body.append(el('h2', { text: 'Recording' }));
  const m = D.meta, lost = m.lost || {};
  const facts = [
    ['command', m.command], ['mode', m.mode], ['target pid', m.target_pid],
    ['started', m.start_unix_ms ? new Date(m.start_unix_ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : ''],
    ['duration', fmtDur(m.dur_ns)], ['ended by', m.end_reason], ['exit status', m.exit_status],
    ['sampling', m.frequency_hz ? m.frequency_hz + ' Hz' + (m.off_cpu ? ', off-CPU on' : '') : ''],
    ['host', m.hostname], ['kernel', m.kernel], ['CPUs', m.cpus], ['modelprobe', m.version],
    ['spans', fmtCount(D.spanCount)],
  ];
  const dropped = Object.keys(lost).filter(k => lost[k]).map(k => k.replace(/_/g, ' ') + ': ' + fmtCount(lost[k]));
  facts.push(['lost', dropped.length ? dropped.join(', ') : 'nothing']);
  body.append(renderTable({ columns: ['field', 'value'], rows: facts.filter(f => f[1] !== undefined && f[1] !== null && f[1] !== '').map(f => [f[0], cellText(f[1])]) }));
  return tables;
}
