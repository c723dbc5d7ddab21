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

// A cached key or value as f32: itself, or an IEEE half widened (exact).
inline float kv(const float* p, size_t i) { return p[i]; }
inline float kv(const uint16_t* p, size_t i) { return sb_load(p, F16, i); }

template <typename KV>
void dots_t(const float* q, const KV* keys, int T, int D, float* scores) {
  for (int t = 0; t < T; ++t) {
    float s = 0.f;
    for (int i = 0; i < D; ++i) s += q[i] * kv(keys, size_t(t) * D + i);
    scores[t] = s;
  }
}

template <typename KV>
void mix_t(const float* p, const KV* values, int T, int D, float scale, float* out,
           bool accumulate) {
  if (!accumulate)
    for (int i = 0; i < D; ++i) out[i] = 0.f;
  for (int t = 0; t < T; ++t) {
    const float w = p[t] * scale;
    for (int i = 0; i < D; ++i) out[i] += w * kv(values, size_t(t) * D + i);
  }
}

template <typename KV>
void attend_t(const float* q, const KV* keys, const KV* values, int T, int D, float* scores,
              float* out) {
  dots_t(q, keys, T, D, scores);
  const float inv = softmax_unnormalized(scores, T);
  for (int i = 0; i < D; ++i) out[i] = 0.f;
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < D; ++i) out[i] += scores[t] * kv(values, size_t(t) * D + i);
  for (int i = 0; i < D; ++i) out[i] *= inv;
}

void dots(const float* q, const float* keys, int T, int D, float* scores) {
  dots_t(q, keys, T, D, scores);
}
void mix(const float* p, const float* values, int T, int D, float scale, float* out,
         bool accumulate) {
  mix_t(p, values, T, D, scale, out, accumulate);
}
void attend(const float* q, const float* keys, const float* values, int T, int D,
            float* scores, float* out) {
  attend_t(q, keys, values, T, D, scores, out);
}
void dots_h(const float* q, const uint16_t* keys, int T, int D, float* scores) {
  dots_t(q, keys, T, D, scores);
}
void mix_h(const float* p, const uint16_t* values, int T, int D, float scale, float* out,
           bool accumulate) {
  mix_t(p, values, T, D, scale, out, accumulate);
}
void attend_h(const float* q, const uint16_t* keys, const uint16_t* values, int T, int D,
              float* scores, float* out) {
  attend_t(q, keys, values, T, D, scores, out);
}

// IEEE float -> half, rounded to nearest with ties to even; portable (no F16C). Overflow
// gives an infinity, NaN stays NaN (quiet), tiny values become subnormal halves or zero.
inline uint16_t float_to_half(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u));
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to 65536 or more
  if (a < 0x38800000u) {  // below 2^-14: a subnormal half (or zero)
    if (a < 0x33000000u) return uint16_t(sign);  // at most 2^-25: rounds to zero
    const uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    const int shift = int(126 - e);  // m * 2^(e-150) in units of 2^-24: m >> (126 - e)
    uint32_t q = m >> shift;
    const uint32_t rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (q & 1u))) ++q;
    return uint16_t(sign | q);
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits (a carry moves into the
  // exponent correctly, up to the infinity excluded above).
  const uint32_t r = a - 0x38000000u;  // exponent - 112
  uint32_t q = r >> 13;
  const uint32_t rest = r & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (q & 1u))) ++q;
  return uint16_t(sign | q);
}

void to_half(const float* x, uint16_t* h, size_t n) {
  for (size_t i = 0; i < n; ++i) h[i] = float_to_half(x[i]);
}

void from_half(const uint16_t* h, float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = sb_load(h, F16, i);
}

}  // namespace

const Kernels& kernels_generic() {
  static const Kernels k{xp_floats, prepare, rows,   dequant,   attend, dots,
                         mix,       attend_h, dots_h, mix_h, to_half, from_half};
  return k;
}

}  // namespace mlxrs_qmm
