// The study browser: search (QIDO-RS), series thumbnails (WADO-RS /thumbnail), upload
// (STOW-RS), download (WADO-RS application/zip), delete (DELETE on the WADO-RS paths,
// after a confirmation dialog) and links to the OHIF viewer.
import * as api from './api.js';
import * as auth from './auth.js';

const T = {
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  PatientName: '00100010',
  PatientID: '00100020',
  StudyDate: '00080020',
  StudyDescription: '00081030',
  ModalitiesInStudy: '00080061',
  AccessionNumber: '00080050',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfStudyRelatedSeries: '00201206',
  Modality: '00080060',
  SeriesDescription: '0008103E',
  SeriesNumber: '00200011',
  NumberOfSeriesRelatedInstances: '00201209',
  FailedSOPSequence: '00081198',
  ReferencedSOPSequence: '00081199',
  FailureReason: '00081197',
};
const INCLUDE = ['StudyDescription', 'ModalitiesInStudy', 'NumberOfStudyRelatedInstances',
  'NumberOfStudyRelatedSeries'];

const $ = (selector) => document.querySelector(selector);
const state = { offset: 0, limit: 25, sort: null, descending: false, rows: [], more: false, viewer: false, allowDelete: false, generation: 0 };

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function showMessage(text) {
  const message = $('#message');
  message.textContent = text || '';
  message.hidden = !text;
}

function showNotice(text) {
  $('#notice').textContent = text || '';
}

function formatDate(da) {
  return /^\d{8}$/.test(da) ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : da;
}

/** QIDO-RS matching keys from the form (PS3.18 8.3.4). */
function queryParameters() {
  const form = new FormData($('#search'));
  const params = { includefield: INCLUDE.join(','), limit: state.limit + 1, offset: state.offset };
  for (const key of ['PatientName', 'PatientID', 'AccessionNumber', 'ModalitiesInStudy']) {
    let text = (form.get(key) || '').trim();
    if (!text) continue;
    // A name is found by its beginning, as people type it.
    if (key === 'PatientName' && !/[*?]/.test(text)) text += '*';
    params[key] = text;
  }
  const from = (form.get('from') || '').replaceAll('-', '');
  const to = (form.get('to') || '').replaceAll('-', '');
  if (from || to) params.StudyDate = from === to ? from : `${from}-${to}`;
  if (form.get('fuzzy')) params.fuzzymatching = 'true';
  return params;
}

async function runSearch() {
  // Only the answer to the latest search is shown, whatever order the answers come in.
  const generation = ++state.generation;
  showMessage('');
  const tbody = $('#studies tbody');
  tbody.setAttribute('aria-busy', 'true');
  try {
    const { results, warning } = await api.search('/studies', queryParameters());
    if (generation !== state.generation) return;
    state.more = results.length > state.limit;
    state.rows = results.slice(0, state.limit);
    if (warning) showMessage(warning.replace(/^299 \S+ /, ''));
    render();
  } catch (error) {
    if (generation !== state.generation) return;
    state.rows = [];
    render();
    showMessage(`Search failed: ${error.message}`);
  } finally {
    if (generation === state.generation) tbody.removeAttribute('aria-busy');
  }
}

function sortKey(row, name) {
  const v = name === 'ModalitiesInStudy' ? api.values(row, T[name]) : api.value(row, T[name]);
  return typeof v === 'number' ? v : String(v).toLowerCase();
}

function sortedRows() {
  if (!state.sort) return state.rows;
  const direction = state.descending ? -1 : 1;
  return [...state.rows].sort((a, b) => {
    const x = sortKey(a, state.sort);
    const y = sortKey(b, state.sort);
    return (x < y ? -1 : x > y ? 1 : 0) * direction;
  });
}

