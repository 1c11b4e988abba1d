// Talking to signalite's own AWS APIs from the browser: server info, credentials held in page memory
// only (never localStorage, sessionStorage or cookies), signed JSON calls, presigned URLs.

import { presignUrl, signRequest } from './sigv4.js';

// Open mode accepts any credentials, but requests are still signed: one code path for both modes.
const OPEN_MODE_CREDENTIALS = Object.freeze({ accessKeyId: 'SIGNALITECONSOLE', secretAccessKey: 'open-mode-dummy-secret' });

export const state = {
  info: null, // GET /console/api/info
  credentials: null, // { accessKeyId, secretAccessKey, sessionToken? } -- this page's memory only
  region: null,
  clockOffsetMs: 0, // server time - browser time, so signatures are valid even with a skewed clock
};

export class AwsError extends Error {
  constructor(code, message, status, requestId) {
    super(`${code}: ${message}`);
    this.code = code;
    this.status = status;
    this.requestId = requestId;
  }
}

export async function loadInfo() {
  const started = Date.now();
  const response = await fetch('/console/api/info', { cache: 'no-store' });
  if (!response.ok) throw new Error(`GET /console/api/info: HTTP ${response.status}`);
  const info = await response.json();
  const roundTrip = Date.now() - started;
  state.info = info;
  state.region = state.region || info.region;
  state.clockOffsetMs = Math.round(info.serverTime * 1000 - (started + roundTrip / 2));
  return info;
}

export function strict() {
  return state.info?.authMode === 'strict';
}

export function signingCredentials() {
  if (state.credentials) return state.credentials;
  if (!strict()) return OPEN_MODE_CREDENTIALS;
  throw new AwsError('MissingCredentials', 'enter an access key and secret first', 0, null);
}

export function setCredentials(credentials) {
  state.credentials = credentials && credentials.accessKeyId ? { ...credentials } : null;
}

export function now() {
  return new Date(Date.now() + state.clockOffsetMs);
}

// The model's request URIs: lowerCamelCase, except the three resource-tagging operations.
const CAPITALISED_PATHS = new Set(['ListTagsForResource', 'TagResource', 'UntagResource']);

export function operationPath(operation) {
  return CAPITALISED_PATHS.has(operation) ? `/${operation}` : `/${operation[0].toLowerCase()}${operation.slice(1)}`;
}

/** POST a signed rest-json request; `path` like /listSignalingChannels; `base` defaults to this origin. */
export async function callPath(path, params = {}, { base = location.origin } = {}) {
  const url = new URL(path, base).toString();
  const body = JSON.stringify(params);
  const signed = await signRequest({
    method: 'POST', url, body, credentials: signingCredentials(), region: state.region, now: now(),
  });
  let response;
  try {
    response = await fetch(url, { method: 'POST', body, headers: { 'Content-Type': 'application/json', ...signed }, cache: 'no-store' });
  } catch (err) {
    throw new AwsError('NetworkError', `${path}: ${err.message}`, 0, null);
  }
  const text = await response.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { message: text.slice(0, 200) };
  }
  if (!response.ok) {
    const code = response.headers.get('x-amzn-ErrorType') || data.__type || `HTTP${response.status}`;
    throw new AwsError(code.split(':')[0], data.message || data.Message || response.statusText, response.status, response.headers.get('x-amzn-RequestId'));
  }
  return data;
}

/** A kinesisvideo control-plane operation by name, e.g. call('ListSignalingChannels', {...}). */
export function call(operation, params = {}) {
  return callPath(operationPath(operation), params);
}

export async function presign(url, expires = 299) {
  return presignUrl(url, { credentials: signingCredentials(), region: state.region, now: now(), expires });
}

/** Resolve a channel given by name or ARN to its ChannelInfo. */
export async function describeChannel(nameOrArn) {
  const params = nameOrArn.startsWith('arn:') ? { ChannelARN: nameOrArn } : { ChannelName: nameOrArn };
  return (await call('DescribeSignalingChannel', params)).ChannelInfo;
}

export function formatTime(epochSeconds) {
  if (epochSeconds == null) return '';
  const d = new Date(epochSeconds * 1000);
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

export function formatAge(seconds) {
  if (seconds == null || Number.isNaN(seconds)) return '';
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

/** Build a DOM element: el('td', {class: 'x', title: 'y'}, 'text', child...). Text is never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Wire a credentials <form> (fields accessKeyId, secretAccessKey, sessionToken, region). */
export function bindCredentialsForm(form, onDone) {
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const accessKeyId = String(data.get('accessKeyId') || '').trim();
    const secretAccessKey = String(data.get('secretAccessKey') || '');
    const sessionToken = String(data.get('sessionToken') || '').trim();
    const region = String(data.get('region') || '').trim();
    if (region) state.region = region;
    setCredentials(accessKeyId ? { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) } : null);
    // The secret leaves the form as soon as it is in memory: nothing for autofill or the DOM to keep.
    form.querySelector('[name=secretAccessKey]').value = '';
    const token = form.querySelector('[name=sessionToken]');
    if (token) token.value = '';
    onDone?.();
  });
}
