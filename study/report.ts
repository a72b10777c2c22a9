// The study's report, built only from the raw per-run JSON: per experiment a table (tuned
// parameters, delta size, chosen learning rate, top-1 mean ± std over seeds, training time), the
// learning-rate sweep, the angle profile, plots, and the paper's claims checked against the
// numbers. Hand-written commentary lives in study/discussion.md and is included as is.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { spearman } from '../engine';
import { Experiment, PARTIAL_PRESETS } from './experiments';
import type { FinetuneResult } from './job';
import { ExperimentResults, chooseLr, meanStd } from './results';
import { groupedBars, scatterLogX } from './svg';

export interface Row {
  readonly label: string;
  readonly lr: number;
  readonly lrAtEdge: boolean;
  readonly tunedParams: number;
  readonly totalParams: number;
  readonly deltaBytes: number;
  readonly test: { mean: number; std: number; n: number };
  readonly heldOut: { mean: number; std: number; n: number };
  readonly trainSeconds: number;
  readonly imagesPerSecond: number;
  readonly runs: FinetuneResult[];
}

const pct = (x: number): string => (100 * x).toFixed(2);
const pm = (s: { mean: number; std: number }): string => `${pct(s.mean)} ± ${pct(s.std)}`;
const kib = (b: number): string => (b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
const int = (n: number): string => n.toLocaleString('en-US');

/** One row per strategy at its chosen learning rate, in presentation order. */
export function strategyRows(res: ExperimentResults, e: Experiment): Row[] {
  const labels = [...new Set(res.runs.map((r) => r.label))];
  const order = (l: string): number => {
    const i = ['full', 'linear-probe', ...PARTIAL_PRESETS].indexOf(l as never);
    return i >= 0 ? i : 100 + labels.indexOf(l);
  };
  return labels.sort((a, b) => order(a) - order(b)).map((label) => {
    const grid = [...(label === 'linear-probe' ? e.recipe.linearProbeLrGrid : e.recipe.lrGrid)].sort((a, b) => a - b);
    const mine = res.runs.filter((r) => r.label === label && grid.includes(r.lr));
    const sweep = mine.filter((r) => r.seed === e.recipe.seeds[0]);
    const lr = chooseLr(sweep);
    const runs = mine.filter((r) => r.lr === lr).sort((a, b) => a.seed - b.seed);
    return {
      label, lr, lrAtEdge: grid.length > 1 && (lr === grid[0] || lr === grid[grid.length - 1]),
      tunedParams: runs[0].tunedParams, totalParams: runs[0].totalParams, deltaBytes: runs[0].deltaBytes,
      test: meanStd(runs.map((r) => r.test)), heldOut: meanStd(runs.map((r) => r.heldOut)),
      trainSeconds: meanStd(runs.map((r) => r.trainSeconds)).mean, imagesPerSecond: meanStd(runs.map((r) => r.imagesPerSecond)).mean, runs,
    };
  });
}

/** "holds", "does not hold" or "within noise" for a - b, noise being the two stds combined. */
function verdict(a: { mean: number; std: number }, b: { mean: number; std: number }): string {
  const d = a.mean - b.mean;
  const noise = Math.hypot(a.std, b.std);
  if (Math.abs(d) <= noise) return `within noise (${d >= 0 ? '+' : ''}${pct(d)} points, noise ±${pct(noise)})`;
  return d > 0 ? `holds (+${pct(d)} points)` : `does not hold (${pct(d)} points)`;
}

function anglePlot(full: Row, rows: Row[]): { svg: string; table: string[]; stability: string } {
  const depth = full.runs[0].angles!.length / 2;
  const blocks = Array.from({ length: depth }, (_, b) => b);
  const per = (kind: 'attn' | 'ffn', b: number): number[] => full.runs.map((r) => r.angles!.find((a) => a.kind === kind && a.block === b)!.degrees);
  // Highlight the layers of the angle-guided strategy with the best held-out score.
  const chosen = rows.filter((r) => r.label.startsWith('angle-')).sort((a, b) => b.heldOut.mean - a.heldOut.mean)[0];
  const series = (['attn', 'ffn'] as const).map((kind) => ({
    name: kind === 'attn' ? 'attention' : 'FFN', color: kind === 'attn' ? '#1f77b4' : '#ff7f0e',
    values: blocks.map((b) => {
      const s = meanStd(per(kind, b));
      const selected = chosen ? (kind === 'attn' ? chosen.runs[0].attnLayers : chosen.runs[0].ffnLayers).includes(b) : true;
      return { mean: s.mean, std: s.std, highlighted: selected };
    }),
  }));
  const svg = groupedBars(`Fine-tuned angles of full fine-tuning (mean ± std over ${full.runs.length} seeds)`,
    blocks.map((b) => `block ${b}`), series, 'degrees', chosen ? `solid: the layers ${chosen.label} tunes` : '');
  // Rank within the group at seed 0, 1 = largest angle.
  const rank = (kind: 'attn' | 'ffn', seedIndex: number): number[] => {
    const deg = blocks.map((b) => full.runs[seedIndex].angles!.find((a) => a.kind === kind && a.block === b)!.degrees);
    return deg.map((d) => 1 + deg.filter((x) => x > d).length);
  };
  const table = ['| block | attention (°) | rank (seed 0) | FFN (°) | rank (seed 0) |', '|---:|---:|---:|---:|---:|'];
  for (const b of blocks) {
    const a = meanStd(per('attn', b));
    const f = meanStd(per('ffn', b));
    table.push(`| ${b} | ${a.mean.toFixed(3)} ± ${a.std.toFixed(3)} | ${rank('attn', 0)[b]} | ${f.mean.toFixed(3)} ± ${f.std.toFixed(3)} | ${rank('ffn', 0)[b]} |`);
  }
  const pairs: string[] = [];
  for (const kind of ['attn', 'ffn'] as const) {
    const rhos: number[] = [];
    for (let i = 1; i < full.runs.length; i++) rhos.push(spearman(full.runs[0].angles!.filter((a) => a.kind === kind).map((a) => a.degrees), full.runs[i].angles!.filter((a) => a.kind === kind).map((a) => a.degrees)));
    if (rhos.length) pairs.push(`${kind === 'attn' ? 'attention' : 'FFN'} ${rhos.map((r) => r.toFixed(2)).join(', ')}`);
  }
  return { svg, table, stability: pairs.length ? `Rank agreement of the angles of seed 0 with the other seeds (Spearman): ${pairs.join('; ')}.` : '' };
}

interface Section {
  readonly lines: string[];
  readonly rows: Row[];
}

function experimentSection(e: Experiment, res: ExperimentResults, plotsDir: string, reportDir: string): Section {
  const lines: string[] = [`## ${e.title}`, ''];
  const rows = strategyRows(res, e);
  const r = e.recipe;
  lines.push(`- Base: ${e.base.description}.`);
  if (res.pretrain) {
    const p = res.pretrain;
    lines.push(`- Pre-training (by \`npm run reproduce\`): ${int(p.trainImages)} images, ${p.epochs} epochs, random crop + flip, ${int(p.params)} parameters; ${pct(p.sourceTest)}% top-1 on ${int(p.sourceTestImages)} held-back source-class test images (${(p.trainSeconds / 60).toFixed(1)} min of training at ${p.imagesPerSecond.toFixed(0)} img/s).`);
  }
  lines.push(`- Target: ${e.data.description}; ${int(e.trainImages)} training images, ${int(e.heldOutImages)} held-out images (from the training set: learning rates and greedy soups are chosen on them), ${int(e.testImages)} test images (reported below, never used to choose).`);
  lines.push(`- Recipe, the same for every strategy: new head, AdamW (weight decay ${r.weightDecay}), batch ${r.batchSize}, ${r.epochs} epochs, cosine schedule with 10% warm-up, label smoothing ${r.labelSmoothing}, gradient clipping at 1, no augmentation (frozen-prefix cache on). Learning rate per strategy from {${r.lrGrid.join(', ')}} (linear probe: {${r.linearProbeLrGrid.join(', ')}}) by held-out top-1 at seed ${r.seeds[0]}; then seeds ${r.seeds.join(', ')} at that rate. Accuracies are those of exactly base + delta.`);
  lines.push(`- Angle-guided: the fine-tuned angle of every attention and FFN layer between the pre-trained weights and full fine-tuning's (seed ${r.seeds[0]}, its chosen rate), ranked within each group; the top-K of each group with the smallest or largest angles, K ∈ {${r.angleTopK.join(', ')}}.`);
  lines.push('');
  lines.push('| strategy | tuned params | % of total | delta | lr | top-1 test (%) | top-1 held-out (%) | train time (s) | img/s |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const row of rows) {
    lines.push(`| ${row.label} | ${int(row.tunedParams)} | ${((100 * row.tunedParams) / row.totalParams).toFixed(1)} | ${kib(row.deltaBytes)} | ${row.lr}${row.lrAtEdge ? '*' : ''} | ${pm(row.test)} | ${pm(row.heldOut)} | ${row.trainSeconds.toFixed(0)} | ${row.imagesPerSecond.toFixed(0)} |`);
  }
  const soups = res.soups;
  if (soups.length) {
    const u = meanStd(soups.map((s) => s.uniform.test));
    const g = meanStd(soups.map((s) => s.greedy.test));
    const n = soups[0].ingredients.length;
    lines.push(`| uniform soup of ${n} partial deltas | | | | | ${pm(u)} | ${pm(meanStd(soups.map((s) => s.uniform.heldOut)))} | | |`);
    lines.push(`| greedy soup (held-out) | | | | | ${pm(g)} | ${pm(meanStd(soups.map((s) => s.greedy.heldOut)))} | | |`);
  }
  lines.push('');
  lines.push(`Mean ± sample standard deviation over ${rows[0]?.test.n ?? 0} seeds. \`*\`: the chosen rate is at the edge of the grid. Train time: training seconds of one run (evaluation excluded; runs execute side by side, one per core); img/s excludes the first step.`);
  if (soups.length) {
    lines.push('');
    lines.push(`Greedy soups kept (per seed): ${soups.map((s) => `seed ${s.seed}: ${s.greedy.kept.join(' + ')}`).join('; ')}.`);
  }
  // Learning-rate sweep.
  lines.push('', '<details><summary>Learning-rate sweep (held-out top-1 %, seed 0)</summary>', '');
  const grid = [...new Set(res.runs.filter((x) => x.seed === r.seeds[0]).map((x) => x.lr))].sort((a, b) => a - b);
  lines.push(`| strategy | ${grid.join(' | ')} |`, `|---|${grid.map(() => '---:').join('|')}|`);
  for (const row of rows) {
    const cells = grid.map((lr) => {
      const hit = res.runs.find((x) => x.label === row.label && x.seed === r.seeds[0] && x.lr === lr);
      return hit ? (lr === row.lr ? `**${pct(hit.heldOut)}**` : pct(hit.heldOut)) : '';
    });
    lines.push(`| ${row.label} | ${cells.join(' | ')} |`);
  }
  lines.push('', '</details>', '');
  // Plots.
  mkdirSync(plotsDir, { recursive: true });
  const full = rows.find((x) => x.label === 'full');
  if (full?.runs.every((x) => x.angles)) {
    const a = anglePlot(full, rows);
    const file = join(plotsDir, `${e.id}-angles.svg`);
    writeFileSync(file, a.svg);
    lines.push(`![fine-tuned angles](${relative(reportDir, file)})`, '', ...a.table, '', a.stability, '');
  }
  const colors = (label: string): string => (label === 'full' ? '#d62728' : label === 'linear-probe' ? '#7f7f7f' : label.startsWith('angle-') ? '#2ca02c' : '#1f77b4');
  const points = rows.map((x) => ({ label: x.label, x: x.tunedParams, y: x.test.mean, yStd: x.test.std, color: colors(x.label) }));
  const scatter = join(plotsDir, `${e.id}-accuracy.svg`);
  writeFileSync(scatter, scatterLogX(`Top-1 against tuned parameters (mean ± std over ${rows[0]?.test.n ?? 0} seeds)`, points, 'tuned parameters (log scale)', 'top-1 test (%)'));
  lines.push(`![top-1 against tuned parameters](${relative(reportDir, scatter)})`, '');
  lines.push(...findings(rows, res));
  return { lines, rows };
}

function findings(rows: Row[], res: ExperimentResults): string[] {
  const out = ['### The paper\'s claims, checked here', ''];
  const full = rows.find((r) => r.label === 'full');
  const partial = rows.filter((r) => r.label !== 'full' && r.label !== 'linear-probe');
  const manual = partial.filter((r) => !r.label.startsWith('angle-'));
  const angle = partial.filter((r) => r.label.startsWith('angle-'));
  const best = (xs: Row[]): Row => [...xs].sort((a, b) => b.heldOut.mean - a.heldOut.mean)[0];
  if (full && partial.length) {
    const atLeast = partial.filter((p) => p.test.mean >= full.test.mean);
    const top = [...partial].sort((a, b) => b.test.mean - a.test.mean)[0];
    out.push(`- **Partial fine-tuning ≥ full fine-tuning with fewer parameters:** ${atLeast.length} of ${partial.length} partial strategies reach full fine-tuning's mean top-1 (${pct(full.test.mean)}%)${atLeast.length ? `: ${atLeast.map((p) => `${p.label} ${pct(p.test.mean)}% with ${((100 * p.tunedParams) / p.totalParams).toFixed(0)}% of the parameters`).join(', ')}` : ''}. Best partial (${top.label}) vs full: ${verdict(top.test, full.test)}.`);
  }
  if (manual.length) {
    const ranked = [...manual].sort((a, b) => b.test.mean - a.test.mean);
    out.push(`- **Which part to tune depends on the task:** here the manual strategies rank ${ranked.map((r) => `${r.label} (${pct(r.test.mean)})`).join(' > ')}.`);
  }
  if (angle.length && manual.length) {
    const bm = best(manual);
    const ba = best(angle);
    out.push(`- **Angle-guided ≥ the best manual strategy:** best by held-out — angle-guided ${ba.label} ${pm(ba.test)} (${int(ba.tunedParams)} params) vs manual ${bm.label} ${pm(bm.test)} (${int(bm.tunedParams)} params): ${verdict(ba.test, bm.test)}.`);
    for (const k of new Set(angle.map((a) => a.tunedParams))) {
      const same = manual.filter((m) => m.tunedParams === k);
      const ang = angle.filter((a) => a.tunedParams === k);
      if (same.length) out.push(`  At the same budget (${int(k)} params): ${[...ang, ...same].sort((a, b) => b.test.mean - a.test.mean).map((x) => `${x.label} ${pct(x.test.mean)}`).join(', ')}.`);
    }
    const dirs = ['smallest', 'largest'].map((d) => angle.filter((a) => a.label.includes(`-${d}-`)));
    if (dirs.every((d) => d.length)) {
      const [s, l] = dirs.map((d) => best(d));
      out.push(`  Direction: smallest angles ${s.label} ${pm(s.test)} vs largest ${l.label} ${pm(l.test)}: smallest − largest ${verdict(s.test, l.test)}.`);
    }
  }
  if (res.soups.length) {
    const per = (f: (s: (typeof res.soups)[number]) => number) => meanStd(res.soups.map(f));
    // The ingredient a practitioner would pick: best held-out in that seed; its test score.
    const pick = per((s) => {
      const top = [...s.ingredients].sort((a, b) => b.heldOut - a.heldOut)[0];
      return rows.find((r) => r.label === top.label)!.runs.find((x) => x.seed === s.seed)!.test;
    });
    out.push(`- **Soups ≥ the best ingredient:** greedy soup ${pm(per((s) => s.greedy.test))} vs the best-held-out ingredient ${pm(pick)}: ${verdict(per((s) => s.greedy.test), pick)}; uniform soup ${pm(per((s) => s.uniform.test))}: ${verdict(per((s) => s.uniform.test), pick)}.`);
  }
  out.push('');
  return out;
}

const PAPER = [
  '## The paper\'s own numbers (for context; theirs, not reproduced here)',
  '',
  'Ye et al. 2023, ViT-B/16 (ImageNet-21k pre-trained) fine-tuned on CIFAR-100:',
  '',
  '| strategy | tuned params | top-1 (%) |',
  '|---|---:|---:|',
  '| full fine-tuning | 85.88 M | 93.51 |',
  '| ATTN-Only | 28.44 M | 93.84 |',
  '| FFN-Only | 56.76 M | 93.98 |',
  '| angle-guided | 49.69 M | 94.30 |',
  '',
  'Their models are ~170x larger, pre-trained on ~14 M images and fine-tuned for many epochs at full scale; the experiments below are small on purpose (two CPU cores) and test whether the *orderings* carry over, not the numbers.',
  '',
];

export function writeReport(args: {
  experiments: readonly Experiment[]; results: Record<string, ExperimentResults>; skipped: Record<string, string[]>;
  report: string; quick: boolean;
  /** Hand-written commentary appended as is. */
  discussion?: string;
}): void {
  const reportDir = dirname(args.report);
  const plotsDir = join(reportDir, args.quick ? 'plots' : 'results');
  const lines: string[] = ['# Partial fine-tuning at small scale: results', ''];
  if (args.quick) lines.push('> **Quick mode**: a smoke test on a sliver of the data. These numbers mean nothing; run `npm run reproduce` for the study.', '');
  const all = Object.values(args.results);
  const runs = all.reduce((n, r) => n + r.runs.length, 0);
  const seconds = all.reduce((t, r) => t + r.runs.reduce((a, x) => a + x.trainSeconds, 0) + (r.pretrain?.trainSeconds ?? 0), 0);
  lines.push(`Generated by \`npm run reproduce${args.quick ? ' -- --quick' : ''}\` (study/) from the raw per-run JSON in \`study/results${args.quick ? '-quick' : ''}/\`: ${args.experiments.length} experiment(s), ${runs} fine-tuning runs, ${(seconds / 3600).toFixed(1)} core-hours of training on the wasm backend (one process per core). Every strategy gets the same budget; every number is a mean over seeds with its standard deviation.`, '');
  lines.push(...PAPER);
  const sections = args.experiments.map((e) => experimentSection(e, args.results[e.id], plotsDir, reportDir));
  for (const s of sections) lines.push(...s.lines);
  if (sections.length > 1) {
    // Does the ranking of strategies carry over between tasks?
    const [a, b] = sections.map((s) => new Map(s.rows.map((r) => [r.label, r.test.mean])));
    const common = [...a.keys()].filter((k) => b.has(k) && !k.startsWith('angle-'));
    const rho = spearman(common.map((k) => a.get(k)!), common.map((k) => b.get(k)!));
    lines.push('## Across the two tasks', '', `Spearman correlation of the ${common.length} preset strategies' mean top-1 between the two experiments: ${rho.toFixed(2)}.`, '');
  }
  for (const [id, missing] of Object.entries(args.skipped)) lines.push(`Experiment ${id} was skipped: missing ${missing.join(', ')}.`, '');
  if (args.discussion && existsSync(args.discussion)) lines.push(readFileSync(args.discussion, 'utf8').trim(), '');
  mkdirSync(reportDir, { recursive: true });
  writeFileSync(args.report, `${lines.join('\n')}\n`);
}
