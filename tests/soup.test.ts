// Soup arithmetic: exact identities, partial deltas mixed by name, refusals, the greedy order.
import {
  Checkpoint, Delta, HostWeights, applyDelta, exportCheckpoint, greedySoup, initParams, inspect, loadCheckpoint, makeDelta,
  presetStrategy, toHost, uniformSoup, withNewHead,
} from '../engine';
import { TOY, useBackend } from './helpers';

beforeAll(() => useBackend('wasm'));

let base: Checkpoint;
beforeAll(async () => {
  base = await loadCheckpoint(exportCheckpoint(await toHost(initParams(TOY, 3)), TOY));
});

/** A synthetic fine-tune: every tensor the strategy tunes moves by `scale * sin`, a new 4-class head. */
async function fakeDelta(strategy: 'attn-only' | 'ffn-only' | 'full', scale: number): Promise<Delta> {
  const start = await withNewHead(base, 4, 7);
  const tuned = inspect(presetStrategy(strategy), start.config).tuned;
  const fineTuned: HostWeights = new Map(start.weights);
  for (const k of tuned) {
    const w = start.weights.get(k)!;
    fineTuned.set(k, { shape: w.shape, data: w.data.map((v, i) => v + scale * Math.sin(i + k.length)) });
  }
  return makeDelta({ base: start, fineTuned, tuned, architecture: start.config, strategy: presetStrategy(strategy) });
}

const same = (a: HostWeights, b: HostWeights): boolean =>
  [...a].every(([k, v]) => Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).equals(Buffer.from(b.get(k)!.data.buffer, b.get(k)!.data.byteOffset, b.get(k)!.data.byteLength)));

describe('model soups', () => {
  it('a soup of one ingredient is that ingredient, bit for bit', async () => {
    const d = await fakeDelta('attn-only', 0.01);
    expect(same(applyDelta(base, uniformSoup(base, [{ label: 'a', delta: d }])), applyDelta(base, d))).toBe(true);
  });

  it('a uniform soup of a delta and its negation is the base (head aside)', async () => {
    const d = await fakeDelta('full', 0.02);
    const negated: Delta = { ...d, tensors: new Map([...d.tensors].map(([k, t]) => [k, { shape: t.shape, data: d.manifest.tensors[k] === 'diff' ? t.data.map((v) => -v) : t.data }])) };
    const merged = applyDelta(base, uniformSoup(base, [{ label: '+', delta: d }, { label: '-', delta: negated }]));
    const withoutHead = (w: HostWeights): HostWeights => new Map([...w].filter(([k]) => !k.startsWith('head.')));
    expect(same(withoutHead(merged), withoutHead(base.weights))).toBe(true);
  });

  it('mixes partial deltas by name: an untuned tensor counts as a zero diff; heads are averaged', async () => {
    const attn = await fakeDelta('attn-only', 0.04);
    const ffn = await fakeDelta('ffn-only', 0.02);
    const soup = uniformSoup(base, [{ label: 'attn', delta: attn }, { label: 'ffn', delta: ffn }]);
    const q = 'blocks.1.attn.qkv.weight';
    expect(Array.from(soup.tensors.get(q)!.data)).toEqual(Array.from(attn.tensors.get(q)!.data, (v) => Math.fround(v / 2)));
    const fc = 'blocks.0.mlp.fc1.weight';
    expect(Array.from(soup.tensors.get(fc)!.data)).toEqual(Array.from(ffn.tensors.get(fc)!.data, (v) => Math.fround(v / 2)));
    expect(soup.manifest.tensors['head.weight']).toBe('full');
    const h = soup.tensors.get('head.bias')!.data;
    h.forEach((v, i) => expect(v).toBeCloseTo((attn.tensors.get('head.bias')!.data[i] + ffn.tensors.get('head.bias')!.data[i]) / 2, 6));
    expect(soup.manifest.soup!.ingredients.map((i) => i.label)).toEqual(['attn', 'ffn']);
  });

  it('refuses ingredients of another base or another class count', async () => {
    const d = await fakeDelta('attn-only', 0.01);
    const other = await loadCheckpoint(exportCheckpoint(await toHost(initParams(TOY, 4)), TOY));
    expect(() => uniformSoup(other, [{ label: 'a', delta: d }])).toThrow(/ingredient 'a' was fine-tuned from other base weights/);
    const five = { ...d, manifest: { ...d.manifest, architecture: { ...d.manifest.architecture, numClasses: 5 } } };
    expect(() => uniformSoup(base, [{ label: 'a', delta: d }, { label: 'b', delta: five }])).toThrow(/'b' has a 5-class head, 'a' a 4-class one/);
  });

  it('greedy: best ingredient first, others kept only if the held-out score does not drop', async () => {
    const ingredients = [
      { label: 'weak', delta: await fakeDelta('ffn-only', 0.5) },
      { label: 'best', delta: await fakeDelta('attn-only', 0.01) },
      { label: 'good', delta: await fakeDelta('full', 0.02) },
    ];
    // A stand-in held-out score: minus the mean |diff| of qkv (smaller moves score higher).
    const score = async (d: Delta): Promise<number> => {
      const t = d.tensors.get('blocks.0.attn.qkv.weight');
      return t ? -t.data.reduce((s, v) => s + Math.abs(v), 0) / t.data.length : -1;
    };
    const { steps, soup } = await greedySoup(base, ingredients, score);
    expect(steps.map((s) => [s.label, s.kept])).toEqual([['best', true], ['good', false], ['weak', true]]);
    expect(soup.manifest.soup!.method).toBe('greedy');
    expect(soup.manifest.soup!.ingredients.map((i) => i.label)).toEqual(['best', 'weak']);
  });
});
