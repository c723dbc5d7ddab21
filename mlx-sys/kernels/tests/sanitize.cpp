// Sanitizer harness for the native CPU kernels (mlx-sys/kernels): a standalone program, no MLX,
// no test framework, built and run under AddressSanitizer + UndefinedBehaviorSanitizer by
// scripts/sanitize_kernels.sh. It exists because the project's issue on native CPU kernels asks
// for an ASan/UBSan run of them: hand-written SIMD loads, packed-code arithmetic and a thread
// pool are where out-of-bounds reads, races on buffers and UB hide.
//
// Every buffer handed to a kernel is heap-allocated at its exact size, so any read or write past
// it is an ASan report. Outputs are poisoned with NaN before each call and every element is
// checked against an independent double-precision reference computed from the packed words.
//
// Adding a kernel: declare its raw entry point in the extern "C" block, write a
// `int test_xxx()` returning its failure count, and add one line to kTests.
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <vector>

#include "../raw.h"

namespace {

// ---------------------------------------------------------------- shared helpers
enum Dt { F32 = 0, F16 = 1, BF16 = 2 };
const char* dt_name(int d) { return d == F32 ? "f32" : d == F16 ? "f16" : "bf16"; }
size_t dt_size(int d) { return d == F32 ? 4 : 2; }

struct Rng {  // splitmix64, fixed seed: reproducible runs
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * double(next() >> 11) * 0x1p-53; }
};

// Exactly-sized heap buffer (malloc of the exact byte count, so ASan sees any overrun).
struct Buf {
  void* p;
  size_t bytes;
  explicit Buf(size_t n) : p(std::malloc(n ? n : 1)), bytes(n) {}
  ~Buf() { std::free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  template <class T> T* as() { return static_cast<T*>(p); }
};

double half_to_double(uint16_t h) {
  int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  double v = exp == 0 ? std::ldexp(man, -24)
             : exp == 31 ? (man ? NAN : INFINITY)
                         : std::ldexp(1024 + man, exp - 25);
  return sign ? -v : v;
}
uint16_t double_to_half(double v) {  // finite |v| < 65504; truncating (any valid half will do)
  uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  v = std::fabs(v);
  if (v < 0x1p-14) return uint16_t(sign | uint16_t(v * 0x1p24));  // subnormal
  int e;
  double m = std::frexp(v, &e);  // v = m * 2^e, m in [0.5, 1)
  return uint16_t(sign | uint16_t((e + 14) << 10) | (uint16_t(m * 2048) & 0x3ff));
}
double bf16_to_double(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t double_to_bf16(double v) {
  float f = float(v);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}

// Element i of a buffer of dtype d, as double.
double load(const void* p, int d, size_t i) {
  if (d == F32) return static_cast<const float*>(p)[i];
  uint16_t h = static_cast<const uint16_t*>(p)[i];
  return d == F16 ? half_to_double(h) : bf16_to_double(h);
}
// Stores v (rounded to dtype d) and returns the value actually stored.
double store(void* p, int d, size_t i, double v) {
  if (d == F32) return static_cast<float*>(p)[i] = float(v);
  uint16_t h = d == F16 ? double_to_half(v) : double_to_bf16(v);
  static_cast<uint16_t*>(p)[i] = h;
  return d == F16 ? half_to_double(h) : bf16_to_double(h);
}
void fill_nan(void* p, int d, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (d == F32) static_cast<float*>(p)[i] = NAN;
    else static_cast<uint16_t*>(p)[i] = d == F16 ? 0x7e00 : 0x7fc0;
  }
}

int g_reported = 0;  // failure details printed so far (capped)
bool report(bool ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
bool report(bool ok, const char* fmt, ...) {
  if (!ok && g_reported++ < 20) {
    va_list ap;
    va_start(ap, fmt);
    std::fputs("FAIL ", stdout);
    std::vprintf(fmt, ap);
    std::fputc('\n', stdout);
    va_end(ap);
  }
  return ok;
}

// Runs body(isa) for every instruction set the CPU has (1 generic, 2 AVX2, 3 AVX-512, 4
// AVX-512 VNNI) and
// thread counts 1 and 2; restores the defaults afterwards.
template <class F> void for_each_isa_and_threads(F body) {
  for (int threads : {1, 2}) {
    mlxrs_qmm_set_num_threads(threads);
    for (int isa = 1; isa <= 4; ++isa)
      if (mlxrs_qmm_force_isa(isa) == isa) body(isa, threads);
  }
  mlxrs_qmm_force_isa(0);
  mlxrs_qmm_set_num_threads(0);
}

// ---------------------------------------------------------------- quantized matmul
struct QmmCase {
  int M, N, K, bits, group, x_dt, sb_dt, y_dt;
};

// One call on fresh random data against the double reference; returns 1 on failure.
int run_qmm(const QmmCase& c, uint64_t seed, const char* tag) {
  const int M = c.M, N = c.N, K = c.K, ng = K / c.group, per_word = 32 / c.bits;
  const size_t words = size_t(K) / per_word;
  Rng rng{seed};
  Buf x(size_t(M) * K * dt_size(c.x_dt)), w(size_t(N) * words * 4),
      s(size_t(N) * ng * dt_size(c.sb_dt)), b(size_t(N) * ng * dt_size(c.sb_dt)),
      y(size_t(M) * N * dt_size(c.y_dt));
  std::vector<double> xd(size_t(M) * K), wd(size_t(N) * K), wabs(size_t(N) * K);
  for (size_t i = 0; i < xd.size(); ++i) xd[i] = store(x.p, c.x_dt, i, rng.uniform(-1, 1));
  for (size_t i = 0; i < size_t(N) * words; ++i) w.as<uint32_t>()[i] = uint32_t(rng.next());
  for (int n = 0; n < N; ++n)
    for (int g = 0; g < ng; ++g) {
      size_t si = size_t(n) * ng + g;
      double sc = store(s.p, c.sb_dt, si, rng.uniform(-0.05, 0.05));
      double bi = store(b.p, c.sb_dt, si, rng.uniform(-0.5, 0.5));
      for (int k = g * c.group; k < (g + 1) * c.group; ++k) {
        uint32_t word = w.as<uint32_t>()[size_t(n) * words + k / per_word];
        double q = (word >> ((k % per_word) * c.bits)) & ((1u << c.bits) - 1);
        wd[size_t(n) * K + k] = sc * q + bi;
        wabs[size_t(n) * K + k] = std::fabs(sc) * q + std::fabs(bi);
      }
    }
  fill_nan(y.p, c.y_dt, size_t(M) * N);
  int rc = mlxrs_qmm_raw(x.p, c.x_dt, w.as<uint32_t>(), s.p, b.p, c.sb_dt, y.p, c.y_dt, M, N, K,
                         c.bits, c.group);
  if (!report(rc == 0, "%s: returned %d", tag, rc)) return 1;
  // f32 accumulation: error relative to sum |x| |w|; f16/bf16 outputs add their rounding.
  const double out_rel = c.y_dt == F32 ? 0 : c.y_dt == F16 ? 0x1p-10 : 0x1p-7;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double ref = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        ref += xd[size_t(m) * K + k] * wd[size_t(n) * K + k];
        mag += std::fabs(xd[size_t(m) * K + k]) * wabs[size_t(n) * K + k];
      }
      double got = load(y.p, c.y_dt, size_t(m) * N + n);
      double tol = 1e-5 * mag + out_rel * std::fabs(ref) + 1e-6;
      if (!report(std::fabs(got - ref) <= tol, "%s: y[%d,%d] = %.9g, expected %.9g (tol %.3g)",
                  tag, m, n, got, ref, tol))
        return 1;
    }
  return 0;
}

