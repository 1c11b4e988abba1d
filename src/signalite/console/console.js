// The signalite console: channels (list, prefix search, create, update TTL, delete) and the live view of one
// channel. Every call goes to signalite's own AWS control plane, SigV4-signed in this page (api.js).

import {
  AwsError, bindCredentialsForm, call, el, formatAge, formatTime, loadInfo, presign, signingCredentials, state, strict,
} from './api.js';

const $ = (selector) => document.querySelector(selector);
const PAGE_SIZE = 50;

const ui = {
  channels: [], // ChannelInfo of the rows shown
  nextToken: null,
  storage: new Map(), // `${arn}|${version}` -> "DISABLED" | "ENABLED (stream ARN)" | error text
  selected: null, // ChannelInfo of the detail panel
  selectedArn: null,
  feed: null, // { arn, controller }
  feedState: 'idle',
  lastSnapshot: null,
  snapshots: 0,
  errors: [],
  deleted: new Set(),
};

// ---------------------------------------------------------------------------------------------- banners

function showBanner(target, text, kind = 'error') {
  const banner = $(target);
  banner.textContent = text;
  banner.className = `banner ${kind}`;
  banner.hidden = !text;
}

function reportError(err, target = '#banner') {
  const text = err instanceof AwsError ? `${err.code}: ${err.message.replace(/^[^:]+: /, '')}` : String(err.message || err);
  ui.errors.push(text);
  showBanner(target, text, 'error');
  if (err instanceof AwsError && strict() && ['UnrecognizedClientException', 'InvalidSignatureException', 'MissingCredentials'].includes(err.code)) {
    openCredentials();
  }
}

// ---------------------------------------------------------------------------------------------- credentials

function renderIdentity() {
  const mode = state.info?.authMode ?? '?';
  const badge = $('#mode-badge');
  badge.textContent = `${mode} mode`;
  badge.className = `badge ${mode}`;
  $('#identity').textContent = state.credentials ? `key ${state.credentials.accessKeyId}` : (strict() ? 'no credentials' : '');
  $('#credentials-open').hidden = !strict();
  $('#region').value = state.region ?? '';
}

function openCredentials() {
  const dialog = $('#credentials-dialog');
  const form = $('#credentials-form');
  form.querySelector('[name=region]').value = state.region ?? '';
  if (state.credentials) form.querySelector('[name=accessKeyId]').value = state.credentials.accessKeyId;
  if (!dialog.open) dialog.showModal();
}

// ---------------------------------------------------------------------------------------------- channel list

function searchPrefix() {
  return $('#search').value.trim();
}

async function loadChannels({ append = false } = {}) {
  const params = { MaxResults: PAGE_SIZE };
  const prefix = searchPrefix();
  if (prefix) params.ChannelNameCondition = { ComparisonOperator: 'BEGINS_WITH', ComparisonValue: prefix };
  if (append && ui.nextToken) params.NextToken = ui.nextToken;
  try {
    const result = await call('ListSignalingChannels', params);
    if (prefix !== searchPrefix()) return; // the filter changed while this page was loading
    ui.channels = append ? ui.channels.concat(result.ChannelInfoList) : result.ChannelInfoList;
    ui.nextToken = result.NextToken ?? null;
    if (!$('#banner').classList.contains('info')) showBanner('#banner', '');
    renderChannels();
    fillStorage();
  } catch (err) {
    reportError(err);
  }
}

function statusPill(status) {
  return el('span', { class: `pill ${String(status).toLowerCase()}` }, status);
}

function storageKey(info) {
  return `${info.ChannelARN}|${info.Version}`;
}

function storageText(config) {
  if (!config) return '';
  return config.StreamARN ? `${config.Status} → ${config.StreamARN.split(':').pop()}` : config.Status;
}

function renderChannels() {
  const body = $('#channel-table tbody');
  body.replaceChildren(
    ...ui.channels.map((info) => {
      const selected = info.ChannelARN === ui.selectedArn;
      return el('tr', { class: selected ? 'selected' : null, dataset: { arn: info.ChannelARN, name: info.ChannelName } },
        el('td', {}, el('a', { href: `#arn=${encodeURIComponent(info.ChannelARN)}`, class: 'mono channel-link', title: info.ChannelARN }, info.ChannelName)),
        el('td', {}, statusPill(info.ChannelStatus)),
        el('td', {}, `${info.SingleMasterConfiguration?.MessageTtlSeconds ?? ''} s`),
        el('td', {}, formatTime(info.CreationTime)),
        el('td', { class: 'mono small', title: info.Version }, info.Version.slice(0, 8)),
        el('td', { class: 'storage' }, ui.storage.get(storageKey(info)) ?? '…'),
        el('td', { class: 'actions' },
          el('button', { type: 'button', class: 'small', onclick: () => selectChannel(info.ChannelARN) }, 'Live'),
          el('button', { type: 'button', class: 'small danger', onclick: () => openDelete(info) }, 'Delete')));
    }),
  );
  $('#empty').hidden = ui.channels.length > 0;
  $('#more').hidden = !ui.nextToken;
  const prefix = searchPrefix();
  $('#count').textContent = `${ui.channels.length}${ui.nextToken ? '+' : ''} channel${ui.channels.length === 1 ? '' : 's'}${prefix ? ` starting with “${prefix}”` : ''}`;
}

