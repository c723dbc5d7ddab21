// MLX-facing glue of ops.h: one primitive per fused op, whose CPU evaluation calls the kernels
// of ops_cpu.h on the stream's thread. Compiled like qmm_glue.cpp (C++20, MLX headers, no
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

namespace mx = mlx::core;
using mlxrs_glue::guarded;
using mlxrs_glue::has;
using mlxrs_glue::shape_str;
using mlxrs_glue::Strided;

namespace {

bool on_cpu(const mx::Stream& s) { return s.device == mx::Device::cpu; }

bool f32(const mx::array& a) { return a.dtype() == mx::float32; }

void alloc(mx::array& out) { out.set_data(mx::allocator::malloc(out.nbytes())); }

// ---------------------------------------------------------------- RMS norm
class NativeRmsNorm : public mx::UnaryPrimitive {
 public:
  NativeRmsNorm(mx::Stream s, float eps, bool weighted)
      : mx::UnaryPrimitive(s), eps_(eps), weighted_(weighted) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    const bool in_place = x.is_donatable() && x.flags().row_contiguous;
    if (in_place)
      out.copy_shared_buffer(x);
    else
      alloc(out);
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) enc.set_input_array(a);
    enc.set_output_array(out);
    Strided xs(x);
    const float* w = weighted_ ? inputs[1].data<float>() : nullptr;
    float* y = out.data<float>();
    const int dim = x.shape(-1);
    const size_t rows = x.size() / size_t(dim);
    const float eps = eps_;
    enc.dispatch([xs, w, y, dim, rows, eps]() {
      std::vector<char> scratch;
      auto* xp = static_cast<const float*>(xs.row_major(scratch));
      mlxrs_ops::rms_norm(xp, w, eps, y, rows, dim);
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("NativeRmsNorm has no GPU implementation");
  }
  const char* name() const override { return "NativeRmsNorm"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const NativeRmsNorm*>(&other);
    return o && o->eps_ == eps_ && o->weighted_ == weighted_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape()};
  }

 private:
  float eps_;
  bool weighted_;
};

// ---------------------------------------------------------------- row kernels
// A primitive that runs one kernel over the rows of a float32 input (gathered row-major when it
// is a view). Kernel supplies the name, the output's shape and dtype, and
// run(x, out, rows, n) with n the input's last axis.
template <class Kernel>
class NativeRowOp : public mx::UnaryPrimitive {
 public:
  explicit NativeRowOp(mx::Stream s) : mx::UnaryPrimitive(s) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    alloc(out);
    auto& enc = mx::cpu::get_command_encoder(stream());
    enc.set_input_array(x);
    enc.set_output_array(out);
    Strided xs(x);
    void* y = out.data<void>();
    const int n = x.shape(-1);
    const size_t rows = x.size() / size_t(n);
    enc.dispatch([xs, y, n, rows]() {
      std::vector<char> scratch;
      Kernel::run(static_cast<const float*>(xs.row_major(scratch)), y, rows, n);
    });
  }
  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error(std::string(Kernel::kName) + " has no GPU implementation");
  }
  const char* name() const override { return Kernel::kName; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return dynamic_cast<const NativeRowOp*>(&other) != nullptr;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {Kernel::out_shape(inputs[0].shape())};
  }

  // The lazy output for x (float32, last axis non-empty).
  static mx::array build(const mx::array& x, const mx::Stream& s) {
    return mx::array(Kernel::out_shape(x.shape()), Kernel::kOutDtype,
                     std::make_shared<NativeRowOp>(s), std::vector<mx::array>{x});
  }
};

// silu(gate) * up over rows [gate | up].
struct SwigluKernel {
  static constexpr const char* kName = "NativeSwiglu";
  static constexpr mx::Dtype kOutDtype = mx::float32;
  static mx::Shape out_shape(mx::Shape s) {
    s.back() /= 2;
    return s;
  }
  static void run(const float* x, void* y, size_t rows, int n) {
    mlxrs_ops::swiglu(x, static_cast<float*>(y), rows, n / 2);
  }
};

