// Batched single-precision matrix product for TensorFlow.js's wasm backend, whose own batched
// BatchMatMul runs a scalar loop (1-4 GFLOPS). WebAssembly SIMD, 4x8 register tiles over
// zero-padded copies of the operands, so every tile is full and every load is aligned.
//
// Freestanding (no libc): the host grows memory and passes byte offsets.
//   out[b] = op(a[b]) x op(b[b]),  op = transpose when the flag is set,
//   a: (batch, m, k) or (batch, k, m) when ta;  b: (batch, k, n) or (batch, n, k) when tb.
// A batch stride of 0 broadcasts that operand.
#include <wasm_simd128.h>

#define TILE_M 4
#define TILE_N 8

static inline int round_up(int x, int to) { return (x + to - 1) / to * to; }

// Pads op(src) into dst (rows x cols_padded), zero-filled.
static void pack(const float *src, float *dst, int rows, int cols, int rows_p, int cols_p, int transposed) {
  for (int r = 0; r < rows_p; r++) {
    for (int c = 0; c < cols_p; c++) {
      float v = 0.0f;
      if (r < rows && c < cols) v = transposed ? src[c * rows + r] : src[r * cols + c];
      dst[r * cols_p + c] = v;
    }
  }
}

// c (mp x np) = a (mp x k) * b (k x np); mp % 4 == 0, np % 8 == 0.
static void tiles(const float *a, const float *b, float *c, int mp, int k, int np) {
  for (int i = 0; i < mp; i += TILE_M) {
    const float *a0 = a + i * k;
    for (int j = 0; j < np; j += TILE_N) {
      v128_t c00 = wasm_f32x4_splat(0), c01 = wasm_f32x4_splat(0);
      v128_t c10 = wasm_f32x4_splat(0), c11 = wasm_f32x4_splat(0);
      v128_t c20 = wasm_f32x4_splat(0), c21 = wasm_f32x4_splat(0);
      v128_t c30 = wasm_f32x4_splat(0), c31 = wasm_f32x4_splat(0);
      const float *bp = b + j;
      for (int p = 0; p < k; p++, bp += np) {
        v128_t b0 = wasm_v128_load(bp);
        v128_t b1 = wasm_v128_load(bp + 4);
        v128_t x0 = wasm_f32x4_splat(a0[p]);
        v128_t x1 = wasm_f32x4_splat(a0[k + p]);
        v128_t x2 = wasm_f32x4_splat(a0[2 * k + p]);
        v128_t x3 = wasm_f32x4_splat(a0[3 * k + p]);
        c00 = wasm_f32x4_add(c00, wasm_f32x4_mul(x0, b0));
        c01 = wasm_f32x4_add(c01, wasm_f32x4_mul(x0, b1));
        c10 = wasm_f32x4_add(c10, wasm_f32x4_mul(x1, b0));
        c11 = wasm_f32x4_add(c11, wasm_f32x4_mul(x1, b1));
        c20 = wasm_f32x4_add(c20, wasm_f32x4_mul(x2, b0));
        c21 = wasm_f32x4_add(c21, wasm_f32x4_mul(x2, b1));
        c30 = wasm_f32x4_add(c30, wasm_f32x4_mul(x3, b0));
        c31 = wasm_f32x4_add(c31, wasm_f32x4_mul(x3, b1));
      }
      float *cp = c + i * np + j;
      wasm_v128_store(cp, c00); wasm_v128_store(cp + 4, c01); cp += np;
      wasm_v128_store(cp, c10); wasm_v128_store(cp + 4, c11); cp += np;
      wasm_v128_store(cp, c20); wasm_v128_store(cp + 4, c21); cp += np;
      wasm_v128_store(cp, c30); wasm_v128_store(cp + 4, c31);
    }
  }
}

// Bytes of scratch space `batched_matmul` needs after `scratch`.
__attribute__((export_name("scratch_bytes")))
int scratch_bytes(int m, int k, int n) {
  int mp = round_up(m, TILE_M), np = round_up(n, TILE_N);
  return (mp * k + k * np + mp * np) * 4;
}

__attribute__((export_name("batched_matmul")))
void batched_matmul(const float *a, const float *b, float *out, float *scratch, int batch, int m, int k, int n,
                    int ta, int tb, int a_stride, int b_stride) {
  int mp = round_up(m, TILE_M), np = round_up(n, TILE_N);
  float *ap = scratch, *bp = scratch + mp * k, *cp = bp + k * np;
  for (int t = 0; t < batch; t++) {
    pack(a + t * a_stride, ap, m, k, mp, k, ta);
    pack(b + t * b_stride, bp, k, n, k, np, tb);
    tiles(ap, bp, cp, mp, k, np);
    float *o = out + t * m * n;
    for (int r = 0; r < m; r++)
      for (int c = 0; c < n; c++) o[r * n + c] = cp[r * np + c];
  }
}
