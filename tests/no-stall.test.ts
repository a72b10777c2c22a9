// No request can stall the server: every field an anonymous caller, a volunteer or a volunteer's
// worker may reach, called with random and hostile arguments over HTTP and graphql-ws, answers a
// typed error (never INTERNAL_SERVER_ERROR) within a time bound while /healthz keeps answering;
// the backtracking glob, negative pages, huge class counts, nameless operations, DNS-rebinding
// hosts, forged log lines and FIFOs all get their precise answer. An honest run goes on meanwhile
// and comes out bit for bit the single-process one.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import {
  GraphQLArgument,
  GraphQLField,
  GraphQLInputType,
  GraphQLNamedType,
  getNamedType,
  getNullableType,
  isEnumType,
  isInputObjectType,
  isListType,
  isObjectType,
  isScalarType,
} from 'graphql';
import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { GqlResult, gql, ok, registerWorker } from '../node/local-platform';
import { partuneSchema } from '../server/schema';
import { HonestRun, residentMiB, startHonestRun } from './support/honest-run';

jest.setTimeout(600_000);

let h: HonestRun;
beforeAll(async () => {
  // Leases and stall windows a loaded 2-core machine keeps (the flood and the fuzz share its cores with the honest worker).
  h = await startHonestRun({
    PARTUNE_VOLUNTEERS_PER_MINUTE: '100000', PARTUNE_VOLUNTEERS_TOTAL_PER_MINUTE: '100000', PARTUNE_UPLOAD_MAX_MB: '64',
    PARTUNE_LEASE_SECONDS: '15', PARTUNE_STALL_SECONDS: '60',
  });
});
afterAll(() => h?.close());

const code = (r: GqlResult<unknown>): string | undefined => r.errors?.[0]?.extensions?.code;

/**
 * /healthz answer times (ms), sampled every 25 ms until stopped, from a process of its own: the
 * test's own event loop (busy driving an attack) must not add to what it measures.
 */
async function sampleHealth(url: string): Promise<{ stop(): Promise<number[]> }> {
  const script = `const times = []; let on = true; process.on('SIGTERM', () => (on = false));
    (async () => { while (on) { const t = performance.now(); await fetch(${JSON.stringify(url.replace('/graphql', '/healthz'))}).then((r) => r.text());
      times.push(performance.now() - t); process.stdout.write('.'); await new Promise((r) => setTimeout(r, 25)); }
      process.stdout.write(JSON.stringify(times)); })();`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await new Promise<void>((r) => child.stdout.once('data', () => r()));
  return {
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      return JSON.parse(out.replace(/^\.*/, '')) as number[];
    },
  };
}
const p99 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))];

