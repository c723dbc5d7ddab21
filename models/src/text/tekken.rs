//! Mistral's tekken tokenizer (`tekken.json`, as shipped by mistral-common and in Mistral
//! Nemo / Small / Ministral checkpoints): byte-level BPE from ranks, like tiktoken.
//!
//! The file holds `vocab` (entries `{rank, token_bytes (base64), token_str}` in rank order,
//! ranks 0–255 the single bytes), optionally `special_tokens` (`{rank, token_str, is_control}`),
//! and `config` (`pattern`, `default_vocab_size`, `default_num_special_tokens`, `version`).
//! As mistral-common reads it:
//!
//! - Ids 0..`num_special` are special tokens: the file's list, or, when the file has none
//!   (versions up to v7), the fixed list `<unk>` 0, `<s>` 1, `</s>` 2, `[INST]` 3, `[/INST]` 4,
//!   … ([`DEFAULT_SPECIAL_TOKENS`]); the remaining slots are `<SPECIAL_{id}>`.
//! - A regular token's **id is its rank + `num_special`**; only the first
//!   `vocab_size − num_special` ranks are used (the file may hold more).
//! - Encoding splits the text with the `pattern` regex and encodes each match: a match that is
//!   itself a token is emitted whole; otherwise, from its single bytes, the adjacent pair whose
//!   concatenation has the lowest rank is merged until none is a token (ties: leftmost).
//!   Special-token strings in the text are plain text there; [`Tokenizer::encode`] splits them
//!   out first (as control tokens), [`Tokenizer::encode_as_text`] does not.
//! - Decoding joins the token bytes and decodes UTF-8.
//!
//! Our own implementation rather than a `tokenizers` BPE: a BPE needs a merge list derived from
//! the ranks (which cannot express "ties go to the leftmost pair" across different pairs that
//! form the same token), while the rank algorithm is short and exact. The merge loop
//! ([`merge_by_rank`], shared with Gemma 4's BPE) uses a priority queue, so a long match (a
//! megabyte without a space) costs O(n log n), not O(n²).
//!
//! [`Tokenizer::encode`]: super::Tokenizer::encode
//! [`Tokenizer::encode_as_text`]: super::Tokenizer::encode_as_text

use super::bpe::merge_by_rank;
use super::native::{NativeModel, NativeTokenizer, TokenKind};
use crate::{Error, Result};
use base64::Engine;
use serde::Deserialize;
use std::collections::HashMap;

/// The special tokens of a tekken file without a `special_tokens` list (mistral-common's
/// defaults for tokenizer versions up to v7), ids 0–19.
pub(crate) const DEFAULT_SPECIAL_TOKENS: [&str; 20] = [
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
];

#[derive(Debug, Deserialize)]
struct TekkenFile {
    config: TekkenConfig,
    vocab: Vec<VocabEntry>,
    #[serde(default)]
    special_tokens: Option<Vec<SpecialEntry>>,
}

#[derive(Debug, Deserialize)]
struct TekkenConfig {
    pattern: String,
    #[serde(default)]
    default_vocab_size: Option<usize>,
    #[serde(default)]
    vocab_size: Option<usize>,
    #[serde(default)]
    default_num_special_tokens: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct VocabEntry {
    rank: usize,
    token_bytes: String,
}

#[derive(Debug, Deserialize)]
struct SpecialEntry {
    rank: usize,
    token_str: String,
}

/// The model half of a tekken tokenizer.
#[derive(Debug)]
pub(crate) struct TekkenModel {
    pattern: fancy_regex::Regex,
    /// Token bytes → rank.
    ranks: HashMap<Vec<u8>, u32>,
    /// Rank → token bytes.
    bytes: Vec<Vec<u8>>,
    num_special: u32,
}

/// What tekken ids mean: `<s>` and `</s>` ids, for the caller's BOS/EOS.
#[derive(Debug)]
pub(crate) struct Tekken {
    pub tokenizer: NativeTokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("tekken: {what}"))
}

