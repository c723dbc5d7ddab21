//! Chat templates: the Jinja templates that Hugging Face tokenizers ship
//! (`tokenizer_config.json`'s `chat_template`, `chat_template.jinja`, or GGUF's
//! `tokenizer.chat_template`), rendered with minijinja the way `transformers` renders them.
//!
//! The environment matches transformers' `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True)`: Python string and dict methods (`strip`, `startswith`, `split`,
//! `items`, `get`, ...) through minijinja-contrib's `pycompat`, a `raise_exception(msg)` global
//! (which becomes [`Error::ChatTemplate`] with the message), `strftime_now(format)` (local time,
//! as `datetime.now().strftime`) and a `tojson` filter formatted like Python's `json.dumps`
//! with `ensure_ascii=False` (`indent`, `ensure_ascii`, `separators` and `sort_keys` keywords
//! supported; object keys always come out sorted, since the values pass through serde_json maps).
//!
//! Templates are untrusted code: rendering is bounded in instructions, recursion, output,
//! value sizes and nesting depth ([`TemplateLimits`], see [`crate::text::sandbox`]); a
//! template that reaches a bound fails with [`Error::TemplateLimit`] naming it.
//!
//! ```
//! use mlx_models::text::chat::{ChatMessage, ChatTemplate};
//! let t = ChatTemplate::new(
//!     "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}\n{% endfor %}\
//!      {% if add_generation_prompt %}<assistant>{% endif %}",
//! )?;
//! let msgs = [ChatMessage::new("user", " Hi! ")];
//! let text = t.render(&msgs, true, None, None, &serde_json::Value::Null)?;
//! assert_eq!(text, "<user>Hi!\n<assistant>");
//! # Ok::<(), mlx_models::Error>(())
//! ```

use super::sandbox::{self, TemplateLimits};
use crate::{Error, Result};
use minijinja::machinery::{make_string_output, Vm};
use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One message of a conversation, as chat templates see it (the layout of `transformers`'
/// chat messages). Optional fields that are `None` are left out of what the template sees, so
/// a template's `message.tool_calls is defined` tests behave as in Python.
///
/// ```
/// use mlx_models::text::chat::{ChatMessage, ToolCall};
/// let call = ToolCall::function("get_weather", serde_json::json!({"city": "Paris"}));
/// let turn = ChatMessage::new("assistant", "").with_tool_calls(vec![call]);
/// let json = serde_json::to_value(&turn).unwrap();
/// assert_eq!(json["tool_calls"][0]["function"]["arguments"]["city"], "Paris");
/// assert!(json.get("tool_call_id").is_none());
/// let reply = ChatMessage::new("tool", "22 C").with_tool_call_id("call_0");
/// assert_eq!(serde_json::to_value(&reply).unwrap()["tool_call_id"], "call_0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The text of the message (empty for an assistant turn that only calls tools).
    #[serde(default)]
    pub content: String,
    /// The tool calls an assistant turn made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The name of the tool (on `tool` messages) or of the participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }

    /// This message with the tool calls an assistant made.
    pub fn with_tool_calls(mut self, calls: Vec<ToolCall>) -> ChatMessage {
        self.tool_calls = Some(calls);
        self
    }

    /// This message answering tool call `id`.
    pub fn with_tool_call_id(mut self, id: impl Into<String>) -> ChatMessage {
        self.tool_call_id = Some(id.into());
        self
    }

    /// This message with a `name` (the tool's, on a `tool` message).
    pub fn with_name(mut self, name: impl Into<String>) -> ChatMessage {
        self.name = Some(name.into());
        self
    }
}

/// A tool call in an assistant message: `{"id"?, "type": "function", "function": {"name",
/// "arguments"}}`, with `arguments` as a JSON value (templates format it with `tojson`; an
/// OpenAI client's JSON-encoded string should be parsed before it is put here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, when the API gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Always `function` today.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The function called.
    pub function: FunctionCall,
}

/// The function part of a [`ToolCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// Its arguments (usually an object).
    #[serde(default)]
    pub arguments: serde_json::Value,
}

fn function_kind() -> String {
    "function".to_string()
}

