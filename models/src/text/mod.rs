//! Text: tokenizers (tokenizer.json or a GGUF vocabulary), chat templates, streaming
//! detokenization.
//!
//! - [`Tokenizer`]: encode/decode with the checkpoint's special tokens and BOS policy.
//! - [`chat`]: [`ChatMessage`] and [`ChatTemplate`] (Jinja, rendered like transformers).
//! - [`detokenize`]: [`StreamingDetokenizer`], text chunks as tokens are generated.
//! - `structured` (feature `structured`, default on): generation constrained to a JSON
//!   schema or a grammar.
//! - [`tool_calls`]: each model family's tool-call format: parsing calls out of generated
//!   text, grammars that force a call.

mod bpe;
pub mod chat;
pub mod detokenize;
mod gguf_vocab;
pub mod input;
mod native;
pub mod sandbox;
mod sandbox_fold;
mod sp_model;
mod spm;
#[cfg(feature = "structured")]
pub mod structured;
mod tekken;
mod token_bytes;
pub mod tokenizer;
pub mod tool_calls;

pub use chat::{ChatMessage, ChatTemplate};
pub use detokenize::StreamingDetokenizer;
pub use gguf_vocab::{SUPPORTED_GGUF_TOKENIZER_MODELS, SUPPORTED_PRE_TOKENIZERS};
pub use tokenizer::Tokenizer;
