// Herald's dashboard: a single page over the public HTTP API (/api/v1), nothing else.
// Plain JavaScript with no build step and no dependencies: the file Herald serves is the file
// in the repository. Pages are hash routes (#/clients, #/client?id=..); each page renders once
// and may register a refresh that runs every few seconds while it is shown.

const API = '/api/v1';
const POLL_MS = 2000;
const HISTORY_MS = 5000;

const state = {
  key: sessionStorage.getItem('herald.key') || '',
  scope: null, // 'node' or 'tenant' once known
  tenantName: '', // a tenant key's own tenant
  tenant: sessionStorage.getItem('herald.tenant') || '', // the tenant a node-wide key looks at
  timers: [],
  history: null, // {t: [], series: {...}} kept between polls
  page: 0, // bumped on every navigation: late answers for an old page are ignored
};

// ---------------------------------------------------------------------------------------
// DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const svg = (tag, attrs) => {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
};

function banner(message, kind) {
  const b = document.getElementById('banner');
  if (!message) {
    b.hidden = true;
    return;
  }
  b.className = kind || '';
  b.textContent = message;
  b.hidden = false;
}

// ---------------------------------------------------------------------------------------
// Formatting

function num(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(2) + ' G';
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + ' M';
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + ' k';
  return Number.isInteger(n) ? n.toLocaleString('en') : n.toFixed(1);
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

const rate = (n) => num(n) + '/s';
const pct = (n) => (n === null || n === undefined ? '–' : n.toFixed(1) + ' %');
const limit = (n, fmt = num) => (n === null || n === undefined ? 'no limit' : fmt(n));

// ---------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

async function api(method, path, { query, body } = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') params.set(k, v);
  }
  const qs = params.toString();
  const headers = {};
  if (state.key) headers.Authorization = 'Bearer ' + state.key;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(API + path + (qs ? '?' + qs : ''), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'Herald does not answer: ' + e.message);
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(res.status, err.code || 'http_' + res.status, err.message || res.statusText, err.field);
  }
  return data;
}

// The tenant parameter a node-wide key sends (a tenant's key works in its own alone).
const tenantQuery = () => (state.scope === 'node' && state.tenant ? { tenant: state.tenant } : {});

// Handles a failed call: a missing or wrong key opens the sign-in; anything else is shown.
function failed(e) {
  if (e instanceof ApiError && e.status === 401) {
    signIn(state.key ? 'That key was refused: ' + e.message : null);
    return;
  }
  banner(e instanceof ApiError ? `${e.message} (${e.status || 'network'} ${e.code})` : String(e));
}

// ---------------------------------------------------------------------------------------
// Sign-in and scope

function signIn(error) {
  const dialog = document.getElementById('signin');
  const err = document.getElementById('signin-error');
  err.hidden = !error;
  err.textContent = error || '';
  if (!dialog.open) dialog.showModal();
}

async function learnScope() {
  const stats = await api('GET', '/stats');
  if (Array.isArray(stats.tenants)) {
    state.scope = 'node';
  } else {
    state.scope = 'tenant';
    state.tenantName = stats.tenant;
  }
  document.getElementById('signout').hidden = !state.key;
  const scope = document.getElementById('scope');
  scope.textContent = state.scope === 'node' ? '' : `tenant ${JSON.stringify(state.tenantName)}`;
  if (state.scope === 'node') await fillTenants();
}

async function fillTenants() {
  const pick = document.getElementById('tenant');
  let names = [''];
  try {
    const page = await api('GET', '/tenants', { query: { limit: 1000 } });
    names = [...new Set(['', ...page.items.map((t) => t.name)])];
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 403)) throw e;
  }
  if (state.tenant && !names.includes(state.tenant)) names.push(state.tenant);
  pick.replaceChildren(...names.map((n) => h('option', { value: n, text: n === '' ? '(default)' : n })));
  pick.value = state.tenant;
  document.getElementById('tenant-pick').hidden = names.length < 2;
}

// ---------------------------------------------------------------------------------------
// Charts: SVG polylines over the last hour

