//! `thinkbench bench`: prefill and decode speed and peak memory of one model, measured through the
//! same decode loop everything else uses. `scripts/bench.sh` runs it beside transformers.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::model::Model;
use crate::runtime::{generate, GenerateRequest, SamplingParams};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prefill_tokens: usize,
    /// Tokens generated for the decode measurement.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    #[command(flatten)]
    pub runtime: super::runtime_args::RuntimeArgs,
    /// Repetitions of each measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

/// Peak resident set size of this process, from /proc (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Deterministic, in-vocabulary prompt ids (no tokenizer needed).
fn prompt(len: usize, vocab: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i as u64 * 2654435761 + 17) % (vocab as u64 - 1)) as u32 + 1)
        .collect()
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let (dtype, device) = args.runtime.apply()?;
    let t0 = std::time::Instant::now();
    let model = Model::load(&args.model, dtype, device)?;
    let load_s = t0.elapsed().as_secs_f64();
    let vocab = model.vocab_size();
    let cancel = AtomicBool::new(false);
    let run_once = |prompt_ids: Vec<u32>, new: usize, traced: bool| {
        let req = GenerateRequest {
            max_new_tokens: new,
            sampling: SamplingParams::greedy(),
            ignore_eos: true,
            top_logprobs: if traced { 5 } else { 0 },
            trace_routing: traced,
            ..GenerateRequest::new(prompt_ids)
        };
        generate(&model, None, &req, &cancel, &mut |_| {})
    };
    let best = |f: &dyn Fn() -> Result<f64>| -> Result<f64> {
        let mut best = 0.0f64;
        for _ in 0..args.repeat.max(1) {
            best = best.max(f()?);
        }
        Ok(best)
    };
    // warm-up: first calls allocate caches and pick kernels
    run_once(prompt(8, vocab), 4, true)?;
    let prefill = best(&|| {
        Ok(run_once(prompt(args.prefill_tokens, vocab), 0, false)?
            .stats
            .prefill_tokens_per_s)
    })?;
    let decode_off = best(&|| {
        Ok(run_once(prompt(16, vocab), args.decode_tokens, false)?
            .stats
            .decode_tokens_per_s)
    })?;
    let decode_on = best(&|| {
        Ok(run_once(prompt(16, vocab), args.decode_tokens, true)?
            .stats
            .decode_tokens_per_s)
    })?;
    let value = json!({
        "engine": "thinkbench",
        "model": args.model.display().to_string(),
        "model_type": model.config.model_type.name(),
        "dtype": dtype.name(),
        "device": args.runtime.device,
        "threads": tch::get_num_threads(),
        "checkpoint_bytes": model_data_bytes(&args.model),
        "load_s": load_s,
        "prefill_tokens": args.prefill_tokens,
        "prefill_tokens_per_s": prefill,
        "decode_tokens": args.decode_tokens,
        "decode_tokens_per_s": decode_on,
        "decode_tokens_per_s_trace_off": decode_off,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{value}");
    Ok(())
}

/// Bytes of tensor data in the checkpoint files (what "the checkpoint's size" means for memory).
fn model_data_bytes(dir: &std::path::Path) -> Option<u64> {
    crate::model::checkpoint::Checkpoint::open(dir)
        .ok()
        .map(|c| c.data_bytes())
}
