//! [`Tokenizer`]: text ↔ token ids, with the special tokens and chat template of a checkpoint.
//!
//! Sources: a Hugging Face folder ([`Tokenizer::from_dir`]: `tokenizer.json` — or, in a folder
//! without one, `tekken.json` or `tokenizer.model` —, plus the optional `tokenizer_config.json`
//! and `chat_template.jinja`), the vocabulary embedded in a GGUF file
//! ([`Tokenizer::from_gguf`]: byte-level BPE, SentencePiece-style and Gemma 4's BPE), a
//! Mistral `tekken.json` ([`Tokenizer::from_tekken`]) or a SentencePiece BPE model file
//! ([`Tokenizer::from_sentencepiece`]).
//!
//! `tokenizer.json` and GGUF byte-level BPE vocabularies run on the Hugging Face `tokenizers`
//! crate; SentencePiece-style vocabularies, tekken and Gemma 4's GGUF BPE run on this crate's
//! own implementations (module docs of `spm.rs`, `tekken.rs` and `bpe.rs` say why).
//!
//! **Who decides BOS:** the tokenizer, never `config.json`. For a Hugging Face folder, the
//! `tokenizer.json` post-processor decides, unless `tokenizer_config.json` sets `add_bos_token`
//! explicitly (as transformers' Llama tokenizers rebuild their post-processor from it); for a
//! GGUF vocabulary, `tokenizer.ggml.add_bos_token`, defaulting like llama.cpp per pre-tokenizer
//! (and, as llama.cpp, always true for Gemma 4's).

use super::chat::{ChatMessage, ChatTemplate};
use super::gguf_vocab;
use super::native::NativeTokenizer;
use super::sandbox::TemplateLimits;
use super::token_bytes::HfTokenBytes;
use super::{sp_model, spm, tekken};
use crate::load::files::{self, FileKind};
use crate::load::gguf_file::GgufFile as Gguf;
use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The implementation behind a [`Tokenizer`].
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// Hugging Face `tokenizers` (tokenizer.json, GGUF byte-level BPE).
    Hf(Box<HfTokenizer>),
    /// This crate's SentencePiece-style or tekken tokenizer (shared: it is immutable).
    Native(Arc<NativeTokenizer>),
}

/// A Hugging Face tokenizer, and its copy that encodes special-token strings as text.
#[derive(Debug, Clone)]
pub(crate) struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    /// `inner` with `encode_special_tokens` on (built when first needed).
    plain: OnceLock<tokenizers::Tokenizer>,
    /// The decoder's per-token steps and the special ids (built when first needed).
    bytes: OnceLock<HfTokenBytes>,
    /// The vocabulary size with added tokens (`tokenizers` counts it by building the whole
    /// vocabulary map on every call).
    vocab_size: OnceLock<usize>,
}

impl Backend {
    pub(crate) fn hf(inner: tokenizers::Tokenizer) -> Backend {
        Backend::Hf(Box::new(HfTokenizer {
            inner,
            plain: OnceLock::new(),
            bytes: OnceLock::new(),
            vocab_size: OnceLock::new(),
        }))
    }

    pub(crate) fn native(native: NativeTokenizer) -> Backend {
        Backend::Native(Arc::new(native))
    }

