//! `POST /v1/completions`: raw text (or token ids) in, raw text out: no template, and the think
//! tags stay in the text, as the model wrote them (end-of-sequence tokens never show). Legacy
//! log-probabilities (`logprobs: K`). Streams as chat does: text chunks, a finish chunk per
//! choice, `sglext`, usage, `[DONE]`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::body::JsonObject;
use super::fields::Fields;
use super::job::{self, Collected};
use super::logprobs::LogprobFormat;
use super::output::{finish_reason, hidden_ids, usage, Meta};
use super::params::{check_model, Endpoint, GenParams};
use super::prompt::{parse_prompt, PromptInput};
use super::routing::{sglext, RoutingShape};
use super::row_text::RowText;
use super::sse::{self, error_chunk, ChunkWriter, Flow};
use super::{ApiError, Shared};
use crate::backend::{ModelInfo, Progress};
use crate::trace::{FinishReason, PromptToken, TokenRecord};

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    JsonObject(body): JsonObject,
) -> Response {
    match respond(shared, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn respond(shared: Arc<Shared>, body: Map<String, Value>) -> Result<Response, ApiError> {
    let f = Fields(&body);
    let info = shared.backend.info();
    check_model(&f, info)?;
    let prompt = parse_prompt(&f, shared.codec.vocab_size())?;
    let params = GenParams::parse(&f, info, Endpoint::Completions)?;
    let slot = shared.admission.admit()?;
    let prompt_ids = match prompt {
        PromptInput::Ids(ids) => ids,
        PromptInput::Text(text) => {
            let codec = shared.codec.clone();
            tokio::task::spawn_blocking(move || codec.encode_raw(&text))
                .await
                .map_err(|e| ApiError::internal(format!("tokenising the prompt failed: {e}")))?
                .map_err(|e| ApiError::internal(e.to_string()))?
        }
    };
    let prompt_len = prompt_ids.len();
    let mut running = job::submit(&shared, prompt_ids, &params, "prompt", slot)?;
    let first = running.first().await?;
    let mut reply = CompletionReply::new(&shared, info, &params, prompt_len);
    if params.stream {
        return Ok(sse::response(running, first, reply));
    }
    let collected = running.collect(first, params.n).await?;
    Ok(Json(reply.whole(collected)).into_response())
}

/// One choice as it is built.
struct Row {
    text: RowText,
    tokens: Vec<TokenRecord>,
    /// Where each token's text starts in the output, in characters.
    offsets: Vec<usize>,
    chars: usize,
    /// The first token whose log-probabilities were not sent yet.
    unsent: usize,
    finish: Option<FinishReason>,
}

impl Row {
    fn push(&mut self, token: TokenRecord, eos: &[u32]) -> String {
        if self.finish.is_some() {
            return String::new();
        }
        self.offsets.push(self.chars);
        if !eos.contains(&token.id) {
            self.chars += token.text.chars().count();
        }
        let out: String = self.text.push(&token).iter().map(|p| p.text()).collect();
        self.tokens.push(token);
        out
    }

    fn finish(&mut self, reason: FinishReason) -> String {
        if self.finish.is_some() {
            return String::new();
        }
        self.finish = Some(reason);
        self.text.finish().iter().map(|p| p.text()).collect()
    }
}

struct CompletionReply {
    meta: Meta,
    rows: Vec<Row>,
    eos: Vec<u32>,
    prompt: Vec<PromptToken>,
    prompt_len: usize,
    logprobs: Option<LogprobFormat>,
    routing: Option<RoutingShape>,
    include_usage: bool,
}

impl CompletionReply {
    fn new(shared: &Shared, info: &ModelInfo, params: &GenParams, prompt_len: usize) -> Self {
        let eos = hidden_ids(info, &shared.codec, false);
        let row = || Row {
            text: RowText::new(params.stop.clone(), eos.clone()),
            tokens: Vec::new(),
            offsets: Vec::new(),
            chars: 0,
            unsent: 0,
            finish: None,
        };
        Self {
            meta: Meta::new(shared.ids.next("cmpl"), "text_completion", &info.id),
            rows: (0..params.n).map(|_| row()).collect(),
            eos: eos.clone(),
            prompt: Vec::new(),
            prompt_len,
            logprobs: params.logprobs.map(|top| LogprobFormat {
                codec: shared.codec.clone(),
                top,
                tokens_as_ids: params.tokens_as_ids,
            }),
            routing: params.routing.then_some(RoutingShape {
                layers: info.num_layers,
                top_k: info.top_k,
            }),
            include_usage: params.include_usage,
        }
    }

    /// The log-probabilities of row `index`'s tokens not sent yet (all of them, unstreamed);
    /// null when there are none.
    fn take_logprobs(&mut self, index: usize) -> Value {
        let Some(f) = &self.logprobs else {
            return Value::Null;
        };
        let row = &mut self.rows[index];
        if row.unsent == row.tokens.len() {
            return Value::Null;
        }
        let from = std::mem::replace(&mut row.unsent, row.tokens.len());
        f.legacy(&row.tokens[from..], &row.offsets[from..])
    }

    fn choice(&mut self, index: usize, text: String, finish: Option<FinishReason>) -> Value {
        json!({
            "index": index,
            "text": text,
            "logprobs": self.take_logprobs(index),
            "finish_reason": finish.map(finish_reason),
        })
    }

    fn extras(&self) -> (Value, Option<Value>) {
        let rows: Vec<&[TokenRecord]> = self.rows.iter().map(|r| r.tokens.as_slice()).collect();
        let usage = usage(self.prompt_len, rows.iter().copied());
        (
            usage,
            self.routing.map(|shape| sglext(shape, &self.prompt, &rows)),
        )
    }

    fn whole(&mut self, collected: Collected) -> Value {
        self.prompt = collected.prompt;
        let mut choices = Vec::new();
        let rows = collected.rows.into_iter().zip(collected.finish);
        for (index, (tokens, finish)) in rows.enumerate().take(self.rows.len()) {
            let mut text = String::new();
            for t in tokens {
                text.push_str(&self.rows[index].push(t, &self.eos));
            }
            let reason = finish.unwrap_or(FinishReason::Length);
            text.push_str(&self.rows[index].finish(reason));
            choices.push(self.choice(index, text, Some(reason)));
        }
        let mut out = self.meta.object(choices);
        let (usage, ext) = self.extras();
        out["usage"] = usage;
        if let Some(ext) = ext {
            out["sglext"] = ext;
        }
        out
    }

    fn finish_chunks(&mut self, index: usize, reason: FinishReason) -> Vec<Value> {
        let mut out = Vec::new();
        let rest = self.rows[index].finish(reason);
        if !rest.is_empty() {
            let c = self.choice(index, rest, None);
            out.push(self.meta.object(vec![c]));
        }
        let c = self.choice(index, String::new(), Some(reason));
        out.push(self.meta.object(vec![c]));
        out
    }
}

impl ChunkWriter for CompletionReply {
    fn on_progress(&mut self, progress: Progress) -> Flow {
        let mut out = Vec::new();
        match progress {
            Progress::Prompt { tokens } => self.prompt = tokens,
            Progress::Token { row, token } if row < self.rows.len() => {
                let text = self.rows[row].push(token, &self.eos);
                if !text.is_empty() {
                    let c = self.choice(row, text, None);
                    out.push(self.meta.object(vec![c]));
                }
            }
            Progress::Finished { row, reason } if row < self.rows.len() => {
                if self.rows[row].finish.is_none() {
                    out.extend(self.finish_chunks(row, reason));
                }
            }
            Progress::Token { .. } | Progress::Finished { .. } => {}
            Progress::Done { .. } => {
                for index in 0..self.rows.len() {
                    if self.rows[index].finish.is_none() {
                        out.extend(self.finish_chunks(index, FinishReason::Length));
                    }
                }
                let (usage, ext) = self.extras();
                if let Some(ext) = ext {
                    let mut chunk = self.meta.object(Vec::new());
                    chunk["sglext"] = ext;
                    out.push(chunk);
                }
                if self.include_usage {
                    let mut chunk = self.meta.object(Vec::new());
                    chunk["usage"] = usage;
                    out.push(chunk);
                }
                return Flow::End(out);
            }
            Progress::Failed { error } => return Flow::End(vec![error_chunk(error)]),
        }
        Flow::More(out)
    }
}
