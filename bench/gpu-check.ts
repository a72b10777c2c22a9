// The GPU check behind bench/gpu/run.sh: adapters, a training step against the cpu backend, and
// on a real GPU training img/s and memory per step, for Node (Dawn, the `webgpu` package, in a
// child process per part so one crash is one part's error) and headless Chromium.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import * as tf from '@tensorflow/tfjs';
import { checkStepAgainstCpu, measureTraining, preset, presetStrategy } from '../engine';
import { selectBackend } from '../node/backend';
import { CHROMIUM, CHROMIUM_FLAGS, chromiumMissing } from '../node/chromium';
import { startServer } from '../node/local-platform';

const TIMED = [['vit_small_patch16_224', 'full'], ['vit_small_patch16_224', 'attn-only'], ['vit_tiny_patch4_32', 'full'], ['vit_tiny_patch4_32', 'attn-only']] as const;
const BATCH = 32;
const SOFTWARE = /swiftshader|llvmpipe|lavapipe|softpipe|software/i;

interface Adapter { vendor: string; architecture: string; description: string; fallback: boolean }
type Timing = { model: string; strategy: string; batch: number; imagesPerSecond: number; peakBytesPerStep: number | null } | { model: string; strategy: string; error: string };
interface Part { adapter?: Adapter; software?: boolean; step?: unknown; timings?: Timing[] | string; error?: string }

const isSoftware = (a: Adapter): boolean => a.fallback || SOFTWARE.test(`${a.vendor} ${a.architecture} ${a.description}`);

/** In a child process: Node's WebGPU through Dawn. */
async function nodeDawn(): Promise<Part> {
  let webgpu: { create(flags: string[]): { requestAdapter(): Promise<{ info: Record<string, unknown>; isFallbackAdapter?: boolean } | null> } };
  try {
    webgpu = require('webgpu');
  } catch {
    return { error: "the optional package 'webgpu' is not installed (npm install webgpu)" };
  }
  const probe = await webgpu.create([]).requestAdapter();
  if (!probe) return { error: 'Dawn found no adapter (no Vulkan driver?)' };
  const info = probe.info as { vendor?: string; architecture?: string; description?: string; isFallbackAdapter?: boolean };
  const adapter = { vendor: info.vendor ?? '', architecture: info.architecture ?? '', description: info.description ?? '', fallback: Boolean(info.isFallbackAdapter ?? probe.isFallbackAdapter) };
  await selectBackend('webgpu');
  const step = await checkStepAgainstCpu('webgpu');
  const software = isSoftware(adapter);
  return { adapter, software, step, timings: software ? 'not timed: a software adapter (correctness only)' : await timeAll() };
}

async function timeAll(): Promise<Timing[]> {
  const out: Timing[] = [];
  for (const [model, strategy] of TIMED) {
    try {
      out.push({ model, strategy, batch: BATCH, ...(await measureTraining(preset(model), presetStrategy(strategy), { batchSize: BATCH, steps: 5, budgetMs: 60_000, memory: true })) });
    } catch (e) {
      out.push({ model, strategy, error: (e as Error).message });
    }
    tf.engine().reset();
    await selectBackend('webgpu');
  }
  return out;
}

