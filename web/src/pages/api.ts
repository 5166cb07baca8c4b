// Talking to the control plane from its own pages: the session cookie goes
// along (same origin), state-changing calls carry the CSRF token, and errors
// (application/problem+json) become exceptions with the server's wording.

import type { SessionInfo } from '../api/types';

/** The caller's session (`GET /api/v1/session`), as the API's document types it. */
export type Session = SessionInfo;

export class ApiError extends Error {
  constructor(public status: number, message: string, public body: unknown = null) {
    super(message);
  }
}

let csrf = '';

/** How long a call may take before the page says the service is not answering. */
export const CALL_TIMEOUT_MS = 30_000;

/**
 * What a page says when no control-plane replica answers (connection
 * refused or cut, no answer in time, or the load balancer's own 502, 503
 * or 504). People already watching are not affected: relays keep accepting
 * their tokens through an outage (docs/security.md).
 */
export const UNAVAILABLE =
  'The service is not reachable right now. People already watching keep watching; please try again in a few minutes.';

/** `fetch`, bounded in time; a network failure or timeout becomes ApiError(0, UNAVAILABLE). */
async function call(path: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(path, { ...init, credentials: 'same-origin', signal: AbortSignal.timeout(CALL_TIMEOUT_MS) });
  } catch {
    throw new ApiError(0, UNAVAILABLE);
  }
}

/** The caller's session, or null when nobody is logged in. */
export async function session(): Promise<Session | null> {
  const res = await call('/api/v1/session', {});
  if (res.status === 401) return null;
  const s = (await parse(res)) as Session;
  csrf = s.csrf;
  return s;
}

export function rememberCsrf(s: Session): void {
  csrf = s.csrf;
}

/** A JSON (or raw text, for CSV) API call; resolves to the parsed answer. */
export async function api<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
  contentType = 'application/json',
): Promise<T> {
  const headers: Record<string, string> = {};
  if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
  let payload: BodyInit | undefined;
  if (body !== undefined) {
    headers['content-type'] = contentType;
    payload = contentType === 'application/json' ? JSON.stringify(body) : (body as BodyInit);
  }
  const res = await call(path, { method, headers, body: payload });
  return (await parse(res)) as T;
}

async function parse(res: Response): Promise<unknown> {
  const type = res.headers.get('content-type') ?? '';
  const body = type.includes('json') ? await res.json().catch(() => null) : await res.text().catch(() => '');
  if (!res.ok && [502, 503, 504].includes(res.status) && !type.includes('json')) {
    // Not the control plane's answer (it answers problem+json): the proxy
    // in front found no replica.
    throw new ApiError(res.status, UNAVAILABLE);
  }
  if (!res.ok) {
    const detail =
      body && typeof body === 'object' && 'detail' in body
        ? String((body as { detail: unknown }).detail)
        : `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, detail, body);
  }
  return body;
}

export async function logout(): Promise<void> {
  await api('POST', '/api/v1/auth/logout').catch(() => undefined);
}
