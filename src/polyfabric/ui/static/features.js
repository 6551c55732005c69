// Pages for features other parts of the coordinator serve (topology, usage, policies,
// configuration, secrets, schedules). Each reads one endpoint; a coordinator without it answers
// 404 "no such endpoint", and the page says the feature is not available here.
import { ApiError, get, serves } from './api.js';
import { badge, bytes, clear, h, render, svg, table } from './dom.js';

const PAGES = {
  topology: ['Topology', '/v1/topology', 'Regions, zones and racks with their nodes, and the latency between them.'],
  usage: ['Usage', '/v1/usage', 'What each domain contributed and consumed.'],
  policies: ['Policies', '/v1/policies', 'The policies in force.'],
  config: ['Configuration', '/v1/config', 'The coordinator\'s configuration.'],
  secrets: ['Secrets', '/v1/secrets', 'Secret names only: values never leave the coordinator.'],
  schedules: ['Schedules', '/v1/schedules', 'Workflows that run on a schedule.'],
};

export async function featurePage(main, [name]) {
  const [title, path, about] = PAGES[name];
  const body = h('div', { class: 'feature', id: `feature-${name}` });
  clear(main, h('h1', {}, title), h('p', { class: 'muted' }, about), body);
  let data;
  try {
    if (!(await serves('GET', path))) throw new ApiError(404, 'not_found', `no such endpoint: GET ${path}`);
    data = await get(path);
  } catch (exc) {
    if (exc.missingEndpoint) {
      clear(body, h('p', { class: 'unavailable', 'data-unavailable': 'true' },
        `${title} is not available on this coordinator.`));
    } else {
      clear(body, h('p', { class: 'error', role: 'alert' }, exc.message));
    }
    return null;
  }
  if (name === 'secrets') data = secretNames(data);
  if (name === 'topology' && data && data.children) {
    clear(body, topologyTree(data), latency(data));
  } else if (name === 'usage' && data && Array.isArray(data.domains)) {
    clear(body, usageChart(data), usageTable(data));
  } else {
    clear(body, render(data));
  }
  return null;
}

function resources(r) {
  if (!r) return '—';
  return `${(r.cpu_millis / 1000).toFixed(1)} cpu · ${bytes(r.memory_bytes)} · ${r.gpus} gpu · ${r.slots} slots`;
}

function states(counts) {
  return Object.entries(counts || {}).map(([s, n]) => h('span', { class: `count s-${s}` }, `${s} ${n}`));
}

// region → zone → rack → nodes; a level's children are built only when it is opened.
function topologyTree(tree) {
  const level = (item, depth) => {
    const summary = h('summary', {}, h('strong', {}, `${item.level ? `${item.name}` : item.name}`),
      ` · ${item.nodes} nodes · `, states(item.states));
    const inner = h('div', { class: 'topo-inner' });
    const details = h('details', { class: 'topo', open: depth < 3 }, summary, inner);
    const fill = () => {
      if (inner.childElementCount) return;
      inner.append(h('p', { class: 'muted' }, `capacity ${resources(item.capacity)}; free ${resources(item.free)}`));
      if (item.children) {
        inner.append(h('p', { class: 'muted' }, `by ${item.level}:`),
          h('ul', { class: 'plain' }, item.children.map((c) => h('li', {}, level(c, depth + 1)))));
      } else if (item.members) {
        inner.append(h('ul', { class: 'plain members' }, item.members.map((m) => h('li', {},
          h('a', { href: `#/nodes/${encodeURIComponent(m.id)}` }, m.name), ' ', badge(m.state)))));
      }
    };
    details.addEventListener('toggle', () => { if (details.open) fill(); });
    if (depth < 3) fill();
    return details;
  };
  const coords = tree.coordinates;
  return h('div', {}, coords ? h('p', {}, `${coords.nodes} nodes have measured network coordinates.`) : null,
    level(tree, 0));
}

const ms = (v) => (typeof v === 'number' ? `${(v * 1000).toFixed(1)} ms` : '—');

// The latency between regions, zones or racks: the median round trip the network coordinates
// estimate between sampled nodes of each pair of groups (GET /v1/topology/latency; the server
// bounds the work), and on demand each node's round trip to the coordinator.
function latency(tree) {
  const out = h('section', { 'aria-labelledby': 'h-rtt' }, h('h2', { id: 'h-rtt' }, 'Latency'));
  const levels = tree.children ? ['region', 'zone', 'rack'] : [];
  const level = h('select', { id: 'latency-level', name: 'level' },
    levels.map((l) => h('option', { value: l, selected: l === 'zone' }, `${l}s`)));
  const matrix = h('div', { id: 'latency-matrix' }, h('p', { class: 'muted' }, 'Loading…'));
  let reads = 0;
  async function load() {
    const mine = ++reads;
    let data;
    try {
      if (!(await serves('GET', '/v1/topology/latency'))) {
        clear(matrix, h('p', { class: 'muted' }, 'Latency between groups is not available on this coordinator.'));
        return;
      }
      data = await get('/v1/topology/latency', { level: level.value });
    } catch (exc) {
      if (mine === reads) clear(matrix, h('p', { class: 'error' }, exc.message));
      return;
    }
    if (mine === reads) clear(matrix, latencyMatrix(data));
  }
  level.addEventListener('change', load);
  const rtt = h('div', {});
  const button = h('button', { type: 'button', onclick: async () => {
    button.disabled = true;
    try {
      const rows = await get('/v1/topology/coordinates');
      const shown = rows.slice(0, 500);
      rtt.append(table(`Round trips to the coordinator${rows.length > shown.length ? ` (first ${shown.length} of ${rows.length})` : ''}`,
        ['Node', 'Region', 'Zone', 'Rack', 'Measured', 'Estimated'], shown.map((r) => h('tr', {},
          h('th', { scope: 'row' }, h('a', { href: `#/nodes/${encodeURIComponent(r.node_id)}` }, r.name)),
          h('td', {}, r.labels?.region ?? '—'), h('td', {}, r.labels?.zone ?? '—'), h('td', {}, r.labels?.rack ?? '—'),
          h('td', { class: 'num' }, ms(r.rtt_to_coordinator_s)), h('td', { class: 'num' }, ms(r.estimated_rtt_to_coordinator_s))))));
    } catch (exc) {
      rtt.append(h('p', { class: 'error' }, exc.message));
    }
  } }, 'Show round trips');
  out.append(
    h('div', { class: 'filters' }, h('div', {}, h('label', { for: 'latency-level' }, 'Between'), level)),
    matrix,
    h('h3', {}, 'Each node to the coordinator'), button, rtt);
  load();
  return out;
}

