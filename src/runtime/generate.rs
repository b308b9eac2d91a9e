//! THE decode loop. Chat, `thinkbench generate`, evaluation and GRPO rollouts all call
//! `generate`: prefill the prompt once, then step every row of the batch one token at a time until
//! each row stops, recording for every token what the model saw and chose.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::model::cache::KvCache;
use crate::model::{Model, Probe};
use crate::runtime::sampling::{token_stats, Sampler, SamplingParams, TokenStats};
use crate::text::{Phase, PhaseTracker, StreamDecoder, TextCodec};
use crate::trace::{FinishReason, GenStats, LayerRouting, PromptToken, TokenRecord};

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_ids: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Any of these ends a row (unless `ignore_eos`).
    pub eos_ids: Vec<u32>,
    pub ignore_eos: bool,
    /// Text that ends a row once it appears in the output.
    pub stop_strings: Vec<String>,
    /// How many alternatives to record per token.
    pub top_logprobs: usize,
    /// Record each token's logprob and entropy (and the `top_logprobs` alternatives). Off for
    /// GRPO rollouts, which keep only the ids and the text: it spares a pass of exponentials over
    /// the vocabulary per row and token. Off, those fields are NaN and the alternatives empty.
    pub token_stats: bool,
    /// Record router choices for every prompt and generated token.
    pub trace_routing: bool,
    /// Completions drawn from the same prompt (GRPO's group); the prompt is prefilled once.
    pub n: usize,
    /// After this many reasoning tokens, close the thought (inject `</think>`) so the model
    /// answers. `None`: think as long as it likes.
    pub think_budget: Option<usize>,
}

