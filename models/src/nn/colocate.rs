//! One host buffer for a layer's GGUF block matrices, so that they lie on transparent huge
//! pages as one span.
//!
//! [`mlx_rs::memory::advise_huge_pages`] can only advise the whole, aligned 2 MiB spans inside
//! a buffer: each buffer keeps about 2 MiB of small pages at its edges, and one under 2 MiB
//! gets none. A decoder layer's matrices are such buffers (Qwen2.5-1.5B: a fused q/k/v of 1.9
//! MB and an o projection of 1.3 MB per layer, each gate/up and down with its edges: about a
//! fifth of the bytes that decode streams per token). Copied one after the other into one
//! buffer, which the matrices then view, a layer keeps small pages only at that buffer's two
//! edges. The copies are the same bytes: the products do not change.

use super::linear::{Linear, LinearWeight};
use crate::error::Result;
use mlx_rs::ops::concatenate;
use mlx_rs::{s, Array, Dtype};

/// Offsets of the matrices in the shared buffer are multiples of this (cache lines).
const ALIGN: usize = 64;

/// The projections of a decoder layer, under its path, as [`super::Attention::load`] and
/// [`super::Mlp::load`] read them.
const LAYER_PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// Whether the tensor `name` is a decoder layer's attention or MLP projection in GGUF blocks
/// (`model.layers.{i}.self_attn.q_proj.blocks`, …): with
/// [`crate::load::BuildOptions::huge_pages`], [`super::decoder::DecoderLayer::load`] puts
/// those on huge pages itself ([`colocate_blocks`]), so the loader does not advise them first.
pub(crate) fn is_layer_projection_blocks(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("model.layers.") else {
        return false;
    };
    let Some((index, rest)) = rest.split_once('.') else {
        return false;
    };
    index.parse::<usize>().is_ok()
        && rest
            .strip_suffix(".blocks")
            .is_some_and(|p| LAYER_PROJECTIONS.contains(&p))
}

