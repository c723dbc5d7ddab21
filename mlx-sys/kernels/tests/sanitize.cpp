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

extern "C" {
// kernels/qmm.h (not included: it pulls in mlx-c headers).
int mlxrs_qmm_raw(const void* x, int x_dt, const uint32_t* w, const void* scales,
                  const void* biases, int sb_dt, void* y, int y_dt, int M, int N, int K, int bits,
                  int group_size);
int mlxrs_qmm_force_isa(int isa);
void mlxrs_qmm_set_num_threads(int n);
void mlxrs_qmm_set_gemm_threshold(int m);
}

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

// Runs body(isa) for every instruction set the CPU has (1 generic, 2 AVX2, 3 AVX-512) and
// thread counts 1 and 2; restores the defaults afterwards.
template <class F> void for_each_isa_and_threads(F body) {
  for (int threads : {1, 2}) {
    mlxrs_qmm_set_num_threads(threads);
    for (int isa = 1; isa <= 3; ++isa)
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
  // (M, gemm threshold): default threshold 8, so M 9 and 17 take the sgemm path; a high
  // threshold sends them through the row kernel, threshold 1 sends M = 2 through sgemm.
  struct Mt { int M, thr; };
  const Mt ms[] = {{1, 0}, {2, 0}, {3, 0}, {5, 0}, {8, 0}, {9, 0}, {17, 0},
                   {9, 1 << 30}, {17, 1 << 30}, {2, 1}};
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

// ---------------------------------------------------------------- registry
struct Test {
  const char* name;
  int (*fn)();  // returns the number of failures
};
const Test kTests[] = {
    {"qmm", test_qmm},
    {"qmm_unsupported", test_qmm_unsupported},
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