int test_qmm() {
  if (!dlsym(RTLD_DEFAULT, "cblas_sgemm")) {
    std::puts("FAIL qmm: cblas_sgemm not in the process (link OpenBLAS): prefill path untested");
    return 1;
  }
  struct Dts { int x, sb, y; };
  const Dts dts[] = {{F32, F32, F32},  {F16, F32, F32},  {BF16, F32, F32},
                     {F32, F16, F32},  {F32, BF16, F32}, {F32, F32, F16},
                     {F32, F32, BF16}, {F16, F16, F16},  {BF16, BF16, BF16}};
  // (M, gemm threshold): default threshold 16, so M 17 and 33 take the sgemm path and M up to
  // 16 the row kernel; a high threshold sends 17 through the row kernel, threshold 1 sends M =
  // 2 and 9 through sgemm.
  struct Mt { int M, thr; };
  const Mt ms[] = {{1, 0},  {2, 0},  {3, 0},         {5, 0}, {8, 0}, {9, 0},
                   {16, 0}, {17, 0}, {17, 1 << 30}, {9, 1}, {2, 1}};
  int fails = 0, calls = 0;
  for_each_isa_and_threads([&](int isa, int threads) {
    int before = fails, n_before = calls;
    for (int bits : {4, 8})
      for (int group : {32, 64, 128})
        for (int K : {32, 96, 320, 384}) {
          if (K % group) continue;
          for (const Dts& d : dts)
            for (const Mt& mt : ms)
              for (int N : {1, 3, 7, 33, 100}) {
                QmmCase c{mt.M, N, K, bits, group, d.x, d.sb, d.y};
                char tag[160];
                std::snprintf(tag, sizeof tag,
                              "qmm isa=%d threads=%d bits=%d group=%d M=%d N=%d K=%d "
                              "x=%s sb=%s y=%s gemm_threshold=%d",
                              isa, threads, bits, group, c.M, N, K, dt_name(d.x),
                              dt_name(d.sb), dt_name(d.y), mt.thr);
                mlxrs_qmm_set_gemm_threshold(mt.thr);
                fails += run_qmm(c, uint64_t(++calls), tag);
              }
        }
    std::printf("  qmm isa=%d threads=%d: %d calls, %d failed\n", isa, threads,
                calls - n_before, fails - before);
  });
  mlxrs_qmm_set_gemm_threshold(0);
  return fails;
}

// Unsupported parameters: returns 1 and leaves y untouched.
int test_qmm_unsupported() {
  struct Bad { int bits, group, K, x_dt; const char* what; };
  const Bad bad[] = {{3, 32, 96, F32, "bits 3"},
                     {4, 48, 96, F32, "group 48"},
                     {4, 32, 48, F32, "K not a multiple of the group"},
                     {4, 32, 64, 3, "dtype code 3"}};
  const int M = 2, N = 3;
  int fails = 0;
  for (const Bad& c : bad) {
    Buf x(size_t(M) * c.K * 4), w(size_t(N) * c.K * 4), s(N * 4 * 4), b(N * 4 * 4),
        y(size_t(M) * N * 4), y0(y.bytes);
    std::memset(x.p, 0, x.bytes), std::memset(w.p, 0, w.bytes);
    std::memset(s.p, 0, s.bytes), std::memset(b.p, 0, b.bytes);
    fill_nan(y.p, F32, size_t(M) * N);
    std::memcpy(y0.p, y.p, y.bytes);
    int rc = mlxrs_qmm_raw(x.p, c.x_dt, w.as<uint32_t>(), s.p, b.p, F32, y.p, F32, M, N, c.K,
                           c.bits, c.group);
    fails += !report(rc == 1 && std::memcmp(y.p, y0.p, y.bytes) == 0,
                     "qmm unsupported (%s): returned %d%s", c.what, rc,
                     std::memcmp(y.p, y0.p, y.bytes) ? ", y written" : "");
  }
  return fails;
}

// ---------------------------------------------------------------- GGUF blocks as stored
// Weight e of a block by the format's definition (ggml's Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 /
// Q4_K / Q5_K / Q6_K), in double: written here from the definition, independently of the
// kernels' own decoder.
bool small_block_format(int format) {
  return format == MLXRS_QMM_FORMAT_Q4_0 || format == MLXRS_QMM_FORMAT_Q4_1 ||
         format == MLXRS_QMM_FORMAT_Q5_0 || format == MLXRS_QMM_FORMAT_Q5_1 ||
         format == MLXRS_QMM_FORMAT_Q8_0;
}

int block_bytes_of(int format) {
  switch (format) {
    case MLXRS_QMM_FORMAT_Q4_0: return 18;
    case MLXRS_QMM_FORMAT_Q4_1: return 20;
    case MLXRS_QMM_FORMAT_Q5_0: return 22;
    case MLXRS_QMM_FORMAT_Q5_1: return 24;
    case MLXRS_QMM_FORMAT_Q8_0: return 34;
    case MLXRS_QMM_FORMAT_Q2_K: return 84;
    case MLXRS_QMM_FORMAT_Q3_K: return 110;
    case MLXRS_QMM_FORMAT_Q4_K: return 144;
    case MLXRS_QMM_FORMAT_Q5_K: return 176;
    default: return 210;
  }
}

