/* C interface of mlx-rs's native CPU primitives for the small fused ops of a decoder step
 * (mlx-sys/kernels/ops_cpu.h): RMS norm, SwiGLU / GeGLU and attention with RoPE and the
 * KV-cache write, and whole decoder layers built from them and the quantized matmul. The Rust
 * declarations (mlx_sys::native_ops) are generated from this header by bindgen. MLX 0.32.2
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

/* gelu_tanh(gate) * up where x's last axis is [gate | up] (even length 2I), with
 * gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) in float32; the result has
 * last axis I. */
int mlxrs_gelu_tanh_glu(mlx_array* res, const mlx_array x, const mlx_stream s,
                        bool* used_native);

/* The parameters of one cached attention step besides its arrays.
 * - heads, kv_heads: query and key/value heads (heads a multiple of kv_heads); head_dim: even.
 * - offset: position of the first new token.
 * - scale: multiplies q . k; qk_norm_eps: epsilon of the optional per-head q / k RMS norms.
 * - window: 0 for none; W > 0: a query at position i sees the keys at positions j with
 *   0 <= i - j < W (W keys including its own).
 * - logit_softcap: 0 for none; c > 0: scores = c * tanh(scores / c), after the scale and
 *   before the softmax.
 * - kv_mode: MLXRS_KV_PROJECTED (0): qkv holds q, k and v heads, and k and v are written to
 *   the caches; MLXRS_KV_KEYS_AS_VALUES (1): qkv holds q and k heads only, the values being the
 *   keys as projected (before k_norm and RoPE; Gemma 4's attention_k_eq_v); MLXRS_KV_SHARED
 *   (2): qkv holds q heads only, and the caches already hold this step's keys and values
 *   (another layer wrote them: Gemma 4's KV sharing): they are read, never written.
 * - value_norm: 1: values are RMS-normalised without a weight (epsilon qk_norm_eps) before
 *   they are stored (Gemma 4's v_norm); 0: stored as projected. */
enum { MLXRS_KV_PROJECTED = 0, MLXRS_KV_KEYS_AS_VALUES = 1, MLXRS_KV_SHARED = 2 };
typedef struct mlxrs_attention_params {
  int heads;
  int kv_heads;
  int head_dim;
  int offset;
  float scale;
  float qk_norm_eps;
  int window;
  float logit_softcap;
  int kv_mode;
  int value_norm;
} mlxrs_attention_params;

/* One step of grouped-query attention over a KV cache (see mlxrs_ops::cached_attention):
 * qkv [B, L, (heads + 2 kv_heads) * head_dim] (L new tokens: 1 when decoding, a prefill chunk
 * otherwise; fewer heads with params.kv_mode 1 or 2), k_cache and v_cache [B, kv_heads, capacity, head_dim], inv_freq [head_dim / 2],
 * q_norm / k_norm [head_dim] or null handles. Position p lives in cache slot p % capacity;
 * the cache must be either plain (offset + L <= capacity: slot = position) or a ring
 * (window > 0 and capacity >= window + L - 1, so that the chunk's writes never overwrite a
 * key one of its earlier queries still sees); anything else is a shape error. Writes three
 * arrays into `*res`: the causal attention output [B, L, heads * head_dim] (the query at
 * position i = offset + l sees positions [max(0, i - window + 1), i], all of [0, i] without
 * a window) and the two caches with the slots of positions [offset, offset + L) written. The
 * caches are updated in place: the returned cache arrays share the input caches' buffers (no
 * other slot is changed), and the result depends on them, so later readers see the write. */
int mlxrs_cached_attention(mlx_vector_array* res, const mlx_array qkv, const mlx_array k_cache,
                           const mlx_array v_cache, const mlx_array inv_freq,
                           const mlx_array q_norm, const mlx_array k_norm,
                           mlxrs_attention_params params, const mlx_stream s,
                           bool* used_native);

/* A quantized projection, transposed as in a linear layer. MLX's affine format (block_parts =
 * 0): `weight` uint32 [N, K * bits / 32], `scales` and `biases` [N, K / group_size] of one
 * float dtype. GGUF blocks as stored (block_parts = 1 to 4, see mlxrs_block_matmul in qmm.h):
 * `weight` uint8 holding block_parts runs of block_rows[i] rows in format block_formats[i]
 * (MLXRS_QMM_FORMAT_*); scales, biases, group_size and bits are not read (pass the weight and
 * zeros). An embedding table is affine or one run of blocks. */
typedef struct mlxrs_quantized_projection {
  mlx_array weight;
  mlx_array scales;
  mlx_array biases;
  int group_size;
  int bits;
  int block_parts;
  int block_formats[4];
  int block_rows[4];
} mlxrs_quantized_projection;

/* The activation of a decoder layer's gated MLP, applied to the gate half of gate_up. */
typedef enum mlxrs_activation {
  MLXRS_ACTIVATION_SILU = 0,      /* silu(gate) * up (SwiGLU: Llama, Qwen, Mistral) */
  MLXRS_ACTIVATION_GELU_TANH = 1, /* gelu_tanh(gate) * up (GeGLU: Gemma) */
} mlxrs_activation;

