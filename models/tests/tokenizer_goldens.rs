//! Tokenization goldens: llama.cpp's `ggml-vocab-*.gguf` vocabularies with their `.inp`/`.out`
//! reference vectors (produced upstream by the Hugging Face tokenizers of each model), and the
//! SmolLM2 GGUF tokenizer against ids from `scripts/fixtures/tokenizer_smollm2.py`.

mod common;

use mlx_models::load::gguf_file::{GgufFile, GgufLimits};
use mlx_models::text::{StreamingDetokenizer, Tokenizer};

/// The cases of a llama.cpp `.inp`/`.out` pair: inputs are separated by the line
/// `__ggml_vocab_test__` (llama.cpp's `test-tokenizer-0` splits on `"\n__ggml_vocab_test__\n"`);
/// outputs are one line of space-separated ids per case.
fn read_cases(name: &str) -> Option<Vec<(String, Vec<u32>)>> {
    let inp = common::test_data(&format!("vocab/ggml-vocab-{name}.gguf.inp"))?;
    let out = common::test_data(&format!("vocab/ggml-vocab-{name}.gguf.out"))?;
    let raw = std::fs::read_to_string(inp).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(sep) {
            Some(next) => {
                inputs.push(raw[pos..pos + next].to_string());
                pos += next + sep.len();
            }
            None => {
                inputs.push(raw[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(inputs.len(), outputs.len(), "{name}: case counts differ");
    assert!(inputs.len() > 30, "{name}: too few cases");
    Some(inputs.into_iter().zip(outputs).collect())
}

fn check_vocab(name: &str) {
    let Some(cases) = read_cases(name) else {
        return;
    };
    let path = common::test_data(&format!("vocab/ggml-vocab-{name}.gguf")).unwrap();
    let tokenizer = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for (text, expected) in &cases {
        let ids = tokenizer.encode(text, false).unwrap();
        if &ids != expected {
            failures.push(format!("{text:?}: got {ids:?}, expected {expected:?}"));
        }
        // Byte-level BPE decodes back to the exact input.
        let back = tokenizer.decode(expected, false).unwrap();
        if &back != text {
            failures.push(format!(
                "decode {expected:?}: got {back:?}, expected {text:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn llama_bpe_goldens() {
    check_vocab("llama-bpe");
}

#[test]
fn qwen2_goldens() {
    check_vocab("qwen2");
}

#[test]
fn qwen35_goldens() {
    check_vocab("qwen35");
}

#[test]
fn gpt2_goldens() {
    check_vocab("gpt-2");
}

#[test]
fn mpt_goldens() {
    check_vocab("mpt");
}

#[test]
fn starcoder_goldens() {
    check_vocab("starcoder");
}

#[test]
fn refact_goldens() {
    check_vocab("refact");
}

#[test]
fn command_r_goldens() {
    check_vocab("command-r");
}

#[test]
fn llama_spm_goldens() {
    // SentencePiece-style (tokenizer.ggml.model = "llama"): Llama 2's 32000 pieces.
    check_vocab("llama-spm");
}

fn load(relative: &str) -> Option<Tokenizer> {
    let path = common::test_data(relative)?;
    Some(Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap())
}

#[test]
fn smollm2_gguf_tokenizer_matches_transformers() {
    let Some(tokenizer) = load("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let fixture = common::fixture("chat/smollm2_encodings.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tokenizer.encode(text, false).unwrap(), expected, "{text:?}");
        assert_eq!(tokenizer.decode(&expected, false).unwrap(), text);
    }
    // Also spelled out here (from scripts/fixtures/tokenizer_smollm2.py's output).
    assert_eq!(
        tokenizer.encode("The capital of France is", false).unwrap(),
        vec![504, 3575, 282, 4649, 314]
    );
    // GGUF metadata: bos 1 = <|im_start|>, eos 2 = <|im_end|>, add_bos_token false.
    assert_eq!(tokenizer.bos_token(), Some("<|im_start|>"));
    assert_eq!(tokenizer.bos_token_id(), Some(1));
    assert_eq!(tokenizer.eos_token_ids(), vec![2]);
    assert!(!tokenizer.adds_bos());
    assert_eq!(
        tokenizer.encode("The capital of France is", true).unwrap(),
        vec![504, 3575, 282, 4649, 314]
    );
    assert_eq!(tokenizer.vocab_size(), 49152);
    assert_eq!(tokenizer.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tokenizer.id_to_token(504).as_deref(), Some("The"));
    // Special tokens are dropped on request.
    assert_eq!(tokenizer.decode(&[1, 504, 2], true).unwrap(), "The");
    assert!(tokenizer.decode(&[49152], false).is_err());
}

#[test]
fn llama_bpe_adds_bos_by_default() {
    // llama.cpp: pre-tokenizer `llama-bpe` sets add_bos unless the GGUF says otherwise; this
    // vocabulary has no `tokenizer.ggml.add_bos_token`. "Hello world" is the golden case
    // [9906, 1917] of ggml-vocab-llama-bpe.gguf.out; BOS is <|begin_of_text|> = 128000.
    let Some(tokenizer) = load("vocab/ggml-vocab-llama-bpe.gguf") else {
        return;
    };
    assert!(tokenizer.adds_bos());
    assert_eq!(tokenizer.bos_token(), Some("<|begin_of_text|>"));
    assert_eq!(
        tokenizer.encode("Hello world", true).unwrap(),
        vec![128000, 9906, 1917]
    );
    assert_eq!(
        tokenizer.encode("Hello world", false).unwrap(),
        vec![9906, 1917]
    );
    // Special tokens in the text encode atomically.
    assert_eq!(
        tokenizer
            .encode("<|begin_of_text|>Hello world", false)
            .unwrap(),
        vec![128000, 9906, 1917]
    );
}

#[test]
fn unsupported_gguf_tokenizers_are_typed_errors() {
    // llama.cpp's WordPiece vocabulary (tokenizer.ggml.model = "bert"); the message lists
    // what is supported.
    if let Some(path) = common::test_data("vocab/ggml-vocab-bert-bge.gguf") {
        let err = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap_err();
        assert!(
            matches!(&err, mlx_models::Error::Tokenizer(m)
                if m.contains("`bert`") && m.contains("gpt2, llama")),
            "{err}"
        );
    }
    // A BPE vocabulary whose pre-tokenizer is not reproduced (deepseek-llm).
    if let Some(path) = common::test_data("vocab/ggml-vocab-deepseek-llm.gguf") {
        let err = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap_err();
        assert!(
            matches!(&err, mlx_models::Error::Tokenizer(m) if m.contains("deepseek-llm")),
            "{err}"
        );
    }
    // No tokenizer metadata at all.
    let mut header = b"GGUF".to_vec();
    header.extend(3u32.to_le_bytes()); // version
    header.extend([0u8; 16]); // no tensors, no metadata
    let empty = GgufFile::parse(&header[..], header.len() as u64, &GgufLimits::default()).unwrap();
    assert!(matches!(
        Tokenizer::from_gguf(&empty),
        Err(mlx_models::Error::Tokenizer(_))
    ));
}

/// Streams `ids` and checks the chunks: none holds U+FFFD, and together they are the full text.
fn check_streaming(tokenizer: &Tokenizer, ids: &[u32]) {
    let mut stream = StreamingDetokenizer::new(tokenizer);
    let mut chunks = Vec::new();
    for &id in ids {
        if let Some(chunk) = stream.push(id).unwrap() {
            assert!(!chunk.contains('\u{FFFD}'), "broken chunk {chunk:?}");
            chunks.push(chunk);
        }
    }
    let rest = stream.finish().unwrap();
    assert!(!rest.contains('\u{FFFD}'));
    chunks.push(rest);
    assert_eq!(chunks.concat(), tokenizer.decode(ids, false).unwrap());
}

#[test]
fn streaming_detokenizer_never_splits_a_character() {
    let Some(tokenizer) = load("vocab/ggml-vocab-qwen2.gguf") else {
        return;
    };
    let text = "Emoji 🙂👍🏽 and 東京の天気 then 𝄞 naïve — done.";
    let ids = tokenizer.encode(text, false).unwrap();
    // The vocabulary really splits some of these characters across tokens: some token decodes
    // alone to an incomplete UTF-8 sequence.
    let partial = ids
        .iter()
        .filter(|&&id| tokenizer.decode(&[id], false).unwrap().contains('\u{FFFD}'))
        .count();
    assert!(partial >= 2, "no split characters in {ids:?}");
    check_streaming(&tokenizer, &ids);
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);

    // Four-byte characters cut into single bytes (ids of the byte tokens Ġ.. form): 🙂 is
    // F0 9F 99 82, whose byte-level characters are ð, Ł, Ļ, Ĥ.
    let bytes: Vec<u32> = ["ð", "Ł", "Ļ", "Ĥ"]
        .iter()
        .map(|t| tokenizer.token_to_id(t).unwrap())
        .collect();
    let mut stream = StreamingDetokenizer::new(&tokenizer);
    assert_eq!(stream.push(bytes[0]).unwrap(), None);
    assert_eq!(stream.push(bytes[1]).unwrap(), None);
    assert_eq!(stream.push(bytes[2]).unwrap(), None);
    assert_eq!(stream.push(bytes[3]).unwrap().as_deref(), Some("🙂"));
    assert_eq!(stream.finish().unwrap(), "");
    // A stream stopped inside a character gives the replacement character at the end.
    assert_eq!(stream.push(bytes[0]).unwrap(), None);
    assert_eq!(stream.finish().unwrap(), "\u{FFFD}");
}

#[test]
fn streaming_detokenizer_on_smollm2_and_specials() {
    let Some(tokenizer) = load("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let ids = tokenizer
        .encode("<|im_start|>assistant\n中文 ok 🙂<|im_end|>", false)
        .unwrap();
    check_streaming(&tokenizer, &ids);
    let mut stream = StreamingDetokenizer::new(&tokenizer).skip_special_tokens(true);
    let mut text = String::new();
    for &id in &ids {
        text.extend(stream.push(id).unwrap());
    }
    text.push_str(&stream.finish().unwrap());
    assert_eq!(text, "assistant\n中文 ok 🙂");
}
