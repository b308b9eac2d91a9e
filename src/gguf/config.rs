//! The Hugging Face `config.json` that a GGUF file written by llama.cpp's converter stands for.
//!
//! llama.cpp keeps a model's hyperparameters as `<arch>.<key>` metadata (`qwen2.block_count`,
//! `deepseek2.attention.kv_lora_rank`, …). [`hf_config`] turns them back into the keys
//! transformers uses, for the architectures thinkbench runs:
//!
//! | `general.architecture` | `model_type` |
//! |---|---|
//! | `qwen2` | `qwen2` |
//! | `llama` | `llama` |
//! | `qwen3` | `qwen3` |
//! | `deepseek2` | `deepseek_v3` when the router is sigmoid-gated or has a score-correction bias (`exp_probs_b`), else `deepseek_v2` |
//!
//! What the converter does not keep is filled the way it must have been:
//! - `vocab_size` is the row count of `token_embd.weight` (checked against `<arch>.vocab_size`);
//! - `tie_word_embeddings` is true exactly when there is no `output.weight`;
//! - llama's llama3 rope scaling is not metadata at all: the converter stores the per-frequency
//!   divisors as the tensor `rope_freqs.weight`. The four HF parameters are solved back from it
//!   (see [`llama3_from_factors`]) and the solution is checked to reproduce every divisor;
//! - DeepSeek's YaRN keeps only `0.1 * mscale_all_dim` (`rope.scaling.yarn_log_multiplier`).
//!   llama.cpp's deepseek2 graph applies it as if `mscale == mscale_all_dim`, so both are set to it;
//! - DeepSeek-V2's `topk_method` is not stored: more than one expert group means
//!   `group_limited_greedy`, else `greedy`. V3 is always `noaux_tc`;
//! - MLA's `num_key_value_heads` is written as 1 by the converter (MQA over the latent); HF's is the
//!   head count, which is what is returned.
//!
//! Floats stored as f32 come back as the shortest decimal that reads back as the same f32
//! (`1e-6`, not `9.99999997e-7`), so they compare equal to the hub's `config.json`.

use serde_json::{json, Map, Value};

use super::{Error, ErrorKind, GgufFile, Result};

/// The tensors whose contents are hyperparameters, read here rather than loaded as weights.
pub const CONFIG_TENSORS: &[&str] = &["rope_freqs.weight"];

/// The HF `config.json` for `gguf`. A required key that is missing is an error naming it.
pub fn hf_config(gguf: &GgufFile) -> Result<Value> {
    let arch = gguf.architecture()?;
    match arch {
        "qwen2" | "llama" | "qwen3" => dense_config(gguf, arch),
        "deepseek2" => deepseek_config(gguf),
        other => Err(invalid(
            gguf,
            "general.architecture",
            format!(
                "architecture \"{other}\" is not supported (qwen2, llama, qwen3, deepseek2 are)"
            ),
        )),
    }
}

/// An error about `what` in `gguf` (a key, a tensor), one line.
pub(crate) fn invalid(gguf: &GgufFile, what: impl Into<String>, msg: impl Into<String>) -> Error {
    Error {
        file: gguf.path().to_path_buf(),
        kind: ErrorKind::Invalid {
            what: what.into(),
            msg: msg.into(),
        },
    }
}

/// An f32 from the file as the shortest decimal that names it, widened: `1e-6f32` → `1e-6`.
fn f32_decimal(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(x as f64)
}

/// A value derived from f32 inputs, rounded to 7 significant digits (f32 carries about 7).
fn round7(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    format!("{x:.6e}").parse().unwrap_or(x)
}

/// `x` as an integer when it is within relative 1e-4 of one.
fn snap(x: f64) -> f64 {
    let r = x.round();
    if (x - r).abs() <= 1e-4 * x.abs().max(1.0) {
        r
    } else {
        round7(x)
    }
}

/// A float metadata value: f32 read back as its decimal, f64 as is.
fn float_opt(gguf: &GgufFile, key: &str) -> Result<Option<f64>> {
    Ok(match gguf.value(key) {
        Some(super::Value::F32(x)) => Some(f32_decimal(*x)),
        _ => gguf.get_opt::<f64>(key)?,
    })
}

fn float(gguf: &GgufFile, key: &str) -> Result<f64> {
    match float_opt(gguf, key)? {
        Some(x) => Ok(x),
        None => gguf.get_f64(key), // the reader's error: the key is missing
    }
}

/// A JSON number for a float: integral values stay floats (`10000.0`), as transformers writes.
fn num(x: f64) -> Value {
    json!(x)
}

