// /admin: event managers create events and streams (push URL and key with
// copy buttons, OBS hints), import and export participants (CSV), see whether
// the broadcaster is live with viewer count and bitrate, watch the event's
// live dashboard (viewers, QoE, edges, sites' offload), preview the stream,
// copy the embed snippet; owners also manage staff accounts and roles and
// their peer-agents' credentials. Every staff member changes their password
// and sets up an authenticator app under Security, where a session that must
// do either first is held.
// Routes live in the fragment: #/ (events), #/events/<id>, #/users,
// #/agents, #/security.

import { api, ApiError, logout, session, Session } from './api';
import { app, copyButton, field, h, notice, show, values } from './dom';
import { mountPlayer, unmountPlayer } from './watch';
import { pollDashboard } from './dashboard';
import { agentCredentialsCard } from './agents';
import { securityCards } from './security';
import type * as T from '../api/types';

// The API's own types, generated from its OpenAPI document (api-types.mjs).
type EventDto = T.EventDto;
type FieldDto = T.FieldDto;
type StreamDto = T.StreamDto;
type Credential = T.PublishCredential;
type Participant = T.ParticipantView;
type ImportResult = T.ImportResult;
type User = T.UserView;
type LiveStatus = T.LiveStatus;

const root = app();
let me: Session;
let stopLive: (() => void) | null = null;

start().catch((e) => show(root, h('p', { class: 'notice error' }, String(e?.message ?? e))));

async function start(): Promise<void> {
  const s = await session();
  if (!s) {
    location.assign(`/login?next=${encodeURIComponent('/admin' + location.hash)}`);
    return;
  }
  if (s.kind !== 'staff') {
    show(root, h('h1', {}, 'Not for participants'), h('p', {}, 'This is the organisers\' area. ', h('a', { href: `/e/${s.tenant}/${s.event}` }, 'Back to your event')));
    return;
  }
  me = s;
  window.addEventListener('hashchange', route);
  route();
}

function frame(title: string, ...content: (HTMLElement | null)[]): void {
  stopLive?.();
  stopLive = null;
  unmountPlayer();
  const out = h('button', { type: 'button', class: 'secondary' }, 'Log out');
  out.addEventListener('click', async () => {
    await logout();
    location.assign('/login');
  });
  const nav = h(
    'nav',
    {},
    due() ? null : h('a', { href: '#/' }, 'Events'),
    !due() && me.role === 'owner' ? h('a', { href: '#/users' }, 'Staff') : null,
    !due() && me.role === 'owner' ? h('a', { href: '#/agents' }, 'Agents') : null,
    h('a', { href: '#/security' }, 'Security'),
    h('span', { class: 'who' }, `${me.tenant} · ${me.role?.replace('_', ' ')}`),
    out,
  );
  show(root, h('header', { class: 'admin' }, h('strong', {}, 'strom'), nav), h('h1', {}, title), ...content);
}

/** Whether the session must change its password or enrol TOTP before anything else. */
function due(): boolean {
  return me.must_change_password || me.must_enrol_totp;
}

function route(): void {
  const [, asked, id] = location.hash.replace(/^#/, '').split('/');
  let section = asked;
  if (due() && section !== 'security') {
    // Every other call would be refused (403) until then.
    history.replaceState(null, '', '#/security');
    section = 'security';
  }
  const go =
    section === 'events' && id
      ? eventPage(id)
      : section === 'users'
        ? usersPage()
        : section === 'agents'
          ? agentsPage()
          : section === 'security'
            ? securityPage()
            : eventsPage();
  go.catch((e) => frame('Error', h('p', { class: 'notice error' }, (e as Error).message)));
}

const dateTime = (iso: string) => new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(iso));

// ---- events ------------------------------------------------------------

