// AVX-512 VNNI kernels for 4-bit and 8-bit codes at decode and small M (the rest of the kernel
// set is the AVX-512F one). Built with -mavx512f -mavx512bw -mavx512vl -mavx512vnni
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
// the digit dot products are exact in int32; per 128 codes they are recombined (exact, by
// Horner's rule on VPDPBUSD's accumulator: digit_dot in qmm_vnni_digits.h), converted to f32
// (rounded to 24 bits) and scaled by the group's scale times 2^e.
//
// Layout. A chunk is 128 codes of a row: 64 bytes of MLX's packed words. Byte 4d + j of the
// chunk holds codes 8d + 2j (low nibble) and 8d + 2j + 1 (high nibble), so VPDPBUSD lane d sums
// the products of codes 8d .. 8d + 7: one x block per lane, and a group of 32 / 64 / 128 codes
// is 4 / 8 / 16 whole lanes. For each chunk of each row of x, prepare() stores the digits of
// the even codes and of the odd codes of every lane in that byte order, and the 16 powers of
// two. K need not be a multiple of 128: the last chunk's weight bytes are read through a mask.
//
// Integer activations (MLX_RS_QMM_INT8_ACTIVATIONS, mlxrs_qmm_set_int8_activations): one digit
// instead of three, X = round(x 2^-e) with the block's largest |x| in [2^6, 2^7) and X kept to
// [-127, 127], so |x - X 2^e| <= 2^e <= 2^-6 of the block's largest magnitude (the rounding
// gives half of that; the clamp of a 128 the rest). One VPDPBUSD per digit and code half instead
// of three: at decode the per-row work is about a third, which is what several sequences
// decoded together pay per row. Opt-in: the products then carry the activations' quantization
// error, as llama.cpp's 8-bit activations do. The bias terms then multiply the sums of the
// rounded values (rounded_group_sums_avx512_vnni_int8), not x's exact sums: a product is then
// exactly that of the rounded x with the weights, its error scaling with the weights, not with
// the unsigned codes (0..15 where the weights are centred near 0, several times larger).
//
// 8-bit codes. A chunk is 64 codes of a row, 64 bytes in order: VPDPBUSD lane d sums the
// products of codes 4d .. 4d + 3, so an x block of 8 values is a pair of lanes and a group of
// 32 / 64 / 128 codes is 8 / 16 / 32 lanes (a group of 128 spans two chunks). The same three
// digits of x are stored in code order, and the power of two of each lane. A lane's sum is at
// most 4 * 255 * 2^20 in magnitude (below 2^31): the recombination is exact here too.
#include <immintrin.h>

#include <type_traits>

#include "qmm_internal.h"
#include "qmm_vnni_digits.h"

