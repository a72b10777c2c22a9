// The volunteer page: a browser tab that lends its compute once its visitor presses Start (or it
// is opened with ?start=1). It says what starting does, keeps its worker identity in the browser,
// chooses its backend by measurement, and runs the same shard-protocol client and engine as the
// Node worker; idle and training are shown apart, in words rather than shape keys.
import { PartuneWorker } from '../worker/worker';
import { BackendChoiceInput, OpenToVolunteers, VolunteerToken } from '../protocol/operations';
import { plural } from '../protocol/words';
import { GraphQLClient } from '../worker/client';
import { WsGraphQLClient } from '../worker/ws-client';
import { BackendState, BrowserBackends } from './backend';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);

function show(id: string, text: string): void {
  $(id).textContent = text;
}

function log(line: string): void {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${line}`;
  $('log').prepend(li);
  while ($('log').children.length > 50) $('log').lastChild!.remove();
}

/** The choice and every timing, on the page (a table) and as the claims send it. */
function showBackend(s: BackendState): void {
  show('backend', `${s.name}: ${s.detail} (${s.how}${s.model ? " on the run's model" : ''})`);
  document.body.dataset.backend = s.name;
  const rows = s.timings.map((t) => {
    const tr = document.createElement('tr');
    const speed = t.imagesPerSecond === null ? (t.note ?? '-') : `${t.imagesPerSecond.toFixed(1)} img/s`;
    for (const text of [t.backend === s.name ? `${t.backend} (chosen)` : t.backend, t.detail, speed]) tr.appendChild(document.createElement('td')).textContent = text;
    tr.dataset.backend = t.backend;
    return tr;
  });
  $('timings').replaceChildren(...rows);
}

const choiceInput = (s: BackendState): BackendChoiceInput => ({
  chosen: s.name, detail: s.detail, how: s.how, model: s.model,
  timings: s.timings.map((t) => ({ backend: t.backend, detail: t.detail, imagesPerSecond: t.imagesPerSecond, note: t.note })),
});

async function volunteerToken(server: string): Promise<string> {
  const given = params.get('token');
  if (given) return given;
  const anonymous = new GraphQLClient(server, undefined, { patienceMs: 10_000 });
  const { volunteerToken: token } = await anonymous.request(VolunteerToken, { invitation: params.get('invitation') });
  return token;
}

/** This tab's worker identity, kept in the browser per name: a reload is the same worker. */
interface Identity {
  readonly name: string;
  readonly credential?: string;
}
const IDENTITY_KEY = `partune.volunteer.${params.get('name') ?? 'default'}`;
function identity(): Identity {
  try {
    const kept = JSON.parse(localStorage.getItem(IDENTITY_KEY) ?? 'null') as Identity | null;
    if (kept && typeof kept.name === 'string') return kept;
  } catch {
    // unreadable: a new identity
  }
  return { name: params.get('name') ?? `browser-${Math.random().toString(36).slice(2, 8)}` };
}
const keep = (i: Identity): void => localStorage.setItem(IDENTITY_KEY, JSON.stringify(i));

const mib = (bytes: number): string => (bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(0)} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`);

function setState(state: 'ready' | 'working' | 'stopped' | 'error', text: string): void {
  document.body.dataset.state = state;
  show('state', text);
  const toggle = $<HTMLButtonElement>('toggle');
  toggle.textContent = state === 'working' ? 'Stop' : 'Start';
  toggle.disabled = false;
}

const server = `${location.origin}/graphql`;
const memoryMiB = Number(params.get('memoryMiB') ?? 1024);
let backends: Promise<BrowserBackends> | undefined;
let running: { readonly stop: AbortController; readonly done: Promise<void> } | undefined;

