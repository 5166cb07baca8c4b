// The support overlay: what a support person asks a viewer to read out when
// "the stream is bad". Nothing personal: no token, no account.

import type { PlayerStats } from './player';

const REFRESH_MS = 500;

export class Overlay {
  private box: HTMLPreElement;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    container: HTMLElement,
    private read: () => PlayerStats & { edge: string | null },
  ) {
    this.box = document.createElement('pre');
    this.box.className = 'strom-overlay';
    Object.assign(this.box.style, {
      position: 'absolute',
      top: '8px',
      left: '8px',
      margin: '0',
      padding: '6px 8px',
      font: '12px/1.35 ui-monospace, monospace',
      color: '#fff',
      background: 'rgba(0,0,0,0.7)',
      borderRadius: '4px',
      pointerEvents: 'none',
      zIndex: '2',
      display: 'none',
    });
    container.appendChild(this.box);
  }

  get visible(): boolean {
    return this.timer !== null;
  }

  show(on: boolean): void {
    if (on === this.visible) return;
    this.box.style.display = on ? 'block' : 'none';
    if (this.timer) clearInterval(this.timer);
    this.timer = on ? setInterval(() => this.render(), REFRESH_MS) : null;
    if (on) this.render();
  }

  private render(): void {
    const s = this.read();
    const ms = (v: number | null) => (v === null ? '–' : `${(v / 1000).toFixed(2)} s`);
    const lines = [
      `transport  ${s.transport}${s.edge ? ` via ${s.edge}` : ''}`,
      `state      ${s.state}`,
      `latency    ${ms(s.latencyMs)}`,
      `buffer     ${ms(s.bufferMs)}`,
      `bitrate    ${(s.bitrateBps / 1e6).toFixed(2)} Mbit/s`,
      `frames     ${s.framesDecoded} decoded, ${s.droppedFrames} dropped`,
      `stalls     ${s.stalls}`,
      `first frame ${ms(s.firstFrameMs)}`,
    ];
    if (s.fallbackReason) lines.push(`fallback   ${s.fallbackReason}`);
    if (s.error) lines.push(`error      ${s.error}`);
    this.box.textContent = lines.join('\n');
  }

  destroy(): void {
    this.show(false);
    this.box.remove();
  }
}
