// Host access to an evaluated array's memory without queueing work (mlxrs_array_host_data,
// mlxrs_array_is_available; declared in array_host.h). Reading an array through an op on it (a contiguous copy, a
// bit-cast view) evaluates that op on the array's stream, behind everything already queued
// there: after `async_eval` of the next decode step, reading this step's token that way waits
// for the next step as well, and the pipeline is lost. Waiting for the array itself
// (`array::wait`, which MLX's `eval` does for an already scheduled array) and reading its
// buffer in place does not.
#include <stdexcept>

#include "glue_common.h"
#include "mlx/array.h"
#include "mlx/c/private/array.h"

extern "C" __attribute__((visibility("default"))) int mlxrs_array_host_data(
    const void** data, bool* row_contiguous, const mlx_array arr) {
  *data = nullptr;
  *row_contiguous = false;
  return mlxrs_glue::guarded([&] {
    const auto& a = mlx_array_get_(arr);
    if (!a.is_available())
      throw std::invalid_argument("mlxrs_array_host_data: the array is not evaluated");
    *row_contiguous = a.flags().row_contiguous;
    *data = a.data<void>();
  });
}

extern "C" __attribute__((visibility("default"))) bool mlxrs_array_is_available(
    const mlx_array arr) {
  return mlx_array_get_(arr).is_available();
}
