//! What every training run does before its first step, SFT and GRPO alike: the process settings
//! the recipe fixes, the run folder (created, claimed for one recipe, an interrupted checkpoint's
//! leftovers swept), the newest checkpoint to resume from, the optimiser's saved moments and the
//! JSONL logs cut back to that checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use super::checkpoint::{latest_checkpoint, read_safetensors, sweep_temporaries};
use super::metrics::MetricsLog;
use super::optim::AdamW;
use super::run_dir::claim_output_dir;

/// Top-level recipe keys a resumed run may change: where the model is exported and how it is
/// evaluated do not change what the steps so far computed.
const FREE_TOP_KEYS: &[&str] = &["export_to", "eval"];

/// `[train]` keys a resumed run may change: lengthening a run, or its logging and checkpoint
/// rhythm.
const FREE_TRAIN_KEYS: &[&str] = &["steps", "log_every", "checkpoint_every", "keep_checkpoints"];

/// The process settings a recipe fixes: freed memory kept for the next step, and libtorch's CPU
/// threads (results depend on the reduction order).
pub fn configure_process(threads: Option<i32>) {
    crate::alloc::keep_freed_memory();
    if let Some(t) = threads {
        tch::set_num_threads(t);
    }
}

/// A run's output folder, ready for checkpoints.
pub struct RunFolder {
    pub out: PathBuf,
    /// `out/checkpoints`: one `step-N` model folder per checkpoint.
    pub checkpoints: PathBuf,
}

impl RunFolder {
    /// Creates `out/checkpoints`, sweeps what a killed checkpoint write left there, and claims
    /// `out` for `recipe`: the folder belongs to one recipe, since resuming under a different one
    /// would mix two runs. `out` should have been checked writable first (one clear message).
    pub fn claim(out: &Path, recipe: &impl Serialize) -> Result<Self> {
        let checkpoints = out.join("checkpoints");
        std::fs::create_dir_all(&checkpoints).with_context(|| checkpoints.display().to_string())?;
        sweep_temporaries(&checkpoints);
        claim_output_dir(
            out,
            &serde_json::to_value(recipe)?,
            FREE_TOP_KEYS,
            FREE_TRAIN_KEYS,
        )?;
        Ok(Self {
            out: out.to_path_buf(),
            checkpoints,
        })
    }

    /// The newest checkpoint: its step and folder.
    pub fn latest_checkpoint(&self) -> Option<(u64, PathBuf)> {
        latest_checkpoint(&self.checkpoints)
    }

    /// The checkpoint a run resumes from; with `required` (`--resume`), an error when there is
    /// none rather than a fresh start.
    pub fn checkpoint_to_resume(&self, required: bool) -> Result<Option<(u64, PathBuf)>> {
        let found = self.latest_checkpoint();
        if required && found.is_none() {
            anyhow::bail!(
                "--resume: {} has no checkpoint to resume from",
                self.checkpoints.display()
            );
        }
        Ok(found)
    }

    /// Opens the JSONL log `out/NAME` for appending, keeping only the lines of steps up to
    /// `step` (where a resumed run starts again).
    pub fn open_log(&self, name: &str, step: u64) -> Result<MetricsLog> {
        let path = self.out.join(name);
        MetricsLog::open(&path, step).with_context(|| path.display().to_string())
    }
}

/// Restores AdamW's moments and step count `adam_t` from a checkpoint's `optimizer.safetensors`,
/// when it has one.
pub fn restore_optimizer(opt: &mut AdamW, checkpoint: &Path, adam_t: u64) -> Result<()> {
    let file = checkpoint.join("optimizer.safetensors");
    if file.exists() {
        let tensors = read_safetensors(&file).map_err(|e| anyhow!(e))?;
        opt.load_state(tensors, adam_t)
            .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    }
    Ok(())
}
