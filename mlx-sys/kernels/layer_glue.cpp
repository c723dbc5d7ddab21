// MLX-facing glue of mlxrs_decoder_stack (ops.h): consecutive pre-norm decoder layers as one
// primitive. Its CPU task runs, on the stream's thread and the kernels' pool, exactly the
// sequence the model composes from the per-op primitives (fused quantized projections with
// their norm prologues and residual epilogues, cached attention, SwiGLU or GeGLU, the optional
// output norms), layer after layer,
// so the numbers are the same; what it saves is MLX's per-primitive scheduling (five
// primitives per layer, then one per layer) and the graph-building work of the calling thread,
// which on a small machine compete with the kernels for the cores. Compiled like the other
// glue units (C++20, MLX headers, no instruction-set flags).
#include <algorithm>
#include <cmath>
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
  mlxrs_glue::BlockParts blocks;  // parts = 0: MLX's affine layout
  bool operator==(const ProjParams&) const = default;

  static ProjParams from(const mlxrs_quantized_projection& p) {
    if (p.block_parts == 0) return {p.group_size, p.bits, {}};
    return {0, 0, mlxrs_glue::BlockParts::from(p.block_formats, p.block_rows, p.block_parts)};
  }
  // The values per row (K) of weight w.
  int cols(const mx::array& w) const {
    return blocks.parts ? blocks.cols(w) : w.shape(1) * 32 / bits;
  }
};

struct LayerParams {
  mlxrs_glue::AttentionParams att;
  float input_norm_eps, attention_out_norm_eps, pre_mlp_norm_eps, mlp_out_norm_eps;
  ProjParams qkv, o, gate_up, down;
  bool qkv_bias, attention_out_norm, mlp_out_norm;
  int activation;  // MLXRS_ACTIVATION_*
  // Independent sequences with caches of their own (1: the B rows share one [B, ...] cache).
  int seqs;
  bool operator==(const LayerParams&) const = default;

  // Inputs of this layer: the fixed ones, then the optional ones present, in the order qkv
  // bias, q_norm, k_norm, attention_out_norm, mlp_out_norm, then the caches (k, v) of
  // sequences 1 .. seqs - 1 (sequence 0's are kKCache, kVCache).
  size_t optional_end() const {
    return kOptional + qkv_bias + att.q_norm + att.k_norm + attention_out_norm + mlp_out_norm;
  }
  size_t inputs() const { return optional_end() + 2 * size_t(seqs - 1); }
  // Where sequence b's key cache is (its value cache follows).
  size_t k_cache(int b) const { return b == 0 ? kKCache : optional_end() + 2 * size_t(b - 1); }
  size_t v_cache(int b) const { return k_cache(b) + 1; }

  // Positions within a layer's inputs (the stack's inputs are x, then each layer's).
  enum Input : size_t {
    kKCache,
    kVCache,
    kInvFreq,
    kInputNorm,
    kPreMlpNorm,
    kQkv,                 // weight, scales, biases
    kO = kQkv + 3,        // same
    kGateUp = kO + 3,     // same
    kDown = kGateUp + 3,  // same
    kOptional = kDown + 3,
  };
};

// A stack: its layers, and optionally a quantized embedding table in front (the input is then
// token ids [B, L], int32 or uint32) and a head behind (final RMS norm and a quantized
// projection to the logits, which are then the output).
struct StackParams {
  std::vector<LayerParams> layers;
  bool embed;
  ProjParams embed_q;
  float embed_scale;
  bool head;
  float head_norm_eps;
  ProjParams head_q;
  float head_softcap;
  // The position of each sequence's first new token: one entry (the B rows share the caches),
  // or one per row (independent sequences of one token each).
  std::vector<int> offsets;
  bool operator==(const StackParams&) const = default;

  // Inputs: x (or ids), the table (weight, scales, biases), each layer's, the head's (norm,
  // weight, scales, biases).
  size_t first_layer() const { return embed ? 4 : 1; }
  size_t head_input() const {
    size_t i = first_layer();
    for (const auto& l : layers) i += l.inputs();
    return i;
  }
};

