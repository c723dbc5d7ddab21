//! Hostile chat templates (the classes found against `qwen_chat`, issue 10): each one ends in
//! a typed error naming the bound it reached, quickly and in bounded memory, instead of a
//! stack overflow, an out-of-memory abort or a hang.

use mlx_models::text::chat::{ChatMessage, ChatTemplate};
use mlx_models::text::sandbox::TemplateLimits;
use mlx_models::Error;

fn render(source: &str) -> Result<String, Error> {
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
    ];
    ChatTemplate::new(source)?.render(&messages, true, None, None, &serde_json::Value::Null)
}

/// Asserts that `source` fails on `bound`.
fn assert_bound(source: &str, bound: &str) {
    match render(source) {
        Err(Error::TemplateLimit { bound: b, .. }) if b == bound => {}
        other => panic!("{source}\nexpected the {bound} bound, got {other:?}"),
    }
}

#[test]
fn a_100000_deep_list_is_refused_not_a_stack_overflow() {
    let build = "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}\
                 {% set ns.x = [ns.x] %}{% endfor %}";
    assert_bound(&format!("{build}{{{{ ns.x }}}}"), "nesting depth");
    // Built through a filter instead of `[...]`, the depth is still refused when printed,
    // serialized or concatenated.
    let filtered = "{% set ns = namespace(x=[1]) %}{% for i in range(5000) %}\
                    {% set ns.x = ns.x|batch(1) %}{% endfor %}";
    for use_ in [
        "{{ ns.x }}",
        "{{ ns.x|tojson }}",
        "{{ ns.x ~ '' }}",
        "{{ ns.x|string }}",
    ] {
        assert_bound(&format!("{filtered}{use_}"), "nesting depth");
    }
}

#[test]
fn a_namespace_holding_itself_is_refused() {
    assert_bound(
        "{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}",
        "nesting depth",
    );
}

