// Replaces the wasm backend's BatchMatMul for batched operands (attention's q.k^T and attn.v,
// forward and backward) with the SIMD kernel of matmul.c: tfjs-wasm runs those in a scalar loop
// at 0.2-4 GFLOPS, the kernel at 15-19. Unbatched products keep the stock XNNPACK path.
// Plain WebAssembly: works in Node and in browsers.
import * as tf from '@tensorflow/tfjs';
import { MATMUL_WASM_BASE64 } from './matmul-wasm';

interface KernelExports {
  readonly __heap_base: WebAssembly.Global;
  scratch_bytes(m: number, k: number, n: number): number;
  batched_matmul(a: number, b: number, out: number, scratch: number, batch: number, m: number, k: number, n: number,
    ta: number, tb: number, aStride: number, bStride: number): void;
}

interface WasmBackendInternals {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
}

let installed: Promise<void> | undefined;

function decodeBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

class Kernel {
  private constructor(private readonly memory: WebAssembly.Memory, private readonly ex: KernelExports) {}

  static async create(): Promise<Kernel> {
    const memory = new WebAssembly.Memory({ initial: 32 });
    const module = await WebAssembly.compile(decodeBase64(MATMUL_WASM_BASE64) as Uint8Array<ArrayBuffer>);
    const instance = await WebAssembly.instantiate(module, { env: { memory } });
    return new Kernel(memory, instance.exports as unknown as KernelExports);
  }

  /** out (batch, m, n) = op(a) x op(b); a stride of 0 broadcasts a batch-1 operand. */
  run(a: Float32Array, b: Float32Array, out: Float32Array, batch: number, m: number, k: number, n: number, ta: boolean, tb: boolean): void {
    const base = Number(this.ex.__heap_base.value);
    const aOff = base;
    const bOff = aOff + a.length * 4;
    const outOff = bOff + b.length * 4;
    const scratchOff = outOff + out.length * 4;
    const need = scratchOff + this.ex.scratch_bytes(m, k, n);
    if (need > this.memory.buffer.byteLength) this.memory.grow(Math.ceil((need - this.memory.buffer.byteLength) / 65536));
    new Float32Array(this.memory.buffer, aOff, a.length).set(a);
    new Float32Array(this.memory.buffer, bOff, b.length).set(b);
    const aStride = a.length === m * k ? 0 : m * k;
    const bStride = b.length === k * n ? 0 : k * n;
    this.ex.batched_matmul(aOff, bOff, outOff, scratchOff, batch, m, k, n, ta ? 1 : 0, tb ? 1 : 0, aStride, bStride);
    out.set(new Float32Array(this.memory.buffer, outOff, out.length));
  }
}

const size = (shape: readonly number[]): number => shape.reduce((x, y) => x * y, 1);

/** Installs the kernel for the 'wasm' backend (idempotent). Returns once it is in place. */
export function installBatchedMatMul(): Promise<void> {
  installed ??= Kernel.create().then((kernel) => {
    const stock = tf.getKernel('BatchMatMul', 'wasm');
    if (!stock) throw new Error('the wasm backend is not loaded: import @tensorflow/tfjs-backend-wasm first');
    tf.unregisterKernel('BatchMatMul', 'wasm');
    tf.registerKernel({
      ...stock,
      kernelFunc: (args) => {
        const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
        const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
        const ra = a.shape.length;
        const rb = b.shape.length;
        const batchA = size(a.shape.slice(0, -2));
        const batchB = size(b.shape.slice(0, -2));
        const sameBatch = a.shape.slice(0, -2).every((d, i) => d === b.shape[i]);
        const broadcastable = sameBatch || batchA === 1 || batchB === 1;
        if (ra !== rb || ra < 3 || Math.max(batchA, batchB) === 1 || !broadcastable || a.dtype !== 'float32' || b.dtype !== 'float32') {
          return stock.kernelFunc(args);
        }
        const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
        const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
        const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
        const batchShape = (batchA >= batchB ? a : b).shape.slice(0, -2);
        const backend = args.backend as unknown as WasmBackendInternals;
        const out = backend.makeOutput([...batchShape, m, n], 'float32');
        kernel.run(backend.typedArrayFromHeap(a), backend.typedArrayFromHeap(b), backend.typedArrayFromHeap(out), size(batchShape), m, k, n, transposeA, transposeB);
        return out;
      },
    });
  });
  return installed;
}
