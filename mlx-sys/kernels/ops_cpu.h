// Native CPU kernels for the small fused ops of a decoder step (RMS norm, SwiGLU, single-token
// attention with RoPE and the KV-cache write). MLX 0.32.2 composes each of these from several
// primitives on the CPU, and each primitive costs microseconds of scheduling: at decode, where
// the tensors are a few hundred floats, that overhead is most of the step. Plain f32 buffers;
// includes no MLX header (see qmm_internal.h for why).
#pragma once
#include <cstddef>

namespace mlxrs_ops {

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w (w may be null: no weight).
void rms_norm(const float* x, const float* w, float eps, float* y, size_t rows, int dim);

// y[r, i] = silu(gu[r, i]) * gu[r, inter + i] for i < inter; gu rows are [gate | up].
void swiglu(const float* gu, float* y, size_t rows, int inter);

// One decoding step of grouped-query attention for B sequences at the same position.
struct DecodeAttention {
  int batch, heads, kv_heads, head_dim;
  int capacity;            // positions the cache buffers hold
  int offset;              // position of the new token (cached positions: [0, offset))
  float scale;             // applied to q . k
  float norm_eps;          // for q_norm / k_norm
  const float* inv_freq;   // [head_dim / 2]: angle = position * inv_freq[i]
  const float* q_norm;     // [head_dim] or null: RMS norm of each query head before RoPE
  const float* k_norm;     // [head_dim] or null: same for keys
};

// qkv: [batch, (heads + 2 kv_heads) * head_dim], the fused projection output (q heads, then k,
// then v). Applies the optional per-head norms and RoPE ("rotate half" layout) at `offset` to
// q and k, writes k and v at `offset` into k_cache / v_cache ([batch, kv_heads, capacity,
// head_dim]) and writes softmax(q k^T * scale) v over positions [0, offset] into
// out ([batch, heads * head_dim]). Requires offset < capacity and heads % kv_heads == 0.
void decode_attention(const DecodeAttention& a, const float* qkv, float* k_cache,
                      float* v_cache, float* out);

}  // namespace mlxrs_ops
