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
    let model = Model::load_quantized(&args.model, dtype, device, args.runtime.quant()?)?;
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
    // Read before the bandwidth measurement below allocates its 1 GiB.
    let peak_rss = peak_rss_bytes();
    // The decode ceiling: a step reads every weight it uses once, so it cannot beat the
    // machine's read bandwidth divided by those bytes (measured after the runs, on the same
    // threads, so the figures sit side by side).
    let read_bw = if device == tch::Device::Cpu {
        read_bandwidth()
    } else {
        f64::NAN
    };
    let per_token = bytes_read_per_token(&model);
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
        "peak_rss_bytes": peak_rss,
        // Float weights' decode kernels, and the block-quantized ones' (they can differ: the
        // quantized kernels need only AVX-512F, the bf16 ones its BF16 extension).
        "cpu_kernels": crate::model::gemv::isa().name(),
        "quant_kernels": crate::model::quant::Isa::detect().name(),
        "prefill": crate::model::qlinear::prefill_mode().name(),
        "read_gb_per_s": read_bw / 1e9,
        "bytes_read_per_token": per_token,
        "decode_bound_tokens_per_s": read_bw / per_token as f64,
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

/// Bytes of weights one decode step reads (float and quantized): everything but the embedding table (a step looks up one
/// row of it; a tied head reads it whole, and then it counts), with each MoE layer's routed
/// experts counted at the share a token uses (top-k of them).
fn bytes_read_per_token(model: &Model) -> u64 {
    let tied = model.config.raw.tie_word_embeddings;
    let expert_share = model
        .config
        .moe
        .as_ref()
        .map_or(1.0, |m| m.top_k as f64 / m.n_routed_experts.max(1) as f64);
    let float = model
        .vars
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.numel() * t.kind().elt_size_in_bytes()));
    let quantized = model.quantized_weights.clone().into_iter();
    let mut total = 0f64;
    for (name, bytes) in float.chain(quantized) {
        let bytes = bytes as f64;
        if name == "model.embed_tokens.weight" && !tied {
            continue;
        }
        total += if name.contains(".mlp.experts.") {
            bytes * expert_share
        } else {
            bytes
        };
    }
    total as u64
}

/// The CPU's read bandwidth in bytes/s on the threads a decode uses: the faster of two readers,
/// each the best of five passes over 1 GiB (far beyond any cache), so that the bound is the
/// fastest read this process manages, not one reader's: libtorch's sum of an f32 tensor, and a
/// stream of 64-byte XORs split across the decode kernels' threads that prefetches ahead. On 2
/// threads of an AVX-512 Xeon the sum read 29.6-30.3 GB/s and the stream 31.5-32.6; once the
/// bf16 decode kernels prefetched too, they streamed ~31, above the sum's figure.
fn read_bandwidth() -> f64 {
    const BYTES: usize = 1 << 30;
    let mut best = f64::INFINITY;
    let mut time_best = |read: &dyn Fn()| {
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            read();
            best = best.min(t0.elapsed().as_secs_f64());
        }
    };
    {
        let _g = tch::no_grad_guard();
        let t = tch::Tensor::ones([(BYTES / 4) as i64], (tch::Kind::Float, tch::Device::Cpu));
        time_best(&|| {
            std::hint::black_box(t.sum(tch::Kind::Float).double_value(&[]));
        });
    }
    {
        // Written first, so no page is first touched inside the timing.
        let words: Vec<u64> = (0..(BYTES / 8) as u64).collect();
        const LINE: usize = 8; // u64s per cache line
        let lines = words.len() / LINE;
        time_best(&|| {
            let folded = std::sync::atomic::AtomicU64::new(0);
            crate::model::gemv::parallel_rows(lines, BYTES, &|range| {
                let part = &words[range.start * LINE..range.end * LINE];
                let acc = part.chunks_exact(LINE).fold([0u64; LINE], |mut acc, line| {
                    // A hint 8 KiB ahead (flat from 8 to 16 KiB; 1 KiB gained nothing).
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: a hint reads nothing and faults on no address.
                    unsafe {
                        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                        let ahead = line.as_ptr().wrapping_add(1024);
                        _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                    }
                    for (a, w) in acc.iter_mut().zip(line) {
                        *a ^= w;
                    }
                    acc
                });
                let x = acc.iter().fold(0, |a, b| a ^ b);
                folded.fetch_xor(x, std::sync::atomic::Ordering::Relaxed);
            });
            std::hint::black_box(folded.into_inner());
        });
    }
    BYTES as f64 / best
}
