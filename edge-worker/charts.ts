// The dashboard's charts, as SVG strings: a run's curves (train loss and test top-1, each on its
// own labelled axis) and the strategy chooser's top-1 against tuned parameters with the Pareto
// front. No chart library: two small plots do not earn one's weight.

export interface CurvePoint {
  readonly step: number;
  readonly epoch: number;
  readonly trainLoss: number | null;
  readonly testAccuracy: number | null;
}

const W = 440;
const fmt = (v: number, digits: number): string => v.toFixed(digits);

/** Up to `n` round tick values from 0 to max (1, 2 or 5 times a power of ten apart). */
export function ticks(max: number, n = 4): number[] {
  const raw = max / n;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  return Array.from({ length: Math.floor(max / step + 1e-9) + 1 }, (_, i) => i * step);
}

/** One panel: a line (or dots) over [0, xMax] x [0, yMax], ticks on both axes from the data, each point's value on hover. */
function panel(o: {
  points: readonly [number, number][]; xMax: number; yMax: number; yLabel: string; xLabel: string; xName: string; color: string; dots: boolean;
  yTick: (v: number) => string; role: string;
}): string {
  const H = 160, L = 46, B = 30, T = 18, R = 10;
  const x = (v: number): number => L + ((W - L - R) * v) / o.xMax;
  const y = (v: number): number => T + (H - B - T) * (1 - v / o.yMax);
  const grid = ticks(o.yMax).map((v) => `<line x1="${L}" y1="${fmt(y(v), 1)}" x2="${W - R}" y2="${fmt(y(v), 1)}" stroke="#eef0f4"/>`
    + `<text x="${L - 4}" y="${fmt(y(v) + 3, 1)}" text-anchor="end">${o.yTick(v)}</text>`).join('');
  const xTicks = ticks(o.xMax).map((v) => `<text x="${fmt(x(v), 1)}" y="${H - B + 12}" text-anchor="middle">${v.toLocaleString('en-US')}</text>`).join('');
  const line = o.dots || o.points.length < 2 ? ''
    : `<path d="${o.points.map(([px, py], i) => `${i ? 'L' : 'M'}${fmt(x(px), 1)},${fmt(y(py), 1)}`).join(' ')}" fill="none" stroke="${o.color}" stroke-width="1.5"/>`;
  // Every point is a mark with its value: a hover shows it (a line's marks are small).
  const marks = o.points.map(([px, py]) => `<circle cx="${fmt(x(px), 1)}" cy="${fmt(y(py), 1)}" r="${o.dots ? 3.5 : 2.5}" fill="${o.color}">`
    + `<title>${o.xName} ${px.toLocaleString('en-US', { maximumFractionDigits: 2 })}: ${o.yLabel} ${o.yTick(py)}</title></circle>`).join('');
  return `<svg width="${W}" height="${H}" role="img" aria-label="${o.role}" data-chart="${o.role}">${grid}
    <line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#ccd"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#ccd"/>${xTicks}
    <text x="${L}" y="11" fill="${o.color}">${o.yLabel}</text><text x="${W - R}" y="${H - 3}" text-anchor="end">${o.xLabel}</text>
    ${line}${marks}</svg>`;
}

/** Train loss per round against steps, and test top-1 per evaluated epoch: two panels, two axes. */
export function runCurves(metrics: readonly CurvePoint[], totalSteps: number): string {
  const losses = metrics.filter((m) => m.trainLoss !== null);
  const accs = metrics.filter((m) => m.testAccuracy !== null);
  if (!losses.length && !accs.length) return `<svg width="${W}" height="40"><text x="4" y="24">curves appear after the first round</text></svg>`;
  const steps = Math.max(1, totalSteps, ...metrics.map((m) => m.step));
  // The run's epochs, from any point's steps per epoch: the axis spans the whole run, not what has run so far.
  const perEpoch = metrics.find((m) => m.epoch > 0 && m.step > 0);
  const planned = perEpoch ? Math.round((totalSteps * perEpoch.epoch) / perEpoch.step) : 0;
  const epochs = Math.max(1, planned, ...metrics.map((m) => Math.ceil(m.epoch)));
  const topLoss = Math.max(1e-6, ...losses.map((m) => m.trainLoss!));
  const lossTicks = ticks(topLoss);
  const lossMax = lossTicks[lossTicks.length - 1] < topLoss ? lossTicks[lossTicks.length - 1] + (lossTicks[1] ?? topLoss) : lossTicks[lossTicks.length - 1];
  return panel({
    points: losses.map((m) => [m.step, m.trainLoss!]), xMax: steps, yMax: lossMax, yLabel: 'train loss',
    xLabel: `step (of ${steps.toLocaleString('en-US')})`, xName: 'step', color: '#2f6fdf', dots: false, role: 'train loss',
    yTick: (v) => (v === 0 ? '0' : fmt(v, v < 0.1 ? 3 : 2)),
  }) + panel({
    points: accs.map((m) => [m.epoch, m.testAccuracy!]), xMax: epochs, yMax: 1, yLabel: 'test top-1', xLabel: `epoch (of ${epochs})`, xName: 'epoch',
    color: '#1f8a4c', dots: true, yTick: (v) => `${fmt(100 * v, Number.isInteger(100 * v) ? 0 : 2)}%`, role: 'test top-1',
  });
}

export interface Candidate {
  readonly id: string;
  readonly label: string;
  readonly tuned: number;
  readonly accuracy: number;
}

