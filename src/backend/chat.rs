//! The workbench's side of the seam: the jobs it gives a chat backend, the events it gets back,
//! and the [`Engine`] handle every backend is driven through. A backend is a thread that owns
//! the model (the local libtorch engine) or the connection (a remote server): [`Job`]s go in over
//! a channel, [`EngineEvent`]s come out. Plain data only.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::ModelInfo;
use crate::runtime::sampling::SamplingParams;
use crate::text::ChatMessage;
use crate::trace::{FinishReason, GenStats, PromptToken, ScoredTrace, TokenRecord};

/// What to generate: the reply to the last user message of `messages`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSpec {
    /// The caller's id for this job; every event about it carries it.
    pub job: u64,
    /// The conversation so far, ending with a user message. Assistant messages carry only their
    /// answer (R1's template drops earlier reasoning; so do we).
    pub messages: Vec<ChatMessage>,
    /// Token ids of the reply generated so far, fed after the template's generation prompt
    /// ("keep thinking" continues a thought from here). Empty for a fresh reply.
    pub continue_from: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub think_budget: Option<usize>,
    pub top_logprobs: usize,
}

/// What to score: a finished sequence's ids (a GRPO rollout, tokenised again), to get back the
/// trace the decode loop would have recorded while generating it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSpec {
    pub job: u64,
    /// The rendered prompt (chat template and generation prompt included).
    pub prompt_ids: Vec<u32>,
    pub completion_ids: Vec<u32>,
    pub top_logprobs: usize,
}

/// A job for a backend.
pub enum Job {
    Generate {
        spec: GenSpec,
        /// Set to stop the job; checked before every decode step (or every streamed chunk).
        cancel: Arc<AtomicBool>,
    },
    /// Re-score a finished sequence (one pass, no sampling); answered with `Scored` or `Failed`.
    Score(ScoreSpec),
}

/// What a backend reports. Plain data only.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// The model is loaded (or the server answered) and ready for jobs.
    Ready(Box<ModelInfo>),
    /// Loading (or reaching the server) failed; no job will run.
    LoadFailed(String),
    /// The backend learned something about itself after `Ready` (a server refused
    /// log-probabilities): the interface offers what is there now.
    Info(Box<ModelInfo>),
    /// The prompt of `job` went through the model. `reused` of its tokens came from the cache.
    Prompt {
        job: u64,
        tokens: Vec<PromptToken>,
        reused: usize,
    },
    /// The conversation and the reply's budget outgrew the model's context: the oldest
    /// `dropped_turns` turns (a question and its reply each) were left out of `job`'s prompt,
    /// which is `prompt_tokens` long.
    Trimmed {
        job: u64,
        dropped_turns: usize,
        prompt_tokens: usize,
    },
    /// One generated token, with the text of each of its top alternatives.
    Token {
        job: u64,
        token: TokenRecord,
        top_text: Vec<String>,
    },
    /// The backend's corrected view of the reply so far: every token (routing a server sent at
    /// the end placed on them, phases fixed once the reply showed it began inside a thought) and,
    /// when known, the prompt's tokens.
    Revised {
        job: u64,
        prompt: Option<Vec<PromptToken>>,
        tokens: Vec<TokenRecord>,
    },
    /// Something the user should read that is not an error ("the server refused
    /// log-probabilities; asked again without them").
    Note { text: String },
    Finished {
        job: u64,
        reason: FinishReason,
        stats: GenStats,
    },
    /// A `Score` job's result: the trace, the text of every alternative it names, and the model
    /// that scored it (whose weights the probabilities are).
    Scored {
        job: u64,
        model: Box<ModelInfo>,
        trace: ScoredTrace,
        top_text: Vec<(u32, String)>,
    },
    /// The job could not run or broke off; one line. Tokens already reported stay with the reply.
    Failed { job: u64, error: String },
}

/// How to load a model on this machine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model_dir: PathBuf,
    pub device: String,
    pub dtype: String,
    pub threads: Option<i32>,
    /// q8_0 or q4_0 (`--quant`).
    pub quant: Option<String>,
}

/// A model behind an OpenAI-compatible server (`--remote`).
#[derive(Debug, Clone, Default)]
pub struct RemoteConfig {
    /// The `/v1` base URL.
    pub url: String,
    /// `--remote-model`; else the first model `/v1/models` lists.
    pub model: Option<String>,
    /// The name of the environment variable holding the API key (`--api-key-env`).
    pub api_key_env: Option<String>,
    /// The model's config.json (`--remote-config`): layer count, MoE layers and top-k give the
    /// routing its shape.
    pub config: Option<PathBuf>,
    /// Ask for routing in non-streamed requests (vLLM returns it only there).
    pub routing_unstreamed: bool,
}

/// Where a chat backend's model is: the one thing [`crate::engines::spawn`] needs.
#[derive(Debug, Clone)]
pub enum EngineSource {
    Local(EngineConfig),
    Remote(RemoteConfig),
}

/// The caller's handle on a backend thread. Dropping it (or [`Engine::shutdown`]) ends the
/// thread once the running job stops.
pub struct Engine {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts a backend thread named `name` running `main` over the job channel.
    pub fn start(
        name: &str,
        main: impl FnOnce(std::sync::mpsc::Receiver<Job>) + Send + 'static,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || main(rx))
            .expect("spawn the engine thread");
        Self {
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queues a job; false if the backend thread is gone.
    pub fn submit(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Closes the job channel and waits for the thread to finish its current job.
    pub fn shutdown(mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Like [`Engine::shutdown`], but gives up waiting after `limit` (a job that ignores its
    /// cancel flag, e.g. a long prefill, must not hold the terminal hostage).
    pub fn shutdown_within(mut self, limit: std::time::Duration) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let until = std::time::Instant::now() + limit;
            while !t.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the channel is enough: the thread ends after its current job. Not joined here
        // so that a quitting UI never waits on a long prefill.
        self.jobs.take();
    }
}
