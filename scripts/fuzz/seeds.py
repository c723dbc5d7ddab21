#!/usr/bin/env python3
"""Seed inputs for the fuzz targets (fuzz/fuzz_targets/*), written to fuzz/seeds/<target>/:
small valid files of each format, so that the fuzzers start from inputs that pass the readers'
first checks. The corpora the fuzzers grow from them are committed under fuzz/corpus/.

    python3 scripts/fuzz/seeds.py
"""
import json
import pathlib
import shutil

import gguf
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIX = ROOT / "models" / "tests" / "fixtures"
OUT = ROOT / "fuzz" / "seeds"


def seed_dir(name):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def tiny_tokenizer_gguf(path, with_tensor):
    """A llama GGUF with a 12-token byte-level BPE vocabulary (gpt2 model, qwen2 pre-tokenizer)."""
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(1)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_context_length(32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    tokens = ["H", "e", "l", "o", "Ġ", "w", "r", "d", "He", "ll", "<|im_start|>", "<|im_end|>"]
    w.add_token_list(tokens)
    w.add_token_types([1] * 10 + [3, 3])
    w.add_token_merges(["H e", "l l"])
    w.add_eos_token_id(11)
    w.add_bos_token_id(10)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    if with_tensor:
        w.add_tensor("token_embd.weight", np.zeros((12, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    g = seed_dir("gguf_header")
    for name in ["q5_0.gguf", "iq4_nl.gguf"]:
        shutil.copy(FIX / "load" / name, g / name)
    tiny_tokenizer_gguf(g / "tokenizer_tensor.gguf", True)
    t = seed_dir("gguf_tokenizer")
    tiny_tokenizer_gguf(t / "tokenizer.gguf", False)
    s = seed_dir("safetensors_header")
    for i, p in enumerate(sorted((FIX / "load" / "hf_sharded").glob("*.safetensors"))):
        if p.stat().st_size <= 65536:
            shutil.copy(p, s / f"{i}_{p.name}")
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                         "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}}).encode()
    (s / "two.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(22))
    c = seed_dir("config_json")
    for i, p in enumerate(sorted(FIX.rglob("config.json"))):
        shutil.copy(p, c / f"{i}_config.json")
    for i, p in enumerate(sorted(FIX.rglob("generation_config.json"))):
        shutil.copy(p, c / f"{i}_generation_config.json")
    ct = seed_dir("chat_template")
    for i, p in enumerate(sorted((FIX / "chat").glob("*.jinja"))):
        shutil.copy(p, ct / f"{i}_{p.name}")
    for d in sorted(OUT.iterdir()):
        print(d.name, len(list(d.iterdir())), "seeds")
