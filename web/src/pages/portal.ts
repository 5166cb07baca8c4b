// /e/{tenant}/{event}: the event's landing page. Visitors register with the
// event's form and consent to its privacy notice (recorded with the
// registration), or ask for a login link; logged-in participants (and staff
// previewing) watch here, with a playback token refreshed before it expires.

import type { FieldDto as FormField, PublicEvent } from '../api/types';
import { api, logout, session, Session } from './api';
import { app, field, h, notice, show, values } from './dom';
import { mountPlayer } from './watch';

const root = app();
const [, , tenant, event] = location.pathname.split('/');

main().catch((e) => show(root, h('h1', {}, 'Something went wrong'), h('p', { class: 'notice error' }, String(e?.message ?? e))));

async function main(): Promise<void> {
  const ev = await api<PublicEvent>('GET', `/api/v1/public/${encodeURIComponent(tenant)}/events/${encodeURIComponent(event)}`).catch(() => null);
  if (!ev) {
    show(root, h('h1', {}, 'Event not found'), h('p', {}, 'Check the link you were given.'));
    return;
  }
  document.title = ev.title;
  const s = await session();
  const mine = s && s.tenant === ev.tenant && (s.kind === 'staff' || s.event === ev.id);
  if (mine) watch(ev, s);
  else landing(ev);
}

function when(ev: PublicEvent): string {
  const start = new Date(ev.starts_at);
  const end = new Date(ev.ends_at);
  const full = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
  const sameDay = start.toDateString() === end.toDateString();
  const endText = sameDay ? new Intl.DateTimeFormat(undefined, { timeStyle: 'short' }).format(end) : full.format(end);
  return `${full.format(start)} – ${endText}`;
}

function header(ev: PublicEvent): HTMLElement {
  return h('header', { class: 'event' }, h('h1', {}, ev.title), h('p', { class: 'when' }, when(ev)));
}

function watch(ev: PublicEvent, s: Session): void {
  const stage = h('div', { id: 'player', class: 'stage' });
  const out = h('button', { type: 'button', class: 'secondary', id: 'logout' }, 'Log out');
  out.addEventListener('click', async () => {
    await logout();
    location.reload();
  });
  show(root, header(ev), stage, h('div', { class: 'actions' }, out));
  if (ev.ended) {
    show(stage, h('p', { class: 'notice' }, 'This event has ended.'));
    return;
  }
  mountPlayer(stage, { tenant: ev.tenant, event: ev.id, session: s });
}

function landing(ev: PublicEvent): void {
  const parts: HTMLElement[] = [header(ev)];
  if (ev.ended) {
    parts.push(h('p', { class: 'notice' }, 'This event has ended.'));
    show(root, ...parts);
    return;
  }
  if (ev.access !== 'list') parts.push(registration(ev));
  parts.push(loginLink(ev));
  show(root, ...parts);
}

function input(f: FormField): HTMLElement {
  const common = { name: `field:${f.name}`, required: f.required, id: `field-${f.name}` };
  switch (f.kind) {
    case 'select':
      return h('select', common, h('option', { value: '' }, '—'), ...(f.options ?? []).map((o) => h('option', { value: o }, o)));
    case 'checkbox':
      return h('input', { ...common, type: 'checkbox' });
    case 'email':
      return h('input', { ...common, type: 'email' });
    default:
      return h('input', { ...common, type: 'text', maxlength: 200 });
  }
}

function registration(ev: PublicEvent): HTMLElement {
  const status = notice();
  const consent = h('input', { type: 'checkbox', name: 'consent', id: 'consent', required: true });
  const form = h(
    'form',
    { id: 'register' },
    field('Name', h('input', { name: 'name', required: true, autocomplete: 'name', maxlength: 200 })),
    field('E-mail', h('input', { name: 'email', type: 'email', required: true, autocomplete: 'email' })),
    ...ev.form.map((f) => field(f.label + (f.required ? '' : ' (optional)'), input(f))),
    h('details', { class: 'privacy', open: true }, h('summary', {}, 'Privacy notice'), h('p', { class: 'privacy-text' }, ev.privacy_notice || 'The organiser has not provided a privacy notice.')),
    h('label', { class: 'consent' }, consent, h('span', {}, 'I have read the privacy notice and agree that my data is processed for this event.')),
    h('button', { type: 'submit' }, ev.access === 'approval' ? 'Ask to attend' : 'Register'),
    status.el,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = values(form);
    const fields: Record<string, string> = {};
    for (const [k, val] of Object.entries(v)) if (k.startsWith('field:') && val !== '' && val !== 'false') fields[k.slice(6)] = val;
    try {
      await api('POST', `/api/v1/public/${encodeURIComponent(ev.tenant)}/events/${encodeURIComponent(ev.id)}/register`, {
        email: v.email,
        name: v.name,
        fields,
        consent: consent.checked,
      });
      show(
        form,
        h('p', { class: 'notice ok', id: 'registered' }, ev.access === 'approval'
          ? 'Thank you. The organiser will confirm your registration; you will get a mail with a login link.'
          : 'Thank you. A login link is on its way to your mailbox. Open it in this browser.'),
      );
    } catch (err) {
      status.fail(err);
    }
  });
  return h('section', { class: 'card' }, h('h2', {}, 'Register'), form);
}

function loginLink(ev: PublicEvent): HTMLElement {
  const status = notice();
  const form = h(
    'form',
    { id: 'login-link' },
    field('E-mail', h('input', { name: 'email', type: 'email', required: true, autocomplete: 'email' })),
    h('button', { type: 'submit' }, 'Mail me a login link'),
    status.el,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('POST', '/api/v1/auth/magic-link', { tenant: ev.tenant, event: ev.id, email: values(form).email });
      status.ok('If you are registered, a login link is on its way. Open it in this browser.');
    } catch (err) {
      status.fail(err);
    }
  });
  return h('section', { class: 'card' }, h('h2', {}, 'Already registered?'), form);
}
