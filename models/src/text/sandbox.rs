//! Bounded rendering of untrusted chat templates.
//!
//! A chat template is code that arrives inside a model file. minijinja's sandbox keeps it
//! away from the system, but not from the machine's memory, stack and time: a loop nest can
//! run for hours, repeated `~` concatenation doubles a string thirty times into a gigabyte,
//! and a list nested a hundred thousand times overflows the stack when printed or dropped.
//! [`TemplateLimits`] bounds each of these, and reaching a bound is
//! [`Error::TemplateLimit`] naming it:
//!
//! - **fuel**: the number of VM instructions one rendering may execute (minijinja's `fuel`);
//!   it bounds loops, and with them how deep a value can be nested at run time.
//! - **recursion**: macro calls, recursive loops and includes (minijinja's recursion limit).
//! - **output length**: every byte the template emits, including text captured by
//!   `{% set %}` blocks and macro calls (which never reaches the final output directly), is
//!   counted against [`TemplateLimits::max_output_bytes`].
//! - **value length**: strings and lists built by `~`, `+`, `*` and the filters that can grow
//!   their input (`join`, `replace`, `indent`, `format`, `string`, `pprint`, `tojson`,
//!   `batch`, `slice`) are checked **before** they are allocated, against
//!   [`TemplateLimits::max_value_bytes`] (bytes) and [`TemplateLimits::max_items`] (list
//!   elements).
//! - **nesting depth**: a list or map is at most [`TemplateLimits::max_depth`] deep when it
//!   is built with `[...]`, printed, or serialized; deeper values are refused (measured
//!   without recursion), and rendering runs on its own thread with a stack large enough for
//!   what the fuel allows.
//!
//! How: the template is compiled with minijinja's (unstable, version-pinned) machinery, and
//! the instructions that build strings and lists (`~`, `+`, `*`, `[...]`) are replaced by
//! calls to checked functions of the same arity; raw template text is emitted through the
//! same counting formatter as `{{ ... }}`. The names of those functions start with
//! `__zoo_`, which templates may not use.

use crate::{Error, Result};
use minijinja::machinery::{self, CodeGenerator, Instruction, Instructions, WhitespaceConfig};
use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{Environment, ErrorKind, State};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The bounds of one rendering (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLimits {
    /// VM instructions per rendering.
    pub fuel: u64,
    /// Bytes emitted per rendering (the output plus captured text).
    pub max_output_bytes: usize,
    /// Bytes of any one string the template builds.
    pub max_value_bytes: usize,
    /// Elements of any one list the template builds.
    pub max_items: usize,
    /// Nesting depth of lists and maps.
    pub max_depth: usize,
    /// minijinja's recursion limit (macro calls, recursive loops).
    pub recursion: usize,
}

impl Default for TemplateLimits {
    /// Generous for real templates (Qwen, Llama, Gemma, Mistral templates with tools use
    /// a few hundred instructions per message): 4 M instructions, 8 MiB of output, and
    /// 100 levels of macro recursion. [`TemplateLimits::for_context`] derives the output
    /// bound from a model's context length.
    fn default() -> Self {
        TemplateLimits {
            fuel: 4_000_000,
            max_output_bytes: 8 << 20,
            max_value_bytes: 8 << 20,
            max_items: 1 << 20,
            max_depth: 64,
            recursion: 100,
        }
    }
}

impl TemplateLimits {
    /// The defaults with the output (and value) bound derived from a context of
    /// `context_tokens` tokens: 64 bytes per token (more than any tokenizer's longest
    /// token needs for a prompt that fits), at least 64 KiB.
    ///
    /// ```
    /// use mlx_models::text::sandbox::TemplateLimits;
    /// assert_eq!(TemplateLimits::for_context(32_768).max_output_bytes, 2 << 20);
    /// assert_eq!(TemplateLimits::for_context(10).max_output_bytes, 64 << 10);
    /// ```
    pub fn for_context(context_tokens: usize) -> TemplateLimits {
        let bytes = context_tokens.saturating_mul(64).max(64 << 10);
        TemplateLimits {
            max_output_bytes: bytes,
            max_value_bytes: bytes,
            ..TemplateLimits::default()
        }
    }
}

/// The stack of the rendering thread: room for `max_depth` levels of every recursive walk
/// and minijinja's own recursion limit, with a wide margin (pages are reserved, not used).
const RENDER_STACK_BYTES: usize = 256 << 20;

/// The prefix of the checked functions; templates (and template variables) may not use it.
pub(crate) const RESERVED_PREFIX: &str = "__zoo_";

thread_local! {
    /// Bytes the rendering on this thread may still emit.
    static OUTPUT_LEFT: Cell<usize> = const { Cell::new(0) };
    /// The limits of the rendering on this thread.
    static LIMITS: Cell<Option<TemplateLimits>> = const { Cell::new(None) };
}

fn limits() -> TemplateLimits {
    LIMITS.with(|l| l.get()).unwrap_or_default()
}

/// The minijinja error that carries a bound reached; mapped to [`Error::TemplateLimit`].
#[derive(Debug)]
pub(crate) struct LimitReached {
    pub(crate) bound: &'static str,
    pub(crate) limit: u64,
}

impl std::fmt::Display for LimitReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template {} limit ({}) reached", self.bound, self.limit)
    }
}

