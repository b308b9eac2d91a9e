//! The seam between whoever runs a model and whoever asks it for tokens: plain data only (no
//! tensors, no HTTP types), so the workbench, `serve` and their tests build on it without libtorch.
//!
//! - [`ModelInfo`]: what a caller needs to know about the loaded model.
//! - [`Capabilities`]: what a backend can give (the interface offers only that, and says why not).
//! - [`chat`]: the workbench's jobs and events, and the [`chat::Engine`] handle every backend
//!   (the local libtorch engine, a remote server) is driven through.
//! - [`Submission`] / [`Progress`]: one request to the batching engine (`thinkbench serve`) and
//!   what it reports back, row by row, as the shared decode steps go.

pub mod chat;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::runtime::sampling::SamplingParams;
use crate::trace::{FinishReason, GenStats, PromptToken, TokenRecord};

/// What the workbench needs to know about the loaded model (plain data, saved with sessions).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model folder's name.
    pub id: String,
    pub dir: PathBuf,
    pub model_type: String,
    /// A fingerprint of config.json and the weight files (see [`checkpoint_hash`]).
    pub checkpoint_hash: String,
    pub device: String,
    pub dtype: String,
    /// How the linear layers are stored when not in `dtype`: `q8_0`/`q4_0` (`--quant`), or
    /// `gguf-quantized` for a GGUF file's block-quantized tensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<String>,
    pub num_layers: usize,
    /// Decoder layers with routed experts.
    #[serde(default)]
    pub moe_layers: Vec<usize>,
    #[serde(default)]
    pub n_experts: usize,
    /// Experts chosen per token.
    #[serde(default)]
    pub top_k: usize,
    /// `max_position_embeddings`: the context the conversation must fit in.
    pub context: usize,
    #[serde(default)]
    pub eos_ids: Vec<u32>,
    /// `<think>` and `</think>`.
    #[serde(default)]
    pub think_ids: Option<(u32, u32)>,
    /// Sampling defaults from generation_config.json (R1's recommendation where it is silent).
    pub sampling: SamplingParams,
    /// generation_config.json's `max_new_tokens`, if any.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// Where the model runs when it is not on this machine (`--remote`): the server and the
    /// model's name there. Never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSource>,
    /// What this backend can give. Sessions saved before backends declared it were local.
    #[serde(default)]
    pub capabilities: Capabilities,
}

impl ModelInfo {
    /// How the status bar and session lists name where the model runs.
    pub fn location(&self) -> String {
        match &self.remote {
            Some(r) => format!("{} @ {}", r.model, r.url),
            None => self.id.clone(),
        }
    }
}

/// A model served elsewhere, reached over its OpenAI-compatible API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteSource {
    /// The `/v1` base URL.
    pub url: String,
    /// The model's name on that server.
    pub model: String,
    /// What kind of server it said it is (`owned_by` in `/v1/models`: vllm, sglang, llamacpp,
    /// thinkbench, ...), when it said.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
}

/// What a backend can give. The local engine gives everything; a server gives what its API
/// returns. Each missing capability carries the one line the interface shows where the user
/// looks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Token ids come back. Without them (most servers) a token's id in the trace is a stand-in
    /// derived from its text ([`stand_in_id`]), consistent within and across sessions.
    pub token_ids: bool,
    /// Why there are no log-probabilities; `None` when there are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_logprobs: Option<String>,
    /// The most alternatives per token the backend returns.
    pub max_top_logprobs: usize,
    /// Entropy is over the full distribution (local), or only over the alternatives that came
    /// back (a server), which bounds it from below.
    pub full_entropy: bool,
    /// Why there is no routing; `None` when there is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_routing: Option<String>,
    /// Routing comes with the gate weights (local, `thinkbench serve`), or as chosen experts
    /// only (SGLang, vLLM).
    pub routing_weights: bool,
    /// Re-scoring a finished sequence (opening a GRPO rollout in the chat).
    pub scoring: bool,
    /// A thinking budget, and continuing a thought the budget closed ("keep thinking").
    pub think_budget: bool,
    /// The next turn reuses the conversation's cached prefix and says how much (the local
    /// engine's KV cache; a server that reports `cached_tokens`).
    #[serde(default)]
    pub prefix_reuse: bool,
}

impl Default for Capabilities {
    /// The local engine's: everything.
    fn default() -> Self {
        Self {
            token_ids: true,
            no_logprobs: None,
            max_top_logprobs: 20,
            full_entropy: true,
            no_routing: None,
            routing_weights: true,
            scoring: true,
            think_budget: true,
            prefix_reuse: true,
        }
    }
}

/// The id a token gets in the trace when the server names it only by its text: FNV-1a of the
/// text with the top bit set, so it never collides with a real vocabulary id (< 2^31) and the
/// same text gets the same id in every session.
pub fn stand_in_id(text: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in text.as_bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h | 0x8000_0000
}

/// One request for the batching engine: `n` completions of one prompt. Its rows join the running
/// batch at the next decode step and leave it as each finishes.
#[derive(Debug)]
pub struct Submission {
    /// The rendered prompt (chat template and generation prompt included).
    pub prompt_ids: Vec<u32>,
    /// Completions drawn from the one prefill of the prompt; row `r` samples with the seed
    /// `sampling.seed` mixed with `r`, as GRPO groups and `generate` do.
    pub n: usize,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    /// Text that ends a row once it appears in the row's output (the row's text still contains
    /// it; the caller trims).
    pub stop_strings: Vec<String>,
    pub ignore_eos: bool,
    /// Record each token's log-probability and entropy; `top_logprobs` alternatives with it.
    pub logprobs: bool,
    pub top_logprobs: usize,
    /// Record the experts every MoE layer chose for every prompt and generated token.
    pub routing: bool,
    /// Set by the caller (e.g. the client went away): the rows leave the batch at the next step
    /// and finish as `Cancelled`.
    pub cancel: Arc<AtomicBool>,
    /// Where the engine reports this request's progress. A closed receiver cancels it too.
    pub events: UnboundedSender<Progress>,
}

/// What the batching engine reports about one [`Submission`], in this order: `Prompt` once,
/// then `Token`s of any rows interleaved with each row's `Finished`, then `Done` — or `Failed`
/// at any point, after which nothing more comes.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The prompt went through the model (with its routing when asked).
    Prompt { tokens: Vec<PromptToken> },
    /// Row `row` produced a token. Its `routing` is filled once the token itself went through
    /// the model, so the last token of a row has none.
    Token { row: usize, token: TokenRecord },
    /// Row `row` ended.
    Finished { row: usize, reason: FinishReason },
    /// Every row ended.
    Done { stats: GenStats },
    /// The request could not run or broke off; one line.
    Failed { error: String },
}

/// Why the engine would not take a submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the engine has stopped")]
    Stopped,
}

/// What the engine is doing and has done, for `/metrics` and for tests that must see a
/// cancellation happen inside the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Rows decoding now.
    pub running_rows: u64,
    /// Submissions waiting for room in the batch.
    pub waiting: u64,
    /// Submissions that ended: every row finished, was cancelled, or the request failed.
    pub completed: u64,
    /// Of those, the ones cancelled (the caller went away or asked).
    pub cancelled: u64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
}

/// A running model that takes [`Submission`]s: the local batching engine, or a stand-in in tests.
pub trait Backend: Send + Sync {
    fn info(&self) -> &ModelInfo;
    fn submit(&self, job: Submission) -> Result<(), Refused>;
    /// The engine's counters; a backend that keeps none reports zeros.
    fn counters(&self) -> Counters {
        Counters::default()
    }
}
