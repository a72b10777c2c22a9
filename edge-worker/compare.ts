// The dashboard's strategy chooser: every finished run of one model on one dataset, as a table
// (strategy, tuned parameters, delta size, top-1, train time) and a plot of top-1 against tuned
// parameters, the Pareto front marked in both: the runs nothing else beats with fewer parameters.
import { CompareRuns, CompareRunsResult } from '../protocol/operations';
import { plural } from '../protocol/words';
import type { GraphQLClient } from '../worker/client';
import { Candidate, paretoFront, paretoPlot } from './charts';

type Finished = CompareRunsResult['runs']['items'][number];

const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const size = (b: number): string => (b > 1 << 20 ? `${(b / (1 << 20)).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
const seconds = (r: Finished): number => (r.finishedAt ? (new Date(r.finishedAt).getTime() - new Date(r.createdAt).getTime()) / 1000 : NaN);
const duration = (s: number): string => (!Number.isFinite(s) ? '-' : s < 120 ? `${s.toFixed(0)} s` : `${(s / 60).toFixed(1)} min`);

/** Fills `table`, `plot` and `summary` with the comparison of `model` on `dataset`. */
export async function renderComparison(api: GraphQLClient, model: string, dataset: string, at: { table: HTMLElement; plot: HTMLElement; summary: HTMLElement }): Promise<void> {
  const d = await api.request(CompareRuns, { model, dataset });
  const runs = d.runs.items.filter((r) => r.accuracy !== null && r.tunedParameters !== null);
  const candidates: Candidate[] = runs.map((r) => ({ id: r.id, label: r.strategyName, tuned: r.tunedParameters!, accuracy: r.accuracy! }));
  const front = paretoFront(candidates);
  at.summary.textContent = runs.length
    ? `${plural(runs.length, 'finished run')} of ${model} on ${dataset}; ${plural(front.size, 'run')} on the Pareto front (no other run as accurate with fewer tuned parameters)`
    : `no finished run of ${model} on ${dataset} yet`;
  const rows = [...runs].sort((a, b) => b.accuracy! - a.accuracy! || a.tunedParameters! - b.tunedParameters!);
  at.table.innerHTML = rows.map((r) => `<tr data-run="${r.id}" data-front="${front.has(r.id)}" data-accuracy="${r.accuracy}" data-tuned="${r.tunedParameters}">
    <td><input type="checkbox" class="pick" value="${r.id}" aria-label="an ingredient of a soup"></td>
    <td>${front.has(r.id) ? '<span class="front" title="on the Pareto front">&#9733;</span> ' : ''}${esc(r.strategyName)}</td><td>${r.kind.toLowerCase().replace('_', ' ')}</td>
    <td>${r.tunedParameters!.toLocaleString('en-US')}</td><td>${r.totalParameters ? ((100 * r.tunedParameters!) / r.totalParameters).toFixed(2) : '-'}%</td>
    <td>${r.delta ? size(r.delta.bytes) : '-'}</td><td class="top1">${(100 * r.accuracy!).toFixed(2)}%</td><td>${duration(seconds(r))}</td></tr>`).join('');
  at.plot.innerHTML = paretoPlot(candidates, front);
}
