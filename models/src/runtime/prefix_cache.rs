//! [`PrefixCache`]: KV states of finished sequences, keyed by the tokens they hold, so that a
//! new prompt that starts the same way (the next turn of a chat, the next step of an agent, a
//! shared system prompt) prefills only what is new.
//!
//! Keys live in a token trie: each node counts the entries below it, so the longest prefix a
//! prompt shares with any entry is one walk down the trie. Entries are evicted least recently
//! used first when their bytes exceed the budget. An entry that another entry extends is
//! dropped (the longer one serves both). What a lookup returns is a copy in fresh memory
//! ([`KvCache::detached_prefix`]): the native steps write caches in place, and the entry must
//! stay as it was for the next request.

use super::cache::KvCache;
use crate::error::Result;
use std::collections::HashMap;

/// One trie node: children by token, the entries in its subtree, the entry ending here.
#[derive(Debug, Default)]
struct Node {
    children: HashMap<u32, usize>,
    below: usize,
    entry: Option<u64>,
}

/// A stored KV state: the tokens it holds, the cache, its size and last use.
#[derive(Debug)]
struct Entry {
    tokens: Vec<u32>,
    cache: KvCache,
    bytes: usize,
    last_used: u64,
}

/// Counters of a [`PrefixCache`] (for logs and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Lookups made.
    pub lookups: u64,
    /// Lookups that reused at least one token.
    pub hits: u64,
    /// Prompt tokens looked up.
    pub prompt_tokens: u64,
    /// Of those, tokens served from the cache (not prefilled).
    pub reused_tokens: u64,
    /// Entries evicted for the budget.
    pub evictions: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now.
    pub bytes: usize,
    /// The byte budget.
    pub budget: usize,
}

/// KV states keyed by token prefixes, under a byte budget (see the module docs).
///
/// ```
/// use mlx_models::runtime::{cache::KvCache, prefix_cache::PrefixCache};
/// use mlx_rs::{Array, Dtype};
/// let mut store = PrefixCache::new(1 << 20);
/// let mut cache = KvCache::new(1);
/// let kv = Array::ones(&[1, 1, 3, 2], Dtype::Float32)?;
/// cache.layer_mut(0)?.update_and_fetch(&kv, &kv)?;
/// store.insert(vec![7, 8, 9], cache)?;
/// // A prompt [7, 8, 5, 6] reuses the first two positions.
/// let (reused, hit) = store.lookup(&[7, 8, 5, 6])?.unwrap();
/// assert_eq!((reused, hit.offset()), (2, 2));
/// # Ok::<(), mlx_models::Error>(())
/// ```
#[derive(Debug)]
pub struct PrefixCache {
    nodes: Vec<Node>,
    free: Vec<usize>,
    entries: HashMap<u64, Entry>,
    next_id: u64,
    clock: u64,
    budget: usize,
    stats: PrefixCacheStats,
}

impl PrefixCache {
    /// An empty cache that holds at most `budget` bytes of KV states (0 stores nothing).
    pub fn new(budget: usize) -> PrefixCache {
        PrefixCache {
            nodes: vec![Node::default()],
            free: Vec::new(),
            entries: HashMap::new(),
            next_id: 0,
            clock: 0,
            budget,
            stats: PrefixCacheStats {
                budget,
                ..PrefixCacheStats::default()
            },
        }
    }

    /// The counters.
    pub fn stats(&self) -> PrefixCacheStats {
        self.stats
    }

    /// The longest stored prefix of `prompt` that leaves at least one token to run (the last
    /// prompt token must go through the model to give the next token's logits): how many
    /// tokens it covers and a copy of its KV state at that length. `None` when nothing is
    /// shared (or the entry cannot be cut there: a rotating window that has moved past it).
    pub fn lookup(&mut self, prompt: &[u32]) -> Result<Option<(usize, KvCache)>> {
        self.stats.lookups += 1;
        self.stats.prompt_tokens += prompt.len() as u64;
        let usable = prompt.len().saturating_sub(1);
        let mut node = 0;
        let mut depth = 0;
        while depth < usable {
            match self.nodes[node].children.get(&prompt[depth]) {
                Some(&child) if self.nodes[child].below > 0 => {
                    node = child;
                    depth += 1;
                }
                _ => break,
            }
        }
        if depth == 0 {
            return Ok(None);
        }
        let id = self.entry_below(node);
        self.clock += 1;
        let Some(entry) = self.entries.get_mut(&id) else {
            return Ok(None);
        };
        entry.last_used = self.clock;
        let Some(cache) = entry.cache.detached_prefix(depth as i32)? else {
            return Ok(None);
        };
        self.stats.hits += 1;
        self.stats.reused_tokens += depth as u64;
        Ok(Some((depth, cache)))
    }

