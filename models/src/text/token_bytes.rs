//! The raw bytes of each token of a Hugging Face tokenizer: what its decoder turns one token
//! into, before any UTF-8 decoding (which would replace the halves of a multibyte character
//! by U+FFFD). Grammar engines match these bytes against a grammar.
//!
//! The decoder is read as data (its serialized form) and replayed on one token at a time:
//! byte-level BPE undoes GPT-2's byte → character map (a token with a character outside that
//! map stands for its own UTF-8, as the `tokenizers` decoder does), `ByteFallback` turns
//! `<0xXX>` into that byte, `Replace` and `Metaspace` put spaces back for `▁`. `Strip` and
//! `Fuse` act on the whole text, not on a token, and are left out.

use std::collections::HashSet;

/// The per-token steps of a Hugging Face decoder.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DecodeSteps {
    /// `<0xXX>` tokens are that byte.
    byte_fallback: bool,
    /// String replacements, in order (`▁` → space).
    replacements: Vec<(String, String)>,
    /// GPT-2's byte-level map is undone.
    byte_level: bool,
}

impl DecodeSteps {
    /// The steps of a serialized decoder (`tokenizer.json`'s `decoder` object); unknown
    /// decoders add none.
    pub(crate) fn from_json(decoder: &serde_json::Value) -> DecodeSteps {
        let mut steps = DecodeSteps::default();
        steps.add(decoder);
        steps
    }

    fn add(&mut self, decoder: &serde_json::Value) {
        match decoder.get("type").and_then(|t| t.as_str()) {
            Some("Sequence") => {
                for d in decoder
                    .get("decoders")
                    .and_then(|d| d.as_array())
                    .into_iter()
                    .flatten()
                {
                    self.add(d);
                }
            }
            Some("ByteLevel") => self.byte_level = true,
            Some("ByteFallback") => self.byte_fallback = true,
            Some("Replace") => {
                let pattern = decoder.pointer("/pattern/String").and_then(|p| p.as_str());
                let content = decoder.get("content").and_then(|c| c.as_str());
                if let (Some(pattern), Some(content)) = (pattern, content) {
                    if !pattern.is_empty() {
                        self.replacements
                            .push((pattern.to_string(), content.to_string()));
                    }
                }
            }
            Some("Metaspace") => {
                let replacement = decoder.get("replacement").and_then(|r| r.as_str());
                if let Some(r) = replacement.filter(|r| !r.is_empty()) {
                    self.replacements.push((r.to_string(), " ".to_string()));
                }
            }
            _ => {}
        }
    }

    /// The bytes one token string stands for.
    pub(crate) fn apply(&self, token: &str) -> Vec<u8> {
        if self.byte_fallback {
            if let Some(b) = byte_token(token) {
                return vec![b];
            }
        }
        let mut text = std::borrow::Cow::Borrowed(token);
        for (pattern, content) in &self.replacements {
            if text.contains(pattern.as_str()) {
                text = std::borrow::Cow::Owned(text.replace(pattern.as_str(), content));
            }
        }
        if self.byte_level {
            if let Some(bytes) = text.chars().map(gpt2_byte).collect::<Option<Vec<u8>>>() {
                return bytes;
            }
        }
        text.into_owned().into_bytes()
    }
}

/// What [`DecodeSteps`] needs of a Hugging Face tokenizer, built once per tokenizer.
#[derive(Debug, Clone)]
pub(crate) struct HfTokenBytes {
    pub(crate) steps: DecodeSteps,
    /// Ids of the added tokens marked special.
    pub(crate) specials: HashSet<u32>,
}

impl HfTokenBytes {
    pub(crate) fn new(tokenizer: &tokenizers::Tokenizer) -> HfTokenBytes {
        let steps = tokenizer
            .get_decoder()
            .and_then(|d| serde_json::to_value(d).ok())
            .map(|d| DecodeSteps::from_json(&d))
            .unwrap_or_default();
        let specials = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        HfTokenBytes { steps, specials }
    }
}

/// The byte of a `<0xXX>` token.
fn byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Whether GPT-2's map keeps byte `b` as the character of the same code point.
const fn printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The 68 bytes GPT-2's map moves to U+0100 and up, in byte order.
const MOVED: [u8; 68] = {
    let mut moved = [0u8; 68];
    let (mut b, mut n) = (0usize, 0usize);
    while b < 256 {
        if !printable(b as u8) {
            moved[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    moved
};

/// The byte GPT-2's byte-level map spells as `c`, if any.
fn gpt2_byte(c: char) -> Option<u8> {
    let u = c as u32;
    match u {
        0..=255 if printable(u as u8) => Some(u as u8),
        256..=323 => Some(MOVED[(u - 256) as usize]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_map_is_inverted() {
        // Ġ (U+0120) is the space, Ċ (U+010A) the newline, Ā (U+0100) byte 0; "Ã©" is é's
        // two UTF-8 bytes C3 A9.
        let steps = DecodeSteps::from_json(&serde_json::json!({"type": "ByteLevel"}));
        assert_eq!(steps.apply("Ġthe"), b" the");
        assert_eq!(steps.apply("Ċ"), b"\n");
        assert_eq!(steps.apply("Ā"), [0u8]);
        assert_eq!(steps.apply("Ã©"), "é".as_bytes());
        assert_eq!(steps.apply("Ã"), [0xC3]);
        // Every byte has exactly one character.
        let all: HashSet<u8> = (0u32..400)
            .filter_map(char::from_u32)
            .filter_map(gpt2_byte)
            .collect();
        assert_eq!(all.len(), 256);
        // A character outside the map: the token's own UTF-8, as the tokenizers decoder does.
        assert_eq!(steps.apply("<|im_start|>"), b"<|im_start|>");
        assert_eq!(steps.apply("a b"), b"a b");
    }

    #[test]
    fn sentencepiece_style_decoders() {
        let steps = DecodeSteps::from_json(&serde_json::json!({
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}
            ]
        }));
        assert_eq!(steps.apply("▁the"), b" the");
        assert_eq!(steps.apply("<0x0A>"), b"\n");
        assert_eq!(steps.apply("<0xE2>"), [0xE2]);
        assert_eq!(steps.apply("<start_of_turn>"), b"<start_of_turn>");
        let metaspace = DecodeSteps::from_json(&serde_json::json!({
            "type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true
        }));
        assert_eq!(metaspace.apply("▁a▁b"), b" a b");
        // Without ByteFallback, `<0x0A>` is text.
        assert_eq!(metaspace.apply("<0x0A>"), b"<0x0A>");
    }
}
