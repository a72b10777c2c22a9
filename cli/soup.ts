// partune soup: uniform or greedy soups of deltas of one base. Ingredients are scored on a held-out
// split carved from the test set with a seed (disjoint from the training data and from the
// images the final test accuracy is reported on).
import { readFileSync, writeFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import {
  Checkpoint, Dataset, Delta, Normalization, SoupIngredient, applyDelta, evaluate, greedySoup, parseDelta, parseVitConfig,
  permutation, serializeDelta, subset, toDevice, uniformSoup,
} from '../engine';
import { Options, backend, need, normalization, num, prepareData, say, str } from './commands';
import { openCheckpoint, readConfig } from './checkpoints';

async function accuracy(base: Checkpoint, delta: Delta, ds: Dataset, norm: Normalization): Promise<number> {
  const params = toDevice(applyDelta(base, delta));
  try {
    return (await evaluate(params, delta.manifest.architecture, ds, norm, 100)).accuracy;
  } finally {
    tf.dispose([...params.values()]);
  }
}

export async function soupCommand(o: Options, extraDeltas: string[]): Promise<Record<string, unknown>> {
  const backendName = await backend(o);
  const method = str(o, 'method') ?? 'greedy';
  if (!['uniform', 'greedy'].includes(method)) throw new Error('--method must be uniform or greedy');
  const paths = [need(o, 'deltas'), ...extraDeltas];
  const ingredients: SoupIngredient[] = paths.map((p) => ({ label: p, delta: parseDelta(new Uint8Array(readFileSync(p)), p) }));
  const m = ingredients[0].delta.manifest;
  const config = readConfig({ config: str(o, 'config'), arch: str(o, 'arch') }) ?? parseVitConfig({ ...m.architecture, numClasses: m.base.numClasses });
  const base = await openCheckpoint(need(o, 'checkpoint'), { config });
  const split = prepareData(o, m.architecture);
  const valCount = num(o, 'val-limit', Math.floor(split.test.count / 2), true);
  if (valCount <= 0 || valCount >= split.test.count) throw new Error(`--val-limit must be between 1 and ${split.test.count - 1}`);
  const order = permutation(split.test.count, 4242);
  const heldOut = subset(split.test, order.subarray(0, valCount), `${split.test.name}:held-out`);
  const test = subset(split.test, order.subarray(valCount), `${split.test.name}:rest`);
  const { norm } = normalization(o, m.architecture, split.train);
  say(o, `${ingredients.length} ingredients; held-out ${heldOut.count} / test ${test.count} images`);
  const rows: { label: string; heldOut: number; test: number }[] = [];
  for (const i of ingredients) rows.push({ label: i.label, heldOut: await accuracy(base, i.delta, heldOut, norm), test: await accuracy(base, i.delta, test, norm) });
  // Ingredients were just scored; only candidate soups need evaluating.
  const scored = new Map(ingredients.map((i, k) => [i.delta, rows[k].heldOut]));
  const score = async (d: Delta): Promise<number> => scored.get(d) ?? accuracy(base, d, heldOut, norm);
  const soup = method === 'uniform' ? uniformSoup(base, ingredients) : (await greedySoup(base, ingredients, score)).soup;
  const soupRow = { label: `${method} soup`, heldOut: await accuracy(base, soup, heldOut, norm), test: await accuracy(base, soup, test, norm) };
  for (const r of [...rows, soupRow]) say(o, `${r.label.padEnd(40)} held-out ${(100 * r.heldOut).toFixed(2)}%  test ${(100 * r.test).toFixed(2)}%`);
  if (soup.manifest.soup?.steps) say(o, `greedy: ${soup.manifest.soup.steps.map((s) => `${s.label} ${s.kept ? 'kept' : 'dropped'}`).join(', ')}`);
  const bytes = serializeDelta(soup);
  writeFileSync(need(o, 'out'), bytes);
  say(o, `soup delta: ${need(o, 'out')} (${(bytes.length / 1024).toFixed(1)} KiB)`);
  return { command: 'soup', backend: backendName, method, ingredients: rows, soup: soupRow, steps: soup.manifest.soup?.steps, deltaBytes: bytes.length, out: need(o, 'out') };
}
