// Nodes: the paged, server-filtered table, and one node's page with its lifecycle actions.
import { ApiError, get, post, serves } from './api.js';
import { age, announce, badge, bytes, clear, h, keepFocus, render, svg, table, when } from './dom.js';

const STATES = ['', 'pending', 'active', 'cordoned', 'suspended', 'draining', 'retired', 'down', 'quarantined'];
const PAGE = 50;
// The table's sparklines: one read for the page's nodes, again at most every RECENT_MS.
const RECENT = '/v1/telemetry/recent';
const RECENT_MS = 15000;
// Kept while the tab lives, so that coming back to the list keeps its filters.
const filters = { state: '', domain: '', label: '' };

function conditionList(node) {
  const on = (node.conditions || []).filter((c) => c.status === true || c.status === 'True');
  if (!on.length) return h('span', { class: 'muted' }, '—');
  return on.map((c) => h('span', { class: `cond c-${c.type}`, title: c.reason || '' }, c.type));
}

function capacity(node) {
  const c = node.capacity || {};
  const cpu = c.cpu_millis !== undefined ? `${(c.cpu_millis / 1000).toFixed(1)} cpu` : '';
  return [cpu, c.memory_bytes !== undefined ? bytes(c.memory_bytes) : '', c.slots !== undefined ? `${c.slots} slots` : '']
    .filter(Boolean).join(' · ');
}

function use(node) {
  const t = node.telemetry || {};
  const parts = [];
  if (typeof t.cpu_percent === 'number') parts.push(meter('CPU', t.cpu_percent));
  if (typeof t.memory_percent === 'number') parts.push(meter('Memory', t.memory_percent));
  return parts.length ? h('span', { class: 'meters' }, parts) : h('span', { class: 'muted' }, '—');
}

function meter(label, percent) {
  const value = Math.max(0, Math.min(100, percent));
  return h('span', { class: 'meter-wrap' }, h('span', { class: 'visually-hidden' }, `${label} `),
    h('meter', { min: 0, max: 100, low: 70, high: 90, optimum: 20, value, title: `${label} ${value.toFixed(0)}%` }),
    h('span', { class: 'meter-text', 'aria-hidden': 'true' }, `${label[0]} ${value.toFixed(0)}%`));
}

function labels(node) {
  const entries = Object.entries(node.labels || {});
  return entries.length ? entries.map(([k, v]) => h('code', { class: 'label' }, `${k}=${v}`)) : '—';
}

