#!/usr/bin/env python3
"""Writes a Hugging Face folder (config.json, model.safetensors in float32, tokenizer files) from a
GGUF file, with transformers' GGUF loader (which dequantizes and un-permutes Q/K).

Used by BENCHMARKS.md to give mlx-lm (which reads only HF folders) exactly the weights that the
Rust tools read, so that both engines run the same f32 weights side by side.

    PYTHONPATH=/tmp/pyref python3 scripts/export_hf_from_gguf.py \
        test-data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf test-data/smollm2-hf-f32
"""
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf_path, out = sys.argv[1], sys.argv[2]
folder, name = os.path.dirname(os.path.abspath(gguf_path)), os.path.basename(gguf_path)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
# The GGUF-loaded model refuses save_pretrained (it is flagged as gguf-quantized although its
# tensors are plain float32 now): write the tensors and the config ourselves.
from safetensors.torch import save_file

os.makedirs(out, exist_ok=True)
tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
if model.config.tie_word_embeddings:
    tensors.pop("lm_head.weight", None)
save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
config = model.config
if hasattr(config, "quantization_config"):
    del config.quantization_config
config.torch_dtype = "float32"
config.save_pretrained(out)
tokenizer.save_pretrained(out)
print("wrote", out)
