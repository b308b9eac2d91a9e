//! `POST /v1/chat/completions`: messages through the chat template, reasoning apart from the
//! answer, streamed or not.
//!
//! A stream sends, per choice, a first chunk with the role; then one chunk per token that shows
//! text (`reasoning_content` or `content`), with the log-probabilities of the tokens since the
//! choice's last chunk; a finish chunk when the choice ends; then the `sglext` chunk (routing),
//! the usage chunk (`stream_options.include_usage`) and `[DONE]`. An engine failure after the
//! stream started is an error chunk, then `[DONE]`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::body::JsonObject;
use super::chat_row::ChatRow;
use super::fields::Fields;
use super::job::{self, Collected};
use super::logprobs::LogprobFormat;
use super::messages::{parse_messages, template_kwargs};
use super::output::{finish_reason, hidden_ids, usage, Meta};
use super::params::{check_model, Endpoint, GenParams};
use super::reasoning::{join, Delta};
use super::routing::{sglext, RoutingShape};
use super::sse::{self, error_chunk, ChunkWriter, Flow};
use super::{ApiError, Shared};
use crate::backend::{ModelInfo, Progress};
use crate::text::{ChatMessage, TextCodec, TextError};
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
    let messages = parse_messages(&f)?;
    let kwargs = template_kwargs(&f)?;
    let params = GenParams::parse(&f, info, Endpoint::Chat)?;
    let slot = shared.admission.admit()?;
    let prompt_ids = render(shared.codec.clone(), messages, kwargs).await?;
    let prompt_len = prompt_ids.len();
    let mut running = job::submit(&shared, prompt_ids, &params, "messages", slot)?;
    let first = running.first().await?;
    let mut reply = ChatReply::new(&shared, info, &params, prompt_len);
    if params.stream {
        return Ok(sse::response(running, first, reply));
    }
    let collected = running.collect(first, params.n).await?;
    Ok(Json(reply.whole(collected)).into_response())
}

