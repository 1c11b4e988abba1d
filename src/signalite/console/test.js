// The signalite WebRTC test page: a master or a viewer over signalite's own signaling WebSocket, with real
// RTCPeerConnections. The flow is the KVS one: DescribeSignalingChannel -> GetSignalingChannelEndpoint (WSS,
// HTTPS) -> GetIceServerConfig (TURN) -> presigned WebSocket. The viewer sends the SDP offer; the master
// answers it with recipientClientId set to the viewer's client id; both trickle ICE candidates.

import {
  AwsError, call, callPath, describeChannel, el, formatAge, loadInfo, presign, setCredentials, state, strict,
} from './api.js';

const $ = (selector) => document.querySelector(selector);
const form = $('#session-form');

let session = null; // the running session, see start()
const errors = [];

// ---------------------------------------------------------------------------------------------- log

function log(text) {
  const line = `${new Date().toISOString().slice(11, 23)}  ${text}`;
  const pre = $('#log');
  pre.textContent = `${pre.textContent}${line}\n`.split('\n').slice(-400).join('\n');
  pre.scrollTop = pre.scrollHeight;
  session?.logLines.push(line);
}

function fail(err, where) {
  const text = `${where}: ${err instanceof AwsError ? `${err.code}: ${err.message.replace(/^[^:]+: /, '')}` : err.message || err}`;
  errors.push(text);
  log(`ERROR ${text}`);
  return text;
}

function setPill(node, text, kind) {
  node.textContent = text;
  node.className = `pill ${kind ?? text}`;
}

// ---------------------------------------------------------------------------------------------- media

async function listSources() {
  const select = $('#source');
  const previous = select.value;
  let cameras = [];
  try {
    cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === 'videoinput');
  } catch {
    cameras = [];
  }
  select.replaceChildren(
    ...cameras.map((d, i) => el('option', { value: `camera:${d.deviceId}` }, d.label || `Camera ${i + 1}`)),
    el('option', { value: 'pattern' }, 'Generated test pattern'),
    el('option', { value: 'none' }, 'No video (receive only)'),
  );
  const wanted = new URLSearchParams(location.search).get('source');
  if (previous && [...select.options].some((o) => o.value === previous)) select.value = previous;
  else if (wanted === 'pattern' || wanted === 'none') select.value = wanted;
  else select.value = cameras.length ? `camera:${cameras[0].deviceId}` : 'pattern';
}

function testPattern(label) {
  // A moving, timestamped pattern drawn on a canvas: video to send when there is no camera.
  const canvas = el('canvas', { width: 640, height: 480 });
  const ctx = canvas.getContext('2d');
  const colors = ['#f5f5f5', '#f5e663', '#5ee6e6', '#5ee65e', '#e65ee6', '#e65e5e', '#5e5ee6'];
  const started = performance.now();
  const timer = setInterval(() => {
    const t = (performance.now() - started) / 1000;
    colors.forEach((c, i) => {
      ctx.fillStyle = c;
      ctx.fillRect((i * 640) / colors.length, 0, 640 / colors.length + 1, 330);
    });
    ctx.fillStyle = '#152536';
    ctx.fillRect(0, 330, 640, 150);
    ctx.fillStyle = '#0b6bcb';
    ctx.beginPath();
    ctx.arc(320 + 260 * Math.sin(t * 1.3), 165 + 120 * Math.cos(t * 0.9), 34, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = '#ffffff';
    ctx.font = 'bold 30px sans-serif';
    ctx.fillText('signalite test pattern', 24, 380);
    ctx.font = '24px monospace';
    ctx.fillText(`${label}  ${new Date().toISOString().slice(11, 22)}`, 24, 430);
  }, 1000 / 15);
  const stream = canvas.captureStream(15);
  return { stream, stop: () => clearInterval(timer) };
}

async function localMedia(source, audio, label) {
  if (source === 'none' && !audio) return { stream: new MediaStream(), label: 'nothing (receive only)', stop() {} };
  if (source === 'pattern') {
    const pattern = testPattern(label);
    if (audio) {
      try {
        const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
        mic.getAudioTracks().forEach((t) => pattern.stream.addTrack(t));
      } catch (err) {
        log(`microphone unavailable: ${err.message}`);
      }
    }
    return { stream: pattern.stream, label: 'test pattern', stop: pattern.stop };
  }
  const video = source === 'none' ? false : { deviceId: { exact: source.slice('camera:'.length) }, width: { ideal: 640 }, height: { ideal: 480 } };
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video, audio });
    const track = stream.getVideoTracks()[0];
    return { stream, label: track ? `camera: ${track.label || 'default'}` : 'microphone only', stop() {} };
  } catch (err) {
    log(`camera unavailable (${err.name}: ${err.message}); sending the generated test pattern instead`);
    const pattern = testPattern(label);
    return { stream: pattern.stream, label: 'test pattern (no camera)', stop: pattern.stop };
  }
}