let storageRun = 0;
async function fillStorage() {
  // One DescribeMediaStorageConfiguration per row, one at a time: well inside AWS's 50 per second.
  const run = ++storageRun;
  for (const info of ui.channels) {
    if (run !== storageRun) return;
    const key = storageKey(info);
    if (ui.storage.has(key)) continue;
    try {
      const result = await call('DescribeMediaStorageConfiguration', { ChannelARN: info.ChannelARN });
      ui.storage.set(key, storageText(result.MediaStorageConfiguration));
    } catch (err) {
      ui.storage.set(key, err.code === 'ResourceNotFoundException' ? '(deleted)' : `? ${err.code ?? ''}`);
    }
    const cell = document.querySelector(`#channel-table tr[data-arn="${CSS.escape(info.ChannelARN)}"] td.storage`);
    if (cell) cell.textContent = ui.storage.get(key);
    await new Promise((resolve) => setTimeout(resolve, 40));
  }
}

// ---------------------------------------------------------------------------------------------- dialogs

function dialogError(form, err) {
  const p = form.querySelector('[data-error]');
  p.textContent = err ? (err instanceof AwsError ? `${err.code}: ${err.message.replace(/^[^:]+: /, '')}` : String(err.message || err)) : '';
  p.hidden = !err;
}

function parseTags(text) {
  const tags = [];
  for (const raw of text.split(/\n|,/)) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf('=');
    if (i <= 0) throw new Error(`tag “${line}” is not key=value`);
    tags.push({ Key: line.slice(0, i).trim(), Value: line.slice(i + 1).trim() });
  }
  return tags;
}

async function createChannel(form) {
  const data = new FormData(form);
  const name = String(data.get('name')).trim();
  const params = {
    ChannelName: name,
    ChannelType: 'SINGLE_MASTER',
    SingleMasterConfiguration: { MessageTtlSeconds: Number(data.get('ttl')) },
  };
  const tags = parseTags(String(data.get('tags') || ''));
  if (tags.length) params.Tags = tags;
  const result = await call('CreateSignalingChannel', params);
  showBanner('#banner', `Created ${name}`, 'info');
  await loadChannels();
  await selectChannel(result.ChannelARN);
}

async function updateTtl(form) {
  const info = ui.selected;
  const ttl = Number(new FormData(form).get('ttl'));
  await call('UpdateSignalingChannel', {
    ChannelARN: info.ChannelARN, CurrentVersion: info.Version, SingleMasterConfiguration: { MessageTtlSeconds: ttl },
  });
  showBanner('#d-banner', `Message TTL is now ${ttl} s (for messages sent from now on).`, 'info');
  await refreshDetail();
  await loadChannels();
}

let deleting = null;
function openDelete(info) {
  deleting = info;
  const form = $('#delete-form');
  form.reset();
  dialogError(form, null);
  $('#delete-name').textContent = info.ChannelName;
  $('#delete-dialog').showModal();
  form.querySelector('[name=confirm]').focus();
}

async function deleteChannel(form) {
  const info = deleting;
  const typed = String(new FormData(form).get('confirm')).trim();
  if (typed !== info.ChannelName) throw new Error('the name does not match');
  // CurrentVersion makes the delete refuse to act on a channel that changed since it was listed.
  const current = await call('DescribeSignalingChannel', { ChannelARN: info.ChannelARN });
  await call('DeleteSignalingChannel', { ChannelARN: info.ChannelARN, CurrentVersion: current.ChannelInfo.Version });
  ui.deleted.add(info.ChannelARN);
  showBanner('#banner', `Deleted ${info.ChannelName}: connected clients were sent GO_AWAY.`, 'info');
  if (ui.selectedArn === info.ChannelARN) {
    showBanner('#d-banner', 'This channel was deleted. The live view keeps showing its last events.', 'warning');
    renderDetailFacts({ ...ui.selected, ChannelStatus: 'DELETED' });
    setDetailButtons(false);
  }
  await loadChannels();
}

