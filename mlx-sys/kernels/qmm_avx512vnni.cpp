// AVX-512 VNNI kernels for 4-bit codes at decode and small M (8-bit codes and the rest of the
// kernel set are the AVX-512F ones). Built with -mavx512f -mavx512bw -mavx512vl -mavx512vnni
// -mavx512vbmi -mavx2 -mfma -mf16c; includes no MLX header. Selected at run time only on CPUs
// that report all of these (MLXRS_QMM_ISA_AVX512_VNNI), unless MLX_RS_QMM_EXACT asks for the
// f32 kernels.
//
// Activations as integers. The f32 kernels spend about 3.5 vector instructions per 16 codes
// (widen, unpack, convert, FMA); here VPDPBUSD multiplies 64 unsigned 4-bit codes by 64 signed
// bytes and adds them in fours into 16 int32 lanes, in one instruction. For that, prepare()
// writes x, in blocks of 8 consecutive values, as integers X times a power of two shared by the
// block: x ~ X * 2^e with |X| <= 2^20, where 2^(e + 20) is the smallest power of two above the
// block's largest |x|. Each value is thus within 2^-21 of the block's largest magnitude (f32
// itself keeps 2^-24 of each value's own magnitude); blocks whose values are all below 2^-102
// in magnitude lose further bits, and a block holding an infinity or a NaN makes every output
// that uses it NaN. X is split into three signed 7-bit digits, X = a 2^14 + b 2^7 + c, so that
// the digit dot products are exact in int32; per 128 codes they are recombined (exact),
// converted to f32 (rounded to 24 bits) and scaled by the group's scale times 2^e.
//
// Layout. A chunk is 128 codes of a row: 64 bytes of MLX's packed words. Byte 4d + j of the
// chunk holds codes 8d + 2j (low nibble) and 8d + 2j + 1 (high nibble), so VPDPBUSD lane d sums
// the products of codes 8d .. 8d + 7: one x block per lane, and a group of 32 / 64 / 128 codes
// is 4 / 8 / 16 whole lanes. For each chunk of each row of x, prepare() stores the digits of
// the even codes and of the odd codes of every lane in that byte order, and the 16 powers of
// two. K need not be a multiple of 128: the last chunk's weight bytes are read through a mask.
#include <immintrin.h>

#include "qmm_internal.h"

namespace mlxrs_qmm {
namespace {

struct alignas(64) XChunk {
  int8_t digit[3][2][64];  // [a, b, c][even codes, odd codes][byte 4d + j]
  float scale[16];         // 2^e of lane d
};
constexpr size_t kChunkFloats = sizeof(XChunk) / sizeof(float);
constexpr size_t kAlignFloats = 64 / sizeof(float);

inline int chunks(int K) { return (K + 127) / 128; }

// The row chunks of x inside xp (which the driver allocates as floats, 16-byte aligned).
inline XChunk* xchunks(const float* xp) {
  uintptr_t a = (reinterpret_cast<uintptr_t>(xp) + 63) & ~uintptr_t(63);
  return reinterpret_cast<XChunk*>(a);
}

size_t xp_floats(int M, int K, int bits) {
  if (bits != 4) return kernels_avx512().xp_floats(M, K, bits);
  return size_t(M) * chunks(K) * kChunkFloats + kAlignFloats;
}

// Digit k of 16 values (as int32) to bytes: even codes to even[0..8), odd codes to odd[0..8).
inline void store_digit(__m512i d, int8_t* even, int8_t* odd) {
  const __m128i b = _mm512_cvtepi32_epi8(d);
  const __m128i split =
      _mm_shuffle_epi8(b, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(even), split);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(odd), _mm_unpackhi_epi64(split, split));
}

// Balanced 7-bit digit of v: ((v + 64) & 127) - 64, in [-64, 63].
inline __m512i low_digit(__m512i v) {
  const __m512i k64 = _mm512_set1_epi32(64);
  return _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(v, k64), _mm512_set1_epi32(127)),
                          k64);
}

