//! The loop both trainers run, around their own `step`: log the step, count non-finite updates,
//! print progress, checkpoint on the recipe's rhythm, evaluate on the recipe's rhythm, and stop
//! cleanly (with a checkpoint to resume from) when asked. SFT and GRPO differ only in what one
//! step does and what an evaluation measures; everything a run promises about its folder —
//! resumable at every checkpoint, logs cut back to it, a stop never losing a step — lives here
//! once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::metrics::MetricsLog;
use super::progress::StepProgress;

/// How the caller wants a run to behave (not part of the recipe: it does not change results).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No progress bar or compact lines (tests).
    pub quiet: bool,
    /// Stop after this optimiser step, with a checkpoint there (`--stop-after`; tests).
    pub stop_after: Option<u64>,
    /// Skip evaluations.
    pub skip_eval: bool,
    /// Refuse to start from scratch: there must be a checkpoint to resume (`--resume`).
    pub require_checkpoint: bool,
    /// Set to stop after the current step (with a checkpoint), e.g. from a UI.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl RunOptions {
    fn stop_requested(&self, step: u64) -> bool {
        self.stop_after == Some(step)
            || self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// What a finished (or stopped) run reports; `E` is the trainer's evaluation.
#[derive(Debug, Clone)]
pub struct RunSummary<E> {
    pub output_dir: PathBuf,
    pub steps_done: u64,
    pub resumed_from: Option<u64>,
    pub final_checkpoint: Option<PathBuf>,
    pub exported_to: Option<PathBuf>,
    /// Seconds in the training loop (evaluations excluded).
    pub train_seconds: f64,
    pub last_eval: Option<E>,
}

impl<E> RunSummary<E> {
    /// A run the loop stopped on request: nothing exported; it resumes from its last checkpoint.
    pub fn stopped(
        output_dir: PathBuf,
        end: LoopEnd,
        steps_done: u64,
        resumed_from: Option<u64>,
        train_seconds: f64,
        last_eval: Option<E>,
    ) -> Self {
        Self {
            output_dir,
            steps_done,
            resumed_from,
            final_checkpoint: Some(end.last_checkpoint),
            exported_to: None,
            train_seconds,
            last_eval,
        }
    }
}

/// What one optimiser step did, as the loop needs it.
pub struct StepReport {
    /// The update was applied (loss and gradient finite).
    pub applied: bool,
    pub loss: f64,
    pub grad_norm: f64,
    /// The step's line for `metrics.jsonl` (the loop adds nothing to it).
    pub record: Value,
    /// Lines for `rollouts.jsonl`, for trainers that keep one.
    pub rollouts: Vec<Value>,
    /// The progress bar's message, and the compact line printed every `log_every` steps.
    pub progress: String,
    pub line: String,
}

/// A trainer, seen from the loop: it takes a step, saves itself, evaluates.
pub trait Steps {
    /// Optimiser step `step` (0-based); the trainer advances its own state (saved with it).
    fn step(&mut self, step: u64) -> Result<StepReport>;
    /// Writes a checkpoint of the state after the last step; returns its folder.
    fn save(&mut self) -> Result<PathBuf>;
    /// A held-out evaluation after `step` steps: writes its event to `log` and returns the line
    /// to print, or `None` where this trainer does not evaluate (`last`: the run's final step).
    fn evaluate(&mut self, step: u64, last: bool, log: &mut MetricsLog) -> Result<Option<String>>;
}

/// The recipe's rhythm.
pub struct Schedule {
    pub total: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
    /// Non-finite steps in a row before the run gives up.
    pub max_bad_steps: u64,
    /// Evaluate every this many steps (`None`: not during the run).
    pub eval_every: Option<u64>,
}

/// The logs a run appends to.
pub struct Logs {
    pub metrics: MetricsLog,
    pub rollouts: Option<MetricsLog>,
}

/// How the loop ended.
pub struct LoopEnd {
    /// Stopped early on request (`stop_after` or `cancel`).
    pub stopped: bool,
    /// The checkpoint of the state the loop ended in (the run resumes from it, or exports it).
    pub last_checkpoint: PathBuf,
}

/// Runs steps `from..schedule.total`. `last_checkpoint` is the folder a resumed run started
/// from (named in the message when the run gives up, and the end state of a run resumed at its
/// last step).
pub fn run_steps(
    trainer: &mut impl Steps,
    from: u64,
    schedule: &Schedule,
    logs: &mut Logs,
    opts: &RunOptions,
    progress: &StepProgress,
    mut last_checkpoint: Option<PathBuf>,
) -> Result<LoopEnd> {
    let total = schedule.total;
    let mut bad_steps = 0;
    for step in from..total {
        let report = trainer.step(step)?;
        let done = step + 1;
        if report.applied {
            bad_steps = 0;
        } else {
            bad_steps += 1;
            progress.say(format!(
                "step {done}: loss {} / grad norm {}: not finite, update skipped",
                report.loss, report.grad_norm
            ));
        }
        logs.metrics.write(&report.record)?;
        if let Some(log) = logs.rollouts.as_mut() {
            for line in &report.rollouts {
                log.write(line)?;
            }
        }
        progress.set_position(done);
        progress.set_message(report.progress);
        if done.is_multiple_of(schedule.log_every) || done == total {
            progress.say(report.line);
        }
        if bad_steps >= schedule.max_bad_steps {
            bail!(
                "{bad_steps} steps in a row had a non-finite loss or gradient; stopping (last good checkpoint: {})",
                last_checkpoint
                    .as_ref()
                    .map_or("none".into(), |p| p.display().to_string())
            );
        }
        let stopping = opts.stop_requested(done);
        if done.is_multiple_of(schedule.checkpoint_every) || done == total || stopping {
            let path = trainer.save()?;
            logs.metrics.write(
                &json!({"event": "checkpoint", "step": done, "path": path.display().to_string()}),
            )?;
            last_checkpoint = Some(path);
        }
        if let Some(every) = schedule.eval_every {
            if done.is_multiple_of(every) || done == total {
                if let Some(line) = trainer.evaluate(done, done == total, &mut logs.metrics)? {
                    progress.say(line);
                }
            }
        }
        if stopping {
            progress.abandon();
            return Ok(LoopEnd {
                stopped: true,
                last_checkpoint: last_checkpoint.expect("saved when stopping"),
            });
        }
    }
    progress.finish_and_clear();
    let last_checkpoint = match last_checkpoint {
        Some(path) => path,
        // Nothing to run and nothing resumed: the starting state is the end state.
        None => trainer.save()?,
    };
    Ok(LoopEnd {
        stopped: false,
        last_checkpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trainer that records what the loop asked of it; step `bad` and later are non-finite.
    struct Probe {
        bad_from: u64,
        steps: Vec<u64>,
        saved_after: Vec<u64>,
        evaluated: Vec<(u64, bool)>,
        done: u64,
    }

    impl Steps for Probe {
        fn step(&mut self, step: u64) -> Result<StepReport> {
            self.steps.push(step);
            self.done = step + 1;
            let applied = step < self.bad_from;
            Ok(StepReport {
                applied,
                loss: if applied { 1.0 } else { f64::NAN },
                grad_norm: 0.5,
                record: json!({"step": step + 1}),
                rollouts: vec![
                    json!({"step": step + 1, "i": 0}),
                    json!({"step": step + 1, "i": 1}),
                ],
                progress: String::new(),
                line: String::new(),
            })
        }
        fn save(&mut self) -> Result<PathBuf> {
            self.saved_after.push(self.done);
            Ok(PathBuf::from(format!("ckpt-{}", self.done)))
        }
        fn evaluate(
            &mut self,
            step: u64,
            last: bool,
            _: &mut MetricsLog,
        ) -> Result<Option<String>> {
            self.evaluated.push((step, last));
            Ok(None)
        }
    }

    fn probe(bad_from: u64) -> Probe {
        Probe {
            bad_from,
            steps: vec![],
            saved_after: vec![],
            evaluated: vec![],
            done: 0,
        }
    }

    fn logs(dir: &std::path::Path) -> Logs {
        Logs {
            metrics: MetricsLog::open(&dir.join("metrics.jsonl"), 0).unwrap(),
            rollouts: Some(MetricsLog::open(&dir.join("rollouts.jsonl"), 0).unwrap()),
        }
    }

    fn schedule(total: u64) -> Schedule {
        Schedule {
            total,
            log_every: 1,
            checkpoint_every: 4,
            max_bad_steps: 3,
            eval_every: Some(3),
        }
    }

    #[test]
    fn checkpoints_and_evaluations_follow_the_rhythm_and_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = probe(u64::MAX);
        let bar = StepProgress::new(10, 2, true);
        let end = run_steps(
            &mut p,
            2,
            &schedule(10),
            &mut logs(dir.path()),
            &RunOptions::default(),
            &bar,
            None,
        )
        .unwrap();
        assert!(!end.stopped);
        assert_eq!(p.steps, (2..10).collect::<Vec<_>>());
        assert_eq!(p.saved_after, vec![4, 8, 10]);
        assert_eq!(
            p.evaluated,
            vec![(3, false), (6, false), (9, false), (10, true)]
        );
        assert_eq!(end.last_checkpoint, PathBuf::from("ckpt-10"));
        // Every step's line, each checkpoint's event, and every rollout line, in order.
        let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        let lines: Vec<Value> = metrics
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 8 + 3);
        assert_eq!(lines[1]["step"], 4);
        assert_eq!(lines[2]["event"], "checkpoint");
        let rollouts = std::fs::read_to_string(dir.path().join("rollouts.jsonl")).unwrap();
        assert_eq!(rollouts.lines().count(), 16);
    }

    #[test]
    fn a_requested_stop_checkpoints_where_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = probe(u64::MAX);
        let opts = RunOptions {
            stop_after: Some(6),
            ..Default::default()
        };
        let bar = StepProgress::new(10, 0, true);
        let end = run_steps(
            &mut p,
            0,
            &schedule(10),
            &mut logs(dir.path()),
            &opts,
            &bar,
            None,
        )
        .unwrap();
        assert!(end.stopped);
        assert_eq!(p.steps.last(), Some(&5));
        assert_eq!(p.saved_after, vec![4, 6]);
        // A cancel flag set before the first step stops after it.
        let mut p = probe(u64::MAX);
        let flag = Arc::new(AtomicBool::new(true));
        let opts = RunOptions {
            cancel: Some(flag),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let end = run_steps(
            &mut p,
            0,
            &schedule(10),
            &mut logs(dir.path()),
            &opts,
            &bar,
            None,
        )
        .unwrap();
        assert!(end.stopped);
        assert_eq!(p.saved_after, vec![1]);
    }

    #[test]
    fn non_finite_steps_in_a_row_end_the_run_naming_the_last_good_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = probe(5);
        let bar = StepProgress::new(20, 0, true);
        let e = run_steps(
            &mut p,
            0,
            &schedule(20),
            &mut logs(dir.path()),
            &RunOptions::default(),
            &bar,
            None,
        )
        .err()
        .unwrap();
        // Steps 6, 7, 8 (1-based) fail; the checkpoint after step 4 is the last good one.
        assert_eq!(
            e.to_string(),
            "3 steps in a row had a non-finite loss or gradient; stopping (last good checkpoint: ckpt-4)"
        );
        assert_eq!(p.steps.last(), Some(&7));
    }
}
