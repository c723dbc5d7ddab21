//! (in progress)
/// The KV cache of a model (in progress).
#[derive(Debug)]
pub struct KvCache;
impl KvCache {
    /// An empty cache for `layers` layers.
    pub fn new(_layers: usize) -> KvCache {
        KvCache
    }
}
