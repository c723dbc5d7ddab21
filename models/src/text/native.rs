//! Tokenizers implemented in this crate rather than by the Hugging Face `tokenizers` crate:
//! SentencePiece-style vocabularies ([`spm`](super::spm)), Mistral's tekken
//! ([`tekken`](super::tekken)) and Gemma 4's GGUF BPE ([`bpe`](super::bpe)).
//!
//! [`NativeTokenizer`] holds what they share: the token strings and kinds, the splitting of
//! special tokens out of the text before the model sees it, and decoding. Special tokens are
//! found leftmost-longest (as the `tokenizers` crate does); control tokens only when special
//! tokens are parsed, user-defined tokens always (as llama.cpp does). A SentencePiece
//! user-defined token stored with spaces (GGUF spells Gemma's whitespace runs `"  "`) also
//! matches its `▁` spelling, as in the original SentencePiece model and tokenizer.json.

use super::bpe::MergesModel;
use super::spm::{PrefixRule, SpmModel};
use super::tekken::TekkenModel;
use crate::{Error, Result};
use std::borrow::Cow;
use std::collections::HashMap;

/// What a token is, from GGUF's `token_type` (SentencePiece's piece types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// An ordinary piece (`token_type` 1).
    Normal,
    /// The unknown token (`token_type` 2): split out of the text only when parsing specials.
    Unknown,
    /// A control token (`token_type` 3: `<s>`, `<start_of_turn>`, `[INST]`): split out of the
    /// text only when parsing specials; dropped by `decode(.., skip_special_tokens = true)`.
    Control,
    /// A user-defined token (`token_type` 4): always split out of the text, atomically.
    UserDefined,
    /// An unused piece (`token_type` 5): never emitted by the SentencePiece algorithm.
    Unused,
    /// A byte-fallback token `<0xXX>` (`token_type` 6).
    Byte(u8),
}

impl TokenKind {
    /// The kinds of `tokens` from their GGUF token types (1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte; anything else counts as normal, as llama.cpp does).
    /// Errors: [`Error::Tokenizer`] when the lengths differ or a byte token is not `<0xXX>`.
    pub(crate) fn from_gguf_types(tokens: &[String], types: &[i64]) -> Result<Vec<TokenKind>> {
        if types.len() != tokens.len() {
            return Err(Error::Tokenizer(format!(
                "{} tokens with {} token types",
                tokens.len(),
                types.len()
            )));
        }
        tokens
            .iter()
            .zip(types)
            .map(|(token, &t)| {
                Ok(match t {
                    2 => TokenKind::Unknown,
                    3 => TokenKind::Control,
                    4 => TokenKind::UserDefined,
                    5 => TokenKind::Unused,
                    6 => TokenKind::Byte(parse_byte_token(token).ok_or_else(|| {
                        Error::Tokenizer(format!("byte token `{token}` is not of the form <0xXX>"))
                    })?),
                    _ => TokenKind::Normal,
                })
            })
            .collect()
    }

    /// Whether [`NativeTokenizer::decode`] drops the token when skipping special tokens.
    fn is_special(self) -> bool {
        matches!(self, TokenKind::Control | TokenKind::Unknown)
    }
}

/// The byte of a `<0xXX>` token.
fn parse_byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The model that turns text between special tokens into ids.
#[derive(Debug)]
pub(crate) enum NativeModel {
    /// SentencePiece-style BPE: score-ordered bigram merges with byte fallback.
    Spm(SpmModel),
    /// tekken: byte-level BPE from ranks, with a split regex.
    Tekken(TekkenModel),
    /// BPE from a merge list over raw UTF-8 with `▁` for spaces (GGUF `gemma4`).
    Merges(MergesModel),
}

/// A text fragment, or a special token split out of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// A byte trie of the special-token strings, for leftmost-longest matching.
#[derive(Debug, Default)]
struct SpecialTrie {
    /// The children of the root, by first byte.
    root: Vec<u32>,
    /// The other edges: (node, byte) → node.
    edges: HashMap<(u32, u8), u32>,
    /// The token ending at each node, and whether it splits without parsing specials.
    terminal: Vec<Option<(u32, bool)>>,
}

impl SpecialTrie {
    const NONE: u32 = u32::MAX;

    fn new() -> SpecialTrie {
        SpecialTrie {
            root: vec![Self::NONE; 256],
            edges: HashMap::new(),
            terminal: vec![None],
        }
    }

