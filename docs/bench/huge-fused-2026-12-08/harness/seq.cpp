// A decode step's sequence of matrices (Qwen2.5-1.5B shapes, all Q4_K, 28 layers, ~737 MB),
// through the repo's M=1 kernel with 2 threads claiming chunks of rows, a barrier per matrix:
// how much of the kernel's isolated streaming rate survives the chunking and the barriers.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>
#include <sys/mman.h>
#include <immintrin.h>
#include "qmm_blocks.h"
using namespace mlxrs_qmm;
struct Mat { const uint8_t* w; int N, K; const void* xp; };
std::vector<Mat> mats;
std::atomic<int> job{-1}, next_chunk{0}, done{0};
int chunk_div = 4;  // chunks per thread
const BlockKernels* kk;
std::vector<float> ybuf(20000);
int chunk_rows(int N) { int c = (N + 2 * chunk_div - 1) / (2 * chunk_div); c = (c + 3) / 4 * 4; return c < 16 ? 16 : c; }
void work(int j) {
  const Mat& m = mats[j];
  const int c = chunk_rows(m.N), nc = (m.N + c - 1) / c;
  BlockProblem p{nullptr, nullptr, m.xp, m.w, kQ4K, ybuf.data(), 1, m.N, m.K, size_t(m.N)};
  for (;;) {
    int i = next_chunk.fetch_add(1);
    if (i >= nc) break;
    kk->rows(p, i * c, std::min(m.N, (i + 1) * c));
    done.fetch_add(1);
  }
}
std::atomic<bool> stop{false};
std::atomic<int> gen{0};
void worker() {
  int seen = 0;
  while (!stop.load()) {
    int g = gen.load(std::memory_order_acquire);
    if (g == seen) { _mm_pause(); continue; }
    seen = g;
    work(job.load());
  }
}
int main(int argc, char** argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 3;
  kk = &block_kernels_avx512_vnni();
  std::mt19937 rng(1);
  struct S { int N, K; } shapes[] = {{2048, 1536}, {1536, 1536}, {17920, 1536}, {1536, 8960}};
  size_t total = 0;
  for (int l = 0; l < 28; ++l) for (auto s : shapes) total += size_t(s.N) * (s.K / 256) * 144;
  size_t r = (total + (1 << 21)) & ~size_t((1 << 21) - 1);
  uint8_t* w = (uint8_t*)aligned_alloc(1 << 21, r); if (!getenv("NOHUGE")) madvise(w, r, MADV_HUGEPAGE);
  for (size_t i = 0; i < total; ++i) w[i] = rng();
  for (size_t b = 0; b < total / 144; ++b) { uint16_t h = 0x1400 | (rng() & 0x3ff); memcpy(w + b * 144, &h, 2); memcpy(w + b * 144 + 2, &h, 2); }
  std::vector<float> x(8960); for (auto& v : x) v = float(rng() % 1000) / 500.f - 1.f;
  std::vector<uint8_t> xp1536(kk->xp32_bytes(1, 1536)), xp8960(kk->xp32_bytes(1, 8960));
  kk->prepare32(x.data(), xp1536.data(), 1, 1536); kk->prepare32(x.data(), xp8960.data(), 1, 8960);
  size_t off = 0;
  for (int l = 0; l < 28; ++l) for (auto s : shapes) { mats.push_back({w + off, s.N, s.K, s.K == 1536 ? (const void*)xp1536.data() : (const void*)xp8960.data()}); off += size_t(s.N) * (s.K / 256) * 144; }
  std::thread t(worker);
  int divs[] = {4, 2, 1, 8};
  printf("%zu MB per step, %zu matrices\n", total / 1000000, mats.size());
  for (int rr = 0; rr < rounds; ++rr)
    for (int d : divs) {
      chunk_div = d;
      double best = 1e9;
      for (int step = 0; step < 5; ++step) {
        auto t0 = std::chrono::steady_clock::now();
        for (size_t j = 0; j < mats.size(); ++j) {
          const int c = chunk_rows(mats[j].N), nc = (mats[j].N + c - 1) / c;
          done.store(0); next_chunk.store(0); job.store(int(j));
          gen.fetch_add(1, std::memory_order_release);
          work(int(j));
          while (done.load(std::memory_order_acquire) != nc) _mm_pause();
        }
        best = fmin(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      printf("round %d, %d chunks per thread: %.2f ms per step, %.1f GB/s\n", rr, d, best * 1e3, total / best / 1e9);
    }
  stop = true; gen.fetch_add(1); t.join();
}
