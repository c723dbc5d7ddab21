//! Gemma 4's GGUF tokenizer (`tokenizer.ggml.model == "gemma4"`) against llama.cpp.
//!
//! `tests/fixtures/tokenizers/gemma4_vocab.gguf` is a vocabulary-only GGUF of 453 tokens laid
//! out like Gemma 4's (control tokens `<pad>` `<eos>` `<bos>` `<mask>` `<|turn>` `<turn|>`
//! `<|tool_response>`, `<unk>`, a user-defined `<custom>`, the 256 byte tokens, newline runs,
//! pieces and merges learned from a small corpus), and `gemma4_vocab.json` holds the ids
//! llama.cpp's `llama-tokenize` gives for it; both are written by
//! `scripts/fixtures/tokenizer_gemma4.py`. Each case checks `encode` (special-token strings as
//! their ids) against `ids`, `encode_as_text` against `ids_plain`, and that decoding gives the
//! text back. The rest checks the vocabulary's BOS/EOS policy and that malformed vocabularies
//! are typed errors or behave as documented.

mod common;

use mlx_models::load::gguf_file::{GgufFile, GgufLimits};
use mlx_models::text::Tokenizer;
use mlx_models::Error;

fn ids(v: &serde_json::Value) -> Vec<u32> {
    common::u32s(v)
}

fn fixture_tokenizer() -> Tokenizer {
    let path = common::fixture("tokenizers/gemma4_vocab.gguf");
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap()
}

