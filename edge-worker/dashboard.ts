// The dashboard: models, datasets, workers and runs over the GraphQL API, live through the
// runEvents subscription, with loss and accuracy curves, and a form that shows what a strategy
// tunes (parameters, delta size) before a run starts.
import { createClient } from 'graphql-ws';
import { Catalog, CatalogResult, DeltaLinks, ModelStrategies, OnlineWorkers, RecentRuns, RecentRunsResult, RunProgress, StartRun } from '../protocol/operations';
import { RUN_DEFAULTS } from '../protocol/run-options';
import { plural } from '../protocol/words';
import { GraphQLClient } from '../worker/client';
import { subscribe as subscribeTo } from '../worker/ws-client';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const token = (): string => ($('token') as HTMLInputElement).value.trim();
const api = (): GraphQLClient => new GraphQLClient(`${location.origin}/graphql`, token() || undefined, { patienceMs: 5000 });

type Run = RecentRunsResult['runs']['items'][number];

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
  $('datasets').innerHTML = datasets.map((x) => `<tr><td>${esc(x.name)}</td><td>${n(x.trainImages)}</td><td>${n(x.testImages)}</td><td>${x.height}x${x.width}x${x.channels}</td></tr>`).join('');
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

async function start(e: Event): Promise<void> {
  e.preventDefault();
  $('formError').textContent = '';
  const num = (id: string): number | undefined => (($(id) as HTMLInputElement).value === '' ? undefined : Number(($(id) as HTMLInputElement).value));
  const auto = ($('shardsPerRound') as HTMLInputElement).value.trim().toLowerCase() === 'auto';
  const hyperParameters = {
    epochs: num('epochs'), lr: num('lr'), stepsPerRound: num('stepsPerRound'), ...(auto ? { autoShards: true } : { shardsPerRound: num('shardsPerRound') }),
    trainLimit: num('trainLimit'), testLimit: num('testLimit'),
  };
  try {
    localStorage.setItem('partune.token', token());
    await api().request(StartRun, {
      input: { model: ($('model') as HTMLSelectElement).value, dataset: ($('dataset') as HTMLSelectElement).value, strategy: ($('strategy') as HTMLSelectElement).value, hyperParameters },
    });
    await loadRuns();
  } catch (err) {
    $('formError').textContent = (err as Error).message;
  }
}

/** Train loss (line) and test accuracy (dots) against steps. */
function plot(run: Run): string {
  const W = 300, H = 110, L = 28, B = 16;
  const total = Math.max(1, run.totalSteps || Math.max(1, ...run.metrics.map((m) => m.step)));
  const losses = run.metrics.filter((m) => m.trainLoss !== null);
  const accs = run.metrics.filter((m) => m.testAccuracy !== null);
  if (!losses.length && !accs.length) return `<svg width="${W}" height="${H}"><text x="${L}" y="${H / 2}">curves appear after the first round</text></svg>`;
  const maxLoss = Math.max(1e-6, ...losses.map((m) => m.trainLoss!));
  const x = (s: number): number => L + ((W - L - 6) * s) / total;
  const yLoss = (v: number): number => 6 + (H - B - 6) * (1 - v / maxLoss);
  const yAcc = (v: number): number => 6 + (H - B - 6) * (1 - v);
  const line = losses.map((m, i) => `${i ? 'L' : 'M'}${x(m.step).toFixed(1)},${yLoss(m.trainLoss!).toFixed(1)}`).join(' ');
  return `<svg width="${W}" height="${H}" role="img" aria-label="train loss and test accuracy">
    <line x1="${L}" y1="${H - B}" x2="${W - 4}" y2="${H - B}" stroke="#ccd"/><line x1="${L}" y1="6" x2="${L}" y2="${H - B}" stroke="#ccd"/>
    <text x="2" y="12">${maxLoss.toFixed(2)}</text><text x="2" y="${H - B}">0</text><text x="${W - 4}" y="${H - 3}" text-anchor="end">${n(total)} steps</text>
    <path d="${line}" fill="none" stroke="#2f6fdf" stroke-width="1.5"/>
    ${accs.map((m) => `<circle cx="${x(m.step).toFixed(1)}" cy="${yAcc(m.testAccuracy!).toFixed(1)}" r="3" fill="#1f8a4c"><title>top-1 ${(100 * m.testAccuracy!).toFixed(2)}%</title></circle>`).join('')}
    <text x="${L + 4}" y="${H - 3}" fill="#2f6fdf">train loss</text><text x="${L + 58}" y="${H - 3}" fill="#1f8a4c">test top-1</text></svg>`;
}