function chart(title, t, lines, fmt) {
  const W = 600;
  const H = 120;
  const pad = { l: 46, r: 6, t: 8, b: 16 };
  const values = lines.flatMap((l) => l.values.filter((v) => v !== null && v !== undefined));
  const max = Math.max(1, ...values);
  const now = Date.now();
  // The last hour once Herald has run that long; until then, its run so far (10 minutes at least).
  const span = Math.min(3600e3, Math.max(600e3, now - (t[0] ?? now)));
  const x = (ms) => pad.l + ((ms - (now - span)) / span) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  for (const f of [0, 0.5, 1]) {
    const yy = y(max * f);
    s.append(svg('line', { x1: pad.l, x2: W - pad.r, y1: yy, y2: yy, class: 'grid' }));
    const label = svg('text', { x: 2, y: yy + 3 });
    label.textContent = fmt(max * f);
    s.append(label);
  }
  const minutes = span / 60e3;
  const step = minutes > 30 ? 15 : minutes > 15 ? 5 : 2;
  for (let m = Math.floor(minutes / step) * step; m > 0; m -= step) {
    const label = svg('text', { x: x(now - m * 60e3) - 10, y: H - 3 });
    label.textContent = `-${m} min`;
    s.append(label);
  }
  lines.forEach((l, i) => {
    const pts = [];
    l.values.forEach((v, j) => {
      if (v !== null && v !== undefined && t[j] > now - span) pts.push([x(t[j]), y(v)]);
    });
    if (!pts.length) return;
    s.append(svg('polyline', { points: pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' '), class: 's' + (i + 1) }));
    const [lx, ly] = pts[pts.length - 1];
    s.append(svg('circle', { cx: lx.toFixed(1), cy: ly.toFixed(1), r: 2.5, class: 'dot s' + (i + 1) }));
  });
  const last = lines.map((l) => l.values[l.values.length - 1]);
  return h(
    'div',
    { class: 'chart', 'data-chart': title },
    h(
      'div',
      { class: 'title' },
      h('strong', { text: title }),
      h(
        'span',
        { class: 'legend' },
        lines.map((l, i) => h('span', {}, h('i', { class: 's' + (i + 1) }), `${l.name} ${fmt(last[i])}`)),
      ),
    ),
    s,
  );
}

function mergeHistory(fresh) {
  if (!state.history) {
    state.history = fresh;
    return;
  }
  const hst = state.history;
  hst.t.push(...fresh.t);
  for (const [k, v] of Object.entries(fresh.series)) (hst.series[k] ||= []).push(...v);
  const drop = Math.max(0, hst.t.length - fresh.capacity);
  if (drop) {
    hst.t.splice(0, drop);
    for (const v of Object.values(hst.series)) v.splice(0, drop);
  }
}

// ---------------------------------------------------------------------------------------
// Shared pieces of pages

function card(label, value, sub, fill) {
  const c = h('div', { class: 'card', 'data-card': label }, h('div', { class: 'label', text: label }), h('div', { class: 'value', text: value }));
  if (sub) c.append(h('div', { class: 'sub', text: sub }));
  if (fill !== undefined && fill !== null) {
    const span = h('span', { class: fill > 0.85 ? 'high' : '' });
    span.style.width = Math.min(100, fill * 100).toFixed(1) + '%';
    c.append(h('div', { class: 'bar' }, span));
  }
  return c;
}

function table(columns, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted', text: empty || 'Nothing here.' });
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : c.narrow ? 'hide-narrow' : '', text: c.label })))),
      h(
        'tbody',
        {},
        rows.map((r) =>
          h(
            'tr',
            {},
            columns.map((c) => {
              const v = c.get(r);
              const cls = [c.num ? 'num' : '', c.wrap ? 'wrap' : '', c.narrow ? 'hide-narrow' : ''].join(' ').trim();
              return h('td', { class: cls || null }, v instanceof Node ? v : v === null || v === undefined ? '–' : String(v));
            }),
          ),
        ),
      ),
    ),
  );
}

