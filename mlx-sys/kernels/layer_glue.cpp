// MLX-facing glue of mlxrs_decoder_layer (ops.h): a whole Llama-family decoder layer as one
// primitive. Its CPU task runs, on the stream's thread and the kernels' pool, exactly the
// sequence the model composes from the per-op primitives (fused quantized projections with
// their norm prologues and residual epilogues, cached attention, SwiGLU), so the numbers are
// the same; what it saves is MLX's per-primitive scheduling (five primitives per layer) and the
// graph-building work of the calling thread, which on a small machine compete with the
// kernels for the cores. Compiled like the other glue units (C++20, MLX headers, no
// instruction-set flags).
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "glue_attention.h"
#include "glue_common.h"
#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/c/private/array.h"
#include "mlx/c/private/stream.h"
#include "mlx/c/private/vector.h"
#include "mlx/primitives.h"
#include "ops.h"
#include "ops_cpu.h"
#include "qmm_driver.h"

namespace mx = mlx::core;
using mlxrs_glue::has;
using mlxrs_glue::shape_str;

namespace {

struct ProjParams {
  int group, bits;
  bool operator==(const ProjParams&) const = default;
};

struct LayerParams {
  mlxrs_glue::AttentionParams att;
  float input_norm_eps, post_norm_eps;
  ProjParams qkv, o, gate_up, down;
  bool qkv_bias;
  bool operator==(const LayerParams&) const = default;
};

// Input positions: fixed ones, then the optional qkv bias, q_norm and k_norm in that order.
enum Input {
  kX,
  kKCache,
  kVCache,
  kInvFreq,
  kInputNorm,
  kPostNorm,
  kQkv,                // weight, scales, biases
  kO = kQkv + 3,       // same
  kGateUp = kO + 3,    // same
  kDown = kGateUp + 3, // same
  kOptional = kDown + 3,
};

class NativeDecoderLayer : public mx::Primitive {
 public:
  NativeDecoderLayer(mx::Stream s, LayerParams p) : mx::Primitive(s), p_(p) {}

  // outputs: the layer's output (x's shape), k_cache (in place), v_cache (in place)
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto& x = inputs[kX];
    outputs[0].set_data(mx::allocator::malloc(outputs[0].nbytes()));
    const mlxrs_glue::InPlaceCaches caches(inputs[kKCache], inputs[kVCache], outputs[1],
                                           outputs[2]);
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) enc.set_input_array(a);
    for (auto& a : outputs) enc.set_output_array(a);