/// Rows of `token_embd.weight`, checked against `<arch>.vocab_size` where the file has it.
fn vocab_size(gguf: &GgufFile, arch: &str) -> Result<usize> {
    let embd = gguf.tensor("token_embd.weight")?;
    if embd.dims.len() != 2 {
        return Err(invalid(
            gguf,
            "tensor `token_embd.weight`",
            format!("expected 2 dims, found {:?}", embd.dims),
        ));
    }
    let rows = embd.dims[1] as usize;
    let key = format!("{arch}.vocab_size");
    if let Some(n) = gguf.get_opt::<usize>(&key)? {
        if n != rows {
            return Err(invalid(
                gguf,
                format!("metadata key `{key}`"),
                format!("{n}, but token_embd.weight has {rows} rows"),
            ));
        }
    }
    Ok(rows)
}

/// Keys every architecture shares.
fn common(gguf: &GgufFile, arch: &str, out: &mut Map<String, Value>) -> Result<()> {
    let k = |s: &str| format!("{arch}.{s}");
    out.insert("vocab_size".into(), json!(vocab_size(gguf, arch)?));
    out.insert(
        "hidden_size".into(),
        json!(gguf.get_usize(&k("embedding_length"))?),
    );
    out.insert(
        "intermediate_size".into(),
        json!(gguf.get_usize(&k("feed_forward_length"))?),
    );
    out.insert(
        "num_hidden_layers".into(),
        json!(gguf.get_usize(&k("block_count"))?),
    );
    out.insert(
        "num_attention_heads".into(),
        json!(gguf.get_usize(&k("attention.head_count"))?),
    );
    out.insert(
        "rms_norm_eps".into(),
        num(float(gguf, &k("attention.layer_norm_rms_epsilon"))?),
    );
    let theta = float_opt(gguf, &k("rope.freq_base"))?.unwrap_or(10000.0);
    out.insert("rope_theta".into(), num(theta));
    if let Some(n) = gguf.get_opt::<usize>(&k("context_length"))? {
        out.insert("max_position_embeddings".into(), json!(n));
    }
    out.insert(
        "tie_word_embeddings".into(),
        json!(gguf.tensor_opt("output.weight").is_none()),
    );
    out.insert("hidden_act".into(), json!("silu"));
    for (key, hf) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ] {
        if let Some(id) = gguf.get_opt::<u32>(key)? {
            out.insert(hf.into(), json!(id));
        }
    }
    Ok(())
}

/// `rope.scaling.*` as HF `rope_scaling` (linear or yarn), `None` when absent or "none".
fn rope_scaling_meta(gguf: &GgufFile, arch: &str, max_pos: Option<u64>) -> Result<Option<Value>> {
    let k = |s: &str| format!("{arch}.rope.scaling.{s}");
    let Some(kind) = gguf.get_opt::<&str>(&k("type"))? else {
        // Older files wrote only a linear factor.
        return Ok(
            match float_opt(gguf, &format!("{arch}.rope.scale_linear"))? {
                Some(f) if f != 1.0 => {
                    Some(json!({"type": "linear", "rope_type": "linear", "factor": f}))
                }
                _ => None,
            },
        );
    };
    match kind {
        "none" => Ok(None),
        "linear" => Ok(Some(json!({
            "type": "linear",
            "rope_type": "linear",
            "factor": float(gguf, &k("factor"))?,
        }))),
        "yarn" => {
            let mut m = Map::new();
            m.insert("type".into(), json!("yarn"));
            m.insert("rope_type".into(), json!("yarn"));
            m.insert("factor".into(), num(float(gguf, &k("factor"))?));
            let original = match gguf.get_opt::<u64>(&k("original_context_length"))? {
                Some(n) => n,
                None => max_pos.ok_or_else(|| {
                    invalid(
                        gguf,
                        k("original_context_length"),
                        "missing, and there is no context_length to take it from",
                    )
                })?,
            };
            m.insert("original_max_position_embeddings".into(), json!(original));
            for (key, hf) in [
                ("yarn_beta_fast", "beta_fast"),
                ("yarn_beta_slow", "beta_slow"),
                ("yarn_attn_factor", "attention_factor"),
                ("yarn_ext_factor", "extrapolation_factor"),
            ] {
                if let Some(v) = float_opt(gguf, &k(key))? {
                    m.insert(hf.into(), num(v));
                }
            }
            Ok(Some(Value::Object(m)))
        }
        other => Err(invalid(
            gguf,
            format!("metadata key `{}`", k("type")),
            format!("rope scaling \"{other}\" is not supported (none, linear, yarn)"),
        )),
    }
}