function reasons(obj) {
  return Object.entries(obj || {})
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1]);
}

const clientLink = (id, tenant) => {
  const q = new URLSearchParams({ id });
  if (tenant) q.set('tenant', tenant);
  return h('a', { href: '#/client?' + q.toString(), text: id });
};

function pager(next, load) {
  return next ? h('div', { class: 'actions' }, h('button', { class: 'secondary', type: 'button', onclick: () => load(next), text: 'Next page' })) : null;
}

function every(ms, fn) {
  const page = state.page;
  const run = async () => {
    if (page !== state.page) return;
    try {
      await fn();
    } catch (e) {
      failed(e);
    }
  };
  state.timers.push(setInterval(run, ms));
  return run();
}

// ---------------------------------------------------------------------------------------
// Pages

const pages = {};

pages.overview = async (main) => {
  main.replaceChildren(
    h('h1', { text: state.scope === 'tenant' ? `Tenant ${JSON.stringify(state.tenantName)}` : 'Overview' }),
    h('div', { class: 'cards', id: 'cards' }),
    h('h2', { text: 'Last hour' }),
    h('div', { class: 'charts', id: 'charts' }),
    h('div', { class: 'grid2', id: 'breakdown' }),
  );
  if (state.scope === 'tenant') {
    await every(POLL_MS, tenantOverview);
    return;
  }
  state.history = null;
  statsDue = 0;
  await every(POLL_MS, nodeCards);
  await every(HISTORY_MS, nodeCharts);
};

// /api/v1/stats looks at every session: on a node with many, the figures refresh less often.
const BUSY_SESSIONS = 100000;
const BUSY_POLL_MS = 10000;
let statsDue = 0;

async function nodeCards() {
  if (Date.now() < statsDue) return;
  const s = await api('GET', '/stats');
  statsDue = s.sessions > BUSY_SESSIONS ? Date.now() + BUSY_POLL_MS - 100 : 0;
  const cards = document.getElementById('cards');
  if (!cards) return;
  const p = s.process;
  const st = s.store;
  const last = (k) => {
    const v = state.history?.series[k];
    return v && v.length ? v[v.length - 1] : null;
  };
  const drops = reasons(s.drops).reduce((a, [, n]) => a + n, 0);
  cards.replaceChildren(
    card('Connections', num(s.connections), `of ${num(s.max_connections)} · ${num(s.sessions)} sessions`, s.connections / Math.max(1, s.max_connections)),
    card('Messages in', rate(s.rates.published_per_sec), `${num(s.messages_published)} in all`),
    card('Messages out', rate(s.rates.delivered_per_sec), `${num(s.messages_delivered)} deliveries in all`),
    card('Queued', num(s.queued_messages), bytes(s.queued_bytes)),
    card('Dropped', num(drops), `${num(s.store_refused)} refused by the store`),
    st.in_memory
      ? card('Store', 'in memory', 'nothing survives a restart')
      : card('Store', bytes(st.disk_bytes), st.max_disk_bytes ? `of ${bytes(st.max_disk_bytes)}` : 'no disk limit', st.max_disk_bytes ? st.disk_bytes / st.max_disk_bytes : null),
    card('Open files', num(p.open_fds), `of ${num(p.max_fds)}`, p.open_fds / Math.max(1, p.max_fds)),
    card('CPU', pct(last('cpu_percent')), `${num(p.cpu_seconds)} s in all`),
    card('Memory', bytes(p.resident_memory_bytes), 'resident'),
  );
  const byTenant = [...s.tenants].sort((a, b) => b.connections - a.connections).slice(0, 10);
  document.getElementById('breakdown').replaceChildren(
    panel('Connections by listener', table([{ label: 'Listener', get: (r) => r[0] }, { label: 'Open', num: true, get: (r) => num(r[1]) }], Object.entries(s.connections_by_listener))),
    panel('Connections by protocol', table([{ label: 'Protocol', get: (r) => r[0] }, { label: 'Open', num: true, get: (r) => num(r[1]) }], Object.entries(s.connections_by_protocol))),
    panel(
      'Connections by tenant',
      table(
        [
          { label: 'Tenant', get: (t) => (t.name === '' ? '(default)' : t.name) },
          { label: 'Open', num: true, get: (t) => num(t.connections) },
          { label: 'In/s', num: true, get: (t) => num(t.rates.published_per_sec) },
          { label: 'Out/s', num: true, get: (t) => num(t.rates.delivered_per_sec) },
        ],
        byTenant,
      ),
    ),
    panel('Drops by reason', table([{ label: 'Reason', get: (r) => r[0] }, { label: 'Messages', num: true, get: (r) => num(r[1]) }], reasons(s.drops), 'No message dropped.')),
    panel('Closes by reason', table([{ label: 'Reason', get: (r) => r[0] }, { label: 'Connections', num: true, get: (r) => num(r[1]) }], reasons(s.closes), 'No connection closed yet.')),
    panel('Refused by reason', table([{ label: 'Reason', get: (r) => r[0] }, { label: 'Messages', num: true, get: (r) => num(r[1]) }], reasons(s.refused), 'Nothing refused.')),
  );
}

