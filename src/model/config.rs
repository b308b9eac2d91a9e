//! `config.json` as the hub publishes it, for every supported `model_type`.
//!
//! Field names are the JSON keys, so serde needs no renames; derived numbers are small methods.
//! Both RoPE spellings are accepted: the hub's top-level `rope_theta` + `rope_scaling` (key `type`)
//! and transformers 5's `rope_parameters` (key `rope_type`, `rope_theta` inside).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::ModelError;

/// The architectures thinkbench runs, named after HF `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    DeepseekV3,
    DeepseekV2,
    Qwen2,
    Llama,
    Qwen3,
}

impl ModelType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "deepseek_v3" => Self::DeepseekV3,
            "deepseek_v2" => Self::DeepseekV2,
            "qwen2" => Self::Qwen2,
            "llama" => Self::Llama,
            "qwen3" => Self::Qwen3,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::DeepseekV3 => "deepseek_v3",
            Self::DeepseekV2 => "deepseek_v2",
            Self::Qwen2 => "qwen2",
            Self::Llama => "llama",
            Self::Qwen3 => "qwen3",
        }
    }

    pub fn is_deepseek(self) -> bool {
        matches!(self, Self::DeepseekV3 | Self::DeepseekV2)
    }
}

/// An integer or a list of integers (`eos_token_id` is either on the hub).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(x) => vec![*x],
            Self::Many(v) => v.clone(),
        }
    }
}

/// The raw keys of `config.json`. Everything optional that some architecture omits.
#[derive(Debug, Clone, Deserialize)]
pub struct RawConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Value>,
    pub rope_parameters: Option<Value>,
    pub partial_rotary_factor: Option<f64>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: bool,
    pub max_position_embeddings: Option<usize>,
    pub bos_token_id: Option<OneOrMany>,
    pub eos_token_id: Option<OneOrMany>,
    pub hidden_act: Option<String>,

    // Multi-head latent attention (DeepSeek V2/V3).
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: Option<usize>,
    pub qk_nope_head_dim: Option<usize>,
    pub qk_rope_head_dim: Option<usize>,
    pub v_head_dim: Option<usize>,
    pub rope_interleave: Option<bool>,

    // DeepSeekMoE.
    pub n_routed_experts: Option<usize>,
    pub n_shared_experts: Option<usize>,
    pub num_experts_per_tok: Option<usize>,
    pub n_group: Option<usize>,
    pub topk_group: Option<usize>,
    pub routed_scaling_factor: Option<f64>,
    pub norm_topk_prob: Option<bool>,
    pub first_k_dense_replace: Option<usize>,
    pub moe_intermediate_size: Option<usize>,
    pub moe_layer_freq: Option<usize>,
    pub topk_method: Option<String>,
    pub scoring_func: Option<String>,
    pub num_nextn_predict_layers: Option<usize>,

    pub quantization_config: Option<Value>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

/// How rotary frequencies are derived.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Yarn {
        factor: f64,
        original_max_position_embeddings: f64,
        beta_fast: f64,
        beta_slow: f64,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        attention_factor: Option<f64>,
        truncate: bool,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// How the router scores and picks experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// DeepSeek-V3: sigmoid scores, bias-corrected group-limited selection (`noaux_tc`).
    SigmoidNoAux,
    /// DeepSeek-V2 `greedy`: softmax scores, plain top-k.
    SoftmaxGreedy,
    /// DeepSeek-V2 `group_limited_greedy`: softmax scores, best groups by their max score.
    SoftmaxGroupLimited,
}

#[derive(Debug, Clone)]
pub struct MoeConfig {
    pub routing: Routing,
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub top_k: usize,
    pub n_group: usize,
    pub topk_group: usize,
    pub routed_scaling_factor: f64,
    pub norm_topk_prob: bool,
    pub first_k_dense_replace: usize,
    pub moe_intermediate_size: usize,
    pub moe_layer_freq: usize,
}

#[derive(Debug, Clone)]
pub struct MlaConfig {
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    /// Rotate (x0,x1),(x2,x3)… pairs rather than the two halves.
    pub rope_interleave: bool,
}

impl MlaConfig {
    pub fn q_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }
}

/// FP8 block quantisation as DeepSeek-V3/R1 are published.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Config {
    pub block: [usize; 2],
}

