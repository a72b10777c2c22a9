// partune soup: uniform or greedy soups of deltas of one base. Ingredients are scored on a held-out
// split carved from the test set with a seed (disjoint from the training data and from the
// images the final test accuracy is reported on).
import { readFileSync, writeFileSync } from 'node:fs';
import { SoupIngredient, parseDelta, parseVitConfig, serializeDelta, soupWithScores } from '../engine';
import { Options, backend, checkpointFrom, configFrom, need, normalization, num, prepareData, say, str } from './commands';
import { trainOptionsFrom } from './options';

export async function soupCommand(o: Options, extraDeltas: string[]): Promise<Record<string, unknown>> {
  const options = trainOptionsFrom(o);
  const backendName = await backend(o);
  const method = str(o, 'method') ?? 'greedy';
  if (!['uniform', 'greedy'].includes(method)) throw new Error('--method must be uniform or greedy');
  const paths = [need(o, 'deltas'), ...extraDeltas];
  const ingredients: SoupIngredient[] = paths.map((p) => ({ label: p, delta: parseDelta(new Uint8Array(readFileSync(p)), p) }));
  const m = ingredients[0].delta.manifest;
  const config = configFrom(o) ?? parseVitConfig({ ...m.architecture, numClasses: m.base.numClasses });
  const base = await checkpointFrom(o, config);
  const split = await prepareData(o, m.architecture, options);
  const { norm } = normalization(options, m.architecture, split.train);
  const r = await soupWithScores({
    base, ingredients, test: split.test, normalization: norm, method: method as 'uniform' | 'greedy',
    heldOut: str(o, 'val-limit') === undefined ? undefined : num(o, 'val-limit', 0, true),
  });
  say(o, `${ingredients.length} ingredients; held-out ${r.heldOutImages} / test ${r.testImages} images`);
  const rows = r.ingredients;
  const soupRow = { label: `${method} soup`, ...r.result };
  for (const row of [...rows, soupRow]) say(o, `${row.label.padEnd(40)} held-out ${(100 * row.heldOut).toFixed(2)}%  test ${(100 * row.test).toFixed(2)}%`);
  const soup = r.soup;
  if (r.steps) say(o, `greedy: ${r.steps.map((s) => `${s.label} ${s.kept ? 'kept' : 'dropped'}`).join(', ')}`);
  const bytes = serializeDelta(soup);
  writeFileSync(need(o, 'out'), bytes);
  say(o, `soup delta: ${need(o, 'out')} (${(bytes.length / 1024).toFixed(1)} KiB)`);
  return { command: 'soup', backend: backendName, method, ingredients: rows, soup: soupRow, steps: soup.manifest.soup?.steps, deltaBytes: bytes.length, out: need(o, 'out') };
}
