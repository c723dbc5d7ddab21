// Head to head, same minute: the repo's M=1 Q4_K decode kernel on the file's blocks against the
// 16-row panel prototype (D = 3, 2, 1 digits) on the same blocks repacked; 2 threads, ~1 GiB.
#include "panel_kernel.h"
#include "qmm_blocks.h"
using namespace mlxrs_qmm;
template <class F> double timed2(F f, int reps) {
  double best = 1e9;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    std::thread t([&] { f(1); }); f(0); t.join();
    best = fmin(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}
int main(int argc, char** argv) {
  int pf = argc > 1 ? atoi(argv[1]) : 1024, rounds = argc > 2 ? atoi(argv[2]) : 3;
  std::mt19937 rng(1);
  const int nb = 56, N = 131072, K = nb * 256;
  const size_t fbytes = size_t(N) * nb * 144, pbytes = size_t(N / 16) * nb * kPB;
  auto huge = [](size_t n) { size_t r = (n + (1 << 21)) & ~size_t((1 << 21) - 1); void* p = aligned_alloc(1 << 21, r); madvise(p, r, MADV_HUGEPAGE); return (uint8_t*)p; };
  uint8_t* w = huge(fbytes); uint8_t* pk = huge(pbytes);
  for (size_t i = 0; i < fbytes; ++i) w[i] = rng();
  for (size_t b = 0; b < fbytes / 144; ++b) { uint16_t h = f2h(0.001f + (rng() % 64) * 1e-5f); memcpy(w + b * 144, &h, 2); memcpy(w + b * 144 + 2, &h, 2); }
  repack(w, N, nb, pk);
  std::vector<float> x(K); std::normal_distribution<float> nd; for (auto& v : x) v = nd(rng);
  std::vector<float> y0(N), y3(N), y2(N), y1(N);
  const BlockKernels& k = block_kernels_avx512_vnni();
  std::vector<uint8_t> xp32(k.xp32_bytes(1, K));
  k.prepare32(x.data(), xp32.data(), 1, K);
  BlockProblem bp{x.data(), nullptr, xp32.data(), w, kQ4K, y0.data(), 1, N, K, size_t(N)};
  XP x3, x2, x1; prep<3>(x.data(), K, x3); prep<2>(x.data(), K, x2); prep<1>(x.data(), K, x1);
  // agreement with the repo kernel (relative to sum |w x| is not available here: max |diff| / max |y|)
  k.rows(bp, 0, N); panels<3>(pk, nb, x3, y3.data(), 0, N / 16, 0); panels<2>(pk, nb, x2, y2.data(), 0, N / 16, 0); panels<1>(pk, nb, x1, y1.data(), 0, N / 16, 0);
  double ym = 0, e3 = 0, e2 = 0, e1 = 0;
  for (int n = 0; n < N; ++n) { ym = fmax(ym, fabs(y0[n])); e3 = fmax(e3, fabs(y3[n] - y0[n])); e2 = fmax(e2, fabs(y2[n] - y0[n])); e1 = fmax(e1, fabs(y1[n] - y0[n])); }
  printf("max |y - y_repo| / max |y|: D=3 %.2g, D=2 %.2g, D=1 %.2g\n", e3 / ym, e2 / ym, e1 / ym);
  printf("Q4_K %d x %d, %.0f MiB of blocks (panels %.0f MiB); GB/s of Q4_K blocks, best of 3 per round\n", N, K, fbytes / 1048576.0, pbytes / 1048576.0);
  for (int r = 0; r < rounds; ++r) {
    double tr = timed2([&](int h) { k.rows(bp, h * N / 2, (h + 1) * N / 2); }, 3);
    double t3 = timed2([&](int h) { panels<3>(pk, nb, x3, y3.data(), h * N / 32, (h + 1) * N / 32, pf); }, 3);
    double t2 = timed2([&](int h) { panels<2>(pk, nb, x2, y2.data(), h * N / 32, (h + 1) * N / 32, pf); }, 3);
    double t1 = timed2([&](int h) { panels<1>(pk, nb, x1, y1.data(), h * N / 32, (h + 1) * N / 32, pf); }, 3);
    printf("round %d: repo kernel (D=3) %.1f | panels D=3 %.1f | D=2 %.1f | D=1 %.1f\n", r, fbytes / tr / 1e9, fbytes / t3 / 1e9, fbytes / t2 / 1e9, fbytes / t1 / 1e9);
  }
  // in L2, one thread, 1 MiB-ish slice
  const int P = 8; const size_t rows16 = 16 * P;
  auto l2 = [&](auto fn) { auto t0 = std::chrono::steady_clock::now(); for (int r = 0; r < 200; ++r) fn(); return 200.0 * rows16 * nb * 144 / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e9; };
  printf("one thread, %zu rows in L2: repo %.1f | D=3 %.1f | D=2 %.1f | D=1 %.1f GB/s of blocks\n", rows16,
         l2([&] { k.rows(bp, 0, rows16); }), l2([&] { panels<3>(pk, nb, x3, y3.data(), 0, P, 0); }),
         l2([&] { panels<2>(pk, nb, x2, y2.data(), 0, P, 0); }), l2([&] { panels<1>(pk, nb, x1, y1.data(), 0, P, 0); }));
}
