//! Building a tokenizer from the vocabulary embedded in a GGUF file (`tokenizer.ggml.*`
//! metadata), the way llama.cpp tokenizes it.
//!
//! Three tokenizer models ([`SUPPORTED_GGUF_TOKENIZER_MODELS`]):
//! - `gpt2`, byte-level BPE: a Hugging Face `tokenizers` BPE. The pre-tokenizer is chosen by
//!   `tokenizer.ggml.pre` and reproduces llama.cpp's split regexes (applied one after the
//!   other, keeping both matches and the text between them, as llama.cpp's
//!   `unicode_regex_split` does). Control and user-defined tokens (`token_type` 3 and 4) become
//!   added tokens, so they encode atomically.
//! - `llama`, SentencePiece-style (Llama 2, Mistral v0.x, Gemma 3): pieces with scores and
//!   types, no merges, tokenized by this crate's own implementation of llama.cpp's SPM
//!   algorithm (see `spm.rs` for the algorithm and why it is not a `tokenizers` BPE).
//! - `gemma4`, BPE with a merge list over raw UTF-8 and `▁` for spaces (llama.cpp's `gemma4`
//!   pre-tokenizer): this crate's own implementation (see `bpe.rs`). As llama.cpp, BOS is
//!   always added (a `false` `tokenizer.ggml.add_bos_token` is overridden), there is no space
//!   prefix, and `<turn|>` ends a turn.

use super::bpe::{self, MergesModel};
use super::native::{NativeModel, NativeTokenizer, TokenKind};
use super::spm;
use super::tokenizer::Backend;
use crate::load::gguf_file::GgufFile as Gguf;
use crate::{Error, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// GGUF `token_type` of a control token (`<|im_start|>`, `<|begin_of_text|>`, ...).
const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF `token_type` of a user-defined token (added tokens that are not special).
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The `tokenizer.ggml.model` values [`Tokenizer::from_gguf`](super::Tokenizer::from_gguf)
/// builds: `gpt2` (byte-level BPE, with a pre-tokenizer of [`SUPPORTED_PRE_TOKENIZERS`]),
/// `llama` (SentencePiece-style) and `gemma4` (Gemma 4's BPE with `▁` for spaces).
///
/// ```
/// assert!(mlx_models::text::SUPPORTED_GGUF_TOKENIZER_MODELS.contains(&"llama"));
/// assert!(mlx_models::text::SUPPORTED_GGUF_TOKENIZER_MODELS.contains(&"gemma4"));
/// ```
pub const SUPPORTED_GGUF_TOKENIZER_MODELS: &[&str] = &["gpt2", "llama", "gemma4"];

/// Llama 3 (`llama-bpe`): llama.cpp's adaptation of the tokenizer.json regex (case-insensitive
/// contractions spelled out, numbers in groups of up to three digits).
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2: like Llama 3 but digits one by one.
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen3.5: Qwen2 with combining marks (`\p{M}`) kept inside words.
const REGEX_QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's original regex.
const REGEX_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Digits one by one (applied before [`REGEX_GPT2`] by StarCoder-style vocabularies).
const REGEX_DIGIT: &str = r"\p{N}";

/// How llama.cpp pre-tokenizes one `tokenizer.ggml.pre` family.
struct PreTokenizerSpec {
    /// Regexes applied in order (each splits every piece left by the previous ones).
    regexes: &'static [&'static str],
    /// llama.cpp's `ignore_merges`: a word that is itself a token is emitted whole.
    ignore_merges: bool,
    /// llama.cpp's default for `add_bos` (the GGUF key `tokenizer.ggml.add_bos_token` wins).
    add_bos: bool,
}

/// The `tokenizer.ggml.pre` values of `gpt2` (byte-level BPE) GGUF vocabularies that
/// [`Tokenizer::from_gguf`](super::Tokenizer::from_gguf) reproduces.
///
/// ```
/// assert!(mlx_models::text::SUPPORTED_PRE_TOKENIZERS.contains(&"qwen2"));
/// ```
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &[
    "llama-bpe",
    "llama3",
    "llama-v3",
    "qwen2",
    "deepseek-r1-qwen",
    "qwen35",
    "gpt-2",
    "mpt",
    "olmo",
    "smollm",
    "starcoder",
    "refact",
    "command-r",
];

fn pre_tokenizer_spec(pre: &str) -> Option<PreTokenizerSpec> {
    let spec = |regexes, ignore_merges, add_bos| PreTokenizerSpec {
        regexes,
        ignore_merges,
        add_bos,
    };
    Some(match pre {
        "llama-bpe" | "llama3" | "llama-v3" => spec(&[REGEX_LLAMA3], true, true),
        "qwen2" | "deepseek-r1-qwen" => spec(&[REGEX_QWEN2], false, false),
        "qwen35" => spec(&[REGEX_QWEN35], false, false),
        "gpt-2" | "mpt" | "olmo" => spec(&[REGEX_GPT2], false, false),
        "smollm" | "starcoder" | "refact" | "command-r" => {
            spec(&[REGEX_DIGIT, REGEX_GPT2], false, false)
        }
        _ => return None,
    })
}

