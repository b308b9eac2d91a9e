//! The engine thread: the one owner of the model's weights and tokenizer while the workbench runs.
//!
//! `tch::Tensor` is `Send` but not `Sync`, so the model lives on one thread and everything else
//! talks to it with plain data: [`Job`]s go in over a channel, [`EngineEvent`]s come out. A
//! [`PrefixCache`] stays on the thread between jobs, so the next chat turn, a regeneration, an
//! edit of a late message or a "keep thinking" only runs the model over tokens it has not seen.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use tokio::sync::mpsc::UnboundedSender;

use crate::model::{parse_device, parse_quant, DType, Model};
use crate::runtime::{
    generate_cached, score, GenEvent, GenerateRequest, PrefixCache, SamplingParams, ScoreOptions,
    ScoredTrace,
};
use crate::text::{fit_chat, TextCodec};
use crate::trace::{FinishReason, GenStats};

pub use crate::backend::chat::{
    Engine, EngineConfig, EngineEvent, EngineSource, GenSpec, Job, RemoteConfig, ScoreSpec,
};
pub use crate::backend::ModelInfo;

/// Starts the local engine: a thread that loads the model, reports `Ready` or `LoadFailed`, and
/// runs jobs until the handle is dropped.
pub fn spawn(config: EngineConfig, events: UnboundedSender<EngineEvent>) -> Engine {
    Engine::start("thinkbench-engine", move |jobs| {
        engine_main(config, jobs, events)
    })
}

fn engine_main(
    config: EngineConfig,
    jobs: std::sync::mpsc::Receiver<Job>,
    events: UnboundedSender<EngineEvent>,
) {
    let loaded = std::panic::catch_unwind(|| load(&config));
    let (model, codec, info) = match loaded {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            let _ = events.send(EngineEvent::LoadFailed(one_line(&format!("{e:#}"))));
            return;
        }
        Err(p) => {
            let _ = events.send(EngineEvent::LoadFailed(panic_text(&p)));
            return;
        }
    };
    let _ = events.send(EngineEvent::Ready(Box::new(info.clone())));
    let mut prefix = PrefixCache::new();
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Generate { spec, cancel } => {
                let job = spec.job;
                let run = std::panic::AssertUnwindSafe(|| {
                    run_job(&model, &codec, &info, &spec, &cancel, &mut prefix, &events)
                });
                let ev = match std::panic::catch_unwind(run) {
                    Ok(Ok((reason, stats))) => EngineEvent::Finished { job, reason, stats },
                    Ok(Err(e)) => EngineEvent::Failed {
                        job,
                        error: one_line(&format!("{e:#}")),
                    },
                    Err(p) => {
                        // A libtorch exception surfaces as a panic; the cache may be half-written.
                        prefix.clear();
                        EngineEvent::Failed {
                            job,
                            error: panic_text(&p),
                        }
                    }
                };
                if events.send(ev).is_err() {
                    return;
                }
            }
            Job::Score(spec) => {
                let job = spec.job;
                let run = std::panic::AssertUnwindSafe(|| score_job(&model, &codec, &spec));
                let ev = match std::panic::catch_unwind(run) {
                    Ok(Ok((trace, top_text))) => EngineEvent::Scored {
                        job,
                        model: Box::new(info.clone()),
                        trace,
                        top_text,
                    },
                    Ok(Err(e)) => EngineEvent::Failed {
                        job,
                        error: one_line(&format!("{e:#}")),
                    },
                    Err(p) => EngineEvent::Failed {
                        job,
                        error: panic_text(&p),
                    },
                };
                if events.send(ev).is_err() {
                    return;
                }
            }
        }
    }
}

