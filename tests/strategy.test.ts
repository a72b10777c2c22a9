import { MAX_GLOB_LENGTH, PRESET_NAMES, compileGlob, inspect, isTuned, paramSpecs, parseStrategy, parseVitConfig, preset, presetStrategy } from '../engine';
import { TOY } from './helpers';

const vitB100 = preset('vit_base_patch16_224', { numClasses: 100 });

describe('strategies', () => {
  it("reproduce the paper's ViT-B/16 (100 classes) tuned-parameter counts exactly", () => {
    expect(inspect(presetStrategy('full'), vitB100).tunedParams).toBe(85_875_556);
    expect(inspect(presetStrategy('attn-only'), vitB100).tunedParams).toBe(28_443_748);
    expect(inspect(presetStrategy('ffn-only'), vitB100).tunedParams).toBe(56_764_516);
    const fivePlusEight = parseStrategy({ name: 'angle', attnLayers: [0, 2, 5, 7, 11], ffnLayers: [0, 1, 2, 3, 5, 7, 9, 11] });
    expect(inspect(fivePlusEight, vitB100).tunedParams).toBe(49_688_164);
  });

  const depth = TOY.depth; // 2: first half = block 0, last half = block 1
  const cases: Record<string, { tuned: string[]; frozen: string[]; start: number }> = {
    full: { tuned: ['patch_embed.proj.weight', 'cls_token', 'pos_embed', 'blocks.0.attn.qkv.weight', 'norm.weight'], frozen: [], start: -1 },
    'linear-probe': { tuned: ['head.weight'], frozen: ['norm.weight', 'blocks.1.mlp.fc2.weight', 'pos_embed'], start: 2 },
    'attn-only': { tuned: ['blocks.0.norm1.weight', 'blocks.1.attn.proj.bias'], frozen: ['blocks.0.norm2.weight', 'blocks.1.mlp.fc1.weight', 'norm.bias'], start: 0 },
    'ffn-only': { tuned: ['blocks.0.norm2.bias', 'blocks.1.mlp.fc1.weight'], frozen: ['blocks.0.attn.qkv.weight', 'cls_token'], start: 0 },
    'first-half': { tuned: ['blocks.0.attn.qkv.bias', 'blocks.0.mlp.fc2.weight'], frozen: ['blocks.1.norm1.weight'], start: 0 },
    'last-half': { tuned: ['blocks.1.attn.qkv.bias', 'blocks.1.mlp.fc2.weight'], frozen: ['blocks.0.norm1.weight', 'patch_embed.proj.bias'], start: 1 },
    'first-half-attn': { tuned: ['blocks.0.attn.qkv.weight'], frozen: ['blocks.0.mlp.fc1.weight', 'blocks.1.attn.qkv.weight'], start: 0 },
    'first-half-ffn': { tuned: ['blocks.0.mlp.fc1.weight'], frozen: ['blocks.0.attn.qkv.weight', 'blocks.1.mlp.fc1.weight'], start: 0 },
    'last-half-attn': { tuned: ['blocks.1.norm1.bias'], frozen: ['blocks.1.norm2.bias', 'blocks.0.norm1.bias'], start: 1 },
    'last-half-ffn': { tuned: ['blocks.1.mlp.fc2.bias'], frozen: ['blocks.1.attn.proj.weight', 'blocks.0.mlp.fc2.bias'], start: 1 },
  };

  it.each(PRESET_NAMES.map((n) => [n]))('%s tunes what it says, the head always', (name) => {
    const s = presetStrategy(name);
    const c = cases[name];
    for (const t of [...c.tuned, 'head.weight', 'head.bias']) expect([t, isTuned(s, t, depth)]).toEqual([t, true]);
    for (const f of c.frozen) expect([f, isTuned(s, f, depth)]).toEqual([f, false]);
    const ins = inspect(s, TOY);
    expect(ins.gradientStart).toBe(c.start);
    expect(new Set([...ins.tuned, ...ins.frozen])).toEqual(new Set(paramSpecs(TOY).map((p) => p.name)));
  });

  it('splits an odd depth with the smaller half first', () => {
    const c = parseVitConfig({ ...TOY, depth: 5 });
    expect(inspect(presetStrategy('first-half'), c).attnLayers).toEqual([0, 1]);
    expect(inspect(presetStrategy('last-half'), c).ffnLayers).toEqual([2, 3, 4]);
  });

  it('custom strategies: layer lists, blocks, include and exclude globs', () => {
    const s = parseStrategy({ name: 'mine', attnLayers: [1], blocks: [0], include: ['pos_embed'], exclude: ['blocks.*.*.*.bias', 'blocks.0.norm?.weight'] });
    const ins = inspect(s, TOY);
    expect(ins.tuned).toEqual(expect.arrayContaining(['pos_embed', 'blocks.0.attn.qkv.weight', 'blocks.0.mlp.fc1.weight', 'blocks.1.attn.proj.weight']));
    expect(ins.tuned).not.toEqual(expect.arrayContaining(['blocks.1.attn.qkv.bias']));
    expect(ins.tuned).not.toContain('blocks.0.norm1.weight');
    expect(ins.tuned).toContain('blocks.0.norm1.bias'); // a norm bias is not a `*.*.*.bias`
    expect(ins.tuned).not.toContain('blocks.1.mlp.fc1.weight');
    expect(ins.gradientStart).toBe(-1); // pos_embed tuned: the gradient reaches the embeddings
    expect(JSON.parse(JSON.stringify(s))).toEqual(s); // plain data
  });

  it('refuses what cannot be meant', () => {
    expect(() => parseStrategy('attention-only')).toThrow(/unknown strategy 'attention-only'/);
    expect(() => inspect(parseStrategy({ attnLayers: [7] }), TOY)).toThrow(/block 7 does not exist \(depth 2\)/);
    expect(() => inspect(parseStrategy({ include: ['blocks.*.attn.qkv.scale'] }), TOY)).toThrow(/matches no parameter/);
    expect(() => parseStrategy({ attnLayers: [0], layers: [1] })).toThrow(/unknown field 'layers'/);
  });

  it('globs: * stays within a segment, ** crosses segments', () => {
    expect(compileGlob('blocks.*.attn.*').test('blocks.3.attn.qkv')).toBe(true);
    expect(compileGlob('blocks.*.attn.*').test('blocks.3.attn.qkv.weight')).toBe(false);
    expect(compileGlob('blocks.**').test('blocks.3.attn.qkv.weight')).toBe(true);
    expect(compileGlob('blocks.?.mlp.fc?.*').test('blocks.7.mlp.fc2.bias')).toBe(true);
    expect(compileGlob('blocks.?.mlp.*').test('blocks.10.mlp.fc2')).toBe(false);
  });

  it('globs match as the regular expression they mean, on random patterns and names', () => {
    // The reference: the glob read as a (backtracking) regular expression, fine for short inputs.
    const reference = (glob: string): RegExp =>
      new RegExp(`^${glob.replace(/\*\*|\*|\?|[.]/g, (t) => ({ '**': '.*', '*': '[^.]*', '?': '[^.]', '.': '\\.' })[t]!)}$`);
    let seed = 7;
    const next = (k: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) >>> 8) % k;
    const pick = (alphabet: string, n: number): string => Array.from({ length: n }, () => alphabet[next(alphabet.length)]).join('');
    // Half the names are the glob filled in (so that many match), the other half random.
    const fill = (glob: string): string => glob.replace(/\*\*|\*|\?/g, (t) => (t === '**' ? pick('ab.', next(4)) : t === '*' ? pick('ab', next(3)) : pick('ab', 1)));
    let matched = 0;
    for (let i = 0; i < 3000; i++) {
      const glob = pick('ab.*?*', 1 + (i % 9));
      const name = i % 2 ? fill(glob) : pick('ab.', i % 11);
      const expected = reference(glob).test(name);
      expect([glob, name, compileGlob(glob).test(name)]).toEqual([glob, name, expected]);
      if (expected) matched++;
    }
    expect(matched).toBeGreaterThan(1000);
  });

  it('a hostile glob costs linear time: stars without end and a name that almost matches', () => {
    const names = paramSpecs(vitB100).map((p) => p.name);
    const t0 = performance.now();
    for (const glob of ['**'.repeat(40) + 'Z', '*.'.repeat(100) + 'Z', '*?'.repeat(120) + 'Z']) {
      const g = compileGlob(glob);
      expect(names.filter((n) => g.test(n))).toEqual([]);
    }
    expect(performance.now() - t0).toBeLessThan(200);
    expect(() => compileGlob('*'.repeat(MAX_GLOB_LENGTH + 1))).toThrow(/at most 256 characters/);
    expect(() => parseStrategy({ include: ['a'.repeat(MAX_GLOB_LENGTH + 1)] })).toThrow(/at most 256 characters/);
    expect(() => parseStrategy({ blocks: Array.from({ length: 300 }, (_, i) => i) })).toThrow(/at most 256 block indices/);
  });

  it('predicts delta sizes from tuned counts', () => {
    const ins = inspect(presetStrategy('attn-only'), vitB100);
    expect(ins.deltaBytes.f32 - ins.deltaBytes.f16).toBe(2 * ins.tunedParams);
  });
});
