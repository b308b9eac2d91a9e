//! A model behind an OpenAI-compatible server as a chat backend (`--remote URL`): SGLang, vLLM,
//! llama.cpp, Ollama, `thinkbench serve`, the DeepSeek and OpenAI APIs. A thread per connection,
//! driven like the local engine (jobs in, [`EngineEvent`]s out), so the workbench, `record` and
//! `generate` need no other path. What the server gives — reasoning, log-probabilities,
//! routing — becomes the same per-token trace as a local model's; what it does not is declared
//! in the model's [`Capabilities`] and said once, where the user looks for it.
//!
//! - [`client`]: HTTP (the model list, chat completions); errors as one line each
//! - [`sse`], [`wire`], [`npy`]: the stream's lines, its JSON chunks, vLLM's NumPy routing
//! - [`think`]: `<think>…</think>` split out of the content when the server has no reasoning parser
//! - [`request`]: the request body, and what to leave out when the server refuses a field
//! - [`reply`]: chunks into tokens with phases, routing placed on them
//! - [`model_shape`]: layers, MoE layers and top-k, from config.json or the server

pub mod client;
pub mod model_shape;
pub mod npy;
pub mod reply;
pub mod request;
pub mod sse;
pub mod think;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::backend::chat::{Engine, EngineEvent, GenSpec, Job, RemoteConfig};
use crate::backend::{Capabilities, ModelInfo, RemoteSource};
use crate::runtime::SamplingParams;
use crate::trace::{FinishReason, GenStats, PromptToken};

use client::{Client, HttpError};
use model_shape::ModelShape;
use reply::Reply;
use request::{Accepted, Ask};

/// Starts a connection's thread. It asks the server for its models first and reports `Ready`
/// (or `LoadFailed` for what only the user can fix: a missing key variable, a bad config file,
/// a model the server does not have). A server that does not answer yet is tried again at the
/// next message, so the workbench stays up.
pub fn spawn(config: RemoteConfig, events: UnboundedSender<EngineEvent>) -> Engine {
    Engine::start("thinkbench-remote", move |jobs| {
        let mut remote = match Remote::open(config, events.clone()) {
            Ok(r) => r,
            Err(e) => {
                let _ = events.send(EngineEvent::LoadFailed(e));
                return;
            }
        };
        remote.run(jobs);
    })
}

/// A connection and what it has learned about the server.
pub struct Remote {
    config: RemoteConfig,
    client: Client,
    events: UnboundedSender<EngineEvent>,
    info: ModelInfo,
    shape: Option<ModelShape>,
    /// The model list has been read (the model's name and the server's kind are known).
    discovered: bool,
    accepted: Accepted,
    /// The thinking budget's absence was said.
    said_no_budget: bool,
}

