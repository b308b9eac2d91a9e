//! Parity with Hugging Face transformers 5.24 on tiny random checkpoints of every architecture
//! (built and recorded by scripts/make_fixtures.py): greedy tokens, top-k logprobs (f32,
//! tolerance 2e-3) and the MoE routing of every prompt token. Also: decoding with the KV cache
//! equals recomputing everything from scratch.

use std::sync::atomic::AtomicBool;

use tch::{Device, Kind, Tensor};
use thinkbench::model::{DType, Model, NoProbe};
use thinkbench::runtime::{generate, GenerateRequest, SamplingParams};

use crate::common::*;

const LOGPROB_TOL: f64 = 2e-3;

fn compare_top(what: &str, ours: &[(u32, f32)], theirs: &[(u32, f64)]) {
    assert_eq!(
        ours.iter().map(|t| t.0).collect::<Vec<_>>(),
        theirs.iter().map(|t| t.0).collect::<Vec<_>>(),
        "{what}: top ids differ\n ours   {ours:?}\n theirs {theirs:?}"
    );
    for (o, t) in ours.iter().zip(theirs) {
        assert!(
            (o.1 as f64 - t.1).abs() <= LOGPROB_TOL,
            "{what}: logprob of {} is {} vs transformers {}",
            o.0,
            o.1,
            t.1
        );
    }
}

fn greedy_request(case: &Case) -> GenerateRequest {
    GenerateRequest {
        max_new_tokens: case.generated.len(),
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        top_logprobs: case.generated[0].top.len(),
        trace_routing: true,
        ..GenerateRequest::new(case.prompt_ids.clone())
    }
}

#[test]
fn greedy_tokens_logprobs_and_routing_match_transformers() {
    for dir in fixture_models() {
        let fx = name(&dir);
        let expected = load_expected(&dir);
        let model =
            Model::load(&dir, DType::F32, test_device()).unwrap_or_else(|e| panic!("{fx}: {e}"));
        assert_eq!(model.config.model_type.name(), expected.model_type, "{fx}");
        let is_moe = !model.moe_layers().is_empty();
        for (ci, case) in expected.cases.iter().enumerate() {
            let what = format!("{fx} case {ci}");
            let gen = generate(
                &model,
                None,
                &greedy_request(case),
                &AtomicBool::new(false),
                &mut |_| {},
            )
            .unwrap();
            let c = &gen.completions[0];
            let ours: Vec<u32> = c.tokens.iter().map(|t| t.id).collect();
            let theirs: Vec<u32> = case.generated.iter().map(|t| t.id).collect();
            assert_eq!(ours, theirs, "{what}: greedy tokens");
            for (step, (o, t)) in c.tokens.iter().zip(&case.generated).enumerate() {
                compare_top(&format!("{what} step {step}"), &o.top, &t.top);
            }
            // Routing of every prompt token, every MoE layer; pairs compared by expert id.
            assert_eq!(
                is_moe,
                !case.prompt_routing.is_empty(),
                "{what}: routing presence"
            );
            if is_moe {
                assert_eq!(gen.prompt.len(), case.prompt_routing.len(), "{what}");
                for (pos, (o, t)) in gen.prompt.iter().zip(&case.prompt_routing).enumerate() {
                    assert_eq!(
                        o.routing.len(),
                        t.len(),
                        "{what} token {pos}: MoE layer count"
                    );
                    for (ol, tl) in o.routing.iter().zip(t) {
                        assert_eq!(ol.layer, tl.layer, "{what} token {pos}");
                        let mut pairs: Vec<(u32, f32)> = ol
                            .experts
                            .iter()
                            .copied()
                            .zip(ol.weights.iter().copied())
                            .collect();
                        pairs.sort_by_key(|p| p.0);
                        let ids: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                        assert_eq!(
                            ids, tl.experts,
                            "{what} token {pos} layer {}: experts",
                            tl.layer
                        );
                        for (p, w) in pairs.iter().zip(&tl.weights) {
                            assert!(
                                (p.1 as f64 - w).abs() <= 1e-4,
                                "{what} token {pos} layer {} expert {}: weight {} vs {w}",
                                tl.layer,
                                p.0,
                                p.1
                            );
                        }
                    }
                }
                // generated tokens carry routing for every MoE layer too
                assert!(
                    c.tokens
                        .iter()
                        .all(|t| t.routing.len() == model.moe_layers().len()),
                    "{what}: generated routing"
                );
            }
        }
    }
}

fn log_softmax_rows(logits: &Tensor) -> Vec<Vec<f32>> {
    let l = logits
        .squeeze_dim(0)
        .log_softmax(-1, Kind::Float)
        .to_device(Device::Cpu);
    (0..l.size()[0])
        .map(|i| Vec::<f32>::try_from(l.get(i)).unwrap())
        .collect()
}

