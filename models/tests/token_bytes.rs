//! `Tokenizer::token_bytes` and `is_special_token` on every tokenizer kind: the bytes of the
//! plain-text ids of each reference text, joined, are that text's UTF-8 (with the one `▁`
//! SentencePiece puts in front, where the model adds it); specific ids checked by hand from
//! their vocabulary spelling.

mod common;

use mlx_models::load::gguf_file::GgufFile;
use mlx_models::text::Tokenizer;

fn gguf(path: &std::path::Path) -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

fn joined(tokenizer: &Tokenizer, ids: &[u32]) -> Vec<u8> {
    ids.iter()
        .flat_map(|&id| tokenizer.token_bytes(id).expect("id in the vocabulary"))
        .collect()
}

/// Multibyte text through byte-level pieces and byte fallback, whitespace runs, specials as text.
const TEXTS: &[&str] = &[
    "héllo wörld — 日本語 🦀",
    "rare: 𝄞 𝔘𝔫𝔦 🧬 then 東京",
    "{\"city\": \"Zürich\", \"n\": [1, 2.5e-3]}\n\ttabs  and   spaces\n\n",
    "<|im_end|> and <s> typed as text",
];

/// Checks the texts of `fixture`'s cases that decode back to themselves, and [`TEXTS`] (for
/// a vocabulary that spells every text, not a tiny one): `token_bytes` of the plain-text ids,
/// joined, are the text (after one space when `space_prefix`). Returns the number of texts
/// checked.
fn check(name: &str, tokenizer: &Tokenizer, fixture: Option<&str>, space_prefix: bool) -> usize {
    let mut texts: Vec<String> = Vec::new();
    if tokenizer.vocab_size() > 1000 {
        texts.extend(TEXTS.iter().map(|t| t.to_string()));
    }
    if let Some(fixture) = fixture {
        let json = common::json(&format!("tokenizers/{fixture}"));
        for case in json["cases"].as_array().unwrap() {
            if case["roundtrip"].as_bool().unwrap() {
                texts.push(case["text"].as_str().unwrap().to_string());
            }
        }
    }
    let mut checked = 0;
    for text in texts.iter().filter(|t| !t.is_empty()) {
        let ids = tokenizer.encode_as_text(text).unwrap();
        let mut expected = Vec::new();
        if space_prefix {
            expected.push(b' ');
        }
        expected.extend_from_slice(text.as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&joined(tokenizer, &ids)),
            String::from_utf8_lossy(&expected),
            "{name}: {text:?} → {ids:?}"
        );
        assert_eq!(joined(tokenizer, &ids), expected, "{name}: {text:?}");
        checked += 1;
    }
    assert!(tokenizer
        .token_bytes(tokenizer.vocab_size() as u32)
        .is_none());
    checked
}