/// Scores one sequence and names the text of every id it mentions (the inspector shows the
/// alternatives by their text).
fn score_job(
    model: &Model,
    codec: &TextCodec,
    spec: &ScoreSpec,
) -> anyhow::Result<(ScoredTrace, Vec<(u32, String)>)> {
    let opts = ScoreOptions {
        top_logprobs: spec.top_logprobs,
        ..ScoreOptions::default()
    };
    let trace = score(
        model,
        Some(codec),
        &spec.prompt_ids,
        &spec.completion_ids,
        &opts,
    )?;
    let mut ids: Vec<u32> = trace
        .tokens
        .iter()
        .flat_map(|t| t.top.iter().map(|&(id, _)| id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let top_text = ids
        .into_iter()
        .map(|id| (id, codec.token_text(id)))
        .collect();
    Ok((trace, top_text))
}

pub(crate) fn load(config: &EngineConfig) -> anyhow::Result<(Model, TextCodec, ModelInfo)> {
    use anyhow::Context;
    if let Some(t) = config.threads {
        tch::set_num_threads(t.max(1));
    }
    let dtype = DType::parse(&config.dtype)
        .with_context(|| format!("--dtype {}: expected f32, bf16 or f16", config.dtype))?;
    let device = parse_device(&config.device)?;
    let codec = TextCodec::load(&config.model_dir)?;
    let quant = config.quant.as_deref().map(parse_quant).transpose()?;
    let model = Model::load_quantized(&config.model_dir, dtype, device, quant)?;
    let mut info = model_info(&model, &codec, &config.device, &config.model_dir);
    info.quant = config
        .quant
        .clone()
        .or_else(|| (!model.quantized_weights.is_empty()).then(|| "gguf-quantized".to_string()));
    Ok((model, codec, info))
}

fn model_info(model: &Model, codec: &TextCodec, device: &str, dir: &Path) -> ModelInfo {
    let defaults = codec.generation_defaults();
    let base = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: defaults.temperature.map_or(base.temperature, |t| t as f32),
        top_p: defaults.top_p.map_or(base.top_p, |p| p as f32),
        top_k: defaults.top_k.map_or(base.top_k, |k| k as usize),
        min_p: defaults.min_p.map_or(base.min_p, |p| p as f32),
        repetition_penalty: defaults.repetition_penalty.map_or(1.0, |p| p as f32),
        seed: 0,
    };
    let mut eos_ids = codec.eos_ids().to_vec();
    for id in model.config.eos_ids() {
        if !eos_ids.contains(&id) {
            eos_ids.push(id);
        }
    }
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    ModelInfo {
        id: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string()),
        checkpoint_hash: checkpoint_hash(&dir),
        dir,
        model_type: model.config.model_type.name().to_string(),
        device: device.to_string(),
        dtype: model.dtype.name().to_string(),
        quant: None,
        num_layers: model.num_layers(),
        moe_layers: model.moe_layers(),
        n_experts: model.config.moe.as_ref().map_or(0, |m| m.n_routed_experts),
        top_k: model.config.moe.as_ref().map_or(0, |m| m.top_k),
        context: model.config.raw.max_position_embeddings.unwrap_or(4096),
        eos_ids,
        think_ids: codec.think_ids(),
        sampling,
        max_new_tokens: defaults.max_new_tokens,
        remote: None,
        capabilities: Default::default(),
    }
}

