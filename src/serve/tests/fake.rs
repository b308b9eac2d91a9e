//! A stand-in engine: answers every submission from a script on its own thread, the way the
//! batching engine reports (prompt, tokens of each row, finishes, done), including its stop
//! rules (end of sequence, stop strings on the row's text, max_new_tokens) and cancellation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Backend, ModelInfo, Progress, Refused, Submission};
use crate::runtime::sampling::SamplingParams;
use crate::text::TextCodec;
use crate::trace::{FinishReason, GenStats, LayerRouting, Phase, PromptToken, TokenRecord};

pub(crate) const EOS: u32 = 1;
pub(crate) const THINK_OPEN: u32 = 300;
pub(crate) const THINK_CLOSE: u32 = 301;
/// Decoder layers of the fake model; layer 0 is dense.
pub(crate) const LAYERS: usize = 3;
pub(crate) const MOE_LAYERS: [usize; 2] = [1, 2];
pub(crate) const TOP_K: usize = 2;
pub(crate) const CONTEXT: usize = 64;
pub(crate) const MODEL: &str = "thinkbench-tiny";

/// The experts (and weights) layer `layer` chose for the token at position `pos`.
pub(crate) fn experts_at(pos: usize, layer: usize) -> ([u32; 2], [f32; 2]) {
    let a = ((pos * 3 + layer) % 8) as u32;
    let b = ((pos * 5 + layer + 1) % 8) as u32;
    ([a, b], [0.5 + layer as f32 * 0.125, 0.25])
}

fn routing_at(pos: usize) -> Vec<LayerRouting> {
    MOE_LAYERS
        .iter()
        .map(|&layer| {
            let (experts, weights) = experts_at(pos, layer);
            LayerRouting {
                layer,
                experts: experts.to_vec(),
                weights: weights.to_vec(),
            }
        })
        .collect()
}

/// The log-probability the fake gives the `i`th generated token, and its alternatives.
pub(crate) fn logprob_at(i: usize) -> f32 {
    -0.25 * (i + 1) as f32
}

#[derive(Debug, Clone)]
pub(crate) enum Script {
    /// Every row generates these `(id, phase)` tokens (then stops as the engine would).
    Reply(Vec<(u32, Phase)>),
    /// Rows generate `a` until cancelled or at max_new_tokens.
    Endless,
    /// The prompt, then nothing until cancelled.
    Hold,
    /// The prompt, `k` tokens of row 0, then a failure.
    FailAfter(usize),
}

/// What the server submitted.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub prompt_ids: Vec<u32>,
    pub n: usize,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub stop_strings: Vec<String>,
    pub top_logprobs: usize,
    pub cancel: Arc<AtomicBool>,
}

pub(crate) struct FakeBackend {
    pub info: ModelInfo,
    pub codec: Arc<TextCodec>,
    pub script: Script,
    pub seen: Mutex<Vec<Seen>>,
}

