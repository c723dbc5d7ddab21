// Integer prefill for GGUF blocks (qmm_blocks.h) on AVX-512 VNNI: the product of many
// rows of x (a prompt chunk) with a block matrix, in int8 x uint8 dot products. Built with the
// flags of qmm_avx512vnni.cpp; includes no MLX header.
//
// Activations (quantize_x): each run of 32 values of a row of x becomes 8-bit integers X in
// [-127, 127] times one f32 scale s = max |x| / 127 of the run, X = round(x / s), so |x - X s|
// <= s / 2 = max |x| / 254 over the run. The formats' offsets (Q4_1's m, Q4_K's mins, Q6_K's
// -32) multiply the sums of the rounded values X s over 16 and 32 values, not of x: then the
// product is exactly that of the rounded x with the weights, and its error sum_e (X_e s - x_e)
// w_e scales with the weights themselves. (With x's exact sums the error would scale with the
// unsigned codes, 0..15 for Q4_1 where the weights are centred near 0: on SmolLM2's down
// projection that was 2.5 times the error of the rounding itself.) A run holding an infinity
// or a NaN gets a NaN scale: every output that uses it is NaN.
//
// Weights (pack_panel): 16 rows of the matrix at a time, their codes unpacked (Q4_K: 0..15,
// Q5_K: 0..31, Q6_K: q + 32 in 0..63, Q2_K: 0..3, Q3_K: q + 4 in 0..7; the formats of 32
// values as small_block gives them, one sub-block per block) and interleaved so that one
// 64-byte vector holds 4 consecutive codes of each of the 16 rows: VPDPBUSD with 4 values of
// one row of x broadcast then adds, in lane r, row r's 4 products. A sub-block (Q4_K: 32 values, Q6_K: 16) has one scale per row, so its
// 8 (or 4) products accumulate exactly in int32 before one conversion to f32, scaled by the
// rows' d * sc and x's s. The packed panel (about K bytes per row) is built once per call and
// read for every row of x, like the dequantized tiles of the sgemm path but a quarter of
// their size.
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "qmm_blocks.h"
#include "qmm_blocks_vnni.h"

namespace mlxrs_qmm {
namespace {

constexpr int kPanel = 16;  // rows per panel (one per lane)

// One row's block_values(format) codes of block blk, in value order, and its per-sub-block
// scale and offset factors: the weight of value e is scl[e / S] * code - off[e / S]
// (S = run_values).
inline void unpack_block(int format, const uint8_t* blk, uint8_t* codes, float* scl, float* off) {
  if (small_format(format)) {
    small_block(format, blk, codes, scl[0], off[0]);
  } else if (format == kQ2K || format == kQ3K) {
    q23k_block(format, blk, codes, scl, off);
  } else if (has_mins(format)) {
    // Lanes 0..7: d * sc[j] (the scales), lanes 8..15: dmin * m[j] (the offsets).
    alignas(64) float f[16];
    _mm512_store_ps(f, q4k_factors(blk));
    for (int j = 0; j < 8; ++j) {
      scl[j] = f[j];
      off[j] = f[8 + j];
    }
    for (int c = 0; c < 4; ++c)
      _mm512_storeu_si512(codes + 64 * c, format == kQ5K ? qk_codes<kQ5K>(blk, c) : qk_codes<kQ4K>(blk, c));
  } else {  // kQ6K
    const float d = f16_scalar(blk + 208);
    const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
    for (int j = 0; j < 16; ++j) {
      scl[j] = d * float(sc[j]);
      off[j] = 32.f * scl[j];
    }
    for (int h = 0; h < 2; ++h) {
      __m512i v0, v1;
      q6k_codes(blk, h, v0, v1);
      _mm512_storeu_si512(codes + 128 * h, v0);
      _mm512_storeu_si512(codes + 128 * h + 64, v1);
    }
  }
}

// A packed panel: for sub-block j, group g of 4 values: 64 bytes, lane r = row r's 4 codes;
// then per sub-block the 16 rows' scale and offset factors (rows past the run: zeros).
struct Panel {
  std::vector<uint8_t> rows;  // [16][K] codes in value order (scratch)
  std::vector<uint8_t> codes;  // [K / 4][64]
  std::vector<float> scl, off;  // [K / S][16]
};

void pack_panel(const BlockRun& run, int n0, int K, Panel& p) {
  const int S = run_values(run.format), nsub = K / S, bv = block_values(run.format), nb = K / bv;
  const int valid = run.n1 - n0 < kPanel ? run.n1 - n0 : kPanel;
  const int bb = block_bytes(run.format);
  p.rows.assign(size_t(kPanel) * K, 0);
  p.codes.resize(size_t(K) / 4 * 64);
  p.scl.assign(size_t(nsub) * kPanel, 0.f);
  p.off.assign(size_t(nsub) * kPanel, 0.f);
  float scl[16], off[16];
  for (int r = 0; r < valid; ++r) {
    const uint8_t* row = run.w + size_t(n0 - run.n0 + r) * run.row_bytes;
    for (int b = 0; b < nb; ++b) {
      unpack_block(run.format, row + size_t(b) * bb, &p.rows[size_t(r) * K + size_t(b) * bv], scl,
                   off);
      const int per = bv / S;
      for (int j = 0; j < per; ++j) {
        p.scl[(size_t(b) * per + j) * kPanel + r] = scl[j];
        p.off[(size_t(b) * per + j) * kPanel + r] = off[j];
      }
    }
  }
  // Interleave: group t (values 4t .. 4t + 3) of the 16 rows into one vector.
  const __m512i stride = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(K));
  for (int t = 0; t < K / 4; ++t)
    _mm512_storeu_si512(&p.codes[size_t(t) * 64],
                        _mm512_i32gather_epi32(stride, &p.rows[size_t(t) * 4], 1));
}

}  // namespace

