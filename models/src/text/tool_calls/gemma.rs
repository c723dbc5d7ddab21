//! Gemma 4's argument syntax, as its chat template writes tool calls
//! (`format_argument` with `escape_keys=False`): `{key:value,…}` with bare keys, strings
//! between `<|"|>` delimiters (no escapes), `[…]` lists, bare numbers, `true` / `false`;
//! `null` as Python prints it (`None`) or as JSON does. Keys come in sorted order
//! (`dictsort`).
//!
//! [`parse_args`] reads it into JSON; [`LarkArgs`] writes a Lark grammar of it from a JSON
//! schema.

use serde_json::{Map, Number, Value};

/// Gemma 4's string delimiter.
pub(super) const QUOTE: &str = "<|\"|>";

/// Nesting deeper than this is not parsed (and, in grammars, not constrained).
const MAX_DEPTH: usize = 32;

/// The JSON object of Gemma 4 arguments `{…}` filling all of `s` (whitespace around it
/// allowed); `None` when `s` is anything else.
pub(super) fn parse_args(s: &str) -> Option<Value> {
    let mut p = Parser { s, at: 0 };
    p.ws();
    if !p.rest().starts_with('{') {
        return None;
    }
    let v = p.value(0)?;
    p.ws();
    (p.at == s.len()).then_some(v)
}

struct Parser<'s> {
    s: &'s str,
    at: usize,
}

impl<'s> Parser<'s> {
    fn rest(&self) -> &'s str {
        &self.s[self.at..]
    }

    fn ws(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, prefix: &str) -> bool {
        let found = self.rest().starts_with(prefix);
        if found {
            self.at += prefix.len();
        }
        found
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        if self.eat(QUOTE) {
            let end = self.rest().find(QUOTE)?;
            let text = self.rest()[..end].to_string();
            self.at += end + QUOTE.len();
            return Some(Value::String(text));
        }
        if self.rest().starts_with('"') {
            return self.json_string().map(Value::String);
        }
        if self.eat("{") {
            let mut map = Map::new();
            self.ws();
            if self.eat("}") {
                return Some(Value::Object(map));
            }
            loop {
                self.ws();
                let key = self.key()?;
                self.ws();
                if !self.eat(":") {
                    return None;
                }
                let v = self.value(depth + 1)?;
                map.insert(key, v);
                self.ws();
                if self.eat("}") {
                    return Some(Value::Object(map));
                }
                if !self.eat(",") {
                    return None;
                }
            }
        }
        if self.eat("[") {
            let mut items = Vec::new();
            self.ws();
            if self.eat("]") {
                return Some(Value::Array(items));
            }
            loop {
                items.push(self.value(depth + 1)?);
                self.ws();
                if self.eat("]") {
                    return Some(Value::Array(items));
                }
                if !self.eat(",") {
                    return None;
                }
            }
        }
        for (word, v) in [
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("null", Value::Null),
            ("None", Value::Null),
            ("none", Value::Null),
        ] {
            if self.eat(word) {
                return Some(v);
            }
        }
        let len = self
            .rest()
            .find(|c: char| !matches!(c, '0'..='9' | '-' | '+' | '.' | 'e' | 'E'))
            .unwrap_or(self.rest().len());
        let number: Number = serde_json::from_str(&self.rest()[..len]).ok()?;
        self.at += len;
        Some(Value::Number(number))
    }

    /// A JSON string literal (escapes as JSON's).
    fn json_string(&mut self) -> Option<String> {
        let mut stream = serde_json::Deserializer::from_str(self.rest()).into_iter::<String>();
        let text = stream.next()?.ok()?;
        self.at += stream.byte_offset();
        Some(text)
    }

    /// A key: bare (up to `:`), or quoted with `<|"|>` or as JSON.
    fn key(&mut self) -> Option<String> {
        if self.eat(QUOTE) {
            let end = self.rest().find(QUOTE)?;
            let key = self.rest()[..end].to_string();
            self.at += end + QUOTE.len();
            return Some(key);
        }
        if self.rest().starts_with('"') {
            return self.json_string();
        }
        let len = self
            .rest()
            .find(|c: char| {
                matches!(c, ':' | ',' | '{' | '}' | '[' | ']' | '<') || c.is_whitespace()
            })
            .unwrap_or(self.rest().len());
        if len == 0 {
            return None;
        }
        let key = self.rest()[..len].to_string();
        self.at += len;
        Some(key)
    }
}

