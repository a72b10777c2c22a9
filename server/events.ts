// Run events: published by the services, delivered to graphql-ws subscribers.
import { createPubSub } from '@graphql-yoga/subscription';

export type RunEventKind = 'STATUS' | 'ROUND' | 'SHARD' | 'EVALUATION' | 'WARNING' | 'WAITING' | 'ROLLBACK';

export interface RunEventPayload {
  readonly runId: string;
  readonly kind: RunEventKind;
  readonly status: string;
  readonly round: number;
  readonly step: number;
  readonly totalSteps: number;
  readonly progress: number;
  readonly trainLoss?: number;
  readonly testAccuracy?: number;
  readonly testLoss?: number;
  readonly message?: string;
  /** Whether anyone may follow the run: read once per event, not once per subscriber. */
  readonly public: boolean;
  readonly at: Date;
}

export const RUN_EVENTS = 'RUN_EVENTS';
export const pubSub = createPubSub<{ [RUN_EVENTS]: [RunEventPayload] }>();
export type PubSub = typeof pubSub;