#[test]
fn prompt_logprobs_match_transformers_at_every_position() {
    for dir in fixture_models() {
        let fx = name(&dir);
        let expected = load_expected(&dir);
        let model = Model::load(&dir, DType::F32, test_device()).unwrap();
        for (ci, case) in expected.cases.iter().enumerate() {
            if case.prompt_logits_top.is_empty() {
                continue;
            }
            let ids: Vec<i64> = case.prompt_ids.iter().map(|&i| i as i64).collect();
            let _g = tch::no_grad_guard();
            let mut cache = model.new_cache();
            let logits = model.forward(
                &Tensor::from_slice(&ids)
                    .view([1, -1])
                    .to_device(model.device),
                &mut cache,
                &mut NoProbe,
                true,
            );
            let rows = log_softmax_rows(&logits);
            for (pos, want) in case.prompt_logits_top.iter().enumerate() {
                let mut order: Vec<usize> = (0..rows[pos].len()).collect();
                order.sort_by(|a, b| rows[pos][*b].total_cmp(&rows[pos][*a]));
                let ours: Vec<(u32, f32)> = order
                    .iter()
                    .take(want.len())
                    .map(|&i| (i as u32, rows[pos][i]))
                    .collect();
                compare_top(
                    &format!("{fx} case {ci} prompt position {pos}"),
                    &ours,
                    want,
                );
            }
        }
    }
}

/// Decoding token by token through the cache gives the same distributions as one forward pass
/// over the whole sequence (for MLA this also checks the absorbed decode path against the
/// expanded prefill path).
#[test]
fn kv_cache_decoding_equals_full_recomputation() {
    for dir in fixture_models() {
        let fx = name(&dir);
        let expected = load_expected(&dir);
        let model = Model::load(&dir, DType::F32, test_device()).unwrap();
        let case = &expected.cases[expected.cases.len() - 1];
        let mut seq: Vec<i64> = case.prompt_ids.iter().map(|&i| i as i64).collect();
        seq.extend(case.generated.iter().map(|t| t.id as i64));
        let _g = tch::no_grad_guard();
        let full = log_softmax_rows(
            &model.forward(
                &Tensor::from_slice(&seq)
                    .view([1, -1])
                    .to_device(model.device),
                &mut model.new_cache(),
                &mut NoProbe,
                true,
            ),
        );
        // prefill half, then one token at a time
        let split = case.prompt_ids.len() / 2;
        let mut cache = model.new_cache();
        let mut stepwise = log_softmax_rows(
            &model.forward(
                &Tensor::from_slice(&seq[..split])
                    .view([1, -1])
                    .to_device(model.device),
                &mut cache,
                &mut NoProbe,
                true,
            ),
        );
        for &id in &seq[split..] {
            let l = model.forward(
                &Tensor::from_slice(&[id])
                    .view([1, 1])
                    .to_device(model.device),
                &mut cache,
                &mut NoProbe,
                true,
            );
            stepwise.extend(log_softmax_rows(&l));
        }
        assert_eq!(full.len(), stepwise.len());
        for (pos, (a, b)) in full.iter().zip(&stepwise).enumerate() {
            let max = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                max < 1e-4,
                "{fx} position {pos}: cached and recomputed logprobs differ by {max}"
            );
        }
    }
}

/// Several completions drawn together from one prefilled prompt give, row for row, exactly what
/// drawing each alone with that row's seed gives (the batch shares the prompt's cache).
#[test]
fn batched_rows_equal_single_rows() {
    let dir = models_dir().join("deepseek_v3_qlora");
    let model = Model::load(&dir, DType::F32, test_device()).unwrap();
    let sampling = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        seed: 11,
        ..SamplingParams::default()
    };
    let req = GenerateRequest {
        max_new_tokens: 6,
        sampling: sampling.clone(),
        ignore_eos: true,
        n: 3,
        ..GenerateRequest::new(vec![5, 9, 13, 2])
    };
    let batch = generate(&model, None, &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(batch.completions.len(), 3);
    let mut distinct = std::collections::HashSet::new();
    for row in 0..3 {
        let seed = thinkbench::runtime::sampling::row_seed(11, row);
        let single = GenerateRequest {
            n: 1,
            sampling: SamplingParams {
                seed,
                ..sampling.clone()
            },
            ..req.clone()
        };
        let alone = generate(&model, None, &single, &AtomicBool::new(false), &mut |_| {}).unwrap();
        let (b, a) = (&batch.completions[row], &alone.completions[0]);
        assert_eq!(b.ids(), a.ids(), "row {row}");
        for (x, y) in b.tokens.iter().zip(&a.tokens) {
            assert!(
                (x.logprob - y.logprob).abs() < 1e-4,
                "row {row}: {} vs {}",
                x.logprob,
                y.logprob
            );
            assert_eq!(
                x.routing.iter().map(|r| &r.experts).collect::<Vec<_>>(),
                y.routing.iter().map(|r| &r.experts).collect::<Vec<_>>()
            );
        }
        distinct.insert(b.ids());
    }
    assert!(
        distinct.len() > 1,
        "rows of a batch should differ at temperature 1"
    );
}
