// Drive headless Debian chromium (playwright-core) through signalite's own console and test page.
//
//   node console_session.mjs '<config JSON>'
//
// config: { baseUrl, credentials: {accessKeyId, secretAccessKey}, channelName, otherChannelName, viewerClientId,
//           screenshotsDir, timeoutMs }
// Steps: enter strict-mode credentials in the console; create two channels (name, TTL, tags); filter by prefix;
// update the TTL; open the test page as master from the console (credentials handed over by postMessage) and
// as viewer in a separate browser context (credentials typed, like another device); wait until both are
// connected, video is decoded both ways and the live view lists both clients; delete the channel in the console
// and wait for GO_AWAY on both test pages and in the live view. Screenshots at each stage.
// Prints one JSON object on stdout; judging it is left to tests/e2e/test_console.py.
// Runs inside a private network namespace (tests/e2e/netns.py): every address here is 127.0.0.1.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2]);
const deadline = Date.now() + (config.timeoutMs ?? 60000);
const shots = config.screenshotsDir;
mkdirSync(shots, { recursive: true });

// Same flags as browser_session.mjs (see there): root needs --no-sandbox; loopback ICE candidates need
// --allow-loopback-in-peer-connection; the fake device flags give getUserMedia a camera without a prompt.
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
];

const result = {
  browserVersion: null, steps: [], console: {}, pageErrors: [], screenshots: [], error: null,
  reports: {}, timings: {},
};
const pages = {};
const t0 = Date.now();

function remaining() {
  return Math.max(1000, deadline - Date.now());
}

function step(name) {
  result.steps.push({ name, ms: Date.now() - t0 });
}

function watch(name, page) {
  pages[name] = page;
  result.console[name] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') result.console[name].push(`${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => result.pageErrors.push(`${name}: ${err.message}`));
}

async function shot(name, page, options = {}, selector = null) {
  // A selector takes just that element: the test page's session panel is what the README shows.
  const path = join(shots, `${name}.png`);
  try {
    const target = selector ? page.locator(selector) : page;
    await target.screenshot({ path, timeout: 10000, ...options });
    result.screenshots.push(path);
  } catch (err) {
    result.pageErrors.push(`screenshot ${name}: ${err.message}`);
  }
}

async function until(what, fn, { poll = 200 } = {}) {
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, poll));
  }
}

const consoleReport = () => pages.console.evaluate(() => window.consoleReport());
const testReport = (name) => pages[name].evaluate(() => window.testReport());

async function createChannel(page, name, ttl, tags) {
  await page.click('#create-open');
  await page.fill('#create-form [name=name]', name);
  await page.fill('#create-form [name=ttl]', String(ttl));
  await page.fill('#create-form [name=tags]', tags);
  await page.click('#create-form [type=submit]');
  await until(`channel ${name} created and selected`, async () => {
    const r = await consoleReport();
    return r.selected?.name === name && r.channels.some((c) => c.name === name);
  });
}

function videoFlowing(report, peerId) {
  const p = report?.peers?.[peerId];
  return p && p.connectionState === 'connected' && (p.inboundVideo?.framesDecoded ?? 0) > 0 && p.pair;
}

