// Model soups of partial deltas (Wortsman et al. 2022, "Model soups"), in weight space over one
// base model. A tensor an ingredient did not tune counts as its pre-trained value (a zero diff),
// so attn-only, ffn-only and angle-selected deltas mix. Pure functions over deltas.
import { Checkpoint } from '../weights/checkpoint';
import { Delta, DeltaManifest, TensorMode } from '../weights/delta';

export interface SoupIngredient {
  readonly label: string;
  readonly delta: Delta;
}

function check(base: Checkpoint, ingredients: readonly SoupIngredient[]): void {
  if (ingredients.length === 0) throw new Error('a soup needs at least one ingredient');
  const classes = ingredients[0].delta.manifest.architecture.numClasses;
  for (const { label, delta } of ingredients) {
    const m = delta.manifest;
    if (m.base.sha256 !== base.sha256) throw new Error(`ingredient '${label}' was fine-tuned from other base weights (${m.base.sha256.slice(0, 12)}…)`);
    if (m.architecture.numClasses !== classes) {
      throw new Error(`ingredient '${label}' has a ${m.architecture.numClasses}-class head, '${ingredients[0].label}' a ${classes}-class one`);
    }
  }
}

/**
 * The uniform soup: each tensor the mean over all ingredients. Diffs are averaged directly (so a
 * soup of one ingredient is that ingredient and a delta with its negation gives the base, bit for
 * bit); a tensor any ingredient stores in full (a new head) is averaged as values.
 */
export function uniformSoup(base: Checkpoint, ingredients: readonly SoupIngredient[]): Delta {
  check(base, ingredients);
  const names = [...new Set(ingredients.flatMap((i) => [...i.delta.tensors.keys()]))].sort();
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const modes: Record<string, TensorMode> = {};
  for (const name of names) {
    const holders = ingredients.filter((i) => i.delta.tensors.has(name));
    const full = holders.some((i) => i.delta.manifest.tensors[name] === 'full');
    const shape = holders[0].delta.tensors.get(name)!.shape;
    const b = base.weights.get(name);
    if (full && holders.length < ingredients.length) {
      throw new Error(`tensor '${name}' is new in some ingredients and absent from others: no base value to stand in`);
    }
    const sum = new Float64Array(shape.reduce((x, y) => x * y, 1));
    for (const { label, delta } of holders) {
      const t = delta.tensors.get(name)!;
      if (t.data.length !== sum.length) throw new Error(`ingredient '${label}': tensor '${name}' has shape [${t.shape}], others [${shape}]`);
      const asValue = full && delta.manifest.tensors[name] === 'diff';
      for (let i = 0; i < sum.length; i++) sum[i] += asValue ? b!.data[i] + t.data[i] : t.data[i];
    }
    // Ingredients that did not tune the tensor contribute a zero diff.
    tensors.set(name, { shape: [...shape], data: Float32Array.from(sum, (v) => v / ingredients.length) });
    modes[name] = full ? 'full' : 'diff';
  }
  const first = ingredients[0].delta.manifest;
  const manifest: DeltaManifest = {
    ...first,
    strategy: { kind: 'custom', name: 'soup', include: names },
    dtype: 'F32',
    tensors: modes,
    tunedParams: [...tensors.values()].reduce((n, t) => n + t.data.length, 0),
    training: undefined,
    soup: { method: 'uniform', ingredients: ingredients.map((i) => ({ label: i.label, strategy: i.delta.manifest.strategy })) },
  };
  return { manifest, tensors };
}

export interface GreedyStep {
  readonly label: string;
  readonly score: number;
  readonly kept: boolean;
}

/**
 * Greedy soup: ingredients sorted by their own held-out score, each added only if the soup's
 * held-out score does not drop. `score` evaluates a delta on the held-out split (never the test
 * split); callers may run it anywhere, e.g. on workers.
 */
export async function greedySoup(
  base: Checkpoint,
  ingredients: readonly SoupIngredient[],
  score: (delta: Delta) => Promise<number>,
): Promise<{ soup: Delta; steps: GreedyStep[] }> {
  check(base, ingredients);
  const alone = await Promise.all(ingredients.map(async (i) => ({ ingredient: i, score: await score(i.delta) })));
  alone.sort((a, b) => b.score - a.score);
  let chosen = [alone[0].ingredient];
  let best = alone[0].score;
  const steps: GreedyStep[] = [{ label: alone[0].ingredient.label, score: best, kept: true }];
  for (const { ingredient } of alone.slice(1)) {
    const candidate = [...chosen, ingredient];
    const s = await score(uniformSoup(base, candidate));
    const kept = s >= best;
    steps.push({ label: ingredient.label, score: s, kept });
    if (kept) {
      chosen = candidate;
      best = s;
    }
  }
  const soup = uniformSoup(base, chosen);
  return { soup: { ...soup, manifest: { ...soup.manifest, soup: { ...soup.manifest.soup!, method: 'greedy', steps } } }, steps };
}
