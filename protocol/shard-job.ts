// The shard protocol's payload, shared by the server (which writes it), the Node worker and the
// browser tab (which read it): what to train, on which steps, from what, and what the update must
// say about itself. The job travels as JSON inside `claimShard`; a worker decodes it here, once.
import { z } from 'zod';
import { Normalization, StepWindow, Strategy, TrainOptions, parseStrategy, parseTrainOptions } from '../engine';
import { decode, normalizationSchema, parsedBy } from './decode';

export interface ShardJob {
  readonly runId: string;
  readonly round: number;
  readonly shardId: string;
  /** The lease's attempt: a heartbeat or completion for another attempt is refused. */
  readonly attempt: number;
  readonly strategy: Strategy;
  readonly numClasses: number;
  readonly normalization: Normalization;
  /** The run's options: the schedule spans the whole run, `trainLimit` selects its images. */
  readonly options: TrainOptions;
  /** The run's selected training images: the schedule's basis, whichever records a worker holds. */
  readonly trainImages: number;
  /** Global steps [from, to) of the run's schedule. */
  readonly window: StepWindow;
  readonly heartbeatSeconds: number;
}

/** A blob to fetch: a presigned URL, and what its bytes must hash to. */
export interface Download {
  readonly url: string;
  readonly sha256: string;
  readonly bytes: number;
}

/** A leased shard as a worker receives it. */
export interface Assignment {
  readonly shard: { readonly id: string; readonly round: number; readonly index: number };
  readonly job: ShardJob;
  readonly model: Download;
  /** The whole training split; empty when `records` is given. */
  readonly train: readonly Download[];
  /** The window's records only, in step order (engine/train/window.ts): all a shard reads. */
  readonly records: Download | null;
  readonly state: Download;
  /** Where to PUT the update (a training state, see engine/weights/state.ts). */
  readonly uploadUrl: string;
}

/** The label an update must carry: the server checks it against the shard it answers. */
export function expectedUpdateLabel(
  job: Pick<ShardJob, 'runId' | 'round' | 'shardId' | 'window'> & { readonly options: Pick<TrainOptions, 'batchSize'> },
): { run: string; round: number; shard: string; samples: number } {
  return { run: job.runId, round: job.round, shard: job.shardId, samples: (job.window.to - job.window.from) * job.options.batchSize };
}

const stepWindow = z.object({ from: z.number().int().min(0), to: z.number().int().min(1) }).refine((w) => w.to > w.from, 'the window is empty');

const shardJobSchema: z.ZodType<ShardJob, unknown> = z.object({
  runId: z.string().min(1),
  round: z.number().int().min(0),
  shardId: z.string().min(1),
  attempt: z.number().int().min(1),
  strategy: parsedBy(parseStrategy),
  numClasses: z.number().int().min(1),
  normalization: normalizationSchema,
  options: parsedBy(parseTrainOptions),
  trainImages: z.number().int().min(1),
  window: stepWindow,
  heartbeatSeconds: z.number().int().min(1),
});

/** Checks a job received over the wire; the engine's parsers check its strategy and options. */
export const decodeShardJob = (raw: unknown): ShardJob => decode(shardJobSchema, raw, 'malformed shard job');