// A quantized table [rows, K] in MLX's affine layout (codes packed little-end first into
// uint32 words, one scale and bias per `group` codes), read in place in the task (the
// encoder keeps its inputs' buffers alive until the task has run).
struct TableView {
  const uint8_t* w = nullptr;
  const void *scales = nullptr, *biases = nullptr;
  mx::Dtype sb_dtype = mx::float32;
  uint32_t rows = 0;
  int K = 0, bits = 0, group = 0;
  int format = 0;  // a GGUF block format (one run), or 0: MLX's affine layout

  // Row `id` (< rows) as K floats.
  void dequantize_row(uint32_t id, float* out) const {
    if (format != 0) {
      mlxrs_qmm::dequantize_row(format, w + size_t(id) * mlxrs_qmm::row_bytes(format, K), K, out);
      return;
    }
    const uint8_t* row = w + size_t(id) * size_t(K) * bits / 8;
    const size_t ng = size_t(K / group), g0 = size_t(id) * ng;
    auto sb = [&](const void* p, size_t i) -> float {
      if (sb_dtype == mx::float16)
        return static_cast<float>(static_cast<const mx::float16_t*>(p)[i]);
      if (sb_dtype == mx::bfloat16)
        return static_cast<float>(static_cast<const mx::bfloat16_t*>(p)[i]);
      return static_cast<const float*>(p)[i];
    };
    for (size_t g = 0; g < ng; ++g) {
      const float s = sb(scales, g0 + g), b = sb(biases, g0 + g);
      for (size_t e = g * group; e < (g + 1) * size_t(group); ++e) {
        const unsigned code = bits == 8 ? row[e] : (row[e / 2] >> (4 * (e % 2))) & 0xF;
        out[e] = float(code) * s + b;
      }
    }
  }
};

// What one layer's part of the task needs: the kernels' arguments (pointers into the inputs
// and outputs, valid while the task holds them) and the sizes of its intermediates.
struct LayerTask {
  mlxrs_qmm::Call qkv, o, gate_up, down;
  const float* bias;
  // One per sequence with caches of its own (row b of the step is sequence b when several).
  std::vector<mlxrs_ops::CachedAttention> attention;
  std::vector<mlxrs_glue::InPlaceCaches> caches;
  int n_qkv, attn_width, inter;
  const float* attention_out_norm;  // or null
  float attention_out_norm_eps;
  const float* mlp_out_norm;  // or null
  float mlp_out_norm_eps;
  int activation;

  size_t scratch_floats(size_t m, int hidden) const {
    return m * (n_qkv + attn_width + hidden + 3 * size_t(inter));
  }

  // y = layer(x) for m rows (x and y row-major [m, hidden], distinct), on the calling thread
  // and the kernels' pool: the per-op primitives' sequence.
  void run(const float* x, float* y, size_t m, int hidden, float* scratch,
           std::vector<char>& cache_scratch) {
    for (const auto& c : caches) c.gather(cache_scratch);
    float* qkv_y = scratch;
    float* attn_y = qkv_y + m * n_qkv;
    float* h = attn_y + m * attn_width;
    float* gate_up_y = h + m * hidden;
    float* act = gate_up_y + m * 2 * inter;
    // h = x + [rms_norm](o_proj(attention(qkv_proj(rms_norm(x)) [+ bias])))
    qkv.x = x;
    qkv.y = qkv_y;
    mlxrs_qmm::compute(qkv);
    if (bias)
      for (size_t r = 0; r < m; ++r)
        for (int i = 0; i < n_qkv; ++i) qkv_y[r * n_qkv + i] += bias[i];
    if (attention.size() == 1) {
      caches[0].attend(attention[0], qkv_y, attn_y);
    } else {
      for (size_t b = 0; b < attention.size(); ++b)
        caches[b].attend(attention[b], qkv_y + b * n_qkv, attn_y + b * attn_width);
    }
    o.x = attn_y;
    o.y = h;
    if (attention_out_norm) {
      o.residual = nullptr;
      mlxrs_qmm::compute(o);
      mlxrs_ops::rms_norm_residual(h, attention_out_norm, attention_out_norm_eps, x, h, m,
                                   hidden);
    } else {
      o.residual = x;
      mlxrs_qmm::compute(o);
    }
    // y = h + [rms_norm](down_proj(act(gate) * up)), [gate | up] = gate_up_proj(rms_norm(h))
    gate_up.x = h;
    gate_up.y = gate_up_y;
    mlxrs_qmm::compute(gate_up);
    if (activation == MLXRS_ACTIVATION_GELU_TANH)
      mlxrs_ops::gelu_tanh_glu(gate_up_y, act, m, inter);
    else
      mlxrs_ops::swiglu(gate_up_y, act, m, inter);
    down.x = act;
    down.y = y;
    if (mlp_out_norm) {
      down.residual = nullptr;
      mlxrs_qmm::compute(down);
      mlxrs_ops::rms_norm_residual(y, mlp_out_norm, mlp_out_norm_eps, h, y, m, hidden);
    } else {
      down.residual = h;
      mlxrs_qmm::compute(down);
    }
  }
};