#[test]
fn gemma4_gguf_vocabulary_matches_llama_cpp() {
    let tokenizer = fixture_tokenizer();
    let fixture = common::json("tokenizers/gemma4_vocab.json");
    assert_eq!(
        tokenizer.vocab_size() as u64,
        fixture["vocab_size"].as_u64().unwrap()
    );
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let (want, want_plain) = (ids(&case["ids"]), ids(&case["ids_plain"]));
        let got = tokenizer.encode(text, false).unwrap();
        if got != want {
            failures.push(format!(
                "encode {text:?}:\n  got      {got:?}\n  expected {want:?}"
            ));
        }
        let got = tokenizer.encode_as_text(text).unwrap();
        if got != want_plain {
            failures.push(format!(
                "encode_as_text {text:?}:\n  got      {got:?}\n  expected {want_plain:?}"
            ));
        }
        if case["roundtrip"].as_bool().unwrap() {
            for ids in [&want, &want_plain] {
                let back = tokenizer.decode(ids, false).unwrap();
                if back != text {
                    failures.push(format!("decode {ids:?}: got {back:?}, expected {text:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences over {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // The GGUF says `add_bos_token: false`; llama.cpp (and we) add BOS for Gemma 4 anyway.
    let bos_text = fixture["bos_text"].as_str().unwrap();
    let with_bos = ids(&fixture["ids_with_bos"]);
    assert_eq!(tokenizer.encode(bos_text, true).unwrap(), with_bos);
    assert!(tokenizer.adds_bos());
    assert_eq!(tokenizer.bos_token(), Some("<bos>"));
    assert_eq!(tokenizer.decode(&with_bos, true).unwrap(), bos_text);
}

#[test]
fn gemma4_specials_stop_tokens_and_decoding() {
    let tokenizer = fixture_tokenizer();
    // EOS `<eos>` 1, then `<turn|>` 6 and `<|tool_response>` 7 (no EOT id in the GGUF).
    assert_eq!(tokenizer.eos_token(), Some("<eos>"));
    assert_eq!(tokenizer.eos_token_ids(), vec![1, 6, 7]);
    assert_eq!(tokenizer.token_to_id("<|turn>"), Some(5));
    assert_eq!(tokenizer.id_to_token(265).as_deref(), Some("\n"));

    // A chat prompt: control tokens kept or skipped, the user-defined token always rendered.
    let prompt = "<|turn>user\nHi <custom><turn|>\n<|turn>model\n";
    let ids = tokenizer.encode(prompt, true).unwrap();
    assert_eq!(ids[..2], [2, 5]);
    assert_eq!(
        tokenizer.decode(&ids, false).unwrap(),
        format!("<bos>{prompt}")
    );
    assert_eq!(
        tokenizer.decode(&ids, true).unwrap(),
        "user\nHi <custom>\nmodel\n"
    );
    // Typed as text, the control strings are plain text.
    let plain = tokenizer.encode_as_text(prompt).unwrap();
    assert!(!plain.contains(&5) && plain.contains(&8));
    assert_eq!(tokenizer.decode(&plain, true).unwrap(), prompt);

    // Byte-fallback pieces: joined before decoding UTF-8; a cut character is U+FFFD (what
    // the streaming detokenizer waits on).
    let text = "rare: 𝄞 🧬 then 東京 héllo";
    let ids = tokenizer.encode(text, false).unwrap();
    assert!(ids.iter().any(|&id| (9..265).contains(&id)));
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    let cut = ids.iter().position(|&id| (9..265).contains(&id)).unwrap() + 1;
    assert!(tokenizer
        .decode(&ids[..cut], false)
        .unwrap()
        .ends_with('\u{FFFD}'));
    assert!(tokenizer.decode(&[453], false).is_err());
}

/// A GGUF metadata value for [`gguf`].
enum Meta<'a> {
    Str(&'a str),
    Strs(Vec<String>),
    Ints(Vec<i32>),
    U32(u32),
    Bool(bool),
}

/// An in-memory GGUF v3 file with `meta` and no tensors.
fn gguf(meta: &[(&str, Meta)]) -> Result<GgufFile, Error> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((meta.len() as u64).to_le_bytes());
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    for (key, value) in meta {
        string(&mut b, key);
        match value {
            Meta::Str(s) => {
                b.extend(8u32.to_le_bytes());
                string(&mut b, s);
            }
            Meta::Strs(v) => {
                b.extend(9u32.to_le_bytes());
                b.extend(8u32.to_le_bytes());
                b.extend((v.len() as u64).to_le_bytes());
                for s in v {
                    string(&mut b, s);
                }
            }
            Meta::Ints(v) => {
                b.extend(9u32.to_le_bytes());
                b.extend(5u32.to_le_bytes());
                b.extend((v.len() as u64).to_le_bytes());
                for x in v {
                    b.extend(x.to_le_bytes());
                }
            }
            Meta::U32(x) => {
                b.extend(4u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            Meta::Bool(x) => {
                b.extend(7u32.to_le_bytes());
                b.push(u8::from(*x));
            }
        }
    }
    GgufFile::parse(&b[..], b.len() as u64, &GgufLimits::default())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A tiny Gemma 4 vocabulary: `<bos>` 0, `<turn|>` 1, a 2, b 3, ab 4, ▁ 5, `<0x63>` 6 ("c"),
/// with `tokens`, `types`, `merges` replaced where given and `extra` metadata appended.
fn tiny(
    types: Option<Vec<i32>>,
    merges: Option<Meta>,
    extra: Vec<(&str, Meta)>,
) -> Result<Tokenizer, Error> {
    let tokens = strings(&["<bos>", "<turn|>", "a", "b", "ab", "▁", "<0x63>"]);
    let mut meta = vec![
        ("tokenizer.ggml.model", Meta::Str("gemma4")),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        (
            "tokenizer.ggml.token_type",
            Meta::Ints(types.unwrap_or(vec![3, 3, 1, 1, 1, 1, 6])),
        ),
        ("tokenizer.ggml.bos_token_id", Meta::U32(0)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(false)),
    ];
    if let Some(merges) = merges {
        meta.push(("tokenizer.ggml.merges", merges));
    }
    meta.extend(extra);
    Tokenizer::from_gguf(&gguf(&meta)?)
}

#[test]
fn gemma4_small_vocabularies_and_hostile_metadata() {
    let ok = || Some(Meta::Strs(strings(&["a b"])));
    let t = tiny(None, ok(), vec![]).unwrap();
    assert_eq!(t.encode("ab abc", true).unwrap(), vec![0, 4, 5, 4, 6]);
    assert_eq!(t.decode(&[0, 4, 5, 4, 6], true).unwrap(), "ab abc");
    // No EOS id; `<turn|>` still ends a turn. A named EOT id replaces that rule.
    assert_eq!(t.eos_token_ids(), vec![1]);
    let named = tiny(
        None,
        ok(),
        vec![("tokenizer.ggml.eot_token_id", Meta::U32(4))],
    );
    assert_eq!(named.unwrap().eos_token_ids(), vec![4]);

    // Documented behaviour, as llama.cpp: rules over unknown strings are kept ("x y" never
    // applies; "▁ ▁" does, forming "▁▁", which is no token and falls back to bytes); a
    // character with neither a token nor byte tokens is dropped ("x", and the bytes of "▁▁").
    let odd = Some(Meta::Strs(strings(&["x y", "▁ ▁", "a b"])));
    let t = tiny(None, odd, vec![]).unwrap();
    assert_eq!(t.encode("xab  c", false).unwrap(), vec![4, 6]);
    assert_eq!(t.encode("xab c", false).unwrap(), vec![4, 5, 6]);

    // Typed errors: a rule without a space, no merges (or not strings), a byte token not
    // spelled <0xXX>, token types of the wrong length, a BOS id outside the vocabulary.
    let cases = [
        tiny(None, Some(Meta::Strs(strings(&["ab"]))), vec![]),
        tiny(None, None, vec![]),
        tiny(None, Some(Meta::Ints(vec![1])), vec![]),
        tiny(Some(vec![3, 3, 6, 1, 1, 1, 6]), ok(), vec![]),
        tiny(Some(vec![1, 1]), ok(), vec![]),
        tiny(
            None,
            ok(),
            vec![("tokenizer.ggml.eos_token_id", Meta::U32(99))],
        ),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        assert!(
            matches!(case, Err(Error::Tokenizer(_))),
            "case {i}: {case:?}"
        );
    }
}

/// The Hugging Face form: `gemma4_tiny_tokenizer.json` (scripts/fixtures/tiny_models_gemma4.py:
/// the same vocabulary and merges as the tiny models' GGUFs, set up as transformers'
/// GemmaTokenizer) gives the ids `tokenizers` gave (`gemma4_tiny.json`); with a
/// `tokenizer_config.json` that says not to add BOS, the Gemma 4 rule still adds it once.
/// A folder with `gemma4_tiny_tokenizer.json` and a `tokenizer_config.json` that says not to
/// add BOS, with `extra` config keys.
fn hf_tokenizer_dir(tag: &str, extra: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gemma4-hf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        common::fixture("tokenizers/gemma4_tiny_tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        format!(r#"{{"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": false{extra}}}"#),
    )
    .unwrap();
    dir
}

#[test]
fn gemma4_tokenizer_json_matches_its_reference_and_always_gets_bos() {
    let dir = hf_tokenizer_dir("ids", "");
    let mut tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let reference = common::json("tokenizers/gemma4_tiny.json");
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, false).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
    }
    let bos = reference["bos_id"].as_u64().unwrap() as u32;
    assert_ne!(tokenizer.encode("the", true).unwrap().first(), Some(&bos));
    tokenizer.always_add_bos();
    let with = tokenizer.encode("the", true).unwrap();
    assert_eq!(with[0], bos);
    assert_eq!(&with[1..], &tokenizer.encode("the", false).unwrap()[..]);
    // A text that already starts with BOS keeps one.
    let again = tokenizer.encode("<bos>the", true).unwrap();
    assert_eq!(again.iter().filter(|&&t| t == bos).count(), 1);
    std::fs::remove_dir_all(&dir).ok();
}

/// Gemma 4's chat format (gemma-mistral-details.md: `<bos>`, then `<|turn>{role}\n{text}<turn|>\n`
/// per message, `model` for the assistant, `<|turn>model\n` to generate) through a template in
/// that form: the rendered text and its ids (BOS once, the turn markers as their control ids),
/// and `<turn|>` among the stop ids of a Gemma 4 config (the family's end-of-turn token).
#[test]
fn gemma4_chat_turns_render_and_stop_on_the_end_of_turn() {
    let template = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}\
{% set role = 'model' %}{% else %}{% set role = m['role'] %}{% endif %}\
<|turn>{{ role }}\n{{ m['content'] | trim }}<turn|>\n{% endfor %}\
{% if add_generation_prompt %}<|turn>model\n{% endif %}";
    let extra = format!(
        r#", "chat_template": {}"#,
        serde_json::to_string(template).unwrap()
    );
    let dir = hf_tokenizer_dir("chat", &extra);
    let mut tokenizer = Tokenizer::from_dir(&dir).unwrap();
    tokenizer.always_add_bos();
    use mlx_models::text::ChatMessage;
    let messages = [
        ChatMessage::new("system", "be brief"),
        ChatMessage::new("user", "the fox"),
        ChatMessage::new("assistant", "ok"),
        ChatMessage::new("user", "why"),
    ];
    let text = tokenizer
        .render_chat_template(&messages, true, &serde_json::Value::Null)
        .unwrap();
    assert_eq!(
        text,
        "<bos><|turn>system\nbe brief<turn|>\n<|turn>user\nthe fox<turn|>\n\
         <|turn>model\nok<turn|>\n<|turn>user\nwhy<turn|>\n<|turn>model\n"
    );
    let ids = tokenizer.apply_chat_template(&messages, true).unwrap();
    let id = |t: &str| tokenizer.token_to_id(t).unwrap();
    let (bos, open, close) = (id("<bos>"), id("<|turn>"), id("<turn|>"));
    assert_eq!(ids[0], bos);
    assert_eq!(ids.iter().filter(|&&t| t == bos).count(), 1);
    assert_eq!(ids.iter().filter(|&&t| t == open).count(), 5);
    assert_eq!(ids.iter().filter(|&&t| t == close).count(), 4);
    let config = mlx_models::config::ModelConfig::from_json(
        r#"{"model_type":"gemma4_text","hidden_size":64,"intermediate_size":32,
            "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,
            "head_dim":16,"vocab_size":256,"eos_token_id":1}"#,
    )
    .unwrap();
    let stops = mlx_models::load::eos_token_ids(&config, None, &tokenizer);
    assert!(stops.contains(&1) && stops.contains(&close), "{stops:?}");
    std::fs::remove_dir_all(&dir).ok();
}
