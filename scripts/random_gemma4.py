"""Writes a random-weight Gemma 4 checkpoint of a real model's *shape*, MLX-quantized (affine,
group 64, 4 bits, the mlx-community layout this project loads), for decode benchmarks: the
numbers are meaningless, the bytes a decode step reads are those of the real model.

    python scripts/random_gemma4.py e2b OUT_DIR
    python scripts/random_gemma4.py moe OUT_DIR   # 26B-A4B layer shapes, 6 layers
    EXPERTS=32 python scripts/random_gemma4.py moe OUT_DIR   # the same with 32 experts

Packed codes are uniform random; per-group scales ~ 0.02 / 8 and biases = -8 * scale, so every
weight is a small zero-mean value; norm weights are 1 and `layer_scalar` 1. The tokenizer is
copied from the Gemma 3 tokenizer the test data fetches (the same 262144-token vocabulary
size). Shapes follow gemma-mistral-details.md:
- e2b: 35 layers, hidden 1536, MLP 6144 (12288 on the 20 KV-shared layers), 8 heads, 1 KV
  head, head_dim 256 / global 512, 4:1 sliding:full, window 512, per-layer inputs 256.
- moe: 26B-A4B's layers (hidden 2816, 16 heads, 8 KV heads / 2 global with K=V, head_dim
  256 / 512, dense MLP 2112, 128 experts of 704, top 8, window 1024), 6 of its 30 layers.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

GROUP, BITS = 64, 4
rng = np.random.default_rng(0)


def quantized(tensors, name, shape):
    """`name`.{weight,scales,biases} of a random [..., out, in] matrix."""
    *lead, out, inp = shape
    assert inp % GROUP == 0, (name, shape)
    tensors[f"{name}.weight"] = rng.integers(0, 2**32, size=(*lead, out, inp * BITS // 32), dtype=np.uint32)
    scales = np.full((*lead, out, inp // GROUP), 0.02 / 8, dtype=np.float16)
    tensors[f"{name}.scales"] = scales
    tensors[f"{name}.biases"] = (-8 * scales).astype(np.float16)


def ones(tensors, name, n):
    tensors[name] = np.ones((n,), dtype=np.float16)


def main(kind, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "e2b":
        cfg = dict(hidden_size=1536, intermediate_size=6144, num_hidden_layers=35,
                   num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                   global_head_dim=512, sliding_window=512, hidden_size_per_layer_input=256,
                   num_kv_shared_layers=20, use_double_wide_mlp=True,
                   layer_types=["full_attention" if (i + 1) % 5 == 0 else "sliding_attention"
                                for i in range(35)])
    elif kind == "moe":
        cfg = dict(hidden_size=2816, intermediate_size=2112, num_hidden_layers=6,
                   num_attention_heads=16, num_key_value_heads=8, num_global_key_value_heads=2,
                   head_dim=256, global_head_dim=512, sliding_window=1024,
                   hidden_size_per_layer_input=0, attention_k_eq_v=True, enable_moe_block=True,
                   num_experts=int(os.environ.get("EXPERTS", 128)), top_k_experts=8,
                   moe_intermediate_size=704,
                   layer_types=["sliding_attention"] * 5 + ["full_attention"])
    else:
        sys.exit(f"unknown shape {kind}: e2b or moe")
    cfg.update(model_type="gemma4_text", vocab_size=262144, vocab_size_per_layer_input=262144,
               final_logit_softcapping=30.0, tie_word_embeddings=True, rms_norm_eps=1e-6,
               max_position_embeddings=131072,
               quantization={"group_size": GROUP, "bits": BITS})
    h, n = cfg["hidden_size"], cfg["num_hidden_layers"]
    shared = cfg.get("num_kv_shared_layers", 0)
    ple = cfg["hidden_size_per_layer_input"]
    t = {}
    quantized(t, "model.embed_tokens", (262144, h))
    ones(t, "model.norm.weight", h)
    if ple:
        quantized(t, "model.embed_tokens_per_layer", (262144, n * ple))
        quantized(t, "model.per_layer_model_projection", (n * ple, h))
        ones(t, "model.per_layer_projection_norm.weight", ple)
    for i in range(n):
        p = f"model.layers.{i}"
        full = cfg["layer_types"][i] == "full_attention"
        hd = cfg["global_head_dim"] if full else cfg["head_dim"]
        kv = cfg.get("num_global_key_value_heads", cfg["num_key_value_heads"]) if full and cfg.get("attention_k_eq_v") else cfg["num_key_value_heads"]
        quantized(t, f"{p}.self_attn.q_proj", (cfg["num_attention_heads"] * hd, h))
        quantized(t, f"{p}.self_attn.o_proj", (h, cfg["num_attention_heads"] * hd))
        ones(t, f"{p}.self_attn.q_norm.weight", hd)
        if i < n - shared:
            quantized(t, f"{p}.self_attn.k_proj", (kv * hd, h))
            if not (full and cfg.get("attention_k_eq_v")):
                quantized(t, f"{p}.self_attn.v_proj", (kv * hd, h))
            ones(t, f"{p}.self_attn.k_norm.weight", hd)
        inter = cfg["intermediate_size"] * (2 if cfg.get("use_double_wide_mlp") and i >= n - shared else 1)
        for name in ("gate_proj", "up_proj"):
            quantized(t, f"{p}.mlp.{name}", (inter, h))
        quantized(t, f"{p}.mlp.down_proj", (h, inter))
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            ones(t, f"{p}.{norm}.weight", h)
        t[f"{p}.layer_scalar"] = np.ones((1,), dtype=np.float16)
        if ple:
            quantized(t, f"{p}.per_layer_input_gate", (ple, h))
            quantized(t, f"{p}.per_layer_projection", (h, ple))
            ones(t, f"{p}.post_per_layer_input_norm.weight", h)
        if cfg.get("enable_moe_block"):
            e, mi = cfg["num_experts"], cfg["moe_intermediate_size"]
            quantized(t, f"{p}.router.proj", (e, h))
            ones(t, f"{p}.router.scale", h)
            ones(t, f"{p}.router.per_expert_scale", e)
            quantized(t, f"{p}.experts.switch_glu.gate_proj", (e, mi, h))
            quantized(t, f"{p}.experts.switch_glu.up_proj", (e, mi, h))
            quantized(t, f"{p}.experts.switch_glu.down_proj", (e, h, mi))
            for norm in ("pre_feedforward_layernorm_2", "post_feedforward_layernorm_1",
                         "post_feedforward_layernorm_2"):
                ones(t, f"{p}.{norm}.weight", h)
    save_file(t, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    tok = Path(__file__).resolve().parent.parent / "test-data/tokenizers/gemma3"
    for f in tok.iterdir():
        shutil.copy(f, out / f.name)
    size = sum(v.nbytes for v in t.values())
    print(f"{kind}: {len(t)} tensors, {size / 1e9:.2f} GB -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
