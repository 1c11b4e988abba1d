// WebSocket load generator for bench/relay.py: one Node process on one core (its own minimal
// client by default, npm `ws` with config.client "ws").
//
//   node bench/loadgen/loadgen.mjs '<json config>'
//
// Speaks two protocols to the same workloads:
//   kvs    - the KVS signaling WebSocket (signalite, bench/bare_relay.py): masters connect with
//            `?X-Amz-ChannelARN=…`, viewers add `&X-Amz-ClientId=…`; every URL is SigV4-presigned
//            exactly like the KVS SDKs do (service kinesisvideo, only `host` signed).
//   peerjs - the PeerJS server protocol: `/peerjs?key=peerjs&id=…&token=…`, frames
//            `{type, dst, payload}` in, `{type, src, dst, payload}` out, an OPEN frame on connect.
// Modes (config.mode):
//   relay    - C channels × V viewers; each viewer sends ICE-sized messages to its master, the
//              master echoes each one back to that viewer. Closed loop (config.window messages in
//              flight per viewer) when config.rate is null, else open loop: viewers send
//              rate/2 messages/s in total on a fixed schedule (the latency clock starts at the
//              scheduled time, so a late generator counts against the figure, never hides it).
//              Latency is one-way, sender to recipient, stamped in the payload (same process,
//              same clock).
//   sessions - a master per channel answers every offer; `concurrency` loops each open a new
//              viewer (new presigned URL, new ClientId), send an SDP offer, wait for the answer,
//              close (close handshake included), repeat.
//   idle     - open `count` viewer connections, print `idle_ready`, hold them until stdin says
//              `close` (or `hold` seconds pass), report how many are still open, close them.
// Output: one JSON object per line on stdout; the last one has "event":"result".
// Every loop is bounded by config durations, and a hard deadline exits the process.
import crypto from "node:crypto";
import net from "node:net";
import readline from "node:readline";
import WebSocket from "ws";