impl ToolCall {
    /// A call of function `name` with `arguments`, without an id.
    pub fn function(name: impl Into<String>, arguments: serde_json::Value) -> ToolCall {
        ToolCall {
            id: None,
            kind: function_kind(),
            function: FunctionCall {
                name: name.into(),
                arguments,
            },
        }
    }
}

/// A chat template, checked to compile.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    limits: TemplateLimits,
}

/// The error that `raise_exception` attaches as the source of a minijinja error, so that
/// [`ChatTemplate::render`] can report the template's own message.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

impl ChatTemplate {
    /// Compiles `source` with the default [`TemplateLimits`]. Errors: [`Error::ChatTemplate`]
    /// on a syntax error (including nesting deeper than minijinja's parser allows) or a
    /// name with the sandbox's reserved prefix `__zoo_`.
    pub fn new(source: impl Into<String>) -> Result<ChatTemplate> {
        let source = source.into();
        sandbox::check_source(&source)?;
        let limits = TemplateLimits::default();
        // Compiled on the rendering thread: the parser and compiler recurse on long
        // operator chains.
        sandbox::on_render_thread(&limits, || {
            sandbox::compile(&source).map(drop).map_err(|e| {
                sandbox::limit_of(&e, &limits)
                    .unwrap_or_else(|| Error::ChatTemplate(format!("syntax error: {e:#}")))
            })
        })?;
        Ok(ChatTemplate { source, limits })
    }

    /// Reads and compiles a template file (a user's override of a checkpoint's template, or
    /// one for a base model that has none), under the chat template size cap of
    /// [`crate::load::files::FileKind::ChatTemplate`].
    ///
    /// Errors: as [`crate::load::files::read_text`], then as [`ChatTemplate::new`].
    ///
    /// ```
    /// use mlx_models::text::ChatTemplate;
    /// let err = ChatTemplate::from_file(std::path::Path::new("/no/such.jinja")).unwrap_err();
    /// assert!(matches!(err, mlx_models::Error::Io { .. }));
    /// ```
    pub fn from_file(path: &std::path::Path) -> Result<ChatTemplate> {
        let source =
            crate::load::files::read_text(path, crate::load::files::FileKind::ChatTemplate)?;
        ChatTemplate::new(source)
    }

    /// The template with other bounds (e.g. [`TemplateLimits::for_context`]).
    ///
    /// ```
    /// use mlx_models::text::chat::{ChatMessage, ChatTemplate};
    /// use mlx_models::text::sandbox::TemplateLimits;
    /// let limits = TemplateLimits { fuel: 1000, ..Default::default() };
    /// let t = ChatTemplate::new("{% for i in range(100000) %}x{% endfor %}")?.with_limits(limits);
    /// let err = t.render(&[], false, None, None, &serde_json::Value::Null).unwrap_err();
    /// assert!(matches!(err, mlx_models::Error::TemplateLimit { bound: "fuel", limit: 1000 }));
    /// # Ok::<(), mlx_models::Error>(())
    /// ```
    pub fn with_limits(mut self, limits: TemplateLimits) -> ChatTemplate {
        self.limits = limits;
        self
    }

