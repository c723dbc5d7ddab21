// Helpers shared by the MLX-facing glue units (qmm_glue.cpp, ops_glue.cpp). Needs the MLX
// headers; never include it from a kernel unit.
#pragma once
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "ops_cpu.h"
#include "mlx/ops.h"
#include "mlx/c/array.h"
#include "mlx/c/error.h"
#include "qmm_blocks.h"
#include "qmm_driver.h"

namespace mlxrs_glue {

namespace mx = mlx::core;

// Where an input's elements are, captured in eval_cpu (shape and strides are known there; the
// contents only once the dispatched task runs). Lets a kernel read an input that is a view
// (transposed, sliced, broadcast) without adding a Contiguous node to every graph.
struct Strided {
  const char* data = nullptr;
  size_t elem = 0;
  bool contiguous = true;
  std::vector<int64_t> shape, strides;  // strides in elements

  explicit Strided(const mx::array& a)
      : data(a.data<char>()), elem(a.itemsize()), contiguous(a.flags().row_contiguous) {
    if (!contiguous) {
      shape.assign(a.shape().begin(), a.shape().end());
      strides.assign(a.strides().begin(), a.strides().end());
    }
  }

  // The elements in row-major order: the buffer itself, or a copy gathered into `scratch`.
  const void* row_major(std::vector<char>& scratch) const {
    if (contiguous) return data;
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    scratch.resize(n * elem);
    if (n) gather(0, data, scratch.data());
    return scratch.data();
  }

