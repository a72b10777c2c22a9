// The built `partune` CLI as a user runs it: real processes, real files.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const CLI = join(__dirname, '..', 'dist', 'cli', 'main.js');
const dir = mkdtempSync(join(tmpdir(), 'partune-cli-'));
const at = (f: string): string => join(dir, f);

async function partune(...args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await run('node', [CLI, ...args, '--json', '--quiet'], { maxBuffer: 1 << 24 });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

async function failure(...args: string[]): Promise<string> {
  try {
    await run('node', [CLI, ...args]);
  } catch (e) {
    const err = e as { code: number; stderr: string };
    expect(err.code).toBe(1);
    return err.stderr;
  }
  throw new Error(`partune ${args.join(' ')} succeeded`);
}

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
    const ft = await partune('finetune', '--checkpoint', at('pre.safetensors'), '--strategy', 'attn-only', ...common, '--out', at('attn.delta'));
    expect(ft.tunedParams as number).toBeLessThan(0.5 * (ft.totalParams as number));
    const info = (await partune('delta', 'info', at('attn.delta'))) as { manifest: { tunedParams: number; tensors: Record<string, string> } };
    expect(info.manifest.tunedParams).toBe(ft.tunedParams);
    expect(Object.keys(info.manifest.tensors).every((k) => /^blocks\.\d+\.(norm1|attn)\.|^head\./.test(k))).toBe(true);
    await partune('delta', 'apply', '--checkpoint', at('pre.safetensors'), '--delta', at('attn.delta'), '--out', at('merged.safetensors'));
    const ev = await partune('eval', '--checkpoint', at('merged.safetensors'), '--data', 'mnist', '--test-limit', '128');
    expect(ev.accuracy).toBe(ft.accuracy);
    expect(ev.images).toBe(128);
  }, 300_000);

  it('fails clearly on bad input', async () => {
    const truncated = at('broken.safetensors');
    writeFileSync(truncated, readFileSync(at('pre.safetensors')).subarray(0, 20000));
    expect(await failure('eval', '--checkpoint', truncated, '--data', 'mnist')).toMatch(/broken.safetensors: truncated: tensor '/);
    expect(await failure('delta', 'apply', '--checkpoint', 'random:vit_micro_patch4_28', '--delta', at('attn.delta'), '--out', at('x'))).toMatch(/delta was made from base weights/);
    expect(await failure('finetune', '--checkpoint', at('pre.safetensors'), '--data', 'mnist', '--strategy', 'attn-first', '--out', at('y'))).toMatch(/unknown strategy 'attn-first'/);
    expect(await failure('finetune', '--checkpoint', 'random:vit_tiny_patch4_32', '--data', 'mnist', '--strategy', 'full', '--out', at('z'))).toMatch(/28x28x1 images, the model takes 32x32x3.*--adapt/);
    expect(await failure('eval', '--checkpoint', at('pre.safetensors'), '--data', 'mnist', '--backend', 'tpu')).toMatch(/unknown backend 'tpu'/);
  }, 120_000);
});
