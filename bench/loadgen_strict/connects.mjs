// WebSocket connect generator for bench/strict.py (Node, no npm packages: node:net only).
//
//   node bench/loadgen_strict/connects.mjs '<json config>'
//
// config: {host, port, targets: path of a file with one request target ("/?X-Amz-...") per line,
//          concurrency, warmup, duration (seconds), deadline (seconds, hard exit)}
//
// `concurrency` loops each repeat: open a TCP connection, send the WebSocket upgrade request for the
// next target (round-robin over the file), wait for "101", send a close frame (code 1000), wait for
// the server's close frame and its FIN, then close our side. Nothing else is sent, so the server's
// work per connect is: parse the handshake, admit (verify the presigned URL in strict mode, look the
// channel up, join the hub), upgrade, run the close handshake, leave the hub.
// The server closes first, so TIME_WAIT stays on the server's side and this process never runs out
// of ephemeral ports.
//
// The targets were presigned by bench/strict.py with signalite.auth.sigv4.presign_url; the Host
// header sent here is the one that was signed ("host:port"). A handshake that is not answered with
// 101 counts as a failure, and the first failure's status line is reported.
//
// Output: JSON lines on stdout: {"event":"measure_start"}, {"event":"measure_end"}, then
// {"event":"result", ...}. Latency is per connect: TCP connect to the server's close frame.
import fs from "node:fs";
import net from "node:net";

const cfg = JSON.parse(process.argv[2]);
const hard = setTimeout(() => {
  out({ event: "error", error: "hard deadline reached" });
  process.exit(3);
}, (cfg.deadline ?? 60) * 1000);
hard.unref();

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const targets = fs.readFileSync(cfg.targets, "utf8").split("\n").filter((l) => l.length > 0);
if (targets.length === 0) {
  out({ event: "error", error: "no targets" });
  process.exit(2);
}
const hostHeader = `${cfg.host}:${cfg.port}`;
const TAIL =
  `\r\nHost: ${hostHeader}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
// A masked close frame, code 1000, zero masking key (legal; XOR with zero is the identity).
const CLOSE_1000 = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);

class Histogram {
  constructor() {
    this.buckets = new Uint32Array(2_000_000); // 1 µs buckets up to 2 s
    this.count = 0;
    this.max = 0;
  }
  add(us) {
    us = Math.max(0, Math.round(us));
    this.buckets[Math.min(us, this.buckets.length - 1)]++;
    if (us > this.max) this.max = us;
    this.count++;
  }
  pct(p) {
    if (this.count === 0) return null;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i];
      if (seen >= rank) return i / 1000;
    }
    return this.max / 1000;
  }
}

let next = 0;
let measuring = false;
let running = true;
let done = 0;
let failed = 0;
let firstError = null;
const hist = new Histogram();

// One connect; resolves when finished (never rejects). Returns true on a full close handshake.
function connectOnce() {
  const target = targets[next++ % targets.length];
  const t0 = performance.now();
  return new Promise((resolve) => {
    let state = 0; // 0 handshake, 1 open (close sent), 2 got the server's close frame, 3 done
    let buf = null;
    const sock = net.connect({ host: cfg.host, port: cfg.port, noDelay: true });
    const finish = (ok, err) => {
      if (state === 3) return;
      const counted = measuring;
      state = 3;
      clearTimeout(timer);
      sock.destroy();
      if (counted) {
        if (ok) {
          done++;
          hist.add((performance.now() - t0) * 1000);
        } else {
          failed++;
          firstError ??= String(err);
        }
      }
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false, "timed out after 10 s"), 10_000);
    sock.on("connect", () => sock.write(`GET ${target} HTTP/1.1${TAIL}`));
    sock.on("data", (chunk) => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
      if (state === 0) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const status = buf.toString("latin1", 0, Math.min(end, 300)).split("\r\n")[0];
        if (!status.startsWith("HTTP/1.1 101")) {
          const body = buf.toString("utf8", end + 4, Math.min(buf.length, end + 4 + 300));
          return finish(false, `${status} ${body}`);
        }
        state = 1;
        buf = buf.subarray(end + 4);
        sock.write(CLOSE_1000);
      }
      if (state === 1 && buf.length >= 2) {
        const opcode = buf[0] & 0x0f;
        if (opcode !== 8) return finish(false, `unexpected frame opcode ${opcode} before the close frame`);
        state = 2; // now wait for the server's FIN, so TIME_WAIT lands on its side
      }
    });
    sock.on("end", () => finish(state === 2, "the server hung up before its close frame"));
    sock.on("error", (e) => finish(false, e.message));
    sock.on("close", () => finish(state === 2, "connection closed before the close handshake"));
  });
}

async function worker() {
  while (running) await connectOnce();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

try {
  const workers = Array.from({ length: cfg.concurrency }, worker);
  await sleep(cfg.warmup * 1000);
  out({ event: "measure_start" });
  measuring = true;
  const c0 = cpuSeconds();
  const t0 = performance.now();
  await sleep(cfg.duration * 1000);
  measuring = false;
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds() - c0;
  out({ event: "measure_end" });
  running = false;
  await Promise.race([Promise.all(workers), sleep(11_000)]);
  out({
    event: "result",
    connects: done,
    failed,
    first_error: firstError,
    seconds,
    connects_per_s: done / seconds,
    p50_ms: hist.pct(50),
    p99_ms: hist.pct(99),
    loadgen_cpu: cpu / seconds,
    targets: targets.length,
  });
  process.exit(0);
} catch (e) {
  out({ event: "error", error: String(e?.stack ?? e) });
  process.exit(2);
}
