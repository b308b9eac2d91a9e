//! GRPO: Group Relative Policy Optimisation (DeepSeekMath; DeepSeek-R1's RL), with DAPO's
//! clip-higher, token-level loss and dynamic sampling, and Dr. GRPO's unscaled advantages and
//! constant normaliser as recipe options. TRL's `GRPOTrainer` is the reference for every formula.
//!
//! One step, one readable loop:
//!
//! 1. **Rollout** — draw the step's prompts; for each, G completions through THE decode loop
//!    (`runtime::generate` with `n = G`, no gradients).
//! 2. **Reward** — the recipe's rule-based rewards ([`super::rewards`]), weighted and summed.
//! 3. **Advantage** — group-relative ([`super::advantage`]); groups whose rewards are all equal
//!    are kept, skipped, or replaced by freshly drawn prompts (`grpo.zero_std`).
//! 4. **Log-probabilities with gradients** ([`pass`]) — each group's prompt once, its cache
//!    repeated for the completions, through the same model code as inference; the head and the
//!    loss a slice of positions at a time; logits divided by the sampling temperature (as TRL
//!    does); the completion mask includes the end-of-sentence token. With β > 0 a frozen
//!    reference (a second load of the starting model) gives reference log-probabilities, without
//!    gradients.
//! 5. **Loss and update** — clipped surrogate + β·k3 ([`super::loss`]), aggregated `grpo` / `dapo`
//!    / `dr_grpo`; μ = `grpo.iterations` AdamW updates against the rollout policy's log-probs
//!    (iteration 0's, detached: the policy has not moved yet). Gradient clipping; a step whose loss
//!    or gradient is NaN/inf is skipped and reported, and several in a row stop the run.
//! 6. **Balance** — for MoE models the routers' selection bias moves toward even load
//!    (DeepSeek-V3's auxiliary-loss-free balancing); router weights are frozen unless
//!    `model.train_router`.
//! 7. **Log, evaluate, checkpoint** — a metrics line per step (TRL's metric names), every group's
//!    completions with rewards and advantages, held-out accuracy every `eval.every` steps, and
//!    atomic checkpoints in the hub layout every `train.checkpoint_every` steps.
//!
//! Output folder:
//!
//! ```text
//! <output_dir>/recipe.json            the recipe the run was started with
//! <output_dir>/metrics.jsonl          one line per step, plus "event" lines (eval, checkpoint)
//! <output_dir>/rollouts.jsonl         one line per group per step: completions, rewards, advantages
//! <output_dir>/checkpoints/step-N/    model directories + optimizer.safetensors + trainer_state.json
//! <output_dir>/eval.json              the last held-out evaluation
//! ```
//!
//! Re-running the same command continues from the newest checkpoint and computes exactly what an
//! uninterrupted run would: the weights, the AdamW moments and step count are restored, and every
//! random choice (the prompts of step s, each rollout's sampling seed) is a pure function of the
//! recipe seed and the step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::train::progress::StepProgress;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use super::advantage::{advantages, std_bessel};
use super::balance::{layer_loads, nudge_biases, LoadCounter};
use super::checkpoint::{
    prune_checkpoints, read_safetensors, safetensors_bytes, step_dir_name, write_synced, AtomicDir,
};
use super::eval::{evaluate, EvalOptions};
use super::head::HEAD_CHUNK_ELEMENTS;
use super::lora::Lora;
use super::loss::{LossConfig, Normaliser};
use super::metrics::MetricsLog;
use super::optim::{lr_at, AdamW};
use super::problems::{Problem, Source};
use super::recipe::{GrpoRecipe, RoutingReplay, ZeroStd};
use super::rewards::{reflection_words, RewardInput, Rewards, Scored};
use super::rollout::{eos_ids, rollouts, Group};
use super::run_dir::write_weights_and_optimizer;
use super::run_dir::{ensure_writable, metadata, ModelFiles};
use super::run_skeleton::{configure_process, restore_optimizer, RunFolder};
use super::shape_stats::shape_stats;
use super::step_loop::{run_steps, Logs, Schedule, StepReport, Steps};
use super::task::{content_hash, Example, Shape, Split};
use crate::model::{parse_device, DType, Model};
use crate::runtime::{generate, GenerateRequest, SamplingParams};
use crate::text::TextCodec;
use crate::trace::FinishReason;
use pass::{
    accumulate, make_micro_batches, reference_pass, MicroBatch, Objective, PassStats, RoutingUse,
    Row,
};
use replay::Mismatch;

/// The built-in model's folder, relative to the repository.
pub const BUILTIN_MODEL: &str = "models/thinkbench-tiny";

/// `model.init` to a directory: `"builtin"` is [`BUILTIN_MODEL`] found from the working
/// directory, the executable, or the source tree.
pub fn resolve_model_dir(init: &str) -> PathBuf {
    if init != "builtin" {
        return PathBuf::from(init);
    }
    let mut candidates = vec![PathBuf::from(BUILTIN_MODEL)];
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            candidates.push(up.join(BUILTIN_MODEL));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(BUILTIN_MODEL));
    candidates
        .iter()
        .find(|p| p.join("config.json").is_file())
        .cloned()
        .unwrap_or_else(|| candidates.remove(0))
}

pub use super::step_loop::RunOptions;

/// What a finished (or stopped) run reports.
pub type RunSummary = super::step_loop::RunSummary<EvalSummary>;

/// Held-out accuracy at one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    pub step: u64,
    pub n: usize,
    pub accuracy: f64,
    pub format_rate: f64,
    /// (level, accuracy) for a built-in task.
    pub by_level: Vec<(u32, f64)>,
    pub seconds: f64,
}

/// Trainer state saved next to the weights.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TrainerState {
    /// GRPO steps taken (the data position: step s draws its prompts from (seed, s)).
    step: u64,
    /// AdamW's bias-correction step count (μ updates per step).
    adam_t: u64,
    seed: u64,
    completions_seen: u64,
    /// Prompt and completion tokens trained on.
    tokens_seen: u64,
    /// Seconds in the loop (evaluations excluded).
    train_seconds: f64,
    /// Skipped (non-finite) steps in a row at this point.
    bad_steps: u64,
}

