//! Tool calls with the real SmolLM2 tokenizer: the forcing grammars of every format accept a
//! hand-written valid call token by token (and the parser reads it back), reject calls to
//! unknown functions and arguments that break the schema; the chat template gets the tools.

mod common;

use mlx_models::load::gguf_file::GgufFile;
use mlx_models::text::tool_calls::{tool_call_grammar, ToolCallFormat, ToolChoice};
use mlx_models::text::{ChatMessage, ChatTemplate, Tokenizer};
use mlx_models::Error;
use serde_json::{json, Value};

fn smollm2() -> Option<Tokenizer> {
    let path = common::test_data("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?;
    Some(Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap())
}

fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"enum": ["c", "f"]},
                    "days": {"type": "integer"}
                },
                "required": ["city"]
            }
        }}),
        json!({"type": "function", "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
        }}),
    ]
}

#[test]
fn detection_and_grammar_errors() {
    assert_eq!(
        ToolCallFormat::detect("qwen3", Some("{{ '<tool_call>' }}")),
        ToolCallFormat::Hermes
    );
    assert_eq!(
        ToolCallFormat::detect("llama", Some("{{ '<|python_tag|>' }}")),
        ToolCallFormat::Llama3
    );
    assert_eq!(
        ToolCallFormat::detect("mistral", Some("[TOOL_CALLS] {{ tool_calls | tojson }}")),
        ToolCallFormat::Mistral
    );
    assert_eq!(
        ToolCallFormat::detect("gemma4", Some("{{- '<|tool_call>call:' -}}")),
        ToolCallFormat::Gemma
    );
    assert_eq!(
        ToolCallFormat::detect("ministral3", None),
        ToolCallFormat::Mistral
    );
    let Some(tokenizer) = smollm2() else {
        return;
    };
    let hermes = ToolCallFormat::Hermes;
    for choice in [ToolChoice::Auto, ToolChoice::None] {
        assert_eq!(
            tool_call_grammar(hermes, &tools(), &choice, &tokenizer).unwrap(),
            None
        );
    }
    let bad: [(Vec<Value>, ToolChoice); 4] = [
        (tools(), ToolChoice::Named("launch_rockets".into())),
        (vec![], ToolChoice::Required),
        (
            vec![json!({"type": "function", "function": {"parameters": {}}})],
            ToolChoice::Required,
        ),
        (
            vec![json!({"type": "function", "function": {"name": "f", "parameters": 3}})],
            ToolChoice::Required,
        ),
    ];
    for (tools, choice) in bad {
        let err = tool_call_grammar(hermes, &tools, &choice, &tokenizer).unwrap_err();
        assert!(matches!(err, Error::InvalidSchema(_)), "{err}");
    }
}

#[cfg(feature = "structured")]
mod grammars {
    use super::*;
    use mlx_models::runtime::constraint::TokenConstraint;
    use mlx_models::text::structured::{Grammar, GrammarCompiler, GrammarConstraint};
    use mlx_models::text::tool_calls::{parse_tool_calls, ToolCall};

    /// SmolLM2's EOS, `<|im_end|>`.
    const IM_END: u32 = 2;

    fn constraint(
        tokenizer: &Tokenizer,
        format: ToolCallFormat,
        choice: &ToolChoice,
    ) -> GrammarConstraint {
        let lark = tool_call_grammar(format, &tools(), choice, tokenizer)
            .unwrap()
            .unwrap();
        let compiler = GrammarCompiler::new(tokenizer, &[]).unwrap();
        compiler
            .compile(&Grammar::Lark(lark.clone()))
            .unwrap_or_else(|e| panic!("{format:?}: {e}\n{lark}"))
    }

