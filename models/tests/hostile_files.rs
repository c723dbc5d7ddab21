//! Hostile model files (issue 10), one test per class: each ends in the typed error named in
//! the manifest, before any tensor data is read, and leaves the file as it was. The files come
//! from scripts/fixtures/hostile_files.py; the large ones are extended here with a sparse hole,
//! as an attacker would ship them.

mod common;

use mlx_models::load::{load, LoadOptions, MemoryBudget};
use mlx_models::Error;
use mlx_rs::Device;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A fresh temporary folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlx_zoo_hostile_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The manifest entry of `file`: (expected error variant, length to extend to).
fn manifest(file: &str) -> (String, Option<u64>) {
    let m = common::json("hostile/manifest.json");
    let e = m
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == file)
        .unwrap_or_else(|| panic!("{file} is not in the manifest"));
    (
        e["expect"].as_str().unwrap().to_string(),
        e["extend_to"].as_u64(),
    )
}

fn stage(dir: &Path, file: &str) -> PathBuf {
    common::stage_hostile(dir, file)
}

fn cpu() -> LoadOptions {
    LoadOptions {
        device: Device::cpu(),
        ..Default::default()
    }
}

/// The variant name of an error (`Gguf`, `ShapeMismatch`, ...).
fn variant(err: &Error) -> String {
    format!("{err:?}")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap()
        .to_string()
}

/// Loads `path` and checks the error against the manifest's entry for `file`.
fn assert_refused(path: &Path, file: &str, options: &LoadOptions) -> Error {
    let (expect, _) = manifest(file);
    let err = match load(path.to_str().unwrap(), options) {
        Ok(_) => panic!("{file} loaded"),
        Err(e) => e,
    };
    assert_eq!(variant(&err), expect, "{file}: {err}");
    err
}

/// What a write anywhere in a sparse file would change: its length, its allocated blocks
/// (writing into the hole, even zeros, allocates), its modification time, and the bytes that
/// are not hole (the header, in the first MiB). Equal fingerprints mean equal contents.
fn fingerprint(path: &Path) -> (u64, u64, std::time::SystemTime, Vec<u8>) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    let mut head = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .take(1 << 20)
        .read_to_end(&mut head)
        .unwrap();
    (meta.len(), meta.blocks(), meta.modified().unwrap(), head)
}