export async function nodesPage(main) {
  const cursors = [null];
  const results = h('div', { class: 'results' });
  const state = h('select', { id: 'f-state', name: 'state' },
    STATES.map((s) => h('option', { value: s, selected: s === filters.state }, s || 'any')));
  const domain = h('input', { id: 'f-domain', name: 'domain', value: filters.domain, placeholder: 'any' });
  const label = h('input', { id: 'f-label', name: 'label', value: filters.label, placeholder: 'key=value' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter nodes' },
    h('div', {}, h('label', { for: 'f-state' }, 'State'), state),
    h('div', {}, h('label', { for: 'f-domain' }, 'Domain'), domain),
    h('div', {}, h('label', { for: 'f-label' }, 'Label'), label),
    h('button', { type: 'submit' }, 'Filter'));

  // The last sparkline read (for which page of nodes, when, what it answered) and the rows shown.
  let recent = { key: '', at: 0, data: null };
  let shown = { key: '', nodes: [], cells: [] };

  async function sparks(nodes, cells) {
    const key = nodes.map((n) => n.id).join(',');
    shown = { key, nodes, cells };
    const draw = (data) => {
      if (shown.key === key) shown.nodes.forEach((n, i) => clear(shown.cells[i], recentUse(data, n.id)));
    };
    if (recent.key === key && recent.data) draw(recent.data);  // what is known now, then fresher
    if (!nodes.length || (recent.key === key && Date.now() - recent.at < RECENT_MS)) return;
    if (!(await serves('GET', RECENT))) { cells.forEach((c) => clear(c, '—')); return; }
    recent = { key, at: Date.now(), data: recent.key === key ? recent.data : null };
    let data;
    try {
      data = await get(RECENT, { node: nodes.map((n) => n.id), since: '15m' });
    } catch (exc) {
      if (shown.key === key && !recent.data) shown.cells.forEach((c) => clear(c, h('span', { class: 'muted', title: exc.message }, '—')));
      return;
    }
    if (recent.key !== key) return;  // another page's read started meanwhile
    recent.data = data;
    draw(data);
  }

  let reads = 0;
  async function load(quiet = false) {
    const after = cursors[cursors.length - 1];
    const query = { state: filters.state, domain: filters.domain, label: filters.label, after, limit: PAGE };
    let nodes;
    const mine = ++reads;
    try {
      nodes = await get('/v1/nodes', query);
      if (mine !== reads) return;  // a later read (a filter, another page) draws instead
    } catch (exc) {
      clear(results, h('p', { class: 'error', role: 'alert' }, exc.message));
      return;
    }
    const cells = nodes.map(() => h('td', { class: 'recent' }));
    const rows = nodes.map((n, i) => h('tr', { 'data-node': n.name, 'data-state': n.state },
      h('th', { scope: 'row' }, h('a', { href: `#/nodes/${encodeURIComponent(n.id)}` }, n.name)),
      h('td', {}, badge(n.state)),
      h('td', {}, conditionList(n)),
      h('td', { class: 'num' }, age(n.heartbeat_age_s)),
      h('td', {}, n.domain),
      h('td', {}, labels(n)),
      h('td', {}, capacity(n)),
      h('td', {}, use(n)),
      cells[i]));
    const page = cursors.length;
    const restore = keepFocus(results);
    const prev = h('button', { type: 'button', disabled: page === 1, onclick: () => { cursors.pop(); load(); } },
      'Previous');
    const next = h('button', { type: 'button', disabled: nodes.length < PAGE,
      onclick: () => { cursors.push(nodes[nodes.length - 1].name); load(); } }, 'Next');
    clear(results,
      nodes.length ? table(`Nodes, page ${page}`, ['Name', 'State', 'Conditions', 'Heartbeat', 'Domain', 'Labels',
        'Capacity', 'Use', 'Recent CPU · memory'], rows) : h('p', {}, 'No nodes match.'),
      h('nav', { class: 'pager', 'aria-label': 'Pages' }, prev, h('span', {}, `page ${page}`), next));
    restore();
    if (!quiet) announce(`${nodes.length} nodes on page ${page}`);
    sparks(nodes, cells);
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    Object.assign(filters, { state: state.value, domain: domain.value.trim(), label: label.value.trim() });
    cursors.splice(1);
    load();
  });
  clear(main, h('h1', {}, 'Nodes'), form, results);
  await load();
  const timer = setInterval(() => { if (!document.hidden) load(true); }, 5000);
  return () => clearInterval(timer);
}

const ACTIONS = [
  ['cordon', 'Cordon', ['active']],
  ['uncordon', 'Uncordon', ['cordoned']],
  ['drain', 'Drain', ['active', 'cordoned']],
  ['suspend', 'Suspend', ['active', 'cordoned']],
  ['resume', 'Resume', ['suspended', 'quarantined', 'draining']],
];