describe('hostile inputs an anonymous caller may send', () => {
  it('the backtracking glob, by strategy(spec:) and startRun, over HTTP and graphql-ws: answered in under 50 ms, /healthz meanwhile', async () => {
    const spec = JSON.stringify({ include: ['**'.repeat(40) + 'Z'] });
    const health = await sampleHealth(h.server.url);
    const q = 'query($s: String!) { strategy(model: "micro", spec: $s) { tunedParameters } }';
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const r = await gql(h.server.url, undefined, q, { s: spec });
      times.push(performance.now() - t);
      expect([code(r), r.errors?.[0].message]).toEqual([
        'BAD_USER_INPUT',
        "strategy: strategy 'custom': include pattern '" + '**'.repeat(40) + "Z' matches no parameter",
      ]);
    }
    const long = JSON.stringify({ include: ['*'.repeat(300)] });
    expect(code(await gql(h.server.url, undefined, q, { s: long }))).toBe('BAD_USER_INPUT');
    const start = await gql(h.server.url, h.server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }', {
      i: { model: 'micro', dataset: 'digits', strategy: spec },
    });
    expect(code(start)).toBe('BAD_USER_INPUT');
    const client = createClient({ url: h.server.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
    const t = performance.now();
    const overSocket = await new Promise<GqlResult<unknown>>((resolve) => {
      let last: GqlResult<unknown> = {};
      client.subscribe(
        { query: q, variables: { s: spec } },
        { next: (r) => void (last = r as GqlResult<unknown>), error: () => resolve(last), complete: () => resolve(last) },
      );
    });
    times.push(performance.now() - t);
    await client.dispose();
    expect(code(overSocket)).toBe('BAD_USER_INPUT');
    const healthTimes = await health.stop();
    process.stdout.write(`ReDoS spec: answered in ${[...times].sort((a, b) => a - b).map((t) => t.toFixed(1)).join(', ')} ms; /healthz p99 ${p99(healthTimes).toFixed(1)} ms\n`);
    // The matcher takes microseconds; what a request takes is the machine's to decide (a loaded one adds
    // scheduling): the median under 250 ms, none near the seconds a backtracking regex took.
    const sorted = [...times].sort((a, b) => a - b);
    expect(sorted[Math.floor(sorted.length / 2)]).toBeLessThan(250);
    expect(sorted[sorted.length - 1]).toBeLessThan(3000);
    // A few samples over a short test: the slowest of them, against the 25 s a backtracking regex held the loop.
    expect(Math.max(...healthTimes)).toBeLessThan(3000);
  });

  it('negative or huge pages, a 2^31-class head and nameless operations are BAD_USER_INPUT, never INTERNAL or HTTP 500', async () => {
    const over = `{ runs(first: -100) { items { id metrics { step } } } datasets(first: 100) { items { shards { sha256 } } } }`;
    expect(code(await gql(h.server.url, undefined, over))).toBe('BAD_USER_INPUT');
    expect(code(await gql(h.server.url, undefined, '{ models(first: 2147483647) { total } }'))).toBe('BAD_USER_INPUT');
    const classes = await gql(h.server.url, undefined, '{ strategy(model: "micro", spec: "attn-only", numClasses: 2147483647) { tunedParameters } }');
    expect([code(classes), classes.errors?.[0].message]).toEqual(['BAD_USER_INPUT', expect.stringMatching(/numClasses' must be an integer from 1 to 100000/)]);
    const named = Array.from({ length: 300 }, (_, i) => `query q${i} { __typename }`).join(' ');
    const res = await fetch(h.server.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: named }) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as GqlResult<unknown>).errors?.[0].extensions?.code).toBe('BAD_USER_INPUT');
  });

  it('a worker name with a newline or a control character is refused, and nothing a worker sends starts a log line', async () => {
    const { volunteerToken } = await ok(h.server.url, undefined, 'mutation { volunteerToken }');
    for (const name of ['evil\nrun 1 failed: forged', 'bell\u0007', 'rtl\u202e']) {
      const r = await gql(h.server.url, volunteerToken, 'mutation($n: String!) { registerWorker(name: $n, kind: "browser", backend: "wasm") { credential } }', {
        n: name,
      });
      expect(code(r)).toBe('BAD_USER_INPUT');
    }
    expect(h.server.log.some((l) => /^run 1 failed: forged/.test(l))).toBe(false);
  });
});