    /// Stores a copy of `cache` cut to the positions it holds (the KV state of exactly `tokens`:
    /// its offset must equal their count; otherwise nothing is stored). Entries that `tokens` extends are dropped;
    /// then the least recently used entries go until the budget holds. Returns whether the
    /// entry was kept.
    pub fn insert(&mut self, tokens: Vec<u32>, cache: KvCache) -> Result<bool> {
        if tokens.is_empty() || cache.offset() as usize != tokens.len() || self.budget == 0 {
            return Ok(false);
        }
        // Only the positions held: a live cache grows in steps of 256 positions, so a short
        // request's buffers are mostly empty (11 MiB for 40 tokens of SmolLM2).
        let Some(cache) = cache.detached_prefix(cache.offset())? else {
            return Ok(false);
        };
        // Evaluated now: a lazy copy would keep the whole source buffers alive.
        mlx_rs::eval(&cache.state())?;
        let bytes = cache.nbytes();
        if bytes > self.budget {
            return Ok(false);
        }
        // Entries ending on the path are prefixes of the new key: the new entry serves them.
        let mut node = 0;
        let mut superseded = Vec::new();
        for &t in &tokens {
            match self.nodes[node].children.get(&t) {
                Some(&child) => {
                    node = child;
                    superseded.extend(self.nodes[node].entry);
                }
                None => break,
            }
        }
        for id in superseded {
            self.remove(id);
        }
        // The same key stored again (or a longer one already holding it): keep the old one.
        if self.covered(&tokens) {
            return Ok(false);
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut node = 0;
        self.nodes[0].below += 1;
        for &t in &tokens {
            node = match self.nodes[node].children.get(&t) {
                Some(&child) => child,
                None => {
                    let child = self.alloc();
                    self.nodes[node].children.insert(t, child);
                    child
                }
            };
            self.nodes[node].below += 1;
        }
        self.nodes[node].entry = Some(id);
        self.clock += 1;
        self.entries.insert(
            id,
            Entry {
                tokens,
                cache,
                bytes,
                last_used: self.clock,
            },
        );
        self.stats.entries += 1;
        self.stats.bytes += bytes;
        while self.stats.bytes > self.budget {
            let Some(lru) = self.entries.iter().min_by_key(|(_, e)| e.last_used) else {
                break;
            };
            let lru = *lru.0;
            self.remove(lru);
            self.stats.evictions += 1;
        }
        Ok(self.entries.contains_key(&id))
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        let ids: Vec<u64> = self.entries.keys().copied().collect();
        for id in ids {
            self.remove(id);
        }
    }

    /// Whether some entry's key starts with `tokens`.
    fn covered(&self, tokens: &[u32]) -> bool {
        let mut node = 0;
        for t in tokens {
            match self.nodes[node].children.get(t) {
                Some(&child) if self.nodes[child].below > 0 => node = child,
                _ => return false,
            }
        }
        true
    }

    /// Some entry in the subtree of `node` (which has at least one).
    fn entry_below(&self, mut node: usize) -> u64 {
        loop {
            if let Some(id) = self.nodes[node].entry {
                return id;
            }
            match self.nodes[node]
                .children
                .values()
                .find(|&&c| self.nodes[c].below > 0)
            {
                Some(&child) => node = child,
                None => unreachable!("a node with entries below has a child with entries"),
            }
        }
    }

    /// Removes entry `id` and the trie nodes only it used.
    fn remove(&mut self, id: u64) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        self.stats.entries -= 1;
        self.stats.bytes -= entry.bytes;
        let mut node = 0;
        self.nodes[0].below -= 1;
        for &t in &entry.tokens {
            let Some(&child) = self.nodes[node].children.get(&t) else {
                unreachable!("an entry's key is a path of the trie")
            };
            self.nodes[child].below -= 1;
            if self.nodes[child].below == 0 {
                self.nodes[node].children.remove(&t);
                self.release(child);
                return;
            }
            node = child;
        }
        self.nodes[node].entry = None;
    }