export async function nodePage(main, [ref], session) {
  const node = await get(`/v1/nodes/${encodeURIComponent(ref)}`);
  const actions = h('div', { class: 'actions' });
  const message = h('p', { class: 'message', role: 'status' });
  const stateCell = h('dd', { id: 'node-state' });
  const reason = h('input', { id: 'action-reason', name: 'reason', maxlength: 500, placeholder: 'optional' });

  function show(n) {
    clear(stateCell, badge(n.state));
    stateCell.dataset.state = n.state;
    clear(actions);
    if (!session.may('operator')) return;
    actions.append(h('label', { for: 'action-reason' }, 'Reason'), reason);
    for (const [verb, text, from] of ACTIONS) {
      if (!from.includes(n.state)) continue;
      actions.append(h('button', { type: 'button', 'data-action': verb, onclick: () => act(verb) }, text));
    }
  }

  async function act(verb) {
    try {
      const updated = await post(`/v1/nodes/${encodeURIComponent(node.id)}/${verb}`, { reason: reason.value });
      message.textContent = `${verb}: the node is now ${updated.state}`;
      show(updated);
      loadAudit();
    } catch (exc) {
      message.textContent = exc instanceof ApiError ? `${verb} refused (${exc.status}): ${exc.message}` : String(exc);
    }
  }

  const history = h('section', { 'aria-labelledby': 'h-history' }, h('h2', { id: 'h-history' }, 'History'));
  const trail = h('section', { 'aria-labelledby': 'h-audit' }, h('h2', { id: 'h-audit' }, 'Audit trail'));
  const metrics = h('section', { 'aria-labelledby': 'h-metrics' }, h('h2', { id: 'h-metrics' }, 'CPU and memory'));
  const running = h('section', { 'aria-labelledby': 'h-running', id: 'node-tasks' },
    h('h2', { id: 'h-running' }, 'Tasks on this node'));

  async function loadTasks() {
    try {
      const held = await get(`/v1/nodes/${encodeURIComponent(node.id)}/tasks`);
      clear(running, h('h2', { id: 'h-running' }, 'Tasks on this node'), held.length
        ? table('Attempts this node holds now', ['Task', 'Workflow', 'Attempt', 'Status'], held.map((a) => h('tr', {},
          h('th', { scope: 'row' }, a.key), h('td', {}, h('a', { href: `#/jobs/${a.job_id}` }, a.job_id)),
          h('td', { class: 'num' }, a.attempt), h('td', {}, badge(a.status)))))
        : h('p', { class: 'muted' }, 'No tasks running here now.'));
    } catch (exc) {
      clear(running, h('h2', { id: 'h-running' }, 'Tasks on this node'), h('p', { class: 'error' }, exc.message));
    }
  }

  async function loadAudit() {
    try {
      const records = await get('/v1/audit', { subject: `node:${node.id}`, limit: 200 });
      const transitions = records.filter((r) => r.action === 'node.transition');
      clear(history, h('h2', { id: 'h-history' }, 'History'), transitions.length
        ? table('State changes', ['When', 'From', 'To', 'Cause', 'By'], transitions.map((r) => h('tr', {},
          h('td', {}, when(r.at)), h('td', {}, r.details.from ?? '—'), h('td', {}, r.details.to ?? '—'),
          h('td', {}, r.cause || r.details.reason || '—'), h('td', {}, r.actor))))
        : h('p', { class: 'muted' }, 'No state changes recorded.'));
      clear(trail, h('h2', { id: 'h-audit' }, 'Audit trail'), table('Audit records about this node',
        ['Seq', 'When', 'Action', 'Actor', 'Cause'], records.map((r) => h('tr', {},
          h('td', { class: 'num' }, r.seq), h('td', {}, when(r.at)), h('td', {}, r.action), h('td', {}, r.actor),
          h('td', {}, r.cause || '—')))));
    } catch (exc) {
      clear(trail, h('h2', { id: 'h-audit' }, 'Audit trail'), h('p', { class: 'error' }, exc.message));
    }
  }

  async function loadMetrics() {
    const path = `/v1/nodes/${encodeURIComponent(node.id)}/metrics`;
    if (!(await serves('GET', path))) {
      metrics.append(h('p', { class: 'muted' }, 'Telemetry history is not available on this coordinator.'));
      return;
    }
    try {
      const data = await get(path);
      const samples = Array.isArray(data) ? data : (data.samples || data.history || data.points || []);
      const charts = ['cpu_percent', 'memory_percent'].map((key) => sparkline(key, samples.map((s) => s[key])
        .filter((v) => typeof v === 'number')));
      metrics.append(...charts.filter(Boolean));
      if (!charts.some(Boolean)) metrics.append(render(data));
    } catch (exc) {
      metrics.append(h('p', { class: 'muted' }, exc.missingEndpoint
        ? 'Telemetry history is not available on this coordinator.' : exc.message));
    }
  }

  const t = node.telemetry || {};
  clear(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/nodes' }, 'Nodes'), ' / ', node.name),
    h('h1', {}, `Node ${node.name}`),
    h('dl', { class: 'kv' },
      h('dt', {}, 'State'), stateCell,
      h('dt', {}, 'Id'), h('dd', {}, h('code', {}, node.id)),
      h('dt', {}, 'Domain'), h('dd', {}, node.domain),
      h('dt', {}, 'Heartbeat'), h('dd', {}, `${age(node.heartbeat_age_s)} ago`),
      h('dt', {}, 'Conditions'), h('dd', {}, conditionList(node)),
      h('dt', {}, 'Labels'), h('dd', {}, labels(node)),
      h('dt', {}, 'Topology'), h('dd', {}, render(node.topology)),
      h('dt', {}, 'Capacity'), h('dd', {}, capacity(node)),
      h('dt', {}, 'Use'), h('dd', {}, use(node), typeof t.disk_percent === 'number' ? ` disk ${t.disk_percent.toFixed(0)}%` : ''),
      h('dt', {}, 'Agent'), h('dd', {}, node.agent_version || '—'),
      h('dt', {}, 'Configuration'), h('dd', {}, node.facts && node.facts.config_version ? String(node.facts.config_version) : '—'),
      h('dt', {}, 'Registered'), h('dd', {}, when(node.registered_at))),
    actions, message, running, metrics, history, trail);
  show(node);
  await Promise.all([loadTasks(), loadAudit(), loadMetrics()]);
  return null;
}

