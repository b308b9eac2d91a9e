//! `thinkbench serve`: an OpenAI-compatible HTTP server over the batching engine (any
//! [`Backend`]). This module is the HTTP side only: it parses and checks requests, renders the
//! prompt, submits it, and turns the engine's [`Progress`](crate::backend::Progress) into
//! OpenAI's response shapes, streamed (SSE) or not. No tensors here.
//!
//! # Endpoints
//! `GET /health`, `GET /v1/models`, `GET /metrics` (Prometheus text: the engine's counters),
//! `POST /v1/chat/completions`, `POST /v1/completions`. Other
//! paths answer 404 and other methods 405, both in OpenAI's error shape ([`ApiError`]). With an
//! API key set, every `/v1` path needs `Authorization: Bearer KEY`; `/health` stays open (as in
//! vLLM), so load balancers can probe it. Bodies are read as JSON whatever the Content-Type
//! says (up to 32 MiB; 413 beyond). A client that disconnects, while its reply is pending or
//! streaming, cancels its generation at the engine's next step.
//!
//! # Decisions where the anchors differ
//! - **Context.** A prompt that leaves no room for one token is refused (400
//!   `context_length_exceeded`); otherwise `max_tokens` is clamped to what the context leaves (as
//!   llama.cpp does; vLLM refuses). Without `max_tokens` a reply may run until the context is full.
//! - **`n`** is 1..=64: rows from one prefill, as GRPO groups are.
//! - **Seeds.** Without `seed`, each request draws a fresh one (as OpenAI and vLLM sample);
//!   with it, row `r` samples with the seed mixed with `r` (the engine's rule).
//! - **Reasoning.** `reasoning_content` is the text of the think-phase tokens without the
//!   `<think>`/`</think>` tokens, with surrounding whitespace trimmed; `content` is the answer
//!   with its leading whitespace trimmed when the model thought first (DeepSeek and SGLang do
//!   both). `reasoning_content` is null when there is no reasoning text. Streamed deltas
//!   concatenate to exactly the non-streamed strings. `/v1/completions` returns the raw text,
//!   tags included. End-of-sequence tokens never show as text.
//! - **Stop strings** apply to the whole output text, as the engine matches them; the stop
//!   string and anything after it are never returned. Streams hold back text that may be the
//!   start of a stop string until it is resolved.
//! - **Log-probabilities** cover every generated token (reasoning, tags and answer), in order,
//!   so they align with `usage.completion_tokens`. Streamed, a token that shows no text (a tag,
//!   held-back text) has its entry sent with the next chunk of its choice, never dropped.
//! - **Routing** on a model without MoE layers is refused (400 `return_routed_experts`): there
//!   is nothing to return.
//! - **`max_queue`** counts requests admitted and not yet finished; beyond it, 503 with
//!   `Retry-After`. 0 means no limit.
//! - Fields the server cannot honour but a client may rely on (`logit_bias`, non-zero
//!   `presence_penalty`/`frequency_penalty`, `echo`, `best_of` > 1, `suffix`) are refused by
//!   name; every other unknown field is ignored, since clients send many.
//!
//! # thinkbench's extensions (documented, additive)
//! - Every chat log-probability item and alternative carries the token's `id` (as llama.cpp's
//!   server adds it). `"return_tokens_as_token_ids": true` (vLLM's request field) writes each
//!   token string as `token_id:ID`, in both log-probability shapes.
//! - `sglext` (see `routing.rs`) carries, beside SGLang's `routed_experts`:
//!   `routed_weights` (base64 of little-endian float32, the same `[tokens, num_layers, top_k]`
//!   shape, 0 where `routed_experts` is -1: the factors each chosen expert's output was
//!   multiplied by) and `routed_experts_shape: [tokens, num_layers, top_k]`. SGLang puts
//!   `sglext` on the response, not on a choice, and with `n > 1` returns the first choice's
//!   routing only; we do the same, and add `choices: [{index, routed_experts, routed_weights,
//!   routed_experts_shape}, ...]` inside `sglext` when `n > 1`, so every row's routing arrives.
//! - `ignore_eos` (vLLM's field) and `repetition_penalty` are honoured.
//! - `usage.completion_tokens_details.reasoning_tokens` is also given on `/v1/completions`.

