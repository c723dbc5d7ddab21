//! Text generation over any [`LanguageModel`]: streamed, detokenized text with stop strings.

use crate::error::Result;
use crate::model::{FinishReason, GenerateParams, GenerationStats, LanguageModel};
use crate::text::detokenize::StreamingDetokenizer;

/// Holds back text that might be the start of a stop string, and cuts the text at the first
/// stop string. Nothing at or past a stop string is ever released.
///
/// ```
/// use mlx_models::runtime::generate::StopStrings;
/// let mut stops = StopStrings::new(&["\nUser:".to_string()]);
/// assert_eq!(stops.push("Hello\nUs"), ("Hello".to_string(), false));
/// assert_eq!(stops.push("er: hi"), (String::new(), true));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
}

impl StopStrings {
    /// A filter for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopStrings {
        StopStrings {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds `text`; returns the text safe to release and whether a stop string was reached
    /// (then the released text ends right before it).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest tail that is a proper prefix of a stop string.
        let keep = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let out = self.pending[..keep].to_string();
        self.pending.drain(..keep);
        (out, false)
    }

    /// Releases what is held back (generation ended without a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Generates after `prompt_ids` and streams the detokenized text to `on_text`, stopping at the
/// first of `stop_strings` (text at and after it is not emitted; the finish reason is then
/// [`FinishReason::Callback`]). Returns the engine's statistics.
pub fn generate_text(
    model: &mut dyn LanguageModel,
    prompt_ids: &[u32],
    params: &GenerateParams,
    stop_strings: &[String],
    on_text: &mut dyn FnMut(&str),
) -> Result<GenerationStats> {
    let tokenizer = model.tokenizer().clone();
    let mut detok = StreamingDetokenizer::new(&tokenizer);
    let mut stops = StopStrings::new(stop_strings);
    let mut stopped = false;
    let mut stats = model.generate(prompt_ids, params, &mut |id| {
        if let Some(piece) = detok.push(id)? {
            let (out, hit) = stops.push(&piece);
            if !out.is_empty() {
                on_text(&out);
            }
            if hit {
                stopped = true;
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    if !stopped {
        let (out, hit) = stops.push(&detok.finish()?);
        let rest = if hit { out } else { out + &stops.finish() };
        if !rest.is_empty() {
            on_text(&rest);
        }
        if hit {
            stats.finish_reason = FinishReason::Callback;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut filter = StopStrings::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (text, hit) = filter.push(p);
            out += &text;
            if hit {
                return (out, true);
            }
        }
        out += &filter.finish();
        (out, false)
    }

    #[test]
    fn cuts_at_stop_strings_split_across_pieces() {
        assert_eq!(
            run(&["</s>"], &["ab", "c<", "/", "s>tail"]),
            ("abc".into(), true)
        );
        assert_eq!(run(&["STOP", "X"], &["aSTO", "Xb"]), ("aSTO".into(), true));
        assert_eq!(run(&["ab"], &["a", "a", "c"]), ("aac".into(), false));
        assert_eq!(run(&[], &["é", "ü"]), ("éü".into(), false));
        assert_eq!(run(&["üx"], &["aü", "y"]), ("aüy".into(), false));
    }

    #[test]
    fn holds_back_only_possible_prefixes() {
        let mut f = StopStrings::new(&["\n\n".to_string()]);
        assert_eq!(f.push("a\n"), ("a".into(), false));
        assert_eq!(f.push("b"), ("\nb".into(), false));
        assert_eq!(f.push("\n\nc"), (String::new(), true));
    }
}