async function nodeCharts() {
  const since = state.history?.t.at(-1);
  const fresh = await api('GET', '/stats/history', { query: { since } });
  mergeHistory(fresh);
  const charts = document.getElementById('charts');
  if (!charts) return;
  const { t, series: s } = state.history;
  if (!t.length) {
    charts.replaceChildren(h('p', { class: 'muted', text: 'The first point comes 5 seconds after the start; the charts fill in as Herald runs.' }));
    return;
  }
  const drawn = [
    chart('Connections', t, [{ name: 'open', values: s.connections }], num),
    chart('Messages a second', t, [{ name: 'in', values: s.published_per_sec }, { name: 'out', values: s.delivered_per_sec }], num),
    chart('Drops, closes, refusals a second', t, [
      { name: 'dropped', values: s.dropped_per_sec },
      { name: 'closed', values: s.closed_per_sec },
      { name: 'refused', values: s.refused_per_sec },
    ], num),
    chart('Connects a second', t, [{ name: 'accepted', values: s.connections_accepted_per_sec }], num),
    chart('Queued', t, [{ name: 'bytes', values: s.queued_bytes }], bytes),
    chart('CPU', t, [{ name: 'process', values: s.cpu_percent }], (v) => pct(v)),
    chart('Memory', t, [{ name: 'resident', values: s.resident_bytes }], bytes),
    chart('Open files', t, [{ name: 'open', values: s.open_fds }], num),
    s.store_bytes.some((v) => v !== null) ? chart('Store on disk', t, [{ name: 'bytes', values: s.store_bytes }], bytes) : null,
  ];
  charts.replaceChildren(...drawn.filter(Boolean));
}

async function tenantOverview() {
  const s = await api('GET', '/stats');
  const cards = document.getElementById('cards');
  if (!cards) return;
  cards.replaceChildren(
    card('Connections', num(s.connections), `${num(s.sessions)} sessions`),
    card('Messages in', rate(s.rates.published_per_sec), `${num(s.published)} in all`),
    card('Messages out', rate(s.rates.delivered_per_sec), `${num(s.delivered)} in all`),
    card('Subscriptions', num(s.subscriptions)),
    card('Queued', num(s.queued_messages), `${num(s.offline_queued_messages)} for offline sessions`),
    card('Retained', num(s.retained), bytes(s.retained_bytes)),
    card('Stored', bytes(s.store_bytes), 'retained and owed to offline sessions'),
  );
  document.getElementById('charts').replaceChildren(h('p', { class: 'muted', text: "The node's history covers every tenant: a node-wide key sees it." }));
  document.getElementById('breakdown').replaceChildren(
    panel('Quota breaches', table([{ label: 'Quota', get: (r) => r[0] }, { label: 'Times', num: true, get: (r) => num(r[1]) }], reasons(s.quota_breaches), 'No quota breached.')),
  );
}

