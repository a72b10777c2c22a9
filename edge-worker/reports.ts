// What a finished run of each kind adds to its card: a fine-tuning's confusion matrix, an angle probe's profile (per block,
// attention and FFN, the tuned layers marked) and a soup's report (its ingredients' held-out and
// test top-1, which the greedy method kept). Both are immutable once the run ends: each is fetched once.
import { RecentRunsResult, RunAngleProfile, RunAngleProfileResult, RunConfusion, RunSoupReport, RunSoupReportResult } from '../protocol/operations';
import type { GraphQLClient } from '../worker/client';
import { angleProfileChart } from './charts';
import { confusionTable } from './photos';

type Run = RecentRunsResult['runs']['items'][number];
type Profile = RunAngleProfileResult['angleProfile'];
type Soup = NonNullable<RunSoupReportResult['run']['soup']>;

const pct = (v: number): string => `${(100 * v).toFixed(2)}%`;
const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const fetched = new Map<string, Promise<unknown>>();

function once<T>(key: string, get: () => Promise<T>): Promise<T> {
  let p = fetched.get(key) as Promise<T> | undefined;
  if (!p) {
    p = get();
    fetched.set(key, p);
    p.catch(() => fetched.delete(key));
  }
  return p;
}

function soupReport(soup: Soup): string {
  const kept = new Map((soup.steps ?? []).map((s) => [s.runId, s.kept]));
  const rows = soup.ingredients.map((i) => `<tr data-ingredient="${i.runId}" data-kept="${soup.steps ? kept.get(i.runId) === true : true}">
    <td><code>${i.runId.slice(0, 8)}</code></td><td>${pct(i.heldOut)}</td><td>${pct(i.test)}</td><td>${soup.steps ? (kept.get(i.runId) ? 'kept' : 'dropped') : 'averaged'}</td></tr>`).join('');
  return `<div class="meta">${soup.method.toLowerCase()} soup; held-out ${soup.heldOutImages} / test ${soup.testImages} images</div>
    <table class="soup"><thead><tr><th>ingredient</th><th>held-out</th><th>test</th><th></th></tr></thead><tbody>${rows}
    <tr class="soupRow"><td>the soup</td><td>${pct(soup.heldOut)}</td><td>${pct(soup.test)}</td><td></td></tr></tbody></table>`;
}

/** Fills each card's report slot for the runs that have one. */
export async function renderReports(api: GraphQLClient, runs: readonly Run[], slot: (id: string) => HTMLElement | null): Promise<void> {
  await Promise.all(runs.map(async (r) => {
    const at = slot(r.id);
    if (!at || r.status !== 'SUCCEEDED') return;
    if (r.kind === 'SOUP') {
      const soup = await once(r.id, () => api.request(RunSoupReport, { id: r.id }).then((d) => d.run.soup));
      if (soup) at.innerHTML = soupReport(soup);
    }
    if (r.kind === 'FINETUNE') {
      // Readers only: without a read token the card shows no matrix.
      const confusion = await once(`confusion:${r.id}`, () => api.request(RunConfusion, { id: r.id }).then((d) => d.run.confusion)).catch(() => null);
      if (confusion) at.innerHTML = `<details><summary>confusion matrix (test split)</summary>${confusionTable(confusion)}</details>`;
    }
    if (r.kind !== 'ANGLE_PROBE') return;
    const profile: Profile = await once(r.id, () => api.request(RunAngleProfile, { id: r.id }).then((d) => d.angleProfile));
    at.innerHTML = `<div class="meta">angle profile (${profile.direction.toLowerCase()} top-${profile.topK} per group) &rarr; strategy <b>${esc(profile.strategyName)}</b></div>${angleProfileChart(profile.layers)}`;
  }));
}