// Consecutive decoder layers as one primitive (one layer is a stack of one). Inputs and
// outputs: see StackParams; the outputs after the first are each layer's k_cache and v_cache
// (written in place).
class NativeDecoderStack : public mx::Primitive {
 public:
  NativeDecoderStack(mx::Stream s, StackParams p) : mx::Primitive(s), p_(std::move(p)) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto& x = inputs[0];
    outputs[0].set_data(mx::allocator::malloc(outputs[0].nbytes()));
    const int B = x.shape(0), L = x.shape(1), M = B * L;
    const int hidden = p_.embed ? p_.embed_q.cols(inputs[1]) : x.shape(2);
    std::vector<LayerTask> tasks;
    tasks.reserve(p_.layers.size());
    size_t base = p_.first_layer();
    size_t out = 1;  // the next cache output
    for (size_t l = 0; l < p_.layers.size(); ++l) {
      const LayerParams& lp = p_.layers[l];
      auto in = [&](size_t i) -> const mx::array& { return inputs[base + i]; };
      const auto& att = lp.att;
      const int n_qkv = (att.heads + 2 * att.kv_heads) * att.head_dim;
      const int attn_width = att.heads * att.head_dim;
      const int inter = lp.down.cols(in(LayerParams::kDown));
      auto proj = [&](size_t at, ProjParams pp, int N, int K) {
        return projection_call(inputs, base + at, pp, M, N, K);
      };
      mlxrs_qmm::Call qkv = proj(LayerParams::kQkv, lp.qkv, n_qkv, hidden);
      qkv.norm_w = in(LayerParams::kInputNorm).data<float>();
      qkv.norm_eps = lp.input_norm_eps;
      mlxrs_qmm::Call gate_up = proj(LayerParams::kGateUp, lp.gate_up, 2 * inter, hidden);
      gate_up.norm_w = in(LayerParams::kPreMlpNorm).data<float>();
      gate_up.norm_eps = lp.pre_mlp_norm_eps;
      size_t next = LayerParams::kOptional;
      const float* bias = lp.qkv_bias ? in(next++).data<float>() : nullptr;
      const mx::array* q_norm = att.q_norm ? &in(next++) : nullptr;
      const mx::array* k_norm = att.k_norm ? &in(next++) : nullptr;
      const float* attention_out_norm = lp.attention_out_norm ? in(next++).data<float>() : nullptr;
      const float* mlp_out_norm = lp.mlp_out_norm ? in(next++).data<float>() : nullptr;
      std::vector<mlxrs_ops::CachedAttention> attention;
      std::vector<mlxrs_glue::InPlaceCaches> caches;
      for (int b = 0; b < lp.seqs; ++b) {
        const mlxrs_glue::AttentionInputs ai{in(lp.k_cache(b)), in(LayerParams::kInvFreq), q_norm,
                                             k_norm};
        // Several sequences: one token each, at its own position.
        auto args = lp.seqs == 1 ? att.kernel_args(B, L, ai) : att.kernel_args(1, 1, ai);
        args.offset = p_.offsets[size_t(b)];
        attention.push_back(args);
        caches.emplace_back(in(lp.k_cache(b)), in(lp.v_cache(b)), outputs[out], outputs[out + 1]);
        out += 2;
      }
      tasks.push_back(LayerTask{
          qkv,
          proj(LayerParams::kO, lp.o, hidden, attn_width),
          gate_up,
          proj(LayerParams::kDown, lp.down, hidden, inter),
          bias,
          std::move(attention),
          std::move(caches),
          n_qkv,
          attn_width,
          inter,
          attention_out_norm,
          lp.attention_out_norm_eps,
          mlp_out_norm,
          lp.mlp_out_norm_eps,
          lp.activation});
      base += lp.inputs();
    }
    mlxrs_qmm::Call head{};
    if (p_.head) {
      const size_t h = p_.head_input();
      head = projection_call(inputs, h + 1, p_.head_q, M, outputs[0].shape(2), hidden);
      head.norm_w = inputs[h].data<float>();
      head.norm_eps = p_.head_norm_eps;
    }
    auto& enc = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) enc.set_input_array(a);
    for (auto& a : outputs) enc.set_output_array(a);

    const mlxrs_glue::Strided xs(x);
    float* y = outputs[0].data<float>();
    const bool embed = p_.embed, has_head = p_.head;
    const float embed_scale = p_.embed_scale, head_softcap = p_.head_softcap;
    const size_t logits = has_head ? size_t(M) * outputs[0].shape(2) : 0;
    TableView table;
    if (embed)
      table = {reinterpret_cast<const uint8_t*>(inputs[1].data<uint32_t>()),
               inputs[2].data<void>(),
               inputs[3].data<void>(),
               inputs[2].dtype(),
               uint32_t(inputs[1].shape(0)),
               hidden,
               p_.embed_q.bits,
               p_.embed_q.group,
               p_.embed_q.blocks.parts ? p_.embed_q.blocks.format[0] : 0};
    enc.dispatch([=, tasks = std::move(tasks)]() mutable {
      std::vector<char> cache_scratch, x_scratch;
      const size_t m = size_t(M);
      size_t scratch = 0;
      for (const auto& t : tasks) scratch = std::max(scratch, t.scratch_floats(m, hidden));
      // Hidden states between layers (and before the head) alternate between two buffers;
      // embedded tokens get one of their own.
      const size_t between = tasks.size() > 1 || has_head ? m * hidden : 0;
      std::vector<float> buf(scratch + 2 * between + (embed ? m * hidden : 0));
      const float* xin;
      if (embed) {
        float* e = buf.data() + scratch + 2 * between;
        const auto* ids = static_cast<const uint32_t*>(xs.row_major(x_scratch));
        for (size_t r = 0; r < m; ++r) {
          float* row = e + r * hidden;
          if (ids[r] < table.rows) {  // int32 ids below 0 read as large uint32: out of range
            table.dequantize_row(ids[r], row);
            if (embed_scale != 1.0f)
              for (int i = 0; i < hidden; ++i) row[i] *= embed_scale;
          } else {
            std::fill(row, row + hidden, std::nanf(""));
          }
        }
        xin = e;
      } else {
        xin = static_cast<const float*>(xs.row_major(x_scratch));
      }
      for (size_t l = 0; l < tasks.size(); ++l) {
        const bool last = l + 1 == tasks.size();
        float* out = last && !has_head ? y : buf.data() + scratch + (l % 2) * between;
        tasks[l].run(xin, out, m, hidden, buf.data(), cache_scratch);
        xin = out;
      }
      if (has_head) {
        head.x = xin;
        head.y = y;
        mlxrs_qmm::compute(head);
        if (head_softcap > 0.f) mlxrs_ops::softcap(y, logits, head_softcap);
      }
    });
  }
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error("NativeDecoderStack has no GPU implementation");
  }
  const char* name() const override { return "NativeDecoderStack"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto* o = dynamic_cast<const NativeDecoderStack*>(&other);
    return o && o->p_ == p_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return stack_shapes(p_, inputs);
  }

  // Calls f on each layer's k and v caches, sequence after sequence: the outputs' order.
  template <typename F>
  static void each_cache(const StackParams& p, const std::vector<mx::array>& inputs, F f) {
    size_t base = p.first_layer();
    for (const auto& lp : p.layers) {
      for (int b = 0; b < lp.seqs; ++b) {
        f(inputs[base + lp.k_cache(b)]);
        f(inputs[base + lp.v_cache(b)]);
      }
      base += lp.inputs();
    }
  }

  // The output dtypes: f32, then the caches' own (f32 or f16).
  static std::vector<mx::Dtype> stack_dtypes(const StackParams& p,
                                             const std::vector<mx::array>& inputs) {
    std::vector<mx::Dtype> dtypes{mx::float32};
    each_cache(p, inputs, [&](const mx::array& c) { dtypes.push_back(c.dtype()); });
    return dtypes;
  }

  // The output shapes for these inputs: [B, L, hidden or vocab], then the caches'.
  static std::vector<mx::Shape> stack_shapes(const StackParams& p,
                                             const std::vector<mx::array>& inputs) {
    const auto& x = inputs[0];
    const int width = p.head ? int(p.head_q.blocks.rows_of(inputs[p.head_input() + 1]))
                      : p.embed ? p.embed_q.cols(inputs[1])
                                : x.shape(2);
    std::vector<mx::Shape> shapes{{x.shape(0), x.shape(1), width}};
    each_cache(p, inputs, [&](const mx::array& c) { shapes.push_back(c.shape()); });
    return shapes;
  }

 private:
  // The kernel call for the projection whose weight, scales and biases are inputs[at ..].
  static mlxrs_qmm::Call projection_call(const std::vector<mx::array>& inputs, size_t at,
                                         ProjParams pp, int M, int N, int K) {
    mlxrs_qmm::Call c{nullptr,
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
    pp.blocks.set(c);
    return c;
  }

  StackParams p_;
};

