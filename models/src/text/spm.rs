//! SentencePiece-style BPE vocabularies (GGUF `tokenizer.ggml.model == "llama"`: Llama 2,
//! Mistral v0.1–v0.3, Gemma 3), tokenized the way llama.cpp's SPM tokenizer does.
//!
//! A vocabulary is a list of pieces with a score and a type (normal, unknown, control,
//! user-defined, unused, byte) and no merge list. Encoding one text fragment:
//!
//! 1. When `add_space_prefix` is set and the fragment starts the text or follows a token split
//!    out of it (a control or user-defined token), a space is put in front.
//! 2. Every space becomes `▁` (U+2581).
//! 3. The fragment starts as one symbol per character. Repeatedly, of all pairs of adjacent
//!    symbols whose concatenation is a piece, the pair whose piece has the **highest score**
//!    is merged (ties: the leftmost pair).
//! 4. Each final symbol is emitted as its piece; a symbol that is no piece (a character the
//!    vocabulary lacks) becomes the byte-fallback tokens `<0xXX>` of its UTF-8 bytes (the
//!    unknown token where a byte token is missing too).
//!
//! Control, unknown and byte pieces are never the result of a merge (as in SentencePiece
//! itself, whose `<s>` typed as text stays text); an unused piece may be formed but is then
//! emitted as the two symbols it was merged from, recursively (SentencePiece's
//! resegmentation). Decoding turns `▁` back into spaces, joins byte tokens before decoding
//! UTF-8, and removes the one space step 1 added.
//!
//! **Why our own implementation, not a Hugging Face `tokenizers` BPE.** A BPE equivalent needs a
//! merge list derived from the vocabulary (every split of every piece into two pieces, ranked
//! by the score of the result): millions of entries for Gemma 3's 262,144 pieces, built at
//! every load. It would still not be the same algorithm: BPE ranks two merges yielding the same
//! piece differently where SentencePiece ties them and takes the leftmost, and BPE applies
//! byte fallback before merging, not after. The algorithm above is short, needs only the
//! vocabulary, and reproduces the reference ids exactly (`tests/tokenizer_goldens_spm.rs`:
//! llama.cpp's goldens, `sentencepiece` on the Mistral and Llama 2 vocabularies, and the
//! Gemma 3 tokenizer.json through Hugging Face `tokenizers`).

use super::native::{NativeModel, NativeTokenizer, TokenKind};
use crate::{Error, Result};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// The model half of a SentencePiece-style tokenizer (the vocabulary lives in
/// [`NativeTokenizer`]).
#[derive(Debug)]
pub(crate) struct SpmModel {
    /// The score of each piece (`-0.0` made `0.0`, NaN made `-inf`, so that comparisons are
    /// total and agree with llama.cpp's `<`).
    scores: Vec<f32>,
    add_space_prefix: bool,
    /// The token of each byte for byte fallback.
    byte_tokens: Vec<Option<u32>>,
    unk: Option<u32>,
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Bytes of the merged piece (to detect a stale candidate).
    len: usize,
    id: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Highest score first; on ties, the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A symbol of the merge loop: a byte range of the escaped fragment in a linked list.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    /// 0 once merged into its left neighbour.
    len: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

/// Builds a SentencePiece-style tokenizer from a vocabulary: pieces, their scores and GGUF
/// token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte; anything
/// else counts as normal, as llama.cpp does).
///
/// Errors: [`Error::Tokenizer`] when the lengths differ or a byte token's text is not
/// `<0xXX>`.
pub(crate) fn tokenizer(
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: &[i64],
    add_space_prefix: bool,
    unk: Option<u32>,
) -> Result<NativeTokenizer> {
    let n = tokens.len();
    if scores.len() != n || types.len() != n {
        return Err(Error::Tokenizer(format!(
            "{n} tokens with {} scores and {} token types",
            scores.len(),
            types.len()
        )));
    }
    let mut kinds = Vec::with_capacity(n);
    for (token, &t) in tokens.iter().zip(types) {
        kinds.push(match t {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte(parse_byte_token(token).ok_or_else(|| {
                Error::Tokenizer(format!("byte token `{token}` is not of the form <0xXX>"))
            })?),
            _ => TokenKind::Normal,
        });
    }
    let scores = scores
        .into_iter()
        .map(|s| {
            if s.is_nan() {
                f32::NEG_INFINITY
            } else {
                s + 0.0
            }
        })
        .collect();
    // Byte fallback like llama.cpp: the piece `<0xXX>`, else the byte itself as a piece.
    let mut byte_tokens = vec![None; 256];
    let mut by_text: HashMap<&str, u32> = HashMap::new();
    for (id, token) in tokens.iter().enumerate() {
        by_text.entry(token.as_str()).or_insert(id as u32);
    }
    for (b, slot) in byte_tokens.iter_mut().enumerate() {
        let hex = format!("<0x{b:02X}>");
        *slot = by_text.get(hex.as_str()).copied().or_else(|| {
            char::from_u32(b as u32)
                .filter(|c| c.is_ascii())
                .and_then(|c| by_text.get(c.to_string().as_str()).copied())
        });
    }
    drop(by_text);
    let model = SpmModel {
        scores,
        add_space_prefix,
        byte_tokens,
        unk,
    };
    NativeTokenizer::new(tokens, kinds, NativeModel::Spm(model))
}

/// The byte of a `<0xXX>` token.
fn parse_byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl SpmModel {
    /// Whether a space is put in front of the text (and removed again by decoding).
    pub(crate) fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Appends the ids of one text fragment; `after_token`: the fragment starts the text or
    /// follows a token split out of it.
    pub(crate) fn encode(
        &self,
        vocab: &NativeTokenizer,
        text: &str,
        after_token: bool,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let mut escaped = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && after_token {
            escaped.push('▁');
        }
        for c in text.chars() {
            escaped.push(if c == ' ' { '▁' } else { c });
        }
        let mut symbols: Vec<Symbol> = escaped
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.wrapping_sub(1),
                next: i + 1,
            })
            .collect();
        let Some(last) = symbols.last_mut() else {
            return Ok(());
        };
        last.next = NONE;

