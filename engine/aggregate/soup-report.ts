// A soup with its scores, as the CLI and the server make it: held-out (greedy's selection) and
// test are the two halves of a test split under a fixed permutation; every ingredient and the
// soup are scored on both. The test half never steers the soup.
import { Checkpoint } from '../weights/checkpoint';
import { Delta } from '../weights/delta';
import { Dataset, permutation, subset } from '../data/dataset';
import { Normalization } from '../data/batches';
import { scoreDelta } from '../train/finish';
import { GreedyStep, SoupIngredient, greedySoup, uniformSoup } from './soup';

export interface Scores { readonly label: string; readonly heldOut: number; readonly test: number }

export interface SoupReport {
  readonly soup: Delta;
  readonly heldOutImages: number;
  readonly testImages: number;
  readonly ingredients: Scores[];
  readonly result: { readonly heldOut: number; readonly test: number };
  readonly steps?: GreedyStep[];
}

export async function soupWithScores(args: {
  base: Checkpoint; ingredients: readonly SoupIngredient[]; test: Dataset; normalization: Normalization; method: 'uniform' | 'greedy';
  /** Held-out images taken from `test` (default: half). */
  heldOut?: number;
  progress?: (message: string) => void;
}): Promise<SoupReport> {
  const { base, ingredients, normalization } = args;
  const half = args.heldOut ?? Math.floor(args.test.count / 2);
  if (!Number.isInteger(half) || half <= 0 || half >= args.test.count) throw new Error(`held-out must be between 1 and ${args.test.count - 1} images`);
  const order = permutation(args.test.count, 4242);
  const heldOut = subset(args.test, order.subarray(0, half), `${args.test.name}:held-out`);
  const test = subset(args.test, order.subarray(half), `${args.test.name}:rest`);
  const accuracy = async (d: Delta, ds: Dataset): Promise<number> => (await scoreDelta(base, d, ds, normalization, 100)).accuracy;
  const rows: Scores[] = [];
  for (const i of ingredients) {
    rows.push({ label: i.label, heldOut: await accuracy(i.delta, heldOut), test: await accuracy(i.delta, test) });
    args.progress?.(`ingredient ${i.label}: held-out ${(100 * rows[rows.length - 1].heldOut).toFixed(2)}%`);
  }
  // Ingredients were just scored; only candidate soups need evaluating.
  const scored = new Map(ingredients.map((i, k) => [i.delta, rows[k].heldOut]));
  const score = async (d: Delta): Promise<number> => {
    const known = scored.get(d);
    if (known !== undefined) return known;
    const s = await accuracy(d, heldOut);
    args.progress?.(`candidate soup of ${d.manifest.soup?.ingredients.length} ingredients: held-out ${(100 * s).toFixed(2)}%`);
    return s;
  };
  const made = args.method === 'uniform' ? { soup: uniformSoup(base, ingredients), steps: undefined } : await greedySoup(base, ingredients, score);
  return {
    soup: made.soup, heldOutImages: heldOut.count, testImages: test.count, ingredients: rows, steps: made.steps,
    result: { heldOut: await accuracy(made.soup, heldOut), test: await accuracy(made.soup, test) },
  };
}