// Whether the kernel takes projection `p` as an [N, K] matrix: false for what it does not
// support (bits, group size, dtypes); std::invalid_argument for shapes that do not fit.
bool projection_ok(const char* what, const mlxrs_quantized_projection& p, int N, int K) {
  const auto& w = mlx_array_get_(p.weight);
  if (p.block_parts != 0) {
    const auto blocks = mlxrs_glue::BlockParts::from(p.block_formats, p.block_rows, p.block_parts);
    if (blocks.total_rows() != N)
      throw std::invalid_argument(std::string("decoder_layer: ") + what + " has " +
                                  std::to_string(blocks.total_rows()) + " rows of blocks, needs " +
                                  std::to_string(N));
    blocks.check((std::string("decoder_layer: ") + what).c_str(), w, K);
    return true;
  }
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

// Checks layer `w` against x [B, L, hidden] and its attention parameters (at position
// `offset`), and appends its inputs in LayerParams::Input order. Returns false (nothing
// appended that matters: the whole call is then declined) when the native kernels do not take
// it; throws std::invalid_argument for shapes or parameters that do not fit.
bool add_layer(std::vector<mx::array>& inputs, std::vector<LayerParams>& params,
               const mlxrs_decoder_layer_weights& w, int B, int L, int hidden,
               const std::vector<int>& offsets, const mlx_array* more_caches,
               const mx::Stream& stream) {
  const int seqs = int(offsets.size());
  const size_t base = inputs.size();
  for (const auto& a : {w.k_cache, w.v_cache, w.inv_freq, w.input_norm, w.pre_mlp_norm})
    inputs.push_back(mlx_array_get_(a));
  for (const auto* p : {&w.qkv, &w.o, &w.gate_up, &w.down})
    for (const auto& a : {p->weight, p->scales, p->biases}) inputs.push_back(mlx_array_get_(a));
  for (const auto* a : {&w.qkv_bias, &w.q_norm, &w.k_norm, &w.attention_out_norm,
                        &w.mlp_out_norm})
    if (has(*a)) inputs.push_back(mlx_array_get_(*a));
  // The other sequences' caches, before any pointer into `inputs` is taken.
  const size_t optional_end = inputs.size() - base;
  for (int b = 1; b < seqs; ++b)
    for (int kv = 0; kv < 2; ++kv) inputs.push_back(mlx_array_get_(more_caches[2 * (b - 1) + kv]));
  auto in = [&](size_t i) -> mx::array& { return inputs[base + i]; };
  for (size_t i = 0; base + i < inputs.size(); ++i) {
    const bool cache = i == LayerParams::kKCache || i == LayerParams::kVCache || i >= optional_end;
    if (!cache && (i < LayerParams::kQkv || i >= LayerParams::kOptional) &&
        in(i).dtype() != mx::float32)
      return false;
  }

  mlxrs_attention_params ap = w.attention;
  ap.offset = offsets[0];
  if (ap.kv_mode != 0 || ap.value_norm != 0)
    throw std::invalid_argument(
        "decoder_layer: keys-as-values, shared caches and value norms are taken by "
        "cached_attention only");
  const int n_qkv = (ap.heads + 2 * ap.kv_heads) * ap.head_dim;
  size_t opt = LayerParams::kOptional + has(w.qkv_bias);
  const mx::array* qn = has(w.q_norm) ? &in(opt++) : nullptr;
  const mx::array* kn = has(w.k_norm) ? &in(opt++) : nullptr;
  for (int b = 0; b < seqs; ++b) {
    const size_t k = b == 0 ? size_t(LayerParams::kKCache) : optional_end + 2 * size_t(b - 1);
    ap.offset = offsets[size_t(b)];
    const mx::Shape qkv = seqs == 1 ? mx::Shape{B, L, n_qkv} : mx::Shape{1, 1, n_qkv};
    mlxrs_glue::check_attention("decoder_layer", qkv, in(k), in(k + 1), in(LayerParams::kInvFreq),
                                qn, kn, ap);
    // Every sequence's caches f32, or every one f16 (the layer's kernels take one kind).
    if (!mlxrs_glue::kv_cache_dtypes(in(k), in(k + 1)) ||
        in(k).dtype() != in(LayerParams::kKCache).dtype())
      return false;
  }
  ap.offset = offsets[0];
  std::vector<size_t> norms{LayerParams::kInputNorm, LayerParams::kPreMlpNorm};
  for (size_t i = opt; i < optional_end; ++i) norms.push_back(i);  // the output norms
  for (size_t i : norms)
    if (in(i).shape() != mx::Shape{hidden})
      throw std::invalid_argument("decoder_layer: the norm weights must be [" +
                                  std::to_string(hidden) + "], got " +
                                  shape_str(in(i).shape()));
  if (has(w.qkv_bias) && in(LayerParams::kOptional).shape() != mx::Shape{n_qkv})
    throw std::invalid_argument("decoder_layer: the qkv bias must be [" +
                                std::to_string(n_qkv) + "], got " +
                                shape_str(in(LayerParams::kOptional).shape()));
  if (w.activation != MLXRS_ACTIVATION_SILU && w.activation != MLXRS_ACTIVATION_GELU_TANH)
    throw std::invalid_argument("decoder_layer: unknown activation " +
                                std::to_string(int(w.activation)));
  const auto& gw = mlx_array_get_(w.gate_up.weight);
  const int inter2 = int(ProjParams::from(w.gate_up).blocks.rows_of(gw));
  if (inter2 % 2 != 0 || inter2 == 0)
    throw std::invalid_argument("decoder_layer: the gate/up projection must have an even, "
                                "positive number of rows ([gate | up]), got " +
                                shape_str(gw.shape()));
  const int inter = inter2 / 2;
  if (!projection_ok("qkv", w.qkv, n_qkv, hidden) ||
      !projection_ok("o", w.o, hidden, ap.heads * ap.head_dim) ||
      !projection_ok("gate_up", w.gate_up, inter2, hidden) ||
      !projection_ok("down", w.down, hidden, inter))
    return false;
  // Read in place: make sure everything but the caches is row-major.
  for (size_t i = LayerParams::kInvFreq; i < optional_end; ++i)
    in(i) = mlxrs_glue::ensure_contiguous(in(i), stream);

  params.push_back(
      LayerParams{mlxrs_glue::AttentionParams::from(ap, has(w.q_norm), has(w.k_norm)),
                  w.input_norm_eps,
                  w.attention_out_norm_eps,
                  w.pre_mlp_norm_eps,
                  w.mlp_out_norm_eps,
                  ProjParams::from(w.qkv),
                  ProjParams::from(w.o),
                  ProjParams::from(w.gate_up),
                  ProjParams::from(w.down),
                  has(w.qkv_bias),
                  has(w.attention_out_norm),
                  has(w.mlp_out_norm),
                  int(w.activation),
                  seqs});
  return true;
}

// Checks a quantized table or head projection `p` as a [rows, K] matrix and appends weight,
// scales, biases. False when the kernels do not take it.
bool add_projection(std::vector<mx::array>& inputs, const char* what,
                    const mlxrs_quantized_projection& p, int K, ProjParams& out) {
  const auto& w = mlx_array_get_(p.weight);
  const ProjParams pp = ProjParams::from(p);
  const int64_t rows = pp.blocks.rows_of(w);
  if (rows <= 0 || rows > INT32_MAX)
    throw std::invalid_argument(std::string("decoder_stack: the ") + what +
                                " has no rows: " + shape_str(w.shape()));
  if (!projection_ok(what, p, int(rows), K)) return false;
  for (const auto& a : {p.weight, p.scales, p.biases}) inputs.push_back(mlx_array_get_(a));
  out = pp;
  return true;
}

}  // namespace

