// Logging in at the archive's identity provider when authentication is on: the OAuth 2.0
// authorization code flow of a public client with PKCE (RFC 6749 4.1, RFC 7636 S256),
// done by the page itself, as OAuth 2.0 for Browser-Based Apps describes.
//
// * /api/auth-config says whether and where to log in (issuer, client id, scopes and
//   the provider's endpoints; no secret: the client is public);
// * the page goes to the authorization endpoint with a fresh `state`, `nonce` and code
//   challenge, and comes back to itself (the redirect URI is this page, /ui/) with a
//   code, which it exchanges at the token endpoint with the code verifier;
// * the access token is kept in sessionStorage (this tab only, gone when it closes) and
//   sent as `Authorization: Bearer` with every request (api.js); a 401 means it has
//   expired or been revoked: the page logs in again.
import { AUTH_CONFIG, setTokenProvider, setUnauthorizedHandler } from './api.js';

const TOKEN_KEY = 'dicomcloud.token';
const PENDING_KEY = 'dicomcloud.login';
const ATTEMPT_KEY = 'dicomcloud.login-attempt';
//: A token this close to its expiry is not used any more (seconds).
const EXPIRY_MARGIN = 30;
//: A refused token right after logging in is not met with another login (milliseconds).
const LOOP_GUARD = 15_000;

function base64url(bytes) {
  let text = '';
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

function randomString(bytes = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** The S256 code challenge of `verifier` (RFC 7636 4.2). */
export async function challengeOf(verifier) {
  return base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
}

/** The claims of a JWT, unverified (RFC 7519 7.2 steps 1-7, no signature check). */
function claimsOf(jwt) {
  const payload = jwt.split('.')[1].replaceAll('-', '+').replaceAll('_', '/');
  const text = atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), '='));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(text, (c) => c.charCodeAt(0))));
}

/** This page, where the provider sends the browser back (registered at the provider). */
function redirectUri() {
  return new URL('./', document.baseURI).href;
}

function storedToken() {
  try {
    const token = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || 'null');
    if (token && (!token.expires_at || token.expires_at - EXPIRY_MARGIN > Date.now() / 1000)) return token;
  } catch {
    // a damaged entry is no token
  }
  sessionStorage.removeItem(TOKEN_KEY);
  return null;
}

/** Go to the provider's authorization endpoint (RFC 6749 4.1.1, OIDC Core 3.1.2.1). */
async function login(config) {
  sessionStorage.removeItem(TOKEN_KEY);
  const verifier = randomString(32); // 43 characters (RFC 7636 4.1)
  const pending = {
    state: randomString(16),
    nonce: randomString(16),
    verifier,
    // Where to come back to: the page's own query is kept (a search, say).
    back: location.pathname + location.search + location.hash,
  };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  sessionStorage.setItem(ATTEMPT_KEY, String(Date.now()));
  const url = new URL(config.authorization_endpoint);
  const params = {
    ...config.authorize_params,
    response_type: 'code',
    client_id: config.client_id,
    redirect_uri: redirectUri(),
    scope: config.scope,
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await challengeOf(verifier),
    code_challenge_method: 'S256',
  };
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  location.assign(url.href);
  return new Promise(() => {}); // the page is leaving
}

class LoginError extends Error {}

/**
 * The provider sent the browser back (RFC 6749 4.1.2): check `state` (and `iss`, RFC
 * 9207), exchange the code (4.1.3) with the PKCE verifier, check the ID token's `nonce`,
 * `iss` and `aud` (OIDC Core 3.1.3.7; it came straight from the token endpoint over the
 * connection the page opened, so its signature need not be checked, 3.1.3.7 step 6).
 */
async function finishLogin(config, params) {
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || 'null');
  sessionStorage.removeItem(PENDING_KEY);
  if (!pending || params.get('state') !== pending.state) {
    throw new LoginError('the answer of the identity provider does not match the login started here (state)');
  }
  if (params.has('iss') && params.get('iss') !== config.issuer) {
    throw new LoginError(`the answer came from ${params.get('iss')}, not from ${config.issuer}`);
  }
  if (params.has('error')) {
    throw new LoginError(`the identity provider refused: ${params.get('error_description') || params.get('error')}`);
  }
  const response = await fetch(config.token_endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.get('code') || '',
      redirect_uri: redirectUri(),
      client_id: config.client_id,
      code_verifier: pending.verifier,
    }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.access_token) {
    throw new LoginError(`the token endpoint refused the code: ${body.error_description || body.error || response.status}`);
  }
  if (String(body.token_type).toLowerCase() !== 'bearer') {
    throw new LoginError(`the token endpoint sent a ${body.token_type} token, not a bearer token`);
  }
  let user = null;
  if (body.id_token) {
    const claims = claimsOf(body.id_token);
    const audiences = [].concat(claims.aud);
    if (claims.nonce !== pending.nonce) throw new LoginError('the ID token is not for this login (nonce)');
    if (claims.iss !== config.issuer) throw new LoginError(`the ID token's issuer is ${claims.iss}`);
    if (!audiences.includes(config.client_id)) throw new LoginError('the ID token is not for this client (aud)');
    user = claims.preferred_username || claims.name || claims.email || claims.sub;
  }
  const token = {
    access_token: body.access_token,
    id_token: body.id_token || null,
    expires_at: body.expires_in ? Date.now() / 1000 + Number(body.expires_in) : null,
    user,
  };
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify(token));
  history.replaceState(null, '', pending.back || redirectUri());
  return token;
}

/** Forget the token and end the provider's session (OIDC RP-Initiated Logout 1.0). */
export function logout(config) {
  const token = storedToken();
  sessionStorage.removeItem(TOKEN_KEY);
  if (config && config.end_session_endpoint) {
    const url = new URL(config.end_session_endpoint);
    url.searchParams.set('client_id', config.client_id);
    url.searchParams.set('post_logout_redirect_uri', redirectUri());
    if (token && token.id_token) url.searchParams.set('id_token_hint', token.id_token);
    location.assign(url.href);
  } else {
    location.assign(redirectUri());
  }
}

/**
 * Make sure the page may call the archive: `{ config, user }` once it holds a token (or
 * when the archive needs none); goes to the provider and never resolves when it must
 * log in; throws LoginError when logging in failed or is not possible.
 */
export async function start() {
  const response = await fetch(AUTH_CONFIG, { headers: { Accept: 'application/json' } });
  const config = await response.json().catch(() => ({}));
  if (!response.ok) throw new LoginError(`cannot log in: ${config.error || response.status}`);
  if (!config.login) {
    if (config.required) {
      throw new LoginError('the archive requires authentication but names no client for its pages (auth.browser_client_id)');
    }
    return { config, user: null };
  }
  const params = new URLSearchParams(location.search);
  let token = null;
  if (params.has('state') && (params.has('code') || params.has('error'))) {
    token = await finishLogin(config, params);
  } else {
    token = storedToken();
  }
  if (!token) return login(config);
  setTokenProvider(() => (storedToken() || {}).access_token || null);
  setUnauthorizedHandler(() => {
    // Refused right after logging in: the token is not accepted at all; say so rather
    // than going round in circles.
    if (Date.now() - Number(sessionStorage.getItem(ATTEMPT_KEY) || 0) < LOOP_GUARD) return false;
    login(config);
    return true;
  });
  return { config, user: token.user };
}