/** Trains until stopped: one worker, its identity kept, its state shown as idle or training. */
async function work(stop: AbortController): Promise<void> {
  backends ??= BrowserBackends.open({
    forced: params.get('backend'), wasmPath: `${location.origin}/worker/wasm/`, threadScript: `${location.origin}/worker/gemm-thread.js`,
    products: params.get('products') === 'xnnpack' ? 'xnnpack' : 'gemm', storage: params.get('remember') === '0' ? null : localStorage,
  });
  const b = await backends;
  showBackend(b.current);
  const me = identity();
  // One graphql-ws socket carries the whole shard protocol; it reconnects after a server restart.
  // Only the newest socket speaks for the tab: a probe's or a renewed credential's old socket closing is not the tab cut off.
  let newest = 0;
  const connect = (t: string): WsGraphQLClient => {
    const id = ++newest;
    return new WsGraphQLClient(server.replace(/^http/, 'ws'), t, (status) => {
      if (id !== newest || stop.signal.aborted) return;
      show('connection', status);
      if (status === 'closed') {
        document.body.dataset.activity = 'offline';
        show('state', 'waiting for the server: the connection closed; it reconnects by itself');
      } else if (document.body.dataset.activity === 'offline') {
        document.body.dataset.activity = 'idle';
        show('state', 'idle: started, waiting for a shard (press Stop to end)');
      }
    });
  };
  const worker = new PartuneWorker({
    server, token: () => volunteerToken(server), credential: me.credential, connect, memoryBudget: memoryMiB * 2 ** 20, name: me.name, kind: 'browser',
    backend: b.current.name, kernelClass: b.current.kernelClass,
    onCredential: (credential) => {
      keep({ name: me.name, credential });
      show('identity', `${me.name} (worker ${worker.id.slice(0, 8)}), kept in this browser`);
    },
    onActivity: (a) => {
      document.body.dataset.activity = a.training ? 'training' : 'idle';
      const now = a.training ? 'training: press Stop to end after the current step' : 'idle: started, waiting for a shard (press Stop to end)';
      if (!stop.signal.aborted) show('state', now);
      if (!a.training) {
        show('run', 'idle: no shard for this tab right now; it asks again every few seconds');
        return;
      }
      const s = a.shard;
      const where = `run ${s.runId.slice(0, 8)}, round ${s.round + 1}, shard ${s.index + 1}`;
      show('run', `training ${s.strategy} of ${s.model}: ${where} (downloaded ${mib(s.downloadedBytes)})`);
    },
    prepare: async ({ config, strategy, batchSize }) => {
      if (b.current.model === null) show('backend', 'measuring each backend on the run\'s model');
      const state = await b.forModel(config, strategy, batchSize);
      showBackend(state);
      return state;
    },
    backendChoice: () => choiceInput(b.current),
    signal: stop.signal, log,
    onProgress: (p) => {
      ($('bar') as HTMLProgressElement).value = p.step / p.steps;
      show('steps', `${p.step} of ${p.steps} steps, loss ${p.loss.toFixed(4)}`);
      show('ips', `${p.imagesPerSecond.toFixed(1)} images a second`);
    },
  });
  const timer = setInterval(() => {
    show('samples', `${plural(worker.samples, 'image')} in ${plural(worker.shardsDone, 'shard')}`);
    document.body.dataset.shards = String(worker.shardsDone);
  }, 500);
  try {
    await worker.run();
  } finally {
    clearInterval(timer);
  }
}

function start(): void {
  const stop = new AbortController();
  setState('working', 'starting: press Stop to end');
  show('run', 'starting: choosing a backend, joining the server');
  const done = work(stop).then(
    () => {
      setState('stopped', 'stopped: press Start to help again');
      show('run', 'nothing: stopped');
    },
    (e: Error) => {
      setState('error', `error: ${e.message}`);
      show('run', 'nothing: stopped by the error above');
      log(e.message);
    },
  ).finally(() => {
    delete document.body.dataset.activity;
    running = undefined;
  });
  running = { stop, done };
}

$('toggle').addEventListener('click', () => {
  if (!running) return start();
  running.stop.abort();
  $<HTMLButtonElement>('toggle').disabled = true;
  show('state', 'stopping after the current step');
});
addEventListener('pagehide', () => running?.stop.abort()); // the lease lapses and the shard is re-issued

show('server', location.origin);
show('memory', `${memoryMiB.toLocaleString()} MiB`);
const anonymous = new GraphQLClient(server, undefined, { patienceMs: 5_000 });
const showOpen = (): Promise<void> =>
  anonymous.request(OpenToVolunteers, {}).then(
    ({ runsOpenToVolunteers: n }) => {
      show('open', n ? plural(n, 'run') : 'none now: a started tab waits for a run that admits volunteers');
      document.body.dataset.open = String(n);
    },
    () => undefined,
  );
void showOpen();
setInterval(() => void showOpen(), 10_000);
const kept = identity();
if (kept.credential) show('identity', `${kept.name}, kept in this browser`);
// ?start=1 starts at once (a kiosk, or a test); otherwise nothing runs before Start.
if (params.get('start') === '1') start();
