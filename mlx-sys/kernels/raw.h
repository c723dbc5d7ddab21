/* The raw entry points of mlx-rs's native CPU kernels: plain buffers, synchronous, no MLX or
 * mlx-c type, so that standalone programs (the sanitizer harness in tests/sanitize.cpp,
 * benchmarks) can call the kernels without MLX's headers. Included by qmm.h and ops.h, whose
 * builders work on mlx-c handles. */
#ifndef MLXRS_RAW_H
#define MLXRS_RAW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element type codes of the raw entry point. */
#define MLXRS_QMM_F32 0
#define MLXRS_QMM_F16 1
#define MLXRS_QMM_BF16 2

/* Instruction-set codes. */
#define MLXRS_QMM_ISA_NONE 0    /* not x86-64: the native kernel is never used */
#define MLXRS_QMM_ISA_GENERIC 1 /* portable C++ */
#define MLXRS_QMM_ISA_AVX2 2    /* AVX2 + FMA */
#define MLXRS_QMM_ISA_AVX512 3  /* AVX-512F */
/* AVX-512F/BW/VL + VNNI + VBMI: 4-bit decode on integer dot products, activations rounded to
 * 21 bits per block of 8 (the others keep f32); MLX_RS_QMM_EXACT=1 caps the choice at AVX512 */
#define MLXRS_QMM_ISA_AVX512_VNNI 4

/* Runs the kernel on raw row-major buffers, synchronously on the calling thread (plus the
 * pool): y[M, N] = x[M, K] @ dequantize(w[N, K*bits/32], scales, biases)^T. x_dt, sb_dt, y_dt
 * are MLXRS_QMM_* codes. Returns 0, or 1 (without calling the error handler) for parameters
 * the kernel does not support. For tests and benchmarks. */
int mlxrs_qmm_raw(
    const void* x,
    int x_dt,
    const uint32_t* w,
    const void* scales,
    const void* biases,
    int sb_dt,
    void* y,
    int y_dt,
    int M,
    int N,
    int K,
    int bits,
    int group_size);

/* Weight layouts: MLX's affine format, or GGUF (ggml) blocks read as stored (the codes are
 * ggml's type ids). */
#define MLXRS_QMM_FORMAT_AFFINE 0
#define MLXRS_QMM_FORMAT_Q4_0 2
#define MLXRS_QMM_FORMAT_Q4_1 3
#define MLXRS_QMM_FORMAT_Q5_0 6
#define MLXRS_QMM_FORMAT_Q5_1 7
#define MLXRS_QMM_FORMAT_Q8_0 8
#define MLXRS_QMM_FORMAT_Q2_K 10
#define MLXRS_QMM_FORMAT_Q3_K 11
#define MLXRS_QMM_FORMAT_Q4_K 12
#define MLXRS_QMM_FORMAT_Q5_K 13
#define MLXRS_QMM_FORMAT_Q6_K 14

/* y[M, N] = x[M, K] @ w^T for w in a GGUF block format (MLXRS_QMM_FORMAT_Q4_0, _Q4_1, _Q5_0,
 * _Q5_1 and _Q8_0: 32 values per block; _Q2_K, _Q3_K, _Q4_K, _Q5_K and _Q6_K: 256): N rows of K / V blocks
 * each, as the file stores them. Same contract as mlxrs_qmm_raw otherwise (K a multiple of the
 * format's V). */
int mlxrs_qmm_blocks_raw(
    const void* x,
    int x_dt,
    const uint8_t* w,
    int format,
    void* y,
    int y_dt,
    int M,
    int N,
    int K);

/* Threads the kernel uses (the caller's thread plus n - 1 pool workers). n <= 0 restores the
 * default: the MLX_RS_QMM_THREADS environment variable if set, else the CPUs this process may
 * run on. Waits for a running kernel to finish. */
void mlxrs_qmm_set_num_threads(int n);
/* The thread count in effect. */
int mlxrs_qmm_num_threads(void);
/* Sets OpenBLAS's thread count (its openblas_set_num_threads, looked up at run time) for the
 * prefill path's sgemm; returns 1, or 0 (nothing done) when the process's BLAS is not OpenBLAS
 * or n <= 0. */
int mlxrs_blas_set_num_threads(int n);

/* The instruction set in use (MLXRS_QMM_ISA_*). */
int mlxrs_qmm_isa(void);
/* Caps the instruction set at `isa` (for tests: MLXRS_QMM_ISA_GENERIC forces the portable
 * path); 0 or a value above what the CPU supports selects the best supported (whatever
 * MLX_RS_QMM_EXACT said at start-up). Returns the instruction set now in use. */
int mlxrs_qmm_force_isa(int isa);

/* Integer activations at decode and small M (on != 0): x is rounded per block of 8 values to
 * 8-bit integers times a power of two (|error| <= 2^-6 of the block's largest magnitude; see
 * qmm_avx512vnni.cpp), multiplied with one VNNI dot product per code pair instead of three.
 * Only on CPUs with AVX-512 VNNI (elsewhere the switch is kept and has no effect); the
 * prefill path (f32 sgemm) is unchanged. Default: the MLX_RS_QMM_INT8_ACTIVATIONS environment
 * variable (1, true, on) at start-up. Returns whether the integer kernels now run. */
int mlxrs_qmm_set_int8_activations(int on);

/* Row count M above which the prefill path (dequantize tiles to f32 + cblas_sgemm) is used
 * when cblas_sgemm is present in the process. Default 16; n <= 0 restores it. */
void mlxrs_qmm_set_gemm_threshold(int m);

/* Raw kernels on f32 buffers, synchronous, for tests and sanitizer runs. */
void mlxrs_rms_norm_raw(const float* x, const float* w, float eps, float* y, size_t rows,
                        int dim);
void mlxrs_swiglu_raw(const float* gu, float* y, size_t rows, int inter);
void mlxrs_gelu_tanh_glu_raw(const float* gu, float* y, size_t rows, int inter);
void mlxrs_argmax_raw(const float* x, uint32_t* out, size_t rows, int n);
/* Cached attention (see mlxrs_cached_attention in ops.h for the parameters, window and
 * logit_softcap included, and the ring addressing). Returns 1, touching nothing, for
 * inconsistent parameters. */
int mlxrs_cached_attention_raw(const float* qkv, float* k_cache, float* v_cache, float* out,
                               const float* inv_freq, const float* q_norm, const float* k_norm,
                               float norm_eps, float scale, int batch, int tokens, int heads,
                               int kv_heads, int head_dim, int capacity, int offset, int window,
                               float logit_softcap);
/* The same over caches of IEEE half-precision values (f16 bits, as MLX's float16): new keys
 * and values are computed in f32 and stored rounded to nearest, ties to even; cached ones are
 * widened to f32 as they are read. */
int mlxrs_cached_attention_half_raw(const float* qkv, uint16_t* k_cache, uint16_t* v_cache,
                                    float* out, const float* inv_freq, const float* q_norm,
                                    const float* k_norm, float norm_eps, float scale, int batch,
                                    int tokens, int heads, int kv_heads, int head_dim,
                                    int capacity, int offset, int window, float logit_softcap);

#ifdef __cplusplus
}
#endif

#endif