mod admission;
mod auth;
mod body;
mod chat;
mod chat_row;
mod completions;
pub mod error;
pub(crate) mod fields;
mod info;
mod job;
mod logprobs;
mod messages;
mod output;
mod params;
mod prompt;
mod reasoning;
mod routing;
mod row_text;
mod sse;
mod stop;
#[cfg(test)]
mod tests;

pub use error::ApiError;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{middleware, Router};

use crate::backend::Backend;
use crate::text::TextCodec;

use admission::Admission;
use output::RequestIds;

/// How `thinkbench serve` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks any free port (the printed line says which).
    pub port: u16,
    /// When set, `/v1/*` needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Requests admitted and not yet finished before new ones get 503; 0 means no limit.
    pub max_queue: usize,
}

/// The largest request body read (a long prompt as token ids is a few MB of JSON).
const MAX_BODY_BYTES: usize = 32 << 20;

/// How long in-flight requests may run on after Ctrl-C/SIGTERM before the server exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every handler reads: the engine, the tokenizer and the server's bookkeeping.
pub(crate) struct Shared {
    pub backend: Arc<dyn Backend>,
    pub codec: Arc<TextCodec>,
    pub admission: Arc<Admission>,
    pub api_key: Option<String>,
    pub ids: RequestIds,
}

/// The server's routes over `backend`, ready for [`serve_on`] (or a test's listener).
pub fn router(backend: Arc<dyn Backend>, codec: Arc<TextCodec>, opts: &ServeOptions) -> Router {
    let shared = Arc::new(Shared {
        backend,
        codec,
        admission: Arc::new(Admission::new(opts.max_queue)),
        api_key: opts.api_key.clone().filter(|k| !k.is_empty()),
        ids: RequestIds::new(),
    });
    Router::new()
        .route("/health", only(get(info::health), "GET, HEAD"))
        .route("/v1/models", only(get(info::models), "GET, HEAD"))
        .route("/metrics", only(get(info::metrics), "GET, HEAD"))
        .route("/v1/chat/completions", only(post(chat::handle), "POST"))
        .route("/v1/completions", only(post(completions::handle), "POST"))
        .fallback(unknown_path)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// A route's methods, with other methods answered 405 in the error shape (axum's own 405 has an
/// empty body).
fn only(route: MethodRouter<Arc<Shared>>, allow: &'static str) -> MethodRouter<Arc<Shared>> {
    route.fallback(move |method: Method, uri: Uri| async move {
        let mut resp = ApiError::wrong_method(method.as_str(), uri.path()).into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        resp
    })
}

async fn unknown_path(method: Method, uri: Uri) -> Response {
    ApiError::unknown_path(method.as_str(), uri.path()).into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// the open connections to finish.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs the server on its own tokio runtime until Ctrl-C or SIGTERM. Prints one line once it
/// listens: `thinkbench serve: listening on http://HOST:PORT (model NAME)`, with the address
/// actually bound (the real port when `port` is 0). Call it from a plain thread, not from inside
/// another tokio runtime.
pub fn run(
    backend: Arc<dyn Backend>,
    codec: Arc<TextCodec>,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    // The engine runs on its own thread; HTTP work is parsing and copying, so two workers
    // keep up with many streams.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("serve-http")
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    let model = backend.info().id.clone();
    let app = router(backend, codec, &opts);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "thinkbench serve: listening on http://{addr} (model {model})"
        )?;
        out.flush()?;
        drop(out);

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(serve_on(listener, app, async {
            let _ = stop_rx.await;
        }));
        tokio::select! {
            res = &mut server => return Ok(res.context("the HTTP server task failed")??),
            _ = termination() => {}
        }
        let _ = stop_tx.send(());
        // Open streams may run long: past the grace period the runtime is dropped, which drops
        // their bodies and so cancels their generations.
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(res) => Ok(res.context("the HTTP server task failed")??),
            Err(_) => Ok(()),
        }
    })
}

/// Resolves on Ctrl-C, or SIGTERM where there is one.
async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => ctrl_c.await,
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