/// A validated model configuration: everything the model code needs, derived once.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub model_type: ModelType,
    pub raw: RawConfig,
    pub rope: RopeConfig,
    pub mla: Option<MlaConfig>,
    pub moe: Option<MoeConfig>,
    pub fp8: Option<Fp8Config>,
}

impl ModelConfig {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        Self::parse(&text, &path)
    }

    /// The config a GGUF file's metadata describes, as the HF `config.json` of the same model
    /// would state it.
    pub fn from_gguf(file: &crate::gguf::GgufFile) -> Result<Self, ModelError> {
        let value = crate::gguf::config::hf_config(file).map_err(super::source::gguf_error)?;
        Self::parse(&value.to_string(), file.path())
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ModelError> {
        let file = path.display().to_string();
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Json {
            file: file.clone(),
            msg: e.to_string(),
        })?;
        let model_type_str = value
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ModelError::config(
                    &file,
                    "model_type",
                    "missing (expected one of deepseek_v3, deepseek_v2, qwen2, llama, qwen3)",
                )
            })?
            .to_string();
        let model_type = ModelType::parse(&model_type_str).ok_or_else(|| {
            ModelError::config(
                &file,
                "model_type",
                format!("unsupported model_type \"{model_type_str}\" (supported: deepseek_v3, deepseek_v2, qwen2, llama, qwen3)"),
            )
        })?;
        let raw: RawConfig = serde_json::from_value(value).map_err(|e| ModelError::Json {
            file: file.clone(),
            msg: e.to_string(),
        })?;
        let rope = parse_rope(&raw, &file)?;
        let mla = if model_type.is_deepseek() {
            Some(parse_mla(&raw, model_type, &file)?)
        } else {
            None
        };
        let moe = if model_type.is_deepseek() {
            parse_moe(&raw, model_type, &file)?
        } else {
            None
        };
        let fp8 = parse_fp8(&raw, &file)?;
        let cfg = Self {
            model_type,
            raw,
            rope,
            mla,
            moe,
            fp8,
        };
        cfg.validate(&file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ModelError> {
        let r = &self.raw;
        for (key, v) in [
            ("vocab_size", r.vocab_size),
            ("hidden_size", r.hidden_size),
            ("num_hidden_layers", r.num_hidden_layers),
            ("num_attention_heads", r.num_attention_heads),
        ] {
            if v == 0 {
                return Err(ModelError::config(file, key, "must be positive"));
            }
        }
        if self.mla.is_none() {
            if !r.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
                return Err(ModelError::config(
                    file,
                    "num_key_value_heads",
                    "must divide num_attention_heads",
                ));
            }
            if r.head_dim.is_none() && !r.hidden_size.is_multiple_of(r.num_attention_heads) {
                return Err(ModelError::config(
                    file,
                    "hidden_size",
                    "must be a multiple of num_attention_heads when head_dim is absent",
                ));
            }
            if !self.head_dim().is_multiple_of(2) {
                return Err(ModelError::config(
                    file,
                    "head_dim",
                    "must be even for rotary embeddings",
                ));
            }
        }
        if let Some(moe) = &self.moe {
            if moe.n_group == 0 || moe.n_routed_experts % moe.n_group != 0 {
                return Err(ModelError::config(
                    file,
                    "n_group",
                    "must divide n_routed_experts",
                ));
            }
            if moe.topk_group > moe.n_group {
                return Err(ModelError::config(
                    file,
                    "topk_group",
                    "must not exceed n_group",
                ));
            }
            if moe.top_k == 0 || moe.top_k > moe.n_routed_experts {
                return Err(ModelError::config(
                    file,
                    "num_experts_per_tok",
                    "must be between 1 and n_routed_experts",
                ));
            }
            if moe.routing != Routing::SoftmaxGreedy
                && moe.top_k > moe.topk_group * (moe.n_routed_experts / moe.n_group)
            {
                return Err(ModelError::config(
                    file,
                    "num_experts_per_tok",
                    "exceeds the experts in the topk_group kept groups",
                ));
            }
            if moe.routing == Routing::SigmoidNoAux && moe.n_routed_experts / moe.n_group < 2 {
                return Err(ModelError::config(
                    file,
                    "n_group",
                    "noaux_tc routing needs at least 2 experts per group",
                ));
            }
        }
        if let Some(act) = &r.hidden_act {
            if act != "silu" {
                return Err(ModelError::config(
                    file,
                    "hidden_act",
                    format!("\"{act}\" is not supported (only silu)"),
                ));
            }
        }
        Ok(())
    }

    pub fn num_kv_heads(&self) -> usize {
        self.raw
            .num_key_value_heads
            .unwrap_or(self.raw.num_attention_heads)
    }

    /// Per-head width of the (non-MLA) attention.
    pub fn head_dim(&self) -> usize {
        self.raw
            .head_dim
            .unwrap_or(self.raw.hidden_size / self.raw.num_attention_heads)
    }

    /// Width the rotary embedding rotates.
    pub fn rope_dim(&self) -> usize {
        match &self.mla {
            Some(mla) => mla.qk_rope_head_dim,
            None => {
                let f = self.raw.partial_rotary_factor.unwrap_or(1.0);
                (self.head_dim() as f64 * f) as usize
            }
        }
    }

    /// Qwen2 always has q/k/v biases; Llama and Qwen3 follow `attention_bias`.
    pub fn qkv_bias(&self) -> bool {
        match self.model_type {
            ModelType::Qwen2 => true,
            _ => self.raw.attention_bias.unwrap_or(false),
        }
    }

    pub fn o_bias(&self) -> bool {
        match self.model_type {
            ModelType::Qwen2 => false,
            _ => self.raw.attention_bias.unwrap_or(false),
        }
    }

    /// Layer `i` uses the routed-expert block (DeepSeek: after the first dense layers).
    pub fn is_moe_layer(&self, i: usize) -> bool {
        match &self.moe {
            Some(m) => i >= m.first_k_dense_replace && i.is_multiple_of(m.moe_layer_freq.max(1)),
            None => false,
        }
    }

    /// Decoder layers stored after the last one (DeepSeek-V3 multi-token prediction).
    pub fn mtp_layers(&self) -> usize {
        self.raw.num_nextn_predict_layers.unwrap_or(0)
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.raw
            .eos_token_id
            .as_ref()
            .map(OneOrMany::to_vec)
            .unwrap_or_default()
    }

    /// Softmax scale of the attention scores. MLA with YaRN multiplies in mscale²
    /// (transformers' DeepseekV3Attention and DeepSeek's own code).
    pub fn softmax_scale(&self) -> f64 {
        let head = match &self.mla {
            Some(mla) => mla.q_head_dim(),
            None => self.head_dim(),
        };
        let mut scale = (head as f64).powf(-0.5);
        if self.mla.is_some() {
            if let RopeScaling::Yarn {
                factor,
                mscale_all_dim: Some(m),
                ..
            } = &self.rope.scaling
            {
                if *m != 0.0 {
                    let ms = yarn_get_mscale(*factor, *m);
                    scale *= ms * ms;
                }
            }
        }
        scale
    }
}

pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn parse_rope(raw: &RawConfig, file: &str) -> Result<RopeConfig, ModelError> {
    // transformers 5 folds everything into rope_parameters; the hub keeps rope_theta + rope_scaling.
    let (theta, scaling, key) = match &raw.rope_parameters {
        Some(p) if p.is_object() => {
            let theta = num(p, "rope_theta").or(raw.rope_theta).unwrap_or(10000.0);
            (theta, Some(p.clone()), "rope_parameters")
        }
        _ => (
            raw.rope_theta.unwrap_or(10000.0),
            raw.rope_scaling.clone().filter(|v| !v.is_null()),
            "rope_scaling",
        ),
    };
    let Some(s) = scaling else {
        return Ok(RopeConfig {
            theta,
            scaling: RopeScaling::None,
        });
    };
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let need = |k: &str| {
        num(&s, k).ok_or_else(|| {
            ModelError::config(file, &format!("{key}.{k}"), "missing or not a number")
        })
    };
    let max_pos = raw.max_position_embeddings.map(|v| v as f64);
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need("factor")?,
        },
        "yarn" => {
            let original = num(&s, "original_max_position_embeddings")
                .or(max_pos)
                .ok_or_else(|| {
                    ModelError::config(
                        file,
                        &format!("{key}.original_max_position_embeddings"),
                        "missing",
                    )
                })?;
            let factor = match num(&s, "factor") {
                Some(f) => f,
                None => max_pos
                    .map(|m| m / original)
                    .ok_or_else(|| ModelError::config(file, &format!("{key}.factor"), "missing"))?,
            };
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast: num(&s, "beta_fast").unwrap_or(32.0),
                beta_slow: num(&s, "beta_slow").unwrap_or(1.0),
                mscale: num(&s, "mscale"),
                mscale_all_dim: num(&s, "mscale_all_dim"),
                attention_factor: num(&s, "attention_factor"),
                truncate: s.get("truncate").and_then(Value::as_bool).unwrap_or(true),
            }
        }
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position_embeddings: need("original_max_position_embeddings")?,
        },
        other => {
            return Err(ModelError::config(
                file,
                &format!("{key}.rope_type"),
                format!("\"{other}\" is not supported (default, linear, yarn, llama3)"),
            ))
        }
    };
    Ok(RopeConfig { theta, scaling })
}

