// Kernels of ops_cpu.h. Portable C++; the loops carry `omp simd` hints (compiled with
// -fopenmp-simd, no OpenMP runtime) and each entry point is cloned for AVX-512 and AVX2 with
// gcc's target_clones, resolved once at load time: no illegal instruction on older CPUs.
#include "ops_cpu.h"

#include "qmm_internal.h"  // the kernels' thread pool (parallel_for)

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define MLXRS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MLXRS_CLONES
#endif

namespace mlxrs_ops {
namespace {

inline float dot(const float* a, const float* b, int n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void rms_row(const float* x, const float* w, float eps, float* y, int dim) {
  const float inv = 1.0f / std::sqrt(dot(x, x, dim) / float(dim) + eps);
  if (w) {
#pragma omp simd
    for (int i = 0; i < dim; ++i) y[i] = x[i] * inv * w[i];
  } else {
#pragma omp simd
    for (int i = 0; i < dim; ++i) y[i] = x[i] * inv;
  }
}

// "Rotate half" RoPE of one head in place: pairs (i, i + d/2).
inline void rope_head(float* v, int head_dim, const float* cosv, const float* sinv) {
  const int h = head_dim / 2;
#pragma omp simd
  for (int i = 0; i < h; ++i) {
    const float x1 = v[i], x2 = v[i + h];
    v[i] = x1 * cosv[i] - x2 * sinv[i];
    v[i + h] = x2 * cosv[i] + x1 * sinv[i];
  }
}

}  // namespace

MLXRS_CLONES
void rms_norm(const float* x, const float* w, float eps, float* y, size_t rows, int dim) {
  for (size_t r = 0; r < rows; ++r) rms_row(x + r * dim, w, eps, y + r * dim, dim);
}

MLXRS_CLONES
void swiglu(const float* gu, float* y, size_t rows, int inter) {
  for (size_t r = 0; r < rows; ++r) {
    const float* g = gu + r * 2 * size_t(inter);
    const float* u = g + inter;
    float* o = y + r * size_t(inter);
#pragma omp simd
    for (int i = 0; i < inter; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

namespace {

// One (sequence, query head) pair of a decode step: scores, softmax, weighted sum of values.
struct HeadTask {
  const DecodeAttention* a;
  const float* q;        // [batch * heads, head_dim], normed, roped and scaled
  const float* k_cache;
  const float* v_cache;
  float* out;
  float* scores;         // [batch * heads, offset + 1]

  static void run(void* ctx, int task) {
    const auto& t = *static_cast<const HeadTask*>(ctx);
    const DecodeAttention& a = *t.a;
    const int D = a.head_dim, T = a.offset + 1;
    const int b = task / a.heads, h = task % a.heads, j = h / (a.heads / a.kv_heads);
    const size_t base = (size_t(b) * a.kv_heads + j) * a.capacity * D;
    const float* keys = t.k_cache + base;
    const float* values = t.v_cache + base;
    const float* qh = t.q + size_t(task) * D;
    float* sc = t.scores + size_t(task) * T;
    mlxrs_qmm::active_kernels().attend(qh, keys, values, T, D, sc,
                                       t.out + size_t(task) * D);
  }
};

}  // namespace

MLXRS_CLONES
void decode_attention(const DecodeAttention& a, const float* qkv, float* k_cache,
                      float* v_cache, float* out) {
  const int D = a.head_dim, H = a.heads, Hkv = a.kv_heads, half = D / 2;
  const int width = (H + 2 * Hkv) * D, T = a.offset + 1;
  std::vector<float> cosv(half), sinv(half), q(size_t(a.batch) * H * D),
      scores(size_t(a.batch) * H * T);
  for (int i = 0; i < half; ++i) {
    const float angle = float(a.offset) * a.inv_freq[i];
    cosv[i] = std::cos(angle);
    sinv[i] = std::sin(angle);
  }
  for (int b = 0; b < a.batch; ++b) {
    const float* row = qkv + size_t(b) * width;
    // Queries: norm, RoPE, then the softmax scale folded in.
    for (int h = 0; h < H; ++h) {
      float* qh = q.data() + (size_t(b) * H + h) * D;
      if (a.q_norm)
        rms_row(row + size_t(h) * D, a.q_norm, a.norm_eps, qh, D);
      else
        std::memcpy(qh, row + size_t(h) * D, sizeof(float) * D);
      rope_head(qh, D, cosv.data(), sinv.data());
#pragma omp simd
      for (int i = 0; i < D; ++i) qh[i] *= a.scale;
    }
    // The new key (norm, RoPE) and value, written at `offset`.
    for (int j = 0; j < Hkv; ++j) {
      const size_t at = ((size_t(b) * Hkv + j) * a.capacity + a.offset) * D;
      const float* kj = row + size_t(H + j) * D;
      if (a.k_norm)
        rms_row(kj, a.k_norm, a.norm_eps, k_cache + at, D);
      else
        std::memcpy(k_cache + at, kj, sizeof(float) * D);
      rope_head(k_cache + at, D, cosv.data(), sinv.data());
      std::memcpy(v_cache + at, row + size_t(H + Hkv + j) * D, sizeof(float) * D);
    }
  }
  HeadTask task{&a, q.data(), k_cache, v_cache, out, scores.data()};
  // Heads in parallel once there is enough work to pay for waking the pool.
  const int tasks = a.batch * H;
  if (size_t(tasks) * T * D >= 16384)
    mlxrs_qmm::parallel_for(tasks, HeadTask::run, &task);
  else
    for (int i = 0; i < tasks; ++i) HeadTask::run(&task, i);
}

}  // namespace mlxrs_ops

#define MLXRS_EXPORT extern "C" __attribute__((visibility("default")))

MLXRS_EXPORT void mlxrs_rms_norm_raw(const float* x, const float* w, float eps, float* y,
                                     size_t rows, int dim) {
  if (x && y && dim > 0) mlxrs_ops::rms_norm(x, w, eps, y, rows, dim);
}

MLXRS_EXPORT void mlxrs_swiglu_raw(const float* gu, float* y, size_t rows, int inter) {
  if (gu && y && inter > 0) mlxrs_ops::swiglu(gu, y, rows, inter);
}

// Returns 1 (touching nothing) for inconsistent parameters, else 0.
MLXRS_EXPORT int mlxrs_decode_attention_raw(const float* qkv, float* k_cache, float* v_cache,
                                            float* out, const float* inv_freq,
                                            const float* q_norm, const float* k_norm,
                                            float norm_eps, float scale, int batch, int heads,
                                            int kv_heads, int head_dim, int capacity,
                                            int offset) {
  if (!qkv || !k_cache || !v_cache || !out || !inv_freq || batch < 0 || heads <= 0 ||
      kv_heads <= 0 || heads % kv_heads != 0 || head_dim <= 0 || head_dim % 2 != 0 ||
      offset < 0 || offset >= capacity)
    return 1;
  mlxrs_ops::DecodeAttention a{batch,  heads, kv_heads,  head_dim, capacity, offset,
                               scale,  norm_eps, inv_freq, q_norm,   k_norm};
  mlxrs_ops::decode_attention(a, qkv, k_cache, v_cache, out);
  return 0;
}