/// Renders and tokenises off the async workers (a long conversation takes a while).
async fn render(
    codec: Arc<TextCodec>,
    messages: Vec<ChatMessage>,
    kwargs: Map<String, Value>,
) -> Result<Vec<u32>, ApiError> {
    let rendered =
        tokio::task::spawn_blocking(move || codec.encode_chat_with(&messages, true, &kwargs))
            .await
            .map_err(|e| ApiError::internal(format!("rendering the prompt failed: {e}")))?;
    match rendered {
        Ok(prompt) => Ok(prompt.ids),
        // The template refused these messages (roles out of order, say), or there is none:
        // the client can fix the first and use /v1/completions for the second.
        Err(e @ (TextError::Render { .. } | TextError::NoChatTemplate(_))) => {
            Err(ApiError::bad_field("messages", e.to_string()))
        }
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// A chat reply being built, streamed or whole.
struct ChatReply {
    meta: Meta,
    rows: Vec<ChatRow>,
    prompt: Vec<PromptToken>,
    prompt_len: usize,
    logprobs: Option<LogprobFormat>,
    routing: Option<RoutingShape>,
    include_usage: bool,
    started: bool,
}

impl ChatReply {
    fn new(shared: &Shared, info: &ModelInfo, params: &GenParams, prompt_len: usize) -> Self {
        let hidden = hidden_ids(info, &shared.codec, true);
        Self {
            meta: Meta::new(shared.ids.next("chatcmpl"), "chat.completion", &info.id),
            rows: (0..params.n)
                .map(|_| ChatRow::new(params.stop.clone(), hidden.clone()))
                .collect(),
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
            started: false,
        }
    }

    fn usage(&self) -> Value {
        usage(
            self.prompt_len,
            self.rows.iter().map(|r| r.tokens.as_slice()),
        )
    }

    fn sglext(&self) -> Option<Value> {
        let rows: Vec<&[TokenRecord]> = self.rows.iter().map(|r| r.tokens.as_slice()).collect();
        self.routing.map(|shape| sglext(shape, &self.prompt, &rows))
    }

    /// The non-streamed response.
    fn whole(&mut self, collected: Collected) -> Value {
        self.prompt = collected.prompt;
        let mut choices = Vec::new();
        let rows = collected.rows.into_iter().zip(collected.finish);
        for (index, (tokens, finish)) in rows.enumerate() {
            let Some(row) = self.rows.get_mut(index) else {
                break;
            };
            let mut deltas = Vec::new();
            for t in tokens {
                deltas.extend(row.push(t, self.logprobs.as_ref()));
            }
            deltas.extend(row.finish(finish.unwrap_or(FinishReason::Length)));
            let (reasoning, content) = join(deltas);
            let logprobs = self
                .logprobs
                .as_ref()
                .map(|_| json!({"content": row.take_logprobs()}));
            let message = json!({
                "role": "assistant",
                "content": content,
                "reasoning_content": reasoning,
            });
            choices.push(json!({
                "index": index,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": finish_reason(row.finish.unwrap_or(FinishReason::Length)),
            }));
        }
        self.meta.object = "chat.completion";
        let mut out = self.meta.object(choices);
        out["usage"] = self.usage();
        if let Some(ext) = self.sglext() {
            out["sglext"] = ext;
        }
        out
    }

    /// A streamed chunk for one choice.
    fn chunk(
        &self,
        index: usize,
        delta: Value,
        logprobs: Vec<Value>,
        finish: Option<&str>,
    ) -> Value {
        let logprobs = match (&self.logprobs, logprobs.is_empty()) {
            (Some(_), false) => json!({"content": logprobs}),
            _ => Value::Null,
        };
        self.meta.object(vec![json!({
            "index": index,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": finish,
        })])
    }

    fn delta_chunks(&mut self, index: usize, deltas: Vec<Delta>) -> Vec<Value> {
        deltas
            .into_iter()
            .map(|d| {
                let delta = match d {
                    Delta::Reasoning(t) => json!({"reasoning_content": t}),
                    Delta::Content(t) => json!({"content": t}),
                };
                let lp = self.rows[index].take_logprobs();
                self.chunk(index, delta, lp, None)
            })
            .collect()
    }

    fn finish_chunks(&mut self, index: usize, reason: FinishReason) -> Vec<Value> {
        let deltas = self.rows[index].finish(reason);
        let mut out = self.delta_chunks(index, deltas);
        let lp = self.rows[index].take_logprobs();
        out.push(self.chunk(index, json!({}), lp, Some(finish_reason(reason))));
        out
    }

    /// After every choice finished: routing, usage.
    fn trailer(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        for index in 0..self.rows.len() {
            if self.rows[index].finish.is_none() {
                out.extend(self.finish_chunks(index, FinishReason::Length));
            }
        }
        if let Some(ext) = self.sglext() {
            let mut chunk = self.meta.object(Vec::new());
            chunk["sglext"] = ext;
            out.push(chunk);
        }
        if self.include_usage {
            let mut chunk = self.meta.object(Vec::new());
            chunk["usage"] = self.usage();
            out.push(chunk);
        }
        out
    }
}

impl ChunkWriter for ChatReply {
    fn on_progress(&mut self, progress: Progress) -> Flow {
        self.meta.object = "chat.completion.chunk";
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            for index in 0..self.rows.len() {
                let delta = json!({"role": "assistant", "content": ""});
                out.push(self.chunk(index, delta, Vec::new(), None));
            }
        }
        match progress {
            Progress::Prompt { tokens } => self.prompt = tokens,
            Progress::Token { row, token } if row < self.rows.len() => {
                let deltas = self.rows[row].push(token, self.logprobs.as_ref());
                out.extend(self.delta_chunks(row, deltas));
            }
            Progress::Token { .. } => {}
            Progress::Finished { row, reason } if row < self.rows.len() => {
                if self.rows[row].finish.is_none() {
                    out.extend(self.finish_chunks(row, reason));
                }
            }
            Progress::Finished { .. } => {}
            Progress::Done { .. } => {
                out.extend(self.trailer());
                return Flow::End(out);
            }
            Progress::Failed { error } => {
                out.push(error_chunk(error));
                return Flow::End(out);
            }
        }
        Flow::More(out)
    }
}