    /// The bounds in force.
    pub fn limits(&self) -> &TemplateLimits {
        &self.limits
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`.
    ///
    /// The template sees `messages`, `add_generation_prompt`, `bos_token` and `eos_token`
    /// (empty strings when `None`), plus every key of `extra` (a JSON object, or `null` for
    /// none; its keys win over the others), e.g. `{"enable_thinking": false}` or `{"tools": [...]}`.
    ///
    /// Errors: [`Error::ChatTemplate`] when rendering fails, with the template's own message when
    /// it calls `raise_exception`; [`Error::TemplateLimit`] when a bound is reached;
    /// [`Error::InvalidArgument`] when `extra` is not an object.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
        extra: &serde_json::Value,
    ) -> Result<String> {
        let mut context: BTreeMap<String, Value> = BTreeMap::new();
        context.insert("messages".into(), Value::from_serialize(messages));
        context.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        context.insert("bos_token".into(), Value::from(bos_token.unwrap_or("")));
        context.insert("eos_token".into(), Value::from(eos_token.unwrap_or("")));
        match extra {
            serde_json::Value::Null => {}
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    if key.starts_with(sandbox::RESERVED_PREFIX) {
                        return Err(Error::InvalidArgument(format!(
                            "chat template variable `{key}`: names starting with `{}` are reserved",
                            sandbox::RESERVED_PREFIX
                        )));
                    }
                    context.insert(key.clone(), Value::from_serialize(value));
                }
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "chat template variables must be a JSON object, got {other}"
                )))
            }
        }
        let limits = self.limits;
        sandbox::on_render_thread(&limits, || {
            let mut env = Environment::new();
            env.add_function("raise_exception", raise_exception);
            env.add_function("strftime_now", strftime_now);
            env.add_filter("tojson", tojson);
            sandbox::install(&mut env, &limits);
            let (instructions, blocks) = sandbox::compile(&self.source).map_err(|e| {
                sandbox::limit_of(&e, &limits)
                    .unwrap_or_else(|| Error::ChatTemplate(format!("syntax error: {e:#}")))
            })?;
            let mut text = String::new();
            let mut output = make_string_output(&mut text);
            Vm::new(&env)
                .eval(
                    &instructions,
                    Value::from(context),
                    &blocks,
                    &mut output,
                    AutoEscape::None,
                )
                .map(drop)
                .map_err(|e| render_error(e, &limits))?;
            Ok(text)
        })
    }
}

/// Maps a minijinja rendering error, surfacing a `raise_exception` message as is.
fn render_error(err: minijinja::Error, limits: &TemplateLimits) -> Error {
    if let Some(limit) = sandbox::limit_of(&err, limits) {
        return limit;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return Error::ChatTemplate(raised.0.clone());
        }
        source = e.source();
    }
    Error::ChatTemplate(format!("{err:#}"))
}

/// `raise_exception(message)`: aborts rendering with the template's message.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(RaisedException(message)),
    )
}

/// `strftime_now(format)`: the local time formatted like Python's `strftime`.
fn strftime_now(format: String) -> std::result::Result<Value, minijinja::Error> {
    let mut out = String::new();
    // chrono reports an unknown specifier as a formatting error (never a panic this way).
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format `{format}`"),
        )
    })?;
    Ok(Value::from(out))
}

/// `value | tojson(indent=None, ensure_ascii=False, separators=None, sort_keys=False)`,
/// formatted like Python's `json.dumps` (default separators `", "` and `": "`, or `","` and
/// `": "` with an indent). Object keys come out sorted (serde_json maps are ordered by key).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_i64() {
            Some(n) if (0..=64).contains(&n) => Some(" ".repeat(n as usize)),
            _ => match v.as_str() {
                Some(s) if s.len() <= 64 => Some(s.to_string()),
                _ => return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer in 0..=64 or a string of at most 64 bytes",
                )),
            },
        },
    };
    // Measured first (without recursion), so that the conversion and the writer below
    // recurse at most `max_depth` levels.
    sandbox::measure(&value)?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let (item_separator, key_separator) = match separators {
        None => (None, None),
        Some(pair) => match <[String; 2]>::try_from(pair) {
            Ok([item, key]) => (Some(item), Some(key)),
            Err(_) => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: separators must be a pair of strings",
                ))
            }
        },
    };
    let style = JsonStyle {
        item_separator: item_separator
            .unwrap_or_else(|| if indent.is_some() { "," } else { ", " }.to_string()),
        key_separator: key_separator.unwrap_or_else(|| ": ".to_string()),
        indent,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
        max_bytes: sandbox::max_value_bytes(),
    };
    let mut out = String::new();
    style
        .write(&mut out, &json, 0)
        .map_err(|TooLong| sandbox::value_too_long())?;
    Ok(Value::from(out))
}

/// Python `json.dumps` formatting options.
struct JsonStyle {
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    ensure_ascii: bool,
    sort_keys: bool,
    /// The longest output allowed.
    max_bytes: usize,
}

/// The JSON text would exceed [`JsonStyle::max_bytes`].
struct TooLong;

impl JsonStyle {
    fn newline(&self, out: &mut String, depth: usize) -> std::result::Result<(), TooLong> {
        if let Some(indent) = &self.indent {
            if out.len() + 1 + indent.len() * depth > self.max_bytes {
                return Err(TooLong);
            }
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
        Ok(())
    }

    fn write(
        &self,
        out: &mut String,
        value: &serde_json::Value,
        depth: usize,
    ) -> std::result::Result<(), TooLong> {
        use serde_json::Value as J;
        if out.len() > self.max_bytes {
            return Err(TooLong);
        }
        match value {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Number(n) => out.push_str(&n.to_string()),
            J::String(s) => self.write_str(out, s),
            J::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_separator);
                    }
                    self.newline(out, depth + 1)?;
                    self.write(out, item, depth + 1)?;
                }
                self.newline(out, depth)?;
                out.push(']');
            }
            J::Object(map) => {
                if map.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                let mut entries: Vec<(&String, &J)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_separator);
                    }
                    self.newline(out, depth + 1)?;
                    self.write_str(out, key);
                    out.push_str(&self.key_separator);
                    self.write(out, item, depth + 1)?;
                }
                self.newline(out, depth)?;
                out.push('}');
            }
        }
        Ok(())
    }

    fn write_str(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c if self.ensure_ascii && (c as u32) > 0x7e => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_value(source: &str, extra: serde_json::Value) -> Result<String> {
        ChatTemplate::new(source)?.render(&[], false, None, None, &extra)
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        // Expected strings written by hand from Python's json.dumps rules.
        let extra = serde_json::json!({"x": {"b": [1, 2.5, "é\n\"q\""], "a": null, "e": {}}});
        assert_eq!(
            render_value("{{ x | tojson }}", extra.clone()).unwrap(),
            "{\"a\": null, \"b\": [1, 2.5, \"é\\n\\\"q\\\"\"], \"e\": {}}"
        );
        assert_eq!(
            render_value("{{ x.b | tojson(indent=2) }}", extra.clone()).unwrap(),
            "[\n  1,\n  2.5,\n  \"é\\n\\\"q\\\"\"\n]"
        );
        assert_eq!(
            render_value("{{ x.b | tojson(separators=[',', ':']) }}", extra.clone()).unwrap(),
            "[1,2.5,\"é\\n\\\"q\\\"\"]"
        );
        assert_eq!(
            render_value("{{ 'é😀' | tojson(ensure_ascii=true) }}", extra).unwrap(),
            "\"\\u00e9\\ud83d\\ude00\""
        );
    }

    #[test]
    fn tool_turns_reach_the_template_without_absent_fields() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m.role }}:{{ m.content }}\
             {% if m.tool_calls is defined %}{% for c in m.tool_calls %}\
             [{{ c.type }} {{ c.function.name }} {{ c.function.arguments | tojson }}]\
             {% endfor %}{% endif %}{% if m.tool_call_id is defined %}({{ m.tool_call_id }})\
             {% endif %}{% if m.name is defined %}<{{ m.name }}>{% endif %};{% endfor %}",
        )
        .unwrap();
        let msgs = [
            ChatMessage::new("user", "weather?"),
            ChatMessage::new("assistant", "").with_tool_calls(vec![ToolCall::function(
                "get",
                serde_json::json!({"city": "Paris"}),
            )]),
            ChatMessage::new("tool", "22 C")
                .with_tool_call_id("c1")
                .with_name("get"),
        ];
        let text = t
            .render(&msgs, false, None, None, &serde_json::Value::Null)
            .unwrap();
        assert_eq!(
            text,
            "user:weather?;assistant:[function get {\"city\": \"Paris\"}];tool:22 C(c1)<get>;"
        );
    }

    #[test]
    fn syntax_error_is_an_error() {
        assert!(matches!(
            ChatTemplate::new("{% for m in messages %}"),
            Err(Error::ChatTemplate(_))
        ));
    }

    #[test]
    fn extra_must_be_an_object() {
        assert!(matches!(
            render_value("x", serde_json::json!([1])),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn bad_strftime_format_is_an_error_not_a_panic() {
        assert!(matches!(
            render_value("{{ strftime_now('%Q%') }}", serde_json::Value::Null),
            Err(Error::ChatTemplate(_))
        ));
    }
}
