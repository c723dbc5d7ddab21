//! Tool calls in a streamed answer: the text is passed on as it comes until a call may begin,
//! and only from there is it held back until the end, when it is parsed.

use super::{parse_tool_calls, ParsedOutput, ToolCallFormat};

/// Splits a streamed answer into text that is certainly content (sent at once) and the part
/// that may hold tool calls (held, then parsed by [`ToolCallStream::finish`]).
///
/// What is held: from the first place where a call can begin to the end — the format's
/// opening marker (`<tool_call>`, `[TOOL_CALLS]`, `<|tool_call>`, ```` ```tool_code ````,
/// `<|python_tag|>`), or for [`Llama3`](ToolCallFormat::Llama3), whose calls are bare JSON,
/// the first `{` or `[`. Until such a place is seen, only a tail that could still grow into a
/// marker is held, and trailing whitespace (which a parsed answer trims before its calls).
///
/// The content sent plus [`finish`](Self::finish)'s content is the whole answer without its
/// calls, as [`parse_tool_calls`] gives it on the whole text, except that whitespace before
/// text that was already sent is not trimmed.
///
/// ```
/// use mlx_models::text::tool_calls::{ToolCallFormat, ToolCallStream};
/// let mut stream = ToolCallStream::new(ToolCallFormat::Hermes);
/// assert_eq!(stream.push("Let me check "), "Let me check");
/// assert_eq!(stream.push("the weather.\n<tool"), " the weather.");
/// assert_eq!(stream.push("_call>\n{\"name\": \"get_weather\", "), "");
/// assert_eq!(stream.push("\"arguments\": {}}\n</tool_call>"), "");
/// let rest = stream.finish();
/// assert_eq!(rest.content, "");
/// assert_eq!(rest.tool_calls[0].name, "get_weather");
/// ```
#[derive(Debug, Clone)]
pub struct ToolCallStream {
    format: ToolCallFormat,
    held: String,
    /// A call may have begun: everything from the start of `held` stays held.
    in_call: bool,
}

impl ToolCallStream {
    /// A stream of an answer written in `format`.
    pub fn new(format: ToolCallFormat) -> ToolCallStream {
        ToolCallStream {
            format,
            held: String::new(),
            in_call: false,
        }
    }

