//! The batching engine behind `thinkbench serve`: one thread owns the model and runs the
//! [`Decoder`] continuously. Submissions arrive over a channel at any time; each joins the running
//! batch at the next decode step while the batch has room (`max_batch` rows), waits in order
//! otherwise, and reports its progress as plain [`Progress`] events. A request whose caller went
//! away (its cancel flag set, or its event receiver dropped) leaves the batch at the next step.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::backend::{Backend, Counters, ModelInfo, Progress, Refused, Submission};
use crate::model::Model;
use crate::runtime::engine::{load, one_line, panic_text, EngineConfig};
use crate::runtime::generate::JoinPlan;
use crate::runtime::{Decoder, GenEvent, GenerateRequest};
use crate::text::TextCodec;
use crate::trace::FinishReason;

/// The handle: implements [`Backend`]. Dropping it lets the thread end once its batch drains.
pub struct BatchEngine {
    info: ModelInfo,
    jobs: Mutex<Option<Sender<Submission>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Mutex<Counters>>,
}

impl BatchEngine {
    /// Loads the model on a new thread and returns once it is ready (or failed to load).
    pub fn start(config: EngineConfig, max_batch: usize) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<ModelInfo, String>>();
        let (tx, rx) = std::sync::mpsc::channel::<Submission>();
        let counters = Arc::new(Mutex::new(Counters::default()));
        let shared = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("thinkbench-batch".into())
            .spawn(move || {
                let loaded = std::panic::catch_unwind(|| load(&config));
                let (model, codec, info) = match loaded {
                    Ok(Ok(x)) => x,
                    Ok(Err(e)) => {
                        let _ = ready_tx.send(Err(one_line(&format!("{e:#}"))));
                        return;
                    }
                    Err(p) => {
                        let _ = ready_tx.send(Err(panic_text(&p)));
                        return;
                    }
                };
                let eos_ids = info.eos_ids.clone();
                let _ = ready_tx.send(Ok(info));
                run_batches(&model, &codec, &eos_ids, rx, max_batch.max(1), &shared);
            })?;
        match ready_rx.recv() {
            Ok(Ok(info)) => Ok(Self {
                info,
                jobs: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                counters,
            }),
            Ok(Err(e)) => anyhow::bail!(e),
            Err(_) => anyhow::bail!("the engine thread ended while loading the model"),
        }
    }

    /// Stops taking submissions and waits for the running batch to finish.
    pub fn shutdown(&self) {
        self.jobs.lock().expect("jobs lock").take();
        if let Some(t) = self.thread.lock().expect("thread lock").take() {
            let _ = t.join();
        }
    }
}

impl Backend for BatchEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn submit(&self, job: Submission) -> Result<(), Refused> {
        let jobs = self.jobs.lock().expect("jobs lock");
        match jobs.as_ref() {
            Some(tx) => tx.send(job).map_err(|_| Refused::Stopped),
            None => Err(Refused::Stopped),
        }
    }

    fn counters(&self) -> Counters {
        *self.counters.lock().expect("counters lock")
    }
}

impl Drop for BatchEngine {
    fn drop(&mut self) {
        // Closing the channel is enough: the thread ends when its batch is empty.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
    }
}

fn request_of(job: &Submission, eos_ids: &[u32]) -> GenerateRequest {
    GenerateRequest {
        max_new_tokens: job.max_new_tokens,
        sampling: job.sampling.clone(),
        eos_ids: eos_ids.to_vec(),
        ignore_eos: job.ignore_eos,
        stop_strings: job.stop_strings.clone(),
        top_logprobs: job.top_logprobs,
        token_stats: job.logprobs,
        trace_routing: job.routing,
        n: job.n,
        think_budget: None,
        ..GenerateRequest::new(job.prompt_ids.clone())
    }
}

fn gone(job: &Submission) -> bool {
    job.cancel.load(Ordering::Relaxed) || job.events.is_closed()
}

