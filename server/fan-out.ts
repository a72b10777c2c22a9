// Subscriptions that share their work: graphql's `subscribe` runs the operation once per event per
// subscriber; here each event is executed once per distinct (document, variables, reader or not)
// and the result shared, so 4,000 subscribers of one run cost one execution per kind of subscriber.
import { DocumentNode, ExecutionArgs, ExecutionResult, createSourceEventStream, execute } from 'graphql';
import { canRead } from './resolvers/context';
import type { Context } from './resolvers/context';

type Results = Map<string, Promise<ExecutionResult> | ExecutionResult>;
const byEvent = new WeakMap<object, WeakMap<DocumentNode, Results>>();

function shared(args: ExecutionArgs, event: unknown): Promise<ExecutionResult> | ExecutionResult {
  if (typeof event !== 'object' || event === null) return execute({ ...args, rootValue: event });
  const documents = byEvent.get(event) ?? new WeakMap<DocumentNode, Results>();
  byEvent.set(event, documents);
  const results = documents.get(args.document) ?? new Map();
  documents.set(args.document, results);
  const key = `${canRead(args.contextValue as Context)}|${JSON.stringify(args.variableValues ?? {})}|${args.operationName ?? ''}`;
  let result = results.get(key);
  if (!result) {
    result = execute({ ...args, rootValue: event });
    results.set(key, result);
  }
  return result;
}

/** graphql's `subscribe`, with each event's execution shared among subscribers that would get the same answer. */
export async function sharedSubscribe(args: ExecutionArgs): Promise<AsyncGenerator<ExecutionResult> | ExecutionResult> {
  const source = await createSourceEventStream(args);
  if (!(Symbol.asyncIterator in source)) return source;
  const events = source as AsyncGenerator<unknown>;
  return (async function* mapped(): AsyncGenerator<ExecutionResult> {
    try {
      for await (const event of events) yield await shared(args, event);
    } finally {
      await events.return?.(undefined);
    }
  })();
}
