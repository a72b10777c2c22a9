// The executable schema: type-graphql builds it from the resolvers; the SDL is committed as
// schema/schema.graphql (npm run schema) and a test keeps the two equal.
import 'reflect-metadata';
import { GraphQLSchema, lexicographicSortSchema, printSchema } from 'graphql';
import { buildSchemaSync } from 'type-graphql';
import { authChecker } from './resolvers/context';
import { DatasetResolver, ModelResolver, StrategyResolver } from './resolvers/catalog.resolver';
import { DeltaResolver, RunResolver } from './resolvers/run.resolver';
import { WorkerResolver } from './resolvers/worker.resolver';
import { AngleResolver } from './resolvers/angles.resolver';
import { pubSub } from './events';

let schema: GraphQLSchema | undefined;

export function partuneSchema(): GraphQLSchema {
  schema ??= buildSchemaSync({
    resolvers: [ModelResolver, DatasetResolver, StrategyResolver, RunResolver, DeltaResolver, WorkerResolver, AngleResolver],
    authChecker, pubSub, validate: false,
  });
  return schema;
}

export const printPartuneSchema = (): string => `${printSchema(lexicographicSortSchema(partuneSchema()))}\n`;