/// A tokenizer built from GGUF metadata, with the special tokens and BOS/EOS policy it declares.
#[derive(Debug)]
pub(crate) struct GgufVocab {
    /// The tokenizer (no post-processor: BOS/EOS are added by the caller from the flags below).
    pub tokenizer: Backend,
    /// The token strings, by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`, then `eot_token_id` and `eom_token_id` when present (or,
    /// without an EOT id, the turn-end tokens found by name: `<end_of_turn>`, `<turn|>`).
    pub eos_ids: Vec<u32>,
    /// Whether encoding with special tokens starts with BOS.
    pub add_bos: bool,
    /// Whether encoding with special tokens ends with EOS.
    pub add_eos: bool,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

fn as_tokenizer_error(e: Error) -> Error {
    match e {
        Error::Gguf(m) => Error::Tokenizer(format!("GGUF {m}")),
        other => other,
    }
}

fn meta_str<'a>(gguf: &'a Gguf, key: &str) -> Result<Option<&'a str>> {
    gguf.metadata_str(key).map_err(as_tokenizer_error)
}

fn meta_strings<'a>(gguf: &'a Gguf, key: &str) -> Result<Option<&'a [String]>> {
    gguf.metadata_strings(key).map_err(as_tokenizer_error)
}

/// An integer array (token types), as `i64`s.
fn meta_ints<'a>(gguf: &'a Gguf, key: &str) -> Result<Option<&'a [i64]>> {
    gguf.metadata_ints(key).map_err(as_tokenizer_error)
}

fn meta_scalar(gguf: &Gguf, key: &str) -> Result<Option<i64>> {
    gguf.metadata_int(key).map_err(as_tokenizer_error)
}

/// A token id from the metadata, checked against the vocabulary size.
fn meta_token_id(gguf: &Gguf, key: &str, n_tokens: usize) -> Result<Option<u32>> {
    match meta_scalar(gguf, key)? {
        None => Ok(None),
        Some(id) if (0..n_tokens as i64).contains(&id) => Ok(Some(id as u32)),
        // llama.cpp writes -1 (as u32::MAX) for "none" in some converters.
        Some(id) if id < 0 || id == i64::from(u32::MAX) => Ok(None),
        Some(id) => Err(Error::Tokenizer(format!(
            "GGUF key `{key}` = {id} is outside the vocabulary of {n_tokens} tokens"
        ))),
    }
}

/// A tokenizer error, prefixed with what it is about.
fn in_vocabulary(what: &str, e: Error) -> Error {
    match e {
        Error::Tokenizer(m) => Error::Tokenizer(format!("{what}: {m}")),
        other => other,
    }
}

/// A tokenizer error of a GGUF vocabulary, said so.
fn gguf_vocabulary_error(e: Error) -> Error {
    in_vocabulary("GGUF vocabulary", e)
}

