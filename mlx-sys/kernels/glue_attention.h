// Cached-attention parameters and checks shared by the primitives that run
// mlxrs_ops::cached_attention (ops_glue.cpp: the attention step alone; layer_glue.cpp: a whole
// decoder layer). Needs the MLX headers; never include it from a kernel unit.
#pragma once
#include <cmath>
#include <stdexcept>
#include <string>

#include "glue_common.h"
#include "ops.h"
#include "ops_cpu.h"

namespace mlxrs_glue {

// The arrays the kernel reads besides q/k/v: a cache (for its capacity), inv_freq and the
// optional per-head norm weights.
struct AttentionInputs {
  const mx::array& k_cache;
  const mx::array& inv_freq;
  const mx::array* q_norm;
  const mx::array* k_norm;
};

struct AttentionParams {
  int heads, kv_heads, head_dim, offset;
  float scale, norm_eps;
  int window;
  float softcap;
  bool q_norm, k_norm;
  int kv_mode;
  bool value_norm;
  bool operator==(const AttentionParams&) const = default;

  // From the C struct, with the presence of the per-head norms.
  static AttentionParams from(const mlxrs_attention_params& p, bool q_norm, bool k_norm) {
    return {p.heads,  p.kv_heads, p.head_dim, p.offset,  p.scale,        p.qk_norm_eps,
            p.window, p.logit_softcap, q_norm, k_norm, p.kv_mode, p.value_norm != 0};
  }

  // The kernel's arguments for B sequences of L new tokens (pointers valid in eval_cpu).
  mlxrs_ops::CachedAttention kernel_args(int B, int L, const AttentionInputs& in) const {
    return {B,
            L,
            heads,
            kv_heads,
            head_dim,
            in.k_cache.shape(2),
            offset,
            scale,
            norm_eps,
            in.inv_freq.data<float>(),
            in.q_norm ? in.q_norm->data<float>() : nullptr,
            in.k_norm ? in.k_norm->data<float>() : nullptr,
            window,
            softcap,
            kv_mode,
            value_norm};
  }
};

// Throws std::invalid_argument (naming `op`) unless qkv [B, L, (heads + 2 kv_heads) head_dim],
// the caches [B, kv_heads, capacity, head_dim] (a plain cache or a ring that takes the chunk:
// mlxrs_ops::cache_fits), inv_freq [head_dim / 2] and the norms [head_dim] fit the head counts,
// and the window and soft cap are valid (window >= 0; soft cap 0 or positive and finite).
inline void check_attention(const char* op, const mx::Shape& qkv, const mx::array& kc,
                            const mx::array& vc, const mx::array& inv_freq,
                            const mx::array* q_norm, const mx::array* k_norm,
                            const mlxrs_attention_params& p) {
  const std::string name(op);
  const int heads = p.heads, kv_heads = p.kv_heads, head_dim = p.head_dim, offset = p.offset;
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || head_dim <= 0 || head_dim % 2 != 0)
    throw std::invalid_argument(name + ": heads " + std::to_string(heads) + ", kv_heads " +
                                std::to_string(kv_heads) + ", head_dim " +
                                std::to_string(head_dim) + " are inconsistent");
  if (p.window < 0 || !(p.logit_softcap >= 0.f) || std::isinf(p.logit_softcap))
    throw std::invalid_argument(name + ": window " + std::to_string(p.window) +
                                " and logit soft cap " + std::to_string(p.logit_softcap) +
                                " must be 0 (none) or positive and finite");
  const int B = qkv[0], L = qkv[1];
  const int capacity = kc.ndim() == 4 ? kc.shape(2) : 0;
  const mx::Shape want{B, kv_heads, capacity, head_dim};
  if (p.kv_mode < 0 || p.kv_mode > 2 || p.value_norm < 0 || p.value_norm > 1)
    throw std::invalid_argument(name + ": kv_mode " + std::to_string(p.kv_mode) +
                                " and value_norm " + std::to_string(p.value_norm) +
                                " must be 0, 1 or 2 and 0 or 1");
  if (qkv[2] != mlxrs_ops::qkv_heads(heads, kv_heads, p.kv_mode) * head_dim ||
      kc.shape() != want || vc.shape() != want)
    throw std::invalid_argument(name + ": qkv " + shape_str(qkv) + ", k_cache " +
                                shape_str(kc.shape()) + ", v_cache " + shape_str(vc.shape()) +
                                " do not fit heads " + std::to_string(heads) + ", kv_heads " +
                                std::to_string(kv_heads) + ", head_dim " +
                                std::to_string(head_dim));
  if (L < 1 || offset < 0 || capacity < 1 || !mlxrs_ops::cache_fits(capacity, offset, L, p.window))
    throw std::invalid_argument(
        name + ": a cache of capacity " + std::to_string(capacity) + " cannot take " +
        std::to_string(L) + " new tokens at offset " + std::to_string(offset) +
        (p.window > 0 ? " with window " + std::to_string(p.window) +
                            " (a plain cache needs offset + L <= capacity, a ring capacity >= "
                            "window + L - 1)"
                      : " (needs offset + L <= capacity)"));
  if (inv_freq.ndim() != 1 || inv_freq.shape(0) != head_dim / 2)
    throw std::invalid_argument(name + ": inv_freq must be [" + std::to_string(head_dim / 2) +
                                "], got " + shape_str(inv_freq.shape()));
  for (const mx::array* n : {q_norm, k_norm})
    if (n && (n->ndim() != 1 || n->shape(0) != head_dim))
      throw std::invalid_argument(name + ": q_norm / k_norm must be [" +
                                  std::to_string(head_dim) + "], got " + shape_str(n->shape()));
}

}  // namespace mlxrs_glue
