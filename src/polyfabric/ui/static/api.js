// The public API, called with the token the person signed in with (kept in sessionStorage only).

const KEY = 'polyfabric.token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  // 404 from a path the coordinator does not serve (a feature it lacks), not a missing object.
  get missingEndpoint() {
    return (this.status === 404 && this.message.startsWith('no such endpoint')) || this.status === 405;
  }
}

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(value) { sessionStorage.setItem(KEY, value); }
export function forget() { sessionStorage.removeItem(KEY); }

export async function call(method, path, { query, body, signal } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === '') continue;
    for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, item);
  }
  const headers = { authorization: `Bearer ${token() || ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(url, {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: { message: text } }; }
  if (!response.ok) {
    const err = (data && data.error) || {};
    const failure = new ApiError(response.status, err.code || 'error', err.message || response.statusText);
    if (response.status === 401) window.dispatchEvent(new CustomEvent('pf-signed-out', { detail: failure.message }));
    throw failure;
  }
  return data;
}

export const get = (path, query, signal) => call('GET', path, { query, signal });
export const post = (path, body) => call('POST', path, { body });

// Which paths this coordinator serves, from its OpenAPI document (read once): pages for features
// a coordinator may lack ask here first, so they neither call a missing endpoint nor log its 404.
let served = null;
export async function serves(method, path) {
  if (served === null) {
    served = fetch('/openapi.json').then((r) => (r.ok ? r.json() : null)).then((doc) => {
      if (!doc) return null;
      return Object.entries(doc.paths || {}).map(([template, ops]) => ({
        pattern: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`),
        methods: new Set(Object.keys(ops).map((m) => m.toUpperCase())),
      }));
    }).catch(() => null);
  }
  const routes = await served;
  if (!routes) return true;  // no document: try the call and let a 404 speak
  return routes.some((r) => r.pattern.test(path) && r.methods.has(method));
}
