// The reproduction study's experiments as data: which base model, which data, what budget. The
// full plan is what docs/RESULTS.md reports; the quick plan runs the same code on a sliver of
// the data in minutes (a smoke test, numbers meaningless).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PRESET_NAMES, VitConfig, parseVitConfig } from '../engine';
import { FASHION_MNIST_DIR } from '../node/data';

/** ../shared/data beside the project, or PARTUNE_SHARED_DATA. */
export const SHARED_DATA = process.env.PARTUNE_SHARED_DATA ?? join(__dirname, '..', '..', '..', 'shared', 'data');

/** The same recipe for every strategy; only the learning rate is chosen per strategy. */
export interface Recipe {
  readonly epochs: number;
  readonly batchSize: number;
  readonly weightDecay: number;
  readonly labelSmoothing: number;
  /** Learning rates tried for each strategy (seed 0, scored on the held-out split). */
  readonly lrGrid: readonly number[];
  /** The linear probe's grid: a frozen backbone wants larger steps. */
  readonly linearProbeLrGrid: readonly number[];
  readonly seeds: readonly number[];
  /** Angle-guided strategies: top-K layers per group, both directions. */
  readonly angleTopK: readonly number[];
}

export interface Pretraining {
  readonly config: VitConfig;
  /** Source classes, relabelled 0..n-1. */
  readonly classes: readonly number[];
  readonly trainImages: number;
  readonly testImages: number;
  readonly epochs: number;
  readonly lr: number;
  readonly batchSize: number;
}

export interface Experiment {
  readonly id: string;
  readonly title: string;
  /** A checkpoint file (+ config.json) or, with `pretrain`, made by the study itself. */
  readonly base: { readonly checkpoint: string; readonly config: string; readonly description: string } | { readonly pretrain: Pretraining; readonly description: string };
  readonly data: { readonly spec: string; readonly description: string; readonly classes?: readonly number[] };
  readonly trainImages: number;
  readonly heldOutImages: number;
  readonly testImages: number;
  readonly recipe: Recipe;
  /** Files this experiment needs; it is skipped with this list when one is missing. */
  readonly needs: readonly string[];
}

export const PARTIAL_PRESETS = PRESET_NAMES.filter((n) => n !== 'full' && n !== 'linear-probe');

const RECIPE: Recipe = {
  epochs: 2, batchSize: 32, weightDecay: 0.05, labelSmoothing: 0.1,
  lrGrid: [3e-4, 1e-3, 3e-3, 1e-2], linearProbeLrGrid: [1e-3, 3e-3, 1e-2, 3e-2], seeds: [0, 1, 2], angleTopK: [2, 3],
};

// The third-party model adapts with larger steps (a sweep from 3e-4 peaked at its top, 1e-2).
const FASHION_RECIPE: Recipe = { ...RECIPE, lrGrid: [1e-3, 3e-3, 1e-2, 3e-2], linearProbeLrGrid: [3e-3, 1e-2, 3e-2, 1e-1] };

const QUICK_RECIPE: Recipe = { ...RECIPE, epochs: 1, lrGrid: [1e-3, 3e-3], linearProbeLrGrid: [3e-3, 1e-2], seeds: [0, 1], angleTopK: [3] };

// A ViT pre-trained by the study on CIFAR-10 classes 0-4: patch 8 (16 tokens) keeps it trainable
// from scratch on two CPU cores in minutes.
const CIFAR_VIT: VitConfig = parseVitConfig({
  imageSize: 32, channels: 3, patchSize: 8, dim: 96, depth: 6, heads: 3, headDim: 32, mlpDim: 384,
  activation: 'gelu', qkvBias: true, pool: 'cls', layerNormEps: 1e-6, numClasses: 5,
});

function experiments(quick: boolean): Experiment[] {
  const vitMnist = join(SHARED_DATA, 'vit-mnist-500k');
  const cifar = join(SHARED_DATA, 'cifar10');
  return [
    {
      id: 'mnist-to-fashion',
      title: 'MNIST-pretrained ViT -> Fashion-MNIST',
      base: {
        checkpoint: join(vitMnist, 'model.safetensors'), config: join(vitMnist, 'config.json'),
        description: 'vit-mnist-500k: a third-party ViT (dim 64, depth 6, 4 heads, 499,722 parameters) trained on MNIST, 97.21% top-1 there',
      },
      data: { spec: `fashion-mnist:${FASHION_MNIST_DIR}`, description: 'Fashion-MNIST (Debian dataset-fashion-mnist)' },
      trainImages: quick ? 256 : 1500,
      heldOutImages: quick ? 128 : 1000,
      testImages: quick ? 256 : 2000,
      recipe: quick ? QUICK_RECIPE : FASHION_RECIPE,
      needs: [join(vitMnist, 'model.safetensors'), FASHION_MNIST_DIR],
    },
    {
      id: 'cifar-0-4-to-5-9',
      title: 'CIFAR-10 classes 0-4 (pre-trained here) -> classes 5-9',
      base: {
        pretrain: quick
          ? { config: CIFAR_VIT, classes: [0, 1, 2, 3, 4], trainImages: 1000, testImages: 200, epochs: 1, lr: 1e-3, batchSize: 64 }
          : { config: CIFAR_VIT, classes: [0, 1, 2, 3, 4], trainImages: 25000, testImages: 2000, epochs: 4, lr: 1e-3, batchSize: 64 },
        description: 'a ViT (patch 8, dim 96, depth 6, 3 heads) pre-trained by this script from scratch on CIFAR-10 airplane, automobile, bird, cat, deer',
      },
      data: { spec: `cifar10:${cifar}`, description: 'CIFAR-10 dog, frog, horse, ship, truck (classes 5-9, relabelled 0-4)', classes: [5, 6, 7, 8, 9] },
      trainImages: quick ? 256 : 2000,
      heldOutImages: quick ? 128 : 1000,
      testImages: quick ? 256 : 2000,
      recipe: quick ? QUICK_RECIPE : RECIPE,
      needs: [join(cifar, 'data_batch_1.bin')],
    },
  ];
}

export function plan(quick: boolean, only?: string): Experiment[] {
  const all = experiments(quick);
  if (only === undefined) return all;
  const picked = all.filter((e) => e.id === only);
  if (!picked.length) throw new Error(`unknown experiment '${only}'; known: ${all.map((e) => e.id).join(', ')}`);
  return picked;
}

export const missingInputs = (e: Experiment): string[] => e.needs.filter((p) => !existsSync(p));
