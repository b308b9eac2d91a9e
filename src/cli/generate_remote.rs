//! `thinkbench generate --remote URL --chat "…"`: one generation from a model behind a server,
//! through the same remote backend the workbench uses, printed as streamed text or as the same
//! JSON trace a local generation gives.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::generate::GenerateArgs;
use crate::backend::chat::{EngineEvent, EngineSource, GenSpec, Job, RemoteConfig};
use crate::text::{ChatMessage, GenerationDefaults, Phase};
use crate::trace::{FinishReason, PromptToken, TokenRecord};

pub fn run(args: &GenerateArgs, remote: RemoteConfig) -> Result<()> {
    let Some(chat) = &args.chat else {
        bail!("--remote takes --chat TEXT: the server applies its own chat template (--prompt and --prompt-ids need a local model)");
    };
    if args.think_budget.is_some() || args.ignore_eos || !args.stop.is_empty() {
        bail!("--think-budget, --ignore-eos and --stop need a local model; a server's reply is not steered token by token from here");
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = crate::engines::spawn(EngineSource::Remote(remote), tx);
    let mut info = loop {
        match rx.blocking_recv().context("the remote backend stopped")? {
            EngineEvent::Ready(info) => break info,
            EngineEvent::LoadFailed(e) => bail!("{e}"),
            EngineEvent::Note { text } => eprintln!("{text}"),
            _ => {}
        }
    };
    let spec = GenSpec {
        job: 1,
        messages: vec![ChatMessage::new("user", chat.clone())],
        continue_from: Vec::new(),
        sampling: super::generate::sampling(args, &GenerationDefaults::default()),
        max_new_tokens: args.max_new_tokens,
        think_budget: None,
        top_logprobs: args.top_logprobs,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    if !engine.submit(Job::Generate { spec, cancel }) {
        bail!("the remote backend stopped");
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut tokens: Vec<TokenRecord> = Vec::new();
    let mut prompt: Vec<PromptToken> = Vec::new();
    let mut phase = None;
    let (reason, stats) = loop {
        match rx.blocking_recv().context("the remote backend stopped")? {
            EngineEvent::Token { token, .. } => {
                // The end-of-sequence marker is not prose (the JSON trace keeps it).
                if !args.json && !info.eos_ids.contains(&token.id) {
                    if phase.is_some() && phase != Some(token.phase) && token.phase == Phase::Answer
                    {
                        let _ = out.write_all(b"\n");
                    }
                    phase = Some(token.phase);
                    let _ = out.write_all(token.text.as_bytes());
                    let _ = out.flush();
                }
                tokens.push(token);
            }
            EngineEvent::Revised {
                prompt: p,
                tokens: t,
                ..
            } => {
                if let Some(p) = p {
                    prompt = p;
                }
                tokens = t;
            }
            EngineEvent::Note { text } => eprintln!("{text}"),
            // The backend learned what the server refuses.
            EngineEvent::Info(i) => info = i,
            EngineEvent::Finished { reason, stats, .. } => break (reason, stats),
            EngineEvent::Failed { error, .. } => {
                if !args.json {
                    let _ = writeln!(out);
                }
                bail!("{error}");
            }
            _ => {}
        }
    };
    if args.json {
        let value = json!({
            "model": info.remote,
            "capabilities": info.capabilities,
            "prompt": prompt,
            "generated": tokens,
            "finish_reason": reason,
            "stats": stats,
        });
        serde_json::to_writer(&mut out, &value)?;
        writeln!(out)?;
    } else {
        writeln!(out)?;
        let hidden = match (
            stats.reasoning_tokens,
            tokens.iter().any(|t| t.phase == Phase::Think),
        ) {
            (Some(n), false) if n > 0 => format!(", {n} reasoning tokens the server did not show"),
            _ => String::new(),
        };
        eprintln!(
            "[{} prompt tokens, {} generated{hidden}, prefill {:.1} tok/s, decode {:.1} tok/s, finish: {}]",
            stats.prompt_tokens,
            stats.generated_tokens,
            stats.prefill_tokens_per_s,
            stats.decode_tokens_per_s,
            match reason {
                FinishReason::Length => "length",
                FinishReason::Stop => "stop",
                FinishReason::Cancelled => "cancelled",
            }
        );
    }
    engine.shutdown();
    Ok(())
}
