// MLX-facing glue: the NativeQuantizedMatmul primitive and the C interface over mlx-c handles.
// Compiled with -std=c++20 against the MLX headers and mlx-c's sources, without instruction-set
// flags; the kernels it calls live in units that include no MLX header.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/c/error.h"
#include "mlx/c/private/array.h"
#include "mlx/c/private/stream.h"
#include "glue_common.h"
#include "qmm.h"
#include "qmm_driver.h"

namespace mx = mlx::core;

namespace {

std::atomic<uint64_t> g_native_count{0};

using mlxrs_glue::dt_code;
using mlxrs_glue::float_dtype;

// inputs: x, w, scales, biases[, norm weight][, residual]. For GGUF blocks (blocks.parts != 0)
// the scales and biases inputs are the weight again (the blocks hold their own).
class NativeQuantizedMatmul : public mx::UnaryPrimitive {
 public:
  NativeQuantizedMatmul(mx::Stream stream, int group_size, int bits, bool norm = false,
                        float norm_eps = 0.f, bool residual = false,
                        mlxrs_glue::BlockParts blocks = {})
      : mx::UnaryPrimitive(stream),
        group_size_(group_size),
        bits_(bits),
        norm_(norm),
        norm_eps_(norm_eps),
        residual_(residual),
        blocks_(blocks) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    const auto& w = inputs[1];
    const auto& scales = inputs[2];
    const auto& biases = inputs[3];
    // The weights (evaluated, usually) must be row-major; x and the residual may be views
    // (gathered when the task runs, rather than a Contiguous node in every graph).
    for (const auto* a : {&w, &scales, &biases})
      if (!a->flags().row_contiguous)
        throw std::runtime_error("NativeQuantizedMatmul: weights must be row-contiguous");
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) enc.set_input_array(a);
    enc.set_output_array(out);
    const int K = x.shape(-1);
    mlxrs_qmm::Call call{x.data<void>(),
                         dt_code(x.dtype()),
                         w.data<uint32_t>(),
                         scales.data<void>(),
                         biases.data<void>(),
                         dt_code(scales.dtype()),
                         out.data<void>(),
                         dt_code(out.dtype()),
                         int(x.size() / size_t(K)),
                         int(blocks_.rows_of(w)),
                         K,
                         bits_,
                         group_size_};
    blocks_.set(call);
    size_t next = 4;
    if (norm_) {
      if (!inputs[next].flags().row_contiguous)
        throw std::runtime_error("NativeQuantizedMatmul: the norm weight must be row-contiguous");
      call.norm_w = inputs[next++].data<float>();
      call.norm_eps = norm_eps_;
    }
    mlxrs_glue::Strided xs(x);
    std::optional<mlxrs_glue::Strided> rs;
    if (residual_) {
      rs.emplace(inputs[next]);
      call.residual_dt = dt_code(inputs[next].dtype());
    }
    enc.dispatch([call, xs, rs]() mutable {
      std::vector<char> xbuf, rbuf;
      call.x = xs.row_major(xbuf);
      if (rs) call.residual = rs->row_major(rbuf);
      mlxrs_qmm::compute(call);
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("NativeQuantizedMatmul has no GPU implementation");
  }

  const char* name() const override { return "NativeQuantizedMatmul"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const NativeQuantizedMatmul*>(&other);
    return o && o->group_size_ == group_size_ && o->bits_ == bits_ && o->norm_ == norm_ &&
           o->norm_eps_ == norm_eps_ && o->residual_ == residual_ && o->blocks_ == blocks_;
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    auto shape = inputs[0].shape();
    shape.back() = int(blocks_.rows_of(inputs[1]));
    return {shape};
  }

 private:
  int group_size_;
  int bits_;
  bool norm_;
  float norm_eps_;
  bool residual_;
  mlxrs_glue::BlockParts blocks_;
};

// inputs: table (uint8 [rows, K / V, block bytes], GGUF blocks of one format), ids (int32 or
// uint32, any shape). Output: float32 [ids..., K], row ids[i] of the table dequantized by the
// format's definition; an id outside [0, rows) gives a row of NaN (as the native decoder
// stack's lookup does), never a read outside the table.
class BlockRows : public mx::UnaryPrimitive {
 public:
  BlockRows(mx::Stream stream, int format) : mx::UnaryPrimitive(stream), format_(format) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& table = inputs[0];
    const auto& ids = inputs[1];
    if (!table.flags().row_contiguous || !ids.flags().row_contiguous)
      throw std::runtime_error("BlockRows: inputs must be row-contiguous");
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) enc.set_input_array(a);
    enc.set_output_array(out);
    const int format = format_, K = out.shape(-1);
    const size_t rows = size_t(table.shape(0)), n = ids.size();
    const uint8_t* t = table.data<uint8_t>();
    const uint32_t* id = ids.data<uint32_t>();  // int32 ids below 0 read as large: outside
    float* y = out.data<float>();
    enc.dispatch([=]() {
      const size_t rb = mlxrs_qmm::row_bytes(format, K);
      for (size_t i = 0; i < n; ++i) {
        float* row = y + i * size_t(K);
        if (id[i] < rows)
          mlxrs_qmm::dequantize_row(format, t + size_t(id[i]) * rb, K, row);
        else
          std::fill(row, row + K, std::nanf(""));
      }
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("BlockRows has no GPU implementation");
  }

  const char* name() const override { return "BlockRows"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const BlockRows*>(&other);
    return o && o->format_ == format_;
  }

  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    auto shape = inputs[1].shape();
    shape.push_back(inputs[0].shape(1) * mlxrs_qmm::block_values(format_));
    return {shape};
  }

