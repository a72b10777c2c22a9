// The fine-tuned angle metric: exact on known geometry, grouped by layer kind, selections exact.
import { HostWeights, angleDegrees, initParams, inspect, layerAngles, preset, rankAgreement, selectByAngle, spearman, tensorAngles, toHost } from '../engine';
import { TOY, useBackend } from './helpers';

beforeAll(() => useBackend('wasm'));

const clone = (w: HostWeights): HostWeights => new Map([...w].map(([k, v]) => [k, { shape: v.shape, data: v.data.slice() }]));

describe('fine-tuned angles', () => {
  it('are 0 for identical weights and exact for a known rotation', () => {
    expect(angleDegrees([[1, 2, 3]], [[1, 2, 3]])).toBeCloseTo(0, 5);
    // Rotating (x, y) by 30 degrees in its plane, split across two parts.
    const t = Math.PI / 6;
    expect(angleDegrees([[3], [4]], [[3 * Math.cos(t) - 4 * Math.sin(t)], [3 * Math.sin(t) + 4 * Math.cos(t)]])).toBeCloseTo(30, 9);
    expect(angleDegrees([[1, 0]], [[-1, 0]])).toBeCloseTo(180, 9);
    expect(() => angleDegrees([[0, 0]], [[1, 0]])).toThrow(/zero weight vector/);
  });

  it('measure each layer over its own tensors only, never mixing attention and FFN', async () => {
    const base = await toHost(initParams(TOY, 1));
    const tuned = clone(base);
    // Flip the sign of block 1's fc2 weight only: its FFN layer moves, nothing else does.
    const fc2 = tuned.get('blocks.1.mlp.fc2.weight')!;
    fc2.data.forEach((v, i) => (fc2.data[i] = -v));
    const angles = layerAngles(base, tuned, TOY);
    expect(angles.map((a) => `${a.kind}${a.block}`)).toEqual(['attn0', 'attn1', 'ffn0', 'ffn1']);
    const moved = angles.filter((a) => a.degrees > 1e-3);
    expect(moved.map((a) => `${a.kind}${a.block}`)).toEqual(['ffn1']);
    // Parameter counts of the layers add up to what attn-only / ffn-only tune (minus the head).
    const head = 3 * 12 + 3;
    expect(angles.filter((a) => a.kind === 'attn').reduce((n, a) => n + a.params, 0)).toBe(inspect({ kind: 'preset', name: 'attn-only' }, TOY).tunedParams - head);
    expect(angles.filter((a) => a.kind === 'ffn').reduce((n, a) => n + a.params, 0)).toBe(inspect({ kind: 'preset', name: 'ffn-only' }, TOY).tunedParams - head);
    const perTensor = tensorAngles(base, tuned);
    expect(perTensor.get('blocks.1.mlp.fc2.weight')).toBeCloseTo(180, 6);
    expect(perTensor.get('blocks.1.mlp.fc2.bias')).toBeNaN(); // zero-initialised
    expect(perTensor.get('blocks.0.attn.qkv.weight')).toBeCloseTo(0, 3);
  });

  it('select the top-K per group in either direction, as an exact custom strategy', () => {
    const angles = [
      { kind: 'attn', block: 0, degrees: 5, params: 1 }, { kind: 'attn', block: 1, degrees: 9, params: 1 }, { kind: 'attn', block: 2, degrees: 1, params: 1 },
      { kind: 'ffn', block: 0, degrees: 2, params: 1 }, { kind: 'ffn', block: 1, degrees: 8, params: 1 }, { kind: 'ffn', block: 2, degrees: 3, params: 1 },
    ] as const;
    expect(selectByAngle(angles, { direction: 'largest', topK: { attn: 2, ffn: 1 } })).toEqual({ kind: 'custom', name: 'angle-largest', attnLayers: [0, 1], ffnLayers: [1] });
    expect(selectByAngle(angles, { direction: 'smallest', topK: { attn: 1, ffn: 2 } })).toEqual({ kind: 'custom', name: 'angle-smallest', attnLayers: [2], ffnLayers: [0, 2] });
    expect(() => selectByAngle(angles, { direction: 'largest', topK: { attn: 4, ffn: 0 } })).toThrow(/top-K for attn must be 0..3/);
    // On ViT-B/16 (100 classes) any 5 attention + 8 FFN layers tune the paper's 49,688,164.
    const vitB = preset('vit_base_patch16_224', { numClasses: 100 });
    const fake = [...Array(12).keys()].flatMap((b) => [{ kind: 'attn' as const, block: b, degrees: (b * 7) % 12, params: 0 }, { kind: 'ffn' as const, block: b, degrees: (b * 5) % 12, params: 0 }]);
    expect(inspect(selectByAngle(fake, { direction: 'largest', topK: { attn: 5, ffn: 8 } }), vitB).tunedParams).toBe(49_688_164);
  });

  it('rank agreement: Spearman with tied ranks, per group', () => {
    expect(spearman([1, 2, 3, 4], [10, 20, 30, 40])).toBeCloseTo(1, 12);
    expect(spearman([1, 2, 3, 4], [4, 3, 2, 1])).toBeCloseTo(-1, 12);
    // y's two 7s share rank 3.5: rho = 8 / sqrt(10 * 9.5)
    expect(spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])).toBeCloseTo(8 / Math.sqrt(95), 12);
    const profile = (attn: number[], ffn: number[]) => [
      ...attn.map((degrees, block) => ({ kind: 'attn' as const, block, degrees, params: 0 })),
      ...ffn.map((degrees, block) => ({ kind: 'ffn' as const, block, degrees, params: 0 })),
    ];
    expect(rankAgreement(profile([1, 2, 3], [3, 2, 1]), profile([5, 6, 9], [1, 2, 3]))).toEqual({ attn: 1, ffn: -1 });
  });
});