    /// Ids of `text`, special-token strings as their ids. Only a Hugging Face post-processor
    /// adds anything with `add_special_tokens`; [`Tokenizer::encode`] does the rest.
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        match self {
            Backend::Hf(hf) => Ok(hf
                .inner
                .encode(text, add_special_tokens)
                .map_err(|e| Error::Tokenizer(format!("encode: {e}")))?
                .get_ids()
                .to_vec()),
            Backend::Native(n) => n.encode(text, true),
        }
    }

    /// Ids of `text` with special-token strings as plain text.
    fn encode_as_text(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Backend::Hf(hf) => {
                let plain = hf.plain.get_or_init(|| {
                    let mut t = hf.inner.clone();
                    t.set_encode_special_tokens(true);
                    t
                });
                Ok(plain
                    .encode(text, false)
                    .map_err(|e| Error::Tokenizer(format!("encode: {e}")))?
                    .get_ids()
                    .to_vec())
            }
            Backend::Native(n) => n.encode(text, false),
        }
    }

    /// The text of ids already checked against the vocabulary.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        match self {
            Backend::Hf(hf) => hf
                .inner
                .decode(ids, skip_special_tokens)
                .map_err(|e| Error::Tokenizer(format!("decode: {e}"))),
            Backend::Native(n) => Ok(n.decode(ids, skip_special_tokens)),
        }
    }

    fn vocab_size(&self) -> usize {
        match self {
            Backend::Hf(hf) => *hf.vocab_size.get_or_init(|| hf.inner.get_vocab_size(true)),
            Backend::Native(n) => n.vocab_size(),
        }
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Backend::Hf(hf) => hf.inner.token_to_id(token),
            Backend::Native(n) => n.token_to_id(token),
        }
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            Backend::Hf(hf) => hf.inner.id_to_token(id),
            Backend::Native(n) => n.id_to_token(id).map(str::to_string),
        }
    }

    /// The bytes token `id` stands for in decoded text (see [`Tokenizer::token_bytes`]).
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match self {
            Backend::Hf(hf) => {
                let token = hf.inner.id_to_token(id)?;
                Some(hf.token_bytes().steps.apply(&token))
            }
            Backend::Native(n) => n.token_bytes(id).map(|b| b.into_owned()),
        }
    }

    /// Whether `id` is a special (control) token.
    fn is_special_token(&self, id: u32) -> bool {
        match self {
            Backend::Hf(hf) => hf.token_bytes().specials.contains(&id),
            Backend::Native(n) => n.is_special(id),
        }
    }

    /// The strings of the special tokens (those only split out when parsing specials).
    fn special_token_strings(&self) -> Vec<String> {
        match self {
            Backend::Hf(hf) => hf
                .inner
                .get_added_tokens_decoder()
                .into_values()
                .filter(|t| t.special && !t.content.is_empty())
                .map(|t| t.content)
                .collect(),
            Backend::Native(n) => n.special_token_strings(),
        }
    }
}

impl HfTokenizer {
    fn token_bytes(&self) -> &HfTokenBytes {
        self.bytes.get_or_init(|| HfTokenBytes::new(&self.inner))
    }
}

/// How [`Tokenizer::encode`] corrects the wrapped tokenizer's BOS handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BosFix {
    /// The wrapped tokenizer already does what is wanted.
    None,
    /// Prepend BOS (GGUF vocabularies; `add_bos_token: true` without a post-processor).
    Prepend,
    /// Remove a leading BOS the post-processor adds (`add_bos_token: false`).
    Strip,
}

/// A tokenizer with its special tokens and chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    backend: Backend,
    bos: Option<(String, u32)>,
    eos_token: Option<String>,
    eos_ids: Vec<u32>,
    adds_bos: bool,
    bos_fix: BosFix,
    /// Append EOS when encoding with special tokens (GGUF `tokenizer.ggml.add_eos_token`).
    append_eos: Option<u32>,
    chat_template: Option<ChatTemplate>,
    /// Special-token strings inside message contents encode as text (the default).
    content_special_tokens_as_text: bool,
}

/// A token in `tokenizer_config.json`: a string or an `AddedToken` object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ConfigToken {
    Text(String),
    Object { content: String },
}

impl ConfigToken {
    fn into_text(self) -> String {
        match self {
            ConfigToken::Text(s) | ConfigToken::Object { content: s } => s,
        }
    }
}

/// A named template of `tokenizer_config.json`'s list form.
#[derive(Debug, Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

/// `chat_template`: one template, or a list of named ones.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ConfigChatTemplate {
    One(String),
    Named(Vec<NamedTemplate>),
}

/// The parts of `tokenizer_config.json` that matter here.
#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<ConfigChatTemplate>,
    #[serde(default)]
    bos_token: Option<ConfigToken>,
    #[serde(default)]
    eos_token: Option<ConfigToken>,
    #[serde(default)]
    add_bos_token: Option<bool>,
}

