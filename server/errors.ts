// GraphQL errors with the codes clients switch on, and messages a user can act on. Anything else
// is an internal failure: logged with a reference, answered as INTERNAL_SERVER_ERROR.
import { randomBytes } from 'node:crypto';
import { GraphQLError, GraphQLFormattedError } from 'graphql';
import { isTransient } from '../storage';

const make = (code: string) => (message: string): GraphQLError => new GraphQLError(message, { extensions: { code } });

export const badInput = make('BAD_USER_INPUT');
export const notFound = make('NOT_FOUND');
export const unauthenticated = make('UNAUTHENTICATED');
export const forbidden = make('FORBIDDEN');
export const conflict = make('CONFLICT');
export const rateLimited = make('RATE_LIMITED');

/** Codes that describe the request, not the server: passed on as they are. */
const CLIENT_CODES = new Set([
  'BAD_USER_INPUT', 'NOT_FOUND', 'UNAUTHENTICATED', 'FORBIDDEN', 'CONFLICT', 'RATE_LIMITED', 'TOO_MANY_OPERATIONS', 'QUERY_TOO_COMPLEX', 'GRAPHQL_PARSE_FAILED',
  'GRAPHQL_VALIDATION_FAILED', 'BAD_REQUEST', 'PERSISTED_QUERY_NOT_FOUND', 'PERSISTED_QUERY_NOT_SUPPORTED', 'OPERATION_RESOLUTION_FAILURE',
]);

/** How the server answers an error, as `formatError` with its log and stores bound. */
export type AnswerError = (formatted: GraphQLFormattedError, error: unknown) => GraphQLFormattedError;

/**
 * An error to be answered; an internal one is logged and its details kept out of the answer.
 * `transient` says whether a store's error is passing (the blob store's and the state store's).
 */
export function formatError(
  formatted: GraphQLFormattedError, error: unknown, log: (line: string) => void, transient: (e: unknown) => boolean = isTransient,
): GraphQLFormattedError {
  const code = formatted.extensions?.code;
  if (typeof code === 'string' && CLIENT_CODES.has(code)) return formatted;
  const original = error instanceof GraphQLError && error.originalError ? error.originalError : error;
  const ref = randomBytes(4).toString('hex');
  const path = formatted.path ? ` at ${formatted.path.join('.')}` : '';
  if (transient(original)) {
    // Nothing was changed by the failed request, and it may be sent again (the worker's client does).
    log(`unavailable ${ref}${path}: ${original instanceof Error ? original.message : String(original)}`);
    const message = `a store this server needs is unreachable or full (log ${ref}); try again shortly`;
    return { message, path: formatted.path, extensions: { code: 'UNAVAILABLE' } };
  }
  log(`internal error ${ref}${path}: ${original instanceof Error ? (original.stack ?? original.message) : String(original)}`);
  return { message: `internal error (the server log has it as ${ref})`, path: formatted.path, locations: formatted.locations, extensions: { code: 'INTERNAL_SERVER_ERROR' } };
}