function render() {
  pending.length = 0; // thumbnails of rows no longer shown are not fetched
  showPending();
  const tbody = $('#studies tbody');
  tbody.replaceChildren();
  for (const header of document.querySelectorAll('#studies th')) header.removeAttribute('aria-sort');
  if (state.sort) {
    const th = $(`#studies button[data-sort="${state.sort}"]`).parentElement;
    th.setAttribute('aria-sort', state.descending ? 'descending' : 'ascending');
  }
  if (state.rows.length === 0) {
    tbody.append(element('tr', {}, element('td', { colspan: 9, class: 'empty' }, 'No study matches.')));
  }
  for (const row of sortedRows()) tbody.append(studyRow(row));
  const first = state.rows.length ? state.offset + 1 : 0;
  $('#page').textContent = `Studies ${first}–${state.offset + state.rows.length}`;
  $('#previous').disabled = state.offset === 0;
  $('#next').disabled = !state.more;
}

function studyRow(row) {
  const uid = api.value(row, T.StudyInstanceUID);
  const thumbnails = element('td', { class: 'thumbnails' });
  const viewer = element('a', { href: `../viewer/viewer/${encodeURIComponent(uid)}`, class: 'button' }, 'Open in viewer');
  if (!state.viewer) {
    viewer.setAttribute('aria-disabled', 'true');
    viewer.title = 'The viewer is not installed: run `dicomcloud viewer install` on the server';
  }
  const download = element('button', { type: 'button', onclick: () => downloadStudy(uid, download) }, 'Download');
  const patient = api.value(row, T.PatientName) || '(no name)';
  const what = [patient, formatDate(api.value(row, T.StudyDate)), api.value(row, T.StudyDescription)]
    .filter((v) => v !== '').join(', ');
  const count = api.value(row, T.NumberOfStudyRelatedInstances);
  const remove = element('button', {
    type: 'button',
    class: 'danger',
    'data-action': 'delete-study',
    'aria-label': `Delete study of ${what}`,
    onclick: () => confirmDelete(remove, `/studies/${uid}`,
      `The study of ${what}: ${count} image${count === 1 ? '' : 's'}.`, `Study of ${patient} deleted.`),
  }, 'Delete');
  remove.hidden = !state.allowDelete;
  const tr = element('tr', { 'data-study': uid },
    element('th', { scope: 'row' }, api.value(row, T.PatientName) || '(no name)'),
    element('td', {}, api.value(row, T.PatientID)),
    element('td', {}, formatDate(api.value(row, T.StudyDate))),
    element('td', {}, api.value(row, T.StudyDescription)),
    element('td', {}, api.values(row, T.ModalitiesInStudy)),
    element('td', {}, api.value(row, T.AccessionNumber)),
    element('td', { class: 'number' }, String(api.value(row, T.NumberOfStudyRelatedInstances))),
    thumbnails,
    element('td', {}, element('div', { class: 'actions' }, viewer, download, remove)),
  );
  queue(() => loadSeries(uid, thumbnails));
  return tr;
}

// Thumbnails load a few at a time, so that a page of studies does not flood the server;
// body[data-pending] says how many loads are queued or running (0: the page is settled).
const pending = [];
let running = 0;
function showPending() {
  document.body.dataset.pending = String(running + pending.length);
}
function queue(task) {
  pending.push(task);
  pump();
}
function pump() {
  while (running < 4 && pending.length) {
    const task = pending.shift();
    running += 1;
    task().finally(() => {
      running -= 1;
      pump();
    });
  }
  showPending();
}

