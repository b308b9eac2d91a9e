//! `thinkbench serve`: the OpenAI-compatible server (src/serve) over the batching engine
//! (src/runtime/scheduler.rs). No `--model`: the built-in model.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;

use crate::backend::Backend;
use crate::cli::runtime_args::RuntimeArgs;
use crate::runtime::engine::EngineConfig;
use crate::runtime::scheduler::BatchEngine;
use crate::serve::{self, ServeOptions};
use crate::text::TextCodec;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model directory in the Hugging Face layout, or a GGUF file (default: the built-in model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Address to listen on; 0.0.0.0 exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the printed address says which).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Name of an environment variable holding the API key clients must send as
    /// `Authorization: Bearer KEY` (a variable, so the key stays out of `ps` and shell history).
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Most rows decoded together; later requests wait for room.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Most requests running or waiting; beyond it the server answers 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: &ServeArgs) -> Result<()> {
    if args.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    if args.max_queue == 0 {
        bail!("--max-queue must be at least 1");
    }
    let api_key = match &args.api_key_env {
        None => None,
        Some(var) => {
            let key = std::env::var(var).map_err(|_| {
                anyhow::anyhow!("--api-key-env {var}: the variable is not set (or not UTF-8)")
            })?;
            if key.trim().is_empty() {
                bail!("--api-key-env {var}: the variable is empty");
            }
            Some(key.trim().to_string())
        }
    };
    // Flags are checked before the model loads, so a typo fails at once.
    args.runtime.apply()?;
    args.runtime.quant()?;
    let model_dir = args
        .model
        .clone()
        .unwrap_or_else(super::demo::default_model);
    let codec = Arc::new(TextCodec::load(&model_dir)?);
    let engine = BatchEngine::start(
        EngineConfig {
            model_dir,
            device: args.runtime.device.clone(),
            dtype: args.runtime.dtype.clone(),
            threads: args.runtime.threads,
            quant: args.runtime.quant.clone(),
        },
        args.max_batch,
    )?;
    let engine = Arc::new(engine);
    let backend: Arc<dyn Backend> = engine.clone();
    let served = serve::run(
        backend,
        codec,
        ServeOptions {
            host: args.host.clone(),
            port: args.port,
            api_key,
            max_queue: args.max_queue,
        },
    );
    engine.shutdown();
    served
}
