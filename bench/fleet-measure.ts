// What the fleet bench measures besides latencies: CPU time and resident memory of processes
// (Linux /proc), and percentiles.
import { readFileSync, readdirSync } from 'node:fs';
const TICKS_PER_SECOND = 100;

export const percentile = (values: readonly number[], p: number): number => {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};

export const summary = (values: readonly number[]): { n: number; p50: number; p95: number; p99: number; max: number } => ({
  n: values.length, p50: round(percentile(values, 50)), p95: round(percentile(values, 95)), p99: round(percentile(values, 99)), max: round(percentile(values, 100)),
});

export const round = (x: number, digits = 1): number => Number(x.toFixed(digits));

/** CPU seconds (user + system) a process has used so far; 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

export function residentMiB(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
  } catch {
    return 0;
  }
}

/** A process and its children (PostgreSQL's backends are the postmaster's). */
export function withChildren(pid: number): number[] {
  const children = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
    try {
      return Number(readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1].split(' ')[1]) === pid;
    } catch {
      return false;
    }
  });
  return [pid, ...children.map(Number)];
}

/** Samples resident memory every second; CPU over the window between `start()` and `stop()`. */
export class ProcessMeter {
  private cpuAtStart = 0;
  private startedAt = 0;
  private peak = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pids: () => number[]) {
    this.timer = setInterval(() => (this.peak = Math.max(this.peak, this.pids().reduce((a, p) => a + residentMiB(p), 0))), 1000);
  }

  start(): void {
    this.cpuAtStart = this.pids().reduce((a, p) => a + cpuSeconds(p), 0);
    this.startedAt = performance.now();
  }

  stop(): { cpuCores: number; rssPeakMiB: number } {
    clearInterval(this.timer);
    const cpu = this.pids().reduce((a, p) => a + cpuSeconds(p), 0) - this.cpuAtStart;
    return { cpuCores: round(cpu / ((performance.now() - this.startedAt) / 1000), 2), rssPeakMiB: round(this.peak) };
  }
}
