//! (in progress)
/// A tokenizer (in progress).
#[derive(Debug)]
pub struct Tokenizer;