// ---------------------------------------------------------------------------------------------- tiles

function tile(title, kind) {
  const video = el('video', { autoplay: true, playsinline: true, muted: true });
  video.muted = true;
  const facts = el('dl');
  const pill = el('span', { class: 'pill' }, 'new');
  const node = el('div', { class: 'tile', dataset: { kind } }, el('header', {}, el('b', {}, title), pill), video, facts);
  $('#videos').append(node);
  return {
    node, video, state: pill,
    set(rows) {
      facts.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v ?? '—')]));
    },
  };
}

// ---------------------------------------------------------------------------------------------- peers

function b64json(obj) {
  return btoa(JSON.stringify(obj));
}

function unb64json(text) {
  return JSON.parse(atob(text));
}

class Peer {
  // One RTCPeerConnection: the master holds one per viewer client id; a viewer holds one (remote "MASTER").
  constructor(remoteId) {
    this.remoteId = remoteId;
    this.pending = []; // candidates that arrived before the remote description
    this.report = { connectionState: 'new', iceConnectionState: 'new', pair: null, rttMs: null, inboundVideo: null, outboundVideo: null, remoteTracks: [] };
    const title = session.role === 'master' ? `Viewer ${remoteId}` : 'Master';
    this.tile = tile(title, 'remote');
    this.last = null;
    const pc = new RTCPeerConnection({ iceServers: session.iceServers, iceTransportPolicy: session.relayOnly ? 'relay' : 'all' });
    this.pc = pc;
    pc.addEventListener('icecandidate', ({ candidate }) => {
      if (candidate && candidate.candidate) send('ICE_CANDIDATE', candidate.toJSON(), this.recipient());
    });
    pc.addEventListener('connectionstatechange', () => {
      this.report.connectionState = pc.connectionState;
      setPill(this.tile.state, pc.connectionState);
      log(`${title}: connection ${pc.connectionState}`);
    });
    pc.addEventListener('iceconnectionstatechange', () => {
      this.report.iceConnectionState = pc.iceConnectionState;
    });
    pc.addEventListener('track', (event) => {
      this.report.remoteTracks.push(event.track.kind);
      const stream = event.streams[0] ?? new MediaStream([event.track]);
      if (this.tile.video.srcObject !== stream) this.tile.video.srcObject = stream;
      this.tile.video.play().catch(() => {});
    });
    for (const track of session.local.stream.getTracks()) pc.addTrack(track, session.local.stream);
  }

  recipient() {
    return session.role === 'master' ? this.remoteId : null;
  }

  async addCandidate(init) {
    if (!this.pc.remoteDescription) {
      this.pending.push(init);
      return;
    }
    try {
      await this.pc.addIceCandidate(init);
    } catch (err) {
      fail(err, 'addIceCandidate');
    }
  }

  async setRemote(description) {
    await this.pc.setRemoteDescription(description);
    for (const init of this.pending.splice(0)) await this.addCandidate(init);
  }

