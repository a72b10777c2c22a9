// A hostile client against the API during an honest run: documents built to cost the server
// time or memory (over HTTP and graphql-ws), foreign origins, hostile file names and server paths,
// huge plans, anonymous reads, ghost volunteers. Each gets a precise error code, the server
// stays up and small, and the honest run's delta is bit for bit the single-process one.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { GqlResult, gql, ok, waitFor } from '../node/local-platform';
import { HonestRun, residentMiB, startHonestRun } from './support/honest-run';

jest.setTimeout(300_000);

let h: HonestRun;
beforeAll(async () => {
  h = await startHonestRun({ PARTUNE_MAX_RUN_STEPS: '100000', PARTUNE_UPLOAD_TTL_SECONDS: '4', PARTUNE_LEASE_SECONDS: '15', PARTUNE_STALL_SECONDS: '60' });
});
afterAll(() => h?.close());

const code = (r: GqlResult<unknown>): string | undefined => r.errors?.[0]?.extensions?.code;
const wsUrl = (): string => h.server.url.replace(/^http/, 'ws');

/** One operation over a fresh graphql-ws socket: its data or its errors. */
async function overSocket(query: string, token?: string): Promise<GqlResult<Record<string, any>>> {
  const client = createClient({ url: wsUrl(), webSocketImpl: WebSocket, connectionParams: token ? { authorization: `Bearer ${token}` } : {}, retryAttempts: 0 });
  try {
    return await new Promise((resolve) => {
      let result: GqlResult<Record<string, any>> = {};
      client.subscribe({ query }, {
        next: (r) => void (result = r as GqlResult<Record<string, any>>),
        error: (e) => resolve({ errors: Array.isArray(e) ? e : [{ message: String((e as Error).message ?? e), extensions: { code: 'SOCKET' } }] }),
        complete: () => resolve(result),
      });
    });
  } finally {
    await client.dispose();
  }
}

const fragmentChain = (n: number): string =>
  `query{...F0} ${Array.from({ length: n }, (_, i) => `fragment F${i} on Query{...F${i + 1} ...F${i + 1}}`).join(' ')} fragment F${n} on Query{__typename}`;

