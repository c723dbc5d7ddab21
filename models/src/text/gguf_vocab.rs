//! Building a Hugging Face `tokenizers` tokenizer from the vocabulary embedded in a GGUF file
//! (`tokenizer.ggml.*` metadata), the way llama.cpp tokenizes it.
//!
//! Only byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`) are supported. The
//! pre-tokenizer is chosen by `tokenizer.ggml.pre` and reproduces llama.cpp's split regexes
//! (applied one after the other, keeping both matches and the text between them, as llama.cpp's
//! `unicode_regex_split` does). Control and user-defined tokens (`token_type` 3 and 4) become
//! added tokens, so they encode atomically.

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

/// The `tokenizer.ggml.pre` values this module reproduces.
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
    pub tokenizer: tokenizers::Tokenizer,
    /// The token strings, by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`, then `eot_token_id` and `eom_token_id` when present.
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

fn tokenizer_error(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// Builds the tokenizer of a GGUF file's embedded vocabulary.
pub(crate) fn from_gguf(gguf: &Gguf) -> Result<GgufVocab> {
    let model = meta_str(gguf, "tokenizer.ggml.model")?
        .ok_or_else(|| Error::Tokenizer("the GGUF file has no `tokenizer.ggml.model`".into()))?;
    if model != "gpt2" {
        return Err(Error::Tokenizer(format!(
            "GGUF tokenizer model `{model}` is not supported (only `gpt2`, byte-level BPE); \
             load a tokenizer.json instead"
        )));
    }
    let pre = meta_str(gguf, "tokenizer.ggml.pre")?.unwrap_or("default");
    let spec = pre_tokenizer_spec(pre).ok_or_else(|| {
        Error::Tokenizer(format!(
            "GGUF pre-tokenizer `{pre}` is not supported; supported: {}",
            SUPPORTED_PRE_TOKENIZERS.join(", ")
        ))
    })?;

    let tokens = meta_strings(gguf, "tokenizer.ggml.tokens")?
        .ok_or_else(|| Error::Tokenizer("the GGUF file has no `tokenizer.ggml.tokens`".into()))?;
    let merges = meta_strings(gguf, "tokenizer.ggml.merges")?
        .ok_or_else(|| Error::Tokenizer("the GGUF file has no `tokenizer.ggml.merges`".into()))?;
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

    // The first id of a duplicated string wins (llama.cpp's vocabularies have none in practice).
    let mut vocab = Vocab::with_capacity(n);
    for (id, token) in tokens.iter().enumerate() {
        vocab.entry(token.clone()).or_insert(id as u32);
    }
    let merges = merges
        .iter()
        .map(|m| {
            // Like llama.cpp: split at the first space after the first character.
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| i)
                .ok_or_else(|| Error::Tokenizer(format!("GGUF merge `{m}` has no space")))?;
            Ok((m[..split].to_string(), m[split + 1..].to_string()))
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

    let bos_id = meta_token_id(gguf, "tokenizer.ggml.bos_token_id", n)?;
    let mut eos_ids = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(id) = meta_token_id(gguf, key, n)? {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
    }
    let add_bos = match meta_scalar(gguf, "tokenizer.ggml.add_bos_token")? {
        Some(v) => v != 0,
        None => spec.add_bos,
    } && bos_id.is_some();
    let add_eos = meta_scalar(gguf, "tokenizer.ggml.add_eos_token")?.is_some_and(|v| v != 0)
        && !eos_ids.is_empty();
    let chat_template = meta_str(gguf, "tokenizer.chat_template")?.map(str::to_string);

    Ok(GgufVocab {
        tokenizer,
        tokens: tokens.to_vec(),
        bos_id,
        eos_ids,
        add_bos,
        add_eos,
        chat_template,
    })
}