 private:
  char* gather(size_t axis, const char* src, char* dst) const {
    if (axis + 1 == shape.size()) {
      for (int64_t i = 0; i < shape[axis]; ++i, dst += elem)
        std::memcpy(dst, src + i * strides[axis] * int64_t(elem), elem);
      return dst;
    }
    for (int64_t i = 0; i < shape[axis]; ++i)
      dst = gather(axis + 1, src + i * strides[axis] * int64_t(elem), dst);
    return dst;
  }
};

// An input a kernel reads in place: evaluated row-contiguous arrays (weights, usually) as they
// are; anything else gets a Contiguous node, which shares the buffer when it turns out to be
// contiguous.
inline mx::array ensure_contiguous(const mx::array& a, const mx::Stream& s) {
  if (a.is_available() && a.flags().row_contiguous) return a;
  return mx::contiguous(a, false, s);
}

inline std::string shape_str(const mx::Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// The kernels' element-type code of an MLX dtype (-1: not a float type they take).
inline int dt_code(mx::Dtype d) {
  if (d == mx::float32) return mlxrs_qmm::F32;
  if (d == mx::float16) return mlxrs_qmm::F16;
  if (d == mx::bfloat16) return mlxrs_qmm::BF16;
  return -1;
}

inline bool float_dtype(mx::Dtype d) { return dt_code(d) >= 0; }

// Whether k and v caches are ones the native attention takes: both f32 or both f16.
inline bool kv_cache_dtypes(const mx::array& k, const mx::array& v) {
  return k.dtype() == v.dtype() && (k.dtype() == mx::float32 || k.dtype() == mx::float16);
}

// Whether a handle holds an array (mlx-c's null handle, ctx == NULL, means "absent").
inline bool has(const mlx_array a) { return a.ctx != nullptr; }

// Whether the native quantized matmul supports these packed weights' bits, group size and
// dtypes (uint32 codes; scales and biases of one float dtype). Shapes are checked apart.
inline bool qmm_weights_supported(const mx::array& w, const mx::array& scales,
                                  const mx::array& biases, int group_size, int bits) {
  return mlxrs_qmm::supported(bits, group_size) && w.dtype() == mx::uint32 &&
         float_dtype(scales.dtype()) && biases.dtype() == scales.dtype();
}

// Whether the native quantized matmul takes x @ dequantize(w, scales, biases)^T (affine);
// everything else goes to MLX's op.
inline bool qmm_native_ok(const mx::array& x, const mx::array& w, const mx::array& scales,
                          const mx::array& biases, bool transpose, int group_size, int bits,
                          const mx::Stream& s) {
  if (!mlxrs_qmm::native_isa_available() || s.device != mx::Device::cpu || !transpose ||
      !qmm_weights_supported(w, scales, biases, group_size, bits))
    return false;
  if (w.ndim() != 2 || x.ndim() < 1 || !float_dtype(x.dtype())) return false;
  const int N = w.shape(0), K = w.shape(1) * 32 / bits;
  if (x.shape(-1) != K || K % group_size != 0 || N == 0 || x.size() == 0) return false;
  const mx::Shape sb{N, K / group_size};
  return scales.shape() == sb && biases.shape() == sb;
}

// The runs of a matrix of GGUF blocks as stored (qmm_driver.h's Call::parts): `parts` runs of
// rows[i] rows in format[i]; parts == 0 for MLX's affine layout.
struct BlockParts {
  int parts = 0;
  int format[mlxrs_qmm::kMaxParts] = {};
  int rows[mlxrs_qmm::kMaxParts] = {};
  bool operator==(const BlockParts&) const = default;

  // Reads and checks a C description (formats and row counts of n runs).
  static BlockParts from(const int* formats, const int* row_counts, int n) {
    if (n < 1 || n > mlxrs_qmm::kMaxParts || !formats || !row_counts)
      throw std::invalid_argument("block_matmul: 1 to " + std::to_string(mlxrs_qmm::kMaxParts) +
                                  " runs of blocks, got " + std::to_string(n));
    BlockParts b;
    b.parts = n;
    for (int i = 0; i < n; ++i) {
      if (mlxrs_qmm::block_bytes(formats[i]) == 0)
        throw std::invalid_argument("block_matmul: unknown block format " +
                                    std::to_string(formats[i]));
      if (row_counts[i] <= 0)
        throw std::invalid_argument("block_matmul: a run of blocks needs rows, got " +
                                    std::to_string(row_counts[i]));
      b.format[i] = formats[i];
      b.rows[i] = row_counts[i];
    }
    return b;
  }
  int64_t total_rows() const {
    int64_t n = 0;
    for (int i = 0; i < parts; ++i) n += rows[i];
    return n;
  }
  // Rows of the matrix whose weight is w: the runs' total, or an affine weight's first axis
  // (0 when it is not 2-D).
  int64_t rows_of(const mx::array& w) const {
    return parts ? total_rows() : w.ndim() == 2 ? w.shape(0) : 0;
  }
  // Values every row's length must be a multiple of: 256 when a run is a K-quant, else 32.
  int unit() const {
    int u = mlxrs_qmm::kSmallBlockValues;
    for (int i = 0; i < parts; ++i)
      if (mlxrs_qmm::block_values(format[i]) > u) u = mlxrs_qmm::block_values(format[i]);
    return u;
  }
  // Bytes of the runs for rows of K values.
  int64_t bytes(int K) const {
    int64_t total = 0;
    for (int i = 0; i < parts; ++i)
      total += int64_t(rows[i]) * int64_t(mlxrs_qmm::row_bytes(format[i], K));
    return total;
  }
  // K for the weight's byte count (0 when it matches no multiple of unit()).
  int cols(const mx::array& w) const {
    const int u = unit();
    const int64_t per_unit = bytes(u);
    if (per_unit <= 0 || int64_t(w.nbytes()) % per_unit != 0) return 0;
    const int64_t k = int64_t(w.nbytes()) / per_unit * u;
    return k <= (int64_t(1) << 30) ? int(k) : 0;
  }
  void set(mlxrs_qmm::Call& c) const {
    c.parts = parts;
    for (int i = 0; i < parts; ++i) {
      c.part_format[i] = format[i];
      c.part_rows[i] = rows[i];
    }
  }
  // Throws std::invalid_argument unless w (uint8, the runs' bytes for rows of K values) fits.
  void check(const char* op, const mx::array& w, int K) const {
    if (w.dtype() != mx::uint8 || w.ndim() < 1)
      throw std::invalid_argument(std::string(op) + ": GGUF blocks must be a uint8 array");
    if (K <= 0 || K % unit() != 0 || int64_t(w.nbytes()) != bytes(K))
      throw std::invalid_argument(std::string(op) + ": " + std::to_string(w.nbytes()) +
                                  " bytes of blocks do not hold " +
                                  std::to_string(total_rows()) + " rows of " +
                                  std::to_string(K) + " values");
  }
};

// The KV caches of a primitive that writes new positions in place (its outputs 1 and 2 alias
// inputs 1 and 2). Set up in eval_cpu: a cache whose buffer is a plain row-major array is
// shared with the output; a broadcast or strided one, or the value cache when both inputs are
// the same buffer, gets a fresh buffer that the task fills first (gather()).
struct InPlaceCaches {
  Strided k_in, v_in;
  void *k = nullptr, *v = nullptr;
  size_t bytes = 0;
  bool gather_k = false, gather_v = false;
  bool half = false;  // IEEE half-precision caches (f16 bits), else f32

  InPlaceCaches(const mx::array& k_cache, const mx::array& v_cache, mx::array& k_out,
                mx::array& v_out)
      : k_in(k_cache), v_in(v_cache) {
    const bool shared = k_cache.data_shared_ptr() == v_cache.data_shared_ptr();
    gather_k = !k_cache.flags().row_contiguous;
    gather_v = !v_cache.flags().row_contiguous || shared;
    auto place = [](const mx::array& in, mx::array& out, bool fresh) {
      if (fresh)
        out.set_data(mx::allocator::malloc(out.nbytes()));
      else
        out.copy_shared_buffer(in);
    };
    place(k_cache, k_out, gather_k);
    place(v_cache, v_out, gather_v);
    k = k_out.data<void>();
    v = v_out.data<void>();
    bytes = k_out.nbytes();
    half = k_cache.dtype() == mx::float16;
  }

  // mlxrs_ops::cached_attention over these caches, f32 or half as they are.
  void attend(const mlxrs_ops::CachedAttention& a, const float* qkv, float* out) const {
    if (half)
      mlxrs_ops::cached_attention(a, qkv, static_cast<uint16_t*>(k), static_cast<uint16_t*>(v),
                                  out);
    else
      mlxrs_ops::cached_attention(a, qkv, static_cast<float*>(k), static_cast<float*>(v), out);
  }

  // In the task, before the kernel writes: copies the caches that got fresh buffers.
  void gather(std::vector<char>& scratch) const {
    if (gather_k) std::memcpy(k, k_in.row_major(scratch), bytes);
    if (gather_v) std::memcpy(v, v_in.row_major(scratch), bytes);
  }
};

// Runs `f` and turns a C++ exception into mlx-c's convention: report through the installed
// error handler and return 1.
template <typename F>
int guarded(F&& f) noexcept {
  try {
    std::forward<F>(f)();
    return 0;
  } catch (std::exception& e) {
    mlx_error("%s", e.what());
    return 1;
  }
}

}  // namespace mlxrs_glue
