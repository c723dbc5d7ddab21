//! [`tool_call_grammar`]: a Lark grammar (llguidance's syntax) that makes the model call a
//! tool in its own format, with arguments valid against the function's JSON schema.

use super::gemma::{lark_literal, LarkArgs, QUOTE};
use super::{ToolCallFormat, ToolChoice};
use crate::text::Tokenizer;
use crate::{Error, Result};
use serde_json::{json, Value};

/// One function offered to the model.
struct Function {
    name: String,
    parameters: Value,
}

/// The functions of OpenAI tool objects (`{"type": "function", "function": {"name", …,
/// "parameters"}}`; a bare `{"name", "parameters"}` too). A missing `parameters` is any object.
fn functions(tools: &[Value]) -> Result<Vec<Function>> {
    tools
        .iter()
        .map(|tool| {
            let f = tool.get("function").unwrap_or(tool);
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    Error::InvalidSchema(format!("a tool without a function name: {tool}"))
                })?;
            let parameters = match f.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object"}),
                Some(p @ (Value::Object(_) | Value::Bool(true))) => p.clone(),
                Some(other) => {
                    return Err(Error::InvalidSchema(format!(
                        "the parameters of `{name}` are not a JSON schema object: {other}"
                    )))
                }
            };
            let mut parameters = parameters;
            close_objects(&mut parameters);
            Ok(Function {
                name: name.to_string(),
                parameters,
            })
        })
        .collect()
}

/// Makes every object schema in `schema` that lists `properties` and says nothing of
/// `additionalProperties` closed (`additionalProperties: false`), as llama.cpp reads tool
/// schemas: JSON Schema's default (any other key allowed) let a small model keep writing keys
/// of its own until the token limit instead of closing the call.
fn close_objects(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if map.contains_key("properties") && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" | "patternProperties" => {
                if let Value::Object(children) = value {
                    children.values_mut().for_each(close_objects);
                }
            }
            "items" | "additionalItems" | "not" | "if" | "then" | "else" => close_objects(value),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Value::Array(children) = value {
                    children.iter_mut().for_each(close_objects);
                }
            }
            _ => {}
        }
    }
}

/// The Lark expression of a marker: the special token by id when the tokenizer has it as one
/// (llguidance keeps special tokens apart from text), else the text.
fn marker(tokenizer: &Tokenizer, text: &str) -> (String, bool) {
    match tokenizer
        .token_to_id(text)
        .filter(|&id| tokenizer.is_special_token(id))
    {
        Some(id) => (format!("<[{id}]>"), true),
        None => (lark_literal(text), false),
    }
}

/// The JSON schema of one call object `{"name": <const>, <args_key>: <parameters>}`, one
/// branch per function.
fn call_schema(functions: &[Function], args_key: &str) -> Value {
    let branches: Vec<Value> = functions
        .iter()
        .map(|f| {
            json!({
                "type": "object",
                "properties": {"name": {"const": f.name}, args_key: f.parameters},
                "required": ["name", args_key],
                "additionalProperties": false
            })
        })
        .collect();
    if branches.len() == 1 {
        branches.into_iter().next().unwrap_or_default()
    } else {
        json!({ "anyOf": branches })
    }
}