  async stats() {
    const stats = await this.pc.getStats();
    let pair = null;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
    });
    if (!pair) stats.forEach((r) => { if (!pair && r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
    const candidate = (id) => {
      const c = id ? stats.get(id) : null;
      return c ? { type: c.candidateType, address: c.address ?? c.ip, port: c.port, protocol: c.protocol, relayProtocol: c.relayProtocol ?? null } : null;
    };
    const report = this.report;
    report.pair = pair ? { local: candidate(pair.localCandidateId), remote: candidate(pair.remoteCandidateId), state: pair.state } : null;
    report.rttMs = pair?.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000 * 10) / 10 : null;
    const now = performance.now();
    let inbound = null;
    let outbound = null;
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') inbound = r;
      if (r.type === 'outbound-rtp' && r.kind === 'video') outbound = r;
    });
    const rate = (bytes, key) => {
      if (!this.last || bytes == null || this.last[key] == null) return null;
      return Math.round(((bytes - this.last[key]) * 8) / (now - this.last.time));
    };
    report.inboundVideo = inbound ? {
      framesDecoded: inbound.framesDecoded ?? 0, framesPerSecond: inbound.framesPerSecond ?? null,
      frameWidth: inbound.frameWidth ?? null, frameHeight: inbound.frameHeight ?? null,
      bytesReceived: inbound.bytesReceived ?? 0, kbps: rate(inbound.bytesReceived, 'in'),
    } : null;
    report.outboundVideo = outbound ? { framesEncoded: outbound.framesEncoded ?? 0, bytesSent: outbound.bytesSent ?? 0, kbps: rate(outbound.bytesSent, 'out') } : null;
    this.last = { time: now, in: inbound?.bytesReceived, out: outbound?.bytesSent };
    const side = (c) => (c ? `${c.type} ${c.address}:${c.port} ${c.protocol}${c.relayProtocol ? ` (TURN/${c.relayProtocol})` : ''}` : '?');
    const vin = report.inboundVideo;
    const vout = report.outboundVideo;
    this.tile.set([
      ['Connection', `${report.connectionState} (ICE ${report.iceConnectionState})`],
      ['Candidate pair', report.pair ? `${side(report.pair.local)} ⇄ ${side(report.pair.remote)}` : 'none selected yet'],
      ['Round trip', report.rttMs != null ? `${report.rttMs} ms` : null],
      ['Video in', vin ? `${vin.frameWidth ?? '?'}×${vin.frameHeight ?? '?'} @ ${vin.framesPerSecond ?? 0} fps, ${vin.kbps ?? 0} kbit/s, ${vin.framesDecoded} frames decoded` : 'none'],
      ['Video out', vout ? `${vout.framesEncoded} frames encoded, ${vout.kbps ?? 0} kbit/s` : 'none'],
    ]);
  }

  close() {
    this.pc.close();
    this.tile.node.remove();
  }
}

// ---------------------------------------------------------------------------------------------- signaling

let correlation = 0;
function send(action, payload, recipientClientId) {
  const ws = session?.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const frame = { action, messagePayload: b64json(payload), correlationId: `${action}.${++correlation}` };
  if (recipientClientId) frame.recipientClientId = recipientClientId;
  ws.send(JSON.stringify(frame));
  session.sent[action] = (session.sent[action] ?? 0) + 1;
  if (action !== 'ICE_CANDIDATE') log(`→ ${action}${recipientClientId ? ` to ${recipientClientId}` : ''}`);
}

async function onFrame(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    log('← a frame that is not JSON (ignored)');
    return;
  }
  const type = message.messageType;
  session.received[type] = (session.received[type] ?? 0) + 1;
  const from = message.senderClientId;
  try {
    switch (type) {
      case 'SDP_OFFER': {
        if (session.role !== 'master') return log('← SDP_OFFER (ignored: viewers receive answers)');
        if (!from) return log('← SDP_OFFER without senderClientId (ignored)');
        log(`← SDP_OFFER from ${from}`);
        session.peers.get(from)?.close();
        const peer = new Peer(from);
        session.peers.set(from, peer);
        await peer.setRemote(unb64json(message.messagePayload));
        const answer = await peer.pc.createAnswer();
        await peer.pc.setLocalDescription(answer);
        send('SDP_ANSWER', { type: 'answer', sdp: peer.pc.localDescription.sdp }, from);
        break;
      }
      case 'SDP_ANSWER': {
        log('← SDP_ANSWER');
        const peer = session.peers.get('MASTER');
        if (peer) await peer.setRemote(unb64json(message.messagePayload));
        break;
      }
      case 'ICE_CANDIDATE': {
        const peer = session.peers.get(session.role === 'master' ? from : 'MASTER');
        if (peer) await peer.addCandidate(unb64json(message.messagePayload));
        break;
      }
      case 'STATUS_RESPONSE': {
        const s = message.statusResponse ?? {};
        session.statusResponses.push(s);
        log(`← STATUS_RESPONSE ${s.errorType ?? ''} ${s.statusCode ?? ''} for ${s.correlationId ?? '?'}: ${s.description ?? ''}`);
        break;
      }
      case 'GO_AWAY': {
        session.goAway = true;
        log('← GO_AWAY: the server asks this client to leave (channel deleted, shutdown or connection too old)');
        const banner = $('#goaway');
        banner.textContent = 'GO_AWAY received: the server is closing this connection (channel deleted, server shutting down, or the connection reached its maximum age).';
        banner.hidden = false;
        break;
      }
      case 'RECONNECT_ICE_SERVER':
        session.reconnectIce = true;
        log('← RECONNECT_ICE_SERVER: the TURN configuration changed; stop and start to fetch it again');
        break;
      default:
        log(`← ${type ?? 'unknown'} (ignored)`);
    }
  } catch (err) {
    fail(err, `handling ${type}`);
  }
}

