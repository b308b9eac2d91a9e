//! Plain per-token records: what every consumer of generation reads (the JSON trace, the TUI's
//! inspectors, saved sessions, GRPO statistics). No tensors here.

use serde::{Deserialize, Serialize};

pub use crate::text::Phase;

/// The experts one MoE layer chose for one token, paired with the factors their outputs were
/// multiplied by in the forward pass (after normalisation and `routed_scaling_factor`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRouting {
    pub layer: usize,
    pub experts: Vec<u32>,
    pub weights: Vec<f32>,
}

/// A prompt token with its routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptToken {
    pub id: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routing: Vec<LayerRouting>,
}

/// A generated token: what was chosen, how likely it was, what else was likely, and where the
/// model routed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: u32,
    pub text: String,
    /// log-softmax of the raw logits (before temperature and filtering).
    pub logprob: f32,
    /// The most likely alternatives as `[id, logprob]`, best first.
    pub top: Vec<(u32, f32)>,
    /// Entropy (nats) of the raw next-token distribution.
    pub entropy: f32,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routing: Vec<LayerRouting>,
    /// Injected rather than sampled (the thinking budget closed the thought).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Hit max_new_tokens.
    Length,
    /// An end-of-sequence id or a stop string.
    Stop,
    /// Cancelled by the caller.
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Tokens the model reasoned with, as a server counts them
    /// (`completion_tokens_details.reasoning_tokens`): all a closed model admits to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<usize>,
    /// Prompt tokens a server took from its cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<usize>,
}

/// What the decode loop would have recorded: the prompt with its routing, and every completion
/// token with its logprob, alternatives, entropy, phase and routing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoredTrace {
    pub prompt: Vec<PromptToken>,
    pub tokens: Vec<TokenRecord>,
}
