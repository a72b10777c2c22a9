// Two small SVG charts for the study's report (no plotting dependency): grouped bars with error
// bars, and a labelled scatter with a log-scale x axis.

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (x: number): string => (Math.round(x * 10) / 10).toString();

function niceMax(x: number): number {
  const p = 10 ** Math.floor(Math.log10(x));
  return [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((m) => m * p).find((v) => v >= x) ?? 10 * p;
}

export interface BarSeries {
  readonly name: string;
  readonly color: string;
  readonly values: readonly { readonly mean: number; readonly std: number; readonly highlighted: boolean }[];
}

/** Grouped bars (one group per category); highlighted bars are drawn solid, others pale. */
export function groupedBars(title: string, categories: readonly string[], series: readonly BarSeries[], yLabel: string, paleMeans = 'pale: not selected'): string {
  const w = 640, h = 340, left = 56, right = 16, top = 40, bottom = 56;
  const maxY = niceMax(Math.max(...series.flatMap((s) => s.values.map((v) => v.mean + v.std))) * 1.05);
  const y = (v: number): number => top + (h - top - bottom) * (1 - v / maxY);
  const groupW = (w - left - right) / categories.length;
  const barW = (groupW * 0.7) / series.length;
  const parts: string[] = [];
  for (let t = 0; t <= 5; t++) {
    const v = (maxY * t) / 5;
    parts.push(`<line x1="${left}" x2="${w - right}" y1="${fmt(y(v))}" y2="${fmt(y(v))}" stroke="#ddd"/><text x="${left - 6}" y="${fmt(y(v) + 4)}" text-anchor="end">${+v.toFixed(2)}</text>`);
  }
  categories.forEach((c, i) => {
    const gx = left + i * groupW + groupW * 0.15;
    series.forEach((s, j) => {
      const v = s.values[i];
      const x = gx + j * barW;
      parts.push(`<rect x="${fmt(x)}" y="${fmt(y(v.mean))}" width="${fmt(barW - 2)}" height="${fmt(y(0) - y(v.mean))}" fill="${s.color}" fill-opacity="${v.highlighted ? 1 : 0.35}"/>`);
      if (v.std > 0) {
        const cx = fmt(x + (barW - 2) / 2);
        parts.push(`<line x1="${cx}" x2="${cx}" y1="${fmt(y(v.mean - v.std))}" y2="${fmt(y(v.mean + v.std))}" stroke="#333"/>`);
      }
    });
    parts.push(`<text x="${fmt(left + (i + 0.5) * groupW)}" y="${h - bottom + 18}" text-anchor="middle">${esc(c)}</text>`);
  });
  series.forEach((s, j) => {
    parts.push(`<rect x="${left + 10 + j * 150}" y="${h - 22}" width="12" height="12" fill="${s.color}"/><text x="${left + 28 + j * 150}" y="${h - 12}">${esc(s.name)}</text>`);
  });
  parts.push(`<text x="${left + 10 + series.length * 150}" y="${h - 12}" fill="#555">${esc(paleMeans)}</text>`);
  return svg(w, h, title, yLabel, parts);
}

export interface Point {
  readonly label: string;
  readonly x: number;
  readonly y: number;
  readonly yStd: number;
  readonly color: string;
}

/** Scatter with a log10 x axis and vertical error bars; each point labelled. */
export function scatterLogX(title: string, points: readonly Point[], xLabel: string, yLabel: string): string {
  const w = 720, h = 420, left = 56, right = 130, top = 40, bottom = 50;
  const lx = points.map((p) => Math.log10(p.x));
  const x0 = Math.floor(Math.min(...lx)), x1 = Math.ceil(Math.max(...lx));
  const ys = points.flatMap((p) => [p.y - p.yStd, p.y + p.yStd]);
  const y0 = Math.floor(Math.min(...ys) * 20) / 20, y1 = Math.ceil(Math.max(...ys) * 20) / 20;
  const px = (v: number): number => left + ((Math.log10(v) - x0) / Math.max(1e-9, x1 - x0)) * (w - left - right);
  const py = (v: number): number => top + (1 - (v - y0) / Math.max(1e-9, y1 - y0)) * (h - top - bottom);
  const parts: string[] = [];
  for (let e = x0; e <= x1; e++) {
    parts.push(`<line x1="${fmt(px(10 ** e))}" x2="${fmt(px(10 ** e))}" y1="${top}" y2="${h - bottom}" stroke="#ddd"/><text x="${fmt(px(10 ** e))}" y="${h - bottom + 16}" text-anchor="middle">1e${e}</text>`);
  }
  for (let t = 0; t <= 4; t++) {
    const v = y0 + ((y1 - y0) * t) / 4;
    parts.push(`<line x1="${left}" x2="${w - right}" y1="${fmt(py(v))}" y2="${fmt(py(v))}" stroke="#ddd"/><text x="${left - 6}" y="${fmt(py(v) + 4)}" text-anchor="end">${(100 * v).toFixed(1)}</text>`);
  }
  // Labels go right of their point, pushed down past labels already placed; a leader line
  // joins a label that moved to its point.
  const placed: { x0: number; x1: number; y: number }[] = [];
  for (const p of [...points].sort((a, b) => b.y - a.y)) {
    const cx = px(p.x);
    const cy = py(p.y);
    if (p.yStd > 0) parts.push(`<line x1="${fmt(cx)}" x2="${fmt(cx)}" y1="${fmt(py(p.y - p.yStd))}" y2="${fmt(py(p.y + p.yStd))}" stroke="${p.color}"/>`);
    parts.push(`<circle cx="${fmt(cx)}" cy="${fmt(cy)}" r="4" fill="${p.color}"/>`);
    const x0 = cx + 8;
    const x1 = x0 + 6 * p.label.length;
    let ly = cy + 4;
    while (placed.some((q) => q.x0 < x1 && x0 < q.x1 && Math.abs(q.y - ly) < 12)) ly += 12;
    placed.push({ x0, x1, y: ly });
    if (ly - (cy + 4) > 6) parts.push(`<line x1="${fmt(cx + 3)}" y1="${fmt(cy + 2)}" x2="${fmt(x0 - 1)}" y2="${fmt(ly - 4)}" stroke="#999" stroke-width="0.6"/>`);
    parts.push(`<text x="${fmt(x0)}" y="${fmt(ly)}" font-size="10">${esc(p.label)}</text>`);
  }
  parts.push(`<text x="${fmt((left + w - right) / 2)}" y="${h - 12}" text-anchor="middle">${esc(xLabel)}</text>`);
  return svg(w, h, title, yLabel, parts);
}

function svg(w: number, h: number, title: string, yLabel: string, parts: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="11">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="${w / 2}" y="20" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>`,
    `<text transform="translate(14 ${h / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