let browser = null;
try {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args, timeout: remaining() });
  result.browserVersion = browser.version();
  const operator = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await operator.newPage();
  watch('console', page);

  // 1. Strict mode: the console asks for credentials before anything else.
  await page.goto(`${config.baseUrl}/console/`, { timeout: remaining() });
  await page.waitForSelector('#credentials-dialog[open]', { timeout: remaining() });
  result.reports.consoleBeforeCredentials = await consoleReport();
  await shot('console-credentials', page);
  await page.fill('#credentials-form [name=accessKeyId]', config.credentials.accessKeyId);
  await page.fill('#credentials-form [name=secretAccessKey]', config.credentials.secretAccessKey);
  await page.click('#credentials-form [type=submit]');
  await until('the channel list to load', async () => {
    const r = await consoleReport();
    return r.hasCredentials && (await page.isVisible('#empty') || r.channels.length > 0);
  });
  result.secretLeftInDom = await page.evaluate((secret) => document.documentElement.outerHTML.includes(secret)
    || [...document.querySelectorAll('input')].some((i) => i.value === secret), config.credentials.secretAccessKey);
  result.storage = await page.evaluate(() => ({ local: localStorage.length, session: sessionStorage.length, cookies: document.cookie }));
  step('credentials');

  // 2. Create two channels, then filter by prefix.
  await createChannel(page, config.otherChannelName, 60, '');
  await createChannel(page, config.channelName, 30, 'env=e2e\nteam=video');
  result.reports.afterCreate = await consoleReport();
  await page.fill('#search', config.channelName.slice(0, 12));
  await until('the prefix filter', async () => {
    const r = await consoleReport();
    return r.channels.length >= 1 && r.channels.every((c) => c.name.startsWith(config.channelName.slice(0, 12)));
  });
  result.reports.filtered = await consoleReport();
  step('created and filtered');

  // 3. Update the TTL of the selected channel.
  const before = (await consoleReport()).selected;
  await page.click('#d-ttl');
  await page.fill('#ttl-form [name=ttl]', '45');
  await page.click('#ttl-form [type=submit]');
  await until('the new TTL', async () => (await consoleReport()).selected?.ttl === 45);
  result.reports.afterTtl = { before, after: (await consoleReport()).selected };
  result.tagsShown = await page.textContent('#d-tags');
  await until('media storage shown', async () => (await page.textContent('#d-storage')).trim() !== '');
  result.storageShown = await page.textContent('#d-storage');
  step('ttl updated');

  // 4. The test page as viewer first, in its own browser context (another device): credentials typed in. With no
  //    master yet, its offer and candidates wait in signalite's TTL buffer, and the live view lists them.
  const device = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const viewer = await device.newPage();
  watch('viewer', viewer);
  const query = new URLSearchParams({ channel: config.channelName, role: 'viewer', clientId: config.viewerClientId, source: 'pattern' });
  if (config.viewerRelayOnly) query.set('relay', '1');
  await viewer.goto(`${config.baseUrl}/console/test.html?${query}`, { timeout: remaining() });
  await viewer.waitForFunction(() => typeof window.testReport === 'function', null, { timeout: remaining() });
  await viewer.fill('[name=accessKeyId]', config.credentials.accessKeyId);
  await viewer.fill('[name=secretAccessKey]', config.credentials.secretAccessKey);
  await viewer.click('#start');
  await until('the viewer offer buffered for the absent master', async () => {
    const live = (await consoleReport()).live;
    return live && !live.master && live.viewers.length === 1 && live.buffered.some((b) => b.messageType === 'SDP_OFFER' && b.recipient === null);
  });
  await page.waitForTimeout(1200); // let the trickled candidates join the offer in the table
  result.reports.consoleBuffered = await consoleReport();
  await shot('console-buffered', page, { fullPage: true });
  step('viewer offer buffered');

  // 5. The test page as master, opened from the console (credentials handed over in memory): it gets the
  //    buffered offer on connect and answers.
  const [master] = await Promise.all([operator.waitForEvent('page', { timeout: remaining() }), page.click('#d-test-master')]);
  watch('master', master);
  await master.waitForLoadState('domcontentloaded');
  await until('the master page to receive credentials', async () => (await master.textContent('#identity')).includes(config.credentials.accessKeyId));
  await master.click('#start');
  await until('the master signaling to open', async () => (await testReport('master')).signaling === 'open');
  step('master open');

  // 6. Video both ways, and both clients in the live view.
  await until('video decoded by the viewer and the master', async () => {
    const v = await testReport('viewer');
    const m = await testReport('master');
    return videoFlowing(v, 'MASTER') && videoFlowing(m, config.viewerClientId) && v.peers.MASTER.rttMs != null;
  });
  step('media flowing');
  await until('the live view to show master and viewer', async () => {
    const live = (await consoleReport()).live;
    return live?.master && live.viewers.some((v) => v.clientId === config.viewerClientId && v.messagesIn > 0);
  });
  await page.waitForTimeout(1500); // one more stats round: bitrates and frame rates on screen
  result.reports.consoleLive = await consoleReport();
  result.reports.masterLive = await testReport('master');
  result.reports.viewerLive = await testReport('viewer');
  result.liveEventKinds = await page.$$eval('#live-events li', (items) => items.map((li) => li.dataset.kind).filter(Boolean));
  await shot('console-live', page, { fullPage: true });
  await shot('test-master', master, { fullPage: true });
  await shot('test-viewer', viewer, { fullPage: true });
  await shot('test-master-session', master, {}, '#session');
  await shot('test-viewer-session', viewer, {}, '#session');
  step('screenshots');

  // 7. Delete the channel in the console: both test pages get GO_AWAY, the live view records it.
  await page.click('#d-delete');
  await page.fill('#delete-form [name=confirm]', 'not-the-name');
  await page.click('#delete-form [type=submit]');
  result.wrongConfirmationError = await page.textContent('#delete-form [data-error]');
  result.dialogStillOpenAfterWrongName = await page.isVisible('#delete-dialog[open]');
  await page.fill('#delete-form [name=confirm]', config.channelName);
  await page.click('#delete-form [type=submit]');
  await until('GO_AWAY and close on both test pages', async () => {
    const m = await testReport('master');
    const v = await testReport('viewer');
    return m.goAway && v.goAway && m.signaling === 'closed' && v.signaling === 'closed';
  });
  await until('the live view to record the GO_AWAYs', async () => {
    const live = (await consoleReport()).live;
    return live && live.channel === null && live.events.filter((e) => e.kind === 'go_away').length >= 2
      && !live.master && live.viewers.length === 0;
  });
  await page.fill('#search', '');
  await until('the list without the deleted channel', async () => {
    const r = await consoleReport();
    return !r.channels.some((c) => c.name === config.channelName) && r.channels.some((c) => c.name === config.otherChannelName);
  });
  await page.waitForTimeout(300);
  result.reports.consoleDeleted = await consoleReport();
  result.reports.masterDeleted = await testReport('master');
  result.reports.viewerDeleted = await testReport('viewer');
  result.goAwayBanner = await viewer.textContent('#goaway');
  await shot('console-deleted', page, { fullPage: true });
  await shot('test-viewer-goaway', viewer, { fullPage: true });
  await shot('test-viewer-goaway-session', viewer, {}, '#session');
  step('deleted');
} catch (err) {
  result.error = `${err.name}: ${err.message}`;
  for (const [name, page] of Object.entries(pages)) {
    try {
      result.reports[`${name}AtError`] = await page.evaluate(() => (window.consoleReport ?? window.testReport)?.());
    } catch (e) {
      result.pageErrors.push(`report ${name}: ${e.message}`);
    }
    await shot(`error-${name}`, page, { fullPage: true });
  }
} finally {
  result.timings.totalMs = Date.now() - t0;
  if (browser) await browser.close().catch(() => {});
}
process.stdout.write(`${JSON.stringify(result)}\n`);