impl Remote {
    pub fn open(
        config: RemoteConfig,
        events: UnboundedSender<EngineEvent>,
    ) -> Result<Self, String> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(format!(
                "--remote {}: give the server's base URL with http:// or https:// (e.g. http://127.0.0.1:8000/v1)",
                config.url
            ));
        }
        let key = match &config.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                format!("--api-key-env {var}: the environment variable {var} is not set")
            })?),
            None => None,
        };
        let shape = config.config.as_deref().map(ModelShape::load).transpose()?;
        let client = Client::new(&config.url, key);
        let mut r = Self {
            info: ModelInfo::default(),
            client,
            events,
            shape,
            discovered: false,
            accepted: Accepted::default(),
            said_no_budget: false,
            config,
        };
        r.info = r.describe("");
        match r.discover() {
            Ok(()) => {}
            // The user named a model the server does not have: nothing to retry.
            Err(Discovery::NoSuchModel(e)) => return Err(e),
            Err(Discovery::Unavailable(e)) => {
                let _ = r.events.send(EngineEvent::Note {
                    text: format!("{e}; sending a message tries again"),
                });
            }
        }
        let _ = r.events.send(EngineEvent::Ready(Box::new(r.info.clone())));
        Ok(r)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&mut self, jobs: Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            let ev = match job {
                Job::Generate { spec, cancel } => {
                    let job = spec.job;
                    match self.generate(&spec, &cancel) {
                        Ok((reason, stats)) => EngineEvent::Finished { job, reason, stats },
                        Err(error) => EngineEvent::Failed { job, error },
                    }
                }
                Job::Score(spec) => EngineEvent::Failed {
                    job: spec.job,
                    error: "a server cannot re-score a sequence; open the rollout with its checkpoint loaded locally".into(),
                },
            };
            if self.events.send(ev).is_err() {
                return;
            }
        }
    }

    /// Reads `/models`: the model's name (the first listed unless `--remote-model` names one),
    /// the server's kind, the context, and the routing shape where the server says it.
    fn discover(&mut self) -> Result<(), Discovery> {
        let url = self.client.base().to_string();
        let list = match self.client.models() {
            Ok(v) => v,
            // Some APIs have no model list; a named model is enough.
            Err(HttpError::Status { status: 404, .. }) if self.config.model.is_some() => {
                self.discovered = true;
                self.info = self.describe("");
                return Ok(());
            }
            Err(e) => return Err(Discovery::Unavailable(e.describe(&url))),
        };
        let entries: Vec<&Value> = list
            .get("data")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        fn named(e: &Value) -> Option<&str> {
            e.get("id").and_then(Value::as_str)
        }
        let entry = match &self.config.model {
            Some(m) => match entries.iter().find(|e| named(e) == Some(m.as_str())) {
                Some(e) => Some(*e),
                None if entries.is_empty() => None,
                None => {
                    let have: Vec<&str> = entries.iter().filter_map(|e| named(e)).collect();
                    return Err(Discovery::NoSuchModel(format!(
                        "--remote-model {m}: {url} has no such model (it serves: {})",
                        have.join(", ")
                    )));
                }
            },
            None => entries.first().copied(),
        };
        if self.config.model.is_none() && entry.is_none() {
            return Err(Discovery::NoSuchModel(format!(
                "{url}/models lists no model; name one with --remote-model"
            )));
        }
        if let Some(e) = entry {
            if self.config.model.is_none() {
                self.config.model = named(e).map(str::to_string);
            }
            if self.shape.is_none() {
                self.shape = ModelShape::from_served(e);
            }
        }
        let server = entry
            .and_then(|e| e.get("owned_by"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        self.discovered = true;
        self.info = self.describe(&server);
        if let Some(ctx) = entry.and_then(context_of) {
            self.info.context = ctx;
        }
        Ok(())
    }

    /// The model as the workbench sees it, from what is known so far.
    fn describe(&self, server: &str) -> ModelInfo {
        let model = self.config.model.clone().unwrap_or_default();
        let shape = self.shape.clone();
        let moe = shape.as_ref().is_some_and(|s| !s.moe_layers.is_empty());
        let no_routing = if let Some(api) = api_without_routing(server) {
            Some(format!(
                "{api} returns no routing (SGLang, vLLM and thinkbench serve do)"
            ))
        } else if moe {
            match server {
                "vllm" if !self.config.routing_unstreamed => Some(
                    "vLLM returns routing only in non-streamed replies: start with --remote-routing".to_string(),
                ),
                _ => None,
            }
        } else if shape.is_some() {
            Some("this model has no routed experts (dense): nothing to route".into())
        } else {
            Some("routing needs the model's layer count and top-k: give its config.json with --remote-config".into())
        };
        ModelInfo {
            id: if model.is_empty() {
                "remote".into()
            } else {
                model.clone()
            },
            dir: Default::default(),
            model_type: shape
                .as_ref()
                .map_or(String::new(), |s| s.model_type.clone()),
            checkpoint_hash: String::new(),
            device: "remote".into(),
            dtype: String::new(),
            quant: None,
            num_layers: shape.as_ref().map_or(0, |s| s.num_layers),
            moe_layers: shape.as_ref().map_or(Vec::new(), |s| s.moe_layers.clone()),
            n_experts: shape.as_ref().map_or(0, |s| s.n_experts),
            top_k: shape.as_ref().map_or(0, |s| s.top_k),
            context: shape.as_ref().and_then(|s| s.context).unwrap_or(131_072),
            // Learned from replies (see `learn`).
            eos_ids: self.info.eos_ids.clone(),
            think_ids: None,
            sampling: SamplingParams::default(),
            max_new_tokens: None,
            remote: Some(RemoteSource {
                url: self.client.base().to_string(),
                model,
                server: server.to_string(),
            }),
            capabilities: Capabilities {
                // llama.cpp and thinkbench name the token ids; others only their text.
                token_ids: matches!(server, "llamacpp" | "thinkbench"),
                no_logprobs: self.info.capabilities.no_logprobs.clone(),
                max_top_logprobs: request::MAX_TOP_LOGPROBS,
                full_entropy: false,
                no_routing,
                routing_weights: server == "thinkbench",
                scoring: false,
                think_budget: false,
                // Known once a reply's usage reports cached prompt tokens.
                prefix_reuse: self.info.capabilities.prefix_reuse,
            },
        }
    }

    /// Tells the interface what changed about the backend.
    fn changed(&self) {
        let _ = self
            .events
            .send(EngineEvent::Info(Box::new(self.info.clone())));
    }

    fn note(&self, text: String) {
        let _ = self.events.send(EngineEvent::Note { text });
    }

    /// One reply, streamed (or whole, in routing mode for vLLM).
    pub fn generate(
        &mut self,
        spec: &GenSpec,
        cancel: &AtomicBool,
    ) -> Result<(FinishReason, GenStats), String> {
        if !self.discovered {
            let was = self.info.clone();
            match self.discover() {
                Ok(()) => {
                    if self.info != was {
                        self.changed();
                    }
                }
                Err(Discovery::NoSuchModel(e)) | Err(Discovery::Unavailable(e)) => return Err(e),
            }
        }
        if spec.think_budget.is_some() && !self.said_no_budget {
            self.said_no_budget = true;
            self.note(
                "a server has no thinking budget: the thought runs until the model closes it"
                    .into(),
            );
        }
        if !spec.continue_from.is_empty() {
            return Err(
                "a server cannot continue a thought that was cut (it needs token ids)".into(),
            );
        }
        let url = self.client.base().to_string();
        let model = self.config.model.clone().unwrap_or_default();
        let ask = Ask {
            stream: !self.config.routing_unstreamed,
            routing: self.info.capabilities.no_routing.is_none(),
            top_logprobs: spec.top_logprobs,
        };
        let started = Instant::now();
        let mut retried_rate_limit = false;
        let (resp, body) = loop {
            let body = request::body(&model, spec, ask, &self.accepted);
            match self.client.chat(&body) {
                Ok(resp) => break (resp, body),
                Err(HttpError::Status {
                    status: status @ (400 | 422),
                    message,
                    retry_after,
                }) => match request::give_up(&body, &message, &mut self.accepted) {
                    Some(field) => self.refused(field, &message),
                    None => {
                        let e = HttpError::Status {
                            status,
                            message,
                            retry_after,
                        };
                        return Err(e.describe(&url));
                    }
                },
                Err(HttpError::Status {
                    status: 429,
                    retry_after: Some(s),
                    ..
                }) if s <= 10 && !retried_rate_limit => {
                    retried_rate_limit = true;
                    self.note(format!("{url} is rate limiting; trying again in {s} s"));
                    if wait(Duration::from_secs(s), cancel) {
                        return Ok((FinishReason::Cancelled, GenStats::default()));
                    }
                }
                Err(e) => return Err(e.describe(&url)),
            }
        };
        let asked_logprobs = body.get("logprobs").is_some();
        let asked_routing = body.get("return_routed_experts").is_some();
        let job = spec.job;
        let lines = read_in_background(resp, ask.stream);
        let mut reply = Reply::default();
        let mut sse = sse::SseParser::default();
        let mut first_at: Option<Instant> = None;
        let mut done = false;
        let mut malformed = 0usize;
        let mut cut: Option<String> = None;
        let events = self.events.clone();
        let send_tokens = move |reply: &mut Reply, new: Vec<reply::NewToken>| {
            for (token, top_text) in new {
                let _ = events.send(EngineEvent::Token {
                    job,
                    token,
                    top_text,
                });
            }
            if std::mem::take(&mut reply.revised) {
                let _ = events.send(EngineEvent::Revised {
                    job,
                    prompt: None,
                    tokens: reply.tokens.clone(),
                });
            }
        };
        loop {
            if cancel.load(Ordering::Relaxed) {
                // Dropping the line receiver ends the reader, which closes the connection.
                let new = reply.finish();
                send_tokens(&mut reply, new);
                return Ok((FinishReason::Cancelled, stats(&reply, started, first_at)));
            }
            let item = match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(item) => item,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let line = match item {
                Ok(line) => line,
                Err(e) => {
                    cut = Some(e);
                    break;
                }
            };
            if first_at.is_none() {
                first_at = Some(Instant::now());
                let _ = self.events.send(EngineEvent::Prompt {
                    job,
                    tokens: Vec::new(),
                    reused: 0,
                });
            }
            let data = if ask.stream {
                match sse.feed_line(&line) {
                    Some(sse::SseEvent::Data { data, .. }) => data,
                    Some(sse::SseEvent::Done) => {
                        done = true;
                        break;
                    }
                    None => continue,
                }
            } else {
                line
            };
            if let Some(e) = wire::stream_error(&data) {
                return Err(self.broke_off(
                    &mut reply,
                    job,
                    format!("{url} broke off the reply: {e}"),
                ));
            }
            let parsed = if ask.stream {
                wire::parse_chunk(&data)
            } else {
                wire::parse_response(&data)
            };
            match parsed {
                Ok(chunk) => {
                    let new = reply.push(chunk);
                    // The end-of-sequence marker is known as it arrives (before its token is
                    // shown) when the server stops in the chunk that scores it.
                    self.learn_end_of_sequence(&reply);
                    send_tokens(&mut reply, new);
                }
                Err(e) => {
                    malformed += 1;
                    if malformed == 1 {
                        self.note(format!("skipped a malformed line from {url}: {e}"));
                    }
                }
            }
            if !ask.stream {
                done = true;
                break;
            }
        }
        if ask.stream && !done {
            if let Some(sse::SseEvent::Data { data, .. }) = sse.finish() {
                if let Ok(chunk) = wire::parse_chunk(&data) {
                    let new = reply.push(chunk);
                    send_tokens(&mut reply, new);
                }
            }
        }
        let new = reply.finish();
        send_tokens(&mut reply, new);
        // A stream that ends without `[DONE]` and without a finish reason was cut.
        if !done && reply.finish_reason.is_none() {
            let why = cut.unwrap_or_else(|| "the connection closed".into());
            let error = format!(
                "the reply was cut after {} tokens ({why}); what arrived is kept",
                reply.tokens.len()
            );
            return Err(self.broke_off(&mut reply, job, error));
        }
        self.learn(&reply, asked_logprobs, asked_routing);
        let prompt = self.place(&mut reply);
        let _ = self.events.send(EngineEvent::Revised {
            job,
            prompt: Some(prompt),
            tokens: reply.tokens.clone(),
        });
        let reason = match reply.finish_reason.as_deref() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        Ok((reason, stats(&reply, started, first_at)))
    }

    /// The reply broke off: what arrived is placed and kept, and the error says so.
    fn broke_off(&mut self, reply: &mut Reply, job: u64, error: String) -> String {
        let prompt = self.place(reply);
        let _ = self.events.send(EngineEvent::Revised {
            job,
            prompt: Some(prompt),
            tokens: reply.tokens.clone(),
        });
        error
    }

    /// The prompt's tokens (as many as the server counted, with their routing) and the
    /// generated tokens' routing.
    fn place(&mut self, reply: &mut Reply) -> Vec<PromptToken> {
        let mut prompt = match (&self.shape, reply.routing.is_some()) {
            (Some(shape), true) => match reply.place_routing(shape) {
                Ok(p) => p,
                Err(e) => {
                    self.note(e);
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        let counted = reply
            .usage
            .as_ref()
            .and_then(|u| u.prompt_tokens)
            .unwrap_or(0);
        while prompt.len() < counted {
            prompt.push(PromptToken {
                id: u32::MAX,
                routing: Vec::new(),
            });
        }
        prompt
    }

    /// After a reply: what the server turned out to give, declared for the interface.
    fn learn(&mut self, reply: &Reply, asked_logprobs: bool, asked_routing: bool) {
        let was = self.info.capabilities.clone();
        let caps = &mut self.info.capabilities;
        if asked_logprobs && !reply.logprobs_seen && !reply.tokens.is_empty() {
            caps.no_logprobs =
                Some("this server returns no log-probabilities (it ignored the request)".into());
        }
        if reply
            .usage
            .as_ref()
            .is_some_and(|u| u.cached_tokens.is_some())
        {
            caps.prefix_reuse = true;
        }
        if reply.logprobs_seen {
            caps.no_logprobs = None;
            caps.token_ids = reply.ids;
        }
        if asked_routing && reply.routing.is_none() {
            caps.no_routing = Some(
                "this server returned no routing (SGLang and vLLM return it when started with --enable-return-routed-experts)".into(),
            );
        }
        if reply.routing.as_ref().is_some_and(|r| r.weights.is_some()) {
            caps.routing_weights = true;
        }
        if *caps != was {
            self.changed();
        }
        self.learn_end_of_sequence(reply);
    }

    /// A reply that stopped on a token the server did not show names its end-of-sequence
    /// marker: the transcript leaves it out of the prose from then on.
    fn learn_end_of_sequence(&mut self, reply: &Reply) {
        if let Some(id) = reply.end_of_sequence() {
            if !self.info.eos_ids.contains(&id) {
                self.info.eos_ids.push(id);
                self.changed();
            }
        }
    }

    /// A field the server refused was left out: said once, and declared when it was one the
    /// interface shows.
    fn refused(&mut self, what: &str, message: &str) {
        self.note(format!(
            "the server refused `{what}` ({message}); asked again without it"
        ));
        let caps = &mut self.info.capabilities;
        match what {
            "logprobs" => {
                caps.no_logprobs = Some(format!(
                    "this server refuses log-probabilities ({})",
                    first_words(message, 80)
                ))
            }
            "return_routed_experts" => {
                caps.no_routing = Some(format!(
                    "this server refuses to return routing ({})",
                    first_words(message, 80)
                ))
            }
            _ => return,
        }
        self.changed();
    }
}

/// Why the model list could not be read.
enum Discovery {
    NoSuchModel(String),
    Unavailable(String),
}

/// Servers known to return no routing, by what `/v1/models` says owns the model.
fn api_without_routing(owned_by: &str) -> Option<&'static str> {
    Some(match owned_by {
        "deepseek" => "the DeepSeek API",
        "openai" | "system" | "openai-internal" => "the OpenAI API",
        "llamacpp" => "llama.cpp's server",
        "library" | "ollama" => "Ollama",
        _ => return None,
    })
}

/// vLLM and thinkbench say `max_model_len`; llama.cpp `meta.n_ctx_train`.
fn context_of(entry: &Value) -> Option<usize> {
    entry
        .get("max_model_len")
        .or_else(|| entry.get("meta").and_then(|m| m.get("n_ctx_train")))
        .or_else(|| entry.get("context_length"))
        .and_then(Value::as_u64)
        .map(|n| n as usize)
}

fn first_words(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= n {
        one
    } else {
        format!("{}…", one.chars().take(n).collect::<String>())
    }
}

/// Sleeps `d`, waking early if cancelled (returns true then).
fn wait(d: Duration, cancel: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if cancel.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Reads the body on its own thread, so the job can watch its cancel flag while the server is
/// silent. A streamed body comes line by line; a whole one as one item.
fn read_in_background(resp: client::Response, streamed: bool) -> Receiver<Result<String, String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("thinkbench-remote-read".into())
        .spawn(move || {
            if streamed {
                for line in resp.lines() {
                    let stop = line.is_err();
                    if tx.send(line).is_err() || stop {
                        return;
                    }
                }
            } else {
                let _ = tx.send(resp.text().map_err(|e| e.describe("the server")));
            }
        })
        .expect("spawn the reader thread");
    rx
}

/// The reply's statistics: the server's counts and speeds where it gave them (llama.cpp's
/// `timings`), else as seen from here (time to the first byte, then tokens over the rest).
fn stats(reply: &Reply, started: Instant, first: Option<Instant>) -> GenStats {
    let usage = reply.usage.clone().unwrap_or_default();
    let generated = usage.completion_tokens.unwrap_or(reply.tokens.len());
    let prompt = usage.prompt_tokens.unwrap_or(0);
    let first = first.unwrap_or(started);
    let ttft = first.duration_since(started).as_secs_f64();
    let rest = first.elapsed().as_secs_f64();
    let t = reply.timings.clone().unwrap_or_default();
    GenStats {
        prompt_tokens: prompt,
        generated_tokens: generated,
        prefill_tokens_per_s: t.prompt_per_second.unwrap_or(if ttft > 0.0 {
            prompt as f64 / ttft
        } else {
            0.0
        }),
        decode_tokens_per_s: t.predicted_per_second.unwrap_or(if rest > 0.0 {
            generated.saturating_sub(1) as f64 / rest
        } else {
            0.0
        }),
        reasoning_tokens: usage.reasoning_tokens,
        cached_tokens: usage.cached_tokens,
    }
}

#[cfg(test)]
mod tests;
