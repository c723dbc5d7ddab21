//! Constrained decoding (`text::structured`) with the real SmolLM2 tokenizer: scripted token
//! sequences (our own encoding of valid text) go through the mask token by token; tokens that
//! break the grammar are masked out; EOS is allowed exactly where the grammar accepts;
//! malformed schemas and grammars are typed errors.
#![cfg(feature = "structured")]

mod common;

use mlx_models::load::gguf_file::GgufFile;
use mlx_models::runtime::constraint::TokenConstraint;
use mlx_models::text::structured::{Grammar, GrammarCompiler, GrammarConstraint};
use mlx_models::text::Tokenizer;
use mlx_models::Error;
use serde_json::json;

/// SmolLM2's `<|im_start|>`, `<|im_end|>` (its EOS).
const IM_START: u32 = 1;
const IM_END: u32 = 2;

fn smollm2() -> Option<(Tokenizer, GrammarCompiler)> {
    let path = common::test_data("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?;
    let tokenizer = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let compiler = GrammarCompiler::new(&tokenizer, &[]).unwrap();
    Some((tokenizer, compiler))
}

/// Feeds the plain-text tokens of `text` one by one, checking each against the mask, and
/// that the mask allows EOS exactly when the grammar accepts the text so far.
fn feed(tokenizer: &Tokenizer, constraint: &mut GrammarConstraint, text: &str) {
    let ids = tokenizer.encode_as_text(text).unwrap();
    for (i, &id) in ids.iter().enumerate() {
        assert!(
            !constraint.is_finished(),
            "finished before token {i} of {text:?}"
        );
        let mask = constraint.mask().unwrap().unwrap();
        let piece = tokenizer.decode(&[id], false).unwrap();
        assert!(
            mask.allows(id),
            "token {i} ({id}, {piece:?}) of {text:?} is masked out"
        );
        assert_eq!(
            mask.allows(IM_END),
            constraint.is_accepting().unwrap(),
            "EOS vs accepting at token {i} of {text:?}"
        );
        constraint.consume(id).unwrap();
    }
}

/// The id of a single-token text (checked to be one token).
fn token(tokenizer: &Tokenizer, text: &str) -> u32 {
    let ids = tokenizer.encode_as_text(text).unwrap();
    assert_eq!(ids.len(), 1, "{text:?} is {ids:?}");
    ids[0]
}

fn person_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}}
        },
        "required": ["name", "age"],
        "additionalProperties": false
    })
}

#[test]
fn a_valid_json_goes_through_token_by_token_and_finishes() {
    let Some((tokenizer, compiler)) = smollm2() else {
        return;
    };
    assert_eq!(compiler.eos_token_ids(), &[IM_END]);
    assert_eq!(compiler.vocab_size(), 49152);
    for text in [
        r#"{"name": "Zoë — 日本", "age": 42}"#,
        r#"{"name":"x","age":0,"tags":["b","a"]}"#,
        "{\n  \"name\": \"multi\\nline \\\"quoted\\\"\",\n  \"age\": 7\n}",
    ] {
        let mut c = compiler
            .compile(&Grammar::JsonSchema(person_schema()))
            .unwrap();
        feed(&tokenizer, &mut c, text);
        // The object is closed: nothing may follow; EOS is what the mask allows.
        assert!(c.is_finished(), "{text:?}");
        let mask = c.mask().unwrap().unwrap();
        assert!(mask.allows(IM_END));
        assert!(!mask.allows(token(&tokenizer, "}")));
        // The sampler may still pass EOS on: accepted.
        c.consume(IM_END).unwrap();
    }
}