fn run_job(
    model: &Model,
    codec: &TextCodec,
    info: &ModelInfo,
    spec: &GenSpec,
    cancel: &AtomicBool,
    prefix: &mut PrefixCache,
    events: &UnboundedSender<EngineEvent>,
) -> anyhow::Result<(FinishReason, GenStats)> {
    // The oldest turns make way for the reply's budget and a continued thought's tokens. A
    // budget over half the context (the workbench's default of 1024 on the built-in model's 512)
    // reserves only half, so a conversation keeps some history; the reply still gets all the
    // room that is left.
    let reserve = spec.max_new_tokens.min(info.context / 2) + spec.continue_from.len();
    let fitted = fit_chat(codec, &spec.messages, info.context, reserve)?;
    let mut prompt_ids = fitted.ids;
    prompt_ids.extend_from_slice(&spec.continue_from);
    let room = info.context.saturating_sub(prompt_ids.len());
    if room == 0 {
        anyhow::bail!(
            "the message ({} tokens with the reply so far, every earlier turn left out) fills the model's context of {} tokens; shorten it",
            prompt_ids.len(),
            info.context
        );
    }
    if fitted.dropped_turns > 0 {
        let _ = events.send(EngineEvent::Trimmed {
            job: spec.job,
            dropped_turns: fitted.dropped_turns,
            prompt_tokens: prompt_ids.len(),
        });
    }
    let reused = prefix
        .ids()
        .iter()
        .zip(&prompt_ids)
        .take_while(|(a, b)| a == b)
        .count()
        .min(prompt_ids.len() - 1);
    let req = GenerateRequest {
        max_new_tokens: spec.max_new_tokens.min(room),
        sampling: spec.sampling.clone(),
        eos_ids: info.eos_ids.clone(),
        ignore_eos: false,
        stop_strings: Vec::new(),
        top_logprobs: spec.top_logprobs,
        trace_routing: true,
        n: 1,
        think_budget: spec.think_budget,
        ..GenerateRequest::new(prompt_ids)
    };
    let job = spec.job;
    let mut on_event = |ev: GenEvent| {
        let _ = match ev {
            GenEvent::Prompt(tokens) => events.send(EngineEvent::Prompt {
                job,
                tokens: tokens.to_vec(),
                reused,
            }),
            GenEvent::Token { token, .. } => events.send(EngineEvent::Token {
                job,
                top_text: token
                    .top
                    .iter()
                    .map(|&(id, _)| codec.token_text(id))
                    .collect(),
                token: token.clone(),
            }),
            // The job's end is reported below, with its statistics.
            GenEvent::Finished { .. } => Ok(()),
        };
    };
    let gen = generate_cached(model, Some(codec), &req, prefix, cancel, &mut on_event)?;
    let reason = gen
        .completions
        .first()
        .map_or(FinishReason::Length, |c| c.finish_reason);
    Ok((reason, gen.stats))
}

/// A cheap fingerprint of a checkpoint: FNV-1a over config.json and, for every weight file, its
/// name, size, safetensors header (every tensor's name, dtype, shape and offsets) and last MiB.
/// Reading whole multi-gigabyte files at every start would be too slow; this still changes when
/// the weights are retrained or swapped.
pub fn checkpoint_hash(dir: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut h = Fnv::new();
    if let Ok(bytes) = std::fs::read(dir.join("config.json")) {
        h.write(&bytes);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for path in files {
        let Ok(mut f) = std::fs::File::open(&path) else {
            continue;
        };
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        h.write(path.file_name().unwrap_or_default().as_encoded_bytes());
        h.write(&size.to_le_bytes());
        let mut len = [0u8; 8];
        if f.read_exact(&mut len).is_ok() {
            let n = u64::from_le_bytes(len).min(64 << 20);
            let mut header = vec![0u8; n as usize];
            if f.read_exact(&mut header).is_ok() {
                h.write(&header);
            }
        }
        let tail = size.min(1 << 20);
        if f.seek(SeekFrom::Start(size - tail)).is_ok() {
            let mut buf = Vec::with_capacity(tail as usize);
            if f.take(tail).read_to_end(&mut buf).is_ok() {
                h.write(&buf);
            }
        }
    }
    format!("fnv1a64:{:016x}", h.0)
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    let msg = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    one_line(&format!("engine error: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_with_the_weights() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let mut st = 8u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{\"a\":1} ");
        st.extend_from_slice(&[1, 2, 3, 4]);
        std::fs::write(dir.path().join("model.safetensors"), &st).unwrap();
        let a = checkpoint_hash(dir.path());
        assert!(a.starts_with("fnv1a64:"));
        assert_eq!(a, checkpoint_hash(dir.path()));
        *st.last_mut().unwrap() = 5;
        std::fs::write(dir.path().join("model.safetensors"), &st).unwrap();
        assert_ne!(a, checkpoint_hash(dir.path()));
    }
}
