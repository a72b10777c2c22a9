// partune angles: an angle probe (full fine-tuning for a short, visible budget), the fine-tuned
// angle of every attention and FFN layer, and the strategy that tunes the top-K of each group.
import { writeFileSync } from 'node:fs';
import {
  LayerAngle, Strategy, TrainSummary, TrainableVit, inspect, layerAngles, presetStrategy, rankAgreement, selectByAngle, topKForBudget, trainingSchedule,
  withNewHead,
} from '../engine';
import { Options, backend, checkpointFrom, normalization, num, optionalInt, prepareData, runTraining, say, str, withMicroBatch } from './commands';
import { UsageError, trainOptionsFrom } from './options';

export async function anglesCommand(o: Options): Promise<Record<string, unknown>> {
  const probeLength = { epochs: num(o, 'probe-epochs', 1, true), maxSteps: optionalInt(o, 'probe-steps') };
  for (const [flag, n] of [['probe-epochs', probeLength.epochs], ['probe-steps', probeLength.maxSteps]] as const) {
    if (n !== undefined && n < 1) throw new UsageError(`--${flag} must be at least 1 (got ${n})`);
  }
  if (str(o, 'probe-epochs') !== undefined && probeLength.maxSteps !== undefined) throw new UsageError('give --probe-epochs or --probe-steps, not both');
  let options = trainOptionsFrom(o, probeLength);
  const backendName = await backend(o);
  const direction = (str(o, 'direction') ?? 'largest') as 'largest' | 'smallest';
  if (!['largest', 'smallest'].includes(direction)) throw new Error('--direction must be largest or smallest');
  const base = await checkpointFrom(o);
  const split = await prepareData(o, base.config, options);
  // --probe-steps N: as many epochs as N steps take (one epoch of a small split would stop it short).
  if (probeLength.maxSteps !== undefined) {
    const perEpoch = trainingSchedule({ ...options, epochs: 1, maxSteps: undefined }, split.train.count).totalSteps;
    options = { ...options, epochs: Math.max(1, Math.ceil(probeLength.maxSteps / Math.max(1, perEpoch))) };
  }
  const start = await withNewHead(base, split.train.classes, options.seed);
  const { norm } = normalization(options, start.config, split.train);
  const probe = async (opts: typeof options): Promise<{ angles: LayerAngle[]; summary: TrainSummary }> => {
    say(o, `angle probe: full fine-tuning, ${opts.maxSteps !== undefined ? `${opts.maxSteps} steps` : `${opts.epochs} epoch(s)`} of batch ${opts.batchSize}, lr ${opts.lr}`);
    const model = new TrainableVit(start.weights, start.config, presetStrategy('full'));
    const { summary } = await runTraining(o, model, split, norm, withMicroBatch(o, opts, start.config, model.inspection.tunedParams), { evalEachEpoch: false });
    const tuned = await model.weights();
    model.dispose();
    return { angles: layerAngles(base.weights, tuned, base.config), summary };
  };
  const { angles, summary } = await probe(options);
  // Optionally a second, longer probe: how well does the cheap ranking agree with it?
  const reference = optionalInt(o, 'compare-probe-epochs');
  let agreement: Record<string, number> | undefined;
  if (reference !== undefined) {
    const long = await probe({ ...options, epochs: reference, maxSteps: undefined });
    agreement = rankAgreement(angles, long.angles);
    say(o, `rank agreement with a ${reference}-epoch probe (Spearman): attention ${agreement.attn.toFixed(3)}, FFN ${agreement.ffn.toFixed(3)}`);
  }
  const budget = str(o, 'budget');
  const k = budget !== undefined ? topKForBudget(angles, start.config, direction, Number(budget)) : num(o, 'top-k', Math.ceil(base.config.depth / 2), true);
  const strategy: Strategy = selectByAngle(angles, { direction, topK: { attn: k, ffn: k } }, `angle-${direction}-top${k}`);
  const ins = inspect(strategy, start.config);
  say(o, `${'block'.padEnd(6)} ${'attn angle'.padStart(11)} ${'ffn angle'.padStart(10)}`);
  for (let b = 0; b < base.config.depth; b++) {
    const a = angles.find((x) => x.kind === 'attn' && x.block === b)!;
    const f = angles.find((x) => x.kind === 'ffn' && x.block === b)!;
    const mark = (on: boolean): string => (on ? '*' : ' ');
    say(o, `${String(b).padEnd(6)} ${a.degrees.toFixed(3).padStart(10)}${mark(ins.attnLayers.includes(b))} ${f.degrees.toFixed(3).padStart(9)}${mark(ins.ffnLayers.includes(b))}`);
  }
  say(o, `strategy ${strategy.name}: attention ${JSON.stringify(ins.attnLayers)}, FFN ${JSON.stringify(ins.ffnLayers)}; ${ins.tunedParams.toLocaleString('en-US')} tuned parameters, delta ~${(ins.deltaBytes.f32 / 1024).toFixed(0)} KiB`);
  const out = str(o, 'out');
  if (out) writeFileSync(out, `${JSON.stringify(strategy, null, 2)}\n`);
  return {
    command: 'angles', backend: backendName, probe: { steps: summary.steps, seconds: summary.seconds, images: summary.images },
    angles, strategy, tunedParams: ins.tunedParams, deltaBytes: ins.deltaBytes, agreement, out,
  };
}