impl std::error::Error for LimitReached {}

fn limit_error(bound: &'static str, limit: usize) -> minijinja::Error {
    let reached = LimitReached {
        bound,
        limit: limit as u64,
    };
    minijinja::Error::new(ErrorKind::InvalidOperation, reached.to_string()).with_source(reached)
}

/// Maps minijinja's own bounds (fuel, recursion) and ours to [`Error::TemplateLimit`];
/// `None` for any other error.
pub(crate) fn limit_of(err: &minijinja::Error, limits: &TemplateLimits) -> Option<Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<LimitReached>() {
            return Some(Error::TemplateLimit {
                bound: r.bound,
                limit: r.limit,
            });
        }
        source = e.source();
    }
    match err.kind() {
        ErrorKind::OutOfFuel => Some(Error::TemplateLimit {
            bound: "fuel",
            limit: limits.fuel,
        }),
        ErrorKind::InvalidOperation if err.to_string().contains("recursion limit exceeded") => {
            Some(Error::TemplateLimit {
                bound: "recursion",
                limit: limits.recursion as u64,
            })
        }
        _ => None,
    }
}

/// The longest template source accepted (real templates are a few to a few tens of KB).
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Refuses a template source over [`MAX_SOURCE_BYTES`] or naming the reserved prefix.
pub(crate) fn check_source(source: &str) -> Result<()> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Error::TemplateLimit {
            bound: "source length",
            limit: MAX_SOURCE_BYTES as u64,
        });
    }
    if source.contains(RESERVED_PREFIX) {
        return Err(Error::ChatTemplate(format!(
            "names starting with `{RESERVED_PREFIX}` are reserved"
        )));
    }
    Ok(())
}

/// Registers the checked functions, filters and formatter on `env`.
pub(crate) fn install(env: &mut Environment<'_>, limits: &TemplateLimits) {
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion);
    env.set_formatter(format_value);
    env.add_function("__zoo_concat", concat);
    env.add_function("__zoo_add", add);
    env.add_function("__zoo_mul", mul);
    env.add_function("__zoo_list", list);
    env.add_filter("join", join);
    env.add_filter("replace", replace);
    env.add_filter("indent", indent);
    env.add_filter("format", format);
    env.add_filter("string", string);
    env.add_filter("pprint", string);
    env.add_filter("batch", batch);
    env.add_filter("slice", slice);
    env.set_unknown_method_callback(method);
}

/// Compiles `source` (trim_blocks, lstrip_blocks, like transformers) and rewrites the
/// instructions that build values into checked calls.
pub(crate) fn compile(
    source: &str,
) -> std::result::Result<(Instructions<'_>, BTreeMap<&str, Instructions<'_>>), minijinja::Error> {
    let whitespace = WhitespaceConfig {
        keep_trailing_newline: false,
        lstrip_blocks: true,
        trim_blocks: true,
    };
    let ast = machinery::parse(source, "chat_template", Default::default(), whitespace)?;
    let max = limits().max_value_bytes as u64;
    if super::sandbox_fold::oversized_constant(&ast, max).is_some() {
        return Err(limit_error("value length", max as usize));
    }
    let mut codegen = CodeGenerator::new("chat_template", source);
    codegen.compile_stmt(&ast);
    let (mut instructions, mut blocks) = codegen.finish();
    rewrite(&mut instructions);
    for block in blocks.values_mut() {
        rewrite(block);
    }
    Ok((instructions, blocks))
}