    /// Adds `text` (non-empty); the first id added for a string wins.
    fn insert(&mut self, text: &str, id: u32, always: bool) {
        let mut node = 0u32;
        for (i, &b) in text.as_bytes().iter().enumerate() {
            let next = if i == 0 {
                self.root[b as usize]
            } else {
                self.edges.get(&(node, b)).copied().unwrap_or(Self::NONE)
            };
            node = if next == Self::NONE {
                let fresh = self.terminal.len() as u32;
                self.terminal.push(None);
                if i == 0 {
                    self.root[b as usize] = fresh;
                } else {
                    self.edges.insert((node, b), fresh);
                }
                fresh
            } else {
                next
            };
        }
        let slot = &mut self.terminal[node as usize];
        if slot.is_none() {
            *slot = Some((id, always));
        }
    }

    /// The longest special token starting at `bytes[at..]`: (its length, its id).
    fn longest(&self, bytes: &[u8], at: usize, parse_special: bool) -> Option<(usize, u32)> {
        let mut node = self.root[bytes[at] as usize];
        let mut best = None;
        let mut i = at;
        while node != Self::NONE {
            i += 1;
            if let Some((id, always)) = self.terminal[node as usize] {
                if always || parse_special {
                    best = Some((i - at, id));
                }
            }
            match bytes.get(i) {
                Some(&b) => node = self.edges.get(&(node, b)).copied().unwrap_or(Self::NONE),
                None => break,
            }
        }
        best
    }
}

/// A tokenizer of this crate: vocabulary, special-token splitting, model, decoding.
pub(crate) struct NativeTokenizer {
    /// The vocabulary form of each token (`▁the`, `<0x0A>`; byte-level `Ġthe` for tekken).
    tokens: Vec<String>,
    /// Token string → id (the first id of a duplicated string).
    ids: HashMap<String, u32>,
    kinds: Vec<TokenKind>,
    specials: SpecialTrie,
    model: NativeModel,
}