void prepare_row(const float* x, int K, XChunk* out) {
  for (int c = 0; c < chunks(K); ++c) {
    XChunk& o = out[c];
    for (int t = 0; t < 8; ++t) {  // 16 values: lanes 2t and 2t + 1
      const int e0 = 128 * c + 16 * t, valid = K - e0;
      const __mmask16 mk = valid >= 16 ? 0xFFFF : valid <= 0 ? 0 : (1u << valid) - 1;
      __m512 v = _mm512_maskz_loadu_ps(mk, x + e0);
      // Largest |x| of each 8-value half, in every element of the half.
      __m512 a = _mm512_abs_ps(v);
      a = _mm512_max_ps(a, _mm512_permute_ps(a, 0xB1));
      a = _mm512_max_ps(a, _mm512_permute_ps(a, 0x4E));
      a = _mm512_max_ps(a, _mm512_shuffle_f32x4(a, a, 0xB1));
      // Its exponent field f (255: infinity or NaN): the max lies in [2^(f-127), 2^(f-126)),
      // so X = x 2^(146 - f) and 2^e = 2^(f - 146); f is clamped below at 24 to keep both
      // powers normal.
      const __m512i f =
          _mm512_max_epi32(_mm512_srli_epi32(_mm512_castps_si512(a), 23), _mm512_set1_epi32(24));
      const __mmask16 bad = _mm512_cmpeq_epi32_mask(f, _mm512_set1_epi32(255));
      const __m512 up = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_sub_epi32(_mm512_set1_epi32(273), f), 23));
      __m512 e = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_sub_epi32(f, _mm512_set1_epi32(19)), 23));
      e = _mm512_mask_mov_ps(e, bad, _mm512_set1_ps(__builtin_nanf("")));
      v = _mm512_maskz_mov_ps(_knot_mask16(bad), v);
      const __m512i X = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v, up),
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512i dc = low_digit(X);
      const __m512i X1 = _mm512_srai_epi32(_mm512_sub_epi32(X, dc), 7);
      const __m512i db = low_digit(X1);
      const __m512i da = _mm512_srai_epi32(_mm512_sub_epi32(X1, db), 7);
      store_digit(da, o.digit[0][0] + 8 * t, o.digit[0][1] + 8 * t);
      store_digit(db, o.digit[1][0] + 8 * t, o.digit[1][1] + 8 * t);
      store_digit(dc, o.digit[2][0] + 8 * t, o.digit[2][1] + 8 * t);
      o.scale[2 * t] = _mm512_cvtss_f32(e);
      o.scale[2 * t + 1] = _mm_cvtss_f32(_mm512_extractf32x4_ps(e, 2));
    }
  }
}

void prepare(const float* x, float* xp, int M, int K, int bits) {
  if (bits != 4) return kernels_avx512().prepare(x, xp, M, K, bits);
  XChunk* out = xchunks(xp);
  for (int m = 0; m < M; ++m) prepare_row(x + size_t(m) * K, K, out + size_t(m) * chunks(K));
}

