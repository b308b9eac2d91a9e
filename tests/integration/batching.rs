//! Continuous batching: requests with their own prompts join a running batch at any step and
//! leave it as they finish (ragged rows, each at its own position). Every request must come out
//! as it does when it runs alone — the single-request path is the one the parity tests check
//! against transformers.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use thinkbench::model::{DType, Model};
use thinkbench::runtime::generate::Generation;
use thinkbench::runtime::{generate, Decoder, GenEvent, GenerateRequest, SamplingParams};
use thinkbench::trace::FinishReason;

use crate::common::*;

fn request(prompt: Vec<u32>, max_new: usize, n: usize, seed: Option<u64>) -> GenerateRequest {
    GenerateRequest {
        max_new_tokens: max_new,
        sampling: match seed {
            None => SamplingParams::greedy(),
            Some(seed) => SamplingParams {
                temperature: 1.0,
                top_p: 0.9,
                top_k: 0,
                min_p: 0.0,
                repetition_penalty: 1.0,
                seed,
            },
        },
        ignore_eos: true,
        top_logprobs: 3,
        trace_routing: true,
        n,
        ..GenerateRequest::new(prompt)
    }
}

fn alone(model: &Model, req: &GenerateRequest) -> Generation {
    generate(model, None, req, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

fn assert_rows_match(got: &Generation, want: &Generation, what: &str) {
    assert_eq!(
        got.completions.len(),
        want.completions.len(),
        "{what}: rows"
    );
    for (r, (g, w)) in got.completions.iter().zip(&want.completions).enumerate() {
        let one = |g: &Generation, c| Generation {
            prompt: g.prompt.clone(),
            completions: vec![c],
            stats: g.stats.clone(),
        };
        assert_same_run(
            &one(got, g.clone()),
            &one(want, w.clone()),
            1e-4,
            &format!("{what} row {r}"),
        );
        assert_eq!(g.finish_reason, w.finish_reason, "{what} row {r}: finish");
    }
}

/// Requests admitted at steps 0, 0, 2 and 5 — a long and a short prompt, a sampled group of
/// three, a request that stops early — against each one run alone.
#[test]
fn ragged_batch_rows_equal_their_runs_alone() {
    for name in ["deepseek_v3_plain", "deepseek_v2_lite", "qwen3", "llama"] {
        let model = Model::load(&models_dir().join(name), DType::F32, test_device()).unwrap();
        let arrivals: Vec<(usize, GenerateRequest)> = vec![
            (
                0,
                request(vec![3, 40, 41, 42, 43, 44, 45, 46, 47], 9, 1, None),
            ),
            (0, request(vec![5, 6], 4, 1, None)),
            (2, request(vec![11, 12, 13, 14], 7, 3, Some(7))),
            (5, request(vec![20, 21, 22, 23, 24, 25], 6, 1, None)),
        ];
        let mut decoder = Decoder::new(&model, None);
        let mut done: HashMap<u64, Generation> = HashMap::new();
        let mut streamed: HashMap<(u64, usize), Vec<u32>> = HashMap::new();
        let mut finished: HashMap<(u64, usize), FinishReason> = HashMap::new();
        let mut on_event = |tag: u64, ev: GenEvent| match ev {
            GenEvent::Token { row, token } => {
                assert!(!finished.contains_key(&(tag, row)), "token after finish");
                streamed.entry((tag, row)).or_default().push(token.id);
            }
            GenEvent::Finished { row, reason } => {
                assert!(finished.insert((tag, row), reason).is_none());
            }
            GenEvent::Prompt(_) => {}
        };
        let mut step = 0;
        while done.len() < arrivals.len() {
            for (tag, (at, req)) in arrivals.iter().enumerate() {
                if *at == step {
                    decoder.admit(tag as u64, req, None, &mut on_event).unwrap();
                }
            }
            done.extend(decoder.step(&mut on_event));
            step += 1;
            assert!(step < 50, "{name}: the batch never finished");
        }
        for (tag, (_, req)) in arrivals.iter().enumerate() {
            let got = &done[&(tag as u64)];
            assert_rows_match(got, &alone(&model, req), &format!("{name} request {tag}"));
            for (r, c) in got.completions.iter().enumerate() {
                assert_eq!(
                    streamed[&(tag as u64, r)],
                    c.ids(),
                    "{name}: streamed tokens"
                );
                assert_eq!(finished[&(tag as u64, r)], c.finish_reason);
            }
        }
    }
}

/// Cancelling one request drops its rows at the next step; the others finish unchanged.
#[test]
fn a_cancelled_request_leaves_the_batch_and_the_rest_finish_unchanged() {
    let model = Model::load(
        &models_dir().join("deepseek_v3_plain"),
        DType::F32,
        test_device(),
    )
    .unwrap();
    let keep = request(vec![3, 4, 5, 6, 7], 8, 1, None);
    let drop = request(vec![9, 10, 11], 8, 2, Some(3));
    let mut decoder = Decoder::new(&model, None);
    let mut on_event = |_: u64, _: GenEvent| {};
    decoder.admit(1, &keep, None, &mut on_event).unwrap();
    decoder.admit(2, &drop, None, &mut on_event).unwrap();
    let mut done: HashMap<u64, Generation> = HashMap::new();
    done.extend(decoder.step(&mut on_event));
    done.extend(decoder.step(&mut on_event));
    decoder.cancel(2);
    done.extend(decoder.step(&mut on_event));
    let cancelled = &done[&2];
    assert!(cancelled
        .completions
        .iter()
        .all(|c| c.finish_reason == FinishReason::Cancelled && c.tokens.len() == 2));
    assert_eq!(decoder.live_rows(), 1);
    while decoder.is_busy() {
        done.extend(decoder.step(&mut on_event));
    }
    assert_rows_match(&done[&1], &alone(&model, &keep), "kept request");
}

/// Requests admitted together share one prefill of their left-padded prompts; each still comes
/// out as it does alone, prompt routing included.
#[test]
fn requests_prefilled_together_equal_their_runs_alone() {
    for name in ["deepseek_v3_plain", "deepseek_v2_lite", "qwen3", "llama"] {
        let model = Model::load(&models_dir().join(name), DType::F32, test_device()).unwrap();
        let reqs = [
            request(vec![3, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49], 6, 1, None),
            request(vec![5, 6], 5, 2, Some(9)),
            request(vec![11, 12, 13, 14, 15], 0, 1, None),
            request(vec![20, 21, 22, 23], 7, 1, None),
        ];
        let joint: Vec<(u64, &GenerateRequest)> = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64, r))
            .collect();
        let mut decoder = Decoder::new(&model, None);
        let mut on_event = |_: u64, _: GenEvent| {};
        decoder.admit_all(&joint, None, &mut on_event).unwrap();
        let mut done: HashMap<u64, Generation> = HashMap::new();
        while decoder.is_busy() {
            done.extend(decoder.step(&mut on_event));
        }
        for (i, req) in reqs.iter().enumerate() {
            let want = alone(&model, req);
            let got = &done[&(i as u64)];
            if req.max_new_tokens == 0 {
                assert!(got.completions.iter().all(|c| c.tokens.is_empty()));
                let experts = |g: &Generation| -> Vec<Vec<Vec<u32>>> {
                    g.prompt
                        .iter()
                        .map(|t| t.routing.iter().map(|l| l.experts.clone()).collect())
                        .collect()
                };
                assert_eq!(
                    experts(got),
                    experts(&want),
                    "{name} request {i}: prompt routing"
                );
                continue;
            }
            assert_rows_match(got, &want, &format!("{name} request {i} (joint prefill)"));
        }
    }
}