function panel(title, content) {
  return h('section', { class: 'panel' }, h('h2', { text: title }), content);
}

pages.clients = async (main, params) => {
  const form = h(
    'form',
    { class: 'inline', id: 'client-search' },
    h('label', {}, 'Client id starts with', h('input', { name: 'prefix', value: params.get('prefix') || '' })),
    h('label', {}, 'Username', h('input', { name: 'username', value: params.get('username') || '' })),
    h('label', {}, 'Address starts with', h('input', { name: 'address', value: params.get('address') || '', placeholder: '10.0.' })),
    h('button', { type: 'submit', text: 'Search' }),
  );
  const results = h('div', { id: 'client-results' });
  main.replaceChildren(h('h1', { text: 'Clients' }), form, results);
  const load = async (after) => {
    const q = Object.fromEntries(new FormData(form));
    const page = await api('GET', '/clients', { query: { ...q, ...tenantQuery(), after, limit: 100 } });
    const rows = table(
      [
        { label: 'Client id', wrap: true, get: (c) => clientLink(c.client_id, state.scope === 'node' ? state.tenant : '') },
        { label: 'State', get: (c) => h('span', { class: 'pill ' + (c.connected ? 'on' : 'off'), text: c.connected ? 'connected' : 'offline' }) },
        { label: 'Protocol', get: (c) => c.protocol },
        { label: 'User', get: (c) => c.username },
        { label: 'Address', narrow: true, get: (c) => c.address },
        { label: 'Listener', narrow: true, get: (c) => c.listener },
        { label: 'Subs', num: true, get: (c) => num(c.subscriptions) },
        { label: 'Queued', num: true, get: (c) => num(c.queued) },
        { label: 'In flight', num: true, narrow: true, get: (c) => num(c.inflight) },
        { label: 'Node', narrow: true, get: (c) => c.node },
      ],
      page.items,
      'No client matches.',
    );
    if (after) results.append(rows, pager(page.next, load) || '');
    else results.replaceChildren(rows, pager(page.next, load) || '');
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    load().catch(failed);
  });
  await every(POLL_MS * 2.5, () => load());
};

pages.client = async (main, params) => {
  const id = params.get('id') || '';
  const tenant = params.get('tenant') || '';
  const query = state.scope === 'node' && tenant ? { tenant } : {};
  const path = '/clients/' + encodeURIComponent(id);
  const body = h('div', {});
  const status = h('p', { id: 'client-status', class: 'muted' });
  main.replaceChildren(h('h1', {}, 'Client ', h('code', { text: id })), status, body);
  const act = async (discard) => {
    const what = discard ? 'disconnect this client and discard its session (subscriptions and queued messages)' : 'disconnect this client';
    if (!window.confirm(`Really ${what}?`)) return;
    try {
      const r = await api('DELETE', path, { query: { ...query, discard_session: discard ? 'true' : undefined } });
      status.className = 'ok';
      if (discard) {
        // The session is gone: nothing left to show.
        status.textContent = 'Disconnected; the session was discarded.';
        body.replaceChildren(h('p', {}, h('a', { href: '#/clients', text: 'Back to the clients' })));
        return;
      }
      if (!current.persistent) {
        // Its session ended with its connection.
        status.textContent = r.disconnected === false ? 'The client was not connected.' : 'Disconnected; its session ended with the connection.';
        body.replaceChildren(h('p', {}, h('a', { href: '#/clients', text: 'Back to the clients' })));
        return;
      }
      status.textContent = r.disconnected === false ? 'The client was not connected.' : 'Disconnected; its session stays.';
      await show();
    } catch (e) {
      failed(e);
    }
  };
  let current = null;
  const show = async () => {
    let c;
    try {
      c = current = await api('GET', path, { query });
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        body.replaceChildren(h('p', { class: 'muted', text: 'No session for this client id (it has gone, or its session was discarded).' }));
        return;
      }
      throw e;
    }
    body.replaceChildren(
      h(
        'dl',
        { class: 'kv' },
        [
          ['State', c.connected ? 'connected' : 'offline'],
          ['Protocol', c.protocol],
          ['Username', c.username],
          ['Address', c.address],
          ['Listener', c.listener],
          ['Node', c.node],
          ['Session', c.persistent ? `persistent, expires ${c.session_expiry_interval} s after it disconnects` : 'ends when it disconnects'],
          ['Queued', `${num(c.queued)} messages, ${bytes(c.queued_bytes)}`],
          ['In flight', `${num(c.inflight)} sent, not yet acknowledged`],
          ['QoS 2 received', `${num(c.inbound_qos2)} not yet released`],
        ].flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: v === null || v === undefined ? '–' : v })]),
      ),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', class: 'danger', id: 'disconnect', onclick: () => act(false), disabled: !c.connected, text: 'Disconnect' }),
        h('button', { type: 'button', class: 'danger', id: 'discard', onclick: () => act(true), text: 'Disconnect and discard session' }),
      ),
      h('h2', { text: 'Subscriptions' }),
      table(
        [
          { label: 'Filter', wrap: true, get: (s) => s.filter },
          { label: 'QoS', num: true, get: (s) => s.qos },
          { label: 'No local', get: (s) => (s.no_local ? 'yes' : 'no') },
          { label: 'Retain as published', get: (s) => (s.retain_as_published ? 'yes' : 'no') },
          { label: 'Identifier', num: true, get: (s) => s.identifier },
        ],
        c.subscriptions,
        'No subscriptions.',
      ),
    );
  };
  await show();
};

