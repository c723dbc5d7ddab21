// Driver of the native quantized matmul: instruction-set selection, the thread pool, input
// conversion, the decode / small-M path and the prefill path (dequantized f32 tiles +
// cblas_sgemm). Includes no MLX header and is compiled without instruction-set flags.
#include <dlfcn.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "qmm_blocks.h"
#include "qmm_driver.h"
#include "ops_cpu.h"

#define MLXRS_EXPORT extern "C" __attribute__((visibility("default")))

namespace mlxrs_qmm {
namespace {

constexpr int kIsaAvx512 = 3, kIsaAvx512Vnni = 4;

// ---------------------------------------------------------------- instruction sets
// The best instruction set of this CPU.
int detect_isa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
      __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("f16c"))
    return kIsaAvx512Vnni;
  if (__builtin_cpu_supports("avx512f")) return kIsaAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
  return 1;
#else
  return 0;
#endif
}

// The instruction set at start-up: the best, capped at AVX-512F when MLX_RS_QMM_EXACT is 1,
// true or on (the VNNI kernels round activations to 21 bits, see qmm_avx512vnni.cpp).
int initial_isa(int best) {
  const char* v = std::getenv("MLX_RS_QMM_EXACT");
  const bool exact =
      v && (std::strcmp(v, "1") == 0 || std::strcmp(v, "true") == 0 || std::strcmp(v, "on") == 0);
  return exact && best > kIsaAvx512 ? kIsaAvx512 : best;
}

const int kBestIsa = detect_isa();
std::atomic<int> g_isa{initial_isa(kBestIsa)};

// Integer activations at decode and small M (one 8-bit digit per value, see
// qmm_avx512vnni.cpp) when MLX_RS_QMM_INT8_ACTIVATIONS is 1, true or on at start-up, or
// mlxrs_qmm_set_int8_activations says so; only the AVX-512 VNNI set has them.
bool env_on(const char* name) {
  const char* v = std::getenv(name);
  return v && (std::strcmp(v, "1") == 0 || std::strcmp(v, "true") == 0 || std::strcmp(v, "on") == 0);
}
std::atomic<bool> g_int8{env_on("MLX_RS_QMM_INT8_ACTIVATIONS")};

const Kernels& kernels_for(int isa) {
#if defined(__x86_64__)
  if (isa >= kIsaAvx512Vnni) return kernels_avx512_vnni();
  if (isa == kIsaAvx512) return kernels_avx512();
  if (isa == 2) return kernels_avx2();
#endif
  (void)isa;
  return kernels_generic();
}

// ---------------------------------------------------------------- thread pool
// Persistent workers. A job is (fn, ctx, ntasks). Tasks are claimed by compare-and-swap on
// one 64-bit word describing the current job: generation (16 bits) | ntasks (24) | next index
// (24). A claim succeeds only against the word as it is now, so it is always a task of the
// current job, and that job's fn/ctx (written before the word is published, read after the
// claim) cannot change until the claimed task has completed, because the next job starts only
// once every task of this one has. A worker that wakes late (descheduled on a busy machine)
// either helps with the current job or finds nothing to do: it never blocks the submitter,
// which claims tasks itself and waits only for claimed tasks to complete. After a job,
// workers spin for a short while (cheap wake-up for back-to-back decode matmuls) unless the
// job asked not to (the prefill path, whose sgemm runs OpenBLAS's own threads next), then
// sleep.
// How long an idle worker spins before sleeping: MLX_RS_QMM_SPIN_US, default 200 µs.
std::chrono::microseconds spin_budget() {
  static const std::chrono::microseconds budget = [] {
    if (const char* v = std::getenv("MLX_RS_QMM_SPIN_US")) {
      int n = std::atoi(v);
      if (n >= 0) return std::chrono::microseconds(n);
    }
    return std::chrono::microseconds(200);
  }();
  return budget;
}

