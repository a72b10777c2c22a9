// bench/gpu/run.sh, the GPU check that a machine with a GPU runs as is: here it finds only
// SwiftShader (through Node's Dawn and through headless Chromium), so it checks a WebGPU training
// step against the cpu backend and, rightly, times nothing. On a real GPU the same assertions
// require timings instead.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromiumMissing } from '../node/chromium';
import { itUnless } from './support/skip';

jest.setTimeout(600_000);

/** Dawn needs a Vulkan loader: the system's, or the one Debian's Chromium ships with SwiftShader. */
const vulkanMissing = (): string | undefined =>
  existsSync('/usr/lib/chromium/libvulkan.so.1') || /libvulkan\.so\.1 /.test(spawnSync('ldconfig', ['-p'], { encoding: 'utf8' }).stdout ?? '')
    ? undefined : 'no Vulkan loader (apt install chromium, or libvulkan1 and a driver)';

interface Part { adapter?: { vendor: string; description: string }; software?: boolean; step?: Record<string, number>; timings?: unknown; error?: string }

describe('bench/gpu/run.sh', () => {
  let report: { node_dawn: Part; chromium: Part };
  beforeAll(() => {
    const out = mkdtempSync(join(tmpdir(), 'partune-gpu-'));
    execFileSync('bash', [join(__dirname, '..', 'bench', 'gpu', 'run.sh'), '--out', out], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 540_000 });
    const [file] = readdirSync(out).filter((f) => /^gpu-\d{4}-\d\d-\d\d\.json$/.test(f));
    report = JSON.parse(readFileSync(join(out, file), 'utf8'));
  });

  const checks = (p: Part): void => {
    expect(p.error).toBeUndefined();
    expect(p.adapter!.vendor.length + p.adapter!.description.length).toBeGreaterThan(0);
    // Same bounds as the browser self-test: float rounding, not a wrong term (which is O(1)).
    expect(p.step).toEqual(expect.objectContaining({ backend: 'webgpu' }));
    for (const k of ['logits', 'loss', 'gradients']) expect([k, p.step![k]]).toEqual([k, expect.any(Number)]);
    expect(Math.max(p.step!.logits, p.step!.loss, p.step!.gradients)).toBeLessThan(1e-5);
    expect(p.step!.updated).toBeLessThan(3e-3);
    if (p.software) {
      expect(p.timings).toMatch(/^not timed: a software adapter/);
    } else {
      const timings = p.timings as { imagesPerSecond?: number; error?: string }[];
      expect(timings.length).toBe(4);
      for (const t of timings) expect(t.error ?? t.imagesPerSecond).toEqual(expect.any(Number));
    }
  };

  itUnless(vulkanMissing())("checks Node's WebGPU (Dawn) step against the cpu backend, and times only a real GPU", () => {
    checks(report.node_dawn);
  });

  itUnless(chromiumMissing())("checks headless Chromium's WebGPU the same way", () => {
    checks(report.chromium);
  });
});
