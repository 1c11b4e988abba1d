// The KVS WebRTC JS SDK's SignalingClient across two signalite nodes of one cluster.
//
// Run by tests/e2e/test_cluster_js_sdk.py; by hand (two nodes sharing --redis, --database and the data dir):
//   NODE_EXTRA_CA_CERTS=<data-dir>/tls/ca.pem SIGNALITE_ENDPOINT_A=https://127.0.0.1:4567 \
//   SIGNALITE_ENDPOINT_B=https://127.0.0.1:4568 node kvs_cluster.mjs
//
// The master does the SDK example's control-plane sequence against node A (so it gets A's endpoints and
// signals through A), the viewer against node B. Then: offer / answer / ICE candidates both ways across
// the nodes, SendAlexaOfferToMaster through node B's HTTPS endpoint while the master is on A, and
// DeleteSignalingChannel through node B while both are connected. Nothing is asserted here: what was
// observed is printed as one JSON object on the last line of stdout. Progress goes to stderr.

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
globalThis.WebSocket ??= WebSocket; // Node 20 has no global WebSocket; the SDK expects one

const endpointA = process.env.SIGNALITE_ENDPOINT_A;
const endpointB = process.env.SIGNALITE_ENDPOINT_B;
if (!endpointA || !endpointB) {
    console.error('SIGNALITE_ENDPOINT_A and SIGNALITE_ENDPOINT_B must be set');
    process.exit(2);
}
const region = process.env.AWS_REGION_UNDER_TEST || 'us-west-2';
const credentials = { accessKeyId: 'AKIDKVSCLUSTERTEST', secretAccessKey: 'kvs-cluster-test-secret' };
const STEP_MS = 10000;

const suffix = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
const channelName = `kvs-cluster-${suffix}`;
const viewerClientId = `viewer-${suffix}`;
const alexaClientId = `alexa-${suffix}`;

