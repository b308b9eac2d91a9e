//! Tensor math only. One decoder serves every architecture: attention is standard (Llama, Qwen2,
//! Qwen3) or latent (DeepSeek MLA), the feed-forward is dense or DeepSeekMoE. The same code runs
//! inference and training.

pub mod attention;
pub mod block_store;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod gemv;
pub mod layers;
pub mod loader;
pub mod memory;
pub mod mla;
pub mod moe;
pub mod probe;
pub mod qlinear;
pub mod quant;
pub mod rope;
pub mod source;
pub mod tiled;

use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind, Tensor};

use attention::{causal_mask, Attention};
use cache::KvCache;
pub use config::{ModelConfig, ModelType};
use layers::{Mlp, RmsNorm};
use loader::Loader;
use mla::Mla;
use moe::Moe;
pub use moe::Router;
pub use probe::{NoProbe, Probe};
use rope::{Positions, Rotary};
use source::WeightSource;

/// Everything that can go wrong while loading a model. Each message is one line naming the file
/// or weight and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{file}: {msg}")]
    Io { file: String, msg: String },
    #[error("{file}: invalid JSON: {msg}")]
    Json { file: String, msg: String },
    #[error("{file}: key `{key}`: {msg}")]
    Config {
        file: String,
        key: String,
        msg: String,
    },
    #[error("weight `{name}` is missing from the checkpoint in {dir}")]
    MissingWeight { name: String, dir: String },
    #[error("weight `{name}`: {msg}")]
    WrongShape { name: String, msg: String },
    #[error("{file}: {msg}")]
    BadSafetensors { file: String, msg: String },
    #[error("{file}: pickle checkpoints are refused because loading them can run arbitrary code; convert to safetensors first (e.g. in Python: `from safetensors.torch import save_file; save_file(torch.load(path, weights_only=True), \"model.safetensors\")`)")]
    Pickle { file: String },
    #[error("{dir}: no model.safetensors or model.safetensors.index.json")]
    NoWeights { dir: String },
    #[error("{0}")]
    Device(String),
    #[error("libtorch: {0}")]
    Tch(String),
}

impl ModelError {
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        let msg = match e.kind() {
            std::io::ErrorKind::NotFound => "not found".to_string(),
            _ => e.to_string(),
        };
        Self::Io {
            file: path.display().to_string(),
            msg,
        }
    }

    pub fn config(file: &str, key: &str, msg: impl Into<String>) -> Self {
        Self::Config {
            file: file.to_string(),
            key: key.to_string(),
            msg: msg.into(),
        }
    }
}

/// Run dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "f32" | "float32" => Self::F32,
            "bf16" | "bfloat16" => Self::BF16,
            "f16" | "float16" => Self::F16,
            _ => return None,
        })
    }

    pub fn kind(self) -> Kind {
        match self {
            Self::F32 => Kind::Float,
            Self::BF16 => Kind::BFloat16,
            Self::F16 => Kind::Half,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::BF16 => "bf16",
            Self::F16 => "f16",
        }
    }
}

/// `cpu`, `cuda` or `cuda:N`.
/// `--quant`'s value: `q8_0` or `q4_0` (any case).
pub fn parse_quant(s: &str) -> Result<quant::Format, ModelError> {
    match s.to_ascii_lowercase().as_str() {
        "q8_0" => Ok(quant::Format::Q8_0),
        "q4_0" => Ok(quant::Format::Q4_0),
        _ => Err(ModelError::Device(format!(
            "--quant {s}: expected q8_0 or q4_0"
        ))),
    }
}

pub fn parse_device(s: &str) -> Result<Device, ModelError> {
    let d = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => Device::Cuda(n),
            None => {
                return Err(ModelError::Device(format!(
                    "--device {s}: expected cpu, cuda or cuda:N"
                )))
            }
        },
    };
    if let Device::Cuda(n) = d {
        load_torch_cuda();
        let have = tch::Cuda::device_count() as usize;
        if n >= have {
            return Err(ModelError::Device(format!(
                "--device {s}: this libtorch sees {have} CUDA device(s); build against a CUDA libtorch (LIBTORCH_USE_PYTORCH=1 make build) on a machine with a GPU"
            )));
        }
    }
    Ok(d)
}

/// Makes sure libtorch's CUDA half is loaded before CUDA is asked for. The linker drops
/// `libtorch_cuda.so` from the binary's needed libraries (nothing in it is called by name: it
/// registers CUDA with libtorch from its static initialisers), so a binary built against a CUDA
/// libtorch would otherwise see no GPU. It is found through the binary's rpath or
/// LD_LIBRARY_PATH; on a CPU-only libtorch it is absent and the device count stays 0.
fn load_torch_cuda() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        extern "C" {
            fn dlopen(
                file: *const std::ffi::c_char,
                mode: std::ffi::c_int,
            ) -> *mut std::ffi::c_void;
        }
        const RTLD_NOW: std::ffi::c_int = 2;
        const RTLD_GLOBAL: std::ffi::c_int = 0x100;
        // SAFETY: dlopen with a constant NUL-terminated name; a null result (library absent)
        // is ignored, and the handle is deliberately never closed.
        unsafe {
            dlopen(c"libtorch_cuda.so".as_ptr(), RTLD_NOW | RTLD_GLOBAL);
        }
    });
}

