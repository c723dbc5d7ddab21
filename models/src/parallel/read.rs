//! Cutting a tensor-parallel rank's share while the checkpoint is read: each layer is cut as
//! soon as its last tensor has been read (and the rest freed), the embedding and the LM head
//! tensor by tensor, so that loading holds this rank's share plus about one layer, not the
//! whole model. Every byte of the file is still read once.

use super::tensor::shard_layer;
use super::vocab::VocabShard;
use super::Parallel;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::nn::spec::ModelSpec;
use crate::weights::Weights;
use mlx_rs::Array;
use std::collections::{BTreeSet, HashMap};

/// Which parts of a checkpoint were already cut to this rank's share while reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreCut {
    /// Layers whose tensors hold only this rank's heads and MLP columns.
    pub layers: BTreeSet<usize>,
    /// Whether the embedding and the LM head hold only this rank's vocabulary rows.
    pub vocab: bool,
}

/// Takes the tensors of a checkpoint as a reader hands them over
/// ([`crate::load::hf::read_hf_weights_into`], [`crate::load::gguf::read_gguf_weights_into`]),
/// cuts each complete layer to rank `rank`'s share ([`shard_layer`]) and each embedding or LM
/// head tensor to its vocabulary rows ([`VocabShard`]), and keeps everything under the
/// checkpoint's names (renaming and the dtype policy follow as usual); [`ReadCut::finish`]
/// returns the weights with their [`PreCut`] record.
#[derive(Debug)]
pub struct ReadCut<'a> {
    config: &'a ModelConfig,
    spec: ModelSpec,
    rank: i32,
    size: i32,
    vocab: VocabShard,
    /// File tensors still to come, by layer.
    remaining: HashMap<usize, usize>,
    /// Arrays read of incomplete layers, by layer.
    pending: HashMap<usize, Vec<(String, Array)>>,
    out: HashMap<String, Array>,
    cut: PreCut,
}

impl<'a> ReadCut<'a> {
    /// For this rank of `parallel`; `file_layers`: the layer of each tensor the file's header
    /// declares (`None` outside the layers). Under tensor parallelism a layer is cut once all
    /// of its tensors have come; a pipeline stage cuts only its vocabulary rows.
    ///
    /// Errors: as [`crate::families::model_spec`].
    pub fn new(
        config: &'a ModelConfig,
        parallel: &Parallel,
        file_layers: impl IntoIterator<Item = Option<usize>>,
    ) -> Result<ReadCut<'a>> {
        let spec = crate::families::model_spec(config)?;
        let (rank, size) = (parallel.rank(), parallel.size());
        let mut layer_tensors = HashMap::new();
        if let Parallel::Tensor(_) = parallel {
            for l in file_layers.into_iter().flatten() {
                *layer_tensors.entry(l).or_insert(0) += 1;
            }
        }
        Ok(ReadCut {
            config,
            vocab: VocabShard::new(spec.vocab, rank, size),
            spec,
            rank,
            size,
            remaining: layer_tensors,
            pending: HashMap::new(),
            out: HashMap::new(),
            cut: PreCut::default(),
        })
    }

    /// The arrays of one file tensor (of layer `layer`, if it belongs to one), under the
    /// checkpoint's names.
    ///
    /// Errors: those of cutting ([`shard_layer`]: a layer that cannot be split).
    pub fn push(&mut self, layer: Option<usize>, arrays: Vec<(String, Array)>) -> Result<()> {
        if let Some(l) = layer.filter(|l| self.remaining.contains_key(l)) {
            self.pending.entry(l).or_default().extend(arrays);
            let left = self.remaining.get_mut(&l).expect("checked");
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.remaining.remove(&l);
                let arrays = self.pending.remove(&l).unwrap_or_default();
                self.cut_layer(l, arrays)?;
            }
            return Ok(());
        }
        for (name, array) in arrays {
            let decoder = crate::families::rename(self.config, &name)?;
            let module = decoder.as_deref().and_then(|d| {
                ["model.embed_tokens", "lm_head"]
                    .into_iter()
                    .find(|m| d.strip_prefix(m).is_some_and(|rest| rest.starts_with('.')))
            });
            match (module, decoder) {
                (Some(module), Some(decoder)) => {
                    let mut one = Weights::default();
                    one.insert(decoder.clone(), array);
                    self.vocab.keep(&mut one, module)?;
                    self.out.insert(name, one.take(&decoder)?);
                    self.cut.vocab = true;
                }
                _ => {
                    self.out.insert(name, array);
                }
            }
        }
        Ok(())
    }

    fn cut_layer(&mut self, layer: usize, arrays: Vec<(String, Array)>) -> Result<()> {
        let mut names = HashMap::new();
        let mut mini = Weights::default();
        for (name, array) in arrays {
            match crate::families::rename(self.config, &name)? {
                Some(decoder) => {
                    names.insert(decoder.clone(), name);
                    mini.insert(decoder, array);
                }
                None => {
                    self.out.insert(name, array);
                }
            }
        }
        let spec = &self.spec.layers[layer];
        shard_layer(spec, layer, &mut mini, self.rank, self.size)?;
        for (decoder, array) in mini.into_map() {
            let name = names.remove(&decoder).unwrap_or(decoder);
            self.out.insert(name, array);
        }
        self.cut.layers.insert(layer);
        Ok(())
    }

    /// The weights read, this rank's share cut, with their record (a layer whose tensors did
    /// not all come is left whole, for [`crate::nn::Decoder::build_parallel`] to cut).
    pub fn finish(mut self) -> Weights {
        for (_, arrays) in self.pending.drain() {
            self.out.extend(arrays);
        }
        let mut weights = Weights::from_map(self.out);
        weights.set_pre_cut(self.cut);
        weights
    }
}
