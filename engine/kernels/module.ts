// The one WebAssembly module of C kernels (matmul.c, gelu.c), instantiated once with its own
// memory. Kernels copy their operands in, run, and copy results out into tfjs's wasm heap. For
// GELU at width 192 the copies are ~4 of a call's ~9 ms (the composed ops took ~35 ms); working in
// tfjs's own memory would save them. Plain WebAssembly: Node and browsers alike.
import { KERNELS_WASM_BASE64 } from './kernels-wasm';

interface Exports {
  readonly __heap_base: WebAssembly.Global;
  scratch_bytes(m: number, k: number, n: number): number;
  batched_matmul(a: number, b: number, out: number, scratch: number, batch: number, m: number, k: number, n: number,
    ta: number, tb: number, aStride: number, bStride: number): void;
  gelu_with_slope(x: number, y: number, slope: number, n: number): void;
}

export interface KernelModule {
  readonly exports: Exports;
  /** Makes `bytes` of working memory available from the returned byte offset (16-byte aligned). */
  reserve(bytes: number): number;
  /** A float view of the module's memory (valid until the next reserve). */
  floats(offset: number, length: number): Float32Array;
}

export function decodeBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

let loading: Promise<KernelModule> | undefined;

export function kernelModule(): Promise<KernelModule> {
  loading ??= (async () => {
    const memory = new WebAssembly.Memory({ initial: 32 });
    const module = await WebAssembly.compile(decodeBase64(KERNELS_WASM_BASE64) as Uint8Array<ArrayBuffer>);
    const exports = (await WebAssembly.instantiate(module, { env: { memory } })).exports as unknown as Exports;
    const base = Math.ceil(Number(exports.__heap_base.value) / 16) * 16;
    return {
      exports,
      reserve(bytes: number): number {
        const need = base + bytes;
        if (need > memory.buffer.byteLength) memory.grow(Math.ceil((need - memory.buffer.byteLength) / 65536));
        return base;
      },
      floats: (offset: number, length: number) => new Float32Array(memory.buffer, offset, length),
    };
  })();
  return loading;
}
