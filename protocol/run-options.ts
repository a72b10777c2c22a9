// What `startRun` takes and a run records as its hyper-parameters: the engine's TrainOptions plus
// how the platform cuts the steps into rounds and shards. Shared by the server, which parses and
// stores them, and the dashboard's form. No TensorFlow.js here (the dashboard bundles this file).
import { OptionError, TRAIN_DEFAULTS, TRAIN_OPTION_NAMES, TrainOptions, parseTrainOptions } from '../engine/train/options';
import { AGGREGATIONS, Aggregation } from '../engine/aggregate/robust';

export interface RunOptions extends TrainOptions {
  /** Optimizer steps per round, split among the round's shards. */
  readonly stepsPerRound: number;
  /** Shards (parallel workers) per round. */
  readonly shardsPerRound: number;
  /** How a round's shards are combined: FEDAVG, or a rule that tolerates a minority of bad updates. */
  readonly aggregation: Aggregation;
}

export const RUN_DEFAULTS = { ...TRAIN_DEFAULTS, stepsPerRound: 50, aggregation: 'FEDAVG' } as const;

const ROUND_OPTIONS = {
  stepsPerRound: 'the steps per round',
  shardsPerRound: 'the shards per round',
} as const;

/** Parses a run's options; `shardsPerRound` defaults to `defaultShards` (the workers online). */
export function parseRunOptions(raw: unknown, defaultShards = 1): RunOptions {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new OptionError('', 'run options must be an object of named values');
  const given = raw as Record<string, unknown>;
  const train: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(given)) if (!(k in ROUND_OPTIONS) && k !== 'aggregation') train[k] = v;
  const options = parseTrainOptions(train);
  const count = (name: keyof typeof ROUND_OPTIONS, fallback: number): number => {
    const v = given[name] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 100_000) throw new OptionError(name, `${ROUND_OPTIONS[name]} must be an integer from 1 to 100000 (got ${String(v)})`);
    return v;
  };
  const aggregation = given.aggregation ?? RUN_DEFAULTS.aggregation;
  if (!AGGREGATIONS.includes(aggregation as Aggregation)) throw new OptionError('aggregation', `the aggregation must be one of ${AGGREGATIONS.join(', ')} (got ${String(aggregation)})`);
  return Object.freeze({
    ...options, stepsPerRound: count('stepsPerRound', RUN_DEFAULTS.stepsPerRound), shardsPerRound: count('shardsPerRound', defaultShards), aggregation: aggregation as Aggregation,
  });
}

/** The engine's part of a run's options. */
export function trainOptionsOf(o: RunOptions): TrainOptions {
  return Object.fromEntries(TRAIN_OPTION_NAMES.filter((k) => o[k] !== undefined).map((k) => [k, o[k]])) as unknown as TrainOptions;
}