function openSocket(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    session.ws = ws;
    setPill($('#signaling-state'), 'connecting');
    ws.addEventListener('open', () => {
      session.signaling = 'open';
      setPill($('#signaling-state'), 'open', 'good');
      log(`signaling open as ${session.role}${session.clientId ? ` (${session.clientId})` : ''}`);
      resolve(ws);
    });
    ws.addEventListener('message', (event) => onFrame(event.data));
    ws.addEventListener('error', () => log('signaling: WebSocket error'));
    ws.addEventListener('close', (event) => {
      if (session?.ws !== ws) return;
      session.signaling = 'closed';
      session.closeCode = event.code;
      session.closeReason = event.reason;
      setPill($('#signaling-state'), `closed ${event.code}${event.reason ? `: ${event.reason}` : ''}`, 'bad');
      log(`signaling closed: code ${event.code}${event.reason ? `, reason “${event.reason}”` : ''}${event.code === 1006 ? ' (refused or dropped: check the channel, the credentials and the server log)' : ''}`);
      reject(new Error(`WebSocket closed (${event.code}) before it opened`));
    });
  });
}

// ---------------------------------------------------------------------------------------------- session

async function start(options) {
  const clientId = options.role === 'viewer' ? (options.clientId || `viewer-${Math.random().toString(36).slice(2, 10)}`) : null;
  session = {
    role: options.role, clientId, relayOnly: options.relayOnly, peers: new Map(), sent: {}, received: {},
    statusResponses: [], goAway: false, reconnectIce: false, signaling: 'starting', closeCode: null, closeReason: null,
    iceServers: [], logLines: [], channel: null, endpoints: null, local: { stream: new MediaStream(), label: '', stop() {} },
    startedAt: Date.now(),
  };
  $('#videos').replaceChildren();
  $('#goaway').hidden = true;
  $('#log').textContent = '';
  $('#session-title').textContent = `${options.role === 'master' ? 'Master' : `Viewer ${clientId}`} on ${options.channel}`;

  const info = await describeChannel(options.channel);
  session.channel = info;
  log(`channel ${info.ChannelName}: ${info.ChannelARN} (${info.ChannelStatus})`);
  const role = options.role === 'master' ? 'MASTER' : 'VIEWER';
  const endpoints = await call('GetSignalingChannelEndpoint', {
    ChannelARN: info.ChannelARN, SingleMasterChannelEndpointConfiguration: { Protocols: ['WSS', 'HTTPS'], Role: role },
  });
  session.endpoints = Object.fromEntries(endpoints.ResourceEndpointList.map((e) => [e.Protocol, e.ResourceEndpoint]));
  log(`endpoints: WSS ${session.endpoints.WSS}, HTTPS ${session.endpoints.HTTPS}`);

  if (options.useTurn) {
    const params = { ChannelARN: info.ChannelARN, Service: 'TURN' };
    if (clientId) params.ClientId = clientId;
    const ice = await callPath('/v1/get-ice-server-config', params, { base: session.endpoints.HTTPS });
    session.iceServers = (ice.IceServerList ?? []).map((s) => ({ urls: s.Uris, username: s.Username, credential: s.Password }));
  }
  const urls = session.iceServers.flatMap((s) => s.urls);
  $('#ice-servers').textContent = urls.length ? `TURN: ${urls.join(', ')}` : (options.useTurn ? 'no TURN configured on the server: host candidates only' : 'TURN not used');
  log(urls.length ? `ICE servers: ${urls.join(', ')}` : 'no ICE servers (host candidates only)');
  if (options.relayOnly && !urls.length) log('relay only was asked for, but there is no TURN server: the session cannot connect');

  session.local = await localMedia(options.source, options.audio, options.role === 'master' ? 'MASTER' : clientId);
  const localTile = tile(`This ${options.role} · sending ${session.local.label}`, 'local');
  localTile.video.srcObject = session.local.stream;
  localTile.video.play().catch(() => {});
  setPill(localTile.state, 'local', 'good');
  localTile.set([['Tracks', session.local.stream.getTracks().map((t) => t.kind).join(', ') || 'none']]);

  let wsUrl = `${session.endpoints.WSS}?X-Amz-ChannelARN=${encodeURIComponent(info.ChannelARN)}`;
  if (clientId) wsUrl += `&X-Amz-ClientId=${encodeURIComponent(clientId)}`;
  await openSocket(await presign(wsUrl));

  if (options.role === 'viewer') {
    const peer = new Peer('MASTER');
    session.peers.set('MASTER', peer);
    const kinds = new Set(session.local.stream.getTracks().map((t) => t.kind));
    if (!kinds.has('video')) peer.pc.addTransceiver('video', { direction: 'recvonly' });
    if (!kinds.has('audio')) peer.pc.addTransceiver('audio', { direction: 'recvonly' });
    const offer = await peer.pc.createOffer();
    await peer.pc.setLocalDescription(offer);
    send('SDP_OFFER', { type: 'offer', sdp: peer.pc.localDescription.sdp });
  } else {
    log('waiting for viewers to send offers');
  }
  session.statsTimer = setInterval(() => {
    for (const peer of session.peers.values()) peer.stats().catch((err) => fail(err, 'getStats'));
    $('#session-title').textContent = `${session.role === 'master' ? 'Master' : `Viewer ${session.clientId}`} on ${session.channel.ChannelName} · ${formatAge((Date.now() - session.startedAt) / 1000)}`;
  }, 1000);
}

