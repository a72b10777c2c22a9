// The reproduction study: its selection rules on literal results, and `npm run reproduce --
// --quick` end to end (real child processes, the shared model and data): every strategy run at
// every seed, learning rates chosen on held-out, angle strategies derived from full fine-tuning,
// greedy soups never below their best ingredient on held-out, a report with every row, and a
// resumed run that redoes nothing.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dataset, PRESET_NAMES, selectByAngle } from '../engine';
import { FASHION_MNIST_DIR } from '../node/data';
import { plan } from '../study/experiments';
import { selectClasses } from '../study/data';
import type { FinetuneResult, SoupResult } from '../study/job';
import { chooseLr, meanStd, readResults } from '../study/results';
import { strategyRows, writeReport } from '../study/report';
import { SHARED, describeIfExists } from './helpers';

jest.setTimeout(600_000);

describe('study rules', () => {
  it('chooses the learning rate with the best held-out score, ties to the smaller rate', () => {
    expect(chooseLr([{ lr: 3e-4, heldOut: 0.5 }, { lr: 1e-3, heldOut: 0.7 }, { lr: 3e-3, heldOut: 0.6 }])).toBe(1e-3);
    expect(chooseLr([{ lr: 3e-3, heldOut: 0.7 }, { lr: 1e-3, heldOut: 0.7 }])).toBe(1e-3);
    expect(() => chooseLr([])).toThrow(/no sweep results/);
  });

  it('reports the sample standard deviation', () => {
    const s = meanStd([0.5, 0.7, 0.9]);
    expect(s.mean).toBeCloseTo(0.7, 12);
    expect(s.std).toBeCloseTo(0.2, 12);
    expect(meanStd([0.4]).std).toBe(0);
  });

  it('keeps and relabels the chosen classes in order', () => {
    const ds: Dataset = {
      name: 'toy', images: Uint8Array.from([0, 1, 2, 3, 4, 5]), labels: Uint8Array.from([7, 2, 9, 7, 5, 9]), count: 6,
      height: 1, width: 1, channels: 1, classes: 10, flipInvariant: false,
    };
    const picked = selectClasses(ds, [9, 7], 'toy[9,7]');
    expect(Array.from(picked.images)).toEqual([0, 2, 3, 5]);
    expect(Array.from(picked.labels)).toEqual([1, 0, 1, 0]);
    expect(picked.classes).toBe(2);
  });

  it('tabulates each strategy at its chosen rate over all seeds', () => {
    const e = plan(true)[0];
    const run = (label: string, lr: number, seed: number, heldOut: number, test: number): FinetuneResult => ({
      kind: 'finetune', experiment: e.id, label, strategy: { kind: 'preset', name: 'full' }, lr, seed, tunedParams: 10, totalParams: 20,
      attnLayers: [], ffnLayers: [], deltaBytes: 100, steps: 1, trainImages: 1, trainSeconds: 1, imagesPerSecond: 1, finalTrainLoss: 1, heldOut, test, testLoss: 1,
    });
    const rows = strategyRows({ runs: [run('full', 1e-3, 0, 0.6, 0.5), run('full', 3e-3, 0, 0.8, 0.1), run('full', 3e-3, 1, 0.7, 0.3), run('full', 1e-3, 1, 0.9, 0.9)], soups: [] }, e);
    expect(rows).toHaveLength(1);
    expect(rows[0].lr).toBe(3e-3);
    expect(rows[0].runs.map((r) => r.seed)).toEqual([0, 1]);
    expect(rows[0].test.mean).toBeCloseTo(0.2, 12);
  });
});

describe('the committed report', () => {
  it('is exactly what the committed raw results give', () => {
    const root = join(__dirname, '..');
    const out = mkdtempSync(join(tmpdir(), 'partune-report-'));
    const experiments = plan(false);
    writeReport({
      experiments, results: Object.fromEntries(experiments.map((e) => [e.id, readResults(join(root, 'study', 'results'), e.id)])), skipped: {},
      report: join(out, 'RESULTS.md'), quick: false, discussion: join(root, 'study', 'discussion.md'),
    });
    expect(readFileSync(join(out, 'RESULTS.md'), 'utf8')).toBe(readFileSync(join(root, 'docs', 'RESULTS.md'), 'utf8'));
    for (const f of readdirSync(join(out, 'results'))) expect(readFileSync(join(out, 'results', f), 'utf8')).toBe(readFileSync(join(root, 'docs', 'results', f), 'utf8'));
  });
});

