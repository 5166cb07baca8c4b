// /login: opens magic links (`#token=` in the fragment, which never reaches
// a server log), asks for the mailed code when the link is opened on another
// device, asks staff with an authenticator app for its code, and offers
// staff a password login, a login link or a password reset. /reset (the
// same page) completes a reset from its mailed link.

import { api, ApiError, rememberCsrf, Session } from './api';
import { app, field, h, notice, show, values } from './dom';

const root = app();
const params = new URLSearchParams(location.search);
/** Opens the link in the address bar's fragment, if there is one. */
function begin(): void {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const secret = fragment.get('token');
  if (secret && location.pathname === '/reset') {
    history.replaceState(null, '', location.pathname);
    newPassword(secret);
  } else if (secret) {
    // Take the secret out of the address bar and history at once.
    history.replaceState(null, '', location.pathname + location.search);
    // A link can carry its code (strom dev prints the owner's that way).
    consume(secret, fragment.get('code') ?? undefined);
  } else {
    staffLogin();
  }
}

begin();
// A link pasted into this tab while it shows /login changes only the fragment.
window.addEventListener('hashchange', () => {
  if (location.hash.includes('token=')) begin();
});

async function consume(token: string, code: string | undefined, totp?: string): Promise<void> {
  const status = notice();
  show(root, h('h1', {}, 'Logging in…'), status.el);
  try {
    const body: Record<string, string> = { token };
    if (code) body.code = code;
    if (totp) body.totp = totp;
    const s = await api<Session>('POST', '/api/v1/auth/magic-link/consume', body);
    landed(s);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && reason(e) === 'totp_required') {
      // The link stays unused until the second factor is in: ask for it.
      askTotp(token, code, totp ? e.message : undefined);
    } else if (e instanceof ApiError && e.status === 423) {
      show(
        root,
        h('h1', {}, 'Account locked for now'),
        h('p', {}, 'Too many wrong codes. Wait a while and ask for a new login link, or ask an owner to unlock your account.'),
        status.el,
      );
      status.fail(e);
    } else if (e instanceof ApiError && (e.status === 404 || e.status === 403) && !code) {
      // A link opened without its browser's pre-login cookie is refused
      // like an unknown one, so this may be another device: offer the code.
      askCode(token);
    } else {
      show(
        root,
        h('h1', {}, 'This link does not work'),
        h('p', {}, 'It may have been used already or expired (links work once, for 10 minutes). ', h('a', { href: '/login' }, 'Ask for a new one.')),
        status.el,
      );
      status.fail(e);
    }
  }
}

/** The machine-readable reason of a problem answer (`reason`), if any. */
function reason(e: ApiError): string | undefined {
  const b = e.body;
  return b && typeof b === 'object' && 'reason' in b ? String((b as { reason: unknown }).reason) : undefined;
}

/**
 * The link was not opened in the browser that asked for it, or it was used
 * or expired (the server does not say which).
 */
