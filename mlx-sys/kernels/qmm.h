/* C interface of mlx-rs's native CPU quantized matmul (mlx-sys/kernels).
 *
 * Affine quantized matmul y = x @ dequantize(w)^T in MLX's own layout (transpose = true):
 * bits 4 or 8, group 32, 64 or 128, x and scales/biases in f32, f16 or bf16, f32 accumulation,
 * multi-threaded, AVX-512 / AVX2 / portable code chosen at run time. GGUF Q4_0, Q4_1 and Q8_0
 * as converted by MLX's load_gguf (affine, group 32, f16 scales and biases) are covered.
 *
 * Functions returning int return 0 on success; on failure they report the message through
 * mlx-c's error handler (mlx_set_error_handler) and return 1, like mlx-c's own functions. */
#ifndef MLXRS_QMM_H
#define MLXRS_QMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mlx/c/array.h"
#include "mlx/c/stream.h"

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

/* Same contract as mlx-c's mlx_quantized_matmul in affine mode, with biases. When the native
 * kernel supports the call (CPU stream, x86-64, transpose, bits 4/8, group 32/64/128, a 2-D
 * uint32 weight, x of rank >= 1 and scales/biases of one float dtype with the matching shapes)
 * it builds our primitive; otherwise it calls MLX's op. `used_native` (may be NULL) receives
 * which. Writes a new array into `*res`. */
int mlxrs_quantized_matmul(
    mlx_array* res,
    const mlx_array x,
    const mlx_array w,
    const mlx_array scales,
    const mlx_array biases,
    bool transpose,
    int group_size,
    int bits,
    const mlx_stream s,
    bool* used_native);

/* The native kernel with an optional RMS-norm prologue and residual epilogue, in one
 * primitive: y = rms_norm(x, norm_weight, norm_eps) @ dequantize(w)^T + residual (transpose =
 * true). `norm_weight` ([K] float32) and `residual` (the output's shape, a float dtype) may
 * be null handles (ctx == NULL) for none. When the native kernel does not take the call (see
 * mlxrs_quantized_matmul), writes nothing and sets *used_native to false: the caller
 * composes the ops. Returns 0, or 1 after reporting through the error handler. */
int mlxrs_quantized_matmul_fused(
    mlx_array* res,
    const mlx_array x,
    const mlx_array w,
    const mlx_array scales,
    const mlx_array biases,
    int group_size,
    int bits,
    const mlx_array norm_weight,
    float norm_eps,
    const mlx_array residual,
    const mlx_stream s,
    bool* used_native);

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

/* Threads the kernel uses (the caller's thread plus n - 1 pool workers). n <= 0 restores the
 * default: the MLX_RS_QMM_THREADS environment variable if set, else the CPUs this process may
 * run on. Waits for a running kernel to finish. */
void mlxrs_qmm_set_num_threads(int n);
/* The thread count in effect. */
int mlxrs_qmm_num_threads(void);

/* The instruction set in use (MLXRS_QMM_ISA_*). */
int mlxrs_qmm_isa(void);
/* Caps the instruction set at `isa` (for tests: MLXRS_QMM_ISA_GENERIC forces the portable
 * path); 0 or a value above what the CPU supports selects the best supported. Returns the
 * instruction set now in use. */
int mlxrs_qmm_force_isa(int isa);

/* How many native primitives mlxrs_quantized_matmul has built in this process. */
uint64_t mlxrs_qmm_native_count(void);

/* Row count M above which the prefill path (dequantize tiles to f32 + cblas_sgemm) is used
 * when cblas_sgemm is present in the process. Default 8; n <= 0 restores it. */
void mlxrs_qmm_set_gemm_threshold(int m);

#ifdef __cplusplus
}
#endif

#endif
