//! `thinkbench train RECIPE`: runs a training recipe headless, with a progress bar, a compact line
//! every few steps and a JSONL metrics log. Re-running the same command resumes from the newest
//! checkpoint.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::train::recipe::{self, Recipe};
use crate::train::sft;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A recipe file (recipes/*.toml).
    pub recipe: PathBuf,
    /// Stop after this many optimiser steps (as if interrupted; the run resumes later).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Skip the held-out evaluation at the end.
    #[arg(long)]
    pub no_eval: bool,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let recipe = recipe::load(&args.recipe)?;
    match recipe {
        Recipe::Sft(r) => {
            let opts = sft::RunOptions {
                quiet: false,
                stop_after: args.stop_after,
                skip_eval: args.no_eval,
            };
            sft::run(&r, &opts)?;
        }
    }
    Ok(())
}
