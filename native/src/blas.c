// Matrix products for the wasm backend on the machine's BLAS. Operands live in the wasm heap and
// are read and written in place: the heap is passed as a Float32Array and offsets are in floats.
// The BLAS is opened at run time (dlopen), so the addon builds with only a C compiler and Node's
// headers, and loads (reporting no BLAS) where none is installed.
#include <dlfcn.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int n);
typedef int (*get_threads_fn)(void);
typedef char *(*get_config_fn)(void);

static sgemm_fn sgemm;
static set_threads_fn set_threads;
static get_threads_fn get_threads;
static get_config_fn get_config;

static napi_value throw_error(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

static napi_value make_string(napi_env env, const char *s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

// open(path): dlopen a CBLAS library; returns its description, or throws with dlerror's reason.
static napi_value open_library(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[1024];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len + 1 >= sizeof path) {
    return throw_error(env, "open(path: string)");
  }
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!handle) return throw_error(env, dlerror());
  sgemm_fn gemm = (sgemm_fn)dlsym(handle, "cblas_sgemm");
  if (!gemm) {
    dlclose(handle);
    char message[1200];
    snprintf(message, sizeof message, "%s has no cblas_sgemm", path);
    return throw_error(env, message);
  }
  sgemm = gemm;
  set_threads = (set_threads_fn)dlsym(handle, "openblas_set_num_threads");
  get_threads = (get_threads_fn)dlsym(handle, "openblas_get_num_threads");
  get_config = (get_config_fn)dlsym(handle, "openblas_get_config");
  return make_string(env, get_config ? get_config() : path);
}

// setThreads(n): where the library can (OpenBLAS); returns the count in effect, or 0 if unknown.
static napi_value set_thread_count(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t n = 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &n) != napi_ok || n < 1) return throw_error(env, "setThreads(n >= 1)");
  if (set_threads) set_threads(n);
  napi_value out;
  napi_create_int32(env, get_threads ? get_threads() : 0, &out);
  return out;
}

// gemm(heap, batch, m, n, k, transposeA, transposeB, a, aStride, b, bStride, c, bias):
// for each i < batch, c[i] (m x n) = op(a[i]) op(b[i]) (+ bias (n) when bias >= 0). Every
// offset and stride is in floats within heap; a stride of 0 broadcasts one matrix.
static napi_value gemm(napi_env env, napi_callback_info info) {
  size_t argc = 13;
  napi_value argv[13];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!sgemm) return throw_error(env, "no BLAS is open");
  if (argc != 13) return throw_error(env, "gemm takes 13 arguments");
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float32_array) {
    return throw_error(env, "gemm: heap must be a Float32Array");
  }
  int64_t v[12];
  for (int i = 0; i < 12; i++) {
    if (napi_get_value_int64(env, argv[i + 1], &v[i]) != napi_ok) return throw_error(env, "gemm: arguments must be numbers");
  }
  const int64_t batch = v[0], m = v[1], n = v[2], k = v[3], ta = v[4], tb = v[5];
  const int64_t a = v[6], aStride = v[7], b = v[8], bStride = v[9], c = v[10], bias = v[11];
  const int64_t last = batch - 1;
  if (batch < 1 || m < 1 || n < 1 || k < 1 || a < 0 || b < 0 || c < 0 || aStride < 0 || bStride < 0 ||
      a + last * aStride + m * k > (int64_t)length || b + last * bStride + k * n > (int64_t)length ||
      c + batch * m * n > (int64_t)length || (bias >= 0 && bias + n > (int64_t)length)) {
    return throw_error(env, "gemm: operands outside the heap");
  }
  float *heap = (float *)data;
  for (int64_t i = 0; i < batch; i++) {
    float *out = heap + c + i * m * n;
    float beta = 0.0f;
    if (bias >= 0) {
      for (int64_t r = 0; r < m; r++) memcpy(out + r * n, heap + bias, n * sizeof(float));
      beta = 1.0f;
    }
    sgemm(ROW_MAJOR, ta ? TRANS : NO_TRANS, tb ? TRANS : NO_TRANS, (int)m, (int)n, (int)k, 1.0f,
          heap + a + i * aStride, ta ? (int)m : (int)k, heap + b + i * bStride, tb ? (int)k : (int)n, beta, out, (int)n);
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, open_library, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, set_thread_count, NULL, NULL, NULL, napi_default, NULL},
      {"gemm", NULL, gemm, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof *props, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
