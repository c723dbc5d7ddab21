// Portable kernels (any CPU): plain C++, compiled without instruction-set flags.
#include "qmm_internal.h"

namespace mlxrs_qmm {
namespace {

size_t xp_floats(int, int, int) { return 0; }
void prepare(const float*, float*, int, int, int) {}

void rows(const Problem& p, int n0, int n1) {
  const int K = p.K, G = p.group, ng = K / G, per_word = 32 / p.bits;
  const uint32_t mask = (1u << p.bits) - 1;
  const size_t words = size_t(K) * p.bits / 32;
  for (int n = n0; n < n1; ++n) {
    const uint32_t* wr = p.w + n * words;
    for (int m = 0; m < p.M; ++m) {
      const float* xr = p.x + size_t(m) * K;
      float total = 0.f;
      for (int g = 0; g < ng; ++g) {
        float acc = 0.f;
        for (int e = g * G; e < (g + 1) * G; e += per_word) {
          uint32_t word = wr[e / per_word];
          for (int j = 0; j < per_word; ++j)
            acc += float((word >> (j * p.bits)) & mask) * xr[e + j];
        }
        size_t si = size_t(n) * ng + g;
        total += sb_load(p.scales, p.sb, si) * acc +
                 sb_load(p.biases, p.sb, si) * p.xsum[size_t(m) * ng + g];
      }
      p.y[size_t(m) * p.N + n] = total;
    }
  }
}

void dequant(const Problem& p, int n0, int n1, float* out) {
  const int K = p.K, G = p.group, ng = K / G, per_word = 32 / p.bits;
  const uint32_t mask = (1u << p.bits) - 1;
  const size_t words = size_t(K) * p.bits / 32;
  for (int n = n0; n < n1; ++n) {
    const uint32_t* wr = p.w + n * words;
    float* o = out + size_t(n - n0) * K;
    for (int g = 0; g < ng; ++g) {
      size_t si = size_t(n) * ng + g;
      float s = sb_load(p.scales, p.sb, si), b = sb_load(p.biases, p.sb, si);
      for (int e = g * G; e < (g + 1) * G; e += per_word) {
        uint32_t word = wr[e / per_word];
        for (int j = 0; j < per_word; ++j) o[e + j] = s * float((word >> (j * p.bits)) & mask) + b;
      }
    }
  }
}

void dots(const float* q, const float* keys, int T, int D, float* scores) {
  for (int t = 0; t < T; ++t) {
    float s = 0.f;
    for (int i = 0; i < D; ++i) s += q[i] * keys[size_t(t) * D + i];
    scores[t] = s;
  }
}

void mix(const float* p, const float* values, int T, int D, float scale, float* out,
         bool accumulate) {
  if (!accumulate)
    for (int i = 0; i < D; ++i) out[i] = 0.f;
  for (int t = 0; t < T; ++t) {
    const float w = p[t] * scale;
    for (int i = 0; i < D; ++i) out[i] += w * values[size_t(t) * D + i];
  }
}

void attend(const float* q, const float* keys, const float* values, int T, int D,
            float* scores, float* out) {
  dots(q, keys, T, D, scores);
  const float inv = softmax_unnormalized(scores, T);
  for (int i = 0; i < D; ++i) out[i] = 0.f;
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < D; ++i) out[i] += scores[t] * values[size_t(t) * D + i];
  for (int i = 0; i < D; ++i) out[i] *= inv;
}

}  // namespace

const Kernels& kernels_generic() {
  static const Kernels k{xp_floats, prepare, rows, dequant, attend, dots, mix};
  return k;
}

}  // namespace mlxrs_qmm
