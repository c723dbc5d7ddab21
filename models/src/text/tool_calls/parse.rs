//! Reading tool calls out of generated text, one reader per [`ToolCallFormat`]. A call that
//! does not parse (truncated, malformed JSON, no name) stays in the content as the text it is.

use super::{gemma, ParsedOutput, ToolCall, ToolCallFormat};
use serde_json::{Map, Value};

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";
const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
const MISTRAL_ARGS: &str = "[ARGS]";
const MISTRAL_CALL_ID: &str = "[CALL_ID]";
const GEMMA_OPEN: &str = "<|tool_call>";
const GEMMA_CLOSE: &str = "<tool_call|>";
const TOOL_CODE_OPEN: &str = "```tool_code";
const FENCE: &str = "```";

/// The calls in `text`, written the way `format` writes them, and the text around them.
/// Never fails: what does not parse is content.
///
/// ```
/// use mlx_models::text::tool_calls::{parse_tool_calls, ToolCallFormat};
/// let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
/// let out = parse_tool_calls(ToolCallFormat::Hermes, text);
/// assert_eq!(out.content, "Let me check.");
/// assert_eq!(out.tool_calls[0].name, "get_weather");
/// assert_eq!(out.tool_calls[0].arguments, serde_json::json!({"city": "Paris"}));
/// // Malformed: left as content.
/// let out = parse_tool_calls(ToolCallFormat::Hermes, "<tool_call>{\"name\": oops</tool_call>");
/// assert!(out.tool_calls.is_empty());
/// assert_eq!(out.content, "<tool_call>{\"name\": oops</tool_call>");
/// ```
pub fn parse_tool_calls(format: ToolCallFormat, text: &str) -> ParsedOutput {
    let (content, tool_calls) = match format {
        ToolCallFormat::Hermes => blocks(text, HERMES_OPEN, Some(HERMES_CLOSE), |body| {
            json_call(body, &["arguments", "parameters"])
        }),
        ToolCallFormat::Gemma => blocks(text, GEMMA_OPEN, Some(GEMMA_CLOSE), gemma_call),
        ToolCallFormat::ToolCode => blocks(text, TOOL_CODE_OPEN, Some(FENCE), |body| {
            json_call(body, &["arguments", "parameters"])
        }),
        ToolCallFormat::Llama3 => llama3(text),
        ToolCallFormat::Mistral | ToolCallFormat::MistralArgs => mistral(text),
    };
    if tool_calls.is_empty() {
        return ParsedOutput {
            content: text.to_string(),
            tool_calls,
        };
    }
    ParsedOutput {
        content: content.trim().to_string(),
        tool_calls,
    }
}

/// Calls written as `open body close` blocks (`close` may be missing at the very end: a
/// generation stopped on it). A block whose body `call` rejects stays in the content.
fn blocks(
    text: &str,
    open: &str,
    close: Option<&str>,
    call: impl Fn(&str) -> Option<ToolCall>,
) -> (String, Vec<ToolCall>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(open) {
        content.push_str(&rest[..at]);
        let after = &rest[at + open.len()..];
        let (body, next) = match close.and_then(|c| after.find(c).map(|e| (e, c.len()))) {
            Some((end, len)) => (&after[..end], &after[end + len..]),
            None => (after, ""),
        };
        match call(body) {
            Some(c) => {
                calls.push(c);
                rest = next;
            }
            None => {
                content.push_str(open);
                rest = after;
            }
        }
    }
    content.push_str(rest);
    (content, calls)
}

/// The JSON value at the start of `s` (after whitespace), and the text after it.
fn json_prefix(s: &str) -> Option<(Value, &str)> {
    let s = s.trim_start();
    let mut stream = serde_json::Deserializer::from_str(s).into_iter::<Value>();
    let value = stream.next()?.ok()?;
    Some((value, &s[stream.byte_offset()..]))
}

