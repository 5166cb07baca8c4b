// The staff member's own security settings (the admin page's Security
// view): changing the password, which logs out their other sessions, and
// setting up or replacing an authenticator app (TOTP): the key as text and
// an otpauth link, then a first code to confirm it; and the browsers and
// devices logged in to the account, each of which can be logged out with
// the password.

import type { SessionItem, TotpEnrolment } from '../api/types';
import { api } from './api';
import { copyButton, field, h, notice, show, values } from './dom';

/**
 * The password and authenticator cards. `hasTotp` is whether the account
 * has a factor (null: unknown); `changed` runs after a change is complete
 * with what to tell the user.
 */
export function securityCards(hasTotp: boolean | null, changed: (done: string) => void): HTMLElement[] {
  return [passwordCard(changed), totpCard(hasTotp, changed), sessionsCard()];
}

const dateTime = (iso: string) => new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(iso));

/** Where the account is logged in; another session ends with the password. */
function sessionsCard(): HTMLElement {
  const card = h('section', { class: 'card', id: 'sessions' });
  const status = notice();
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', 'aria-label': 'Your password' });
  const body = h('tbody', {});
  const load = async () => {
    try {
      const sessions = await api<SessionItem[]>('GET', '/api/v1/auth/sessions');
      body.replaceChildren(
        ...sessions.map((x) => {
          let end: HTMLButtonElement | null = null;
          if (!x.current) {
            end = h('button', { type: 'button', class: 'danger small', 'data-session': x.id }, 'Log out');
            end.addEventListener('click', async () => {
              try {
                await api('POST', `/api/v1/auth/sessions/${x.id}/end`, password.value ? { password: password.value } : {});
              } catch (e) {
                status.fail(e);
                return;
              }
              // Say so once the list shows it, so page and message never disagree.
              await load();
              status.ok('That session is logged out.');
            });
          }
          return h(
            'tr',
            {},
            h('td', {}, dateTime(x.created_at)),
            h('td', {}, dateTime(x.last_seen)),
            h('td', {}, x.current ? 'this browser' : end),
          );
        }),
      );
    } catch (e) {
      status.fail(e);
    }
  };
  void load();
  card.append(
    h('h2', {}, 'Where you are logged in'),
    h('p', { class: 'hint' }, 'Each browser or device logged in to your account. To log one out, enter your password first.'),
    field('Your password', password),
    h('table', { id: 'session-list' }, h('thead', {}, h('tr', {}, h('th', {}, 'Logged in'), h('th', {}, 'Last active'), h('th', {}, ''))), body),
    status.el,
  );
  return card;
}

function passwordCard(changed: (done: string) => void): HTMLElement {
  const status = notice();
  const form = h(
    'form',
    { id: 'change-password' },
    field('Current password', h('input', { name: 'current', type: 'password', required: true, autocomplete: 'current-password' })),
    field('New password', h('input', { name: 'next', type: 'password', required: true, autocomplete: 'new-password', minlength: 10 })),
    h('button', { type: 'submit' }, 'Change password'),
    status.el,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = values(form);
    try {
      await api('POST', '/api/v1/auth/password', { current_password: v.current, new_password: v.next });
      changed('Password changed. Your other sessions (other browsers and devices) were logged out; this one stays.');
    } catch (e) {
      status.fail(e);
    }
  });
  return h(
    'section',
    { class: 'card', id: 'password' },
    h('h2', {}, 'Password'),
    h('p', { class: 'hint' }, 'Changing it logs you out everywhere else: your other browsers and devices must log in again.'),
    form,
  );
}

function totpCard(hasTotp: boolean | null, changed: (done: string) => void): HTMLElement {
  const card = h('section', { class: 'card', id: 'totp' });
  const status = notice();
  const form = h(
    'form',
    { id: 'totp-enrol' },
    field('Your password', h('input', { name: 'password', type: 'password', required: true, autocomplete: 'current-password' })),
    hasTotp === false
      ? null
      : field(
          'Code from your current authenticator app',
          h('input', { name: 'current_code', inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9 ]{6,7}', required: hasTotp === true }),
          hasTotp ? 'Needed to replace it' : 'Only when you already have one and replace it',
        ),
    h('button', { type: 'submit' }, hasTotp ? 'Replace the authenticator app' : 'Set up an authenticator app'),
    status.el,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = values(form);
    const code = (v.current_code ?? '').replace(/\s+/g, '');
    try {
      const e = await api<TotpEnrolment>('POST', '/api/v1/auth/totp/enrol', { password: v.password, ...(code ? { current_code: code } : {}) });
      confirmTotp(card, e, changed);
    } catch (e) {
      status.fail(e);
    }
  });
  const state =
    hasTotp === true
      ? 'Your logins ask for a code from your authenticator app. Replacing it needs your password and a code from the current one.'
      : hasTotp === false
        ? 'Your account has no second factor yet. With one, every login (by password or by mailed link) also asks for the code your authenticator app shows.'
        : 'With an authenticator app, every login (by password or by mailed link) also asks for the code it shows.';
  show(card, h('h2', {}, 'Authenticator app'), h('p', {}, state), form);
  return card;
}

/** Shows the new key (by hand, or as an otpauth link) and asks for a first code. */
function confirmTotp(card: HTMLElement, e: TotpEnrolment, changed: (done: string) => void): void {
  const status = notice();
  const form = h(
    'form',
    { id: 'totp-confirm' },
    field('Code shown by the app', h('input', { name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', required: true, pattern: '[0-9 ]{6,7}' })),
    h('button', { type: 'submit' }, 'Confirm'),
    status.el,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('POST', '/api/v1/auth/totp/confirm', { code: values(form).code.replace(/\s+/g, '') });
      changed('Authenticator app set up: logins now ask for its code.');
    } catch (err) {
      status.fail(err);
    }
  });
  // No QR code: drawing one would take a new dependency. The key goes in by
  // hand, and the otpauth link opens the app on a phone that has it.
  show(
    card,
    h('h2', {}, 'Authenticator app'),
    h(
      'p',
      {},
      'Add strom to your authenticator app: enter the key by hand (time-based, 6 digits, every 30 seconds), or open the link on the phone that has the app. Then enter the code it shows.',
    ),
    h('div', { class: 'copyline' }, h('span', {}, 'Key'), h('code', { id: 'totp-secret', class: 'secret', tabindex: 0 }, e.secret), copyButton(() => e.secret)),
    h('div', { class: 'copyline' }, h('span', {}, 'Link for the app'), h('code', { id: 'totp-uri', class: 'secret', tabindex: 0 }, h('a', { href: e.uri }, e.uri)), copyButton(() => e.uri)),
    h('p', { class: 'hint' }, 'Until you confirm, logging in works as before.'),
    form,
  );
}