double block_weight(int format, const uint8_t* blk, int e) {
  if (small_block_format(format)) {
    const double d = half_to_double(uint16_t(blk[0] | blk[1] << 8));
    if (format == MLXRS_QMM_FORMAT_Q8_0) return d * int8_t(blk[2 + e]);
    const bool has_m = format == MLXRS_QMM_FORMAT_Q4_1 || format == MLXRS_QMM_FORMAT_Q5_1;
    const bool five = format == MLXRS_QMM_FORMAT_Q5_0 || format == MLXRS_QMM_FORMAT_Q5_1;
    const uint8_t* qs = blk + 2 + (has_m ? 2 : 0) + (five ? 4 : 0);
    int q = e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4;
    if (five) {
      const uint8_t* qh = blk + (has_m ? 4 : 2);
      q += ((qh[e / 8] >> (e % 8)) & 1) * 16;
    }
    if (has_m) return d * q + half_to_double(uint16_t(blk[2] | blk[3] << 8));
    return d * (q - (five ? 16 : 8));
  }
  if (format == MLXRS_QMM_FORMAT_Q2_K || format == MLXRS_QMM_FORMAT_Q3_K) {
    // e = 128 n + 32 k + l: field k (2 bits) of qs[32 n + l]; sub-block e / 16.
    const int n = e / 128, k = (e % 128) / 32, l = e % 32, j = e / 16;
    if (format == MLXRS_QMM_FORMAT_Q2_K) {
      const int q = (blk[16 + 32 * n + l] >> (2 * k)) & 3;
      const double d = half_to_double(uint16_t(blk[80] | blk[81] << 8));
      const double dmin = half_to_double(uint16_t(blk[82] | blk[83] << 8));
      return d * (blk[j] & 15) * q - dmin * (blk[j] >> 4);
    }
    const int low2 = (blk[32 + 32 * n + l] >> (2 * k)) & 3;
    const bool high = (blk[l] >> (4 * n + k)) & 1;
    const uint8_t* sc = blk + 96;
    const int scale = ((j < 8 ? sc[j] & 15 : sc[j - 8] >> 4) | ((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
    const double d = half_to_double(uint16_t(blk[108] | blk[109] << 8));
    return d * scale * (low2 - (high ? 0 : 4));
  }
  if (format == MLXRS_QMM_FORMAT_Q4_K || format == MLXRS_QMM_FORMAT_Q5_K) {
    const double d = half_to_double(uint16_t(blk[0] | blk[1] << 8));
    const double dmin = half_to_double(uint16_t(blk[2] | blk[3] << 8));
    const uint8_t* sc = blk + 4;
    const int j = e / 32;  // sub-block
    int scale, min;
    if (j < 4) {
      scale = sc[j] & 63;
      min = sc[j + 4] & 63;
    } else {
      scale = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
      min = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
    // Q5_K: qh[32] at 16, then qs; the fifth bit of value e is bit 2 (e / 64) + (e % 64 >= 32)
    // of qh[e % 32].
    const bool q5 = format == MLXRS_QMM_FORMAT_Q5_K;
    const uint8_t byte = blk[(q5 ? 48 : 16) + 32 * (e / 64) + e % 32];
    int q = (e % 64) < 32 ? byte & 0xF : byte >> 4;
    if (q5) q += ((blk[16 + e % 32] >> (2 * (e / 64) + (e % 64) / 32)) & 1) * 16;
    return d * scale * q - dmin * min;
  }
  // Q6_K: e = 128 h + 32 quarter + l
  const int h = e / 128, quarter = (e % 128) / 32, l = e % 32;
  const uint8_t lo = blk[64 * h + l + 32 * (quarter & 1)];
  const int low4 = quarter < 2 ? lo & 0xF : lo >> 4;
  const int high2 = (blk[128 + 32 * h + l] >> (2 * quarter)) & 3;
  const double d = half_to_double(uint16_t(blk[208] | blk[209] << 8));
  return d * int8_t(blk[192 + e / 16]) * ((low4 | high2 << 4) - 32);
}

int run_blocks(int format, int M, int N, int K, int x_dt, int y_dt, uint64_t seed, const char* tag) {
  const int bb = block_bytes_of(format), bv = small_block_format(format) ? 32 : 256, nb = K / bv;
  Rng rng{seed};
  Buf x(size_t(M) * K * dt_size(x_dt)), w(size_t(N) * nb * bb), y(size_t(M) * N * dt_size(y_dt));
  std::vector<double> xd(size_t(M) * K);
  for (size_t i = 0; i < xd.size(); ++i) xd[i] = store(x.p, x_dt, i, rng.uniform(-1, 1));
  auto* wb = w.as<uint8_t>();
  for (size_t i = 0; i < w.bytes; ++i) wb[i] = uint8_t(rng.next());
  for (size_t b = 0; b < size_t(N) * nb; ++b) {  // finite block factors
    uint8_t* blk = wb + b * bb;
    const bool one = format == MLXRS_QMM_FORMAT_Q4_0 || format == MLXRS_QMM_FORMAT_Q5_0 ||
                     format == MLXRS_QMM_FORMAT_Q8_0;
    for (int at : format == MLXRS_QMM_FORMAT_Q6_K   ? std::vector<int>{208}
                  : format == MLXRS_QMM_FORMAT_Q3_K ? std::vector<int>{108}
                  : format == MLXRS_QMM_FORMAT_Q2_K ? std::vector<int>{80, 82}
                  : one                             ? std::vector<int>{0}
                                                    : std::vector<int>{0, 2}) {
      uint16_t h = double_to_half(rng.uniform(0.001, 0.01));
      blk[at] = uint8_t(h), blk[at + 1] = uint8_t(h >> 8);
    }
  }
  fill_nan(y.p, y_dt, size_t(M) * N);
  int rc = mlxrs_qmm_blocks_raw(x.p, x_dt, wb, format, y.p, y_dt, M, N, K);
  if (!report(rc == 0, "%s: returned %d", tag, rc)) return 1;
  const double out_rel = y_dt == F32 ? 0 : y_dt == F16 ? 0x1p-10 : 0x1p-7;
  // More than 16 rows on AVX-512 VNNI: the integer prefill, x rounded to 8 bits per run of 32
  // (error at most the run's largest |x| / 254 per value).
  const bool int8 = M > 16 && mlxrs_qmm_isa() == MLXRS_QMM_ISA_AVX512_VNNI;
  for (int n = 0; n < N; ++n) {
    std::vector<double> wd(K);
    for (int k = 0; k < K; ++k) wd[k] = block_weight(format, wb + (size_t(n) * nb + k / bv) * bb, k % bv);
    for (int m = 0; m < M; ++m) {
      double ref = 0, mag = 0, q8 = 0;
      for (int k = 0; k < K; ++k) {
        ref += xd[size_t(m) * K + k] * wd[k];
        mag += std::fabs(xd[size_t(m) * K + k] * wd[k]);
        if (int8) {
          double amax = 0;
          for (int e = k / 32 * 32; e < k / 32 * 32 + 32; ++e)
            amax = std::fmax(amax, std::fabs(xd[size_t(m) * K + e]));
          q8 += std::fabs(wd[k]) * amax / 254;
        }
      }
      double got = load(y.p, y_dt, size_t(m) * N + n);
      double tol = 1e-5 * mag + q8 + out_rel * std::fabs(ref) + 1e-6;
      if (!report(std::fabs(got - ref) <= tol, "%s: y[%d,%d] = %.9g, expected %.9g (tol %.3g)",
                  tag, m, n, got, ref, tol))
        return 1;
    }
  }
  return 0;
}

int test_blocks() {
  int fails = 0, calls = 0;
  const int dts[][2] = {{F32, F32}, {F16, F32}, {F32, BF16}};
  for_each_isa_and_threads([&](int isa, int threads) {
    int before = fails, n_before = calls;
    for (int format : {MLXRS_QMM_FORMAT_Q4_0, MLXRS_QMM_FORMAT_Q4_1, MLXRS_QMM_FORMAT_Q5_0,
                       MLXRS_QMM_FORMAT_Q5_1, MLXRS_QMM_FORMAT_Q8_0, MLXRS_QMM_FORMAT_Q2_K,
                       MLXRS_QMM_FORMAT_Q3_K, MLXRS_QMM_FORMAT_Q4_K,
                       MLXRS_QMM_FORMAT_Q5_K, MLXRS_QMM_FORMAT_Q6_K})
      for (int K : {96, 256, 608, 768})
        for (int M : {1, 2, 5, 17, 40})
          for (int N : {1, 3, 7, 33})
            for (const auto& d : dts) {
              if (K % (small_block_format(format) ? 32 : 256)) continue;
              char tag[160];
              std::snprintf(tag, sizeof tag, "blocks isa=%d threads=%d format=%d M=%d N=%d K=%d x=%s y=%s",
                            isa, threads, format, M, N, K, dt_name(d[0]), dt_name(d[1]));
              fails += run_blocks(format, M, N, K, d[0], d[1], uint64_t(++calls), tag);
            }
    std::printf("  blocks isa=%d threads=%d: %d calls, %d failed\n", isa, threads,
                calls - n_before, fails - before);
  });
  // Refused: unknown format, K not a multiple of the format's block; y untouched.
  Buf x(4 * 512), w(144 * 2), y(4);
  std::memset(x.p, 0, x.bytes), std::memset(w.p, 0, w.bytes);
  fill_nan(y.p, F32, 1);
  fails += !report(mlxrs_qmm_blocks_raw(x.p, F32, w.as<uint8_t>(), 9, y.p, F32, 1, 1, 256) == 1,
                   "blocks: format 9 (Q8_1) accepted");
  fails += !report(mlxrs_qmm_blocks_raw(x.p, F32, w.as<uint8_t>(), MLXRS_QMM_FORMAT_Q4_K, y.p, F32,
                                        1, 1, 300) == 1,
                   "blocks: K = 300 accepted");
  fails += !report(mlxrs_qmm_blocks_raw(x.p, F32, w.as<uint8_t>(), MLXRS_QMM_FORMAT_Q4_0, y.p, F32,
                                        1, 1, 48) == 1,
                   "blocks: Q4_0 with K = 48 accepted");
  fails += !report(std::isnan(y.as<float>()[0]), "blocks: a refused call wrote y");
  return fails;
}

// ---------------------------------------------------------------- decoder-step ops (ops_cpu)
// Exactly-sized f32 buffer filled from rng.uniform(lo, hi).
struct FBuf : Buf {
  size_t n;
  explicit FBuf(size_t count) : Buf(count * 4), n(count) {}
  float* f() { return as<float>(); }
  void random(Rng& rng, double lo, double hi) {
    for (size_t i = 0; i < n; ++i) f()[i] = float(rng.uniform(lo, hi));
  }
  void nan() { fill_nan(p, F32, n); }
  std::vector<float> copy() { return std::vector<float>(f(), f() + n); }
  bool same(const std::vector<float>& v) { return std::memcmp(p, v.data(), bytes) == 0; }
};

int test_rms_norm() {
  int fails = 0, calls = 0;
  for (int rows = 1; rows <= 5; ++rows)
    for (int dim : {1, 2, 7, 64, 65, 576})
      for (bool weighted : {false, true})
        for (float eps : {1e-5f, 1e-6f})
          for (int zero_row : {-1, 0}) {  // 0: first row all zero (eps alone in the sqrt)
            Rng rng{uint64_t(1000 + ++calls)};
            FBuf x(size_t(rows) * dim), w{size_t(dim)}, y{size_t(rows) * dim};
            x.random(rng, -2, 2);
            w.random(rng, -1.5, 1.5);
            if (zero_row == 0) std::memset(x.p, 0, size_t(dim) * 4);
            auto x0 = x.copy(), w0 = w.copy();
            y.nan();
            mlxrs_rms_norm_raw(x.f(), weighted ? w.f() : nullptr, eps, y.f(), size_t(rows), dim);
            char tag[128];
            std::snprintf(tag, sizeof tag, "rms_norm rows=%d dim=%d w=%d eps=%g zero_row=%d",
                          rows, dim, int(weighted), double(eps), zero_row);
            if (!report(x.same(x0) && w.same(w0), "%s: input modified", tag)) { ++fails; continue; }
            bool ok = true;
            for (int r = 0; r < rows && ok; ++r) {
              double ss = 0;
              for (int i = 0; i < dim; ++i) ss += double(x0[size_t(r) * dim + i]) * x0[size_t(r) * dim + i];
              const double inv = 1 / std::sqrt(ss / dim + double(eps));
              for (int i = 0; i < dim && ok; ++i) {
                double ref = x0[size_t(r) * dim + i] * inv * (weighted ? double(w0[i]) : 1.0);
                double got = y.f()[size_t(r) * dim + i];
                ok = report(std::fabs(got - ref) <= 4e-5 * std::fabs(ref) + 1e-6,
                            "%s: y[%d,%d] = %.9g, expected %.9g", tag, r, i, got, ref);
              }
            }
            fails += !ok;
          }
  std::printf("  rms_norm: %d calls\n", calls);
  return fails;
}

int test_swiglu() {
  int fails = 0, calls = 0;
  for (int rows = 1; rows <= 5; ++rows)
    for (int inter : {1, 3, 7, 63, 64, 577}) {
      Rng rng{uint64_t(2000 + ++calls)};
      FBuf gu(size_t(rows) * 2 * inter), y(size_t(rows) * inter);
      gu.random(rng, -8, 8);
      // Extremes of the gate: exp(-g) overflows to inf / underflows to 0.
      const float extreme[] = {-100.f, 100.f, -88.5f, 89.f, 0.f, -0.f};
      for (int k = 0; k < 6 && k < inter; ++k) gu.f()[k] = extreme[k];
      auto g0 = gu.copy();
      y.nan();
      mlxrs_swiglu_raw(gu.f(), y.f(), size_t(rows), inter);
      char tag[96];
      std::snprintf(tag, sizeof tag, "swiglu rows=%d inter=%d", rows, inter);
      if (!report(gu.same(g0), "%s: input modified", tag)) { ++fails; continue; }
      bool ok = true;
      for (int r = 0; r < rows && ok; ++r)
        for (int i = 0; i < inter && ok; ++i) {
          double g = g0[size_t(r) * 2 * inter + i], u = g0[size_t(r) * 2 * inter + inter + i];
          double ref = g / (1 + std::exp(-g)) * u, got = y.f()[size_t(r) * inter + i];
          ok = report(std::isfinite(got) && std::fabs(got - ref) <= 2e-6 * std::fabs(ref) + 1e-7,
                      "%s: y[%d,%d] = %.9g, expected %.9g (g=%g u=%g)", tag, r, i, got, ref, g, u);
        }
      fails += !ok;
    }
  std::printf("  swiglu: %d calls\n", calls);
  return fails;
}

// gelu_tanh(g) u, gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in double.
int test_gelu_tanh_glu() {
  int fails = 0, calls = 0;
  for (int rows = 1; rows <= 5; ++rows)
    for (int inter : {1, 3, 7, 63, 64, 577}) {
      Rng rng{uint64_t(2500 + ++calls)};
      FBuf gu(size_t(rows) * 2 * inter), y(size_t(rows) * inter);
      gu.random(rng, -8, 8);
      // Extremes: x^3 overflows to +-inf; tiny and zero gates.
      const float extreme[] = {-1e13f, 1e13f, -100.f, 100.f, 0.f, -0.f, 1e-30f};
      for (int k = 0; k < 7 && k < inter; ++k) gu.f()[k] = extreme[k];
      auto g0 = gu.copy();
      y.nan();
      mlxrs_gelu_tanh_glu_raw(gu.f(), y.f(), size_t(rows), inter);
      char tag[96];
      std::snprintf(tag, sizeof tag, "gelu_tanh_glu rows=%d inter=%d", rows, inter);
      if (!report(gu.same(g0), "%s: input modified", tag)) { ++fails; continue; }
      bool ok = true;
      for (int r = 0; r < rows && ok; ++r)
        for (int i = 0; i < inter && ok; ++i) {
          double g = g0[size_t(r) * 2 * inter + i], u = g0[size_t(r) * 2 * inter + inter + i];
          double t = std::tanh(std::sqrt(2 / 3.14159265358979323846) * (g + 0.044715 * g * g * g));
          double ref = 0.5 * g * (1 + t) * u, got = y.f()[size_t(r) * inter + i];
          ok = report(std::isfinite(got) &&
                          std::fabs(got - ref) <= 2e-6 * std::fabs(ref) + 1e-7 * std::fabs(u),
                      "%s: y[%d,%d] = %.9g, expected %.9g (g=%g u=%g)", tag, r, i, got, ref, g, u);
        }
      fails += !ok;
    }
  std::printf("  gelu_tanh_glu: %d calls\n", calls);
  return fails;
}

int test_argmax() {
  int fails = 0, calls = 0;
  for (int rows = 1; rows <= 4; ++rows)
    for (int n : {1, 2, 15, 16, 17, 100, 49152}) {
      Rng rng{uint64_t(3000 + ++calls)};
      FBuf x(size_t(rows) * n);
      x.random(rng, -4, 4);
      // Row 1: a NaN inside and a repeated maximum; row 2: NaN first; row 3: all -inf.
      if (rows > 1 && n > 2) {
        x.f()[n + n / 2] = std::nanf("");
        x.f()[n + 1] = 9.f;
        x.f()[2 * n - 1] = 9.f;
      }
      if (rows > 2) x.f()[2 * n] = std::nanf("");
      if (rows > 3)
        for (int i = 0; i < n; ++i) x.f()[3 * n + i] = -INFINITY;
      auto x0 = x.copy();
      Buf out(size_t(rows) * 4);
      std::memset(out.p, 0xff, out.bytes);
      mlxrs_argmax_raw(x.f(), out.as<uint32_t>(), size_t(rows), n);
      char tag[64];
      std::snprintf(tag, sizeof tag, "argmax rows=%d n=%d", rows, n);
      if (!report(x.same(x0), "%s: input modified", tag)) { ++fails; continue; }
      bool ok = true;
      for (int r = 0; r < rows && ok; ++r) {
        // MLX's scan: move on strictly greater values from element 0.
        const float* v = x0.data() + size_t(r) * n;
        uint32_t want = 0;
        float best = v[0];
        for (int i = 1; i < n; ++i)
          if (v[i] > best) best = v[i], want = uint32_t(i);
        ok = report(out.as<uint32_t>()[r] == want, "%s: row %d gave %u, expected %u", tag, r,
                    out.as<uint32_t>()[r], want);
      }
      fails += !ok;
    }
  std::printf("  argmax: %d calls\n", calls);
  return fails;
}

// Null pointers and non-positive sizes: no crash, nothing written.
int test_ops_void_degenerate() {
  int fails = 0;
  FBuf x(8), w(8), y(8), gu(16);
  Rng rng{3000};
  x.random(rng, -1, 1), w.random(rng, -1, 1), gu.random(rng, -1, 1);
  y.nan();
  auto y0 = y.copy();
  mlxrs_rms_norm_raw(nullptr, w.f(), 1e-5f, y.f(), 1, 8);
  fails += !report(y.same(y0), "rms_norm x=null: y written");
  mlxrs_rms_norm_raw(x.f(), w.f(), 1e-5f, nullptr, 1, 8);
  mlxrs_rms_norm_raw(nullptr, nullptr, 1e-5f, nullptr, 1, 8);
  for (int dim : {0, -1, -8}) {
    mlxrs_rms_norm_raw(x.f(), w.f(), 1e-5f, y.f(), 1, dim);
    fails += !report(y.same(y0), "rms_norm dim=%d: y written", dim);
  }
  mlxrs_rms_norm_raw(x.f(), w.f(), 1e-5f, y.f(), 0, 8);
  fails += !report(y.same(y0), "rms_norm rows=0: y written");
  mlxrs_swiglu_raw(nullptr, y.f(), 1, 8);
  fails += !report(y.same(y0), "swiglu gu=null: y written");
  mlxrs_swiglu_raw(gu.f(), nullptr, 1, 8);
  mlxrs_swiglu_raw(nullptr, nullptr, 1, 8);
  for (int inter : {0, -1, -8}) {
    mlxrs_swiglu_raw(gu.f(), y.f(), 1, inter);
    fails += !report(y.same(y0), "swiglu inter=%d: y written", inter);
  }
  mlxrs_swiglu_raw(gu.f(), y.f(), 0, 8);
  fails += !report(y.same(y0), "swiglu rows=0: y written");
  mlxrs_gelu_tanh_glu_raw(nullptr, y.f(), 1, 8);
  fails += !report(y.same(y0), "gelu_tanh_glu gu=null: y written");
  mlxrs_gelu_tanh_glu_raw(gu.f(), nullptr, 1, 8);
  for (int inter : {0, -1}) {
    mlxrs_gelu_tanh_glu_raw(gu.f(), y.f(), 1, inter);
    fails += !report(y.same(y0), "gelu_tanh_glu inter=%d: y written", inter);
  }
  return fails;
}

struct AttnCase {
  int batch, tokens, heads, kv_heads, head_dim, capacity, offset;
  bool qn, kn;
  float scale;
  int window = 0;       // 0: none
  float softcap = 0.f;  // 0: none
};

// Double reference of one head's RMS norm (w may be null) and rotate-half RoPE at `pos`.
std::vector<double> ref_norm_rope(const float* x, const float* w, double eps, int D, int pos,
                                  const float* inv_freq) {
  std::vector<double> v(x, x + D);
  if (w) {
    double ss = 0;
    for (double e : v) ss += e * e;
    const double inv = 1 / std::sqrt(ss / D + eps);
    for (int i = 0; i < D; ++i) v[i] *= inv * w[i];
  }
  const int h = D / 2;
  for (int i = 0; i < h; ++i) {
    const double a = double(pos) * inv_freq[i], c = std::cos(a), s = std::sin(a);
    const double x1 = v[i], x2 = v[i + h];
    v[i] = x1 * c - x2 * s;
    v[i + h] = x2 * c + x1 * s;
  }
  return v;
}

// One call on fresh random data (exact-size buffers) against the double reference, per token:
// token l at position offset + l, k/v written in slot (offset + l) % capacity, causal
// attention over positions [max(0, offset + l - window + 1), offset + l] (the older ones read
// from the random cache at their slots), scores soft-capped when softcap > 0.
int run_attn(const AttnCase& c, uint64_t seed, const char* tag) {
  const int B = c.batch, L = c.tokens, H = c.heads, Hkv = c.kv_heads, D = c.head_dim,
            C = c.capacity, off = c.offset, width = (H + 2 * Hkv) * D, group = H / Hkv;
  const float eps = 1e-6f;
  Rng rng{seed};
  FBuf qkv(size_t(B) * L * width), kc(size_t(B) * Hkv * C * D), vc(kc.n),
      out(size_t(B) * L * H * D), inv_freq{size_t(D / 2)}, qn{size_t(D)}, kn{size_t(D)};
  qkv.random(rng, -1, 1), kc.random(rng, -1, 1), vc.random(rng, -1, 1);
  qn.random(rng, 0.5, 1.5), kn.random(rng, 0.5, 1.5);
  for (int i = 0; i < D / 2; ++i) inv_freq.f()[i] = float(std::pow(10000.0, -2.0 * i / D));
  auto qkv0 = qkv.copy(), kc0 = kc.copy(), vc0 = vc.copy(), if0 = inv_freq.copy(),
       qn0 = qn.copy(), kn0 = kn.copy();
  out.nan();
  int rc = mlxrs_cached_attention_raw(qkv.f(), kc.f(), vc.f(), out.f(), inv_freq.f(),
                                      c.qn ? qn.f() : nullptr, c.kn ? kn.f() : nullptr, eps,
                                      c.scale, B, L, H, Hkv, D, C, off, c.window, c.softcap);
  if (!report(rc == 0, "%s: returned %d", tag, rc)) return 1;
  if (!report(qkv.same(qkv0) && inv_freq.same(if0) && qn.same(qn0) && kn.same(kn0),
              "%s: an input was modified", tag))
    return 1;
  auto row = [&](int b, int l) { return qkv0.data() + (size_t(b) * L + l) * width; };
  for (int b = 0; b < B; ++b) {
    // kref[j][l]: the normed, roped key of token l for kv head j.
    std::vector<std::vector<std::vector<double>>> kref(Hkv);
    for (int j = 0; j < Hkv; ++j) {
      for (int l = 0; l < L; ++l)
        kref[j].push_back(ref_norm_rope(row(b, l) + size_t(H + j) * D,
                                        c.kn ? kn0.data() : nullptr, eps, D, off + l,
                                        if0.data()));
      // Cache: slots of positions outside [offset, offset + L) untouched; k there matches,
      // v is copied exactly.
      for (int t = 0; t < C; ++t) {
        const size_t at = ((size_t(b) * Hkv + j) * C + t) * D;
        const int l = ((t - off) % C + C) % C;  // the new token whose slot t is, if l < L
        if (l >= L) {
          bool same = !std::memcmp(kc.f() + at, kc0.data() + at, size_t(D) * 4) &&
                      !std::memcmp(vc.f() + at, vc0.data() + at, size_t(D) * 4);
          if (!report(same, "%s: cache b=%d kv=%d slot=%d (not written) modified", tag, b, j, t))
            return 1;
          continue;
        }
        const auto& kt = kref[j][l];
        double kmax = 0;
        for (double e : kt) kmax = std::fmax(kmax, std::fabs(e));
        for (int i = 0; i < D; ++i) {
          double got = kc.f()[at + i];
          if (!report(std::fabs(got - kt[i]) <= 3e-5 * kmax + 1e-6,
                      "%s: k_cache[b=%d,kv=%d,t=%d,%d] = %.9g, expected %.9g", tag, b, j, t, i,
                      got, kt[i]))
            return 1;
        }
        if (!report(!std::memcmp(vc.f() + at, row(b, l) + size_t(H + Hkv + j) * D,
                                 size_t(D) * 4),
                    "%s: v_cache[b=%d,kv=%d,slot=%d] is not the v of qkv", tag, b, j, t))
          return 1;
      }
    }
    for (int l = 0; l < L; ++l)
      for (int h = 0; h < H; ++h) {
        const int j = h / group, pos = off + l;
        const int lo = c.window > 0 && pos - c.window + 1 > 0 ? pos - c.window + 1 : 0;
        const int seen = pos - lo + 1;
        auto q = ref_norm_rope(row(b, l) + size_t(h) * D, c.qn ? qn0.data() : nullptr, eps, D,
                               off + l, if0.data());
        const size_t base = (size_t(b) * Hkv + j) * C * D;
        // Position t (lo <= t <= pos): a new token, or the random cache at slot t % C.
        auto key = [&](int t, int i) {
          return t >= off ? kref[j][t - off][i] : double(kc0[base + size_t(t % C) * D + i]);
        };
        auto val = [&](int t, int i) {
          return t >= off ? double(row(b, t - off)[size_t(H + Hkv + j) * D + i])
                          : double(vc0[base + size_t(t % C) * D + i]);
        };
        std::vector<double> s(seen);
        double mx = -INFINITY, smag = 0, vmax = 0;
        for (int k = 0; k < seen; ++k) {
          const int t = lo + k;
          double d = 0, m = 0;
          for (int i = 0; i < D; ++i) d += q[i] * key(t, i), m += std::fabs(q[i] * key(t, i));
          s[k] = c.scale * d;
          if (c.softcap > 0) s[k] = c.softcap * std::tanh(s[k] / c.softcap);
          mx = std::fmax(mx, s[k]);
          smag = std::fmax(smag, std::fabs(c.scale) * m);
          for (int i = 0; i < D; ++i) vmax = std::fmax(vmax, std::fabs(val(t, i)));
        }
        double sum = 0;
        for (double& e : s) sum += (e = std::exp(e - mx));
        const double tol = vmax * (2e-5 + 3e-5 * smag) + 1e-6;
        for (int i = 0; i < D; ++i) {
          double ref = 0;
          for (int k = 0; k < seen; ++k) ref += s[k] / sum * val(lo + k, i);
          double got = out.f()[((size_t(b) * L + l) * H + h) * D + i];
          if (!report(std::fabs(got - ref) <= tol,
                      "%s: out[b=%d,l=%d,h=%d,%d] = %.9g, expected %.9g (tol %.3g)", tag, b, l,
                      h, i, got, ref, tol))
            return 1;
        }
      }
  }
  return 0;
}

// Chunks of L tokens (1: decode). The kernel takes a kv-head group of (heads / kv_heads) * L
// rows through BLAS (cblas_sgemm) from 16 rows on, else per-row loops: groups 1..4 with L in
// {1, 2, 5, 17} give both (L 17 always BLAS, L 5 with group 4, L 1 and 2 never). Offsets
// include offset + L == capacity and capacity == L.
int test_cached_attention() {
  if (!dlsym(RTLD_DEFAULT, "cblas_sgemm")) {
    std::puts("FAIL cached_attention: cblas_sgemm not in the process (link OpenBLAS): "
              "BLAS path untested");
    return 1;
  }
  struct Hk { int h, kv; };
  struct Co { int extra, off; };  // capacity L + extra
  const Hk hks[] = {{1, 1}, {4, 2}, {9, 3}, {4, 1}};
  const Co cos_[] = {{0, 0}, {4, 0}, {4, 1}, {4, 4}, {32, 0}, {32, 17}, {32, 32}};
  int fails = 0, calls = 0, blas_calls = 0;
  for (int L : {1, 2, 5, 17})
    for (int D : {2, 8, 64, 128})
      for (const Hk& hk : hks)
        for (const Co& co : cos_)
          for (int B : {1, 2})
            for (int norms = 0; norms < 4; ++norms)
              for (float scale : {float(1 / std::sqrt(double(D))), 2.0f}) {
                AttnCase c{B,      L,     hk.h,           hk.kv,          D,
                           L + co.extra, co.off, bool(norms & 1), bool(norms & 2), scale};
                blas_calls += (hk.h / hk.kv) * L >= 16;
                char tag[192];
                std::snprintf(tag, sizeof tag,
                              "cached_attention B=%d L=%d heads=%d kv=%d D=%d cap=%d off=%d "
                              "q_norm=%d k_norm=%d scale=%g",
                              B, L, c.heads, c.kv_heads, D, c.capacity, c.offset, int(c.qn),
                              int(c.kn), double(scale));
                fails += run_attn(c, uint64_t(4000 + ++calls), tag);
              }
  // Long chunks: a group's rows split into several BLAS blocks of 256 rows (300 and 540).
  for (int L : {100, 180})
    for (int off : {0, 5}) {
      AttnCase c{1, L, 9, 3, 16, L + 8, off, true, true, 0.25f};
      char tag[96];
      std::snprintf(tag, sizeof tag, "cached_attention long chunk L=%d off=%d", L, off);
      ++blas_calls;
      fails += run_attn(c, uint64_t(4000 + ++calls), tag);
    }
  std::printf("  cached_attention: %d calls (%d with >= 16 rows per group: BLAS)\n", calls,
              blas_calls);
  // The per-row loops run the ISA's attend kernel, and decode spreads rows over the pool:
  // a smaller sweep under every ISA with 1 and 2 threads.
  for_each_isa_and_threads([&](int isa, int threads) {
    int before = fails, n_before = calls;
    for (int L : {1, 5, 17})
      for (int D : {8, 64})
        for (const Hk& hk : hks)
          for (const Co& co : {Co{4, 4}, Co{32, 17}, Co{32, 32}}) {
            AttnCase c{2, L, hk.h, hk.kv, D, L + co.extra, co.off, true, true,
                       float(1 / std::sqrt(double(D)))};
            char tag[192];
            std::snprintf(tag, sizeof tag,
                          "cached_attention isa=%d threads=%d B=2 L=%d heads=%d kv=%d D=%d "
                          "cap=%d off=%d",
                          isa, threads, L, c.heads, c.kv_heads, D, c.capacity, c.offset);
            fails += run_attn(c, uint64_t(4000 + ++calls), tag);
          }
    std::printf("  cached_attention isa=%d threads=%d: %d calls, %d failed\n", isa, threads,
                calls - n_before, fails - before);
  });
  return fails;
}

// Windows (plain caches and rings that have wrapped, decode and chunks, the per-row loops and
// the BLAS path) and logit soft caps, under every ISA with 1 and 2 threads for a smaller set.
int test_cached_attention_window() {
  struct Hk { int h, kv; };
  const Hk hks[] = {{1, 1}, {4, 2}, {4, 1}};
  int fails = 0, calls = 0;
  auto one = [&](const AttnCase& c, const char* extra) {
    char tag[224];
    std::snprintf(tag, sizeof tag,
                  "cached_attention%s B=%d L=%d heads=%d kv=%d D=%d cap=%d off=%d window=%d "
                  "softcap=%g",
                  extra, c.batch, c.tokens, c.heads, c.kv_heads, c.head_dim, c.capacity,
                  c.offset, c.window, double(c.softcap));
    fails += run_attn(c, uint64_t(6000 + ++calls), tag);
  };
  for (int L : {1, 2, 5, 17})
    for (int W : {1, 3, 8, 40})
      for (const Hk& hk : hks)
        for (float softcap : {0.f, 0.5f, 30.f})
          for (int D : {8, 64}) {
            // Plain caches (offset + L <= capacity), the window inside or beyond the context.
            for (int off : {0, 3, 20})
              one(AttnCase{2, L, hk.h, hk.kv, D, off + L + 2, off, true, false, 0.7f, W, softcap},
                  "");
            // Rings of exactly W + L - 1 slots and one more, written past their end.
            for (int extra : {0, 1})
              for (int off : {W + L - 1 + extra, 3 * (W + L) + 2, 100})
                one(AttnCase{2, L, hk.h, hk.kv, D, W + L - 1 + extra, off, false, true, 0.7f, W,
                             softcap},
                    " ring");
          }
  // Soft cap without a window (plain cache).
  for (int L : {1, 17})
    one(AttnCase{1, L, 4, 2, 64, L + 9, 9, true, true, 0.5f, 0, 5.f}, "");
  // Long ring chunk: several BLAS blocks.
  one(AttnCase{1, 180, 4, 1, 16, 180 + 63, 500, true, true, 0.25f, 64, 0.f}, " long ring");
  std::printf("  cached_attention window / softcap: %d calls\n", calls);
  for_each_isa_and_threads([&](int isa, int threads) {
    int before = fails, n_before = calls;
    char extra[48];
    std::snprintf(extra, sizeof extra, " isa=%d threads=%d", isa, threads);
    for (int L : {1, 17})
      for (float softcap : {0.f, 30.f}) {
        one(AttnCase{2, L, 4, 2, 64, L + 8, 8, true, true, 0.3f, 5, softcap}, extra);
        one(AttnCase{2, L, 4, 1, 64, 8 + L - 1, 37, true, true, 0.3f, 8, softcap}, extra);
      }
    std::printf("  cached_attention window isa=%d threads=%d: %d calls, %d failed\n", isa,
                threads, calls - n_before, fails - before);
  });
  return fails;
}

// Inconsistent parameters: returns 1 and writes nothing. Buffers are sized for the largest
// shape below, so a kernel that went ahead would be seen writing rather than crash.
int test_cached_attention_invalid() {
  struct Bad {
    int batch, tokens, heads, kv, D, cap, off;
    int null_arg;  // 0 none, 1 qkv, 2 k_cache, 3 v_cache, 4 out, 5 inv_freq
    const char* what;
    int window = 0;
    float softcap = 0.f;
  };
  const Bad bad[] = {
      {1, 1, 3, 2, 8, 5, 1, 0, "heads % kv_heads != 0"},
      {1, 1, 2, 4, 8, 5, 1, 0, "kv_heads > heads"},
      {1, 1, 4, 0, 8, 5, 1, 0, "kv_heads 0"},
      {1, 1, 0, 1, 8, 5, 1, 0, "heads 0"},
      {1, 1, -4, -2, 8, 5, 1, 0, "negative heads"},
      {1, 1, 4, 2, 7, 5, 1, 0, "odd head_dim"},
      {1, 1, 4, 2, 1, 5, 1, 0, "head_dim 1"},
      {1, 1, 4, 2, 0, 5, 1, 0, "head_dim 0"},
      {1, 1, 4, 2, -8, 5, 1, 0, "negative head_dim"},
      {1, 1, 4, 2, 8, 5, 5, 0, "offset == capacity"},
      {1, 1, 4, 2, 8, 5, 9, 0, "offset > capacity"},
      {1, 1, 4, 2, 8, 5, -1, 0, "negative offset"},
      {1, 1, 4, 2, 8, 0, 0, 0, "capacity 0"},
      {-1, 1, 4, 2, 8, 5, 1, 0, "negative batch"},
      {1, 0, 4, 2, 8, 5, 1, 0, "tokens 0"},
      {2, 0, 4, 2, 8, 5, 0, 0, "tokens 0, offset 0"},
      {1, -1, 4, 2, 8, 5, 1, 0, "negative tokens"},
      {1, 3, 4, 2, 8, 5, 3, 0, "offset + tokens = capacity + 1"},
      {2, 2, 4, 2, 8, 5, 4, 0, "offset + tokens > capacity (2 tokens)"},
      {1, 6, 4, 2, 8, 5, 0, 0, "tokens > capacity"},
      {2, 17, 8, 2, 8, 16, 0, 0, "tokens > capacity (BLAS-sized group)"},
      {1, 2, 4, 2, 8, 5, -1, 0, "negative offset, 2 tokens"},
      {1, 3, 4, 2, 8, 0, 0, 0, "capacity 0, 3 tokens"},
      {2, 2, 4, 2, 8, 5, 1, 1, "qkv null"},
      {2, 2, 4, 2, 8, 5, 1, 2, "k_cache null"},
      {2, 2, 4, 2, 8, 5, 1, 3, "v_cache null"},
      {2, 2, 4, 2, 8, 5, 1, 4, "out null"},
      {2, 2, 4, 2, 8, 5, 1, 5, "inv_freq null"},
      {1, 1, 4, 2, 8, 5, 1, 0, "negative window", -1},
      {1, 1, 4, 2, 8, 5, 1, 0, "negative soft cap", 0, -1.f},
      {1, 1, 4, 2, 8, 5, 1, 0, "infinite soft cap", 0, INFINITY},
      {1, 1, 4, 2, 8, 5, 1, 0, "NaN soft cap", 0, NAN},
      {1, 1, 4, 2, 8, 5, 5, 0, "ring smaller than the window", 6},
      {1, 3, 4, 2, 8, 5, 4, 0, "ring < window + L - 1", 4},
      {1, 2, 4, 2, 8, 5, 9, 0, "ring < window + L - 1 (wrapped)", 5},
      {1, 1, 4, 2, 8, 0, 0, 0, "capacity 0 with a window", 1},
  };
  const size_t big = 2 * 16 * 16 * 16 * 4;
  int fails = 0;
  for (const Bad& c : bad) {
    Rng rng{5000};
    FBuf qkv(big), kc(big), vc(big), out(big), inv_freq(64), qn(64), kn(64);
    qkv.random(rng, -1, 1), kc.random(rng, -1, 1), vc.random(rng, -1, 1);
    inv_freq.random(rng, 0, 1), qn.random(rng, 0.5, 1.5), kn.random(rng, 0.5, 1.5);
    out.nan();
    auto qkv0 = qkv.copy(), kc0 = kc.copy(), vc0 = vc.copy(), out0 = out.copy();
    int rc = mlxrs_cached_attention_raw(
        c.null_arg == 1 ? nullptr : qkv.f(), c.null_arg == 2 ? nullptr : kc.f(),
        c.null_arg == 3 ? nullptr : vc.f(), c.null_arg == 4 ? nullptr : out.f(),
        c.null_arg == 5 ? nullptr : inv_freq.f(), qn.f(), kn.f(), 1e-6f, 0.35f, c.batch,
        c.tokens, c.heads, c.kv, c.D, c.cap, c.off, c.window, c.softcap);
    bool untouched = qkv.same(qkv0) && kc.same(kc0) && vc.same(vc0) && out.same(out0);
    fails += !report(rc == 1 && untouched, "cached_attention invalid (%s): returned %d%s",
                     c.what, rc, untouched ? "" : ", buffers written");
  }
  // batch 0 is valid and touches nothing, for one token and for a chunk.
  for (int tokens : {1, 3}) {
    FBuf qkv(64), kc(64), vc(64), out(64), inv_freq(4);
    Rng rng{5001};
    qkv.random(rng, -1, 1), kc.random(rng, -1, 1), vc.random(rng, -1, 1);
    inv_freq.random(rng, 0, 1);
    out.nan();
    auto kc0 = kc.copy(), vc0 = vc.copy(), out0 = out.copy();
    int rc = mlxrs_cached_attention_raw(qkv.f(), kc.f(), vc.f(), out.f(), inv_freq.f(), nullptr,
                                        nullptr, 1e-6f, 0.35f, 0, tokens, 4, 2, 8, 5, 1, 0, 0.f);
    fails += !report(rc == 0 && kc.same(kc0) && vc.same(vc0) && out.same(out0),
                     "cached_attention batch=0 tokens=%d: returned %d or wrote", tokens, rc);
  }
  return fails;
}

// ---------------------------------------------------------------- registry
struct Test {
  const char* name;
  int (*fn)();  // returns the number of failures
};
// IEEE float -> half bits, to nearest even, as a C cast does (the reference of the kernels').
uint16_t to_half_bits(float x) {
  _Float16 h = static_cast<_Float16>(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

// Half-precision caches: the same call on caches of halves and on f32 caches holding the same
// (half-representable) values. The half call keeps the slots it does not write bit for bit,
// stores each new value rounded to nearest even (bit for bit) and each new key within one half
// ulp of the f32 call's key, and its output stays within 2e-3 of the values' scale of the f32
// call's (its new keys and values are rounded). Decode and chunks, per-row loops and BLAS,
// windows over rings and soft caps, under every ISA with 1 and 2 threads.
int test_cached_attention_half() {
  int fails = 0, calls = 0;
  struct Case { int B, L, H, Hkv, D, C, off, window; float softcap; };
  const Case cases[] = {{2, 1, 4, 2, 8, 9, 4, 0, 0.f},   {1, 1, 9, 3, 64, 40, 39, 0, 0.f},
                        {2, 5, 4, 1, 64, 12, 3, 0, 0.f},  {1, 17, 9, 3, 128, 40, 7, 0, 0.f},
                        {1, 6, 4, 2, 16, 12, 9, 4, 0.f},   {2, 1, 2, 1, 24, 8, 6, 0, 5.f},
                        {1, 20, 2, 1, 32, 24, 30, 5, 2.f}};
  for_each_isa_and_threads([&](int isa, int threads) {
    for (const Case& c : cases) {
      char tag[160];
      std::snprintf(tag, sizeof tag,
                    "cached_attention_half isa=%d threads=%d B=%d L=%d heads=%d kv=%d D=%d "
                    "cap=%d off=%d window=%d softcap=%g",
                    isa, threads, c.B, c.L, c.H, c.Hkv, c.D, c.C, c.off, c.window,
                    double(c.softcap));
      Rng rng{uint64_t(9000 + ++calls)};
      const size_t width = size_t(c.H + 2 * c.Hkv) * c.D, cache = size_t(c.B) * c.Hkv * c.C * c.D;
      FBuf qkv(size_t(c.B) * c.L * width), kc(cache), vc(cache), out_f(size_t(c.B) * c.L * c.H * c.D),
          out_h(out_f.n), inv_freq{size_t(c.D / 2)}, kn{size_t(c.D)};
      Buf kh(cache * 2), vh(cache * 2);
      qkv.random(rng, -1, 1), kc.random(rng, -1, 1), vc.random(rng, -1, 1), kn.random(rng, 0.5, 1.5);
      for (size_t i = 0; i < cache; ++i) {  // the same half values in both caches
        kh.as<uint16_t>()[i] = to_half_bits(kc.f()[i]);
        vh.as<uint16_t>()[i] = to_half_bits(vc.f()[i]);
        kc.f()[i] = float(half_to_double(kh.as<uint16_t>()[i]));
        vc.f()[i] = float(half_to_double(vh.as<uint16_t>()[i]));
      }
      for (int i = 0; i < c.D / 2; ++i) inv_freq.f()[i] = float(std::pow(10000.0, -2.0 * i / c.D));
      std::vector<uint16_t> kh0(kh.as<uint16_t>(), kh.as<uint16_t>() + cache),
          vh0(vh.as<uint16_t>(), vh.as<uint16_t>() + cache);
      out_f.nan(), out_h.nan();
      const float scale = float(1 / std::sqrt(double(c.D)));
      int rf = mlxrs_cached_attention_raw(qkv.f(), kc.f(), vc.f(), out_f.f(), inv_freq.f(),
                                          nullptr, kn.f(), 1e-6f, scale, c.B, c.L, c.H, c.Hkv,
                                          c.D, c.C, c.off, c.window, c.softcap);
      int rh = mlxrs_cached_attention_half_raw(
          qkv.f(), kh.as<uint16_t>(), vh.as<uint16_t>(), out_h.f(), inv_freq.f(), nullptr,
          kn.f(), 1e-6f, scale, c.B, c.L, c.H, c.Hkv, c.D, c.C, c.off, c.window, c.softcap);
      if (!report(rf == 0 && rh == 0, "%s: returned %d / %d", tag, rf, rh)) { ++fails; continue; }
      bool ok = true;
      for (size_t i = 0; i < cache && ok; ++i) {
        const int slot = int((i / c.D) % c.C);
        const bool written = ((slot - c.off) % c.C + c.C) % c.C < c.L;
        const uint16_t k = kh.as<uint16_t>()[i], v = vh.as<uint16_t>()[i];
        if (!written) {
          ok = report(k == kh0[i] && v == vh0[i], "%s: slot %d element %zu changed", tag, slot, i);
        } else {
          const double kf = kc.f()[i], kgot = half_to_double(k);
          ok = report(v == to_half_bits(vc.f()[i]), "%s: v element %zu: %#x, want %#x", tag, i,
                      unsigned(v), unsigned(to_half_bits(vc.f()[i]))) &&
               report(std::fabs(kgot - kf) <= std::fabs(kf) / 1024 + 1e-6,
                      "%s: k element %zu: %.9g, f32 call %.9g", tag, i, kgot, kf);
        }
      }
      for (size_t i = 0; i < out_f.n && ok; ++i)
        ok = report(std::fabs(double(out_h.f()[i]) - out_f.f()[i]) <= 2e-3,
                    "%s: out[%zu] = %.9g, f32 caches give %.9g", tag, i, double(out_h.f()[i]),
                    double(out_f.f()[i]));
      fails += !ok;
    }
  });
  std::printf("  cached_attention_half: %d calls\n", calls);
  return fails;
}

const Test kTests[] = {
    {"qmm", test_qmm},
    {"qmm_unsupported", test_qmm_unsupported},
    {"blocks", test_blocks},
    {"rms_norm", test_rms_norm},
    {"swiglu", test_swiglu},
    {"gelu_tanh_glu", test_gelu_tanh_glu},
    {"argmax", test_argmax},
    {"ops_degenerate", test_ops_void_degenerate},
    {"cached_attention", test_cached_attention},
    {"cached_attention_window", test_cached_attention_window},
    {"cached_attention_invalid", test_cached_attention_invalid},
    {"cached_attention_half", test_cached_attention_half},
};

}  // namespace

// Usage: sanitize [substring]: runs the tests whose name contains substring (default all).
int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // keep output ordered with sanitizer reports
  int total = 0, ran = 0;
  for (const Test& t : kTests) {
    if (argc > 1 && !std::strstr(t.name, argv[1])) continue;
    int f = t.fn();
    std::printf("%-20s %s (%d failures)\n", t.name, f ? "FAILED" : "ok", f);
    total += f, ++ran;
  }
  std::printf("%d tests, %d failures\n", ran, total);
  return total || !ran ? 1 : 0;
}