    /// The markers where a call of this format begins.
    fn markers(&self) -> &'static [&'static str] {
        match self.format {
            ToolCallFormat::Hermes => &["<tool_call>"],
            ToolCallFormat::Llama3 => &["<|python_tag|>", "{", "["],
            ToolCallFormat::Mistral | ToolCallFormat::MistralArgs => &["[TOOL_CALLS]"],
            ToolCallFormat::Gemma => &["<|tool_call>"],
            ToolCallFormat::ToolCode => &["```tool_code"],
        }
    }

    /// Takes the next piece of generated text; returns the text before it (and in it) that is
    /// certainly content, possibly empty.
    pub fn push(&mut self, text: &str) -> String {
        self.held.push_str(text);
        if self.in_call {
            return String::new();
        }
        let markers = self.markers();
        if let Some(at) = markers.iter().filter_map(|m| self.held.find(m)).min() {
            self.in_call = true;
            let at = self.held[..at].trim_end().len();
            return self.release(at);
        }
        // Hold the longest tail that is the start of a marker, and trailing whitespace.
        let partial = markers
            .iter()
            .flat_map(|m| {
                (1..m.len())
                    .filter(|&n| m.is_char_boundary(n))
                    .map(|n| &m[..n])
            })
            .filter(|prefix| self.held.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let keep_from = self.held.len() - partial;
        let keep_from = self.held[..keep_from].trim_end().len();
        self.release(keep_from)
    }

    /// Sends `held[..at]`, keeping the rest.
    fn release(&mut self, at: usize) -> String {
        let rest = self.held.split_off(at);
        std::mem::replace(&mut self.held, rest)
    }

    /// The end of the answer: the calls in the held text, and the content still to send
    /// (trimmed when there are calls, as [`parse_tool_calls`] trims it).
    pub fn finish(self) -> ParsedOutput {
        parse_tool_calls(self.format, &self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams `text` in pieces of `size` bytes (at char boundaries): the content sent along
    /// the way, and what the end gives.
    fn stream(format: ToolCallFormat, text: &str, size: usize) -> (String, ParsedOutput) {
        let mut s = ToolCallStream::new(format);
        let mut sent = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut n = size.min(rest.len());
            while !rest.is_char_boundary(n) {
                n += 1;
            }
            sent.push_str(&s.push(&rest[..n]));
            rest = &rest[n..];
        }
        (sent, s.finish())
    }

    #[test]
    fn every_format_streams_its_content_and_parses_its_calls_at_any_split() {
        let cases = [
            (
                ToolCallFormat::Hermes,
                "Sure.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>",
            ),
            (
                ToolCallFormat::Llama3,
                "Sure. {\"name\": \"f\", \"parameters\": {\"x\": 1}}",
            ),
            (
                ToolCallFormat::Llama3,
                "Sure.<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": 1}}",
            ),
            (
                ToolCallFormat::Mistral,
                "Sure. [TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"x\": 1}}]",
            ),
            (
                ToolCallFormat::MistralArgs,
                "Sure. [TOOL_CALLS]f[ARGS]{\"x\": 1}",
            ),
            (
                ToolCallFormat::Gemma,
                "Sure. <|tool_call>call:f{x:1}<tool_call|>",
            ),
            (
                ToolCallFormat::ToolCode,
                "Sure.\n```tool_code\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n```",
            ),
        ];
        for (format, text) in cases {
            let whole = parse_tool_calls(format, text);
            assert_eq!(whole.content, "Sure.", "{format:?}");
            assert_eq!(whole.tool_calls.len(), 1, "{format:?}");
            for size in [1, 2, 3, 5, 7, 64] {
                let (sent, end) = stream(format, text, size);
                assert_eq!(sent, "Sure.", "{format:?} in pieces of {size}");
                assert_eq!(end.content, "", "{format:?} in pieces of {size}");
                assert_eq!(
                    end.tool_calls, whole.tool_calls,
                    "{format:?} in pieces of {size}"
                );
            }
        }
    }

    #[test]
    fn text_without_calls_is_all_sent_but_a_possible_marker_start() {
        let text = "Paris is the capital of France. Its <b>tower</b> is tall.  ";
        for size in [1, 4, 100] {
            let (sent, end) = stream(ToolCallFormat::Hermes, text, size);
            assert!(end.tool_calls.is_empty());
            assert_eq!(format!("{sent}{}", end.content), text, "pieces of {size}");
        }
        // While a tail could grow into `<tool_call>`, it is held; once it cannot, it is sent.
        let mut s = ToolCallStream::new(ToolCallFormat::Hermes);
        assert_eq!(s.push("a <tool_c"), "a");
        assert_eq!(s.push("at> b"), " <tool_cat> b");
        // Multi-byte text next to a marker start.
        let mut s = ToolCallStream::new(ToolCallFormat::Gemma);
        assert_eq!(s.push("été <|"), "été");
        assert_eq!(s.finish().content, " <|");
    }

    #[test]
    fn a_malformed_call_stays_content() {
        let text = "Look: <tool_call>{\"name\": oops</tool_call>";
        let (sent, end) = stream(ToolCallFormat::Hermes, text, 3);
        assert!(end.tool_calls.is_empty());
        assert_eq!(format!("{sent}{}", end.content), text);
        // Llama 3 holds from the first brace; braces that are not calls come back at the end.
        let text = "Use {x} here.";
        let (sent, end) = stream(ToolCallFormat::Llama3, text, 2);
        assert_eq!(sent, "Use");
        assert_eq!(end.content, " {x} here.");
    }
}
