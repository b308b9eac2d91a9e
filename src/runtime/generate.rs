//! THE decode loop ([`Decoder`]). Chat, `thinkbench generate`, evaluation, GRPO rollouts and
//! `thinkbench serve` all run through it: each request's prompt is prefilled once, its rows join
//! the batch, and every step feeds one token per live row through the model — rows of different
//! requests at their own positions — recording for every token what the model saw and chose.

use std::collections::HashMap;
use std::rc::Rc;
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

    /// Holds `cache` with the ids (and their routing) it was fed; entries past what the cache
    /// holds are dropped.
    fn holding(cache: KvCache, mut ids: Vec<u32>, mut routing: Vec<Vec<LayerRouting>>) -> Self {
        let fed = cache.len() as usize;
        ids.truncate(fed);
        routing.truncate(fed);
        Self {
            cache: Some(cache),
            ids,
            routing,
        }
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
    /// Row `row` ended (after its last `Token`).
    Finished { row: usize, reason: FinishReason },
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt token id {id} is outside the model's vocabulary of {vocab}")]
    BadTokenId { id: u32, vocab: usize },
    #[error("the two models' vocabularies differ ({a} and {b} ids)")]
    VocabMismatch { a: usize, b: usize },
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

/// One row of the running batch: a completion being generated for one admitted request.
struct Row {
    /// The request it belongs to (the caller's tag) and its index among that request's rows.
    tag: u64,
    index: usize,
    req: Rc<GenerateRequest>,
    sampler: Sampler,
    phase: PhaseTracker,
    detok: StreamDecoder,
    history: Vec<u32>,
    tokens: Vec<TokenRecord>,
    text: String,
    finish: Option<FinishReason>,
    /// Reasoning tokens generated so far (for the thinking budget).
    thought: usize,
    /// The logits that choose this row's next token.
    logits: Vec<f32>,
}

impl Row {
    fn records_routing(&self, model: &Model) -> bool {
        self.req.trace_routing && !model.moe_layers().is_empty()
    }
}

/// What a request keeps while its rows run: everything its [`Generation`] is made of.
struct Pending {
    prompt: Vec<PromptToken>,
    completions: Vec<Option<Completion>>,
    generated: usize,
    prefill_secs: f64,
    decode_start: Instant,
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

/// The decode loop over a batch whose rows come and go: requests are [`Decoder::admit`]ted
/// (their prompt prefilled on its own, then its rows join the batch) and every [`Decoder::step`]
/// chooses one token for every live row and feeds them all through the model in one forward
/// pass, each row at its own position (a ragged [`KvCache`]). A finished row leaves the batch at
/// the next step. `generate` runs one request through it; `thinkbench serve` keeps it running.
pub struct Decoder<'m> {
    model: &'m Model,
    codec: Option<&'m TextCodec>,
    /// Ids past the tokenizer's vocabulary are padding rows of the embedding: never sampled.
    allowed: usize,
    think_ids: Option<(u32, u32)>,
    /// One cache row per entry of `rows`, finished rows included until they are dropped.
    cache: KvCache,
    rows: Vec<Row>,
    pending: HashMap<u64, Pending>,
    cancelled: Vec<u64>,
}

impl<'m> Decoder<'m> {
    pub fn new(model: &'m Model, codec: Option<&'m TextCodec>) -> Self {
        let vocab = model.vocab_size();
        Self {
            model,
            codec,
            allowed: codec.map_or(vocab, |c| c.vocab_size().min(vocab)),
            think_ids: codec.and_then(TextCodec::think_ids),
            cache: model.new_cache(),
            rows: Vec::new(),
            pending: HashMap::new(),
            cancelled: Vec::new(),
        }
    }

    /// Rows still generating.
    pub fn live_rows(&self) -> usize {
        self.rows.iter().filter(|r| r.finish.is_none()).count()
    }

    /// Whether any admitted request has not been returned by [`Decoder::step`] yet.
    pub fn is_busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends every row of request `tag` as `Cancelled` at the next step.
    pub fn cancel(&mut self, tag: u64) {
        self.cancelled.push(tag);
    }

    /// Prefills `req`'s prompt (reusing what `prefix` holds of it) and adds its `n` rows to the
    /// batch; they choose their first token at the next step. Events carry `tag`.
    pub fn admit(
        &mut self,
        tag: u64,
        req: &GenerateRequest,
        prefix: Option<&mut PrefixCache>,
        on_event: &mut dyn FnMut(u64, GenEvent),
    ) -> Result<(), GenerateError> {
        self.admit_all(&[(tag, req)], prefix, on_event)
    }

    /// Whether `req` can be admitted: a non-empty prompt of ids inside the vocabulary.
    pub fn check(&self, req: &GenerateRequest) -> Result<(), GenerateError> {
        let vocab = self.model.vocab_size();
        if req.prompt_ids.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if let Some(&id) = req.prompt_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(GenerateError::BadTokenId { id, vocab });
        }
        Ok(())
    }

    /// Admits several requests with one prefill: their prompts go through the model together,
    /// left-padded to the longest (the padding is masked, as in the decode steps), so requests
    /// arriving together read the weights once. `prefix` is used only for a single request.
    pub fn admit_all(
        &mut self,
        reqs: &[(u64, &GenerateRequest)],
        prefix: Option<&mut PrefixCache>,
        on_event: &mut dyn FnMut(u64, GenEvent),
    ) -> Result<(), GenerateError> {
        let _no_grad = tch::no_grad_guard();
        for (_, req) in reqs {
            self.check(req)?;
        }
        if reqs.is_empty() {
            return Ok(());
        }
        let model = self.model;
        let mut scratch = PrefixCache::new();
        let prefix = match prefix {
            Some(p) if reqs.len() == 1 => p,
            _ => &mut scratch,
        };
        // Reuse the longest shared prefix (one request only), but always run at least the last
        // prompt token: its logits choose the first new token.
        let first_prompt = &reqs[0].1.prompt_ids;
        let shared = prefix
            .ids
            .iter()
            .zip(first_prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let keep = if reqs.len() == 1 {
            shared.min(first_prompt.len() - 1)
        } else {
            0
        };
        let mut cache = match prefix.cache.take() {
            Some(mut c) if keep > 0 => {
                c.truncate(keep as i64);
                c
            }
            _ => model.new_cache(),
        };
        let keep = cache.len() as usize;
        let mut reused: Vec<Vec<LayerRouting>> = std::mem::take(&mut prefix.routing);
        reused.truncate(keep);
        reused.resize(keep, Vec::new());
        prefix.ids.clear();

        // New ids per request, left-padded to the longest.
        let width = reqs
            .iter()
            .map(|(_, r)| r.prompt_ids.len() - keep)
            .max()
            .unwrap_or(0);
        let pad: Vec<i64> = reqs
            .iter()
            .map(|(_, r)| (width - (r.prompt_ids.len() - keep)) as i64)
            .collect();
        let mut ids: Vec<i64> = Vec::with_capacity(reqs.len() * width);
        for ((_, r), &p) in reqs.iter().zip(&pad) {
            ids.extend(std::iter::repeat_n(0, p as usize));
            ids.extend(r.prompt_ids[keep..].iter().map(|&i| i as i64));
        }
        if pad.iter().any(|&p| p > 0) {
            cache.set_padding(pad.clone());
        }
        let routing_wanted = reqs.iter().any(|(_, r)| r.trace_routing);
        let mut rec = RoutingRecorder::new(routing_wanted && !model.moe_layers().is_empty());
        let t0 = Instant::now();
        let logits = model.forward(
            &Tensor::from_slice(&ids)
                .view([reqs.len() as i64, width as i64])
                .to_device(model.device),
            &mut cache,
            &mut rec,
            false,
        );
        let firsts = rows_of(&logits);
        let prefill_secs = t0.elapsed().as_secs_f64();
        let mut routing = rec.take(reqs.len() * width).into_iter();

        // Which cache row each new batch row copies (request i's row, n times).
        let mut expand: Vec<usize> = Vec::new();
        let mut rows: Vec<Row> = Vec::new();
        for (i, ((tag, req), first)) in reqs.iter().zip(firsts).enumerate() {
            let (tag, n) = (*tag, req.n.max(1));
            let mut prompt_routing = if i == 0 { reused.clone() } else { Vec::new() };
            prompt_routing.extend(routing.by_ref().take(width).skip(pad[i] as usize).map(|r| {
                if req.trace_routing {
                    r
                } else {
                    Vec::new()
                }
            }));
            let prompt: Vec<PromptToken> = req
                .prompt_ids
                .iter()
                .zip(prompt_routing)
                .map(|(&id, routing)| PromptToken { id, routing })
                .collect();
            on_event(tag, GenEvent::Prompt(&prompt));
            let mut pending = Pending {
                prompt,
                completions: (0..n).map(|_| None).collect(),
                generated: 0,
                prefill_secs,
                decode_start: Instant::now(),
            };
            if req.max_new_tokens == 0 {
                // Nothing to generate: the request is returned by the next step.
                for (r, slot) in pending.completions.iter_mut().enumerate() {
                    *slot = Some(Completion {
                        tokens: Vec::new(),
                        text: String::new(),
                        finish_reason: FinishReason::Length,
                    });
                    on_event(
                        tag,
                        GenEvent::Finished {
                            row: r,
                            reason: FinishReason::Length,
                        },
                    );
                }
                self.pending.insert(tag, pending);
                continue;
            }
            self.pending.insert(tag, pending);
            let shared_req = Rc::new((*req).clone());
            for r in 0..n {
                expand.push(i);
                rows.push(Row {
                    tag,
                    index: r,
                    req: Rc::clone(&shared_req),
                    sampler: Sampler::for_row(req.sampling.clone(), r),
                    phase: PhaseTracker::new(self.think_ids, &req.prompt_ids),
                    detok: StreamDecoder::new(),
                    history: req.prompt_ids.clone(),
                    tokens: Vec::new(),
                    text: String::new(),
                    finish: None,
                    thought: 0,
                    logits: first.clone(),
                });
            }
        }
        if rows.is_empty() {
            if reqs.len() == 1 {
                // A lone request with nothing to generate: its prompt stays cached.
                let prompt = &self.pending[&reqs[0].0].prompt;
                *prefix = PrefixCache::holding(
                    cache,
                    reqs[0].1.prompt_ids.clone(),
                    prompt.iter().map(|t| t.routing.clone()).collect(),
                );
            }
            return Ok(());
        }
        cache.keep_rows(&expand);
        self.drop_finished();
        self.cache.append_rows(cache);
        self.rows.extend(rows);
        Ok(())
    }

    /// Drops finished rows, and their cache rows, from the batch.
    fn drop_finished(&mut self) {
        self.retain_rows(|r| r.finish.is_none());
    }

    /// Keeps the rows for which `keep` holds, with their cache rows.
    fn retain_rows(&mut self, keep: impl Fn(&Row) -> bool) {
        let kept: Vec<usize> = (0..self.rows.len())
            .filter(|&i| keep(&self.rows[i]))
            .collect();
        if kept.len() == self.rows.len() {
            return;
        }
        self.cache.keep_rows(&kept);
        self.rows.retain(|r| keep(r));
    }

    /// One decode step: every live row chooses a token from its logits, and the new tokens go
    /// through the model together (their routing is known once they have, and their logits
    /// choose the next ones). Returns the requests whose rows have all finished.
    pub fn step(&mut self, on_event: &mut dyn FnMut(u64, GenEvent)) -> Vec<(u64, Generation)> {
        let _no_grad = tch::no_grad_guard();
        let model = self.model;
        for tag in std::mem::take(&mut self.cancelled) {
            for i in 0..self.rows.len() {
                if self.rows[i].tag == tag && self.rows[i].finish.is_none() {
                    self.rows[i].finish = Some(FinishReason::Cancelled);
                    self.complete(i, on_event);
                }
            }
        }
        if self.live_rows() == 0 {
            // Nothing to step; a lone finished row stays cached for `generate_cached`.
            return self.take_done();
        }
        self.drop_finished();

        // Every row left is live: each chooses a token. Tokens whose routing is not recorded
        // are reported now; the others once fed.
        for row in self.rows.iter_mut() {
            choose_token(row, self.codec, self.think_ids, self.allowed);
            if let Some(p) = self.pending.get_mut(&row.tag) {
                p.generated += 1;
            }
            if !row.records_routing(model) {
                on_event(row.tag, token_event(row));
            }
        }
        // Feed every row that goes on, and the rows that just ended if their last token's
        // routing is wanted; the rest leave the batch now.
        let fed = |r: &Row| r.finish.is_none() || r.records_routing(model);
        let mut routed: Vec<usize> = Vec::new();
        if self.rows.iter().any(fed) {
            for i in 0..self.rows.len() {
                if !fed(&self.rows[i]) {
                    self.complete(i, on_event);
                }
            }
            self.retain_rows(fed);
            let b = self.rows.len();
            let mut rec = RoutingRecorder::new(self.rows.iter().any(|r| r.records_routing(model)));
            let ids: Vec<i64> = self
                .rows
                .iter()
                .map(|r| r.history.last().copied().unwrap_or(0) as i64)
                .collect();
            let ids = Tensor::from_slice(&ids)
                .view([b as i64, 1])
                .to_device(model.device);
            let logits = model.forward(&ids, &mut self.cache, &mut rec, false);
            let mut routing = rec.take(b);
            let live = self.rows.iter().any(|r| r.finish.is_none());
            let mut next = if live { rows_of(&logits) } else { Vec::new() };
            for (i, row) in self.rows.iter_mut().enumerate() {
                if row.finish.is_none() {
                    row.logits = std::mem::take(&mut next[i]);
                }
                if row.records_routing(model) {
                    row.tokens
                        .last_mut()
                        .expect("a token was just chosen")
                        .routing = std::mem::take(&mut routing[i]);
                    routed.push(i);
                }
            }
        }
        for &i in &routed {
            on_event(self.rows[i].tag, token_event(&self.rows[i]));
        }
        for i in 0..self.rows.len() {
            if self.rows[i].finish.is_some() {
                self.complete(i, on_event);
            }
        }
        self.take_done()
    }

    /// Records row `i`'s completion with its request (once) and reports that it finished.
    fn complete(&mut self, i: usize, on_event: &mut dyn FnMut(u64, GenEvent)) {
        let row = &mut self.rows[i];
        let Some(pending) = self.pending.get_mut(&row.tag) else {
            return;
        };
        let slot = &mut pending.completions[row.index];
        if slot.is_some() {
            return;
        }
        let reason = row.finish.unwrap_or(FinishReason::Length);
        let mut text = std::mem::take(&mut row.text);
        if let Some(c) = self.codec {
            text.push_str(&row.detok.finish(c));
        }
        *slot = Some(Completion {
            tokens: std::mem::take(&mut row.tokens),
            text,
            finish_reason: reason,
        });
        on_event(
            row.tag,
            GenEvent::Finished {
                row: row.index,
                reason,
            },
        );
    }

    /// Removes and returns the requests whose every row has a completion.
    fn take_done(&mut self) -> Vec<(u64, Generation)> {
        let done: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.completions.iter().all(Option::is_some))
            .map(|(&tag, _)| tag)
            .collect();
        let rate = |tokens: usize, secs: f64| {
            if secs > 0.0 {
                tokens as f64 / secs
            } else {
                0.0
            }
        };
        done.into_iter()
            .map(|tag| {
                let p = self.pending.remove(&tag).expect("listed above");
                let prompt_tokens = p.prompt.len();
                let gen = Generation {
                    stats: GenStats {
                        prompt_tokens,
                        generated_tokens: p.generated,
                        prefill_tokens_per_s: rate(prompt_tokens, p.prefill_secs),
                        decode_tokens_per_s: rate(
                            p.generated,
                            p.decode_start.elapsed().as_secs_f64(),
                        ),
                        ..GenStats::default()
                    },
                    prompt: p.prompt,
                    completions: p.completions.into_iter().flatten().collect(),
                };
                (tag, gen)
            })
            .collect()
    }

    /// The cache, when it holds exactly one row (the last request's, kept for the next call).
    fn into_single_cache(self) -> Option<KvCache> {
        (self.rows.len() == 1 && self.cache.padding().is_empty()).then_some(self.cache)
    }
}