/// qwen2, llama, qwen3: standard attention, dense MLP.
fn dense_config(gguf: &GgufFile, arch: &str) -> Result<Value> {
    let k = |s: &str| format!("{arch}.{s}");
    let mut out = Map::new();
    let (model_type, class) = match arch {
        "qwen2" => ("qwen2", "Qwen2ForCausalLM"),
        "llama" => ("llama", "LlamaForCausalLM"),
        _ => ("qwen3", "Qwen3ForCausalLM"),
    };
    out.insert("model_type".into(), json!(model_type));
    out.insert("architectures".into(), json!([class]));
    common(gguf, arch, &mut out)?;
    let hidden = gguf.get_usize(&k("embedding_length"))?;
    let heads = gguf.get_usize(&k("attention.head_count"))?;
    if heads == 0 {
        return Err(invalid(gguf, k("attention.head_count"), "must be positive"));
    }
    let kv_heads = gguf
        .get_opt::<usize>(&k("attention.head_count_kv"))?
        .unwrap_or(heads);
    out.insert("num_key_value_heads".into(), json!(kv_heads));

    // head_dim: key_length where the converter wrote it (qwen3 always; others when config.json had
    // head_dim), else hidden / heads. HF has one head_dim for keys and values.
    let key_len = gguf.get_opt::<usize>(&k("attention.key_length"))?;
    let value_len = gguf.get_opt::<usize>(&k("attention.value_length"))?;
    if let (Some(kl), Some(vl)) = (key_len, value_len) {
        if kl != vl {
            return Err(invalid(
                gguf,
                k("attention.value_length"),
                format!("{vl} differs from key_length {kl}; HF {model_type} has one head_dim"),
            ));
        }
    }
    let head_dim = key_len.unwrap_or(hidden / heads);
    if key_len.is_some() || arch == "qwen3" {
        out.insert("head_dim".into(), json!(head_dim));
    }
    if let Some(rope_dim) = gguf.get_opt::<usize>(&k("rope.dimension_count"))? {
        if rope_dim != head_dim {
            out.insert(
                "partial_rotary_factor".into(),
                num(rope_dim as f64 / head_dim as f64),
            );
        }
    }

    // Biases: qwen2 always has q/k/v biases (the loader knows); llama and qwen3 say so.
    if arch != "qwen2" {
        let has = |t: &str| gguf.tensor_opt(&format!("blk.0.{t}.bias")).is_some();
        out.insert(
            "attention_bias".into(),
            json!(has("attn_q") || has("attn_output")),
        );
        out.insert("mlp_bias".into(), json!(has("ffn_up")));
    }

    let max_pos = gguf.get_opt::<u64>(&k("context_length"))?;
    let mut scaling = rope_scaling_meta(gguf, arch, max_pos)?;
    if gguf.tensor_opt("rope_freqs.weight").is_some() {
        if arch != "llama" {
            return Err(invalid(
                gguf,
                "tensor `rope_freqs.weight`",
                format!("per-frequency rope factors are only understood for llama, not {arch}"),
            ));
        }
        if scaling.is_some() {
            return Err(invalid(
                gguf,
                "tensor `rope_freqs.weight`",
                "present together with rope.scaling metadata; only one rope scaling can apply",
            ));
        }
        let theta = float_opt(gguf, &k("rope.freq_base"))?.unwrap_or(10000.0);
        let rope_dim = gguf
            .get_opt::<usize>(&k("rope.dimension_count"))?
            .unwrap_or(head_dim);
        let factors = gguf.dequantize("rope_freqs.weight")?;
        scaling = llama3_from_factors(&factors, theta, rope_dim)
            .map_err(|msg| invalid(gguf, "tensor `rope_freqs.weight`", msg))?;
    }
    if let Some(s) = scaling {
        out.insert("rope_scaling".into(), s);
    }
    Ok(Value::Object(out))
}

/// The divisor llama3 rope scaling applies to the frequency with wavelength `wavelen`.
fn llama3_factor(wavelen: f64, factor: f64, low: f64, high: f64, original: f64) -> f64 {
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    if wavelen < high_wavelen {
        1.0
    } else if wavelen > low_wavelen {
        factor
    } else {
        let smooth = (original / wavelen - low) / (high - low);
        1.0 / ((1.0 - smooth) / factor + smooth)
    }
}

