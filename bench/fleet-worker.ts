// A volunteer worker process for the trust bench and the red-team test: the real PartuneWorker,
// registered with a volunteer token, speaking from its own loopback address (so each looks like
// a different host), and misbehaving when told to. A lie keeps the honest update's label and
// optimizer step and replaces its tensors, after the honest training ran:
//   scaled: the move times 100; reversed: the move backwards (within AdamW's reach); noise: the
//   move plus seeded noise of its size; noise3: every parameter times (1 + 1e-3 noise); zeros: all
//   parameters zero; lazy: the round's state unmoved (moments too); moments: second moments x1e30;
//   replay: this worker's previous result; cycle: the modes in turn, from the `--offset`th;
//   collude: a lie within every bound (reversed or lazy) chosen by the shard's round and
//   index, so colluding liars agree bit for bit on any shard they compute.
// Other conduct: --class C declares kernel class C (a false one); --honest-first N lies only after
// N honest results (farming trust); --check-only lies only on check replicas (replica > 0);
// --prefail K gives back its first K claims with failShard; --fake-progress holds every claim with
// heartbeats that advance one step every --tick seconds and never completes.
// Each lie is logged as `lie MODE shard ID round R index I`, each held lease as `held shard ID for S s: WHY`.
// Usage: node dist/bench/fleet-worker.js --server URL --address 127.0.0.N --name N [--lie MODE] [--offset K] [...]
import { request } from 'node:http';
import { STATE_KEY, parseSafetensors, serializeSafetensors } from '../engine';
import { selectBackend } from '../node/backend';
import { ClaimShard, FailShard, Heartbeat } from '../protocol/operations';
import type { TypedDocument } from '../protocol/typed-document';
import { GraphQLRequestError, GraphQLTransport } from '../worker/client';
import { PartuneWorker } from '../worker/worker';

export const LIES = ['scaled', 'reversed', 'noise', 'zeros', 'replay', 'noise3', 'lazy', 'moments'] as const;
export type Lie = (typeof LIES)[number];
/** Lies that pass every bound, deterministic in the shard, so colluders agree bit for bit. */
const COLLUDED: readonly Lie[] = ['reversed', 'lazy'];

/** GraphQL over HTTP from a chosen local address. */
export class AddressedClient implements GraphQLTransport {
  constructor(
    private readonly url: string,
    private readonly token: string | undefined,
    private readonly address: string,
  ) {}