/// Chooses `row`'s next token from its logits (or closes its thought when the budget is spent),
/// records it, and decides whether the row has finished.
fn choose_token(
    row: &mut Row,
    codec: Option<&TextCodec>,
    think_ids: Option<(u32, u32)>,
    allowed: usize,
) {
    let req = Rc::clone(&row.req);
    let over_budget = req.think_budget.is_some_and(|b| row.thought >= b);
    let forced = match (think_ids, over_budget, row.phase.current()) {
        (Some((_, close)), true, Phase::Think) => Some(close),
        _ => None,
    };
    let id = forced.unwrap_or_else(|| row.sampler.sample(&row.logits, allowed, &row.history));
    let stats = if req.token_stats {
        token_stats(&row.logits, id, req.top_logprobs)
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
    let eos = !req.ignore_eos && req.eos_ids.contains(&id);
    if eos || hits_stop_string(&row.text, &req.stop_strings) {
        row.finish = Some(FinishReason::Stop);
    } else if row.tokens.len() >= req.max_new_tokens {
        row.finish = Some(FinishReason::Length);
    }
    if let (Some(_), Some(c)) = (row.finish, codec) {
        // Text the decoder still holds (a character split across tokens) belongs to the last
        // token, so whoever streams tokens gets all of it.
        let tail = row.detok.finish(c);
        row.text.push_str(&tail);
        row.tokens
            .last_mut()
            .expect("pushed above")
            .text
            .push_str(&tail);
    }
}

fn token_event(row: &Row) -> GenEvent<'_> {
    GenEvent::Token {
        row: row.index,
        token: row.tokens.last().expect("a token was just chosen"),
    }
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
    let mut decoder = Decoder::new(model, codec);
    let mut forward = |_tag: u64, ev: GenEvent| on_event(ev);
    decoder.admit(0, req, Some(prefix), &mut forward)?;
    loop {
        if cancel.load(Ordering::Relaxed) {
            decoder.cancel(0);
        }
        let Some((_, gen)) = decoder.step(&mut forward).pop() else {
            continue;
        };
        if req.max_new_tokens > 0 {
            if let Some(cache) = decoder.into_single_cache() {
                // Everything fed through the model stays cached for the next call.
                let tokens = &gen.completions[0].tokens;
                let mut ids = req.prompt_ids.clone();
                ids.extend(tokens.iter().map(|t| t.id));
                let mut routing: Vec<Vec<LayerRouting>> =
                    gen.prompt.iter().map(|t| t.routing.clone()).collect();
                routing.extend(tokens.iter().map(|t| t.routing.clone()));
                *prefix = PrefixCache::holding(cache, ids, routing);
            }
        }
        return Ok(gen);
    }
}

