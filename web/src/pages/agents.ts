// Peer-agent credentials on the admin page (owners): issue one (shown once),
// list them with who issued them and when they expire, and revoke one: the
// control plane refuses it and every ticket minted with it at once, and the
// agents using it stop within seconds.

import type { CredentialRecord } from '../api/types';
import { api } from './api';
import { copyButton, h, notice, show } from './dom';


const dateTime = (iso: string) => new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(iso));

/** The card; it loads the list itself. */
export function agentCredentialsCard(): HTMLElement {
  const issued = h('div', { id: 'agent-credential' });
  const list = h('div', { id: 'agent-credential-list' }, h('p', {}, 'Loading…'));
  const status = notice();
  const issue = h('button', { type: 'button', id: 'issue-agent-credential' }, 'Issue an agent credential');
  issue.addEventListener('click', async () => {
    try {
      const c = await api<{ id: string; credential: string }>('POST', '/api/v1/agent-credentials');
      show(
        issued,
        h('div', { class: 'copyline' }, h('span', {}, `Credential ${c.id}`), h('code', { id: 'agent-credential-value', class: 'secret', tabindex: 0 }, c.credential), copyButton(() => c.credential)),
        h('p', { class: 'hint' }, 'Shown once: put it into the configuration of the agents that are to use it (peer_agent.credential).'),
      );
      await render(list, status);
    } catch (e) {
      status.fail(e);
    }
  });
  render(list, status).catch((e) => status.fail(e));
  return h(
    'section',
    { class: 'card', id: 'agent-credentials-card' },
    h('h2', {}, 'Agent credentials'),
    h('p', {}, 'The peer-agents in your sites register with a credential. Revoking one stops every agent that uses it within seconds: give the agents that stay a new one.'),
    h('div', { class: 'actions' }, issue),
    issued,
    status.el,
    list,
  );
}

async function render(el: HTMLElement, status: ReturnType<typeof notice>): Promise<void> {
  const [credentials, users] = await Promise.all([
    api<CredentialRecord[]>('GET', '/api/v1/agent-credentials'),
    api<{ id: string; name: string }[]>('GET', '/api/v1/users').catch(() => []),
  ]);
  const names = new Map(users.map((u) => [u.id, u.name]));
  const rows = credentials
    .filter((c) => c.kind === 'agent')
    .sort((a, b) => b.issued_at.localeCompare(a.issued_at))
    .map((c) => {
      const expired = new Date(c.expires_at).getTime() <= Date.now();
      let revoke: HTMLButtonElement | null = null;
      if (!c.revoked_at && !expired) {
        revoke = h('button', { type: 'button', class: 'danger small', 'data-credential': c.id }, 'Revoke');
        revoke.addEventListener('click', async () => {
          if (!confirm(`Revoke ${c.id}? Every agent using it stops within seconds.`)) return;
          try {
            await api('DELETE', `/api/v1/agent-credentials/${encodeURIComponent(c.id)}`);
          } catch (e) {
            status.fail(e);
            return;
          }
          // Say so once the list shows it, so page and message never disagree.
          try {
            await render(el, status);
            status.ok(`${c.id} revoked.`);
          } catch {
            status.ok(`${c.id} revoked; reload the page to see the list.`);
          }
        });
      }
      return h(
        'tr',
        { 'data-credential': c.id },
        h('td', {}, h('code', {}, c.id)),
        h('td', {}, `${dateTime(c.issued_at)} by ${names.get(c.issued_by) ?? c.issued_by}${c.issued > 1 ? ` (issued ${c.issued} times)` : ''}`),
        h('td', {}, dateTime(c.expires_at)),
        h('td', { class: 'state' }, c.revoked_at ? `revoked ${dateTime(c.revoked_at)}` : expired ? 'expired' : 'valid'),
        h('td', {}, revoke),
      );
    });
  show(
    el,
    rows.length
      ? h(
          'table',
          { id: 'agent-credentials' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Credential'), h('th', {}, 'Issued'), h('th', {}, 'Expires'), h('th', {}, 'State'), h('th', {}, ''))),
          h('tbody', {}, ...rows),
        )
      : h('p', {}, 'No agent credentials yet.'),
  );
}
