/* Read bandwidth of this machine, the ceiling BENCHMARKS.md compares decode with: each thread
 * sums its part of a buffer with AVX-512 loads (AVX2 / SSE where the compiler has less) into 8
 * independent accumulators; best of `reps` passes. Built and run by scripts/bench_llm.sh:
 *   cc -O3 -march=native -fopenmp scripts/read_bandwidth.c -o read_bandwidth
 *   ./read_bandwidth MB [reps] [huge]   (OMP_NUM_THREADS sets the threads; default: all CPUs)
 * With `huge`, the buffer is 2 MiB-aligned and advised for transparent huge pages before it is
 * first touched (Linux; where THP is off the kernel keeps 4 KiB pages and the line says so). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#define LANES 16 /* one 64-byte vector of floats */
typedef float vec __attribute__((vector_size(LANES * sizeof(float))));

int main(int argc, char** argv) {
  const size_t mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
  const int reps = argc > 2 ? atoi(argv[2]) : 10;
  const size_t n = (mb << 20) / sizeof(vec) / 8 * 8; /* whole groups of 8 vectors */
  const int huge = argc > 3 && strcmp(argv[3], "huge") == 0;
  const size_t align = huge ? (size_t)2 << 20 : 64;
  const size_t bytes = (n * sizeof(vec) + align - 1) / align * align;
  vec* a = aligned_alloc(align, bytes);
  if (!mb || !a || reps < 1) {
    fprintf(stderr, "usage: read_bandwidth MB [reps] [huge]\n");
    return 1;
  }
  int advised = 0;
#ifdef __linux__
  if (huge) advised = madvise(a, bytes, MADV_HUGEPAGE) == 0;
#endif
#pragma omp parallel for
  for (size_t i = 0; i < n; i++)
    for (int l = 0; l < LANES; l++) a[i][l] = (float)((i + l) % 251);
  double best = 0;
  float sink = 0;
  for (int r = 0; r < reps; r++) {
    const double t = omp_get_wtime();
    float total = 0;
#pragma omp parallel reduction(+ : total)
    {
      const int id = omp_get_thread_num(), nt = omp_get_num_threads();
      const size_t per = n / 8 / nt * 8, b = id * per, e = id == nt - 1 ? n : b + per;
      vec s[8] = {{0}};
      for (size_t i = b; i < e; i += 8)
        for (int k = 0; k < 8; k++) s[k] += a[i + k];
      for (int k = 1; k < 8; k++) s[0] += s[k];
      for (int l = 0; l < LANES; l++) total += s[0][l];
    }
    const double gbs = n * sizeof(vec) / (omp_get_wtime() - t) / 1e9;
    if (gbs > best) best = gbs;
    sink += total;
  }
  printf("read bandwidth: %.1f GB/s over %zu MB, %d threads, best of %d, %s%s\n", best, mb,
         omp_get_max_threads(), reps,
         !huge ? "4 KiB pages" : advised ? "2 MiB pages (advised)" : "huge pages refused",
         sink == -1 ? " " : "");
  free(a);
  return 0;
}
