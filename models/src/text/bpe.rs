//! Rank-ordered pair merging, and the BPE model of Gemma 4's GGUF vocabularies.
//!
//! [`merge_by_rank`] is the merge loop shared by tekken (the rank of a pair is the rank of the
//! token it forms) and [`MergesModel`] (the rank of a pair is its index in the merge list):
//! of all adjacent pairs of symbols that have a rank, the lowest merges first (ties: the
//! leftmost pair), until no pair has one. A priority queue keeps a long piece (a megabyte
//! without a newline) at O(n log n).
//!
//! [`MergesModel`] tokenizes GGUF vocabularies of `tokenizer.ggml.model == "gemma4"` the way
//! llama.cpp does (its `gemma4` pre-tokenizer, "SentencePiece-style BPE"): each text fragment
//! between special tokens has every space replaced by `▁` (U+2581), is cut into runs of
//! newlines and runs of anything else, and each run is encoded on its own:
//!
//! 1. a run of newlines that is itself a token is that token;
//! 2. otherwise the run starts as one symbol per character (raw UTF-8, no GPT-2 byte map), and
//!    pairs merge by the rank of the merge rule `left right` in `tokenizer.ggml.merges`;
//! 3. each final symbol is its token; a symbol that is no token becomes the byte tokens
//!    `<0xXX>` of its UTF-8 bytes, and a byte without such a token is dropped (as llama.cpp
//!    drops it: a vocabulary without byte tokens loses the characters it cannot spell).
//!
//! Merge rules are strings: a rule whose parts are no tokens, or whose result is none, is kept
//! (it can apply, and its result then falls back to bytes, as in llama.cpp). A rule without a
//! space to split it at is an error ([`parse_merge`]). Decoding (in
//! [`NativeTokenizer::decode`]) turns `▁` back into spaces in normal tokens and joins byte
//! tokens before decoding UTF-8; user-defined and control tokens render as they are.

use super::native::NativeTokenizer;
use crate::{Error, Result};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Range;

/// Merges adjacent symbols of `piece` by rank, lowest first, ties leftmost; returns the byte
/// ranges of the final symbols, in order.
///
/// `symbol_lens` are the byte lengths of the initial symbols (summing to `piece.len()`);
/// `rank(merged, split)` is the rank of merging the symbols `merged[..split]` and
/// `merged[split..]`, `None` when they do not merge.
pub(crate) fn merge_by_rank(
    piece: &[u8],
    symbol_lens: impl IntoIterator<Item = usize>,
    rank: impl Fn(&[u8], usize) -> Option<u32>,
) -> Vec<Range<usize>> {
    const NONE: usize = usize::MAX;
    // Symbol i covers piece[start[i]..start[i] + len[i]] (len 0 once merged into its left
    // neighbour); linked by next/prev.
    let mut start = Vec::new();
    let mut len = Vec::new();
    let mut at = 0;
    for l in symbol_lens {
        start.push(at);
        len.push(l);
        at += l;
    }
    debug_assert_eq!(at, piece.len());
    let n = start.len();
    let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
    let rank_of = |a: usize, b: usize, len: &[usize]| {
        rank(&piece[start[a]..start[b] + len[b]], len[a]).map(|r| Reverse((r, a, len[a] + len[b])))
    };
    // Min-heap of (rank, left symbol, merged length).
    let mut queue: BinaryHeap<_> = (1..n).filter_map(|i| rank_of(i - 1, i, &len)).collect();
    while let Some(Reverse((_, l, merged))) = queue.pop() {
        let r = next[l];
        if len[l] == 0 || r == NONE || len[l] + len[r] != merged {
            continue; // stale: one side was merged since
        }
        len[l] = merged;
        len[r] = 0;
        next[l] = next[r];
        if next[r] != NONE {
            prev[next[r]] = l;
        }
        if prev[l] != NONE {
            queue.extend(rank_of(prev[l], l, &len));
        }
        if next[l] != NONE {
            queue.extend(rank_of(l, next[l], &len));
        }
    }
    let mut symbols = Vec::new();
    let mut i = if n == 0 { NONE } else { 0 };
    while i != NONE {
        symbols.push(start[i]..start[i] + len[i]);
        i = next[i];
    }
    symbols
}

