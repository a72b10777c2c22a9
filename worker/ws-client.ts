// GraphQL requests over one graphql-ws socket (what a browser tab keeps open to its server): the
// token travels once, in the connection parameters, and the socket reconnects by itself.
import { Client, createClient } from 'graphql-ws';
import { GraphQLRequestError, GraphQLTransport } from './client';

export class WsGraphQLClient implements GraphQLTransport {
  private readonly client: Client;

  constructor(url: string, token: string, onStatus?: (status: 'connected' | 'closed') => void, webSocketImpl?: unknown) {
    this.client = createClient({
      url, connectionParams: { authorization: `Bearer ${token}` }, retryAttempts: Infinity, shouldRetry: () => true, lazy: false,
      webSocketImpl, on: { connected: () => onStatus?.('connected'), closed: () => onStatus?.('closed') },
    });
  }

  request<T>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
    return new Promise((resolve, reject) => {
      let data: T | undefined;
      this.client.subscribe<T>({ query, variables }, {
        next: (r) => {
          if (r.errors?.length) {
            const first = r.errors[0] as { message: string; extensions?: { code?: string } };
            reject(new GraphQLRequestError(r.errors.map((e) => e.message).join('; '), first.extensions?.code));
          } else data = r.data as T;
        },
        error: (e) => reject(e instanceof Error ? e : new Error(Array.isArray(e) ? e.map((x) => x.message).join('; ') : String((e as CloseEvent)?.reason ?? e))),
        complete: () => (data === undefined ? undefined : resolve(data)),
      });
    });
  }

  dispose(): Promise<void> {
    return Promise.resolve(this.client.dispose());
  }
}
