#!/usr/bin/env python3
"""mlx-lm (Python, the same MLX 0.32.2 CPU wheel) on the same weights and prompt as the Rust
`bench` example, for the side-by-side table in BENCHMARKS.md.

    PYTHONPATH=/tmp/mlxlm python3 scripts/bench_mlx_lm.py test-data/smollm2-hf-f32 \
        --prompt-tokens 512 --gen-tokens 128 --repeats 3
    # with OpenBLAS interposed, as the Rust build links it:
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 PYTHONPATH=/tmp/mlxlm python3 ...

The prompt is built exactly as examples/bench.rs builds it (the same sentence repeated, cut to
N tokens); end-of-sequence tokens are ignored so every run decodes --gen-tokens tokens.
"""
import argparse

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import stream_generate

TEXT = ("The quick brown fox jumps over the lazy dog while the river runs "
        "past the old mill, and the miller counts the sacks of flour before the market opens. ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    mx.set_default_device(mx.cpu)
    model, tokenizer = load(args.model)
    text = TEXT
    while len(ids := tokenizer.encode(text)) < args.prompt_tokens:
        text += TEXT
    prompt = ids[: args.prompt_tokens]
    tokenizer._eos_token_ids = set()  # decode exactly --gen-tokens tokens

    def run(p, n):
        last = None
        for last in stream_generate(model, tokenizer, p, max_tokens=n):
            pass
        return last

    run(prompt[:32], 8)  # warm-up
    print(f"mlx-lm {__import__('mlx_lm').__version__}, mlx {mx.__version__}, {args.model}")
    print("| run | prompt tokens | prompt tok/s | generated tokens | decode tok/s | peak memory (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for i in range(args.repeats):
        r = run(prompt, args.gen_tokens)
        print(f"| {i + 1} | {r.prompt_tokens} | {r.prompt_tps:.1f} | {r.generation_tokens} | "
              f"{r.generation_tps:.1f} | {r.peak_memory * 1e3:.1f} |")


if __name__ == "__main__":
    main()