describe('documents built to cost the server', () => {
  it('a chain of fragments each spreading the next twice is answered in milliseconds, over HTTP and the socket', async () => {
    for (const n of [23, 60]) {
      let t = Date.now();
      const http = await gql(h.server.url, undefined, fragmentChain(n));
      const httpMs = Date.now() - t;
      t = Date.now();
      const socket = await overSocket(fragmentChain(n));
      const socketMs = Date.now() - t;
      expect({ n, http: http.data ?? code(http), socket: socket.data ?? code(socket) }).toEqual({ n, http: { __typename: 'Query' }, socket: { __typename: 'Query' } });
      expect(Math.max(httpMs, socketMs)).toBeLessThan(10_000); // 2^60 spreads would never end; a loaded machine adds seconds at most
    }
  });

  it('10,000 aliases are refused at parsing, and 300 by complexity, over the socket as over HTTP', async () => {
    const aliases = (n: number): string => `{model(id:"micro"){${Array.from({ length: n }, (_, i) => `a${i}:strategies{name}`).join(' ')}}}`;
    for (const send of [(q: string) => gql(h.server.url, undefined, q), (q: string) => overSocket(q)]) {
      const huge = await send(aliases(10_000));
      expect([code(huge), huge.errors?.[0].message]).toEqual(['GRAPHQL_PARSE_FAILED', expect.stringMatching(/more th\w+ 4000 tokens/)]);
      expect(code(await send(aliases(300)))).toBe('QUERY_TOO_COMPLEX');
    }
    expect(code(await gql(h.server.url, undefined, aliases(20_000)))).toBe('PAYLOAD_TOO_LARGE'); // over 256 KB: refused before parsing
  });

  it('lists of scalars are costed by their items: 166 aliases of every strategy\'s tuned tensors are refused, not a megabyte computed', async () => {
    const q = `{model(id:"micro"){${Array.from({ length: 166 }, (_, i) => `a${i}:strategies(numClasses:100000){tunedTensors}`).join(' ')}}}`;
    for (const send of [(x: string) => gql(h.server.url, undefined, x), (x: string) => overSocket(x)]) expect(code(await send(q))).toBe('QUERY_TOO_COMPLEX');
    expect((await ok(h.server.url, undefined, '{model(id:"micro"){strategies{tunedTensors}}}')).model.strategies.length).toBeGreaterThan(5); // one is fine
  });

  it('a subscription over HTTP is BAD_REQUEST; a token that does not verify is UNAUTHENTICATED for public fields too, over HTTP and the socket', async () => {
    expect(code(await gql(h.server.url, undefined, 'subscription { runEvents { kind } }'))).toBe('BAD_REQUEST');
    for (const token of ['wrong', 'adm_wrong', `wkc_${'x'.repeat(36)}.${'A'.repeat(43)}`]) {
      expect(code(await gql(h.server.url, token, '{ runs { total } }'))).toBe('UNAUTHENTICATED');
      expect(code(await overSocket('{ runs { total } }', token))).toBe('UNAUTHENTICATED');
    }
    // An authorization that is not a string is a token that does not verify, not an internal error.
    const notAString = { authorization: { a: 1 } as unknown as string };
    const client = createClient({ url: wsUrl(), webSocketImpl: WebSocket, connectionParams: notAString, retryAttempts: 0 });
    const r = await new Promise<GqlResult<unknown>>((resolve) => {
      client.subscribe({ query: '{ runs { total } }' }, {
        next: () => undefined, complete: () => resolve({}),
        error: (e) => {
          const closed = [{ message: String((e as { reason?: string }).reason ?? e), extensions: { code: 'SOCKET' } }];
          resolve({ errors: Array.isArray(e) ? e : closed });
        },
      });
    });
    await client.dispose();
    expect(code(r)).toBe('UNAUTHENTICATED');
  });

  it('a path with a malformed escape is a short 400, never a stack', async () => {
    const origin = h.server.url.replace('/graphql', '');
    for (const path of ['/graphiql/%C0', '/graphiql/%C0%AE%C0%AE%C0%AFetc', '/graphiql/__proto__', '/graphiql/..%2f..%2fpackage.json']) {
      const res = await fetch(`${origin}${path}`);
      const text = await res.text();
      const stack = /at \S+ \(|node_modules|\.js:\d+/.test(text);
      expect({ path, status: res.status, stack }).toEqual({ path, status: path.includes('%C0') ? 400 : 404, stack: false });
    }
  });

  it('a socket message over the size cap closes the socket; a socket holds at most 32 operations', async () => {
    const closed = await new Promise<number>((resolve) => {
      const ws = new WebSocket(wsUrl(), 'graphql-transport-ws');
      ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { pad: 'x'.repeat(300_000) } })));
      ws.on('close', (c) => resolve(c));
    });
    expect(closed).toBe(1009);
    const client = createClient({ url: wsUrl(), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${h.server.admin}` } });
    const errors: string[] = [];
    const stops = Array.from({ length: 40 }, () => client.subscribe({ query: 'subscription { runEvents { runId } }' }, {
      next: () => undefined, error: (e) => void errors.push(...(Array.isArray(e) ? e.map((x: any) => x.extensions?.code) : ['SOCKET'])), complete: () => undefined,
    }));
    await new Promise((r) => setTimeout(r, 1000));
    stops.forEach((stop) => stop());
    await client.dispose();
    expect(errors).toEqual(Array(8).fill('TOO_MANY_OPERATIONS'));
  });

  it('a page from a foreign origin can neither open the socket nor call the API', async () => {
    const refused = await new Promise<number>((resolve) => {
      const ws = new WebSocket(wsUrl(), 'graphql-transport-ws', { headers: { origin: 'https://evil.example' } });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => resolve(101));
    });
    expect(refused).toBe(403);
    const own = h.server.url.replace('/graphql', '');
    const opened = await new Promise<number>((resolve) => {
      const ws = new WebSocket(wsUrl(), 'graphql-transport-ws', { headers: { origin: own } });
      ws.on('open', () => (ws.close(), resolve(101)));
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    });
    expect(opened).toBe(101);
    const res = await fetch(h.server.url, { method: 'POST', headers: { 'content-type': 'application/json', origin: 'https://evil.example' }, body: JSON.stringify({ query: 'mutation { volunteerToken }' }) });
    expect([res.status, ((await res.json()) as GqlResult<unknown>).errors?.[0].extensions?.code]).toEqual([403, 'FORBIDDEN']);
  });
});

describe('names, paths and sizes a request may give', () => {
  const upload = 'mutation($f: String!) { createUpload(filename: $f, bytes: 10) { id } }';
  const register = 'mutation($i: RegisterModelInput!) { registerModel(input: $i) { id } }';
  const importData = 'mutation($i: ImportDatasetInput!) { importDataset(input: $i) { id } }';

  it('hostile upload names are BAD_USER_INPUT; a name is only a label', async () => {
    for (const f of ['..', '.', '', 'a\u0000b', 'x'.repeat(300), 'dir/', 'tab\there']) {
      const r = await gql(h.server.url, h.server.admin, upload, { f });
      expect({ f, code: code(r) }).toEqual({ f, code: 'BAD_USER_INPUT' });
    }
    expect(code(await gql(h.server.url, h.server.admin, upload, { f: '../../etc/passwd' }))).toBeUndefined(); // stored under its id, labelled "passwd"
  });

  it('server paths: only regular files under the import roots, and nothing said about others', async () => {
    const fifo = join(h.tmp, 'model.fifo');
    execFileSync('mkfifo', [fifo]);
    const dataDir = join(h.tmp, 'data-with-fifo');
    mkdirSync(dataDir);
    execFileSync('mkfifo', [join(dataDir, 'train-images-idx3-ubyte')]);
    symlinkSync('/etc/passwd', join(h.tmp, 'escape'));
    writeFileSync(join(h.tmp, 'not-a-model.safetensors'), 'garbage');
    const cases: [string, Record<string, unknown>, string, RegExp][] = [
      ['/proc/self/environ', { name: 'x', path: '/proc/self/environ' }, 'FORBIDDEN', /not under this server's import roots/],
      ['traversal', { name: 'x', path: `${h.tmp}/../../etc/passwd` }, 'FORBIDDEN', /not under/],
      ['symlink out', { name: 'x', path: join(h.tmp, 'escape') }, 'FORBIDDEN', /not under/],
      ['missing outside', { name: 'x', path: '/nonexistent/model.safetensors' }, 'FORBIDDEN', /not under/],
      ['FIFO', { name: 'x', path: fifo }, 'BAD_USER_INPUT', /not a regular file/],
      ['garbage', { name: 'x', path: join(h.tmp, 'not-a-model.safetensors') }, 'BAD_USER_INPUT', /checkpoint/],
    ];
    for (const [label, input, expected, message] of cases) {
      const t = Date.now();
      const r = await gql(h.server.url, h.server.admin, register, { i: input });
      expect({ label, code: code(r), message: r.errors?.[0].message }).toEqual({ label, code: expected, message: expect.stringMatching(message) });
      if (expected === 'FORBIDDEN') expect(r.errors?.[0].message).not.toMatch(/bytes|does not exist|regular/);
      expect(Date.now() - t).toBeLessThan(20_000); // a FIFO read would block forever
    }
    const d = await gql(h.server.url, h.server.admin, importData, { i: { name: 'x', format: 'IDX', path: dataDir } });
    expect([code(d), d.errors?.[0].message]).toEqual(['BAD_USER_INPUT', expect.stringMatching(/not a regular file/)]);
  });

  it('an upload never used is deleted after its time, bytes and all', async () => {
    const { createUpload } = await ok(h.server.url, h.server.admin, 'mutation { createUpload(filename: "forgotten.bin", bytes: 5) { id url } }');
    expect((await fetch(createUpload.url, { method: 'PUT', body: 'hello' })).status).toBe(200);
    const stored = join(h.server.dataDir, 'blobs', 'objects', 'uploads', createUpload.id);
    expect(existsSync(stored)).toBe(true);
    await waitFor('the upload to expire', async () => !existsSync(stored), 15_000, 250);
    const r = await gql(h.server.url, h.server.admin, register, { i: { name: 'late', uploadId: createUpload.id } });
    expect([code(r), r.errors?.[0].message]).toEqual(['NOT_FOUND', expect.stringMatching(/uploads are used once, by whoever created them, and expire/)]);
  });

  it('a plan too large to keep, or too many shards per round, is refused before anything is built', async () => {
    const start = (hyper: Record<string, unknown>): Promise<GqlResult<unknown>> => gql(h.server.url, h.server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: hyper } });
    const absurd = await start({ epochs: 2147483647 });
    expect([code(absurd), absurd.errors?.[0].message]).toEqual(['BAD_USER_INPUT', expect.stringMatching(/epochs must be an integer from 1 to 10000/)]);
    const huge = await start({ epochs: 10000 }); // 320,000 steps, over this server's PARTUNE_MAX_RUN_STEPS
    expect([code(huge), huge.errors?.[0].message]).toEqual(['BAD_USER_INPUT', 'hyperParameters.epochs: 320000 steps exceed this server\'s limit of 100000 per run (PARTUNE_MAX_RUN_STEPS)']);
    expect(code(await start({ shardsPerRound: 1000 }))).toBe('BAD_USER_INPUT');
    expect((await ok(h.server.url, undefined, '{ __typename }')).__typename).toBe('Query');
  });
});

describe('who may read what', () => {
  it('anonymous callers read public runs only, never shards, workers, delta URLs or server paths', async () => {
    const anonymous = async (q: string): Promise<string | undefined> => code(await gql(h.server.url, undefined, q, { id: h.runId }));
    expect(await anonymous('query($id: ID!) { run(id: $id) { status } }')).toBe('FORBIDDEN');
    expect(await anonymous('{ workers { items { id } } }')).toBe('UNAUTHENTICATED');
    expect(await anonymous('{ models { items { source } } }')).toBe('UNAUTHENTICATED');
    expect((await ok(h.server.url, undefined, '{ runs { total } }')).runs.total).toBe(0);

    const { volunteerToken } = await ok(h.server.url, undefined, 'mutation { volunteerToken }');
    expect(code(await gql(h.server.url, volunteerToken, '{ workers { items { id } } }'))).toBe('FORBIDDEN');

    const { issueReadToken: reader } = await ok(h.server.url, h.server.admin, 'mutation { issueReadToken }');
    const read = await ok(h.server.url, reader, 'query($id: ID!) { run(id: $id) { shards { workerId } } workers { total } models { items { source } } }', { id: h.runId });
    expect(read.run.shards.length).toBeGreaterThan(0);
    expect(code(await gql(h.server.url, reader, 'mutation($id: ID!) { cancelRun(id: $id) { id } }', { id: h.runId }))).toBe('FORBIDDEN');

    await ok(h.server.url, h.server.admin, 'mutation($id: ID!) { setRunPublic(id: $id, public: true) { public } }', { id: h.runId });
    expect((await ok(h.server.url, undefined, 'query($id: ID!) { run(id: $id) { status public } }', { id: h.runId })).run.public).toBe(true);
    expect(await anonymous('query($id: ID!) { run(id: $id) { shards { workerId } } }')).toBe('UNAUTHENTICATED');
  });

  it("anonymous subscribers get public runs' progress only, without messages", async () => {
    const client = createClient({ url: wsUrl(), webSocketImpl: WebSocket, retryAttempts: 0 });
    const events: { runId: string; status: string; message: string | null }[] = [];
    client.subscribe({ query: 'subscription { runEvents { runId status message } }' }, {
      next: (m) => void events.push((m.data as any).runEvents), error: () => undefined, complete: () => undefined,
    });
    await new Promise((r) => setTimeout(r, 300));
    const start = async (pub: boolean): Promise<string> => (await ok(h.server.url, h.server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { maxSteps: 8 }, public: pub } })).startRun.id;
    const [open, closed] = [await start(true), await start(false)];
    for (const id of [open, closed]) await ok(h.server.url, h.server.admin, 'mutation($id: ID!) { cancelRun(id: $id) { id } }', { id });
    await waitFor('the public run\'s cancellation', async () => events.some((e) => e.runId === open && e.status === 'CANCELLED'), 10_000, 100);
    await client.dispose();
    expect(events.filter((e) => e.runId === closed)).toEqual([]);
    expect(events.filter((e) => e.runId === open || e.runId === h.runId).every((e) => e.message === null)).toBe(true);
  });

  it("an admin's ban quarantines a volunteer at once; no other token may ban", async () => {
    const { volunteerToken } = await ok(h.server.url, undefined, 'mutation { volunteerToken }');
    const { registerWorker: r } = await ok(h.server.url, volunteerToken, 'mutation { registerWorker(name: "banned", kind: "browser", backend: "none") { worker { id quarantined } credential } }');
    expect(r.worker.quarantined).toBe(false);
    expect(code(await gql(h.server.url, h.server.worker, 'mutation($id: ID!) { banWorker(id: $id) { id } }', { id: r.worker.id }))).toBe('FORBIDDEN');
    expect((await ok(h.server.url, h.server.admin, 'mutation($id: ID!) { banWorker(id: $id) { quarantined } }', { id: r.worker.id })).banWorker).toEqual({ quarantined: true });
    const claim = await gql(h.server.url, r.credential, 'mutation { claimShard(kernelClass: "wasm-xnnpack-simd") { shard { id } } }');
    expect([code(claim), claim.errors?.[0].message]).toEqual(['FORBIDDEN', expect.stringMatching(/quarantined/)]);
  });

  it('300 ghost volunteers are rate-limited and do not inflate the next plan', async () => {
    const answers = await Promise.all(Array.from({ length: 300 }, () => gql<{ volunteerToken: string }>(h.server.url, undefined, 'mutation { volunteerToken }')));
    const tokens = answers.flatMap((r) => (r.data ? [r.data.volunteerToken] : []));
    expect(tokens.length).toBeLessThanOrEqual(2 * 20); // 20 a minute per address; a minute boundary may fall inside
    expect(answers.filter((r) => code(r) === 'RATE_LIMITED')).toHaveLength(300 - tokens.length);
    const registered = await Promise.all(tokens.map((t, i) => gql(h.server.url, t, `mutation { registerWorker(name: "ghost-${i}", kind: "browser", backend: "none") { worker { id } } }`)));
    expect(registered.every((r) => !r.errors || code(r) === 'RATE_LIMITED')).toBe(true);
    const { startRun } = await ok(h.server.url, h.server.admin, 'mutation($i: StartRunInput!) { startRun(input: $i) { id } }',
      { i: { model: 'micro', dataset: 'digits', strategy: 'attn-only', hyperParameters: { maxSteps: 8 } } });
    const plan = await ok(h.server.url, h.server.admin, 'query($id: ID!) { run(id: $id) { hyperParameters } }', { id: startRun.id });
    expect(plan.run.hyperParameters.shardsPerRound).toBe(1); // the one trusted worker online
    await ok(h.server.url, h.server.admin, 'mutation($id: ID!) { cancelRun(id: $id) { id } }', { id: startRun.id });
  });

  it('the honest run completes with the same delta as without the attacker; the server stayed small', async () => {
    const result = await h.finish();
    expect(result).toEqual({ status: 'SUCCEEDED', identical: true, accuracy: result.reference, reference: result.reference });
    expect(residentMiB(h.server)).toBeLessThan(1024);
    // Its delta: the digest for anyone once public, the URL for readers only.
    const delta = 'query($id: ID!) { delta(id: $id) { sha256 downloadUrl } }';
    expect(code(await gql(h.server.url, undefined, delta, { id: h.runId }))).toBe('UNAUTHENTICATED');
    expect((await gql<any>(h.server.url, undefined, 'query($id: ID!) { delta(id: $id) { sha256 } }', { id: h.runId })).data.delta.sha256).toMatch(/^[0-9a-f]{64}$/);
    await ok(h.server.url, h.server.admin, 'mutation($id: ID!) { setRunPublic(id: $id, public: false) { public } }', { id: h.runId });
    expect(code(await gql(h.server.url, undefined, 'query($id: ID!) { delta(id: $id) { sha256 } }', { id: h.runId }))).toBe('FORBIDDEN');
  });
});
