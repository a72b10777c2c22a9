// The committed SDL is what the code builds (API changes show up in diffs), every client document
// is valid against it and typed from it, and the API's run options are the engine's.
import { readFileSync } from 'node:fs';
import { GraphQLInputObjectType } from 'graphql';
import { TRAIN_OPTION_NAMES } from '../engine';
import { printPartuneSchema, partuneSchema } from '../server/schema';
import { codegenPaths, generateOperations } from '../schema/codegen';

const paths = codegenPaths();
const sdl = readFileSync(paths.sdl, 'utf8');

it('schema/schema.graphql is current (regenerate with npm run schema)', () => {
  const built = printPartuneSchema();
  expect(built).toContain('type Mutation');
  expect(built).toContain('runEvents(runId: ID): RunEvent!');
  expect(sdl).toBe(built);
});

it('protocol/operations.ts is what the schema and the client documents give (npm run schema)', () => {
  expect(readFileSync(paths.out, 'utf8')).toBe(generateOperations(sdl, readFileSync(paths.documents, 'utf8')));
});

it('a document the schema no longer serves fails generation with the field named', () => {
  const documents = readFileSync(paths.documents, 'utf8');
  const renamed = sdl.replace('uploadUrl: String!', 'uploadTarget: String!');
  expect(renamed).not.toBe(sdl);
  expect(() => generateOperations(renamed, documents)).toThrow(/Cannot query field "uploadUrl" on type "ShardAssignment"/);
  expect(() => generateOperations(sdl, 'query { runs { items { id } } }')).toThrow(/only named operations/);
});

it('generated documents carry result, variable and input types', () => {
  const generated = generateOperations(sdl, readFileSync(paths.documents, 'utf8'));
  expect(generated).toContain('export interface ClaimShardVariables { kernelClass: string; memoryBudget?: number | null; wait?: number | null; backend?: BackendChoiceInput | null; }');
  expect(generated).toContain('  timings: Array<BackendTimingInput>;'); // an input object inside an input object
  expect(generated).toMatch(/export interface StartRunInput \{\n {2}dataset: string;\n {2}hyperParameters\?: HyperParametersInput \| null;/);
  expect(generated).toContain("export type Normalize = 'AUTO' | 'DATASET' | 'MODEL';");
});

it("the API's hyper-parameters are the engine's training options and the round, verification and admission options, by the same names", () => {
  const input = partuneSchema().getType('HyperParametersInput') as GraphQLInputObjectType;
  const fields = Object.values(input.getFields()).filter((f) => !f.deprecationReason).map((f) => f.name).sort();
  expect(fields).toEqual([...TRAIN_OPTION_NAMES, 'stepsPerRound', 'shardsPerRound', 'autoShards', 'aggregation', 'verification', 'quorum', 'spotCheckRate', 'admitVolunteers'].sort());
});
