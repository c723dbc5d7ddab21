/* Reading an evaluated array in place (mlx-sys/kernels/array_glue.cpp). */
#ifndef MLXRS_ARRAY_HOST_H
#define MLXRS_ARRAY_HOST_H

#include <stdbool.h>

#include "mlx/c/array.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The data pointer of an evaluated array (its first element, after any offset) and whether its
 * elements lie in row-major order there. Queues nothing on any stream. Returns 1 after
 * reporting through mlx-c's error handler when the array is not evaluated (nothing is written
 * but *data = NULL, *row_contiguous = false). */
int mlxrs_array_host_data(const void** data, bool* row_contiguous, const mlx_array arr);

/* Whether the array's value is computed (evaluated, or a constant); never blocks. */
bool mlxrs_array_is_available(const mlx_array arr);

#ifdef __cplusplus
}
#endif

#endif