fn need<T>(v: Option<T>, file: &str, key: &str) -> Result<T, ModelError> {
    v.ok_or_else(|| ModelError::config(file, key, "missing"))
}

fn parse_mla(raw: &RawConfig, model_type: ModelType, file: &str) -> Result<MlaConfig, ModelError> {
    Ok(MlaConfig {
        q_lora_rank: raw.q_lora_rank.filter(|&r| r > 0),
        kv_lora_rank: need(raw.kv_lora_rank, file, "kv_lora_rank")?,
        qk_nope_head_dim: need(raw.qk_nope_head_dim, file, "qk_nope_head_dim")?,
        qk_rope_head_dim: need(raw.qk_rope_head_dim, file, "qk_rope_head_dim")?,
        v_head_dim: need(raw.v_head_dim, file, "v_head_dim")?,
        // V2 always rotates interleaved pairs (complex multiply); V3 defaults to it.
        rope_interleave: match model_type {
            ModelType::DeepseekV2 => true,
            _ => raw.rope_interleave.unwrap_or(true),
        },
    })
}

fn parse_moe(
    raw: &RawConfig,
    model_type: ModelType,
    file: &str,
) -> Result<Option<MoeConfig>, ModelError> {
    let Some(n_routed) = raw.n_routed_experts.filter(|&n| n > 0) else {
        return Ok(None);
    };
    let routing = match model_type {
        // transformers always runs noaux_tc with sigmoid scores for deepseek_v3.
        ModelType::DeepseekV3 => Routing::SigmoidNoAux,
        _ => match raw.topk_method.as_deref().unwrap_or("greedy") {
            "greedy" => Routing::SoftmaxGreedy,
            "group_limited_greedy" => Routing::SoftmaxGroupLimited,
            other => {
                return Err(ModelError::config(
                    file,
                    "topk_method",
                    format!(
                    "\"{other}\" is not supported for deepseek_v2 (greedy, group_limited_greedy)"
                ),
                ))
            }
        },
    };
    Ok(Some(MoeConfig {
        routing,
        n_routed_experts: n_routed,
        n_shared_experts: raw.n_shared_experts.unwrap_or(0),
        top_k: need(raw.num_experts_per_tok, file, "num_experts_per_tok")?,
        n_group: raw.n_group.unwrap_or(1),
        topk_group: raw.topk_group.unwrap_or(1),
        routed_scaling_factor: raw.routed_scaling_factor.unwrap_or(1.0),
        norm_topk_prob: raw.norm_topk_prob.unwrap_or(false),
        first_k_dense_replace: raw.first_k_dense_replace.unwrap_or(0),
        moe_intermediate_size: need(raw.moe_intermediate_size, file, "moe_intermediate_size")?,
        moe_layer_freq: raw.moe_layer_freq.unwrap_or(1),
    }))
}

fn parse_fp8(raw: &RawConfig, file: &str) -> Result<Option<Fp8Config>, ModelError> {
    let Some(q) = &raw.quantization_config else {
        return Ok(None);
    };
    let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
    if method != "fp8" {
        return Err(ModelError::config(
            file,
            "quantization_config.quant_method",
            format!("\"{method}\" is not supported (only fp8 block quantisation)"),
        ));
    }
    let block = match q.get("weight_block_size").and_then(Value::as_array) {
        Some(b) if b.len() == 2 => {
            let dims: Vec<usize> = b
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| x as usize)
                .collect();
            if dims.len() != 2 || dims.contains(&0) {
                return Err(ModelError::config(
                    file,
                    "quantization_config.weight_block_size",
                    "must be two positive integers",
                ));
            }
            [dims[0], dims[1]]
        }
        _ => [128, 128],
    };
    Ok(Some(Fp8Config { block }))
}
