// The study's splits. The target task's train and held-out images come from disjoint parts of
// its training set (held-out picks learning rates and greedy soups); the test split is scored
// only for the tables. Fixed permutations: every strategy and seed sees the same images.
import { Dataset, permutation, subset } from '../engine';
import { loadData } from '../node/data';
import { Experiment, Pretraining } from './experiments';

export interface TargetData {
  readonly train: Dataset;
  readonly heldOut: Dataset;
  readonly test: Dataset;
}

/** The images of `classes`, relabelled 0..n-1 in that order. */
export function selectClasses(ds: Dataset, classes: readonly number[], name: string): Dataset {
  const index = new Map(classes.map((c, i) => [c, i]));
  const keep: number[] = [];
  for (let i = 0; i < ds.count; i++) if (index.has(ds.labels[i])) keep.push(i);
  const out = subset(ds, keep, name);
  const labels = out.labels.map((l) => index.get(l)!);
  return { ...out, labels, classes: classes.length };
}

function take(ds: Dataset, from: number, count: number, seed: number, name: string): Dataset {
  if (from + count > ds.count) throw new Error(`${ds.name} has ${ds.count} images; the study needs ${from + count}`);
  return subset(ds, permutation(ds.count, seed).subarray(from, from + count), name);
}

export function targetData(e: Experiment): TargetData {
  const raw = loadData(e.data.spec);
  const classes = e.data.classes;
  const trainPool = classes ? selectClasses(raw.train, classes, `${raw.train.name}[${classes.join(',')}]`) : raw.train;
  const testPool = classes ? selectClasses(raw.test, classes, `${raw.test.name}[${classes.join(',')}]`) : raw.test;
  return {
    train: take(trainPool, 0, e.trainImages, 1001, `${trainPool.name}:train`),
    heldOut: take(trainPool, e.trainImages, e.heldOutImages, 1001, `${trainPool.name}:held-out`),
    test: take(testPool, 0, e.testImages, 1002, `${testPool.name}:test`),
  };
}

export function sourceData(e: Experiment, p: Pretraining): { train: Dataset; test: Dataset } {
  const raw = loadData(e.data.spec);
  const train = selectClasses(raw.train, p.classes, `${raw.train.name}[${p.classes.join(',')}]`);
  const test = selectClasses(raw.test, p.classes, `${raw.test.name}[${p.classes.join(',')}]`);
  return { train: take(train, 0, p.trainImages, 2001, train.name), test: take(test, 0, p.testImages, 2002, test.name) };
}
