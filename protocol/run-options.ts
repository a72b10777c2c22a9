// What `startRun` takes and a run records as its hyper-parameters: the engine's TrainOptions plus
// how the platform cuts the steps into rounds and shards. Shared by the server, which parses and
// stores them, and the dashboard's form. No TensorFlow.js here (the dashboard bundles this file).
import { OptionError, TRAIN_DEFAULTS, TRAIN_OPTION_NAMES, TrainOptions, parseTrainOptions } from '../engine/train/options';
import { AGGREGATIONS, Aggregation } from '../engine/aggregate/robust';

/**
 * How a shard's result is verified before a round uses it. NONE: the bound checks alone. SPOT_CHECK:
 * an untrusted worker's result must be matched by another worker's; a trusted worker's is checked
 * at a rate that decays with its record. QUORUM: every shard goes to `quorum` workers from the start.
 */
export const VERIFICATIONS = ['NONE', 'SPOT_CHECK', 'QUORUM'] as const;
export type Verification = (typeof VERIFICATIONS)[number];

export interface RunOptions extends TrainOptions {
  /** Optimizer steps per round, split among the round's shards. */
  readonly stepsPerRound: number;
  /** Shards (parallel workers) per round: 1 unless given ('AUTO' is resolved and recorded as a number when a run starts). */
  readonly shardsPerRound: number;
  /** How a round's shards are combined: FEDAVG, or a rule that tolerates a minority of bad updates. */
  readonly aggregation: Aggregation;
  readonly verification: Verification;
  /** Agreeing results a shard needs under QUORUM (and workers it is issued to at once). */
  readonly quorum: number;
  /** The least rate at which a trusted worker's results are checked under SPOT_CHECK. */
  readonly spotCheckRate: number;
  /** Volunteers (strangers' tabs) may lease its shards, and so read its state and training records; else registered workers only. */
  readonly admitVolunteers: boolean;
}

/** A round's updates are held together to aggregate them: this many at most. */
export const MAX_SHARDS_PER_ROUND = 64;
/** `shardsPerRound: 'AUTO'` takes the workers online, at most this many. */
export const MAX_AUTO_SHARDS = 16;

// One shard per round by default: a run's result then depends on its options alone, not on how
// many workers happened to be online (and one shard is bit-identical to `partune finetune`).
export const RUN_DEFAULTS = {
  ...TRAIN_DEFAULTS, stepsPerRound: 50, shardsPerRound: 1, aggregation: 'FEDAVG', verification: 'SPOT_CHECK', quorum: 2, spotCheckRate: 0.05, admitVolunteers: false,
} as const;

/** Options of the platform alone: how a run is cut up and checked, not what a worker trains. */
const PLATFORM_OPTIONS = new Set(['stepsPerRound', 'shardsPerRound', 'aggregation', 'verification', 'quorum', 'spotCheckRate', 'admitVolunteers']);

const ROUND_OPTIONS = {
  stepsPerRound: 'the steps per round',
  shardsPerRound: 'the shards per round',
} as const;

/** Whether the options ask for as many shards per round as workers are online. */
export const asksAutoShards = (raw: unknown): boolean =>
  typeof raw === 'object' && raw !== null && String((raw as Record<string, unknown>).shardsPerRound).toUpperCase() === 'AUTO';

/** Parses a run's options; `shardsPerRound: 'AUTO'` becomes `workersOnline` (1 to 16), which a new run must give. */
export function parseRunOptions(raw: unknown, workersOnline?: number): RunOptions {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new OptionError('', 'run options must be an object of named values');
  const given = raw as Record<string, unknown>;
  const train: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(given)) if (!PLATFORM_OPTIONS.has(k)) train[k] = v;
  const options = parseTrainOptions(train);
  const count = (name: keyof typeof ROUND_OPTIONS, fallback: number): number => {
    if (name === 'shardsPerRound' && asksAutoShards(given)) {
      if (workersOnline === undefined) throw new OptionError(name, "'AUTO' shards per round are counted when a run starts");
      return Math.min(MAX_AUTO_SHARDS, Math.max(1, workersOnline));
    }
    const v = given[name] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 100_000) throw new OptionError(name, `${ROUND_OPTIONS[name]} must be an integer from 1 to 100000 (got ${String(v)})`);
    return v;
  };
  const aggregation = given.aggregation ?? RUN_DEFAULTS.aggregation;
  if (!AGGREGATIONS.includes(aggregation as Aggregation)) throw new OptionError('aggregation', `the aggregation must be one of ${AGGREGATIONS.join(', ')} (got ${String(aggregation)})`);
  const verification = given.verification ?? RUN_DEFAULTS.verification;
  if (!VERIFICATIONS.includes(verification as Verification)) throw new OptionError('verification', `the verification must be one of ${VERIFICATIONS.join(', ')} (got ${String(verification)})`);
  const quorum = given.quorum ?? RUN_DEFAULTS.quorum;
  if (typeof quorum !== 'number' || !Number.isInteger(quorum) || quorum < 2 || quorum > 5) throw new OptionError('quorum', `the quorum must be an integer from 2 to 5 (got ${String(quorum)})`);
  const rate = given.spotCheckRate ?? RUN_DEFAULTS.spotCheckRate;
  if (typeof rate !== 'number' || !(rate >= 0 && rate <= 1)) throw new OptionError('spotCheckRate', `the spot-check rate must be from 0 to 1 (got ${String(rate)})`);
  const admitVolunteers = given.admitVolunteers ?? RUN_DEFAULTS.admitVolunteers;
  if (typeof admitVolunteers !== 'boolean') throw new OptionError('admitVolunteers', `admitVolunteers must be true or false (got ${String(admitVolunteers)})`);
  return Object.freeze({
    ...options, admitVolunteers,
    stepsPerRound: count('stepsPerRound', RUN_DEFAULTS.stepsPerRound), shardsPerRound: count('shardsPerRound', RUN_DEFAULTS.shardsPerRound), aggregation: aggregation as Aggregation,
    verification: verification as Verification, quorum, spotCheckRate: rate,
  });
}

/** The engine's part of a run's options. */
export function trainOptionsOf(o: RunOptions): TrainOptions {
  return Object.fromEntries(TRAIN_OPTION_NAMES.filter((k) => o[k] !== undefined).map((k) => [k, o[k]])) as unknown as TrainOptions;
}