    /// Feeds the plain-text tokens of `text`; `Err(i)` at the first token the mask refuses,
    /// `Ok(accepting)` after the last.
    fn feed(tokenizer: &Tokenizer, c: &mut GrammarConstraint, text: &str) -> Result<bool, usize> {
        for (i, id) in tokenizer
            .encode_as_text(text)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            let mask = c.mask().unwrap().unwrap();
            if !mask.allows(id) {
                return Err(i);
            }
            assert_eq!(
                mask.allows(IM_END),
                c.is_accepting().unwrap(),
                "{text:?} at {i}"
            );
            c.consume(id).unwrap();
        }
        Ok(c.is_finished() || c.mask().unwrap().unwrap().allows(IM_END))
    }

    fn accepts(tokenizer: &Tokenizer, format: ToolCallFormat, choice: &ToolChoice, text: &str) {
        let mut c = constraint(tokenizer, format, choice);
        assert_eq!(
            feed(tokenizer, &mut c, text),
            Ok(true),
            "{format:?}: {text:?}"
        );
    }

    fn rejects(tokenizer: &Tokenizer, format: ToolCallFormat, choice: &ToolChoice, text: &str) {
        let mut c = constraint(tokenizer, format, choice);
        assert_ne!(
            feed(tokenizer, &mut c, text),
            Ok(true),
            "{format:?}: {text:?}"
        );
    }

    /// Each format: a valid call of each kind is accepted token by token and parses back to
    /// `calls`; the listed invalid ones are not accepted.
    fn check(
        tokenizer: &Tokenizer,
        format: ToolCallFormat,
        valid: &[(&str, Vec<ToolCall>)],
        invalid: &[&str],
    ) {
        for (text, calls) in valid {
            accepts(tokenizer, format, &ToolChoice::Required, text);
            let parsed = parse_tool_calls(format, text);
            assert_eq!(&parsed.tool_calls, calls, "{format:?}: {text:?}");
            assert_eq!(parsed.content, "");
        }
        for text in invalid {
            rejects(tokenizer, format, &ToolChoice::Required, text);
        }
    }

    fn call(name: &str, arguments: Value) -> ToolCall {
        ToolCall {
            name: name.into(),
            arguments,
        }
    }

    #[test]
    fn hermes_required_grammar_accepts_a_valid_call_token_by_token() {
        let Some(t) = smollm2() else {
            return;
        };
        let paris = call("get_weather", json!({"city": "Paris", "unit": "c"}));
        let cet = call("get_time", json!({"tz": "CET"}));
        check(
            &t,
            ToolCallFormat::Hermes,
            &[
                (
                    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>",
                    vec![paris.clone()],
                ),
                (
                    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}\n</tool_call>",
                    vec![paris, cet],
                ),
            ],
            &[
                // Unknown function, missing required argument, wrong enum value, prose.
                "<tool_call>\n{\"name\": \"launch_rockets\", \"arguments\": {}}\n</tool_call>",
                "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"c\"}}\n</tool_call>",
                "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"k\"}}\n</tool_call>",
                "Sure, let me check the weather.",
            ],
        );
        // Unknown names are masked out where they start: after `{"name": "`, only the
        // functions' names may follow.
        let mut c = constraint(&t, ToolCallFormat::Hermes, &ToolChoice::Required);
        assert_eq!(feed(&t, &mut c, "<tool_call>\n{\"name\": \""), Ok(false));
        let mask = c.mask().unwrap().unwrap();
        let first = |text: &str| t.encode_as_text(text).unwrap()[0];
        assert!(mask.allows(first("get")));
        assert!(!mask.allows(first("launch")) && !mask.allows(first("rm")));
        assert!(!mask.allows(IM_END));
    }

    #[test]
    fn named_choice_forces_that_function_once() {
        let Some(t) = smollm2() else {
            return;
        };
        let named = ToolChoice::Named("get_time".into());
        let one =
            "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"UTC\"}}\n</tool_call>";
        accepts(&t, ToolCallFormat::Hermes, &named, one);
        let mut c = constraint(&t, ToolCallFormat::Hermes, &named);
        feed(&t, &mut c, one).unwrap();
        assert!(
            c.is_finished(),
            "a named call is one call: nothing may follow"
        );
        rejects(
            &t,
            ToolCallFormat::Hermes,
            &named,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        );
    }

    #[test]
    fn open_schemas_are_closed_and_required_one_is_one_call() {
        let Some(t) = smollm2() else {
            return;
        };
        // The tools' parameters list properties and say nothing of others: no other key.
        rejects(
            &t,
            ToolCallFormat::Hermes,
            &ToolChoice::Required,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"type\": \"function\"}}\n</tool_call>",
        );
        let one =
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let two = format!("{one}\n{one}");
        accepts(&t, ToolCallFormat::Hermes, &ToolChoice::Required, &two);
        let mut c = constraint(&t, ToolCallFormat::Hermes, &ToolChoice::RequiredOne);
        feed(&t, &mut c, one).unwrap();
        assert!(c.is_finished(), "one call, then nothing");
        rejects(&t, ToolCallFormat::Hermes, &ToolChoice::RequiredOne, &two);
    }

    #[test]
    fn llama3_tool_code_and_mistral_grammars() {
        let Some(t) = smollm2() else {
            return;
        };
        let oslo = || call("get_weather", json!({"city": "Oslo", "days": 3}));
        check(
            &t,
            ToolCallFormat::Llama3,
            &[(
                "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"days\": 3}}",
                vec![oslo()],
            )],
            &[
                "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}",
                "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"days\": \"3\"}}",
            ],
        );
        check(
            &t,
            ToolCallFormat::ToolCode,
            &[(
                "```tool_code\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": 3}}\n```",
                vec![oslo()],
            )],
            &["```python\nget_weather(city=\"Oslo\")\n```"],
        );
        check(
            &t,
            ToolCallFormat::Mistral,
            &[(
                "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": 3}}, {\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}]",
                vec![oslo(), call("get_time", json!({"tz": "CET"}))],
            )],
            &["[TOOL_CALLS][]", "[TOOL_CALLS][{\"name\": \"get_time\", \"arguments\": {}}]"],
        );
        check(
            &t,
            ToolCallFormat::MistralArgs,
            &[(
                "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Oslo\", \"days\": 3}[TOOL_CALLS]get_time[ARGS]{\"tz\": \"CET\"}",
                vec![oslo(), call("get_time", json!({"tz": "CET"}))],
            )],
            &[
                "[TOOL_CALLS]get_time[ARGS]{\"city\": \"Oslo\"}",
                "[TOOL_CALLS]get_news[ARGS]{}",
            ],
        );
    }

    #[test]
    fn gemma4_grammar_writes_gemma_arguments() {
        let Some(t) = smollm2() else {
            return;
        };
        check(
            &t,
            ToolCallFormat::Gemma,
            &[
                (
                    "<|tool_call>call:get_weather{city:<|\"|>Oslo, \"Norway\"<|\"|>,days:3,unit:<|\"|>c<|\"|>}<tool_call|>",
                    vec![call(
                        "get_weather",
                        json!({"city": "Oslo, \"Norway\"", "days": 3, "unit": "c"}),
                    )],
                ),
                (
                    "<|tool_call>call:get_weather{city:<|\"|>Oslo<|\"|>}<tool_call|><|tool_call>call:get_time{tz:<|\"|>CET<|\"|>}<tool_call|>",
                    vec![
                        call("get_weather", json!({"city": "Oslo"})),
                        call("get_time", json!({"tz": "CET"})),
                    ],
                ),
            ],
            &[
                // Missing required key, keys out of (sorted) order, a string for an integer,
                // an unknown function, a value outside the enum.
                "<|tool_call>call:get_weather{days:3}<tool_call|>",
                "<|tool_call>call:get_weather{days:3,city:<|\"|>Oslo<|\"|>}<tool_call|>",
                "<|tool_call>call:get_weather{city:<|\"|>Oslo<|\"|>,days:<|\"|>3<|\"|>}<tool_call|>",
                "<|tool_call>call:get_news{}<tool_call|>",
                "<|tool_call>call:get_weather{city:<|\"|>Oslo<|\"|>,unit:<|\"|>k<|\"|>}<tool_call|>",
            ],
        );
    }

    /// A marker that is a special token is forced as that token, by id.
    #[test]
    fn special_markers_are_forced_by_id() {
        let Some(path) =
            common::test_data("tokenizers/mistral/mistral_instruct_tokenizer_240323.model.v3")
        else {
            return;
        };
        let t = Tokenizer::from_sentencepiece(&path).unwrap();
        let calls = t.token_to_id("[TOOL_CALLS]").unwrap();
        assert!(t.is_special_token(calls));
        let lark = tool_call_grammar(ToolCallFormat::Mistral, &tools(), &ToolChoice::Required, &t)
            .unwrap()
            .unwrap();
        assert!(lark.contains(&format!("<[{calls}]>")), "{lark}");
        let compiler = GrammarCompiler::new(&t, &[]).unwrap();
        let mut c = compiler.compile(&Grammar::Lark(lark)).unwrap();
        let mask = c.mask().unwrap().unwrap();
        assert!(mask.allows(calls));
        // Not the marker spelled out as text.
        assert!(!mask.allows(t.token_to_id("▁[").unwrap()));
        c.consume(calls).unwrap();
        for id in t
            .encode_as_text("[{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}]")
            .unwrap()
        {
            assert!(c.mask().unwrap().unwrap().allows(id), "{id}");
            c.consume(id).unwrap();
        }
        assert!(c.is_finished());
    }
}

