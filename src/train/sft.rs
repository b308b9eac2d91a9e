//! Supervised fine-tuning on a task's teacher traces (distillation), with DeepSeek-V3's
//! auxiliary-loss-free balancing, checkpoints, exact resume and a metrics log.
//!
//! One readable loop: draw the step's problems (each after 0..=N earlier turns of a
//! conversation once `data.earlier_turns_from_step` is reached; see `train::conversation`),
//! tokenise, forward (the inference code, gradients on) in length-sorted micro-batches,
//! cross-entropy on the completion tokens, clip, AdamW, nudge the router biases, log, checkpoint.
//!
//! Layout of the output folder:
//!
//! ```text
//! <output_dir>/recipe.json            the recipe the run was started with
//! <output_dir>/metrics.jsonl          one line per step (+ evaluations)
//! <output_dir>/checkpoints/step-N/    complete model directories + optimizer and trainer state
//! <output_dir>/eval.json              the final held-out evaluation
//! ```
//!
//! Re-running the same command continues from the newest checkpoint; the result is identical to
//! a run that was never interrupted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::train::progress::StepProgress;
use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Kind};

use super::balance::{layer_loads, nudge_biases, LoadCounter};
use super::checkpoint::{
    generation_config, model_tensors, prune_checkpoints, safetensors_bytes, step_dir_name,
    AtomicDir,
};
use super::conversation::training_turns;
use super::data::{encode, loss_sum, make_batch, micro_batches, Batch, Encoded, Sampler};
use super::eval::{evaluate, render, EvalOptions};
use super::head::{backward_into_layers, head_chunks, positions, HEAD_CHUNK_ELEMENTS};
use super::init::{
    config_json, deepseek_v3_weights, padded_vocab, parameter_counts, random_weights,
};
use super::metrics::MetricsLog;
use super::optim::{lr_at, AdamW};
use super::recipe::SftRecipe;
pub use super::run_dir::ensure_writable;
use super::run_dir::write_weights_and_optimizer;
use super::run_dir::{metadata, ModelFiles};
use super::run_skeleton::{configure_process, restore_optimizer, RunFolder};
use super::step_loop::{run_steps, Logs, Schedule, StepReport, Steps};
use super::task::{self, Split, Task};
use super::tokenizer;
use crate::model::{DType, Model};
use crate::text::TextCodec;

pub use super::step_loop::RunOptions;

/// What a finished (or stopped) run reports.
pub type RunSummary = super::step_loop::RunSummary<super::eval::EvalReport>;

/// SFT has no recipe key for it: five non-finite steps in a row end a run.
const MAX_BAD_STEPS: u64 = 5;

/// Trainer state saved next to the weights.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TrainerState {
    /// Optimiser steps taken.
    step: u64,
    /// AdamW's bias-correction step count.
    adam_t: u64,
    /// The data position: the problems of step s are drawn from (seed, s), so the next step's
    /// problems follow from `step` alone.
    data_step: u64,
    seed: u64,
    tokens_seen: u64,
    examples_seen: u64,
    train_seconds: f64,
}

