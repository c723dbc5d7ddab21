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

#include "raw.h"
#include "mlx/c/array.h"
#include "mlx/c/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

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

/* y = [rms_norm(x, norm_weight, norm_eps)] @ w^T [+ residual] with w a matrix of GGUF blocks as
 * stored: `parts` (1 to 4) consecutive runs of rows[i] rows in format formats[i]
 * (MLXRS_QMM_FORMAT_*, raw.h), each row K / V blocks (V = 32 or 256 values per block), all in
 * one uint8 array (any shape; [N, K / V, block bytes] for one run). Several runs are a fused projection
 * whose parts were stored in different formats. `norm_weight` ([K] float32) and `residual` may
 * be null handles. The output [..., N] has x's dtype. CPU streams on x86-64 only (there is no
 * other implementation): elsewhere, and for weights that do not fit x, it reports an error.
 * Returns 0, or 1 after reporting through the error handler. */
int mlxrs_block_matmul(
    mlx_array* res,
    const mlx_array x,
    const mlx_array w,
    const int* formats,
    const int* rows,
    int parts,
    const mlx_array norm_weight,
    float norm_eps,
    const mlx_array residual,
    const mlx_stream s);

/* Rows of a table of GGUF blocks, as an embedding lookup: `table` uint8 [rows, K / V, block
 * bytes] in format `format` (MLXRS_QMM_FORMAT_*), `ids` int32 or uint32 of any shape; the
 * result is float32 [ids..., K], each row dequantized by the format's definition, a row of NaN
 * for an id outside [0, rows). CPU streams only. Returns 0, or 1 after reporting through the
 * error handler. */
int mlxrs_block_rows(mlx_array* res, const mlx_array table, const mlx_array ids, int format,
                     const mlx_stream s);

/* How many native primitives mlxrs_quantized_matmul has built in this process. */
uint64_t mlxrs_qmm_native_count(void);

#ifdef __cplusplus
}
#endif

#endif
