// AWS Signature Version 4 in the browser, with WebCrypto (SHA-256 and HMAC-SHA256).
//
// Two forms, the ones signalite's clients use:
//  * signRequest: header-signed requests (the JSON control plane and GetIceServerConfig);
//    signs host, x-amz-date and, when there is a session token, x-amz-security-token.
//  * presignUrl: a presigned GET URL (the signaling WebSocket and the console's live feed): the query
//    gets X-Amz-Algorithm/Credential/Date/Expires/SignedHeaders=host[/Security-Token], then
//    X-Amz-Signature over GET, the path, the sorted query, host, and SHA-256 of the empty body.
//
// Keys are derived per call and never stored; the credentials object is whatever the page holds in memory.

const encoder = new TextEncoder();
const ALGORITHM = 'AWS4-HMAC-SHA256';
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function toBytes(data) {
  if (typeof data === 'string') return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return encoder.encode(String(data ?? ''));
}

export function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
}

export async function sha256Hex(data) {
  return hex(await crypto.subtle.digest('SHA-256', toBytes(data)));
}

async function hmac(key, data) {
  const cryptoKey = await crypto.subtle.importKey('raw', toBytes(key), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await crypto.subtle.sign('HMAC', cryptoKey, toBytes(data)));
}

// RFC 3986 encoding: only A-Z a-z 0-9 - _ . ~ stay bare (encodeURIComponent also leaves !'()* bare).
export function uriEncode(text) {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

// 20240102T030405Z
export function amzDate(date) {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

function canonicalUri(pathname) {
  // The path as sent, each segment encoded once more (what botocore and the AWS SDK for JS v3 do).
  return (pathname || '/').split('/').map(uriEncode).join('/') || '/';
}

function decodePairs(search) {
  const query = search.startsWith('?') ? search.slice(1) : search;
  if (!query) return [];
  return query.split('&').filter(Boolean).map((piece) => {
    const i = piece.indexOf('=');
    const key = i < 0 ? piece : piece.slice(0, i);
    const value = i < 0 ? '' : piece.slice(i + 1);
    return [decodeURIComponent(key), decodeURIComponent(value)];
  });
}

function canonicalQuery(pairs) {
  return pairs
    .map(([k, v]) => [uriEncode(k), uriEncode(v)])
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

async function signingKey(secret, day, region, service) {
  let key = await hmac(`AWS4${secret}`, day);
  key = await hmac(key, region);
  key = await hmac(key, service);
  return hmac(key, 'aws4_request');
}

async function signature({ credentials, region, service, date, canonicalRequest }) {
  const day = date.slice(0, 8);
  const scope = `${day}/${region}/${service}/aws4_request`;
  const stringToSign = [ALGORITHM, date, scope, await sha256Hex(canonicalRequest)].join('\n');
  const key = await signingKey(credentials.secretAccessKey, day, region, service);
  return hex(await hmac(key, stringToSign));
}

function check(credentials, region) {
  if (!credentials || !credentials.accessKeyId || !credentials.secretAccessKey) throw new Error('no credentials to sign with');
  if (!region) throw new Error('no region to sign with');
}

/**
 * Header-sign a request. Returns the headers to add (Authorization, X-Amz-Date, X-Amz-Security-Token).
 * `headers` may name more headers to sign (lower-case names); the browser must send them unchanged.
 */
export async function signRequest({ method, url, body = '', headers = {}, credentials, region, service = 'kinesisvideo', now = new Date() }) {
  check(credentials, region);
  const u = new URL(url);
  const date = amzDate(now);
  const all = { host: u.host, 'x-amz-date': date };
  for (const [k, v] of Object.entries(headers)) all[k.toLowerCase()] = String(v);
  if (credentials.sessionToken) all['x-amz-security-token'] = credentials.sessionToken;
  const names = Object.keys(all).sort();
  const canonicalHeaders = names.map((n) => `${n}:${all[n].trim().replace(/\s+/g, ' ')}\n`).join('');
  const canonicalRequest = [
    method.toUpperCase(),
    canonicalUri(u.pathname),
    canonicalQuery(decodePairs(u.search)),
    canonicalHeaders,
    names.join(';'),
    await sha256Hex(body),
  ].join('\n');
  const sig = await signature({ credentials, region, service, date, canonicalRequest });
  const out = {
    'X-Amz-Date': date,
    Authorization: `${ALGORITHM} Credential=${credentials.accessKeyId}/${date.slice(0, 8)}/${region}/${service}/aws4_request, SignedHeaders=${names.join(';')}, Signature=${sig}`,
  };
  if (credentials.sessionToken) out['X-Amz-Security-Token'] = credentials.sessionToken;
  return out;
}

/** Presign a GET URL (ws:, wss:, http: or https:) the way the KVS SDKs presign the signaling WebSocket. */
export async function presignUrl(url, { credentials, region, service = 'kinesisvideo', expires = 299, now = new Date() }) {
  check(credentials, region);
  const u = new URL(url);
  const date = amzDate(now);
  const pairs = decodePairs(u.search);
  pairs.push(
    ['X-Amz-Algorithm', ALGORITHM],
    ['X-Amz-Credential', `${credentials.accessKeyId}/${date.slice(0, 8)}/${region}/${service}/aws4_request`],
    ['X-Amz-Date', date],
    ['X-Amz-Expires', String(expires)],
    ['X-Amz-SignedHeaders', 'host'],
  );
  if (credentials.sessionToken) pairs.push(['X-Amz-Security-Token', credentials.sessionToken]);
  const query = canonicalQuery(pairs);
  const path = u.pathname || '/';
  const canonicalRequest = ['GET', canonicalUri(path), query, `host:${u.host}\n`, 'host', EMPTY_SHA256].join('\n');
  const sig = await signature({ credentials, region, service, date, canonicalRequest });
  return `${u.protocol}//${u.host}${path}?${query}&X-Amz-Signature=${sig}`;
}