class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 1; i < threads; ++i) threads_.emplace_back([this] { worker(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int size() const { return int(threads_.size()) + 1; }

  // Runs fn(ctx, i) for every i in [0, ntasks) and returns when all have finished. One caller
  // at a time (the callers hold g_pool_mu).
  void run(void (*fn)(void*, int), void* ctx, int ntasks, bool spin_after) {
    if (threads_.empty() || ntasks <= 1) {
      for (int i = 0; i < ntasks; ++i) fn(ctx, i);
      return;
    }
    if (ntasks >= (1 << 24)) {  // does not fit the claim word: run it here
      for (int i = 0; i < ntasks; ++i) fn(ctx, i);
      return;
    }
    const uint64_t g = gen_.load(std::memory_order_relaxed) + 1;
    fn_ = fn;
    ctx_ = ctx;
    spin_.store(spin_after, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    next_.store((g & 0xffff) << 48 | uint64_t(ntasks) << 24, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lk(mu_);
      gen_.store(g, std::memory_order_release);
    }
    cv_.notify_all();
    help();
    for (int spins = 0; done_.load(std::memory_order_acquire) != ntasks; ++spins) {
      if (spins > 2000) std::this_thread::yield();
#if defined(__x86_64__)
      else __builtin_ia32_pause();
#endif
    }
  }

 private:
  // Claims and runs tasks of whatever job next_ describes until none is left.
  void help() {
    uint64_t v = next_.load(std::memory_order_acquire);
    for (;;) {
      const uint32_t index = uint32_t(v & 0xffffff), count = uint32_t(v >> 24 & 0xffffff);
      if (index >= count) return;
      if (next_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
        fn_(ctx_, int(index));
        done_.fetch_add(1, std::memory_order_release);
        v = next_.load(std::memory_order_acquire);
      }
    }
  }
  void worker() {
    uint64_t seen = 0;
    for (;;) {
      auto t0 = std::chrono::steady_clock::now();
      uint64_t g;
      // Spin (reading the clock only every 128 pauses: clock_gettime itself costs CPU time that
      // the stream thread and the graph-building thread need on a small machine), then sleep.
      for (unsigned spins = 1; (g = gen_.load(std::memory_order_acquire)) == seen; ++spins) {
        if (spin_.load(std::memory_order_relaxed) &&
            ((spins & 127) != 0 || std::chrono::steady_clock::now() - t0 < spin_budget())) {
#if defined(__x86_64__)
          __builtin_ia32_pause();
#endif
          continue;
        }
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return gen_.load(std::memory_order_acquire) != seen; });
      }
      seen = g;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) return;
      }
      help();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<uint64_t> next_{0};  // generation:16 | ntasks:24 | next index:24
  std::atomic<int> done_{0};       // tasks of the current job completed
  void (*fn_)(void*, int) = nullptr;
  void* ctx_ = nullptr;
  std::atomic<bool> spin_{true};
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

int default_threads() {
  if (const char* v = std::getenv("MLX_RS_QMM_THREADS")) {
    int n = std::atoi(v);
    if (n > 0) return n < 256 ? n : 256;
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

// Held by the one kernel call that uses the pool; a second stream calling at the same time
// does not wait: it runs on its own thread alone.
std::mutex g_pool_mu;
Pool* g_pool = nullptr;  // created on first use, under g_pool_mu
int g_threads = 0;       // 0: not yet decided

Pool& pool_locked() {
  if (!g_pool) {
    if (g_threads <= 0) g_threads = default_threads();
    g_pool = new Pool(g_threads);
  }
  return *g_pool;
}

// ---------------------------------------------------------------- BLAS
// Up to 16 rows the small-M kernels read each weight once for all rows: a decode step of up to
// 16 sequences decoded together (the server's default batch) stays on them, so each sequence
// gets the same numbers as when it decodes alone; at 16 sequences of SmolLM2 they also beat
// dequantized tiles + sgemm on 2 cores (121 against 92 tok/s, dev-cpu-2, busy machine).
constexpr int kGemmThreshold = 16;
std::atomic<int> g_gemm_threshold{kGemmThreshold};

// ---------------------------------------------------------------- conversions
inline float to_f32(const void* p, int dt, size_t i) { return sb_load(p, dt, i); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0));
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to infinity
  if (a < 0x38800000u) {                                  // zero or subnormal half
    float t;
    std::memcpy(&t, &a, 4);
    t += 0.5f;
    uint32_t u;
    std::memcpy(&u, &t, 4);
    return uint16_t(sign | (u - 0x3f000000u));
  }
  a += 0xc8000fffu + ((a >> 13) & 1);
  return uint16_t(sign | (a >> 13));
}

// ---------------------------------------------------------------- jobs
struct RowsJob {
  const Kernels* k;
  const Problem* p;
  int chunk;
  static void run(void* c, int i) {
    auto* j = static_cast<RowsJob*>(c);
    int n0 = i * j->chunk, n1 = n0 + j->chunk;
    if (n1 > j->p->N) n1 = j->p->N;
    j->k->rows(*j->p, n0, n1);
  }
};

struct DequantJob {
  const Kernels* k;
  const Problem* p;
  int n0, n1, chunk;
  float* out;
  static void run(void* c, int i) {
    auto* j = static_cast<DequantJob*>(c);
    int a = j->n0 + i * j->chunk, b = a + j->chunk;
    if (b > j->n1) b = j->n1;
    j->k->dequant(*j->p, a, b, j->out + size_t(a - j->n0) * j->p->K);
  }
};

}  // namespace

SgemmFn blas_sgemm() {
  // Whatever cblas_sgemm the process resolves (OpenBLAS when linked, else the reference BLAS
  // of the MLX wheel), looked up at run time so that linking never depends on it.
  static const SgemmFn fn = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm"));
  return fn;
}

const Kernels& active_kernels() { return kernels_for(g_isa.load(std::memory_order_relaxed)); }

void parallel_for(int ntasks, void (*fn)(void*, int), void* ctx) noexcept {
  std::unique_lock<std::mutex> lk(g_pool_mu, std::try_to_lock);
  if (lk.owns_lock())
    pool_locked().run(fn, ctx, ntasks, true);
  else
    for (int i = 0; i < ntasks; ++i) fn(ctx, i);
}

bool supported(int bits, int group) {
  return (bits == 4 || bits == 8) && (group == 32 || group == 64 || group == 128);
}

bool native_isa_available() { return kBestIsa > 0; }

namespace {

// Runs Job::run(&job, i) for i in [0, ntasks): on the pool when this call holds it (its
// workers spinning briefly afterwards when `spin`), else on the calling thread.
template <class Job>
void run_tasks(Pool* pool, Job& job, int ntasks, bool spin) {
  if (pool)
    pool->run(Job::run, &job, ntasks, spin);
  else
    for (int i = 0; i < ntasks; ++i) Job::run(&job, i);
}

// The prefill path shared by both layouts: tiles of about 4 MB of f32 rows, each filled by
// jobs of 16 rows (dequantized on the pool, its workers then asleep), then one sgemm per tile
// on the calling thread, where OpenBLAS threads itself. `fill(n0, n1, tile)` returns the job
// that dequantizes rows [n0, n1) into `tile`.
template <class Fill>
void sgemm_by_tiles(Pool* pool, SgemmFn sgemm, int M, int N, int K, const float* x, float* y,
                    Fill fill) {
  int nb = int((size_t(1) << 20) / size_t(K));
  nb = nb < 64 ? 64 : (nb / 16) * 16;
  if (nb > N) nb = N;
  std::vector<float> tile(size_t(nb) * K);
  for (int n0 = 0; n0 < N; n0 += nb) {
    const int n1 = n0 + nb < N ? n0 + nb : N;
    auto job = fill(n0, n1, tile.data());
    run_tasks(pool, job, (n1 - n0 + 15) / 16, false);
    sgemm(kRowMajor, kNoTrans, kTrans, M, n1 - n0, K, 1.0f, x, K, tile.data(), K, 0.0f, y + n0,
          N);
  }
}

// Rows per task at decode and small M: multiples of 4, about 4 tasks per thread, at least 16.
int rows_chunk(int N, int threads) {
  int chunk = (N + threads * 4 - 1) / (threads * 4);
  chunk = (chunk + 3) / 4 * 4;
  return chunk < 16 ? 16 : chunk;
}

// The tasks of N rows in chunks of `chunk`, the pool's workers spinning afterwards for the
// next decode matmul.
template <class Job>
void run_rows(Pool* pool, Job& job, int N, int chunk) {
  run_tasks(pool, job, (N + chunk - 1) / chunk, true);
}

// y = x @ dequantize(w)^T for MLX's affine layout, x already f32 (and normalised).
void solve_affine(const Call& c, const float* xf, float* yf) {
  const int M = c.M, N = c.N, K = c.K, G = c.group, ng = K / G;
  const SgemmFn sgemm = blas_sgemm();
  const bool gemm = sgemm && M > g_gemm_threshold.load(std::memory_order_relaxed);
  // The sgemm path multiplies f32 x by dequantized f32 tiles: the VNNI set has no dequant.
  int isa = g_isa.load(std::memory_order_relaxed);
  if (gemm && isa > kIsaAvx512) isa = kIsaAvx512;
  const bool int8 = isa >= kIsaAvx512Vnni && g_int8.load(std::memory_order_relaxed);
  const Kernels& k = int8 ? kernels_avx512_vnni_int8() : kernels_for(isa);
  // Per-group sums of x in 8 interleaved partial sums (a group is a multiple of 32 values):
  // independent additions instead of one chain, in a fixed order.
  std::vector<float> xsum(size_t(M) * ng);
#if defined(__x86_64__)
  // One 8-bit digit per value (4- and 8-bit codes): the bias term multiplies the sums of the
  // rounded values, so that the product is that of the rounded x with the weights (with x's
  // exact sums its error would scale with the unsigned codes, not the weights).
  if (int8 && (c.bits == 4 || c.bits == 8))
    rounded_group_sums_avx512_vnni_int8(xf, M, K, G, xsum.data());
  else
#endif
  for (size_t m = 0; m < size_t(M); ++m)
    for (int g = 0; g < ng; ++g) {
      const float* xg = xf + m * K + size_t(g) * G;
      float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (int e = 0; e < G; e += 8)
        for (int j = 0; j < 8; ++j) part[j] += xg[e + j];
      xsum[m * ng + g] =
          ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    }
  std::vector<float> xpbuf(k.xp_floats(M, K, c.bits));
  const float* xp = xf;
  if (!xpbuf.empty()) {
    k.prepare(xf, xpbuf.data(), M, K, c.bits);
    xp = xpbuf.data();
  }
  Problem p{xf, xsum.data(), xp, c.w, c.scales, c.biases, c.sb_dt, yf, M, N, K, c.bits, G};

  std::unique_lock<std::mutex> lk(g_pool_mu, std::try_to_lock);
  Pool* pool = lk.owns_lock() ? &pool_locked() : nullptr;
  const int threads = pool ? pool->size() : 1;

  if (gemm) {
    // Prefill: dequantized f32 tiles (in the kernel's K order, which is xp's) and sgemm.
    sgemm_by_tiles(pool, sgemm, M, N, K, xp, yf, [&](int n0, int n1, float* tile) {
      return DequantJob{&k, &p, n0, n1, 16, tile};
    });
  } else {
    RowsJob j{&k, &p, rows_chunk(N, threads)};
    run_rows(pool, j, N, j.chunk);
  }
}

std::vector<BlockRun> block_runs(const Call& c) {
  std::vector<BlockRun> runs;
  const auto* w = reinterpret_cast<const uint8_t*>(c.w);
  int n = 0;
  for (int i = 0; i < c.parts; ++i) {
    const size_t rb = row_bytes(c.part_format[i], c.K);
    runs.push_back({w, c.part_format[i], n, n + c.part_rows[i], rb});
    w += rb * size_t(c.part_rows[i]);
    n += c.part_rows[i];
  }
  return runs;
}

// Rows [a, b) of y, over whichever runs they cross.
template <typename F>
inline void for_runs(const std::vector<BlockRun>& runs, int a, int b, F f) {
  for (const auto& r : runs) {
    const int lo = a > r.n0 ? a : r.n0, hi = b < r.n1 ? b : r.n1;
    if (lo < hi) f(r, lo, hi);
  }
}

// Rows [n0, n1) of a prefill tile, dequantized by the formats' definition.
struct BlockDequantJob {
  const std::vector<BlockRun>* runs;
  int K, n0, n1, chunk;
  float* out;
  static void run(void* ctx, int i) {
    auto* j = static_cast<BlockDequantJob*>(ctx);
    const int a = j->n0 + i * j->chunk, b = a + j->chunk < j->n1 ? a + j->chunk : j->n1;
    for_runs(*j->runs, a, b, [&](const BlockRun& r, int lo, int hi) {
      const size_t bb = size_t(block_bytes(r.format));
      const int bv = block_values(r.format), nb = j->K / bv;
      for (int n = lo; n < hi; ++n)
        for (int k = 0; k < nb; ++k)
          dequantize_block(r.format, r.w + size_t(n - r.n0) * r.row_bytes + size_t(k) * bb,
                           j->out + size_t(n - j->n0) * j->K + size_t(k) * bv);
    });
  }
};

struct BlockRowsJob {
  const BlockKernels* k;
  const std::vector<BlockRun>* runs;
  BlockProblem p;  // x, xp, y, M, K, ldy (the run's w, format, N and y offset set per run)
  int chunk;
  static void run(void* c, int i) {
    auto* j = static_cast<BlockRowsJob*>(c);
    const int a = i * j->chunk, b = a + j->chunk < int(j->p.ldy) ? a + j->chunk : int(j->p.ldy);
    for_runs(*j->runs, a, b, [&](const BlockRun& r, int lo, int hi) {
      BlockProblem p = j->p;
      p.w = r.w;
      p.format = r.format;
      p.N = r.n1 - r.n0;
      p.y = j->p.y + r.n0;
      j->k->rows(p, lo - r.n0, hi - r.n0);
    });
  }
};

#if defined(__x86_64__)
struct BlockGemmJob {
  const BlockGemmProblem* g;
  static void run(void* c, int i) { block_gemm_avx512_vnni(*static_cast<BlockGemmJob*>(c)->g, i); }
};
#endif

// y = x @ w^T for GGUF blocks as stored (qmm_blocks.h), x already f32 (and normalised).
void solve_blocks(const Call& c, const float* xf, float* yf) {
  const int M = c.M, N = c.N, K = c.K;
  const std::vector<BlockRun> runs = block_runs(c);
  const SgemmFn sgemm = blas_sgemm();
  const bool many = M > g_gemm_threshold.load(std::memory_order_relaxed);
  const bool gemm = sgemm && many;
  const int isa = g_isa.load(std::memory_order_relaxed);
  std::unique_lock<std::mutex> lk(g_pool_mu, std::try_to_lock);
  Pool* pool = lk.owns_lock() ? &pool_locked() : nullptr;
  const int threads = pool ? pool->size() : 1;
#if defined(__x86_64__)
  // How the runs read x: in runs of 16 values (the sub-blocks of Q2_K, Q3_K and Q6_K: prepare)
  // or of 32 (the formats of 32 values, and the sub-blocks of Q4_K and Q5_K: prepare32).
  bool runs16 = false, runs32 = false;
  for (const auto& r : runs) (sub16_format(r.format) ? runs16 : runs32) = true;
  if (many && isa >= kIsaAvx512Vnni) {
    // Prefill on integer dot products (qmm_blocks_gemm_avx512vnni.cpp): x to 8 bits once,
    // then 16-row panels of the matrix, each for every row of x.
    XQuant* xq = new_block_gemm_x(xf, M, K);
    const BlockGemmProblem g{&runs, xq, yf, size_t(N), M, K};
    BlockGemmJob j{&g};
    run_tasks(pool, j, block_gemm_panels(runs), false);
    delete_block_gemm_x(xq);
    return;
  }
#endif
  if (gemm) {
    sgemm_by_tiles(pool, sgemm, M, N, K, xf, yf, [&](int n0, int n1, float* tile) {
      return BlockDequantJob{&runs, K, n0, n1, 16, tile};
    });
    return;
  }
#if defined(__x86_64__)
  const BlockKernels& k = isa < kIsaAvx512Vnni ? block_kernels_generic()
                          : g_int8.load(std::memory_order_relaxed)
                              ? block_kernels_avx512_vnni_int8()
                              : block_kernels_avx512_vnni();
#else
  (void)isa;
  const BlockKernels& k = block_kernels_generic();
#endif
  // x as each family of formats among the runs reads it.
  std::vector<uint8_t> xpbuf(runs16 ? k.xp_bytes(M, K) : 0), xp32buf(runs32 ? k.xp32_bytes(M, K) : 0);
  if (runs16) k.prepare(xf, xpbuf.data(), M, K);
  if (runs32) k.prepare32(xf, xp32buf.data(), M, K);
  BlockRowsJob j{&k, &runs,
                 BlockProblem{xf, xpbuf.data(), xp32buf.data(), nullptr, 0, yf, M, 0, K, size_t(N)},
                 rows_chunk(N, threads)};
  run_rows(pool, j, N, j.chunk);
}

}  // namespace

void compute(const Call& c) noexcept {
  const int M = c.M, N = c.N, K = c.K;
  if (M <= 0 || N <= 0) return;
  std::vector<float> xbuf;
  const float* xf = static_cast<const float*>(c.x);
  if (c.x_dt != F32) {
    xbuf.resize(size_t(M) * K);
    for (size_t i = 0; i < xbuf.size(); ++i) xbuf[i] = to_f32(c.x, c.x_dt, i);
    xf = xbuf.data();
  }
  if (c.norm_w) {
    if (xbuf.empty()) xbuf.resize(size_t(M) * K);
    mlxrs_ops::rms_norm(xf, c.norm_w, c.norm_eps, xbuf.data(), size_t(M), K);
    xf = xbuf.data();
  }
  std::vector<float> ybuf;
  float* yf = static_cast<float*>(c.y);
  if (c.y_dt != F32) {
    ybuf.resize(size_t(M) * N);
    yf = ybuf.data();
  }
  if (c.parts == 0)
    solve_affine(c, xf, yf);
  else
    solve_blocks(c, xf, yf);

  if (c.residual) {
    const size_t n = size_t(M) * N;
    if (c.residual_dt == F32) {
      const float* r = static_cast<const float*>(c.residual);
      for (size_t i = 0; i < n; ++i) yf[i] += r[i];
    } else {
      for (size_t i = 0; i < n; ++i) yf[i] += to_f32(c.residual, c.residual_dt, i);
    }
  }

  if (c.y_dt == BF16) {
    auto* o = static_cast<uint16_t*>(c.y);
    for (size_t i = 0; i < ybuf.size(); ++i) o[i] = f32_to_bf16(ybuf[i]);
  } else if (c.y_dt == F16) {
    auto* o = static_cast<uint16_t*>(c.y);
    for (size_t i = 0; i < ybuf.size(); ++i) o[i] = f32_to_f16(ybuf[i]);
  }
}

}  // namespace mlxrs_qmm