describe('DNS rebinding: the Host header is checked before any Origin logic', () => {
  /** A raw request with a Host header of our choosing (fetch would set its own). */
  const raw = (path: string, host: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; body: string; acao?: string }> =>
    new Promise((resolve, reject) => {
      const u = new URL(h.server.url);
      const req = httpRequest(
        { host: '127.0.0.1', port: u.port, path, method: body ? 'POST' : 'GET', headers: { host, 'content-type': 'application/json', ...headers } },
        (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode!, body: text, acao: res.headers['access-control-allow-origin'] as string | undefined }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });

  it('evil.example as Host and Origin: the API, the socket and the blobs refuse; IP literals and localhost answer', async () => {
    const mint = JSON.stringify({ query: 'mutation { volunteerToken }' });
    const evil = await raw('/graphql', 'evil.example:4000', { origin: 'http://evil.example:4000' }, mint);
    expect([evil.status, evil.body.includes('vol_')]).toEqual([421, false]);
    expect((await raw('/graphql', 'evil.example:4000', {}, mint)).status).toBe(421);
    const blob = await raw('/blobs/deltas/x.safetensors?expires=1&sig=x', 'evil.example', { origin: 'http://evil.example' });
    expect([blob.status, blob.acao]).toEqual([421, undefined]);
    expect((await raw('/', 'evil.example')).status).toBe(421);
    const port = new URL(h.server.url).port;
    expect((await raw('/graphql', `127.0.0.1:${port}`, {}, JSON.stringify({ query: '{ __typename }' }))).status).toBe(200);
    expect((await raw('/graphql', `localhost:${port}`, {}, JSON.stringify({ query: '{ __typename }' }))).status).toBe(200);
    const socket = await new Promise<number>((resolve) => {
      const ws = new WebSocket(h.server.url.replace(/^http/, 'ws'), 'graphql-transport-ws', {
        headers: { host: 'evil.example:4000', origin: 'http://evil.example:4000' },
      });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => (ws.close(), resolve(101)));
      ws.on('error', () => resolve(-1));
    });
    expect(socket).toBe(421);
  });
});

describe('server paths are read safely', () => {
  it('a FIFO is refused at once, a sparse file over the size limit at once, both while /healthz answers', async () => {
    const fifo = join(h.tmp, 'swap.fifo');
    execFileSync('mkfifo', [fifo]);
    const sparse = join(h.tmp, 'sparse.safetensors');
    writeFileSync(sparse, '');
    truncateSync(sparse, 1.5 * 2 ** 30);
    const dataDir = join(h.tmp, 'sparse-data');
    mkdirSync(dataDir);
    const images = join(dataDir, 'train-images-idx3-ubyte');
    writeFileSync(images, '');
    truncateSync(images, 1.5 * 2 ** 30);
    const health = await sampleHealth(h.server.url);
    const t = performance.now();
    const register = 'mutation($p: String!) { registerModel(input: { name: "x", path: $p }) { id } }';
    const fromFifo = await gql(h.server.url, h.server.admin, register, { p: fifo });
    const fromSparse = await gql(h.server.url, h.server.admin, register, { p: sparse });
    const dataset = await gql(h.server.url, h.server.admin, 'mutation($p: String!) { importDataset(input: { name: "s", format: IDX, path: $p }) { id } }', {
      p: dataDir,
    });
    const ms = performance.now() - t;
    const healthTimes = await health.stop();
    expect([code(fromFifo), fromFifo.errors?.[0].message]).toEqual(['BAD_USER_INPUT', `path ${fifo} is not a regular file`]);
    expect([code(fromSparse), fromSparse.errors?.[0].message]).toEqual([
      'BAD_USER_INPUT',
      expect.stringMatching(/has 1610612736 bytes, more than the 67108864 an upload may/),
    ]);
    expect([code(dataset), dataset.errors?.[0].message]).toEqual(['BAD_USER_INPUT', expect.stringMatching(/train-images-idx3-ubyte has 1610612736 bytes/)]);
    process.stdout.write(`server paths: FIFO and 1.5 GiB sparse files refused in ${ms.toFixed(0)} ms; /healthz p99 ${p99(healthTimes).toFixed(1)} ms\n`);
    expect(ms).toBeLessThan(10_000);
    expect(Math.max(...healthTimes)).toBeLessThan(3000); // a few samples: the slowest, against the 30 s and more a 1.5 GiB read held the loop
  });
});

