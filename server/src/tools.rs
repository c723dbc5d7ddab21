//! Tool calls: the tools go to the chat template (the `tools` variable), the model writes
//! calls in its own format (`mlx_models::text::tool_calls::ToolCallFormat`, detected from
//! the chat template or the family), and the answer is parsed into OpenAI's `tool_calls`
//! (arguments as a JSON string, finish reason `tool_calls`) or Ollama's (arguments as an
//! object).
//!
//! `tool_choice`: `auto` (the default with tools) lets the model choose; `required` and a
//! named function force a call with a grammar (its arguments valid against the function's
//! schema); `none` leaves the tools out of the prompt. With tools, a streamed answer sends
//! its text as it comes until a call may begin (`ToolCallStream`: the format's marker, or for
//! Llama 3 the first `{` or `[`), holds the rest, and at the end sends the rest's content and
//! the calls (a call cannot be told from text before it is complete). Text is decoded with special tokens kept, since some
//! formats mark calls with them. A model whose chat template does not render tools gets
//! them, and its call format, in a system message.

use crate::error::ApiError;
use mlx_models::text::chat::ChatMessage;
use mlx_models::text::structured::Grammar;
use mlx_models::text::tool_calls::{
    parse_tool_calls, tool_call_grammar, ParsedOutput, ToolCall, ToolCallFormat, ToolCallStream,
    ToolChoice,
};
use mlx_models::text::Tokenizer;
use serde_json::{json, Value};

/// A request's tools and how they are used.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSetup {
    /// The model's call format.
    pub format: ToolCallFormat,
    /// `auto`, `required` or a named function.
    pub choice: ToolChoice,
    /// The tools, as the request gave them (`{"type": "function", "function": {...}}`).
    pub tools: Vec<Value>,
    /// Whether several calls may come in one answer (OpenAI's `parallel_tool_calls`).
    pub parallel: bool,
}

/// OpenAI's `tool_choice`: `"none"`, `"auto"`, `"required"`, or
/// `{"type": "function", "function": {"name": ...}}`. Errors: 400 for another value.
///
/// ```
/// use mlx_models::text::tool_calls::ToolChoice;
/// use mlx_server::tools::parse_choice;
/// use serde_json::json;
/// assert_eq!(parse_choice(None).unwrap(), ToolChoice::Auto);
/// assert_eq!(parse_choice(Some(&json!("required"))).unwrap(), ToolChoice::Required);
/// let named = json!({"type": "function", "function": {"name": "f"}});
/// assert_eq!(parse_choice(Some(&named)).unwrap(), ToolChoice::Named("f".into()));
/// assert!(parse_choice(Some(&json!("sometimes"))).is_err());
/// ```
pub fn parse_choice(choice: Option<&Value>) -> Result<ToolChoice, ApiError> {
    match choice {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad_choice(other)),
        },
        Some(v) => v
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Named(n.to_string()))
            .ok_or_else(|| bad_choice(&v.to_string())),
    }
}

fn bad_choice(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "`tool_choice` must be \"none\", \"auto\", \"required\" or \
         {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {what}"
    ))
    .with_param("tool_choice")
}

impl ToolSetup {
    /// The setup of a request: `None` without tools or with `tool_choice: "none"`. Errors:
    /// 400 when the choice needs tools and there are none.
    pub fn new(
        tools: Option<&[Value]>,
        choice: Option<&Value>,
        format: ToolCallFormat,
    ) -> Result<Option<ToolSetup>, ApiError> {
        let choice = parse_choice(choice)?;
        let tools: Vec<Value> = tools.map(<[Value]>::to_vec).unwrap_or_default();
        match (&choice, tools.is_empty()) {
            (ToolChoice::None, _) | (ToolChoice::Auto, true) => Ok(None),
            (_, true) => {
                Err(ApiError::bad_request("`tool_choice` requires `tools`")
                    .with_param("tool_choice"))
            }
            _ => Ok(Some(ToolSetup {
                format,
                choice,
                tools,
                parallel: true,
            })),
        }
    }

    /// With `parallel` false, at most one call: a required call is forced as exactly one,
    /// and only the first parsed call is kept.
    pub fn parallel(mut self, parallel: bool) -> ToolSetup {
        self.parallel = parallel;
        if !parallel && self.choice == ToolChoice::Required {
            self.choice = ToolChoice::RequiredOne;
        }
        self
    }

