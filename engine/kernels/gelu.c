// Exact GELU and its slope in one pass, for TensorFlow.js's wasm backend, where composing them
// from Erf, Exp and elementwise ops costs ~20% of a training step (scalar exp and erf, eleven
// passes over the activations). WebAssembly SIMD, freestanding like matmul.c.
//   y = x * Phi(x),  slope = Phi(x) + x * phi(x)
// Phi through Abramowitz & Stegun 7.1.26 (absolute error <= 7.5e-8; tfjs's own erf uses the same
// formula), evaluated as Phi(-|x|) and reflected; phi and the erf term share one exp(-x^2 / 2).
#include <wasm_simd128.h>

#define SPLAT wasm_f32x4_splat

// exp(x) for x <= 0: Cephes' range reduction and degree-6 polynomial (relative error ~1e-7).
static inline v128_t exp_nonpositive(v128_t x) {
  x = wasm_f32x4_max(x, SPLAT(-87.0f));
  const v128_t n = wasm_f32x4_nearest(wasm_f32x4_mul(x, SPLAT(1.44269504088896341f)));
  v128_t r = wasm_f32x4_sub(x, wasm_f32x4_mul(n, SPLAT(0.693359375f)));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, SPLAT(-2.12194440e-4f)));
  v128_t p = SPLAT(1.9875691500e-4f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), SPLAT(1.3981999507e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), SPLAT(8.3334519073e-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), SPLAT(4.1665795894e-2f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), SPLAT(1.6666665459e-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), SPLAT(5.0000001201e-1f));
  const v128_t y = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_mul(p, r), r), r), SPLAT(1.0f));
  const v128_t two_n = wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_trunc_sat_f32x4(n), wasm_i32x4_splat(127)), 23);
  return wasm_f32x4_mul(y, two_n);
}

// n is a multiple of 4 (the host pads); x, y and slope are 16-byte aligned byte offsets.
__attribute__((export_name("gelu_with_slope")))
void gelu_with_slope(const float *x, float *y, float *slope, int n) {
  for (int i = 0; i < n; i += 4) {
    const v128_t v = wasm_v128_load(x + i);
    const v128_t e = exp_nonpositive(wasm_f32x4_mul(wasm_f32x4_mul(v, v), SPLAT(-0.5f)));
    // erf(z) = 1 - poly(t) e, z = |x| / sqrt(2), t = 1 / (1 + p z)
    const v128_t z = wasm_f32x4_mul(wasm_f32x4_abs(v), SPLAT(0.70710678118654752f));
    const v128_t t = wasm_f32x4_div(SPLAT(1.0f), wasm_f32x4_add(SPLAT(1.0f), wasm_f32x4_mul(z, SPLAT(0.3275911f))));
    v128_t q = SPLAT(1.061405429f);
    q = wasm_f32x4_add(wasm_f32x4_mul(q, t), SPLAT(-1.453152027f));
    q = wasm_f32x4_add(wasm_f32x4_mul(q, t), SPLAT(1.421413741f));
    q = wasm_f32x4_add(wasm_f32x4_mul(q, t), SPLAT(-0.284496736f));
    q = wasm_f32x4_add(wasm_f32x4_mul(q, t), SPLAT(0.254829592f));
    const v128_t tail = wasm_f32x4_mul(wasm_f32x4_mul(wasm_f32x4_mul(q, t), e), SPLAT(0.5f)); // Phi(-|x|)
    const v128_t cdf = wasm_v128_bitselect(tail, wasm_f32x4_sub(SPLAT(1.0f), tail), wasm_f32x4_lt(v, SPLAT(0.0f)));
    const v128_t pdf = wasm_f32x4_mul(e, SPLAT(0.39894228040143268f));
    wasm_v128_store(y + i, wasm_f32x4_mul(v, cdf));
    wasm_v128_store(slope + i, wasm_f32x4_add(cdf, wasm_f32x4_mul(v, pdf)));
  }
}
