#pragma once
// Prototype: Q4_K repacked as 16-row panels, M=1 decode with 3-digit per-8 activations.
#include <immintrin.h>
#include <sys/mman.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>
#include <x86intrin.h>

static float h2f(uint16_t h) { return _cvtsh_ss(h); }
static uint16_t f2h(float f) { return _cvtss_sh(f, 0); }

// reference: scales/mins of a Q4_K block
static void scmin(const uint8_t* b, int j, int& sc, int& m) {
  if (j < 4) { sc = b[j] & 63; m = b[j + 4] & 63; }
  else { sc = (b[j + 4] & 15) | ((b[j - 4] >> 6) << 4); m = (b[j + 4] >> 4) | ((b[j] >> 6) << 4); }
}
static float ref_weight(const uint8_t* blk, int i) {
  float d = h2f(*(uint16_t*)blk), dmin = h2f(*(uint16_t*)(blk + 2));
  int j = i / 32, sc, m; scmin(blk + 4, j, sc, m);
  const uint8_t* qs = blk + 16; int c = i / 64, l = i % 32;
  int q = (i % 64) < 32 ? (qs[32 * c + l] & 15) : (qs[32 * c + l] >> 4);
  return d * sc * q - dmin * m;
}

// Panel of 16 rows x one block: [d f16 x16][dmin f16 x16][12 x 16 scale bytes][32 lines x 64 B]
constexpr int kPB = 64 + 192 + 2048;
static void repack(const uint8_t* w, int N, int nb, uint8_t* out) {
  for (int p = 0; p < N / 16; ++p)
    for (int b = 0; b < nb; ++b) {
      uint8_t* o = out + (size_t(p) * nb + b) * kPB;
      for (int r = 0; r < 16; ++r) {
        const uint8_t* blk = w + (size_t(p * 16 + r) * nb + b) * 144;
        memcpy(o + 2 * r, blk, 2);
        memcpy(o + 32 + 2 * r, blk + 2, 2);
        for (int k = 0; k < 12; ++k) o[64 + 16 * k + r] = blk[4 + k];
        uint8_t code[256];
        const uint8_t* qs = blk + 16;
        for (int i = 0; i < 256; ++i) { int c = i / 64, l = i % 32; code[i] = (i % 64) < 32 ? (qs[32 * c + l] & 15) : (qs[32 * c + l] >> 4); }
        for (int g = 0; g < 32; ++g)
          for (int i = 0; i < 4; ++i)
            o[256 + 64 * g + 4 * r + i] = uint8_t(code[8 * g + i] | code[8 * g + 4 + i] << 4);
      }
    }
}

// x prepared: per 8 values e (f32), digits d0,d1,d2 as bytes [K] each; sums per 32 of rounded x
struct XP { std::vector<int8_t> d[3]; std::vector<float> e, sum32; };
template <int D> static void prep(const float* x, int K, XP& xp) {
  for (int k = 0; k < 3; ++k) xp.d[k].resize(K);
  xp.e.resize(K / 8); xp.sum32.assign(K / 32, 0.f);
  for (int g = 0; g < K / 8; ++g) {
    float a = 0; for (int i = 0; i < 8; ++i) a = fmaxf(a, fabsf(x[8 * g + i]));
    int f = a > 0 ? ((int)((*(uint32_t*)&a) >> 23)) : 24; if (f < 24) f = 24;
    const int sh = D == 3 ? 146 : D == 2 ? 139 : 133; float up = ldexpf(1.f, sh - f), e = ldexpf(1.f, f - sh);
    xp.e[g] = e;
    for (int i = 0; i < 8; ++i) {
      int X = (int)lrintf(x[8 * g + i] * up);
      int d0, d1 = 0, d2 = 0;
      if (D == 1) d0 = X < -127 ? -127 : X > 127 ? 127 : X;
      else if (D == 2) { d1 = ((X + 64) & 127) - 64; d0 = (X - d1) >> 7; }
      else { d2 = ((X + 64) & 127) - 64; int X1 = (X - d2) >> 7; d1 = ((X1 + 64) & 127) - 64; d0 = (X1 - d1) >> 7; }
      xp.d[0][8 * g + i] = d0; xp.d[1][8 * g + i] = d1; xp.d[2][8 * g + i] = d2;
      xp.sum32[g / 4] += X * e;
    }
  }
}

static inline __m512i bc(const int8_t* p) { int32_t v; memcpy(&v, p, 4); return _mm512_set1_epi32(v); }

// y[16 * p0 .. 16 * p1)
template <int D> __attribute__((noinline)) void panels(const uint8_t* pk, int nb, const XP& xp, float* y, int p0, int p1, int pf) {
  const __m512i lo = _mm512_set1_epi8(15);
  for (int p = p0; p < p1; ++p) {
    __m512 tot = _mm512_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      const uint8_t* o = pk + (size_t(p) * nb + b) * kPB;
      if (pf) for (int l = 0; l < kPB; l += 64) _mm_prefetch((const char*)o + pf + l, _MM_HINT_T0);
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)o));
      const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(o + 32)));
      __m128i sb[12];
      for (int k = 0; k < 12; ++k) sb[k] = _mm_loadu_si128((const __m128i*)(o + 64 + 16 * k));
      const __m128i m63 = _mm_set1_epi8(63), m15 = _mm_set1_epi8(15);
      __m512 msum = _mm512_setzero_ps();
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        __m128i sc, mn;
        if (j < 4) { sc = _mm_and_si128(sb[j], m63); mn = _mm_and_si128(sb[j + 4], m63); }
        else {
          sc = _mm_or_si128(_mm_and_si128(sb[j + 4], m15), _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(sb[j - 4], 6), _mm_set1_epi8(3)), 4));
          mn = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(sb[j + 4], 4), m15), _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(sb[j], 6), _mm_set1_epi8(3)), 4));
        }
        const __m512 scf = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sc)));
        const __m512 mnf = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(mn));
        const int kb = b * 256 + 32 * j;
        msum = _mm512_fmadd_ps(mnf, _mm512_set1_ps(xp.sum32[kb / 32]), msum);
        __m512 u = _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int g4 = 0; g4 < 4; ++g4) {
          const int g = 4 * j + g4, k0 = kb + 8 * g4;
          const __m512i line = _mm512_loadu_si512(o + 256 + 64 * g);
          const __m512i vl = _mm512_and_si512(line, lo), vh = _mm512_and_si512(_mm512_srli_epi16(line, 4), lo);
          __m512i t = _mm512_dpbusd_epi32(_mm512_setzero_si512(), vl, bc(&xp.d[0][k0]));
          t = _mm512_dpbusd_epi32(t, vh, bc(&xp.d[0][k0 + 4]));
          if (D >= 2) {
            t = _mm512_slli_epi32(t, 7);
            t = _mm512_dpbusd_epi32(t, vl, bc(&xp.d[1][k0]));
            t = _mm512_dpbusd_epi32(t, vh, bc(&xp.d[1][k0 + 4]));
          }
          if (D >= 3) {
            t = _mm512_slli_epi32(t, 7);
            t = _mm512_dpbusd_epi32(t, vl, bc(&xp.d[2][k0]));
            t = _mm512_dpbusd_epi32(t, vh, bc(&xp.d[2][k0 + 4]));
          }
          u = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(xp.e[kb / 8 + g4]), u);
        }
        tot = _mm512_fmadd_ps(u, scf, tot);
      }
      tot = _mm512_fnmadd_ps(msum, dmin, tot);
    }
    _mm512_storeu_ps(y + 16 * p, tot);
  }
}