/// MLX's own loader overwrote the first 4 GiB of this file (2^33 weights) or crashed (2^32):
/// now a typed error from the header check, and the file is byte-for-byte unchanged.
#[test]
fn q4_0_tensors_of_2p32_and_2p33_weights_are_refused_and_the_file_is_untouched() {
    let dir = scratch("q4_0");
    for file in ["q4_0_2p33.gguf", "q4_0_2p32.gguf"] {
        let path = stage(&dir, file);
        let before = fingerprint(&path);
        assert!(before.1 * 512 < 1 << 20, "{file} should be sparse");
        let err = assert_refused(&path, file, &cpu());
        assert!(err.to_string().contains("elements exceed"), "{err}");
        assert_eq!(fingerprint(&path), before, "{file} changed on disk");
        std::fs::remove_file(&path).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// 36 GiB of well-formed F32 tensors: the memory budget refuses them, naming both figures.
#[test]
fn tensors_over_the_memory_budget_are_refused_before_reading() {
    let dir = scratch("budget");
    let file = "f32_36gib.gguf";
    let path = stage(&dir, file);
    let options = LoadOptions {
        memory_budget: MemoryBudget::Bytes(16 << 30),
        ..cpu()
    };
    match assert_refused(&path, file, &options) {
        Error::MemoryBudget { needed, available } => {
            assert_eq!(available, 16 << 30);
            // Nine 32768 x 32768 F32 matrices, three norms, and the KV cache.
            assert!(needed >= 9 * (4u64 << 30), "{needed}");
        }
        other => panic!("{other}"),
    }
    // With the default budget (what the system has available), on machines with less.
    if mlx_models::load::budget::available_memory().is_some_and(|a| a < 36 << 30) {
        assert_refused(&path, file, &cpu());
    }
    // The override skips the check (and then the data would be read): not exercised here.
    std::fs::remove_dir_all(&dir).ok();
}

/// Tensors contradicting the config are refused from the headers, GGUF and safetensors alike.
#[test]
fn shapes_contradicting_the_config_are_refused_before_reading() {
    let dir = scratch("contradicting");
    let path = stage(&dir, "contradicting.gguf");
    match assert_refused(&path, "contradicting.gguf", &cpu()) {
        Error::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "model.embed_tokens.weight");
            assert_eq!((expected, found), (vec![32000, 64], vec![32000, 4096]));
        }
        other => panic!("{other}"),
    }
    stage(&dir, "hf_contradicting/config.json");
    stage(&dir, "hf_contradicting/model.safetensors");
    assert_refused(
        &dir.join("hf_contradicting"),
        "hf_contradicting/model.safetensors",
        &cpu(),
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn overlapping_and_misaligned_tensor_data_are_errors() {
    let dir = scratch("layout");
    for (file, words) in [
        ("overlap.gguf", "overlap"),
        ("misaligned.gguf", "alignment"),
    ] {
        let err = assert_refused(&stage(&dir, file), file, &cpu());
        assert!(err.to_string().contains(words), "{file}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_safetensors_dimension_of_2p32_plus_32_is_refused() {
    let dir = scratch("dim");
    let file = "dim_2p32_plus_32.safetensors";
    let err =
        mlx_models::load::safetensors_file::SafetensorsFile::open(&stage(&dir, file)).unwrap_err();
    assert_eq!(variant(&err), manifest(file).0);
    assert!(err.to_string().contains("4294967328"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn nan_rope_base_and_negative_epsilon_name_the_field() {
    let dir = scratch("config_values");
    for (file, field) in [
        ("nan_rope_base.gguf", "llama.rope.freq_base"),
        (
            "negative_eps.gguf",
            "llama.attention.layer_norm_rms_epsilon",
        ),
    ] {
        match assert_refused(&stage(&dir, file), file, &cpu()) {
            Error::ConfigValue { field: f, .. } => assert_eq!(f, field),
            other => panic!("{other}"),
        }
    }
    stage(&dir, "hf_negative_eps/config.json");
    match assert_refused(
        &dir.join("hf_negative_eps"),
        "hf_negative_eps/config.json",
        &cpu(),
    ) {
        Error::ConfigValue { field, .. } => assert_eq!(field, "rms_norm_eps"),
        other => panic!("{other}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A copy of the tiny Hugging Face folder fixture in `dir`.
fn tiny_hf_folder(dir: &Path) -> PathBuf {
    let src = common::fixture("load/tiny_llama_hf");
    let dest = dir.join("tiny_llama_hf");
    std::fs::create_dir_all(&dest).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
    dest
}

/// `/dev/zero` behind a model file's name, and a FIFO named `config.json`: refused at once
/// (the FIFO is opened without blocking), not read forever.
#[test]
fn special_files_are_refused_without_reading_them() {
    let dir = scratch("special");
    for name in ["config.json", "tokenizer.json", "chat_template.jinja"] {
        let folder = tiny_hf_folder(&dir.join(name));
        std::fs::remove_file(folder.join(name)).ok();
        std::os::unix::fs::symlink("/dev/zero", folder.join(name)).unwrap();
        match load(folder.to_str().unwrap(), &cpu()) {
            Err(Error::NotRegularFile { path }) => assert!(path.ends_with(name)),
            Err(other) => panic!("{name}: {other}"),
            Ok(_) => panic!("{name}: loaded"),
        }
    }
    let folder = tiny_hf_folder(&dir.join("fifo"));
    std::fs::remove_file(folder.join("config.json")).unwrap();
    let fifo = std::ffi::CString::new(folder.join("config.json").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(matches!(
        load(folder.to_str().unwrap(), &cpu()),
        Err(Error::NotRegularFile { .. })
    ));
    let gguf = dir.join("zero.gguf");
    std::os::unix::fs::symlink("/dev/zero", &gguf).unwrap();
    assert!(matches!(
        load(gguf.to_str().unwrap(), &cpu()),
        Err(Error::NotRegularFile { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}

/// Read-only model files load (MLX's reader opened them read-write). As root, file modes do
/// not stop a read-write open; `files::tests` checks the descriptors are opened read-only.
#[test]
fn read_only_gguf_and_hf_folder_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("read_only");
    let gguf = dir.join("tiny_qwen2.gguf");
    std::fs::copy(common::fixture("load/tiny_qwen2.gguf"), &gguf).unwrap();
    let folder = tiny_hf_folder(&dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.push(gguf.clone());
    for p in &paths {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).unwrap();
    for model in [&gguf, &folder] {
        let loaded = load(model.to_str().unwrap(), &cpu()).unwrap();
        assert!(["llama", "qwen2"].contains(&loaded.config.model_type.as_str()));
    }
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