function bindDialog(dialogId, formId, action) {
  const dialog = $(dialogId);
  const form = $(formId);
  form.querySelector('[data-cancel]')?.addEventListener('click', () => dialog.close());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const submit = form.querySelector('[type=submit]');
    submit.disabled = true;
    dialogError(form, null);
    try {
      await action(form);
      dialog.close();
    } catch (err) {
      ui.errors.push(String(err.message || err));
      dialogError(form, err);
    } finally {
      submit.disabled = false;
    }
  });
}

// ---------------------------------------------------------------------------------------------- detail

function setDetailButtons(enabled) {
  for (const id of ['#d-test-master', '#d-test-viewer', '#d-ttl', '#d-delete']) $(id).disabled = !enabled;
}

function renderDetailFacts(info) {
  $('#d-name').textContent = info.ChannelName;
  $('#d-arn').textContent = info.ChannelARN;
  $('#d-status').replaceChildren(statusPill(info.ChannelStatus));
  $('#d-type').textContent = info.ChannelType;
  $('#d-version').textContent = info.Version;
  $('#d-created').textContent = formatTime(info.CreationTime);
  $('#d-ttl-value').textContent = `${info.SingleMasterConfiguration?.MessageTtlSeconds ?? '?'} s`;
}

async function refreshDetail() {
  const arn = ui.selectedArn;
  const info = (await call('DescribeSignalingChannel', { ChannelARN: arn })).ChannelInfo;
  if (arn !== ui.selectedArn) return;
  ui.selected = info;
  renderDetailFacts(info);
  setDetailButtons(true);
  const [storage, tags] = await Promise.allSettled([
    call('DescribeMediaStorageConfiguration', { ChannelARN: arn }),
    call('ListTagsForResource', { ResourceARN: arn }),
  ]);
  if (arn !== ui.selectedArn) return;
  $('#d-storage').textContent = storage.status === 'fulfilled' ? storageText(storage.value.MediaStorageConfiguration) : storage.reason.code;
  if (storage.status === 'fulfilled') ui.storage.set(storageKey(info), storageText(storage.value.MediaStorageConfiguration));
  const tagList = tags.status === 'fulfilled' ? Object.entries(tags.value.Tags ?? {}) : [];
  $('#d-tags').replaceChildren(
    ...(tagList.length ? tagList.map(([k, v]) => el('span', { class: 'tag' }, `${k}=${v}`)) : [el('span', { class: 'muted' }, 'none')]),
  );
}

async function selectChannel(arn) {
  if (!arn) return;
  ui.selectedArn = arn;
  if (location.hash !== `#arn=${encodeURIComponent(arn)}`) history.replaceState(null, '', `#arn=${encodeURIComponent(arn)}`);
  $('#detail').hidden = false;
  showBanner('#d-banner', '');
  renderChannels();
  try {
    await refreshDetail();
  } catch (err) {
    if (err.code === 'ResourceNotFoundException') {
      showBanner('#d-banner', 'This channel does not exist (any more). The live view shows its recent events.', 'warning');
      $('#d-arn').textContent = arn;
      $('#d-name').textContent = arn.split('/')[1] ?? arn;
      setDetailButtons(false);
    } else {
      reportError(err, '#d-banner');
    }
  }
  openFeed(arn);
}

function closeDetail() {
  closeFeed();
  ui.selectedArn = null;
  ui.selected = null;
  $('#detail').hidden = true;
  history.replaceState(null, '', location.pathname);
  renderChannels();
}

function openTestPage(role) {
  const info = ui.selected;
  const params = new URLSearchParams({ channel: info.ChannelName, role, region: state.region });
  const child = window.open(`test.html?${params}`, '_blank');
  if (child && state.credentials) pendingHandOff.add(child);
}

// The test page asks its opener for credentials (postMessage, same origin only), so a strict-mode key
// entered here never has to be typed twice and is never written anywhere.
const pendingHandOff = new Set();
window.addEventListener('message', (event) => {
  if (event.origin !== location.origin || event.data?.type !== 'signalite-test-ready') return;
  if (!pendingHandOff.has(event.source)) return;
  pendingHandOff.delete(event.source);
  event.source.postMessage({ type: 'signalite-credentials', credentials: state.credentials, region: state.region }, location.origin);
});

// ---------------------------------------------------------------------------------------------- live feed

function setFeedState(text, kind) {
  ui.feedState = text;
  const pill = $('#live-state');
  pill.textContent = text;
  pill.className = `pill ${kind ?? ''}`;
}