/// One group with its verdicts.
struct ScoredGroup {
    group: Group,
    scores: Vec<Scored>,
    rewards: Vec<f64>,
    zero_std: bool,
    /// 0: the step's own draw; later: a replacement (dynamic sampling).
    round: usize,
    /// Trained on.
    used: bool,
    advantages: Vec<f64>,
    /// How each completion reasoned, for tasks that analyse it.
    shapes: Vec<Option<Shape>>,
}

/// What one update (μ optimiser steps on one batch of rollouts) measured.
#[derive(Debug, Clone, Default)]
struct UpdateOutcome {
    /// Mean over the μ iterations of the batch loss.
    loss: f64,
    /// The last iteration's gradient norm before clipping.
    grad_norm: f64,
    applied: bool,
    /// Token means over the batch (iteration 0).
    kl: Option<f64>,
    entropy: f64,
    /// Shares of tokens clipped low / high, over all iterations.
    clip_low: f64,
    clip_high: f64,
    tokens: usize,
    counts: BTreeMap<usize, Vec<u64>>,
    /// The update's routing against the rollout's, over all μ passes (MoE policies).
    mismatch: Mismatch,
}

/// A rollout and update worker's own copy of the policy (and of the reference, for a full
/// fine-tune with β > 0), kept equal to the main one after every update.
struct Replica {
    model: Model,
    codec: TextCodec,
    reference: Option<Model>,
}

struct Trainer<'a> {
    r: &'a GrpoRecipe,
    model: Model,
    /// The frozen reference (full fine-tune with β > 0).
    reference: Option<Model>,
    /// Adapters merged into `model` (the reference is then the model with them taken out).
    lora: Option<Lora>,
    /// Copies of the policy for rollout workers beyond the first (`generation.workers`), kept
    /// equal to it after every update.
    replicas: Vec<Replica>,
    /// With `generation.dtype` other than f32: one copy of the policy per rollout worker in that
    /// precision, which samples the rollouts (refreshed after every update). Empty: the
    /// workers sample with the f32 policy and its replicas.
    rollout_copies: Vec<Model>,
    codec: TextCodec,
    opt: AdamW,
    files: ModelFiles,
    ckpt_dir: PathBuf,
    eos: Vec<u32>,
    pad: u32,
}

/// Work on one worker's share of the micro-batches: the worker's model (the policy or a
/// replica), the reference model if any, and the share.
type WorkerJob<'a, T> = dyn Fn(&Model, Option<&Model>, &mut [MicroBatch]) -> T + Sync + 'a;

