// GraphQL over graphql-ws with the same limits as HTTP: each operation is parsed with the token
// cap, validated (once per distinct text) and costed before it runs; a socket holds at most MAX_OPERATIONS at once, its
// messages at most the WebSocketServer's maxPayload. Only the server's own pages and configured
// origins may open one (clients that send no Origin, such as Node workers, are not browsers).
import type { IncomingMessage } from 'node:http';
import { DocumentNode, GraphQLError, GraphQLSchema, getOperationAST, parse, validate } from 'graphql';
import type { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/use/ws';
import { formatError } from './errors';
import { QueryLimits, checkCost } from './limits';
import type { Context } from './resolvers/context';

const MAX_OPERATIONS = 32;
/** Parsed and validated documents kept by their text: workers send the same few again and again. */
const CACHED_DOCUMENTS = 256;

/** Whether a browser page at `origin` may call: the server's own (same host) or a configured one. */
export function originAllowed(origin: string | undefined, host: string | undefined, allowed: readonly string[]): boolean {
  if (!origin) return true;
  if (allowed.includes(origin)) return true;
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}

export function serveSocket(
  wss: WebSocketServer, schema: GraphQLSchema, limits: QueryLimits,
  context: (params: Record<string, unknown> | undefined, request: IncomingMessage, gone: AbortSignal) => Context, log: (line: string) => void,
): { dispose(): Promise<void> } {
  /** Each socket's running operations, each with the signal its context carries. */
  const active = new WeakMap<object, Map<string, AbortController>>();
  const endAll = (ctx: object): void => active.get(ctx)?.forEach((c) => c.abort());
  const refuse = (message: string, code: string): GraphQLError[] => [new GraphQLError(message, { extensions: { code } })];
  const documents = new Map<string, DocumentNode>();
  /** The query parsed (with the token cap) and validated against the schema, which depends on nothing else. */
  const checked = (query: string): DocumentNode | GraphQLError[] => {
    const known = documents.get(query);
    if (known) return known;
    let document;
    try {
      document = parse(query, { maxTokens: limits.maxTokens });
    } catch (e) {
      return [e instanceof GraphQLError ? new GraphQLError(e.message, { extensions: { code: 'GRAPHQL_PARSE_FAILED' } }) : new GraphQLError(String(e))];
    }
    const invalid = validate(schema, document);
    if (invalid.length) return invalid.map((e) => new GraphQLError(e.message, { extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } }));
    if (documents.size >= CACHED_DOCUMENTS) documents.clear();
    documents.set(query, document);
    return document;
  };
  const cleanup = useServer<Record<string, unknown> | undefined, { request: IncomingMessage }>({
    schema,
    onSubscribe: (ctx, id, payload) => {
      const ops = active.get(ctx) ?? new Map<string, AbortController>();
      active.set(ctx, ops);
      if (ops.size >= MAX_OPERATIONS) return refuse(`at most ${MAX_OPERATIONS} operations at once on one socket`, 'TOO_MANY_OPERATIONS');
      const document = checked(payload.query);
      if (Array.isArray(document)) return document;
      const operation = getOperationAST(document, payload.operationName);
      if (!operation) return refuse('no operation to run: name one (operationName)', 'BAD_USER_INPUT');
      try {
        checkCost(schema, document, operation, payload.variables ?? undefined, limits);
      } catch (e) {
        return [e as GraphQLError];
      }
      const gone = new AbortController();
      ops.set(id, gone);
      return {
        schema, document, operationName: payload.operationName, variableValues: payload.variables,
        contextValue: context(ctx.connectionParams, ctx.extra.request, gone.signal),
      };
    },
    onComplete: (ctx, id) => {
      active.get(ctx)?.get(id)?.abort();
      active.get(ctx)?.delete(id);
    },
    onDisconnect: (ctx) => endAll(ctx),
    onClose: (ctx) => endAll(ctx),
    onNext: (_ctx, _id, _payload, _args, result) => (result.errors ? { ...result, errors: result.errors.map((e) => formatError(e.toJSON(), e, log)) } : undefined),
  }, wss);
  return { dispose: async () => cleanup.dispose() };
}
