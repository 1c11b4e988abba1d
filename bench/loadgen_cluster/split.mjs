// Masters on one node, viewers on another: bench/loadgen/loadgen.mjs, unchanged, with its TCP
// connections routed by role.
//
//   node bench/loadgen_cluster/split.mjs '<json config>'
//
// The config is loadgen.mjs's (mode "relay"), plus `split: {masterPort, viewerPort}`. loadgen.mjs
// builds every URL for cfg.port; this wrapper replaces `net.connect` before loading it, so each
// connection to cfg.port goes to masterPort or viewerPort instead. Which one is decided by order:
// in relay mode loadgen.mjs opens (and awaits) all `channels.length` masters before the first viewer.
// That order is checked, never assumed: the first bytes written on each socket are the WebSocket
// handshake, whose URL names a ClientId for a viewer and none for a master. Every socket whose role
// does not match the port it was sent to is counted, and the counts are printed at exit as one JSON
// line {"event":"split", ...} on stderr (bench/cluster.py treats any mismatch as an error).
//
// The Host header and the presigned URL still name cfg.port. Signalite in open mode (the benchmark's
// mode) checks neither; strict mode would need the generator to sign for the other port.
import net from "node:net";

const cfg = JSON.parse(process.argv[2]);
const split = cfg.split;
if (!split || cfg.mode !== "relay") {
  process.stderr.write('split.mjs: needs config.mode "relay" and config.split {masterPort, viewerPort}\n');
  process.exit(2);
}
const masters = cfg.channels.length;
const counts = { event: "split", masters_to_master_port: 0, viewers_to_viewer_port: 0, mismatched: 0, other: 0 };

const original = net.connect;
let opened = 0;
net.connect = function connect(options, ...rest) {
  if (typeof options !== "object" || options === null || Number(options.port) !== Number(cfg.port)) {
    counts.other++;
    return original.call(this, options, ...rest);
  }
  const asMaster = opened++ < masters;
  const sock = original.call(this, { ...options, port: asMaster ? split.masterPort : split.viewerPort }, ...rest);
  const write = sock.write;
  sock.write = function first(chunk, ...args) {
    sock.write = write; // only the handshake is inspected
    const head = String(chunk).slice(0, 4096);
    const isViewer = head.includes("X-Amz-ClientId=");
    if (!head.startsWith("GET ")) counts.other++;
    else if (asMaster && !isViewer) counts.masters_to_master_port++;
    else if (!asMaster && isViewer) counts.viewers_to_viewer_port++;
    else counts.mismatched++;
    return write.call(this, chunk, ...args);
  };
  return sock;
};

process.on("exit", () => process.stderr.write(JSON.stringify(counts) + "\n"));

await import("../loadgen/loadgen.mjs");