function stop() {
  if (!session) return;
  clearInterval(session.statsTimer);
  for (const peer of session.peers.values()) peer.pc.close();
  session.local.stream.getTracks().forEach((t) => t.stop());
  session.local.stop();
  const ws = session.ws;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'stopped by the user');
  log('stopped');
  setPill($('#signaling-state'), 'stopped', 'closed');
  $('#start').disabled = false;
  $('#stop').disabled = true;
}

// For automated tests and the curious: the session as data (never credentials or SDP).
window.testReport = () => {
  if (!session) return { started: false, errors: errors.slice() };
  const peers = {};
  for (const [id, peer] of session.peers) peers[id] = { ...peer.report };
  return {
    started: true,
    role: session.role,
    clientId: session.clientId,
    channelARN: session.channel?.ChannelARN ?? null,
    channelName: session.channel?.ChannelName ?? null,
    endpoints: session.endpoints,
    iceServerUrls: session.iceServers.flatMap((s) => s.urls),
    localSource: session.local.label,
    localTracks: session.local.stream.getTracks().map((t) => t.kind),
    signaling: session.signaling,
    closeCode: session.closeCode,
    closeReason: session.closeReason,
    goAway: session.goAway,
    reconnectIce: session.reconnectIce,
    statusResponses: session.statusResponses.slice(),
    sent: { ...session.sent },
    received: { ...session.received },
    peers,
    errors: errors.slice(),
  };
};

// ---------------------------------------------------------------------------------------------- form

function readForm() {
  const data = new FormData(form);
  return {
    channel: String(data.get('channel') || '').trim(),
    role: String(data.get('role')),
    clientId: String(data.get('clientId') || '').trim(),
    source: String(data.get('source') || 'pattern'),
    audio: data.get('audio') === 'on',
    useTurn: data.get('useTurn') === 'on',
    relayOnly: data.get('relayOnly') === 'on',
  };
}

