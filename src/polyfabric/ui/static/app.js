// The single page: sign-in, the hash router (#/nodes, #/jobs/ID, ...) and the pages it shows.
import { ApiError, forget, get, setToken, token } from './api.js';
import { announce, clear, h } from './dom.js';
import { auditPage } from './audit.js';
import { featurePage } from './features.js';
import { jobPage, jobsPage } from './jobs.js';
import { nodePage, nodesPage } from './nodes.js';

const RANK = { viewer: 0, submitter: 1, operator: 2, admin: 3 };

// What every page gets: who is signed in, and whether they may do a given role's actions.
export const session = {
  me: null,
  may(role) { return !!this.me && RANK[this.me.role] >= RANK[role]; },
};

const routes = [
  [/^\/nodes$/, nodesPage],
  [/^\/nodes\/([^/]+)$/, nodePage],
  [/^\/jobs$/, jobsPage],
  [/^\/jobs\/([^/]+)$/, jobPage],
  [/^\/audit$/, auditPage],
  [/^\/(topology|usage|policies|config|secrets|schedules)$/, featurePage],
];

let cleanup = null;
const main = () => document.getElementById('main');

function signInForm(message) {
  document.getElementById('nav').hidden = true;
  clear(document.getElementById('who'));
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true,
    'aria-describedby': 'token-help', spellcheck: 'false' });
  const error = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', { class: 'signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p', { id: 'token-help', class: 'muted' },
      'A token made with "polyfabric token create --role ..." (make demo prints one). It stays in this browser tab only.'),
    h('button', { type: 'submit' }, 'Sign in'),
    error);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    try {
      await start();
    } catch (exc) {
      forget();
      error.textContent = exc instanceof ApiError ? exc.message : String(exc);
    }
  });
  clear(main(), form);
  input.focus();
}

async function start() {
  session.me = await get('/v1/whoami');
  document.getElementById('nav').hidden = false;
  clear(document.getElementById('who'),
    h('span', {}, `${session.me.name || session.me.id} · ${session.me.role}`),
    h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'));
  if (!window.location.hash || window.location.hash === '#/' || window.location.hash === '#') {
    window.location.hash = '#/nodes';
  } else {
    await route();
  }
}

function signOut() {
  forget();
  session.me = null;
  if (cleanup) cleanup();
  cleanup = null;
  signInForm('Signed out.');
}

async function route() {
  if (!session.me) return;
  if (cleanup) { cleanup(); cleanup = null; }
  const path = decodeURI(window.location.hash.replace(/^#/, '')) || '/nodes';
  for (const link of document.querySelectorAll('#nav a')) {
    const here = path === link.getAttribute('href').slice(1) || path.startsWith(`${link.getAttribute('href').slice(1)}/`);
    if (here) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  const target = main();
  for (const [pattern, page] of routes) {
    const match = pattern.exec(path);
    if (!match) continue;
    clear(target, h('p', { class: 'muted' }, 'Loading…'));
    try {
      cleanup = (await page(target, match.slice(1), session)) || null;
    } catch (exc) {
      clear(target, h('h1', {}, 'Something went wrong'), h('p', { class: 'error', role: 'alert' }, exc.message));
    }
    const heading = target.querySelector('h1');
    if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); document.title = `${heading.textContent} · polyfabric`; }
    return;
  }
  clear(target, h('h1', {}, 'Not found'), h('p', {}, `Nothing at ${path}.`), h('a', { href: '#/nodes' }, 'Nodes'));
}

window.addEventListener('hashchange', route);
window.addEventListener('pf-signed-out', (event) => {
  if (!session.me) return;
  forget();
  session.me = null;
  if (cleanup) { cleanup(); cleanup = null; }
  signInForm(`Signed out: ${event.detail}`);
});

if (token()) {
  start().catch((exc) => { forget(); signInForm(exc.message); });
} else {
  signInForm();
}
announce('');
