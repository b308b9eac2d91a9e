//! One choice of a chat reply as it is built, token by token: its text through the stop strings
//! and the reasoning split, its log-probability entries, and its tokens (for usage and routing).
//! The non-streamed reply is built from the same steps, so both forms say the same.

use serde_json::Value;

use super::logprobs::LogprobFormat;
use super::reasoning::{Delta, ReasoningSplitter};
use super::row_text::RowText;
use crate::trace::{FinishReason, TokenRecord};

pub(crate) struct ChatRow {
    text: RowText,
    split: ReasoningSplitter,
    pub tokens: Vec<TokenRecord>,
    /// Entries not sent yet (streaming) or all of them (not streaming).
    logprobs: Vec<Value>,
    pub finish: Option<FinishReason>,
}

impl ChatRow {
    /// `hidden`: the ids whose text never shows (end of sequence, the think tags).
    pub fn new(stops: Vec<String>, hidden: Vec<u32>) -> Self {
        Self {
            text: RowText::new(stops, hidden),
            split: ReasoningSplitter::default(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            finish: None,
        }
    }

    /// Takes a token; returns the text it released. Tokens after the row finished are ignored
    /// (the engine sends none).
    pub fn push(&mut self, token: TokenRecord, logprobs: Option<&LogprobFormat>) -> Vec<Delta> {
        if self.finish.is_some() {
            return Vec::new();
        }
        if let Some(f) = logprobs {
            self.logprobs.push(f.chat_entry(&token));
        }
        let pieces = self.text.push(&token);
        self.tokens.push(token);
        pieces
            .into_iter()
            .filter_map(|p| self.split.push(p))
            .collect()
    }

    /// The row ended: returns the text that was held back for a possible stop string.
    pub fn finish(&mut self, reason: FinishReason) -> Vec<Delta> {
        if self.finish.is_some() {
            return Vec::new();
        }
        self.finish = Some(reason);
        let pieces = self.text.finish();
        pieces
            .into_iter()
            .filter_map(|p| self.split.push(p))
            .collect()
    }

    /// The log-probability entries gathered since the last call.
    pub fn take_logprobs(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.logprobs)
    }
}