impl<'a> Trainer<'a> {
    /// The policy from `start_dir` (a checkpoint, or the starting model), its optimiser (state
    /// restored from a checkpoint's `optimizer.safetensors` when `adam_t > 0`), and with β > 0
    /// the frozen reference loaded from `init_dir`.
    fn new(
        r: &'a GrpoRecipe,
        start_dir: &Path,
        init_dir: &Path,
        ckpt_dir: PathBuf,
        adam_t: u64,
    ) -> Result<Self> {
        let device = parse_device(&r.model.device)?;
        let model = Model::load(start_dir, DType::F32, device)?;
        let codec = TextCodec::load(start_dir)?;
        let files = ModelFiles::read(start_dir)?;
        let lora = match &r.lora {
            Some(cfg) => {
                let l = Lora::attach(&model, cfg, r.seed).map_err(|e| anyhow!(e))?;
                let file = start_dir.join("adapter_model.safetensors");
                if file.exists() {
                    // A checkpoint: its weights are already merged; restore A and B.
                    let t = read_safetensors(&file).map_err(|e| anyhow!(e))?;
                    l.load_adapters(t)
                        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
                }
                Some(l)
            }
            None => None,
        };
        if !r.model.train_router && lora.is_none() {
            freeze_routers(&model);
        }
        // The reference policy: the starting model, frozen (a second load; only when β > 0 and
        // every weight is trained — with LoRA it is the model with its adapters taken out).
        let reference = if r.grpo.beta != 0.0 && lora.is_none() {
            let m = Model::load(init_dir, DType::F32, device)?;
            for (_, t) in m.vars.variables() {
                let _ = t.set_requires_grad(false);
            }
            Some(m)
        } else {
            None
        };
        let trainable = match &lora {
            Some(l) => l.params(),
            None => model.vars.variables(),
        };
        let mut opt = AdamW::new(trainable, &r.optimizer);
        if adam_t > 0 {
            restore_optimizer(&mut opt, start_dir, adam_t)?;
        }
        let eos = eos_ids(&model, &codec);
        let pad = *eos
            .first()
            .ok_or_else(|| anyhow!("{}: the tokenizer has no eos_token", start_dir.display()))?;
        let grads: std::collections::HashMap<String, bool> = model
            .vars
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.requires_grad()))
            .collect();
        let replicas = (1..r.generation.workers.max(1))
            .map(|_| -> Result<Replica> {
                let m = Model::load(start_dir, DType::F32, device)?;
                for (name, t) in m.vars.variables() {
                    let _ = t.set_requires_grad(grads[&name]);
                }
                let reference = match &reference {
                    Some(_) => {
                        let m = Model::load(init_dir, DType::F32, device)?;
                        for (_, t) in m.vars.variables() {
                            let _ = t.set_requires_grad(false);
                        }
                        Some(m)
                    }
                    None => None,
                };
                Ok(Replica {
                    model: m,
                    codec: TextCodec::load(start_dir)?,
                    reference,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rollout_dtype = DType::parse(&r.generation.dtype)
            .ok_or_else(|| anyhow!("generation.dtype: \"{}\"", r.generation.dtype))?;
        let rollout_copies = if rollout_dtype == DType::F32 {
            Vec::new()
        } else {
            (0..r.generation.workers.max(1))
                .map(|_| Ok(Model::load(start_dir, rollout_dtype, device)?))
                .collect::<Result<Vec<_>>>()?
        };
        let mut t = Self {
            r,
            model,
            reference,
            lora,
            replicas,
            rollout_copies,
            codec,
            opt,
            files,
            ckpt_dir,
            eos,
            pad,
        };
        // A checkpoint of a LoRA run holds merged weights; the replicas load the same file. The
        // copy keeps them equal in every case.
        t.sync_replicas();
        Ok(t)
    }

    fn save(&self, state: &TrainerState) -> Result<PathBuf> {
        let target = self.ckpt_dir.join(step_dir_name(state.step));
        let w = AtomicDir::begin(&target)?;
        self.files.write_into(&w)?;
        write_weights_and_optimizer(&w, &self.model, &self.opt)?;
        if let Some(l) = &self.lora {
            w.write(
                "adapter_model.safetensors",
                &safetensors_bytes(&l.peft_tensors(), &metadata()).map_err(|e| anyhow!(e))?,
            )?;
            w.write_json(
                "adapter_config.json",
                &l.peft_config(&resolve_model_dir(&self.r.model.init).display().to_string()),
            )?;
        }
        w.write_json("trainer_state.json", &serde_json::to_value(state)?)?;
        w.commit()?;
        prune_checkpoints(&self.ckpt_dir, self.r.train.keep_checkpoints);
        Ok(target)
    }

    /// The step's groups: rollouts of the drawn prompts, scored; zero-std groups handled per the
    /// recipe (kept, skipped, or replaced by fresh prompts).
    /// One group per problem; with rollout workers, problem i goes to worker i mod workers
    /// (worker 0 is this thread and the policy itself, the others hold replicas), and each
    /// worker decodes its groups together. Each group's sampling seed is its own, so the result
    /// does not depend on the number of workers (up to float rounding between batch shapes).
    fn rollouts(&mut self, problems: &[Problem], seeds: &[u64]) -> Result<Vec<Group>> {
        let g = &self.r.generation;
        let (codec, eos) = (&self.codec, &self.eos);
        // The problems (and seeds) of worker k.
        let workers = self.replicas.len() + 1;
        let share = |k: usize| -> (Vec<usize>, Vec<&Problem>, Vec<u64>) {
            let idx: Vec<usize> = (k..problems.len()).step_by(workers).collect();
            let ps = idx.iter().map(|&i| &problems[i]).collect();
            let ss = idx.iter().map(|&i| seeds[i]).collect();
            (idx, ps, ss)
        };
        if self.replicas.is_empty() || problems.len() < 2 {
            let all: Vec<&Problem> = problems.iter().collect();
            let model = self.rollout_copies.first().unwrap_or(&self.model);
            return rollouts(model, codec, &all, g, eos, seeds);
        }
        // Worker k samples with its rollout copy, when there are some.
        let (first_copy, other_copies) = match self.rollout_copies.split_first_mut() {
            Some((first, rest)) => (Some(&*first), rest.iter_mut().map(Some).collect()),
            None => (
                None,
                (0..self.replicas.len()).map(|_| None).collect::<Vec<_>>(),
            ),
        };
        let mut results: Vec<Option<Group>> = (0..problems.len()).map(|_| None).collect();
        let mut place = |idx: Vec<usize>, groups: Vec<Group>| {
            for (i, group) in idx.into_iter().zip(groups) {
                results[i] = Some(group);
            }
        };
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = self
                .replicas
                .iter_mut()
                .zip(other_copies)
                .enumerate()
                .map(|(w, (rep, copy))| {
                    let (idx, ps, ss) = share(w + 1);
                    // `&mut`: a model may be used by one thread at a time (its rope tables are
                    // cached in a RefCell).
                    let (model, codec) = (copy.unwrap_or(&mut rep.model), &rep.codec);
                    scope.spawn(move || {
                        // A new thread starts with libtorch's default thread count.
                        tch::set_num_threads(1);
                        rollouts(&*model, codec, &ps, g, eos, &ss).map(|groups| (idx, groups))
                    })
                })
                .collect();
            let (idx, ps, ss) = share(0);
            let mine = rollouts(first_copy.unwrap_or(&self.model), codec, &ps, g, eos, &ss);
            for h in handles {
                let (idx, groups) = h.join().expect("a rollout worker panicked")?;
                place(idx, groups);
            }
            place(idx, mine?);
            Ok(())
        })?;
        Ok(results
            .into_iter()
            .map(|r| r.expect("every problem was rolled out"))
            .collect())
    }

    /// Copies the policy's weights (and router biases) into the replicas and the rollout
    /// copies (cast to their precision).
    fn sync_replicas(&mut self) {
        if self.replicas.is_empty() && self.rollout_copies.is_empty() {
            return;
        }
        let _g = tch::no_grad_guard();
        let src = self.model.vars.variables();
        let copies = self
            .replicas
            .iter()
            .map(|r| &r.model)
            .chain(&self.rollout_copies);
        for model in copies {
            for (name, mut dst) in model.vars.variables() {
                dst.copy_(&src[&name]);
            }
        }
    }

    fn collect(
        &mut self,
        source: &Source,
        rewards: &Rewards,
        step: u64,
    ) -> Result<Vec<ScoredGroup>> {
        let want = self.r.generation.prompts_per_step;
        let mut out: Vec<ScoredGroup> = Vec::new();
        let mut round = 0;
        loop {
            let missing = if round == 0 {
                want
            } else {
                want - out.iter().filter(|s| s.used).count()
            };
            let problems = source.draw(step, round, missing);
            let seeds: Vec<u64> = (0..problems.len())
                .map(|i| content_hash(&[self.r.seed, 0x6E0, step, round as u64, i as u64]))
                .collect();
            for group in self.rollouts(&problems, &seeds)? {
                let sg = self.score(source, rewards, group, round);
                out.push(sg);
            }
            let informative = out.iter().filter(|s| s.used).count();
            round += 1;
            if self.r.grpo.zero_std != ZeroStd::Resample
                || informative >= want
                || round > self.r.grpo.max_resample_rounds
            {
                break;
            }
        }
        Ok(out)
    }

    fn score(&self, source: &Source, rewards: &Rewards, group: Group, round: usize) -> ScoredGroup {
        let scores: Vec<Scored> = group
            .samples
            .iter()
            .map(|s| {
                rewards.score(&RewardInput {
                    completion: &s.text,
                    answer: &group.problem.answer,
                    tokens: s.ids.len(),
                    finished: s.finished,
                    task: source.task(),
                })
            })
            .collect();
        let rewards: Vec<f64> = scores.iter().map(|s| s.total).collect();
        let shapes = match source.task() {
            Some(task) => {
                let p = &group.problem;
                let example = Example {
                    level: p.level.unwrap_or(0),
                    prompt: p.prompt.clone(),
                    answer: p.answer.clone(),
                    reasoning: String::new(),
                };
                group
                    .samples
                    .iter()
                    .map(|s| task.shape(&example, &s.text))
                    .collect()
            }
            None => vec![None; group.samples.len()],
        };
        let zero_std = rewards.iter().all(|&x| x == rewards[0]);
        let used = match self.r.grpo.zero_std {
            ZeroStd::Keep => true,
            ZeroStd::Skip | ZeroStd::Resample => !zero_std,
        };
        ScoredGroup {
            group,
            scores,
            rewards,
            zero_std,
            round,
            used,
            advantages: Vec::new(),
            shapes,
        }
    }

    fn loss_config(&self) -> LossConfig {
        LossConfig {
            epsilon_low: self.r.grpo.epsilon_low,
            epsilon_high: self.r.grpo.epsilon_high(),
            beta: self.r.grpo.beta,
        }
    }

    fn normaliser(&self, rows: &[Row]) -> Normaliser {
        Normaliser {
            aggregation: self.r.grpo.loss,
            sequences: rows.len(),
            tokens: rows
                .iter()
                .filter(|x| x.in_loss)
                .map(|x| x.completion_len)
                .sum(),
            max_len: self.r.generation.max_new_tokens,
        }
    }

    /// The rows as micro-batches.
    fn prepare(&self, rows: &[Row]) -> Vec<MicroBatch> {
        make_micro_batches(
            rows,
            self.r.train.micro_batch_size,
            self.pad,
            self.model.device,
            self.routing_use(),
        )
    }

    /// For an MoE policy: the rollout's routing is compared with the update's, and replayed
    /// if the recipe says so.
    fn routing_use(&self) -> Option<RoutingUse> {
        let moe = self.model.config.moe.as_ref()?;
        Some(RoutingUse {
            k: moe.top_k,
            replay: self.r.grpo.routing_replay == RoutingReplay::Rollout,
        })
    }

    /// Runs `job(worker, chunk)` on each worker's share of the micro-batches: contiguous chunks,
    /// worker 0 (this thread, the policy itself) first, then one thread per replica.
    fn on_workers<T: Send>(&mut self, mbs: &mut [MicroBatch], job: &WorkerJob<'_, T>) -> Vec<T> {
        let workers = (self.replicas.len() + 1).min(mbs.len()).max(1);
        let per = mbs.len().div_ceil(workers).max(1);
        let mut chunks = mbs.chunks_mut(per);
        let first = chunks.next().unwrap_or_default();
        let main = (&self.model, self.reference.as_ref());
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .replicas
                .iter_mut()
                .zip(chunks)
                .map(|(rep, chunk)| {
                    let (m, r) = (&mut rep.model, rep.reference.as_mut());
                    scope.spawn(move || {
                        tch::set_num_threads(1);
                        job(&*m, r.map(|r| &*r), chunk)
                    })
                })
                .collect();
            let mut out = vec![job(main.0, main.1, first)];
            for h in handles {
                out.push(h.join().expect("an update worker panicked"));
            }
            out
        })
    }

    /// Adds the replicas' gradients into the policy's (in worker order) and clears theirs.
    fn gather_gradients(&mut self) {
        if self.replicas.is_empty() {
            return;
        }
        let _g = tch::no_grad_guard();
        let main = self.model.vars.variables();
        for rep in &self.replicas {
            for (name, t) in rep.model.vars.variables() {
                let mut g = t.grad();
                if !g.defined() {
                    continue;
                }
                let mut dst = main[&name].grad();
                if add_and_clear_f32(&dst, &g) {
                    continue;
                }
                if dst.defined() {
                    let _ = dst.g_add_(&g);
                } else {
                    // The policy's chunk did not touch this weight (e.g. an expert no token of it
                    // chose): start from zero so the sum still exists.
                    let p = &main[&name];
                    tch::with_grad(|| (p * 0.0).sum(Kind::Float).backward());
                    let _ = p.grad().g_add_(&g);
                }
                let _ = g.zero_();
            }
        }
    }

    /// μ optimiser updates on the rows.
    fn update(&mut self, rows: &[Row], lr: f64) -> UpdateOutcome {
        let norm = self.normaliser(rows);
        let cfg = self.loss_config();
        let temperature = self.r.generation.temperature as f64;
        let objective = Objective {
            norm,
            loss: cfg,
            temperature,
            head_budget: HEAD_CHUNK_ELEMENTS,
        };
        let mut mbs = self.prepare(rows);
        // A reference model (one per worker) scores each worker's micro-batches inside its first
        // pass, with no wait for the other workers in between.
        let own_reference = self.reference.is_some();
        if let (false, Some(lora), true) = (own_reference, &self.lora, cfg.beta != 0.0) {
            // The base with the adapters off (on the policy itself: no second copy).
            lora.shift(-1.0);
            reference_pass(&self.model, &mut mbs, temperature, HEAD_CHUNK_ELEMENTS);
            lora.shift(1.0);
        }
        let experts = self
            .model
            .config
            .moe
            .as_ref()
            .map_or(0, |m| m.n_routed_experts);
        let mut counter = LoadCounter::new(experts);
        let mut out = UpdateOutcome {
            tokens: rows.iter().map(|x| x.ids.len()).sum(),
            ..Default::default()
        };
        let iterations = self.r.grpo.iterations;
        let (mut loss_sum, mut clip_lo, mut clip_hi) = (0.0, 0.0, 0.0);
        let mut first = PassStats::default();
        for it in 0..iterations {
            self.opt.zero_grad();
            let passes = self.on_workers(&mut mbs, &|model, reference, chunk| {
                if it == 0 && own_reference {
                    let reference = reference.expect("a reference per worker");
                    reference_pass(reference, chunk, temperature, HEAD_CHUNK_ELEMENTS);
                }
                let mut c = LoadCounter::new(experts);
                let mut m = Mismatch::default();
                let p = accumulate(model, chunk, &objective, it, &mut c, &mut m);
                (p, c.counts, m)
            });
            let mut p = PassStats::default();
            for (q, counts, m) in &passes {
                p.add(q);
                out.mismatch.add(m);
                for (&layer, load) in counts {
                    let row = counter
                        .counts
                        .entry(layer)
                        .or_insert_with(|| vec![0; load.len()]);
                    row.iter_mut().zip(load).for_each(|(a, b)| *a += b);
                }
            }
            self.gather_gradients();
            if let Some(l) = &self.lora {
                l.project_gradients();
            }
            let grad_norm = self.opt.clip_grad_norm(self.r.optimizer.grad_clip);
            out.grad_norm = grad_norm;
            if !(p.loss.is_finite() && grad_norm.is_finite()) {
                out.loss = p.loss;
                out.applied = false;
                self.opt.zero_grad();
                return out;
            }
            match &self.lora {
                Some(l) => {
                    // W moves by the change of (α/r)·B·A.
                    l.shift(-1.0);
                    self.opt.step(lr);
                    l.shift(1.0);
                }
                None => self.opt.step(lr),
            }
            if it + 1 < iterations {
                // The next iteration's gradients are taken at the new weights on every worker.
                self.sync_replicas();
            }
            loss_sum += p.loss;
            clip_lo += p.clip_low;
            clip_hi += p.clip_high;
            if it == 0 {
                first = p;
            }
        }
        let denom = norm.tokens.max(1) as f64;
        out.loss = loss_sum / iterations as f64;
        out.applied = true;
        out.kl = (self.r.grpo.beta != 0.0).then_some(first.kl_sum / denom);
        out.entropy = first.entropy_sum / denom;
        out.clip_low = clip_lo / (denom * iterations as f64);
        out.clip_high = clip_hi / (denom * iterations as f64);
        out.counts = counter.counts;
        if let Some(b) = &self.r.balance {
            nudge_biases(&self.model, &out.counts, b.bias_update_rate);
        }
        self.sync_replicas();
        out
    }

    /// Greedy held-out evaluation: a task's held-out split (seed 0, as `thinkbench eval`), or
    /// the recipe's `data.eval_path` scored with the accuracy reward.
    fn evaluate(&self, source: &Source, rewards: &Rewards, step: u64) -> Result<EvalSummary> {
        let e = self
            .r
            .eval
            .as_ref()
            .ok_or_else(|| anyhow!("no [eval] section"))?;
        if let Some(task) = source.task() {
            let levels = e
                .levels
                .clone()
                .or_else(|| self.r.data.levels.clone())
                .unwrap_or_else(|| task.levels().collect());
            let opts = EvalOptions {
                n: e.n,
                seed: 0,
                levels,
                max_new_tokens: e.max_new_tokens,
                temperature: 0.0,
                top_p: 1.0,
                split: Split::HeldOut,
                batch: super::eval::EVAL_BATCH,
                first_turn: e.turn.unwrap_or(1),
                turns: e.turn.unwrap_or(1),
                samples: 1,
            };
            let (rep, _) = evaluate(&self.model, &self.codec, task, &opts, &mut |_, _, _| {})
                .map_err(|e| anyhow!(e))?;
            return Ok(EvalSummary {
                step,
                n: rep.n,
                accuracy: rep.accuracy,
                format_rate: rep.format_rate,
                by_level: rep.by_level.iter().map(|l| (l.level, l.accuracy)).collect(),
                seconds: rep.seconds,
            });
        }
        let t0 = Instant::now();
        let path =
            self.r.data.eval_path.as_ref().ok_or_else(|| {
                anyhow!("data.eval_path is needed for [eval] with a JSONL dataset")
            })?;
        let problems: Vec<Problem> =
            super::problems::read_jsonl(path, self.r.data.instruction.as_deref())
                .map_err(|e| anyhow!(e))?
                .into_iter()
                .take(e.n)
                .collect();
        let (mut correct, mut formatted) = (0usize, 0usize);
        for p in &problems {
            let ids = super::rollout::prompt_ids(&self.codec, p)?;
            let req = GenerateRequest {
                max_new_tokens: e.max_new_tokens,
                sampling: SamplingParams::greedy(),
                eos_ids: self.eos.clone(),
                top_logprobs: 0,
                trace_routing: false,
                ..GenerateRequest::new(ids)
            };
            let g = generate(
                &self.model,
                Some(&self.codec),
                &req,
                &AtomicBool::new(false),
                &mut |_| {},
            )
            .map_err(|e| anyhow!("eval: {e}"))?;
            let c = &g.completions[0];
            let s = rewards.score(&RewardInput {
                completion: &c.text,
                answer: &p.answer,
                tokens: c.tokens.len(),
                finished: c.finish_reason == FinishReason::Stop,
                task: None,
            });
            correct += usize::from(s.correct);
            formatted += usize::from(
                super::rewards::format(
                    c.text.split(&self.eos_text()).next().unwrap_or(""),
                    c.finish_reason == FinishReason::Stop,
                )
                .value
                    > 0.0,
            );
        }
        let n = problems.len().max(1) as f64;
        Ok(EvalSummary {
            step,
            n: problems.len(),
            accuracy: correct as f64 / n,
            format_rate: formatted as f64 / n,
            by_level: Vec::new(),
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    fn eos_text(&self) -> String {
        self.eos
            .first()
            .map(|&id| self.codec.token_text(id))
            .unwrap_or_default()
    }
}

/// `dst += src; src = 0` as one loop when both are distinct contiguous f32 CPU tensors of the
/// same size (a replica's gradient into the policy's); false, and nothing done, otherwise.
fn add_and_clear_f32(dst: &Tensor, src: &Tensor) -> bool {
    let ok = |t: &Tensor| {
        t.defined() && t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous()
    };
    if !ok(dst) || !ok(src) || dst.numel() != src.numel() || dst.data_ptr() == src.data_ptr() {
        return false;
    }
    let n = dst.numel();
    // SAFETY: two distinct contiguous f32 CPU tensors of n elements (gradients of different
    // models), touched by no other thread while the update gathers them.
    let (d, s) = unsafe {
        (
            std::slice::from_raw_parts_mut(dst.data_ptr() as *mut f32, n),
            std::slice::from_raw_parts_mut(src.data_ptr() as *mut f32, n),
        )
    };
    for (d, s) in d.iter_mut().zip(s.iter_mut()) {
        *d += *s;
        *s = 0.0;
    }
    true
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// The step's metrics line (TRL's names where TRL has the metric), from the groups of the step's
/// own draw (round 0: what the policy did, before any filtering) and the update.
fn step_record(
    step: u64,
    groups: &[ScoredGroup],
    names: &[&'static str],
    up: &UpdateOutcome,
    lr: f64,
    beta: f64,
) -> Value {
    let first: Vec<&ScoredGroup> = groups.iter().filter(|g| g.round == 0).collect();
    let totals: Vec<f64> = first
        .iter()
        .flat_map(|g| g.rewards.iter().copied())
        .collect();
    let lens: Vec<f64> = first
        .iter()
        .flat_map(|g| g.group.samples.iter().map(|s| s.ids.len() as f64))
        .collect();
    let finished: Vec<f64> = first
        .iter()
        .flat_map(|g| {
            g.group
                .samples
                .iter()
                .filter(|s| s.finished)
                .map(|s| s.ids.len() as f64)
        })
        .collect();
    let n = lens.len().max(1) as f64;
    let truncated = first
        .iter()
        .flat_map(|g| g.group.samples.iter())
        .filter(|s| !s.finished)
        .count() as f64;
    let correct = first
        .iter()
        .flat_map(|g| g.scores.iter())
        .filter(|s| s.correct)
        .count() as f64;
    let reflections: usize = first
        .iter()
        .flat_map(|g| g.group.samples.iter())
        .map(|s| reflection_words(&s.text))
        .sum();
    // A group of equal rewards has no spread: exactly 0, not the 1e-17 a rounded mean leaves.
    let group_std: Vec<f64> = first
        .iter()
        .map(|g| {
            if g.zero_std {
                0.0
            } else {
                std_bessel(&g.rewards)
            }
        })
        .collect();
    let zero = first.iter().filter(|g| g.zero_std).count() as f64;
    let mut rec = json!({
        "step": step,
        "reward": mean(&totals),
        "reward_std": mean(&group_std),
        "accuracy": correct / n,
        "loss": up.loss,
        "grad_norm": up.grad_norm,
        "lr": lr,
        "skipped": !up.applied,
        "entropy": up.entropy,
        "clip_ratio/low_mean": up.clip_low,
        "clip_ratio/high_mean": up.clip_high,
        "clip_ratio/region_mean": up.clip_low + up.clip_high,
        "completions/mean_length": mean(&lens),
        "completions/min_length": lens.iter().copied().reduce(f64::min).unwrap_or(0.0),
        "completions/max_length": lens.iter().copied().fold(0.0, f64::max),
        "completions/mean_terminated_length": mean(&finished),
        "completions/clipped_ratio": truncated / n,
        "frac_reward_zero_std": zero / first.len().max(1) as f64,
        "reflection_words": reflections,
        "groups_trained": groups.iter().filter(|g| g.used).count(),
        "groups_drawn": groups.len(),
    });
    if beta != 0.0 {
        rec["kl"] = json!(up.kl.unwrap_or(0.0));
    }
    if let Some(m) = up.mismatch.pooled() {
        rec["router/mismatch"] = json!(round4(m));
        for (layer, share) in up.mismatch.shares() {
            rec[format!("router/mismatch/layer_{layer}")] = json!(round4(share));
        }
    }
    for name in names {
        let v: Vec<f64> = first
            .iter()
            .flat_map(|g| g.scores.iter().filter_map(|s| s.value(name)))
            .collect();
        rec[format!("rewards/{name}/mean")] = json!(mean(&v));
        rec[format!("rewards/{name}/std")] = json!(std_bessel(&v));
    }
    let loads = layer_loads(&up.counts);
    if let Some(m) = loads.iter().map(|l| l.min_over_mean).reduce(f64::min) {
        rec["expert_load_min_over_mean"] = json!(round4(m));
    }
    // The reasoning's form over the step's rollouts (tasks that analyse it).
    let shapes = first.iter().flat_map(|g| {
        g.shapes
            .iter()
            .zip(&g.scores)
            .filter_map(|(sh, sc)| sh.as_ref().map(|sh| (sh, sc.correct)))
    });
    if let Some(stats) = shape_stats(shapes) {
        stats.log_fields(&mut rec);
    }
    rec
}

/// The groups of a step as rollout-log lines (the TUI's rollout viewer reads them).
fn rollout_records(step: u64, groups: &[ScoredGroup]) -> Vec<Value> {
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            json!({
                "step": step,
                "group": i,
                "round": g.round,
                "used": g.used,
                "zero_std": g.zero_std,
                "prompt": g.group.problem.prompt,
                "earlier": g.group.problem.earlier,
                "answer": g.group.problem.answer,
                "level": g.group.problem.level,
                "completions": g.group.samples.iter().enumerate().map(|(k, s)| with_shape(json!({
                    "text": s.text,
                    "tokens": s.ids.len(),
                    "truncated": !s.finished,
                    "reward": g.rewards[k],
                    "rewards": g.scores[k].parts.iter().map(|p| (p.name, p.value)).collect::<BTreeMap<_, _>>(),
                    "correct": g.scores[k].correct,
                    "extracted": g.scores[k].extracted,
                    "advantage": g.advantages.get(k).copied(),
                }), g.shapes[k].as_ref())).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// A rollout-log completion with its reasoning's form, when the task analyses it (`shape`: the
/// counts, and the byte ranges of its checks and waits for the rollout viewer to mark).
fn with_shape(mut completion: Value, shape: Option<&Shape>) -> Value {
    if let Some(sh) = shape {
        completion["shape"] = json!(sh);
    }
    completion
}

/// Freezes the MoE routers' weights (their selection bias is never trained by gradient).
fn freeze_routers(model: &Model) -> usize {
    let routers = model.routers();
    for router in &routers {
        let _ = router.weight.set_requires_grad(false);
    }
    routers.len()
}

fn load_state(dir: &Path) -> Result<TrainerState> {
    let p = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: bad trainer state", p.display()))
}

/// Runs (or resumes) a GRPO recipe.
pub fn run(r: &GrpoRecipe, opts: &RunOptions) -> Result<RunSummary> {
    configure_process(r.train.threads);
    let init_dir = resolve_model_dir(&r.model.init);
    if !init_dir.join("config.json").is_file() {
        bail!(
            "model.init {}: no model there (config.json not found)",
            init_dir.display()
        );
    }
    if r.grpo.routing_replay == RoutingReplay::Rollout {
        let config = crate::model::config::ModelConfig::load(&init_dir)?;
        if config.moe.is_none() {
            bail!(
                "grpo.routing_replay = \"rollout\": {} is a dense model (no MoE routers, so \
                 no routing to replay); set it to \"off\"",
                init_dir.display()
            );
        }
    }
    let source = Source::from_recipe(&r.data, r.seed).map_err(|e| anyhow!("data: {e}"))?;
    let out = r.output_dir.clone();
    ensure_writable(&out, "output_dir")?;
    let folder = RunFolder::claim(&out, r)?;
    let ckpt_dir = folder.checkpoints.clone();

    let resumed = folder.checkpoint_to_resume(opts.require_checkpoint)?;
    let (start_dir, state) = match &resumed {
        Some((_, dir)) => (dir.clone(), load_state(dir)?),
        None => (
            init_dir.clone(),
            TrainerState {
                seed: r.seed,
                ..Default::default()
            },
        ),
    };
    let resumed_from = resumed.as_ref().map(|c| c.0);
    let mut trainer = Trainer::new(r, &start_dir, &init_dir, ckpt_dir.clone(), state.adam_t)?;
    let rewards = Rewards::from_recipe(r, &trainer.eos_text());
    let names = rewards.names();

    let mut log = folder.open_log("metrics.jsonl", state.step)?;
    let rollout_log = folder.open_log("rollouts.jsonl", state.step)?;
    let total = r.train.steps;
    let trainable: i64 = trainer
        .opt
        .params
        .iter()
        .map(|p| p.tensor.numel() as i64)
        .sum();
    if !opts.quiet {
        eprintln!(
            "grpo {}: {} ({} trainable parameters{}), {} steps of {} prompts x {} completions, β = {}, loss {:?}, {}",
            r.name,
            match resumed_from {
                Some(s) => format!("resuming from step {s} ({})", start_dir.display()),
                None => format!("starting from {}", start_dir.display()),
            },
            trainable,
            if r.model.train_router { "" } else { ", routers frozen" },
            total,
            r.generation.prompts_per_step,
            r.generation.group_size,
            r.grpo.beta,
            r.grpo.loss,
            log.path().display()
        );
    }
    let pb = StepProgress::new(total, state.step, opts.quiet);
    let say = |line: String| pb.say(line);

    let eval_every = r
        .eval
        .as_ref()
        .and_then(|e| e.every)
        .filter(|_| !opts.skip_eval);
    let mut last_eval: Option<EvalSummary> = None;
    // The starting point, for the before/after comparison (fresh runs only).
    if eval_every.is_some() && state.step == 0 {
        let e = eval_and_log(&trainer, &source, &rewards, &mut log, 0)?;
        say(format!(
            "step 0: held-out accuracy {:.1}% (n={}, greedy)",
            100.0 * e.accuracy,
            e.n
        ));
        last_eval = Some(e);
    }

    let from = state.step;
    let mut steps = GrpoSteps {
        trainer: &mut trainer,
        source: &source,
        rewards: &rewards,
        names: &names,
        st: state,
        last_eval,
    };
    let schedule = Schedule {
        total,
        log_every: r.train.log_every,
        checkpoint_every: r.train.checkpoint_every,
        max_bad_steps: r.train.max_bad_steps,
        eval_every,
    };
    let mut logs = Logs {
        metrics: log,
        rollouts: Some(rollout_log),
    };
    let last_ckpt = resumed_from.map(|s| ckpt_dir.join(step_dir_name(s)));
    let end = run_steps(&mut steps, from, &schedule, &mut logs, opts, &pb, last_ckpt)?;
    let GrpoSteps {
        st, mut last_eval, ..
    } = steps;
    let mut log = logs.metrics;
    if end.stopped {
        let (steps, secs) = (st.step, st.train_seconds);
        return Ok(RunSummary::stopped(
            out,
            end,
            steps,
            resumed_from,
            secs,
            last_eval,
        ));
    }
    let final_dir = end.last_checkpoint;
    if !opts.quiet {
        eprintln!(
            "trained {} steps in {:.1} min ({} completions); checkpoint {}",
            st.step,
            st.train_seconds / 60.0,
            st.completions_seen,
            final_dir.display()
        );
    }
    // A final evaluation when none ran at the last step.
    if let (Some(_), true, false) = (
        &r.eval,
        last_eval.as_ref().is_none_or(|e| e.step != st.step),
        opts.skip_eval,
    ) {
        last_eval = Some(eval_and_log(
            &trainer, &source, &rewards, &mut log, st.step,
        )?);
    }
    if let Some(e) = &last_eval {
        let path = out.join("eval.json");
        write_synced(&path, serde_json::to_string_pretty(e)?.as_bytes())
            .with_context(|| path.display().to_string())?;
        if !opts.quiet {
            eprintln!(
                "held-out accuracy at step {}: {:.1}% (n={})",
                e.step,
                100.0 * e.accuracy,
                e.n
            );
        }
    }
    let exported_to = super::sft::export_if_asked(
        &final_dir,
        r.export_to.as_deref(),
        &r.model.save_dtype,
        opts.quiet,
    )?;
    Ok(RunSummary {
        output_dir: out,
        steps_done: st.step,
        resumed_from,
        final_checkpoint: Some(final_dir),
        exported_to,
        train_seconds: st.train_seconds,
        last_eval,
    })
}

/// Evaluates the policy on held-out problems and logs the event.
fn eval_and_log(
    trainer: &Trainer,
    source: &Source,
    rewards: &Rewards,
    log: &mut MetricsLog,
    step: u64,
) -> Result<EvalSummary> {
    let e = trainer.evaluate(source, rewards, step)?;
    log.write(
        &json!({"event": "eval", "step": step, "accuracy": e.accuracy,
        "format_rate": e.format_rate, "n": e.n, "by_level": e.by_level, "seconds": e.seconds}),
    )?;
    Ok(e)
}

/// GRPO's side of the shared loop: one step rolls out the step's groups, scores them, turns
/// rewards into advantages and updates the policy (μ iterations).
struct GrpoSteps<'t, 'r> {
    trainer: &'t mut Trainer<'r>,
    source: &'t Source,
    rewards: &'t Rewards,
    names: &'t [&'static str],
    st: TrainerState,
    last_eval: Option<EvalSummary>,
}

impl Steps for GrpoSteps<'_, '_> {
    fn step(&mut self, step: u64) -> Result<StepReport> {
        let r = self.trainer.r;
        let t0 = Instant::now();
        let mut groups = self.trainer.collect(self.source, self.rewards, step)?;
        let rollout_s = t0.elapsed().as_secs_f64();
        let rows = training_rows(r, &mut groups);
        let lr = lr_at(step, r.train.steps, &r.optimizer);
        let t1 = Instant::now();
        let up = if rows.iter().any(|x| x.in_loss) {
            self.trainer.update(&rows, lr)
        } else {
            // Nothing to learn from (every group's rewards were equal and skipped): no update.
            UpdateOutcome {
                applied: true,
                ..Default::default()
            }
        };
        let train_s = t1.elapsed().as_secs_f64();
        let dt = t0.elapsed().as_secs_f64();
        let st = &mut self.st;
        st.step = step + 1;
        st.adam_t = self.trainer.opt.t;
        st.completions_seen += rows.len() as u64;
        st.tokens_seen += up.tokens as u64;
        st.train_seconds += dt;
        st.bad_steps = if up.applied { 0 } else { st.bad_steps + 1 };
        let generated: usize = groups
            .iter()
            .flat_map(|g| g.group.samples.iter())
            .map(|s| s.ids.len())
            .sum();
        let mut rec = step_record(st.step, &groups, self.names, &up, lr, r.grpo.beta);
        rec["step_time"] = json!(dt);
        rec["rollout_time"] = json!(rollout_s);
        rec["update_time"] = json!(train_s);
        rec["tokens_per_s"] = json!(generated as f64 / dt);
        rec["num_tokens"] = json!(st.tokens_seen);
        rec["elapsed_s"] = json!(st.train_seconds);
        let f = |k: &str| rec[k].as_f64().unwrap_or(0.0);
        let progress = format!(
            "reward {:.3}  acc {:.0}%",
            f("reward"),
            100.0 * f("accuracy")
        );
        let line = format!(
            "step {:>4}/{}  reward {:.3} ±{:.3}  acc {:>5.1}%  loss {:+.4}{}{}  ent {:.3}  len {:.0}  zero-std {:>3.0}%  clip {:.3}  {:.2} s/step",
            st.step,
            r.train.steps,
            f("reward"),
            f("reward_std"),
            100.0 * f("accuracy"),
            f("loss"),
            rec.get("kl").and_then(Value::as_f64).map_or(String::new(), |k| format!("  kl {k:.4}")),
            rec.get("router/mismatch").and_then(Value::as_f64).map_or(String::new(), |m| format!("  route≠ {:.1}%", 100.0 * m)),
            f("entropy"),
            f("completions/mean_length"),
            100.0 * f("frac_reward_zero_std"),
            f("clip_ratio/region_mean"),
            dt,
        );
        Ok(StepReport {
            applied: up.applied,
            loss: up.loss,
            grad_norm: up.grad_norm,
            rollouts: rollout_records(st.step, &groups),
            record: rec,
            progress,
            line,
        })
    }

    fn save(&mut self) -> Result<PathBuf> {
        self.trainer.save(&self.st)
    }

    fn evaluate(&mut self, step: u64, _last: bool, log: &mut MetricsLog) -> Result<Option<String>> {
        let e = eval_and_log(self.trainer, self.source, self.rewards, log, step)?;
        let line = format!(
            "step {step}: held-out accuracy {:.1}% (n={}, greedy{})",
            100.0 * e.accuracy,
            e.n,
            e.by_level
                .iter()
                .map(|(l, a)| format!(", L{l} {:.0}%", 100.0 * a))
                .collect::<String>()
        );
        self.last_eval = Some(e);
        Ok(Some(line))
    }
}

/// The step's training rows: every sample of the groups trained on, with its group-relative
/// advantage (also stored on its group, for the rollout log).
fn training_rows(r: &GrpoRecipe, groups: &mut [ScoredGroup]) -> Vec<Row> {
    let used: Vec<usize> = (0..groups.len()).filter(|&i| groups[i].used).collect();
    let flat: Vec<f64> = used
        .iter()
        .flat_map(|&i| groups[i].rewards.iter().copied())
        .collect();
    let mut rows = Vec::new();
    if used.is_empty() {
        return rows;
    }
    let g = r.generation.group_size;
    let adv = advantages(&flat, g, r.grpo.scale_rewards);
    for (k, &i) in used.iter().enumerate() {
        groups[i].advantages = adv.values[k * g..(k + 1) * g].to_vec();
        let sg = &groups[i];
        for (s, &a) in sg.group.samples.iter().zip(&sg.advantages) {
            let mut ids: Vec<i64> = sg.group.prompt_ids.iter().map(|&x| x as i64).collect();
            ids.extend(s.ids.iter().map(|&x| x as i64));
            rows.push(Row {
                ids,
                prompt_len: sg.group.prompt_ids.len(),
                completion_len: s.ids.len(),
                advantage: a,
                in_loss: (!r.grpo.mask_truncated || s.finished) && !s.ids.is_empty(),
                prompt_routing: sg.group.prompt_routing.clone(),
                routing: s.routing.clone(),
            });
        }
    }
    rows
}

mod pass;
mod replay;
#[cfg(test)]
mod tests;