fn tokenizer_error(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// Builds the tokenizer of a GGUF file's embedded vocabulary.
pub(crate) fn from_gguf(gguf: &Gguf) -> Result<GgufVocab> {
    let model = meta_str(gguf, "tokenizer.ggml.model")?
        .ok_or_else(|| Error::Tokenizer("the GGUF file has no `tokenizer.ggml.model`".into()))?;
    match model {
        "gpt2" => bpe_from_gguf(gguf),
        "llama" => spm_from_gguf(gguf),
        "gemma4" => gemma4_from_gguf(gguf),
        _ => Err(Error::Tokenizer(format!(
            "GGUF tokenizer model `{model}` is not supported; supported: {} \
             (byte-level BPE, SentencePiece, Gemma 4 BPE); load a tokenizer.json instead",
            SUPPORTED_GGUF_TOKENIZER_MODELS.join(", ")
        ))),
    }
}

/// `tokenizer.ggml.tokens`, and `tokenizer.ggml.token_type` (all normal when absent).
fn tokens_and_types(gguf: &Gguf) -> Result<(&[String], Vec<i64>)> {
    let tokens = meta_strings(gguf, "tokenizer.ggml.tokens")?
        .ok_or_else(|| Error::Tokenizer("the GGUF file has no `tokenizer.ggml.tokens`".into()))?;
    let n = tokens.len();
    if n == 0 || n > u32::MAX as usize {
        return Err(Error::Tokenizer(format!(
            "GGUF vocabulary of {n} tokens is not usable"
        )));
    }
    let token_types = match meta_ints(gguf, "tokenizer.ggml.token_type")? {
        Some(t) if t.len() == n => t.to_vec(),
        Some(t) => {
            return Err(Error::Tokenizer(format!(
                "GGUF `tokenizer.ggml.token_type` has {} entries for {n} tokens",
                t.len()
            )))
        }
        None => vec![1; n],
    };
    Ok((tokens, token_types))
}

/// BOS, EOS (with EOT/EOM) and the add-BOS/EOS flags; `defaults` are llama.cpp's for the
/// tokenizer kind: (bos id, eos id, add_bos).
fn special_ids(
    gguf: &Gguf,
    n: usize,
    defaults: (Option<u32>, Option<u32>, bool),
) -> Result<(Option<u32>, Vec<u32>, bool, bool)> {
    let (default_bos, default_eos, default_add_bos) = defaults;
    let in_vocab = |id: Option<u32>| id.filter(|&id| (id as usize) < n);
    let bos_id = match gguf.get("tokenizer.ggml.bos_token_id") {
        Some(_) => meta_token_id(gguf, "tokenizer.ggml.bos_token_id", n)?,
        None => in_vocab(default_bos),
    };
    let mut eos_ids = Vec::new();
    let mut push = |id: Option<u32>| {
        if let Some(id) = id {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
    };
    match gguf.get("tokenizer.ggml.eos_token_id") {
        Some(_) => push(meta_token_id(gguf, "tokenizer.ggml.eos_token_id", n)?),
        None => push(in_vocab(default_eos)),
    }
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        push(meta_token_id(gguf, key, n)?);
    }
    let add_bos = match meta_scalar(gguf, "tokenizer.ggml.add_bos_token")? {
        Some(v) => v != 0,
        None => default_add_bos,
    } && bos_id.is_some();
    let add_eos = meta_scalar(gguf, "tokenizer.ggml.add_eos_token")?.is_some_and(|v| v != 0)
        && !eos_ids.is_empty();
    Ok((bos_id, eos_ids, add_bos, add_eos))
}

/// When the GGUF names no end-of-turn token (`tokenizer.ggml.eot_token_id`), adds the control
/// tokens among `names` that the vocabulary has to `eos_ids`, as llama.cpp finds them by text.
fn push_turn_ends(
    gguf: &Gguf,
    tokens: &[String],
    token_types: &[i64],
    names: &[&str],
    eos_ids: &mut Vec<u32>,
) {
    if gguf.get("tokenizer.ggml.eot_token_id").is_some() {
        return;
    }
    for name in names {
        if let Some(id) = tokens.iter().position(|t| t == name) {
            if token_types[id] == TOKEN_TYPE_CONTROL && !eos_ids.contains(&(id as u32)) {
                eos_ids.push(id as u32);
            }
        }
    }
}

/// A SentencePiece-style vocabulary (`tokenizer.ggml.model == "llama"`): tokens, scores (0
/// when absent) and types, `add_space_prefix` (default true), BOS 1 / EOS 2 / UNK 0 and
/// add-BOS by default, as llama.cpp.
fn spm_from_gguf(gguf: &Gguf) -> Result<GgufVocab> {
    let (tokens, token_types) = tokens_and_types(gguf)?;
    let n = tokens.len();
    let scores = match gguf
        .metadata_floats("tokenizer.ggml.scores")
        .map_err(as_tokenizer_error)?
    {
        Some(s) if s.len() == n => s.iter().map(|&x| x as f32).collect(),
        Some(s) => {
            return Err(Error::Tokenizer(format!(
                "GGUF `tokenizer.ggml.scores` has {} entries for {n} tokens",
                s.len()
            )))
        }
        None => vec![0.0; n],
    };
    let add_space_prefix =
        meta_scalar(gguf, "tokenizer.ggml.add_space_prefix")?.is_none_or(|v| v != 0);
    let unk = match gguf.get("tokenizer.ggml.unknown_token_id") {
        Some(_) => meta_token_id(gguf, "tokenizer.ggml.unknown_token_id", n)?,
        None => token_types.iter().position(|&t| t == 2).map(|i| i as u32),
    };
    let (bos_id, mut eos_ids, add_bos, add_eos) = special_ids(gguf, n, (Some(1), Some(2), true))?;
    // Like llama.cpp, a vocabulary that names no end-of-turn token but has Gemma's
    // `<end_of_turn>` control token stops on it too.
    push_turn_ends(gguf, tokens, &token_types, &["<end_of_turn>"], &mut eos_ids);
    let chat_template = meta_str(gguf, "tokenizer.chat_template")?.map(str::to_string);
    let prefix = (add_space_prefix, spm::PrefixRule::Fragment);
    let native = spm::tokenizer(tokens.to_vec(), scores, &token_types, prefix, unk)
        .map_err(|e| in_vocabulary("GGUF SentencePiece vocabulary", e))?;
    Ok(GgufVocab {
        tokenizer: Backend::native(native),
        tokens: tokens.to_vec(),
        bos_id,
        eos_ids,
        add_bos,
        add_eos,
        chat_template,
    })
}

/// A byte-level BPE vocabulary (`tokenizer.ggml.model == "gpt2"`).
fn bpe_from_gguf(gguf: &Gguf) -> Result<GgufVocab> {
    let pre = meta_str(gguf, "tokenizer.ggml.pre")?.unwrap_or("default");
    let spec = pre_tokenizer_spec(pre).ok_or_else(|| {
        Error::Tokenizer(format!(
            "GGUF pre-tokenizer `{pre}` is not supported; supported: {}",
            SUPPORTED_PRE_TOKENIZERS.join(", ")
        ))
    })?;

    let (tokens, token_types) = tokens_and_types(gguf)?;
    let merges = meta_strings(gguf, "tokenizer.ggml.merges")?
        .ok_or_else(|| Error::Tokenizer("the GGUF file has no `tokenizer.ggml.merges`".into()))?;
    let n = tokens.len();
    // The first id of a duplicated string wins (llama.cpp's vocabularies have none in practice).
    let mut vocab = Vocab::with_capacity(n);
    for (id, token) in tokens.iter().enumerate() {
        vocab.entry(token.clone()).or_insert(id as u32);
    }
    let merges = merges
        .iter()
        .map(|m| {
            let (left, right) = bpe::parse_merge(m).map_err(gguf_vocabulary_error)?;
            Ok((left.to_string(), right.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("GGUF BPE vocabulary: {e}")))?;

    let mut pieces: Vec<PreTokenizerWrapper> = Vec::new();
    for regex in spec.regexes {
        let split = Split::new(
            SplitPattern::Regex((*regex).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tokenizer_error)?;
        pieces.push(split.into());
    }
    pieces.push(ByteLevel::new(false, false, false).into());

    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(pieces)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let mut special = Vec::new();
    let mut user_defined = Vec::new();
    for (token, &kind) in tokens.iter().zip(&token_types) {
        match kind {
            TOKEN_TYPE_CONTROL => special.push(AddedToken::from(token.clone(), true)),
            TOKEN_TYPE_USER_DEFINED => user_defined.push(AddedToken::from(token.clone(), false)),
            _ => {}
        }
    }
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user_defined);

    let (bos_id, eos_ids, add_bos, add_eos) = special_ids(gguf, n, (None, None, spec.add_bos))?;
    let chat_template = meta_str(gguf, "tokenizer.chat_template")?.map(str::to_string);

    Ok(GgufVocab {
        tokenizer: Backend::hf(tokenizer),
        tokens: tokens.to_vec(),
        bos_id,
        eos_ids,
        add_bos,
        add_eos,
        chat_template,
    })
}

/// Gemma 4's vocabulary (`tokenizer.ggml.model == "gemma4"`): tokens, types and merges (see
/// `bpe.rs`). As llama.cpp: no default BOS/EOS ids, BOS always added when there is one,
/// `tokenizer.ggml.add_space_prefix` ignored, and — when no end-of-turn id is named — `<turn|>`,
/// `<|tool_response>` (a tool call waits for its result) and `<eos>` stop generation.
fn gemma4_from_gguf(gguf: &Gguf) -> Result<GgufVocab> {
    let (tokens, token_types) = tokens_and_types(gguf)?;
    let merges = meta_strings(gguf, "tokenizer.ggml.merges")?
        .ok_or_else(|| Error::Tokenizer("the GGUF file has no `tokenizer.ggml.merges`".into()))?;
    let n = tokens.len();
    let (bos_id, mut eos_ids, _, add_eos) = special_ids(gguf, n, (None, None, true))?;
    push_turn_ends(
        gguf,
        tokens,
        &token_types,
        &["<turn|>", "<|tool_response>", "<eos>"],
        &mut eos_ids,
    );
    let kinds = TokenKind::from_gguf_types(tokens, &token_types).map_err(gguf_vocabulary_error)?;
    let model = MergesModel::new(tokens, merges).map_err(gguf_vocabulary_error)?;
    let native = NativeTokenizer::new(tokens.to_vec(), kinds, NativeModel::Merges(model))?;
    let chat_template = meta_str(gguf, "tokenizer.chat_template")?.map(str::to_string);
    Ok(GgufVocab {
        tokenizer: Backend::native(native),
        tokens: tokens.to_vec(),
        bos_id,
        eos_ids,
        // llama.cpp overrides a `false` `tokenizer.ggml.add_bos_token` for Gemma 4.
        add_bos: bos_id.is_some(),
        add_eos,
        chat_template,
    })
}