/// Builds the starting model directory of a from-scratch run: tokenizer trained on the task's
/// corpus, config.json, random weights. Written with the checkpoint writer as `step-00000000`.
fn write_initial_checkpoint(r: &SftRecipe, task: &dyn Task, target: &Path) -> Result<()> {
    let arch = r
        .model
        .architecture
        .as_ref()
        .ok_or_else(|| anyhow!("model.architecture is required for init = \"scratch\""))?;
    let tk = r
        .tokenizer
        .as_ref()
        .ok_or_else(|| anyhow!("[tokenizer] is required for init = \"scratch\""))?;
    // The corpus: problems of every training level, prompts and teacher completions as plain
    // text, from a stream of their own.
    let sampler = Sampler::new(task, &r.data.levels, None, r.seed ^ 0x70C0);
    let mut texts = Vec::with_capacity(2 * tk.corpus_examples);
    let mut step = 0;
    while texts.len() < 2 * tk.corpus_examples {
        for ex in sampler.step(step, 64) {
            texts.push(ex.prompt.clone());
            texts.push(ex.completion());
        }
        step += 1;
    }
    texts.truncate(2 * tk.corpus_examples);
    let tok = tokenizer::train_bpe(texts.into_iter(), tk.vocab_size).map_err(|e| anyhow!(e))?;
    let vocab = padded_vocab(tok.get_vocab_size(true));
    let w = AtomicDir::begin(target)?;
    tokenizer::write_files(w.path(), &tok, arch.max_position_embeddings)
        .with_context(|| w.path().display().to_string())?;
    w.write_json("config.json", &config_json(arch, vocab, 0, 1))?;
    w.write_json("generation_config.json", &generation_config(0, 1))?;
    let weights = random_weights(&deepseek_v3_weights(arch, vocab), r.seed);
    w.write(
        "model.safetensors",
        &safetensors_bytes(&weights, &metadata()).map_err(|e| anyhow!(e))?,
    )?;
    let state = TrainerState {
        step: 0,
        adam_t: 0,
        data_step: 0,
        seed: r.seed,
        tokens_seen: 0,
        examples_seen: 0,
        train_seconds: 0.0,
    };
    w.write_json("trainer_state.json", &serde_json::to_value(&state)?)?;
    w.commit()?;
    Ok(())
}

struct Trainer<'a> {
    r: &'a SftRecipe,
    model: Model,
    codec: TextCodec,
    opt: AdamW,
    files: ModelFiles,
    ckpt_dir: PathBuf,
    eos: u32,
    pad: u32,
}

impl Trainer<'_> {
    fn save(&self, state: &TrainerState) -> Result<PathBuf> {
        let target = self.ckpt_dir.join(step_dir_name(state.step));
        let w = AtomicDir::begin(&target)?;
        self.files.write_into(&w)?;
        write_weights_and_optimizer(&w, &self.model, &self.opt)?;
        w.write_json("trainer_state.json", &serde_json::to_value(state)?)?;
        w.commit()?;
        prune_checkpoints(&self.ckpt_dir, self.r.train.keep_checkpoints);
        Ok(target)
    }

    /// One optimiser step over `examples`; returns (mean loss per target token, grad norm,
    /// target tokens, real tokens, load counts, whether the update was applied).
    fn update(&mut self, examples: &[Encoded], lr: f64) -> StepOutcome {
        let experts = self
            .model
            .config
            .moe
            .as_ref()
            .map_or(0, |m| m.n_routed_experts);
        let mut counter = LoadCounter::new(experts);
        self.opt.zero_grad();
        let total_targets: usize = examples
            .iter()
            .map(|e| e.ids.len() - e.prompt_len)
            .sum::<usize>()
            .max(1);
        let mut loss_total = 0.0;
        let mut tokens = 0;
        for mb in micro_batches(examples, self.r.train.micro_batch_size) {
            let batch = make_batch(&mb, self.pad, self.model.device);
            counter.real = batch.real.clone();
            loss_total += backprop_micro_batch(
                &self.model,
                &batch,
                &mut counter,
                total_targets,
                HEAD_CHUNK_ELEMENTS,
            );
            tokens += batch.tokens;
        }
        let norm = self.opt.clip_grad_norm(self.r.optimizer.grad_clip);
        let applied = loss_total.is_finite() && norm.is_finite();
        if applied {
            self.opt.step(lr);
            nudge_biases(
                &self.model,
                &counter.counts,
                self.r.balance.bias_update_rate,
            );
        }
        StepOutcome {
            loss: loss_total,
            grad_norm: norm,
            target_tokens: total_targets,
            tokens,
            counts: counter.counts,
            applied,
        }
    }
}

