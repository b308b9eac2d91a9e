//! Re-scoring (`runtime::score`): a finished sequence scored in one pass gives the trace the decode
//! loop recorded while generating it, in one chunk or many.

use std::sync::atomic::AtomicBool;

use thinkbench::model::{DType, Model};
use thinkbench::runtime::{
    generate, score, GenerateRequest, SamplingParams, ScoreOptions, ScoredTrace,
};
use thinkbench::text::TextCodec;
use thinkbench::trace::{LayerRouting, TokenRecord};

use crate::common::*;

const TOL: f32 = 1e-4;

fn load(name: &str) -> (Model, TextCodec) {
    let dir = models_dir().join(name);
    (
        Model::load(&dir, DType::F32, test_device()).unwrap(),
        TextCodec::load(&dir).unwrap(),
    )
}

/// A greedy generation of 24 tokens from the fixture's first case, traced as chat would trace it.
fn greedy(m: &Model, c: &TextCodec, name: &str) -> (Vec<u32>, Vec<TokenRecord>, Vec<Vec<u32>>) {
    let prompt = load_expected(&models_dir().join(name)).cases[0]
        .prompt_ids
        .clone();
    let req = GenerateRequest {
        max_new_tokens: 24,
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        top_logprobs: 5,
        trace_routing: true,
        ..GenerateRequest::new(prompt.clone())
    };
    let out = generate(m, Some(c), &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let prompt_experts = out.prompt.iter().map(|t| experts(&t.routing)).collect();
    (prompt, out.completions[0].tokens.clone(), prompt_experts)
}

fn experts(r: &[LayerRouting]) -> Vec<u32> {
    r.iter()
        .flat_map(|l| std::iter::once(l.layer as u32).chain(l.experts.iter().copied()))
        .collect()
}

fn assert_same_trace(what: &str, got: &ScoredTrace, want: &[TokenRecord], prompt: &[Vec<u32>]) {
    assert_eq!(got.tokens.len(), want.len(), "{what}");
    let got_prompt: Vec<Vec<u32>> = got.prompt.iter().map(|t| experts(&t.routing)).collect();
    assert_eq!(got_prompt, prompt, "{what}: prompt routing");
    for (i, (g, w)) in got.tokens.iter().zip(want).enumerate() {
        let at = format!("{what}: token {i} (id {})", w.id);
        assert_eq!(g.id, w.id, "{at}");
        assert_eq!(g.phase, w.phase, "{at}");
        assert!(
            (g.logprob - w.logprob).abs() < TOL,
            "{at}: logprob {} vs {}",
            g.logprob,
            w.logprob
        );
        assert!(
            (g.entropy - w.entropy).abs() < TOL,
            "{at}: entropy {} vs {}",
            g.entropy,
            w.entropy
        );
        let ids = |t: &TokenRecord| t.top.iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(ids(g), ids(w), "{at}: top-k ids");
        for (a, b) in g.top.iter().zip(&w.top) {
            assert!(
                (a.1 - b.1).abs() < TOL,
                "{at}: top logprob {} vs {}",
                a.1,
                b.1
            );
        }
        assert_eq!(experts(&g.routing), experts(&w.routing), "{at}: routing");
        for (a, b) in g.routing.iter().zip(&w.routing) {
            for (x, y) in a.weights.iter().zip(&b.weights) {
                assert!(
                    (x - y).abs() < TOL,
                    "{at}: layer {} weight {x} vs {y}",
                    a.layer
                );
            }
        }
    }
    let text: String = got.tokens.iter().map(|t| t.text.as_str()).collect();
    let want_text: String = want.iter().map(|t| t.text.as_str()).collect();
    assert!(
        text.starts_with(&want_text),
        "{what}: text {text:?} vs {want_text:?}"
    );
}

fn scored_equals_generated(name: &str, moe: bool) {
    let (m, c) = load(name);
    assert_eq!(!m.moe_layers().is_empty(), moe, "{name}: fixture kind");
    let (prompt, want, prompt_routing) = greedy(&m, &c, name);
    let ids: Vec<u32> = want.iter().map(|t| t.id).collect();
    let whole = score(&m, Some(&c), &prompt, &ids, &ScoreOptions::default()).unwrap();
    assert_same_trace(&format!("{name} one pass"), &whole, &want, &prompt_routing);
    if moe {
        assert!(whole
            .tokens
            .iter()
            .all(|t| t.routing.len() == m.moe_layers().len()));
    }
    // Chunks that split the prompt, end exactly at its last token, and cut the completion.
    for chunk in [1, 3, prompt.len(), 7] {
        let opts = ScoreOptions {
            chunk: Some(chunk),
            ..ScoreOptions::default()
        };
        let chunked = score(&m, Some(&c), &prompt, &ids, &opts).unwrap();
        assert_same_trace(
            &format!("{name} chunk {chunk}"),
            &chunked,
            &want,
            &prompt_routing,
        );
        assert_same_trace(
            &format!("{name} chunk {chunk} vs one pass"),
            &chunked,
            &whole.tokens,
            &prompt_routing,
        );
    }
}

#[test]
fn a_scored_greedy_generation_is_its_recorded_trace_moe() {
    scored_equals_generated("deepseek_v3_qlora", true);
}

#[test]
fn a_scored_greedy_generation_is_its_recorded_trace_dense() {
    scored_equals_generated("qwen2", false);
}

#[test]
fn scoring_checks_its_input() {
    let (m, c) = load("qwen2");
    let opts = ScoreOptions::default();
    assert!(score(&m, Some(&c), &[], &[1], &opts).is_err());
    let vocab = m.vocab_size() as u32;
    assert!(score(&m, Some(&c), &[1, 2], &[vocab], &opts).is_err());
    // Nothing to score: the prompt alone, with no tokens.
    let t = score(&m, Some(&c), &[1, 2], &[], &opts).unwrap();
    assert_eq!((t.prompt.len(), t.tokens.len()), (2, 0));
}
