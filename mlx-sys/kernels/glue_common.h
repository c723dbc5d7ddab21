// Helpers shared by the MLX-facing glue units (qmm_glue.cpp, ops_glue.cpp). Needs the MLX
// headers; never include it from a kernel unit.
#pragma once
#include <cstdint>
#include <cstring>
#include <exception>
#include <utility>
#include <vector>

#include "mlx/array.h"
#include "mlx/ops.h"
#include "mlx/c/error.h"

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