impl FakeBackend {
    pub fn new(codec: Arc<TextCodec>, script: Script) -> Self {
        let info = ModelInfo {
            id: MODEL.into(),
            num_layers: LAYERS,
            moe_layers: MOE_LAYERS.to_vec(),
            n_experts: 8,
            top_k: TOP_K,
            context: CONTEXT,
            eos_ids: vec![EOS],
            think_ids: Some((THINK_OPEN, THINK_CLOSE)),
            sampling: SamplingParams::default(),
            ..ModelInfo::default()
        };
        Self {
            info,
            codec,
            script,
            seen: Mutex::new(Vec::new()),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The R1-shaped reply: reasoning, `</think>`, an answer, end of sequence.
pub(crate) fn r1_reply(codec: &TextCodec, thought: &str, answer: &str) -> Vec<(u32, Phase)> {
    let mut out: Vec<(u32, Phase)> = Vec::new();
    out.extend(
        codec
            .encode_raw(thought)
            .unwrap()
            .into_iter()
            .map(|id| (id, Phase::Think)),
    );
    out.push((THINK_CLOSE, Phase::Think));
    out.extend(
        codec
            .encode_raw(answer)
            .unwrap()
            .into_iter()
            .map(|id| (id, Phase::Answer)),
    );
    out.push((EOS, Phase::Answer));
    out
}

impl Backend for FakeBackend {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn submit(&self, job: Submission) -> Result<(), Refused> {
        self.seen.lock().unwrap().push(Seen {
            prompt_ids: job.prompt_ids.clone(),
            n: job.n,
            sampling: job.sampling.clone(),
            max_new_tokens: job.max_new_tokens,
            stop_strings: job.stop_strings.clone(),
            top_logprobs: job.top_logprobs,
            cancel: job.cancel.clone(),
        });
        let (codec, script) = (self.codec.clone(), self.script.clone());
        std::thread::spawn(move || play(&codec, &script, job));
        Ok(())
    }
}

fn play(codec: &TextCodec, script: &Script, job: Submission) {
    let send = |p: Progress| job.events.send(p).is_ok();
    let prompt = job
        .prompt_ids
        .iter()
        .enumerate()
        .map(|(pos, &id)| PromptToken {
            id,
            routing: if job.routing {
                routing_at(pos)
            } else {
                Vec::new()
            },
        })
        .collect();
    send(Progress::Prompt { tokens: prompt });
    let deadline = Instant::now() + Duration::from_secs(10);
    let cancelled = || job.cancel.load(Ordering::Acquire) || Instant::now() > deadline;
    let mut texts = vec![String::new(); job.n];
    let mut done = vec![false; job.n];
    let mut generated = 0;
    for step in 0.. {
        if done.iter().all(|&d| d) {
            break;
        }
        match script {
            Script::Hold => {
                while !cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Script::FailAfter(k) if step == *k => {
                send(Progress::Failed {
                    error: "the fake engine broke".into(),
                });
                return;
            }
            Script::Endless => std::thread::sleep(Duration::from_millis(1)),
            _ => {}
        }
        if cancelled() {
            for (row, d) in done.iter_mut().enumerate().filter(|(_, d)| !**d) {
                *d = true;
                send(Progress::Finished {
                    row,
                    reason: FinishReason::Cancelled,
                });
            }
            break;
        }
        for row in 0..job.n {
            if done[row] {
                continue;
            }
            let (id, phase) = match script {
                Script::Reply(tokens) => tokens.get(step).copied().unwrap_or((EOS, Phase::Answer)),
                _ => (codec.token_id("a").unwrap(), Phase::Answer),
            };
            let text = codec.token_text(id);
            texts[row].push_str(&text);
            let eos = id == EOS && !job.ignore_eos;
            let stopped = job
                .stop_strings
                .iter()
                .any(|s| texts[row].contains(s.as_str()));
            let finish = if eos || stopped {
                Some(FinishReason::Stop)
            } else if step + 1 == job.max_new_tokens {
                Some(FinishReason::Length)
            } else {
                None
            };
            let pos = job.prompt_ids.len() + step;
            let top = [
                (id, logprob_at(step)),
                (id + 1, logprob_at(step) - 1.0),
                (id + 2, logprob_at(step) - 2.0),
            ];
            let token = TokenRecord {
                id,
                text,
                logprob: logprob_at(step),
                top: top.into_iter().take(job.top_logprobs).collect(),
                entropy: 1.0,
                phase,
                routing: if job.routing && finish.is_none() {
                    routing_at(pos)
                } else {
                    Vec::new()
                },
                forced: false,
            };
            send(Progress::Token { row, token });
            generated += 1;
            if let Some(reason) = finish {
                done[row] = true;
                send(Progress::Finished { row, reason });
            }
        }
    }
    send(Progress::Done {
        stats: GenStats {
            prompt_tokens: job.prompt_ids.len(),
            generated_tokens: generated,
            ..GenStats::default()
        },
    });
}
