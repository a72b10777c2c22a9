// The services, wired once: each takes the platform and the services it calls, so the arrows
// between them are visible here (no service reaches another through a mutable reference).
import type { Platform } from './platform';
import { Datasets } from './catalog/datasets';
import { Models } from './catalog/models';
import { Uploads } from './catalog/uploads';
import { AngleProbeStages } from './runs/angle-probe';
import { RunCreation } from './runs/create';
import { Deltas } from './runs/deltas';
import { Predictions } from './catalog/predictions';
import { RunEvents } from './runs/events';
import { RunQueries } from './runs/queries';
import { Scheduler } from './runs/scheduler';
import { SoupStages } from './runs/soup';
import { Strategies } from './runs/strategies';
import { TrainingStages } from './runs/training';
import { Completion } from './shards/completion';
import { Leases } from './shards/leases';
import { RunShapes } from './shards/run-shapes';
import { Slots } from './shards/slots';
import { Retention } from './runs/retention';
import { Verification } from './shards/verification';
import { Withdrawal } from './shards/withdrawal';
import { Workers } from './shards/workers';

export interface Services {
  readonly platform: Platform;
  readonly uploads: Uploads;
  readonly models: Models;
  readonly datasets: Datasets;
  readonly runs: RunQueries;
  readonly creation: RunCreation;
  readonly scheduler: Scheduler;
  readonly strategies: Strategies;
  readonly deltas: Deltas;
  readonly predictions: Predictions;
  readonly workers: Workers;
  readonly leases: Leases;
  readonly completion: Completion;
  readonly verification: Verification;
  readonly slots: Slots;
  readonly retention: Retention;
}

export function createServices(platform: Platform): Services {
  const uploads = new Uploads(platform);
  const models = new Models(platform, uploads);
  const datasets = new Datasets(platform, uploads);
  const runs = new RunQueries(platform);
  const shapes = new RunShapes(platform);
  const events = new RunEvents(platform.state, platform.log);
  const retention = new Retention(platform);
  const scheduler = new Scheduler(platform, {
    FINETUNE: new TrainingStages(platform, shapes), ANGLE_PROBE: new AngleProbeStages(platform, shapes), SOUP: new SoupStages(platform, events),
  }, events, runs, retention);
  const strategies = new Strategies(platform, models, runs);
  const workers = new Workers(platform);
  const creation = new RunCreation(platform, models, datasets, strategies, workers, scheduler, events, runs);
  const withdrawal = new Withdrawal(platform, scheduler, events);
  const verification = new Verification(platform, workers, shapes, scheduler, events, withdrawal);
  withdrawal.onRejudge((key) => verification.judge(key));
  const leases = new Leases(platform, workers, runs, scheduler, verification, events);
  const slots = new Slots(platform);
  const completion = new Completion(platform, workers, leases, shapes, verification, events, slots);
  const deltas = new Deltas(platform, models, runs);
  return {
    platform, uploads, models, datasets, runs, creation, scheduler, strategies, deltas, workers, leases, completion,
    predictions: new Predictions(platform, uploads, models, deltas, runs),
    verification, slots, retention,
  };
}