impl std::fmt::Debug for NativeTokenizer {
    /// A summary: the vocabulary is too large to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let model = match &self.model {
            NativeModel::Spm(_) => "SentencePiece",
            NativeModel::Tekken(_) => "tekken",
            NativeModel::Merges(_) => "BPE (merges)",
        };
        f.debug_struct("NativeTokenizer")
            .field("model", &model)
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl NativeTokenizer {
    /// A tokenizer over `tokens` (by id) of the given kinds. Errors: [`Error::Tokenizer`]
    /// when the lengths differ or the vocabulary is empty or too large for `u32` ids.
    pub(crate) fn new(
        tokens: Vec<String>,
        kinds: Vec<TokenKind>,
        model: NativeModel,
    ) -> Result<NativeTokenizer> {
        if tokens.is_empty() || tokens.len() > u32::MAX as usize {
            return Err(Error::Tokenizer(format!(
                "a vocabulary of {} tokens is not usable",
                tokens.len()
            )));
        }
        if kinds.len() != tokens.len() {
            return Err(Error::Tokenizer(format!(
                "{} token kinds for {} tokens",
                kinds.len(),
                tokens.len()
            )));
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        let mut specials = SpecialTrie::new();
        for (id, (token, &kind)) in tokens.iter().zip(&kinds).enumerate() {
            ids.entry(token.clone()).or_insert(id as u32);
            if token.is_empty() {
                continue;
            }
            match kind {
                TokenKind::Control | TokenKind::Unknown => specials.insert(token, id as u32, false),
                TokenKind::UserDefined => {
                    specials.insert(token, id as u32, true);
                    // GGUF stores SentencePiece whitespace-run tokens with spaces (Gemma's
                    // `"  "`); SentencePiece and tokenizer.json spell them `▁▁` and also
                    // match that spelling in the text.
                    if matches!(model, NativeModel::Spm(_)) && token.contains(' ') {
                        specials.insert(&token.replace(' ', "▁"), id as u32, true);
                    }
                }
                _ => {}
            }
        }
        Ok(NativeTokenizer {
            tokens,
            ids,
            kinds,
            specials,
            model,
        })
    }

    /// The number of tokens.
    pub(crate) fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a token string (vocabulary form).
    pub(crate) fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The vocabulary form of a token.
    pub(crate) fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The kind of a token (`None` outside the vocabulary).
    pub(crate) fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// The strings of the control (and unknown) tokens: the ones split out of the text only
    /// when special tokens are parsed.
    pub(crate) fn special_token_strings(&self) -> Vec<String> {
        self.tokens
            .iter()
            .zip(&self.kinds)
            .filter(|(t, k)| k.is_special() && !t.is_empty())
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// `text` cut at special tokens: control and unknown ones when `parse_special`,
    /// user-defined ones always; leftmost-longest.
    pub(crate) fn split<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let bytes = text.as_bytes();
        let mut fragments = Vec::new();
        let (mut start, mut at) = (0, 0);
        while at < bytes.len() {
            match self.specials.longest(bytes, at, parse_special) {
                Some((len, id)) => {
                    if at > start {
                        fragments.push(Fragment::Text(&text[start..at]));
                    }
                    fragments.push(Fragment::Token(id));
                    at += len;
                    start = at;
                }
                None => at += 1,
            }
        }
        if start < bytes.len() {
            fragments.push(Fragment::Text(&text[start..]));
        }
        fragments
    }

    /// Token ids of `text` (no BOS/EOS): special tokens split out first (see
    /// [`split`](Self::split)), the text between them tokenized by the model.
    pub(crate) fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let segment_rule =
            matches!(&self.model, NativeModel::Spm(m) if m.prefix_rule() == PrefixRule::Segment);
        let mut out = Vec::new();
        // Whether the next text gets the SentencePiece space prefix (see `PrefixRule`).
        let mut prefix = true;
        for fragment in self.split(text, parse_special) {
            match (fragment, &self.model) {
                (Fragment::Token(id), model) => {
                    let user_defined = self.kind(id) == Some(TokenKind::UserDefined);
                    if let (NativeModel::Spm(m), true, true) = (model, segment_rule, user_defined) {
                        if prefix {
                            // SentencePiece's prefix stands alone before the token.
                            m.encode(self, "", true, &mut out)?;
                        }
                        prefix = false;
                    } else {
                        prefix = true;
                    }
                    out.push(id);
                }
                (Fragment::Text(s), NativeModel::Spm(m)) => {
                    m.encode(self, s, prefix, &mut out)?;
                    prefix = false;
                }
                (Fragment::Text(s), NativeModel::Tekken(m)) => m.encode(s, &mut out)?,
                (Fragment::Text(s), NativeModel::Merges(m)) => m.encode(self, s, &mut out),
            }
        }
        Ok(out)
    }

    /// Whether `id` is a control (or the unknown) token: the ones `decode` drops when skipping
    /// special tokens.
    pub(crate) fn is_special(&self, id: u32) -> bool {
        self.kind(id).is_some_and(TokenKind::is_special)
    }

    /// The bytes token `id` stands for in decoded text (`None` outside the vocabulary): a byte
    /// token its byte, a tekken token its bytes, `▁` a space in SentencePiece pieces and in
    /// normal Gemma 4 BPE tokens (the others as they are spelled, as in llama.cpp).
    pub(crate) fn token_bytes(&self, id: u32) -> Option<Cow<'_, [u8]>> {
        let kind = self.kind(id)?;
        let piece = &self.tokens[id as usize];
        Some(match (kind, &self.model) {
            (TokenKind::Byte(b), _) => Cow::Owned(vec![b]),
            (TokenKind::Normal, NativeModel::Tekken(m)) => Cow::Borrowed(m.token_bytes(id)),
            (_, NativeModel::Spm(_)) | (TokenKind::Normal, NativeModel::Merges(_))
                if piece.contains('▁') =>
            {
                Cow::Owned(piece.replace('▁', " ").into_bytes())
            }
            _ => Cow::Borrowed(piece.as_bytes()),
        })
    }

    /// The text of `ids` (checked against the vocabulary by the caller). Byte pieces are
    /// joined before UTF-8 decoding; invalid sequences become U+FFFD.
    pub(crate) fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if skip_special_tokens && self.is_special(id) {
                continue;
            }
            if let Some(piece) = self.token_bytes(id) {
                bytes.extend_from_slice(&piece);
            }
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if let NativeModel::Spm(m) = &self.model {
            // The space the encoder put in front (like the `Strip` decoder of Hugging Face's
            // SentencePiece-style tokenizer.json files).
            if m.add_space_prefix() && text.starts_with(' ') {
                text.remove(0);
            }
        }
        text
    }
}