using namespace mlxrs_qmm;

MLXRS_EXPORT int mlxrs_qmm_raw(const void* x, int x_dt, const uint32_t* w, const void* scales,
                               const void* biases, int sb_dt, void* y, int y_dt, int M, int N,
                               int K, int bits, int group_size) {
  auto dt_ok = [](int d) { return d == F32 || d == F16 || d == BF16; };
  if (!supported(bits, group_size) || !dt_ok(x_dt) || !dt_ok(sb_dt) || !dt_ok(y_dt) || M < 0 ||
      N < 0 || K <= 0 || K % group_size != 0 || !x || !w || !scales || !biases || !y)
    return 1;
  compute(Call{x, x_dt, w, scales, biases, sb_dt, y, y_dt, M, N, K, bits, group_size});
  return 0;
}

MLXRS_EXPORT int mlxrs_qmm_blocks_raw(const void* x, int x_dt, const uint8_t* w, int format,
                                      void* y, int y_dt, int M, int N, int K) {
  auto dt_ok = [](int d) { return d == F32 || d == F16 || d == BF16; };
  if (block_bytes(format) == 0 || !dt_ok(x_dt) || !dt_ok(y_dt) || M < 0 || N < 0 || K <= 0 ||
      K % block_values(format) != 0 || !x || !w || !y)
    return 1;
  Call c{x, x_dt, reinterpret_cast<const uint32_t*>(w), nullptr, nullptr, F32, y, y_dt, M, N, K,
         0, 0};
  c.parts = 1;
  c.part_format[0] = format;
  c.part_rows[0] = N;
  compute(c);
  return 0;
}