impl Tokenizer {
    /// Loads a Hugging Face tokenizer folder: `tokenizer.json` (required, unless the folder
    /// has a Mistral `tekken.json` or a SentencePiece `tokenizer.model` instead: then that, see
    /// [`from_tekken`](Self::from_tekken) and [`from_sentencepiece`](Self::from_sentencepiece)),
    /// `tokenizer_config.json` (optional: `chat_template` as a string or a list of
    /// `{name, template}` — the one named `default`, else the first —, `bos_token`/`eos_token`,
    /// `add_bos_token`) and `chat_template.jinja` (optional; wins over the config's template).
    ///
    /// Errors: [`Error::Io`] naming a file that is missing or unreadable; [`Error::Tokenizer`]
    /// naming a file that is malformed; [`Error::ChatTemplate`] for a template that does not
    /// compile.
    ///
    /// ```
    /// use mlx_models::{text::Tokenizer, Error};
    /// let err = Tokenizer::from_dir(std::path::Path::new("/no/such/dir")).unwrap_err();
    /// assert!(matches!(err, Error::Io { ref path, .. } if path.ends_with("tokenizer.json")));
    /// ```
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        // Regular files only, each under its kind's size cap (crate::load::files).
        let json_path = dir.join("tokenizer.json");
        let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
        if !exists(&json_path) {
            let tekken_path = dir.join("tekken.json");
            let model_path = dir.join("tokenizer.model");
            let alternative = if exists(&tekken_path) {
                Some(Tokenizer::from_tekken(&tekken_path)?)
            } else if exists(&model_path) {
                Some(Tokenizer::from_sentencepiece(&model_path)?)
            } else {
                None
            };
            if let Some(mut tokenizer) = alternative {
                let (config, _) = read_config(dir)?;
                tokenizer.chat_template = read_chat_template(dir, config.chat_template)?;
                return Ok(tokenizer);
            }
        }
        let text = files::read_text(&json_path, FileKind::Tokenizer)?;
        let inner = tokenizers::Tokenizer::from_bytes(text.as_bytes())
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", json_path.display())))?;

        let (mut config, _) = read_config(dir)?;
        let chat_template = read_chat_template(dir, config.chat_template.take())?;