/// Most tokens (padding included) one joint prefill feeds: prompts admitted together are padded
/// to the longest, and attention over them holds `batch × width²` scores.
pub const PREFILL_BUDGET: usize = 4096;

/// Which waiting requests, taken in order, join the batch at this step: while the batch has
/// room for their rows (an empty batch takes any request) and their joint prefill stays within
/// [`PREFILL_BUDGET`].
pub struct JoinPlan {
    rows: usize,
    max_rows: usize,
    joining: usize,
    width: usize,
}

impl JoinPlan {
    pub fn new(decoder: &Decoder, max_rows: usize) -> Self {
        Self {
            rows: decoder.live_rows(),
            max_rows,
            joining: 0,
            width: 0,
        }
    }

    /// Whether `req` joins too; if so it is counted.
    pub fn take(&mut self, req: &GenerateRequest) -> bool {
        let (rows, width) = (req.n.max(1), self.width.max(req.prompt_ids.len()));
        let no_room = self.rows > 0 && self.rows + rows > self.max_rows;
        let too_wide = self.joining > 0 && (self.joining + 1) * width > PREFILL_BUDGET;
        if no_room || too_wide {
            return false;
        }
        self.rows += rows;
        self.width = width;
        self.joining += 1;
        true
    }
}

/// Generates every request of `reqs` (each with its own prompt) through one batch, at most
/// `max_rows` rows decoding together (a request waits for room; an empty batch takes any).
/// Results come in the order given, each as it would come from [`generate`] alone.
pub fn generate_batch(
    model: &Model,
    codec: Option<&TextCodec>,
    reqs: &[GenerateRequest],
    max_rows: usize,
) -> Result<Vec<Generation>, GenerateError> {
    let mut decoder = Decoder::new(model, codec);
    let mut out: Vec<Option<Generation>> = (0..reqs.len()).map(|_| None).collect();
    let mut next = 0;
    let mut quiet = |_: u64, _: GenEvent| {};
    while next < reqs.len() || decoder.is_busy() {
        // The requests that fit join together, with one prefill.
        let mut joining: Vec<(u64, &GenerateRequest)> = Vec::new();
        let mut plan = JoinPlan::new(&decoder, max_rows);
        while let Some(req) = reqs.get(next).filter(|r| plan.take(r)) {
            joining.push((next as u64, req));
            next += 1;
        }
        decoder.admit_all(&joining, None, &mut quiet)?;
        for (tag, generation) in decoder.step(&mut quiet) {
            out[tag as usize] = Some(generation);
        }
    }
    Ok(out
        .into_iter()
        .map(|g| g.expect("every admitted request finishes"))
        .collect())
}

fn hits_stop_string(text: &str, stops: &[String]) -> bool {
    stops
        .iter()
        .any(|s| !s.is_empty() && text.contains(s.as_str()))
}