function askCode(token: string): void {
  const form = h(
    'form',
    { id: 'link-code' },
    field('Code from the mail', h('input', { name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', required: true, pattern: '[0-9 ]{6,12}' })),
    h('button', { type: 'submit' }, 'Log in'),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    consume(token, values(form).code.replace(/\s+/g, ''));
  });
  show(
    root,
    h('h1', {}, 'Enter the code from the mail'),
    h(
      'p',
      {},
      'This link may have been used already or expired, or it was opened on another device than the one that asked for it. ',
      'Enter the 8-digit code from the same mail, or ',
      h('a', { href: '/login' }, 'ask for a new link'),
      '.',
    ),
    form,
  );
}

/** Staff with an authenticator app: a link proves the mailbox, the code the second factor. */
function askTotp(token: string, code: string | undefined, error?: string): void {
  const status = notice();
  const form = h(
    'form',
    { id: 'link-totp' },
    field(
      'Authenticator code',
      h('input', { name: 'totp', inputmode: 'numeric', autocomplete: 'one-time-code', required: true, pattern: '[0-9 ]{6,8}', autofocus: true }),
      'The 6-digit code your authenticator app shows for strom now',
    ),
    h('button', { type: 'submit' }, 'Log in'),
    status.el,
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    consume(token, code, values(form).totp.replace(/\s+/g, ''));
  });
  show(root, h('h1', {}, 'Enter your authenticator code'), h('p', {}, 'Your account has a second factor: enter the code from your authenticator app to finish logging in.'), form);
  if (error) status.fail(`${error}. Try again (the account locks after several wrong codes).`);
}

function landed(s: Session): void {
  rememberCsrf(s);
  const next = sameOrigin(params.get('next'));
  if (next) location.assign(next);
  else if (s.kind === 'participant' && s.event) location.assign(`/e/${s.tenant}/${s.event}`);
  else if (s.must_change_password) changePassword(s);
  else location.assign('/admin');
}

/**
 * `next` as a path on this origin, or null. Resolved as the browser would:
 * `/\evil.example` and `/<tab>/evil.example` are other sites.
 */
function sameOrigin(next: string | null): string | null {
  if (!next) return null;
  let url: URL;
  try {
    url = new URL(next, location.origin);
  } catch {
    return null;
  }
  return url.origin === location.origin ? url.pathname + url.search + url.hash : null;
}

function staffLogin(): void {
  const status = notice();
  const tenant = h('input', { name: 'tenant', required: true, value: params.get('tenant') ?? '', autocomplete: 'organization' });
  const email = h('input', { name: 'email', type: 'email', required: true, autocomplete: 'username' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password' });
  const totp = h('input', { name: 'totp', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}' });
  const form = h(
    'form',
    {},
    field('Organisation id', tenant, 'Starts with t_, from your invitation'),
    field('E-mail', email),
    field('Password', password),
    field('Authenticator code', totp, 'Only if your account has one'),
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'submit' }, 'Log in'),
      h('button', { type: 'button', class: 'secondary', id: 'send-link' }, 'Mail me a login link'),
      h('button', { type: 'button', class: 'secondary', id: 'reset' }, 'Forgot password'),
    ),
    status.el,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = values(form);
    try {
      const s = await api<Session>('POST', '/api/v1/auth/login', {
        tenant: v.tenant,
        email: v.email,
        password: v.password,
        ...(v.totp ? { totp: v.totp } : {}),
      });
      landed(s);
    } catch (e) {
      status.fail(e);
    }
  });
  form.querySelector('#send-link')?.addEventListener('click', async () => {
    const v = values(form);
    if (!v.tenant || !v.email) return status.fail('Organisation id and e-mail first');
    try {
      await api('POST', '/api/v1/auth/magic-link', { tenant: v.tenant, email: v.email });
      status.ok('If the address is known, a login link is on its way. Open it in this browser.');
    } catch (e) {
      status.fail(e);
    }
  });
  form.querySelector('#reset')?.addEventListener('click', async () => {
    const v = values(form);
    if (!v.tenant || !v.email) return status.fail('Organisation id and e-mail first');
    try {
      await api('POST', '/api/v1/auth/password-reset', { tenant: v.tenant, email: v.email });
      status.ok('If the address is known, a mail with a reset link is on its way.');
    } catch (e) {
      status.fail(e);
    }
  });
  show(root, h('h1', {}, 'Log in to strom'), form);
}

/** Completes a password reset from the mailed link (`/reset#token=…`). */
function newPassword(token: string): void {
  const status = notice();
  const form = h(
    'form',
    { id: 'new-password' },
    field('New password', h('input', { name: 'next', type: 'password', required: true, autocomplete: 'new-password', minlength: 10 })),
    h('button', { type: 'submit' }, 'Set password'),
    status.el,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('POST', '/api/v1/auth/password-reset/complete', { token, new_password: values(form).next });
      show(root, h('h1', {}, 'Password changed'), h('p', {}, h('a', { href: '/login' }, 'Log in')));
    } catch (e) {
      // A password the policy refuses leaves the link usable: try another.
      status.fail(e);
    }
  });
  show(root, h('h1', {}, 'Choose a new password'), form);
}

function changePassword(s: Session): void {
  const status = notice();
  const form = h(
    'form',
    {},
    field('Current password', h('input', { name: 'current', type: 'password', required: true, autocomplete: 'current-password' })),
    field('New password', h('input', { name: 'next', type: 'password', required: true, autocomplete: 'new-password', minlength: 10 })),
    h('button', { type: 'submit' }, 'Change password'),
    status.el,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = values(form);
    try {
      rememberCsrf(s);
      await api('POST', '/api/v1/auth/password', { current_password: v.current, new_password: v.next });
      location.assign('/admin');
    } catch (e) {
      status.fail(e);
    }
  });
  show(root, h('h1', {}, 'Choose a new password'), h('p', {}, 'Your password was set by someone else and must be changed.'), form);
}