// gelu_tanh(gate) * up over rows [gate | up].
struct GeluTanhGluKernel {
  static constexpr const char* kName = "NativeGeluTanhGlu";
  static constexpr mx::Dtype kOutDtype = mx::float32;
  static mx::Shape out_shape(mx::Shape s) {
    s.back() /= 2;
    return s;
  }
  static void run(const float* x, void* y, size_t rows, int n) {
    mlxrs_ops::gelu_tanh_glu(x, static_cast<float*>(y), rows, n / 2);
  }
};

// The uint32 index of each row's largest element (MLX's argmax semantics).
struct ArgmaxKernel {
  static constexpr const char* kName = "NativeArgmax";
  static constexpr mx::Dtype kOutDtype = mx::uint32;
  static mx::Shape out_shape(mx::Shape s) {
    s.pop_back();
    return s;
  }
  static void run(const float* x, void* y, size_t rows, int n) {
    mlxrs_ops::argmax_rows(x, static_cast<uint32_t*>(y), rows, n);
  }
};

// ---------------------------------------------------------------- cached attention
class NativeCachedAttention : public mx::Primitive {
 public:
  NativeCachedAttention(mx::Stream s, mlxrs_glue::AttentionParams p) : mx::Primitive(s), p_(p) {}

  // inputs: qkv, k_cache, v_cache, inv_freq[, q_norm][, k_norm]
  // outputs: attention, k_cache (in place), v_cache (in place)
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto& qkv = inputs[0];
    alloc(outputs[0]);
    const mlxrs_glue::InPlaceCaches caches(inputs[1], inputs[2], outputs[1], outputs[2]);
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) enc.set_input_array(a);
    for (auto& a : outputs) enc.set_output_array(a);

    Strided qkv_s(qkv);
    const mlxrs_glue::AttentionInputs in{inputs[1], inputs[3], p_.q_norm ? &inputs[4] : nullptr,
                                         p_.k_norm ? &inputs[4 + p_.q_norm] : nullptr};
    const mlxrs_ops::CachedAttention a = p_.kernel_args(qkv.shape(0), qkv.shape(1), in);
    float* out = outputs[0].data<float>();
    enc.dispatch([a, qkv_s, caches, out]() {
      std::vector<char> scratch;
      caches.gather(scratch);
      auto* q = static_cast<const float*>(qkv_s.row_major(scratch));
      caches.attend(a, q, out);
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("NativeCachedAttention has no GPU implementation");
  }
  const char* name() const override { return "NativeCachedAttention"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const NativeCachedAttention*>(&other);
    return o && o->p_ == p_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {{inputs[0].shape(0), inputs[0].shape(1), p_.heads * p_.head_dim}, inputs[1].shape(),
            inputs[2].shape()};
  }

 private:
  mlxrs_glue::AttentionParams p_;
};


}  // namespace

#define MLXRS_EXPORT extern "C" __attribute__((visibility("default")))

MLXRS_EXPORT int mlxrs_rms_norm(mlx_array* res, const mlx_array x, const mlx_array weight,
                                float eps, const mlx_stream s, bool* used_native) {
  *used_native = false;
  return guarded([&] {
    const auto& xa = mlx_array_get_(x);
    const auto& stream = mlx_stream_get_(s);
    const bool weighted = has(weight);
    if (!on_cpu(stream) || !f32(xa) || xa.ndim() < 1 || xa.shape(-1) == 0 ||
        (weighted && !f32(mlx_array_get_(weight))))
      return;
    std::vector<mx::array> inputs{xa};
    if (weighted) {
      const auto& w = mlx_array_get_(weight);
      if (w.ndim() != 1 || w.shape(0) != xa.shape(-1))
        throw std::invalid_argument("rms_norm: weight " + shape_str(w.shape()) +
                                    " does not match x " + shape_str(xa.shape()));
      // The weight is read in place: it must be row-major once evaluated.
      inputs.push_back(mlxrs_glue::ensure_contiguous(w, stream));
    }
    mlx_array_set_(*res, mx::array(xa.shape(), mx::float32,
                                   std::make_shared<NativeRmsNorm>(stream, eps, weighted),
                                   std::move(inputs)));
    *used_native = true;
  });
}