// 16 scales (or biases) of dtype SB starting at element i, as f32; masked-off ones are 0.
template <int SB>
inline __m512 load16(const void* p, size_t i, __mmask16 mk) {
  if (SB == F32) return _mm512_maskz_loadu_ps(mk, static_cast<const float*>(p) + i);
  const __m256i h = _mm256_maskz_loadu_epi16(mk, static_cast<const uint16_t*>(p) + i);
  if (SB == F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// How far ahead of the bytes being read the kernel prefetches.
constexpr size_t kPrefetchAhead = 4096;

// y[m0 .. m0 + MB, n0 .. n0 + R] for 4-bit codes in groups of GS, scales of dtype SB.
template <int GS, int R, int MB, int SB>
inline void block(const Problem& p, int n0, int m0) {
  constexpr int LPG = GS / 8;    // lanes per group
  constexpr int GPC = 16 / LPG;  // groups per chunk
  constexpr int CPS = LPG;       // chunks per 16 groups (one load of scales)
  const int K = p.K, ng = K / GS, nc = chunks(K);
  const size_t row_bytes = size_t(K) / 2;
  const uint8_t* wb = reinterpret_cast<const uint8_t*>(p.w) + size_t(n0) * row_bytes;
  const XChunk* xs[MB];
  for (int m = 0; m < MB; ++m) xs[m] = xchunks(p.xp) + size_t(m0 + m) * nc;
  const int tail_bytes = (K % 128) / 2;
  const __mmask64 tail = tail_bytes ? (~0ull >> (64 - tail_bytes)) : ~0ull;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  // VPMULTISHIFTQB control: byte j of each qword <- bits 8j + 4 .. 8j + 11 (the high nibble of
  // byte j lands in the low 4 bits).
  const __m512i hi_shift = _mm512_set1_epi64(0x3C342C241C140C04ll);
  const __m512i lane_group =
      _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                        __builtin_ctz(LPG));
  __m512 tot[R][MB], s16[R];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) tot[r][m] = _mm512_setzero_ps();
  for (int c = 0; c < nc; ++c) {
    if (c % CPS == 0) {
      // Scales of the next 16 groups; the bias term sum_g b_g (sum of x over g) for them.
      const int g0 = c * GPC, cnt = ng - g0 < 16 ? ng - g0 : 16;
      const __mmask16 gm = __mmask16((1u << cnt) - 1);
      for (int r = 0; r < R; ++r) {
        const size_t si = size_t(n0 + r) * ng + g0;
        s16[r] = load16<SB>(p.scales, si, gm);
        const __m512 b16 = load16<SB>(p.biases, si, gm);
        for (int m = 0; m < MB; ++m)
          tot[r][m] = _mm512_fmadd_ps(
              b16, _mm512_maskz_loadu_ps(gm, p.xsum + size_t(m0 + m) * ng + g0), tot[r][m]);
      }
    }
    const __m512i idx = _mm512_add_epi32(lane_group, _mm512_set1_epi32(GPC * (c % CPS)));
    const __mmask64 mk = c == nc - 1 ? tail : ~0ull;
    for (int r = 0; r < R; ++r) {
      const uint8_t* src = wb + r * row_bytes + size_t(c) * 64;
      __builtin_prefetch(src + kPrefetchAhead);
      const __m512i v = _mm512_maskz_loadu_epi8(mk, src);
      const __m512i lo = _mm512_and_si512(v, low4);
      const __m512i hi = _mm512_and_si512(_mm512_multishift_epi64_epi8(hi_shift, v), low4);
      const __m512 s = _mm512_permutexvar_ps(idx, s16[r]);
      for (int m = 0; m < MB; ++m) {
        const XChunk& x = xs[m][c];
        __m512i d[3];
        for (int k = 0; k < 3; ++k) {
          const __m512i even = _mm512_load_si512(x.digit[k][0]);
          const __m512i odd = _mm512_load_si512(x.digit[k][1]);
          d[k] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, even), hi,
                                     odd);
        }
        const __m512i sum = _mm512_add_epi32(
            _mm512_add_epi32(_mm512_slli_epi32(d[0], 14), _mm512_slli_epi32(d[1], 7)), d[2]);
        tot[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum),
                                    _mm512_mul_ps(s, _mm512_load_ps(x.scale)), tot[r][m]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m)
      p.y[size_t(m0 + m) * p.N + n0 + r] = _mm512_reduce_add_ps(tot[r][m]);
}

template <int GS, int R, int SB>
inline void rows_mblocks(const Problem& p, int n) {
  int m = 0;
  for (; m + 4 <= p.M; m += 4) block<GS, R, 4, SB>(p, n, m);
  switch (p.M - m) {
    case 3: block<GS, R, 3, SB>(p, n, m); break;
    case 2: block<GS, R, 2, SB>(p, n, m); break;
    case 1: block<GS, R, 1, SB>(p, n, m); break;
    default: break;
  }
}

template <int GS, int SB>
void rows_group(const Problem& p, int n0, int n1) {
  int n = n0;
  if (p.M == 1) {
    for (; n + 4 <= n1; n += 4) block<GS, 4, 1, SB>(p, n, 0);
  } else {
    for (; n + 2 <= n1; n += 2) rows_mblocks<GS, 2, SB>(p, n);
  }
  for (; n < n1; ++n) rows_mblocks<GS, 1, SB>(p, n);
}

template <int SB>
void rows_sb(const Problem& p, int n0, int n1) {
  if (p.group == 32)
    rows_group<32, SB>(p, n0, n1);
  else if (p.group == 64)
    rows_group<64, SB>(p, n0, n1);
  else
    rows_group<128, SB>(p, n0, n1);
}

void rows(const Problem& p, int n0, int n1) {
  if (p.bits != 4) return kernels_avx512().rows(p, n0, n1);
  if (p.sb == F32)
    rows_sb<F32>(p, n0, n1);
  else if (p.sb == F16)
    rows_sb<F16>(p, n0, n1);
  else
    rows_sb<BF16>(p, n0, n1);
}

}  // namespace

const Kernels& kernels_avx512_vnni() {
  // No dequant: the prefill (sgemm) path needs x in f32 and uses the AVX-512F set.
  static const Kernels k{xp_floats,           prepare,
                         rows,                nullptr,
                         kernels_avx512().attend, kernels_avx512().dots,
                         kernels_avx512().mix};
  return k;
}

}  // namespace mlxrs_qmm
