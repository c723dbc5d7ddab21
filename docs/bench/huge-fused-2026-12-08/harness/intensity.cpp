// Achieved read bandwidth of 2 threads streaming 1 GiB while doing K VPDPBUSD per 64-byte line.
#include <immintrin.h>
#include <sys/mman.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
template <int K>
__attribute__((noinline)) __m512i run(const uint8_t* p, size_t n, int pf) {
  __m512i acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = _mm512_setzero_si512();
  const __m512i x = _mm512_set1_epi32(0x01020304);
  for (size_t o = 0; o < n; o += 256) {
    if (pf) _mm_prefetch((const char*)p + o + pf, _MM_HINT_T0);
#pragma GCC unroll 4
    for (int l = 0; l < 4; ++l) {
      __m512i w = _mm512_load_si512(p + o + 64 * l);
#pragma GCC unroll 64
      for (int k = 0; k < K; ++k) acc[(k + l) & 7] = _mm512_dpbusd_epi32(acc[(k + l) & 7], w, x);
      if (K == 0) acc[l] = _mm512_add_epi32(acc[l], w);
    }
  }
  __m512i s = acc[0];
  for (int i = 1; i < 8; ++i) s = _mm512_add_epi32(s, acc[i]);
  return s;
}
typedef __m512i (*Fn)(const uint8_t*, size_t, int);
int main(int argc, char** argv) {
  size_t bytes = size_t(1) << 30;
  uint8_t* buf = (uint8_t*)aligned_alloc(1 << 21, bytes);
  madvise(buf, bytes, MADV_HUGEPAGE);
  memset(buf, 1, bytes);
  Fn fns[] = {run<0>, run<1>, run<2>, run<4>, run<6>, run<8>, run<12>, run<16>, run<24>};
  int ks[] = {0, 1, 2, 4, 6, 8, 12, 16, 24};
  int pf = argc > 1 ? atoi(argv[1]) : 0;
  for (int rep = 0; rep < 2; ++rep)
    for (int f = 0; f < 9; ++f) {
      double best = 1e9;
      for (int r = 0; r < 3; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        std::thread t([&] { volatile __m512i s = fns[f](buf + bytes / 2, bytes / 2, pf); (void)s; });
        volatile __m512i s = fns[f](buf, bytes / 2, pf); (void)s;
        t.join();
        double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (dt < best) best = dt;
      }
      // single thread in-cache compute rate: 1 MiB repeated
      auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < 256; ++r) { volatile __m512i s = fns[f](buf, 1 << 20, 0); (void)s; }
      double dc = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      printf("K=%2d per line: DRAM 2 threads %.1f GB/s; L2-resident 1 thread %.1f GB/s\n", ks[f],
             bytes / best / 1e9, 256.0 * (1 << 20) / dc / 1e9);
    }
}