/// Replaces `~`, `+`, `*` and `[...]` by calls of the same stack effect, and each raw text
/// emission by a jump to `LoadConst(text); Emit; Jump(back)` appended after a `Return` at the
/// end (appending keeps every jump target valid).
fn rewrite(instructions: &mut Instructions<'_>) {
    let n = instructions.len() as u32;
    let mut raw = Vec::new();
    for i in 0..n {
        let Some(instr) = instructions.get_mut(i) else {
            continue;
        };
        let replacement = match instr {
            Instruction::StringConcat => Some(Instruction::CallFunction("__zoo_concat", Some(2))),
            Instruction::Add => Some(Instruction::CallFunction("__zoo_add", Some(2))),
            Instruction::Mul => Some(Instruction::CallFunction("__zoo_mul", Some(2))),
            Instruction::BuildList(Some(k)) => u16::try_from(*k)
                .ok()
                .map(|k| Instruction::CallFunction("__zoo_list", Some(k))),
            Instruction::EmitRaw(text) => {
                raw.push((i, *text));
                None
            }
            _ => None,
        };
        if let Some(r) = replacement {
            *instr = r;
        }
    }
    if !raw.is_empty() {
        // The program used to end by running off its last instruction: end it explicitly
        // before the appended code.
        instructions.add(Instruction::Return);
    }
    for (i, text) in raw {
        let target = instructions.add(Instruction::LoadConst(Value::from(text)));
        instructions.add(Instruction::Emit);
        instructions.add(Instruction::Jump(i + 1));
        if let Some(instr) = instructions.get_mut(i) {
            *instr = Instruction::Jump(target);
        }
    }
}

/// Runs `f` on a thread with a large stack, with `limits` in force for the checked
/// functions.
pub(crate) fn on_render_thread<T: Send>(
    limits: &TemplateLimits,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let limits = *limits;
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("chat-template".into())
            .stack_size(RENDER_STACK_BYTES)
            .spawn_scoped(scope, move || {
                LIMITS.with(|l| l.set(Some(limits)));
                OUTPUT_LEFT.with(|o| o.set(limits.max_output_bytes));
                f()
            })
            .map_err(|e| Error::ChatTemplate(format!("cannot start the rendering thread: {e}")))?;
        handle
            .join()
            .map_err(|_| Error::ChatTemplate("rendering panicked".into()))?
    })
}

/// Takes `bytes` from the rendering's output budget.
fn spend_output(bytes: usize) -> std::result::Result<(), minijinja::Error> {
    OUTPUT_LEFT.with(|left| match left.get().checked_sub(bytes) {
        Some(rest) => {
            left.set(rest);
            Ok(())
        }
        None => {
            left.set(0);
            Err(limit_error("output length", limits().max_output_bytes))
        }
    })
}

/// The nesting depth of `value` and its element count, walked without recursion; stops
/// with an error past `max_depth` or `max_items` elements.
pub(crate) fn measure(value: &Value) -> std::result::Result<(), minijinja::Error> {
    let l = limits();
    let mut stack = vec![(value.clone(), 0usize)];
    let mut items = 0usize;
    while let Some((v, depth)) = stack.pop() {
        if !matches!(
            v.kind(),
            ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
        ) {
            continue;
        }
        if depth >= l.max_depth {
            return Err(limit_error("nesting depth", l.max_depth));
        }
        let is_map = v.kind() == ValueKind::Map;
        for item in v.try_iter()? {
            items += 1;
            if items > l.max_items {
                return Err(limit_error("list length", l.max_items));
            }
            if is_map {
                if let Ok(inner) = v.get_item(&item) {
                    stack.push((inner, depth + 1));
                }
            }
            stack.push((item, depth + 1));
        }
    }
    Ok(())
}

/// A `fmt::Write` that stops (with `fmt::Error`) past `left` bytes.
struct Capped<'a> {
    out: &'a mut String,
    left: usize,
    over: bool,
}

impl std::fmt::Write for Capped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if s.len() > self.left {
            self.over = true;
            return Err(std::fmt::Error);
        }
        self.left -= s.len();
        self.out.push_str(s);
        Ok(())
    }
}

