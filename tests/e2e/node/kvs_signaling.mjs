// The KVS WebRTC JS SDK's SignalingClient, as master and as viewer, against a running signalite.
//
// Run by tests/e2e/test_kvs_js_sdk.py; by hand:
//   NODE_EXTRA_CA_CERTS=<data-dir>/tls/ca.pem SIGNALITE_ENDPOINT=https://127.0.0.1:4567 node kvs_signaling.mjs
//
// It follows the flow of the SDK's own examples (channelHelper.js, master.js, viewer.js) with the real
// AWS SDK for JavaScript v3 clients: DescribeSignalingChannel -> GetSignalingChannelEndpoint ->
// KinesisVideoSignalingClient(HTTPS endpoint).GetIceServerConfig -> SignalingClient(WSS endpoint).open ->
// offer / answer / ICE candidates both ways. Then SendAlexaOfferToMaster with and without a master, and a
// viewer connecting to a deleted channel. Nothing is asserted here: everything observed is printed as one
// JSON object on the last line of stdout, and the pytest test asserts on it. Progress goes to stderr.

import { createRequire } from 'node:module';
import { WebSocket } from 'ws';
import kvsWebRTC from 'amazon-kinesis-video-streams-webrtc';
import {
    KinesisVideoClient,
    CreateSignalingChannelCommand,
    DeleteSignalingChannelCommand,
    DescribeSignalingChannelCommand,
    GetSignalingChannelEndpointCommand,
} from '@aws-sdk/client-kinesis-video';
import {
    KinesisVideoSignalingClient,
    GetIceServerConfigCommand,
    SendAlexaOfferToMasterCommand,
} from '@aws-sdk/client-kinesis-video-signaling';

const { SignalingClient, Role } = kvsWebRTC;
const require = createRequire(import.meta.url);
const versionOf = (pkg) => require(`${pkg}/package.json`).version;

// The SDK opens its socket with `new (WebSocket || require('ws'))(url)`: in a browser that is the global
// WebSocket; Node 20 has no global WebSocket (the bare identifier throws a ReferenceError, which the SDK
// reports as an `error` event), so provide the `ws` package's class as the global, as the SDK expects.
globalThis.WebSocket ??= WebSocket;

const endpoint = process.env.SIGNALITE_ENDPOINT;
if (!endpoint) {
    console.error('SIGNALITE_ENDPOINT is not set');
    process.exit(2);
}
const region = process.env.AWS_REGION_UNDER_TEST || 'us-west-2';
const credentials = { accessKeyId: 'AKIDKVSJSSDKTEST', secretAccessKey: 'kvs-js-sdk-test-secret' };
const STEP_MS = 10000;

const suffix = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
const channelName = process.env.KVS_CHANNEL_NAME || `kvs-js-${suffix}`;
const viewerClientId = `viewer-${suffix}`; // like the example's random client ids
const alexaClientId = `alexa-${suffix}`;

const result = {
    node_version: process.version,
    // lib/index.js reads VERSION from process.env.PACKAGE_VERSION (set by its webpack build only).
    sdk: {
        'amazon-kinesis-video-streams-webrtc': versionOf('amazon-kinesis-video-streams-webrtc'),
        '@aws-sdk/client-kinesis-video': versionOf('@aws-sdk/client-kinesis-video'),
        '@aws-sdk/client-kinesis-video-signaling': versionOf('@aws-sdk/client-kinesis-video-signaling'),
        ws: versionOf('ws'),
    },
    channel_name: channelName,
    viewer_client_id: viewerClientId,
    steps: [],
};

const log = (...args) => console.error('[kvs_signaling]', ...args);
const step = (name) => {
    result.steps.push(name);
    log(name);
};

function finish(code) {
    process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(code));
}

const watchdog = setTimeout(() => {
    result.fatal = `watchdog: scenario still running after 50 s (last step: ${result.steps.at(-1)})`;
    finish(3);
}, 50000);

function errorInfo(err) {
    if (err === null || err === undefined) return null;
    // ws delivers `error` to addEventListener listeners as an ErrorEvent-like object wrapping the Error.
    const inner = err.error instanceof Error ? err.error : err;
    return {
        name: inner.name ?? null,
        code: inner.code ?? null,
        message: inner.message ?? String(inner),
        http_status: err.$metadata?.httpStatusCode ?? null,
        fault: err.$fault ?? null,
    };
}

