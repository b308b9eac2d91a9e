//! Small pieces every response shares: request ids, timestamps, `usage`, `finish_reason`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::backend::ModelInfo;
use crate::text::TextCodec;
use crate::trace::{FinishReason, Phase, TokenRecord};

/// Request ids unique across restarts (a random prefix per server) and within one (a counter).
#[derive(Debug)]
pub(crate) struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        Self {
            prefix: random_u64(),
            next: AtomicU64::new(0),
        }
    }

    /// `chatcmpl-…` or `cmpl-…`, as OpenAI names them.
    pub fn next(&self, kind: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{kind}-{:012x}{n:08x}", self.prefix & 0xffff_ffff_ffff)
    }
}

/// A random number from the standard library's per-process hash keys (no RNG crate feature
/// needed): enough for request ids and unseeded sampling.
pub(crate) fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The fields every response object and chunk starts with.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
}

impl Meta {
    pub fn new(id: String, object: &'static str, model: &str) -> Self {
        Self {
            id,
            object,
            created: unix_now(),
            model: model.to_string(),
        }
    }

    /// `{id, object, created, model, choices}` (more fields are added by the caller).
    pub fn object(&self, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
}

/// The ids whose text never shows in a reply: end of sequence (a special token, which
/// OpenAI-style servers skip) and, on chat, `<think>`/`</think>` (the split says it instead).
/// The model's and the tokenizer's lists together, in case one of them lacks an id.
pub(crate) fn hidden_ids(info: &ModelInfo, codec: &TextCodec, think_tags: bool) -> Vec<u32> {
    let mut ids: Vec<u32> = info
        .eos_ids
        .iter()
        .chain(codec.eos_ids())
        .copied()
        .collect();
    if think_tags {
        for (open, close) in [info.think_ids, codec.think_ids()].into_iter().flatten() {
            ids.extend([open, close]);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The wire name of why a row ended. `Cancelled` cannot reach a client (it is the client that
/// left), but a name is needed: vLLM's `abort`.
pub(crate) fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "abort",
    }
}

/// `usage` for a request: every generated token of every row counts, the think-phase ones
/// (tags included) also as `reasoning_tokens`.
pub(crate) fn usage<'a>(
    prompt_tokens: usize,
    rows: impl IntoIterator<Item = &'a [TokenRecord]>,
) -> Value {
    let (mut completion, mut reasoning) = (0usize, 0usize);
    for row in rows {
        completion += row.len();
        reasoning += row.iter().filter(|t| t.phase == Phase::Think).count();
    }
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_prefixed() {
        let ids = RequestIds::new();
        let (a, b) = (ids.next("chatcmpl"), ids.next("chatcmpl"));
        assert!(a.starts_with("chatcmpl-") && a != b, "{a} {b}");
        assert_ne!(random_u64(), random_u64());
    }
}