// A [gate | up] activation: declined unless float32 on a CPU stream; an odd or empty last
// axis is an error.
template <class Kernel>
int glu(const char* op, mlx_array* res, const mlx_array x, const mlx_stream s,
        bool* used_native) {
  *used_native = false;
  return guarded([&] {
    const auto& xa = mlx_array_get_(x);
    if (!on_cpu(mlx_stream_get_(s)) || !f32(xa) || xa.ndim() < 1) return;
    if (xa.shape(-1) % 2 != 0 || xa.shape(-1) == 0)
      throw std::invalid_argument(std::string(op) + ": the last axis of " +
                                  shape_str(xa.shape()) +
                                  " must hold [gate | up] (a positive even length)");
    mlx_array_set_(*res, NativeRowOp<Kernel>::build(xa, mlx_stream_get_(s)));
    *used_native = true;
  });
}

MLXRS_EXPORT int mlxrs_swiglu(mlx_array* res, const mlx_array x, const mlx_stream s,
                              bool* used_native) {
  return glu<SwigluKernel>("swiglu", res, x, s, used_native);
}

MLXRS_EXPORT int mlxrs_gelu_tanh_glu(mlx_array* res, const mlx_array x, const mlx_stream s,
                                     bool* used_native) {
  return glu<GeluTanhGluKernel>("gelu_tanh_glu", res, x, s, used_native);
}

MLXRS_EXPORT int mlxrs_argmax_last(mlx_array* res, const mlx_array x, const mlx_stream s,
                                   bool* used_native) {
  *used_native = false;
  return guarded([&] {
    const auto& xa = mlx_array_get_(x);
    if (!on_cpu(mlx_stream_get_(s)) || !f32(xa) || xa.ndim() < 1 || xa.shape(-1) == 0) return;
    mlx_array_set_(*res, NativeRowOp<ArgmaxKernel>::build(xa, mlx_stream_get_(s)));
    *used_native = true;
  });
}

MLXRS_EXPORT int mlxrs_cached_attention(mlx_vector_array* res, const mlx_array qkv,
                                        const mlx_array k_cache, const mlx_array v_cache,
                                        const mlx_array inv_freq, const mlx_array q_norm,
                                        const mlx_array k_norm, mlxrs_attention_params params,
                                        const mlx_stream s, bool* used_native) {
  *used_native = false;
  return guarded([&] {
    const auto& stream = mlx_stream_get_(s);
    const auto& q = mlx_array_get_(qkv);
    const auto& kc = mlx_array_get_(k_cache);
    const auto& vc = mlx_array_get_(v_cache);
    const auto& f = mlx_array_get_(inv_freq);
    std::vector<mx::array> inputs{q, kc, vc, f};
    for (const auto* n : {&q_norm, &k_norm})
      if (has(*n)) inputs.push_back(mlx_array_get_(*n));
    for (size_t i = 0; i < inputs.size(); ++i)
      if (i != 1 && i != 2 && !f32(inputs[i])) return;
    if (!mlxrs_glue::kv_cache_dtypes(kc, vc)) return;
    if (q.ndim() != 3)
      throw std::invalid_argument("cached_attention: qkv must be [B, L, width], got " +
                                  shape_str(q.shape()));
    if (!on_cpu(stream)) return;
    const mx::array* qn = has(q_norm) ? &inputs[4] : nullptr;
    const mx::array* kn = has(k_norm) ? &inputs[4 + has(q_norm)] : nullptr;
    mlxrs_glue::check_attention("cached_attention", q.shape(), kc, vc, f, qn, kn, params);
    const int B = q.shape(0), L = q.shape(1);
    // Small parameter vectors are read in place: make sure they are row-major.
    for (size_t i = 3; i < inputs.size(); ++i)
      inputs[i] = mlxrs_glue::ensure_contiguous(inputs[i], stream);
    const auto p = mlxrs_glue::AttentionParams::from(params, has(q_norm), has(k_norm));
    auto outs = mx::array::make_arrays(
        {{B, L, p.heads * p.head_dim}, kc.shape(), vc.shape()},
        {mx::float32, kc.dtype(), vc.dtype()},
        std::make_shared<NativeCachedAttention>(stream, p), inputs);
    mlx_vector_array_set_(*res, std::move(outs));
    *used_native = true;
  });
}
