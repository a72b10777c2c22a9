// Query depth and complexity limits: a client cannot ask for unbounded nesting or fan-out.
import { ASTNode, FragmentDefinitionNode, GraphQLError, GraphQLSchema, Kind, OperationDefinitionNode, SelectionSetNode, getNullableType, isListType } from 'graphql';
import { ApolloServerPlugin } from '@apollo/server';
import { getComplexity, simpleEstimator } from 'graphql-query-complexity';

function depth(set: SelectionSetNode | undefined, fragments: Record<string, FragmentDefinitionNode>, seen: Set<string>): number {
  if (!set) return 0;
  let max = 0;
  for (const s of set.selections) {
    if (s.kind === Kind.FIELD) max = Math.max(max, s.name.value.startsWith('__') ? 0 : 1 + depth(s.selectionSet, fragments, seen));
    else if (s.kind === Kind.INLINE_FRAGMENT) max = Math.max(max, depth(s.selectionSet, fragments, seen));
    else if (!seen.has(s.name.value)) max = Math.max(max, depth(fragments[s.name.value]?.selectionSet, fragments, new Set([...seen, s.name.value])));
  }
  return max;
}

export function limitsPlugin(schema: GraphQLSchema, maxDepth: number, maxComplexity: number): ApolloServerPlugin {
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ request, document, operation }) {
          const fragments = Object.fromEntries(document.definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION).map((d) => [d.name.value, d]));
          const d = depth((operation as OperationDefinitionNode).selectionSet, fragments, new Set());
          if (d > maxDepth) throw limitError(`query depth ${d} exceeds the limit of ${maxDepth}`);
          let complexity: number;
          try {
            complexity = getComplexity({
              schema, query: document as ASTNode as never, operationName: request.operationName ?? undefined, variables: request.variables,
              estimators: [
                // A page of `first` items costs `first` times its selection (its `items` list is that
                // page); any other list is assumed to hold ten.
                ({ args, childComplexity }) => (typeof args.first === 'number' ? 1 + args.first * childComplexity : undefined),
                ({ field, childComplexity }) => (field.name !== 'items' && isListType(getNullableType(field.type)) ? 1 + 10 * childComplexity : undefined),
                simpleEstimator({ defaultComplexity: 1 }),
              ],
            });
          } catch (e) {
            // It coerces the variables first: a bad variable is the client's error.
            throw new GraphQLError((e as Error).message, { extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } } });
          }
          if (complexity > maxComplexity) throw limitError(`query complexity ${complexity} exceeds the limit of ${maxComplexity}: ask for fewer items (first) or fields`);
        },
      };
    },
  };
}

const limitError = (message: string): GraphQLError => new GraphQLError(message, { extensions: { code: 'QUERY_TOO_COMPLEX', http: { status: 400 } } });
