//! One request's life in the engine: fit it in the context, submit it, receive its progress,
//! and cancel it when whoever holds it (the handler, the response stream) is dropped: a client
//! that disconnects drops them, and the engine drops its rows at the next step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::admission::Slot;
use super::params::GenParams;
use super::{ApiError, Shared};
use crate::backend::{Progress, Refused, Submission};
use crate::trace::{FinishReason, PromptToken, TokenRecord};

/// How many tokens to allow: refuse a prompt that leaves no room for one (`param` names the
/// field it came from); otherwise clamp `max_tokens` to what the context leaves.
pub(crate) fn token_budget(
    prompt_len: usize,
    context: usize,
    max_tokens: Option<usize>,
    param: &str,
) -> Result<usize, ApiError> {
    if prompt_len + 1 > context {
        return Err(ApiError::context_exceeded(param, prompt_len, context));
    }
    let room = context - prompt_len;
    Ok(max_tokens.map_or(room, |m| m.min(room)))
}

/// Sets the submission's cancel flag when dropped, unless the request completed.
struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Release);
        }
    }
}

/// A submitted request: its events, and the guards that cancel it and free its queue place.
pub(crate) struct Running {
    events: UnboundedReceiver<Progress>,
    cancel: CancelOnDrop,
    _slot: Slot,
}

/// Everything a finished request produced.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub prompt: Vec<PromptToken>,
    pub rows: Vec<Vec<TokenRecord>>,
    pub finish: Vec<Option<FinishReason>>,
}

/// Submits `prompt_ids` with `params`; `param` names the prompt's field for a context error.
pub(crate) fn submit(
    shared: &Shared,
    prompt_ids: Vec<u32>,
    params: &GenParams,
    param: &str,
    slot: Slot,
) -> Result<Running, ApiError> {
    let info = shared.backend.info();
    let max_new_tokens = token_budget(prompt_ids.len(), info.context, params.max_tokens, param)?;
    let (tx, events) = unbounded_channel();
    let flag = Arc::new(AtomicBool::new(false));
    let job = Submission {
        prompt_ids,
        n: params.n,
        sampling: params.sampling.clone(),
        max_new_tokens,
        stop_strings: params.stop.clone(),
        ignore_eos: params.ignore_eos,
        logprobs: params.logprobs.is_some(),
        top_logprobs: params.logprobs.unwrap_or(0),
        routing: params.routing,
        cancel: flag.clone(),
        events: tx,
    };
    shared.backend.submit(job).map_err(|e| match e {
        Refused::Stopped => ApiError::engine_stopped(format!("cannot generate: {e}")),
    })?;
    Ok(Running {
        events,
        cancel: CancelOnDrop { flag, armed: true },
        _slot: slot,
    })
}

impl Running {
    /// The next event; a channel the engine closed without `Done` reads as `Failed`.
    pub async fn next(&mut self) -> Progress {
        match self.events.recv().await {
            Some(Progress::Done { stats }) => {
                // Nothing left to cancel.
                self.cancel.armed = false;
                Progress::Done { stats }
            }
            Some(p) => p,
            None => Progress::Failed {
                error: "the engine stopped before finishing this request".into(),
            },
        }
    }

    /// The first event, which must not be a failure: a request that fails before producing
    /// anything gets an HTTP error status instead of a broken stream.
    pub async fn first(&mut self) -> Result<Progress, ApiError> {
        match self.next().await {
            Progress::Failed { error } => Err(ApiError::engine_failed(error)),
            p => Ok(p),
        }
    }

    /// Receives until `Done`, starting with `first` (from [`Self::first`]).
    pub async fn collect(mut self, first: Progress, n: usize) -> Result<Collected, ApiError> {
        let mut out = Collected {
            rows: vec![Vec::new(); n],
            finish: vec![None; n],
            ..Collected::default()
        };
        let mut event = first;
        loop {
            match event {
                Progress::Prompt { tokens } => out.prompt = tokens,
                Progress::Token { row, token } => {
                    if let Some(r) = out.rows.get_mut(row) {
                        r.push(token);
                    }
                }
                Progress::Finished { row, reason } => {
                    if let Some(f) = out.finish.get_mut(row) {
                        *f = Some(reason);
                    }
                }
                Progress::Done { .. } => return Ok(out),
                Progress::Failed { error } => return Err(ApiError::engine_failed(error)),
            }
            event = self.next().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_only_a_prompt_that_leaves_no_room() {
        assert_eq!(token_budget(10, 16, None, "prompt").unwrap(), 6);
        assert_eq!(token_budget(10, 16, Some(3), "prompt").unwrap(), 3);
        assert_eq!(token_budget(10, 16, Some(100), "prompt").unwrap(), 6);
        assert_eq!(token_budget(15, 16, None, "prompt").unwrap(), 1);
        let e = token_budget(16, 16, Some(1), "messages").unwrap_err();
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert_eq!(e.param.as_deref(), Some("messages"));
    }
}
