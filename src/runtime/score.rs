//! Re-scoring a finished sequence: the per-token trace the decode loop would have recorded while
//! generating `completion_ids` after `prompt_ids`, rebuilt from the ids alone.
//!
//! A GRPO rollout log keeps text, not traces. Feeding prompt and completion through the model in
//! one pass (teacher forcing) gives every position's logits at once: position `i`'s logits are the
//! distribution the sampler drew token `i + 1` from. The statistics come from the same
//! [`token_stats`] the decode loop uses and the routing from the same probe, so a scored greedy
//! generation matches its recorded trace (up to float rounding of a batched versus an incremental
//! forward).
//!
//! Memory stays bounded for long completions: the sequence goes through the model in chunks of
//! positions (each chunk attends to the earlier ones through the KV cache), and only one chunk's
//! logits exist at a time. A 2k-token completion with a 150k vocabulary would otherwise hold
//! 1.2 GB of f32 logits.

use tch::{Device, Kind, Tensor};

use crate::model::Model;
use crate::runtime::generate::RoutingRecorder;
use crate::runtime::sampling::token_stats;
use crate::runtime::GenerateError;
use crate::text::{PhaseTracker, StreamDecoder, TextCodec};
use crate::trace::{LayerRouting, PromptToken, TokenRecord};

/// How many f32 logits one chunk may hold (128 MiB): the chunk length is this over the vocabulary.
const LOGIT_BUDGET: usize = 1 << 25;

#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOptions {
    /// Alternatives to record per token.
    pub top_logprobs: usize,
    /// Record router choices for every token (MoE models).
    pub trace_routing: bool,
    /// Positions per forward call; `None` sizes chunks from [`LOGIT_BUDGET`] (a short sequence
    /// then goes through in one call).
    pub chunk: Option<usize>,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            top_logprobs: 5,
            trace_routing: true,
            chunk: None,
        }
    }
}

pub use crate::trace::ScoredTrace;

/// Positions per forward call for a vocabulary of `vocab` ids.
pub fn chunk_len(vocab: usize) -> usize {
    (LOGIT_BUDGET / vocab.max(1)).clamp(16, 2048)
}

/// Scores `completion_ids` as the continuation of `prompt_ids`. `codec` gives the tokens' text
/// and the think/answer phases (without it, text is empty and every token is in the answer).
pub fn score(
    model: &Model,
    codec: Option<&TextCodec>,
    prompt_ids: &[u32],
    completion_ids: &[u32],
    opts: &ScoreOptions,
) -> Result<ScoredTrace, GenerateError> {
    let _no_grad = tch::no_grad_guard();
    let vocab = model.vocab_size();
    if prompt_ids.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if let Some(&id) = prompt_ids
        .iter()
        .chain(completion_ids)
        .find(|&&id| id as usize >= vocab)
    {
        return Err(GenerateError::BadTokenId { id, vocab });
    }
    let seq: Vec<i64> = prompt_ids
        .iter()
        .chain(completion_ids)
        .map(|&i| i as i64)
        .collect();
    let (p, n) = (prompt_ids.len(), seq.len());
    let chunk = opts.chunk.unwrap_or_else(|| chunk_len(vocab)).max(1);
    let mut rec = RoutingRecorder::new(opts.trace_routing && !model.moe_layers().is_empty());
    let mut cache = model.new_cache();
    let mut routing: Vec<Vec<LayerRouting>> = Vec::with_capacity(n);
    let mut stats = Vec::with_capacity(completion_ids.len());
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        // Positions p-1 ..= n-2 predict a completion token; the others only need their routing
        // (and to fill the cache). When the one wanted position is the chunk's last, the model's
        // last-position head does.
        let wanted = start.max(p - 1)..end.min(n - 1);
        let all_logits = wanted.len() > 1 || (wanted.len() == 1 && wanted.start != end - 1);
        let ids = Tensor::from_slice(&seq[start..end])
            .view([1, (end - start) as i64])
            .to_device(model.device);
        let logits = model.forward(&ids, &mut cache, &mut rec, all_logits);
        routing.extend(rec.take(end - start));
        if !wanted.is_empty() {
            let flat = Vec::<f32>::try_from(
                logits
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu)
                    .view([-1]),
            )
            .expect("f32 logits");
            let first_row = if all_logits { start } else { end - 1 };
            for pos in wanted {
                let row = (pos - first_row) * vocab;
                let next = seq[pos + 1] as u32;
                stats.push(token_stats(
                    &flat[row..row + vocab],
                    next,
                    opts.top_logprobs,
                ));
            }
        }
        start = end;
    }
    let mut routing = routing.into_iter();
    let prompt: Vec<PromptToken> = prompt_ids
        .iter()
        .zip(routing.by_ref())
        .map(|(&id, routing)| PromptToken { id, routing })
        .collect();
    let mut phases = PhaseTracker::new(codec.and_then(TextCodec::think_ids), prompt_ids);
    let mut decoder = StreamDecoder::new();
    let mut tokens: Vec<TokenRecord> = completion_ids
        .iter()
        .zip(stats)
        .zip(routing)
        .map(|((&id, s), routing)| TokenRecord {
            id,
            text: codec.map(|c| decoder.push(c, id)).unwrap_or_default(),
            logprob: s.logprob,
            top: s.top,
            entropy: s.entropy,
            phase: phases.push(id),
            routing,
            // A rollout log does not say whether the thinking budget injected a token.
            forced: false,
        })
        .collect();
    if let (Some(c), Some(last)) = (codec, tokens.last_mut()) {
        last.text.push_str(&decoder.finish(c));
    }
    Ok(ScoredTrace { prompt, tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_a_bounded_number_of_logits() {
        assert_eq!(chunk_len(151_936), 220);
        assert!(chunk_len(151_936) * 151_936 <= LOGIT_BUDGET);
        // A tiny vocabulary still goes through in sizeable chunks, a huge one in small ones.
        assert_eq!(chunk_len(304), 2048);
        assert_eq!(chunk_len(10_000_000), 16);
    }
}
