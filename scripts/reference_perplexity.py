#!/usr/bin/env python3
"""Reference perplexity for models/tests/real_smollm2.rs, computed independently of the Rust code.

Loads a GGUF file with Hugging Face transformers (dequantized to float32), tokenizes the text
with the GGUF's tokenizer (BOS only if the GGUF says `tokenizer.ggml.add_bos_token`), and applies
llama.cpp's `llama-perplexity` windowing:

- windows of N consecutive tokens, window i = tokens[i*N:(i+1)*N] (only whole windows);
- when the tokenizer adds BOS, the first token of every window is overwritten with BOS;
- each window is evaluated alone from position 0;
- positions j = N/2 .. N-2 are scored predicting token j+1;
- PPL = exp(mean NLL over all scored tokens).

Usage (torch + transformers in /tmp/pyref; loading GGUF also needs accelerate and psutil there):

    PYTHONPATH=/tmp/pyref python3 scripts/reference_perplexity.py \
        test-data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf models/tests/fixtures/ppl_text.txt \
        --ctx 128 [--chunks K] [--json out.json]

Also prints the greedy completion of "The capital of France is" (16 tokens).
"""
import argparse
import json
import math
import os
import sys

import gguf
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def gguf_flag(path, key, default):
    reader = gguf.GGUFReader(path)
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--chunks", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    directory, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.eval()

    add_bos = bool(gguf_flag(args.gguf, "tokenizer.ggml.add_bos_token", False))
    bos_id = int(gguf_flag(args.gguf, "tokenizer.ggml.bos_token_id", -1))

    def encode(text):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return ([bos_id] if add_bos else []) + ids

    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    tokens = encode(text)
    n = args.ctx
    windows = len(tokens) // n
    if args.chunks is not None:
        windows = min(windows, args.chunks)
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(windows):
            window = list(tokens[i * n:(i + 1) * n])
            if add_bos:
                window[0] = bos_id
            logits = model(torch.tensor([window])).logits[0].double()
            logprobs = torch.log_softmax(logits, dim=-1)
            for j in range(n // 2, n - 1):
                nll -= logprobs[j, window[j + 1]].item()
                count += 1
    ppl = math.exp(nll / count)

    prompt = encode("The capital of France is")
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)
    completion = tok.decode(out[0][len(prompt):])

    result = {
        "command": "PYTHONPATH=/tmp/pyref python3 " + " ".join(sys.argv),
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "ctx": n,
        "windows": windows,
        "text_tokens": len(tokens),
        "add_bos": add_bos,
        "scored_tokens": count,
        "perplexity": ppl,
        "greedy_completion": completion,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    print(f"perplexity: {ppl:.4f} over {count} tokens")


if __name__ == "__main__":
    main()