function closeFeed() {
  if (ui.feed) ui.feed.controller.abort();
  ui.feed = null;
  setFeedState('not connected');
}

async function openFeed(arn) {
  closeFeed();
  const controller = new AbortController();
  const feed = { arn, controller };
  ui.feed = feed;
  let retryMs = 2000;
  while (ui.feed === feed) {
    try {
      setFeedState('connecting…');
      // Presigned every time it (re)connects: a presigned URL is only valid for 299 s.
      const url = await presign(`${location.origin}/console/api/live?channel=${encodeURIComponent(arn)}`);
      const response = await fetch(url, { signal: controller.signal, cache: 'no-store' });
      if (!response.ok) {
        let message = `HTTP ${response.status}`;
        try {
          const body = await response.json();
          message = `${body.__type}: ${body.message}`;
        } catch { /* not JSON */ }
        setFeedState(`refused (${message})`, 'bad');
        ui.errors.push(`live feed: ${message}`);
        // A refusal for the key or its policy won't change by retrying (each try is signed afresh); new
        // credentials reopen the feed. Busy or failing servers are retried.
        if (response.status < 500) return;
        retryMs = 10000;
      } else {
        setFeedState('live', 'good');
        retryMs = 2000;
        await readEvents(response.body, (name, data) => {
          if (name === 'snapshot' && ui.feed === feed) renderLive(JSON.parse(data));
        });
        if (ui.feed === feed) setFeedState('reconnecting…', 'warn');
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err instanceof AwsError) {
        setFeedState(`no credentials`, 'bad');
      } else {
        setFeedState('reconnecting…', 'warn');
      }
    }
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
}

async function readEvents(stream, onEvent) {
  // A small server-sent-events reader over fetch (EventSource can't show why a feed was refused).
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) onEvent(name, data.join('\n'));
    }
  }
}

const EVENT_TEXT = {
  connected: 'connected',
  disconnected: 'disconnected',
  refused: 'refused',
  closed: 'closed by server',
  go_away: 'GO_AWAY sent',
  status_response: 'STATUS_RESPONSE sent',
  reconnect_ice_server: 'RECONNECT_ICE_SERVER sent',
  slow_consumer: 'cut off (slow consumer)',
};

function who(role, clientId) {
  if (role === 'MASTER') return 'master';
  if (clientId) return `viewer ${clientId}`;
  return role ? role.toLowerCase() : '';
}

function renderLive(snapshot) {
  ui.lastSnapshot = snapshot;
  ui.snapshots += 1;
  const connections = [snapshot.master, ...snapshot.viewers].filter(Boolean);
  $('#live-count').textContent = `(${snapshot.master ? '1 master' : 'no master'}, ${snapshot.viewers.length} viewer${snapshot.viewers.length === 1 ? '' : 's'})`;
  $('#live-connections tbody').replaceChildren(
    ...(connections.length
      ? connections.map((c) => el('tr', { dataset: { role: c.role, clientId: c.clientId ?? '' } },
        el('td', {}, el('span', { class: `pill ${c.role.toLowerCase()}` }, c.role)),
        el('td', { class: 'mono' }, c.clientId ?? '—'),
        el('td', { class: 'mono small' }, c.node),
        el('td', { title: formatTime(c.connectedSince) }, `${formatTime(c.connectedSince).slice(11)} (${formatAge(c.connectedSeconds)})`),
        el('td', { class: 'num' }, c.messagesIn),
        el('td', { class: 'num' }, c.messagesOut)))
      : [el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'Nobody is connected to this channel on this node.'))]),
  );
  $('#buffered-count').textContent = snapshot.buffered.length ? `(${snapshot.buffered.length})` : '';
  $('#live-buffered tbody').replaceChildren(
    ...(snapshot.buffered.length
      ? snapshot.buffered.map((b) => el('tr', {},
        el('td', {}, b.recipient == null ? 'master' : b.recipient),
        el('td', {}, b.sender == null ? 'master' : b.sender),
        el('td', { class: 'mono small' }, b.messageType),
        el('td', { class: 'num' }, `${Math.ceil(b.secondsLeft)} s`)))
      : [el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'Nothing waiting.'))]),
  );
  const events = snapshot.events.slice().reverse();
  $('#live-events').replaceChildren(
    ...(events.length
      ? events.map((e) => el('li', { class: `event ${e.kind}`, dataset: { kind: e.kind } },
        el('time', {}, formatTime(e.time).slice(11, 19)),
        el('span', { class: 'kind' }, EVENT_TEXT[e.kind] ?? e.kind),
        el('span', {}, who(e.role, e.client_id)),
        e.code ? el('span', { class: 'mono small' }, e.code) : null,
        e.error_type ? el('span', { class: 'mono small' }, e.error_type) : null,
        e.reason ? el('span', { class: 'muted' }, e.reason) : null,
        e.close_code != null ? el('span', { class: 'muted' }, `close ${e.close_code}`) : null))
      : [el('li', { class: 'muted' }, 'No signaling events yet.')]),
  );
  $('#live-updated').textContent = `updated ${formatTime(snapshot.time).slice(11, 19)} · node ${snapshot.node}${snapshot.clustered ? ' (cluster: clients and buffers of this node only)' : ''}`;
  if (snapshot.channel === null && ui.selectedArn === snapshot.channelARN && ui.selected) {
    if (!ui.deleted.has(snapshot.channelARN)) {
      ui.deleted.add(snapshot.channelARN);
      showBanner('#d-banner', 'This channel was deleted. The live view keeps showing its last events.', 'warning');
      renderDetailFacts({ ...ui.selected, ChannelStatus: 'DELETED' });
      setDetailButtons(false);
    }
  }
}