function takeCredentialsFromForm() {
  const data = new FormData(form);
  const region = String(data.get('region') || '').trim();
  if (region) state.region = region;
  const accessKeyId = String(data.get('accessKeyId') || '').trim();
  if (accessKeyId) {
    const sessionToken = String(data.get('sessionToken') || '').trim();
    setCredentials({ accessKeyId, secretAccessKey: String(data.get('secretAccessKey') || ''), ...(sessionToken ? { sessionToken } : {}) });
    form.querySelector('[name=secretAccessKey]').value = '';
    form.querySelector('[name=sessionToken]').value = '';
  }
  renderIdentity();
}

function renderIdentity() {
  const mode = state.info?.authMode ?? '?';
  const badge = $('#mode-badge');
  badge.textContent = `${mode} mode`;
  badge.className = `badge ${mode}`;
  $('#identity').textContent = state.credentials ? `key ${state.credentials.accessKeyId}` : '';
  $('#credentials-note').textContent = strict() ? (state.credentials ? `(using ${state.credentials.accessKeyId})` : '(required: strict mode)') : '(open mode: not needed)';
  form.querySelector('[name=region]').value = state.region ?? '';
  form.querySelector('[name=accessKeyId]').required = strict() && !state.credentials;
  form.querySelector('[name=secretAccessKey]').required = strict() && !state.credentials;
}

async function fillChannelList() {
  try {
    const result = await call('ListSignalingChannels', { MaxResults: 100 });
    $('#channel-list').replaceChildren(...result.ChannelInfoList.map((c) => el('option', { value: c.ChannelName })));
  } catch {
    // only a convenience
  }
}

function syncRole() {
  const viewer = form.querySelector('[name=role]:checked').value === 'viewer';
  $('#client-id-label').hidden = !viewer;
}

async function main() {
  const params = new URLSearchParams(location.search);
  if (params.get('channel')) form.querySelector('[name=channel]').value = params.get('channel');
  if (params.get('role') === 'viewer') form.querySelector('[name=role][value=viewer]').checked = true;
  form.querySelector('[name=clientId]').value = params.get('clientId') || `viewer-${Math.random().toString(36).slice(2, 10)}`;
  if (params.get('relay') === '1') form.querySelector('[name=relayOnly]').checked = true;
  if (params.get('turn') === '0') form.querySelector('[name=useTurn]').checked = false;
  if (params.get('region')) state.region = params.get('region');
  syncRole();
  form.querySelectorAll('[name=role]').forEach((r) => r.addEventListener('change', syncRole));

  try {
    await loadInfo();
  } catch (err) {
    $('#form-error').textContent = fail(err, 'server info');
    $('#form-error').hidden = false;
  }
  renderIdentity();
  await listSources();
  navigator.mediaDevices?.addEventListener?.('devicechange', listSources);
  if (!strict()) fillChannelList();

  // Opened from the console: ask it for the credentials it holds (same origin only, memory to memory).
  window.addEventListener('message', (event) => {
    if (event.origin !== location.origin || event.source !== window.opener || event.data?.type !== 'signalite-credentials') return;
    if (event.data.region) state.region = event.data.region;
    if (event.data.credentials) setCredentials(event.data.credentials);
    renderIdentity();
    fillChannelList();
    if (params.get('autostart') === '1' && !session && state.credentials) form.requestSubmit();
  });
  if (window.opener) window.opener.postMessage({ type: 'signalite-test-ready' }, location.origin);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    $('#form-error').hidden = true;
    takeCredentialsFromForm();
    if (session) stop();
    $('#start').disabled = true;
    $('#stop').disabled = false;
    try {
      await start(readForm());
      if (strict()) fillChannelList();
    } catch (err) {
      $('#form-error').textContent = fail(err, 'start');
      $('#form-error').hidden = false;
    }
  });
  $('#stop').addEventListener('click', stop);
  // Enabled only now: a click before the handler above exists would submit the form as a plain GET
  // and reload the page (the console e2e test hit that on a slow CI run).
  $('#start').disabled = false;
  if (params.get('autostart') === '1' && (!strict() || state.credentials)) form.requestSubmit();
}

main();