/// `value` as a string of at most `max` bytes, measured first (depth, items) so that
/// formatting never recurses past `max_depth`.
fn to_bounded_string(
    value: &Value,
    max: usize,
    bound: &'static str,
) -> std::result::Result<String, minijinja::Error> {
    if let Some(s) = value.as_str() {
        if s.len() > max {
            return Err(limit_error(bound, max));
        }
        return Ok(s.to_string());
    }
    measure(value)?;
    let mut out = String::new();
    let mut w = Capped {
        out: &mut out,
        left: max,
        over: false,
    };
    if write!(w, "{value}").is_err() {
        if w.over {
            return Err(limit_error(bound, max));
        }
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "a value could not be formatted",
        ));
    }
    Ok(out)
}

/// The formatter of `{{ ... }}` and raw text: counts every byte against the output budget.
fn format_value(
    out: &mut minijinja::Output,
    _state: &State,
    value: &Value,
) -> std::result::Result<(), minijinja::Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(());
    }
    let left = OUTPUT_LEFT.with(|l| l.get());
    let text = to_bounded_string(value, left, "output length")?;
    spend_output(text.len())?;
    out.write_str(&text)
        .map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "write failed"))
}

/// The longest string a template may build in the rendering on this thread.
pub(crate) fn max_value_bytes() -> usize {
    limits().max_value_bytes
}

/// The error of a string that would exceed [`max_value_bytes`].
pub(crate) fn value_too_long() -> minijinja::Error {
    limit_error("value length", limits().max_value_bytes)
}

/// Checks a string about to be built of `len` bytes.
fn check_len(len: Option<usize>) -> std::result::Result<(), minijinja::Error> {
    let max = limits().max_value_bytes;
    match len {
        Some(n) if n <= max => Ok(()),
        _ => Err(limit_error("value length", max)),
    }
}

/// `a ~ b`.
fn concat(a: Value, b: Value) -> std::result::Result<Value, minijinja::Error> {
    let max = limits().max_value_bytes;
    let left = to_bounded_string(&a, max, "value length")?;
    let right = to_bounded_string(&b, max, "value length")?;
    check_len(left.len().checked_add(right.len()))?;
    Ok(Value::from(left + &right))
}

/// The elements of a sequence, at most `max_items` of them.
fn elements(v: &Value) -> std::result::Result<Vec<Value>, minijinja::Error> {
    let max = limits().max_items;
    let mut out = Vec::new();
    for item in v.try_iter()? {
        if out.len() == max {
            return Err(limit_error("list length", max));
        }
        out.push(item);
    }
    Ok(out)
}

fn is_seq(v: &Value) -> bool {
    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable)
}

/// An integer operand (booleans count, as in Python).
fn as_int(v: &Value) -> Option<i64> {
    match v.kind() {
        ValueKind::Number | ValueKind::Bool => i64::try_from(v.clone()).ok(),
        _ => None,
    }
    .filter(|_| v.is_integer() || v.kind() == ValueKind::Bool)
}

fn as_float(v: &Value) -> Option<f64> {
    match v.kind() {
        ValueKind::Number | ValueKind::Bool => f64::try_from(v.clone()).ok(),
        _ => None,
    }
}

fn unsupported(op: &str, a: &Value, b: &Value) -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "unsupported operand types for {op}: {} and {}",
            a.kind(),
            b.kind()
        ),
    )
}

/// `a + b`: numbers, strings (checked length), sequences (checked length and depth).
fn add(a: Value, b: Value) -> std::result::Result<Value, minijinja::Error> {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        check_len(x.len().checked_add(y.len()))?;
        return Ok(Value::from([x, y].concat()));
    }
    if is_seq(&a) && is_seq(&b) {
        let mut items = elements(&a)?;
        items.extend(elements(&b)?);
        if items.len() > limits().max_items {
            return Err(limit_error("list length", limits().max_items));
        }
        return Ok(Value::from(items));
    }
    if let (Some(x), Some(y)) = (as_int(&a), as_int(&b)) {
        return x
            .checked_add(y)
            .map(Value::from)
            .ok_or_else(|| unsupported("+ (overflow)", &a, &b));
    }
    match (as_float(&a), as_float(&b)) {
        (Some(x), Some(y)) => Ok(Value::from(x + y)),
        _ => Err(unsupported("+", &a, &b)),
    }
}

