//! SentencePiece-style BPE vocabularies (GGUF `tokenizer.ggml.model == "llama"`: Llama 2,
//! Mistral v0.1–v0.3, Gemma 3), tokenized the way llama.cpp's SPM tokenizer does.
//!
//! A vocabulary is a list of pieces with a score and a type (normal, unknown, control,
//! user-defined, unused, byte) and no merge list. Encoding one text fragment:
//!
//! 1. When `add_space_prefix` is set and the fragment starts the text or follows a token split
//!    out of it (a control or user-defined token), a space is put in front. (A SentencePiece
//!    `.model` file instead takes SentencePiece's own rule, [`PrefixRule::Segment`]: one
//!    space in front of each stretch of text between control tokens, none after a
//!    user-defined token.)
//! 2. Every space becomes `▁` (U+2581).
//! 3. The fragment starts as one symbol per character. Repeatedly, of all pairs of adjacent
//!    symbols whose concatenation is a piece, the pair whose piece has the **highest score**
//!    is merged (ties: the leftmost pair).
//! 4. Each final symbol is emitted as its piece; a symbol that is no piece (a character the
//!    vocabulary lacks) becomes the byte-fallback tokens `<0xXX>` of its UTF-8 bytes (one
//!    unknown token for the character where a byte token is missing).
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
    prefix_rule: PrefixRule,
    /// The token of each byte for byte fallback.
    byte_tokens: Vec<Option<u32>>,
    unk: Option<u32>,
}

/// Where the space prefix goes (with `add_space_prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrefixRule {
    /// llama.cpp (GGUF vocabularies): in front of every text fragment that starts the text or
    /// follows a split-out token, control or user-defined.
    Fragment,
    /// SentencePiece (`.model` files): in front of each stretch between control tokens, a
    /// user-defined token at its start included; none after a user-defined token.
    Segment,
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
    (add_space_prefix, prefix_rule): (bool, PrefixRule),
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
    let kinds = TokenKind::from_gguf_types(&tokens, types)?;
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
        prefix_rule,
        byte_tokens,
        unk,
    };
    NativeTokenizer::new(tokens, kinds, NativeModel::Spm(model))
}

impl SpmModel {
    /// Whether a space is put in front of the text (and removed again by decoding).
    pub(crate) fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// Where the space prefix goes.
    pub(crate) fn prefix_rule(&self) -> PrefixRule {
        self.prefix_rule
    }

