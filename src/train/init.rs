//! A new model from a recipe's architecture: its `config.json` in the hub's spelling and random
//! initial weights under their HF key names. The weights are written with the same checkpoint
//! writer as every other checkpoint and then opened with `Model::load`, so training runs exactly
//! the inference code on exactly what a user would load.

use serde_json::{json, Value};
use tch::{Kind, Tensor};

use super::recipe::Architecture;

/// `config.json` of a `deepseek_v3` model (the keys transformers 5.24 reads, as the hub spells them).
pub fn config_json(a: &Architecture, vocab_size: usize, bos: u32, eos: u32) -> Value {
    json!({
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "first_k_dense_replace": a.first_k_dense_replace,
        "hidden_act": "silu",
        "hidden_size": a.hidden_size,
        "initializer_range": a.init_std,
        "intermediate_size": a.intermediate_size,
        "kv_lora_rank": a.kv_lora_rank,
        "max_position_embeddings": a.max_position_embeddings,
        "moe_intermediate_size": a.moe_intermediate_size,
        "moe_layer_freq": 1,
        "n_group": a.n_group,
        "n_routed_experts": a.n_routed_experts,
        "n_shared_experts": a.n_shared_experts,
        "norm_topk_prob": true,
        "num_attention_heads": a.num_attention_heads,
        "num_experts_per_tok": a.num_experts_per_tok,
        "num_hidden_layers": a.num_hidden_layers,
        "num_key_value_heads": a.num_attention_heads,
        "num_nextn_predict_layers": 0,
        "q_lora_rank": a.q_lora_rank,
        "qk_nope_head_dim": a.qk_nope_head_dim,
        "qk_rope_head_dim": a.qk_rope_head_dim,
        "rms_norm_eps": 1e-6,
        "rope_scaling": null,
        "rope_theta": a.rope_theta,
        "routed_scaling_factor": a.routed_scaling_factor,
        "scoring_func": "sigmoid",
        "tie_word_embeddings": false,
        "topk_group": a.topk_group,
        "topk_method": "noaux_tc",
        "torch_dtype": "float32",
        "use_cache": true,
        "v_head_dim": a.v_head_dim,
        "vocab_size": vocab_size,
    })
}

/// How a weight starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// N(0, std²).
    Normal(f64),
    Ones,
    Zeros,
}