impl GenerateRequest {
    pub fn new(prompt_ids: Vec<u32>) -> Self {
        Self {
            prompt_ids,
            max_new_tokens: 256,
            sampling: SamplingParams::default(),
            eos_ids: Vec::new(),
            ignore_eos: false,
            stop_strings: Vec::new(),
            top_logprobs: 5,
            token_stats: true,
            trace_routing: true,
            n: 1,
            think_budget: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub tokens: Vec<TokenRecord>,
    pub text: String,
    pub finish_reason: FinishReason,
}

impl Completion {
    pub fn ids(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.id).collect()
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt: Vec<PromptToken>,
    pub completions: Vec<Completion>,
    pub stats: GenStats,
}

/// A KV cache that remembers which token ids it holds (and their routing), so that a follow-up
/// generation sharing a prefix with the last one — the next chat turn, a regenerate, an edit, a
/// "keep thinking" — only runs the model over what is new.
#[derive(Default)]
pub struct PrefixCache {
    cache: Option<KvCache>,
    ids: Vec<u32>,
    routing: Vec<Vec<LayerRouting>>,
}

impl PrefixCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Token ids whose keys and values are held.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// What the loop reports as it goes.
pub enum GenEvent<'a> {
    /// The prompt was processed (with its routing).
    Prompt(&'a [PromptToken]),
    /// Row `row` produced a token.
    Token { row: usize, token: &'a TokenRecord },
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt token id {id} is outside the model's vocabulary of {vocab}")]
    BadTokenId { id: u32, vocab: usize },
}

/// Collects router choices per flattened token row of one forward call (the decode loop and
/// [`crate::runtime::score`] share it, so both record routing the same way).
pub(crate) struct RoutingRecorder {
    on: bool,
    rows: Vec<Vec<LayerRouting>>,
}

impl Probe for RoutingRecorder {
    fn wants_routing(&self) -> bool {
        self.on
    }

    fn routing(&mut self, layer: usize, tokens: usize, k: usize, experts: &[i64], weights: &[f32]) {
        if self.rows.len() < tokens {
            self.rows.resize(tokens, Vec::new());
        }
        for (t, row) in self.rows.iter_mut().enumerate().take(tokens) {
            let span = t * k..(t + 1) * k;
            row.push(LayerRouting {
                layer,
                experts: experts[span.clone()].iter().map(|&e| e as u32).collect(),
                weights: weights[span].to_vec(),
            });
        }
    }
}

impl RoutingRecorder {
    pub(crate) fn new(on: bool) -> Self {
        Self {
            on,
            rows: Vec::new(),
        }
    }

    /// The routing of the `tokens` rows of the last forward call (empty rows when off).
    pub(crate) fn take(&mut self, tokens: usize) -> Vec<Vec<LayerRouting>> {
        let mut rows = std::mem::take(&mut self.rows);
        rows.resize(tokens, Vec::new());
        rows
    }
}

struct Row {
    sampler: Sampler,
    phase: PhaseTracker,
    detok: StreamDecoder,
    history: Vec<u32>,
    tokens: Vec<TokenRecord>,
    text: String,
    finish: Option<FinishReason>,
    /// Reasoning tokens generated so far (for the thinking budget).
    thought: usize,
}

/// Logits `[B,1,V]` as one f32 vector per row.
fn rows_of(logits: &Tensor) -> Vec<Vec<f32>> {
    let l = logits
        .squeeze_dim(1)
        .to_kind(Kind::Float)
        .to_device(Device::Cpu);
    let b = l.size()[0];
    (0..b)
        .map(|r| Vec::<f32>::try_from(l.get(r)).expect("f32 logits"))
        .collect()
}

/// Generates from scratch.
pub fn generate(
    model: &Model,
    codec: Option<&TextCodec>,
    req: &GenerateRequest,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(GenEvent),
) -> Result<Generation, GenerateError> {
    generate_cached(model, codec, req, &mut PrefixCache::new(), cancel, on_event)
}

/// Generates, reusing whatever prefix of `req.prompt_ids` the cache already holds, and leaves the
/// cache holding the prompt and what was generated (when `req.n == 1`).
pub fn generate_cached(
    model: &Model,
    codec: Option<&TextCodec>,
    req: &GenerateRequest,
    prefix: &mut PrefixCache,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(GenEvent),
) -> Result<Generation, GenerateError> {
    let _no_grad = tch::no_grad_guard();
    let vocab = model.vocab_size();
    if req.prompt_ids.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if let Some(&id) = req.prompt_ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(GenerateError::BadTokenId { id, vocab });
    }
    // Ids past the tokenizer's vocabulary are padding rows of the embedding: never sampled.
    let allowed = codec.map_or(vocab, |c| c.vocab_size().min(vocab));
    let n = req.n.max(1);
    let think_ids = codec.and_then(TextCodec::think_ids);
    let mut rec = RoutingRecorder::new(req.trace_routing && !model.moe_layers().is_empty());
    let p = req.prompt_ids.len();
    // Reuse the longest shared prefix, but always run at least the last prompt token: its logits
    // choose the first new token.
    let shared = prefix
        .ids
        .iter()
        .zip(&req.prompt_ids)
        .take_while(|(a, b)| a == b)
        .count();
    let keep = shared.min(p - 1);
    let mut cache = match prefix.cache.take() {
        Some(mut c) if keep > 0 => {
            c.truncate(keep as i64);
            c
        }
        _ => model.new_cache(),
    };
    let keep = cache.len() as usize;
    let mut prompt_routing: Vec<Vec<LayerRouting>> = std::mem::take(&mut prefix.routing);
    prompt_routing.truncate(keep);
    prompt_routing.resize(keep, Vec::new());
    prefix.ids.clear();

    let new_ids: Vec<i64> = req.prompt_ids[keep..].iter().map(|&i| i as i64).collect();
    let t0 = Instant::now();
    let logits = model.forward(
        &Tensor::from_slice(&new_ids)
            .view([1, new_ids.len() as i64])
            .to_device(model.device),
        &mut cache,
        &mut rec,
        false,
    );
    let mut row_logits = rows_of(&logits);
    let prefill_secs = t0.elapsed().as_secs_f64();
    prompt_routing.extend(rec.take(new_ids.len()));
    let prompt: Vec<PromptToken> = req
        .prompt_ids
        .iter()
        .zip(prompt_routing)
        .map(|(&id, routing)| PromptToken { id, routing })
        .collect();
    on_event(GenEvent::Prompt(&prompt));
    if n > 1 {
        cache.repeat_batch(n as i64);
        row_logits = vec![row_logits.remove(0); n];
    }

    let mut rows: Vec<Row> = (0..n)
        .map(|r| Row {
            sampler: Sampler::for_row(req.sampling.clone(), r),
            phase: PhaseTracker::new(think_ids, &req.prompt_ids),
            detok: StreamDecoder::new(),
            history: req.prompt_ids.clone(),
            tokens: Vec::new(),
            text: String::new(),
            finish: None,
            thought: 0,
        })
        .collect();

    let t1 = Instant::now();
    let mut generated = 0usize;
    for step in 0..req.max_new_tokens {
        if cancel.load(Ordering::Relaxed) {
            rows.iter_mut()
                .filter(|r| r.finish.is_none())
                .for_each(|r| r.finish = Some(FinishReason::Cancelled));
            break;
        }
        // Choose one token for every live row from the logits of its last position.
        let mut feed = vec![0i64; n];
        let mut fresh: Vec<usize> = Vec::new();
        for (r, row) in rows.iter_mut().enumerate() {
            if row.finish.is_some() {
                feed[r] = row.history.last().copied().unwrap_or(0) as i64;
                continue;
            }
            let logits = &row_logits[r];
            let over_budget = req.think_budget.is_some_and(|b| row.thought >= b);
            let forced = match (think_ids, over_budget, row.phase.current()) {
                (Some((_, close)), true, Phase::Think) => Some(close),
                _ => None,
            };
            let id = forced.unwrap_or_else(|| row.sampler.sample(logits, allowed, &row.history));
            let stats = if req.token_stats {
                token_stats(logits, id, req.top_logprobs)
            } else {
                TokenStats {
                    logprob: f32::NAN,
                    entropy: f32::NAN,
                    top: Vec::new(),
                }
            };
            let phase = row.phase.push(id);
            if phase == Phase::Think {
                row.thought += 1;
            }
            let text = codec.map(|c| row.detok.push(c, id)).unwrap_or_default();
            row.text.push_str(&text);
            row.history.push(id);
            row.tokens.push(TokenRecord {
                id,
                text,
                logprob: stats.logprob,
                top: stats.top,
                entropy: stats.entropy,
                phase,
                routing: Vec::new(),
                forced: forced.is_some(),
            });
            generated += 1;
            feed[r] = id as i64;
            fresh.push(r);
            if !req.ignore_eos && req.eos_ids.contains(&id) {
                row.finish = Some(FinishReason::Stop);
            } else if hits_stop_string(&row.text, &req.stop_strings) {
                row.finish = Some(FinishReason::Stop);
            } else if step + 1 == req.max_new_tokens {
                row.finish = Some(FinishReason::Length);
            }
        }
        let all_done = rows.iter().all(|r| r.finish.is_some());
        // Feed the new tokens: their routing is known once they pass through the model, and their
        // logits choose the next ones. The last step only needs this for the routing trace.
        if !all_done || rec.on {
            let ids = Tensor::from_slice(&feed)
                .view([n as i64, 1])
                .to_device(model.device);
            let logits = model.forward(&ids, &mut cache, &mut rec, false);
            let mut routing = rec.take(n);
            if !all_done {
                row_logits = rows_of(&logits);
            }
            for &r in &fresh {
                rows[r]
                    .tokens
                    .last_mut()
                    .expect("token just pushed")
                    .routing = std::mem::take(&mut routing[r]);
            }
        }
        for &r in &fresh {
            on_event(GenEvent::Token {
                row: r,
                token: rows[r].tokens.last().expect("token just pushed"),
            });
        }
        if all_done {
            break;
        }
    }
    let decode_secs = t1.elapsed().as_secs_f64();
    if n == 1 {
        // Everything fed through the model stays cached for the next call.
        let fed = cache.len() as usize;
        let mut ids = req.prompt_ids.clone();
        let mut routing: Vec<Vec<LayerRouting>> =
            prompt.iter().map(|t| t.routing.clone()).collect();
        for t in &rows[0].tokens {
            ids.push(t.id);
            routing.push(t.routing.clone());
        }
        ids.truncate(fed);
        routing.truncate(fed);
        *prefix = PrefixCache {
            cache: Some(cache),
            ids,
            routing,
        };
    }
    let completions = rows
        .into_iter()
        .map(|mut row| {
            if let Some(c) = codec {
                row.text.push_str(&row.detok.finish(c));
            }
            Completion {
                tokens: row.tokens,
                text: row.text,
                finish_reason: row.finish.unwrap_or(FinishReason::Length),
            }
        })
        .collect();
    let rate = |tokens: usize, secs: f64| {
        if secs > 0.0 {
            tokens as f64 / secs
        } else {
            0.0
        }
    };
    Ok(Generation {
        prompt,
        completions,
        stats: GenStats {
            prompt_tokens: p,
            generated_tokens: generated,
            prefill_tokens_per_s: rate(p, prefill_secs),
            decode_tokens_per_s: rate(generated, decode_secs),
        },
    })
}

fn hits_stop_string(text: &str, stops: &[String]) -> bool {
    stops
        .iter()
        .any(|s| !s.is_empty() && text.contains(s.as_str()))
}
