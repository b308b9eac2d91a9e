//! `thinkbench merge --base DIR --adapter DIR --out DIR`: applies LoRA adapters (PEFT's
//! `adapter_model.safetensors` + `adapter_config.json`, as a GRPO checkpoint with `[lora]` saves
//! them) to a base model, `W += (alpha / r) · B · A`, and writes a complete model directory.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use tch::{Device, Kind};

use crate::model::{DType, Model};
use crate::train::checkpoint::{model_tensors, safetensors_bytes, AtomicDir};
use crate::train::lora::merge;
use crate::train::run_dir::metadata;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The base model directory the adapters were trained on.
    #[arg(long)]
    pub base: PathBuf,
    /// A folder with adapter_model.safetensors and adapter_config.json (e.g. a GRPO checkpoint).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Where the merged model directory is written (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Saved weights' dtype: f32 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(args: &MergeArgs) -> Result<()> {
    let kind = match args.dtype.as_str() {
        "f32" => Kind::Float,
        "bf16" => Kind::BFloat16,
        other => bail!("--dtype {other}: expected f32 or bf16"),
    };
    let model = Model::load(&args.base, DType::F32, Device::Cpu)?;
    let n = merge(&model, &args.adapter).map_err(|e| anyhow!(e))?;
    let w = AtomicDir::begin(&args.out)?;
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        w.copy_from(&args.base, name)?;
    }
    if args.base.join("generation_config.json").exists() {
        w.copy_from(&args.base, "generation_config.json")?;
    }
    let mut config: Value = serde_json::from_slice(
        &std::fs::read(args.base.join("config.json"))
            .with_context(|| args.base.join("config.json").display().to_string())?,
    )?;
    config["torch_dtype"] = json!(if kind == Kind::BFloat16 {
        "bfloat16"
    } else {
        "float32"
    });
    w.write_json("config.json", &config)?;
    w.write(
        "model.safetensors",
        &safetensors_bytes(&model_tensors(&model, kind), &metadata()).map_err(|e| anyhow!(e))?,
    )?;
    w.commit()?;
    eprintln!(
        "merged {n} adapted weights into {} -> {}",
        args.base.display(),
        args.out.display()
    );
    Ok(())
}
