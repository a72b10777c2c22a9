// GraphQL errors with the codes clients switch on, and messages a user can act on.
import { GraphQLError } from 'graphql';

const make = (code: string) => (message: string): GraphQLError => new GraphQLError(message, { extensions: { code } });

export const badInput = make('BAD_USER_INPUT');
export const notFound = make('NOT_FOUND');
export const unauthenticated = make('UNAUTHENTICATED');
export const forbidden = make('FORBIDDEN');
export const conflict = make('CONFLICT');

/** Engine and parser errors are the user's input being wrong: pass their message on. */
export async function asBadInput<T>(what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof GraphQLError) throw e;
    throw badInput(`${what}: ${(e as Error).message}`);
  }
}
