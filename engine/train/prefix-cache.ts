// Frozen-prefix cache. When a strategy leaves the first k blocks frozen and the images are not
// augmented, what enters block k depends on the image alone: compute it once (first epoch),
// then train later epochs from the cache, skipping the frozen forward entirely. Host memory,
// bounded by a byte budget (rows beyond it are recomputed), f32 (exact) or f16 (half the bytes).
import * as tf from '@tensorflow/tfjs';
import { f16ToF32, f32ToF16 } from '../weights/safetensors';

export interface PrefixCacheOptions {
  readonly maxBytes: number;
  readonly dtype: 'f32' | 'f16';
}

export class PrefixCache {
  private readonly slotOf: Int32Array;
  private readonly rowSize: number;
  private readonly capacity: number;
  private readonly rows: Float32Array | Uint16Array;
  private used = 0;
  hits = 0;
  misses = 0;

  /** rowShape: the per-image shape, e.g. (T, D) tokens or (D) pooled features. */
  constructor(count: number, private readonly rowShape: readonly number[], opts: PrefixCacheOptions) {
    this.rowSize = rowShape.reduce((a, b) => a * b, 1);
    const bytesPerRow = this.rowSize * (opts.dtype === 'f16' ? 2 : 4);
    this.capacity = Math.min(count, Math.floor(opts.maxBytes / bytesPerRow));
    this.slotOf = new Int32Array(count).fill(-1);
    this.rows = opts.dtype === 'f16' ? new Uint16Array(this.capacity * this.rowSize) : new Float32Array(this.capacity * this.rowSize);
  }

  get bytes(): number {
    return this.rows.byteLength;
  }

  get cachedRows(): number {
    return this.used;
  }

  hasAll(indices: ArrayLike<number>): boolean {
    for (let i = 0; i < indices.length; i++) if (this.slotOf[indices[i]] < 0) return false;
    return true;
  }

  /** Stores what fits of a batch's prefix (row i belongs to image indices[i]). */
  async store(indices: ArrayLike<number>, prefix: tf.Tensor): Promise<void> {
    if (this.used >= this.capacity) return;
    const values = (await prefix.data()) as Float32Array;
    for (let i = 0; i < indices.length && this.used < this.capacity; i++) {
      if (this.slotOf[indices[i]] >= 0) continue;
      const slot = this.used++;
      this.slotOf[indices[i]] = slot;
      const src = values.subarray(i * this.rowSize, (i + 1) * this.rowSize);
      if (this.rows instanceof Float32Array) this.rows.set(src, slot * this.rowSize);
      else for (let j = 0; j < this.rowSize; j++) this.rows[slot * this.rowSize + j] = f32ToF16(src[j]);
    }
  }

  gather(indices: ArrayLike<number>): tf.Tensor {
    const out = new Float32Array(indices.length * this.rowSize);
    for (let i = 0; i < indices.length; i++) {
      const at = this.slotOf[indices[i]] * this.rowSize;
      if (this.rows instanceof Float32Array) out.set(this.rows.subarray(at, at + this.rowSize), i * this.rowSize);
      else for (let j = 0; j < this.rowSize; j++) out[i * this.rowSize + j] = f16ToF32(this.rows[at + j]);
    }
    return tf.tensor(out, [indices.length, ...this.rowShape]);
  }
}