namespace {

// Both entry points: `offsets` has one entry (the rows share each layer's caches) or one per
// row (independent sequences; `more_caches` then holds, layer after layer, the k and v caches
// of sequences 1 .. B - 1).
int decoder_stack(mlx_vector_array* res, const mlx_array x,
                  const mlxrs_quantized_projection* embedding, float embedding_scale,
                  const mlxrs_decoder_layer_weights* layers, int n_layers,
                  const mlx_array head_norm, float head_norm_eps,
                  const mlxrs_quantized_projection* head, float head_softcap,
                  const std::vector<int>& offsets, const mlx_array* more_caches,
                  const mlx_stream s, bool* used_native) {
  *used_native = false;
  return mlxrs_glue::guarded([&] {
    const auto& stream = mlx_stream_get_(s);
    const auto& xa = mlx_array_get_(x);
    if (!mlxrs_qmm::native_isa_available() || stream.device != mx::Device::cpu) return;
    if (n_layers < 1 || !layers)
      throw std::invalid_argument("decoder_stack: needs at least one layer, got " +
                                  std::to_string(n_layers));
    if (!std::isfinite(embedding_scale) || !(head_softcap >= 0.f) || std::isinf(head_softcap))
      throw std::invalid_argument("decoder_stack: embedding scale " +
                                  std::to_string(embedding_scale) + " must be finite, head soft "
                                  "cap " + std::to_string(head_softcap) +
                                  " 0 (none) or positive and finite");
    StackParams p{{},   embedding != nullptr, {}, embedding_scale, head != nullptr,
                  head_norm_eps, {},          head_softcap, offsets};
    std::vector<mx::array> inputs{xa};
    int B = 0, L = 0, hidden = 0;
    if (p.embed) {
      if (xa.dtype() != mx::int32 && xa.dtype() != mx::uint32) return;
      if (xa.ndim() != 2 || xa.size() == 0)
        throw std::invalid_argument("decoder_stack: token ids must be a non-empty [B, L], got " +
                                    shape_str(xa.shape()));
      B = xa.shape(0);
      L = xa.shape(1);
      const auto& tw = mlx_array_get_(embedding->weight);
      if (embedding->block_parts > 1) return;  // a table of one format
      if (embedding->block_parts == 1)
        hidden = ProjParams::from(*embedding).blocks.cols(tw);
      else if (embedding->bits <= 0)
        return;
      else
        hidden = tw.ndim() == 2 ? tw.shape(1) * 32 / embedding->bits : 0;
      if (!add_projection(inputs, "embedding table", *embedding, hidden, p.embed_q)) return;
      inputs[0] = mlxrs_glue::ensure_contiguous(inputs[0], stream);
    } else {
      if (xa.dtype() != mx::float32) return;
      if (xa.ndim() != 3 || xa.size() == 0)
        throw std::invalid_argument(
            "decoder_layer: x must be a non-empty [B, L, hidden], got " + shape_str(xa.shape()));
      B = xa.shape(0);
      L = xa.shape(1);
      hidden = xa.shape(2);
    }
    const int seqs = int(offsets.size());
    if (seqs > 1 && (seqs != B || L != 1 || !more_caches))
      throw std::invalid_argument("decoder_stack: " + std::to_string(seqs) +
                                  " independent sequences need one token each, got " +
                                  shape_str(xa.shape()));
    for (int l = 0; l < n_layers; ++l) {
      const mlx_array* more = seqs > 1 ? more_caches + size_t(l) * 2 * (seqs - 1) : nullptr;
      if (!add_layer(inputs, p.layers, layers[l], B, L, hidden, offsets, more, stream)) return;
    }
    if (p.head) {
      const auto& nw = mlx_array_get_(head_norm);
      if (nw.dtype() != mx::float32) return;
      if (nw.shape() != mx::Shape{hidden})
        throw std::invalid_argument("decoder_stack: the head's norm weight must be [" +
                                    std::to_string(hidden) + "], got " +
                                    shape_str(nw.shape()));
      inputs.push_back(mlxrs_glue::ensure_contiguous(nw, stream));
      if (!add_projection(inputs, "head", *head, hidden, p.head_q)) return;
    }

    auto shapes = NativeDecoderStack::stack_shapes(p, inputs);
    const auto dtypes = NativeDecoderStack::stack_dtypes(p, inputs);
    auto outs = mx::array::make_arrays(std::move(shapes), dtypes,
                                       std::make_shared<NativeDecoderStack>(stream, p), inputs);
    mlx_vector_array_set_(*res, std::move(outs));
    *used_native = true;
  });
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int mlxrs_decoder_stack(
    mlx_vector_array* res, const mlx_array x, const mlxrs_quantized_projection* embedding,
    float embedding_scale, const mlxrs_decoder_layer_weights* layers, int n_layers,
    const mlx_array head_norm, float head_norm_eps, const mlxrs_quantized_projection* head,
    float head_softcap, int offset, const mlx_stream s, bool* used_native) {
  return decoder_stack(res, x, embedding, embedding_scale, layers, n_layers, head_norm,
                       head_norm_eps, head, head_softcap, {offset}, nullptr, s, used_native);
}

extern "C" __attribute__((visibility("default"))) int mlxrs_decoder_stack_seqs(
    mlx_vector_array* res, const mlx_array x, const mlxrs_quantized_projection* embedding,
    float embedding_scale, const mlxrs_decoder_layer_weights* layers, int n_layers,
    const mlx_array* more_caches, const int* offsets, int n_seqs, const mlx_array head_norm,
    float head_norm_eps, const mlxrs_quantized_projection* head, float head_softcap,
    const mlx_stream s, bool* used_native) {
  *used_native = false;
  if (n_seqs < 1 || !offsets)
    return mlxrs_glue::guarded(
        [] { throw std::invalid_argument("decoder_stack_seqs: needs at least one sequence"); });
  return decoder_stack(res, x, embedding, embedding_scale, layers, n_layers, head_norm,
                       head_norm_eps, head, head_softcap,
                       std::vector<int>(offsets, offsets + n_seqs), more_caches, s,
                       used_native);
}
