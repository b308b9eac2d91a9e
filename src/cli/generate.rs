//! `thinkbench generate`: one non-interactive generation, streamed as text or printed as one JSON
//! object with the full per-token trace (see DESIGN.md for the contract).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use crate::model::Model;
use crate::runtime::{generate, GenEvent, GenerateRequest, SamplingParams};
use crate::text::{ChatMessage, GenerationDefaults, Phase, TextCodec};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model directory in the Hugging Face layout, or a GGUF file; default: the built-in model.
    #[arg(long, conflicts_with = "remote")]
    pub model: Option<PathBuf>,
    /// Raw text, tokenised as is (no chat template).
    #[arg(long, group = "input")]
    pub prompt: Option<String>,
    /// One user message, rendered through the model's chat template with the generation prompt.
    #[arg(long, group = "input")]
    pub chat: Option<String>,
    /// Comma-separated token ids, bypassing the tokenizer.
    #[arg(long, group = "input", value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 is greedy. Defaults to generation_config.json, else 0.6 (DeepSeek-R1's recommendation).
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub min_p: Option<f32>,
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Alternatives recorded per generated token.
    #[arg(long, default_value_t = 5)]
    pub top_logprobs: usize,
    /// Keep going past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Close the thought after this many reasoning tokens (inject `</think>`) so the model answers.
    #[arg(long)]
    pub think_budget: Option<usize>,
    /// Stop once this text appears (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    #[command(flatten)]
    pub runtime: super::runtime_args::RuntimeArgs,
    #[command(flatten)]
    pub remote: super::remote_args::RemoteArgs,
    /// Print exactly one JSON object with the per-token trace.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    if let Some(remote) = args.remote.config() {
        return super::generate_remote::run(args, remote);
    }
    let model_dir = args
        .model
        .clone()
        .unwrap_or_else(super::demo::default_model);
    let (dtype, device) = args.runtime.apply()?;
    let tokenizer_present = model_dir.join("tokenizer.json").exists();
    let codec = if args.prompt_ids.is_some() && !tokenizer_present {
        None
    } else {
        Some(TextCodec::load(&model_dir)?)
    };
    let prompt_ids = match (&args.prompt, &args.chat, &args.prompt_ids) {
        (Some(text), _, _) => codec
            .as_ref()
            .expect("codec loaded for text input")
            .encode_raw(text)?,
        (_, Some(msg), _) => {
            let messages = [ChatMessage {
                role: "user".into(),
                content: msg.clone(),
            }];
            codec
                .as_ref()
                .expect("codec loaded for chat input")
                .encode_chat(&messages, true)?
                .ids
        }
        (_, _, Some(ids)) => ids.clone(),
        _ => bail!("give one of --prompt TEXT, --chat TEXT or --prompt-ids 1,2,3"),
    };
    let model = Model::load_quantized(&model_dir, dtype, device, args.runtime.quant()?)?;

    let defaults = codec
        .as_ref()
        .map(|c| c.generation_defaults().clone())
        .unwrap_or_default();
    let sampling = sampling(args, &defaults);
    let mut eos_ids: Vec<u32> = codec
        .as_ref()
        .map(|c| c.eos_ids().to_vec())
        .unwrap_or_default();
    for id in model.config.eos_ids() {
        if !eos_ids.contains(&id) {
            eos_ids.push(id);
        }
    }
    let req = GenerateRequest {
        prompt_ids,
        max_new_tokens: args.max_new_tokens,
        sampling,
        eos_ids,
        ignore_eos: args.ignore_eos,
        stop_strings: args.stop.clone(),
        top_logprobs: args.top_logprobs,
        token_stats: true,
        trace_routing: args.json,
        n: 1,
        think_budget: args.think_budget,
    };
    let cancel = AtomicBool::new(false);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut phase = None;
    let json = args.json;
    let gen = generate(&model, codec.as_ref(), &req, &cancel, &mut |ev| {
        if json {
            return;
        }
        if let GenEvent::Token { token, .. } = ev {
            // The end-of-sequence marker is not prose (the JSON trace keeps it).
            if req.eos_ids.contains(&token.id) {
                return;
            }
            if phase != Some(token.phase) && token.phase == Phase::Answer && phase.is_some() {
                let _ = out.write_all(b"\n");
            }
            phase = Some(token.phase);
            let _ = out.write_all(token.text.as_bytes());
            let _ = out.flush();
        }
    })?;
    let completion = &gen.completions[0];
    if json {
        let value = json!({
            "prompt": gen.prompt,
            "generated": completion.tokens,
            "finish_reason": completion.finish_reason,
            "stats": gen.stats,
        });
        serde_json::to_writer(&mut out, &value)?;
        writeln!(out)?;
    } else {
        writeln!(out)?;
        eprintln!(
            "[{} prompt tokens, {} generated, prefill {:.1} tok/s, decode {:.1} tok/s, finish: {}]",
            gen.stats.prompt_tokens,
            gen.stats.generated_tokens,
            gen.stats.prefill_tokens_per_s,
            gen.stats.decode_tokens_per_s,
            serde_json::to_value(completion.finish_reason)?
                .as_str()
                .unwrap_or("")
        );
    }
    Ok(())
}

/// The sampling settings: the flags, else generation_config.json's, else R1's recommendation.
pub(super) fn sampling(args: &GenerateArgs, defaults: &GenerationDefaults) -> SamplingParams {
    let base = SamplingParams::default();
    SamplingParams {
        temperature: args
            .temperature
            .or(defaults.temperature.map(|t| t as f32))
            .unwrap_or(base.temperature),
        top_p: args
            .top_p
            .or(defaults.top_p.map(|p| p as f32))
            .unwrap_or(base.top_p),
        top_k: args
            .top_k
            .or(defaults.top_k.map(|k| k as usize))
            .unwrap_or(base.top_k),
        min_p: args
            .min_p
            .or(defaults.min_p.map(|p| p as f32))
            .unwrap_or(base.min_p),
        repetition_penalty: args
            .repetition_penalty
            .or(defaults.repetition_penalty.map(|p| p as f32))
            .unwrap_or(1.0),
        seed: args.seed,
    }
}