/// A merge rule `left right` split like llama.cpp: at the first space after the first
/// character (so that a rule may merge a space-like first part). Errors:
/// [`Error::Tokenizer`] when there is no such space.
pub(crate) fn parse_merge(rule: &str) -> Result<(&str, &str)> {
    rule.char_indices()
        .skip(1)
        .find(|&(_, c)| c == ' ')
        .map(|(i, _)| (&rule[..i], &rule[i + 1..]))
        .ok_or_else(|| Error::Tokenizer(format!("merge rule {rule:?} has no space")))
}

/// BPE over raw UTF-8 with a merge list and `▁` for spaces (GGUF `gemma4`; see the
/// [module docs](self)).
#[derive(Debug)]
pub(crate) struct MergesModel {
    /// The distinct strings that appear as a part of a merge rule, numbered.
    parts: HashMap<Vec<u8>, u32>,
    /// (left part, right part) → rank (the first rule wins for a repeated pair).
    ranks: HashMap<(u32, u32), u32>,
    /// The `<0xXX>` token of each byte.
    byte_tokens: Vec<Option<u32>>,
}

impl MergesModel {
    /// The model of `merges` (rules `left right`, in rank order) over the vocabulary `tokens`.
    /// Errors: [`Error::Tokenizer`] for a rule without a space, or more rules than `u32`
    /// ranks.
    pub(crate) fn new(tokens: &[String], merges: &[String]) -> Result<MergesModel> {
        if merges.len() > u32::MAX as usize {
            return Err(Error::Tokenizer(format!("{} merge rules", merges.len())));
        }
        let mut parts: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, rule) in merges.iter().enumerate() {
            let (left, right) = parse_merge(rule)?;
            let mut part = |s: &str| {
                let fresh = parts.len() as u32;
                *parts.entry(s.as_bytes().to_vec()).or_insert(fresh)
            };
            let pair = (part(left), part(right));
            ranks.entry(pair).or_insert(rank as u32);
        }
        let mut by_text: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            by_text.entry(token.as_str()).or_insert(id as u32);
        }
        let byte_tokens = (0..=255u8)
            .map(|b| by_text.get(format!("<0x{b:02X}>").as_str()).copied())
            .collect();
        Ok(MergesModel {
            parts,
            ranks,
            byte_tokens,
        })
    }

    /// Appends the ids of one text fragment (no special tokens in it).
    pub(crate) fn encode(&self, vocab: &NativeTokenizer, text: &str, out: &mut Vec<u32>) {
        let escaped = text.replace(' ', "▁");
        let mut rest = escaped.as_str();
        while !rest.is_empty() {
            // The next run: newlines, or anything but newlines.
            let newlines = rest.starts_with('\n');
            let end = rest
                .find(|c: char| (c == '\n') != newlines)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(end);
            rest = tail;
            if newlines {
                if let Some(id) = vocab.token_to_id(run) {
                    out.push(id);
                    continue;
                }
            }
            self.encode_run(vocab, run, out);
        }
    }

    fn encode_run(&self, vocab: &NativeTokenizer, run: &str, out: &mut Vec<u32>) {
        let rank = |merged: &[u8], split: usize| {
            let left = self.parts.get(&merged[..split])?;
            let right = self.parts.get(&merged[split..])?;
            self.ranks.get(&(*left, *right)).copied()
        };
        let lens = run.chars().map(char::len_utf8);
        for symbol in merge_by_rank(run.as_bytes(), lens, rank) {
            // Symbols are whole characters, so the range is on character boundaries.
            let piece = &run[symbol];
            match vocab.token_to_id(piece) {
                Some(id) => out.push(id),
                None => out.extend(piece.bytes().filter_map(|b| self.byte_tokens[b as usize])),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::native::{NativeModel, TokenKind};

    /// A vocabulary of `tokens` (`<…>` control, `<0xXX>` bytes, the rest normal) with `merges`.
    fn tokenizer(tokens: &[&str], merges: &[&str]) -> Result<NativeTokenizer> {
        let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        let merges: Vec<String> = merges.iter().map(|m| m.to_string()).collect();
        let kinds = tokens
            .iter()
            .map(|t| match t.strip_prefix("<0x") {
                Some(hex) => TokenKind::Byte(u8::from_str_radix(&hex[..2], 16).unwrap()),
                None if t.starts_with('<') && t.len() > 1 => TokenKind::Control,
                None => TokenKind::Normal,
            })
            .collect();
        let model = MergesModel::new(&tokens, &merges)?;
        NativeTokenizer::new(tokens, kinds, NativeModel::Merges(model))
    }

    #[test]
    fn pairs_merge_by_rule_rank_not_by_token_id() {
        // Tokens: a 0, b 1, c 2, ab 3, bc 4, abc 5. Rules: "b c" ranks before "a b".
        let t = tokenizer(&["a", "b", "c", "ab", "bc", "abc"], &["b c", "a b", "a bc"]).unwrap();
        assert_eq!(t.encode("abc", false).unwrap(), vec![5]);
        // "ab"+"c" forms the token "abc" too, but no rule merges that pair.
        let t = tokenizer(&["a", "b", "c", "ab", "bc", "abc"], &["a b", "b c"]).unwrap();
        assert_eq!(t.encode("abc", false).unwrap(), vec![3, 2]);
        // Ties go to the leftmost pair.
        let t = tokenizer(&["a", "aa"], &["a a"]).unwrap();
        assert_eq!(t.encode("aaa", false).unwrap(), vec![1, 0]);
    }

    #[test]
    fn spaces_newlines_and_bytes() {
        let t = tokenizer(
            &[
                "▁", "x", "▁x", "\n", "\n\n", "<0x0A>", "<0xC3>", "<0xA9>", "<s>",
            ],
            &["▁ x", "\n \n"],
        )
        .unwrap();
        assert_eq!(t.encode(" x x", false).unwrap(), vec![2, 2]);
        // A newline run that is a token is taken whole; a longer one merges by rules.
        assert_eq!(t.encode("\n\n", false).unwrap(), vec![4]);
        assert_eq!(t.encode("x\n\n\nx", false).unwrap(), vec![1, 4, 3, 1]);
        // "é" is no token: its bytes; "y" has neither a token nor byte tokens: dropped.
        assert_eq!(t.encode("éyx", false).unwrap(), vec![6, 7, 1]);
        assert_eq!(t.encode("<s> x", true).unwrap(), vec![8, 2]);
        assert_eq!(t.decode(&[8, 2, 6, 7, 4], false), "<s> xé\n\n");
        assert_eq!(t.decode(&[8, 2, 6, 7, 4], true), " xé\n\n");
        assert_eq!(t.encode("", true).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn odd_rules_are_kept_or_refused() {
        // A rule without a space is an error.
        assert!(matches!(
            MergesModel::new(&["a".to_string()], &["ab".to_string()]),
            Err(Error::Tokenizer(_))
        ));
        // Rules over unknown parts, or forming no token: kept; the result falls back to bytes.
        let t = tokenizer(&["a", "b", "<0x61>", "<0x62>"], &["zz y", "a b"]).unwrap();
        assert_eq!(t.encode("ab", false).unwrap(), vec![2, 3]);
        // The first space after the first character splits: "▁ ▁" and "  x" (space, space-x).
        assert_eq!(parse_merge("▁ ▁").unwrap(), ("▁", "▁"));
        assert_eq!(parse_merge("  x").unwrap(), (" ", "x"));
        assert!(parse_merge(" ").is_err());
    }

    #[test]
    fn a_long_run_merges_in_time() {
        let t = tokenizer(&["a", "aa"], &["a a"]).unwrap();
        let ids = t.encode(&"a".repeat(200_001), false).unwrap();
        assert_eq!(ids.len(), 100_001);
        assert_eq!((ids[0], ids[100_000]), (1, 0));
    }
}