pages.topics = async (main) => {
  const busiest = h('div', { id: 'busiest' });
  const form = h(
    'form',
    { class: 'inline' },
    h('label', {}, 'Topic filter covering them', h('input', { name: 'filter', placeholder: 'sensors/#' })),
    h('button', { type: 'submit', text: 'Search' }),
  );
  const subs = h('div', { id: 'subscriptions' });
  main.replaceChildren(h('h1', { text: 'Topics and subscriptions' }), h('h2', { text: 'Busiest topics, last 5 seconds' }), busiest, h('h2', { text: 'Subscriptions' }), form, subs);
  const loadSubs = async (after) => {
    const q = Object.fromEntries(new FormData(form));
    const page = await api('GET', '/subscriptions', { query: { ...q, ...tenantQuery(), after, limit: 100 } });
    const rows = table(
      [
        { label: 'Filter', wrap: true, get: (s) => s.filter },
        { label: 'Client', wrap: true, get: (s) => clientLink(s.client_id, state.scope === 'node' ? state.tenant : '') },
        { label: 'QoS', num: true, get: (s) => s.qos },
        { label: 'Identifier', num: true, narrow: true, get: (s) => s.identifier },
        { label: 'Node', narrow: true, get: (s) => s.node },
      ],
      page.items,
      'No subscription matches.',
    );
    if (after) subs.append(rows, pager(page.next, loadSubs) || '');
    else subs.replaceChildren(rows, pager(page.next, loadSubs) || '');
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    loadSubs().catch(failed);
  });
  await loadSubs();
  await every(HISTORY_MS, async () => {
    const top = await api('GET', '/topics', { query: { ...tenantQuery(), limit: 20 } });
    busiest.replaceChildren(
      table(
        [
          { label: 'Topic', wrap: true, get: (r) => r.topic },
          ...(state.scope === 'node' && !state.tenant ? [{ label: 'Tenant', get: (r) => (r.tenant === '' ? '(default)' : r.tenant) }] : []),
          { label: 'Messages/s', num: true, get: (r) => num(r.per_sec) },
          { label: '± up to', num: true, narrow: true, get: (r) => (r.error_per_sec ? num(r.error_per_sec) : '') },
        ],
        top.items,
        'Nothing published in the last 5 seconds.',
      ),
      top.sampled_one_in > 1 ? h('p', { class: 'muted', text: `Estimated from one publication in ${top.sampled_one_in}.` }) : '',
    );
  });
};

