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

// y[r, :] = residual[r, :] + x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w: an RMS norm of a
// block's output before its residual add. y may be x.
void rms_norm_residual(const float* x, const float* w, float eps, const float* residual,
                       float* y, size_t rows, int dim);

// y[r, i] = silu(gu[r, i]) * gu[r, inter + i] for i < inter; gu rows are [gate | up].
void swiglu(const float* gu, float* y, size_t rows, int inter);

// y[r, i] = gelu_tanh(gu[r, i]) * gu[r, inter + i] for i < inter; gu rows are [gate | up] and
// gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), computed as the equal
// x * sigmoid(2 sqrt(2 / pi) (x + 0.044715 x^3)) (no cancellation for negative x).
void gelu_tanh_glu(const float* gu, float* y, size_t rows, int inter);

// x[i] = cap * tanh(x[i] / cap) for i < n (cap > 0): a logit soft cap.
void softcap(float* x, size_t n, float cap);

// out[r] = the index of the largest of x[r, 0 .. n) as MLX's CPU argmax finds it: a scan from
// element 0 that moves on strictly greater values, so ties give the first index, NaN is
// skipped, and a NaN at index 0 gives 0. n >= 1.
void argmax_rows(const float* x, uint32_t* out, size_t rows, int n);

// One step of grouped-query attention over a KV cache, for B sequences at the same position:
// `tokens` new tokens (1 when decoding, more for a prefill chunk) at positions
// [offset, offset + tokens). Position p lives in cache slot p % capacity.
struct CachedAttention {
  int batch, tokens, heads, kv_heads, head_dim;
  int capacity;            // slots the cache buffers hold (see cache_fits)
  int offset;              // position of the first new token
  float scale;             // applied to q . k
  float norm_eps;          // for q_norm / k_norm
  const float* inv_freq;   // [head_dim / 2]: angle = position * inv_freq[i]
  const float* q_norm;     // [head_dim] or null: RMS norm of each query head before RoPE
  const float* k_norm;     // [head_dim] or null: same for keys
  int window;              // 0: none; W > 0: position i sees positions j with 0 <= i - j < W
  float softcap;           // 0: none; c > 0: scores = c * tanh(scores / c) before the softmax
  int kv_mode = 0;         // MLXRS_KV_*: what qkv holds and whether the caches are written
  bool value_norm = false; // values RMS-normalised (no weight, norm_eps) before they are stored
};

// The heads of one qkv row: q, then k and v as kv_mode says.
inline int qkv_heads(int heads, int kv_heads, int kv_mode) {
  return heads + (kv_mode == 0 ? 2 : kv_mode == 1 ? 1 : 0) * kv_heads;
}

// Whether a cache of `capacity` slots takes `tokens` new tokens at `offset` with `window`:
// a plain cache (offset + tokens <= capacity: slot = position), or a ring (window > 0 and
// capacity >= window + tokens - 1: the chunk's writes never overwrite a key that one of its
// earlier queries still sees). offset >= 0 and tokens >= 1 are checked apart.
inline bool cache_fits(int capacity, int offset, int tokens, int window) {
  return int64_t(offset) + tokens <= capacity ||
         (window > 0 && int64_t(capacity) >= int64_t(window) + tokens - 1);
}

// qkv: [batch, tokens, (heads + 2 kv_heads) * head_dim], the fused projection output (q heads,
// then k, then v). Applies the optional per-head norms and RoPE ("rotate half" layout) to q and
// k, writes the k and v of position p = offset + l into slot p % capacity of k_cache / v_cache
// ([batch, kv_heads, capacity, head_dim]) and writes causal attention, softmax(q k^T * scale)
// v (scores soft-capped when softcap > 0) where token l at position i = offset + l sees
// positions [max(0, i - window + 1), i] (all of [0, i] without a window), into out ([batch,
// tokens, heads * head_dim]). Requires cache_fits(...) and heads % kv_heads == 0.
void cached_attention(const CachedAttention& a, const float* qkv, float* k_cache,
                      float* v_cache, float* out);

// The same over caches of IEEE half-precision values (f16 bits): new keys and values are
// computed in f32 as above and rounded to half precision (to nearest, ties to even) when
// stored; cached ones are widened to f32 as they are read, and all arithmetic is f32.
void cached_attention(const CachedAttention& a, const float* qkv, uint16_t* k_cache,
                      uint16_t* v_cache, float* out);

}  // namespace mlxrs_ops