/// One micro-batch's share of the step's loss (cross-entropy summed over its target tokens,
/// divided by the step's `total_targets`), backpropagated into the parameters' gradients; returns
/// that share. The head and the loss run at most `budget` logits at a time (see `train::head`).
fn backprop_micro_batch(
    model: &Model,
    batch: &Batch,
    counter: &mut LoadCounter,
    total_targets: usize,
    budget: i64,
) -> f64 {
    let hidden = model.hidden(&batch.ids, &mut model.new_cache(), counter);
    let detached = hidden.detach().set_requires_grad(true);
    let (b, t) = batch.targets.size2().expect("targets are [b,S]");
    let mut loss = 0.0;
    for chunk in head_chunks(b, t, model.vocab_size() as i64, budget) {
        let logits = model.logits(&positions(&detached, chunk));
        let part = loss_sum(&logits, &positions(&batch.targets, chunk)) / total_targets as f64;
        part.backward();
        loss += part.double_value(&[]);
    }
    backward_into_layers(&hidden, &detached);
    loss
}

struct StepOutcome {
    loss: f64,
    grad_norm: f64,
    target_tokens: usize,
    tokens: usize,
    counts: BTreeMap<usize, Vec<u64>>,
    applied: bool,
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Runs (or resumes) an SFT recipe.
pub fn run(r: &SftRecipe, opts: &RunOptions) -> Result<RunSummary> {
    configure_process(r.train.threads);
    let task = task::by_name(&r.data.task).map_err(|e| anyhow!("data.task: {e}"))?;
    let out = r.output_dir.clone();
    ensure_writable(&out, "output_dir")?;
    if let Some(export) = &r.export_to {
        let parent = export
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        ensure_writable(parent, "export_to's folder")?;
    }
    let folder = RunFolder::claim(&out, r)?;
    let ckpt_dir = folder.checkpoints.clone();

    // Start: the newest checkpoint, else a new model.
    let (start_dir, resumed_from) = match folder.checkpoint_to_resume(opts.require_checkpoint)? {
        Some((step, dir)) => (dir, Some(step)),
        None => {
            if r.model.init == "scratch" {
                let target = ckpt_dir.join(step_dir_name(0));
                write_initial_checkpoint(r, task.as_ref(), &target)?;
                (target, None)
            } else {
                (PathBuf::from(&r.model.init), None)
            }
        }
    };
    let state: TrainerState = match std::fs::read_to_string(start_dir.join("trainer_state.json")) {
        Ok(text) if resumed_from.is_some() || r.model.init == "scratch" => {
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: bad trainer state",
                    start_dir.join("trainer_state.json").display()
                )
            })?
        }
        _ => TrainerState {
            step: 0,
            adam_t: 0,
            data_step: 0,
            seed: r.seed,
            tokens_seen: 0,
            examples_seen: 0,
            train_seconds: 0.0,
        },
    };
    let model = Model::load(&start_dir, DType::F32, Device::Cpu)?;
    let codec = TextCodec::load(&start_dir)?;
    let files = ModelFiles::read(&start_dir)?;
    let mut opt = AdamW::new(model.vars.variables(), &r.optimizer);
    if state.step > 0 {
        restore_optimizer(&mut opt, &start_dir, state.adam_t)?;
    }
    let eos = codec
        .eos_ids()
        .first()
        .copied()
        .ok_or_else(|| anyhow!("{}: the tokenizer has no eos_token", start_dir.display()))?;
    let trainer = Trainer {
        r,
        model,
        codec,
        opt,
        files,
        ckpt_dir: ckpt_dir.clone(),
        eos,
        pad: eos,
    };

    let log = folder.open_log("metrics.jsonl", state.step)?;
    let sampler = Sampler::new(
        task.as_ref(),
        &r.data.levels,
        r.data.level_weights.as_deref(),
        r.seed,
    );
    let total = r.train.steps;
    let (params, active) = match &r.model.architecture {
        Some(a) => parameter_counts(a, trainer.model.vocab_size()),
        None => {
            let n: i64 = trainer
                .model
                .vars
                .variables()
                .values()
                .map(|t| t.numel() as i64)
                .sum();
            (n as u64, n as u64)
        }
    };
    if !opts.quiet {
        eprintln!(
            "train {}: {} ({} parameters, {} active per token), {} steps of {} sequences, {}",
            r.name,
            match resumed_from {
                Some(s) => format!("resuming from step {s} ({})", start_dir.display()),
                None => format!("starting from {}", start_dir.display()),
            },
            human(params as f64),
            human(active as f64),
            total,
            r.train.batch_size,
            log.path().display()
        );
    }

    let pb = StepProgress::new(total, state.step, opts.quiet);
    let from = state.step;
    let mut steps = SftSteps {
        trainer,
        task: task.as_ref(),
        sampler,
        seconds_before: state.train_seconds,
        run_t0: Instant::now(),
        st: state,
    };
    let schedule = Schedule {
        total,
        log_every: r.train.log_every,
        checkpoint_every: r.train.checkpoint_every,
        max_bad_steps: MAX_BAD_STEPS,
        eval_every: r.eval.as_ref().and_then(|e| e.every),
    };
    let mut logs = Logs {
        metrics: log,
        rollouts: None,
    };
    let last_ckpt = resumed_from.map(|s| ckpt_dir.join(step_dir_name(s)));
    let end = run_steps(&mut steps, from, &schedule, &mut logs, opts, &pb, last_ckpt)?;
    let SftSteps { trainer, st, .. } = steps;
    let mut log = logs.metrics;
    if end.stopped {
        let (steps, secs) = (st.step, st.train_seconds);
        return Ok(RunSummary::stopped(
            out,
            end,
            steps,
            resumed_from,
            secs,
            None,
        ));
    }
    let final_dir = end.last_checkpoint;
    if !opts.quiet {
        eprintln!(
            "trained {} steps in {:.1} min ({} tokens); checkpoint {}",
            st.step,
            st.train_seconds / 60.0,
            human(st.tokens_seen as f64),
            final_dir.display()
        );
    }
    let exported_to = export_if_asked(
        &final_dir,
        r.export_to.as_deref(),
        &r.model.save_dtype,
        opts.quiet,
    )?;
    // A finished run that is run again re-exports but does not evaluate again.
    let already_evaluated = resumed_from == Some(total) && out.join("eval.json").exists();
    let mut last_eval = None;
    if let (Some(e), false) = (&r.eval, opts.skip_eval || already_evaluated) {
        let report = run_eval(&trainer, task.as_ref(), r, e.n, e.max_new_tokens)?;
        log.write(
            &json!({"event": "eval", "step": st.step, "accuracy": report.accuracy,
            "format_rate": report.format_rate, "n": report.n,
            "min_expert_load_over_mean": report.min_expert_load_over_mean}),
        )?;
        let path = out.join("eval.json");
        super::checkpoint::write_synced(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
        if !opts.quiet {
            println!("{}", render(&report, &final_dir.display().to_string()));
        }
        last_eval = Some(report);
    }
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

/// SFT's side of the shared loop: one step draws the step's examples (conversations once
/// `data.earlier_turns_from_step` is reached), trains on them, and logs loss and expert load.
struct SftSteps<'a> {
    trainer: Trainer<'a>,
    task: &'a dyn Task,
    sampler: Sampler<'a>,
    st: TrainerState,
    /// Loop seconds of the run before this process, and when this process started its loop.
    seconds_before: f64,
    run_t0: Instant,
}