pages.retained = async (main) => {
  const form = h(
    'form',
    { class: 'inline' },
    h('label', {}, 'Topic filter', h('input', { name: 'filter', placeholder: 'status/#' })),
    h('button', { type: 'submit', text: 'Search' }),
  );
  const list = h('div', { id: 'retained-list' });
  main.replaceChildren(h('h1', { text: 'Retained messages' }), form, list);
  const remove = async (topic) => {
    if (!window.confirm(`Delete the retained message of ${topic}?`)) return;
    try {
      await api('DELETE', '/retained/' + encodeURIComponent(topic), { query: tenantQuery() });
      banner(`Deleted the retained message of ${topic}.`, 'info');
      await load();
    } catch (e) {
      failed(e);
    }
  };
  const load = async (after) => {
    const q = Object.fromEntries(new FormData(form));
    const page = await api('GET', '/retained', { query: { ...q, ...tenantQuery(), after, limit: 100 } });
    const rows = table(
      [
        { label: 'Topic', wrap: true, get: (m) => m.topic },
        { label: 'QoS', num: true, get: (m) => m.qos },
        { label: 'Size', num: true, get: (m) => bytes(m.bytes) },
        { label: 'Payload', wrap: true, get: (m) => (m.payload !== undefined ? m.payload.slice(0, 200) : h('span', { class: 'muted', text: `binary, base64 ${m.payload_base64.slice(0, 60)}` })) },
        { label: '', get: (m) => h('button', { type: 'button', class: 'danger', 'data-delete': m.topic, onclick: () => remove(m.topic), text: 'Delete' }) },
      ],
      page.items,
      'No retained message matches.',
    );
    if (after) list.append(rows, pager(page.next, load) || '');
    else list.replaceChildren(rows, pager(page.next, load) || '');
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    load().catch(failed);
  });
  await load();
};

pages.publish = async (main) => {
  const result = h('p', { id: 'publish-result', class: 'muted' });
  const form = h(
    'form',
    { class: 'stack', id: 'publish-form' },
    h('label', {}, 'Topic', h('input', { name: 'topic', required: true, placeholder: 'test/hello' })),
    h('label', {}, 'Payload (UTF-8)', h('textarea', { name: 'payload' })),
    h('label', {}, 'QoS', h('select', { name: 'qos' }, h('option', { value: '0', text: '0: at most once' }), h('option', { value: '1', text: '1: at least once' }), h('option', { value: '2', text: '2: exactly once' }))),
    h('label', {}, 'Content type (MQTT 5 subscribers see it)', h('input', { name: 'content_type', placeholder: 'application/json' })),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'retain' }), 'Retain'),
    h('div', {}, h('button', { type: 'submit', text: 'Publish' })),
    result,
  );
  main.replaceChildren(h('h1', { text: 'Publish a test message' }), form);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { topic: f.get('topic'), payload: f.get('payload'), qos: Number(f.get('qos')), retain: f.get('retain') === 'on' };
    if (f.get('content_type')) body.properties = { content_type: f.get('content_type') };
    try {
      const r = await api('POST', '/publish', { query: tenantQuery(), body });
      result.className = 'ok';
      result.textContent = `Published to ${r.topic} at QoS ${r.qos}${r.retain ? ', retained' : ''}: ${r.matched} subscriber${r.matched === 1 ? '' : 's'} matched.`;
    } catch (err) {
      result.className = 'error';
      result.textContent = err.message;
    }
  });
};