enum AttentionBlock {
    Standard(Attention),
    Latent(Mla),
}

enum FeedForward {
    Dense(Mlp),
    Moe(Moe),
}

struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: AttentionBlock,
    post_attention_layernorm: RmsNorm,
    mlp: FeedForward,
}

pub struct Model {
    pub config: ModelConfig,
    pub dir: PathBuf,
    pub dtype: DType,
    pub device: Device,
    /// Owns every weight, by HF key name (the optimiser and checkpoint writer use it).
    pub vars: nn::VarStore,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// The head: the embedding table when tied, else its own weight (quantized with `--quant`).
    lm_head: layers::Weight,
    rotary: Rotary,
    /// Checkpoint tensors no module asked for (e.g. MTP layers, which inference skips).
    pub unused_weights: Vec<String>,
    /// Weights stored block-quantized (`--quant`, or a GGUF file's Q8_0/Q4_0 tensors), by HF
    /// name, with their sizes in bytes; they are not in `vars`.
    pub quantized_weights: std::collections::BTreeMap<String, usize>,
}

impl Model {
    pub fn load(dir: &Path, dtype: DType, device: Device) -> Result<Self, ModelError> {
        Self::load_quantized(dir, dtype, device, None)
    }

    /// [`Model::load`], with the linear layers (attention and MLP projections, experts, the head
    /// unless tied) stored in `quant`'s block format; embeddings, norms, routers and MLA's
    /// `kv_b_proj` stay in `dtype`. CPU only: the quantized kernels are CPU kernels.
    pub fn load_quantized(
        dir: &Path,
        dtype: DType,
        device: Device,
        quant: Option<quant::Format>,
    ) -> Result<Self, ModelError> {
        if quant.is_some() && device != Device::Cpu {
            return Err(ModelError::Device(
                "--quant runs on the CPU only (the quantized kernels are CPU kernels)".into(),
            ));
        }
        if !dir.is_dir() && !source::is_gguf(dir) {
            return Err(ModelError::Io {
                file: dir.display().to_string(),
                msg: "model directory (or .gguf file) not found".into(),
            });
        }
        let ckpt = WeightSource::open(dir)?;
        if device == Device::Cpu {
            if let Some(available) = memory::available_bytes() {
                memory::check_fits(&ckpt, dtype, quant, available)?;
            }
        }
        let config = match &ckpt {
            WeightSource::Gguf(g) => ModelConfig::from_gguf(&g.file)?,
            WeightSource::Safetensors(_) => ModelConfig::load(dir)?,
        };
        let vars = nn::VarStore::new(device);
        let l = Loader {
            ckpt: &ckpt,
            kind: dtype.kind(),
            device,
            fp8_block: config.fp8.as_ref().map(|f| f.block),
            quant,
            quantized: Default::default(),
            blocks: Default::default(),
        };
        let root = vars.root();
        let m = &root / "model";
        let r = &config.raw;
        let (vocab, hidden) = (r.vocab_size as i64, r.hidden_size);
        let embed_tokens = l.weight(&(&m / "embed_tokens"), "weight", &[vocab, hidden as i64])?;
        // The head next, before the layers: quantizing it at load briefly holds it as stored
        // (0.4 GB at bf16 for a 100k vocabulary), which then adds to a nearly empty process
        // rather than to the whole model at the peak.
        let head_path = &root / "lm_head";
        let lm_head = if r.tie_word_embeddings || !l.has(&head_path, "weight") {
            layers::Weight::Float(embed_tokens.shallow_clone())
        } else {
            l.linear_weight(&head_path, "weight", &[vocab, hidden as i64])?
        };
        let mut layers = Vec::with_capacity(r.num_hidden_layers);
        for i in 0..r.num_hidden_layers {
            let p = &m / "layers" / i;
            let self_attn = if config.mla.is_some() {
                AttentionBlock::Latent(Mla::load(&l, &p / "self_attn", &config)?)
            } else {
                AttentionBlock::Standard(Attention::load(&l, &p / "self_attn", &config)?)
            };
            let mlp = if config.is_moe_layer(i) {
                FeedForward::Moe(Moe::load(&l, &p / "mlp", &config)?)
            } else {
                FeedForward::Dense(Mlp::load(
                    &l,
                    &p / "mlp",
                    hidden,
                    r.intermediate_size,
                    r.mlp_bias,
                )?)
            };
            layers.push(DecoderLayer {
                input_layernorm: RmsNorm::load(&l, &p / "input_layernorm", hidden, r.rms_norm_eps)?,
                self_attn,
                post_attention_layernorm: RmsNorm::load(
                    &l,
                    &p / "post_attention_layernorm",
                    hidden,
                    r.rms_norm_eps,
                )?,
                mlp,
            });
        }
        let norm = RmsNorm::load(&l, &m / "norm", hidden, r.rms_norm_eps)?;
        let interleave = config.mla.as_ref().is_some_and(|m| m.rope_interleave);
        let rotary = Rotary::new(&config.rope, config.rope_dim(), interleave, device);
        let loaded = vars.variables();
        let quantized = l.quantized.take();
        let mut unused_weights: Vec<String> = ckpt
            .names()
            .into_iter()
            .filter(|n| {
                !loaded.contains_key(n) && !quantized.contains_key(n) && !n.ends_with("_scale_inv")
            })
            .chain(ckpt.unread())
            .collect();
        unused_weights.sort();
        Ok(Self {
            config,
            dir: dir.to_path_buf(),
            dtype,
            device,
            vars,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary,
            unused_weights,
            quantized_weights: quantized,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.config.raw.vocab_size
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Indices of the decoder layers with routed experts.
    pub fn moe_layers(&self) -> Vec<usize> {
        (0..self.layers.len())
            .filter(|&i| matches!(self.layers[i].mlp, FeedForward::Moe(_)))
            .collect()
    }

    /// The routers of the MoE layers, in layer order (none for a dense model).
    pub fn routers(&self) -> Vec<Router> {
        self.layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match &l.mlp {
                FeedForward::Moe(moe) => Some(moe.router(i)),
                FeedForward::Dense(_) => None,
            })
            .collect()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.layers
                .iter()
                .map(|l| match l.self_attn {
                    AttentionBlock::Standard(_) => Attention::new_cache(),
                    AttentionBlock::Latent(_) => Mla::new_cache(),
                })
                .collect(),
        )
    }

    /// Runs `ids [B,S]` at the positions after what `cache` holds and appends to it.
    /// Returns logits `[B,S,V]` for every position when `all_logits`, else `[B,1,V]` for the last
    /// (a 512-token prefill would otherwise build a 512×vocab matrix nobody reads).
    pub fn forward(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        probe: &mut dyn Probe,
        all_logits: bool,
    ) -> Tensor {
        let h = self.hidden(ids, cache, probe);
        let s = h.size()[1];
        self.logits(&if all_logits { h } else { h.narrow(1, s - 1, 1) })
    }

    /// The last hidden states `[B,S,hidden]` (before the final norm) of `ids [B,S]`, continuing
    /// whatever `cache` holds. With [`Model::logits`], for callers that choose which positions
    /// reach the head and how many at a time (a 152k-entry vocabulary makes the logits the
    /// largest tensor of a training step).
    pub fn hidden(&self, ids: &Tensor, cache: &mut KvCache, probe: &mut dyn Probe) -> Tensor {
        let (_, s) = ids.size2().expect("ids are [batch, seq]");
        let start = cache.len();
        let pad = cache.padding().to_vec();
        let mask = causal_mask(start, s, &pad, self.device);
        let pos = Positions::after(start, s, &pad, self.device);
        let mut h = Tensor::embedding(&self.embed_tokens, ids, -1, false, false);
        for (i, layer) in self.layers.iter().enumerate() {
            let x = layer.input_layernorm.forward(&h);
            let lc = &mut cache.layers[i];
            let a = match &layer.self_attn {
                AttentionBlock::Standard(att) => {
                    att.forward(&x, &pos, &self.rotary, lc, mask.as_ref())
                }
                AttentionBlock::Latent(mla) => {
                    mla.forward(&x, &pos, &self.rotary, lc, mask.as_ref())
                }
            };
            // A new tensor, not `+=`: an in-place add would overwrite what autograd saved.
            #[allow(clippy::assign_op_pattern)]
            {
                h = h + a;
            }
            let x = layer.post_attention_layernorm.forward(&h);
            let f = match &layer.mlp {
                FeedForward::Dense(mlp) => mlp.forward(&x),
                FeedForward::Moe(moe) => moe.forward(&x, i, probe),
            };
            #[allow(clippy::assign_op_pattern)]
            {
                h = h + f;
            }
        }
        cache.advance(s);
        h
    }

    /// The final norm and the LM head on hidden states `[..., hidden]`: logits `[..., V]`.
    pub fn logits(&self, h: &Tensor) -> Tensor {
        // The head is ~15% of the bytes a decode step reads: let the GEMV kernel take it too.
        let x = self.norm.forward(h);
        match &self.lm_head {
            layers::Weight::Float(w) => layers::linear(&x, w, None),
            layers::Weight::Quant(q) => q.forward(&x, None),
        }
    }
}