async function loadSeries(study, cell) {
  try {
    const { results } = await api.search(`/studies/${study}/series`, {
      includefield: 'SeriesDescription,NumberOfSeriesRelatedInstances',
    });
    if (!cell.isConnected) return; // the row was replaced meanwhile
    results.sort((a, b) => (api.value(a, T.SeriesNumber) || 0) - (api.value(b, T.SeriesNumber) || 0));
    for (const series of results) {
      const uid = api.value(series, T.SeriesInstanceUID);
      const label = [api.value(series, T.Modality), api.value(series, T.SeriesNumber),
        api.value(series, T.SeriesDescription)].filter((v) => v !== '').join(' ');
      const count = api.value(series, T.NumberOfSeriesRelatedInstances);
      const img = element('img', { alt: `Series ${label}`, width: 64, height: 64, 'data-series': uid });
      const figure = element('figure', { title: `${label} (${count} images)`, 'data-series': uid }, img,
        element('figcaption', {}, `${label} · ${count}`));
      if (state.allowDelete) {
        const remove = element('button', {
          type: 'button',
          class: 'danger',
          'data-action': 'delete-series',
          'aria-label': `Delete series ${label}`,
          onclick: () => confirmDelete(remove, `/studies/${study}/series/${uid}`,
            `Series ${label} of this study: ${count} image${count === 1 ? '' : 's'}.`, `Series ${label} deleted.`),
        }, 'Delete');
        figure.append(remove);
      }
      cell.append(figure);
      queue(async () => {
        if (!img.isConnected) return;
        try {
          img.src = await api.imageUrl(api.dicomweb(`/studies/${study}/series/${uid}/thumbnail`, { viewport: '128,128' }));
        } catch {
          figure.classList.add('no-image');
        }
      });
    }
  } catch (error) {
    cell.textContent = `series: ${error.message}`;
  }
}

async function downloadStudy(uid, button) {
  button.disabled = true;
  const label = button.textContent;
  button.textContent = 'Preparing…';
  try {
    const response = await api.request(api.dicomweb(`/studies/${uid}`), { headers: { Accept: 'application/zip' } });
    const url = URL.createObjectURL(await response.blob());
    const link = element('a', { href: url, download: `${uid}.zip` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    showMessage(`Download failed: ${error.message}`);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

/**
 * Ask in the confirmation dialog (a modal <dialog>: focus moves into it, Cancel first,
 * Escape cancels), then DELETE `path`; the list and the counts are refreshed.
 */
async function confirmDelete(button, path, description, done) {
  const dialog = $('#confirm-delete');
  $('#confirm-delete-text').textContent = description;
  dialog.returnValue = '';
  dialog.showModal();
  $('#confirm-delete-cancel').focus();
  const answer = await new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue), { once: true }));
  if (answer !== 'delete') {
    button.focus();
    return;
  }
  button.disabled = true;
  showMessage('');
  showNotice('Deleting…');
  let problem = '';
  try {
    await api.remove(path);
  } catch (error) {
    if (error.status === 403) {
      problem = 'Delete refused: you are not allowed to delete (the delete permission is needed).';
    } else if (error.status === 405) {
      state.allowDelete = false;
      problem = 'Delete refused: deletion is disabled on this archive.';
    } else if (error.status === 404) {
      problem = 'Already deleted: the archive no longer has it.';
    } else {
      problem = `Delete failed: ${error.message}`;
    }
  }
  if (problem && button.isConnected) button.disabled = false;
  if (!problem || problem.startsWith('Already')) {
    refreshStatus();
    await runSearch();
  } else if (!state.allowDelete) {
    render();
  }
  showNotice(problem ? '' : done);
  if (problem) showMessage(problem);
  // The focus goes to the result line: the button's row may be gone.
  $(problem ? '#message' : '#notice').focus();
}

async function collectFiles(dataTransfer) {
  // Folders dropped from a file manager are walked (webkitGetAsEntry, all browsers).
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (entries.length === 0) return [...dataTransfer.files];
  const files = [];
  async function walk(entry) {
    if (entry.isFile) {
      files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child);
      }
    }
  }
  for (const entry of entries) await walk(entry);
  return files;
}

