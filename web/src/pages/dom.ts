// A few DOM helpers: pages build their elements in code (no templates, no
// innerHTML with data), so nothing a participant types can become markup.

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | number | ((e: Event) => void) | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

export function app(): HTMLElement {
  const el = document.getElementById('app');
  if (!el) throw new Error('page has no #app');
  return el;
}

/** Replaces the content of `el`. */
export function show(el: HTMLElement, ...children: Child[]): void {
  el.replaceChildren();
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
}

/** A status line that forms write their errors and confirmations into. */
export function notice(): { el: HTMLElement; ok(msg: string): void; fail(e: unknown): void; clear(): void } {
  const el = h('p', { class: 'notice', role: 'status', 'aria-live': 'polite' });
  return {
    el,
    ok(msg) {
      el.className = 'notice ok';
      el.textContent = msg;
    },
    fail(e) {
      el.className = 'notice error';
      el.textContent = e instanceof Error ? e.message : String(e);
    },
    clear() {
      el.className = 'notice';
      el.textContent = '';
    },
  };
}

/** Values of a form's named controls (checkboxes as "true"/"false"). */
export function values(form: HTMLFormElement): Record<string, string> {
  const out: Record<string, string> = {};
  for (const el of Array.from(form.elements)) {
    const input = el as HTMLInputElement;
    if (!input.name) continue;
    out[input.name] = input.type === 'checkbox' ? String(input.checked) : input.value;
  }
  return out;
}

/** A button that copies `text()` to the clipboard. */
export function copyButton(text: () => string, label = 'Copy'): HTMLButtonElement {
  const b = h('button', { type: 'button', class: 'copy' }, label);
  b.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text());
      b.textContent = 'Copied';
    } catch {
      b.textContent = 'Select and copy';
    }
    setTimeout(() => (b.textContent = label), 1500);
  });
  return b;
}

export function field(label: string, input: HTMLElement, hint?: string): HTMLLabelElement {
  return h('label', { class: 'field' }, h('span', {}, label), input, hint ? h('small', {}, hint) : null);
}
