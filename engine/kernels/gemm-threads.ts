// The GEMM's threads: workers that instantiate the same module on the same shared memory and take
// a part of each product. The host starts them (Web Workers in a tab, worker_threads in Node);
// the engine only speaks through a control block of shared integers, so it stays platform-free.
// A part is a range of batch items, rows or columns: every output element is summed in the same
// order whatever the split, so results do not depend on the thread count. Threads live as long as
// their page or process (Node's are unref'd).

/** What a thread is started with. */
export interface GemmThreadInit {
  readonly module: WebAssembly.Module;
  readonly memory: WebAssembly.Memory;
  readonly control: SharedArrayBuffer;
  /** 1..threads-1; thread 0 is the caller. */
  readonly index: number;
}

/** Starts a thread that calls `runGemmThread(init)`; resolves once it has said it is ready. */
export type SpawnGemmThread = (init: GemmThreadInit) => Promise<void>;

/** gemm()'s 18 arguments (gemm.c), one part of a product. */
export type GemmArgs = readonly number[];

const SLOT = 32; // ints per thread: generation, done, then the arguments
const GENERATION = 0;
const DONE = 1;
const ARGS = 2;
const STALL_MS = 60_000;

interface GemmExport { gemm(...args: number[]): void }

/** The body of a GEMM thread: waits for work, runs its part, says it is done. */
export function runGemmThread(init: GemmThreadInit, ready: () => void): void {
  const { exports } = new WebAssembly.Instance(init.module, { env: { memory: init.memory } }) as unknown as { exports: GemmExport };
  const control = new Int32Array(init.control);
  const slot = init.index * SLOT;
  ready();
  for (let seen = 0; ;) {
    Atomics.wait(control, slot + GENERATION, seen);
    seen = Atomics.load(control, slot + GENERATION);
    let done = seen;
    try {
      exports.gemm(...Array.from(control.subarray(slot + ARGS, slot + ARGS + 18)));
    } catch {
      done = -seen; // the caller throws; this thread stays ready for the next product
    }
    Atomics.store(control, slot + DONE, done);
    Atomics.notify(control, slot + DONE);
  }
}

export class GemmThreads {
  private generation = 0;

  private constructor(private readonly control: Int32Array, readonly count: number) {}

  static async start(count: number, module: WebAssembly.Module, memory: WebAssembly.Memory, spawn: SpawnGemmThread): Promise<GemmThreads> {
    const buffer = new SharedArrayBuffer(count * SLOT * 4);
    await Promise.all(Array.from({ length: count - 1 }, (_, i) => spawn({ module, memory, control: buffer, index: i + 1 })));
    return new GemmThreads(new Int32Array(buffer), count);
  }

  /** Runs parts[0] here and the others on the threads; returns when all are done. */
  run(parts: GemmArgs[], here: (args: GemmArgs) => void): void {
    if (parts.length > this.count) throw new Error(`${parts.length} parts for ${this.count} threads`);
    const generation = ++this.generation;
    for (let t = 1; t < parts.length; t++) {
      const slot = t * SLOT;
      this.control.set(parts[t], slot + ARGS);
      Atomics.store(this.control, slot + GENERATION, generation);
      Atomics.notify(this.control, slot + GENERATION);
    }
    here(parts[0]);
    // A page's main thread may not block: spin, the other parts are about as long as ours.
    const started = Date.now();
    for (let t = 1; t < parts.length; t++) {
      for (let spins = 0; ; spins++) {
        const done = Atomics.load(this.control, t * SLOT + DONE);
        if (done === generation) break;
        if (done === -generation) throw new Error(`GEMM thread ${t} failed on its part of a product`);
        if (spins % 1_000_000 === 0 && Date.now() - started > STALL_MS) throw new Error(`GEMM thread ${t} did not finish its part in ${STALL_MS / 1000} s`);
      }
    }
  }
}