async function eventsPage(): Promise<void> {
  const events = await api<EventDto[]>('GET', '/api/v1/events');
  const table = h(
    'table',
    { id: 'events' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Event'), h('th', {}, 'Starts'), h('th', {}, 'Access'), h('th', {}, 'State'))),
    h(
      'tbody',
      {},
      ...events.map((e) =>
        h('tr', {}, h('td', {}, h('a', { href: `#/events/${e.id}` }, e.title)), h('td', {}, dateTime(e.starts_at)), h('td', {}, e.access), h('td', {}, e.ended_at ? 'ended' : 'scheduled')),
      ),
    ),
  );
  frame('Events', events.length ? table : h('p', {}, 'No events yet.'), me.role === 'moderator' ? null : newEventForm());
}

function localInput(d: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function slug(label: string): string {
  return label.toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '').slice(0, 32) || 'field';
}

function newEventForm(): HTMLElement {
  const status = notice();
  const now = new Date(Date.now() + 3600_000);
  now.setMinutes(0, 0, 0);
  const fields = h('div', { class: 'fields' });
  const addField = () => {
    const row = h(
      'div',
      { class: 'field-row' },
      h('input', { name: 'label', placeholder: 'Label, e.g. Company', 'aria-label': 'Field label' }),
      h('select', { name: 'kind', 'aria-label': 'Field kind' }, ...['text', 'email', 'checkbox', 'select'].map((k) => h('option', { value: k }, k))),
      h('input', { name: 'options', placeholder: 'Options (select): A, B', 'aria-label': 'Options' }),
      h('label', {}, h('input', { type: 'checkbox', name: 'required' }), ' required'),
    );
    fields.append(row);
  };
  const addButton = h('button', { type: 'button', class: 'secondary' }, 'Add a registration field');
  addButton.addEventListener('click', addField);
  const form = h(
    'form',
    { id: 'new-event' },
    field('Title', h('input', { name: 'title', required: true, maxlength: 200 })),
    h(
      'div',
      { class: 'row' },
      field('Starts', h('input', { name: 'starts', type: 'datetime-local', required: true, value: localInput(now) })),
      field('Ends', h('input', { name: 'ends', type: 'datetime-local', required: true, value: localInput(new Date(now.getTime() + 3600_000)) })),
    ),
    field(
      'Who may attend',
      h(
        'select',
        { name: 'access' },
        h('option', { value: 'list' }, 'Only imported or invited participants'),
        h('option', { value: 'open' }, 'Anyone who registers'),
        h('option', { value: 'domains' }, 'Registrations from these e-mail domains'),
        h('option', { value: 'approval' }, 'Registrations after approval'),
      ),
    ),
    field('E-mail domains', h('input', { name: 'domains', placeholder: 'example.com, example.org' }), 'For "Registrations from these e-mail domains"'),
    field('Privacy notice', h('textarea', { name: 'privacy', rows: 4, required: true }), 'Shown on the registration form; registrants consent to it (recorded).'),
    field('Keep data for (days after the event)', h('input', { name: 'retention', type: 'number', min: 1, max: 3650, value: 30 })),
    fields,
    addButton,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create event')),
    status.el,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = values(form);
    const form_fields = Array.from(fields.querySelectorAll<HTMLElement>('.field-row'))
      .map((row) => {
        const get = (n: string) => row.querySelector<HTMLInputElement>(`[name=${n}]`)!;
        const label = get('label').value.trim();
        return label
          ? { name: slug(label), label, kind: get('kind').value, required: get('required').checked, options: get('options').value.split(',').map((o) => o.trim()).filter(Boolean) }
          : null;
      })
      .filter(Boolean);
    try {
      const e = await api<EventDto>('POST', '/api/v1/events', {
        title: v.title,
        starts_at: new Date(v.starts).toISOString(),
        ends_at: new Date(v.ends).toISOString(),
        access: v.access,
        domains: v.domains.split(',').map((d) => d.trim()).filter(Boolean),
        privacy_notice: v.privacy,
        retention_days: Number(v.retention),
        form: form_fields,
      });
      location.hash = `#/events/${e.id}`;
    } catch (e) {
      status.fail(e);
    }
  });
  return h('section', { class: 'card' }, h('h2', {}, 'New event'), form);
}