function latencyMatrix(data) {
  const groups = data.groups || [];
  if (!groups.length) return h('p', { class: 'muted' }, 'No node has reported network coordinates yet.');
  const of = `${data.level}s`;
  const left = data.groups_left_out ? `; ${data.groups_left_out} smaller ${of} left out` : '';
  const caption = `Median estimated round trip between ${of} (ms), from up to ${data.sample} nodes of each${left}`;
  const rows = groups.map((g, i) => h('tr', {},
    h('th', { scope: 'row', title: `${g.nodes} nodes with coordinates, ${g.sampled} sampled` }, g.name),
    data.matrix[i].map((cell, j) => h('td', {
      class: i === j ? 'self' : null, 'data-from': g.name, 'data-to': groups[j].name,
      'data-ms': cell ? cell.median_ms : null,
      title: cell ? `${g.name} ↔ ${groups[j].name}: median of ${cell.pairs} pairs, ${cell.min_ms.toFixed(1)}–${cell.max_ms.toFixed(1)} ms`
        : (i === j ? 'one node: no pair to measure' : 'no pair to measure'),
    }, cell ? cell.median_ms.toFixed(1) : '—'))));
  const out = table(caption, [data.level, ...groups.map((g) => g.name)], rows);
  out.querySelector('table').classList.add('matrix');
  return out;
}

function usageTable(data) {
  const f = (v) => (typeof v === 'number' ? v.toFixed(1) : '—');
  return table(`Usage per domain${data.since ? ` since ${new Date(data.since * 1000).toISOString()}` : ''}`,
    ['Domain', 'Contributed CPU s', 'Consumed CPU s', 'Balance CPU s', 'Contributed GPU s', 'Consumed GPU s',
      'Attempts run / used'],
    data.domains.map((r) => h('tr', {}, h('th', { scope: 'row' }, r.domain),
      h('td', { class: 'num' }, f(r.contributed?.cpu_s)), h('td', { class: 'num' }, f(r.consumed?.cpu_s)),
      h('td', { class: 'num' }, f(r.balance_cpu_s)), h('td', { class: 'num' }, f(r.contributed?.gpu_s)),
      h('td', { class: 'num' }, f(r.consumed?.gpu_s)),
      h('td', { class: 'num' }, `${r.contributed?.attempts ?? 0} / ${r.consumed?.attempts ?? 0}`))));
}

// Only names, whatever else the endpoint sends.
function secretNames(data) {
  const list = Array.isArray(data) ? data : (data && (data.secrets || data.items)) || [];
  return list.map((s) => (typeof s === 'string' ? { name: s } : { name: s.name, domain: s.domain, updated_at: s.updated_at }));
}

// Contributed versus consumed per domain as horizontal bars, when the answer has such numbers.
function usageChart(data) {
  const rows = Array.isArray(data) ? data : (data && (data.domains || data.items)) || [];
  const num = (v) => Number(v && typeof v === 'object' ? v.cpu_s : v ?? 0);
  const pairs = rows.filter((r) => r && typeof r === 'object').map((r) => ({
    domain: String(r.domain ?? r.name ?? '?'), contributed: num(r.contributed), consumed: num(r.consumed),
  })).filter((r) => Number.isFinite(r.contributed) && Number.isFinite(r.consumed));
  if (!pairs.length) return null;
  const max = Math.max(...pairs.flatMap((r) => [r.contributed, r.consumed])) || 1;
  const width = 480;
  const rowH = 34;
  const f = (v) => `${v.toFixed(v < 1 ? 3 : 1)} s`;  // CPU-seconds
  const chart = svg('svg', { class: 'usage', viewBox: `0 0 ${width + 220} ${pairs.length * rowH + 10}`, role: 'img',
    'aria-label': pairs.map((r) => `${r.domain}: contributed ${f(r.contributed)}, consumed ${f(r.consumed)} of CPU`).join('; ') });
  pairs.forEach((r, i) => {
    const y = 5 + i * rowH;
    const wc = (width * r.contributed) / max;
    const wu = (width * r.consumed) / max;
    chart.append(svg('g', { 'data-domain': r.domain, 'data-contributed': r.contributed, 'data-consumed': r.consumed },
      svg('text', { x: 0, y: y + 18, class: 'name' }, r.domain),
      svg('rect', { class: 'contributed', x: 130, y, height: 12, width: wc }),
      svg('text', { x: 136 + wc, y: y + 10, class: 'figure contributed-figure' }, f(r.contributed)),
      svg('rect', { class: 'consumed', x: 130, y: y + 14, height: 12, width: wu }),
      svg('text', { x: 136 + wu, y: y + 24, class: 'figure consumed-figure' }, f(r.consumed))));
  });
  return h('figure', {}, chart, h('figcaption', {}, 'CPU-seconds contributed (upper, green) and consumed (lower, blue) per domain'));
}