    /// The grammar that forces a call (`required`, named), or `None` (`auto`). Errors: 400
    /// `invalid_schema` for a malformed tool or a named function not among the tools.
    pub fn grammar(&self, tokenizer: &Tokenizer) -> Result<Option<Grammar>, ApiError> {
        tool_call_grammar(self.format, &self.tools, &self.choice, tokenizer)
            .map(|lark| lark.map(Grammar::Lark))
            .map_err(|e| ApiError::from(e).with_param("tools"))
    }

    /// Adds what the prompt needs besides the template's `tools` variable: when the chat
    /// template does not render tools (`renders_tools` false: SmolLM2's, Gemma 3's), a system
    /// message that lists them and shows the model's call format.
    pub fn prepare(&self, messages: &mut Vec<ChatMessage>, renders_tools: bool) {
        if renders_tools {
            return;
        }
        let listing = serde_json::to_string_pretty(&self.tools).unwrap_or_default();
        let guide = format!(
            "You can call these tools:\n{listing}\n\nTo call one, answer with only this, for \
             each call:\n{}",
            call_example(self.format)
        );
        match messages.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = format!("{}\n\n{guide}", first.content);
            }
            _ => messages.insert(0, ChatMessage::new("system", guide)),
        }
    }

    /// The calls in a generated text, and the text around them.
    pub fn parse(&self, text: &str) -> ParsedOutput {
        self.limit(parse_tool_calls(self.format, text))
    }

    /// A streamed answer's splitter: text before a possible call goes out at once.
    pub fn stream(&self) -> ToolCallStream {
        ToolCallStream::new(self.format)
    }

    /// The setup paired with a fresh [`ToolSetup::stream`], as a streamed answer holds them.
    pub fn into_streaming(self) -> (ToolSetup, ToolCallStream) {
        let stream = self.stream();
        (self, stream)
    }

    /// The end of a streamed answer: the calls, and the content not yet sent.
    pub fn finish(&self, stream: ToolCallStream) -> ParsedOutput {
        self.limit(stream.finish())
    }

    /// At most one call without `parallel`.
    fn limit(&self, mut parsed: ParsedOutput) -> ParsedOutput {
        if !self.parallel {
            parsed.tool_calls.truncate(1);
        }
        parsed
    }
}

/// OpenAI's `tool_calls` of `calls`: ids `call_<prefix>_<i>`, arguments as JSON strings; with
/// `index` (streamed deltas carry it).
pub fn openai_calls(calls: &[ToolCall], prefix: &str, index: bool) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut call = json!({
                "id": format!("call_{prefix}_{i}"),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments.to_string()},
            });
            if index {
                call["index"] = json!(i);
            }
            call
        })
        .collect()
}

/// Ollama's `tool_calls` of `calls`: arguments as objects.
pub fn ollama_calls(calls: &[ToolCall]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| json!({"function": {"name": c.name, "arguments": c.arguments}}))
        .collect()
}

/// How a call looks in `format`, with placeholders.
fn call_example(format: ToolCallFormat) -> &'static str {
    match format {
        ToolCallFormat::Hermes => {
            "<tool_call>\n{\"name\": <tool name>, \"arguments\": <arguments object>}\n</tool_call>"
        }
        ToolCallFormat::Llama3 => "{\"name\": <tool name>, \"parameters\": <arguments object>}",
        ToolCallFormat::Mistral => {
            "[TOOL_CALLS][{\"name\": <tool name>, \"arguments\": <arguments object>}]"
        }
        ToolCallFormat::MistralArgs => "[TOOL_CALLS]<tool name>[ARGS]<arguments object>",
        ToolCallFormat::Gemma => "<|tool_call>call:<tool name>{<key>:<value>,...}<tool_call|>",
        ToolCallFormat::ToolCode => {
            "```tool_code\n{\"name\": <tool name>, \"arguments\": <arguments object>}\n```"
        }
    }
}

/// Whether a chat template renders the `tools` variable.
///
/// ```
/// assert!(mlx_server::tools::renders_tools(Some("{% if tools %}{{ tools | tojson }}{% endif %}")));
/// assert!(!mlx_server::tools::renders_tools(Some("{{ messages }}")));
/// ```
pub fn renders_tools(template: Option<&str>) -> bool {
    template.is_some_and(|t| t.contains("tools"))
}