impl Steps for SftSteps<'_> {
    fn step(&mut self, step: u64) -> Result<StepReport> {
        let r = self.trainer.r;
        let t0 = Instant::now();
        let max_turns = if step >= r.data.earlier_turns_from_step {
            r.data.max_earlier_turns
        } else {
            0
        };
        let earlier = training_turns(&self.sampler, step, r.train.batch_size, 0..=max_turns);
        let examples: Vec<Encoded> = self
            .sampler
            .step(step, r.train.batch_size)
            .iter()
            .zip(&earlier)
            .map(|(ex, turns)| encode(&self.trainer.codec, turns, ex, self.trainer.eos))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!(e))?;
        let lr = lr_at(step, r.train.steps, &r.optimizer);
        let out = self.trainer.update(&examples, lr);
        let dt = t0.elapsed().as_secs_f64();
        let st = &mut self.st;
        st.step = step + 1;
        st.data_step = step + 1;
        st.adam_t = self.trainer.opt.t;
        st.tokens_seen += out.tokens as u64;
        st.examples_seen += examples.len() as u64;
        st.train_seconds = self.seconds_before + self.run_t0.elapsed().as_secs_f64();
        let loads = layer_loads(&out.counts);
        let min_load = loads.iter().map(|l| l.min_over_mean).reduce(f64::min);
        let max_vio = loads.iter().map(|l| l.max_violation).reduce(f64::max);
        let record = json!({
            "step": st.step,
            "loss": out.loss,
            "lr": lr,
            "grad_norm": out.grad_norm,
            "skipped": !out.applied,
            "tokens": out.tokens,
            "target_tokens": out.target_tokens,
            "tokens_per_s": out.tokens as f64 / dt,
            "step_time_s": dt,
            "elapsed_s": st.train_seconds,
            "expert_load_min_over_mean": min_load,
            "expert_load_max_violation": max_vio,
            "expert_load": loads.iter().map(|l| json!({
                "layer": l.layer,
                "share": l.share.iter().map(|&s| round4(s)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        Ok(StepReport {
            applied: out.applied,
            loss: out.loss,
            grad_norm: out.grad_norm,
            record,
            rollouts: Vec::new(),
            progress: format!("loss {:.4}", out.loss),
            line: format!(
                "step {:>5}/{}  loss {:.4}  lr {:.2e}  grad {:.3}  {:.0} tok/s  {:.2} s/step  expert load min/mean {}",
                st.step,
                r.train.steps,
                out.loss,
                lr,
                out.grad_norm,
                out.tokens as f64 / dt,
                dt,
                min_load.map_or("-".into(), |m| format!("{m:.2}")),
            ),
        })
    }

    fn save(&mut self) -> Result<PathBuf> {
        self.trainer.save(&self.st)
    }

    /// A quick look during the run (at most 64 problems); the last step's full evaluation
    /// comes after the loop.
    fn evaluate(&mut self, step: u64, last: bool, log: &mut MetricsLog) -> Result<Option<String>> {
        let Some(e) = self.trainer.r.eval.as_ref().filter(|_| !last) else {
            return Ok(None);
        };
        let report = run_eval(
            &self.trainer,
            self.task,
            self.trainer.r,
            e.n.min(64),
            e.max_new_tokens,
        )?;
        log.write(
            &json!({"event": "eval", "step": step, "accuracy": report.accuracy,
            "format_rate": report.format_rate, "n": report.n}),
        )?;
        Ok(Some(format!(
            "step {step}: held-out accuracy {:.1}% (n={})",
            100.0 * report.accuracy,
            report.n
        )))
    }
}

/// Exports the finished run's model to `export_to`, when the recipe names a folder.
pub fn export_if_asked(
    final_dir: &Path,
    export_to: Option<&Path>,
    save_dtype: &str,
    quiet: bool,
) -> Result<Option<PathBuf>> {
    let Some(dst) = export_to else {
        return Ok(None);
    };
    export(final_dir, dst, save_dtype)?;
    if !quiet {
        eprintln!("exported the model to {}", dst.display());
    }
    Ok(Some(dst.to_path_buf()))
}

fn run_eval(
    t: &Trainer,
    task: &dyn Task,
    r: &SftRecipe,
    n: usize,
    max_new_tokens: usize,
) -> Result<super::eval::EvalReport> {
    let opts = EvalOptions {
        n,
        seed: r.seed,
        levels: task.levels().collect(),
        max_new_tokens,
        temperature: 0.0,
        top_p: 1.0,
        split: Split::HeldOut,
        batch: super::eval::EVAL_BATCH,
        first_turn: 1,
        turns: 1,
        samples: 1,
    };
    let (report, _) =
        evaluate(&t.model, &t.codec, task, &opts, &mut |_, _, _| {}).map_err(|e| anyhow!(e))?;
    Ok(report)
}

/// Copies a checkpoint's model (no trainer state) to `dst`, atomically, in `save_dtype`.
pub fn export(ckpt: &Path, dst: &Path, save_dtype: &str) -> Result<()> {
    let model = Model::load(ckpt, DType::F32, Device::Cpu)?;
    let kind = if save_dtype == "bf16" {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    let w = AtomicDir::begin(dst)?;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        w.copy_from(ckpt, name)?;
    }
    let mut config: Value = serde_json::from_slice(
        &std::fs::read(ckpt.join("config.json")).with_context(|| ckpt.display().to_string())?,
    )?;
    config["torch_dtype"] = json!(if save_dtype == "bf16" {
        "bfloat16"
    } else {
        "float32"
    });
    w.write_json("config.json", &config)?;
    let weights = model_tensors(&model, kind);
    w.write(
        "model.safetensors",
        &safetensors_bytes(&weights, &metadata()).map_err(|e| anyhow!(e))?,
    )?;
    w.commit()?;
    Ok(())
}

fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::Checkpoint;
    use crate::model::NoProbe;
    use crate::train::balance::bias_deltas;
    use crate::train::recipe::{parse, Recipe, TEST_RECIPE};
    use tch::Tensor;

    fn recipe(out: &Path) -> SftRecipe {
        let text = TEST_RECIPE
            .replace(
                "output_dir = \"runs/t\"",
                &format!("output_dir = {:?}", out.display().to_string()),
            )
            .replace("keep_checkpoints = 2", "keep_checkpoints = 3");
        let Recipe::Sft(r) = parse("test.toml", &text).unwrap() else {
            panic!("an SFT recipe")
        };
        *r
    }

    fn quiet() -> RunOptions {
        RunOptions {
            quiet: true,
            skip_eval: true,
            ..Default::default()
        }
    }

    fn weights(dir: &Path) -> BTreeMap<String, Tensor> {
        Checkpoint::read_all_f32(dir)
    }

    /// The step as it runs (the head and the loss a few positions at a time, the layers'
    /// backward once from the summed gradient) against the plain computation: every position's
    /// logits at once, one backward. Same loss and same gradient for every weight.
    #[test]
    fn the_head_in_slices_gives_the_whole_batch_loss_and_gradients() {
        let model = Model::load(
            Path::new(crate::train::grpo::BUILTIN_MODEL),
            DType::F32,
            Device::Cpu,
        )
        .unwrap();
        let vocab = model.vocab_size();
        let seqs: Vec<Encoded> = (0..3u32)
            .map(|r| Encoded {
                ids: (0..9 + r).map(|i| 2 + (i * 37 + r * 11) % 300).collect(),
                prompt_len: 3,
            })
            .collect();
        let batch = make_batch(&seqs.iter().collect::<Vec<_>>(), 0, Device::Cpu);
        let total: usize = seqs.iter().map(|e| e.ids.len() - e.prompt_len).sum();
        let experts = model.config.moe.as_ref().map_or(0, |m| m.n_routed_experts);
        let vars = model.vars.variables();
        let names: Vec<&String> = vars.keys().collect();
        // (loss, every weight's gradient) of one computation, from zeroed gradients.
        let run = |f: &dyn Fn() -> f64| -> (f64, Vec<Tensor>) {
            for t in vars.values() {
                let mut g = t.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            let loss = f();
            let grads = names
                .iter()
                .map(|n| {
                    let g = vars[*n].grad();
                    if g.defined() {
                        g.copy()
                    } else {
                        Tensor::new()
                    }
                })
                .collect();
            (loss, grads)
        };
        let (plain_loss, plain_grads) = run(&|| {
            let mut cache = model.new_cache();
            let logits = model.forward(&batch.ids, &mut cache, &mut NoProbe, true);
            let loss = loss_sum(&logits, &batch.targets) / total as f64;
            loss.backward();
            loss.double_value(&[])
        });
        // One slice, then two positions per slice (the last one shorter).
        for budget in [HEAD_CHUNK_ELEMENTS, (2 * 3 * vocab) as i64] {
            let (loss, grads) = run(&|| {
                let mut counter = LoadCounter::new(experts);
                counter.real = batch.real.clone();
                backprop_micro_batch(&model, &batch, &mut counter, total, budget)
            });
            assert!(
                (loss - plain_loss).abs() <= 1e-5 * plain_loss.abs(),
                "budget {budget}: loss {loss} against {plain_loss}"
            );
            for ((name, g), want) in names.iter().zip(&grads).zip(&plain_grads) {
                if !want.defined() {
                    assert!(
                        !g.defined(),
                        "{name}: a gradient where the plain run has none"
                    );
                    continue;
                }
                let err = (g - want).abs().max().double_value(&[]);
                let scale = want.abs().max().double_value(&[]);
                assert!(
                    err <= 1e-4 * scale + 1e-9,
                    "budget {budget}: {name}: gradient off by {err} (largest {scale})"
                );
            }
        }
    }

    #[test]
    fn resume_after_a_kill_gives_the_same_model_as_an_uninterrupted_run() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        let ra = recipe(&a);
        let rb = recipe(&b);
        let straight = run(&ra, &quiet()).unwrap();
        assert_eq!(straight.steps_done, 4);
        assert_eq!(straight.resumed_from, None);

        let killed = run(
            &rb,
            &RunOptions {
                stop_after: Some(3),
                ..quiet()
            },
        )
        .unwrap();
        assert_eq!(killed.steps_done, 3);
        // Killed before step 3's checkpoint was written: the run must redo step 3 from step 2
        // (and drop step 3's metrics line before logging it again).
        std::fs::remove_dir_all(b.join("checkpoints").join(step_dir_name(3))).unwrap();
        // A writer killed mid-checkpoint leaves a hidden folder; the resume must ignore it.
        let junk = b.join("checkpoints").join(".step-00000003.tmp-1");
        std::fs::create_dir_all(&junk).unwrap();
        std::fs::write(junk.join("trainer_state.json"), b"{\"step\": 3}").unwrap();
        let resumed = run(&rb, &quiet()).unwrap();
        assert_eq!(resumed.resumed_from, Some(2));
        assert_eq!(resumed.steps_done, 4);
        assert!(!junk.exists(), "temporaries are swept");

        let ca = a.join("checkpoints").join(step_dir_name(4));
        let cb = b.join("checkpoints").join(step_dir_name(4));
        let (wa, wb) = (weights(&ca), weights(&cb));
        assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
        for (name, t) in &wa {
            assert!(t.equal(&wb[name]), "{name} differs after resume");
        }
        let oa = std::fs::read(ca.join("optimizer.safetensors")).unwrap();
        let ob = std::fs::read(cb.join("optimizer.safetensors")).unwrap();
        assert!(oa == ob, "optimizer state differs after resume");
        // The metrics logs agree step for step.
        let loss = |dir: &Path| -> Vec<(u64, f64)> {
            crate::train::metrics::read(&dir.join("metrics.jsonl"))
                .unwrap()
                .iter()
                .filter(|v| v.get("loss").is_some())
                .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
                .collect()
        };
        assert_eq!(loss(&a), loss(&b));
        assert_eq!(loss(&a).len(), 4);

        // Training moved every trainable weight, and the router biases (not trained by gradient)
        // moved by the balancing nudges.
        let w0 = weights(&a.join("checkpoints").join(step_dir_name(0)));
        for (name, t) in &wa {
            assert!(!t.equal(&w0[name]), "{name} did not change in 4 steps");
        }

        // A re-run of a finished recipe does nothing new; a different recipe in the same folder
        // is refused with the key that differs.
        let again = run(&ra, &quiet()).unwrap();
        assert_eq!(again.resumed_from, Some(4));
        let mut other = ra.clone();
        other.optimizer.lr = 0.5;
        let e = run(&other, &quiet()).unwrap_err().to_string();
        assert!(e.contains("key optimizer.lr differs"), "{e}");
    }

    #[test]
    fn the_initial_checkpoint_is_exactly_what_the_engine_loads() {
        let root = tempfile::tempdir().unwrap();
        let r = recipe(root.path());
        let target = root.path().join("init");
        write_initial_checkpoint(&r, &crate::train::task::arithmetic::Arithmetic, &target).unwrap();
        let model = Model::load(&target, DType::F32, Device::Cpu).unwrap();
        assert!(
            model.unused_weights.is_empty(),
            "{:?}",
            model.unused_weights
        );
        let arch = r.model.architecture.as_ref().unwrap();
        let spec = deepseek_v3_weights(arch, model.vocab_size());
        let vars = model.vars.variables();
        assert_eq!(vars.len(), spec.len());
        for (name, shape, _) in &spec {
            assert_eq!(&vars[name].size(), shape, "{name}");
        }
        assert_eq!(model.moe_layers(), vec![1]);
        // Only the router bias is frozen.
        let frozen: Vec<&String> = vars
            .iter()
            .filter(|(_, t)| !t.requires_grad())
            .map(|(n, _)| n)
            .collect();
        let routers = model.routers();
        assert_eq!(routers.len(), 1);
        let bias_name = routers[0].bias_name.clone().unwrap();
        assert_eq!(bias_name, "model.layers.1.mlp.gate.e_score_correction_bias");
        assert_eq!(frozen, vec![&bias_name]);
        // Same seed, same weights.
        let again = root.path().join("init2");
        write_initial_checkpoint(&r, &crate::train::task::arithmetic::Arithmetic, &again).unwrap();
        assert_eq!(
            std::fs::read(target.join("model.safetensors")).unwrap(),
            std::fs::read(again.join("model.safetensors")).unwrap()
        );
        assert_eq!(
            std::fs::read(target.join("tokenizer.json")).unwrap(),
            std::fs::read(again.join("tokenizer.json")).unwrap()
        );
    }

    #[test]
    fn nudged_biases_move_load_toward_the_starved_expert() {
        let root = tempfile::tempdir().unwrap();
        let r = recipe(root.path());
        let target = root.path().join("init");
        write_initial_checkpoint(&r, &crate::train::task::arithmetic::Arithmetic, &target).unwrap();
        let model = Model::load(&target, DType::F32, Device::Cpu).unwrap();
        let ids = Tensor::arange(200, (Kind::Int64, Device::Cpu))
            .remainder(250)
            .view([4, 50]);
        let count = |model: &Model| {
            let _g = tch::no_grad_guard();
            let mut c = LoadCounter::new(4);
            let _ = model.forward(&ids, &mut model.new_cache(), &mut c, false);
            c.counts[&1].clone()
        };
        let before = count(&model);
        let bias_name = model.routers()[0].bias_name.clone().unwrap();
        let bias_before: Vec<f32> =
            Vec::try_from(model.vars.variables()[&bias_name].shallow_clone()).unwrap();
        nudge_biases(&model, &BTreeMap::from([(1usize, before.clone())]), 0.05);
        let bias_after: Vec<f32> =
            Vec::try_from(model.vars.variables()[&bias_name].shallow_clone()).unwrap();
        let expect = bias_deltas(&before, 0.05);
        for e in 0..4 {
            assert!(
                (bias_after[e] - bias_before[e] - expect[e]).abs() < 1e-7,
                "expert {e}: {before:?} {bias_before:?} -> {bias_after:?}"
            );
        }
        // One nudge moves tokens from the busiest expert to the starved one (all groups are kept
        // in this config, so raising a score can only win its expert tokens).
        let starved = (0..4).min_by_key(|&e| before[e]).unwrap();
        let busiest = (0..4).max_by_key(|&e| before[e]).unwrap();
        let after = count(&model);
        assert!(after[starved] > before[starved], "{before:?} -> {after:?}");
        assert!(after[busiest] < before[busiest], "{before:?} -> {after:?}");
        assert_eq!(after.iter().sum::<u64>(), before.iter().sum::<u64>());
    }

    #[test]
    fn unwritable_output_folder_is_one_line() {
        let mut r = recipe(Path::new("/proc/thinkbench-cannot-write"));
        r.export_to = None;
        let e = run(&r, &quiet()).unwrap_err().to_string();
        assert!(
            e.starts_with("output_dir /proc/thinkbench-cannot-write: cannot create it"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
}