namespace mlxrs_qmm {
namespace {

struct alignas(64) XChunk {
  int8_t digit[3][2][64];  // [a, b, c][even codes, odd codes][byte 4d + j]
  float scale[16];         // 2^e of lane d
};
struct alignas(64) XChunk8 {
  int8_t digit[3][64];  // [a, b, c][code 4d + j]
  float scale[16];      // 2^e of lane d (the same for lanes 2k and 2k + 1)
};
constexpr size_t kAlignFloats = 64 / sizeof(float);

// Codes per chunk, and the chunk type, of BITS-bit codes.
template <int BITS>
struct Layout {
  static constexpr int kCodes = BITS == 4 ? 128 : 64;
  using Chunk = typename std::conditional<BITS == 4, XChunk, XChunk8>::type;
};

template <int BITS>
inline int chunks(int K) {
  return (K + Layout<BITS>::kCodes - 1) / Layout<BITS>::kCodes;
}

// The row chunks of x inside xp (which the driver allocates as floats, 16-byte aligned).
template <int BITS>
inline typename Layout<BITS>::Chunk* xchunks(const float* xp) {
  uintptr_t a = (reinterpret_cast<uintptr_t>(xp) + 63) & ~uintptr_t(63);
  return reinterpret_cast<typename Layout<BITS>::Chunk*>(a);
}

size_t xp_floats(int M, int K, int bits) {
  if (bits == 4) return size_t(M) * chunks<4>(K) * (sizeof(XChunk) / 4) + kAlignFloats;
  if (bits == 8) return size_t(M) * chunks<8>(K) * (sizeof(XChunk8) / 4) + kAlignFloats;
  return kernels_avx512().xp_floats(M, K, bits);
}

// Digit k of 16 values (as int32) to bytes: even codes to even[0..8), odd codes to odd[0..8).
inline void store_digit(__m512i d, int8_t* even, int8_t* odd) {
  const __m128i b = _mm512_cvtepi32_epi8(d);
  const __m128i split =
      _mm_shuffle_epi8(b, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(even), split);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(odd), _mm_unpackhi_epi64(split, split));
}

template <int D>
void prepare_row4(const float* x, int K, XChunk* out) {
  for (int c = 0; c < chunks<4>(K); ++c) {
    XChunk& o = out[c];
    for (int t = 0; t < 8; ++t) {  // 16 values: lanes 2t and 2t + 1
      const int e0 = 128 * c + 16 * t;
      __m512i d[3];
      digits16<D>(x + e0, K - e0, d, o.scale[2 * t], o.scale[2 * t + 1]);
      for (int k = 0; k < D; ++k) store_digit(d[k], o.digit[k][0] + 8 * t, o.digit[k][1] + 8 * t);
    }
  }
}

template <int D>
void prepare_row8(const float* x, int K, XChunk8* out) {
  for (int c = 0; c < chunks<8>(K); ++c) {
    XChunk8& o = out[c];
    for (int t = 0; t < 4; ++t) {  // 16 values: lanes 4t .. 4t + 3
      const int e0 = 64 * c + 16 * t;
      __m512i d[3];
      float s0, s1;
      digits16<D>(x + e0, K - e0, d, s0, s1);
      for (int k = 0; k < D; ++k)
        _mm_store_si128(reinterpret_cast<__m128i*>(o.digit[k] + 16 * t), _mm512_cvtepi32_epi8(d[k]));
      o.scale[4 * t] = o.scale[4 * t + 1] = s0;
      o.scale[4 * t + 2] = o.scale[4 * t + 3] = s1;
    }
  }
}

template <int D>
void prepare(const float* x, float* xp, int M, int K, int bits) {
  if (bits == 4) {
    for (int m = 0; m < M; ++m)
      prepare_row4<D>(x + size_t(m) * K, K, xchunks<4>(xp) + size_t(m) * chunks<4>(K));
  } else if (bits == 8) {
    for (int m = 0; m < M; ++m)
      prepare_row8<D>(x + size_t(m) * K, K, xchunks<8>(xp) + size_t(m) * chunks<8>(K));
  } else {
    kernels_avx512().prepare(x, xp, M, K, bits);
  }
}

// 16 scales (or biases) of dtype SB starting at element i, as f32; masked-off ones are 0.
template <int SB>
inline __m512 load16(const void* p, size_t i, __mmask16 mk) {
  if (SB == F32) return _mm512_maskz_loadu_ps(mk, static_cast<const float*>(p) + i);
  const __m256i h = _mm256_maskz_loadu_epi16(mk, static_cast<const uint16_t*>(p) + i);
  if (SB == F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// How far ahead of the bytes being read the kernels prefetch: 4-bit codes into L1; 8-bit codes
// (twice the bytes per instruction) further ahead and into L2 only, which streamed the 262144 x
// 640 head of Gemma 3 from DRAM at 0.84 of the read probe against 0.76 for the 4-bit setting
// (4 interleaved rounds on dev-cpu-2, docs/bench/qmm-8bit-prefetch-2026-12-06.txt).
constexpr size_t kPrefetchAhead = 4096;
constexpr size_t kPrefetchAhead8 = 8192;

// The scales of groups g0 .. g0 + 15 of rows n0 .. n0 + R (into s16), and their bias term
// sum_g b_g (sum of x over g) added to tot.
template <int R, int MB, int SB>
inline void group_params(const Problem& p, int n0, int m0, int g0, __m512 (&s16)[R],
                         __m512 (&tot)[R][MB]) {
  const int ng = p.K / p.group, cnt = ng - g0 < 16 ? ng - g0 : 16;
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

// y[m0 .. m0 + MB, n0 .. n0 + R] for 4-bit codes in groups of GS, scales of dtype SB, D digits.
template <int GS, int R, int MB, int SB, int D>
inline void block4(const Problem& p, int n0, int m0) {
  constexpr int LPG = GS / 8;    // lanes per group
  constexpr int GPC = 16 / LPG;  // groups per chunk
  constexpr int CPS = LPG;       // chunks per 16 groups (one load of scales)
  const int K = p.K, nc = chunks<4>(K);
  const size_t row_bytes = size_t(K) / 2;
  const uint8_t* wb = reinterpret_cast<const uint8_t*>(p.w) + size_t(n0) * row_bytes;
  const XChunk* xs[MB];
  for (int m = 0; m < MB; ++m) xs[m] = xchunks<4>(p.xp) + size_t(m0 + m) * nc;
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
    if (c % CPS == 0) group_params<R, MB, SB>(p, n0, m0, c * GPC, s16, tot);
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
        __m512i even[3], odd[3];
        for (int k = 0; k < D; ++k) {
          even[k] = _mm512_load_si512(x.digit[k][0]);
          odd[k] = _mm512_load_si512(x.digit[k][1]);
        }
        const __m512i sum = digit_dot2<D>(lo, even, hi, odd);
        tot[r][m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum),
                                    _mm512_mul_ps(s, _mm512_load_ps(x.scale)), tot[r][m]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m)
      p.y[size_t(m0 + m) * p.N + n0 + r] = _mm512_reduce_add_ps(tot[r][m]);
}

// y[m0 .. m0 + MB, n0 .. n0 + R] for 8-bit codes in groups of GS, scales of dtype SB, D digits.
template <int GS, int R, int MB, int SB, int D>
inline void block8(const Problem& p, int n0, int m0) {
  constexpr int CPS = GS / 4;  // chunks per 16 groups (one load of scales)
  const int K = p.K, nc = chunks<8>(K);
  const size_t row_bytes = size_t(K);
  const uint8_t* wb = reinterpret_cast<const uint8_t*>(p.w) + size_t(n0) * row_bytes;
  const XChunk8* xs[MB];
  for (int m = 0; m < MB; ++m) xs[m] = xchunks<8>(p.xp) + size_t(m0 + m) * nc;
  const int tail_bytes = K % 64;
  const __mmask64 tail = tail_bytes ? (~0ull >> (64 - tail_bytes)) : ~0ull;
  // The first code of each lane; its group is (64 (c % CPS) + 4d) / GS among the 16 loaded.
  const __m512i lane_code =
      _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60);
  __m512 tot[R][MB], s16[R];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m) tot[r][m] = _mm512_setzero_ps();
  for (int c = 0; c < nc; ++c) {
    if (c % CPS == 0) group_params<R, MB, SB>(p, n0, m0, c * 64 / GS, s16, tot);
    const __m512i idx = _mm512_srli_epi32(
        _mm512_add_epi32(lane_code, _mm512_set1_epi32(64 * (c % CPS))), __builtin_ctz(GS));
    const __mmask64 mk = c == nc - 1 ? tail : ~0ull;
    __m512i v[R];
    __m512 s[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* src = wb + r * row_bytes + size_t(c) * 64;
      __builtin_prefetch(src + kPrefetchAhead8, 0, 2);
      v[r] = _mm512_maskz_loadu_epi8(mk, src);
      s[r] = _mm512_permutexvar_ps(idx, s16[r]);
    }
    for (int m = 0; m < MB; ++m) {
      const XChunk8& x = xs[m][c];
      __m512i dx[3];
      for (int k = 0; k < D; ++k) dx[k] = _mm512_load_si512(x.digit[k]);
      const __m512 xscale = _mm512_load_ps(x.scale);
      for (int r = 0; r < R; ++r) {
        const __m512i sum = digit_dot<D>(v[r], dx);
        tot[r][m] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(s[r], xscale), tot[r][m]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MB; ++m)
      p.y[size_t(m0 + m) * p.N + n0 + r] = _mm512_reduce_add_ps(tot[r][m]);
}

template <int BITS, int GS, int R, int MB, int SB, int D>
inline void block(const Problem& p, int n0, int m0) {
  if (BITS == 4)
    block4<GS, R, MB, SB, D>(p, n0, m0);
  else
    block8<GS, R, MB, SB, D>(p, n0, m0);
}

template <int BITS, int GS, int R, int SB, int D>
inline void rows_mblocks(const Problem& p, int n) {
  int m = 0;
  for (; m + 4 <= p.M; m += 4) block<BITS, GS, R, 4, SB, D>(p, n, m);
  switch (p.M - m) {
    case 3: block<BITS, GS, R, 3, SB, D>(p, n, m); break;
    case 2: block<BITS, GS, R, 2, SB, D>(p, n, m); break;
    case 1: block<BITS, GS, R, 1, SB, D>(p, n, m); break;
    default: break;
  }
}

template <int BITS, int GS, int SB, int D>
void rows_group(const Problem& p, int n0, int n1) {
  int n = n0;
  if (p.M == 1) {
    for (; n + 4 <= n1; n += 4) block<BITS, GS, 4, 1, SB, D>(p, n, 0);
  } else {
    for (; n + 2 <= n1; n += 2) rows_mblocks<BITS, GS, 2, SB, D>(p, n);
  }
  for (; n < n1; ++n) rows_mblocks<BITS, GS, 1, SB, D>(p, n);
}

template <int BITS, int SB, int D>
void rows_sb(const Problem& p, int n0, int n1) {
  if (p.group == 32)
    rows_group<BITS, 32, SB, D>(p, n0, n1);
  else if (p.group == 64)
    rows_group<BITS, 64, SB, D>(p, n0, n1);
  else
    rows_group<BITS, 128, SB, D>(p, n0, n1);
}

template <int BITS, int D>
void rows_bits(const Problem& p, int n0, int n1) {
  if (p.sb == F32)
    rows_sb<BITS, F32, D>(p, n0, n1);
  else if (p.sb == F16)
    rows_sb<BITS, F16, D>(p, n0, n1);
  else
    rows_sb<BITS, BF16, D>(p, n0, n1);
}

template <int D>
void rows(const Problem& p, int n0, int n1) {
  if (p.bits == 4)
    rows_bits<4, D>(p, n0, n1);
  else if (p.bits == 8)
    rows_bits<8, D>(p, n0, n1);
  else
    kernels_avx512().rows(p, n0, n1);
}

}  // namespace

const Kernels& kernels_avx512_vnni() {
  // No dequant: the prefill (sgemm) path needs x in f32 and uses the AVX-512F set.
  static const Kernels k{xp_floats,           prepare<3>,
                         rows<3>,             nullptr,
                         kernels_avx512().attend, kernels_avx512().dots,
                         kernels_avx512().mix,    kernels_avx512().attend_h,
                         kernels_avx512().dots_h, kernels_avx512().mix_h,
                         kernels_avx512().to_half, kernels_avx512().from_half};
  return k;
}

const Kernels& kernels_avx512_vnni_int8() {
  static const Kernels k{xp_floats,           prepare<1>,
                         rows<1>,             nullptr,
                         kernels_avx512().attend, kernels_avx512().dots,
                         kernels_avx512().mix,    kernels_avx512().attend_h,
                         kernels_avx512().dots_h, kernels_avx512().mix_h,
                         kernels_avx512().to_half, kernels_avx512().from_half};
  return k;
}

void rounded_group_sums_avx512_vnni_int8(const float* x, int M, int K, int G, float* xsum) {
  const int ng = K / G;
  for (size_t m = 0; m < size_t(M); ++m)
    for (int g = 0; g < ng; ++g) {
      const float* xg = x + m * K + size_t(g) * G;
      float sum = 0.f;
      for (int e = 0; e < G; e += 16) {
        __m512i d[3];
        float e0, e1;
        digits16<1>(xg + e, 16, d, e0, e1);
        sum += rounded_sum16<1>(d, e0, e1);
      }
      xsum[m * ng + g] = sum;
    }
}

}  // namespace mlxrs_qmm