async function eventPage(id: string): Promise<void> {
  const ev = await api<EventDto>('GET', `/api/v1/events/${id}`);
  const manager = me.role !== 'moderator';
  const portal = `${location.origin}/e/${me.tenant}/${ev.id}`;
  const snippet = `<iframe src="${location.origin}/embed/${me.tenant}/${ev.id}" width="960" height="540" allow="autoplay; fullscreen; encrypted-media" allowfullscreen style="border:0"></iframe>`;
  const live = h('section', { class: 'card', id: 'live' }, h('h2', {}, 'Live'), h('p', {}, 'Checking…'));
  const dashboard = h('section', { class: 'card', id: 'dashboard' });
  const streams = h('section', { class: 'card', id: 'streams' });
  const participants = h('section', { class: 'card', id: 'participants' });
  const preview = h('div', { id: 'player', class: 'stage preview' });
  frame(
    ev.title,
    h('p', { class: 'when' }, `${dateTime(ev.starts_at)} – ${dateTime(ev.ends_at)} · ${ev.access}${ev.ended_at ? ' · ended' : ''}`),
    h(
      'section',
      { class: 'card' },
      h('h2', {}, 'Links'),
      h('div', { class: 'copyline' }, h('span', {}, 'Event page for participants'), h('code', { id: 'portal-url' }, portal), copyButton(() => portal)),
      h('div', { class: 'copyline' }, h('span', {}, 'Embed the player (participants must be logged in to the event page)'), h('code', { id: 'embed-snippet' }, snippet), copyButton(() => snippet)),
    ),
    live,
    dashboard,
    streams,
    h('section', { class: 'card' }, h('h2', {}, 'Preview'), preview),
    participants,
    manager && !ev.ended_at ? endButton(ev) : null,
  );
  renderStreams(streams, ev, manager);
  renderParticipants(participants, ev, manager);
  const stopStatus = pollLive(live, ev);
  const stopDashboard = pollDashboard(dashboard, ev.id);
  stopLive = () => {
    stopStatus();
    stopDashboard();
  };
  if (!ev.ended_at) mountPlayer(preview, { tenant: me.tenant, event: ev.id, session: me });
}

function endButton(ev: EventDto): HTMLElement {
  const b = h('button', { type: 'button', class: 'danger' }, 'End the event now');
  b.addEventListener('click', async () => {
    if (!confirm('End the event? Playback stops for everybody.')) return;
    await api('POST', `/api/v1/events/${ev.id}/end`);
    route();
  });
  return h('div', { class: 'actions' }, b);
}

const mbps = (bps: number) => `${(bps / 1e6).toFixed(2)} Mbit/s`;

function pollLive(el: HTMLElement, ev: EventDto): () => void {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try {
      const s = await api<LiveStatus>('GET', `/api/v1/events/${ev.id}/live`);
      show(
        el,
        h('h2', {}, 'Live'),
        h('p', { class: 'viewers' }, h('strong', { id: 'viewer-count' }, String(s.viewers)), ' watching now'),
        s.streams.length
          ? h(
              'table',
              {},
              h('thead', {}, h('tr', {}, h('th', {}, 'Stream'), h('th', {}, 'Broadcaster'), h('th', {}, 'Ingest'), h('th', {}, 'Subscribers at edges'))),
              h(
                'tbody',
                {},
                ...s.streams.map((st) =>
                  h(
                    'tr',
                    { 'data-stream': st.name },
                    h('td', {}, st.name),
                    h('td', {}, h('span', { class: st.live ? 'badge live' : 'badge off' }, st.live ? 'live' : 'not live')),
                    h('td', {}, st.live ? mbps(st.ingest_bitrate_bps) : '—'),
                    h('td', {}, String(st.viewers)),
                  ),
                ),
              ),
            )
          : h('p', {}, 'No streams yet.'),
      );
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return location.assign('/login?next=/admin');
      show(el, h('h2', {}, 'Live'), h('p', { class: 'notice error' }, (e as Error).message));
    }
    setTimeout(tick, 3000);
  };
  tick();
  return () => {
    stopped = true;
  };
}

