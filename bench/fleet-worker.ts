// A volunteer worker process for the trust bench and the red-team test: the real PartuneWorker,
// registered with a volunteer token, speaking from its own loopback address (so each looks like
// a different host), and lying about its results when told to. A lie keeps the honest update's
// label and optimizer step and replaces its tensors, after the honest training ran:
//   scaled: the move times 100; reversed: the move backwards (within AdamW's reach); noise: the
//   move plus seeded noise of its size; zeros: all zeros; replay: this worker's previous result;
//   cycle: the modes in turn, from the `--offset`th; collude: the mode by the shard's round and
//   index, so two colluding liars agree with each other on any shard they both compute.
// Each lie is logged as `lie MODE shard ID round R index I`.
// Usage: node dist/bench/fleet-worker.js --server URL --address 127.0.0.N --name N [--lie MODE] [--offset K]
import { request } from 'node:http';
import { STATE_KEY, parseSafetensors, serializeSafetensors } from '../engine';
import { selectBackend } from '../node/backend';
import { ClaimShard } from '../protocol/operations';
import type { TypedDocument } from '../protocol/typed-document';
import { GraphQLRequestError, GraphQLTransport } from '../worker/client';
import { PartuneWorker } from '../worker/worker';

export const LIES = ['scaled', 'reversed', 'noise', 'zeros', 'replay'] as const;
export type Lie = (typeof LIES)[number];

/** GraphQL over HTTP from a chosen local address. */
export class AddressedClient implements GraphQLTransport {
  constructor(private readonly url: string, private readonly token: string | undefined, private readonly address: string) {}

  request<R, V>(query: TypedDocument<R, V>, variables: V): Promise<R> {
    const body = JSON.stringify({ query, variables });
    return new Promise((resolve, reject) => {
      const req = request(this.url, {
        method: 'POST', localAddress: this.address,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...(this.token ? { authorization: `Bearer ${this.token}` } : {}) },
      }, (res) => {
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
      });
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

/** The lie's tensors in place of the honest ones; params only, moments kept (the bound check reads both). */
export function lie(mode: Lie, honest: Tensors, start: Tensors, previous: Tensors | undefined, seed: number): Tensors {
  const out: Tensors = new Map();
  for (const [name, t] of honest) {
    const s = start.get(name)?.data;
    if (!name.startsWith('param/') || !s) {
      out.set(name, t);
      continue;
    }
    const move = (i: number): number => t.data[i] - s[i];
    const rms = Math.sqrt(t.data.reduce((a, _, i) => a + move(i) ** 2, 0) / t.data.length);
    const r = noise(seed + name.length, t.data.length);
    const data = mode === 'scaled' ? t.data.map((_, i) => s[i] + 100 * move(i))
      : mode === 'reversed' ? t.data.map((_, i) => s[i] - move(i))
      : mode === 'noise' ? t.data.map((x, i) => x + 2 * rms * r[i])
      : mode === 'zeros' ? new Float32Array(t.data.length)
      : (previous?.get(name)?.data ?? t.data.map((_, i) => s[i] - move(i)));
    out.set(name, { shape: t.shape, data: Float32Array.from(data) });
  }
  return out;
}

async function main(): Promise<void> {
  const arg = (k: string): string | undefined => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? process.argv[i + 1] : undefined; };
  const server = arg('server')!;
  const address = arg('address') ?? '127.0.0.1';
  const mode = arg('lie') ?? 'none';
  if (!['none', 'cycle', 'collude', ...LIES].includes(mode)) throw new Error(`--lie: one of none, cycle, collude, ${LIES.join(', ')}`);
  let told = Number(arg('offset') ?? 0);
  const backend = await selectBackend('wasm');
  const token = (await new AddressedClient(server, undefined, address).request('mutation { volunteerToken }' as TypedDocument<{ volunteerToken: string }, Record<string, never>>, {})).volunteerToken;
  const shards = new Map<string, { round: number; index: number }>();
  let start: Tensors | undefined;
  let previous: Tensors | undefined;
  if (mode !== 'none') {
    // The lie is told on the wire: the round state is read as it arrives, the update rewritten as it leaves.
    const honestFetch = globalThis.fetch;
    globalThis.fetch = async (input, init) => {
      const url = String(input instanceof Request ? input.url : input);
      if (init?.method === 'PUT' && url.includes('/uploads/')) {
        const file = parseSafetensors(new Uint8Array(init.body as Uint8Array));
        const label = JSON.parse(file.metadata[STATE_KEY]) as { shard: string; round: number };
        const at = shards.get(label.shard) ?? { round: label.round, index: 0 };
        const now = mode === 'cycle' ? LIES[told++ % LIES.length] : mode === 'collude' ? LIES[(at.round + at.index) % LIES.length] : (mode as Lie);
        const honest: Tensors = new Map([...file.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
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
          if (file.metadata[STATE_KEY] && !url.includes('/uploads/')) start = new Map([...file.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
        } catch {
          // not a state: the model or the data
        }
      }
      return res;
    };
  }
  const connect = (credential: string): GraphQLTransport => {
    const client = new AddressedClient(server, credential, address);
    return {
      request: async <R, V>(query: TypedDocument<R, V>, variables: V): Promise<R> => {
        const r = await client.request(query, variables);
        const claimed = query === (ClaimShard as unknown) ? (r as { claimShard: { shard: { id: string; round: number; index: number } } | null }).claimShard : null;
        if (claimed) shards.set(claimed.shard.id, claimed.shard);
        return r;
      },
    };
  };
  const controller = new AbortController();
  process.once('SIGTERM', () => controller.abort());
  const worker = new PartuneWorker({
    server, token, connect, name: arg('name') ?? `volunteer-${address}`, kind: 'browser', backend: backend.name, kernelClass: backend.kernelClass,
    signal: controller.signal, log: (line) => process.stdout.write(`${line}\n`),
  });
  await worker.run();
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`${e.stack ?? e.message}\n`);
    process.exit(1);
  });
}
