// A run's schedule: the engine's step arithmetic cut into rounds (never across an epoch end, so
// each epoch ends with an evaluation as in a single-process run), and rounds into shards.
import { OptionError, trainingSchedule } from '../../engine';
import type { RunOptions } from '../../protocol/run-options';
import type { NewShard, Plan } from '../state/records';

/** A plan of at most `maxSteps` optimizer steps (PARTUNE_MAX_RUN_STEPS), checked before any round is built. */
export function makePlan(o: RunOptions, trainCount: number, maxSteps = Infinity): Plan {
  const { trainImages, stepsPerEpoch, totalSteps } = trainingSchedule(o, trainCount);
  if (!(totalSteps <= maxSteps)) {
    throw new OptionError(o.maxSteps !== undefined ? 'maxSteps' : 'epochs', `${totalSteps} steps exceed this server's limit of ${maxSteps} per run (PARTUNE_MAX_RUN_STEPS)`);
  }
  if (Math.ceil(totalSteps / o.stepsPerRound) + Math.ceil(totalSteps / stepsPerEpoch) > 1_000_000) {
    throw new OptionError('stepsPerRound', `${totalSteps} steps in rounds of ${o.stepsPerRound} make too many rounds: take more steps per round`);
  }
  const rounds: [number, number][] = [];
  for (let from = 0; from < totalSteps; ) {
    const epochEnd = Math.min(totalSteps, (Math.floor(from / stepsPerEpoch) + 1) * stepsPerEpoch);
    const to = Math.min(from + o.stepsPerRound, epochEnd);
    rounds.push([from, to]);
    from = to;
  }
  return { trainImages, stepsPerEpoch, totalSteps, shardsPerRound: o.shardsPerRound, rounds };
}

/**
 * A round's steps as contiguous windows, one per shard (never more shards than steps), each issued
 * as `replicas` replicas that must agree (a QUORUM run's quorum; else 1).
 */
export function shardWindows(round: readonly [number, number], shards: number, replicas = 1): Omit<NewShard, 'pack' | 'registeredOnly'>[] {
  const [from, to] = round;
  const n = Math.min(shards, to - from);
  return Array.from({ length: n * replicas }, (_, i) => {
    const k = Math.floor(i / replicas);
    return { index: k, replica: i % replicas, need: replicas, fromStep: from + Math.floor(((to - from) * k) / n), toStep: from + Math.floor(((to - from) * (k + 1)) / n) };
  });
}

/** The most steps one shard of the plan trains (what its window pack holds). */
export const longestWindow = (plan: Plan): number =>
  plan.rounds.reduce((most, [from, to]) => Math.max(most, Math.ceil((to - from) / Math.min(plan.shardsPerRound, to - from))), 1);

/** Replicas each shard is issued as when its round begins. */
export const replicasOf = (o: RunOptions): number => (o.verification === 'QUORUM' ? o.quorum : 1);

/** Evaluate after a round that ends an epoch or the run. */
export const evaluatesAfter = (plan: Plan, round: number): boolean => {
  const to = plan.rounds[round][1];
  return to === plan.totalSteps || to % plan.stepsPerEpoch === 0;
};
