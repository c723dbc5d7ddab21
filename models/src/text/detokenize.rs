//! Streaming detokenization: text as tokens arrive, never cutting a UTF-8 character.
//!
//! Byte-level BPE tokens can hold part of a character (an emoji is often 2–4 tokens), and
//! SentencePiece-style decoders change a token's text depending on what precedes it. The
//! [`StreamingDetokenizer`] therefore decodes a small window of recent ids (the last emitted
//! chunk plus the pending ids), emits only the new suffix, and holds it back while it ends in
//! U+FFFD (an incomplete character). The concatenation of everything it returns equals
//! [`Tokenizer::decode`] of all the ids.

use super::tokenizer::Tokenizer;
use crate::Result;

/// Turns a stream of token ids into text chunks.
#[derive(Debug)]
pub struct StreamingDetokenizer<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    /// Ids from `prefix_offset` on (older ones are dropped).
    ids: Vec<u32>,
    /// `ids[..read_offset]` has been emitted; `ids[..read_offset]` decodes to `prefix_text`.
    read_offset: usize,
    prefix_text: String,
}

impl<'a> StreamingDetokenizer<'a> {
    /// A detokenizer that keeps special tokens in the text (like `decode(ids, false)`).
    pub fn new(tokenizer: &'a Tokenizer) -> StreamingDetokenizer<'a> {
        StreamingDetokenizer {
            tokenizer,
            skip_special_tokens: false,
            ids: Vec::new(),
            read_offset: 0,
            prefix_text: String::new(),
        }
    }

    /// Drops special tokens from the text (like `decode(ids, true)`).
    pub fn skip_special_tokens(mut self, skip: bool) -> StreamingDetokenizer<'a> {
        self.skip_special_tokens = skip;
        self
    }

    /// Adds a token; returns the text it completes, or `None` while a character is incomplete
    /// (or the token adds no text).
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, self.skip_special_tokens)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let Some(chunk) = new_suffix(&self.prefix_text, &text) else {
            return Ok(None);
        };
        let chunk = chunk.to_string();
        // The window restarts at the ids just emitted: they are the context the next token's
        // text may depend on (e.g. SentencePiece's leading-space handling).
        self.ids.drain(..self.read_offset);
        self.read_offset = self.ids.len();
        self.prefix_text = self.tokenizer.decode(&self.ids, self.skip_special_tokens)?;
        Ok(Some(chunk))
    }

    /// Ends the stream: returns the text still held back (which may end in U+FFFD if the
    /// tokens stopped inside a character) and resets the detokenizer.
    pub fn finish(&mut self) -> Result<String> {
        let text = self.tokenizer.decode(&self.ids, self.skip_special_tokens)?;
        let rest = new_suffix(&self.prefix_text, &text)
            .unwrap_or_default()
            .to_string();
        self.ids.clear();
        self.read_offset = 0;
        self.prefix_text.clear();
        Ok(rest)
    }
}

/// The part of `text` after `prefix`, when there is one (`None` if `text` adds nothing or does
/// not extend `prefix` at a character boundary).
fn new_suffix<'t>(prefix: &str, text: &'t str) -> Option<&'t str> {
    if text.len() <= prefix.len() {
        return None;
    }
    if text.starts_with(prefix) {
        return text.get(prefix.len()..);
    }
    // A decoder rewrote the context (rare): emit past the common prefix's length if possible.
    text.get(prefix.len()..)
}
