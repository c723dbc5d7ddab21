#!/usr/bin/env python3
"""Rewrites a GGUF file's Q4_K matrices as Q5_K, for benchmarking the Q5_K kernels on a
real-size model (no registry ships a Q5_K_M file this project can fetch). Every other tensor
and all metadata are copied as they are; the file type becomes MOSTLY_Q5_K_M, the mix a
Q5_K_M file has (Q5_K where Q4_K_M has Q4_K, Q6_K kept).

The quantizer is this script's own, written from the format (ggml-common.h's block_q5_K,
176 bytes per 256 weights: f16 d, f16 dmin, 12 bytes of eight 6-bit scales and mins packed as
Q4_K's, qh[32] with the fifth bit of each code, qs[128] with the low nibbles), not llama.cpp's
(which searches the scales; this one takes each 32-weight sub-block's min and range, its
6-bit scale and min rounded up so that the range fits): each
block is checked by decoding it with the `gguf` package's numpy decoder, and the script
prints the RMS error of the rewrite against the Q4_K values it started from.

    python3 scripts/requantize_q5_k.py IN.gguf OUT.gguf
"""
import sys

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize


def pack_scales(sc, m):
    """Q4_K's 12 bytes for eight 6-bit scales sc[j] and mins m[j] (per block, vectorized)."""
    sc = sc.astype(np.uint8)
    m = m.astype(np.uint8)
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    return out


def quantize_q5_k(x):
    """Blocks of 256 float32 values (shape [n, 256]) to block_q5_K bytes [n, 176]."""
    sub = x.reshape(-1, 8, 32)
    lo = np.minimum(sub.min(axis=2), 0.0)  # the min is subtracted: keep it <= 0
    hi = sub.max(axis=2)
    step = (hi - lo) / 31.0  # per sub-block
    mins = -lo
    d = (step.max(axis=1) / 63.0).astype(np.float16)
    dmin = (mins.max(axis=1) / 63.0).astype(np.float16)
    d32 = d.astype(np.float32)
    dmin32 = dmin.astype(np.float32)
    safe = lambda v: np.where(v > 0, v, 1.0)
    # Rounded up: the sub-block's range fits in 31 steps above its offset (no clipping).
    sc = np.clip(np.ceil(step / safe(d32)[:, None]), 0, 63)
    m = np.clip(np.ceil(mins / safe(dmin32)[:, None]), 0, 63)
    scale = d32[:, None] * sc
    offset = dmin32[:, None] * m
    q = np.clip(np.round((sub + offset[:, :, None]) / safe(scale)[:, :, None]), 0, 31)
    q = np.where(scale[:, :, None] > 0, q, 0).astype(np.uint8).reshape(-1, 4, 2, 32)
    # Chunk c of 64 values: sub-blocks 2c (low nibbles, qh bit 2c) and 2c + 1 (high, 2c + 1).
    qs = (q[:, :, 0, :] & 15) | ((q[:, :, 1, :] & 15) << 4)  # [n, 4, 32]
    qh = np.zeros((q.shape[0], 32), dtype=np.uint8)
    for c in range(4):
        qh |= ((q[:, c, 0, :] >> 4) & 1) << (2 * c)
        qh |= ((q[:, c, 1, :] >> 4) & 1) << (2 * c + 1)
    out = np.concatenate(
        [d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2),
         pack_scales(sc, m), qh, qs.reshape(-1, 128)], axis=1)
    assert out.shape[1] == 176
    return out


def main(src, dst):
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"]
    arch = bytes(arch.parts[arch.data[0]]).decode()
    writer = gguf.GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        kind = field.types[0]
        if name == "general.file_type":
            writer.add_uint32(name, int(gguf.LlamaFileType.MOSTLY_Q5_K_M))
        elif kind == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                values = [bytes(field.parts[i]).decode("utf-8", "surrogateescape") for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_array(name, values) if sub == gguf.GGUFValueType.STRING else \
                writer.add_key_value(name, values, kind, sub_type=sub)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(name, bytes(field.parts[field.data[0]]).decode("utf-8", "surrogateescape"))
        else:
            writer.add_key_value(name, field.parts[field.data[0]].tolist()[0], kind)
    err2 = 0.0
    count = 0
    for t in reader.tensors:
        raw = np.asarray(t.data)
        shape = [int(v) for v in reversed(t.shape.tolist())]  # row-major [rows, cols]
        if t.tensor_type == T.Q4_K:
            values = dequantize(raw, T.Q4_K).reshape(-1, 256).astype(np.float32)
            blocks = quantize_q5_k(values)
            back = dequantize(blocks.reshape(-1), T.Q5_K).reshape(-1, 256)
            err2 += float(((back - values) ** 2).sum())
            count += values.size
            rows = shape[0]
            writer.add_tensor(t.name, blocks.reshape(rows, -1), raw_shape=[rows, shape[1] // 256 * 176],
                              raw_dtype=T.Q5_K)
            print(f"{t.name}: Q4_K -> Q5_K {shape}", flush=True)
        else:
            writer.add_tensor(t.name, raw, raw_shape=list(raw.shape), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {dst}; RMS change of the rewritten weights: {np.sqrt(err2 / max(count, 1)):.3e}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
