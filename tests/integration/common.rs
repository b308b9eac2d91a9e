//! Shared helpers: fixture paths and the expected.json schema written by scripts/make_fixtures.py.

use std::path::PathBuf;

use serde::Deserialize;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn models_dir() -> PathBuf {
    repo().join("tests/fixtures/models")
}

/// Every fixture model folder, sorted. Fails loudly if there are none (a test that checks nothing
/// must not pass).
pub fn fixture_models() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .expect("tests/fixtures/models exists (run `make fixtures`)")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("expected.json").exists())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixture models with expected.json");
    dirs
}

#[derive(Debug, Deserialize)]
pub struct Expected {
    pub model_type: String,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub prompt_ids: Vec<u32>,
    pub generated: Vec<ExpectedToken>,
    #[serde(default)]
    pub prompt_routing: Vec<Vec<ExpectedRouting>>,
    #[serde(default)]
    pub prompt_logits_top: Vec<Vec<(u32, f64)>>,
}

#[derive(Debug, Deserialize)]
pub struct ExpectedToken {
    pub id: u32,
    pub top: Vec<(u32, f64)>,
}

#[derive(Debug, Deserialize)]
pub struct ExpectedRouting {
    pub layer: usize,
    pub experts: Vec<u32>,
    pub weights: Vec<f64>,
}

pub fn load_expected(dir: &std::path::Path) -> Expected {
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json readable");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

pub fn name(dir: &std::path::Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// The device the engine tests run on: CPU unless `THINKBENCH_TEST_DEVICE` says otherwise
/// (`cuda`, `cuda:N`), so the same parity checks run on a GPU machine when one is at hand.
pub fn test_device() -> tch::Device {
    match std::env::var("THINKBENCH_TEST_DEVICE").as_deref() {
        Err(_) | Ok("") | Ok("cpu") => tch::Device::Cpu,
        Ok(s) => thinkbench::model::parse_device(s)
            .unwrap_or_else(|e| panic!("THINKBENCH_TEST_DEVICE={s}: {e}")),
    }
}
