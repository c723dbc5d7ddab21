// Cached-attention parameters and checks shared by the primitives that run
// mlxrs_ops::cached_attention (ops_glue.cpp: the attention step alone; layer_glue.cpp: a whole
// decoder layer). Needs the MLX headers; never include it from a kernel unit.
#pragma once
#include <stdexcept>
#include <string>

#include "glue_common.h"
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
  bool q_norm, k_norm;
  bool operator==(const AttentionParams&) const = default;

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
            in.k_norm ? in.k_norm->data<float>() : nullptr};
  }
};

// Throws std::invalid_argument (naming `op`) unless qkv [B, L, (heads + 2 kv_heads) head_dim],
// the caches [B, kv_heads, capacity >= offset + L, head_dim], inv_freq [head_dim / 2] and the
// norms [head_dim] fit the head counts.
inline void check_attention(const char* op, const mx::Shape& qkv, const mx::array& kc,
                            const mx::array& vc, const mx::array& inv_freq,
                            const mx::array* q_norm, const mx::array* k_norm, int heads,
                            int kv_heads, int head_dim, int offset) {
  const std::string name(op);
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || head_dim <= 0 || head_dim % 2 != 0)
    throw std::invalid_argument(name + ": heads " + std::to_string(heads) + ", kv_heads " +
                                std::to_string(kv_heads) + ", head_dim " +
                                std::to_string(head_dim) + " are inconsistent");
  const int B = qkv[0], L = qkv[1];
  const mx::Shape want{B, kv_heads, kc.ndim() == 4 ? kc.shape(2) : 0, head_dim};
  if (qkv[2] != (heads + 2 * kv_heads) * head_dim || kc.shape() != want || vc.shape() != want ||
      L < 1 || offset < 0 || want[2] - offset < L)
    throw std::invalid_argument(name + ": qkv " + shape_str(qkv) + ", k_cache " +
                                shape_str(kc.shape()) + ", v_cache " + shape_str(vc.shape()) +
                                " and offset " + std::to_string(offset) + " do not fit heads " +
                                std::to_string(heads) + ", kv_heads " +
                                std::to_string(kv_heads) + ", head_dim " +
                                std::to_string(head_dim));
  if (inv_freq.ndim() != 1 || inv_freq.shape(0) != head_dim / 2)
    throw std::invalid_argument(name + ": inv_freq must be [" + std::to_string(head_dim / 2) +
                                "], got " + shape_str(inv_freq.shape()));
  for (const mx::array* n : {q_norm, k_norm})
    if (n && (n->ndim() != 1 || n->shape(0) != head_dim))
      throw std::invalid_argument(name + ": q_norm / k_norm must be [" +
                                  std::to_string(head_dim) + "], got " + shape_str(n->shape()));
}

}  // namespace mlxrs_glue
