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

/// The log-probability `model` gives each prompt token after the ones before it (teacher
/// forced, one forward pass over the whole prompt).
pub fn prompt_logprobs(model: &thinkbench::model::Model, prompt: &[u32]) -> Vec<f32> {
    let _g = tch::no_grad_guard();
    let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let ids = tch::Tensor::from_slice(&ids).view([1, -1]);
    let mut cache = model.new_cache();
    let logits = model.forward(&ids, &mut cache, &mut thinkbench::model::NoProbe, true);
    let n = prompt.len() as i64 - 1;
    let lp = logits
        .to_kind(tch::Kind::Float)
        .log_softmax(-1, tch::Kind::Float)
        .narrow(1, 0, n)
        .gather(2, &ids.narrow(1, 1, n).unsqueeze(-1), false);
    Vec::<f32>::try_from(lp.flatten(0, -1)).unwrap()
}

/// A quantized model's prompt through the integer prefill (x rounded to 8 bits per block of 32,
/// as llama.cpp does; the products themselves are checked to their bound in `model::quant`)
/// stays near the exact prefill: every prompt token's log-probability within `max_tol`, and
/// within `mean_tol` on average. A wrong row, block, bias or padding in the integer path moves
/// them by whole nats everywhere.
pub fn assert_integer_prefill_close(
    model: &thinkbench::model::Model,
    prompt: &[u32],
    (max_tol, mean_tol): (f32, f32),
    what: &str,
) {
    use thinkbench::model::qlinear::{with_prefill, Prefill};
    let exact = with_prefill(Prefill::Exact, || prompt_logprobs(model, prompt));
    let integer = with_prefill(Prefill::Int8, || prompt_logprobs(model, prompt));
    let deltas: Vec<f32> = exact
        .iter()
        .zip(&integer)
        .map(|(a, b)| (a - b).abs())
        .collect();
    let worst = deltas.iter().copied().fold(0.0f32, f32::max);
    let mean = deltas.iter().sum::<f32>() / deltas.len() as f32;
    eprintln!("{what}: integer prefill: |Δ logprob| max {worst:.2e}, mean {mean:.2e}");
    assert!(
        worst <= max_tol && mean <= mean_tol,
        "{what}: integer prefill moves the prompt's log-probs by {worst} at most, {mean} on average"
    );
}

/// How far the integer prefill may move the prompt's log-probabilities from the exact ones
/// (max, mean), in nats. The random and tiny models here are sharper than trained ones (the
/// built-in model's Q4_0 moves them by 0.63 at most and 0.10 on average, exactly as much as the
/// float product of x rounded the same way in libtorch does); broken plumbing gives nats.
pub const INTEGER_PREFILL_TOL: (f32, f32) = (1.0, 0.2);
