// A window of a run's steps reads a known list of training records: the run's seeded trainLimit
// subset, shuffled per epoch by the run's seed. Packing exactly those records, in the order the
// steps read them, lets a worker download a shard's data rather than the whole training split.
import { Dataset, permutation, subset } from '../data/dataset';
import { TrainOptions, trainingSchedule } from './options';

export interface StepWindow {
  readonly from: number;
  readonly to: number;
}

/**
 * The records steps [from, to) read, batch after batch, as indices into the whole training split
 * of `available` records (before trainLimit's selection). The loop's own arithmetic: one
 * permutation of the selected images per epoch, `batchSize` of it per step.
 */
export function windowRecords(available: number, o: TrainOptions, window: StepWindow): Uint32Array {
  const { trainImages, stepsPerEpoch, totalSteps } = trainingSchedule(o, available);
  const { from, to } = window;
  if (!(Number.isInteger(from) && Number.isInteger(to) && from >= 0 && from < to && to <= totalSteps)) {
    throw new Error(`step window [${from}, ${to}) is empty or outside the run's ${totalSteps} steps`);
  }
  // trainLimit's subset (selectData's `limit`): selected image i is record chosen[i].
  const chosen = trainImages < available ? permutation(available, o.seed).subarray(0, trainImages) : undefined;
  const out = new Uint32Array((to - from) * o.batchSize);
  let order: Uint32Array | undefined;
  let orderEpoch = -1;
  for (let step = from; step < to; step++) {
    const epoch = Math.floor(step / stepsPerEpoch);
    if (epoch !== orderEpoch) {
      order = permutation(trainImages, o.seed * 1009 + epoch);
      orderEpoch = epoch;
    }
    const b = step - epoch * stepsPerEpoch;
    for (let i = 0; i < o.batchSize; i++) {
      const selected = order![b * o.batchSize + i];
      out[(step - from) * o.batchSize + i] = chosen ? chosen[selected] : selected;
    }
  }
  return out;
}

/** The window's records of the whole training split, in step order (records read twice appear twice). */
export function packWindow(train: Dataset, o: TrainOptions, window: StepWindow): Dataset {
  return subset(train, windowRecords(train.count, o, window), `${train.name} steps ${window.from}-${window.to}`);
}

/** What a window pack of `steps` steps weighs, at most: its images and labels, plus a header. */
export const windowPackBytes = (steps: number, batchSize: number, recordBytes: number): number => steps * batchSize * (recordBytes + 1) + 4096;
