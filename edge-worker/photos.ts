// What a photo dataset holds and how a run did on it: a few stored images per class, and a finished
// run's confusion matrix on the test split (rows: true class, columns: predicted; the diagonal is right).
import { DatasetSamples, RunConfusionResult } from '../protocol/operations';
import type { GraphQLClient } from '../worker/client';

const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
/** Only data URLs of PNGs go into src attributes: nothing else a server could send runs there. */
const safeImage = (url: string): string => (/^data:image\/png;base64,[A-Za-z0-9+/=]+$/.test(url) ? url : '');

export async function renderSamples(api: GraphQLClient, dataset: string, at: HTMLElement): Promise<void> {
  const d = await api.request(DatasetSamples, { id: dataset });
  const byClass = new Map<number, { name: string; urls: string[] }>();
  for (const s of d.dataset.samples) {
    const entry = byClass.get(s.label) ?? { name: s.name, urls: [] };
    entry.urls.push(safeImage(s.dataUrl));
    byClass.set(s.label, entry);
  }
  at.innerHTML =
    `<div class="meta">${esc(d.dataset.name)}: the first stored training images of each class</div>` +
    [...byClass.values()]
      .map(
        (c) =>
          `<div class="sampleRow"><span class="className">${esc(c.name)}</span>` +
          c.urls.map((u) => `<img class="sample" src="${u}" alt="${esc(c.name)}">`).join('') +
          '</div>',
      )
      .join('');
}

type Confusion = NonNullable<RunConfusionResult['run']['confusion']>;

export function confusionTable(c: Confusion): string {
  const max = Math.max(1, ...c.counts.flat());
  const head = c.classNames.map((n) => `<th title="predicted ${esc(n)}">${esc(n.slice(0, 6))}</th>`).join('');
  const rows = c.counts.map((row, t) => {
    const total = row.reduce((a, b) => a + b, 0);
    const cells = row
      .map(
        (v, p) =>
          `<td class="${p === t ? 'hit' : ''}" style="opacity:${(0.25 + (0.75 * v) / max).toFixed(2)}" ` +
          `title="${esc(c.classNames[t])} as ${esc(c.classNames[p])}: ${v}">${v}</td>`,
      )
      .join('');
    return `<tr><th>${esc(c.classNames[t])}</th>${cells}<td class="meta">${total ? ((100 * row[t]) / total).toFixed(0) : '-'}%</td></tr>`;
  });
  return `<table class="confusion"><thead><tr><th>true \\ predicted</th>${head}<th>recall</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}
