// Audit: the chain's records filtered on the server, page by page, and a button that asks the
// coordinator to verify the chain (hashes and signed heads) and says what it found.
import { get } from './api.js';
import { announce, clear, h, table, when } from './dom.js';

const PAGE = 100;

export async function auditPage(main) {
  const cursors = [0];
  const results = h('div', { class: 'results' });
  const report = h('div', { id: 'verify-report', role: 'status', 'aria-live': 'polite' });
  const subject = h('input', { id: 'a-subject', placeholder: 'e.g. node:ID' });
  const kind = h('input', { id: 'a-kind', placeholder: 'e.g. node.transition' });
  const since = h('input', { id: 'a-since', type: 'datetime-local' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter audit records' },
    h('div', {}, h('label', { for: 'a-subject' }, 'Subject'), subject),
    h('div', {}, h('label', { for: 'a-kind' }, 'Action'), kind),
    h('div', {}, h('label', { for: 'a-since' }, 'Since (UTC)'), since),
    h('button', { type: 'submit' }, 'Filter'));

  let loads = 0;  // the latest load wins: an earlier answer arriving late (the unfiltered first page) is dropped
  async function load() {
    const mine = ++loads;
    let records;
    const sinceTs = since.value ? Date.parse(`${since.value}Z`) / 1000 : undefined;
    try {
      records = await get('/v1/audit', { subject: subject.value.trim(), kind: kind.value.trim(), since: sinceTs,
        after: cursors[cursors.length - 1], limit: PAGE });
    } catch (exc) {
      if (mine === loads) clear(results, h('p', { class: 'error', role: 'alert' }, exc.message));
      return;
    }
    if (mine !== loads) return;
    const page = cursors.length;
    clear(results,
      records.length ? table(`Audit records, page ${page}`, ['Seq', 'When', 'Action', 'Subject', 'Actor', 'Domain', 'Cause', 'Details'],
        records.map((r) => h('tr', {}, h('td', { class: 'num' }, r.seq), h('td', {}, when(r.at)), h('td', {}, r.action),
          h('td', {}, r.subject), h('td', {}, r.actor), h('td', {}, r.domain || '—'), h('td', {}, r.cause || '—'),
          h('td', {}, h('code', { class: 'details' }, JSON.stringify(r.details))))))
        : h('p', {}, 'No records match.'),
      h('nav', { class: 'pager', 'aria-label': 'Pages' },
        h('button', { type: 'button', disabled: page === 1, onclick: () => { cursors.pop(); load(); } }, 'Previous'),
        h('span', {}, `page ${page}`),
        h('button', { type: 'button', disabled: records.length < PAGE,
          onclick: () => { cursors.push(records[records.length - 1].seq); load(); } }, 'Next')));
  }

  async function verify() {
    clear(report, h('p', { class: 'muted' }, 'Verifying…'));
    try {
      const r = await get('/v1/audit/verify');
      clear(report, h('p', { class: r.ok ? 'ok' : 'error', 'data-ok': String(r.ok) },
        r.ok ? `The chain is intact: ${r.records_checked} records and ${r.heads_checked} signed heads checked.`
          : `The chain is broken at record ${r.first_bad_seq}: ${r.problem}`));
      announce(r.ok ? 'Audit chain intact' : 'Audit chain broken');
    } catch (exc) {
      clear(report, h('p', { class: 'error' }, exc.message));
    }
  }

  form.addEventListener('submit', (event) => { event.preventDefault(); cursors.splice(1); load(); });
  clear(main, h('h1', {}, 'Audit'),
    h('div', { class: 'actions' }, h('button', { type: 'button', id: 'verify', onclick: verify }, 'Verify the chain')),
    report, form, results);
  await load();
  return null;
}