const cfg = JSON.parse(process.argv[2]);
const hardDeadline = setTimeout(() => {
  out({ event: "error", error: "hard deadline reached" });
  process.exit(3);
}, (cfg.deadline ?? 120) * 1000);
hardDeadline.unref();

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const nowUs = () => Math.round(performance.now() * 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// SigV4 presigning (query auth, as the KVS WebRTC SDKs do it)

const EMPTY_SHA256 = crypto.createHash("sha256").update("").digest("hex");
const enc = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
const keyCache = new Map();

function signingKey(secret, date, region, service) {
  const k = `${date}/${region}/${service}`;
  let key = keyCache.get(k);
  if (!key) {
    const h = (key, data) => crypto.createHmac("sha256", key).update(data).digest();
    key = h(h(h(h("AWS4" + secret, date), region), service), "aws4_request");
    keyCache.set(k, key);
  }
  return key;
}

function presign(host, path, query, cred) {
  const amzDate = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const date = amzDate.slice(0, 8);
  const service = "kinesisvideo";
  const scope = `${date}/${cred.region}/${service}/aws4_request`;
  const params = {
    ...query,
    "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
    "X-Amz-Credential": `${cred.accessKeyId}/${scope}`,
    "X-Amz-Date": amzDate,
    "X-Amz-Expires": "299",
    "X-Amz-SignedHeaders": "host",
  };
  if (cred.sessionToken) params["X-Amz-Security-Token"] = cred.sessionToken;
  const canonicalQuery = Object.keys(params)
    .map((k) => [enc(k), enc(params[k])])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const canonicalRequest = ["GET", path, canonicalQuery, `host:${host}\n`, "host", EMPTY_SHA256].join("\n");
  const stringToSign = [
    "AWS4-HMAC-SHA256",
    amzDate,
    scope,
    crypto.createHash("sha256").update(canonicalRequest).digest("hex"),
  ].join("\n");
  const signature = crypto
    .createHmac("sha256", signingKey(cred.secretAccessKey, date, cred.region, service))
    .update(stringToSign)
    .digest("hex");
  return `ws://${host}${path}?${canonicalQuery}&X-Amz-Signature=${signature}`;
}

// ---------------------------------------------------------------------------------------------
// Protocols: URLs and frames

const host = `${cfg.host}:${cfg.port}`;
const kvs = cfg.proto === "kvs";

function masterUrl(c) {
  if (kvs) return presign(host, "/", { "X-Amz-ChannelARN": cfg.channels[c] }, cfg.credentials);
  return `ws://${host}/peerjs?key=peerjs&id=m${c}&token=t`;
}

function viewerUrl(c, id) {
  if (kvs) return presign(host, "/", { "X-Amz-ChannelARN": cfg.channels[c], "X-Amz-ClientId": id }, cfg.credentials);
  return `ws://${host}/peerjs?key=peerjs&id=${id}&token=t`;
}

// viewer -> master
function toMaster(c, type, payload) {
  if (kvs) return `{"action":"${type}","messagePayload":"${payload}"}`;
  return `{"type":"${PEER_TYPE[type]}","dst":"m${c}","payload":"${payload}"}`;
}

// master -> viewer
function toViewer(id, type, payload) {
  if (kvs) return `{"action":"${type}","recipientClientId":"${id}","messagePayload":"${payload}"}`;
  return `{"type":"${PEER_TYPE[type]}","dst":"${id}","payload":"${payload}"}`;
}

const PEER_TYPE = { ICE_CANDIDATE: "CANDIDATE", SDP_OFFER: "OFFER", SDP_ANSWER: "ANSWER" };
const KVS_TYPE = { CANDIDATE: "ICE_CANDIDATE", OFFER: "SDP_OFFER", ANSWER: "SDP_ANSWER" };

// A received frame as {type (KVS name), sender, payload}, or null for anything else (PeerJS OPEN).
function parse(text) {
  const m = JSON.parse(text);
  if (kvs) return m.messageType ? { type: m.messageType, sender: m.senderClientId, payload: m.messagePayload } : null;
  const type = KVS_TYPE[m.type];
  return type ? { type, sender: m.src, payload: m.payload } : null;
}

// ---------------------------------------------------------------------------------------------
// Connections
//
// Two client implementations behind one interface, chosen by config.client:
//   raw - a minimal RFC 6455 client on a bare net.Socket (default): fixed Sec-WebSocket-Key, a
//         zero masking key (legal, and XOR with zero is the identity), unfragmented text frames.
//         Cheap enough per connect that the session workload measures the server, not Node's
//         HTTP client (see bench/README.md for the measured cost of each).
//   ws  - npm `ws`, the usual Node client, as a cross-check.
// open(url, h) calls h.open(conn), h.text(string, conn), h.close(error or null) and returns the conn
// (frames can arrive in the same read as the handshake answer, before any promise settles):
// {send(text), close(), terminate(), isOpen()}. Frames sent in one tick go out in one write (as a
// real client's burst of candidates does).

let sourceIndex = 0;
const nextSource = () => cfg.sources[sourceIndex++ % cfg.sources.length] ?? undefined;
const useWs = cfg.client === "ws";
const HANDSHAKE_TAIL =
  "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const CLOSE_1000 = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
const PONG_EMPTY = Buffer.from([0x8a, 0x80, 0, 0, 0, 0]);

function frameOf(text) {
  const n = Buffer.byteLength(text);
  const hdr = n < 126 ? 6 : n < 65536 ? 8 : 14;
  const buf = Buffer.allocUnsafe(hdr + n);
  buf[0] = 0x81;
  if (n < 126) {
    buf[1] = 0x80 | n;
  } else if (n < 65536) {
    buf[1] = 0x80 | 126;
    buf.writeUInt16BE(n, 2);
  } else {
    buf[1] = 0x80 | 127;
    buf.writeBigUInt64BE(BigInt(n), 2);
  }
  buf.writeUInt32BE(0, hdr - 4); // masking key 0
  buf.write(text, hdr);
  return buf;
}

function openRaw(url, h) {
  const u = new URL(url);
  const sock = net.connect({ host: u.hostname, port: Number(u.port), localAddress: nextSource(), noDelay: true });
  let state = 0; // 0 connecting, 1 open, 2 closing, 3 closed
  let pending = null; // unparsed bytes
  let corked = false;
  let closeTimer = null;
  const uncork = () => {
    corked = false;
    sock.uncork();
  };
  const fail = (err) => {
    if (state === 3) return;
    const wasOpen = state;
    state = 3;
    if (closeTimer) clearTimeout(closeTimer);
    sock.destroy();
    h.close(wasOpen === 0 ? err ?? new Error("closed during the handshake") : err);
  };
  const conn = {
    send(text) {
      if (state !== 1) return;
      if (!corked) {
        corked = true;
        sock.cork();
        process.nextTick(uncork);
      }
      sock.write(frameOf(text));
    },
    close() {
      if (state !== 1) return;
      state = 2;
      sock.write(CLOSE_1000);
      closeTimer = setTimeout(() => fail(null), 5000);
    },
    terminate() {
      if (state === 3) return;
      state = 3;
      if (closeTimer) clearTimeout(closeTimer);
      sock.destroy();
    },
    isOpen: () => state === 1,
  };
  sock.on("connect", () => sock.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}${HANDSHAKE_TAIL}`));
  sock.on("data", (chunk) => {
    let buf = pending === null ? chunk : Buffer.concat([pending, chunk]);
    pending = null;
    let off = 0;
    if (state === 0) {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        pending = buf;
        return;
      }
      if (buf.toString("latin1", 0, 12) !== "HTTP/1.1 101") {
        return fail(new Error(buf.toString("latin1", 0, Math.min(end, 200)).split("\r\n")[0]));
      }
      state = 1;
      off = end + 4;
      h.open(conn);
    }
    while (state !== 3 && buf.length - off >= 2) {
      const b0 = buf[off];
      let len = buf[off + 1] & 0x7f;
      let hdr = 2;
      if (len === 126) {
        if (buf.length - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        hdr = 4;
      } else if (len === 127) {
        if (buf.length - off < 10) break;
        len = Number(buf.readBigUInt64BE(off + 2));
        hdr = 10;
      }
      if (buf.length - off < hdr + len) break;
      const opcode = b0 & 0x0f;
      const start = off + hdr;
      off = start + len;
      if (opcode === 1) {
        if (!(b0 & 0x80)) return fail(new Error("fragmented frame (not expected from these servers)"));
        if (state === 1) deliver(h, buf.toString("utf8", start, off), conn);
      } else if (opcode === 8) {
        if (state === 1) sock.write(CLOSE_1000); // the server closes first: answer, then it hangs up
        state = 2;
        sock.end();
      } else if (opcode === 9) {
        if (len === 0) sock.write(PONG_EMPTY);
        else {
          const f = frameOf(buf.toString("latin1", start, off));
          f[0] = 0x8a;
          sock.write(f);
        }
      }
    }
    if (off < buf.length && state !== 3) pending = buf.subarray(off);
  });
  sock.on("error", (e) => fail(e));
  sock.on("close", () => {
    const clean = state === 2;
    if (state === 3) return;
    state = 3;
    if (closeTimer) clearTimeout(closeTimer);
    h.close(clean ? null : new Error("connection lost"));
  });
  return conn;
}

const zeroMask = (mask) => mask.fill(0);

function openWs(url, h) {
  const ws = new WebSocket(url, {
    perMessageDeflate: false,
    generateMask: zeroMask,
    skipUTF8Validation: true,
    handshakeTimeout: 10_000,
    localAddress: nextSource(),
  });
  let corked = false;
  let opened = false;
  let closed = false;
  const uncork = () => {
    corked = false;
    ws._socket?.uncork();
  };
  const conn = {
    send(text) {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (!corked && ws._socket) {
        corked = true;
        ws._socket.cork();
        process.nextTick(uncork);
      }
      ws.send(text);
    },
    close: () => ws.close(1000),
    terminate: () => ws.terminate(),
    isOpen: () => ws.readyState === WebSocket.OPEN,
  };
  let error = null;
  ws.on("open", () => {
    opened = true;
    h.open(conn);
  });
  ws.on("message", (data) => deliver(h, data.toString(), conn));
  ws.on("error", (e) => (error ??= e));
  ws.on("close", (code) => {
    if (closed) return;
    closed = true;
    h.close(!opened ? error ?? new Error("closed during the handshake") : code === 1000 ? null : error ?? new Error(`closed ${code}`));
  });
  return conn;
}

const open = useWs ? openWs : openRaw;

// A frame the workload can't handle is counted (and the first one shown), never fatal.
let frameErrors = 0;
function deliver(h, text, conn) {
  try {
    h.text(text, conn);
  } catch (e) {
    if (frameErrors++ === 0) out({ event: "warning", error: String(e?.stack ?? e), frame: text.slice(0, 300) });
  }
}

// Resolves to the open conn (rejects if the handshake fails); onText gets frames, onClose(err) later.
function connect(url, onText, onClose) {
  return new Promise((resolve, reject) => {
    let isOpen = false;
    open(url, {
      open(conn) {
        isOpen = true;
        resolve(conn);
      },
      text: onText,
      close(err) {
        if (!isOpen) reject(err ?? new Error("closed before open"));
        else onClose?.(err);
      },
    });
  });
}

// Run `tasks` (functions returning promises) with at most `limit` at once; returns settled results.
async function pool(tasks, limit) {
  const results = new Array(tasks.length);
  let next = 0;
  async function worker() {
    while (next < tasks.length) {
      const i = next++;
      try {
        results[i] = { ok: true, value: await tasks[i]() };
      } catch (e) {
        results[i] = { ok: false, error: String(e?.message ?? e) };
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: 1 µs buckets up to 1 s, then overflow.

class Histogram {
  constructor() {
    this.buckets = new Uint32Array(1_000_000);
    this.count = 0;
    this.over = 0;
    this.max = 0;
  }
  add(us) {
    if (us < 0) us = 0;
    if (us >= this.buckets.length) this.over++;
    else this.buckets[us]++;
    if (us > this.max) this.max = us;
    this.count++;
  }
  pct(p) {
    if (this.count === 0) return null;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i];
      if (seen >= rank) return i;
    }
    return this.max;
  }
  summary() {
    const ms = (v) => (v === null ? null : v / 1000);
    return { samples: this.count, p50_ms: ms(this.pct(50)), p99_ms: ms(this.pct(99)), p999_ms: ms(this.pct(99.9)), max_ms: ms(this.max) };
  }
}

function payloadOf(len, stampUs) {
  // Base64 alphabet only (digits + letters), a multiple of 4 long: valid for every server.
  const stamp = String(stampUs).padStart(16, "0");
  return stamp + FILL.slice(0, len - 16);
}
const FILL = "QWxsIHRoZSB3b3JsZCdzIGEgc3RhZ2UsIGFuZCBhbGwgdGhlIG1lbiBhbmQgd29tZW4gbWVyZWx5IHBsYXllcnM".repeat(200);

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

// ---------------------------------------------------------------------------------------------
// relay mode

async function relay() {
  const nChannels = cfg.channels.length;
  const V = cfg.viewers;
  const len = cfg.payloadLen ?? 300;
  const hist = new Histogram();
  let measuring = false;
  let sending = true;
  let delivered = 0;
  let lastReceive = 0;
  let closedEarly = 0; // connections the server closed during the run (e.g. a slow-consumer cut)
  let running = true;
  const onClose = () => running && closedEarly++;
  const masters = new Array(nChannels);
  const viewers = [];

  const record = (payload) => {
    if (measuring) {
      delivered++;
      hist.add(nowUs() - Number(payload.slice(0, 16)));
    }
  };

  const masterTasks = [];
  for (let c = 0; c < nChannels; c++) {
    masterTasks.push(async () => {
      masters[c] = await connect(masterUrl(c), (text, conn) => {
        const m = parse(text);
        if (!m) return;
        lastReceive = performance.now();
        record(m.payload);
        if (sending) conn.send(toViewer(m.sender, "ICE_CANDIDATE", payloadOf(len, nowUs())));
      }, onClose);
    });
  }
  let r = await pool(masterTasks, 64);
  let failed = r.filter((x) => !x.ok);
  if (failed.length) throw new Error(`masters failed to connect: ${failed[0].error}`);

  const openLoop = cfg.rate != null;
  const viewerTasks = [];
  for (let c = 0; c < nChannels; c++) {
    for (let v = 0; v < V; v++) {
      viewerTasks.push(async () => {
        // A fresh ClientId per run: nothing buffered for an earlier run's viewer can reach this one.
        const id = `v${cfg.tag ?? ""}${c}x${v}`;
        const viewer = { c, id, conn: null };
        viewer.conn = await connect(viewerUrl(c, id), (text, conn) => {
          const m = parse(text);
          if (!m) return;
          lastReceive = performance.now();
          record(m.payload);
          if (!openLoop && sending) conn.send(toMaster(c, "ICE_CANDIDATE", payloadOf(len, nowUs())));
        }, onClose);
        viewers.push(viewer);
      });
    }
  }
  r = await pool(viewerTasks, 64);
  failed = r.filter((x) => !x.ok);
  if (failed.length) throw new Error(`viewers failed to connect: ${failed[0].error}`);
  await sleep(200); // PeerJS OPEN frames, server-side bookkeeping

  const t0 = performance.now();
  const warmEnd = t0 + cfg.warmup * 1000;
  const end = warmEnd + cfg.duration * 1000;
  let cpu0 = 0;
  let tMeasure0 = 0;
  const startMeasure = () => {
    out({ event: "measure_start" });
    measuring = true;
    cpu0 = cpuSeconds();
    tMeasure0 = performance.now();
  };

  if (!openLoop) {
    const w = cfg.window;
    for (const viewer of viewers) for (let i = 0; i < w; i++) viewer.conn.send(toMaster(viewer.c, "ICE_CANDIDATE", payloadOf(len, nowUs())));
    await sleep(warmEnd - performance.now());
    startMeasure();
    await sleep(end - performance.now());
  } else {
    // Viewers send rate/2 per second in total (masters echo: `rate` deliveries/s), round-robin,
    // each message stamped with its scheduled time.
    const interval = 2e6 / cfg.rate; // µs between viewer sends
    const startUs = nowUs();
    let sent = 0;
    let next = 0;
    await new Promise((resolve) => {
      const step = () => {
        const now = performance.now();
        if (now >= end) return resolve();
        if (!measuring && now >= warmEnd) startMeasure();
        const nowU = nowUs();
        let burst = 0;
        while (startUs + sent * interval <= nowU && burst < 256) {
          const viewer = viewers[next];
          next = (next + 1) % viewers.length;
          viewer.conn.send(toMaster(viewer.c, "ICE_CANDIDATE", payloadOf(len, Math.round(startUs + sent * interval))));
          sent++;
          burst++;
        }
        setImmediate(step);
      };
      setImmediate(step);
    });
  }
  measuring = false;
  sending = false;
  out({ event: "measure_end" });
  const elapsed = (performance.now() - tMeasure0) / 1000;
  const cpu = cpuSeconds() - cpu0;
  // Drain: let the messages in flight arrive (none is left for the server to buffer for a master
  // that is gone), then hang up viewers first, so nothing new can be addressed to the masters.
  running = false;
  const drainEnd = performance.now() + 2000;
  while (performance.now() < drainEnd && performance.now() - lastReceive < 150) await sleep(20);
  for (const v of viewers) v.conn.terminate();
  await sleep(50);
  for (const m of masters) m.terminate();
  return {
    connections: viewers.length + nChannels,
    delivered,
    seconds: elapsed,
    msgs_per_s: delivered / elapsed,
    latency: hist.summary(),
    loadgen_cpu: cpu / elapsed,
    in_flight: openLoop ? null : viewers.length * cfg.window,
    closed_by_server: closedEarly,
    target_rate: cfg.rate ?? null,
  };
}

// ---------------------------------------------------------------------------------------------
// sessions mode

async function sessions() {
  const nChannels = cfg.channels.length;
  const offer = FILL.slice(0, cfg.offerLen ?? 2000);
  const answer = FILL.slice(1, 1 + (cfg.offerLen ?? 2000));
  const masters = [];
  for (let c = 0; c < nChannels; c++) {
    const conn = await connect(masterUrl(c), (text, self) => {
      const msg = parse(text);
      if (msg && msg.type === "SDP_OFFER") self.send(toViewer(msg.sender, "SDP_ANSWER", answer));
    });
    masters.push(conn);
  }
  await sleep(200);

  const hist = new Histogram();
  let measuring = false;
  let running = true;
  let done = 0;
  let failed = 0;
  let firstError = null;
  const t0 = performance.now();
  const warmEnd = t0 + cfg.warmup * 1000;
  const end = warmEnd + cfg.duration * 1000;
  let seq = 0;

  const one = (worker) =>
    new Promise((resolve) => {
      const c = seq % nChannels;
      const id = `s${worker}x${seq++}`;
      const start = nowUs();
      let answered = false;
      let settled = false;
      const finish = (ok, err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (measuring) {
          if (ok) {
            done++;
            hist.add(nowUs() - start);
          } else {
            failed++;
            firstError ??= String(err?.message ?? err);
          }
        }
        resolve();
      };
      const conn = open(viewerUrl(c, id), {
        open: (cn) => cn.send(toMaster(c, "SDP_OFFER", offer)),
        text(text) {
          const msg = parse(text);
          if (msg && msg.type === "SDP_ANSWER" && !answered) {
            answered = true;
            conn.close();
          }
        },
        close: (err) => finish(answered && !err, err ?? "closed before the answer"),
      });
      const timer = setTimeout(() => {
        conn.terminate();
        finish(false, "session timed out");
      }, 10_000);
    });

  let cpu0 = 0;
  let tMeasure0 = 0;
  const workers = Array.from({ length: cfg.concurrency }, async (_, w) => {
    while (running) await one(w);
  });
  await sleep(warmEnd - performance.now());
  out({ event: "measure_start" });
  measuring = true;
  cpu0 = cpuSeconds();
  tMeasure0 = performance.now();
  await sleep(end - performance.now());
  measuring = false;
  running = false;
  out({ event: "measure_end" });
  const elapsed = (performance.now() - tMeasure0) / 1000;
  const cpu = cpuSeconds() - cpu0;
  await Promise.race([Promise.all(workers), sleep(11_000)]);
  for (const m of masters) m.terminate();
  return {
    sessions: done,
    failed,
    first_error: firstError,
    seconds: elapsed,
    sessions_per_s: done / elapsed,
    session_latency: hist.summary(),
    loadgen_cpu: cpu / elapsed,
    concurrency: cfg.concurrency,
  };
}

// ---------------------------------------------------------------------------------------------
// idle mode

async function idle() {
  const nChannels = cfg.channels.length;
  const conns = [];
  let closedEarly = 0;
  const t0 = performance.now();
  const tasks = [];
  for (let i = 0; i < cfg.count; i++) {
    tasks.push(async () => {
      const c = i % nChannels;
      const conn = await connect(viewerUrl(c, `i${i}`), () => {}, () => closedEarly++);
      conns.push(conn);
    });
  }
  const r = await pool(tasks, cfg.connectConcurrency ?? 200);
  const failures = r.filter((x) => !x.ok);
  const connectSeconds = (performance.now() - t0) / 1000;
  out({
    event: "idle_ready",
    open: conns.length,
    failed: failures.length,
    first_error: failures[0]?.error ?? null,
    connect_seconds: connectSeconds,
  });
  // Hold until the driver has read the server's memory (stdin "close") or `hold` seconds pass.
  await Promise.race([
    sleep(cfg.hold * 1000),
    new Promise((resolve) => {
      readline.createInterface({ input: process.stdin }).on("line", (line) => line.trim() === "close" && resolve());
    }),
  ]);
  const held = conns.filter((c) => c.isOpen()).length;
  for (const c of conns) c.terminate();
  return { requested: cfg.count, opened: conns.length, held, failed: failures.length, connect_seconds: connectSeconds };
}

// ---------------------------------------------------------------------------------------------

const modes = { relay, sessions, idle };
try {
  const result = await modes[cfg.mode]();
  out({ event: "result", mode: cfg.mode, frame_errors: frameErrors, ...result });
  process.exit(0);
} catch (e) {
  out({ event: "error", error: String(e?.stack ?? e) });
  process.exit(2);
}
