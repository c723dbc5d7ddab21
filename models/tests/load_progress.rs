//! `LoadOptions::progress`: the events `load` reports while it reads a checkpoint, checked
//! against counts taken from the files themselves (a safetensors header parsed here, the GGUF
//! header's tensor count and the fixture script's record of the tensors).

mod common;

use mlx_models::load::{load, LoadOptions, ProgressEvent, ProgressHook};
use mlx_rs::Device;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A hook that records every event, and the events.
fn recording() -> (ProgressHook, Arc<Mutex<Vec<ProgressEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let hook = ProgressHook::new(move |e: &ProgressEvent| sink.lock().unwrap().push(e.clone()));
    (hook, events)
}

/// Loads `model` on the CPU with a recording hook; returns the events.
fn load_recording(model: &Path) -> Vec<ProgressEvent> {
    let (hook, events) = recording();
    let options = LoadOptions {
        device: Device::cpu(),
        progress: Some(hook),
        ..LoadOptions::default()
    };
    load(model.to_str().unwrap(), &options).unwrap();
    let events = events.lock().unwrap().clone();
    events
}

/// The events are `ReadStart`, one `ReadProgress` per tensor (counting up by one, bytes never
/// decreasing, the totals of `ReadStart` throughout, the last one at the totals), `ReadDone`;
/// no download (a local path). Returns the totals.
fn check_sequence(events: &[ProgressEvent]) -> (u64, u64) {
    let Some(ProgressEvent::ReadStart {
        total_tensors,
        total_bytes,
    }) = events.first().cloned()
    else {
        panic!("first event: {:?}", events.first())
    };
    assert_eq!(
        events.last(),
        Some(&ProgressEvent::ReadDone {
            total_tensors,
            total_bytes
        })
    );
    let steps = &events[1..events.len() - 1];
    assert_eq!(steps.len() as u64, total_tensors, "one event per tensor");
    let mut last_bytes = 0;
    for (i, event) in steps.iter().enumerate() {
        match *event {
            ProgressEvent::ReadProgress {
                done_tensors,
                total_tensors: t,
                done_bytes,
                total_bytes: b,
            } => {
                assert_eq!(done_tensors, i as u64 + 1, "{event:?}");
                assert!(done_bytes >= last_bytes, "{event:?} after {last_bytes}");
                assert!(done_bytes <= total_bytes, "{event:?}");
                assert_eq!((t, b), (total_tensors, total_bytes), "{event:?}");
                last_bytes = done_bytes;
            }
            ref other => panic!("event {i}: {other:?}"),
        }
    }
    assert_eq!(last_bytes, total_bytes, "the last step reaches the total");
    (total_tensors, total_bytes)
}

/// A HF folder (one `model.safetensors`): the totals are the header's tensor count and the
/// data section's length (the file less the 8-byte length and the JSON header: safetensors
/// data has no holes).
#[test]
fn hf_folder_reports_every_tensor_and_the_data_bytes() {
    let dir = common::fixture("load/tiny_llama_hf");
    let file = std::fs::read(dir.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap());
    let header: serde_json::Value =
        serde_json::from_slice(&file[8..8 + header_len as usize]).unwrap();
    let tensors = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .count() as u64;
    let data_bytes = file.len() as u64 - 8 - header_len;
    assert!(
        tensors > 10 && data_bytes > 100_000,
        "{tensors} {data_bytes}"
    );

    let events = load_recording(&dir);
    assert_eq!(check_sequence(&events), (tensors, data_bytes));
}

/// A GGUF file: the tensor count of its header (bytes 8..16) and of the fixture script's
/// record, and the bytes of the recorded shapes (every tensor of this file is `F32`).
#[test]
fn gguf_file_reports_every_tensor_and_the_data_bytes() {
    let path = common::fixture("load/tiny_qwen2.gguf");
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[..4], b"GGUF");
    let header_count = u64::from_le_bytes(file[8..16].try_into().unwrap());
    let record = common::json("load/tiny_qwen2.json");
    let recorded = record["tensors"].as_object().unwrap();
    let f32_bytes: u64 = recorded
        .values()
        .map(|t| {
            let shape = t["shape"].as_array().unwrap();
            4 * shape.iter().map(|d| d.as_u64().unwrap()).product::<u64>()
        })
        .sum();
    assert_eq!(recorded.len() as u64, header_count);

    let events = load_recording(&path);
    assert_eq!(check_sequence(&events), (header_count, f32_bytes));
    assert!(f32_bytes < file.len() as u64);
}

/// A clone of the options reports to the same hook; `Debug` shows the hook; the default has none.
#[test]
fn options_with_a_hook_clone_and_debug_print() {
    let (hook, events) = recording();
    let options = LoadOptions {
        device: Device::cpu(),
        progress: Some(hook),
        ..LoadOptions::default()
    };
    let copy = options.clone();
    assert!(format!("{copy:?}").contains("progress: Some(ProgressHook(..))"));
    let path = common::fixture("load/tiny_qwen2.gguf");
    load(path.to_str().unwrap(), &copy).unwrap();
    assert!(!events.lock().unwrap().is_empty());
    assert!(LoadOptions::default().progress.is_none());
}
