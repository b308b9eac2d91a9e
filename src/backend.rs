//! The seam between whoever runs a model and whoever asks it for tokens: plain data only (no
//! tensors, no HTTP types), so the workbench, `serve` and their tests build on it without libtorch.
//!
//! - [`ModelInfo`]: what a caller needs to know about the loaded model.
//! - [`Submission`] / [`Progress`]: one request to the batching engine (`thinkbench serve`) and
//!   what it reports back, row by row, as the shared decode steps go.

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