async function upload(files) {
  const result = $('#upload-result');
  const progress = $('#upload-progress');
  if (files.length === 0) return;
  progress.hidden = false;
  progress.max = files.length;
  progress.value = 0;
  let stored = 0;
  const failures = [];
  // Requests of up to 50 files or 256 MiB.
  const batches = [];
  let batch = [];
  let bytes = 0;
  for (const file of files) {
    if (batch.length && (batch.length >= 50 || bytes + file.size > 256 * 2 ** 20)) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(file);
    bytes += file.size;
  }
  if (batch.length) batches.push(batch);
  for (const files of batches) {
    result.textContent = `Uploading ${progress.value + files.length} of ${progress.max}…`;
    try {
      const { body } = await api.store(files);
      const referenced = (body[T.ReferencedSOPSequence] || {}).Value || [];
      const failed = (body[T.FailedSOPSequence] || {}).Value || [];
      stored += referenced.length;
      for (const item of failed) failures.push(`0x${Number(api.value(item, T.FailureReason)).toString(16).toUpperCase()}`);
    } catch (error) {
      failures.push(error.message);
    }
    progress.value += files.length;
  }
  progress.hidden = true;
  result.textContent = `${stored} instance${stored === 1 ? '' : 's'} stored` +
    (failures.length ? `, ${failures.length} refused (${[...new Set(failures)].join(', ')})` : '') + '.';
  refreshStatus();
  runSearch();
}

async function refreshStatus() {
  const line = $('#status');
  try {
    const info = await api.status();
    state.viewer = info.viewer.installed;
    state.allowDelete = info.allow_delete === true;
    $('#viewer-link').hidden = !info.viewer.installed;
    const counts = info.counts
      ? `${info.counts.studies} studies, ${info.counts.series} series, ${info.counts.instances} instances`
      : 'counts unavailable';
    const problems = Object.entries(info.checks).filter(([, v]) => v !== 'ok').map(([k, v]) => `${k}: ${v}`);
    line.textContent = `${info.status === 'ok' ? 'Online' : 'Unavailable'} · ${counts} · v${info.version}` +
      (problems.length ? ` · ${problems.join('; ')}` : '');
    line.className = info.status === 'ok' ? 'ok' : 'problem';
  } catch (error) {
    line.textContent = `The server does not answer: ${error.message}`;
    line.className = 'problem';
  }
}

function bind() {
  $('#search').addEventListener('submit', (event) => {
    event.preventDefault();
    state.offset = 0;
    runSearch();
  });
  $('#search').addEventListener('reset', () => setTimeout(() => { state.offset = 0; runSearch(); }));
  $('#previous').addEventListener('click', () => { state.offset = Math.max(0, state.offset - state.limit); runSearch(); });
  $('#next').addEventListener('click', () => { state.offset += state.limit; runSearch(); });
  $('#page-size').addEventListener('change', (event) => { state.limit = Number(event.target.value); state.offset = 0; runSearch(); });
  for (const button of document.querySelectorAll('#studies button[data-sort]')) {
    button.addEventListener('click', () => {
      const key = button.dataset.sort;
      state.descending = state.sort === key ? !state.descending : false;
      state.sort = key;
      render();
    });
  }
  const drop = $('#drop');
  drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', async (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    upload(await collectFiles(event.dataTransfer));
  });
  $('#files').addEventListener('change', (event) => {
    upload([...event.target.files]);
    event.target.value = '';
  });
}

/** Log in first when the archive wants it (auth.js); false when that failed. */
async function authenticate() {
  try {
    const { config, user } = await auth.start();
    if (user !== null || config.login) {
      $('#user').textContent = user ? `Signed in as ${user}` : 'Signed in';
      $('#user').hidden = false;
      $('#logout').hidden = false;
      $('#logout').addEventListener('click', () => auth.logout(config));
    }
    return true;
  } catch (error) {
    $('#status').textContent = `Not signed in: ${error.message}`;
    $('#status').className = 'problem';
    showMessage(`Login failed: ${error.message}`);
    return false;
  }
}

bind();
if (await authenticate()) {
  await refreshStatus();
  await runSearch();
}
document.body.dataset.ready = 'true';
