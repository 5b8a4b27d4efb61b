// Every request of the study browser goes through `request` below: the one place where
// an access token is added (setTokenProvider), errors are turned into exceptions that
// carry the server's reason, and URLs are resolved against the page (so the browser
// works behind a reverse proxy that adds a path prefix).

/** The DICOMweb root, relative to /ui/ (PS3.18 8.2). */
export const DICOMWEB = new URL('../dicom-web', document.baseURI).href;
export const STATUS = new URL('../api/status', document.baseURI).href;
/** How the pages log in (open to anyone: no secret in it). */
export const AUTH_CONFIG = new URL('../api/auth-config', document.baseURI).href;

let tokenProvider = null;
let unauthorizedHandler = null;

/**
 * Give a function returning a bearer token (or a promise of one, or null): it is
 * called before every request and its token sent as `Authorization: Bearer ...`.
 */
export function setTokenProvider(provider) {
  tokenProvider = provider;
}

/**
 * Give a function called when the archive answers 401 (the token expired or was
 * revoked); it returns true when it takes the page elsewhere (to log in again), and
 * the request then never settles.
 */
export function setUnauthorizedHandler(handler) {
  unauthorizedHandler = handler;
}

export class HttpError extends Error {
  constructor(status, reason) {
    super(`${status}: ${reason}`);
    this.status = status;
    this.reason = reason;
  }
}

/** fetch() with the token, throwing HttpError on a 4xx/5xx answer. */
export async function request(url, options = {}) {
  const headers = new Headers(options.headers || {});
  if (tokenProvider) {
    const token = await tokenProvider();
    if (token) headers.set('Authorization', `Bearer ${token}`);
  }
  const response = await fetch(url, { ...options, headers });
  if (response.status === 401 && unauthorizedHandler) {
    await response.text().catch(() => ''); // read it: leaving would abort the answer
    if (unauthorizedHandler()) return new Promise(() => {}); // leaving to log in again
    throw new HttpError(401, 'the archive refused the login token');
  }
  if (!response.ok && !(options.okStatuses || []).includes(response.status)) {
    let reason = response.statusText;
    try {
      const text = await response.text();
      try {
        const body = JSON.parse(text);
        reason = body.error || body.reason || text;
      } catch {
        reason = text || reason;
      }
    } catch {
      // keep the status text
    }
    throw new HttpError(response.status, reason);
  }
  return response;
}

/** A DICOMweb URL: path segments under the root and query parameters. */
export function dicomweb(path, params = {}) {
  const url = new URL(DICOMWEB + path);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.append(key, value);
  }
  return url.href;
}

/** QIDO-RS (PS3.18 10.6): DICOM JSON results and whether the server capped them. */
export async function search(path, params) {
  const response = await request(dicomweb(path, params), {
    headers: { Accept: 'application/dicom+json' },
  });
  const text = await response.text();
  return { results: text ? JSON.parse(text) : [], warning: response.headers.get('Warning') };
}

/** The first value of attribute `tag` (8 hex digits) of a DICOM JSON object (PS3.18 F.2). */
export function value(item, tag) {
  const attribute = item[tag];
  if (!attribute || !attribute.Value || attribute.Value.length === 0) return '';
  const first = attribute.Value[0];
  if (attribute.vr === 'PN') return (first && (first.Alphabetic || first.Ideographic || first.Phonetic)) || '';
  return first;
}

/** Every value of attribute `tag`, joined. */
export function values(item, tag) {
  const attribute = item[tag];
  return attribute && attribute.Value ? attribute.Value.join(', ') : '';
}

/** An image resource as an object URL (so that it can carry the token). */
export async function imageUrl(url) {
  const response = await request(url, { headers: { Accept: 'image/jpeg, image/png' } });
  return URL.createObjectURL(await response.blob());
}

/** STOW-RS (PS3.18 10.5) of `files` in one multipart/related request. */
export async function store(files) {
  const boundary = `dicomcloud-${crypto.randomUUID()}`;
  const parts = [];
  for (const file of files) {
    parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file, '\r\n');
  }
  parts.push(`--${boundary}--\r\n`);
  const response = await request(dicomweb('/studies'), {
    method: 'POST',
    headers: {
      'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
      Accept: 'application/dicom+json',
    },
    body: new Blob(parts),
    // 409: some or all instances refused; the body says which and why.
    okStatuses: [409],
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : {} };
}

/**
 * DELETE of a study, series or instance (the archive's non-standard extension: PS3.18
 * defines no delete transaction); resolves on 204, throws HttpError otherwise (403 no
 * `delete` permission, 404 already gone, 405 deletion disabled).
 */
export async function remove(path) {
  await request(dicomweb(path), { method: 'DELETE' });
}

/** The server's health and counts. */
export async function status() {
  const response = await request(STATUS, { okStatuses: [503] });
  return response.json();
}