        let bos = config.bos_token.map(ConfigToken::into_text).and_then(|t| {
            let id = inner.token_to_id(&t)?;
            Some((t, id))
        });
        let eos_token = config.eos_token.map(ConfigToken::into_text);
        let eos_ids = eos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t))
            .into_iter()
            .collect();

        // What the post-processor does, probed on a plain word.
        let post_processor_adds_bos = match &bos {
            Some((_, id)) => {
                inner
                    .encode("a", true)
                    .map_err(|e| Error::Tokenizer(format!("{}: {e}", json_path.display())))?
                    .get_ids()
                    .first()
                    == Some(id)
            }
            None => false,
        };
        let adds_bos = bos.is_some() && config.add_bos_token.unwrap_or(post_processor_adds_bos);
        let bos_fix = match (adds_bos, post_processor_adds_bos) {
            (true, false) => BosFix::Prepend,
            (false, true) => BosFix::Strip,
            _ => BosFix::None,
        };

        Ok(Tokenizer {
            backend: Backend::hf(inner),
            bos,
            eos_token,
            eos_ids,
            adds_bos,
            bos_fix,
            append_eos: None,
            chat_template,
            content_special_tokens_as_text: true,
        })
    }

    /// Loads a Mistral tekken tokenizer (`tekken.json`, as in mistral-common and Mistral Nemo /
    /// Small / Ministral checkpoints): byte-level BPE from ranks, ids 0–999 the special tokens
    /// (`<unk>` 0, `<s>` 1, `</s>` 2, `[INST]` 3, `[/INST]` 4, …), a regular token's id its rank
    /// plus the number of special tokens, the vocabulary cut to `config.default_vocab_size`.
    /// Encoding with special tokens starts with `<s>`; the file has no chat template.
    ///
    /// Errors: [`Error::Io`] when the file is missing or unreadable; [`Error::Tokenizer`]
    /// naming the file when it is malformed.
    ///
    /// ```
    /// use mlx_models::{text::Tokenizer, Error};
    /// let dir = std::env::temp_dir().join(format!("tekken-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("tekken.json");
    /// // A toy file: 256 single-byte ranks plus "ab", 3 special tokens, vocabulary 260.
    /// let b64 = |bytes: &[u8]| {
    ///     use std::fmt::Write;
    ///     const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    ///     let mut s = String::new();
    ///     for chunk in bytes.chunks(3) {
    ///         let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
    ///         for i in 0..4 {
    ///             let c = if i <= chunk.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' };
    ///             write!(s, "{c}").unwrap();
    ///         }
    ///     }
    ///     s
    /// };
    /// let mut vocab: Vec<String> = (0..=255u8)
    ///     .map(|b| format!(r#"{{"rank":{b},"token_bytes":"{}"}}"#, b64(&[b])))
    ///     .collect();
    /// vocab.push(format!(r#"{{"rank":256,"token_bytes":"{}"}}"#, b64(b"ab")));
    /// let json = format!(
    ///     r#"{{"config":{{"pattern":"\\S+|\\s+","default_vocab_size":260,"default_num_special_tokens":3}},
    ///         "vocab":[{}],
    ///         "special_tokens":[{{"rank":0,"token_str":"<unk>"}},{{"rank":1,"token_str":"<s>"}},{{"rank":2,"token_str":"</s>"}}]}}"#,
    ///     vocab.join(",")
    /// );
    /// std::fs::write(&path, json).unwrap();
    /// let tokenizer = Tokenizer::from_tekken(&path).unwrap();
    /// // "ab" is rank 256 = id 259; "c" is byte 99 = id 102; BOS `<s>` is 1.
    /// assert_eq!(tokenizer.encode("abc", true).unwrap(), vec![1, 259, 102]);
    /// assert_eq!(tokenizer.decode(&[1, 259, 102], true).unwrap(), "abc");
    /// // Tekken files list ids 0–255 as single bytes: anything else is a typed error.
    /// std::fs::write(&path, r#"{"config":{"pattern":"x"},"vocab":[]}"#).unwrap();
    /// assert!(matches!(Tokenizer::from_tekken(&path), Err(Error::Tokenizer(_))));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn from_tekken(path: &Path) -> Result<Tokenizer> {
        let text = files::read_text(path, FileKind::Tokenizer)?;
        let tekken::Tekken {
            tokenizer,
            bos,
            eos,
        } = tekken::parse(&text).map_err(|e| match e {
            Error::Tokenizer(m) => Error::Tokenizer(format!("{}: {m}", path.display())),
            other => other,
        })?;
        Ok(Tokenizer::from_native(tokenizer, bos, eos))
    }

    /// Loads a SentencePiece BPE model file (`tokenizer.model`; mistral-common's
    /// `tokenizer.model.v1`, `*.model.v3`, ...) with byte fallback and the identity normalizer,
    /// tokenized like the `sentencepiece` library: `▁` for spaces, one `▁` in front of the text
    /// (when the model adds a dummy prefix), score-ordered merges, `<0xXX>` byte fallback.
    /// Control tokens (`<s>`, `[INST]`) are split out by [`encode`](Self::encode) (the text
    /// between them taking its own `▁` prefix, as Mistral's prompt builder encodes each part);
    /// user-defined tokens always. BOS is added by `encode` with special tokens.
    ///
    /// Errors: [`Error::Io`] when the file is missing or unreadable; [`Error::Tokenizer`]
    /// naming the file when it is malformed or uses what is not implemented (a unigram model,
    /// a normalization rule).
    ///
    /// ```
    /// use mlx_models::{text::Tokenizer, Error};
    /// let path = std::env::temp_dir().join(format!("sp-doc-{}.model", std::process::id()));
    /// // A hand-written ModelProto: pieces "<unk>" (unknown) and "▁" (normal), trainer_spec
    /// // model_type 1 (unigram), which is not supported.
    /// let piece = |text: &str, kind: u8| {
    ///     let mut p = vec![0x0a, text.len() as u8];
    ///     p.extend(text.as_bytes());
    ///     p.extend([0x18, kind]);
    ///     let mut field = vec![0x0a, p.len() as u8];
    ///     field.extend(p);
    ///     field
    /// };
    /// let mut model = piece("<unk>", 2);
    /// model.extend(piece("▁", 1));
    /// model.extend([0x12, 2, 0x18, 1]);
    /// std::fs::write(&path, &model).unwrap();
    /// let err = Tokenizer::from_sentencepiece(&path).unwrap_err();
    /// assert!(matches!(err, Error::Tokenizer(ref m) if m.contains("model type 1")));
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn from_sentencepiece(path: &Path) -> Result<Tokenizer> {
        let data = files::read_bytes(path, FileKind::Tokenizer)?;
        let in_file = |e: Error| match e {
            Error::Tokenizer(m) => Error::Tokenizer(format!("{}: {m}", path.display())),
            other => other,
        };
        let file = sp_model::parse(&data).map_err(in_file)?;
        let (bos, eos) = (file.bos_id, file.eos_id);
        let tokenizer = spm::from_model_file(file).map_err(in_file)?;
        Ok(Tokenizer::from_native(tokenizer, bos, eos))
    }

    /// A tokenizer over one of the project's own models (tekken, SentencePiece files) with
    /// its BOS (prepended when encoding with special tokens) and EOS ids.
    fn from_native(tokenizer: NativeTokenizer, bos: Option<u32>, eos: Option<u32>) -> Tokenizer {
        let name = |id: u32| tokenizer.id_to_token(id).unwrap_or_default().to_string();
        let bos = bos.map(|id| (name(id), id));
        let eos_token = eos.map(name);
        Tokenizer {
            backend: Backend::native(tokenizer),
            adds_bos: bos.is_some(),
            bos,
            eos_token,
            eos_ids: eos.into_iter().collect(),
            bos_fix: BosFix::Prepend,
            append_eos: None,
            chat_template: None,
            content_special_tokens_as_text: true,
        }
    }

    /// Builds the tokenizer embedded in a GGUF file (`tokenizer.ggml.*` and
    /// `tokenizer.chat_template` metadata).
    ///
    /// Supports ([`SUPPORTED_GGUF_TOKENIZER_MODELS`](super::SUPPORTED_GGUF_TOKENIZER_MODELS)):
    /// - `tokenizer.ggml.model == "gpt2"` (byte-level BPE) with the pre-tokenizers
    ///   `llama-bpe` (Llama 3), `qwen2`, `qwen35`, `gpt-2`, `smollm` (and the identical `mpt`,
    ///   `olmo`, `starcoder`, `refact`, `command-r`, `deepseek-r1-qwen`), splitting text like
    ///   llama.cpp;
    /// - `tokenizer.ggml.model == "llama"` (SentencePiece-style: Llama 2, Mistral v0.x,
    ///   Gemma 3): llama.cpp's SPM algorithm (score-ordered merges, `▁` for spaces,
    ///   `tokenizer.ggml.add_space_prefix`, `<0xXX>` byte fallback);
    /// - `tokenizer.ggml.model == "gemma4"` (Gemma 4): llama.cpp's `gemma4` BPE (`▁` for
    ///   spaces, text cut at newline runs, pairs merged by their rank in
    ///   `tokenizer.ggml.merges`, `<0xXX>` byte fallback). As llama.cpp, BOS is always added and
    ///   `<turn|>` (and `<|tool_response>`) end generation when the file names no EOT token.
    ///
    /// Control tokens encode atomically when special tokens are parsed
    /// ([`encode`](Self::encode)); user-defined tokens always.
    ///
    /// Errors: [`Error::Tokenizer`] naming an unsupported tokenizer model or pre-tokenizer, or
    /// malformed metadata; [`Error::ChatTemplate`] for a template that does not compile.
    ///
    /// ```
    /// use mlx_models::load::gguf_file::{GgufFile, GgufLimits};
    /// use mlx_models::text::Tokenizer;
    /// // A GGUF v3 header with a SentencePiece vocabulary of four pieces:
    /// // <unk> (unknown), ▁a, b, ▁ab (scores 0, -1, -2, -3).
    /// let mut h = b"GGUF".to_vec();
    /// h.extend(3u32.to_le_bytes());
    /// h.extend(0u64.to_le_bytes()); // tensors
    /// h.extend(4u64.to_le_bytes()); // metadata entries
    /// let key = |h: &mut Vec<u8>, k: &str| {
    ///     h.extend((k.len() as u64).to_le_bytes());
    ///     h.extend(k.as_bytes());
    /// };
    /// key(&mut h, "tokenizer.ggml.model");
    /// h.extend(8u32.to_le_bytes()); // string
    /// key(&mut h, "llama");
    /// key(&mut h, "tokenizer.ggml.tokens");
    /// h.extend(9u32.to_le_bytes()); // array of strings
    /// h.extend(8u32.to_le_bytes());
    /// h.extend(4u64.to_le_bytes());
    /// for t in ["<unk>", "▁a", "b", "▁ab"] {
    ///     key(&mut h, t);
    /// }
    /// key(&mut h, "tokenizer.ggml.scores");
    /// h.extend(9u32.to_le_bytes()); // array of f32
    /// h.extend(6u32.to_le_bytes());
    /// h.extend(4u64.to_le_bytes());
    /// for s in [0.0f32, -1.0, -2.0, -3.0] {
    ///     h.extend(s.to_le_bytes());
    /// }
    /// key(&mut h, "tokenizer.ggml.token_type");
    /// h.extend(9u32.to_le_bytes()); // array of i32
    /// h.extend(5u32.to_le_bytes());
    /// h.extend(4u64.to_le_bytes());
    /// for t in [2i32, 1, 1, 1] {
    ///     h.extend(t.to_le_bytes());
    /// }
    /// let gguf = GgufFile::parse(&h[..], h.len() as u64, &GgufLimits::default()).unwrap();
    /// let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    /// // "ab" → "▁ab" (space prefix) → "▁a" + "b" merge into "▁ab"; "c" has no piece and no
    /// // byte token: <unk>.
    /// assert_eq!(tokenizer.encode("ab", false).unwrap(), vec![3]);
    /// assert_eq!(tokenizer.encode("ab c", false).unwrap(), vec![3, 0, 0]);
    /// assert_eq!(tokenizer.decode(&[3, 2], false).unwrap(), "abb");
    /// ```
    pub fn from_gguf(gguf: &Gguf) -> Result<Tokenizer> {
        let vocab = gguf_vocab::from_gguf(gguf)?;
        let chat_template = vocab.chat_template.map(ChatTemplate::new).transpose()?;
        let bos = vocab
            .bos_id
            .map(|id| (vocab.tokens[id as usize].clone(), id));
        let eos_token = vocab
            .eos_ids
            .first()
            .map(|&id| vocab.tokens[id as usize].clone());
        Ok(Tokenizer {
            backend: vocab.tokenizer,
            bos,
            eos_token,
            append_eos: if vocab.add_eos {
                vocab.eos_ids.first().copied()
            } else {
                None
            },
            eos_ids: vocab.eos_ids,
            adds_bos: vocab.add_bos,
            bos_fix: if vocab.add_bos {
                BosFix::Prepend
            } else {
                BosFix::None
            },
            chat_template,
            content_special_tokens_as_text: true,
        })
    }

    /// Token ids of `text`. With `add_special_tokens`, BOS (and EOS) are added as the tokenizer
    /// defines; special-token strings in `text` (`<|im_start|>`, ...) always encode as their id.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let mut ids = self.backend.encode(text, add_special_tokens)?;
        if add_special_tokens {
            if let Some((_, bos)) = &self.bos {
                match self.bos_fix {
                    BosFix::Prepend if ids.first() != Some(bos) => ids.insert(0, *bos),
                    BosFix::Strip if ids.first() == Some(bos) => {
                        ids.remove(0);
                    }
                    _ => {}
                }
            }
            if let Some(eos) = self.append_eos {
                ids.push(eos);
            }
        }
        Ok(ids)
    }

    /// BOS (when the tokenizer adds one) and EOS (GGUF `add_eos_token`) around ids encoded
    /// without special tokens.
    fn add_special_tokens(&self, mut ids: Vec<u32>, add_special_tokens: bool) -> Vec<u32> {
        if add_special_tokens {
            if let Some((_, bos)) = self.bos.as_ref().filter(|_| self.adds_bos) {
                if ids.first() != Some(bos) {
                    ids.insert(0, *bos);
                }
            }
            if let Some(eos) = self.append_eos {
                ids.push(eos);
            }
        }
        ids
    }

    /// The text of `ids`. Errors: [`Error::Tokenizer`] for an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let size = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= size) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {size} tokens"
            )));
        }
        self.backend.decode(ids, skip_special_tokens)
    }

    /// The number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.backend.vocab_size()
    }

    /// The id of a token string (its vocabulary form, e.g. `Ġthe` for byte-level BPE).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.backend.token_to_id(token)
    }

    /// The token string of an id (its vocabulary form).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.backend.id_to_token(id)
    }

    /// The exact bytes token `id` stands for in decoded text (`None` outside the vocabulary):
    /// byte-level BPE with GPT-2's byte map undone, `▁` as a space and `<0xXX>` as its byte
    /// for SentencePiece-style vocabularies, tekken's own bytes. A token may stand for part of
    /// a multibyte character; the bytes of a token sequence, joined, are the UTF-8 of its
    /// text. Special tokens give the bytes of their text (`<|im_end|>`); tell them apart with
    /// [`is_special_token`](Self::is_special_token).
    ///
    /// ```
    /// use mlx_models::text::Tokenizer;
    /// # fn f(tokenizer: &Tokenizer) -> mlx_models::Result<()> {
    /// let ids = tokenizer.encode("héllo wörld", false)?;
    /// let bytes: Vec<u8> = ids.iter().flat_map(|&id| tokenizer.token_bytes(id).unwrap()).collect();
    /// assert_eq!(bytes, "héllo wörld".as_bytes());
    /// # Ok(())
    /// # }
    /// ```
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        if id as usize >= self.vocab_size() {
            return None;
        }
        self.backend.token_bytes(id)
    }

    /// Whether `id` is a special (control) token: one that `decode(.., true)` drops and that
    /// plain text never encodes to (`<|im_end|>`, `<s>`, `[INST]`, `<start_of_turn>`).
    /// Grammar engines keep these apart from text.
    pub fn is_special_token(&self, id: u32) -> bool {
        self.backend.is_special_token(id)
    }

    /// The BOS token string, if the tokenizer has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|(t, _)| t.as_str())
    }

    /// The BOS token id, if the tokenizer has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|(_, id)| *id)
    }

    /// The EOS token string, if the tokenizer has one.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// End-of-sequence ids the tokenizer itself declares (GGUF: `eos`, `eot` and `eom`); the
    /// model's `config.json` / `generation_config.json` may add more.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_ids.clone()
    }

    /// Whether [`encode`](Self::encode) with special tokens starts with BOS.
    pub fn adds_bos(&self) -> bool {
        self.adds_bos
    }

    /// The chat template, if the checkpoint ships one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// This tokenizer with `template` as its chat template (e.g. a user-supplied override).
    pub fn with_chat_template(mut self, template: ChatTemplate) -> Tokenizer {
        self.chat_template = Some(template);
        self
    }

    /// Makes [`Tokenizer::encode`] with special tokens start with BOS whatever the tokenizer
    /// files say (nothing changes without a BOS token); a BOS already there is not doubled.
    /// The loader calls it for families that need it
    /// ([`crate::families::Family::always_bos`]).
    pub fn always_add_bos(&mut self) {
        if self.bos.is_some() {
            self.adds_bos = true;
            self.bos_fix = BosFix::Prepend;
        }
    }

    /// Sets the rendering bounds of the chat template (see [`TemplateLimits`]); the loader
    /// derives them from the model's context length with [`TemplateLimits::for_context`].
    pub fn set_template_limits(&mut self, limits: TemplateLimits) {
        if let Some(t) = self.chat_template.take() {
            self.chat_template = Some(t.with_limits(limits));
        }
    }

    /// Renders `messages` with the chat template (see [`ChatTemplate::render`] for `extra`).
    /// Errors: [`Error::ChatTemplate`] when there is no template or rendering fails.
    pub fn render_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
    ) -> Result<String> {
        let template = self.chat_template.as_ref().ok_or_else(|| {
            Error::ChatTemplate(
                "the model has no chat template (a base model's checkpoint carries none): \
                 give one with `Tokenizer::with_chat_template`"
                    .into(),
            )
        })?;
        template.render(
            messages,
            add_generation_prompt,
            self.bos_token(),
            self.eos_token(),
            extra,
        )
    }

    /// Renders `messages` with the chat template and encodes the result.
    ///
    /// Avoids a double BOS like mlx-lm: when the rendered text already starts with the BOS
    /// token, it is encoded without adding special tokens.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        self.apply_chat_template_with(messages, add_generation_prompt, &serde_json::Value::Null)
    }

    /// [`apply_chat_template`](Self::apply_chat_template) with extra template variables (a
    /// JSON object such as `{"enable_thinking": false}`).
    pub fn apply_chat_template_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
    ) -> Result<Vec<u32>> {
        let text = self.render_chat_template(messages, add_generation_prompt, extra)?;
        let starts_with_bos = self
            .bos_token()
            .is_some_and(|bos| !bos.is_empty() && text.starts_with(bos));
        let add_special = !starts_with_bos;
        let specials = self.special_token_strings();
        let risky = |m: &ChatMessage| specials.iter().any(|s| m.content.contains(s.as_str()));
        if !self.content_special_tokens_as_text || !messages.iter().any(risky) {
            return self.encode(&text, add_special);
        }
        // Locate each message's content in the rendered text, in order; the contents that
        // hold a special-token string are encoded with special tokens as plain text.
        let mut spans = Vec::new();
        let mut cursor = 0;
        for m in messages {
            let found = [m.content.as_str(), m.content.trim()]
                .into_iter()
                .filter(|c| !c.is_empty())
                .find_map(|c| text[cursor..].find(c).map(|at| (cursor + at, c.len())));
            match found {
                Some((start, len)) => {
                    if risky(m) {
                        spans.push((start, start + len));
                    }
                    cursor = start + len;
                }
                None if risky(m) => {
                    return Err(Error::ChatTemplate(format!(
                        "a {} message holds a special-token string, and its content cannot be \
                         found in the rendered prompt to encode it as text; \
                         use `set_special_tokens_in_content(true)` to encode it as control tokens",
                        m.role
                    )))
                }
                None => {}
            }
        }
        let mut ids = Vec::new();
        let mut at = 0;
        for (start, end) in spans {
            ids.extend(self.encode(&text[at..start], false)?);
            ids.extend(self.encode_as_text(&text[start..end])?);
            at = end;
        }
        ids.extend(self.encode(&text[at..], false)?);
        Ok(self.add_special_tokens(ids, add_special))
    }

    /// Whether special-token strings in message contents (`<|im_end|>` typed by a user)
    /// encode as control tokens (`true`) or as the plain text they are (`false`, the default:
    /// user text cannot inject control tokens; the template's own markers stay special).
    ///
    /// ```no_run
    /// # fn f(tokenizer: &mut mlx_models::text::Tokenizer) {
    /// tokenizer.set_special_tokens_in_content(true); // raw control, for trusted callers
    /// # }
    /// ```
    pub fn set_special_tokens_in_content(&mut self, control: bool) {
        self.content_special_tokens_as_text = !control;
    }

    /// The strings of the vocabulary's special tokens.
    fn special_token_strings(&self) -> Vec<String> {
        self.backend.special_token_strings()
    }

    /// Token ids of `text` with special-token strings encoded as plain text.
    pub fn encode_as_text(&self, text: &str) -> Result<Vec<u32>> {
        self.backend.encode_as_text(text)
    }
}