#[test]
fn string_doubling_stops_at_the_value_bound() {
    // Through a namespace in a loop, with `~` and with `+`.
    for op in ["ns.s ~ ns.s", "ns.s + ns.s"] {
        assert_bound(
            &format!(
                "{{% set ns = namespace(s='x') %}}{{% for i in range(40) %}}\
                 {{% set ns.s = {op} %}}{{% endfor %}}{{{{ ns.s|length }}}}"
            ),
            "value length",
        );
    }
    // In straight-line code, no loop at all.
    let mut src = String::from("{% set s0 = 'xxxxxxxx' %}");
    for i in 1..40 {
        src += &format!("{{% set s{i} = s{} ~ s{} %}}", i - 1, i - 1);
    }
    assert_bound(&src, "value length");
    // Repetition and list repetition, at run time and folded at compile time.
    assert_bound(
        "{% set n = 100000000 %}{{ ('x' * n)|length }}",
        "value length",
    );
    assert_bound(
        "{% set n = 100000000 %}{{ ([1] * n)|length }}",
        "list length",
    );
    let folded = vec!["('x' * 100000000)"; 1000].join(" ~ ");
    match ChatTemplate::new(format!("{{{{ {folded} }}}}")) {
        Err(Error::TemplateLimit {
            bound: "value length",
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // Text captured by `{% set %}` blocks counts as output even though it is not printed.
    assert_bound(
        "{% set ns = namespace(s='xx') %}{% for i in range(40) %}\
         {% set t %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = t %}{% endfor %}",
        "output length",
    );
}

#[test]
fn growing_filters_and_methods_are_bounded() {
    assert_bound(
        "{{ ('x' * 10000)|replace('', 'y' * 10000)|length }}",
        "value length",
    );
    assert_bound(
        "{{ ('x' * 10000).replace('', 'y' * 10000)|length }}",
        "value length",
    );
    assert_bound(
        "{{ ((['x' * 1000] * 1000000)|join)|length }}",
        "value length",
    );
    assert_bound("{{ '%999999999s'|format('x') }}", "format width");
    assert_bound(
        "{{ ('a\\n' * 1000000)|indent(1000)|length }}",
        "value length",
    );
}

#[test]
fn giant_tojson_indents_are_refused() {
    for src in [
        "{{ messages|tojson(indent=1000000000) }}",
        "{{ messages|tojson(indent=' ' * 1000000) }}",
    ] {
        match render(src) {
            Err(Error::ChatTemplate(m)) => assert!(m.contains("indent"), "{m}"),
            other => panic!("{src}: {other:?}"),
        }
    }
    // A wide value with the widest indent allowed stays under the value bound or stops at it.
    assert_bound(
        "{{ (range(100000)|list * 10)|tojson(indent=64) }}",
        "value length",
    );
}

#[test]
fn long_renderings_and_loops_stop() {
    // 1 GB of output.
    assert_bound(
        "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}",
        "output length",
    );
    // Raw text counts too.
    assert_bound(
        &format!(
            "{{% for i in range(100000) %}}{}{{% endfor %}}",
            "y".repeat(1000)
        ),
        "output length",
    );
    // Nested loops that would run 10^10 iterations.
    assert_bound(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "fuel",
    );
    // Unbounded macro recursion.
    assert_bound(
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "recursion",
    );
}

#[test]
fn limits_are_configurable_and_derived_from_the_context() {
    let t = ChatTemplate::new("{% for m in messages %}{{ m.content }}{% endfor %}")
        .unwrap()
        .with_limits(TemplateLimits::for_context(1));
    let long = ChatMessage::new("user", "z".repeat(100 << 10));
    match t.render(&[long], false, None, None, &serde_json::Value::Null) {
        Err(Error::TemplateLimit {
            bound: "output length",
            limit,
        }) => assert_eq!(limit, 64 << 10),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ordinary_operations_keep_their_meaning() {
    let src =
        "{{ 1 + 2 }} {{ 2.5 + 1 }} {{ 'a' + 'b' }} {{ 'ab' ~ 3 }} {{ ([1] + [2, 3])|length }} \
               {{ 3 * 4 }} {{ 'ab' * 2 }} {{ ([0] * 3)|join(',') }} {{ [1, [2, 3]]|tojson }} \
               {{ 'a-b'|replace('-', '+') }} {{ 'x{}'.format(1) }} {{ '%s=%d'|format('n', 5) }} \
               {{ 'a\nb'|indent(2) }} {{ [1, 2, 3, 4, 5]|batch(2)|list|length }} {{ true + 1 }}";
    assert_eq!(
        render(src).unwrap(),
        "3 3.5 ab ab3 3 12 abab 0,0,0 [1, [2, 3]] a+b x1 n=5 a\n  b 3 2"
    );
}

#[test]
fn the_reserved_prefix_is_refused() {
    assert!(matches!(
        ChatTemplate::new("{% macro __zoo_concat(a, b) %}{% endmacro %}{{ 'a' ~ 'b' }}"),
        Err(Error::ChatTemplate(_))
    ));
}

#[test]
fn source_nesting_past_the_parser_limit_is_a_syntax_error() {
    let deep = format!("{{{{ {}1{} }}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        ChatTemplate::new(deep),
        Err(Error::ChatTemplate(_))
    ));
    // A long operator chain (a deep tree for the compiler) compiles on the rendering thread.
    let chain = vec!["'a'"; 200_000].join("~");
    let t = ChatTemplate::new(format!("{{{{ ({chain})|length }}}}")).unwrap();
    assert_eq!(
        t.render(&[], false, None, None, &serde_json::Value::Null)
            .unwrap(),
        "200000"
    );
    // Sources over 1 MiB are refused before parsing.
    assert!(matches!(
        ChatTemplate::new("x".repeat((1 << 20) + 1)),
        Err(Error::TemplateLimit {
            bound: "source length",
            ..
        })
    ));
}