async function renderStreams(el: HTMLElement, ev: EventDto, manager: boolean): Promise<void> {
  const list = manager ? await api<StreamDto[]>('GET', `/api/v1/events/${ev.id}/streams`) : [];
  const keyBox = h('div', { id: 'stream-key' });
  const rows = list.map((s) => {
    const issue = h('button', { type: 'button', class: 'secondary' }, s.credential_issued_at ? 'New stream key' : 'Get stream key');
    issue.addEventListener('click', async () => {
      if (s.credential_issued_at && !confirm('A new key stops the current one. Continue?')) return;
      const c = await api<Credential>('POST', `/api/v1/events/${ev.id}/streams/${s.name}/credential`);
      showKey(keyBox, c);
    });
    return h('tr', {}, h('td', {}, s.name), h('td', {}, s.credential_issued_at ? `key issued ${dateTime(s.credential_issued_at)}` : 'no key yet'), h('td', {}, issue));
  });
  const status = notice();
  const form = h(
    'form',
    { id: 'new-stream', class: 'inline' },
    h('input', { name: 'name', placeholder: 'stream name, e.g. main', pattern: '[a-z0-9-]{1,32}', required: true, 'aria-label': 'Stream name' }),
    h('button', { type: 'submit' }, 'Add stream'),
    status.el,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('POST', `/api/v1/events/${ev.id}/streams`, { name: values(form).name });
      renderStreams(el, ev, manager);
    } catch (err) {
      status.fail(err);
    }
  });
  show(
    el,
    h('h2', {}, 'Streams'),
    rows.length ? h('table', {}, h('tbody', {}, ...rows)) : h('p', {}, 'No streams yet.'),
    keyBox,
    manager && !ev.ended_at ? form : null,
  );
}

function showKey(el: HTMLElement, c: Credential): void {
  show(
    el,
    h('div', { class: 'copyline' }, h('span', {}, 'Server'), h('code', { id: 'rtmp-url' }, c.rtmp_url), copyButton(() => c.rtmp_url)),
    h('div', { class: 'copyline' }, h('span', {}, 'Stream key'), h('code', { id: 'stream-key-value', class: 'secret' }, c.stream_key), copyButton(() => c.stream_key)),
    h('div', { class: 'copyline' }, h('span', {}, 'SRT URL'), h('code', { id: 'srt-url', class: 'secret' }, c.srt_url), copyButton(() => c.srt_url)),
    h('div', { class: 'copyline' }, h('span', {}, 'SRT passphrase'), h('code', { id: 'srt-passphrase', class: 'secret' }, c.srt_passphrase), copyButton(() => c.srt_passphrase)),
    h('p', { class: 'hint' }, `Valid until ${dateTime(c.expires_at)}. Shown once: copy it into your encoder now. SRT encoders call the SRT URL (stream id included) and encrypt with the passphrase (AES-128, 192 or 256).`),
    h(
      'details',
      { class: 'hint', open: true },
      h('summary', {}, 'OBS settings'),
      h(
        'ul',
        {},
        h('li', {}, 'Settings → Stream: Service "Custom…", Server and Stream Key from above.'),
        h('li', {}, 'Settings → Output (Advanced): x264 or hardware H.264, Rate control CBR, Keyframe interval 1 s (or 2 s), profile main or high, tune zerolatency.'),
        h('li', {}, 'Bitrate: 2,500–6,000 kbit/s for 720p–1080p; Audio AAC 128 kbit/s, 48 kHz.'),
        h('li', {}, 'ffmpeg: -c:v libx264 -g <2×fps> -c:a aac -ar 48000 -f flv "<server>/<stream key>"'),
      ),
    ),
  );
}

