// GraphQL requests over one graphql-ws socket (what a browser tab keeps open to its server): the
// token travels once, in the connection parameters, and the socket reconnects by itself.
import { Client, createClient } from 'graphql-ws';
import type { TypedDocument } from '../protocol/typed-document';
import { GraphQLRequestError, GraphQLTransport } from './client';

export class WsGraphQLClient implements GraphQLTransport {
  private readonly client: Client;

  constructor(url: string, token: string, onStatus?: (status: 'connected' | 'closed') => void, webSocketImpl?: unknown) {
    this.client = createClient({
      url, connectionParams: { authorization: `Bearer ${token}` }, retryAttempts: Infinity, shouldRetry: () => true, lazy: false,
      webSocketImpl, on: { connected: () => onStatus?.('connected'), closed: () => onStatus?.('closed') },
    });
  }

  request<R, V>(query: TypedDocument<R, V>, variables: V): Promise<R> {
    return new Promise((resolve, reject) => {
      let data: R | undefined;
      this.client.subscribe<R>({ query, variables: variables as Record<string, unknown> }, {
        next: (r) => {
          if (r.errors?.length) {
            const first = r.errors[0] as { message: string; extensions?: { code?: string } };
            reject(new GraphQLRequestError(r.errors.map((e) => e.message).join('; '), first.extensions?.code));
          } else data = r.data as R;
        },
        error: (e) => reject(e instanceof Error ? e : new Error(Array.isArray(e) ? e.map((x) => x.message).join('; ') : String((e as CloseEvent)?.reason ?? e))),
        complete: () => (data === undefined ? reject(new Error('the socket closed before the answer came')) : resolve(data)),
      });
    });
  }

  dispose(): Promise<void> {
    return Promise.resolve(this.client.dispose());
  }
}

/** A typed subscription on a graphql-ws client; returns its unsubscribe function. */
export function subscribe<R, V>(client: Client, query: TypedDocument<R, V>, variables: V, sink: { next: (data: R) => void; error?: (e: unknown) => void }): () => void {
  return client.subscribe<R>({ query, variables: variables as Record<string, unknown> }, {
    next: (r) => void (r.data && sink.next(r.data as R)),
    error: (e) => sink.error?.(e),
    complete: () => undefined,
  });
}