MLXRS_EXPORT void mlxrs_qmm_set_num_threads(int n) {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  delete g_pool;
  g_pool = nullptr;
  g_threads = n > 0 ? (n < 256 ? n : 256) : 0;
}

MLXRS_EXPORT int mlxrs_blas_set_num_threads(int n) {
  // OpenBLAS's own setter, looked up like cblas_sgemm: absent with another BLAS.
  using SetFn = void (*)(int);
  static const SetFn set =
      reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (!set || n <= 0) return 0;
  set(n);
  return 1;
}

MLXRS_EXPORT int mlxrs_qmm_num_threads(void) {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  return pool_locked().size();
}

MLXRS_EXPORT int mlxrs_qmm_isa(void) { return g_isa.load(); }

MLXRS_EXPORT int mlxrs_qmm_force_isa(int isa) {
  int v = (isa <= 0 || isa > kBestIsa) ? kBestIsa : isa;
  g_isa.store(v);
  return v;
}

MLXRS_EXPORT int mlxrs_qmm_set_int8_activations(int on) {
  g_int8.store(on != 0);
  return kBestIsa >= kIsaAvx512Vnni && on != 0;
}

MLXRS_EXPORT void mlxrs_qmm_set_gemm_threshold(int m) { g_gemm_threshold.store(m > 0 ? m : kGemmThreshold); }
