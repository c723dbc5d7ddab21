//! `LoadOptions::progress` on downloads: a Hub id fetched from a local stand-in for the
//! Hugging Face Hub (`HF_ENDPOINT`, plain HTTP on 127.0.0.1, serving the tiny llama fixture
//! folder the way huggingface.co answers hf-hub's ranged GETs) reports, per file downloaded,
//! `DownloadStart`, non-decreasing `DownloadProgress` up to the file's size, `DownloadDone`;
//! then the tensor reads. Loaded again from the cache, it downloads and reports nothing.
//! (One test per binary: it sets process-wide environment variables.)

mod common;

use mlx_models::load::{load, LoadOptions, ProgressEvent, ProgressHook};
use mlx_rs::Device;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `GET /<org>/<name>/resolve/main/<file>` from `dir` (with `Range: bytes=A-` or
/// `bytes=A-B`): 206 with the headers hf-hub reads (`x-repo-commit`, `etag`,
/// `content-range`), 404 for a file `dir` lacks. One request per connection.
fn serve(listener: TcpListener, dir: PathBuf, requests: Arc<Mutex<Vec<String>>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = answer(stream, &dir, &requests);
    }
}

fn answer(mut stream: TcpStream, dir: &Path, requests: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = value.trim().strip_prefix("bytes=").map(str::to_string);
            }
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    requests.lock().unwrap().push(path.clone());
    let file = path
        .rsplit_once("/resolve/main/")
        .map(|(_, f)| f.to_string());
    let bytes = file
        .as_deref()
        .filter(|f| !f.contains('/'))
        .and_then(|f| std::fs::read(dir.join(f)).ok());
    let Some(bytes) = bytes else {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    };
    let size = bytes.len();
    let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
        Some((a, b)) => (
            a.parse().unwrap_or(0),
            b.parse().map_or(size - 1, |b: usize| b.min(size - 1)),
        ),
        None => (0, size - 1),
    };
    let body = &bytes[start..=end];
    let head = format!(
        "HTTP/1.1 206 Partial Content\r\nx-repo-commit: {COMMIT}\r\netag: \"etag-{file}\"\r\n\
         content-range: bytes {start}-{end}/{size}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len(),
        file = file.unwrap_or_default(),
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)
}

/// The per-file download events, checked for order and monotony; returns each file's total.
fn downloads(events: &[ProgressEvent]) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    let mut current: Option<(String, u64, u64)> = None; // file, total, done
    for event in events {
        match event {
            ProgressEvent::DownloadStart { file, total_bytes } => {
                assert!(current.is_none(), "{event:?} inside another download");
                assert!(!totals.contains_key(file), "{file} downloaded twice");
                current = Some((file.clone(), *total_bytes, 0));
            }
            ProgressEvent::DownloadProgress {
                file,
                done_bytes,
                total_bytes,
            } => {
                let (f, total, done) = current.as_mut().expect("progress outside a download");
                assert_eq!((&*f, *total), (file, *total_bytes), "{event:?}");
                assert!(*done_bytes >= *done && *done_bytes <= *total, "{event:?}");
                *done = *done_bytes;
            }
            ProgressEvent::DownloadDone { file, total_bytes } => {
                let (f, total, done) = current.take().expect("done outside a download");
                assert_eq!((&f, total), (file, *total_bytes), "{event:?}");
                assert_eq!(done, total, "{file}: the last progress reaches the size");
                totals.insert(f, total);
            }
            ProgressEvent::ReadStart { .. } => {
                assert!(current.is_none(), "reading before {current:?} finished");
            }
            _ => {}
        }
    }
    assert!(current.is_none());
    totals
}

#[test]
fn hub_downloads_report_each_file_and_cached_loads_report_none() {
    let fixture = common::fixture("load/tiny_llama_hf");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    {
        let (dir, requests) = (fixture.clone(), Arc::clone(&requests));
        std::thread::spawn(move || serve(listener, dir, requests));
    }
    let cache = std::env::temp_dir().join(format!("mlx-zoo-hub-progress-{}", std::process::id()));
    // The only test of this binary: no other thread reads the environment concurrently.
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_ENDPOINT", &endpoint);
    for var in [
        "HF_HUB_OFFLINE",
        "HF_TOKEN",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::remove_var(var);
    }

    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let options = LoadOptions {
        device: Device::cpu(),
        progress: Some(ProgressHook::new(move |e: &ProgressEvent| {
            sink.lock().unwrap().push(e.clone())
        })),
        ..LoadOptions::default()
    };
    let loaded = load("test-org/tiny-llama", &options).unwrap();
    assert_eq!(loaded.config.num_hidden_layers, 2);

    let seen = std::mem::take(&mut *events.lock().unwrap());
    let mut expected = BTreeMap::new();
    for file in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        let size = std::fs::metadata(fixture.join(file)).unwrap().len();
        expected.insert(file.to_string(), size);
    }
    assert_eq!(downloads(&seen), expected, "{seen:?}");
    let model_bytes = expected["model.safetensors"];
    assert!(
        seen.iter()
            .filter(|e| matches!(e, ProgressEvent::DownloadProgress { file, .. } if file == "model.safetensors"))
            .count()
            > 2,
        "a {model_bytes}-byte file arrives in several chunks"
    );
    assert!(matches!(
        seen.last(),
        Some(ProgressEvent::ReadDone { total_tensors, .. }) if *total_tensors > 0
    ));
    // The files the folder lacks were asked for and answered 404.
    let asked = requests.lock().unwrap().clone();
    assert!(
        asked.iter().any(|p| p.ends_with("/chat_template.jinja")),
        "{asked:?}"
    );

    // From the cache: no download event, the reads again; the only requests are for the
    // optional files the repository lacks (never cached).
    let before = requests.lock().unwrap().len();
    load("test-org/tiny-llama", &options).unwrap();
    let again = std::mem::take(&mut *events.lock().unwrap());
    assert!(downloads(&again).is_empty(), "{again:?}");
    assert!(matches!(
        again.first(),
        Some(ProgressEvent::ReadStart { .. })
    ));
    let later = requests.lock().unwrap()[before..].to_vec();
    assert!(
        later
            .iter()
            .all(|p| p.ends_with("/chat_template.jinja")
                || p.ends_with("/model.safetensors.index.json")),
        "{later:?}"
    );
    std::fs::remove_dir_all(&cache).ok();
}
