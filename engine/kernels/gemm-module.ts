// The engine's GEMM (gemm.c) as a module: picks the build this engine can run (relaxed-SIMD FMA
// where WebAssembly has it, else SIMD128), learns whether its FMA is fused on this CPU (that
// decides the bits), and runs products on one thread or on a pool sharing its memory.
import { GEMM_WASM_BASE64 } from './gemm-wasm';
import { GemmArgs, GemmThreads, SpawnGemmThread } from './gemm-threads';
import { decodeBase64 } from './module';

/** What orders the float operations: fused multiply-adds, relaxed ones left unfused, or SIMD128 mul + add. */
export type GemmArithmetic = 'fma' | 'relaxed-unfused' | 'simd128';

interface GemmExports {
  readonly __heap_base: WebAssembly.Global;
  gemm_scratch_bytes(): number;
  gemm(...args: number[]): void;
}

const PAGE = 65536;
const SHARED_MAX_PAGES = 16384; // the shared builds' ceiling, 1 GiB
const MR = 4; // gemm.c's tile: row parts start on a tile row, column parts on a tile column
const NR = 8;

export interface GemmOptions {
  /** Threads including the caller; more than 1 needs `spawn` and SharedArrayBuffer. */
  readonly threads?: number;
  readonly spawn?: SpawnGemmThread;
  /** Takes the SIMD128 build even where relaxed SIMD exists (to compare). */
  readonly simd128Only?: boolean;
}

/** [item0, item1, row0, row1, col0, col1]: the part of a product one thread computes. */
type Part = [number, number, number, number, number, number];

export interface GemmProduct {
  readonly batch: number;
  readonly m: number;
  readonly k: number;
  readonly n: number;
  readonly ta: boolean;
  readonly tb: boolean;
  /** Elements between batch items; 0 broadcasts the operand. */
  readonly aStride: number;
  readonly bStride: number;
}

/**
 * Whether the relaxed build's multiply-add is fused on this CPU: 1 x -1 + (1+e)(1-e) is -e^2
 * fused and 0 when the product is rounded first (e = 2^-13). A 1x2 by 2x1 product at the heap base.
 */
function fused(exports: GemmExports, memory: WebAssembly.Memory): boolean {
  const e = 2 ** -13;
  const at = Math.ceil(Number(exports.__heap_base.value) / 16) * 16;
  const f = new Float32Array(memory.buffer, at, 5);
  f.set([1, 1 + e, -1, 1 - e, 0]);
  exports.gemm(at, at + 8, at + 16, 0, at + 32, 1, 2, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1);
  return new Float32Array(memory.buffer, at + 16, 1)[0] !== 0;
}

export class GemmModule {
  private readonly base: number;
  private readonly scratchBytes: number;

  private constructor(
    readonly arithmetic: GemmArithmetic,
    private readonly exports: GemmExports,
    private readonly memory: WebAssembly.Memory,
    private readonly threads: GemmThreads | null,
  ) {
    this.base = Math.ceil(Number(exports.__heap_base.value) / 16) * 16;
    this.scratchBytes = exports.gemm_scratch_bytes();
  }

  get threadCount(): number {
    return this.threads?.count ?? 1;
  }

