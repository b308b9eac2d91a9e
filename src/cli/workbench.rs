//! `thinkbench`, `thinkbench open FILE.json` and `thinkbench --train RUN_DIR|RECIPE`: the interactive
//! workbench (the last opens on its Train tab).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use crate::app::Overrides;
use crate::runner::{self, RunOptions};
use crate::session::{self, Session};

#[derive(Debug, Clone, Default, Args)]
pub struct WorkbenchArgs {
    /// Model directory (Hugging Face layout); default: the built-in model.
    #[arg(long, conflicts_with = "remote")]
    pub model: Option<PathBuf>,
    /// Where sessions are saved; default: the platform data dir (e.g. ~/.local/share/thinkbench/sessions).
    #[arg(long)]
    pub sessions_dir: Option<PathBuf>,
    /// Draw below the prompt instead of on the alternate screen; finished messages go into the
    /// terminal's scrollback.
    #[arg(long)]
    pub inline: bool,
    #[command(flatten)]
    pub runtime: super::runtime_args::RuntimeArgs,
    #[command(flatten)]
    pub remote: super::remote_args::RemoteArgs,
    /// Close the thought after this many reasoning tokens (default: unlimited).
    #[arg(long)]
    pub think_budget: Option<usize>,
    /// Longest reply in tokens, thought included (default: generation_config.json, else 1024).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature (default: generation_config.json; 0 is greedy).
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Open on the Train tab: watch a GRPO run folder (or its metrics.jsonl), running or finished,
    /// or launch a recipe (recipes/*.toml) and watch it.
    #[arg(long, value_name = "RUN_DIR|RECIPE")]
    pub train: Option<PathBuf>,
}

/// Opens the workbench; with `open`, on a saved session (whose model is loaded too when its
/// folder is still there, so the conversation can go on; the inspectors never need it). A
/// session recorded from a server reopens offline unless `--remote` names one again.
pub fn run(args: &WorkbenchArgs, open: Option<&Path>) -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("the workbench needs a terminal; for scripts use `thinkbench generate --json`");
    }
    let model = match (open, &args.model) {
        (_, Some(m)) => Some(m.clone()),
        (Some(file), None) => {
            // The folder it was recorded from, else the default model if it is the same
            // checkpoint (example sessions recorded in another clone).
            let recorded = Session::load(file)?.model;
            recorded.and_then(|m| {
                let default = super::demo::default_model();
                if m.dir.join("config.json").is_file() {
                    Some(m.dir)
                } else if crate::runtime::engine::checkpoint_hash(&default) == m.checkpoint_hash {
                    Some(default)
                } else {
                    None
                }
            })
        }
        (None, None) => Some(super::demo::default_model()),
    };
    let sessions_dir = args
        .sessions_dir
        .clone()
        .or_else(session::default_dir)
        .unwrap_or_else(|| PathBuf::from("thinkbench-sessions"));
    args.runtime.apply_prefill();
    runner::run(RunOptions {
        model,
        device: args.runtime.device.clone(),
        dtype: args.runtime.dtype.clone(),
        threads: args.runtime.threads,
        quant: args.runtime.quant.clone(),
        remote: args.remote.config(),
        sessions_dir,
        inline: args.inline,
        open: open.map(Path::to_path_buf),
        train: args.train.clone(),
        overrides: Overrides {
            temperature: args.temperature,
            max_tokens: args.max_tokens,
            think_budget: args.think_budget,
            seed: args.seed,
        },
    })
}