async function renderParticipants(el: HTMLElement, ev: EventDto, manager: boolean): Promise<void> {
  if (!manager) {
    show(el, h('h2', {}, 'Participants'), h('p', {}, 'Managed by the event managers.'));
    return;
  }
  const list = await api<Participant[]>('GET', `/api/v1/events/${ev.id}/participants`);
  const status = notice();
  const file = h('input', { type: 'file', accept: '.csv,text/csv', name: 'csv', id: 'csv-file', 'aria-label': 'CSV file' });
  const importButton = h('button', { type: 'button', id: 'import' }, 'Import');
  importButton.addEventListener('click', async () => {
    const f = file.files?.[0];
    if (!f) return status.fail('Choose a CSV file first (columns: email,name[,password][,form fields…]).');
    try {
      const r = await api<ImportResult>('POST', `/api/v1/events/${ev.id}/participants/import`, await f.text(), 'text/csv');
      status.ok(`${r.created} participants imported.`);
      setTimeout(() => renderParticipants(el, ev, manager), 600);
    } catch (e) {
      if (e instanceof ApiError && e.body && typeof e.body === 'object' && 'errors' in e.body) {
        const r = e.body as ImportResult;
        status.fail(`Nothing imported; fix these rows: ${r.errors.map((x) => `line ${x.line}${x.column ? ` (${x.column})` : ''}: ${x.message}`).join('; ')}`);
      } else status.fail(e);
    }
  });
  const invited = notice();
  const invite = h(
    'form',
    { id: 'invite', class: 'inline' },
    h('input', { name: 'name', placeholder: 'Name', required: true, 'aria-label': 'Name' }),
    h('input', { name: 'email', type: 'email', placeholder: 'E-mail', required: true, 'aria-label': 'E-mail' }),
    h('button', { type: 'submit' }, 'Invite'),
    invited.el,
  );
  invite.addEventListener('submit', async (submit) => {
    submit.preventDefault();
    const v = values(invite);
    try {
      await api('POST', `/api/v1/events/${ev.id}/participants`, { name: v.name, email: v.email, send_mail: true });
      invited.ok('Invitation sent (a login link).');
      setTimeout(() => renderParticipants(el, ev, manager), 600);
    } catch (e) {
      invited.fail(e);
    }
  });
  const shown = list.slice(0, 200);
  const action = (p: Participant): HTMLElement | null => {
    const next =
      p.status === 'active' || p.status === 'invited'
        ? ['deactivated', 'Deactivate']
        : p.status === 'pending'
          ? ['active', 'Approve']
          : p.status === 'deactivated'
            ? ['active', 'Reactivate']
            : null;
    if (!next) return null;
    const b = h('button', { type: 'button', class: 'secondary small', 'data-participant': p.id }, next[1]);
    b.addEventListener('click', async () => {
      try {
        await api('POST', `/api/v1/events/${ev.id}/participants/${p.id}/status`, { status: next[0] });
        renderParticipants(el, ev, manager);
      } catch (e) {
        status.fail(e);
      }
    });
    return b;
  };
  show(
    el,
    h('h2', {}, 'Participants'),
    h('p', { id: 'participant-count' }, `${list.length} participant${list.length === 1 ? '' : 's'}`),
    h(
      'div',
      { class: 'actions' },
      file,
      importButton,
      h('a', { class: 'button secondary', id: 'export', href: `/api/v1/events/${ev.id}/participants/export?format=csv`, download: `participants-${ev.id}.csv` }, 'Export CSV'),
    ),
    h('p', { class: 'hint' }, 'CSV columns: email,name[,password][,one column per registration field]. All rows are imported or none.'),
    status.el,
    invite,
    shown.length
      ? h(
          'table',
          { id: 'participant-table' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'E-mail'), h('th', {}, 'Status'), h('th', {}, 'Source'), h('th', {}, 'Consent'), h('th', {}, ''))),
          h('tbody', {}, ...shown.map((p) => h('tr', {}, h('td', {}, p.name), h('td', {}, p.email), h('td', {}, p.status), h('td', {}, p.source), h('td', {}, p.consent ? 'yes' : '—'), h('td', {}, action(p))))),
        )
      : null,
    list.length > shown.length ? h('p', { class: 'hint' }, `Showing ${shown.length} of ${list.length}; export for all.`) : null,
  );
}

// ---- staff -------------------------------------------------------------

const ROLES: [string, string][] = [
  ['owner', 'Owner'],
  ['event_manager', 'Event manager'],
  ['moderator', 'Moderator'],
];