/// Puts the GGUF block matrices among `linears` (others are left alone) on transparent huge
/// pages: copies them into one evaluated buffer, advises it, and makes each matrix a view of
/// its part. When fewer than two are blocks or the buffer would pass `i32::MAX` bytes, it
/// advises each where it is instead. Returns whether it made the shared buffer (then every
/// block matrix among `linears` is a view of it).
pub(crate) fn colocate_blocks(linears: Vec<&mut Linear>) -> Result<bool> {
    let mut blocks: Vec<&mut Array> = linears
        .into_iter()
        .filter_map(|l| match &mut l.weight {
            LinearWeight::Blocks(b) if b.weight.dtype() == Dtype::Uint8 => Some(&mut b.weight),
            _ => None,
        })
        .collect();
    let advise_in_place = |blocks: &[&mut Array]| -> Result<bool> {
        let arrays: Vec<&Array> = blocks.iter().map(|w| &**w).collect();
        mlx_rs::memory::advise_huge_pages(&arrays)?;
        Ok(false)
    };
    if blocks.len() < 2 {
        return advise_in_place(&blocks);
    }
    // Each matrix flat, then zeros up to the next multiple of ALIGN.
    let mut pieces: Vec<Array> = Vec::with_capacity(2 * blocks.len());
    let mut offsets = Vec::with_capacity(blocks.len());
    let mut end = 0usize;
    for w in &blocks {
        offsets.push(end);
        end += w.size();
        pieces.push(w.reshape(&[-1])?);
        let pad = end.next_multiple_of(ALIGN) - end;
        if pad > 0 {
            pieces.push(Array::zeros(&[pad as i32], Dtype::Uint8)?);
            end += pad;
        }
    }
    if end > i32::MAX as usize {
        return advise_in_place(&blocks);
    }
    let refs: Vec<&Array> = pieces.iter().collect();
    let shared = concatenate(&refs, 0)?;
    shared.eval()?;
    mlx_rs::memory::advise_huge_pages(&[&shared])?;
    for (w, &start) in blocks.iter_mut().zip(&offsets) {
        let (a, b) = (start as i32, (start + w.size()) as i32);
        let view = shared.slice(s![a..b])?.reshape(&w.shape())?;
        view.eval()?;
        **w = view;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::linear::BlockMatrix;
    use mlx_rs::quant::{self, BlockFormat, BlockRun};

    /// A `Q8_0` matrix of `rows` x `cols` with f16 scales 1/64 and codes from `seed`.
    fn q8_0(rows: usize, cols: usize, seed: usize) -> Linear {
        let blocks = rows * cols / 32;
        let mut bytes = Vec::with_capacity(blocks * 34);
        for b in 0..blocks {
            bytes.extend_from_slice(&half::f16::from_f32(1.0 / 64.0).to_le_bytes());
            bytes.extend((0..32).map(|i| (((b * 31 + i * 7 + seed) % 255) as i32 - 127) as u8));
        }
        let weight = Array::from_bytes(
            &bytes,
            &[rows as i32, (cols / 32 * 34) as i32],
            Dtype::Uint8,
        )
        .unwrap();
        Linear {
            weight: LinearWeight::Blocks(BlockMatrix {
                weight,
                runs: vec![BlockRun {
                    format: BlockFormat::Q8_0,
                    rows: rows as i32,
                }],
            }),
            bias: None,
        }
    }

    fn product(l: &Linear, x: &Array) -> Vec<f32> {
        let LinearWeight::Blocks(b) = &l.weight else {
            unreachable!()
        };
        let y = quant::block_matmul(x, &b.weight, BlockFormat::Q8_0).unwrap();
        y.to_vec::<f32>().unwrap()
    }

    #[test]
    fn colocated_matrices_share_one_buffer_and_give_the_same_products() {
        // 1.9 MB, 1.3 MB and a small one: what a layer's q/k/v, o and a norm-sized part hold.
        let mut a = q8_0(1792, 1024, 1);
        let mut b = q8_0(1216, 1024, 2);
        let mut c = q8_0(3, 64, 3);
        let x = Array::from_slice(
            &(0..1024).map(|i| (i % 9) as f32 - 4.0).collect::<Vec<_>>(),
            &[1, 1024],
        )
        .unwrap();
        let x64 =
            Array::from_slice(&(0..64).map(|i| i as f32).collect::<Vec<_>>(), &[1, 64]).unwrap();
        let before = (product(&a, &x), product(&b, &x), product(&c, &x64));
        assert!(colocate_blocks(vec![&mut a, &mut b, &mut c]).unwrap());
        let after = (product(&a, &x), product(&b, &x), product(&c, &x64));
        assert_eq!(before, after);
        // One buffer: each view starts where the previous one ends, rounded up to 64 bytes.
        let ptr = |l: &Linear| {
            let LinearWeight::Blocks(m) = &l.weight else {
                unreachable!()
            };
            (m.weight.host_address().unwrap().unwrap(), m.weight.nbytes())
        };
        let (pa, na) = ptr(&a);
        let (pb, nb) = ptr(&b);
        let (pc, _) = ptr(&c);
        assert_eq!(pb, pa + na.next_multiple_of(64));
        assert_eq!(pc, pb + nb.next_multiple_of(64));
        let LinearWeight::Blocks(m) = &a.weight else {
            unreachable!()
        };
        assert_eq!(m.weight.shape(), vec![1792, 32 * 34]);
    }

    #[test]
    fn the_loader_leaves_exactly_the_layer_projection_blocks_to_the_layers() {
        for name in [
            "model.layers.0.self_attn.q_proj.blocks",
            "model.layers.27.self_attn.o_proj.blocks",
            "model.layers.3.mlp.gate_proj.blocks",
            "model.layers.3.mlp.down_proj.blocks",
        ] {
            assert!(is_layer_projection_blocks(name), "{name}");
        }
        for name in [
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.q_proj.bias",
            "model.layers.x.mlp.up_proj.blocks",
            "model.layers.3.mlp.experts.gate_proj.blocks",
            "model.layers.3.mlp.up_proj",
            "model.embed_tokens.blocks",
            "lm_head.blocks",
            "model.layers.3.self_attn.q_norm.blocks",
        ] {
            assert!(!is_layer_projection_blocks(name), "{name}");
        }
    }

    #[test]
    fn one_block_matrix_or_none_is_left_alone() {
        let mut a = q8_0(64, 64, 1);
        let dense =
            || Linear::from_dense_transposed(Array::ones(&[64, 64], Dtype::Float32).unwrap());
        let mut d = dense();
        let before = match &a.weight {
            LinearWeight::Blocks(m) => m.weight.host_address().unwrap().unwrap(),
            _ => unreachable!(),
        };
        assert!(!colocate_blocks(vec![&mut a, &mut d]).unwrap());
        let after = match &a.weight {
            LinearWeight::Blocks(m) => m.weight.host_address().unwrap().unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(before, after);
    }
}