/// Parses a `tekken.json` document (see the [module docs](self)).
///
/// Errors: [`Error::Tokenizer`] for malformed JSON, a pattern that is no valid regex, sizes
/// that do not fit together, ranks out of order, bad base64, ranks 0–255 that are not the
/// single bytes, or duplicate tokens.
pub(crate) fn parse(json: &str) -> Result<Tekken> {
    let file: TekkenFile = serde_json::from_str(json).map_err(bad)?;
    let num_special = file.config.default_num_special_tokens.unwrap_or(1000);
    let vocab_size = file
        .config
        .default_vocab_size
        .or(file.config.vocab_size)
        .unwrap_or(file.vocab.len() + num_special);
    if vocab_size > u32::MAX as usize || num_special > vocab_size {
        return Err(bad(format!(
            "vocabulary size {vocab_size} with {num_special} special tokens"
        )));
    }
    let inner = vocab_size - num_special;
    if inner < 256 || inner > file.vocab.len() {
        return Err(bad(format!(
            "{inner} regular tokens needed ({vocab_size} − {num_special} special), the file has {}",
            file.vocab.len()
        )));
    }

    let mut ranks = HashMap::with_capacity(inner);
    let mut bytes = Vec::with_capacity(inner);
    let b64 = base64::engine::general_purpose::STANDARD;
    for (i, entry) in file.vocab.iter().take(inner).enumerate() {
        if entry.rank != i {
            return Err(bad(format!("vocab entry {i} has rank {}", entry.rank)));
        }
        let token = b64
            .decode(&entry.token_bytes)
            .map_err(|e| bad(format!("rank {i}: {e}")))?;
        if i < 256 && token != [i as u8] {
            return Err(bad(format!("rank {i} is not the single byte {i}")));
        }
        if token.is_empty() || ranks.insert(token.clone(), i as u32).is_some() {
            return Err(bad(format!(
                "rank {i} repeats an earlier token or is empty"
            )));
        }
        bytes.push(token);
    }

    let mut specials: Vec<String> = match file.special_tokens {
        Some(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                if s.rank == i {
                    Ok(s.token_str)
                } else {
                    Err(bad(format!("special token {i} has rank {}", s.rank)))
                }
            })
            .collect::<Result<_>>()?,
        None => DEFAULT_SPECIAL_TOKENS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    if specials.len() > num_special {
        return Err(bad(format!(
            "{} special tokens for {num_special} slots",
            specials.len()
        )));
    }
    for id in specials.len()..num_special {
        specials.push(format!("<SPECIAL_{id}>"));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = specials.iter().find(|s| !seen.insert(s.as_str())) {
        return Err(bad(format!("special token `{dup}` appears twice")));
    }

    let pattern =
        fancy_regex::Regex::new(&file.config.pattern).map_err(|e| bad(format!("pattern: {e}")))?;
    let bos = specials.iter().position(|s| s == "<s>").map(|i| i as u32);
    let eos = specials.iter().position(|s| s == "</s>").map(|i| i as u32);

    let mut tokens = specials;
    let mut kinds = vec![TokenKind::Control; num_special];
    tokens.extend(bytes.iter().map(|b| byte_level(b)));
    kinds.resize(vocab_size, TokenKind::Normal);
    let model = TekkenModel {
        pattern,
        ranks,
        bytes,
        num_special: num_special as u32,
    };
    let tokenizer = NativeTokenizer::new(tokens, kinds, NativeModel::Tekken(model))?;
    Ok(Tekken {
        tokenizer,
        bos,
        eos,
    })
}

/// The GPT-2 byte-level spelling of `bytes` (`Ġ` for a space): the vocabulary form of tekken
/// tokens, as in Hugging Face conversions of tekken files.
fn byte_level(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_char(b)).collect()
}

/// GPT-2's byte → character map: printable Latin-1 bytes stand for themselves, the other 68
/// bytes take the characters from U+0100 on, in byte order.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let index = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + index).unwrap_or(char::REPLACEMENT_CHARACTER)
}

impl TekkenModel {
    /// The bytes of the regular token `id` (`id ≥ num_special`, checked by the caller).
    pub(crate) fn token_bytes(&self, id: u32) -> &[u8] {
        &self.bytes[(id - self.num_special) as usize]
    }

