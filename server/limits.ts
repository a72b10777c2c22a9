// What one GraphQL document may cost, checked the same way over HTTP and graphql-ws before it
// runs: its size (tokens, fragments), depth and complexity. The walk visits each fragment once
// (its cost is memoised), so a chain of fragments that each spread the next twice costs time
// linear in the document, not exponential.
import {
  DocumentNode, FieldNode, FragmentDefinitionNode, GraphQLCompositeType, GraphQLError, GraphQLSchema, Kind, OperationDefinitionNode, SelectionSetNode,
  getNamedType, getNullableType, isCompositeType, isListType, isInterfaceType, isObjectType,
} from 'graphql';
import { getArgumentValues } from 'graphql/execution/values';
import { ApolloServerPlugin } from '@apollo/server';

export interface QueryLimits {
  readonly maxDepth: number;
  readonly maxComplexity: number;
  /** Lexical tokens in a document: bounds parsing and validation (graphql-js `maxTokens`). */
  readonly maxTokens: number;
  readonly maxFragments: number;
}

export const limitError = (message: string): GraphQLError => new GraphQLError(message, { extensions: { code: 'QUERY_TOO_COMPLEX', http: { status: 400 } } });

/** The largest page a `first` argument may ask for (the resolvers check the same bound). */
export const MAX_PAGE = 100;

/** Meta fields answer from the schema: `__typename` is free, a whole `__schema` or `__type` is not. */
const META_COST = 100;

interface Cost { readonly depth: number; readonly complexity: number }

class CostWalk {
  private readonly fragments = new Map<string, FragmentDefinitionNode>();
  private readonly memo = new Map<string, Cost>();
  private readonly inProgress = new Set<string>();

  constructor(private readonly schema: GraphQLSchema, document: DocumentNode, private readonly variables: Record<string, unknown>) {
    for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) this.fragments.set(d.name.value, d);
  }

  selectionSet(set: SelectionSetNode | undefined, parent: GraphQLCompositeType): Cost {
    if (!set) return { depth: 0, complexity: 0 };
    let depth = 0;
    let complexity = 0;
    for (const s of set.selections) {
      let c: Cost;
      if (s.kind === Kind.FIELD) c = this.field(s, parent);
      else if (s.kind === Kind.INLINE_FRAGMENT) c = this.selectionSet(s.selectionSet, this.condition(s.typeCondition?.name.value) ?? parent);
      else c = this.fragment(s.name.value);
      depth = Math.max(depth, c.depth);
      complexity += c.complexity;
    }
    return { depth, complexity };
  }

  private condition(name: string | undefined): GraphQLCompositeType | undefined {
    const t = name ? this.schema.getType(name) : undefined;
    return t && isCompositeType(t) ? t : undefined;
  }

  private fragment(name: string): Cost {
    const known = this.memo.get(name);
    if (known) return known;
    const f = this.fragments.get(name);
    const type = this.condition(f?.typeCondition.name.value);
    if (!f || !type || this.inProgress.has(name)) throw limitError(`fragment ${name} is unknown or spreads itself`);
    this.inProgress.add(name);
    const cost = this.selectionSet(f.selectionSet, type);
    this.inProgress.delete(name);
    this.memo.set(name, cost);
    return cost;
  }

  private field(node: FieldNode, parent: GraphQLCompositeType): Cost {
    const name = node.name.value;
    if (name === '__typename') return { depth: 0, complexity: 0 };
    if (name.startsWith('__')) return { depth: 0, complexity: META_COST };
    const def = isObjectType(parent) || isInterfaceType(parent) ? parent.getFields()[name] : undefined;
    if (!def) throw limitError(`unknown field ${parent.name}.${name}`);
    const named = getNamedType(def.type);
    const child = isCompositeType(named) ? this.selectionSet(node.selectionSet, named) : { depth: 0, complexity: 0 };
    let first: unknown;
    try {
      first = def.args.some((a) => a.name === 'first') ? getArgumentValues(def, node, this.variables).first : undefined;
    } catch (e) {
      throw new GraphQLError((e as Error).message, { extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } } });
    }
    // A page of `first` items costs `first` times its selection (its `items` list is that page);
    // any other list is assumed to hold ten, a list of scalars too (its items are each an answer to write).
    // Out of range, `first` is refused here, before it can lower a cost.
    if (typeof first === 'number' && !(first >= 1 && first <= MAX_PAGE)) {
      throw new GraphQLError(`first must be between 1 and ${MAX_PAGE}`, { extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } } });
    }
    const fanOut = typeof first === 'number' ? first : name !== 'items' && isListType(getNullableType(def.type)) ? 10 : 1;
    const each = isCompositeType(named) ? child.complexity : fanOut > 1 ? 1 : 0;
    return { depth: 1 + child.depth, complexity: 1 + fanOut * each };
  }
}

/** Throws QUERY_TOO_COMPLEX (or BAD_USER_INPUT for a bad variable) when the operation costs too much. */
export function checkCost(schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode, variables: Record<string, unknown> | undefined, limits: QueryLimits): void {
  const fragments = document.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION).length;
  if (fragments > limits.maxFragments) throw limitError(`${fragments} fragments exceed the limit of ${limits.maxFragments}`);
  const root = schema.getRootType(operation.operation);
  if (!root) throw limitError(`this schema has no ${operation.operation} type`);
  const cost = new CostWalk(schema, document, variables ?? {}).selectionSet(operation.selectionSet, root);
  if (cost.depth > limits.maxDepth) throw limitError(`query depth ${cost.depth} exceeds the limit of ${limits.maxDepth}`);
  if (cost.complexity > limits.maxComplexity) {
    throw limitError(`query complexity ${cost.complexity} exceeds the limit of ${limits.maxComplexity}: ask for fewer items (first) or fields`);
  }
}

export function limitsPlugin(schema: GraphQLSchema, limits: QueryLimits): ApolloServerPlugin {
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ request, document, operation }) {
          if (!operation) {
            throw new GraphQLError('no operation to run: name one (operationName)', { extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } } });
          }
          if (operation.operation === 'subscription') {
            throw new GraphQLError('a subscription runs over graphql-ws (a WebSocket to the same /graphql), not over HTTP', {
              extensions: { code: 'BAD_REQUEST', http: { status: 400 } },
            });
          }
          checkCost(schema, document, operation, request.variables, limits);
        },
      };
    },
  };
}