#[test]
fn smollm2_byte_level_bpe() {
    let Some(path) = common::test_data("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let t = gguf(&path);
    assert_eq!(check("smollm2", &t, None, false), TEXTS.len());
    // Vocabulary spellings (GPT-2's map: Ġ is the space; Ã© are é's bytes C3 A9; Ĺ is
    // U+0139, the 58th byte the map moves, 0x7F + 24 = 0x97; Ġæ a space and half of a
    // three-byte character).
    assert_eq!(t.id_to_token(3575).as_deref(), Some("Ġcapital"));
    assert_eq!(t.token_bytes(3575).unwrap(), b" capital");
    assert_eq!(t.id_to_token(2756).as_deref(), Some("Ã©"));
    assert_eq!(t.token_bytes(2756).unwrap(), [0xC3, 0xA9]);
    assert_eq!(t.id_to_token(241).as_deref(), Some("Ĺ"));
    assert_eq!(t.token_bytes(241).unwrap(), [0x97]);
    assert_eq!(t.id_to_token(17097).as_deref(), Some("Ġæ"));
    assert_eq!(t.token_bytes(17097).unwrap(), [0x20, 0xE6]);
    // Control tokens: their text, marked special; ordinary tokens are not.
    assert_eq!(t.token_bytes(2).unwrap(), b"<|im_end|>");
    assert!(t.is_special_token(0) && t.is_special_token(1) && t.is_special_token(2));
    assert!(!t.is_special_token(17) && !t.is_special_token(3575));
}

#[test]
fn gemma3_sentencepiece_gguf_and_tokenizer_json() {
    if let Some(path) = common::test_data("gemma3/gemma-3-270m-q4_k_m.gguf") {
        let t = gguf(&path);
        check("gemma3 GGUF", &t, Some("gemma3.json"), false);
        byte_and_control_tokens("gemma3 GGUF", &t);
    }
    if let Some(dir) = common::test_data("tokenizers/gemma3") {
        let t = Tokenizer::from_dir(&dir).unwrap();
        check("gemma3 tokenizer.json", &t, Some("gemma3.json"), false);
        byte_and_control_tokens("gemma3 tokenizer.json", &t);
    }
}

/// Gemma 3: `<0x0A>` is the newline byte, `▁▁` two spaces, `<start_of_turn>` (105) special.
fn byte_and_control_tokens(name: &str, t: &Tokenizer) {
    let newline = t.token_to_id("<0x0A>").unwrap();
    assert_eq!(t.token_bytes(newline).unwrap(), b"\n", "{name}");
    let e2 = t.token_to_id("<0xE2>").unwrap();
    assert_eq!(t.token_bytes(e2).unwrap(), [0xE2], "{name}");
    // (tokenizer.json spells the two-space token `▁▁`, the GGUF file `"  "`.)
    let two = t.token_to_id("▁▁").or(t.token_to_id("  ")).unwrap();
    assert_eq!(t.token_bytes(two).unwrap(), b"  ", "{name}");
    assert_eq!(t.token_bytes(105).unwrap(), b"<start_of_turn>", "{name}");
    assert!(t.is_special_token(105) && t.is_special_token(2), "{name}");
    assert!(
        !t.is_special_token(newline) && !t.is_special_token(two),
        "{name}"
    );
}

#[test]
fn llama_and_mistral_sentencepiece_with_space_prefix() {
    if let Some(path) = common::test_data("vocab/ggml-vocab-llama-spm.gguf") {
        let t = gguf(&path);
        check("llama spm", &t, Some("llama_spm.json"), true);
        assert_eq!(
            t.token_bytes(t.token_to_id("▁the").unwrap()).unwrap(),
            b" the"
        );
        assert!(t.is_special_token(1) && t.is_special_token(2));
    }
    if let Some(path) = common::test_data("tokenizers/mistral/tokenizer.model.v1") {
        let t = Tokenizer::from_sentencepiece(&path).unwrap();
        check("mistral v1 .model", &t, Some("mistral_v1.json"), true);
    }
    if let Some(dir) = common::test_data("tokenizers/llama2") {
        let t = Tokenizer::from_dir(&dir).unwrap();
        check(
            "mistral v1 tokenizer.json",
            &t,
            Some("mistral_v1.json"),
            true,
        );
        assert_eq!(
            t.token_bytes(t.token_to_id("<0x0A>").unwrap()).unwrap(),
            b"\n"
        );
        assert!(t.is_special_token(1) && !t.is_special_token(t.token_to_id("▁the").unwrap()));
    }
    if let Some(path) =
        common::test_data("tokenizers/mistral/mistral_instruct_tokenizer_240323.model.v3")
    {
        let t = Tokenizer::from_sentencepiece(&path).unwrap();
        check("mistral v3 .model", &t, Some("mistral_v3.json"), true);
        // [INST] is 3; [TOOL_CALLS] a control token too.
        assert_eq!(t.token_bytes(3).unwrap(), b"[INST]");
        let tool_calls = t.token_to_id("[TOOL_CALLS]").unwrap();
        assert!(t.is_special_token(3) && t.is_special_token(tool_calls));
    }
}

#[test]
fn tekken_bytes() {
    let Some(path) = common::test_data("tokenizers/mistral/tekken_240718.json") else {
        return;
    };
    let t = Tokenizer::from_tekken(&path).unwrap();
    check("tekken", &t, Some("tekken_240718.json"), false);
    // Ids 0–999 are special (`<s>` 1, `[INST]` 3); id 1000 + b is the single byte b.
    assert_eq!(t.token_bytes(1).unwrap(), b"<s>");
    assert!(t.is_special_token(1) && t.is_special_token(3));
    assert_eq!(t.token_bytes(1000 + 0xE6).unwrap(), [0xE6]);
    assert!(!t.is_special_token(1000 + 0xE6));
}

#[test]
fn gemma4_bpe_gguf_and_tokenizer_json() {
    let t = gguf(&common::fixture("tokenizers/gemma4_vocab.gguf"));
    check("gemma4 GGUF", &t, Some("gemma4_vocab.json"), false);
    let turn_end = t.token_to_id("<turn|>").unwrap();
    assert!(t.is_special_token(turn_end));
    assert_eq!(t.token_bytes(turn_end).unwrap(), b"<turn|>");
    let newline = t.token_to_id("<0x0A>").unwrap();
    assert_eq!(t.token_bytes(newline).unwrap(), b"\n");

    let dir = std::env::temp_dir().join(format!("token-bytes-gemma4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        common::fixture("tokenizers/gemma4_tiny_tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let hf = Tokenizer::from_dir(&dir).unwrap();
    check(
        "gemma4 tokenizer.json",
        &hf,
        Some("gemma4_tiny.json"),
        false,
    );
    std::fs::remove_dir_all(&dir).ok();
}