/** Ids of the runs no other run beats on both counts: as accurate or more with as few tuned parameters or fewer, one strictly. */
export function paretoFront(runs: readonly Candidate[]): Set<string> {
  return new Set(runs.filter((r) => !runs.some((o) => o.accuracy >= r.accuracy && o.tuned <= r.tuned && (o.accuracy > r.accuracy || o.tuned < r.tuned))).map((r) => r.id));
}

/** Top-1 against tuned parameters (log scale), the front joined and marked. */
export function paretoPlot(runs: readonly Candidate[], front: ReadonlySet<string>): string {
  const Wd = 420, H = 220, L = 44, B = 30, T = 12, R = 12;
  if (!runs.length) return '';
  const logs = runs.map((r) => Math.log10(Math.max(1, r.tuned)));
  const lo = Math.floor(Math.min(...logs)), hi = Math.max(lo + 1, Math.ceil(Math.max(...logs)));
  const accLo = Math.max(0, Math.floor(10 * Math.min(...runs.map((r) => r.accuracy))) / 10), accHi = Math.min(1, Math.ceil(10 * Math.max(...runs.map((r) => r.accuracy))) / 10 || 0.1);
  const x = (t: number): number => L + ((Wd - L - R) * (Math.log10(Math.max(1, t)) - lo)) / (hi - lo);
  const y = (a: number): number => T + (H - B - T) * (1 - (a - accLo) / Math.max(1e-9, accHi - accLo));
  const ticks = Array.from({ length: hi - lo + 1 }, (_, i) => lo + i).map((p) => `<text x="${fmt(x(10 ** p), 1)}" y="${H - B + 12}" text-anchor="middle">1e${p}</text>`).join('');
  const line = runs.filter((r) => front.has(r.id)).sort((a, b) => a.tuned - b.tuned).map((r, i) => `${i ? 'L' : 'M'}${fmt(x(r.tuned), 1)},${fmt(y(r.accuracy), 1)}`).join(' ');
  const dots = runs.map((r) => `<circle data-run="${r.id}" data-front="${front.has(r.id)}" cx="${fmt(x(r.tuned), 1)}" cy="${fmt(y(r.accuracy), 1)}" r="${front.has(r.id) ? 5 : 3.5}"
    fill="${front.has(r.id) ? '#c2410c' : '#8a94a6'}"><title>${r.label}: ${fmt(100 * r.accuracy, 2)}% with ${r.tuned.toLocaleString('en-US')} tuned</title></circle>`).join('');
  return `<svg width="${Wd}" height="${H}" role="img" aria-label="top-1 against tuned parameters" data-chart="pareto">
    <line x1="${L}" y1="${H - B}" x2="${Wd - R}" y2="${H - B}" stroke="#ccd"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#ccd"/>
    <text x="${L - 4}" y="${T + 4}" text-anchor="end">${fmt(100 * accHi, 0)}%</text><text x="${L - 4}" y="${H - B}" text-anchor="end">${fmt(100 * accLo, 0)}%</text>
    <text x="${L + 4}" y="${T - 2}">test top-1</text><text x="${Wd - R}" y="${H - 2}" text-anchor="end">tuned parameters (log)</text>${ticks}
    <path d="${line}" fill="none" stroke="#c2410c" stroke-dasharray="4 3"/>${dots}</svg>`;
}

export interface ProfileLayer {
  readonly kind: string;
  readonly block: number;
  readonly degrees: number;
  readonly selected: boolean;
}

/** A probe's fine-tuned angle per block, attention and FFN side by side; the layers its strategy tunes filled. */
export function angleProfileChart(layers: readonly ProfileLayer[]): string {
  const blocks = Math.max(1, ...layers.map((l) => l.block + 1));
  const H = 120, L = 34, B = 18, T = 14, slot = Math.max(14, Math.min(28, 260 / blocks)), Wd = Math.max(250, L + blocks * slot + 8);
  const top = Math.max(1e-6, ...layers.map((l) => l.degrees));
  const y = (d: number): number => T + (H - B - T) * (1 - d / top);
  const color = { attn: '#2f6fdf', ffn: '#c2410c' } as Record<string, string>;
  const bars = layers.map((l) => {
    const x = L + l.block * slot + (l.kind === 'ffn' ? slot / 2 : 1);
    const c = color[l.kind] ?? '#8a94a6';
    return `<rect data-kind="${l.kind}" data-block="${l.block}" data-selected="${l.selected}" x="${fmt(x, 1)}" y="${fmt(y(l.degrees), 1)}" width="${fmt(slot / 2 - 2, 1)}"
      height="${fmt(H - B - y(l.degrees), 1)}" fill="${l.selected ? c : '#fff'}" stroke="${c}"><title>block ${l.block} ${l.kind}: ${fmt(l.degrees, 3)} deg${l.selected ? ', tuned' : ''}</title></rect>`;
  }).join('');
  const ticks = Array.from({ length: blocks }, (_, b) => `<text x="${fmt(L + b * slot + slot / 2, 1)}" y="${H - 5}" text-anchor="middle">${b}</text>`).join('');
  return `<svg width="${Wd}" height="${H}" role="img" aria-label="fine-tuned angle per block" data-chart="angles">
    <line x1="${L}" y1="${H - B}" x2="${Wd - 4}" y2="${H - B}" stroke="#ccd"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#ccd"/>
    <text x="${L - 4}" y="${T + 4}" text-anchor="end">${fmt(top, top < 1 ? 2 : 1)}&#176;</text><text x="${L - 4}" y="${H - B}" text-anchor="end">0</text>
    <text x="${L + 4}" y="10"><tspan fill="#2f6fdf">attention</tspan> / <tspan fill="#c2410c">FFN</tspan> angle (filled: tuned), by block</text>${bars}${ticks}</svg>`;
}