/// Writes the Lark rules of Gemma 4 argument values constrained by JSON schemas.
///
/// Supported: `type` (one or a list), `enum` / `const` of scalars, `properties` with
/// `required` (exactly those keys, in sorted order, the required ones present), `items`,
/// `anyOf` / `oneOf`. Anything else (`$ref`, `pattern`, bounds, `allOf`) leaves that value
/// free: any Gemma 4 value.
pub(super) struct LarkArgs {
    /// The rules written so far.
    rules: Vec<String>,
    /// The Lark expression of the string delimiter (a literal, or `<[id]>` when special).
    quote: String,
    /// Whether the delimiter is a special token (not text).
    quote_is_special: bool,
}

impl LarkArgs {
    pub(super) fn new(quote: String, quote_is_special: bool) -> LarkArgs {
        let mut rules = Vec::new();
        let string_body = if quote_is_special {
            r"gemma_str_body: /(.|\n)*/".to_string()
        } else {
            // Lazy: the text ends at the first closing delimiter, which the regex includes.
            format!(r"gemma_str_body[lazy]: /(.|\n)*{}/", regex_escape(QUOTE))
        };
        let close = if quote_is_special { quote.as_str() } else { "" };
        rules.push(format!("gemma_str: {quote} gemma_str_body {close}"));
        rules.push(string_body);
        rules.push(r"GEMMA_INT: /-?(0|[1-9][0-9]*)/".into());
        rules.push(r"GEMMA_NUM: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/".into());
        rules.push(r"GEMMA_KEY: /[A-Za-z_][A-Za-z0-9_]*/".into());
        rules.push(r#"gemma_null: "null" | "None""#.into());
        rules.push(
            "gemma_any: gemma_str | GEMMA_NUM | \"true\" | \"false\" | gemma_null \
             | gemma_any_obj | gemma_any_list"
                .into(),
        );
        rules.push(
            r#"gemma_any_obj: "{" (GEMMA_KEY ":" gemma_any ("," GEMMA_KEY ":" gemma_any)*)? "}""#
                .into(),
        );
        rules.push(r#"gemma_any_list: "[" (gemma_any ("," gemma_any)*)? "]""#.into());
        LarkArgs {
            rules,
            quote,
            quote_is_special,
        }
    }

    /// The rules written, one per line.
    pub(super) fn into_rules(self) -> Vec<String> {
        self.rules
    }

    /// A fresh rule `name: body`; returns `name`.
    fn rule(&mut self, body: String) -> String {
        let name = format!("gemma_v{}", self.rules.len());
        self.rules.push(format!("{name}: {body}"));
        name
    }

    /// The Lark expression of a string literal's text as a Gemma 4 string value.
    fn string_literal(&self, text: &str) -> String {
        let close = if self.quote_is_special {
            self.quote.clone()
        } else {
            lark_literal(QUOTE)
        };
        format!("{} {} {close}", self.quote, lark_literal(text))
    }

    /// The Lark expression of one JSON scalar as a Gemma 4 value (`None` for non-scalars).
    fn scalar(&self, v: &Value) -> Option<String> {
        Some(match v {
            Value::String(s) => self.string_literal(s),
            Value::Bool(b) => lark_literal(if *b { "true" } else { "false" }),
            Value::Null => "gemma_null".into(),
            Value::Number(n) => lark_literal(&n.to_string()),
            _ => return None,
        })
    }

    /// The Lark expression of a top-level arguments object (an object even when the schema
    /// says nothing).
    pub(super) fn arguments(&mut self, schema: &Value) -> String {
        if schema.get("properties").is_some_and(Value::is_object) {
            self.object(schema, 0)
        } else {
            "gemma_any_obj".into()
        }
    }

    /// The Lark expression of a value valid against `schema`.
    pub(super) fn value(&mut self, schema: &Value, depth: usize) -> String {
        if depth > MAX_DEPTH {
            return "gemma_any".into();
        }
        let Some(obj) = schema.as_object() else {
            return "gemma_any".into();
        };
        if let Some(c) = obj.get("const") {
            if let Some(e) = self.scalar(c) {
                return self.rule(e);
            }
        }
        if let Some(values) = obj.get("enum").and_then(Value::as_array) {
            let alts: Option<Vec<String>> = values.iter().map(|v| self.scalar(v)).collect();
            if let Some(alts) = alts.filter(|a| !a.is_empty()) {
                return self.rule(alts.join(" | "));
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(list) = obj
                .get(key)
                .and_then(Value::as_array)
                .filter(|l| !l.is_empty())
            {
                let alts: Vec<String> = list.iter().map(|s| self.value(s, depth + 1)).collect();
                return self.rule(alts.join(" | "));
            }
        }
        let types: Vec<&str> = match obj.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ if obj.contains_key("properties") => vec!["object"],
            _ if obj.contains_key("items") => vec!["array"],
            _ => return "gemma_any".into(),
        };
        let mut alts = Vec::new();
        for t in types {
            let e = match t {
                "string" => "gemma_str".into(),
                "integer" => "GEMMA_INT".into(),
                "number" => "GEMMA_NUM".into(),
                "boolean" => r#""true" | "false""#.into(),
                "null" => "gemma_null".into(),
                "object" => self.object(schema, depth),
                "array" => {
                    let item = match obj.get("items") {
                        Some(items) => self.value(items, depth + 1),
                        None => "gemma_any".into(),
                    };
                    self.rule(format!(r#""[" ({item} ("," {item})*)? "]""#))
                }
                _ => "gemma_any".into(),
            };
            alts.push(e);
        }
        if alts.is_empty() {
            return "gemma_any".into();
        }
        self.rule(alts.join(" | "))
    }

    /// `{key:value,…}`: the schema's properties in sorted order, the required ones present,
    /// no others (without `properties`: any object).
    fn object(&mut self, schema: &Value, depth: usize) -> String {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return "gemma_any_obj".into();
        };
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut keys: Vec<&String> = props.keys().collect();
        keys.sort();
        // Each property as `key:value`, and whether it is required.
        let items: Vec<(String, bool)> = keys
            .iter()
            .map(|k| {
                let v = self.value(&props[k.as_str()], depth + 1);
                (
                    format!("{} \":\" {v}", lark_literal(k)),
                    required.contains(&k.as_str()),
                )
            })
            .collect();
        // after[i]: the properties from i on once one is written (each after a comma);
        // first: a rule for the properties from i on when none is written yet (None: none
        // left).
        let n = items.len();
        let mut after = vec![String::new(); n + 1];
        for i in (0..n).rev() {
            let (item, req) = &items[i];
            let one = if *req {
                format!("\",\" {item}")
            } else {
                format!("(\",\" {item})?")
            };
            after[i] = format!("{one} {}", after[i + 1]).trim().to_string();
        }
        let mut first: Option<String> = None;
        for i in (0..n).rev() {
            let (item, req) = &items[i];
            let with = format!("{item} {}", after[i + 1]).trim().to_string();
            first = Some(match (req, first) {
                (true, _) => self.rule(with),
                (false, None) => self.rule(format!("({with})?")),
                (false, Some(rest)) => self.rule(format!("{with} | {rest}")),
            });
        }
        match first {
            None => self.rule(r#""{" "}""#.to_string()),
            Some(f) => self.rule(format!(r#""{{" {f} "}}""#)),
        }
    }
}

/// A Lark string literal of `text` (JSON string syntax).
pub(super) fn lark_literal(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// `text` as a regex matching it literally (inside Lark's `/…/`).
pub(super) fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '.'
                | '+'
                | '*'
                | '?'
                | '('
                | ')'
                | '|'
                | '['
                | ']'
                | '{'
                | '}'
                | '^'
                | '$'
                | '#'
                | '&'
                | '-'
                | '~'
                | '/'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_parse_into_json() {
        let parsed = parse_args(
            r#"{city:<|"|>Paris, "FR"<|"|>,days:3,t:-1.5e2,ok:true,x:None,list:[1,<|"|>a<|"|>],nested:{k:false}}"#,
        );
        assert_eq!(
            parsed,
            Some(json!({
                "city": "Paris, \"FR\"", "days": 3, "t": -150.0, "ok": true, "x": null,
                "list": [1, "a"], "nested": {"k": false}
            }))
        );
        assert_eq!(parse_args(" {} "), Some(json!({})));
        assert_eq!(parse_args(r#"{"a b":"c\n"}"#), Some(json!({"a b": "c\n"})));
        for bad in [
            "",
            "{",
            "{a}",
            "{a:}",
            "{a:1,}",
            "{a:1} x",
            "[1]",
            "{a:<|\"|>open}",
            "{a:1e}",
        ] {
            assert_eq!(parse_args(bad), None, "{bad:?}");
        }
        let deep = format!("{}{}", "{a:".repeat(100), "}".repeat(100));
        assert_eq!(parse_args(&deep), None);
    }

    #[test]
    fn regexes_and_literals_escape() {
        assert_eq!(regex_escape(QUOTE), r#"<\|"\|>"#);
        assert_eq!(regex_escape("a.b/c"), r"a\.b\/c");
        assert_eq!(lark_literal("a\"\n"), r#""a\"\n""#);
    }
}
