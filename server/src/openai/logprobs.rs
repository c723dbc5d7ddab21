//! Log-probabilities in OpenAI's two shapes: chat's `logprobs.content[]` entries and the
//! legacy completions object (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).

use mlx_models::runtime::scheduler::GeneratedToken;
use mlx_models::text::Tokenizer;
use serde_json::{json, Value};

/// The text of token `id` (its bytes, invalid UTF-8 replaced) and the bytes themselves.
fn token_text(tokenizer: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tokenizer.token_bytes(id).unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// A log-probability JSON can carry (`-inf`, for a token a constraint masked, becomes
/// -9999 as in OpenAI's answers).
fn finite(logprob: f32) -> f64 {
    if logprob.is_finite() {
        logprob as f64
    } else {
        -9999.0
    }
}

/// Chat's `logprobs.content` entries of `tokens`: `{token, logprob, bytes, top_logprobs}`.
pub fn chat_content(tokenizer: &Tokenizer, tokens: &[GeneratedToken]) -> Vec<Value> {
    tokens
        .iter()
        .map(|t| {
            let (text, bytes) = token_text(tokenizer, t.id);
            let top: Vec<Value> = t
                .top_logprobs
                .iter()
                .map(|&(id, lp)| {
                    let (text, bytes) = token_text(tokenizer, id);
                    json!({"token": text, "logprob": finite(lp), "bytes": bytes})
                })
                .collect();
            json!({
                "token": text,
                "logprob": finite(t.logprob.unwrap_or(f32::NEG_INFINITY)),
                "bytes": bytes,
                "top_logprobs": top,
            })
        })
        .collect()
}

/// The legacy completions `logprobs` object of `tokens`, whose text starts at byte `offset`
/// of the completion.
pub fn completion(tokenizer: &Tokenizer, tokens: &[GeneratedToken], offset: usize) -> Value {
    let mut at = offset;
    let mut texts = Vec::new();
    let mut logprobs = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for t in tokens {
        let (text, _) = token_text(tokenizer, t.id);
        offsets.push(at);
        at += text.len();
        texts.push(text);
        logprobs.push(finite(t.logprob.unwrap_or(f32::NEG_INFINITY)));
        let top: serde_json::Map<String, Value> = t
            .top_logprobs
            .iter()
            .map(|&(id, lp)| (token_text(tokenizer, id).0, json!(finite(lp))))
            .collect();
        tops.push(Value::Object(top));
    }
    json!({
        "tokens": texts,
        "token_logprobs": logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    })
}