/* One decoder layer's weights, parameters and KV cache for mlxrs_decoder_stack. Norm weights
 * are [hidden] float32, each with its epsilon, in the form x / rms(x) * w (a model whose norms
 * multiply by 1 + w folds the 1 in first); a null handle (ctx == NULL) for an optional one.
 * - attention: the layer's own attention parameters (its offset is ignored: the stack's);
 *   qk_norm_eps is the epsilon of q_norm / k_norm.
 * - input_norm: before attention; qkv [(heads + 2 kv_heads) head_dim, hidden] and its
 *   optional bias [(heads + 2 kv_heads) head_dim]; inv_freq [head_dim / 2]; q_norm / k_norm
 *   [head_dim] or null; o [hidden, heads head_dim].
 * - attention_out_norm (optional): RMS norm of the o projection's output before the residual
 *   add (Gemma's post_attention_layernorm).
 * - pre_mlp_norm: before the MLP; gate_up [2I, hidden] ([gate | up] rows); activation;
 *   down [hidden, I].
 * - mlp_out_norm (optional): RMS norm of the down projection's output before the residual
 *   add (Gemma's post_feedforward_layernorm).
 * - k_cache, v_cache: as mlxrs_cached_attention takes them. */
typedef struct mlxrs_decoder_layer_weights {
  mlx_array k_cache;
  mlx_array v_cache;
  mlxrs_attention_params attention;
  mlx_array input_norm;
  float input_norm_eps;
  mlxrs_quantized_projection qkv;
  mlx_array qkv_bias;
  mlx_array inv_freq;
  mlx_array q_norm;
  mlx_array k_norm;
  mlxrs_quantized_projection o;
  mlx_array attention_out_norm;
  float attention_out_norm_eps;
  mlx_array pre_mlp_norm;
  float pre_mlp_norm_eps;
  mlxrs_quantized_projection gate_up;
  mlxrs_activation activation;
  mlxrs_quantized_projection down;
  mlx_array mlp_out_norm;
  float mlp_out_norm_eps;
} mlxrs_decoder_layer_weights;

/* n_layers consecutive pre-norm decoder layers as one primitive, for B sequences of L new
 * tokens at position `offset`; layer l computes, with its own parameters,
 *   a = o(cached_attention(qkv(rms_norm(x, input_norm)) + qkv_bias))
 *   h = x + (attention_out_norm ? rms_norm(a, attention_out_norm) : a)
 *   m = down(act(gate) * up),  [gate | up] = gate_up(rms_norm(h, pre_mlp_norm))
 *   y = h + (mlp_out_norm ? rms_norm(m, mlp_out_norm) : m)
 * with the attention of mlxrs_cached_attention (its caches written in place; window, soft cap
 * and head counts per layer) and feeds the next.
 * Input: with `embedding` NULL, x is the hidden states [B, L, hidden] float32; otherwise x is
 * token ids [B, L] (int32 or uint32) and `embedding` the quantized table [vocab, hidden] whose
 * rows (dequantized to float32, times embedding_scale) enter the first layer; an id outside
 * the table gives a row of NaN. Output: with `head` NULL, the last layer's output
 * [B, L, hidden]; otherwise the logits [B, L, vocab] = head(rms_norm(y, head_norm,
 * head_norm_eps)) of the quantized projection `head` [vocab, hidden], soft-capped to
 * head_softcap * tanh(logits / head_softcap) when head_softcap > 0. Writes [output,
 * k_cache_0, v_cache_0, k_cache_1, ...] into `*res`.
 * Not eligible (nothing written, *used_native false): a non-CPU stream, a non-x86-64 CPU,
 * float arrays other than float32, ids of another dtype, bits or group sizes the native
 * quantized matmul does not take, in any part. */
int mlxrs_decoder_stack(mlx_vector_array* res, const mlx_array x,
                        const mlxrs_quantized_projection* embedding, float embedding_scale,
                        const mlxrs_decoder_layer_weights* layers, int n_layers,
                        const mlx_array head_norm, float head_norm_eps,
                        const mlxrs_quantized_projection* head, float head_softcap, int offset,
                        const mlx_stream s, bool* used_native);

/* mlxrs_decoder_stack for B independent sequences of one new token each (x: [B, 1, hidden]
 * or ids [B, 1]), sequence b at position offsets[b] with KV caches of its own ([1, kv_heads,
 * capacity_b, head_dim]): the projections and MLPs run once for the B rows, the attention per
 * sequence. layers[l].k_cache / v_cache are sequence 0's; more_caches holds, layer after
 * layer, k_cache and v_cache of sequences 1 .. n_seqs - 1 (2 (n_seqs - 1) per layer). Writes
 * [output, k_cache(l 0, seq 0), v_cache(l 0, seq 0), k_cache(l 0, seq 1), ...] into `*res`.
 * n_seqs must equal B. Not eligible as for mlxrs_decoder_stack. */
int mlxrs_decoder_stack_seqs(mlx_vector_array* res, const mlx_array x,
                             const mlxrs_quantized_projection* embedding, float embedding_scale,
                             const mlxrs_decoder_layer_weights* layers, int n_layers,
                             const mlx_array* more_caches, const int* offsets, int n_seqs,
                             const mlx_array head_norm, float head_norm_eps,
                             const mlxrs_quantized_projection* head, float head_softcap,
                             const mlx_stream s, bool* used_native);

#ifdef __cplusplus
}
#endif

#endif