    const int B = x.shape(0), L = x.shape(1), hidden = x.shape(2), M = B * L;
    const auto& att = p_.att;
    const int n_qkv = (att.heads + 2 * att.kv_heads) * att.head_dim;
    const int attn_width = att.heads * att.head_dim;
    const int inter = inputs[kDown].shape(1) * 32 / p_.down.bits;
    auto proj = [&](int at, ProjParams pp, int N, int K) {
      return mlxrs_qmm::Call{nullptr,
                             mlxrs_qmm::F32,
                             inputs[at].data<uint32_t>(),
                             inputs[at + 1].data<void>(),
                             inputs[at + 2].data<void>(),
                             mlxrs_glue::dt_code(inputs[at + 1].dtype()),
                             nullptr,
                             mlxrs_qmm::F32,
                             M,
                             N,
                             K,
                             pp.bits,
                             pp.group};
    };
    mlxrs_qmm::Call qkv = proj(kQkv, p_.qkv, n_qkv, hidden);
    qkv.norm_w = inputs[kInputNorm].data<float>();
    qkv.norm_eps = p_.input_norm_eps;
    mlxrs_qmm::Call o = proj(kO, p_.o, hidden, attn_width);
    mlxrs_qmm::Call gate_up = proj(kGateUp, p_.gate_up, 2 * inter, hidden);
    gate_up.norm_w = inputs[kPostNorm].data<float>();
    gate_up.norm_eps = p_.post_norm_eps;
    mlxrs_qmm::Call down = proj(kDown, p_.down, hidden, inter);
    size_t next = kOptional;
    const float* bias = p_.qkv_bias ? inputs[next++].data<float>() : nullptr;
    const mlxrs_glue::AttentionInputs in{inputs[kKCache], inputs[kInvFreq],
                                         att.q_norm ? &inputs[next] : nullptr,
                                         att.k_norm ? &inputs[next + att.q_norm] : nullptr};
    const mlxrs_ops::CachedAttention a = att.kernel_args(B, L, in);
    const mlxrs_glue::Strided xs(x);
    float* y = outputs[0].data<float>();
    enc.dispatch([=]() mutable {
      std::vector<char> cache_scratch, x_scratch;
      caches.gather(cache_scratch);
      const auto* xin = static_cast<const float*>(xs.row_major(x_scratch));
      const size_t m = size_t(M);
      std::vector<float> buf(m * (n_qkv + attn_width + hidden + 3 * size_t(inter)));
      float* qkv_y = buf.data();
      float* attn_y = qkv_y + m * n_qkv;
      float* h = attn_y + m * attn_width;
      float* gate_up_y = h + m * hidden;
      float* act = gate_up_y + m * 2 * inter;
      // h = x + o_proj(attention(qkv_proj(rms_norm(x)) [+ bias]))
      qkv.x = xin;
      qkv.y = qkv_y;
      mlxrs_qmm::compute(qkv);
      if (bias)
        for (size_t r = 0; r < m; ++r)
          for (int i = 0; i < n_qkv; ++i) qkv_y[r * n_qkv + i] += bias[i];
      mlxrs_ops::cached_attention(a, qkv_y, caches.k, caches.v, attn_y);
      o.x = attn_y;
      o.y = h;
      o.residual = xin;
      mlxrs_qmm::compute(o);
      // y = h + down_proj(swiglu(gate_up_proj(rms_norm(h))))
      gate_up.x = h;
      gate_up.y = gate_up_y;
      mlxrs_qmm::compute(gate_up);
      mlxrs_ops::swiglu(gate_up_y, act, m, inter);
      down.x = act;
      down.y = y;
      down.residual = h;
      mlxrs_qmm::compute(down);
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("NativeDecoderLayer has no GPU implementation");
  }
  const char* name() const override { return "NativeDecoderLayer"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const NativeDecoderLayer*>(&other);
    return o && o->p_ == p_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[kX].shape(), inputs[kKCache].shape(), inputs[kVCache].shape()};
  }

 private:
  LayerParams p_;
};

