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

/** The caller's session, or null when nobody is logged in. */
export async function session(): Promise<Session | null> {
  const res = await fetch('/api/v1/session', { credentials: 'same-origin' });
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
  const res = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
  return (await parse(res)) as T;
}

async function parse(res: Response): Promise<unknown> {
  const type = res.headers.get('content-type') ?? '';
  const body = type.includes('json') ? await res.json().catch(() => null) : await res.text();
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