/// A call from a JSON object `{"name": …, <one of args_keys>: …}`. Arguments given as a
/// string holding JSON (as OpenAI's API spells them) are read; none: `{}`.
fn call_from_json(v: &Value, args_keys: &[&str]) -> Option<ToolCall> {
    let obj = v.as_object()?;
    let name = obj.get("name")?.as_str()?.trim();
    if name.is_empty() {
        return None;
    }
    let arguments = match args_keys.iter().find_map(|k| obj.get(*k)) {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok()?,
        Some(other) => other.clone(),
    };
    Some(ToolCall {
        name: name.to_string(),
        arguments,
    })
}

/// One JSON call filling all of `body` (whitespace around it allowed).
fn json_call(body: &str, args_keys: &[&str]) -> Option<ToolCall> {
    let (v, tail) = json_prefix(body)?;
    if !tail.trim().is_empty() {
        return None;
    }
    call_from_json(&v, args_keys)
}

/// JSON calls filling all of `body`: objects separated by `;` (or whitespace), or one list
/// of objects. `None` unless every part is a call.
fn json_calls(body: &str, args_keys: &[&str]) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let (v, tail) = json_prefix(rest)?;
        match &v {
            Value::Array(items) => {
                for item in items {
                    calls.push(call_from_json(item, args_keys)?);
                }
            }
            _ => calls.push(call_from_json(&v, args_keys)?),
        }
        rest = tail.trim_start();
        rest = rest.strip_prefix(';').unwrap_or(rest).trim_start();
    }
    (!calls.is_empty()).then_some(calls)
}

/// Llama 3: calls after `<|python_tag|>`, or a text that is nothing but calls, or text
/// followed by calls (the first `{` from which the rest is all calls).
fn llama3(text: &str) -> (String, Vec<ToolCall>) {
    const ARGS: &[&str] = &["parameters", "arguments"];
    if let Some(at) = text.find(PYTHON_TAG) {
        if let Some(calls) = json_calls(&text[at + PYTHON_TAG.len()..], ARGS) {
            return (text[..at].to_string(), calls);
        }
        return (text.to_string(), Vec::new());
    }
    for (at, _) in text.match_indices(['{', '[']).take(16) {
        if let Some(calls) = json_calls(&text[at..], ARGS) {
            return (text[..at].to_string(), calls);
        }
    }
    (text.to_string(), Vec::new())
}

/// Mistral: after `[TOOL_CALLS]`, a JSON list of calls, or `name[ARGS]{…}` (with an optional
/// `[CALL_ID]id` before `[ARGS]`), each further call after its own `[TOOL_CALLS]`. What
/// follows the last call is content.
fn mistral(text: &str) -> (String, Vec<ToolCall>) {
    let Some(at) = text.find(MISTRAL_CALLS) else {
        return (text.to_string(), Vec::new());
    };
    let mut content = text[..at].to_string();
    let mut calls = Vec::new();
    let mut rest = &text[at + MISTRAL_CALLS.len()..];
    loop {
        let parsed = if rest.trim_start().starts_with('[') {
            json_prefix(rest).and_then(|(v, tail)| {
                let items = v.as_array()?;
                let list: Option<Vec<ToolCall>> = items
                    .iter()
                    .map(|i| call_from_json(i, &["arguments", "parameters"]))
                    .collect();
                list.filter(|l| !l.is_empty()).map(|l| (l, tail))
            })
        } else {
            mistral_args_call(rest).map(|(c, tail)| (vec![c], tail))
        };
        match parsed {
            Some((list, tail)) => {
                calls.extend(list);
                rest = tail;
            }
            None => {
                // Not a call: the marker and what follows are content.
                content.push_str(MISTRAL_CALLS);
                content.push_str(rest);
                return (content, calls);
            }
        }
        match rest.trim_start().strip_prefix(MISTRAL_CALLS) {
            Some(next) => rest = next,
            None => {
                content.push_str(rest);
                return (content, calls);
            }
        }
    }
}

