/* C interface of mlx-rs's native CPU primitives for the small fused ops of a decoder step
 * (mlx-sys/kernels/ops_cpu.h): RMS norm, SwiGLU and attention with RoPE and the KV-cache
 * write, and a whole decoder layer built from them and the quantized matmul. MLX 0.32.2
 * composes these from many primitives on the CPU; each of ours is one primitive.
 *
 * Each builder takes mlx-c handles and a stream. When the call is eligible (a CPU stream,
 * float32 inputs with the documented shapes) it writes a new lazy array into the result and
 * sets *used_native to true; otherwise it writes nothing, sets *used_native to false and the
 * caller composes the op from MLX's own. Returns 0, or 1 after reporting through mlx-c's error
 * handler (mlx_set_error_handler) when MLX itself fails. */
#ifndef MLXRS_OPS_H
#define MLXRS_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "raw.h"
#include "mlx/c/array.h"
#include "mlx/c/stream.h"
#include "mlx/c/vector.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x / sqrt(mean(x^2, -1) + eps) * weight over the last axis. `weight` is 1-D of x's last
 * axis, or a null handle (ctx == NULL) for none. */
int mlxrs_rms_norm(mlx_array* res, const mlx_array x, const mlx_array weight, float eps,
                   const mlx_stream s, bool* used_native);

/* silu(gate) * up where x's last axis is [gate | up] (even length 2I); the result has last
 * axis I. */
int mlxrs_swiglu(mlx_array* res, const mlx_array x, const mlx_stream s, bool* used_native);

/* The index (uint32) of the largest element along the last axis, as MLX's argmax gives it
 * (ties: the first; NaN skipped unless it is the first element); the result drops that axis.
 * Declined for an empty last axis. */
int mlxrs_argmax_last(mlx_array* res, const mlx_array x, const mlx_stream s, bool* used_native);

/* One step of grouped-query attention over a KV cache (see mlxrs_ops::cached_attention):
 * qkv [B, L, (heads + 2 kv_heads) * head_dim] (L new tokens: 1 when decoding, a prefill chunk
 * otherwise), k_cache and v_cache [B, kv_heads, capacity, head_dim] with offset + L <=
 * capacity, inv_freq [head_dim / 2], q_norm / k_norm [head_dim] or null handles. Writes three
 * arrays into `*res`: the causal attention output [B, L, heads * head_dim] and the two caches
 * with positions [offset, offset + L) written. The caches are updated in place: the returned
 * cache arrays share the input caches' buffers (positions below `offset` are never changed),
 * and the result depends on them, so later readers see the write. */
int mlxrs_cached_attention(mlx_vector_array* res, const mlx_array qkv, const mlx_array k_cache,
                           const mlx_array v_cache, const mlx_array inv_freq,
                           const mlx_array q_norm, const mlx_array k_norm, float norm_eps,
                           float scale, int heads, int kv_heads, int head_dim, int offset,
                           const mlx_stream s, bool* used_native);

/* A quantized projection (MLX affine format, transposed as in a linear layer): `weight`
 * uint32 [N, K * bits / 32], `scales` and `biases` [N, K / group_size] of one float dtype. */
typedef struct mlxrs_quantized_projection {
  mlx_array weight;
  mlx_array scales;
  mlx_array biases;
  int group_size;
  int bits;
} mlxrs_quantized_projection;

/* One Llama-family decoder layer's weights and KV cache for mlxrs_decoder_stack: norms
 * [hidden] with their epsilons; qkv [(heads + 2 kv_heads) head_dim, hidden] and its bias
 * [(heads + 2 kv_heads) head_dim] (Qwen2) or a null handle; o [hidden, heads head_dim];
 * gate_up [2I, hidden] ([gate | up] rows); down [hidden, I]; inv_freq [head_dim / 2]; q_norm /
 * k_norm [head_dim] (Qwen3) or null handles; the caches as mlxrs_cached_attention takes them. */
typedef struct mlxrs_decoder_layer_weights {
  mlx_array k_cache;
  mlx_array v_cache;
  mlx_array input_norm;
  float input_norm_eps;
  mlx_array post_attention_norm;
  float post_norm_eps;
  mlxrs_quantized_projection qkv;
  mlx_array qkv_bias;
  mlxrs_quantized_projection o;
  mlxrs_quantized_projection gate_up;
  mlxrs_quantized_projection down;
  mlx_array inv_freq;
  mlx_array q_norm;
  mlx_array k_norm;
} mlxrs_decoder_layer_weights;

/* n_layers consecutive Llama-family decoder layers (Llama, Qwen2 with its q/k/v bias, Qwen3
 * with its per-head norms) as one primitive, for B sequences of L new tokens at position
 * `offset`; each layer computes
 *   h = x + o(cached_attention(qkv(rms_norm(x, input_norm)) + qkv_bias))
 *   y = h + down(swiglu(gate_up(rms_norm(h, post_attention_norm))))
 * with the attention of mlxrs_cached_attention (its caches written in place; qk_norm_eps,
 * scale and the head counts shared by all layers) and feeds the next.
 * Input: with `embedding` NULL, x is the hidden states [B, L, hidden] float32; otherwise x is
 * token ids [B, L] (int32 or uint32) and `embedding` the quantized table [vocab, hidden] whose
 * rows (dequantized to float32) enter the first layer; an id outside the table gives a row of
 * NaN. Output: with `head` NULL, the last layer's output [B, L, hidden]; otherwise the logits
 * [B, L, vocab] = head(rms_norm(y, head_norm, head_norm_eps)) of the quantized projection
 * `head` [vocab, hidden]. Writes [output, k_cache_0, v_cache_0, k_cache_1, ...] into `*res`.
 * Not eligible (nothing written, *used_native false): a non-CPU stream, a non-x86-64 CPU,
 * float arrays other than float32, ids of another dtype, bits or group sizes the native
 * quantized matmul does not take, in any part. */
int mlxrs_decoder_stack(mlx_vector_array* res, const mlx_array x,
                        const mlxrs_quantized_projection* embedding,
                        const mlxrs_decoder_layer_weights* layers, int n_layers,
                        const mlx_array head_norm, float head_norm_eps,
                        const mlxrs_quantized_projection* head, float qk_norm_eps,
                        float scale, int heads, int kv_heads, int head_dim, int offset,
                        const mlx_stream s, bool* used_native);

#ifdef __cplusplus
}
#endif

#endif
