// Pages for features other parts of the coordinator serve (topology, usage, policies,
// configuration, secrets, schedules). Each reads one endpoint; a coordinator without it answers
// 404 "no such endpoint", and the page says the feature is not available here.
import { ApiError, get, serves } from './api.js';
import { clear, h, render, svg } from './dom.js';

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
  clear(body, name === 'usage' ? usageChart(data) : null, render(data));
  return null;
}

// Only names, whatever else the endpoint sends.
function secretNames(data) {
  const list = Array.isArray(data) ? data : (data && (data.secrets || data.items)) || [];
  return list.map((s) => (typeof s === 'string' ? { name: s } : { name: s.name, domain: s.domain, updated_at: s.updated_at }));
}

// Contributed versus consumed per domain as horizontal bars, when the answer has such numbers.
function usageChart(data) {
  const rows = Array.isArray(data) ? data : (data && (data.domains || data.items)) || [];
  const pairs = rows.filter((r) => r && typeof r === 'object').map((r) => ({
    domain: String(r.domain ?? r.name ?? '?'),
    contributed: Number(r.contributed ?? r.contributed_slot_seconds ?? r.provided ?? 0),
    consumed: Number(r.consumed ?? r.consumed_slot_seconds ?? r.used ?? 0),
  })).filter((r) => Number.isFinite(r.contributed) && Number.isFinite(r.consumed));
  if (!pairs.length) return null;
  const max = Math.max(1, ...pairs.flatMap((r) => [r.contributed, r.consumed]));
  const width = 480;
  const rowH = 34;
  const chart = svg('svg', { class: 'usage', viewBox: `0 0 ${width + 140} ${pairs.length * rowH + 10}`, role: 'img',
    'aria-label': pairs.map((r) => `${r.domain}: contributed ${r.contributed}, consumed ${r.consumed}`).join('; ') });
  pairs.forEach((r, i) => {
    const y = 5 + i * rowH;
    chart.append(svg('text', { x: 0, y: y + 18, class: 'name' }, r.domain),
      svg('rect', { class: 'contributed', x: 130, y, height: 12, width: (width * r.contributed) / max }),
      svg('rect', { class: 'consumed', x: 130, y: y + 14, height: 12, width: (width * r.consumed) / max }));
  });
  return h('figure', {}, chart, h('figcaption', {}, 'Contributed (upper bar) and consumed (lower bar) per domain'));
}