function sparkline(name, values) {
  if (values.length < 2) return null;
  const w = 240;
  const ht = 40;
  const max = Math.max(100, ...values);
  const points = values.map((v, i) => `${(i / (values.length - 1)) * w},${ht - (v / max) * ht}`).join(' ');
  const el = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  el.setAttribute('viewBox', `0 0 ${w} ${ht}`);
  el.setAttribute('class', 'spark');
  el.setAttribute('role', 'img');
  el.setAttribute('aria-label', `${name}: last ${values[values.length - 1].toFixed(0)}%, max ${Math.max(...values).toFixed(0)}%`);
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', points);
  el.append(line);
  return h('figure', {}, el, h('figcaption', {}, name.replace('_', ' ')));
}

// One node's CPU and memory in the table: two small lines over the read's span (no axes; the
// label says the latest and the peak).
function recentUse(data, id) {
  const rows = data && data.nodes ? data.nodes[id] : null;
  const fields = (data && data.fields) || ['at', 'cpu_percent', 'memory_percent'];
  if (!rows || rows.length < 2) return h('span', { class: 'muted', title: 'no telemetry history yet' }, '—');
  const minutes = Math.max(1, Math.round((Date.now() / 1000 - data.since) / 60));
  return [['CPU', 'cpu', 'cpu_percent'], ['Memory', 'memory', 'memory_percent']].map(([label, metric, field]) => {
    const column = fields.indexOf(field);
    const values = rows.map((r) => r[column]).filter((v) => typeof v === 'number');
    return miniSpark(`${label}, last ${minutes} min`, metric, values);
  });
}

function miniSpark(name, metric, values) {
  if (values.length < 2) return h('span', { class: 'mini muted' }, '—');
  const w = 72;
  const ht = 16;
  const points = values.map((v, i) => `${((i / (values.length - 1)) * w).toFixed(1)},`
    + `${(ht - 1 - (Math.max(0, Math.min(100, v)) / 100) * (ht - 2)).toFixed(1)}`).join(' ');
  const last = values[values.length - 1];
  return h('span', { class: 'mini' },
    svg('svg', { class: `spark small m-${metric}`, viewBox: `0 0 ${w} ${ht}`, role: 'img', 'data-metric': metric,
      'data-points': values.length, 'aria-label': `${name}: now ${last.toFixed(0)}%, peak ${Math.max(...values).toFixed(0)}%` },
    svg('title', {}, `${name}: now ${last.toFixed(0)}%, peak ${Math.max(...values).toFixed(0)}%`),
    svg('polyline', { points })),
    h('span', { class: 'meter-text', 'aria-hidden': 'true' }, `${metric === 'cpu' ? 'C' : 'M'} ${last.toFixed(0)}%`));
}
