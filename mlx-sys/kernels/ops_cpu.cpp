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

// tanh(z), vectorisable: (1 - e) / (1 + e) with e = e^(-2|z|) (relative error ~1e-6 from
// |z| = 1/8 on), its Taylor polynomial to z^7 below (error < 2e-9 relative), sign restored.
inline float tanh_f32(float z) {
  const float a = std::fabs(z), z2 = z * z;
  const float e = mlxrs_qmm::exp_nonpositive(-2.f * a);
  const float big = (1.f - e) / (1.f + e);
  const float small = a * (1.f + z2 * (-1.f / 3 + z2 * (2.f / 15 + z2 * (-17.f / 315))));
  return std::copysign(a < 0.125f ? small : big, z);
}

// x[i] = cap * tanh(x[i] / cap), i < n.
inline void softcap_run(float* x, size_t n, float cap) {
  const float inv = 1.0f / cap;
#pragma omp simd
  for (size_t i = 0; i < n; ++i) x[i] = cap * tanh_f32(x[i] * inv);
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

// y += r, kept out of line so that its operands are rounded values.
__attribute__((noinline)) static void add_rows(const float* r, float* y, int dim) {
#pragma omp simd
  for (int i = 0; i < dim; ++i) y[i] = r[i] + y[i];
}

MLXRS_CLONES
void rms_norm_residual(const float* x, const float* w, float eps, const float* residual,
                       float* y, size_t rows, int dim) {
  // The norm rounded first, then the add (as rms_norm followed by an add computes it): the
  // two are kept apart so that the compiler cannot contract them into one fused multiply-add.
  for (size_t r = 0; r < rows; ++r) {
    const float* rr = residual + r * dim;
    float* yr = y + r * dim;
    rms_row(x + r * dim, w, eps, yr, dim);
    add_rows(rr, yr, dim);
  }
}

MLXRS_CLONES
void argmax_rows(const float* x, uint32_t* out, size_t rows, int n) {
  for (size_t r = 0; r < rows; ++r) {
    const float* v = x + r * size_t(n);
    if (v[0] != v[0]) {  // NaN first: every comparison with it is false
      out[r] = 0;
      continue;
    }
    // The largest non-NaN value (NaN never compares greater), then its first position.
    float m = v[0];
#pragma omp simd reduction(max : m)
    for (int i = 1; i < n; ++i) m = v[i] > m ? v[i] : m;
    int j = 0;
    while (v[j] != m) ++j;
    out[r] = uint32_t(j);
  }
}

MLXRS_CLONES
void swiglu(const float* gu, float* y, size_t rows, int inter) {
  for (size_t r = 0; r < rows; ++r) {
    const float* g = gu + r * 2 * size_t(inter);
    const float* u = g + inter;
    float* o = y + r * size_t(inter);
#pragma omp simd
    for (int i = 0; i < inter; ++i) {
      // silu(g) = g / (1 + e^-g) = g e^g / (1 + e^g): take the form whose exponential has a
      // non-positive argument (vectorisable, no overflow).
      const float e = mlxrs_qmm::exp_nonpositive(-std::fabs(g[i]));
      o[i] = (g[i] >= 0.f ? g[i] : g[i] * e) / (1.0f + e) * u[i];
    }
  }
}

MLXRS_CLONES
void gelu_tanh_glu(const float* gu, float* y, size_t rows, int inter) {
  // 0.5 (1 + tanh(u)) = sigmoid(2u): gelu_tanh(g) = g * sigmoid(2u), u = sqrt(2/pi) (g +
  // 0.044715 g^3), in the form whose exponential has a non-positive argument (as swiglu).
  constexpr float k2 = 2.0f * 0.7978845608028654f;  // 2 sqrt(2 / pi)
  for (size_t r = 0; r < rows; ++r) {
    const float* g = gu + r * 2 * size_t(inter);
    const float* u = g + inter;
    float* o = y + r * size_t(inter);
#pragma omp simd
    for (int i = 0; i < inter; ++i) {
      const float x = g[i], z = k2 * (x + 0.044715f * x * x * x);
      const float e = mlxrs_qmm::exp_nonpositive(-std::fabs(z));
      o[i] = (z >= 0.f ? x : x * e) / (1.0f + e) * u[i];
    }
  }
}

MLXRS_CLONES
void softcap(float* x, size_t n, float cap) { softcap_run(x, n, cap); }

namespace {

// The cache slots a query at position `pos` reads: positions [lo, pos], lo = max(0, pos -
// window + 1) (0 without a window), position p in slot p % capacity: one run of consecutive
// slots, or two when the run wraps around the end of a ring. The caller guarantees pos - lo
// < capacity (cache_fits).
struct Slots {
  int begin[2], len[2];
  int runs;
  int count() const { return len[0] + (runs > 1 ? len[1] : 0); }
};

inline Slots visible_slots(int64_t pos, int window, int capacity) {
  const int64_t lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
  const int64_t count = pos - lo + 1;
  if (count >= capacity) return {{0, 0}, {capacity, 0}, 1};  // every slot, in any order
  const int s0 = int(lo % capacity);
  if (s0 + count <= capacity) return {{s0, 0}, {int(count), 0}, 1};
  return {{s0, 0}, {capacity - s0, int(s0 + count - capacity)}, 2};
}

// Softmax over the runs of `row` in place (scores soft-capped first when softcap > 0), every
// other element of row[0, n) set to 0; runs are [begin, begin + len) within [0, n).
// Returns 1 / (sum of the exponentials).
inline float masked_softmax(float* row, int n, const int* begin, const int* len, int runs,
                            float softcap) {
  float mx = -INFINITY;
  for (int r = 0; r < runs; ++r) {
    float* v = row + begin[r];
    if (softcap > 0.f) softcap_run(v, size_t(len[r]), softcap);
    for (int t = 0; t < len[r]; ++t) mx = v[t] > mx ? v[t] : mx;
  }
  float sum = 0.f;
  for (int r = 0; r < runs; ++r) {
    float* v = row + begin[r];
    for (int t = 0; t < len[r]; ++t) sum += (v[t] = mlxrs_qmm::exp_nonpositive(v[t] - mx));
  }
  // Zero the gaps: runs in increasing order of begin.
  int order[2] = {0, 1};
  if (runs > 1 && begin[1] < begin[0]) order[0] = 1, order[1] = 0;
  int at = 0;
  for (int k = 0; k < runs; ++k) {
    const int r = order[k];
    for (; at < begin[r]; ++at) row[at] = 0.f;
    at = begin[r] + len[r];
  }
  for (; at < n; ++at) row[at] = 0.f;
  return 1.0f / sum;
}

// Rows of attention that share one key/value head: the queries of a group of heads for a
// range of tokens. Row r is (head h0 + r / tokens, token r % tokens) at position
// offset + r % tokens, and sees the slots visible_slots gives (without a window or a soft cap:
// slots [0, offset + r % tokens], the original fast path). CT: the caches' element type, f32
// or IEEE half (f16 bits, widened as read).
template <typename CT>
struct GroupTask {
  const CachedAttention* a;
  const float* q;     // [batch, heads, tokens, head_dim], normed, roped and scaled
  const CT* k_cache;
  const CT* v_cache;
  float* out;         // [batch, tokens, heads * head_dim]
  float* scores;      // decode: one row of `row_floats` floats per (group, row)
  int row_floats;     // scores a row may need: min(offset + tokens, capacity)

  int rows() const { return (a->heads / a->kv_heads) * a->tokens; }
  // Whether a window or a soft cap is in play (else the original per-row / BLAS code runs).
  bool general() const { return a->window > 0 || a->softcap > 0.f; }

  // Decode: one row of one group per task, spread over the pool.
  static void run_row(void* ctx, int task) {
    const auto& t = *static_cast<const GroupTask<CT>*>(ctx);
    t.rows_by_row(task / t.rows(), task % t.rows(), task % t.rows() + 1,
                  t.scores + size_t(task) * t.row_floats);
  }

  // Where group `g`'s keys, values and query rows are, and where row r's output goes.
  struct View {
    const CT *keys, *values;
    const float* q;
    int b, j;
  };
  View view(int g) const {
    const int D = a->head_dim, group = a->heads / a->kv_heads;
    const int b = g / a->kv_heads, j = g % a->kv_heads;
    const size_t base = (size_t(b) * a->kv_heads + j) * a->capacity * D;
    // The group's query rows are contiguous in q: heads j*group .. j*group + group - 1.
    return {k_cache + base, v_cache + base,
            q + (size_t(b) * a->heads + size_t(j) * group) * a->tokens * D, b, j};
  }

  // The kernels' f32 and half-precision entry points.
  static void attend(const mlxrs_qmm::Kernels& k, const float* q, const float* keys,
                     const float* values, int T, int D, float* sc, float* o) {
    k.attend(q, keys, values, T, D, sc, o);
  }
  static void attend(const mlxrs_qmm::Kernels& k, const float* q, const uint16_t* keys,
                     const uint16_t* values, int T, int D, float* sc, float* o) {
    k.attend_h(q, keys, values, T, D, sc, o);
  }
  static void dots(const mlxrs_qmm::Kernels& k, const float* q, const float* keys, int T,
                   int D, float* sc) {
    k.dots(q, keys, T, D, sc);
  }
  static void dots(const mlxrs_qmm::Kernels& k, const float* q, const uint16_t* keys, int T,
                   int D, float* sc) {
    k.dots_h(q, keys, T, D, sc);
  }
  static void mix(const mlxrs_qmm::Kernels& k, const float* p, const float* values, int T,
                  int D, float scale, float* o, bool accumulate) {
    k.mix(p, values, T, D, scale, o, accumulate);
  }
  static void mix(const mlxrs_qmm::Kernels& k, const float* p, const uint16_t* values, int T,
                  int D, float scale, float* o, bool accumulate) {
    k.mix_h(p, values, T, D, scale, o, accumulate);
  }

  // Group g's keys and values as f32 for BLAS, slots [0, slots): the cache itself, or
  // widened once into k32 / v32 for all of the group's row blocks.
  struct Wide {
    const float *keys, *values;
  };
  Wide wide(int g, int slots, std::vector<float>& k32, std::vector<float>& v32) const {
    const View v = view(g);
    return {widen(v.keys, size_t(slots) * a->head_dim, k32),
            widen(v.values, size_t(slots) * a->head_dim, v32)};
  }
  static const float* widen(const float* rows, size_t, std::vector<float>&) { return rows; }
  static const float* widen(const uint16_t* rows, size_t count, std::vector<float>& scratch) {
    scratch.resize(count);
    mlxrs_qmm::active_kernels().from_half(rows, scratch.data(), count);
    return scratch.data();
  }
  float* out_row(const View& v, int r) const {
    const int D = a->head_dim, L = a->tokens, h = v.j * (a->heads / a->kv_heads) + r / L;
    return out + (size_t(v.b) * L + r % L) * a->heads * D + size_t(h) * D;
  }

  // Rows [r0, r1) of group g, one at a time (sc: room for row_floats floats).
  void rows_by_row(int g, int r0, int r1, float* sc) const {
    const View v = view(g);
    const int D = a->head_dim, L = a->tokens;
    const auto& k = mlxrs_qmm::active_kernels();
    if (!general()) {
      for (int r = r0; r < r1; ++r)
        attend(k, v.q + size_t(r) * D, v.keys, v.values, a->offset + r % L + 1, D, sc,
               out_row(v, r));
      return;
    }
    for (int r = r0; r < r1; ++r) {
      const Slots s = visible_slots(int64_t(a->offset) + r % L, a->window, a->capacity);
      const float* q = v.q + size_t(r) * D;
      float* o = out_row(v, r);
      if (s.runs == 1 && a->softcap <= 0.f) {  // one run of slots: the fused kernel
        const size_t at = size_t(s.begin[0]) * D;
        attend(k, q, v.keys + at, v.values + at, s.len[0], D, sc, o);
        continue;
      }
      int n = 0, begin[2];
      for (int i = 0; i < s.runs; ++i) {
        dots(k, q, v.keys + size_t(s.begin[i]) * D, s.len[i], D, sc + n);
        begin[i] = n;
        n += s.len[i];
      }
      const float inv = masked_softmax(sc, n, begin, s.len, s.runs, a->softcap);
      for (int i = 0; i < s.runs; ++i)
        mix(k, sc + begin[i], v.values + size_t(s.begin[i]) * D, s.len[i], D, inv, o, i > 0);
    }
  }

  // Rows [r0, r1) of group g through BLAS: S = Q K^T over all positions, causal softmax per
  // row, O = P V (sc: (r1 - r0) * (offset + tokens) floats, o: (r1 - r0) * head_dim).
  void rows_by_blas(mlxrs_qmm::SgemmFn sgemm, int g, const Wide& w, int r0, int r1, float* sc,
                    float* o) const {
    using namespace mlxrs_qmm;
    const View v = view(g);
    const int D = a->head_dim, L = a->tokens, T = a->offset + L, n = r1 - r0;
    sgemm(kRowMajor, kNoTrans, kTrans, n, T, D, 1.0f, v.q + size_t(r0) * D, D, w.keys, D, 0.0f,
          sc, T);
    for (int i = 0; i < n; ++i) {
      float* row = sc + size_t(i) * T;
      const int seen = a->offset + (r0 + i) % L + 1;
      const float inv = softmax_unnormalized(row, seen);
      for (int p = 0; p < seen; ++p) row[p] *= inv;
      for (int p = seen; p < T; ++p) row[p] = 0.f;
    }
    sgemm(kRowMajor, kNoTrans, kNoTrans, n, D, T, 1.0f, sc, T, w.values, D, 0.0f, o, D);
    for (int i = 0; i < n; ++i)
      std::memcpy(out_row(v, r0 + i), o + size_t(i) * D, sizeof(float) * D);
  }

  // rows_by_blas with a window and / or a soft cap: S = Q K^T over the slots the block's rows
  // may see (a plain cache: from the first row's window start to the last row's position; a
  // ring: every slot), each row's visible slots soft-capped and soft-maxed, the others
  // zeroed, O = P V (sc: (r1 - r0) * row_floats floats, o: (r1 - r0) * head_dim).
  void rows_by_blas_general(mlxrs_qmm::SgemmFn sgemm, int g, const Wide& w, int r0, int r1,
                            float* sc, float* o) const {
    using namespace mlxrs_qmm;
    const View v = view(g);
    const int D = a->head_dim, L = a->tokens, n = r1 - r0;
    // The block's tokens: all of them once it spans a head boundary, else r0 % L .. (r1-1) % L.
    const bool spans = n >= L || r0 % L > (r1 - 1) % L;
    const int t_lo = spans ? 0 : r0 % L, t_hi = spans ? L - 1 : (r1 - 1) % L;
    const bool ring = int64_t(a->offset) + L > a->capacity;
    int s0 = 0, S = a->capacity;
    if (!ring) {
      const int first = a->offset + t_lo;
      s0 = a->window > 0 && first - a->window + 1 > 0 ? first - a->window + 1 : 0;
      S = a->offset + t_hi + 1 - s0;
    }
    const float* keys = w.keys + size_t(s0) * D;
    const float* values = w.values + size_t(s0) * D;
    sgemm(kRowMajor, kNoTrans, kTrans, n, S, D, 1.0f, v.q + size_t(r0) * D, D, keys, D, 0.0f,
          sc, S);
    for (int i = 0; i < n; ++i) {
      float* row = sc + size_t(i) * S;
      const Slots s = visible_slots(int64_t(a->offset) + (r0 + i) % L, a->window, a->capacity);
      const int begin[2] = {s.begin[0] - s0, s.begin[1] - s0};
      const float inv = masked_softmax(row, S, begin, s.len, s.runs, a->softcap);
      for (int p = 0; p < S; ++p) row[p] *= inv;
    }
    sgemm(kRowMajor, kNoTrans, kNoTrans, n, D, S, 1.0f, sc, S, values, D, 0.0f, o, D);
    for (int i = 0; i < n; ++i)
      std::memcpy(out_row(v, r0 + i), o + size_t(i) * D, sizeof(float) * D);
  }
};

// Query rows per BLAS call in a prefill chunk: bounds the scores scratch to
// kRowBlock * (offset + tokens) floats whatever the chunk and the context length.
constexpr int kRowBlock = 256;

}  // namespace

namespace {

// Where a new key or value row is computed: its f32 cache slot itself, or `scratch` before
// it is rounded into a half-precision slot (store_row).
inline float* staging(float* slot, float*) { return slot; }
inline float* staging(uint16_t*, float* scratch) { return scratch; }
inline void store_row(const float*, float*, int) {}  // computed in place
inline void store_row(const float* row, uint16_t* slot, int D) {
  mlxrs_qmm::active_kernels().to_half(row, slot, size_t(D));
}

template <typename CT>
inline void cached_attention_impl(const CachedAttention& a, const float* qkv, CT* k_cache,
                                  CT* v_cache, float* out) {
  const int D = a.head_dim, H = a.heads, Hkv = a.kv_heads, L = a.tokens, half = D / 2;
  const int width = qkv_heads(H, Hkv, a.kv_mode) * D;
  // Scores one query row may need: its visible keys, at most every slot and every position.
  const int64_t T = int64_t(a.offset) + L;
  const int row_floats = int(T < a.capacity ? T : a.capacity);
  std::vector<float> cosv(half), sinv(half), q(size_t(a.batch) * H * L * D);
  std::vector<float> kv_row(D);  // a new key or value before it is rounded into a half cache
  for (int l = 0; l < L; ++l) {
    const int64_t position = int64_t(a.offset) + l;
    const float pos = float(position);
    for (int i = 0; i < half; ++i) {
      const float angle = pos * a.inv_freq[i];
      cosv[i] = std::cos(angle);
      sinv[i] = std::sin(angle);
    }
    const size_t slot = size_t(position % a.capacity);
    for (int b = 0; b < a.batch; ++b) {
      const float* row = qkv + (size_t(b) * L + l) * width;
      // Queries: norm, RoPE, then the softmax scale folded in; stored [b, h, l, :].
      for (int h = 0; h < H; ++h) {
        float* qh = q.data() + ((size_t(b) * H + h) * L + l) * D;
        if (a.q_norm)
          rms_row(row + size_t(h) * D, a.q_norm, a.norm_eps, qh, D);
        else
          std::memcpy(qh, row + size_t(h) * D, sizeof(float) * D);
        rope_head(qh, D, cosv.data(), sinv.data());
#pragma omp simd
        for (int i = 0; i < D; ++i) qh[i] *= a.scale;
      }
      // The new key (norm, RoPE) and value (the projected key with keys-as-values; scale-free
      // norm with value_norm), written at their position's slot; nothing when the caches hold
      // another layer's keys and values already.
      for (int j = 0; j < Hkv && a.kv_mode != 2; ++j) {
        const size_t at = ((size_t(b) * Hkv + j) * a.capacity + slot) * D;
        const float* kj = row + size_t(H + j) * D;
        const float* vj = a.kv_mode == 1 ? kj : row + size_t(H + Hkv + j) * D;
        float* t = staging(v_cache + at, kv_row.data());
        if (a.value_norm)
          rms_row(vj, nullptr, a.norm_eps, t, D);
        else
          std::memcpy(t, vj, sizeof(float) * D);
        store_row(t, v_cache + at, D);
        t = staging(k_cache + at, kv_row.data());
        if (a.k_norm)
          rms_row(kj, a.k_norm, a.norm_eps, t, D);
        else
          std::memcpy(t, kj, sizeof(float) * D);
        rope_head(t, D, cosv.data(), sinv.data());
        store_row(t, k_cache + at, D);
      }
    }
  }
  const int groups = a.batch * Hkv, rows = (H / Hkv) * L;
  GroupTask<CT> task{&a, q.data(), k_cache, v_cache, out, nullptr, row_floats};
  if (L == 1) {
    // Decode: every row on the kernels' pool once there is enough work to pay for waking it.
    std::vector<float> scores(size_t(groups) * rows * row_floats);
    task.scores = scores.data();
    const int seen = a.window > 0 && a.window < row_floats ? a.window : row_floats;
    if (size_t(groups) * rows * seen * D >= 16384)
      mlxrs_qmm::parallel_for(groups * rows, GroupTask<CT>::run_row, &task);
    else
      for (int i = 0; i < groups * rows; ++i) GroupTask<CT>::run_row(&task, i);
    return;
  }
  // Prefill chunk: one group at a time (BLAS threads itself), in blocks of rows.
  const mlxrs_qmm::SgemmFn sgemm = mlxrs_qmm::blas_sgemm();
  if (!sgemm || rows < 16) {
    std::vector<float> sc(row_floats);
    for (int g = 0; g < groups; ++g) task.rows_by_row(g, 0, rows, sc.data());
    return;
  }
  const int block = rows < kRowBlock ? rows : kRowBlock;
  std::vector<float> sc(size_t(block) * row_floats), o(size_t(block) * D);
  const bool general = task.general();
  std::vector<float> k32, v32;  // a half-precision group widened, once per group
  for (int g = 0; g < groups; ++g) {
    const auto w = task.wide(g, row_floats, k32, v32);
    for (int r0 = 0; r0 < rows; r0 += block) {
      const int r1 = r0 + block < rows ? r0 + block : rows;
      if (general)
        task.rows_by_blas_general(sgemm, g, w, r0, r1, sc.data(), o.data());
      else
        task.rows_by_blas(sgemm, g, w, r0, r1, sc.data(), o.data());
    }
  }
}

}  // namespace

MLXRS_CLONES
void cached_attention(const CachedAttention& a, const float* qkv, float* k_cache,
                      float* v_cache, float* out) {
  cached_attention_impl(a, qkv, k_cache, v_cache, out);
}

MLXRS_CLONES
void cached_attention(const CachedAttention& a, const float* qkv, uint16_t* k_cache,
                      uint16_t* v_cache, float* out) {
  cached_attention_impl(a, qkv, k_cache, v_cache, out);
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

MLXRS_EXPORT void mlxrs_gelu_tanh_glu_raw(const float* gu, float* y, size_t rows, int inter) {
  if (gu && y && inter > 0) mlxrs_ops::gelu_tanh_glu(gu, y, rows, inter);
}

MLXRS_EXPORT void mlxrs_argmax_raw(const float* x, uint32_t* out, size_t rows, int n) {
  if (x && out && n > 0) mlxrs_ops::argmax_rows(x, out, rows, n);
}

namespace {

// The raw entry points' shared body: 1 (touching nothing) for inconsistent parameters, else 0.
template <typename CT>
int cached_attention_raw(const float* qkv, CT* k_cache, CT* v_cache, float* out,
                         const float* inv_freq, const float* q_norm, const float* k_norm,
                         float norm_eps, float scale, int batch, int tokens, int heads,
                         int kv_heads, int head_dim, int capacity, int offset, int window,
                         float logit_softcap) {
  if (!qkv || !k_cache || !v_cache || !out || !inv_freq || batch < 0 || tokens <= 0 ||
      heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || head_dim <= 0 ||
      head_dim % 2 != 0 || offset < 0 || window < 0 || !(logit_softcap >= 0.f) ||
      std::isinf(logit_softcap) || capacity <= 0 ||
      !mlxrs_ops::cache_fits(capacity, offset, tokens, window))
    return 1;
  mlxrs_ops::CachedAttention a{batch,    tokens,   heads,    kv_heads, head_dim,
                               capacity, offset,   scale,    norm_eps, inv_freq,
                               q_norm,   k_norm,   window,   logit_softcap};
  mlxrs_ops::cached_attention(a, qkv, k_cache, v_cache, out);
  return 0;
}

}  // namespace

MLXRS_EXPORT int mlxrs_cached_attention_raw(const float* qkv, float* k_cache, float* v_cache,
                                            float* out, const float* inv_freq,
                                            const float* q_norm, const float* k_norm,
                                            float norm_eps, float scale, int batch, int tokens,
                                            int heads, int kv_heads, int head_dim, int capacity,
                                            int offset, int window, float logit_softcap) {
  return cached_attention_raw(qkv, k_cache, v_cache, out, inv_freq, q_norm, k_norm, norm_eps,
                              scale, batch, tokens, heads, kv_heads, head_dim, capacity, offset,
                              window, logit_softcap);
}

MLXRS_EXPORT int mlxrs_cached_attention_half_raw(const float* qkv, uint16_t* k_cache,
                                                 uint16_t* v_cache, float* out,
                                                 const float* inv_freq, const float* q_norm,
                                                 const float* k_norm, float norm_eps,
                                                 float scale, int batch, int tokens, int heads,
                                                 int kv_heads, int head_dim, int capacity,
                                                 int offset, int window, float logit_softcap) {
  return cached_attention_raw(qkv, k_cache, v_cache, out, inv_freq, q_norm, k_norm, norm_eps,
                              scale, batch, tokens, heads, kv_heads, head_dim, capacity, offset,
                              window, logit_softcap);
}
