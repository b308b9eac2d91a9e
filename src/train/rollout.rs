//! Rollouts: G completions of each prompt through THE decode loop (`runtime::generate_batch`,
//! each request with `n = G`: one prefill per prompt, G rows sampled with their own seeds, the
//! groups of a step decoding together), in eval mode without gradients.
//! What comes back is plain data: token ids, text, whether each row ended on end-of-sentence,
//! and for an MoE policy the experts every prompt and completion token went through (the update
//! compares its own routing with them, and can replay them).

use anyhow::{anyhow, Result};

use super::problems::Problem;
use super::recipe::GenerationSection;
use crate::model::Model;
use crate::runtime::{generate_batch, GenerateRequest, SamplingParams};
use crate::text::TextCodec;
use crate::trace::{FinishReason, LayerRouting};

/// One completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Generated ids (the end-of-sentence id included when it ended on one).
    pub ids: Vec<u32>,
    pub text: String,
    /// Ended on end-of-sentence rather than running out of tokens.
    pub finished: bool,
    /// Per generated token, the experts each MoE layer used when it was fed (empty: dense).
    pub routing: Vec<Vec<LayerRouting>>,
}

/// The G completions of one prompt.
#[derive(Debug, Clone)]
pub struct Group {
    pub problem: Problem,
    pub prompt_ids: Vec<u32>,
    /// Per prompt token, the experts each MoE layer used in the prefill (empty: dense).
    pub prompt_routing: Vec<Vec<LayerRouting>>,
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

/// The prompt ids of a problem: its conversation (usually just the question) through the chat
/// template with the generation prompt (R1's ends in `<think>\n`, so the completion starts
/// inside the thought).
pub fn prompt_ids(codec: &TextCodec, problem: &Problem) -> Result<Vec<u32>> {
    Ok(codec
        .encode_chat(
            &super::conversation::messages(&problem.earlier, &problem.prompt),
            true,
        )
        .map_err(|e| anyhow!("{e}"))?
        .ids)
}

/// Rows decoded together at most. Groups of different prompts share decode steps (continuous
/// batching); on a CPU a step of many rows costs little more than a step of one for small models.
pub const ROLLOUT_ROWS: usize = 64;

/// Draws `gen.group_size` completions of every problem, problem `i` seeded by `seeds[i]` (row r
/// uses `sampling::row_seed(seeds[i], r)`), the groups decoding together in one batch.
pub fn rollouts(
    model: &Model,
    codec: &TextCodec,
    problems: &[&Problem],
    gen: &GenerationSection,
    eos: &[u32],
    seeds: &[u64],
) -> Result<Vec<Group>> {
    let reqs = problems
        .iter()
        .zip(seeds)
        .map(|(problem, &seed)| {
            Ok(GenerateRequest {
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
                trace_routing: !model.moe_layers().is_empty(),
                n: gen.group_size,
                ..GenerateRequest::new(prompt_ids(codec, problem)?)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = ROLLOUT_ROWS.max(gen.group_size);
    let generations =
        generate_batch(model, Some(codec), &reqs, rows).map_err(|e| anyhow!("rollout: {e}"))?;
    Ok(problems
        .iter()
        .zip(reqs)
        .zip(generations)
        .map(|((problem, req), g)| Group {
            problem: (*problem).clone(),
            prompt_ids: req.prompt_ids,
            prompt_routing: g.prompt.into_iter().map(|t| t.routing).collect(),
            samples: g
                .completions
                .into_iter()
                .map(|c| Sample {
                    ids: c.ids(),
                    finished: c.finish_reason == FinishReason::Stop,
                    routing: c.tokens.iter().map(|t| t.routing.clone()).collect(),
                    text: c.text,
                })
                .collect(),
        })
        .collect())
}
