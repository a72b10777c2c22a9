// What hostile documents cost the server, against a normal query in the same run: the fragment
// chain (each fragment spreading the next twice) at several lengths, 10,000 aliases, and a 300
// alias document the complexity check refuses, over HTTP and graphql-ws; the server's resident
// memory before and after. Writes bench/results/hostile-<date>.json. Run: npm run bench:hostile
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { ServerProcess, gql, startServer } from '../node/local-platform';

const fragmentChain = (n: number): string =>
  `query{...F0} ${Array.from({ length: n }, (_, i) => `fragment F${i} on Query{...F${i + 1} ...F${i + 1}}`).join(' ')} fragment F${n} on Query{__typename}`;
const aliases = (n: number): string => `{models{items{${Array.from({ length: n }, (_, i) => `a${i}:name`).join(' ')}}}}`;

const rss = (s: ServerProcess): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${s.proc.pid}/status`, 'utf8'))![1]) / 1024;

async function socketOnce(url: string, query: string): Promise<string> {
  const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0 });
  try {
    return await new Promise((resolve) => {
      let answer = 'data';
      client.subscribe({ query }, {
        next: (r) => void (answer = r.errors?.length ? String((r.errors[0] as { extensions?: { code?: string } }).extensions?.code) : 'data'),
        error: (e) => resolve(Array.isArray(e) ? String(e[0]?.extensions?.code) : 'socket error'),
        complete: () => resolve(answer),
      });
    });
  } finally {
    await client.dispose();
  }
}

/** Median milliseconds of `repeat` sends, and what the server answered. */
async function measure(send: () => Promise<string>, repeat = 5): Promise<{ ms: number; answer: string }> {
  const times: number[] = [];
  let answer = '';
  for (let i = 0; i < repeat; i++) {
    const t = performance.now();
    answer = await send();
    times.push(performance.now() - t);
  }
  return { ms: Number(times.sort((a, b) => a - b)[Math.floor(repeat / 2)].toFixed(2)), answer };
}

async function main(): Promise<void> {
  const server = await startServer();
  const ws = server.url.replace(/^http/, 'ws');
  const http = async (q: string): Promise<string> => {
    const r = await gql(server.url, undefined, q);
    return r.errors?.length ? String(r.errors[0].extensions?.code) : 'data';
  };
  try {
    const before = rss(server);
    const cases: [string, string][] = [
      ['normal: { models { total } }', '{ models { total } }'],
      ...[10, 23, 40, 63].map((n): [string, string] => [`fragment chain n=${n}`, fragmentChain(n)]),
      ['fragment chain n=100 (over 64 fragments)', fragmentChain(100)],
      ['300 aliases of a list (complexity)', `{model(id:"x"){${Array.from({ length: 300 }, (_, i) => `a${i}:strategies{name}`).join(' ')}}}`],
      ['10,000 aliases (token cap)', aliases(10_000)],
    ];
    const results = [];
    for (const [name, q] of cases) {
      const overHttp = await measure(() => http(q));
      const overSocket = await measure(() => socketOnce(ws, q));
      results.push({ case: name, bytes: q.length, http: overHttp, socket: overSocket });
      process.stderr.write(`[hostile] ${name}: HTTP ${overHttp.ms} ms (${overHttp.answer}), socket ${overSocket.ms} ms (${overSocket.answer})\n`);
    }
    const after = rss(server);
    const out = {
      date: new Date().toISOString(), machine: `${cpus().length} x ${cpus()[0].model}`, node: process.version,
      note: 'median of 5 sends each; the socket column includes opening and closing a graphql-ws connection',
      serverRssMiB: { before: Number(before.toFixed(1)), after: Number(after.toFixed(1)) }, results,
    };
    mkdirSync(join(__dirname, '..', '..', 'bench', 'results'), { recursive: true });
    const file = join(__dirname, '..', '..', 'bench', 'results', `hostile-${out.date.slice(0, 10)}.json`);
    writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
    process.stderr.write(`[hostile] wrote ${file}; server RSS ${before.toFixed(0)} -> ${after.toFixed(0)} MiB\n`);
  } finally {
    await server.stop();
  }
}

main().catch((e: Error) => {
  process.stderr.write(`${e.stack ?? e.message}\n`);
  process.exit(1);
});