        let mut queue = BinaryHeap::new();
        for right in 1..symbols.len() {
            self.push_bigram(vocab, &escaped, &symbols, right - 1, right, &mut queue);
        }
        // How unused pieces were formed: (start, len) → length of the left part.
        let mut unused_splits: HashMap<(usize, usize), usize> = HashMap::new();
        while let Some(bigram) = queue.pop() {
            let (l, r) = (bigram.left, bigram.right);
            let (left, right) = (symbols[l], symbols[r]);
            if left.len == 0
                || right.len == 0
                || left.next != r
                || left.len + right.len != bigram.len
            {
                continue; // stale: one side was merged since
            }
            if vocab.kind(bigram.id) == Some(TokenKind::Unused) {
                unused_splits.insert((left.start, bigram.len), left.len);
            }
            symbols[l].len = bigram.len;
            symbols[r].len = 0;
            symbols[l].next = right.next;
            if right.next != NONE {
                symbols[right.next].prev = l;
            }
            if left.prev != NONE {
                self.push_bigram(vocab, &escaped, &symbols, left.prev, l, &mut queue);
            }
            if right.next != NONE {
                self.push_bigram(vocab, &escaped, &symbols, l, right.next, &mut queue);
            }
        }

        let mut i = 0;
        while i != NONE {
            let s = symbols[i];
            self.emit(vocab, &escaped, s.start, s.len, &unused_splits, out)?;
            i = s.next;
        }
        Ok(())
    }

    /// Queues the merge of symbols `l` and `r` when their concatenation is a piece that a
    /// merge may form.
    fn push_bigram(
        &self,
        vocab: &NativeTokenizer,
        text: &str,
        symbols: &[Symbol],
        l: usize,
        r: usize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        let start = symbols[l].start;
        let len = symbols[l].len + symbols[r].len;
        let Some(id) = vocab.token_to_id(&text[start..start + len]) else {
            return;
        };
        if matches!(
            vocab.kind(id),
            Some(TokenKind::Normal | TokenKind::UserDefined | TokenKind::Unused)
        ) {
            queue.push(Bigram {
                score: self.scores[id as usize],
                left: l,
                right: r,
                len,
                id,
            });
        }
    }

    /// Appends the ids of the final symbol `text[start..start + len]` (an unused piece as the
    /// pieces it was merged from, with an explicit stack: the nesting is as deep as the text is
    /// long).
    fn emit(
        &self,
        vocab: &NativeTokenizer,
        text: &str,
        start: usize,
        len: usize,
        unused_splits: &HashMap<(usize, usize), usize>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let mut stack = vec![(start, len)];
        while let Some((start, len)) = stack.pop() {
            let piece = &text[start..start + len];
            if let Some(id) = vocab.token_to_id(piece) {
                match vocab.kind(id) {
                    Some(TokenKind::Normal | TokenKind::UserDefined) => {
                        out.push(id);
                        continue;
                    }
                    Some(TokenKind::Unused) => {
                        if let Some(&left) = unused_splits.get(&(start, len)) {
                            stack.push((start + left, len - left));
                            stack.push((start, left));
                            continue;
                        }
                    }
                    _ => {}
                }
            }
            for &b in piece.as_bytes() {
                let id = self.byte_tokens[b as usize].or(self.unk).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "the vocabulary has no token for byte 0x{b:02X} and no unknown token"
                    ))
                })?;
                out.push(id);
            }
        }
        Ok(())
    }
}
