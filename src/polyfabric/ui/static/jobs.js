// Workflows: the paged list, and one workflow's page: its DAG, live through the job's events
// long-poll (no reload), its tasks page by page, a task's attempts and streaming logs, and the
// operator's interventions.
import { ApiError, get, post } from './api.js';
import { announce, badge, clear, h, keepFocus, table, when } from './dom.js';
import { drawDag, recolour } from './dag.js';

const JOB_STATES = ['', 'pending', 'running', 'paused', 'cancelling', 'succeeded', 'failed', 'cancelled'];
const TASK_STATES = ['', 'waiting', 'ready', 'leased', 'running', 'succeeded', 'failed', 'skipped', 'cancelled',
  'preempted'];
const PAGE = 50;
const TASK_PAGE = 100;
const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
const EVENTS_PAGE = 1000;  // the most events one answer of /v1/jobs/{id}/events carries

function progress(job) {
  const done = (job.counts.succeeded || 0) + (job.counts.skipped || 0) + (job.counts.failed || 0)
    + (job.counts.cancelled || 0);
  return h('span', { class: 'progress-cell' },
    h('progress', { max: Math.max(1, job.total), value: done, 'aria-label': `${done} of ${job.total} tasks finished` }),
    h('span', {}, ` ${done}/${job.total}`));
}