async function usersPage(): Promise<void> {
  const users = await api<User[]>('GET', '/api/v1/users');
  const status = notice();
  const rows = users.map((u) => {
    const role = h('select', { 'aria-label': `Role of ${u.name}`, 'data-user': u.id }, ...ROLES.map(([v, l]) => h('option', { value: v, selected: v === u.role }, l)));
    role.addEventListener('change', async () => {
      try {
        await api('PATCH', `/api/v1/users/${u.id}`, { role: role.value });
        status.ok(`${u.name} is now ${role.selectedOptions[0].textContent}.`);
      } catch (e) {
        status.fail(e);
        role.value = u.role;
      }
    });
    // Owners help others: unlock after wrong guesses, and remove a second
    // factor whose authenticator is lost (their sessions end; they enrol
    // anew). One's own factor is replaced on the Security page.
    const actions: HTMLElement[] = [];
    if (u.locked) {
      const unlock = h('button', { type: 'button', class: 'small', 'data-unlock': u.id }, 'Unlock');
      unlock.addEventListener('click', async () => {
        try {
          await api('POST', `/api/v1/users/${u.id}/unlock`, {});
          status.ok(`${u.name} is unlocked.`);
          unlock.remove();
        } catch (e) {
          status.fail(e);
        }
      });
      actions.push(unlock);
    }
    if (u.totp && u.id !== me.id) {
      const remove = h('button', { type: 'button', class: 'danger small', 'data-remove-totp': u.id }, 'Remove 2FA');
      remove.addEventListener('click', async () => {
        if (!confirm(`Remove the second factor of ${u.name}? Their sessions end; they set up a new authenticator at their next login. Do this only after checking who asks.`)) return;
        try {
          await api('DELETE', `/api/v1/users/${u.id}/totp`);
          status.ok(`${u.name}'s second factor is removed.`);
          remove.replaceWith('');
        } catch (e) {
          status.fail(e);
        }
      });
      actions.push(remove);
    }
    return h(
      'tr',
      {},
      h('td', {}, u.name),
      h('td', {}, u.email),
      h('td', {}, role),
      h('td', {}, u.active ? (u.locked ? 'locked' : 'active') : 'deactivated'),
      h('td', {}, u.totp ? '2FA ' : '', ...actions),
    );
  });
  const created = notice();
  const form = h(
    'form',
    { id: 'new-user' },
    h('div', { class: 'row' }, field('Name', h('input', { name: 'name', required: true })), field('E-mail', h('input', { name: 'email', type: 'email', required: true }))),
    field('Role', h('select', { name: 'role' }, ...ROLES.map(([v, l]) => h('option', { value: v, selected: v === 'event_manager' }, l)))),
    h('button', { type: 'submit' }, 'Create account'),
    created.el,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = values(form);
    try {
      const r = await api<{ initial_password: string | null }>('POST', '/api/v1/users', { name: v.name, email: v.email, role: v.role });
      created.ok(`Account created. Initial password (shown once, must be changed at first login): ${r.initial_password ?? '—'}`);
    } catch (err) {
      created.fail(err);
    }
  });
  frame(
    'Staff',
    h('table', { id: 'users' }, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'E-mail'), h('th', {}, 'Role'), h('th', {}, 'State'), h('th', {}, ''))), h('tbody', {}, ...rows)),
    status.el,
    h('section', { class: 'card' }, h('h2', {}, 'New staff account'), form),
  );
}

// ---- peer-agents (owners) ------------------------------------------------

async function agentsPage(): Promise<void> {
  frame('Peer-agents', agentCredentialsCard());
}

// ---- security (every staff member) --------------------------------------

async function securityPage(done?: string): Promise<void> {
  // Owners can see whether they have a factor; others are told what to enter.
  let hasTotp: boolean | null = me.must_enrol_totp ? false : null;
  if (hasTotp === null && me.role === 'owner' && !due()) {
    hasTotp = await api<User>('GET', `/api/v1/users/${me.id}`)
      .then((u) => u.totp)
      .catch(() => null);
  }
  const why = me.must_change_password
    ? 'Your password was set by someone else: choose your own before anything else.'
    : me.must_enrol_totp
      ? 'Your organisation requires owners to log in with an authenticator app. Set one up to continue.'
      : null;
  frame(
    'Security',
    why ? h('p', { class: 'notice error', id: 'due' }, why) : null,
    done ? h('p', { class: 'notice ok', id: 'done' }, done, ' ', due() ? null : h('a', { href: '#/' }, 'Continue to the events')) : null,
    ...securityCards(hasTotp, async (what) => {
      // The server may have lifted a duty: take the session from it again.
      const s = await session();
      if (s) me = s;
      await securityPage(what);
    }),
  );
}