  static async create(options: GemmOptions = {}): Promise<GemmModule> {
    const threads = options.threads ?? 1;
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`GEMM threads must be a positive integer, got ${threads}`);
    if (threads > 1 && (!options.spawn || typeof SharedArrayBuffer === 'undefined')) throw new Error('GEMM threads need a thread host and SharedArrayBuffer (a cross-origin isolated page)');
    const relaxedBytes = decodeBase64(GEMM_WASM_BASE64.relaxed) as Uint8Array<ArrayBuffer>;
    const relaxed = !options.simd128Only && WebAssembly.validate(relaxedBytes);
    const shared = threads > 1;
    const source = relaxed ? (shared ? GEMM_WASM_BASE64.relaxedShared : relaxedBytes) : shared ? GEMM_WASM_BASE64.simd128Shared : GEMM_WASM_BASE64.simd128;
    const module = await WebAssembly.compile(typeof source === 'string' ? (decodeBase64(source) as Uint8Array<ArrayBuffer>) : source);
    const memory = new WebAssembly.Memory(shared ? { initial: 64, maximum: SHARED_MAX_PAGES, shared: true } : { initial: 64 });
    const exports = (await WebAssembly.instantiate(module, { env: { memory } })).exports as unknown as GemmExports;
    const pool = shared ? await GemmThreads.start(threads, module, memory, options.spawn!) : null;
    return new GemmModule(relaxed ? (fused(exports, memory) ? 'fma' : 'relaxed-unfused') : 'simd128', exports, memory, pool);
  }

  /** out = op(a) op(b) (+ bias) over the batch; operands are copied in and the result out. */
  product(p: GemmProduct, a: Float32Array, b: Float32Array, out: Float32Array, bias?: Float32Array): void {
    const parts = this.split(p);
    const offsets = this.reserve([a.length, b.length, out.length, bias?.length ?? 0], parts.length);
    if (!offsets) throw new Error(`a ${p.m}x${p.k}x${p.n} product (batch ${p.batch}) does not fit the GEMM's memory`);
    const [aOff, bOff, outOff, biasOff, scratchOff] = offsets;
    const heap = new Float32Array(this.memory.buffer);
    heap.set(a, aOff / 4);
    heap.set(b, bOff / 4);
    if (bias) heap.set(bias, biasOff / 4);
    const args = parts.map(([item0, item1, row0, row1, col0, col1], t): GemmArgs => [aOff, bOff, outOff, bias ? biasOff : 0, scratchOff + t * this.scratchBytes,
      p.m, p.k, p.n, p.ta ? 1 : 0, p.tb ? 1 : 0, p.aStride, p.bStride, item0, item1, row0, row1, col0, col1]);
    const here = (part: GemmArgs): void => this.exports.gemm(...part);
    if (this.threads && args.length > 1) this.threads.run(args, here);
    else here(args[0]);
    out.set(new Float32Array(this.memory.buffer, outOff, out.length));
  }

  /**
   * [item0, item1, row0, row1, col0, col1] per thread: batch items when there are enough, else
   * rows or columns, whichever leaves the smaller operand to be packed by every thread (a row
   * part packs all of op(b), a column part all of op(a)).
   */
  private split(p: GemmProduct): Part[] {
    const whole: Part = [0, p.batch, 0, p.m, 0, p.n];
    const t = Math.min(this.threadCount, Math.max(p.batch, Math.ceil(Math.max(p.m / MR, p.n / NR))));
    if (t <= 1 || 2 * p.m * p.k * p.n * p.batch < 1 << 18) return [whole];
    const share = (i: number, units: number, size: number, to: number): number => Math.min(to, Math.floor((i * units) / t) * size);
    return Array.from({ length: t }, (_, i): Part => {
      if (p.batch >= t) return [Math.floor((i * p.batch) / t), Math.floor(((i + 1) * p.batch) / t), 0, p.m, 0, p.n];
      if (p.m >= p.n) return [0, p.batch, share(i, Math.ceil(p.m / MR), MR, p.m), share(i + 1, Math.ceil(p.m / MR), MR, p.m), 0, p.n];
      return [0, p.batch, 0, p.m, share(i, Math.ceil(p.n / NR), NR, p.n), share(i + 1, Math.ceil(p.n / NR), NR, p.n)];
    });
  }

  /** Byte offsets of the float arrays, then of `scratches` scratch areas; grows memory; null past the ceiling. */
  private reserve(lengths: number[], scratches: number): number[] | null {
    const offsets: number[] = [];
    let at = this.base;
    for (const n of lengths) {
      offsets.push(at);
      at += Math.ceil((n * 4) / 16) * 16;
    }
    offsets.push(at);
    const need = at + scratches * this.scratchBytes;
    const have = this.memory.buffer.byteLength;
    if (need > have) {
      const pages = Math.ceil((need - have) / PAGE);
      try {
        this.memory.grow(pages);
      } catch {
        return null;
      }
    }
    return offsets;
  }
}