#[test]
fn tokens_that_break_the_schema_are_masked_out() {
    let Some((tokenizer, compiler)) = smollm2() else {
        return;
    };
    let mut c = compiler
        .compile(&Grammar::JsonSchema(person_schema()))
        .unwrap();
    let mask = c.mask().unwrap().unwrap();
    // An object must start; EOS, text and special tokens may not.
    assert!(!mask.allows(IM_END) && !mask.allows(IM_START));
    assert!(!mask.allows(token(&tokenizer, "Hello")));
    assert!(!mask.allows(token(&tokenizer, "[")));
    feed(&tokenizer, &mut c, r#"{"name": "#);
    let mask = c.mask().unwrap().unwrap();
    // A string must come: no digit, no `}`, no EOS; a quote may.
    assert!(!mask.allows(token(&tokenizer, "4")));
    assert!(!mask.allows(token(&tokenizer, "}")));
    assert!(!mask.allows(IM_END));
    assert!(mask.allows(token(&tokenizer, "\"")));
    feed(&tokenizer, &mut c, r#""a <|im_end|> b"#);
    // Inside a string, the text `<` is fine but the special token `<|im_end|>` is not.
    let mask = c.mask().unwrap().unwrap();
    assert!(mask.allows(token(&tokenizer, "<")));
    assert!(!mask.allows(IM_END) && !mask.allows(IM_START));
    feed(&tokenizer, &mut c, r#"", "age": "#);
    // "age" is a non-negative integer: no quote, no minus sign.
    let mask = c.mask().unwrap().unwrap();
    assert!(!mask.allows(token(&tokenizer, "\"")));
    assert!(!mask.allows(token(&tokenizer, "-")));
    assert!(mask.allows(token(&tokenizer, "7")));
    // Consuming a masked-out token is a typed error.
    let err = c.consume(token(&tokenizer, "\"")).unwrap_err();
    assert!(matches!(err, Error::Constraint(_)), "{err}");
}

#[test]
fn eos_is_allowed_exactly_where_the_grammar_accepts() {
    let Some((tokenizer, compiler)) = smollm2() else {
        return;
    };
    // A top-level integer: "12" is complete but may grow ("123"): EOS and digits allowed,
    // the grammar is not finished until EOS comes.
    let mut c = compiler
        .compile(&Grammar::JsonSchema(json!({"type": "integer"})))
        .unwrap();
    assert!(!c.mask().unwrap().unwrap().allows(IM_END));
    assert!(!c.is_accepting().unwrap());
    feed(&tokenizer, &mut c, "12");
    assert!(c.is_accepting().unwrap());
    let mask = c.mask().unwrap().unwrap();
    assert!(mask.allows(IM_END) && mask.allows(token(&tokenizer, "3")));
    assert!(!c.is_finished());
    c.consume(IM_END).unwrap();
    assert!(c.is_finished());
}

#[test]
fn json_mode_takes_any_object() {
    let Some((tokenizer, compiler)) = smollm2() else {
        return;
    };
    let mut c = compiler.compile(&Grammar::JsonObject).unwrap();
    assert!(!c.mask().unwrap().unwrap().allows(token(&tokenizer, "[")));
    feed(
        &tokenizer,
        &mut c,
        r#"{"a": [1, -2.5e3, {"b": null}], "c": "x", "d": {"e": true}}"#,
    );
    assert!(c.is_finished());
    assert!(matches!(
        Grammar::from_ollama_format(&json!("json")).unwrap(),
        Some(Grammar::JsonObject)
    ));
}

#[test]
fn local_refs_and_response_format_wrappers() {
    let Some((tokenizer, compiler)) = smollm2() else {
        return;
    };
    let format = json!({
        "type": "json_schema",
        "json_schema": {
            "name": "point_list",
            "strict": true,
            "schema": {
                "$defs": {"point": {
                    "type": "object",
                    "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                    "required": ["x", "y"],
                    "additionalProperties": false
                }},
                "type": "array",
                "items": {"$ref": "#/$defs/point"}
            }
        }
    });
    let grammar = Grammar::from_openai_response_format(&format)
        .unwrap()
        .unwrap();
    let mut c = compiler.compile(&grammar).unwrap();
    feed(
        &tokenizer,
        &mut c,
        r#"[{"x": 1, "y": 2.5}, {"x": -3, "y": 0}]"#,
    );
    assert!(c.is_finished());
    // A point without "y" cannot close.
    let mut c = compiler.compile(&grammar).unwrap();
    feed(&tokenizer, &mut c, r#"[{"x": 1"#);
    assert!(!c.mask().unwrap().unwrap().allows(token(&tokenizer, "}")));
}

#[test]
fn lark_grammars_reach_special_tokens_by_name() {
    let Some((tokenizer, compiler)) = smollm2() else {
        return;
    };
    let mut c = compiler
        .compile(&Grammar::Lark(
            r#"start: ("yes" | "no") <|im_start|> "!""#.into(),
        ))
        .unwrap();
    feed(&tokenizer, &mut c, "yes");
    // Only the special token may follow: not its text spelled out.
    let mask = c.mask().unwrap().unwrap();
    assert!(mask.allows(IM_START));
    assert!(!mask.allows(token(&tokenizer, "<")));
    c.consume(IM_START).unwrap();
    feed(&tokenizer, &mut c, "!");
    assert!(c.is_finished());
}

#[test]
fn invalid_schemas_and_grammars_are_typed_errors() {
    let Some((_, compiler)) = smollm2() else {
        return;
    };
    let bad = [
        Grammar::JsonSchema(json!({"type": "frobnicate"})),
        Grammar::JsonSchema(json!({"type": "object", "properties": 5})),
        Grammar::JsonSchema(json!({"$ref": "#/$defs/missing"})),
        Grammar::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
        Grammar::Lark("start: (".into()),
        Grammar::Lark("start: <|no_such_token|>".into()),
    ];
    for grammar in bad {
        match compiler.compile(&grammar) {
            Err(Error::InvalidSchema(message)) => assert!(!message.is_empty()),
            other => panic!("{grammar:?}: expected InvalidSchema, got {other:?}"),
        }
    }
    assert!(matches!(
        Grammar::from_openai_response_format(&json!({"type": "json_schema", "json_schema": {}})),
        Err(Error::InvalidSchema(_))
    ));
    assert!(matches!(
        Grammar::from_openai_response_format(
            &json!({"type": "json_schema", "json_schema": {"schema": "not a schema"}})
        ),
        Err(Error::InvalidSchema(_))
    ));
}

#[test]
fn end_of_sequence_ids_are_checked() {
    let Some((tokenizer, _)) = smollm2() else {
        return;
    };
    let err = GrammarCompiler::new(&tokenizer, &[49152]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    // Several end ids: each allowed where the grammar accepts.
    let compiler = GrammarCompiler::new(&tokenizer, &[IM_END, 0]).unwrap();
    let mut c = compiler
        .compile(&Grammar::Lark("start: \"a\"".into()))
        .unwrap();
    feed(&tokenizer, &mut c, "a");
    let mask = c.mask().unwrap().unwrap();
    assert!(mask.allows(IM_END) && mask.allows(0));
}

#[test]
fn the_compiler_is_shared_across_threads() {
    fn shared<T: Send + Sync + Clone>() {}
    fn sent<T: Send>() {}
    shared::<GrammarCompiler>();
    sent::<GrammarConstraint>();
}
