// Cache-blocked single-precision GEMM for browsers' WebAssembly, where TensorFlow.js's products run
// on XNNPACK without FMA and fall to a scalar loop when an operand is transposed or batched.
//   out[t] = op(a[t]) x op(b[t]) (+ bias),  op = transpose when the flag is set,
//   a: (batch, m, k) or (batch, k, m) when ta;  b: (batch, k, n) or (batch, n, k) when tb.
// A batch stride of 0 broadcasts that operand. GotoBLAS loop order: a (KC x NC) panel of op(b) and
// an (MC x KC) block of op(a) are packed into zero-padded slivers, then a 4x8 register tile runs
// over them; with RELAXED the tile multiplies and adds in one relaxed-SIMD FMA.
//
// Each call computes the rows [row0, row1) and columns [col0, col1) of the batch items
// [item0, item1): threads take disjoint ranges and every output element sums its k terms in the
// same order whatever the split, so a result does not depend on the thread count. Freestanding (no libc, no static data): the
// host grows memory and passes byte offsets, and each thread its own scratch.
#include <wasm_simd128.h>

#define MR 4
#define NR 8
#define KC 256
#define MC 64
#define NC 512

#ifdef RELAXED
#define MADD(x, y, acc) __builtin_wasm_relaxed_madd_f32x4((x), (y), (acc))
#else
#define MADD(x, y, acc) wasm_f32x4_add((acc), wasm_f32x4_mul((x), (y)))
#endif

static inline int min(int x, int y) { return x < y ? x : y; }

// kc x nc of op(b) from (p0, j0) into NR-wide slivers, p-major inside each sliver.
static void pack_b(const float *b, float *dst, int k, int n, int tb, int p0, int kc, int j0, int nc) {
  for (int j = 0; j < nc; j += NR) {
    for (int p = 0; p < kc; p++) {
      for (int c = 0; c < NR; c++) {
        int col = j0 + j + c;
        *dst++ = j + c < nc ? (tb ? b[col * k + p0 + p] : b[(p0 + p) * n + col]) : 0.0f;
      }
    }
  }
}

// mc x kc of op(a) from (i0, p0) into MR-tall slivers, p-major inside each sliver.
static void pack_a(const float *a, float *dst, int m, int k, int ta, int i0, int mc, int p0, int kc) {
  for (int i = 0; i < mc; i += MR) {
    for (int p = 0; p < kc; p++) {
      for (int r = 0; r < MR; r++) {
        int row = i0 + i + r;
        *dst++ = i + r < mc ? (ta ? a[(p0 + p) * m + row] : a[row * k + p0 + p]) : 0.0f;
      }
    }
  }
}

// c (rows x cols of an MR x NR tile, row stride ldc) = or += the kc-term product of two slivers.
#define STORE(row, lo, hi, add)                                                   \
  do {                                                                            \
    wasm_v128_store((row), (add) ? wasm_f32x4_add(wasm_v128_load(row), lo) : lo);           \
    wasm_v128_store((row) + 4, (add) ? wasm_f32x4_add(wasm_v128_load((row) + 4), hi) : hi); \
  } while (0)

static void tile(const float *ap, const float *bp, float *c, float *edge, int ldc, int kc, int rows, int cols, int accumulate) {
  v128_t c00 = wasm_f32x4_splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (int p = 0; p < kc; p++, ap += MR, bp += NR) {
    const v128_t b0 = wasm_v128_load(bp), b1 = wasm_v128_load(bp + 4);
    v128_t x = wasm_v128_load32_splat(ap);
    c00 = MADD(x, b0, c00);
    c01 = MADD(x, b1, c01);
    x = wasm_v128_load32_splat(ap + 1);
    c10 = MADD(x, b0, c10);
    c11 = MADD(x, b1, c11);
    x = wasm_v128_load32_splat(ap + 2);
    c20 = MADD(x, b0, c20);
    c21 = MADD(x, b1, c21);
    x = wasm_v128_load32_splat(ap + 3);
    c30 = MADD(x, b0, c30);
    c31 = MADD(x, b1, c31);
  }
  // A partial tile lands in `edge` first: no stack, so that threads need no stack of their own.
  float *dst = rows == MR && cols == NR ? c : edge;
  int ld = dst == c ? ldc : NR;
  int add = accumulate && dst == c;
  STORE(dst, c00, c01, add);
  STORE(dst + ld, c10, c11, add);
  STORE(dst + 2 * ld, c20, c21, add);
  STORE(dst + 3 * ld, c30, c31, add);
  if (dst == c) return;
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < cols; j++) c[r * ldc + j] = accumulate ? c[r * ldc + j] + edge[r * NR + j] : edge[r * NR + j];
}

// Bytes of scratch one thread needs.
__attribute__((export_name("gemm_scratch_bytes")))
int gemm_scratch_bytes(void) {
  return (MC * KC + KC * NC + MR * NR) * 4;
}

__attribute__((export_name("gemm")))
void gemm(const float *a, const float *b, float *out, const float *bias, float *scratch, int m, int k, int n,
          int ta, int tb, int a_stride, int b_stride, int item0, int item1, int row0, int row1, int col0, int col1) {
  float *ap = scratch, *bp = scratch + MC * KC, *edge = bp + KC * NC;
  for (int t = item0; t < item1; t++) {
    const float *at = a + t * a_stride, *bt = b + t * b_stride;
    float *o = out + t * m * n;
    for (int j0 = col0; j0 < col1; j0 += NC) {
      int nc = min(NC, col1 - j0);
      for (int p0 = 0; p0 < k; p0 += KC) {
        int kc = min(KC, k - p0);
        pack_b(bt, bp, k, n, tb, p0, kc, j0, nc);
        for (int i0 = row0; i0 < row1; i0 += MC) {
          int mc = min(MC, row1 - i0);
          pack_a(at, ap, m, k, ta, i0, mc, p0, kc);
          for (int j = 0; j < nc; j += NR) {
            for (int i = 0; i < mc; i += MR) {
              tile(ap + i * kc, bp + j * kc, o + (i0 + i) * n + j0 + j, edge, n, kc, min(MR, mc - i), min(NR, nc - j), p0 > 0);
            }
          }
        }
      }
      if (bias) {
        for (int r = row0; r < row1; r++)
          for (int j = j0; j < j0 + nc; j++) o[r * n + j] += bias[j];
      }
    }
  }
}
