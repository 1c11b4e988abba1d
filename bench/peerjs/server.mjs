// PeerJS server (npm `peer`, pinned in package.json) for bench/relay.py.
//
//   node bench/peerjs/server.mjs --port 9000 [--lifetime 600]
//
// Stock settings except `concurrent_limit` (default 5000, raised so the idle-connection test can
// hold 10k+ peers) and `alive_timeout` (default 90 s; raised so a long run never drops silent
// peers). Prints "ready" once listening; exits on SIGINT/SIGTERM or after --lifetime seconds.
import { PeerServer } from "peer";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const port = Number(arg("port", "9000"));
const lifetime = Number(arg("lifetime", "600"));

const notListening = setTimeout(() => {
  console.error("not listening after 10 s (port in use?)");
  process.exit(1);
}, 10_000);
const peer = PeerServer(
  { host: "127.0.0.1", port, key: "peerjs", path: "/", concurrent_limit: 1_000_000, alive_timeout: 3_600_000 },
  () => {
    clearTimeout(notListening);
    console.log("ready");
  },
);
peer.on("error", () => {}); // a client vanishing mid-frame must not kill the benchmark server
process.on("uncaughtException", (e) => {
  console.error("fatal:", e); // e.g. EADDRINUSE: never linger without a listening socket
  process.exit(1);
});

const stop = () => process.exit(0);
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
setTimeout(stop, lifetime * 1000).unref();
