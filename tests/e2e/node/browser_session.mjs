// Drive headless Debian chromium (playwright-core) through one KVS WebRTC session via signalite:
// a master page and a viewer page (tests/e2e/browser/peer.html) using the KVS JS SDK's browser bundle
// and real RTCPeerConnections with chromium's fake camera.
//
//   node browser_session.mjs '<config JSON>'
//
// config: { pageUrl, channelARN, region, credentials, iceServers, masterEndpoint, viewerEndpoint,
//           viewerClientId, message, spkiHash, screenshotsDir, timeoutMs }
// Prints one JSON object on stdout: each page's report (see peer.js), console errors, the browser
// version and the flags used. Judging the result is left to the caller (tests/e2e/test_browser.py).
// Runs inside a private network namespace (tests/e2e/netns.py): every address here is 127.0.0.1.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2]);
const deadline = Date.now() + (config.timeoutMs ?? 45000);

// Flags this machine needs (verified with chromium 156 as root in a loopback-only namespace):
// --no-sandbox because we run as root; --allow-loopback-in-peer-connection or chromium gathers no
// candidate at all on `lo`; the fake device/UI flags give getUserMedia a test pattern without a prompt.
// WebRtcHideLocalIpsWithMdns is off so host candidates stay plain IPs even if a future chromium starts
// obfuscating loopback (there is no mDNS responder in the namespace). The server's certificate is
// trusted by its public-key hash only (--ignore-certificate-errors-spki-list, which needs a
// --user-data-dir: playwright passes a fresh one), not by turning certificate checks off.
const args = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  `--ignore-certificate-errors-spki-list=${config.spkiHash}`,
];

const result = { browserVersion: null, args, console: { master: [], viewer: [] }, pageErrors: [], reports: {}, error: null };

const pages = {};

function remaining() {
  return Math.max(1000, deadline - Date.now());
}

async function openPeer(browser, name, peerConfig) {
  const context = await browser.newContext({ viewport: { width: 720, height: 640 } });
  const page = await context.newPage();
  pages[name] = page; // registered before startPeer, so a failing peer still gets a report and a screenshot
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') result.console[name].push(`${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => result.pageErrors.push(`${name}: ${err.message}`));
  await page.goto(`${config.pageUrl}?role=${peerConfig.role}`, { timeout: remaining() });
  await page.waitForFunction(() => typeof window.startPeer === 'function' && window.KVSWebRTC, null, { timeout: remaining() });
  await page.evaluate((cfg) => window.startPeer(cfg), peerConfig);
  return page;
}

function done(master, viewer) {
  const v = viewer.peers.MASTER;
  const m = Object.values(master.peers)[0];
  return (
    v && m &&
    v.connectionState === 'connected' && m.connectionState === 'connected' &&
    viewer.dataChannel.received.length > 0 &&
    (v.inboundVideo?.framesDecoded ?? 0) > 0 && viewer.videoFrameCallbacks > 0
  );
}

let browser = null;
try {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args, timeout: remaining() });
  result.browserVersion = browser.version();
  const common = { channelARN: config.channelARN, region: config.region, credentials: config.credentials, iceServers: config.iceServers };
  // The master first, as in the SDK's example flow (a viewer's offer would otherwise wait in the TTL buffer).
  await openPeer(browser, 'master', { ...common, role: 'MASTER', endpoint: config.masterEndpoint });
  await openPeer(browser, 'viewer', {
    ...common, role: 'VIEWER', endpoint: config.viewerEndpoint, clientId: config.viewerClientId, message: config.message,
  });
  const started = Date.now();
  for (;;) {
    result.reports.master = await pages.master.evaluate(() => window.peerReport());
    result.reports.viewer = await pages.viewer.evaluate(() => window.peerReport());
    if (done(result.reports.master, result.reports.viewer)) break;
    if (Date.now() >= deadline) {
      result.error = 'timed out waiting for connected + data-channel echo + decoded video frames';
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  result.sessionMs = Date.now() - started;
} catch (err) {
  result.error = `${err.name}: ${err.message}`;
  for (const [name, page] of Object.entries(pages)) {
    try {
      result.reports[name] = await page.evaluate(() => window.peerReport());
    } catch (e) {
      result.pageErrors.push(`report ${name}: ${e.message}`);
    }
  }
} finally {
  if (config.screenshotsDir) {
    mkdirSync(config.screenshotsDir, { recursive: true });
    for (const [name, page] of Object.entries(pages)) {
      try {
        await page.screenshot({ path: join(config.screenshotsDir, `${name}.png`), timeout: 5000 });
      } catch (err) {
        result.pageErrors.push(`screenshot ${name}: ${err.message}`);
      }
    }
  }
  if (browser) await browser.close().catch(() => {});
}
process.stdout.write(`${JSON.stringify(result)}\n`);
