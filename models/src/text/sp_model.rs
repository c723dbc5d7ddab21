//! Reading a SentencePiece model file (`tokenizer.model`, mistral-common's
//! `tokenizer.model.v1` / `*.model.v3`, ...): a protocol-buffers `ModelProto`.
//!
//! Only what the tokenizer needs is read, with bounds checks on every length (a malformed or
//! hostile file is an [`Error::Tokenizer`], never a panic or a huge allocation):
//!
//! - `pieces` (field 1, repeated `SentencePiece`: `piece` 1, `score` 2, `type` 3 — 1 normal,
//!   2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte);
//! - `trainer_spec` (field 2): `model_type` 3 (only BPE, 2, is supported),
//!   `treat_whitespace_as_suffix` 24 (must be false), `unk_id` 40, `bos_id` 41, `eos_id` 42;
//! - `normalizer_spec` (field 3): `precompiled_charsmap` 2 (must be empty: the identity
//!   normalizer), `add_dummy_prefix` 3, `remove_extra_whitespaces` 4 (must be false),
//!   `escape_whitespaces` 5 (must be true).
//!
//! Other fields are skipped.

use crate::{Error, Result};

/// What a SentencePiece BPE model file holds.
#[derive(Debug)]
pub(crate) struct SpModelFile {
    pub pieces: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i64>,
    pub add_dummy_prefix: bool,
    pub unk_id: Option<u32>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("SentencePiece model: {what}"))
}

/// A protocol-buffers field: its number and value.
enum Value<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
    Other,
}

/// Iterates over the fields of one message.
struct Fields<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Fields<'a> {
        Fields { data, at: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .data
                .get(self.at)
                .ok_or_else(|| bad("truncated varint"))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.at.checked_add(n))
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| bad("a field runs past the end of its message"))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    /// The next field, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>> {
        if self.at >= self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Other
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32([b[0], b[1], b[2], b[3]])
            }
            wire => return Err(bad(format!("unsupported wire type {wire}"))),
        };
        Ok(Some((number, value)))
    }
}

/// An `int32` field (negative values are sign-extended to 64 bits on the wire).
fn int32(v: u64) -> i64 {
    i64::from(v as u32 as i32)
}

