//! Log-probabilities in the two wire shapes: chat's `{"content": [{token, logprob, bytes,
//! top_logprobs}]}` and the legacy completions object `{tokens, token_logprobs, top_logprobs,
//! text_offset}`. Values are the engine's: log-softmax of the raw logits, before temperature
//! and filtering (as `thinkbench generate --json`).
//!
//! Token strings are each id decoded on its own (a lone byte of a multi-byte character shows
//! as U+FFFD, whose bytes are then what `bytes` holds). thinkbench adds `id` to every chat item
//! and alternative (as llama.cpp's server does); with `return_tokens_as_token_ids` the strings
//! are `token_id:ID` (as vLLM writes them).

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::text::TextCodec;
use crate::trace::TokenRecord;

#[derive(Clone)]
pub(crate) struct LogprobFormat {
    pub codec: Arc<TextCodec>,
    /// Alternatives per token.
    pub top: usize,
    pub tokens_as_ids: bool,
}

impl LogprobFormat {
    fn token_string(&self, id: u32) -> String {
        if self.tokens_as_ids {
            format!("token_id:{id}")
        } else {
            self.codec.token_text(id)
        }
    }

    fn item(&self, id: u32, logprob: f32) -> Map<String, Value> {
        let token = self.token_string(id);
        let mut m = Map::new();
        m.insert("bytes".into(), json!(token.as_bytes()));
        m.insert("token".into(), json!(token));
        m.insert("logprob".into(), json!(logprob));
        m.insert("id".into(), json!(id));
        m
    }

    /// One entry of chat's `logprobs.content`.
    pub fn chat_entry(&self, t: &TokenRecord) -> Value {
        let top: Vec<Value> = t
            .top
            .iter()
            .take(self.top)
            .map(|&(id, lp)| Value::Object(self.item(id, lp)))
            .collect();
        let mut entry = self.item(t.id, t.logprob);
        entry.insert("top_logprobs".into(), Value::Array(top));
        Value::Object(entry)
    }

    /// The legacy object for `tokens`, whose texts start at the character offsets `offsets`.
    pub fn legacy(&self, tokens: &[TokenRecord], offsets: &[usize]) -> Value {
        let top: Vec<Value> = tokens
            .iter()
            .map(|t| {
                // A dict keyed by token string: of two alternatives that print alike, the more
                // likely (first) one stays.
                let mut alts = Map::new();
                for &(id, lp) in t.top.iter().take(self.top) {
                    alts.entry(self.token_string(id)).or_insert(json!(lp));
                }
                Value::Object(alts)
            })
            .collect();
        json!({
            "tokens": tokens.iter().map(|t| self.token_string(t.id)).collect::<Vec<_>>(),
            "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
            "top_logprobs": top,
            "text_offset": offsets,
        })
    }
}
