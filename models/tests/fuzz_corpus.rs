//! Replays the committed fuzz corpora (`fuzz/corpus-min/<target>`: what cargo-fuzz grew from
//! `fuzz/seeds`, merged to the inputs that add coverage), the seeds, and the inputs that once
//! failed or ran slowly (`fuzz/regressions/<target>`) through the fuzz targets' bodies: none
//! may panic. Runs in the ordinary test suite, without libFuzzer.

#[path = "../../fuzz/common/bodies.rs"]
mod bodies;

use std::path::PathBuf;

fn replay(target: &str, body: fn(&[u8])) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for dir in ["seeds", "corpus-min", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            // (A running fuzzer may replace files meanwhile.)
            let Ok(data) = std::fs::read(e.unwrap().path()) else {
                continue;
            };
            body(&data);
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for {target}");
    eprintln!("{target}: {count} inputs replayed");
}

#[test]
fn gguf_header() {
    replay("gguf_header", bodies::gguf_header);
}

#[test]
fn safetensors_header() {
    replay("safetensors_header", bodies::safetensors_header);
}

#[test]
fn config_json() {
    replay("config_json", bodies::config_json);
}

#[test]
fn gguf_tokenizer() {
    replay("gguf_tokenizer", bodies::gguf_tokenizer);
}

#[test]
fn chat_template() {
    replay("chat_template", bodies::chat_template);
}