// For automated tests and the curious: what the page shows, as data (no credentials).
window.consoleReport = () => ({
  mode: state.info?.authMode ?? null,
  region: state.region,
  hasCredentials: Boolean(state.credentials),
  channels: ui.channels.map((c) => ({ name: c.ChannelName, arn: c.ChannelARN, status: c.ChannelStatus, version: c.Version, ttl: c.SingleMasterConfiguration?.MessageTtlSeconds, storage: ui.storage.get(storageKey(c)) ?? null })),
  selected: ui.selected ? { name: ui.selected.ChannelName, arn: ui.selected.ChannelARN, version: ui.selected.Version, ttl: ui.selected.SingleMasterConfiguration?.MessageTtlSeconds } : null,
  feedState: ui.feedState,
  snapshots: ui.snapshots,
  live: ui.lastSnapshot,
  errors: ui.errors.slice(),
});

// ---------------------------------------------------------------------------------------------- start

async function main() {
  try {
    await loadInfo();
  } catch (err) {
    reportError(err);
    return;
  }
  renderIdentity();
  bindCredentialsForm($('#credentials-form'), () => {
    $('#credentials-dialog').close();
    renderIdentity();
    loadChannels();
    if (ui.selectedArn) selectChannel(ui.selectedArn);
  });
  $('#credentials-open').addEventListener('click', openCredentials);
  $('#region').addEventListener('change', () => {
    state.region = $('#region').value.trim() || state.info.region;
    closeDetail();
    loadChannels();
  });
  let searchTimer = null;
  $('#search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => loadChannels(), 200);
  });
  $('#refresh').addEventListener('click', () => loadChannels());
  $('#more').addEventListener('click', () => loadChannels({ append: true }));
  $('#create-open').addEventListener('click', () => {
    const form = $('#create-form');
    form.reset();
    dialogError(form, null);
    $('#create-dialog').showModal();
    form.querySelector('[name=name]').focus();
  });
  $('#channel-table').addEventListener('click', (event) => {
    const link = event.target.closest('a.channel-link');
    if (!link) return;
    event.preventDefault();
    selectChannel(link.closest('tr').dataset.arn);
  });
  bindDialog('#create-dialog', '#create-form', createChannel);
  bindDialog('#ttl-dialog', '#ttl-form', updateTtl);
  bindDialog('#delete-dialog', '#delete-form', deleteChannel);
  $('#d-ttl').addEventListener('click', () => {
    const form = $('#ttl-form');
    form.reset();
    dialogError(form, null);
    form.querySelector('[name=ttl]').value = ui.selected?.SingleMasterConfiguration?.MessageTtlSeconds ?? 60;
    $('#ttl-dialog').showModal();
  });
  $('#d-delete').addEventListener('click', () => ui.selected && openDelete(ui.selected));
  $('#d-close').addEventListener('click', closeDetail);
  $('#d-copy').addEventListener('click', () => navigator.clipboard?.writeText($('#d-arn').textContent));
  $('#d-test-master').addEventListener('click', () => openTestPage('master'));
  $('#d-test-viewer').addEventListener('click', () => openTestPage('viewer'));

  const fromHash = new URLSearchParams(location.hash.slice(1)).get('arn');
  if (strict() && !state.credentials) {
    openCredentials();
    if (fromHash) ui.selectedArn = fromHash;
    return;
  }
  signingCredentials();
  await loadChannels();
  if (fromHash) await selectChannel(fromHash);
}

main();