function withTimeout(promise, what, ms = STEP_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function once(emitter, event, what) {
    return withTimeout(new Promise((resolve) => emitter.once(event, (...args) => resolve(args))), what);
}

async function until(predicate, what, ms = STEP_MS) {
    const deadline = Date.now() + ms;
    while (!predicate()) {
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
    }
}

const b64 = (obj) => Buffer.from(JSON.stringify(obj), 'utf8').toString('base64');
const unb64 = (s) => JSON.parse(Buffer.from(s, 'base64').toString('utf8'));

// --- realistic signaling payloads (what RTCSessionDescription / RTCIceCandidate serialize to) ---------
function sdp(kind, origin, sessionName, ufrag, fingerprintByte) {
    const fp = Array.from({ length: 32 }, (_, i) => ((i * 7 + fingerprintByte) % 256).toString(16).padStart(2, '0'))
        .join(':')
        .toUpperCase();
    return [
        'v=0',
        `o=- ${origin} 2 IN IP4 127.0.0.1`,
        `s=${sessionName}`,
        't=0 0',
        'a=group:BUNDLE 0 1',
        'a=extmap-allow-mixed',
        'a=msid-semantic: WMS',
        'm=video 9 UDP/TLS/RTP/SAVPF 96 97',
        'c=IN IP4 0.0.0.0',
        'a=rtcp:9 IN IP4 0.0.0.0',
        `a=ice-ufrag:${ufrag}`,
        `a=ice-pwd:${ufrag}PasswordOf24Chars+/x`,
        'a=ice-options:trickle',
        `a=fingerprint:sha-256 ${fp}`,
        `a=setup:${kind === 'offer' ? 'actpass' : 'active'}`,
        'a=mid:0',
        `a=${kind === 'offer' ? 'recvonly' : 'sendonly'}`,
        'a=rtcp-mux',
        'a=rtpmap:96 H264/90000',
        'a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f',
        'a=rtpmap:97 rtx/90000',
        'a=fmtp:97 apt=96',
        'm=application 9 UDP/DTLS/SCTP webrtc-datachannel',
        'c=IN IP4 0.0.0.0',
        `a=ice-ufrag:${ufrag}`,
        'a=mid:1',
        'a=sctp-port:5000',
        'a=max-message-size:262144',
        '',
    ].join('\r\n');
}

const offer = { type: 'offer', sdp: sdp('offer', '4611731400430051336', `offer-from-${viewerClientId}`, 'vWr1', 3) };
const answerFor = (remoteClientId) => ({
    type: 'answer',
    sdp: sdp('answer', '1776190218712823917', `answer-for-${remoteClientId}`, 'mAs7', 11),
});
const candidates = (ufrag, port0, who) =>
    [0, 1, 2].map((i) => ({
        candidate:
            i === 2
                ? `candidate:${900 + i} 1 udp 41885439 127.0.0.1 ${port0 + i} typ relay raddr 127.0.0.1 rport ${port0} generation 0 ufrag ${ufrag} network-id 1`
                : `candidate:${100 + i} ${i + 1} udp 2122260223 127.0.0.1 ${port0 + i} typ host generation 0 ufrag ${ufrag} network-id 1`,
        sdpMid: String(i % 2),
        sdpMLineIndex: i % 2,
        usernameFragment: `${ufrag}-${who}`,
    }));
const viewerCandidates = candidates('vWr1', 50000, 'viewer');
const masterCandidates = candidates('mAs7', 60000, 'master');

// --- instrumentation: raw frames on the SDK's socket (read-only observation) -------------------------
function instrument(client, record) {
    // `websocket` is created inside open(); called from the `open` handler, so it exists.
    const ws = client.websocket;
    ws.addEventListener('message', (event) => {
        record.received_frames.push(String(event.data));
    });
    const send = ws.send.bind(ws);
    ws.send = (data, ...rest) => {
        record.sent_frames.push(String(data));
        return send(data, ...rest);
    };
}

function newRecord() {
    return {
        opens: 0,
        closes: 0,
        errors: [],
        status_responses: [],
        sdp_offers: [],
        sdp_answers: [],
        ice_candidates: [],
        sent_frames: [],
        received_frames: [],
    };
}

function watch(client, record) {
    const handlers = {
        open: () => {
            record.opens += 1;
            instrument(client, record);
        },
        close: () => {
            record.closes += 1;
        },
        error: (err) => record.errors.push(errorInfo(err)),
        statusResponse: (status) => record.status_responses.push(status),
        sdpOffer: (payload, remoteClientId) =>
            record.sdp_offers.push({ payload, remote_client_id: remoteClientId ?? null }),
        sdpAnswer: (payload, remoteClientId) =>
            record.sdp_answers.push({ payload, remote_client_id: remoteClientId ?? null }),
        iceCandidate: (payload, remoteClientId) =>
            record.ice_candidates.push({ payload, remote_client_id: remoteClientId ?? null }),
    };
    for (const [name, fn] of Object.entries(handlers)) client.on(name, fn);
    return () => {
        for (const [name, fn] of Object.entries(handlers)) client.off(name, fn);
    };
}

// --- the example's control-plane sequence, for one role ------------------------------------------------
async function prepare(kinesisVideoClient, role, protocols) {
    const describe = await kinesisVideoClient.send(new DescribeSignalingChannelCommand({ ChannelName: channelName }));
    const channelARN = describe.ChannelInfo.ChannelARN;
    const endpointResponse = await kinesisVideoClient.send(
        new GetSignalingChannelEndpointCommand({
            ChannelARN: channelARN,
            SingleMasterChannelEndpointConfiguration: { Protocols: protocols, Role: role },
        }),
    );
    const endpoints = {};
    for (const e of endpointResponse.ResourceEndpointList) endpoints[e.Protocol] = e.ResourceEndpoint;
    const signalingChannelsClient = new KinesisVideoSignalingClient({ region, credentials, endpoint: endpoints.HTTPS });
    const ice = await signalingChannelsClient.send(new GetIceServerConfigCommand({ ChannelARN: channelARN }));
    return {
        channelARN,
        describe: describe.ChannelInfo,
        endpoints,
        endpoint_list: endpointResponse.ResourceEndpointList,
        ice_server_list: ice.IceServerList ?? null,
        signalingChannelsClient,
    };
}

async function main() {
    const kinesisVideoClient = new KinesisVideoClient({ region, credentials, endpoint, correctClockSkew: true });

    step('CreateSignalingChannel');
    const created = await kinesisVideoClient.send(new CreateSignalingChannelCommand({ ChannelName: channelName }));
    result.created_channel_arn = created.ChannelARN;

    step('master: Describe -> GetSignalingChannelEndpoint -> GetIceServerConfig');
    const m = await prepare(kinesisVideoClient, Role.MASTER, ['HTTPS', 'WSS']);
    step('viewer: Describe -> GetSignalingChannelEndpoint -> GetIceServerConfig');
    const v = await prepare(kinesisVideoClient, Role.VIEWER, ['WSS', 'HTTPS']);
    const channelARN = m.channelARN;
    result.channel = {
        arn: channelARN,
        status: m.describe.ChannelStatus,
        type: m.describe.ChannelType,
        message_ttl_seconds: m.describe.SingleMasterConfiguration?.MessageTtlSeconds ?? null,
    };
    result.endpoints = { master: m.endpoints, viewer: v.endpoints };
    result.endpoint_lists = { master: m.endpoint_list, viewer: v.endpoint_list };
    result.ice_server_list = { master: m.ice_server_list, viewer: v.ice_server_list };

    const clientArgs = { region, credentials, systemClockOffset: kinesisVideoClient.config.systemClockOffset };
    const master = new SignalingClient({
        ...clientArgs,
        channelARN,
        channelEndpoint: m.endpoints.WSS,
        role: Role.MASTER,
    });
    const viewer = new SignalingClient({
        ...clientArgs,
        channelARN: v.channelARN,
        channelEndpoint: v.endpoints.WSS,
        role: Role.VIEWER,
        clientId: viewerClientId,
    });
    const masterRec = newRecord();
    const viewerRec = newRecord();
    const unwatchMaster = watch(master, masterRec);
    watch(viewer, viewerRec);
    result.master = masterRec;
    result.viewer = viewerRec;
    result.sent = { offer, viewer_candidates: viewerCandidates, master_candidates: masterCandidates, answers: {} };

    // The master answers every offer it gets (a viewer's or an Alexa one), then trickles its candidates.
    master.on('sdpOffer', (_offer, remoteClientId) => {
        const answer = answerFor(remoteClientId);
        result.sent.answers[remoteClientId] = answer;
        master.sendSdpAnswer(answer, remoteClientId);
        if (remoteClientId === viewerClientId) {
            for (const c of masterCandidates) master.sendIceCandidate(c, remoteClientId);
        }
    });
    viewer.on('open', () => {
        viewer.sendSdpOffer(offer);
        for (const c of viewerCandidates) viewer.sendIceCandidate(c);
    });

    step('master: open');
    const masterOpen = once(master, 'open', 'master open');
    master.open();
    await masterOpen;

    step('viewer: open, offer, candidates');
    const viewerOpen = once(viewer, 'open', 'viewer open');
    viewer.open();
    await viewerOpen;

    step('exchange: offer -> answer, candidates both ways');
    await until(
        () =>
            masterRec.sdp_offers.length >= 1 &&
            masterRec.ice_candidates.length >= viewerCandidates.length &&
            viewerRec.sdp_answers.length >= 1 &&
            viewerRec.ice_candidates.length >= masterCandidates.length,
        'the offer, the answer and all candidates to arrive',
    );

    step('SendAlexaOfferToMaster with the SDK master connected');
    const alexaOffer = { type: 'offer', sdp: sdp('offer', '8080808080808080808', `offer-from-${alexaClientId}`, 'aLx9', 17) };
    result.alexa = { sender_client_id: alexaClientId, offer: alexaOffer, message_payload: b64(alexaOffer) };
    try {
        const response = await m.signalingChannelsClient.send(
            new SendAlexaOfferToMasterCommand({
                ChannelARN: channelARN,
                SenderClientId: alexaClientId,
                MessagePayload: result.alexa.message_payload,
            }),
        );
        result.alexa.answer = response.Answer ?? null;
        result.alexa.http_status = response.$metadata.httpStatusCode;
        try {
            result.alexa.answer_decoded = response.Answer ? unb64(response.Answer) : null;
        } catch (e) {
            result.alexa.answer_decode_error = String(e);
        }
    } catch (err) {
        result.alexa.error = errorInfo(err);
    }

    step('close viewer and master');
    const viewerClosed = once(viewer, 'close', 'viewer close');
    viewer.close();
    await viewerClosed;
    const masterClosed = once(master, 'close', 'master close');
    master.close();
    await masterClosed;

    step('SendAlexaOfferToMaster with no master connected');
    const t0 = Date.now();
    try {
        const response = await m.signalingChannelsClient.send(
            new SendAlexaOfferToMasterCommand({
                ChannelARN: channelARN,
                SenderClientId: `${alexaClientId}-2`,
                MessagePayload: result.alexa.message_payload,
            }),
        );
        result.alexa_no_master = { unexpected_success: response.Answer ?? null };
    } catch (err) {
        result.alexa_no_master = { error: errorInfo(err) };
    }
    result.alexa_no_master.elapsed_ms = Date.now() - t0;

    step('master re-opens; the channel is deleted under it');
    const deleteRec = newRecord();
    unwatchMaster();
    watch(master, deleteRec);
    result.master_on_delete = deleteRec;
    const masterReopened = once(master, 'open', 'master re-open');
    master.open();
    await masterReopened;
    const masterClosedByDelete = once(master, 'close', 'master close after DeleteSignalingChannel');
    await kinesisVideoClient.send(new DeleteSignalingChannelCommand({ ChannelARN: channelARN }));
    const tDelete = Date.now();
    try {
        await masterClosedByDelete;
        deleteRec.closed_after_ms = Date.now() - tDelete;
    } catch (err) {
        deleteRec.wait_error = String(err.message);
    }

    step('GetIceServerConfig on the deleted channel');
    try {
        await m.signalingChannelsClient.send(new GetIceServerConfigCommand({ ChannelARN: channelARN }));
        result.ice_after_delete = { unexpected_success: true };
    } catch (err) {
        result.ice_after_delete = { error: errorInfo(err) };
    }

    step('viewer connects to the deleted channel');
    const lateRec = newRecord();
    const late = new SignalingClient({
        ...clientArgs,
        channelARN,
        channelEndpoint: v.endpoints.WSS,
        role: Role.VIEWER,
        clientId: `${viewerClientId}-late`,
    });
    watch(late, lateRec);
    const events = [];
    for (const name of ['open', 'error', 'close']) late.on(name, () => events.push(name));
    lateRec.events = events;
    result.viewer_on_deleted_channel = lateRec;
    const tLate = Date.now();
    const lateClosed = once(late, 'close', 'the late viewer to be closed');
    late.open();
    try {
        await lateClosed;
        lateRec.closed_after_ms = Date.now() - tLate;
    } catch (err) {
        lateRec.wait_error = String(err.message);
        late.close();
    }
}

main()
    .then(() => {
        clearTimeout(watchdog);
        step('done');
        finish(0);
    })
    .catch((err) => {
        clearTimeout(watchdog);
        result.fatal = `${err?.name ?? 'Error'}: ${err?.message ?? err} (last step: ${result.steps.at(-1)})`;
        result.fatal_error = errorInfo(err);
        log(err);
        finish(1);
    });
