// A workflow's DAG as SVG: steps in layers by longest path from the roots, ordered in each layer
// by their parents' positions (one barycentre pass), edges as curves. A foreach step is one box
// with its items counted by status; choosing a box lists its items.
import { svg } from './dom.js';

const W = 176;
const H = 58;
const GAP_X = 56;
const GAP_Y = 18;

export function layout(steps) {
  const byName = new Map(steps.map((s) => [s.name, s]));
  const layer = new Map();
  const visiting = new Set();
  const depth = (name) => {
    if (layer.has(name)) return layer.get(name);
    if (visiting.has(name)) return 0;
    visiting.add(name);
    const deps = (byName.get(name)?.depends_on || []).filter((d) => byName.has(d));
    const value = deps.length ? 1 + Math.max(...deps.map(depth)) : 0;
    layer.set(name, value);
    return value;
  };
  steps.forEach((s) => depth(s.name));
  const layers = [];
  for (const s of steps) (layers[layer.get(s.name)] ||= []).push(s);
  const row = new Map();
  layers.forEach((items, i) => {
    if (i > 0) {
      const centre = (s) => {
        const ps = s.depends_on.filter((d) => row.has(d)).map((d) => row.get(d));
        return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : 0;
      };
      items.sort((a, b) => centre(a) - centre(b));
    }
    items.forEach((s, j) => row.set(s.name, j));
  });
  const tallest = Math.max(1, ...layers.map((l) => l.length));
  const pos = new Map();
  layers.forEach((items, i) => {
    const offset = ((tallest - items.length) * (H + GAP_Y)) / 2;
    items.forEach((s, j) => pos.set(s.name, { x: 8 + i * (W + GAP_X), y: 8 + offset + j * (H + GAP_Y) }));
  });
  return { pos, width: 16 + layers.length * (W + GAP_X) - GAP_X, height: 16 + tallest * (H + GAP_Y) - GAP_Y };
}

export function summary(step) {
  const c = step.counts || {};
  if (!step.foreach) return step.status;
  const done = c.succeeded || 0;
  const parts = [`${done}/${step.items} done`];
  if (c.running) parts.push(`${c.running} running`);
  if (c.failed) parts.push(`${c.failed} failed`);
  return parts.join(', ');
}

export function drawDag(steps, onChoose) {
  const { pos, width, height } = layout(steps);
  const edges = svg('g', { class: 'edges' });
  for (const s of steps) {
    for (const d of s.depends_on) {
      const a = pos.get(d);
      const b = pos.get(s.name);
      if (!a || !b) continue;
      const x1 = a.x + W;
      const y1 = a.y + H / 2;
      const x2 = b.x;
      const y2 = b.y + H / 2;
      const mid = (x1 + x2) / 2;
      edges.append(svg('path', { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 4},${y2}`, 'marker-end': 'url(#arrow)' }));
    }
  }
  const boxes = svg('g', { class: 'steps' });
  for (const s of steps) {
    const p = pos.get(s.name);
    const g = svg('g', { class: `step s-${s.status}`, transform: `translate(${p.x},${p.y})`, tabindex: 0, role: 'button',
      'data-step': s.name, 'data-status': s.status, 'aria-label': `${s.name}: ${s.status}${s.foreach ? `, ${summary(s)}` : ''}` });
    g.append(
      svg('rect', { width: W, height: H, rx: 6 }),
      svg('text', { x: 10, y: 22, class: 'name' }, s.name.length > 20 ? `${s.name.slice(0, 19)}…` : s.name),
      svg('text', { x: 10, y: 42, class: 'sub' }, s.foreach ? `×${s.items} · ${summary(s)}` : s.status),
      svg('title', {}, `${s.name}: ${s.status}${s.foreach ? ` (${summary(s)})` : ''}`));
    if (s.foreach && s.items) {
      const done = (s.counts.succeeded || 0) + (s.counts.skipped || 0);
      g.append(svg('rect', { class: 'progress', x: 0, y: H - 5, height: 5, width: (W * done) / s.items }));
    }
    const choose = () => onChoose(s);
    g.addEventListener('click', choose);
    g.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); choose(); }
    });
    boxes.append(g);
  }
  const defs = svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 8 8', refX: 7, refY: 4, markerWidth: 8,
    markerHeight: 8, orient: 'auto' }, svg('path', { d: 'M0,0 L8,4 L0,8 z' })));
  return svg('svg', { class: 'dag', viewBox: `0 0 ${width} ${height}`, width, height, role: 'group',
    'aria-label': `Workflow graph, ${steps.length} steps` }, defs, edges, boxes);
}

// One plain step's new status, drawn at once (a live event), until the next full redraw.
export function recolour(box, status) {
  box.setAttribute('class', `step s-${status}`);
  box.dataset.status = status;
  const sub = box.querySelector('text.sub');
  if (sub) sub.textContent = status;
  const name = box.dataset.step;
  box.setAttribute('aria-label', `${name}: ${status}`);
  const title = box.querySelector('title');
  if (title) title.textContent = `${name}: ${status}`;
}