    /// Appends the ids of one text fragment; `prefix`: the space prefix goes in front (when
    /// the vocabulary adds one; the caller applies the [`PrefixRule`]).
    pub(crate) fn encode(
        &self,
        vocab: &NativeTokenizer,
        text: &str,
        prefix: bool,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let mut escaped = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && prefix {
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
            let bytes: Option<Vec<u32>> = piece
                .bytes()
                .map(|b| self.byte_tokens[b as usize])
                .collect();
            match (bytes, self.unk) {
                (Some(bytes), _) => out.extend(bytes),
                (None, Some(unk)) => out.push(unk),
                (None, None) => {
                    return Err(Error::Tokenizer(format!(
                        "the vocabulary has no piece or byte tokens for {piece:?} and no \
                         unknown token"
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Builds the tokenizer of a SentencePiece BPE `.model` file (see [`sp_model`](super::sp_model)),
/// with SentencePiece's [`PrefixRule::Segment`].
pub(crate) fn from_model_file(file: super::sp_model::SpModelFile) -> Result<NativeTokenizer> {
    tokenizer(
        file.pieces,
        file.scores,
        &file.types,
        (file.add_dummy_prefix, PrefixRule::Segment),
        file.unk_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokenizer over `(piece, score, GGUF type)`; id 0 must be the unknown token.
    fn vocab(pieces: &[(&str, f32, i64)], prefix: bool, rule: PrefixRule) -> NativeTokenizer {
        let tokens = pieces.iter().map(|p| p.0.to_string()).collect();
        let scores = pieces.iter().map(|p| p.1).collect();
        let types: Vec<i64> = pieces.iter().map(|p| p.2).collect();
        tokenizer(tokens, scores, &types, (prefix, rule), Some(0)).unwrap()
    }

    fn plain(pieces: &[(&str, f32, i64)]) -> NativeTokenizer {
        vocab(pieces, false, PrefixRule::Fragment)
    }

    #[test]
    fn equal_scores_merge_leftmost_first() {
        let t = plain(&[("<unk>", 0.0, 2), ("a", -5.0, 1), ("aa", -1.0, 1)]);
        // "aaa": both pairs are "aa"; the left one merges, leaving "a".
        assert_eq!(t.encode("aaa", true).unwrap(), vec![2, 1]);
    }

    #[test]
    fn the_highest_score_merges_first() {
        let pieces = [
            ("<unk>", 0.0, 2),
            ("a", -9.0, 1),
            ("b", -9.0, 1),
            ("c", -9.0, 1),
            ("ab", -2.0, 1),
            ("bc", -1.0, 1),
        ];
        assert_eq!(plain(&pieces).encode("abc", true).unwrap(), vec![1, 5]);
        let mut swapped = pieces;
        swapped[4].1 = -1.0;
        swapped[5].1 = -2.0;
        assert_eq!(plain(&swapped).encode("abc", true).unwrap(), vec![4, 3]);
    }

    #[test]
    fn unused_pieces_are_resegmented_but_can_be_merged_further() {
        let t = plain(&[
            ("<unk>", 0.0, 2),
            ("a", -9.0, 1),
            ("b", -9.0, 1),
            ("c", -9.0, 1),
            ("ab", 0.0, 5),
            ("abc", -1.0, 1),
        ]);
        assert_eq!(t.encode("ab", true).unwrap(), vec![1, 2]);
        assert_eq!(t.encode("abc", true).unwrap(), vec![5]);
    }

    #[test]
    fn control_pieces_are_never_formed_by_merges() {
        let t = plain(&[
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("<", -9.0, 1),
            ("s", -9.0, 1),
            (">", -9.0, 1),
            ("<s", -1.0, 1),
        ]);
        assert_eq!(t.encode("<s>", false).unwrap(), vec![5, 4]);
        assert_eq!(t.encode("<s>", true).unwrap(), vec![1]);
        assert_eq!(t.decode(&[1, 5, 4], true), "<s>");
        assert_eq!(t.decode(&[1, 5, 4], false), "<s><s>");
    }

    #[test]
    fn characters_without_a_piece_fall_back_to_bytes_or_unknown() {
        let mut pieces = vec![("<unk>", 0.0, 2), ("x", -1.0, 1)];
        let t = plain(&pieces);
        // No byte tokens: one unknown token per character.
        assert_eq!(t.encode("xéx", true).unwrap(), vec![1, 0, 1]);
        pieces.extend([("<0xC3>", 0.0, 6), ("<0xA9>", 0.0, 6)]);
        let t = plain(&pieces);
        assert_eq!(t.encode("xéx", true).unwrap(), vec![1, 2, 3, 1]);
        assert_eq!(t.decode(&[1, 2, 3, 1], false), "xéx");
        // A lone lead byte decodes to U+FFFD.
        assert_eq!(t.decode(&[2], false), "\u{FFFD}");
        // Neither a byte token nor an unknown token: a typed error.
        let tokens = vec!["x".to_string()];
        let none = tokenizer(tokens, vec![0.0], &[1], (false, PrefixRule::Fragment), None);
        let err = none.unwrap().encode("y", true).unwrap_err();
        assert!(matches!(err, Error::Tokenizer(_)));
        // A byte token must be spelled <0xXX>.
        let bad = tokenizer(
            vec!["<0x4>".into()],
            vec![0.0],
            &[6],
            (false, PrefixRule::Fragment),
            None,
        );
        assert!(matches!(bad, Err(Error::Tokenizer(_))));
    }

    #[test]
    fn space_prefix_rules() {
        let pieces = [
            ("<unk>", 0.0, 2),
            ("▁", -3.0, 1),
            ("x", -3.0, 1),
            ("▁x", -1.0, 1),
            ("[U]", 0.0, 4),
            ("<c>", 0.0, 3),
        ];
        // llama.cpp: a prefix after every split-out token.
        let t = vocab(&pieces, true, PrefixRule::Fragment);
        assert_eq!(t.encode("[U] x", true).unwrap(), vec![4, 1, 3]);
        assert_eq!(t.encode("x<c>x", true).unwrap(), vec![3, 5, 3]);
        // SentencePiece: the prefix starts the segment, even before a user-defined token.
        let t = vocab(&pieces, true, PrefixRule::Segment);
        assert_eq!(t.encode("[U] x", true).unwrap(), vec![1, 4, 3]);
        assert_eq!(t.encode("x[U]x", true).unwrap(), vec![3, 4, 2]);
        assert_eq!(t.encode("x<c>x", true).unwrap(), vec![3, 5, 3]);
        // Decoding removes the one prefix space.
        assert_eq!(t.decode(&[1, 3], false), " x");
        assert_eq!(t.encode("", true).unwrap(), Vec::<u32>::new());
        // Without the prefix flag, nothing is added.
        let t = vocab(&pieces, false, PrefixRule::Fragment);
        assert_eq!(t.encode("x x", true).unwrap(), vec![2, 3]);
        assert_eq!(t.decode(&[2, 3], false), "x x");
    }

    #[test]
    fn long_inputs_and_odd_scores_are_handled() {
        // NaN and -0.0 scores compare without panicking; a long run merges in time.
        let t = plain(&[("<unk>", 0.0, 2), ("a", f32::NAN, 1), ("aa", -0.0, 1)]);
        let ids = t.encode(&"a".repeat(100_001), true).unwrap();
        assert_eq!(ids.len(), 50_001);
        assert_eq!(ids[..2], [2, 2]);
        assert_eq!(ids[50_000], 1);
    }
}