    /// Appends the ids of one text fragment (no special tokens in it).
    pub(crate) fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        for found in self.pattern.find_iter(text) {
            let piece = found.map_err(|e| bad(format!("pattern: {e}")))?.as_str();
            if piece.is_empty() {
                continue;
            }
            match self.ranks.get(piece.as_bytes()) {
                Some(&rank) => out.push(rank + self.num_special),
                None => self.merge(piece.as_bytes(), out),
            }
        }
        Ok(())
    }

    /// Byte-pair merging of one regex match by rank (lowest first, ties leftmost): a pair
    /// merges when the bytes it forms are a token, ranked by that token's rank.
    fn merge(&self, piece: &[u8], out: &mut Vec<u32>) {
        let rank = |merged: &[u8], _split: usize| self.ranks.get(merged).copied();
        for symbol in merge_by_rank(piece, std::iter::repeat_n(1, piece.len()), rank) {
            // Every symbol is a token: single bytes are ranks 0–255, merges form tokens only.
            out.push(self.ranks[&piece[symbol]] + self.num_special);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tekken document: the 256 bytes plus `extra` tokens, `num_special` specials.
    fn doc(extra: &[&[u8]], vocab_size: usize, num_special: usize, pattern: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut vocab: Vec<serde_json::Value> = (0..=255u8)
            .map(|b| serde_json::json!({"rank": b, "token_bytes": b64.encode([b])}))
            .collect();
        for (i, t) in extra.iter().enumerate() {
            vocab.push(serde_json::json!({"rank": 256 + i, "token_bytes": b64.encode(t)}));
        }
        serde_json::json!({
            "config": {
                "pattern": pattern,
                "default_vocab_size": vocab_size,
                "default_num_special_tokens": num_special,
            },
            "vocab": vocab,
        })
        .to_string()
    }

    #[test]
    fn ranks_merge_lowest_first_and_ids_are_offset() {
        // Ranks: "ab" 256, "bc" 257, "abc" 258; 20 special tokens.
        let t = parse(&doc(&[b"ab", b"bc", b"abc"], 279, 20, r"\S+|\s+")).unwrap();
        let tok = &t.tokenizer;
        assert_eq!((t.bos, t.eos), (Some(1), Some(2)));
        assert_eq!(tok.vocab_size(), 279);
        // "abc" is a token: emitted whole.
        assert_eq!(tok.encode("abc", false).unwrap(), vec![258 + 20]);
        // "abcb": "ab" (256) merges before "bc" (257), then "abc" (258), leaving "b".
        assert_eq!(tok.encode("abcb", false).unwrap(), vec![278, 98 + 20]);
        // "bcab": "bc" 257 vs "ca" (none) vs "ab" 256: "ab" first, then "bc".
        assert_eq!(tok.encode("bcab", false).unwrap(), vec![277, 276]);
        // Special-token strings: ids when parsed, text otherwise.
        assert_eq!(tok.encode("[INST]", true).unwrap(), vec![3]);
        assert_ne!(tok.encode("[INST]", false).unwrap(), vec![3]);
        assert_eq!(tok.id_to_token(19), Some("[TOOL_CONTENT]"));
        assert_eq!(tok.id_to_token(20 + 32), Some("Ġ"));
        assert_eq!(
            tok.decode(&[1, 276, 32 + 20, 0xC3 + 20, 0xA9 + 20], true),
            "ab é"
        );
        assert_eq!(tok.decode(&[3, 276], false), "[INST]ab");
    }

    #[test]
    fn the_vocabulary_is_cut_to_its_size() {
        // Three extra ranks in the file, vocabulary 256 + 1 + 22 specials: only "ab" is kept.
        let t = parse(&doc(&[b"ab", b"bc", b"abc"], 279, 22, r"\S+")).unwrap();
        assert_eq!(t.tokenizer.vocab_size(), 279);
        assert_eq!(t.tokenizer.id_to_token(21), Some("<SPECIAL_21>"));
        assert_eq!(
            t.tokenizer.encode("abc", false).unwrap(),
            vec![278, 99 + 22]
        );
        // Fewer slots than the 20 default special tokens: refused, as mistral-common does.
        assert!(parse(&doc(&[b"ab"], 267, 10, r"\S+")).is_err());
    }

    #[test]
    fn a_long_match_merges_in_time() {
        let t = parse(&doc(&[b"aa"], 257 + 20, 20, r"\S+")).unwrap();
        let ids = t.tokenizer.encode(&"a".repeat(200_001), false).unwrap();
        assert_eq!(ids.len(), 100_001);
        assert_eq!(ids[0], 256 + 20);
        assert_eq!(ids[100_000], 97 + 20);
    }

    #[test]
    fn malformed_files_are_typed_errors() {
        let ok = doc(&[b"ab"], 257 + 20, 20, r"\S+");
        assert!(parse(&ok).is_ok());
        let cases = [
            "not json".to_string(),
            ok.replace(r#""rank":256"#, r#""rank":7"#),
            ok.replace("\"YWI=\"", "\"!!\""),
            doc(&[b"ab"], 257 + 20 + 1, 20, r"\S+"),
            doc(&[b"ab"], 4, 20, r"\S+"),
            doc(&[b"ab"], 257 + 20, 20, r"(\S+"),
            doc(&[b"a"], 257 + 20, 20, r"\S+"),
            ok.replace(r#""token_bytes":"AA==""#, r#""token_bytes":"AQ==""#),
        ];
        for (i, bad) in cases.iter().enumerate() {
            assert!(
                matches!(parse(bad), Err(Error::Tokenizer(_))),
                "case {i} was accepted"
            );
        }
        // Duplicate or misplaced special tokens.
        let with_specials = |specials: serde_json::Value| {
            let mut v: serde_json::Value = serde_json::from_str(&ok).unwrap();
            v["special_tokens"] = specials;
            v.to_string()
        };
        let dup =
            serde_json::json!([{"rank": 0, "token_str": "<s>"}, {"rank": 1, "token_str": "<s>"}]);
        assert!(matches!(
            parse(&with_specials(dup)),
            Err(Error::Tokenizer(_))
        ));
        let misplaced = serde_json::json!([{"rank": 1, "token_str": "<s>"}]);
        assert!(matches!(
            parse(&with_specials(misplaced)),
            Err(Error::Tokenizer(_))
        ));
        let many: Vec<_> = (0..21)
            .map(|i| serde_json::json!({"rank": i, "token_str": format!("<t{i}>")}))
            .collect();
        assert!(matches!(
            parse(&with_specials(serde_json::Value::Array(many))),
            Err(Error::Tokenizer(_))
        ));
    }

    #[test]
    fn byte_level_spelling_is_gpt2_s() {
        assert_eq!(byte_level(b" hi!"), "Ġhi!");
        assert_eq!(byte_char(0), 'Ā');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_char(0xA0), 'ł');
        assert_eq!(byte_char(0xAD), 'Ń');
        assert_eq!(byte_char(0xFF), 'ÿ');
    }
}
