// A small GraphQL client over fetch (Node 20 and browsers alike) for the typed documents of
// protocol/operations.ts. Network failures and UNAVAILABLE answers (a store the server needs is
// down) are retried with backoff, so a worker rides out a restart or an outage; other GraphQL
// errors are thrown with their code.
import type { TypedDocument } from '../protocol/typed-document';

export class GraphQLRequestError extends Error {
  constructor(message: string, readonly code: string | undefined) {
    super(message);
  }
}

export interface ClientOptions {
  /** Give up on an unreachable server after this long (ms). */
  readonly patienceMs?: number;
  readonly log?: (line: string) => void;
  readonly signal?: AbortSignal;
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const wake = (): void => {
      clearTimeout(t);
      signal?.removeEventListener('abort', wake);
      resolve();
    };
    const t = setTimeout(wake, ms);
    signal?.addEventListener('abort', wake, { once: true });
  });

export class GraphQLClient {
  constructor(readonly url: string, private readonly token: string | undefined, private readonly options: ClientOptions = {}) {}

  async request<R, V>(query: TypedDocument<R, V>, variables: V): Promise<R> {
    const deadline = Date.now() + (this.options.patienceMs ?? 120_000);
    for (let attempt = 0; ; attempt++) {
      let res: Response;
      try {
        res = await fetch(this.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(this.token ? { authorization: `Bearer ${this.token}` } : {}) },
          body: JSON.stringify({ query, variables }),
          signal: this.options.signal,
        });
      } catch (e) {
        if (this.options.signal?.aborted || Date.now() > deadline) throw new Error(`server ${this.url} unreachable: ${(e as Error).message}`);
        if (attempt % 5 === 0) this.options.log?.(`server unreachable (${(e as Error).cause ?? (e as Error).message}); retrying`);
        await sleep(Math.min(5000, 250 * 2 ** Math.min(attempt, 5)), this.options.signal);
        continue;
      }
      const text = await res.text();
      let body: { data?: R; errors?: { message: string; extensions?: { code?: string } }[] };
      try {
        body = JSON.parse(text);
      } catch {
        throw new GraphQLRequestError(`HTTP ${res.status}: ${text.slice(0, 200)}`, `HTTP_${res.status}`);
      }
      const code = body.errors?.[0]?.extensions?.code;
      if (code === 'UNAVAILABLE' && !this.options.signal?.aborted && Date.now() < deadline) {
        if (attempt % 5 === 0) this.options.log?.(`server: ${body.errors![0].message}; retrying`);
        await sleep(Math.min(5000, 250 * 2 ** Math.min(attempt, 5)), this.options.signal);
        continue;
      }
      if (body.errors?.length) throw new GraphQLRequestError(body.errors.map((e) => e.message).join('; '), code);
      return body.data as R;
    }
  }
}

/** What the worker needs of a GraphQL connection: HTTP (`GraphQLClient`) or a graphql-ws socket. */
export interface GraphQLTransport {
  request<R, V>(query: TypedDocument<R, V>, variables: V): Promise<R>;
}
