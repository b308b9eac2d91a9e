//! Rollouts: G completions of one prompt through THE decode loop (`runtime::generate` with
//! `n = G`: one prefill, G rows sampled with their own seeds), in eval mode without gradients.
//! What comes back is plain data: token ids, text, whether each row ended on end-of-sentence.

use std::sync::atomic::AtomicBool;

use anyhow::{anyhow, Result};

use super::problems::Problem;
use super::recipe::GenerationSection;
use crate::model::Model;
use crate::runtime::{generate, GenerateRequest, SamplingParams};
use crate::text::{ChatMessage, TextCodec};
use crate::trace::FinishReason;

/// One completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Generated ids (the end-of-sentence id included when it ended on one).
    pub ids: Vec<u32>,
    pub text: String,
    /// Ended on end-of-sentence rather than running out of tokens.
    pub finished: bool,
}

/// The G completions of one prompt.
#[derive(Debug, Clone)]
pub struct Group {
    pub problem: Problem,
    pub prompt_ids: Vec<u32>,
    pub samples: Vec<Sample>,
}

/// The end-of-sentence ids: the tokenizer's and the model config's.
pub fn eos_ids(model: &Model, codec: &TextCodec) -> Vec<u32> {
    let mut ids = codec.eos_ids().to_vec();
    for id in model.config.eos_ids() {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// The prompt ids of a problem: one user message through the chat template with the generation
/// prompt (R1's ends in `<think>\n`, so the completion starts inside the thought).
pub fn prompt_ids(codec: &TextCodec, problem: &Problem) -> Result<Vec<u32>> {
    Ok(codec
        .encode_chat(&[ChatMessage::user(problem.prompt.clone())], true)
        .map_err(|e| anyhow!("{e}"))?
        .ids)
}

/// Draws `gen.group_size` completions of `problem`, seeded by `seed` (row r uses
/// `sampling::row_seed(seed, r)`).
pub fn rollout(
    model: &Model,
    codec: &TextCodec,
    problem: &Problem,
    gen: &GenerationSection,
    eos: &[u32],
    seed: u64,
) -> Result<Group> {
    let ids = prompt_ids(codec, problem)?;
    let req = GenerateRequest {
        max_new_tokens: gen.max_new_tokens,
        sampling: SamplingParams {
            temperature: gen.temperature,
            top_p: gen.top_p,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed,
        },
        eos_ids: eos.to_vec(),
        top_logprobs: 0,
        token_stats: false,
        trace_routing: false,
        n: gen.group_size,
        ..GenerateRequest::new(ids.clone())
    };
    let g = generate(
        model,
        Some(codec),
        &req,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .map_err(|e| anyhow!("rollout: {e}"))?;
    let samples = g
        .completions
        .into_iter()
        .map(|c| Sample {
            ids: c.ids(),
            finished: c.finish_reason == FinishReason::Stop,
            text: c.text,
        })
        .collect();
    Ok(Group {
        problem: problem.clone(),
        prompt_ids: ids,
        samples,
    })
}