export async function jobsPage(main) {
  const cursors = [null];
  const results = h('div', { class: 'results' });
  const status = h('select', { id: 'j-status' }, JOB_STATES.map((s) => h('option', { value: s }, s || 'any')));
  const domain = h('input', { id: 'j-domain', placeholder: 'any' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter workflows' },
    h('div', {}, h('label', { for: 'j-status' }, 'Status'), status),
    h('div', {}, h('label', { for: 'j-domain' }, 'Domain'), domain),
    h('button', { type: 'submit' }, 'Filter'));

  let reads = 0;
  async function load() {
    let jobs;
    const mine = ++reads;
    try {
      jobs = await get('/v1/jobs', { status: status.value, domain: domain.value.trim(),
        after: cursors[cursors.length - 1], limit: PAGE });
      if (mine !== reads) return;  // a later read draws instead
    } catch (exc) {
      clear(results, h('p', { class: 'error', role: 'alert' }, exc.message));
      return;
    }
    const page = cursors.length;
    const restore = keepFocus(results);
    clear(results,
      jobs.length ? table(`Workflows, page ${page}`, ['Workflow', 'Status', 'Progress', 'Domain', 'Priority',
        'Submitted', 'By'], jobs.map((j) => h('tr', { 'data-job': j.id },
        h('th', { scope: 'row' }, h('a', { href: `#/jobs/${j.id}` }, j.name), h('br'), h('code', { class: 'muted' }, j.id)),
        h('td', {}, badge(j.status)), h('td', {}, progress(j)), h('td', {}, j.domain),
        h('td', { class: 'num' }, j.priority), h('td', {}, when(j.submitted_at)), h('td', {}, j.submitted_by))))
        : h('p', {}, 'No workflows match.'),
      h('nav', { class: 'pager', 'aria-label': 'Pages' },
        h('button', { type: 'button', disabled: page === 1, onclick: () => { cursors.pop(); load(); } }, 'Previous'),
        h('span', {}, `page ${page}`),
        h('button', { type: 'button', disabled: jobs.length < PAGE,
          onclick: () => { cursors.push(jobs[jobs.length - 1].id); load(); } }, 'Next')));
    restore();
  }

  form.addEventListener('submit', (event) => { event.preventDefault(); cursors.splice(1); load(); });
  clear(main, h('h1', {}, 'Workflows'), form, results);
  await load();
  const timer = setInterval(() => { if (!document.hidden) load(); }, 5000);
  return () => clearInterval(timer);
}

export async function jobPage(main, [jobId], session) {
  const stop = new AbortController();
  const first = await get(`/v1/jobs/${encodeURIComponent(jobId)}/graph`);
  let job = first.job;
  let steps = first.steps;
  const header = h('div', { class: 'job-head' });
  const graphBox = h('div', { class: 'scroll dag-box', tabindex: -1 });
  const tasksBox = h('section', { 'aria-labelledby': 'h-tasks' });
  const taskBox = h('section', { class: 'task-detail', 'aria-labelledby': 'h-task', hidden: true });
  const message = h('p', { class: 'message', role: 'status' });
  const view = { step: null, status: '', cursors: [null], rows: new Map() };
  // Errors of calls started by a click: shown, unless the page is being left (calls aborted).
  const safe = (promise) => promise.catch((exc) => { if (!stop.signal.aborted) message.textContent = exc.message; });

  function showHeader() {
    const counts = Object.entries(job.counts).map(([s, n]) => h('span', { class: `count s-${s}` }, `${s} ${n}`));
    clear(header,
      h('dl', { class: 'kv' },
        h('dt', {}, 'Status'), h('dd', { id: 'job-status', 'data-status': job.status }, badge(job.status)),
        h('dt', {}, 'Progress'), h('dd', {}, progress(job), ' ', counts),
        h('dt', {}, 'Domain'), h('dd', {}, job.domain),
        h('dt', {}, 'Priority'), h('dd', { id: 'job-priority' }, String(job.priority)),
        h('dt', {}, 'Submitted'), h('dd', {}, `${when(job.submitted_at)} by ${job.submitted_by}`),
        h('dt', {}, 'Finished'), h('dd', {}, when(job.finished_at)),
        job.error ? [h('dt', {}, 'Error'), h('dd', { class: 'error' }, job.error)] : []));
  }

  const actions = h('div', { class: 'actions' });
  if (session.may('operator')) {
    const reason = h('input', { id: 'job-reason', maxlength: 500, placeholder: 'optional' });
    const priority = h('input', { id: 'job-prio', type: 'number', step: 1, class: 'short' });
    const act = async (action, body) => {
      try {
        const path = `/v1/jobs/${encodeURIComponent(jobId)}/${action}`;
        await post(path, { reason: reason.value, ...(body || {}) });
        message.textContent = `${action}: done`;
        scheduleGraph();
      } catch (exc) {
        message.textContent = exc instanceof ApiError ? `${action} refused (${exc.status}): ${exc.message}` : String(exc);
      }
    };
    actions.append(h('label', { for: 'job-reason' }, 'Reason'), reason,
      ...['pause', 'resume', 'cancel', 'retry'].map((a) => h('button', { type: 'button', 'data-action': a,
        onclick: () => act(a) }, a === 'retry' ? 'Retry failed' : a[0].toUpperCase() + a.slice(1))),
      h('label', { for: 'job-prio' }, 'Priority'), priority,
      h('button', { type: 'button', 'data-action': 'priority',
        onclick: () => act('priority', { priority: Number.parseInt(priority.value || '0', 10) }) }, 'Set priority'));
  }

  // -- the graph, refreshed at most every 400 ms while events come in ---------------------------
  let pending = null;
  let last = 0;
  function drawGraph() {
    const focused = document.activeElement?.dataset?.step;
    clear(graphBox, drawDag(steps, chooseStep));
    if (focused) graphBox.querySelector(`[data-step="${CSS.escape(focused)}"]`)?.focus();
    main.dataset.graphVersion = String((Number(main.dataset.graphVersion) || 0) + 1);
  }
  let busy = false;
  let again = false;
  async function refreshGraph() {
    if (busy) { again = true; return; }  // one read at a time, so an older answer never wins
    busy = true;
    last = performance.now();
    try {
      const graph = await get(`/v1/jobs/${encodeURIComponent(jobId)}/graph`, undefined, stop.signal);
      steps = graph.steps;
      job = graph.job;
      showHeader();
      drawGraph();
    } finally {
      busy = false;
      if (again && !stop.signal.aborted) { again = false; scheduleGraph(); }
    }
  }
  // Re-reads wait at least 400 ms, and four times what the last one took, so that a page left open
  // on a busy workflow costs the coordinator a bounded share of its time; the task page and an open
  // task are re-read at most every 2 s (the status cells change at once from the events anyway).
  let cost = 0;
  let lastTasks = 0;
  function scheduleGraph() {
    if (pending) return;
    const wait = Math.max(0, Math.max(400, 4 * cost) - (performance.now() - last));
    pending = setTimeout(() => {
      pending = null;
      const started = performance.now();
      refreshGraph().then(() => { cost = performance.now() - started; }).catch(() => {});
      if (performance.now() - lastTasks >= 2000) {
        lastTasks = performance.now();
        loadTasks(true).catch(() => {});
        if (openTaskId) refreshTaskInfo().catch(() => {});
      }
    }, wait);
  }

  // -- tasks, page by page (a step's items: from its name on, cut where the next step starts) ----
  function chooseStep(step) {
    view.step = step.foreach ? step : null;
    view.cursors = [view.step ? step.name : null];
    safe(loadTasks().then(() => (!step.foreach && step.task_id ? openTask(step.task_id) : null)));
  }

  let taskReads = 0;
  async function loadTasks(quiet = false) {
    const restore = quiet ? keepFocus(tasksBox) : () => {};
    const after = view.cursors[view.cursors.length - 1];
    const mine = ++taskReads;
    let tasks = await get(`/v1/jobs/${encodeURIComponent(jobId)}/tasks`,
      { status: view.status, after, limit: TASK_PAGE }, stop.signal);
    if (mine !== taskReads) return;  // a later read (another page, a filter) is under way: it draws
    const full = tasks.length === TASK_PAGE;
    let more = full;
    if (view.step) {
      const ofStep = tasks.filter((t) => t.task === view.step.name);
      more = full && ofStep.length === tasks.length;
      tasks = ofStep;
    }
    tasks = tasks.filter((t) => !t.is_group);
    view.rows.clear();
    const rows = tasks.map((t) => {
      const cell = h('td', {}, badge(t.status));
      const row = h('tr', { 'data-key': t.key, 'data-status': t.status },
        h('th', { scope: 'row' }, h('button', { type: 'button', class: 'link', onclick: () => safe(openTask(t.id)) }, t.key)),
        cell, h('td', { class: 'num' }, t.attempt),
        h('td', {}, t.node_id ? h('a', { href: `#/nodes/${t.node_id}` }, t.node_id.slice(0, 10)) : '—'),
        h('td', {}, when(t.started_at)), h('td', {}, when(t.finished_at)),
        h('td', {}, t.pending_reason || t.error || ''));
      view.rows.set(t.key, { row, cell });
      return row;
    });
    const page = view.cursors.length;
    const status = h('select', { id: 't-status' }, TASK_STATES.map((s) => h('option', { value: s, selected: s === view.status }, s || 'any')));
    status.addEventListener('change', () => { view.status = status.value; view.cursors.splice(1); safe(loadTasks()); });
    clear(tasksBox,
      h('h2', { id: 'h-tasks' }, view.step ? `Tasks of ${view.step.name} (${view.step.items} items)` : 'Tasks'),
      h('div', { class: 'filters' },
        h('div', {}, h('label', { for: 't-status' }, 'Status'), status),
        view.step ? h('button', { type: 'button', onclick: () => { view.step = null; view.cursors = [null]; safe(loadTasks()); } },
          'All tasks') : null),
      tasks.length ? table(`Tasks, page ${page}`, ['Task', 'Status', 'Attempt', 'Node', 'Started', 'Finished', 'Why'], rows)
        : h('p', {}, 'No tasks match.'),
      h('nav', { class: 'pager', 'aria-label': 'Task pages' },
        h('button', { type: 'button', disabled: page === 1, onclick: () => { view.cursors.pop(); safe(loadTasks()); } }, 'Previous'),
        h('span', {}, `page ${page}`),
        h('button', { type: 'button', disabled: !more,
          onclick: () => { view.cursors.push(tasks[tasks.length - 1].key); safe(loadTasks()); } }, 'Next')));
    restore();
  }

  // -- one task: attempts, result, why it waits, and its logs as they come ----------------------
  let logStop = null;
  let openTaskId = null;
  const taskInfo = h('div', {});
  async function refreshTaskInfo() {
    const task = await get(`/v1/tasks/${encodeURIComponent(openTaskId)}`, undefined, stop.signal);
    clear(taskInfo,
      h('dl', { class: 'kv' },
        h('dt', {}, 'Status'), h('dd', { id: 'task-status' }, badge(task.status)),
        h('dt', {}, 'Attempt'), h('dd', {}, `${task.attempt} (failures ${task.failures}, lost ${task.lost}, preempted ${task.preemptions})`),
        h('dt', {}, 'Node'), h('dd', {}, task.node_id ? h('a', { href: `#/nodes/${task.node_id}` }, task.node_id) : '—'),
        h('dt', {}, 'Started'), h('dd', {}, when(task.started_at)),
        h('dt', {}, 'Finished'), h('dd', {}, when(task.finished_at)),
        h('dt', {}, 'Why pending'), h('dd', {}, task.pending_reason || '—'),
        h('dt', {}, 'Error'), h('dd', {}, task.error || '—'),
        h('dt', {}, 'Result'), h('dd', {}, h('pre', { class: 'json' }, JSON.stringify(task.result, null, 2) ?? 'null'))),
      task.attempts.length ? table('Attempts', ['Attempt', 'Status', 'Node', 'Leased', 'Started', 'Finished', 'Exit', 'Error'],
        task.attempts.map((a) => h('tr', {}, h('td', { class: 'num' }, a.attempt), h('td', {}, badge(a.status)),
          h('td', {}, a.node_id.slice(0, 10)), h('td', {}, when(a.leased_at)), h('td', {}, when(a.started_at)),
          h('td', {}, when(a.finished_at)), h('td', {}, a.exit_code ?? '—'), h('td', {}, a.error || '')))) : null);
    return task;
  }
  async function openTask(taskId) {
    if (logStop) logStop.abort();
    logStop = new AbortController();
    const signal = logStop.signal;
    openTaskId = taskId;
    const task = await refreshTaskInfo();
    const log = h('pre', { class: 'log', id: 'task-log', tabindex: 0, 'aria-label': `Logs of ${task.key}` });
    const logState = h('p', { class: 'muted', id: 'log-state' }, 'Following the logs…');
    clear(taskBox,
      h('h2', { id: 'h-task' }, `Task ${task.key}`),
      taskInfo,
      h('h3', {}, 'Logs'), logState, log,
      h('button', { type: 'button', onclick: () => { logStop.abort(); openTaskId = null; taskBox.hidden = true; } },
        'Close task'));
    taskBox.hidden = false;
    taskBox.querySelector('h2').tabIndex = -1;
    taskBox.querySelector('h2').focus();
    followLogs(taskId, log, logState, signal);
  }

  async function followLogs(taskId, log, logState, signal) {
    let after = 0;
    while (!signal.aborted && !stop.signal.aborted) {
      let page;
      try {
        page = await get(`/v1/tasks/${encodeURIComponent(taskId)}/logs`, { after, wait_s: 20 }, signal);
      } catch (exc) {
        if (!signal.aborted) logState.textContent = `Logs stopped: ${exc.message}`;
        return;
      }
      for (const chunk of page.chunks) log.append(h('span', { class: `log-${chunk.stream}` }, chunk.data));
      after = page.next;
      if (page.done) { logState.textContent = `Logs complete (task ${page.status}).`; return; }
    }
  }

  // -- the events long-poll: apply each change to what is on screen ------------------------------
  async function follow() {
    let after = first.events_next || 0;  // the graph drawn is as of this event: follow from here
    let behind = false;
    while (!stop.signal.aborted) {
      let answer;
      try {
        answer = await get(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { after, wait_s: 20 }, stop.signal);
      } catch (exc) {
        if (stop.signal.aborted) return;
        message.textContent = `Live updates paused: ${exc.message}`;
        await new Promise((r) => { setTimeout(r, 2000); });
        continue;
      }
      after = answer.next;
      job = answer.job;
      showHeader();
      for (const event of answer.events) {
        const shown = event.key && view.rows.get(event.key);
        if (shown) { clear(shown.cell, badge(event.status)); shown.row.dataset.status = event.status; }
        // A plain task is its own step (key = step name): recolour its box now, not at the next re-read.
        const box = event.key && graphBox.querySelector(`[data-step="${CSS.escape(event.key)}"]`);
        if (box && !steps.find((st) => st.name === event.key)?.foreach) recolour(box, event.status);
      }
      // A full page (1,000 events) means catching up on history: redraw once it is read.
      behind = behind || answer.events.length > 0;
      if (behind && answer.events.length < EVENTS_PAGE) { behind = false; scheduleGraph(); }
      if (FINAL.has(job.status) && !answer.events.length) {
        lastTasks = 0;  // the last re-read includes the task page
        scheduleGraph();
        announce(`Workflow ${job.status}`);
        return;
      }
    }
  }

  showHeader();
  clear(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/jobs' }, 'Workflows'), ' / ', job.name),
    h('h1', {}, `Workflow ${job.name}`),
    header, actions, message,
    h('section', { 'aria-labelledby': 'h-graph' }, h('h2', { id: 'h-graph' }, 'Graph'),
      h('p', { class: 'muted' }, 'Choose a step to list its tasks; a fan-out lists its items.'), graphBox),
    tasksBox, taskBox);
  drawGraph();
  await loadTasks();
  follow();
  return () => { stop.abort(); if (logStop) logStop.abort(); if (pending) clearTimeout(pending); };
}