/// Solves HF's llama3 `rope_scaling` back from the converter's `rope_freqs` divisors.
///
/// Each divisor is 1 (short wavelengths), `factor` (long ones), or in between, where
/// `1/f = (1-s)/factor + s` with `s = (original/λ - low) / (high - low)`. Only the ratios
/// `original/low` and `high/low` shape the curve, so `low_freq_factor` is taken as 1 (Meta's
/// value; any other gives the same divisors). With two or more in-between wavelengths `original`
/// and `high` follow exactly; with one, `high` is taken as 4 (Meta's); with none, `high` is 4 and
/// `original` is the largest power of two, else the geometric middle, that puts each wavelength
/// in its band. The solution is recomputed and must reproduce every divisor to 1e-4 relative;
/// otherwise this is an error. All divisors 1 means no scaling (`Ok(None)`).
pub fn llama3_from_factors(
    factors: &[f32],
    theta: f64,
    rope_dim: usize,
) -> Result<Option<Value>, String> {
    if factors.len() * 2 != rope_dim {
        return Err(format!(
            "{} factors, but the rope dimension {rope_dim} needs {}",
            factors.len(),
            rope_dim / 2
        ));
    }
    if factors.iter().any(|&f| !f.is_finite() || f < 1.0 - 1e-6) {
        return Err("factors must be finite and at least 1".into());
    }
    let f: Vec<f64> = factors.iter().map(|&x| x as f64).collect();
    let wavelen: Vec<f64> = (0..f.len())
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / rope_dim as f64);
            2.0 * std::f64::consts::PI / freq
        })
        .collect();
    let factor = f.iter().cloned().fold(1.0, f64::max);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    if close(factor, 1.0) {
        return Ok(None);
    }
    let (mut high_band, mut low_band, mut mid) = (vec![], vec![], vec![]);
    for (i, &x) in f.iter().enumerate() {
        if close(x, 1.0) {
            high_band.push(i);
        } else if close(x, factor) {
            low_band.push(i);
        } else {
            mid.push(i);
        }
    }
    // s from a divisor, given the factor: 1/f = (1-s)/F + s  =>  s = (1/f - 1/F) / (1 - 1/F).
    let smooth = |i: usize| (1.0 / f[i] - 1.0 / factor) / (1.0 - 1.0 / factor);
    // With low = 1: s = (original/λ - 1) / (high - 1).
    let (original, high) = match mid.len() {
        0 => {
            let high = 4.0;
            // Need: every high-band λ < original/4, every low-band λ > original.
            let lo = high_band
                .iter()
                .map(|&i| wavelen[i] * high)
                .fold(0.0, f64::max);
            let hi = low_band
                .iter()
                .map(|&i| wavelen[i])
                .fold(f64::INFINITY, f64::min);
            let mut pick = None;
            let mut p = 1.0f64;
            while p < hi && p < 1e12 {
                if p > lo {
                    pick = Some(p);
                }
                p *= 2.0;
            }
            let original = match pick {
                Some(p) => p,
                None if hi.is_finite() && lo > 0.0 => (lo * hi).sqrt(),
                None => return Err("the bands leave original_max_position_embeddings open".into()),
            };
            (original, high)
        }
        1 => {
            let (i, high) = (mid[0], 4.0);
            (wavelen[i] * (smooth(i) * (high - 1.0) + 1.0), high)
        }
        _ => {
            // s_i = a/λ_i - b with a = original/(high-1), b = 1/(high-1): fit a line through the
            // two points furthest apart, then check all.
            let (i, j) = (mid[0], mid[mid.len() - 1]);
            let (xi, xj) = (1.0 / wavelen[i], 1.0 / wavelen[j]);
            let a = (smooth(i) - smooth(j)) / (xi - xj);
            let b = a * xi - smooth(i);
            if b <= 0.0 || a <= 0.0 {
                return Err("the in-between factors do not fit llama3 smoothing".into());
            }
            (a / b, 1.0 + 1.0 / b)
        }
    };
    let (original, high, factor) = (snap(original), snap(high), snap(factor));
    let low = 1.0;
    for (i, &x) in f.iter().enumerate() {
        let want = llama3_factor(wavelen[i], factor, low, high, original);
        if (want - x).abs() > 1e-4 * x {
            return Err(format!(
                "no llama3 rope scaling reproduces them (solved factor {factor}, low_freq_factor \
                 {low}, high_freq_factor {high}, original_max_position_embeddings {original}; \
                 factor {i} is {x}, that gives {want})"
            ));
        }
    }
    Ok(Some(json!({
        "rope_type": "llama3",
        "type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": original as u64,
    })))
}

