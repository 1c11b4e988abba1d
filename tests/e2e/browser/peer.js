// A KVS WebRTC master or viewer in the browser, following the flow of the KVS JS SDK's own example
// (examples/master.js, examples/viewer.js): SignalingClient over wss:// to signalite, one real
// RTCPeerConnection per viewer, trickle ICE, the fake camera on the master, a data channel opened by
// the viewer. The page does no AWS control-plane calls: the driver passes the channel ARN, the WSS
// endpoint and the ICE servers that boto3 got from signalite.
//
//   await window.startPeer({role: 'MASTER' | 'VIEWER', channelARN, endpoint, region,
//                           credentials: {accessKeyId, secretAccessKey}, clientId, iceServers, message})
//   await window.peerReport()   // JSON-able snapshot: states, data channel, frames, candidate pair
'use strict';

(() => {
  const state = {
    role: null,
    signaling: 'new',
    connectionStates: [],
    iceConnectionStates: [],
    errors: [],
    statusResponses: [],
    signalingEvents: { sdpOffer: 0, sdpAnswer: 0, iceCandidateIn: 0, iceCandidateOut: 0 },
    dataChannel: { label: null, opened: false, sent: null, received: [], roundTripMs: null },
    videoFrameCallbacks: 0,
    remoteTrackKinds: [],
  };
  const peers = new Map(); // remote client id (master) or 'MASTER' (viewer) -> RTCPeerConnection
  let signalingClient = null;
  let localStream = null;

  function log(line) {
    const el = document.getElementById('status');
    if (el) el.textContent += `${new Date().toISOString().slice(11, 23)} ${line}\n`;
  }

  function describeError(err) {
    if (err && err.message) return err.message;
    if (err && err.type) return `${err.type} event${err.target && err.target.url ? ` on ${err.target.url.split('?')[0]}` : ''}`; // WebSocket errors carry no message
    return String(err);
  }

  function fail(where, err) {
    const text = `${where}: ${describeError(err)}`;
    state.errors.push(text);
    log(`ERROR ${text}`);
  }

  function watch(pc, name) {
    pc.addEventListener('connectionstatechange', () => {
      state.connectionStates.push(pc.connectionState);
      log(`${name} connectionState=${pc.connectionState}`);
    });
    pc.addEventListener('iceconnectionstatechange', () => state.iceConnectionStates.push(pc.iceConnectionState));
  }

  function countFrames(video) {
    if (!('requestVideoFrameCallback' in HTMLVideoElement.prototype)) return;
    const onFrame = () => {
      state.videoFrameCallbacks += 1;
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  function newPeerConnection(config, name, remoteClientId) {
    const pc = new RTCPeerConnection({ iceServers: config.iceServers || [], iceTransportPolicy: 'all' });
    watch(pc, name);
    pc.addEventListener('icecandidate', ({ candidate }) => {
      if (!candidate) return; // end of gathering; the SDK examples send nothing for it either
      state.signalingEvents.iceCandidateOut += 1;
      signalingClient.sendIceCandidate(candidate, remoteClientId);
    });
    pc.addEventListener('track', (event) => {
      state.remoteTrackKinds.push(event.track.kind);
      const remote = document.getElementById('remote');
      if (event.streams && event.streams[0]) remote.srcObject = event.streams[0];
      else remote.srcObject = new MediaStream([event.track]);
      remote.play().catch((e) => fail('remote.play', e));
      countFrames(remote);
    });
    return pc;
  }

  function startMaster(config) {
    signalingClient.on('sdpOffer', (offer, remoteClientId) => {
      state.signalingEvents.sdpOffer += 1;
      log(`SDP_OFFER from ${remoteClientId}`);
      const old = peers.get(remoteClientId);
      if (old) old.close();
      const pc = newPeerConnection(config, `master<-${remoteClientId}`, remoteClientId);
      peers.set(remoteClientId, pc);
      localStream.getTracks().forEach((track) => pc.addTrack(track, localStream));
      pc.addEventListener('datachannel', ({ channel }) => {
        state.dataChannel.label = channel.label;
        channel.addEventListener('open', () => { state.dataChannel.opened = true; });
        channel.addEventListener('message', ({ data }) => {
          state.dataChannel.received.push(String(data));
          const reply = `echo:${data}`;
          channel.send(reply);
          state.dataChannel.sent = reply;
          log(`data channel: got ${data}, sent ${reply}`);
        });
      });
      // Called synchronously in the handler, so the SDK's ICE candidates that follow (addIceCandidate)
      // queue behind setRemoteDescription on the peer connection's operations chain.
      pc.setRemoteDescription(offer)
        .then(() => pc.createAnswer())
        .then((answer) => pc.setLocalDescription(answer))
        .then(() => {
          signalingClient.sendSdpAnswer(pc.localDescription, remoteClientId);
          log(`SDP_ANSWER to ${remoteClientId}`);
        })
        .catch((e) => fail('master answer', e));
    });
    signalingClient.on('iceCandidate', (candidate, remoteClientId) => {
      state.signalingEvents.iceCandidateIn += 1;
      const pc = peers.get(remoteClientId);
      if (!pc) return fail('master', `ICE candidate from unknown viewer ${remoteClientId}`);
      pc.addIceCandidate(candidate).catch((e) => fail('master addIceCandidate', e));
    });
  }

  function startViewer(config) {
    const pc = newPeerConnection(config, 'viewer', undefined);
    peers.set('MASTER', pc);
    pc.addTransceiver('video', { direction: 'recvonly' });
    const channel = pc.createDataChannel('kvsDataChannel');
    state.dataChannel.label = channel.label;
    let sentAt = 0;
    channel.addEventListener('open', () => {
      state.dataChannel.opened = true;
      state.dataChannel.sent = config.message;
      sentAt = performance.now();
      channel.send(config.message);
      log(`data channel: sent ${config.message}`);
    });
    channel.addEventListener('message', ({ data }) => {
      state.dataChannel.received.push(String(data));
      if (state.dataChannel.roundTripMs === null) state.dataChannel.roundTripMs = performance.now() - sentAt;
      log(`data channel: got ${data}`);
    });
    signalingClient.on('open', () => {
      pc.createOffer()
        .then((offer) => pc.setLocalDescription(offer))
        .then(() => {
          signalingClient.sendSdpOffer(pc.localDescription);
          log('SDP_OFFER sent');
        })
        .catch((e) => fail('viewer offer', e));
    });
    signalingClient.on('sdpAnswer', (answer) => {
      state.signalingEvents.sdpAnswer += 1;
      log('SDP_ANSWER received');
      pc.setRemoteDescription(answer).catch((e) => fail('viewer setRemoteDescription', e));
    });
    signalingClient.on('iceCandidate', (candidate) => {
      state.signalingEvents.iceCandidateIn += 1;
      pc.addIceCandidate(candidate).catch((e) => fail('viewer addIceCandidate', e));
    });
  }

  window.startPeer = async (config) => {
    state.role = config.role;
    document.getElementById('title').textContent = `KVS ${config.role} on ${config.channelARN}`;
    if (config.role === 'MASTER') {
      localStream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
      document.getElementById('local').srcObject = localStream;
    }
    const { SignalingClient, Role } = window.KVSWebRTC;
    signalingClient = new SignalingClient({
      channelARN: config.channelARN,
      channelEndpoint: config.endpoint,
      clientId: config.role === 'VIEWER' ? config.clientId : undefined,
      role: config.role === 'MASTER' ? Role.MASTER : Role.VIEWER,
      region: config.region,
      credentials: config.credentials,
      systemClockOffset: 0,
    });
    signalingClient.on('statusResponse', (status) => {
      state.statusResponses.push(status);
      log(`STATUS_RESPONSE ${JSON.stringify(status)}`);
    });
    signalingClient.on('close', () => { state.signaling = 'closed'; log('signaling closed'); });
    if (config.role === 'MASTER') startMaster(config);
    else startViewer(config);
    const opened = new Promise((resolve, reject) => {
      signalingClient.on('open', () => { state.signaling = 'open'; log('signaling open'); resolve(); });
      signalingClient.on('error', (e) => { fail('signaling', e); reject(new Error(`signaling error: ${describeError(e)}`)); });
    });
    signalingClient.open();
    await opened;
    return state.signaling;
  };

  async function describe(pc) {
    const out = { connectionState: pc.connectionState, iceConnectionState: pc.iceConnectionState };
    const stats = await pc.getStats();
    const byId = new Map();
    stats.forEach((s) => byId.set(s.id, s));
    let pairId = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.inboundVideo = { framesDecoded: s.framesDecoded || 0, framesReceived: s.framesReceived || 0, bytesReceived: s.bytesReceived || 0 };
      }
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out.outboundVideo = { framesEncoded: s.framesEncoded || 0, bytesSent: s.bytesSent || 0 };
      }
    });
    const pair = pairId && byId.get(pairId);
    if (pair) {
      const side = (id) => {
        const c = byId.get(id) || {};
        return { candidateType: c.candidateType, protocol: c.protocol, address: c.address || c.ip, port: c.port };
      };
      out.selectedCandidatePair = { state: pair.state, local: side(pair.localCandidateId), remote: side(pair.remoteCandidateId) };
    }
    return out;
  }

  window.peerReport = async () => {
    const report = JSON.parse(JSON.stringify(state));
    report.peers = {};
    for (const [id, pc] of peers) report.peers[id] = await describe(pc);
    return report;
  };
})();