/// The engine thread's loop: admit, step, report — until the channel closes and the batch is
/// empty.
fn run_batches(
    model: &Model,
    codec: &TextCodec,
    eos_ids: &[u32],
    jobs: Receiver<Submission>,
    max_batch: usize,
    counters: &Mutex<Counters>,
) {
    let count = |f: &dyn Fn(&mut Counters)| f(&mut counters.lock().expect("counters lock"));
    let mut decoder = Decoder::new(model, Some(codec));
    let mut waiting: VecDeque<Submission> = VecDeque::new();
    let mut running: HashMap<u64, Submission> = HashMap::new();
    let mut next_tag = 0u64;
    let mut open = true;
    loop {
        let (rows, queued) = (decoder.live_rows() as u64, waiting.len() as u64);
        count(&|c| {
            c.running_rows = rows;
            c.waiting = queued;
        });
        // Block only when there is nothing to do.
        if open && waiting.is_empty() && !decoder.is_busy() {
            match jobs.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => open = false,
            }
        }
        while open {
            match jobs.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        if !open && waiting.is_empty() && !decoder.is_busy() {
            return;
        }
        let before = waiting.len() as u64;
        waiting.retain(|job| !gone(job));
        let dropped = before - waiting.len() as u64;
        count(&|c| {
            c.completed += dropped;
            c.cancelled += dropped;
        });
        // Admit in arrival order while the batch has room (an empty batch takes any request);
        // the requests admitted together share one prefill.
        let mut joining: Vec<(u64, Submission, GenerateRequest)> = Vec::new();
        let mut plan = JoinPlan::new(&decoder, max_batch);
        while let Some(job) = waiting.front() {
            let req = request_of(job, eos_ids);
            if let Err(e) = decoder.check(&req) {
                let job = waiting.pop_front().expect("front exists");
                count(&|c| c.completed += 1);
                let _ = job.events.send(Progress::Failed {
                    error: e.to_string(),
                });
                continue;
            }
            if !plan.take(&req) {
                break;
            }
            let job = waiting.pop_front().expect("front exists");
            joining.push((next_tag, job, req));
            next_tag += 1;
        }
        if !joining.is_empty() {
            let reqs: Vec<(u64, &GenerateRequest)> =
                joining.iter().map(|(tag, _, req)| (*tag, req)).collect();
            let admitted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                decoder.admit_all(&reqs, None, &mut |tag, ev| {
                    if let Some((_, job, _)) = joining.iter().find(|(t, _, _)| *t == tag) {
                        report(job, ev);
                    }
                })
            }));
            let error = match admitted {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(p) => Some(panic_text(&p)),
            };
            match error {
                None => running.extend(joining.into_iter().map(|(tag, job, _)| (tag, job))),
                Some(error) => {
                    // The batch's cache may be half written: everything fails and starts afresh.
                    count(&|c| c.completed += (joining.len() + running.len()) as u64);
                    for (_, job, _) in joining {
                        let _ = job.events.send(Progress::Failed {
                            error: error.clone(),
                        });
                    }
                    fail_all(&mut running, &mut decoder, model, codec, &error);
                }
            }
        }
        for (&tag, job) in &running {
            if gone(job) {
                decoder.cancel(tag);
            }
        }
        if !decoder.is_busy() {
            continue;
        }
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoder.step(&mut |tag, ev| {
                if let Some(job) = running.get(&tag) {
                    report(job, ev);
                }
            })
        }));
        match stepped {
            Ok(done) => {
                for (tag, generation) in done {
                    let cancelled = generation
                        .completions
                        .iter()
                        .any(|c| c.finish_reason == FinishReason::Cancelled);
                    let stats = &generation.stats;
                    count(&|c| {
                        c.completed += 1;
                        c.cancelled += u64::from(cancelled);
                        c.prompt_tokens += stats.prompt_tokens as u64;
                        c.generated_tokens += stats.generated_tokens as u64;
                    });
                    if let Some(job) = running.remove(&tag) {
                        let _ = job.events.send(Progress::Done {
                            stats: generation.stats,
                        });
                    }
                }
            }
            Err(p) => {
                // A libtorch exception surfaces as a panic; the batch's cache may be half
                // written, so every running request fails and the batch starts afresh.
                let error = panic_text(&p);
                count(&|c| c.completed += running.len() as u64);
                fail_all(&mut running, &mut decoder, model, codec, &error);
            }
        }
    }
}

fn fail_all<'m>(
    running: &mut HashMap<u64, Submission>,
    decoder: &mut Decoder<'m>,
    model: &'m Model,
    codec: &'m TextCodec,
    error: &str,
) {
    for (_, job) in running.drain() {
        let _ = job.events.send(Progress::Failed {
            error: error.to_string(),
        });
    }
    *decoder = Decoder::new(model, Some(codec));
}

fn report(job: &Submission, ev: GenEvent) {
    let progress = match ev {
        GenEvent::Prompt(tokens) => Progress::Prompt {
            tokens: tokens.to_vec(),
        },
        GenEvent::Token { row, token } => Progress::Token {
            row,
            token: token.clone(),
        },
        GenEvent::Finished { row, reason } => Progress::Finished { row, reason },
    };
    // A closed receiver is noticed before the next step (the request is cancelled then).
    let _ = job.events.send(progress);
}