async function inChromium(): Promise<Part> {
  const missing = chromiumMissing();
  if (missing) return { error: missing };
  const server = await startServer({ PARTUNE_BLAS: 'off' });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_FLAGS, '--ignore-gpu-blocklist'] });
  const origin = server.url.replace('/graphql', '');
  const result = async (path: string, key: string): Promise<Record<string, unknown>> => {
    const page = await browser.newPage();
    try {
      await page.goto(`${origin}${path}`);
      return (await (await page.waitForFunction((k) => (window as unknown as Record<string, unknown>)[k], key, { timeout: 600_000 })).jsonValue()) as Record<string, unknown>;
    } finally {
      await page.close();
    }
  };
  try {
    const page = await browser.newPage();
    await page.goto(`${origin}/healthz`); // WebGPU needs a secure context: localhost is one, about:blank is not
    const info = await page.evaluate(async () => {
      const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<{ info?: Record<string, unknown>; isFallbackAdapter?: boolean } | null> } }).gpu;
      const a = gpu ? await gpu.requestAdapter() : null;
      return a ? { vendor: a.info?.vendor, architecture: a.info?.architecture, description: a.info?.description, isFallbackAdapter: a.isFallbackAdapter ?? a.info?.isFallbackAdapter } : null;
    });
    await page.close();
    if (!info) return { error: 'Chromium offers no WebGPU adapter' };
    const adapter = { vendor: String(info.vendor ?? ''), architecture: String(info.architecture ?? ''), description: String(info.description ?? ''), fallback: Boolean(info.isFallbackAdapter) };
    const step = await result('/worker/selftest.html?backend=webgpu', 'partuneSelfTest');
    const software = isSoftware(adapter);
    const timings: Timing[] = [];
    for (const [model, strategy] of software ? [] : TIMED) {
      const q = new URLSearchParams({ backend: 'webgpu', config: JSON.stringify(preset(model)), strategy, batch: String(BATCH), steps: '5' });
      const r = await result(`/worker/bench.html?${q}`, 'partuneBench');
      timings.push(r.error ? { model, strategy, error: String(r.error) } : { model, strategy, batch: BATCH, imagesPerSecond: Number(r.imagesPerSecond), peakBytesPerStep: r.peakBytesPerStep as number | null });
    }
    return { adapter, software, step, timings: software ? 'not timed: a software adapter (correctness only)' : timings };
  } finally {
    await browser.close();
    await server.stop();
  }
}

function child(part: string, env: NodeJS.ProcessEnv = process.env): Part {
  try {
    const out = execFileSync(process.execPath, [__filename, '--part', part], { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'inherit'], timeout: 540_000 });
    return JSON.parse(out.trim().split('\n').pop()!) as Part;
  } catch (e) {
    return { error: `the ${part} check failed: ${(e as Error).message.split('\n')[0]}` };
  }
}

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/** Dawn refuses some system drivers (Mesa 22's lavapipe lacks a feature it needs): then Chromium's SwiftShader stands in. */
function nodeDawnPart(): { part: Part; icd: string } {
  const icd = process.env.VK_ICD_FILENAMES ?? process.env.VK_DRIVER_FILES ?? 'system';
  const part = child('node');
  if (!part.error?.startsWith('Dawn found no adapter') || icd !== 'system' || !existsSync(SWIFTSHADER_ICD)) return { part, icd };
  const library = ['/usr/lib/chromium', process.env.LD_LIBRARY_PATH].filter(Boolean).join(':');
  const fallback = child('node', { ...process.env, VK_ICD_FILENAMES: SWIFTSHADER_ICD, LD_LIBRARY_PATH: library });
  return { part: fallback, icd: `${SWIFTSHADER_ICD} (no adapter from the system's)` };
}

async function main(): Promise<void> {
  const at = process.argv.indexOf('--part');
  if (at > 0) {
    const part = process.argv[at + 1] === 'node' ? await nodeDawn() : await inChromium();
    process.stdout.write(`${JSON.stringify(part)}\n`);
    process.exit(0); // Dawn's threads would keep the process alive
  }
  const outAt = process.argv.indexOf('--out');
  const dir = outAt > 0 ? process.argv[outAt + 1] : join(__dirname, '..', '..', 'bench', 'results');
  const dawn = nodeDawnPart();
  const report = {
    date: new Date().toISOString(), node: process.version, vulkan: { icd: dawn.icd, loader: process.env.LD_LIBRARY_PATH ?? 'system' },
    unit: 'step: largest relative error against the cpu backend (logits, loss, gradients, AdamW-updated weights); timings: training img/s at batch 32, peak bytes one step allocates',
    node_dawn: dawn.part, chromium: child('chromium'),
  };
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `gpu-${report.date.slice(0, 10)}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  for (const [name, p] of [['node (Dawn)', report.node_dawn], ['chromium', report.chromium]] as const) {
    const a = p.adapter;
    process.stderr.write(`${name}: ${p.error ?? `${a!.vendor} ${a!.architecture} ${a!.description}${p.software ? ' (software)' : ''}; step ${JSON.stringify(p.step)}; ${typeof p.timings === 'string' ? p.timings : JSON.stringify(p.timings)}`}\n`);
  }
  process.stderr.write(`wrote ${file}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`gpu check: ${e.message}\n`);
  process.exit(1);
});
