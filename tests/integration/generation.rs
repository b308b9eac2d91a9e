//! Decode-loop behaviour: seeds, stopping, cancellation, phases, streaming text.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use thinkbench::model::{DType, Model};
use thinkbench::runtime::{generate, GenEvent, GenerateRequest, SamplingParams};
use thinkbench::text::{Phase, TextCodec};
use thinkbench::trace::FinishReason;

use crate::common::*;

fn model(name: &str) -> (Model, TextCodec) {
    let dir = models_dir().join(name);
    (
        Model::load(&dir, DType::F32, test_device()).unwrap(),
        TextCodec::load(&dir).unwrap(),
    )
}

fn sampled(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        top_k: 50,
        min_p: 0.0,
        repetition_penalty: 1.0,
        seed,
    }
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let (m, c) = model("qwen3");
    let run = |seed| {
        let req = GenerateRequest {
            max_new_tokens: 24,
            sampling: sampled(seed),
            ignore_eos: true,
            ..GenerateRequest::new(vec![3, 40, 41, 42])
        };
        generate(&m, Some(&c), &req, &AtomicBool::new(false), &mut |_| {})
            .unwrap()
            .completions[0]
            .ids()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn eos_ends_the_row_unless_ignored() {
    let (m, c) = model("llama");
    // Greedy from this prompt reaches some token; declare that token an end-of-sequence id.
    let base = GenerateRequest {
        max_new_tokens: 6,
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        ..GenerateRequest::new(vec![7, 8, 9])
    };
    let free = generate(&m, Some(&c), &base, &AtomicBool::new(false), &mut |_| {})
        .unwrap()
        .completions[0]
        .ids();
    let stop_id = free[2];
    let first = free.iter().position(|&t| t == stop_id).unwrap();
    let req = GenerateRequest {
        eos_ids: vec![stop_id],
        ignore_eos: false,
        ..base.clone()
    };
    let out = generate(&m, Some(&c), &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(out.completions[0].ids(), free[..=first].to_vec());
    assert_eq!(out.completions[0].finish_reason, FinishReason::Stop);
    let ignored = GenerateRequest {
        eos_ids: vec![stop_id],
        ..base
    };
    let out = generate(&m, Some(&c), &ignored, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(out.completions[0].ids(), free);
    assert_eq!(out.completions[0].finish_reason, FinishReason::Length);
}

#[test]
fn stop_string_ends_the_row() {
    let (m, c) = model("qwen2");
    let base = GenerateRequest {
        max_new_tokens: 12,
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        ..GenerateRequest::new(vec![11, 12, 13])
    };
    let free = generate(&m, Some(&c), &base, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let text = &free.completions[0].text;
    let toks = &free.completions[0].tokens;
    // stop on the text of the 4th token (if it has visible text), otherwise on the 5th's
    let stop_at = (3..toks.len())
        .find(|&i| !toks[i].text.trim().is_empty())
        .expect("some visible token");
    let stop = toks[stop_at].text.clone();
    let req = GenerateRequest {
        stop_strings: vec![stop.clone()],
        ..base
    };
    let out = generate(&m, Some(&c), &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let c0 = &out.completions[0];
    assert_eq!(c0.finish_reason, FinishReason::Stop);
    assert!(
        c0.text.contains(&stop),
        "{:?} should contain {stop:?}",
        c0.text
    );
    assert!(c0.tokens.len() <= stop_at + 1 && text.starts_with(&c0.text));
}

#[test]
fn cancellation_from_another_thread_stops_generation() {
    let (m, c) = model("deepseek_v3_qlora");
    let cancel = Arc::new(AtomicBool::new(false));
    let req = GenerateRequest {
        max_new_tokens: 100_000,
        sampling: sampled(1),
        ignore_eos: true,
        ..GenerateRequest::new(vec![5, 6, 7])
    };
    let flag = cancel.clone();
    let mut seen = 0usize;
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            flag.store(true, Ordering::Relaxed);
        });
        generate(&m, Some(&c), &req, &cancel, &mut |ev| {
            if let GenEvent::Token { .. } = ev {
                seen += 1;
            }
        })
        .unwrap()
    });
    assert_eq!(out.completions[0].finish_reason, FinishReason::Cancelled);
    assert!(out.completions[0].tokens.len() < 100_000);
    assert_eq!(
        seen,
        out.completions[0].tokens.len(),
        "every token was streamed as an event"
    );
}

#[test]
fn think_phase_follows_the_think_tokens() {
    let (m, c) = model("deepseek_v3_qlora");
    let (open, close) = c
        .think_ids()
        .expect("fixture tokenizer has <think> and </think>");
    // Prompt ends inside <think>: everything is thinking until a </think> id, answer after it.
    let req = GenerateRequest {
        max_new_tokens: 40,
        sampling: sampled(3),
        ignore_eos: true,
        ..GenerateRequest::new(vec![0, 5, open, 9])
    };
    let out = generate(&m, Some(&c), &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let mut inside = true;
    for t in &out.completions[0].tokens {
        let want = if inside || t.id == close {
            Phase::Think
        } else {
            Phase::Answer
        };
        assert_eq!(t.phase, want, "token {}", t.id);
        if t.id == close {
            inside = false;
        } else if t.id == open {
            inside = true;
        }
    }
    // and a prompt that never opened <think> starts in the answer phase
    let req = GenerateRequest {
        max_new_tokens: 1,
        sampling: SamplingParams::greedy(),
        ..GenerateRequest::new(vec![5, 9])
    };
    let out = generate(&m, Some(&c), &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let t = &out.completions[0].tokens[0];
    assert_eq!(
        t.phase,
        if t.id == open {
            Phase::Think
        } else {
            Phase::Answer
        }
    );
}

#[test]
fn streamed_text_equals_decoding_all_ids() {
    let (m, c) = model("qwen3");
    let req = GenerateRequest {
        max_new_tokens: 40,
        sampling: sampled(9),
        ignore_eos: true,
        ..GenerateRequest::new(vec![3, 4, 5])
    };
    let out = generate(&m, Some(&c), &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let c0 = &out.completions[0];
    let pieces: String = c0.tokens.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(c0.text, c.decode(&c0.ids()));
    assert!(c0.text.starts_with(&pieces));
}

#[test]
fn thinking_budget_closes_the_thought_with_the_end_of_think_id() {
    let (m, c) = model("deepseek_v3_qlora");
    let (open, close) = c.think_ids().unwrap();
    let req = GenerateRequest {
        max_new_tokens: 12,
        sampling: sampled(4),
        ignore_eos: true,
        think_budget: Some(5),
        ..GenerateRequest::new(vec![0, 5, open])
    };
    let out = generate(&m, Some(&c), &req, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let toks = &out.completions[0].tokens;
    let first_close = toks
        .iter()
        .position(|t| t.id == close)
        .expect("the budget closes the thought");
    assert!(
        first_close <= 5,
        "closed after at most 5 reasoning tokens, at {first_close}"
    );
    if first_close == 5 {
        assert!(toks[5].forced, "the 6th token was injected");
    }
    assert!(toks[..first_close]
        .iter()
        .all(|t| t.phase == Phase::Think && !t.forced));
    assert!(toks[first_close + 1..]
        .iter()
        .all(|t| t.phase == Phase::Answer || t.id == open));
}

#[test]
fn a_shared_prefix_is_reused_and_gives_the_same_result() {
    use thinkbench::runtime::{generate_cached, PrefixCache};
    let (m, c) = model("deepseek_v3_qlora");
    let greedy = |prompt: Vec<u32>| GenerateRequest {
        max_new_tokens: 5,
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        ..GenerateRequest::new(prompt)
    };
    let mut prefix = PrefixCache::new();
    let first = generate_cached(
        &m,
        Some(&c),
        &greedy(vec![0, 5, 6, 7]),
        &mut prefix,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    // The cache now holds the prompt and the fed generated tokens.
    assert!(prefix.ids().starts_with(&[0, 5, 6, 7]) && prefix.ids().len() >= 4 + 4);
    // Continue the conversation: the old prompt + reply + a new turn.
    let mut next: Vec<u32> = vec![0, 5, 6, 7];
    next.extend(first.completions[0].ids());
    next.extend([9, 10]);
    let reused = generate_cached(
        &m,
        Some(&c),
        &greedy(next.clone()),
        &mut prefix,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    let fresh = generate(
        &m,
        Some(&c),
        &greedy(next),
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(reused.completions[0].ids(), fresh.completions[0].ids());
    for (a, b) in reused.completions[0]
        .tokens
        .iter()
        .zip(&fresh.completions[0].tokens)
    {
        assert!((a.logprob - b.logprob).abs() < 1e-4);
    }
    // Prompt routing is reported for every prompt token, reused or not, and equals a fresh run's.
    assert_eq!(reused.prompt.len(), fresh.prompt.len());
    for (a, b) in reused.prompt.iter().zip(&fresh.prompt) {
        assert_eq!(
            a.routing.iter().map(|r| &r.experts).collect::<Vec<_>>(),
            b.routing.iter().map(|r| &r.experts).collect::<Vec<_>>()
        );
    }
    // Only the new part was prefilled.
    assert!(reused.stats.prompt_tokens == fresh.stats.prompt_tokens);
}
