// Deltas: only the tuned tensors; base + delta reproduces the fine-tuned model bit for bit (f32).
import {
  Checkpoint, Dataset, HostWeights, Strategy, TrainableVit, applyDelta, exportCheckpoint, initParams, loadCheckpoint,
  makeDelta, parseDelta, presetStrategy, roundToDelta, serializeDelta, toHost, train, withNewHead,
} from '../engine';
import { TOY, useBackend } from './helpers';

beforeAll(() => useBackend('wasm'));

const data: Dataset = {
  name: 'noise', images: Uint8Array.from({ length: 40 * 192 }, (_, i) => (i * 7919) % 256), labels: Uint8Array.from({ length: 40 }, (_, i) => i % 4),
  count: 40, height: 8, width: 8, channels: 3, classes: 4, flipInvariant: false,
};

async function fineTune(base: Checkpoint, strategy: Strategy): Promise<HostWeights> {
  const m = new TrainableVit(base.weights, base.config, strategy);
  for await (const _ of train(m, { train: data, normalization: { mean: [0.5, 0.5, 0.5], std: [0.3, 0.3, 0.3] } }, { epochs: 2, batchSize: 8, lr: 5e-2 })) void _;
  const w = await m.weights();
  m.dispose();
  return w;
}

const bitsEqual = (a: Float32Array, b: Float32Array): boolean =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('deltas', () => {
  let original: Checkpoint;
  beforeAll(async () => {
    original = await loadCheckpoint(exportCheckpoint(await toHost(initParams(TOY, 8)), TOY));
  });

  it.each([['attn-only'], ['last-half-ffn'], ['full']] as const)('%s with a new 4-class head: base + delta = fine-tuned, bit for bit', async (name) => {
    const base = await withNewHead(original, 4, 1);
    const strategy = presetStrategy(name);
    const { weights } = roundToDelta(base, await fineTune(base, strategy), new TrainableVit(base.weights, base.config, strategy).inspection.tuned);
    const tuned = [...weights.keys()].filter((k) => !bitsEqual(weights.get(k)!.data, base.weights.get(k)!.data) || k.startsWith('head.'));
    const delta = makeDelta({ base, fineTuned: weights, tuned, architecture: base.config, strategy, training: { steps: 10 } });
    const bytes = serializeDelta(delta);
    const parsed = parseDelta(bytes);
    expect(parsed.manifest.base).toEqual({ sha256: original.sha256, numClasses: 3 });
    expect(parsed.manifest.tensors['head.weight']).toBe('full');
    expect(Object.values(parsed.manifest.tensors).filter((m) => m === 'full')).toHaveLength(2);
    expect(parsed.tensors.size).toBe(tuned.length);
    // Apply to the base as loaded from disk, before its head was replaced.
    const merged = applyDelta(original, parsed);
    for (const [k, w] of weights) expect([k, bitsEqual(merged.get(k)!.data, w.data)]).toEqual([k, true]);
  });

  it('keeps the fine-tuned model within rounding of what training produced', async () => {
    const base = await withNewHead(original, 4, 1);
    const trained = await fineTune(base, presetStrategy('attn-only'));
    const tuned = [...trained.keys()].filter((k) => /attn|norm1|head/.test(k));
    for (const dtype of ['F32', 'F16'] as const) {
      const { weights } = roundToDelta(base, trained, tuned, dtype);
      const tol = dtype === 'F32' ? 1e-7 : 1e-3;
      for (const k of tuned) {
        const a = weights.get(k)!.data;
        const b = trained.get(k)!.data;
        expect([k, a.every((v, i) => Math.abs(v - b[i]) <= tol * Math.max(1, Math.abs(b[i])))]).toEqual([k, true]);
      }
      const delta = parseDelta(serializeDelta(makeDelta({ base, fineTuned: weights, tuned, architecture: base.config, strategy: presetStrategy('attn-only'), dtype })));
      const merged = applyDelta(original, delta);
      for (const k of tuned) expect([k, bitsEqual(merged.get(k)!.data, weights.get(k)!.data)]).toEqual([k, true]);
    }
  });

  it('refuses a wrong base and malformed deltas', async () => {
    const base = await withNewHead(original, 4, 1);
    const weights = await fineTune(base, presetStrategy('linear-probe'));
    const delta = makeDelta({ base, fineTuned: weights, tuned: ['head.weight', 'head.bias'], architecture: base.config, strategy: presetStrategy('linear-probe') });
    const other = await loadCheckpoint(exportCheckpoint(await toHost(initParams(TOY, 9)), TOY));
    expect(() => applyDelta(other, delta)).toThrow(/delta was made from base weights .* this checkpoint's weights are/);
    const bytes = serializeDelta(delta);
    expect(() => parseDelta(bytes.subarray(0, bytes.length - 4), 'd.safetensors')).toThrow(/d.safetensors: truncated/);
    expect(() => parseDelta(exportCheckpoint(original.weights, TOY), 'ckpt')).toThrow(/ckpt: not a Partune delta/);
  });

  it('holds only the tuned tensors: an attn-only delta is a fraction of the model', async () => {
    const base = original;
    const strategy = presetStrategy('attn-only');
    const tuned = new TrainableVit(base.weights, base.config, strategy).inspection.tuned;
    const bytes = serializeDelta(makeDelta({ base, fineTuned: base.weights, tuned, architecture: base.config, strategy }));
    expect(parseDelta(bytes).tensors.size).toBe(tuned.length);
    expect(bytes.length).toBeLessThan(exportCheckpoint(base.weights, TOY).length);
    expect(Object.keys(parseDelta(bytes).manifest.tensors).every((k) => /attn|norm1|head/.test(k))).toBe(true);
  });
});
