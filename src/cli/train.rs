//! `thinkbench train RECIPE`: runs a training recipe (SFT or GRPO) headless, with a progress bar, a
//! compact line every few steps and a JSONL metrics log. Re-running the same command resumes from
//! the newest checkpoint.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::train::recipe::{self, Recipe};
use crate::train::step_loop::RunOptions;
use crate::train::{grpo, sft};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A recipe file (recipes/*.toml).
    pub recipe: PathBuf,
    /// Stop after this many optimiser steps (as if interrupted; the run resumes later).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Skip the held-out evaluations.
    #[arg(long)]
    pub no_eval: bool,
    /// Insist on resuming: fail if the run has no checkpoint yet. (Without it, a re-run resumes
    /// from the newest checkpoint anyway, and a new run starts from the recipe's model.)
    #[arg(long)]
    pub resume: bool,
    /// Change a recipe key for this run, e.g. `--set grpo.iterations=4 --set
    /// output_dir=runs/mu4` (repeatable; the value is TOML, or a bare word as a string).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let recipe = if args.sets.is_empty() {
        recipe::load(&args.recipe)?
    } else {
        let file = args.recipe.display().to_string();
        let text =
            std::fs::read_to_string(&args.recipe).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        let changed = crate::train::overrides::apply(&text, &args.sets)
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        recipe::parse(&format!("{file} (with --set)"), &changed)?
    };
    let opts = RunOptions {
        quiet: false,
        stop_after: args.stop_after,
        skip_eval: args.no_eval,
        require_checkpoint: args.resume,
        cancel: None,
    };
    match recipe {
        Recipe::Sft(r) => {
            sft::run(&r, &opts)?;
        }
        Recipe::Grpo(r) => {
            grpo::run(&r, &opts)?;
        }
    }
    Ok(())
}
