// Between the MLX-facing glue (qmm_glue.cpp) and the driver (qmm_driver.cpp).
#pragma once
#include "qmm_internal.h"

namespace mlxrs_qmm {

// Most runs of block formats in one Call.
constexpr int kMaxParts = 4;

struct Call {
  const void* x;
  int x_dt;
  const uint32_t* w;
  const void* scales;
  const void* biases;
  int sb_dt;
  void* y;
  int y_dt;
  int M, N, K, bits, group;
  // Optional prologue: x is first RMS-normalised per row, x / sqrt(mean(x^2) + norm_eps) *
  // norm_w (norm_w: K floats).
  const float* norm_w = nullptr;
  float norm_eps = 0.f;
  // Optional epilogue: y += residual ([M, N], dtype residual_dt).
  const void* residual = nullptr;
  int residual_dt = 0;
  // The weights' layout: MLX's affine one (parts = 0: w, scales, biases, bits, group as
  // above), or GGUF blocks as stored (qmm_blocks.h): the N rows are `parts` consecutive runs,
  // run i being part_rows[i] rows in format part_format[i], their bytes one after the other
  // from w; scales, biases, bits and group are not read. Several runs are a fused projection
  // whose parts were stored in different formats (q and k in Q4_K, v in Q6_K).
  int parts = 0;
  int part_format[kMaxParts] = {};
  int part_rows[kMaxParts] = {};
};

// bits 4 or 8 and group 32, 64 or 128.
bool supported(int bits, int group);
// False on CPUs other than x86-64: the glue then always uses MLX's op.
bool native_isa_available();
// y = x @ dequantize(w)^T on row-major buffers. Never throws.
void compute(const Call& c) noexcept;

}  // namespace mlxrs_qmm
