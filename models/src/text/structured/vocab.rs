//! The vocabulary as llguidance sees it: a [`TokTrie`] of each token's bytes
//! ([`Tokenizer::token_bytes`]), special tokens kept apart from text, the end-of-sequence ids
//! set, and our tokenizer to turn forced text into tokens.

use crate::text::Tokenizer;
use crate::{Error, Result};
use toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// llguidance's marker in front of a special token's name in the trie: such a token never
/// matches text, only a grammar's `<name>` (or `<[id]>`).
const SPECIAL_MARKER: u8 = TokTrie::SPECIAL_TOKEN_MARKER;

/// Texts whose tokens must spell them exactly for the tokenizer to count as canonical (the
/// SentencePiece space prefix, for one, adds a space in front).
const CANONICAL_PROBES: &[&str] = &["a", "{\"", " x\n", "}]"];

/// Our tokenizer and its trie, as llguidance's tokenizer environment.
pub(crate) struct VocabEnv {
    trie: TokTrie,
    tokenizer: Tokenizer,
    canonical: bool,
}

impl std::fmt::Debug for VocabEnv {
    /// A summary: the trie is too large to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VocabEnv")
            .field("vocab_size", &self.trie.vocab_size())
            .field("eos", &self.trie.eos_tokens())
            .field("canonical", &self.canonical)
            .finish_non_exhaustive()
    }
}

impl VocabEnv {
    /// The environment of `tokenizer`, generation ending at `eos_ids` (at least one; each
    /// inside the vocabulary). Errors: [`Error::InvalidArgument`] otherwise.
    pub(crate) fn new(tokenizer: &Tokenizer, eos_ids: &[u32]) -> Result<VocabEnv> {
        let vocab_size = tokenizer.vocab_size();
        if eos_ids.is_empty() {
            return Err(Error::InvalidArgument(
                "constrained decoding needs at least one end-of-sequence token id".into(),
            ));
        }
        if let Some(bad) = eos_ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(Error::InvalidArgument(format!(
                "end-of-sequence id {bad} is outside the vocabulary of {vocab_size} tokens"
            )));
        }
        let vocab_u32 = u32::try_from(vocab_size).map_err(|_| {
            Error::InvalidArgument(format!("a vocabulary of {vocab_size} tokens is too large"))
        })?;
        let words: Vec<Vec<u8>> = (0..vocab_u32).map(|id| word(tokenizer, id)).collect();
        let mut info = TokRxInfo::new(vocab_u32, eos_ids[0]);
        info.tok_bos = tokenizer.bos_token_id();
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eos_ids);
        let canonical = CANONICAL_PROBES.iter().all(|probe| {
            tokenizer.encode_as_text(probe).is_ok_and(|ids| {
                let bytes: Vec<u8> = ids.iter().flat_map(|&id| trie.token(id).to_vec()).collect();
                bytes == probe.as_bytes()
            })
        });
        Ok(VocabEnv {
            trie,
            tokenizer: tokenizer.clone(),
            canonical,
        })
    }
}

/// The trie's word for token `id`: its bytes; a special token's text after the marker; no
/// bytes (never allowed) for an id without a token, and for an ordinary token starting with
/// byte 0xFF (no UTF-8 text holds that byte, and the trie would take it for a special token).
fn word(tokenizer: &Tokenizer, id: u32) -> Vec<u8> {
    let Some(bytes) = tokenizer.token_bytes(id) else {
        return Vec::new();
    };
    if tokenizer.is_special_token(id) {
        if bytes.is_empty() {
            return Vec::new();
        }
        let mut word = Vec::with_capacity(bytes.len() + 1);
        word.push(SPECIAL_MARKER);
        word.extend_from_slice(&bytes);
        word
    } else if bytes.first() == Some(&SPECIAL_MARKER) {
        Vec::new()
    } else {
        bytes
    }
}

impl TokenizerEnv for VocabEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Our tokenizer's ids of `s` as plain text (special-token strings included), or the
    /// trie's greedy split for bytes that are no UTF-8 text.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        std::str::from_utf8(s)
            .ok()
            .and_then(|text| self.tokenizer.encode_as_text(text).ok())
            .unwrap_or_else(|| self.trie.greedy_tokenize(s))
    }

    /// Whether our tokenizer spells text exactly (no SentencePiece space in front): then
    /// llguidance may force the tokens of text the grammar fixes.
    fn tokenize_is_canonical(&self) -> bool {
        self.canonical
    }
}