// Whether the kernel takes projection `p` as an [N, K] matrix: false for what it does not
// support (bits, group size, dtypes); std::invalid_argument for shapes that do not fit.
bool projection_ok(const char* what, const mlxrs_quantized_projection& p, int N, int K) {
  const auto& w = mlx_array_get_(p.weight);
  const auto& s = mlx_array_get_(p.scales);
  const auto& b = mlx_array_get_(p.biases);
  if (!mlxrs_glue::qmm_weights_supported(w, s, b, p.group_size, p.bits)) return false;
  if (K % p.group_size != 0 || w.shape() != mx::Shape{N, K * p.bits / 32} ||
      s.shape() != mx::Shape{N, K / p.group_size} || b.shape() != s.shape())
    throw std::invalid_argument(std::string("decoder_layer: ") + what + " weight " +
                                shape_str(w.shape()) + ", scales " + shape_str(s.shape()) +
                                ", biases " + shape_str(b.shape()) + " do not fit a [" +
                                std::to_string(N) + ", " + std::to_string(K) + "] matrix of " +
                                std::to_string(p.bits) + "-bit codes in groups of " +
                                std::to_string(p.group_size));
  return true;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int mlxrs_decoder_layer(
    mlx_vector_array* res, const mlx_array x, const mlx_array k_cache, const mlx_array v_cache,
    const mlx_array input_norm, float input_norm_eps, const mlx_array post_attention_norm,
    float post_norm_eps, const mlxrs_quantized_projection* qkv, const mlx_array qkv_bias,
    const mlxrs_quantized_projection* o, const mlxrs_quantized_projection* gate_up,
    const mlxrs_quantized_projection* down, const mlx_array inv_freq, const mlx_array q_norm,
    const mlx_array k_norm, float qk_norm_eps, float scale, int heads, int kv_heads,
    int head_dim, int offset, const mlx_stream s, bool* used_native) {
  *used_native = false;
  return mlxrs_glue::guarded([&] {
    const auto& stream = mlx_stream_get_(s);
    const auto& xa = mlx_array_get_(x);
    if (!mlxrs_qmm::native_isa_available() || stream.device != mx::Device::cpu ||
        xa.dtype() != mx::float32)
      return;
    if (xa.ndim() != 3 || xa.size() == 0)
      throw std::invalid_argument("decoder_layer: x must be a non-empty [B, L, hidden], got " +
                                  shape_str(xa.shape()));
    std::vector<mx::array> inputs{xa,
                                  mlx_array_get_(k_cache),
                                  mlx_array_get_(v_cache),
                                  mlx_array_get_(inv_freq),
                                  mlx_array_get_(input_norm),
                                  mlx_array_get_(post_attention_norm)};
    for (const auto* p : {qkv, o, gate_up, down})
      for (const auto& a : {p->weight, p->scales, p->biases}) inputs.push_back(mlx_array_get_(a));
    for (const auto* a : {&qkv_bias, &q_norm, &k_norm})
      if (has(*a)) inputs.push_back(mlx_array_get_(*a));
    for (size_t i = 0; i < inputs.size(); ++i)
      if (i < kQkv || i >= kOptional)
        if (inputs[i].dtype() != mx::float32) return;

    const int B = xa.shape(0), L = xa.shape(1), hidden = xa.shape(2);
    const int n_qkv = (heads + 2 * kv_heads) * head_dim;
    const mx::array* qn = has(q_norm) ? &inputs[kOptional + has(qkv_bias)] : nullptr;
    const mx::array* kn = has(k_norm) ? &inputs[kOptional + has(qkv_bias) + has(q_norm)] : nullptr;
    mlxrs_glue::check_attention("decoder_layer", {B, L, n_qkv}, inputs[kKCache],
                                inputs[kVCache], inputs[kInvFreq], qn, kn, heads, kv_heads,
                                head_dim, offset);
    for (int i : {kInputNorm, kPostNorm})
      if (inputs[i].shape() != mx::Shape{hidden})
        throw std::invalid_argument("decoder_layer: the norm weights must be [" +
                                    std::to_string(hidden) + "], got " +
                                    shape_str(inputs[i].shape()));
    if (has(qkv_bias) && inputs[kOptional].shape() != mx::Shape{n_qkv})
      throw std::invalid_argument("decoder_layer: the qkv bias must be [" +
                                  std::to_string(n_qkv) + "], got " +
                                  shape_str(inputs[kOptional].shape()));
    const auto& gw = mlx_array_get_(gate_up->weight);
    const int inter2 = gw.ndim() == 2 ? gw.shape(0) : 0;
    if (inter2 % 2 != 0 || inter2 == 0)
      throw std::invalid_argument("decoder_layer: the gate/up projection must have an even, "
                                  "positive number of rows ([gate | up]), got " +
                                  shape_str(gw.shape()));
    const int inter = inter2 / 2;
    if (!projection_ok("qkv", *qkv, n_qkv, hidden) ||
        !projection_ok("o", *o, hidden, heads * head_dim) ||
        !projection_ok("gate_up", *gate_up, inter2, hidden) ||
        !projection_ok("down", *down, hidden, inter))
      return;
    // Read in place: make sure everything but x and the caches is row-major.
    for (size_t i = kInvFreq; i < inputs.size(); ++i)
      inputs[i] = mlxrs_glue::ensure_contiguous(inputs[i], stream);

    LayerParams p{{heads, kv_heads, head_dim, offset, scale, qk_norm_eps, has(q_norm),
                   has(k_norm)},
                  input_norm_eps,
                  post_norm_eps,
                  {qkv->group_size, qkv->bits},
                  {o->group_size, o->bits},
                  {gate_up->group_size, gate_up->bits},
                  {down->group_size, down->bits},
                  has(qkv_bias)};
    auto outs = mx::array::make_arrays(
        {xa.shape(), inputs[kKCache].shape(), inputs[kVCache].shape()},
        {mx::float32, mx::float32, mx::float32},
        std::make_shared<NativeDecoderLayer>(stream, p), inputs);
    mlx_vector_array_set_(*res, std::move(outs));
    *used_native = true;
  });
}