 private:
  int format_;
};

// Appends the optional norm weight (f32 [K]) and residual (float, the output's shape) to the
// primitive's inputs; throws std::invalid_argument for shapes that do not fit.
void add_prologue_epilogue(const char* op, std::vector<mx::array>& inputs, const mx::array& x,
                           const mx::Shape& shape, const mx::array* norm_w,
                           const mx::array* residual, const mx::Stream& stream) {
  if (norm_w) {
    if (norm_w->ndim() != 1 || norm_w->shape(0) != x.shape(-1))
      throw std::invalid_argument(std::string(op) + ": the norm weight must be [" +
                                  std::to_string(x.shape(-1)) + "]");
    inputs.push_back(mlxrs_glue::ensure_contiguous(*norm_w, stream));
  }
  if (residual) {
    if (residual->shape() != shape || !float_dtype(residual->dtype()))
      throw std::invalid_argument(std::string(op) +
                                  ": the residual must be a float array of the output's shape");
    inputs.push_back(*residual);
  }
}

// The native primitive for y = [rms_norm(x, norm_w, eps)] @ dequantize(w)^T [+ residual], or
// nothing when the kernel does not take the call (see qmm_native_ok; a norm weight that is not
// float32). Inconsistent norm weight or residual shapes throw.
std::optional<mx::array> build_native(const mx::array& x, const mx::array& w,
                                      const mx::array& scales, const mx::array& biases,
                                      bool transpose, int group_size, int bits,
                                      const mx::Stream& stream, const mx::array* norm_w,
                                      float norm_eps, const mx::array* residual) {
  if (!mlxrs_glue::qmm_native_ok(x, w, scales, biases, transpose, group_size, bits, stream))
    return {};
  using mlxrs_glue::ensure_contiguous;
  // MLX computes in the promoted type of x, scales and biases and returns it.
  const mx::Dtype out_dtype = mx::promote_types(x.dtype(), scales.dtype());
  auto shape = x.shape();
  shape.back() = w.shape(0);
  std::vector<mx::array> inputs{x, ensure_contiguous(w, stream), ensure_contiguous(scales, stream),
                                ensure_contiguous(biases, stream)};
  if (norm_w && norm_w->dtype() != mx::float32) return {};  // the prologue reads f32 weights
  add_prologue_epilogue("quantized_matmul", inputs, x, shape, norm_w, residual, stream);
  g_native_count.fetch_add(1, std::memory_order_relaxed);
  return mx::array(std::move(shape), out_dtype,
                   std::make_shared<NativeQuantizedMatmul>(stream, group_size, bits,
                                                           norm_w != nullptr, norm_eps,
                                                           residual != nullptr),
                   std::move(inputs));
}

