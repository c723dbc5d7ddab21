//! Tool calls in the model's own words: which format a model writes them in
//! ([`ToolCallFormat::detect`]), reading them out of generated text ([`parse_tool_calls`]),
//! and a grammar that forces a call ([`tool_call_grammar`], for
//! [`structured`](crate::text::structured)).
//!
//! | format | what the model writes |
//! |---|---|
//! | [`Hermes`](ToolCallFormat::Hermes) (Qwen2.5, Qwen3, SmolLM, ChatML models) | `<tool_call>\n{"name": "f", "arguments": {…}}\n</tool_call>`, one block per call |
//! | [`Llama3`](ToolCallFormat::Llama3) | `{"name": "f", "parameters": {…}}`, optionally after `<\|python_tag\|>`; several separated by `;` |
//! | [`Mistral`](ToolCallFormat::Mistral) | `[TOOL_CALLS][{"name": "f", "arguments": {…}}, …]` |
//! | [`MistralArgs`](ToolCallFormat::MistralArgs) (templates with `[ARGS]`) | `[TOOL_CALLS]f[ARGS]{…}` per call |
//! | [`Gemma`](ToolCallFormat::Gemma) (Gemma 4) | `<\|tool_call>call:f{key:<\|"\|>text<\|"\|>,n:3}<tool_call\|>` per call |
//! | [`ToolCode`](ToolCallFormat::ToolCode) (Gemma 3: no native format) | ```` ```tool_code\n{"name": "f", "arguments": {…}}\n``` ```` |
//!
//! Gemma 3's chat template knows no tools: a server that offers tools to it describes the
//! `ToolCode` convention in the system prompt (Google's Gemma 3 guide uses a ```` ```tool_code ````
//! block; this crate puts a JSON call in it, not the guide's Python call syntax).
//!
//! A streamed answer goes through a [`ToolCallStream`], which passes text on until a call may
//! begin and holds back only the rest.
//!
//! Parse text decoded **with** special tokens: Mistral's `[TOOL_CALLS]` is a control token that
//! `decode(.., skip_special_tokens = true)` drops.

mod gemma;
mod grammar;
mod parse;
mod stream;

pub use grammar::tool_call_grammar;
pub use parse::parse_tool_calls;
pub use stream::ToolCallStream;

/// How a model writes tool calls (see the [module docs](self) for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolCallFormat {
    /// `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>` (Qwen2.5, Qwen3, SmolLM3,
    /// Hermes; the default for ChatML models).
    Hermes,
    /// `{"name": …, "parameters": {…}}`, optionally after `<|python_tag|>` (Llama 3.1+).
    Llama3,
    /// `[TOOL_CALLS][{"name": …, "arguments": {…}}]` (Mistral 7B v0.3, Nemo, Small 3.1).
    /// Parsing also reads the [`MistralArgs`](Self::MistralArgs) form.
    Mistral,
    /// `[TOOL_CALLS]name[ARGS]{…}` per call (Mistral templates that use `[ARGS]`: Small 3.2,
    /// Magistral, Devstral, Ministral 3). Parsing also reads the list form.
    MistralArgs,
    /// Gemma 4: `<|tool_call>call:NAME{key:value,…}<tool_call|>`, strings between `<|"|>`.
    Gemma,
    /// Gemma 3 (no native format): a ```` ```tool_code ```` block holding
    /// `{"name": …, "arguments": {…}}`.
    ToolCode,
}

impl ToolCallFormat {
    /// The format of a model, from its chat template when that shows one (the markers it
    /// renders tool calls with), else from its `model_type`; Hermes when neither tells.
    ///
    /// ```
    /// use mlx_models::text::tool_calls::ToolCallFormat;
    /// assert_eq!(ToolCallFormat::detect("qwen2", None), ToolCallFormat::Hermes);
    /// assert_eq!(ToolCallFormat::detect("gemma4_text", None), ToolCallFormat::Gemma);
    /// assert_eq!(ToolCallFormat::detect("gemma3", None), ToolCallFormat::ToolCode);
    /// let template = "{% for c in message.tool_calls %}[TOOL_CALLS]{{ c.name }}[ARGS]{% endfor %}";
    /// assert_eq!(ToolCallFormat::detect("mistral", Some(template)), ToolCallFormat::MistralArgs);
    /// // SmolLM2 is a `llama` model with a ChatML template.
    /// assert_eq!(ToolCallFormat::detect("llama", Some("<|im_start|>")), ToolCallFormat::Hermes);
    /// assert_eq!(ToolCallFormat::detect("llama", Some("<|start_header_id|>")), ToolCallFormat::Llama3);
    /// ```
    pub fn detect(model_type: &str, chat_template: Option<&str>) -> ToolCallFormat {
        let template = chat_template.unwrap_or("");
        if template.contains("<|tool_call>") {
            return ToolCallFormat::Gemma;
        }
        if template.contains("[TOOL_CALLS]") {
            return if template.contains("[ARGS]") {
                ToolCallFormat::MistralArgs
            } else {
                ToolCallFormat::Mistral
            };
        }
        if template.contains("<tool_call>") {
            return ToolCallFormat::Hermes;
        }
        if template.contains("<|python_tag|>") {
            return ToolCallFormat::Llama3;
        }
        match model_type {
            t if t.starts_with("gemma4") => ToolCallFormat::Gemma,
            t if t.starts_with("gemma") => ToolCallFormat::ToolCode,
            "mistral" | "mistral3" | "ministral" | "ministral3" => ToolCallFormat::Mistral,
            "llama" if template.contains("<|im_start|>") => ToolCallFormat::Hermes,
            "llama" => ToolCallFormat::Llama3,
            _ => ToolCallFormat::Hermes,
        }
    }
}

/// One call read out of the model's text.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments (a JSON object; `{}` when the model gave none).
    pub arguments: serde_json::Value,
}

impl From<ToolCall> for crate::text::chat::ToolCall {
    /// The call as an assistant message's tool call (for the chat history), without an id.
    ///
    /// ```
    /// use mlx_models::text::{chat, tool_calls::ToolCall};
    /// let call = ToolCall { name: "f".into(), arguments: serde_json::json!({"x": 1}) };
    /// let in_history: chat::ToolCall = call.into();
    /// assert_eq!(in_history.function.name, "f");
    /// assert_eq!(in_history.id, None);
    /// ```
    fn from(call: ToolCall) -> crate::text::chat::ToolCall {
        crate::text::chat::ToolCall::function(call.name, call.arguments)
    }
}

/// Generated text split into what is said and what is called.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedOutput {
    /// The text outside the calls (trimmed when there are calls); all of it when there are
    /// none, malformed calls included.
    pub content: String,
    /// The calls, in order.
    pub tool_calls: Vec<ToolCall>,
}

/// Whether and which tool the model must call (OpenAI's `tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides (no grammar).
    #[default]
    Auto,
    /// The model must call one or more of the tools.
    Required,
    /// The model must call exactly one of the tools (`required` with OpenAI's
    /// `parallel_tool_calls: false`).
    RequiredOne,
    /// The model must call this function, once.
    Named(String),
    /// The model must not call tools (no grammar: leave the tools out of the prompt).
    None,
}