const inputs = [join(SHARED, 'vit-mnist-500k', 'model.safetensors'), join(SHARED, 'cifar10', 'data_batch_1.bin'), FASHION_MNIST_DIR];
const missing = inputs.find((p) => !existsSync(p));

describeIfExists(missing ?? inputs[0], 'npm run reproduce -- --quick (both experiments, real processes)', () => {
  const out = mkdtempSync(join(tmpdir(), 'partune-study-'));
  const reproduce = (...extra: string[]) => spawnSync(process.execPath, [join(__dirname, '..', 'dist', 'study', 'reproduce.js'), '--quick', '--jobs', '2', '--out', out, ...extra], { encoding: 'utf8' });
  let first: ReturnType<typeof reproduce>;

  beforeAll(() => {
    first = reproduce();
  });

  it('runs every strategy at every seed and writes a report with every row', () => {
    expect(first.stderr).toMatch(/study done/);
    expect(first.status).toBe(0);
    const report = readFileSync(join(out, 'RESULTS.md'), 'utf8');
    for (const e of plan(true)) {
      const res = readResults(out, e.id);
      const labels = [...PRESET_NAMES, ...e.recipe.angleTopK.flatMap((k) => [`angle-smallest-k${k}`, `angle-largest-k${k}`])];
      const rows = strategyRows(res, e);
      expect(rows.map((r) => r.label).sort()).toEqual([...labels].sort());
      for (const row of rows) {
        expect(row.runs.map((r) => r.seed)).toEqual(e.recipe.seeds);
        for (const r of row.runs) {
          expect(r.test).toBeGreaterThanOrEqual(0);
          expect(r.test).toBeLessThanOrEqual(1);
          expect(existsSync(join(out, e.id, 'work', 'deltas', `${r.label}_lr${r.lr.toExponential(0)}_s${r.seed}.safetensors`))).toBe(true);
        }
        expect(report).toContain(`| ${row.label} | ${row.tunedParams.toLocaleString('en-US')} |`);
      }
      // Angle strategies are exactly the top-K of full fine-tuning's angles at seed 0.
      const full = rows.find((r) => r.label === 'full')!.runs[0];
      for (const row of rows.filter((r) => r.label.startsWith('angle-'))) {
        const [, direction, k] = /^angle-(smallest|largest)-k(\d+)$/.exec(row.label)!;
        const expected = selectByAngle(full.angles!, { direction: direction as 'smallest' | 'largest', topK: { attn: +k, ffn: +k } }, row.label);
        expect(row.runs[0].strategy).toEqual(expected);
      }
      // Greedy soups start from the best ingredient and never lose held-out accuracy.
      expect(res.soups.map((s: SoupResult) => s.seed)).toEqual(e.recipe.seeds);
      for (const s of res.soups) expect(s.greedy.heldOut).toBeGreaterThanOrEqual(Math.max(...s.ingredients.map((i) => i.heldOut)));
      expect(existsSync(join(out, 'plots', `${e.id}-accuracy.svg`))).toBe(true);
      expect(readFileSync(join(out, 'plots', `${e.id}-angles.svg`), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\n$/);
    }
    expect(readResults(out, 'cifar-0-4-to-5-9').pretrain?.sourceTest).toBeGreaterThan(0);
  });

  it('resumes without redoing finished runs', () => {
    const runs = readdirSync(join(out, 'mnist-to-fashion', 'runs'));
    const before = readFileSync(join(out, 'RESULTS.md'), 'utf8');
    const again = reproduce('--resume');
    expect(again.status).toBe(0);
    expect(again.stderr).not.toMatch(/held-out \d/);
    expect(readdirSync(join(out, 'mnist-to-fashion', 'runs'))).toEqual(runs);
    expect(readFileSync(join(out, 'RESULTS.md'), 'utf8')).toBe(before);
  });
});