/// `tokenizer_config.json` of `dir` (default when absent), and whether it was there.
fn read_config(dir: &Path) -> Result<(TokenizerConfig, bool)> {
    let config_path = dir.join("tokenizer_config.json");
    match files::read_optional_text(&config_path, FileKind::TokenizerConfig)? {
        Some(text) => Ok((
            serde_json::from_str(&text)
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", config_path.display())))?,
            true,
        )),
        None => Ok((TokenizerConfig::default(), false)),
    }
}

/// The chat template of `dir`: `chat_template.jinja`, else the config's `chat_template` (the
/// one named `default` of a list, else the first).
fn read_chat_template(
    dir: &Path,
    from_config: Option<ConfigChatTemplate>,
) -> Result<Option<ChatTemplate>> {
    let jinja_path = dir.join("chat_template.jinja");
    let source = match files::read_optional_text(&jinja_path, FileKind::ChatTemplate)? {
        Some(source) => Some(source),
        None => match from_config {
            None => None,
            Some(ConfigChatTemplate::One(s)) => Some(s),
            Some(ConfigChatTemplate::Named(list)) => {
                let pick = list.iter().position(|t| t.name == "default").unwrap_or(0);
                list.into_iter().nth(pick).map(|t| t.template)
            }
        },
    };
    source.map(ChatTemplate::new).transpose()
}