/// `a * b`: numbers, and a string or sequence repeated (checked length).
fn mul(a: Value, b: Value) -> std::result::Result<Value, minijinja::Error> {
    let repeat = |s: &Value, n: &Value| -> Option<std::result::Result<Value, minijinja::Error>> {
        let count = as_int(n)?.max(0) as usize;
        if let Some(text) = s.as_str() {
            return Some(
                check_len(text.len().checked_mul(count)).map(|_| Value::from(text.repeat(count))),
            );
        }
        if is_seq(s) {
            return Some((|| {
                let items = elements(s)?;
                let total = items.len().checked_mul(count);
                if !matches!(total, Some(t) if t <= limits().max_items) {
                    return Err(limit_error("list length", limits().max_items));
                }
                let mut out = Vec::with_capacity(total.unwrap_or(0));
                for _ in 0..count {
                    out.extend(items.iter().cloned());
                }
                Ok(Value::from(out))
            })());
        }
        None
    };
    if let Some(r) = repeat(&a, &b).or_else(|| repeat(&b, &a)) {
        return r;
    }
    if let (Some(x), Some(y)) = (as_int(&a), as_int(&b)) {
        return x
            .checked_mul(y)
            .map(Value::from)
            .ok_or_else(|| unsupported("* (overflow)", &a, &b));
    }
    match (as_float(&a), as_float(&b)) {
        (Some(x), Some(y)) => Ok(Value::from(x * y)),
        _ => Err(unsupported("*", &a, &b)),
    }
}

/// `[a, b, ...]`: checked depth.
fn list(items: Rest<Value>) -> std::result::Result<Value, minijinja::Error> {
    let items = items.0;
    let value = Value::from(items);
    measure(&value)?;
    Ok(value)
}

/// `seq | join(sep)`, with the total length checked as it is built.
fn join(value: Value, sep: Option<Value>) -> std::result::Result<Value, minijinja::Error> {
    let max = limits().max_value_bytes;
    let sep = match sep {
        Some(s) => to_bounded_string(&s, max, "value length")?,
        None => String::new(),
    };
    if let Some(s) = value.as_str() {
        // A string joins its characters.
        let chars: Vec<Value> = s.chars().map(Value::from).collect();
        return join(Value::from(chars), Some(Value::from(sep)));
    }
    let mut out = String::new();
    for (i, item) in elements(&value)?.iter().enumerate() {
        if i > 0 {
            check_len(out.len().checked_add(sep.len()))?;
            out.push_str(&sep);
        }
        let text = to_bounded_string(item, max - out.len(), "value length")?;
        out.push_str(&text);
    }
    Ok(Value::from(out))
}

/// `s | replace(old, new, count=None)`, with the result's length computed first.
fn replace(
    s: Value,
    old: String,
    new: String,
    count: Option<usize>,
) -> std::result::Result<Value, minijinja::Error> {
    let s = to_bounded_string(&s, limits().max_value_bytes, "value length")?;
    let occurrences = if old.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(old.as_str()).count()
    };
    let n = count.map_or(occurrences, |c| c.min(occurrences));
    let grown = new.len().saturating_sub(old.len()).checked_mul(n);
    check_len(grown.and_then(|g| g.checked_add(s.len())))?;
    Ok(Value::from(match count {
        Some(c) => s.replacen(old.as_str(), &new, c),
        None => s.replace(old.as_str(), &new),
    }))
}

/// `s | indent(width=4, first=false, blank=false)`; `width` may be a string.
fn indent(
    s: Value,
    width: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let width = width.or(kwargs.get::<Option<Value>>("width")?);
    let first: bool = kwargs.get::<Option<bool>>("first")?.unwrap_or(false);
    let blank: bool = kwargs.get::<Option<bool>>("blank")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let prefix = match &width {
        None => "    ".to_string(),
        Some(w) => match w.as_str() {
            Some(p) => p.to_string(),
            None => " ".repeat(as_int(w).unwrap_or(4).clamp(0, 1024) as usize),
        },
    };
    let s = to_bounded_string(&s, limits().max_value_bytes, "value length")?;
    let lines = s.split('\n').count();
    check_len(
        prefix
            .len()
            .checked_mul(lines)
            .and_then(|p| p.checked_add(s.len())),
    )?;
    let mut out = String::with_capacity(s.len() + prefix.len() * lines);
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if (i > 0 || first) && (blank || !line.trim().is_empty()) {
            out.push_str(&prefix);
        }
        out.push_str(line);
    }
    Ok(Value::from(out))
}

