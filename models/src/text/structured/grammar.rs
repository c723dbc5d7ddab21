//! [`Grammar`]: what a request constrains its output to, read from the OpenAI and Ollama
//! request fields that ask for it.

use crate::{Error, Result};
use serde_json::Value;

/// What the generated text must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// JSON valid against this JSON schema (OpenAI `response_format: {type: "json_schema"}`,
    /// Ollama `format: {schema}`).
    JsonSchema(Value),
    /// Any JSON object (OpenAI `response_format: {type: "json_object"}`, Ollama
    /// `format: "json"`).
    JsonObject,
    /// A grammar in llguidance's Lark-like syntax (tool calls: see
    /// [`tool_call_grammar`](crate::text::tool_calls::tool_call_grammar)). Special tokens are
    /// written `<|name|>`, or `<[id]>` by id.
    Lark(String),
}

impl Grammar {
    /// The grammar of an OpenAI `response_format` object: `{"type": "text"}` → `None`,
    /// `{"type": "json_object"}` → [`Grammar::JsonObject`], `{"type": "json_schema",
    /// "json_schema": {"name": …, "schema": {…}, "strict": …}}` → [`Grammar::JsonSchema`].
    ///
    /// Errors: [`Error::InvalidSchema`] for another type, or a `json_schema` without a
    /// `schema` object (or boolean).
    ///
    /// ```
    /// use mlx_models::text::structured::Grammar;
    /// use serde_json::json;
    /// let format = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}}});
    /// assert_eq!(
    ///     Grammar::from_openai_response_format(&format).unwrap(),
    ///     Some(Grammar::JsonSchema(json!({"type": "integer"})))
    /// );
    /// assert_eq!(Grammar::from_openai_response_format(&json!({"type": "text"})).unwrap(), None);
    /// assert!(Grammar::from_openai_response_format(&json!({"type": "yaml"})).is_err());
    /// ```
    pub fn from_openai_response_format(format: &Value) -> Result<Option<Grammar>> {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(Grammar::JsonObject)),
            Some("json_schema") => {
                let schema = format.pointer("/json_schema/schema").ok_or_else(|| {
                    Error::InvalidSchema("response_format.json_schema.schema is missing".into())
                })?;
                Ok(Some(Grammar::JsonSchema(checked_schema(schema)?)))
            }
            Some(other) => Err(Error::InvalidSchema(format!(
                "response_format type `{other}` is not one of text, json_object, json_schema"
            ))),
            None => Err(Error::InvalidSchema(
                "response_format has no `type` string".into(),
            )),
        }
    }

    /// The grammar of an Ollama `format` field: `"json"` → [`Grammar::JsonObject`], a JSON
    /// schema object → [`Grammar::JsonSchema`], `null` or `""` → `None`.
    ///
    /// Errors: [`Error::InvalidSchema`] for another string or value.
    ///
    /// ```
    /// use mlx_models::text::structured::Grammar;
    /// use serde_json::json;
    /// assert_eq!(Grammar::from_ollama_format(&json!("json")).unwrap(), Some(Grammar::JsonObject));
    /// let schema = json!({"type": "object", "properties": {"age": {"type": "integer"}}});
    /// assert_eq!(
    ///     Grammar::from_ollama_format(&schema).unwrap(),
    ///     Some(Grammar::JsonSchema(schema.clone()))
    /// );
    /// assert!(Grammar::from_ollama_format(&json!("xml")).is_err());
    /// ```
    pub fn from_ollama_format(format: &Value) -> Result<Option<Grammar>> {
        match format {
            Value::Null => Ok(None),
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) if s == "json" => Ok(Some(Grammar::JsonObject)),
            Value::Object(_) => Ok(Some(Grammar::JsonSchema(format.clone()))),
            other => Err(Error::InvalidSchema(format!(
                "format must be \"json\" or a JSON schema object, got {other}"
            ))),
        }
    }
}

/// A schema is an object or a boolean (JSON Schema's `true` / `false`).
fn checked_schema(schema: &Value) -> Result<Value> {
    match schema {
        Value::Object(_) | Value::Bool(_) => Ok(schema.clone()),
        other => Err(Error::InvalidSchema(format!(
            "a JSON schema is an object or a boolean, got {other}"
        ))),
    }
}
