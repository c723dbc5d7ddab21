//! Text: tokenizers (tokenizer.json or a GGUF vocabulary), chat templates, streaming
//! detokenization.

pub mod chat;
pub mod detokenize;
pub mod tokenizer;

pub use tokenizer::Tokenizer;