pages.tenants = async (main) => {
  const list = h('div', { id: 'tenant-list' });
  main.replaceChildren(h('h1', { text: 'Tenants' }), list);
  await every(POLL_MS * 2.5, async () => {
    // A tenant's key may look at its own tenant only.
    const page =
      state.scope === 'tenant'
        ? { items: [await api('GET', '/tenants/' + encodeURIComponent(state.tenantName))] }
        : await api('GET', '/tenants', { query: { limit: 1000 } });
    const use = (u, l, fmt = num) => `${fmt(u)} of ${limit(l, fmt)}`;
    list.replaceChildren(
      table(
        [
          { label: 'Tenant', get: (t) => (t.name === '' ? '(default)' : t.name) },
          { label: 'Settings', narrow: true, get: (t) => t.source },
          { label: 'Connections', get: (t) => use(t.usage.connections, t.limits.max_connections) },
          { label: 'Sessions', narrow: true, get: (t) => use(t.usage.sessions, t.limits.max_sessions) },
          { label: 'Subscriptions', narrow: true, get: (t) => use(t.usage.subscriptions, t.limits.max_subscriptions) },
          { label: 'Retained', narrow: true, get: (t) => use(t.usage.retained, t.limits.max_retained_messages) },
          { label: 'Stored', get: (t) => use(t.usage.store_bytes, t.limits.max_store_bytes, bytes) },
          { label: 'In/s', num: true, get: (t) => `${num(t.usage.rates.published_per_sec)} of ${limit(t.limits.messages_per_sec)}` },
          { label: 'Breaches', num: true, get: (t) => num(Object.values(t.usage.quota_breaches).reduce((a, b) => a + b, 0)) },
        ],
        page.items,
        'No tenants yet: every client is in the default tenant.',
      ),
    );
  });
};

pages.cluster = async (main) => {
  const view = h('div', { id: 'cluster-view' });
  main.replaceChildren(h('h1', { text: 'Cluster' }), view);
  if (state.scope === 'tenant') {
    view.replaceChildren(h('p', { class: 'muted', text: 'The cluster view needs a node-wide API key.' }));
    return;
  }
  await every(POLL_MS, async () => {
    const c = await api('GET', '/cluster');
    if (!c.clustered) {
      view.replaceChildren(h('p', { class: 'muted' }, 'This node runs on its own (no ', h('code', { text: 'cluster.nats' }), ').'));
      return;
    }
    view.replaceChildren(
      h('p', {}, `This node: ${c.node} · NATS `, h('span', { class: 'pill ' + (c.nats_connected ? 'on' : 'off'), text: c.nats_connected ? 'connected' : 'disconnected' })),
      table(
        [
          { label: 'Node', get: (n) => (n.this_node ? `${n.node} (this one)` : n.node) },
          { label: 'State', get: (n) => n.state + (n.draining ? ', draining' : '') },
          { label: 'Connections', num: true, get: (n) => num(n.connections) },
          { label: 'Sessions', num: true, get: (n) => num(n.sessions) },
          { label: 'Sent', num: true, narrow: true, get: (n) => num(n.sent) },
          { label: 'Received', num: true, narrow: true, get: (n) => num(n.received) },
          { label: 'Last heard', num: true, get: (n) => (n.this_node ? 'now' : `${(n.last_seen_ms / 1000).toFixed(1)} s ago`) },
        ],
        c.nodes,
      ),
    );
  });
};

// ---------------------------------------------------------------------------------------
// Navigation

async function route() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  state.page++;
  banner(null);
  const hash = location.hash.replace(/^#\/?/, '');
  const [name, qs] = hash.split('?');
  const page = name || 'overview';
  const render = pages[page] || pages.overview;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page || (page === 'client' && a.dataset.page === 'clients'));
  const main = document.getElementById('main');
  try {
    if (!state.scope) await learnScope();
    await render(main, new URLSearchParams(qs || ''));
  } catch (e) {
    failed(e);
  }
}

function start() {
  document.getElementById('signin-form').addEventListener('submit', () => {
    state.key = document.getElementById('key').value.trim();
    sessionStorage.setItem('herald.key', state.key);
    state.scope = null;
    route();
  });
  document.getElementById('signout').addEventListener('click', () => {
    sessionStorage.removeItem('herald.key');
    state.key = '';
    state.scope = null;
    route();
  });
  document.getElementById('tenant').addEventListener('change', (e) => {
    state.tenant = e.target.value;
    sessionStorage.setItem('herald.tenant', state.tenant);
    route();
  });
  window.addEventListener('hashchange', route);
  route();
}

start();
