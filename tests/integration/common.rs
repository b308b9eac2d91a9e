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

/// `n` greedy tokens of `model` from `prompt`, with the top-5 log-probabilities and the routing
/// of every prompt and generated token.
pub fn greedy_traced(
    model: &thinkbench::model::Model,
    prompt: &[u32],
    n: usize,
) -> thinkbench::runtime::generate::Generation {
    let req = thinkbench::runtime::GenerateRequest {
        max_new_tokens: n,
        sampling: thinkbench::runtime::SamplingParams::greedy(),
        ignore_eos: true,
        top_logprobs: 5,
        trace_routing: true,
        ..thinkbench::runtime::GenerateRequest::new(prompt.to_vec())
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    thinkbench::runtime::generate(model, None, &req, &cancel, &mut |_| {}).unwrap()
}

/// Two runs of the same prompt agree: the same tokens, every log-probability within `tol`, and
/// the same experts in every layer for every prompt and generated token.
pub fn assert_same_run(
    got: &thinkbench::runtime::generate::Generation,
    want: &thinkbench::runtime::generate::Generation,
    tol: f32,
    what: &str,
) {
    let experts = |r: &[thinkbench::trace::LayerRouting]| {
        r.iter().map(|l| l.experts.clone()).collect::<Vec<_>>()
    };
    let (g, w) = (&got.completions[0], &want.completions[0]);
    assert_eq!(g.ids(), w.ids(), "{what}: tokens");
    for (i, (a, b)) in g.tokens.iter().zip(&w.tokens).enumerate() {
        assert!(
            (a.logprob - b.logprob).abs() <= tol,
            "{what}: token {i}: logprob {} against {}",
            a.logprob,
            b.logprob
        );
        assert_eq!(
            experts(&a.routing),
            experts(&b.routing),
            "{what}: token {i} routing"
        );
    }
    assert_eq!(got.prompt.len(), want.prompt.len(), "{what}: prompt length");
    for (i, (a, b)) in got.prompt.iter().zip(&want.prompt).enumerate() {
        assert_eq!(
            experts(&a.routing),
            experts(&b.routing),
            "{what}: prompt token {i} routing"
        );
    }
}