/// `apply_chat_template_with` hands `{"tools": [...]}` to the template: a Hermes-style
/// template renders each tool as JSON. (Keys come out sorted: the template engine's maps are
/// ordered by key, where transformers keeps the request's order.)
#[test]
fn chat_templates_receive_the_tools() {
    let Some(tokenizer) = smollm2() else {
        return;
    };
    let template = std::fs::read_to_string(common::fixture("chat/qwen25_style.jinja")).unwrap();
    let tokenizer = tokenizer.with_chat_template(ChatTemplate::new(template).unwrap());
    let tool = json!({"type": "function", "function": {
        "name": "get_time", "description": "Now", "parameters": {"type": "object"}
    }});
    let extra = json!({"tools": [tool]});
    let messages = [ChatMessage::new("user", "What time is it?")];
    let text = tokenizer
        .render_chat_template(&messages, true, &extra)
        .unwrap();
    let rendered_tool = r#"{"function": {"description": "Now", "name": "get_time", "parameters": {"type": "object"}}, "type": "function"}"#;
    assert!(
        text.contains(&format!("<tools>\n{rendered_tool}\n</tools>")),
        "{text}"
    );
    // Without tools, no tools section.
    let plain = tokenizer
        .render_chat_template(&messages, true, &serde_json::Value::Null)
        .unwrap();
    assert!(!plain.contains("<tools>"));
    // The ids are those of the rendered text.
    let ids = tokenizer
        .apply_chat_template_with(&messages, true, &extra)
        .unwrap();
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
}