/// deepseek2: multi-head latent attention, DeepSeekMoE.
fn deepseek_config(gguf: &GgufFile) -> Result<Value> {
    let arch = "deepseek2";
    let k = |s: &str| format!("{arch}.{s}");
    let mut out = Map::new();

    let gating = gguf.get_opt::<u32>(&k("expert_gating_func"))?;
    let scoring = match gating {
        None | Some(1) => "softmax",
        Some(2) => "sigmoid",
        Some(other) => {
            return Err(invalid(
                gguf,
                format!("metadata key `{}`", k("expert_gating_func")),
                format!("gating function {other} is not supported (1 = softmax, 2 = sigmoid)"),
            ))
        }
    };
    let has_bias = gguf
        .tensors()
        .iter()
        .any(|t| t.name.ends_with(".exp_probs_b.bias"));
    let v3 = scoring == "sigmoid" || has_bias;
    let (model_type, class) = if v3 {
        ("deepseek_v3", "DeepseekV3ForCausalLM")
    } else {
        ("deepseek_v2", "DeepseekV2ForCausalLM")
    };
    out.insert("model_type".into(), json!(model_type));
    out.insert("architectures".into(), json!([class]));
    common(gguf, arch, &mut out)?;
    let heads = gguf.get_usize(&k("attention.head_count"))?;
    // The converter writes head_count_kv = 1 (MQA over the latent); HF counts the heads.
    out.insert("num_key_value_heads".into(), json!(heads));
    out.insert("attention_bias".into(), json!(false));

    // Multi-head latent attention.
    let q_lora = gguf.get_opt::<usize>(&k("attention.q_lora_rank"))?;
    out.insert("q_lora_rank".into(), json!(q_lora));
    let kv_lora = gguf.get_usize(&k("attention.kv_lora_rank"))?;
    out.insert("kv_lora_rank".into(), json!(kv_lora));
    let rope_dim = gguf.get_usize(&k("rope.dimension_count"))?;
    // Since llama.cpp's MLA rework the per-head sizes are the *_mla keys and key_length /
    // value_length describe the latent cache; older files have only the latter, per head.
    let key_len = match gguf.get_opt::<usize>(&k("attention.key_length_mla"))? {
        Some(n) => n,
        None => gguf.get_usize(&k("attention.key_length"))?,
    };
    let v_dim = match gguf.get_opt::<usize>(&k("attention.value_length_mla"))? {
        Some(n) => n,
        None => gguf.get_usize(&k("attention.value_length"))?,
    };
    if key_len <= rope_dim {
        return Err(invalid(
            gguf,
            k("attention.key_length_mla"),
            format!("{key_len} leaves no non-rotary part beside rope.dimension_count {rope_dim}"),
        ));
    }
    out.insert("qk_nope_head_dim".into(), json!(key_len - rope_dim));
    out.insert("qk_rope_head_dim".into(), json!(rope_dim));
    out.insert("v_head_dim".into(), json!(v_dim));
    out.insert("rope_interleave".into(), json!(true));

    // DeepSeekMoE.
    let n_group = gguf
        .get_opt::<usize>(&k("expert_group_count"))?
        .unwrap_or(1);
    let topk_group = gguf
        .get_opt::<usize>(&k("expert_group_used_count"))?
        .unwrap_or(1);
    match gguf.get_opt::<usize>(&k("expert_count"))? {
        Some(n) if n > 0 => {
            out.insert("n_routed_experts".into(), json!(n));
            out.insert(
                "num_experts_per_tok".into(),
                json!(gguf.get_usize(&k("expert_used_count"))?),
            );
            out.insert(
                "moe_intermediate_size".into(),
                json!(gguf.get_usize(&k("expert_feed_forward_length"))?),
            );
        }
        _ => {
            out.insert("n_routed_experts".into(), Value::Null);
        }
    }
    out.insert(
        "n_shared_experts".into(),
        json!(gguf
            .get_opt::<usize>(&k("expert_shared_count"))?
            .unwrap_or(0)),
    );
    out.insert(
        "first_k_dense_replace".into(),
        json!(gguf
            .get_opt::<usize>(&k("leading_dense_block_count"))?
            .unwrap_or(0)),
    );
    out.insert(
        "routed_scaling_factor".into(),
        num(float_opt(gguf, &k("expert_weights_scale"))?.unwrap_or(1.0)),
    );
    out.insert(
        "norm_topk_prob".into(),
        json!(gguf
            .get_opt::<bool>(&k("expert_weights_norm"))?
            .unwrap_or(false)),
    );
    out.insert("scoring_func".into(), json!(scoring));
    out.insert("n_group".into(), json!(n_group));
    out.insert("topk_group".into(), json!(topk_group));
    let topk_method = if v3 {
        "noaux_tc"
    } else if n_group > 1 {
        "group_limited_greedy"
    } else {
        "greedy"
    };
    out.insert("topk_method".into(), json!(topk_method));
    out.insert("moe_layer_freq".into(), json!(1));

    let max_pos = gguf.get_opt::<u64>(&k("context_length"))?;
    if let Some(Value::Object(mut s)) = rope_scaling_meta(gguf, arch, max_pos)? {
        if s.get("type") == Some(&json!("yarn")) {
            if let Some(log_mul) = float_opt(gguf, &k("rope.scaling.yarn_log_multiplier"))? {
                let m = round7(log_mul / 0.1);
                s.insert("mscale".into(), num(m));
                s.insert("mscale_all_dim".into(), num(m));
            }
        }
        out.insert("rope_scaling".into(), Value::Object(s));
    }
    if gguf.tensor_opt("rope_freqs.weight").is_some() {
        return Err(invalid(
            gguf,
            "tensor `rope_freqs.weight`",
            "per-frequency rope factors are not understood for deepseek2",
        ));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::config::test_gguf::{open, root};

    fn original(dir: &str) -> Value {
        let text = std::fs::read_to_string(root().join("models").join(dir).join("config.json"))
            .expect("HF fixture config.json");
        serde_json::from_str(&text).unwrap()
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    /// The keys of the hub `config.json` that shape the forward pass (what src/model/config.rs
    /// reads, less fp8 quantisation and MTP, which a converted file does not have).
    const FORWARD_KEYS: &[&str] = &[
        "model_type",
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        "rope_theta",
        "partial_rotary_factor",
        "tie_word_embeddings",
        "attention_bias",
        "mlp_bias",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
        "hidden_act",
        "q_lora_rank",
        "kv_lora_rank",
        "qk_nope_head_dim",
        "qk_rope_head_dim",
        "v_head_dim",
        "rope_interleave",
        "n_routed_experts",
        "n_shared_experts",
        "num_experts_per_tok",
        "n_group",
        "topk_group",
        "routed_scaling_factor",
        "norm_topk_prob",
        "first_k_dense_replace",
        "moe_intermediate_size",
        "moe_layer_freq",
        "topk_method",
        "scoring_func",
    ];

    /// Every forward-pass key the original sets comes back equal; `rope_scaling` key by key.
    fn check_round_trip(gguf_file: &str, dir: &str) {
        let got = hf_config(&open(gguf_file)).unwrap_or_else(|e| panic!("{e}"));
        let want = original(dir);
        let mut compared = 0;
        for key in FORWARD_KEYS {
            if let Some(w) = want.get(*key) {
                let g = got.get(*key).unwrap_or(&Value::Null);
                assert!(
                    same(g, w),
                    "{gguf_file}: `{key}` is {g}, the original has {w}"
                );
                compared += 1;
            }
        }
        assert!(compared >= 14, "{gguf_file}: only {compared} keys compared");
        match want.get("rope_scaling").filter(|v| !v.is_null()) {
            None => assert!(
                got.get("rope_scaling").is_none(),
                "{gguf_file}: unexpected rope_scaling {}",
                got["rope_scaling"]
            ),
            Some(Value::Object(w)) => {
                let g = got
                    .get("rope_scaling")
                    .unwrap_or_else(|| panic!("{gguf_file}: rope_scaling missing"));
                for (key, wv) in w {
                    let gv = g.get(key).unwrap_or(&Value::Null);
                    assert!(
                        same(gv, wv),
                        "{gguf_file}: rope_scaling.{key} is {gv}, the original has {wv}"
                    );
                }
            }
            Some(other) => panic!("unexpected rope_scaling {other}"),
        }
    }

    #[test]
    fn qwen2_round_trips() {
        check_round_trip("qwen2.gguf", "qwen2");
        check_round_trip("qwen2.f16.gguf", "qwen2");
    }

    #[test]
    fn llama_round_trips_with_llama3_rope_from_rope_freqs() {
        check_round_trip("llama.gguf", "llama");
        let got = hf_config(&open("llama.gguf")).unwrap();
        assert_eq!(got["tie_word_embeddings"], json!(true));
        assert_eq!(got["rope_scaling"]["rope_type"], json!("llama3"));
    }

    #[test]
    fn qwen3_round_trips_with_head_dim() {
        check_round_trip("qwen3.gguf", "qwen3");
        assert_eq!(
            hf_config(&open("qwen3.gguf")).unwrap()["head_dim"],
            json!(32)
        );
    }

    #[test]
    fn deepseek_v2_round_trips() {
        check_round_trip("deepseek_v2_lite.gguf", "deepseek_v2_lite");
        check_round_trip("deepseek_v2_grouped.f16.gguf", "deepseek_v2_grouped");
        let got = hf_config(&open("deepseek_v2_lite.gguf")).unwrap();
        assert_eq!(got["q_lora_rank"], Value::Null);
        assert_eq!(got["model_type"], json!("deepseek_v2"));
    }

    #[test]
    fn deepseek_v3_round_trips() {
        check_round_trip("deepseek_v3_qlora.gguf", "deepseek_v3_qlora");
        let got = hf_config(&open("deepseek_v3_qlora.gguf")).unwrap();
        assert_eq!(got["model_type"], json!("deepseek_v3"));
        assert_eq!(got["rope_interleave"], json!(true));
    }

    /// The engine's own parser accepts every generated config (same rules as src/model/config.rs:
    /// the keys it needs are there, with the types it reads).
    #[test]
    fn generated_configs_have_loader_types() {
        for f in [
            "qwen2.gguf",
            "llama.gguf",
            "qwen3.gguf",
            "deepseek_v2_lite.gguf",
            "deepseek_v2_grouped.f16.gguf",
            "deepseek_v3_qlora.gguf",
        ] {
            let c = hf_config(&open(f)).unwrap();
            for key in [
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
            ] {
                assert!(
                    c[key].as_u64().is_some_and(|n| n > 0),
                    "{f}: {key} = {}",
                    c[key]
                );
            }
            assert!(c["model_type"].is_string());
            assert!(c["rms_norm_eps"].as_f64().is_some());
        }
    }

    fn factors_for(theta: f64, dim: usize, f: f64, lo: f64, hi: f64, orig: f64) -> Vec<f32> {
        (0..dim / 2)
            .map(|i| {
                let freq = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
                llama3_factor(2.0 * std::f64::consts::PI / freq, f, lo, hi, orig) as f32
            })
            .collect()
    }

    #[test]
    fn llama3_solved_from_many_in_between_factors() {
        // Llama 3.1's own numbers: head_dim 128, theta 500000, factor 8, low 1, high 4, 8192.
        let f = factors_for(500000.0, 128, 8.0, 1.0, 4.0, 8192.0);
        let s = llama3_from_factors(&f, 500000.0, 128).unwrap().unwrap();
        assert_eq!(s["factor"], json!(8.0));
        assert_eq!(s["low_freq_factor"], json!(1.0));
        assert_eq!(s["high_freq_factor"], json!(4.0));
        assert_eq!(s["original_max_position_embeddings"], json!(8192));
        // Llama 3.2's factor 32.
        let f = factors_for(500000.0, 64, 32.0, 1.0, 4.0, 8192.0);
        let s = llama3_from_factors(&f, 500000.0, 64).unwrap().unwrap();
        assert_eq!(s["factor"], json!(32.0));
        assert_eq!(s["original_max_position_embeddings"], json!(8192));
    }

    #[test]
    fn llama3_other_low_freq_factor_gives_the_same_divisors() {
        // low 2, high 8, original 16384 is the same curve as low 1, high 4, original 8192.
        let f = factors_for(500000.0, 128, 8.0, 2.0, 8.0, 16384.0);
        let s = llama3_from_factors(&f, 500000.0, 128).unwrap().unwrap();
        assert_eq!(s["high_freq_factor"], json!(4.0));
        assert_eq!(s["original_max_position_embeddings"], json!(8192));
    }

    #[test]
    fn llama3_rejects_factors_it_cannot_explain() {
        let mut f = factors_for(500000.0, 128, 8.0, 1.0, 4.0, 8192.0);
        f[3] = 2.5; // a short wavelength with a divisor
        assert!(llama3_from_factors(&f, 500000.0, 128).is_err());
        assert!(llama3_from_factors(&f[..10], 500000.0, 128).is_err());
        let ones = vec![1.0f32; 64];
        assert_eq!(llama3_from_factors(&ones, 500000.0, 128).unwrap(), None);
    }

    #[test]
    fn f32_values_read_as_their_decimal() {
        assert_eq!(f32_decimal(1e-6), 1e-6);
        assert_eq!(f32_decimal(1e-5), 1e-5);
        assert_eq!(round7(0.0707f32 as f64 / 0.1), 0.707);
        assert_eq!(snap(63.99997), 64.0);
    }

    #[test]
    fn unsupported_architecture_and_missing_key_are_named() {
        let path =
            std::env::temp_dir().join(format!("thinkbench-config-{}.gguf", std::process::id()));
        use test_gguf::Kv;
        test_gguf::write(
            &path,
            &[("general.architecture", Kv::Str("mamba".into()))],
            &[],
        );
        let e = hf_config(&GgufFile::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"mamba\" is not supported"), "{e}");
        // A deepseek2 file without its kv_lora_rank.
        let embd = ("token_embd.weight", vec![4, 8], vec![0.0; 32]);
        let mut kvs = vec![
            ("general.architecture", Kv::Str("deepseek2".into())),
            ("deepseek2.embedding_length", Kv::U32(4)),
            ("deepseek2.feed_forward_length", Kv::U32(8)),
            ("deepseek2.block_count", Kv::U32(1)),
            ("deepseek2.attention.head_count", Kv::U32(2)),
            ("deepseek2.attention.layer_norm_rms_epsilon", Kv::F32(1e-6)),
            ("deepseek2.rope.dimension_count", Kv::U32(2)),
        ];
        test_gguf::write(&path, &kvs, std::slice::from_ref(&embd));
        let e = hf_config(&GgufFile::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`deepseek2.attention.kv_lora_rank` is missing"),
            "{e}"
        );
        kvs.push(("deepseek2.attention.kv_lora_rank", Kv::U32(4)));
        kvs.push(("deepseek2.attention.key_length_mla", Kv::U32(6)));
        kvs.push(("deepseek2.attention.value_length_mla", Kv::U32(4)));
        kvs.push(("deepseek2.expert_gating_func", Kv::U32(2)));
        kvs.push(("deepseek2.expert_weights_norm", Kv::Bool(true)));
        test_gguf::write(&path, &kvs, std::slice::from_ref(&embd));
        let c = hf_config(&GgufFile::open(&path).unwrap()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c["model_type"], json!("deepseek_v3"));
        assert_eq!(c["qk_nope_head_dim"], json!(4));
        assert_eq!(c["n_routed_experts"], Value::Null);
        assert_eq!(c["rms_norm_eps"], json!(1e-6));
        assert_eq!(c["vocab_size"], json!(8));
        assert_eq!(c["tie_word_embeddings"], json!(true));
        // A dense file whose vocab_size disagrees with token_embd.
        test_gguf::write(
            &path,
            &[
                ("general.architecture", Kv::Str("qwen2".into())),
                ("qwen2.vocab_size", Kv::U32(9)),
            ],
            &[embd],
        );
        let e = hf_config(&GgufFile::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("qwen2.vocab_size") && e.contains("8 rows"),
            "{e}"
        );
        // The reader fixture tiny.gguf says qwen2 but has no token_embd.
        let g = GgufFile::open(root().join("gguf/tiny.gguf")).unwrap();
        let e = hf_config(&g).unwrap_err().to_string();
        assert!(e.contains("token_embd.weight"), "{e}");
        std::fs::remove_file(&path).ok();
    }
}

/// Writes small GGUF files for tests that need a layout no fixture has.
#[cfg(test)]
pub(crate) mod test_gguf {
    use std::path::{Path, PathBuf};

    use crate::gguf::GgufFile;

    /// `tests/fixtures`.
    pub fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// A llama.cpp-converted fixture, `tests/fixtures/gguf/models/FILE`.
    pub fn open(file: &str) -> GgufFile {
        GgufFile::open(root().join("gguf/models").join(file)).unwrap_or_else(|e| panic!("{e}"))
    }

    pub enum Kv {
        U32(u32),
        F32(f32),
        Bool(bool),
        Str(String),
        StrArr(Vec<String>),
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// GGUF v3, alignment 32, F32 tensors `(name, dims in ggml order, values)`.
    pub fn write(path: &Path, kvs: &[(&str, Kv)], tensors: &[(&str, Vec<u64>, Vec<f32>)]) {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((kvs.len() as u64).to_le_bytes());
        for (key, v) in kvs {
            string(&mut out, key);
            match v {
                Kv::U32(x) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::F32(x) => {
                    out.extend(6u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::Bool(x) => {
                    out.extend(7u32.to_le_bytes());
                    out.push(*x as u8);
                }
                Kv::Str(s) => {
                    out.extend(8u32.to_le_bytes());
                    string(&mut out, s);
                }
                Kv::StrArr(v) => {
                    out.extend(9u32.to_le_bytes());
                    out.extend(8u32.to_le_bytes());
                    out.extend((v.len() as u64).to_le_bytes());
                    for s in v {
                        string(&mut out, s);
                    }
                }
            }
        }
        let mut offset = 0u64;
        for (name, dims, values) in tensors {
            string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(0u32.to_le_bytes()); // F32
            out.extend(offset.to_le_bytes());
            offset += (values.len() as u64 * 4).div_ceil(32) * 32;
        }
        for (_, _, values) in tensors {
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
            for v in values {
                out.extend(v.to_le_bytes());
            }
        }
        std::fs::write(path, out).unwrap();
    }
}