/// `fmt | format(args...)` (printf style): the arguments and the format are bounded, and
/// field widths and precisions above 1024 are refused.
fn format(
    state: &State,
    fmt: Value,
    args: Rest<Value>,
) -> std::result::Result<Value, minijinja::Error> {
    let max = limits().max_value_bytes;
    let text = to_bounded_string(&fmt, max, "value length")?;
    check_widths(&text)?;
    let mut total = text.len();
    for a in args.iter() {
        total = total.saturating_add(to_bounded_string(a, max, "value length")?.len());
    }
    check_len(Some(total))?;
    let v = minijinja::filters::format(state, &Value::from(text), args)?;
    check_len(Some(v.as_str().map_or(0, str::len)))?;
    Ok(v)
}

/// Refuses a printf or `str.format` width or precision of more than four digits.
fn check_widths(fmt: &str) -> std::result::Result<(), minijinja::Error> {
    let mut digits = 0;
    for c in fmt.chars() {
        if c.is_ascii_digit() {
            digits += 1;
            if digits > 4 {
                return Err(limit_error("format width", 9999));
            }
        } else {
            digits = 0;
        }
    }
    Ok(())
}

/// `value | string` and `value | pprint`: bounded.
fn string(value: Value) -> std::result::Result<Value, minijinja::Error> {
    Ok(Value::from(to_bounded_string(
        &value,
        limits().max_value_bytes,
        "value length",
    )?))
}

/// The elements of `value` for `batch` / `slice` into `count` parts, `count` checked to be in
/// `1..=max_items`.
fn counted_elements(
    value: &Value,
    count: usize,
) -> std::result::Result<Vec<Value>, minijinja::Error> {
    if count == 0 || count > limits().max_items {
        return Err(limit_error("list length", limits().max_items));
    }
    elements(value)
}

/// `seq | batch(n, fill)`: bounded count.
fn batch(
    value: Value,
    count: usize,
    fill: Option<Value>,
) -> std::result::Result<Value, minijinja::Error> {
    let items = counted_elements(&value, count)?;
    let mut out = Vec::new();
    for chunk in items.chunks(count) {
        let mut row: Vec<Value> = chunk.to_vec();
        if let Some(f) = &fill {
            row.resize(count, f.clone());
        }
        out.push(Value::from(row));
    }
    Ok(Value::from(out))
}

/// `seq | slice(n, fill)`: `n` columns, bounded.
fn slice(
    value: Value,
    count: usize,
    fill: Option<Value>,
) -> std::result::Result<Value, minijinja::Error> {
    let items = counted_elements(&value, count)?;
    let per = items.len().div_ceil(count);
    let extra = items.len() % count;
    let mut out = Vec::new();
    let mut it = items.into_iter();
    for col in 0..count {
        let take = if extra == 0 || col < extra {
            per
        } else {
            per - 1
        };
        let mut row: Vec<Value> = it.by_ref().take(take).collect();
        if let Some(f) = &fill {
            if take < per {
                row.push(f.clone());
            }
        }
        out.push(Value::from(row));
    }
    Ok(Value::from(out))
}

/// Python methods (minijinja-contrib's `pycompat`), with the ones that can grow a string
/// (`replace`, `join`, `format`) checked first.
fn method(
    state: &State,
    value: &Value,
    name: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    let max = limits().max_value_bytes;
    if value.as_str().is_some() {
        match name {
            "replace" => {
                let text = |i: usize| args.get(i).and_then(|v| v.as_str()).map(str::to_string);
                if let (Some(old), Some(new)) = (text(0), text(1)) {
                    let count = args.get(2).and_then(as_int).map(|c| c.max(0) as usize);
                    return replace(value.clone(), old, new, count);
                }
            }
            "join" => {
                if let Some(seq) = args.first() {
                    return join(seq.clone(), Some(value.clone()));
                }
            }
            "format" => {
                let fmt = value.as_str().unwrap_or_default();
                check_widths(fmt)?;
                let mut total = fmt.len();
                for a in args {
                    total = total.saturating_add(to_bounded_string(a, max, "value length")?.len());
                }
                check_len(Some(total))?;
            }
            _ => {}
        }
    }
    let v = minijinja_contrib::pycompat::unknown_method_callback(state, value, name, args)?;
    if let Some(s) = v.as_str() {
        check_len(Some(s.len()))?;
    }
    Ok(v)
}