const result = { channel_name: channelName, viewer_client_id: viewerClientId, steps: [] };
const log = (...args) => console.error('[kvs_cluster]', ...args);
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
    const inner = err.error instanceof Error ? err.error : err;
    return {
        name: inner.name ?? null,
        code: inner.code ?? null,
        message: inner.message ?? String(inner),
        http_status: err.$metadata?.httpStatusCode ?? null,
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

function sdp(kind, sessionName, ufrag) {
    return [
        'v=0',
        `o=- ${kind === 'offer' ? '4611731400430051336' : '1776190218712823917'} 2 IN IP4 127.0.0.1`,
        `s=${sessionName}`,
        't=0 0',
        'a=group:BUNDLE 0',
        'm=video 9 UDP/TLS/RTP/SAVPF 96',
        'c=IN IP4 0.0.0.0',
        `a=ice-ufrag:${ufrag}`,
        `a=ice-pwd:${ufrag}PasswordOf24Chars+/x`,
        'a=ice-options:trickle',
        `a=setup:${kind === 'offer' ? 'actpass' : 'active'}`,
        'a=mid:0',
        'a=rtcp-mux',
        'a=rtpmap:96 H264/90000',
        '',
    ].join('\r\n');
}

const offer = { type: 'offer', sdp: sdp('offer', `offer-from-${viewerClientId}`, 'vWr1') };
const answerFor = (remoteClientId) => ({ type: 'answer', sdp: sdp('answer', `answer-for-${remoteClientId}`, 'mAs7') });
const candidates = (ufrag, port0) =>
    [0, 1, 2].map((i) => ({
        candidate: `candidate:${100 + i} 1 udp 2122260223 127.0.0.1 ${port0 + i} typ host generation 0 ufrag ${ufrag}`,
        sdpMid: '0',
        sdpMLineIndex: 0,
    }));
const viewerCandidates = candidates('vWr1', 50000);
const masterCandidates = candidates('mAs7', 60000);

function newRecord() {
    return {
        opens: 0,
        closes: 0,
        errors: [],
        status_responses: [],
        sdp_offers: [],
        sdp_answers: [],
        ice_candidates: [],
        received_frames: [],
    };
}

function watch(client, record) {
    client.on('open', () => {
        record.opens += 1;
        client.websocket.addEventListener('message', (event) => record.received_frames.push(String(event.data)));
    });
    client.on('close', () => {
        record.closes += 1;
    });
    client.on('error', (err) => record.errors.push(errorInfo(err)));
    client.on('statusResponse', (status) => record.status_responses.push(status));
    client.on('sdpOffer', (payload, id) => record.sdp_offers.push({ payload, remote_client_id: id ?? null }));
    client.on('sdpAnswer', (payload, id) => record.sdp_answers.push({ payload, remote_client_id: id ?? null }));
    client.on('iceCandidate', (payload, id) => record.ice_candidates.push({ payload, remote_client_id: id ?? null }));
}

// The SDK example's control-plane sequence, against one node.
async function prepare(kinesisVideoClient, role, protocols) {
    const describe = await kinesisVideoClient.send(new DescribeSignalingChannelCommand({ ChannelName: channelName }));
    const channelARN = describe.ChannelInfo.ChannelARN;
    const response = await kinesisVideoClient.send(
        new GetSignalingChannelEndpointCommand({
            ChannelARN: channelARN,
            SingleMasterChannelEndpointConfiguration: { Protocols: protocols, Role: role },
        }),
    );
    const endpoints = {};
    for (const e of response.ResourceEndpointList) endpoints[e.Protocol] = e.ResourceEndpoint;
    const signaling = new KinesisVideoSignalingClient({ region, credentials, endpoint: endpoints.HTTPS });
    const ice = await signaling.send(new GetIceServerConfigCommand({ ChannelARN: channelARN }));
    return { channelARN, endpoints, ice_server_list: ice.IceServerList ?? null, signaling };
}

async function main() {
    const kvA = new KinesisVideoClient({ region, credentials, endpoint: endpointA });
    const kvB = new KinesisVideoClient({ region, credentials, endpoint: endpointB });

    step('CreateSignalingChannel through node A');
    result.created_channel_arn = (
        await kvA.send(new CreateSignalingChannelCommand({ ChannelName: channelName }))
    ).ChannelARN;

    step('master: control plane through node A; viewer: through node B');
    const m = await prepare(kvA, Role.MASTER, ['WSS', 'HTTPS']);
    const v = await prepare(kvB, Role.VIEWER, ['WSS', 'HTTPS']);
    result.arns = { master: m.channelARN, viewer: v.channelARN };
    result.endpoints = { master: m.endpoints, viewer: v.endpoints };
    result.ice_server_list = { master: m.ice_server_list, viewer: v.ice_server_list };

    const master = new SignalingClient({
        region,
        credentials,
        channelARN: m.channelARN,
        channelEndpoint: m.endpoints.WSS,
        role: Role.MASTER,
    });
    const viewer = new SignalingClient({
        region,
        credentials,
        channelARN: v.channelARN,
        channelEndpoint: v.endpoints.WSS,
        role: Role.VIEWER,
        clientId: viewerClientId,
    });
    const masterRec = newRecord();
    const viewerRec = newRecord();
    watch(master, masterRec);
    watch(viewer, viewerRec);
    result.master = masterRec;
    result.viewer = viewerRec;
    result.sent = { offer, viewer_candidates: viewerCandidates, master_candidates: masterCandidates, answers: {} };

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

    step('master opens on node A');
    const masterOpen = once(master, 'open', 'master open');
    master.open();
    await masterOpen;

    step('viewer opens on node B: offer, candidates');
    const viewerOpen = once(viewer, 'open', 'viewer open');
    viewer.open();
    await viewerOpen;

    step('exchange across the nodes');
    await until(
        () =>
            masterRec.sdp_offers.length >= 1 &&
            masterRec.ice_candidates.length >= viewerCandidates.length &&
            viewerRec.sdp_answers.length >= 1 &&
            viewerRec.ice_candidates.length >= masterCandidates.length,
        'the offer, the answer and all candidates to cross the nodes',
    );

    step('SendAlexaOfferToMaster through node B');
    const alexaOffer = { type: 'offer', sdp: sdp('offer', `offer-from-${alexaClientId}`, 'aLx9') };
    result.alexa = { sender_client_id: alexaClientId, offer: alexaOffer, message_payload: b64(alexaOffer) };
    try {
        const response = await v.signaling.send(
            new SendAlexaOfferToMasterCommand({
                ChannelARN: v.channelARN,
                SenderClientId: alexaClientId,
                MessagePayload: result.alexa.message_payload,
            }),
        );
        result.alexa.http_status = response.$metadata.httpStatusCode;
        result.alexa.answer = response.Answer ?? null;
        result.alexa.answer_decoded = response.Answer ? unb64(response.Answer) : null;
    } catch (err) {
        result.alexa.error = errorInfo(err);
    }

    step('DeleteSignalingChannel through node B with both connected');
    const masterClosed = once(master, 'close', 'master close after delete');
    const viewerClosed = once(viewer, 'close', 'viewer close after delete');
    await kvB.send(new DeleteSignalingChannelCommand({ ChannelARN: v.channelARN }));
    const t0 = Date.now();
    result.on_delete = {};
    for (const [name, closed] of [
        ['master', masterClosed],
        ['viewer', viewerClosed],
    ]) {
        try {
            await closed;
            result.on_delete[name] = { closed_after_ms: Date.now() - t0 };
        } catch (err) {
            result.on_delete[name] = { wait_error: String(err.message) };
        }
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