    /// Frees `node` and its whole subtree (whose counts are all zero).
    fn release(&mut self, node: usize) {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            stack.extend(self.nodes[n].children.values().copied());
            self.nodes[n] = Node::default();
            self.free.push(n);
        }
    }

    /// A fresh node.
    fn alloc(&mut self) -> usize {
        match self.free.pop() {
            Some(n) => n,
            None => {
                self.nodes.push(Node::default());
                self.nodes.len() - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::{Array, Dtype};

    /// A one-layer cache holding `n` positions whose keys are their positions.
    fn cache_of(n: i32) -> KvCache {
        let mut cache = KvCache::new(1);
        let pos: Vec<f32> = (0..n).map(|p| p as f32).collect();
        let k = Array::from_slice(&pos, &[1, 1, n, 1]).unwrap();
        cache
            .layer_mut(0)
            .unwrap()
            .update_and_fetch(&k, &k)
            .unwrap();
        cache
    }

    fn keys_of(cache: &mut KvCache) -> Vec<f32> {
        let n = cache.offset();
        let (k, _) = cache.layer_mut(0).unwrap().buffers().unwrap();
        let k = k.slice(mlx_rs::s![.., .., ..n]).unwrap();
        k.reshape(&[-1]).unwrap().to_vec::<f32>().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_one_token_is_left_to_run() {
        let mut store = PrefixCache::new(1 << 20);
        assert!(store.insert(vec![1, 2, 3], cache_of(3)).unwrap());
        assert!(store.insert(vec![1, 5, 6, 7, 8], cache_of(5)).unwrap());
        let (n, mut hit) = store.lookup(&[1, 5, 6, 9]).unwrap().unwrap();
        assert_eq!(n, 3);
        assert_eq!(keys_of(&mut hit), vec![0.0, 1.0, 2.0]);
        // The whole prompt is stored: the last token still runs.
        let (n, _) = store.lookup(&[1, 2, 3]).unwrap().unwrap();
        assert_eq!(n, 2);
        assert!(store.lookup(&[4, 2, 3]).unwrap().is_none());
        assert!(store.lookup(&[1]).unwrap().is_none());
        let s = store.stats();
        assert_eq!((s.lookups, s.hits, s.reused_tokens), (4, 2, 5));
    }

    #[test]
    fn a_longer_key_replaces_its_prefixes() {
        let mut store = PrefixCache::new(1 << 20);
        store.insert(vec![1, 2], cache_of(2)).unwrap();
        store.insert(vec![1, 2, 3, 4], cache_of(4)).unwrap();
        assert_eq!(store.stats().entries, 1);
        // A key another entry already holds is not stored twice.
        assert!(!store.insert(vec![1, 2, 3], cache_of(3)).unwrap());
        assert_eq!(store.stats().entries, 1);
        assert_eq!(store.lookup(&[1, 2, 3, 4, 5]).unwrap().unwrap().0, 4);
    }

    #[test]
    fn least_recently_used_goes_first_under_the_budget() {
        // An entry holds its positions only: 4 positions of 1 head of 1 float, keys and values.
        let one = 4 * 4 * 2;
        let mut store = PrefixCache::new(2 * one);
        store.insert(vec![1, 1, 1, 1], cache_of(4)).unwrap();
        store.insert(vec![2, 2, 2, 2], cache_of(4)).unwrap();
        // Touch the first so that the second is the oldest.
        assert!(store.lookup(&[1, 1, 9]).unwrap().is_some());
        store.insert(vec![3, 3, 3, 3], cache_of(4)).unwrap();
        let s = store.stats();
        assert_eq!((s.entries, s.evictions, s.bytes), (2, 1, 2 * one));
        assert!(store.lookup(&[2, 2, 9]).unwrap().is_none());
        assert!(store.lookup(&[1, 1, 9]).unwrap().is_some());
        assert!(store.lookup(&[3, 3, 9]).unwrap().is_some());
        // Larger than the whole budget: not kept.
        assert!(!store.insert((0..600).collect(), cache_of(600)).unwrap());
        store.clear();
        assert_eq!((store.stats().entries, store.stats().bytes), (0, 0));
        assert_eq!(store.nodes[0].children.len(), 0);
    }

    #[test]
    fn a_hit_is_a_copy_that_later_writes_do_not_reach() {
        let mut store = PrefixCache::new(1 << 20);
        store.insert(vec![1, 2, 3, 4], cache_of(4)).unwrap();
        let (_, mut hit) = store.lookup(&[1, 2, 3, 9]).unwrap().unwrap();
        let k = Array::full(&[1, 1, 1, 1], 100.0f32, Dtype::Float32).unwrap();
        hit.layer_mut(0).unwrap().update_and_fetch(&k, &k).unwrap();
        assert_eq!(keys_of(&mut hit), vec![0.0, 1.0, 2.0, 100.0]);
        let (_, mut again) = store.lookup(&[1, 2, 3, 4, 5]).unwrap().unwrap();
        assert_eq!(keys_of(&mut again), vec![0.0, 1.0, 2.0, 3.0]);
    }
}