// The native primitive for y = [rms_norm(x, norm_w, eps)] @ w^T [+ residual] with w in a GGUF
// block format. There is no other implementation: a call the kernel cannot take throws.
mx::array build_blocks(const mx::array& x, const mx::array& w,
                       const mlxrs_glue::BlockParts& blocks, const mx::Stream& stream,
                       const mx::array* norm_w, float norm_eps, const mx::array* residual) {
  if (!mlxrs_qmm::native_isa_available() || stream.device != mx::Device::cpu)
    throw std::invalid_argument(
        "block_matmul: GGUF blocks as stored run only on the CPU of an x86-64 machine");
  if (x.ndim() < 1 || !float_dtype(x.dtype()))
    throw std::invalid_argument("block_matmul: x must be a float array");
  blocks.check("block_matmul", w, x.shape(-1));
  if (blocks.total_rows() > (int64_t(1) << 31) - 1)
    throw std::invalid_argument("block_matmul: too many rows");
  auto shape = x.shape();
  shape.back() = int(blocks.total_rows());
  const mx::array wc = mlxrs_glue::ensure_contiguous(w, stream);
  std::vector<mx::array> inputs{x, wc, wc, wc};
  if (norm_w && norm_w->dtype() != mx::float32)
    throw std::invalid_argument("block_matmul: the norm weight must be float32");
  add_prologue_epilogue("block_matmul", inputs, x, shape, norm_w, residual, stream);
  g_native_count.fetch_add(1, std::memory_order_relaxed);
  const mx::Dtype out_dtype = x.dtype();
  return mx::array(std::move(shape), out_dtype,
                   std::make_shared<NativeQuantizedMatmul>(stream, 0, 0, norm_w != nullptr,
                                                           norm_eps, residual != nullptr, blocks),
                   std::move(inputs));
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int mlxrs_block_matmul(
    mlx_array* res, const mlx_array x, const mlx_array w, const int* formats, const int* rows,
    int parts, const mlx_array norm_weight, float norm_eps, const mlx_array residual,
    const mlx_stream s) {
  return mlxrs_glue::guarded([&] {
    const auto blocks = mlxrs_glue::BlockParts::from(formats, rows, parts);
    const mx::array* nw = mlxrs_glue::has(norm_weight) ? &mlx_array_get_(norm_weight) : nullptr;
    const mx::array* r = mlxrs_glue::has(residual) ? &mlx_array_get_(residual) : nullptr;
    mlx_array_set_(*res, build_blocks(mlx_array_get_(x), mlx_array_get_(w), blocks,
                                      mlx_stream_get_(s), nw, norm_eps, r));
  });
}

extern "C" __attribute__((visibility("default"))) int mlxrs_block_rows(mlx_array* res,
                                                                        const mlx_array table,
                                                                        const mlx_array ids,
                                                                        int format,
                                                                        const mlx_stream s) {
  return mlxrs_glue::guarded([&] {
    const auto& t = mlx_array_get_(table);
    const auto& i = mlx_array_get_(ids);
    const auto& stream = mlx_stream_get_(s);
    if (stream.device != mx::Device::cpu)
      throw std::invalid_argument("block_rows: GGUF blocks as stored run only on the CPU");
    const int bb = mlxrs_qmm::block_bytes(format);
    if (bb == 0) throw std::invalid_argument("block_rows: unknown block format " + std::to_string(format));
    if (t.dtype() != mx::uint8 || t.ndim() != 3 || t.shape(2) != bb || t.shape(0) < 1 || t.shape(1) < 1 ||
        int64_t(t.shape(1)) * mlxrs_qmm::block_values(format) > (int64_t(1) << 30))
      throw std::invalid_argument("block_rows: the table must be uint8 [rows, blocks, " +
                                  std::to_string(bb) + "], got " + mlxrs_glue::shape_str(t.shape()));
    if (i.dtype() != mx::int32 && i.dtype() != mx::uint32)
      throw std::invalid_argument("block_rows: ids must be int32 or uint32");
    std::vector<mx::array> inputs{mlxrs_glue::ensure_contiguous(t, stream),
                                  mlxrs_glue::ensure_contiguous(i, stream)};
    auto shape = i.shape();
    shape.push_back(t.shape(1) * mlxrs_qmm::block_values(format));
    mlx_array_set_(*res, mx::array(std::move(shape), mx::float32,
                                   std::make_shared<BlockRows>(stream, format), std::move(inputs)));
  });
}

extern "C" __attribute__((visibility("default"))) int mlxrs_quantized_matmul(
    mlx_array* res, const mlx_array x, const mlx_array w, const mlx_array scales,
    const mlx_array biases, bool transpose, int group_size, int bits, const mlx_stream s,
    bool* used_native) {
  if (used_native) *used_native = false;
  return mlxrs_glue::guarded([&] {
    const auto& xa = mlx_array_get_(x);
    const auto& wa = mlx_array_get_(w);
    const auto& sa = mlx_array_get_(scales);
    const auto& ba = mlx_array_get_(biases);
    const auto& stream = mlx_stream_get_(s);
    if (auto y = build_native(xa, wa, sa, ba, transpose, group_size, bits, stream, nullptr, 0.f,
                              nullptr)) {
      mlx_array_set_(*res, std::move(*y));
      if (used_native) *used_native = true;
    } else {
      mlx_array_set_(*res, mx::quantized_matmul(xa, wa, sa, ba, transpose, group_size, bits,
                                                "affine", stream));
    }
  });
}

extern "C" __attribute__((visibility("default"))) int mlxrs_quantized_matmul_fused(
    mlx_array* res, const mlx_array x, const mlx_array w, const mlx_array scales,
    const mlx_array biases, int group_size, int bits, const mlx_array norm_weight,
    float norm_eps, const mlx_array residual, const mlx_stream s, bool* used_native) {
  *used_native = false;
  return mlxrs_glue::guarded([&] {
    const mx::array* nw = mlxrs_glue::has(norm_weight) ? &mlx_array_get_(norm_weight) : nullptr;
    const mx::array* r = mlxrs_glue::has(residual) ? &mlx_array_get_(residual) : nullptr;
    if (auto y = build_native(mlx_array_get_(x), mlx_array_get_(w), mlx_array_get_(scales),
                              mlx_array_get_(biases), true, group_size, bits,
                              mlx_stream_get_(s), nw, norm_eps, r)) {
      mlx_array_set_(*res, std::move(*y));
      *used_native = true;
    }
  });
}

extern "C" __attribute__((visibility("default"))) uint64_t mlxrs_qmm_native_count(void) {
  return g_native_count.load(std::memory_order_relaxed);
}
