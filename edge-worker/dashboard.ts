// The dashboard: models, datasets, workers and runs over the GraphQL API, live through the
// runEvents subscription, with loss and accuracy curves, a form that shows what a strategy tunes
// (parameters, delta size) before a run starts, and the strategy chooser (compare.ts).
import { createClient } from 'graphql-ws';
import { Catalog, CatalogResult, CreateSoup, HyperParametersInput, DeltaLinks, ModelStrategies, OnlineWorkers, RecentRuns, RunProgress, StartAngleProbe, StartRun } from '../protocol/operations';
import { RUN_DEFAULTS } from '../protocol/run-options';
import { plural } from '../protocol/words';
import { GraphQLClient } from '../worker/client';
import { subscribe as subscribeTo } from '../worker/ws-client';
import { runCurves } from './charts';
import { renderComparison } from './compare';
import { renderReports } from './reports';
import { renderSamples } from './photos';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const token = (): string => ($('token') as HTMLInputElement).value.trim();
const api = (): GraphQLClient => new GraphQLClient(`${location.origin}/graphql`, token() || undefined, { patienceMs: 5000 });

let models: CatalogResult['models']['items'] = [];
let datasets: CatalogResult['datasets']['items'] = [];

const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const size = (b: number): string => (b > 1 << 20 ? `${(b / (1 << 20)).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
const n = (v: number): string => v.toLocaleString('en-US');

async function loadCatalog(): Promise<void> {
  const d = await api().request(Catalog, {});
  models = d.models.items;
  datasets = d.datasets.items;
  $('models').innerHTML = models.map((m) => `<tr><td>${esc(m.name)}</td><td>${n(m.parameters)}</td><td>${m.numClasses}</td></tr>`).join('');
  $('datasets').innerHTML = datasets
    .map((x) => `<tr data-dataset="${esc(x.name)}" title="show its images"><td>${esc(x.name)}</td><td>${n(x.trainImages)}</td><td>${n(x.testImages)}</td>`
      + `<td>${x.height}x${x.width}x${x.channels}</td></tr>`)
    .join('');
  const fill = (id: string, items: { id: string; name: string }[]): void => {
    const keep = ($(id) as HTMLSelectElement).value;
    $(id).innerHTML = items.map((i) => `<option value="${esc(i.name)}">${esc(i.name)}</option>`).join('');
    if (items.some((i) => i.name === keep)) ($(id) as HTMLSelectElement).value = keep;
  };
  fill('model', models);
  fill('dataset', datasets);
  await loadStrategies();
}

/** Every strategy on the chosen model with the chosen dataset's head: counts before launch. */
async function loadStrategies(): Promise<void> {
  const model = ($('model') as HTMLSelectElement).value;
  const dataset = datasets.find((d) => d.name === ($('dataset') as HTMLSelectElement).value);
  if (!model || !dataset) return;
  const d = await api().request(ModelStrategies, { model, numClasses: dataset.classes });
  const select = $('strategy') as HTMLSelectElement;
  const keep = select.value || params.get('strategy') || 'attn-only';
  select.innerHTML = d.model.strategies.map((s) => `<option value="${esc(s.name)}" data-tuned="${s.tunedParameters}" data-total="${s.totalParameters}" data-pct="${s.tunedPercent}" data-delta="${s.deltaBytes}">${esc(s.name)}</option>`).join('');
  if (d.model.strategies.some((s) => s.name === keep)) select.value = keep;
  preview();
}

function preview(): void {
  const o = ($('strategy') as HTMLSelectElement).selectedOptions[0];
  $('preview').textContent = o
    ? `tunes ${n(Number(o.dataset.tuned))} of ${n(Number(o.dataset.total))} parameters (${Number(o.dataset.pct).toFixed(2)}%); delta about ${size(Number(o.dataset.delta))}`
    : '';
}

const num = (id: string): number | undefined => (($(id) as HTMLInputElement).value === '' ? undefined : Number(($(id) as HTMLInputElement).value));

/** The form's training and round options, as startRun and startAngleProbe take them. */
function hyperParameters(): HyperParametersInput {
  const auto = ($('shardsPerRound') as HTMLInputElement).value.trim().toLowerCase() === 'auto';
  return {
    epochs: num('epochs'), lr: num('lr'), stepsPerRound: num('stepsPerRound'), ...(auto ? { autoShards: true } : { shardsPerRound: num('shardsPerRound') }),
    trainLimit: num('trainLimit'), testLimit: num('testLimit'),
  };
}

/** Sends what a form asks for; its error line says what the server refused. */
async function launch(e: Event, errorLine: string, send: () => Promise<unknown>): Promise<void> {
  e.preventDefault();
  $(errorLine).textContent = '';
  try {
    localStorage.setItem('partune.token', token());
    await send();
    await loadRuns();
  } catch (err) {
    $(errorLine).textContent = (err as Error).message;
  }
}

const chosen = (id: string): string => ($(id) as HTMLSelectElement).value;

function start(e: Event): Promise<void> {
  return launch(e, 'formError', () => api().request(StartRun, {
    input: { model: chosen('model'), dataset: chosen('dataset'), strategy: chosen('strategy'), hyperParameters: hyperParameters() },
  }));
}

function probe(e: Event): Promise<void> {
  const { epochs: _, ...hyper } = hyperParameters();
  return launch(e, 'probeError', () => api().request(StartAngleProbe, {
    input: { model: chosen('model'), dataset: chosen('dataset'), probeSteps: num('probeSteps'), topK: num('topK'), hyperParameters: hyper },
  }));
}

function soup(e: Event): Promise<void> {
  const runs = Array.from(document.querySelectorAll<HTMLInputElement>('#compareRows input.pick:checked'), (c) => c.value);
  return launch(e, 'soupError', async () => {
    if (!runs.length) throw new Error('check the runs to soup first');
    await api().request(CreateSoup, { input: { runs, method: chosen('soupMethod') as 'GREEDY' | 'UNIFORM' } });
  });
}

/** Delta download links need a read (or the admin) token; without one the page shows sizes and digests. */
async function deltaLinks(): Promise<Map<string, string>> {
  if (!token()) return new Map();
  const d = await api().request(DeltaLinks, { first: PAGE, offset: page * PAGE }).catch(() => undefined);
  return new Map((d?.runs.items ?? []).flatMap((r) => (r.delta ? [[r.id, r.delta.downloadUrl] as [string, string]] : [])));
}

/** Without a token only public runs are listed: an empty list says nothing about the others. */
const NO_TOKEN = '<p class="meta no-token">No public runs. Runs are private unless made public: enter a read token or the admin token above '
  + '(<code>partune serve</code> prints the admin token; <code>mutation { issueReadToken }</code> makes read tokens), or open this page as '
  + '<code>/?token=TOKEN</code>.</p>';

/** Runs per page of the list; `page` counts from 0, newest first. */
const PAGE = 20;
let page = 0;

async function loadRuns(): Promise<void> {
  const [d, links] = await Promise.all([api().request(RecentRuns, { first: PAGE, offset: page * PAGE }), deltaLinks()]);
  $('summary').textContent = plural(d.runs.total, 'run');
  const pages = Math.max(1, Math.ceil(d.runs.total / PAGE));
  $('page').textContent = `page ${page + 1} of ${pages}`;
  ($('prev') as HTMLButtonElement).disabled = page === 0;
  ($('next') as HTMLButtonElement).disabled = page + 1 >= pages;
  $('runs').innerHTML = d.runs.items.map((r) => `<div class="run" data-run="${r.id}" data-status="${r.status}">
    <div>
      <div class="title">${esc(r.strategyName)} <span class="status ${r.status}">${r.status}</span></div>
      <div class="meta">${esc(r.model.name)} &rarr; ${esc(r.dataset.name)} &middot; ${r.kind.toLowerCase().replace('_', ' ')} &middot; ${r.id.slice(0, 8)} &middot; ${new Date(r.createdAt).toLocaleTimeString()}</div>
      <div class="meta">${r.tunedParameters !== null ? `${n(r.tunedParameters)} of ${n(r.totalParameters ?? 0)} parameters tuned` : ''}</div>
      <div class="meta volunteers">${r.admitVolunteers ? "volunteers' tabs may train it" : 'registered workers only'}</div>
      <progress value="${r.progress}" max="1"></progress>
      <div class="meta">${n(r.step)} / ${n(r.totalSteps)} steps</div>
      ${r.accuracy !== null ? `<div class="acc" data-accuracy="${r.accuracy}">top-1 ${(100 * r.accuracy).toFixed(2)}%</div>` : ''}
      ${r.delta ? `<div class="meta">${links.has(r.id) ? `<a href="${esc(links.get(r.id)!)}" download>delta</a>` : 'delta'} (${size(r.delta.bytes)}), SHA-256 <code class="sha" title="check the download against it">${r.delta.sha256}</code></div>` : ''}
      ${r.error ? `<div class="meta" style="color:var(--bad)">${esc(r.error)}</div>` : ''}
      ${r.waiting ? `<div class="meta waiting" style="color:var(--warn)">waiting: ${esc(r.waiting)}</div>` : ''}
      ${r.rollbacks.map((b) => `<div class="meta rollback">rolled back from round ${b.fromRound} to ${b.toRound}: ${esc(b.reason)}</div>`).join('')}
      <div class="report" data-report="${r.id}"></div>
    </div>
    <div>${runCurves(r.metrics, r.totalSteps)}</div></div>`).join('') || (token() ? 'none yet' : NO_TOKEN);
  await Promise.all([renderReports(api(), d.runs.items, (id) => document.querySelector<HTMLElement>(`[data-report="${id}"]`)), loadComparison()]);
}

/** The chooser follows the form's model and dataset. */
async function loadComparison(): Promise<void> {
  const model = ($('model') as HTMLSelectElement).value;
  const dataset = ($('dataset') as HTMLSelectElement).value;
  if (!model || !dataset) return;
  await renderComparison(api(), model, dataset, { table: $('compareRows'), plot: $('comparePlot'), summary: $('compareSummary') });
}

/** A worker's kernel class and how its backend was chosen: every timing, or why not timed. */
const backendTitle = (w: { kernelClass?: string | null; backendChoice?: { timings: { backend: string; imagesPerSecond?: number | null; note?: string | null }[] } | null }): string =>
  [w.kernelClass ?? '', ...(w.backendChoice?.timings ?? []).map((t) => `${t.backend}: ${t.imagesPerSecond != null ? `${t.imagesPerSecond.toFixed(1)} img/s` : (t.note ?? '-')}`)]
    .filter(Boolean).join('\n');

async function loadWorkers(): Promise<void> {
  if (!token()) {
    $('workers').innerHTML = '<tr><td colspan="4">a read token (or the admin token) shows the workers</td></tr>';
    return;
  }
  const d = await api().request(OnlineWorkers, {});
  const state = (w: { trusted: boolean; quarantined: boolean }): string => (w.quarantined ? ' (quarantined)' : w.trusted ? '' : ' (volunteer)');
  // Trust as the verifier sees it: agreed / outvoted results, strikes, and the kernel class compared on.
  // In the cell: the verdict and its counts; on hover: the group and each kernel class compared on.
  type Classes = { kernelClass: string; agreed: number; disagreed: number }[];
  const record = (w: { trust: string; agreed: number; disagreed: number; strikes: number; party: string; classes: Classes }): string => {
    const detail = [`group ${w.party}`, ...w.classes.map((c) => `${c.kernelClass}: ${c.agreed} agreed, ${c.disagreed} outvoted`)].join('\n');
    return `<td title="${esc(detail)}">${w.trust.toLowerCase()}<br><small>${w.agreed} agreed, ${w.disagreed} outvoted, ${w.strikes} strikes</small></td>`;
  };
  $('workers').innerHTML = d.workers.items.map((w) => `<tr data-quarantined="${w.quarantined}" data-trust="${w.trust}">`
    + `<td>${esc(w.name)}<br><small>${w.kind}${state(w)}</small></td>`
    + `<td title="${esc(backendTitle(w))}">${esc(w.backend)}<br><small>${w.imagesPerSecond === null ? '-' : `${w.imagesPerSecond.toFixed(1)} img/s`}`
    + `${w.backendChoice ? `<br>${esc(w.backendChoice.how)}` : ''}</small></td>`
    + `<td>${w.shardsDone}</td>${record(w)}</tr>`).join('')
    || '<tr><td colspan="4">no worker online: run <code>partune worker</code> or open /worker</td></tr>';
}

function subscribe(): void {
  const ws = createClient({
    url: `${location.origin.replace(/^http/, 'ws')}/graphql`, retryAttempts: Infinity, shouldRetry: () => true,
    connectionParams: () => (token() ? { authorization: `Bearer ${token()}` } : {}),
  });
  let pending: ReturnType<typeof setTimeout> | undefined;
  subscribeTo(ws, RunProgress, {}, {
    next: () => {
      $('conn').textContent = 'live';
      pending ??= setTimeout(() => { pending = undefined; void loadRuns(); }, 400); // coalesce bursts of events
    },
    error: () => void ($('conn').textContent = 'reconnecting'),
  });
  $('conn').textContent = 'live';
}

/** The form's defaults are the run defaults every front end shares. */
function formDefaults(): void {
  ($('epochs') as HTMLInputElement).value = String(RUN_DEFAULTS.epochs);
  ($('lr') as HTMLInputElement).value = String(RUN_DEFAULTS.lr);
  ($('stepsPerRound') as HTMLInputElement).value = String(RUN_DEFAULTS.stepsPerRound);
}

async function main(): Promise<void> {
  formDefaults();
  ($('token') as HTMLInputElement).value = params.get('token') ?? localStorage.getItem('partune.token') ?? '';
  $('model').addEventListener('change', () => void Promise.all([loadStrategies(), loadComparison()]));
  $('dataset').addEventListener('change', () => void Promise.all([loadStrategies(), loadComparison()]));
  $('prev').addEventListener('click', () => { page = Math.max(0, page - 1); void loadRuns(); });
  $('next').addEventListener('click', () => { page++; void loadRuns(); });
  $('strategy').addEventListener('change', preview);
  $('token').addEventListener('change', () => void Promise.all([loadRuns(), loadWorkers()]).catch(() => undefined));
  $('start').addEventListener('submit', (e) => void start(e));
  $('probeForm').addEventListener('submit', (e) => void probe(e));
  $('soupForm').addEventListener('submit', (e) => void soup(e));
  $('datasets').addEventListener('click', (e) => {
    const row = (e.target as HTMLElement).closest<HTMLElement>('[data-dataset]');
    if (!row) return;
    const at = $('datasetSamples');
    renderSamples(api(), row.dataset.dataset!, at).catch((err: Error) => void (at.textContent = `samples: ${err.message} (a read token shows them)`));
  });
  await loadCatalog();
  await Promise.all([loadRuns(), loadWorkers()]);
  subscribe();
  setInterval(() => void loadWorkers().catch(() => undefined), 3000);
  setInterval(() => void loadCatalog().catch(() => undefined), 15000);
  document.body.dataset.ready = 'true';
}

main().catch((e: Error) => void ($('conn').textContent = `error: ${e.message}`));
