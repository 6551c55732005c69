// Small DOM helpers: every text goes in through textContent (never innerHTML), so nothing a node,
// a label or a log line contains can run as markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function announce(text) {
  const status = document.getElementById('status');
  if (status) status.textContent = text;
}

export function age(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function when(ts) {
  if (!ts) return '—';
  const d = new Date(ts * 1000);
  return d.toISOString().replace('T', ' ').slice(0, 19);
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
}

export function badge(status) {
  return h('span', { class: `badge s-${status}` }, status);
}

// A table in a horizontally scrolling region (so a wide table never widens the page).
export function table(caption, headers, rows) {
  return h('div', { class: 'scroll', tabindex: 0, role: 'region', 'aria-label': caption },
    h('table', {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, headers.map((text) => h('th', { scope: 'col' }, text)))),
      h('tbody', {}, rows)));
}

// Any JSON value as nested definition lists and tables: for pages whose shape other parts define.
export function render(value, depth = 0) {
  if (value === null || value === undefined) return h('span', { class: 'muted' }, '—');
  if (Array.isArray(value)) {
    if (!value.length) return h('span', { class: 'muted' }, 'none');
    if (value.every((v) => v && typeof v === 'object' && !Array.isArray(v))) {
      const keys = [...new Set(value.flatMap((v) => Object.keys(v)))].slice(0, 12);
      return table(`${value.length} rows`, keys,
        value.map((row) => h('tr', {}, keys.map((k) => h('td', {}, scalar(row[k], depth))))));
    }
    return h('ul', { class: 'plain' }, value.map((v) => h('li', {}, render(v, depth + 1))));
  }
  if (typeof value === 'object') {
    const entries = Object.entries(value);
    if (!entries.length) return h('span', { class: 'muted' }, 'none');
    return h('dl', { class: 'kv' }, entries.map(([k, v]) => [h('dt', {}, k), h('dd', {}, render(v, depth + 1))]));
  }
  return h('span', {}, String(value));
}

function scalar(v, depth) {
  if (v && typeof v === 'object') return depth > 1 ? JSON.stringify(v) : render(v, depth + 1);
  return v === undefined || v === null ? '—' : String(v);
}

// Before a region is redrawn: where the keyboard focus was in it (its row's data-* key and the
// element's tag), so that `restore()` afterwards puts it back on the same row's same control.
export function keepFocus(container) {
  const active = document.activeElement;
  if (!active || !container.contains(active)) return () => {};
  const row = active.closest('[data-node],[data-job],[data-key]');
  const id = active.id;
  const key = row && ['node', 'job', 'key'].find((k) => row.dataset[k] !== undefined);
  const value = key && row.dataset[key];
  const tag = active.tagName.toLowerCase();
  return () => {
    const again = key ? container.querySelector(`[data-${key}="${CSS.escape(value)}"] ${tag}`)
      : (id && document.getElementById(id));
    if (again) again.focus({ preventScroll: true });
  };
}
