// What a training step holds, estimated from the architecture so that a run can choose, and record,
// a micro-batch that fits the worker that claims it. Calibrated on the wasm backend at 224
// (bench/vit224-bench.ts): tfjs keeps every forward activation until the backward pass ends, about
// 45 floats per token and channel per block, plus the attention maps; the estimate errs high.
import { VitConfig, numPatches } from '../vit/config';
import { countParams } from '../vit/params';

/** Bytes one image's activations hold at the end of a training step's backward pass. */
export function activationBytesPerImage(c: VitConfig): number {
  const tokens = numPatches(c) + 1;
  return 4 * c.depth * (tokens * c.dim * 45 + c.heads * tokens * tokens * 3);
}

/** Bytes that do not grow with the batch: weights, a second copy while updating, and gradients plus two moments of the tuned tensors. */
export function fixedTrainingBytes(c: VitConfig, tunedParams: number): number {
  return 4 * (2 * countParams(c) + 4 * tunedParams);
}

/** The memory a tab's WebAssembly heap may use (of wasm's 4 GiB): micro-batches are sized to fit it by default. */
export const DEFAULT_STEP_MEMORY = 2 * 2 ** 30;
/** Room the runtime and the step's batch of pixels keep. */
const HEADROOM = 256 * 2 ** 20;

/** The largest micro-batch whose step fits `budget` bytes (at least 1, at most the batch). */
export function defaultMicroBatch(c: VitConfig, tunedParams: number, batchSize: number, budget = DEFAULT_STEP_MEMORY): number {
  const room = budget - HEADROOM - fixedTrainingBytes(c, tunedParams);
  return Math.max(1, Math.min(batchSize, Math.floor(room / activationBytesPerImage(c))));
}

/** What a step with micro-batches of `microBatch` needs, for a claim's memory check. */
export const stepMemoryBytes = (c: VitConfig, tunedParams: number, microBatch: number): number =>
  HEADROOM + fixedTrainingBytes(c, tunedParams) + microBatch * activationBytesPerImage(c);
