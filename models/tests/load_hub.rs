//! `--model <hub id>` offline: a model already in the Hugging Face cache (the cache layout
//! `models--<org>--<name>/{refs/main, snapshots/<rev>/...}`) is found without network when
//! `HF_HUB_OFFLINE=1`, through `HF_HUB_CACHE`. (One test per binary: it sets process-wide
//! environment variables.)

mod common;

use mlx_models::load::{load, LoadOptions};
use mlx_models::Error;
use mlx_rs::Device;

#[test]
fn a_cached_hub_id_loads_offline_and_an_uncached_one_says_how_to_pass_a_path() {
    let cache = std::env::temp_dir().join(format!("mlx-zoo-hub-cache-{}", std::process::id()));
    let repo = cache.join("models--test-org--tiny-llama");
    let revision = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(revision);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), revision).unwrap();
    let source = common::fixture("load/tiny_llama_hf");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, snapshot.join(path.file_name().unwrap())).unwrap();
    }
    // The only test of this binary: no other thread reads the environment concurrently.
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let options = LoadOptions {
        device: Device::cpu(),
        ..LoadOptions::default()
    };
    let loaded = load("test-org/tiny-llama", &options).unwrap();
    assert_eq!(loaded.config.model_type, "llama");
    assert_eq!(loaded.config.num_hidden_layers, 2);
    assert!(loaded.source.contains("test-org/tiny-llama") || loaded.source.contains(revision));

    match load("test-org/not-cached", &options) {
        Err(Error::Hub(message)) => {
            assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
            assert!(message.contains("local folder"), "{message}");
        }
        Err(other) => panic!("expected Error::Hub, got {other}"),
        Ok(_) => panic!("an uncached id loaded offline"),
    }
    std::fs::remove_dir_all(&cache).unwrap();
}