/// Parses a SentencePiece model file. Errors: [`Error::Tokenizer`] when it is malformed or
/// uses what this crate does not implement (a unigram model, a normalization rule, extra
/// whitespace removal, whitespace as suffix).
pub(crate) fn parse(data: &[u8]) -> Result<SpModelFile> {
    let mut file = SpModelFile {
        pieces: Vec::new(),
        scores: Vec::new(),
        types: Vec::new(),
        add_dummy_prefix: true,
        unk_id: Some(0),
        bos_id: Some(1),
        eos_id: Some(2),
    };
    let mut model_type = 1; // unigram, the protocol's default
    let mut remove_extra_whitespaces = true;
    let mut escape_whitespaces = true;
    let mut whitespace_as_suffix = false;
    let mut charsmap = false;
    let id = |v: u64| u32::try_from(int32(v)).ok();

    let mut top = Fields::new(data);
    while let Some((number, value)) = top.next_field()? {
        match (number, value) {
            (1, Value::Bytes(piece)) => {
                let (mut text, mut score, mut kind) = (None, 0.0f32, 1i64);
                let mut fields = Fields::new(piece);
                while let Some((n, v)) = fields.next_field()? {
                    match (n, v) {
                        (1, Value::Bytes(b)) => {
                            text = Some(
                                String::from_utf8(b.to_vec())
                                    .map_err(|_| bad("a piece is not UTF-8"))?,
                            )
                        }
                        (2, Value::Fixed32(b)) => score = f32::from_le_bytes(b),
                        (3, Value::Varint(v)) => kind = int32(v),
                        _ => {}
                    }
                }
                file.pieces
                    .push(text.ok_or_else(|| bad("a piece has no text"))?);
                file.scores.push(score);
                file.types.push(kind);
            }
            (2, Value::Bytes(spec)) => {
                let mut fields = Fields::new(spec);
                while let Some((n, v)) = fields.next_field()? {
                    match (n, v) {
                        (3, Value::Varint(v)) => model_type = int32(v),
                        (24, Value::Varint(v)) => whitespace_as_suffix = v != 0,
                        (40, Value::Varint(v)) => file.unk_id = id(v),
                        (41, Value::Varint(v)) => file.bos_id = id(v),
                        (42, Value::Varint(v)) => file.eos_id = id(v),
                        _ => {}
                    }
                }
            }
            (3, Value::Bytes(spec)) => {
                let mut fields = Fields::new(spec);
                while let Some((n, v)) = fields.next_field()? {
                    match (n, v) {
                        (2, Value::Bytes(b)) => charsmap = !b.is_empty(),
                        (3, Value::Varint(v)) => file.add_dummy_prefix = v != 0,
                        (4, Value::Varint(v)) => remove_extra_whitespaces = v != 0,
                        (5, Value::Varint(v)) => escape_whitespaces = v != 0,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if model_type != 2 {
        return Err(bad(format!(
            "model type {model_type} is not supported (only BPE, 2)"
        )));
    }
    if charsmap || remove_extra_whitespaces || !escape_whitespaces || whitespace_as_suffix {
        return Err(bad(
            "only the identity normalizer is supported (no precompiled character map, no \
             extra-whitespace removal, spaces escaped as a prefix `▁`)",
        ));
    }
    if file.pieces.is_empty() {
        return Err(bad("no pieces"));
    }
    let n = file.pieces.len();
    for slot in [&mut file.unk_id, &mut file.bos_id, &mut file.eos_id] {
        *slot = slot.filter(|&id| (id as usize) < n);
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u8, wire: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(number << 3) | wire];
        if wire == 2 {
            f.push(payload.len() as u8);
        }
        f.extend(payload);
        f
    }

    fn piece(text: &str, score: f32, kind: u8) -> Vec<u8> {
        let mut p = field(1, 2, text.as_bytes());
        p.extend(field(2, 5, &score.to_le_bytes()));
        p.extend(field(3, 0, &[kind]));
        field(1, 2, &p)
    }

    /// A BPE model with the identity normalizer and the given pieces.
    fn model(pieces: &[Vec<u8>]) -> Vec<u8> {
        let mut m: Vec<u8> = pieces.concat();
        m.extend(field(2, 2, &[0x18, 2])); // trainer_spec.model_type = BPE
        m.extend(field(
            3,
            2,
            &[
                0x0a, 8, b'i', b'd', b'e', b'n', b't', b'i', b't', b'y', 0x20, 0,
            ],
        ));
        m
    }

    #[test]
    fn reads_pieces_and_specs() {
        let m = model(&[
            piece("<unk>", 0.0, 2),
            piece("▁a", -1.5, 1),
            piece("<s>", 0.0, 3),
        ]);
        let f = parse(&m).unwrap();
        assert_eq!(f.pieces, ["<unk>", "▁a", "<s>"]);
        assert_eq!(f.scores, [0.0, -1.5, 0.0]);
        assert_eq!(f.types, [2, 1, 3]);
        assert!(f.add_dummy_prefix);
        // bos 1 and unk 0 by default; eos 2 by default.
        assert_eq!((f.unk_id, f.bos_id, f.eos_id), (Some(0), Some(1), Some(2)));
    }

    #[test]
    fn refuses_what_it_does_not_implement_or_cannot_read() {
        let pieces = [piece("<unk>", 0.0, 2), piece("a", 0.0, 1)];
        let good = model(&pieces);
        assert!(parse(&good).is_ok());
        // Truncated anywhere: an error, never a panic.
        for cut in 1..good.len() {
            let _ = parse(&good[..cut]);
        }
        assert!(parse(&good[..good.len() - 1]).is_err());
        // Unigram (model_type 1).
        let mut unigram: Vec<u8> = pieces.concat();
        unigram.extend(field(2, 2, &[0x18, 1]));
        unigram.extend(field(3, 2, &[0x20, 0]));
        assert!(matches!(parse(&unigram), Err(Error::Tokenizer(m)) if m.contains("model type")));
        // The default normalizer spec removes extra whitespace: not implemented.
        let mut default_norm: Vec<u8> = pieces.concat();
        default_norm.extend(field(2, 2, &[0x18, 2]));
        assert!(
            matches!(parse(&default_norm), Err(Error::Tokenizer(m)) if m.contains("normalizer"))
        );
        // A precompiled character map (a normalization rule).
        let mut charsmap = model(&pieces);
        charsmap.extend(field(3, 2, &[0x12, 1, 7]));
        assert!(parse(&charsmap).is_err());
        // Wire types 3/4 (groups), an over-long varint, a length past the end.
        assert!(parse(&[0x0b]).is_err());
        assert!(
            parse(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
                .is_err()
        );
        assert!(parse(&[0x0a, 0x7f, 0x00]).is_err());
        // A piece that is not UTF-8, and no pieces at all.
        assert!(parse(&model(&[field(1, 2, &field(1, 2, &[0xff]))])).is_err());
        assert!(parse(&model(&[])).is_err());
    }
}