/// Every weight of a `deepseek_v3` model (no MTP layer) with its shape and initialisation.
/// Projections that write into the residual stream (`o_proj`, `down_proj`) start smaller, by
/// 1/sqrt(2·layers), so the stream's variance does not grow with depth (GPT-2's scheme).
pub fn deepseek_v3_weights(a: &Architecture, vocab: usize) -> Vec<(String, Vec<i64>, Init)> {
    let h = a.hidden_size as i64;
    let heads = a.num_attention_heads as i64;
    let qk = (a.qk_nope_head_dim + a.qk_rope_head_dim) as i64;
    let std = a.init_std;
    let resid = std / (2.0 * a.num_hidden_layers as f64).sqrt();
    let mut w: Vec<(String, Vec<i64>, Init)> = Vec::new();
    let mut add = |name: String, shape: Vec<i64>, init: Init| w.push((name, shape, init));
    add(
        "model.embed_tokens.weight".into(),
        vec![vocab as i64, h],
        Init::Normal(std),
    );
    let mlp = |add: &mut dyn FnMut(String, Vec<i64>, Init), p: &str, inter: i64| {
        add(
            format!("{p}.gate_proj.weight"),
            vec![inter, h],
            Init::Normal(std),
        );
        add(
            format!("{p}.up_proj.weight"),
            vec![inter, h],
            Init::Normal(std),
        );
        add(
            format!("{p}.down_proj.weight"),
            vec![h, inter],
            Init::Normal(resid),
        );
    };
    for i in 0..a.num_hidden_layers {
        let p = format!("model.layers.{i}");
        add(format!("{p}.input_layernorm.weight"), vec![h], Init::Ones);
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            Init::Ones,
        );
        let s = format!("{p}.self_attn");
        let (ql, kvl) = (a.q_lora_rank as i64, a.kv_lora_rank as i64);
        add(
            format!("{s}.q_a_proj.weight"),
            vec![ql, h],
            Init::Normal(std),
        );
        add(format!("{s}.q_a_layernorm.weight"), vec![ql], Init::Ones);
        add(
            format!("{s}.q_b_proj.weight"),
            vec![heads * qk, ql],
            Init::Normal(std),
        );
        add(
            format!("{s}.kv_a_proj_with_mqa.weight"),
            vec![kvl + a.qk_rope_head_dim as i64, h],
            Init::Normal(std),
        );
        add(format!("{s}.kv_a_layernorm.weight"), vec![kvl], Init::Ones);
        add(
            format!("{s}.kv_b_proj.weight"),
            vec![heads * (a.qk_nope_head_dim + a.v_head_dim) as i64, kvl],
            Init::Normal(std),
        );
        add(
            format!("{s}.o_proj.weight"),
            vec![h, heads * a.v_head_dim as i64],
            Init::Normal(resid),
        );
        if i < a.first_k_dense_replace {
            mlp(&mut add, &format!("{p}.mlp"), a.intermediate_size as i64);
        } else {
            let m = format!("{p}.mlp");
            let e = a.n_routed_experts as i64;
            add(format!("{m}.gate.weight"), vec![e, h], Init::Normal(std));
            add(
                format!("{m}.gate.e_score_correction_bias"),
                vec![e],
                Init::Zeros,
            );
            for x in 0..a.n_routed_experts {
                mlp(
                    &mut add,
                    &format!("{m}.experts.{x}"),
                    a.moe_intermediate_size as i64,
                );
            }
            if a.n_shared_experts > 0 {
                mlp(
                    &mut add,
                    &format!("{m}.shared_experts"),
                    (a.moe_intermediate_size * a.n_shared_experts) as i64,
                );
            }
        }
    }
    add("model.norm.weight".into(), vec![h], Init::Ones);
    add(
        "lm_head.weight".into(),
        vec![vocab as i64, h],
        Init::Normal(std),
    );
    w
}

/// Draws the initial tensors (f32, CPU) from libtorch's generator seeded with `seed`, in the
/// order given: the same seed gives the same weights.
pub fn random_weights(spec: &[(String, Vec<i64>, Init)], seed: u64) -> Vec<(String, Tensor)> {
    // libtorch's generator is global: two draws at once (tests run in parallel) would interleave.
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let _g = tch::no_grad_guard();
    tch::manual_seed(seed as i64);
    spec.iter()
        .map(|(name, shape, init)| {
            let opts = (Kind::Float, tch::Device::Cpu);
            let t = match init {
                Init::Normal(std) => Tensor::randn(shape.as_slice(), opts) * *std,
                Init::Ones => Tensor::ones(shape.as_slice(), opts),
                Init::Zeros => Tensor::zeros(shape.as_slice(), opts),
            };
            (name.clone(), t)
        })
        .collect()
}

/// Parameter counts: (total, active per token), embeddings and head included.
pub fn parameter_counts(a: &Architecture, vocab: usize) -> (u64, u64) {
    let mut total = 0u64;
    let mut inactive = 0u64;
    let routed = a.n_routed_experts as u64;
    let active = a.num_experts_per_tok as u64;
    for (name, shape, _) in deepseek_v3_weights(a, vocab) {
        let n: u64 = shape.iter().map(|&d| d as u64).product();
        total += n;
        if name.contains(".experts.") {
            // Each token runs `active` of the `routed` experts.
            inactive += n - n * active / routed;
        }
    }
    (total, total - inactive)
}

/// Rounds a vocabulary up to a multiple of 8 for the embedding rows (the extra rows map to no
/// token and are never sampled).
pub fn padded_vocab(n: usize) -> usize {
    n.div_ceil(8) * 8
}