// x quantized: per 32 values an int8 run and its scale; the rounded values' sums over 16 and
// 32 values.
struct XQuant {
  std::vector<int8_t> q;      // [M][K]
  std::vector<float> scale;   // [M][K / 32]
  std::vector<float> sum16;   // [M][K / 16]
  std::vector<float> sum32;   // [M][K / 32]
};

namespace {

void quantize_x(const float* x, int M, int K, XQuant& xq) {
  xq.q.resize(size_t(M) * K);
  xq.scale.resize(size_t(M) * K / 32);
  xq.sum16.resize(size_t(M) * K / 16);
  xq.sum32.resize(size_t(M) * K / 32);
  const __m512i lim = _mm512_set1_epi32(127), neg = _mm512_set1_epi32(-127);
  for (size_t run = 0; run < size_t(M) * K / 32; ++run) {
    const float* v = x + run * 32;
    const __m512 a = _mm512_loadu_ps(v), b = _mm512_loadu_ps(v + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    int8_t* out = &xq.q[run * 32];
    if (!std::isfinite(amax)) {
      xq.scale[run] = xq.sum16[2 * run] = xq.sum16[2 * run + 1] = xq.sum32[run] = std::nanf("");
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_setzero_si256());
      continue;
    }
    const float s = amax / 127.f;
    xq.scale[run] = s;
    // A run below the smallest normal f32 (1/s would overflow) rounds to zeros.
    const float r = s > 0.f ? 1.f / s : 0.f;
    const __m512 inv = _mm512_set1_ps(std::isfinite(r) ? r : 0.f);
    const __m512i qa = _mm512_min_epi32(
        _mm512_max_epi32(_mm512_cvt_roundps_epi32(_mm512_mul_ps(a, inv),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                         neg),
        lim);
    const __m512i qb = _mm512_min_epi32(
        _mm512_max_epi32(_mm512_cvt_roundps_epi32(_mm512_mul_ps(b, inv),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                         neg),
        lim);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtsepi32_epi8(qa));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm512_cvtsepi32_epi8(qb));
    // The sums of the rounded values (integers, exact), so that an offset sees the same x as
    // the codes do.
    const int s0 = _mm512_reduce_add_epi32(qa), s1 = _mm512_reduce_add_epi32(qb);
    xq.sum16[2 * run] = s * float(s0);
    xq.sum16[2 * run + 1] = s * float(s1);
    xq.sum32[run] = s * float(s0 + s1);
  }
}

// y[m0 .. m0 + MB, panel rows] for one packed panel.
template <int MB, int S>
inline void panel_rows(const Panel& p, const XQuant& xq, int K, int m0, float* y, size_t ldy,
                       __mmask16 store) {
  constexpr int G = S / 4;
  const int nsub = K / S;
  __m512 tot[MB];
  for (int m = 0; m < MB; ++m) tot[m] = _mm512_setzero_ps();
  const int8_t* xr[MB];
  for (int m = 0; m < MB; ++m) xr[m] = &xq.q[size_t(m0 + m) * K];
  for (int j = 0; j < nsub; ++j) {
    __m512i acc[MB];
    for (int m = 0; m < MB; ++m) acc[m] = _mm512_setzero_si512();
    const uint8_t* c = &p.codes[size_t(j) * G * 64];
    for (int g = 0; g < G; ++g) {
      const __m512i w = _mm512_loadu_si512(c + 64 * g);
      for (int m = 0; m < MB; ++m) {
        int32_t four;
        __builtin_memcpy(&four, xr[m] + j * S + 4 * g, 4);
        acc[m] = _mm512_dpbusd_epi32(acc[m], w, _mm512_set1_epi32(four));
      }
    }
    const __m512 sv = _mm512_loadu_ps(&p.scl[size_t(j) * kPanel]);
    const __m512 ov = _mm512_loadu_ps(&p.off[size_t(j) * kPanel]);
    for (int m = 0; m < MB; ++m) {
      const size_t mr = size_t(m0 + m);
      const float xs = xq.scale[mr * (K / 32) + size_t(j) * S / 32];
      const float xsum = S == 32 ? xq.sum32[mr * (K / 32) + j] : xq.sum16[mr * (K / 16) + j];
      tot[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[m]), _mm512_mul_ps(sv, _mm512_set1_ps(xs)),
                               tot[m]);
      tot[m] = _mm512_fnmadd_ps(ov, _mm512_set1_ps(xsum), tot[m]);
    }
  }
  for (int m = 0; m < MB; ++m) _mm512_mask_storeu_ps(y + size_t(m0 + m) * ldy, store, tot[m]);
}

