// Partune's engine: the ViT, strategies, training, checkpoints and deltas. TensorFlow.js only,
// so the same code runs in a Node worker and in a browser tab.
export * from './vit/config';
export * from './vit/params';
export * as model from './vit/model';
export * from './tuning/strategy';
export * from './data/dataset';
export * from './data/batches';
export * from './data/packed';
export * from './train/schedule';
export * from './train/adamw';
export * from './train/trainable';
export * from './train/loop';
export * from './train/prefix-cache';
export * from './weights/safetensors';
export * from './weights/mappings';
export * from './weights/checkpoint';
export * from './weights/delta';
export { registerMatMulGradient } from './vit/matmul-gradient';
export { installWasmKernels } from './kernels/install';
export { geluWithSlope } from './kernels/gelu';
export { overrideKernel, productPlan } from './kernels/override';
export { declareTransposedProductsFast } from './vit/products';
export * from './tuning/angles';
export * from './aggregate/soup';
export * from './weights/state';
export * from './aggregate/fedavg';
export * from './train/shard';
export * from './aggregate/soup-report';
