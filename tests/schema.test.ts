// The committed SDL is what the code builds: API changes show up in diffs (npm run schema).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { printPartuneSchema } from '../server/schema';

it('schema/schema.graphql is current (regenerate with npm run schema)', () => {
  const committed = readFileSync(join(__dirname, '..', 'schema', 'schema.graphql'), 'utf8');
  const built = printPartuneSchema();
  expect(built).toContain('type Mutation');
  expect(built).toContain('runEvents(runId: ID): RunEvent!');
  expect(committed).toBe(built);
});
