// Native CPU kernels for the small fused ops of a decoder step (RMS norm, SwiGLU, attention
// with RoPE and the KV-cache write). MLX 0.32.2 composes each of these from several
// primitives on the CPU, and each primitive costs microseconds of scheduling: at decode, where
// the tensors are a few hundred floats, that overhead is most of the step. Plain f32 buffers;
// includes no MLX header (see qmm_internal.h for why).
#pragma once
#include <cstddef>
#include <cstdint>

namespace mlxrs_ops {

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w (w may be null: no weight).
void rms_norm(const float* x, const float* w, float eps, float* y, size_t rows, int dim);

// y[r, i] = silu(gu[r, i]) * gu[r, inter + i] for i < inter; gu rows are [gate | up].
void swiglu(const float* gu, float* y, size_t rows, int inter);

// out[r] = the index of the largest of x[r, 0 .. n) as MLX's CPU argmax finds it: a scan from
// element 0 that moves on strictly greater values, so ties give the first index, NaN is
// skipped, and a NaN at index 0 gives 0. n >= 1.
void argmax_rows(const float* x, uint32_t* out, size_t rows, int n);

// One step of grouped-query attention over a KV cache, for B sequences at the same position:
// `tokens` new tokens (1 when decoding, more for a prefill chunk) at positions
// [offset, offset + tokens).
struct CachedAttention {
  int batch, tokens, heads, kv_heads, head_dim;
  int capacity;            // positions the cache buffers hold (>= offset + tokens)
  int offset;              // position of the first new token (cached: [0, offset))
  float scale;             // applied to q . k
  float norm_eps;          // for q_norm / k_norm
  const float* inv_freq;   // [head_dim / 2]: angle = position * inv_freq[i]
  const float* q_norm;     // [head_dim] or null: RMS norm of each query head before RoPE
  const float* k_norm;     // [head_dim] or null: same for keys
};

// qkv: [batch, tokens, (heads + 2 kv_heads) * head_dim], the fused projection output (q heads,
// then k, then v). Applies the optional per-head norms and RoPE ("rotate half" layout) to q and
// k, writes k and v at [offset, offset + tokens) into k_cache / v_cache ([batch, kv_heads,
// capacity, head_dim]) and writes causal attention, softmax(q k^T * scale) v where token l
// sees positions [0, offset + l], into out ([batch, tokens, heads * head_dim]).
// Requires offset + tokens <= capacity and heads % kv_heads == 0.
void cached_attention(const CachedAttention& a, const float* qkv, float* k_cache,
                      float* v_cache, float* out);

}  // namespace mlxrs_ops
