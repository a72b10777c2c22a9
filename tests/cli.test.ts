// The built `partune` CLI as a user runs it: real processes, real files.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseSafetensors, serializeSafetensors } from '../engine';

/** The same tensors with no metadata: a checkpoint that does not say what architecture it is. */
const exportWithoutArchitecture = (bytes: Uint8Array): Uint8Array =>
  serializeSafetensors(new Map([...parseSafetensors(new Uint8Array(bytes)).tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }])));

const run = promisify(execFile);
const CLI = join(__dirname, '..', 'dist', 'cli', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'partune-cli-'));
const at = (f: string): string => join(dir, f);

async function partune(...args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await run('node', [CLI, ...args, '--json', '--quiet'], { maxBuffer: 1 << 24 });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

/** stderr of a run that must exit with `code` (1: it failed, 2: a usage error). */
async function failing(code: 1 | 2, ...args: string[]): Promise<string> {
  try {
    await run('node', [CLI, ...args]);
  } catch (e) {
    const err = e as { code: number; stderr: string };
    expect({ args, code: err.code }).toEqual({ args, code });
    return err.stderr;
  }
  throw new Error(`partune ${args.join(' ')} succeeded`);
}
const failure = (...args: string[]): Promise<string> => failing(1, ...args);

describe('partune CLI', () => {
  it('lists strategies with the paper counts', async () => {
    const r = (await partune('strategies', '--arch', 'vit_base_patch16_224', '--classes', '100')) as { strategies: { strategy: string; tunedParams: number }[] };
    const count = (s: string): number => r.strategies.find((x) => x.strategy === s)!.tunedParams;
    expect([count('full'), count('attn-only'), count('ffn-only')]).toEqual([85_875_556, 28_443_748, 56_764_516]);
  });

  it('pre-trains, fine-tunes partially, and the applied delta reproduces the reported accuracy', async () => {
    const common = ['--data', 'mnist', '--train-limit', '256', '--test-limit', '128', '--batch-size', '32'];
    const pre = await partune('finetune', '--checkpoint', 'random:vit_micro_patch4_28', '--strategy', 'full', ...common, '--lr', '2e-3', '--out', at('pre.delta'), '--merged-out', at('pre.safetensors'));
    expect(pre.tunedParams).toBe(pre.totalParams);
    // The merged checkpoint carries its architecture: no --config needed from here on.
    const ft = await partune('finetune', '--checkpoint', at('pre.safetensors'), '--strategy', 'attn-only', ...common, '--seed', '3', '--out', at('attn.delta'));
    expect(ft.tunedParams as number).toBeLessThan(0.5 * (ft.totalParams as number));
    const info = (await partune('delta', 'info', at('attn.delta'))) as { manifest: { tunedParams: number; tensors: Record<string, string> } };
    expect(info.manifest.tunedParams).toBe(ft.tunedParams);
    expect(Object.keys(info.manifest.tensors).every((k) => /^blocks\.\d+\.(norm1|attn)\.|^head\./.test(k))).toBe(true);
    await partune('delta', 'apply', '--checkpoint', at('pre.safetensors'), '--delta', at('attn.delta'), '--out', at('merged.safetensors'));
    // The same seeded test images, the normalisation trained with carried in the merged file: the same number.
    const ev = await partune('eval', '--checkpoint', at('merged.safetensors'), '--data', 'mnist', '--test-limit', '128', '--seed', '3');
    expect(ev.accuracy).toBe(ft.accuracy);
    expect(ev.loss).toBe(ft.loss);
    expect(ev.images).toBe(128);
  }, 300_000);

  it('probes fine-tuned angles into a strategy and soups deltas', async () => {
    const common = ['--data', 'mnist', '--train-limit', '128', '--test-limit', '64', '--batch-size', '32'];
    const probe = (await partune('angles', '--checkpoint', at('pre.safetensors'), ...common, '--probe-steps', '3', '--compare-probe-epochs', '1', '--top-k', '2', '--out', at('angle.json'))) as {
      angles: { kind: string; degrees: number }[]; strategy: { attnLayers: number[]; ffnLayers: number[] }; probe: { steps: number };
      agreement: { attn: number; ffn: number };
    };
    for (const rho of [probe.agreement.attn, probe.agreement.ffn]) expect(Math.abs(rho)).toBeLessThanOrEqual(1);
    expect(probe.probe.steps).toBe(3);
    expect(probe.angles).toHaveLength(8); // 4 blocks x {attention, FFN}
    expect(probe.angles.every((a) => a.degrees > 0)).toBe(true);
    expect([probe.strategy.attnLayers.length, probe.strategy.ffnLayers.length]).toEqual([2, 2]);
    const angled = await partune('finetune', '--checkpoint', at('pre.safetensors'), '--strategy', `@${at('angle.json')}`, ...common, '--out', at('angle.delta'));
    expect(angled.strategy).toBe('angle-largest-top2');
    // A soup of one ingredient scores exactly what that ingredient scores.
    const one = (await partune('soup', '--checkpoint', at('pre.safetensors'), '--data', 'mnist', '--test-limit', '64', '--method', 'uniform', '--out', at('one.soup'), '--deltas', at('attn.delta'))) as {
      ingredients: { test: number; heldOut: number }[]; soup: { test: number; heldOut: number };
    };
    expect(one.soup).toMatchObject({ test: one.ingredients[0].test, heldOut: one.ingredients[0].heldOut });
    const greedy = (await partune('soup', '--checkpoint', at('pre.safetensors'), '--data', 'mnist', '--test-limit', '64', '--method', 'greedy', '--out', at('greedy.soup'), '--deltas', at('attn.delta'), at('angle.delta'))) as {
      ingredients: { heldOut: number }[]; soup: { heldOut: number }; steps: { kept: boolean }[];
    };
    expect(greedy.steps).toHaveLength(2);
    expect(greedy.soup.heldOut).toBeGreaterThanOrEqual(Math.max(...greedy.ingredients.map((i) => i.heldOut)));
  }, 300_000);

  it('refuses usage errors with status 2 before any work: unknown commands and flags, missing flags', async () => {
    expect(await failing(2)).toMatch(/^partune: usage:/);
    expect(await failing(2, 'frobnicate')).toMatch(/unknown command 'frobnicate'/);
    expect(await failing(2, 'eval', '--checkpoint', 'random:vit_micro_patch4_28', '--data', 'mnist', '--limit', '5')).toMatch(/Unknown option '--limit'[\s\S]*--test-limit N/);
    expect(await failing(2, 'delta', 'apply', '--checkpoint', 'random:vit_micro_patch4_28', '--epochs', '2')).toMatch(/Unknown option '--epochs'/);
    const missing = await failing(2, 'finetune', '--checkpoint', 'random:vit_micro_patch4_28', '--data', 'mnist');
    expect(missing).toMatch(/--strategy, --out are required/);
    expect(missing).not.toMatch(/backend:/); // nothing was started
    expect(await failing(2, 'delta', 'info')).toMatch(/expected DELTA/);
    const { stdout } = await run('node', [CLI, 'eval', '--help']);
    expect(stdout).toMatch(/^usage:\n  partune eval --checkpoint F .*--test-limit N/);
    expect((await run('node', [CLI, '--help'])).stdout).toMatch(/partune delta merge --run RUN_ID/);
    expect((await run('node', [CLI, 'delta', '--help'])).stdout).toMatch(/^usage:\n  partune delta apply [\s\S]*partune delta merge/);
    expect(await failing(2, 'delta')).toMatch(/'delta' needs one of: apply, info, download, merge/);
    expect((await run('node', [CLI, '--version'])).stdout).toMatch(/^partune \d+\.\d+\.\d+\n$/);
  });

  it('fails clearly on bad input', async () => {
    const truncated = at('broken.safetensors');
    writeFileSync(truncated, readFileSync(at('pre.safetensors')).subarray(0, 20000));
    expect(await failure('eval', '--checkpoint', truncated, '--data', 'mnist')).toMatch(/broken.safetensors: truncated: tensor '/);
    expect(await failure('delta', 'apply', '--checkpoint', 'random:vit_micro_patch4_28', '--delta', at('attn.delta'), '--out', at('x'))).toMatch(/delta was made from base weights/);
    expect(await failing(2, 'finetune', '--checkpoint', at('pre.safetensors'), '--data', 'mnist', '--strategy', 'attn-first', '--out', at('y')))
      .toMatch(/--strategy: unknown strategy 'attn-first'/);
    expect(await failure('finetune', '--checkpoint', 'random:vit_tiny_patch4_32', '--data', 'mnist', '--strategy', 'full', '--out', at('z')))
      .toMatch(/1-channel images, the model takes 3: pass --adapt/);
    expect(await failing(2, 'eval', '--checkpoint', at('pre.safetensors'), '--data', 'mnist', '--backend', 'tpu')).toMatch(/--backend: unknown backend 'tpu'/);
    // The engine names an option by its meaning; the CLI adds its flag.
    // Value errors are usage errors (exit 2) naming the flag; a negative number is a value, not a flag.
    const finetune = ['finetune', '--checkpoint', at('pre.safetensors'), '--data', 'mnist', '--strategy', 'full', '--out', at('w')];
    expect(await failing(2, ...finetune, '--batch-size', '0')).toMatch(/--batch-size: the batch size must be an integer from 1 to 4096 \(got 0\)/);
    expect(await failing(2, ...finetune, '--epochs', 'abc')).toMatch(/--epochs must be a number \(got 'abc'\)/);
    expect(await failing(2, ...finetune, '--lr', '-1')).toMatch(/--lr: the learning rate must be .* \(got -1\)/);
    const angles = ['angles', '--checkpoint', at('pre.safetensors'), '--data', 'mnist'];
    expect(await failing(2, ...angles, '--probe-steps', '0')).toMatch(/--probe-steps must be at least 1/);
    expect(await failing(2, 'finetune', '--checkpoint', 'random:vit_micro_patch4_28', '--data', 'mnist', '--strategy', 'full', '--normalize', 'model',
      '--out', at('w')))
      .toMatch(/--normalize: the model declares no normalisation of its own/);
    // `run` checks its values before it asks a server (none listens on this port): exit 2, the flag named.
    const platformRun = ['run', '--server', 'http://127.0.0.1:9/graphql', '--token', 'x', '--model', 'm', '--dataset', 'd', '--strategy', 'attn-only'];
    expect(await failing(2, ...platformRun, '--lr', '-1')).toMatch(/--lr: the learning rate must be/);
    expect(await failing(2, ...platformRun, '--aggregation', 'mean'))
      .toMatch(/--aggregation: unknown value 'mean'; choose one of fedavg, median, trimmed-mean, centered-clip/);
    // An --out that is not a regular file (a FIFO here; /dev/null alike) is refused before any work: it would be replaced or block.
    const fifo = at('a.fifo');
    execFileSync('mkfifo', [fifo]);
    expect(await failing(2, 'convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', fifo)).toMatch(/--out: .*a\.fifo is not a regular file/);
    expect(await failing(2, 'convert', '--checkpoint', 'random:vit_micro_patch4_28', '--out', '/no/such/dir/x.safetensors'))
      .toMatch(/--out: the folder \/no\/such\/dir does not exist/);
    const bare = at('bare.safetensors');
    writeFileSync(bare, exportWithoutArchitecture(readFileSync(at('pre.safetensors'))));
    expect(await failure('eval', '--checkpoint', bare, '--data', 'mnist')).toMatch(/no architecture in its metadata: .*: pass --config FILE or --arch PRESET/);
  }, 120_000);
});