/** Delta download links need a read (or the admin) token; without one the page shows sizes and digests. */
async function deltaLinks(): Promise<Map<string, string>> {
  if (!token()) return new Map();
  const d = await api().request(DeltaLinks, {}).catch(() => undefined);
  return new Map((d?.runs.items ?? []).flatMap((r) => (r.delta ? [[r.id, r.delta.downloadUrl] as [string, string]] : [])));
}

async function loadRuns(): Promise<void> {
  const [d, links] = await Promise.all([api().request(RecentRuns, {}), deltaLinks()]);
  $('summary').textContent = plural(d.runs.total, 'run');
  $('runs').innerHTML = d.runs.items.map((r) => `<div class="run" data-run="${r.id}" data-status="${r.status}">
    <div>
      <div class="title">${esc(r.strategyName)} <span class="status ${r.status}">${r.status}</span></div>
      <div class="meta">${esc(r.model.name)} &rarr; ${esc(r.dataset.name)} &middot; ${r.kind.toLowerCase().replace('_', ' ')} &middot; ${r.id.slice(0, 8)} &middot; ${new Date(r.createdAt).toLocaleTimeString()}</div>
      <div class="meta">${r.tunedParameters !== null ? `${n(r.tunedParameters)} of ${n(r.totalParameters ?? 0)} parameters tuned` : ''}</div>
      <progress value="${r.progress}" max="1"></progress>
      <div class="meta">${n(r.step)} / ${n(r.totalSteps)} steps</div>
      ${r.accuracy !== null ? `<div class="acc" data-accuracy="${r.accuracy}">top-1 ${(100 * r.accuracy).toFixed(2)}%</div>` : ''}
      ${r.delta ? `<div class="meta">${links.has(r.id) ? `<a href="${esc(links.get(r.id)!)}" download>delta</a>` : 'delta'} (${size(r.delta.bytes)}), SHA-256 <code class="sha" title="check the download against it">${r.delta.sha256}</code></div>` : ''}
      ${r.error ? `<div class="meta" style="color:var(--bad)">${esc(r.error)}</div>` : ''}
    </div>
    <div>${plot(r)}</div></div>`).join('') || 'none yet';
}

async function loadWorkers(): Promise<void> {
  if (!token()) {
    $('workers').innerHTML = '<tr><td colspan="6">a read token (or the admin token) shows the workers</td></tr>';
    return;
  }
  const d = await api().request(OnlineWorkers, {});
  const state = (w: { trusted: boolean; quarantined: boolean }): string => (w.quarantined ? ' (quarantined)' : w.trusted ? '' : ' (volunteer)');
  // Trust as the verifier sees it: agreed / outvoted results, strikes, and the kernel class compared on.
  const record = (w: { trust: string; agreed: number; disagreed: number; strikes: number }): string =>
    `${w.trust.toLowerCase()}: ${w.agreed} agreed, ${w.disagreed} outvoted, ${w.strikes} strikes`;
  $('workers').innerHTML = d.workers.items.map((w) => `<tr data-quarantined="${w.quarantined}" data-trust="${w.trust}"><td>${esc(w.name)}${state(w)}</td><td>${w.kind}</td>`
    + `<td title="${esc(w.kernelClass ?? '')}">${esc(w.backend)}</td><td>${w.shardsDone}</td><td>${w.imagesPerSecond?.toFixed(1) ?? '-'}</td><td>${record(w)}</td></tr>`).join('')
    || '<tr><td colspan="6">no worker online: run <code>partune worker</code> or open /worker</td></tr>';
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
  $('model').addEventListener('change', () => void loadStrategies());
  $('dataset').addEventListener('change', () => void loadStrategies());
  $('strategy').addEventListener('change', preview);
  $('token').addEventListener('change', () => void Promise.all([loadRuns(), loadWorkers()]).catch(() => undefined));
  $('start').addEventListener('submit', (e) => void start(e));
  await loadCatalog();
  await Promise.all([loadRuns(), loadWorkers()]);
  subscribe();
  setInterval(() => void loadWorkers().catch(() => undefined), 3000);
  setInterval(() => void loadCatalog().catch(() => undefined), 15000);
  document.body.dataset.ready = 'true';
}

main().catch((e: Error) => void ($('conn').textContent = `error: ${e.message}`));