/// `name[ARGS]{…}` (or `name[CALL_ID]id[ARGS]{…}`) at the start of `s`, and the rest.
fn mistral_args_call(s: &str) -> Option<(ToolCall, &str)> {
    let args_at = s.find(MISTRAL_ARGS)?;
    let head = &s[..args_at];
    let name = match head.find(MISTRAL_CALL_ID) {
        Some(id_at) => &head[..id_at],
        None => head,
    }
    .trim();
    let valid = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || !name.chars().all(valid) {
        return None;
    }
    let (arguments, tail) = json_prefix(&s[args_at + MISTRAL_ARGS.len()..])?;
    let arguments = match arguments {
        Value::Object(_) => arguments,
        Value::String(text) => serde_json::from_str(&text).ok()?,
        _ => return None,
    };
    Some((
        ToolCall {
            name: name.to_string(),
            arguments,
        },
        tail,
    ))
}

/// Gemma 4: `call:NAME{…}`.
fn gemma_call(body: &str) -> Option<ToolCall> {
    let body = body.trim().strip_prefix("call:")?;
    let brace = body.find('{')?;
    let name = body[..brace].trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some(ToolCall {
        name: name.to_string(),
        arguments: gemma::parse_args(&body[brace..])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(name: &str, arguments: Value) -> ToolCall {
        ToolCall {
            name: name.into(),
            arguments,
        }
    }

    #[test]
    fn hermes_calls_text_and_malformed_blocks() {
        let text = "I'll look both up.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": \"{\\\"tz\\\": \\\"CET\\\"}\"}\n</tool_call>";
        let out = parse_tool_calls(ToolCallFormat::Hermes, text);
        assert_eq!(out.content, "I'll look both up.");
        assert_eq!(
            out.tool_calls,
            vec![
                call("get_weather", json!({"city": "Paris"})),
                call("get_time", json!({"tz": "CET"}))
            ]
        );
        // A block cut off before its closing tag still parses when its JSON is whole.
        let out = parse_tool_calls(
            ToolCallFormat::Hermes,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}",
        );
        assert_eq!(out.tool_calls, vec![call("f", json!({}))]);
        assert_eq!(out.content, "");
        // Malformed JSON, a missing name, a truncated call: all content, unchanged.
        for text in [
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": }\n</tool_call>",
            "<tool_call>\n{\"arguments\": {}}\n</tool_call> after",
            "<tool_call>\n{\"name\": \"f\", \"argu",
            "<tool_call>",
            "plain text </tool_call>",
        ] {
            let out = parse_tool_calls(ToolCallFormat::Hermes, text);
            assert!(out.tool_calls.is_empty(), "{text:?}");
            assert_eq!(out.content, text);
        }
        // A malformed block beside a good one: the good one is a call, the bad one content.
        let out = parse_tool_calls(
            ToolCallFormat::Hermes,
            "<tool_call>{bad}</tool_call><tool_call>{\"name\": \"g\"}</tool_call>",
        );
        assert_eq!(out.tool_calls, vec![call("g", json!({}))]);
        assert_eq!(out.content, "<tool_call>{bad}</tool_call>");
    }

    #[test]
    fn llama3_json_calls() {
        let out = parse_tool_calls(
            ToolCallFormat::Llama3,
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        );
        assert_eq!(
            out.tool_calls,
            vec![call("get_weather", json!({"city": "Paris"}))]
        );
        assert_eq!(out.content, "");
        let out = parse_tool_calls(
            ToolCallFormat::Llama3,
            "Sure.<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": 1}}",
        );
        assert_eq!(out.content, "Sure.");
        assert_eq!(
            out.tool_calls,
            vec![call("a", json!({})), call("b", json!({"x": 1}))]
        );
        // Text before a bare JSON call.
        let out = parse_tool_calls(
            ToolCallFormat::Llama3,
            "Checking {the} weather: {\"name\": \"w\", \"parameters\": {\"c\": \"Oslo\"}}",
        );
        assert_eq!(out.content, "Checking {the} weather:");
        assert_eq!(out.tool_calls, vec![call("w", json!({"c": "Oslo"}))]);
        for text in [
            "The answer is {42}.",
            "{\"name\": \"w\", \"parameters\": {\"c\": }",
            "{\"name\": \"w\"} and then some words",
            "<|python_tag|>not json",
        ] {
            let out = parse_tool_calls(ToolCallFormat::Llama3, text);
            assert!(out.tool_calls.is_empty(), "{text:?}");
            assert_eq!(out.content, text);
        }
    }

    #[test]
    fn mistral_list_and_args_forms() {
        let out = parse_tool_calls(
            ToolCallFormat::Mistral,
            "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": {}}]",
        );
        assert_eq!(
            out.tool_calls,
            vec![call("a", json!({"x": 1})), call("b", json!({}))]
        );
        let out = parse_tool_calls(
            ToolCallFormat::MistralArgs,
            "Let me see.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_time[CALL_ID]abc123[ARGS]{\"tz\": \"CET\"}",
        );
        assert_eq!(out.content, "Let me see.");
        assert_eq!(
            out.tool_calls,
            vec![
                call("get_weather", json!({"city": "Paris"})),
                call("get_time", json!({"tz": "CET"}))
            ]
        );
        for text in [
            "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": }]",
            "[TOOL_CALLS]get weather[ARGS]{}",
            "[TOOL_CALLS]f[ARGS]{\"a\": ",
            "[TOOL_CALLS]",
            "no calls at all",
        ] {
            let out = parse_tool_calls(ToolCallFormat::Mistral, text);
            assert!(out.tool_calls.is_empty(), "{text:?}");
            assert_eq!(out.content, text);
        }
        // A good call, then a malformed one: the first is a call, the rest content.
        let out = parse_tool_calls(
            ToolCallFormat::MistralArgs,
            "[TOOL_CALLS]f[ARGS]{}[TOOL_CALLS]g[ARGS]{oops",
        );
        assert_eq!(out.tool_calls, vec![call("f", json!({}))]);
        assert_eq!(out.content, "[TOOL_CALLS]g[ARGS]{oops");
    }

    #[test]
    fn gemma4_calls() {
        let text = "Checking.<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,days:3}<tool_call|><|tool_call>call:get_time{}<tool_call|>";
        let out = parse_tool_calls(ToolCallFormat::Gemma, text);
        assert_eq!(out.content, "Checking.");
        assert_eq!(
            out.tool_calls,
            vec![
                call("get_weather", json!({"city": "Paris", "days": 3})),
                call("get_time", json!({}))
            ]
        );
        for text in [
            "<|tool_call>call:f{city:<|\"|>Paris}<tool_call|>",
            "<|tool_call>get_weather{}<tool_call|>",
            "<|tool_call>call:{a:1}<tool_call|>",
        ] {
            let out = parse_tool_calls(ToolCallFormat::Gemma, text);
            assert!(out.tool_calls.is_empty(), "{text:?}");
            assert_eq!(out.content, text);
        }
    }

    #[test]
    fn tool_code_blocks() {
        let text = "Sure.\n```tool_code\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```\nDone.";
        let out = parse_tool_calls(ToolCallFormat::ToolCode, text);
        assert_eq!(out.content, "Sure.\n\nDone.");
        assert_eq!(
            out.tool_calls,
            vec![call("get_weather", json!({"city": "Paris"}))]
        );
        let python = "```tool_code\nget_weather(city=\"Paris\")\n```";
        assert!(parse_tool_calls(ToolCallFormat::ToolCode, python)
            .tool_calls
            .is_empty());
    }

    #[test]
    fn hostile_text_never_panics() {
        let nasty = [
            "",
            "<tool_call>",
            "</tool_call><tool_call>",
            "[TOOL_CALLS][ARGS]",
            "[TOOL_CALLS]é[ARGS]\u{0}",
            "<|tool_call>call:é{é:<|\"|>",
            "```tool_code",
            "<|python_tag|>",
            "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{",
        ];
        let deep = "[".repeat(10_000);
        for format in [
            ToolCallFormat::Hermes,
            ToolCallFormat::Llama3,
            ToolCallFormat::Mistral,
            ToolCallFormat::MistralArgs,
            ToolCallFormat::Gemma,
            ToolCallFormat::ToolCode,
        ] {
            for text in nasty.iter().copied().chain([deep.as_str()]) {
                let out = parse_tool_calls(format, text);
                assert!(out.tool_calls.is_empty(), "{format:?} {text:?}");
                assert_eq!(out.content, text);
            }
        }
    }
}
