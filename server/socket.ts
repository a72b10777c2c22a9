// GraphQL over graphql-ws with the same limits as HTTP: each operation is parsed with the token
// cap, validated (once per distinct text) and costed before it runs; a socket holds at most
// MAX_OPERATIONS at once, its messages at most the WebSocketServer's maxPayload. Sockets are
// capped per network prefix and in total, operations in total (SocketBudget), and a socket whose
// unsent messages pass MAX_BUFFERED is closed: a slow reader is dropped, never buffered for.
// Only the server's own pages and configured origins may open one (app.ts checks).
import type { IncomingMessage } from 'node:http';
import { DocumentNode, GraphQLError, GraphQLSchema, getOperationAST, parse, validate } from 'graphql';
import { getVariableValues } from 'graphql/execution/values';
import type { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/use/ws';
import type { AnswerError } from './errors';
import { sharedSubscribe } from './fan-out';
import { QueryLimits, checkCost } from './limits';
import { REFUSED_TOKEN } from './resolvers/context';
import type { Context } from './resolvers/context';

const MAX_OPERATIONS = 32;
/** Bytes a socket may have queued unsent before it is closed (a reader that does not keep up). */
const MAX_BUFFERED = 4 * 2 ** 20;

/** Operations started per turn of the event loop: a burst of thousands waits behind other requests, not before them. */
const STARTS_PER_TURN = 16;
const waiting: (() => void)[] = [];
let pumping = false;

function fairTurn(): Promise<void> {
  return new Promise((resolve) => {
    waiting.push(resolve);
    if (pumping) return;
    pumping = true;
    const pump = (): void => {
      for (const start of waiting.splice(0, STARTS_PER_TURN)) start();
      if (waiting.length) setImmediate(pump);
      else pumping = false;
    };
    setImmediate(pump);
  });
}

/** How many sockets each network prefix holds, and how many operations and subscriptions run on all sockets. */
export class SocketBudget {
  private readonly perPrefix = new Map<string, number>();
  private sockets = 0;
  operations = 0;
  subscriptions = 0;

  constructor(readonly limits: { readonly socketsPerPrefix: number; readonly sockets: number; readonly operations: number; readonly subscriptions: number }) {}

  /** Takes a socket for `prefix`, or says why not. */
  open(prefix: string): string | undefined {
    if (this.sockets >= this.limits.sockets) return `this server holds ${this.limits.sockets} sockets (PARTUNE_MAX_SOCKETS)`;
    const n = this.perPrefix.get(prefix) ?? 0;
    if (n >= this.limits.socketsPerPrefix) return `${n} sockets are open from this network (${prefix}; PARTUNE_SOCKETS_PER_PREFIX)`;
    this.perPrefix.set(prefix, n + 1);
    this.sockets++;
    return undefined;
  }

  close(prefix: string): void {
    const n = (this.perPrefix.get(prefix) ?? 1) - 1;
    if (n > 0) this.perPrefix.set(prefix, n);
    else this.perPrefix.delete(prefix);
    this.sockets--;
  }
}
/** Parsed and validated documents kept by their text: workers send the same few again and again. */
const CACHED_DOCUMENTS = 256;

export function serveSocket(
  wss: WebSocketServer, schema: GraphQLSchema, limits: QueryLimits, budget: SocketBudget, prefixOf: (request: IncomingMessage) => string,
  context: (params: Record<string, unknown> | undefined, request: IncomingMessage, gone: AbortSignal) => Context, answer: AnswerError,
): { dispose(): Promise<void> } {
  wss.on('connection', (ws, request) => {
    const prefix = prefixOf(request);
    const refused = budget.open(prefix);
    if (refused) return ws.close(4429, refused.slice(0, 120));
    ws.once('close', () => budget.close(prefix));
    const send = ws.send.bind(ws);
    ws.send = ((data: unknown, ...rest: never[]) => {
      if (ws.bufferedAmount > MAX_BUFFERED) return ws.terminate();
      return (send as (d: unknown, ...r: never[]) => void)(data, ...rest);
    }) as typeof ws.send;
  });
  /** Each socket's running operations, each with the signal its context carries. */
  type Operation = { readonly gone: AbortController; readonly subscription: boolean };
  const active = new WeakMap<object, Map<string, Operation>>();
  const release = (op: Operation): void => {
    budget.operations--;
    if (op.subscription) budget.subscriptions--;
  };
  const endAll = (ctx: object): void => {
    const ops = active.get(ctx);
    ops?.forEach((op) => (op.gone.abort(), release(op)));
    ops?.clear();
  };
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
    subscribe: sharedSubscribe,
    onSubscribe: async (ctx, id, payload) => {
      const ops = active.get(ctx) ?? new Map<string, Operation>();
      active.set(ctx, ops);
      if (ops.size >= MAX_OPERATIONS) return refuse(`at most ${MAX_OPERATIONS} operations at once on one socket`, 'TOO_MANY_OPERATIONS');
      if (budget.operations >= budget.limits.operations) {
        const why = `this server runs ${budget.limits.operations} socket operations (PARTUNE_MAX_SOCKET_OPERATIONS); try again later`;
        return refuse(why, 'TOO_MANY_OPERATIONS');
      }
      const document = checked(payload.query);
      if (Array.isArray(document)) return document;
      const operation = getOperationAST(document, payload.operationName);
      if (!operation) return refuse('no operation to run: name one (operationName)', 'BAD_USER_INPUT');
      // Each event costs every subscriber a message: subscriptions are capped on their own.
      const subscription = operation.operation === 'subscription';
      if (subscription && budget.subscriptions >= budget.limits.subscriptions) {
        const why = `this server serves ${budget.limits.subscriptions} subscriptions (PARTUNE_MAX_SUBSCRIPTIONS); try again later`;
        return refuse(why, 'TOO_MANY_OPERATIONS');
      }
      // The slot is taken before the wait, so that a burst cannot pass the caps while it waits.
      const op: Operation = { gone: new AbortController(), subscription };
      ops.set(id, op);
      budget.operations++;
      if (subscription) budget.subscriptions++;
      const refused = (errors: readonly GraphQLError[]): readonly GraphQLError[] => {
        if (ops.get(id) === op) {
          ops.delete(id);
          release(op);
        }
        return errors;
      };
      await fairTurn();
      if (op.gone.signal.aborted) return refused(refuse('the socket closed', 'BAD_REQUEST'));
      // Variables that do not fit their declared types are the caller's error, as over HTTP.
      const coerced = getVariableValues(schema, operation.variableDefinitions ?? [], payload.variables ?? {}, { maxErrors: 10 });
      if (coerced.errors) return refused(coerced.errors.map((e) => new GraphQLError(e.message, { extensions: { code: 'BAD_USER_INPUT' } })));
      try {
        checkCost(schema, document, operation, payload.variables ?? undefined, limits);
      } catch (e) {
        return refused([e as GraphQLError]);
      }
      const contextValue = context(ctx.connectionParams, ctx.extra.request, op.gone.signal);
      if (contextValue.refused) return refused(refuse(REFUSED_TOKEN, 'UNAUTHENTICATED'));
      return { schema, document, operationName: payload.operationName, variableValues: payload.variables, contextValue };
    },
    onComplete: (ctx, id) => {
      const ops = active.get(ctx);
      const op = ops?.get(id);
      if (!op) return;
      op.gone.abort();
      ops!.delete(id);
      release(op);
    },
    onDisconnect: (ctx) => endAll(ctx),
    onClose: (ctx) => endAll(ctx),
    onNext: (_ctx, _id, _payload, _args, result) => (result.errors ? { ...result, errors: result.errors.map((e) => answer(e.toJSON(), e)) } : undefined),
  }, wss);
  return { dispose: async () => cleanup.dispose() };
}