/// A grammar (llguidance's Lark syntax, for
/// [`Grammar::Lark`](crate::text::structured::Grammar::Lark)) that makes the model call a tool
/// in `format`, its arguments valid against the function's `parameters` schema; `None` for
/// [`ToolChoice::Auto`] and [`ToolChoice::None`] (nothing to force). `tools` are OpenAI tool
/// objects; `tokenizer` tells which markers are special tokens (written `<[id]>`) and which are
/// text.
///
/// What the grammars accept ([`ToolChoice::Required`]: one or more calls;
/// [`ToolChoice::RequiredOne`]: exactly one call; [`ToolChoice::Named`]: exactly one call, of
/// that function). An object schema with `properties` but no `additionalProperties` is read as
/// closed (no other keys), as llama.cpp reads tool schemas:
/// - Hermes: `<tool_call>\n` JSON `{"name": …, "arguments": …}` `\n</tool_call>`, calls
///   separated by `\n`;
/// - Llama 3: one JSON `{"name": …, "parameters": …}`;
/// - Mistral: `[TOOL_CALLS]`, an optional space, and a JSON list of `{"name": …,
///   "arguments": …}` (one item when named);
/// - MistralArgs: `[TOOL_CALLS]name[ARGS]` and the arguments' JSON, per call;
/// - Gemma 4: `<|tool_call>call:name{…}<tool_call|>` per call, the arguments in Gemma's own
///   syntax, keys sorted, required keys present (the schema subset the Gemma writer reads:
///   types, `enum`, `const`, `properties`/`required`, `items`, `anyOf`; the rest left free);
/// - ToolCode: ```` ```tool_code\n ```` JSON `{"name": …, "arguments": …}` ```` \n``` ````.
///
/// JSON allows any whitespace between items (llguidance's default).
///
/// Errors: [`Error::InvalidSchema`] for a tool without a name or with a non-object
/// `parameters`, no tools to choose from, or a named function not among them.
///
/// ```no_run
/// use mlx_models::text::structured::{Grammar, GrammarCompiler};
/// use mlx_models::text::tool_calls::{tool_call_grammar, ToolCallFormat, ToolChoice};
/// # fn f(tokenizer: &mlx_models::text::Tokenizer, compiler: &GrammarCompiler) -> mlx_models::Result<()> {
/// let tools = [serde_json::json!({"type": "function", "function": {
///     "name": "get_weather",
///     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
/// }})];
/// let lark = tool_call_grammar(ToolCallFormat::Hermes, &tools, &ToolChoice::Required, tokenizer)?
///     .expect("Required forces a call");
/// let constraint = compiler.compile(&Grammar::Lark(lark))?;
/// # Ok(())
/// # }
/// ```
pub fn tool_call_grammar(
    format: ToolCallFormat,
    tools: &[Value],
    choice: &ToolChoice,
    tokenizer: &Tokenizer,
) -> Result<Option<String>> {
    let all = functions(tools)?;
    let (functions, many) = match choice {
        ToolChoice::Auto | ToolChoice::None => return Ok(None),
        ToolChoice::Required => (all, true),
        ToolChoice::RequiredOne => (all, false),
        ToolChoice::Named(name) => {
            let named: Vec<Function> = all.into_iter().filter(|f| &f.name == name).collect();
            if named.is_empty() {
                return Err(Error::InvalidSchema(format!(
                    "tool_choice names `{name}`, which is not among the tools"
                )));
            }
            (named, false)
        }
    };
    if functions.is_empty() {
        return Err(Error::InvalidSchema(
            "tool_choice requires a call but there are no tools".into(),
        ));
    }
    let repeat = |sep: &str| {
        if many {
            format!("start: call ({sep} call)*")
        } else {
            "start: call".to_string()
        }
    };
    let lines: Vec<String> = match format {
        ToolCallFormat::Hermes => {
            let (open, _) = marker(tokenizer, "<tool_call>");
            let (close, _) = marker(tokenizer, "</tool_call>");
            vec![
                repeat(r#""\n""#),
                format!(r#"call: {open} "\n" body "\n" {close}"#),
                format!("body: %json {}", call_schema(&functions, "arguments")),
            ]
        }
        ToolCallFormat::Llama3 => vec![format!(
            "start: %json {}",
            call_schema(&functions, "parameters")
        )],
        ToolCallFormat::ToolCode => vec![
            repeat(r#""\n""#),
            r#"call: "```tool_code\n" body "\n```""#.to_string(),
            format!("body: %json {}", call_schema(&functions, "arguments")),
        ],
        ToolCallFormat::Mistral => {
            let (calls, _) = marker(tokenizer, "[TOOL_CALLS]");
            let mut list = json!({
                "type": "array",
                "minItems": 1,
                "items": call_schema(&functions, "arguments")
            });
            if !many {
                list["maxItems"] = json!(1);
            }
            // SentencePiece-era models write a space before the list.
            vec![format!(r#"start: {calls} " "? %json {list}"#)]
        }
        ToolCallFormat::MistralArgs => {
            let (calls, _) = marker(tokenizer, "[TOOL_CALLS]");
            let (args, _) = marker(tokenizer, "[ARGS]");
            let mut lines = vec![repeat(""), format!("call: {calls} fn")];
            let mut alts = Vec::new();
            for (i, f) in functions.iter().enumerate() {
                alts.push(format!("fn_{i}"));
                lines.push(format!("fn_{i}: {} {args} args_{i}", lark_literal(&f.name)));
                lines.push(format!("args_{i}: %json {}", f.parameters));
            }
            lines.push(format!("fn: {}", alts.join(" | ")));
            lines
        }
        ToolCallFormat::Gemma => {
            let (open, _) = marker(tokenizer, "<|tool_call>");
            let (close, _) = marker(tokenizer, "<tool_call|>");
            let (quote, quote_special) = marker(tokenizer, QUOTE);
            let mut args = LarkArgs::new(quote, quote_special);
            let mut lines = vec![repeat(""), format!(r#"call: {open} "call:" fn {close}"#)];
            let mut alts = Vec::new();
            for (i, f) in functions.iter().enumerate() {
                let value = args.arguments(&f.parameters);
                alts.push(format!("fn_{i}"));
                lines.push(format!("fn_{i}: {} {value}", lark_literal(&f.name)));
            }
            lines.push(format!("fn: {}", alts.join(" | ")));
            lines.extend(args.into_rules());
            lines
        }
    };
    Ok(Some(lines.join("\n")))
}