template <int S>
void panel_all_rows(const Panel& p, const XQuant& xq, int M, int K, float* y, size_t ldy,
                    __mmask16 store) {
  int m = 0;
  for (; m + 8 <= M; m += 8) panel_rows<8, S>(p, xq, K, m, y, ldy, store);
  for (; m + 2 <= M; m += 2) panel_rows<2, S>(p, xq, K, m, y, ldy, store);
  for (; m < M; ++m) panel_rows<1, S>(p, xq, K, m, y, ldy, store);
}

}  // namespace

void block_gemm_avx512_vnni(const BlockGemmProblem& g, int panel) {
  // Which run and rows this panel covers: panels never straddle two runs.
  int first = 0;
  for (const auto& run : *g.runs) {
    const int panels = (run.n1 - run.n0 + kPanel - 1) / kPanel;
    if (panel < first + panels) {
      const int n0 = run.n0 + (panel - first) * kPanel;
      const int valid = run.n1 - n0 < kPanel ? run.n1 - n0 : kPanel;
      thread_local Panel p;
      pack_panel(run, n0, g.K, p);
      const __mmask16 store = __mmask16((1u << valid) - 1);
      if (run_values(run.format) == 32)
        panel_all_rows<32>(p, *g.xq, g.M, g.K, g.y + n0, g.ldy, store);
      else
        panel_all_rows<16>(p, *g.xq, g.M, g.K, g.y + n0, g.ldy, store);
      return;
    }
    first += panels;
  }
}

int block_gemm_panels(const std::vector<BlockRun>& runs) {
  int n = 0;
  for (const auto& run : runs) n += (run.n1 - run.n0 + kPanel - 1) / kPanel;
  return n;
}

XQuant* new_block_gemm_x(const float* x, int M, int K) {
  auto* xq = new XQuant;
  quantize_x(x, M, K, *xq);
  return xq;
}

void delete_block_gemm_x(XQuant* xq) { delete xq; }

}  // namespace mlxrs_qmm