  request<R, V>(query: TypedDocument<R, V>, variables: V): Promise<R> {
    const body = JSON.stringify({ query, variables });
    return new Promise((resolve, reject) => {
      const req = request(
        this.url,
        {
          method: 'POST',
          localAddress: this.address,
          headers: {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
            ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            try {
              const r = JSON.parse(Buffer.concat(chunks).toString()) as { data?: R; errors?: { message: string; extensions?: { code?: string } }[] };
              if (r.errors?.length) reject(new GraphQLRequestError(r.errors.map((e) => e.message).join('; '), r.errors[0].extensions?.code));
              else resolve(r.data as R);
            } catch (e) {
              reject(e);
            }
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }
}

type Tensors = Map<string, { shape: readonly number[]; data: Float32Array }>;

/** Seeded uniform noise in [-1, 1) (a mulberry32 stream). */
function noise(seed: number, n: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 31 - 1;
  });
}

/** The lie's tensors in place of the honest ones (the moments are read by the bounds, and by the digest). */
export function lie(mode: Lie, honest: Tensors, start: Tensors, previous: Tensors | undefined, seed: number): Tensors {
  const out: Tensors = new Map();
  for (const [name, t] of honest) {
    const s = start.get(name)?.data;
    const r = noise(seed + name.length, t.data.length);
    if (mode === 'lazy' && s) out.set(name, { shape: t.shape, data: Float32Array.from(s) });
    else if (mode === 'moments' && name.startsWith('exp_avg_sq/')) out.set(name, { shape: t.shape, data: t.data.map((x) => x * 1e30) });
    else if (!name.startsWith('param/') || !s || mode === 'lazy' || mode === 'moments') out.set(name, t);
    else {
      const move = (i: number): number => t.data[i] - s[i];
      const rms = Math.sqrt(t.data.reduce((a, _, i) => a + move(i) ** 2, 0) / t.data.length);
      const data =
        mode === 'scaled'
          ? t.data.map((_, i) => s[i] + 100 * move(i))
          : mode === 'reversed'
            ? t.data.map((_, i) => s[i] - move(i))
            : mode === 'noise'
              ? t.data.map((x, i) => x + 2 * rms * r[i])
              : mode === 'noise3'
                ? t.data.map((x, i) => x * (1 + 1e-3 * r[i]))
                : mode === 'zeros'
                  ? new Float32Array(t.data.length)
                  : (previous?.get(name)?.data ?? t.data.map((_, i) => s[i] - move(i)));
      out.set(name, { shape: t.shape, data: Float32Array.from(data) });
    }
  }
  return out;
}

interface Conduct {
  readonly mode: string;
  readonly offset: number;
  readonly honestFirst: number;
  readonly checkOnly: boolean;
  prefail: number;
  readonly fakeProgress: boolean;
  readonly tickSeconds: number;
}

type Claimed = { shard: { id: string; round: number; index: number; replica: number; attempt: number } };

async function main(): Promise<void> {
  const arg = (k: string): string | undefined => {
    const i = process.argv.indexOf(`--${k}`);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const flag = (k: string): boolean => process.argv.includes(`--${k}`);
  const server = arg('server')!;
  const address = arg('address') ?? '127.0.0.1';
  const conduct: Conduct = {
    mode: arg('lie') ?? 'none',
    offset: Number(arg('offset') ?? 0),
    honestFirst: Number(arg('honest-first') ?? 0),
    checkOnly: flag('check-only'),
    prefail: Number(arg('prefail') ?? 0),
    fakeProgress: flag('fake-progress'),
    tickSeconds: Number(arg('tick') ?? 1),
  };
  if (!['none', 'cycle', 'collude', ...LIES].includes(conduct.mode)) throw new Error(`--lie: one of none, cycle, collude, ${LIES.join(', ')}`);
  const backend = await selectBackend('wasm');
  const kernelClass = arg('class') ?? backend.kernelClass;
  const token = (
    await new AddressedClient(server, undefined, address).request(
      'mutation { volunteerToken }' as TypedDocument<{ volunteerToken: string }, Record<string, never>>,
      {},
    )
  ).volunteerToken;
  const shards = new Map<string, Claimed['shard']>();
  if (conduct.mode !== 'none') tellLies(conduct, shards);
  const connect = (credential: string): GraphQLTransport => {
    const client = new AddressedClient(server, credential, address);
    return {
      request: async <R, V>(query: TypedDocument<R, V>, variables: V): Promise<R> => {
        const r = await client.request(query, variables);
        const claimed = query === (ClaimShard as unknown) ? (r as { claimShard: Claimed | null }).claimShard : null;
        if (!claimed) return r;
        shards.set(claimed.shard.id, claimed.shard);
        if (conduct.prefail > 0) {
          conduct.prefail--;
          await client.request(FailShard, { shardId: claimed.shard.id, attempt: claimed.shard.attempt, message: 'out of memory' });
          process.stdout.write(`failed shard ${claimed.shard.id}\n`);
          return { claimShard: null } as R;
        }
        if (conduct.fakeProgress) {
          await holdWithFakeProgress(client, claimed.shard, conduct.tickSeconds);
          return { claimShard: null } as R;
        }
        return r;
      },
    };
  };
  const controller = new AbortController();
  process.once('SIGTERM', () => controller.abort());
  const worker = new PartuneWorker({
    server,
    token,
    connect,
    name: arg('name') ?? `volunteer-${address}`,
    kind: 'browser',
    backend: backend.name,
    kernelClass,
    signal: controller.signal,
    log: (line) => process.stdout.write(`${line}\n`),
  });
  await worker.run();
}

/** Heartbeats whose steps advance one per tick, and no result, until the server ends the lease. */
async function holdWithFakeProgress(client: AddressedClient, shard: Claimed['shard'], tickSeconds: number): Promise<void> {
  const t0 = performance.now();
  for (let steps = 1; ; steps++) {
    await new Promise((r) => setTimeout(r, tickSeconds * 1000));
    const h = await client
      .request(Heartbeat, { shardId: shard.id, attempt: shard.attempt, stepsDone: steps, loss: 2.3 })
      .catch((e: Error) => ({ heartbeat: { cancelled: true, reason: e.message } }));
    if (h.heartbeat.cancelled) {
      process.stdout.write(`held shard ${shard.id} for ${((performance.now() - t0) / 1000).toFixed(1)} s: ${h.heartbeat.reason}\n`);
      return;
    }
  }
}

/** The lies are told on the wire: the round state is read as it arrives, the update rewritten as it leaves. */
function tellLies(conduct: Conduct, shards: Map<string, Claimed['shard']>): void {
  let start: Tensors | undefined;
  let previous: Tensors | undefined;
  let uploads = 0;
  let told = conduct.offset;
  const honestFetch = globalThis.fetch;
  globalThis.fetch = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    if (init?.method === 'PUT' && url.includes('/slots/')) {
      const file = parseSafetensors(new Uint8Array(init.body as Uint8Array));
      const label = JSON.parse(file.metadata[STATE_KEY]) as { shard: string; round: number };
      const at = shards.get(label.shard) ?? { round: label.round, index: 0, replica: 0 };
      const honest: Tensors = new Map([...file.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
      const lies = uploads++ >= conduct.honestFirst && (!conduct.checkOnly || at.replica > 0);
      if (!lies) {
        previous = honest;
        return honestFetch(input, init);
      }
      const now =
        conduct.mode === 'cycle'
          ? LIES[told++ % LIES.length]
          : conduct.mode === 'collude'
            ? COLLUDED[(at.round + at.index) % COLLUDED.length]
            : (conduct.mode as Lie);
      const forged = lie(now, honest, start ?? honest, previous, at.round * 1000 + at.index);
      previous = honest;
      process.stdout.write(`lie ${now} shard ${label.shard} round ${at.round} index ${at.index}\n`);
      return honestFetch(input, { ...init, body: serializeSafetensors(forged, { dtype: 'F32', metadata: file.metadata }) as Uint8Array<ArrayBuffer> });
    }
    const res = await honestFetch(input, init);
    if (!init?.method || init.method === 'GET') {
      const bytes = new Uint8Array(await res.clone().arrayBuffer());
      try {
        const file = parseSafetensors(bytes);
        if (file.metadata[STATE_KEY] && !url.includes('/slots/')) start = new Map([...file.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
      } catch {
        // not a state: the model or the data
      }
    }
    return res;
  };
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`${e.stack ?? e.message}\n`);
    process.exit(1);
  });
}
