// The edge-worker page: a browser tab that contributes compute. It obtains a volunteer token,
// chooses its backend by measurement, and runs the same shard-protocol client and engine as the
// Node worker.
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
  show('backend', `${s.name}: ${s.detail} (${s.how}${s.model ? ` on ${s.model}` : ''})`);
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

async function main(): Promise<void> {
  const server = `${location.origin}/graphql`;
  const controller = new AbortController();
  $('stop').addEventListener('click', () => {
    controller.abort();
    show('state', 'stopping after the current step');
  });
  addEventListener('pagehide', () => controller.abort()); // the lease lapses and the shard is re-issued
  const backends = await BrowserBackends.open({
    forced: params.get('backend'), wasmPath: `${location.origin}/worker/wasm/`, threadScript: `${location.origin}/worker/gemm-thread.js`,
    products: params.get('products') === 'xnnpack' ? 'xnnpack' : 'gemm', storage: params.get('remember') === '0' ? null : localStorage,
  });
  showBackend(backends.current);
  const token = await volunteerToken(server);
  // One graphql-ws socket carries the whole shard protocol; it reconnects after a server restart.
  // Shards whose model and data would not fit are left to other workers.
  const memoryMiB = Number(params.get('memoryMiB') ?? 1024);
  show('memory', `${memoryMiB.toLocaleString()} MiB`);
  const connect = (t: string): WsGraphQLClient => new WsGraphQLClient(server.replace(/^http/, 'ws'), t, (status) => show('connection', status));
  const worker = new PartuneWorker({
    server, token, connect, memoryBudget: memoryMiB * 2 ** 20, name: params.get('name') ?? `browser-${Math.random().toString(36).slice(2, 8)}`, kind: 'browser', backend: backends.current.name,
    kernelClass: backends.current.kernelClass,
    prepare: async ({ config, strategy, batchSize }) => {
      if (backends.current.model === null) show('backend', 'measuring each backend on the run\'s model');
      const state = await backends.forModel(config, strategy, batchSize);
      showBackend(state);
      return state;
    },
    backendChoice: () => choiceInput(backends.current),
    signal: controller.signal, log,
    onProgress: (p) => {
      show('run', `${p.runId.slice(0, 8)} shard ${p.shard.slice(0, 8)}`);
      ($('bar') as HTMLProgressElement).value = p.step / p.steps;
      show('steps', `${p.step} / ${p.steps} steps, loss ${p.loss.toFixed(4)}`);
      show('ips', `${p.imagesPerSecond.toFixed(1)} img/s`);
    },
  });
  show('state', 'working');
  document.body.dataset.state = 'working';
  const anonymous = new GraphQLClient(server, undefined, { patienceMs: 5_000 });
  const showOpen = (): Promise<void> =>
    anonymous.request(OpenToVolunteers, {}).then(
      ({ runsOpenToVolunteers: n }) => {
        show('open', n ? plural(n, 'run') : 'none now: this tab waits for a run that admits volunteers');
        document.body.dataset.open = String(n);
      },
      () => undefined,
    );
  void showOpen();
  const openTimer = setInterval(() => void showOpen(), 10_000);
  const timer = setInterval(() => {
    show('samples', `${plural(worker.samples, 'image')} in ${plural(worker.shardsDone, 'shard')}`);
    document.body.dataset.shards = String(worker.shardsDone);
  }, 500);
  try {
    await worker.run();
    show('state', 'stopped');
  } finally {
    clearInterval(timer);
    clearInterval(openTimer);
    document.body.dataset.state = 'stopped';
  }
}

main().catch((e: Error) => {
  show('state', `error: ${e.message}`);
  document.body.dataset.state = 'error';
  log(e.message);
});
