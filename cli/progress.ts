// A one-line progress bar on stderr (redrawn in place on a terminal, a line every 10% otherwise).

export class ProgressBar {
  private readonly start = Date.now();
  private lastTenth = -1;

  constructor(private readonly label: string, private total: number, private readonly quiet = false) {}

  /** `total` changes the count the bar fills to (a run's steps, known once it is planned). */
  update(done: number, fields: Record<string, string> = {}, total = this.total): void {
    this.total = total;
    if (this.quiet) return;
    const frac = Math.min(1, done / Math.max(1, this.total));
    const elapsed = (Date.now() - this.start) / 1000;
    const eta = frac > 0 ? elapsed / frac - elapsed : NaN; // unknown until something is done
    const width = 24;
    const filled = Math.round(frac * width);
    const extras = Object.entries(fields).map(([k, v]) => `${k} ${v}`).join('  ');
    const line = `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${this.total}  ${extras}  ETA ${formatSeconds(eta)}`;
    if (process.stderr.isTTY) {
      process.stderr.write(`\r${line}\x1b[K`);
    } else {
      const tenth = Math.floor(frac * 10);
      if (tenth !== this.lastTenth) {
        this.lastTenth = tenth;
        process.stderr.write(`${line}\n`);
      }
    }
  }

  /** A line above the bar (the bar is redrawn at the next update). */
  note(message: string): void {
    if (this.quiet) return;
    process.stderr.write(`${process.stderr.isTTY ? '\r\x1b[K' : ''}${message}\n`);
  }

  done(message = ''): void {
    if (this.quiet) return;
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    if (message) process.stderr.write(`${message}\n`);
  }
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(0)}s`;
}