describe('a fuzz over every field strangers reach', () => {
  type Caller = { name: string; token?: string };
  let seed = 20261207;
  const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) >>> 4) % n;
  const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)];
  const HOSTILE_STRINGS = [
    '',
    ' ',
    'x'.repeat(20_000),
    '**'.repeat(40) + 'Z',
    JSON.stringify({ include: ['**'.repeat(60) + 'Z'] }),
    '{',
    '{"blocks":[1e308]}',
    '../../../etc/passwd',
    '/dev/zero',
    'evil\nline',
    '\u0000',
    '\ud800',
    "' OR 1=1 --",
    'micro',
    'digits',
    'attn-only',
    'wasm-gemm-fma',
    '__proto__',
    '1e400',
  ];
  const HOSTILE_INTS = [-2147483648, -1, 0, 1, 7, 100, 101, 65_536, 2147483647];
  const HOSTILE_FLOATS = [-1e308, -1, -0, 0, 1e-300, 0.5, 1, 1e6, 1e308];
  const value = (type: GraphQLInputType, depth = 0): unknown => {
    const t = getNullableType(type) as GraphQLInputType;
    // Mostly well-typed (so that resolvers run), now and then a null where none may be.
    if (rand(t === type ? 4 : 25) === 0) return null;
    if (isListType(t)) return depth > 2 ? [] : Array.from({ length: pick([0, 1, 3, 300]) }, () => value(t.ofType, depth + 1));
    if (isEnumType(t)) return rand(6) === 0 ? 'NOT_A_VALUE' : pick(t.getValues()).name;
    if (isInputObjectType(t)) return Object.fromEntries(Object.values(t.getFields()).map((f) => [f.name, value(f.type, depth + 1)]));
    if (isScalarType(t)) {
      if (t.name === 'Int') return pick(HOSTILE_INTS);
      if (t.name === 'Float') return pick(HOSTILE_FLOATS);
      if (t.name === 'Boolean') return rand(2) === 0;
      return pick(HOSTILE_STRINGS);
    }
    return null;
  };
  const selection = (named: GraphQLNamedType): string => (isObjectType(named) ? ' { __typename }' : '');
  const operation = (kind: 'query' | 'mutation' | 'subscription', f: GraphQLField<unknown, unknown>): { query: string; variables: Record<string, unknown> } => {
    const args = f.args as readonly GraphQLArgument[];
    const decl = args.map((a) => `$${a.name}: ${String(a.type)}`).join(', ');
    const use = args.map((a) => `${a.name}: $${a.name}`).join(', ');
    const variables = Object.fromEntries(args.map((a) => [a.name, a.name === 'wait' ? pick([-1, 0, 1]) : value(a.type)]));
    return { query: `${kind} Fuzz${decl ? `(${decl})` : ''} { ${f.name}${use ? `(${use})` : ''}${selection(getNamedType(f.type))} }`, variables };
  };

  it('random and hostile arguments, three kinds of stranger, HTTP and graphql-ws: typed errors in bounded time, /healthz answering', async () => {
    const schema = partuneSchema();
    const { volunteerToken } = await ok(h.server.url, undefined, 'mutation { volunteerToken }');
    const credential = (await registerWorker(h.server, 'fuzz-tab', 'browser', volunteerToken)).credential;
    const callers: Caller[] = [{ name: 'anonymous' }, { name: 'volunteer', token: volunteerToken }, { name: 'volunteer worker', token: credential }];
    const types = { query: schema.getQueryType()!, mutation: schema.getMutationType()!, subscription: schema.getSubscriptionType()! };
    const fields = (['query', 'mutation', 'subscription'] as const).flatMap((kind) => Object.values(types[kind].getFields()).map((f) => ({ kind, f })));
    const connect = (c: Caller): Client =>
      createClient({
        url: h.server.url.replace(/^http/, 'ws'),
        webSocketImpl: WebSocket,
        retryAttempts: 0,
        lazy: true,
        connectionParams: c.token ? { authorization: `Bearer ${c.token}` } : {},
      });
    const sockets = new Map(callers.map((c) => [c.name, connect(c)]));
    // A message over the socket's 256 KiB cap closes its socket (1009, the ws PAYLOAD_TOO_LARGE): such a
    // message gets a socket of its own, so that what shares a socket is never closed by another's size.
    const overSocket = async (c: Caller, q: { query: string; variables: Record<string, unknown> }, streams: boolean): Promise<GqlResult<unknown>> => {
      const oversized = JSON.stringify(q).length > 200 * 1024;
      const client = oversized ? connect(c) : sockets.get(c.name)!;
      try {
        return await new Promise((resolve) => {
          let last: GqlResult<unknown> = {};
          // A subscription that is accepted streams until told to stop: what it sent in its first 300 ms is its answer.
          const stop = client.subscribe(q, {
            next: (r) => void (last = r as GqlResult<unknown>),
            error: (e) => {
              const closed = e as { code?: number; reason?: string };
              const code = closed.code === 1009 && oversized ? 'PAYLOAD_TOO_LARGE' : 'SOCKET_CLOSED';
              const message = closed.code ? `closed ${closed.code} ${closed.reason ?? ''}` : String(e);
              resolve(Array.isArray(e) ? { errors: e } : { errors: [{ message, extensions: { code } }] });
            },
            complete: () => resolve(last),
          });
          if (streams) setTimeout(() => (stop(), resolve(last)), 300);
        });
      } finally {
        if (oversized) await client.dispose();
      }
    };
    const health = await sampleHealth(h.server.url);
    const seen = new Map<string, number>();
    const slowest = { ms: 0, what: '' };
    const internal: string[] = [];
    const jobs: (() => Promise<void>)[] = [];
    let resolved = 0;
    for (let round = 0; round < 8; round++)
      for (const c of callers)
        for (const { kind, f } of fields)
          for (const transport of kind === 'subscription' ? (['ws'] as const) : (['http', 'ws'] as const))
            jobs.push(async () => {
              const q = operation(kind, f);
              const t = performance.now();
              let r: GqlResult<unknown>;
              if (transport === 'http') {
                const res = await fetch(h.server.url, {
                  method: 'POST',
                  headers: { 'content-type': 'application/json', ...(c.token ? { authorization: `Bearer ${c.token}` } : {}) },
                  body: JSON.stringify(q),
                });
                if (res.status >= 500) internal.push(`${c.name} ${f.name} over http: HTTP ${res.status}`);
                r = (await res.json()) as GqlResult<unknown>;
              } else r = await overSocket(c, q, kind === 'subscription');
              const ms = performance.now() - t;
              if (ms > slowest.ms) Object.assign(slowest, { ms, what: `${c.name} ${f.name} over ${transport}` });
              if ((r as { data?: unknown }).data || r.errors?.some((e) => (e as { path?: unknown }).path) || (kind === 'subscription' && !r.errors)) resolved++;
              for (const e of r.errors ?? []) {
                const k = e.extensions?.code ?? 'NO_CODE';
                seen.set(k, (seen.get(k) ?? 0) + 1);
                if (k === 'INTERNAL_SERVER_ERROR' || k === 'NO_CODE' || k === 'SOCKET_CLOSED')
                  internal.push(`${c.name} ${f.name} over ${transport}: ${k} ${e.message} ${JSON.stringify(q.variables).slice(0, 300)}`);
              }
            });
    const lanes = Array.from({ length: 8 }, async () => {
      for (let job = jobs.shift(); job; job = jobs.shift()) await job();
    });
    await Promise.all(lanes);
    for (const s of sockets.values()) await s.dispose();
    const healthTimes = await health.stop();
    process.stdout.write(
      `fuzz: ${fields.length} fields (subscriptions over the socket only) x ${callers.length} callers x 8 rounds, ${resolved} reached a resolver; ` +
        `codes ${JSON.stringify(Object.fromEntries(seen))}; ` +
        `slowest ${slowest.ms.toFixed(0)} ms (${slowest.what}); /healthz p99 ${p99(healthTimes).toFixed(1)} ms of ${healthTimes.length}\n`,
    );
    expect(internal).toEqual([]);
    expect(slowest.ms).toBeLessThan(10_000);
    expect(p99(healthTimes)).toBeLessThan(1000); // tens of ms on a quiet machine
    // The fuzz reached past the type and auth checks into the resolvers, for many of its requests.
    expect(resolved).toBeGreaterThan(300);
  });

  it('250 sockets x 32 subscriptions on a public run: capped per network and in total, /healthz answering (p99 under 1 s), memory given back', async () => {
    await ok(h.server.url, h.server.admin, 'mutation($id: ID!) { setRunPublic(id: $id, public: true) { id } }', { id: h.runId });
    const before = residentMiB(h.server);
    const subscription = `subscription { runEvents(runId: "${h.runId}") { kind progress } }`;
    // What /healthz takes on this machine now, without the flood (other suites may be running beside).
    const quiet = await sampleHealth(h.server.url);
    await new Promise((r) => setTimeout(r, 3000));
    const baseline = p99(await quiet.stop());
    const health = await sampleHealth(h.server.url);
    type Opened = { ws: WebSocket; closed: Promise<number>; events: number };
    // Ten networks (/24s) of 25 sockets each: each network is capped at 32 sockets, so all open here.
    const open = (i: number): Promise<Opened> =>
      new Promise((resolve) => {
        const ws = new WebSocket(h.server.url.replace(/^http/, 'ws'), 'graphql-transport-ws', { localAddress: `127.0.${60 + (i % 10)}.2` });
        const o: Opened = { ws, closed: new Promise((r) => ws.once('close', (c) => r(c))), events: 0 };
        ws.on('message', (m) => {
          const msg = JSON.parse(String(m)) as { type: string };
          if (msg.type === 'connection_ack') {
            for (let s = 0; s < 32; s++) ws.send(JSON.stringify({ id: String(s), type: 'subscribe', payload: { query: subscription } }));
            resolve(o);
          } else if (msg.type === 'next') o.events++;
        });
        ws.once('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: {} })));
        ws.once('close', () => resolve(o));
        ws.once('error', () => undefined);
      });
    const sockets = await Promise.all(Array.from({ length: 250 }, (_, i) => open(i)));
    // One network past its cap: the 33rd socket from 127.0.70.0/24 is closed at once.
    const crowd = await Promise.all(Array.from({ length: 40 }, () => open(0)));
    await new Promise((r) => setTimeout(r, 6000)); // events flow to 8,000 subscribers meanwhile
    const events = sockets.reduce((n, s) => n + s.events, 0);
    const refusedCodes = await Promise.all(crowd.map((c) => Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(0), 500))])));
    for (const s of [...sockets, ...crowd]) s.ws.terminate();
    const healthTimes = await health.stop();
    await new Promise((r) => setTimeout(r, 3000));
    const after = residentMiB(h.server);
    process.stdout.write(
      `socket flood: 250 + 40 sockets x 32 subscriptions, ${events} events delivered, ${refusedCodes.filter((c) => c === 4429).length} sockets refused; ` +
        `/healthz p99 ${p99(healthTimes).toFixed(1)} ms (${baseline.toFixed(1)} ms before the flood); RSS ${before.toFixed(0)} -> ${after.toFixed(0)} MiB\n`,
    );
    expect(refusedCodes.filter((c) => c === 4429).length).toBeGreaterThanOrEqual(25); // 127.0.60.0/24 had 25 and may hold 32
    // Not frozen: about 100-170 ms on a quiet machine; where other suites share the 2 cores, twice what it took before plus 200 ms.
    expect(p99(healthTimes)).toBeLessThan(Math.max(1000, 200 + 2 * baseline));
    expect(after - before).toBeLessThan(150);
  });

  it('the honest run beside all this completes with the single-process delta', async () => {
    const r = await h.finish();
    expect([r.status, r.identical]).toEqual(['SUCCEEDED', true]);
  });
});
