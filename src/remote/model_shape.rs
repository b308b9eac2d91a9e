//! What the routing a server returns needs to be read: the model's layer count, which layers
//! route, how many experts and how many per token. From the model's published config.json
//! (`--remote-config`), read leniently so that any MoE family's file works (DeepSeek-V2/V3/R1,
//! Kimi, Qwen-MoE, Mixtral), or from `thinkbench serve`'s model list.

use std::path::Path;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelShape {
    pub model_type: String,
    pub num_layers: usize,
    /// Layers with routed experts, ascending.
    pub moe_layers: Vec<usize>,
    pub n_experts: usize,
    pub top_k: usize,
    pub context: Option<usize>,
}

impl ModelShape {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--remote-config {}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("--remote-config {}: not JSON ({e})", path.display()))?;
        Self::from_config(&v).map_err(|e| format!("--remote-config {}: {e}", path.display()))
    }

    /// A Hugging Face config.json. Multimodal wrappers keep the language model's settings
    /// under `text_config`.
    pub fn from_config(v: &Value) -> Result<Self, String> {
        let v = v.get("text_config").filter(|t| t.is_object()).unwrap_or(v);
        let num = |k: &str| v.get(k).and_then(Value::as_u64).map(|n| n as usize);
        let num_layers = num("num_hidden_layers").ok_or("no `num_hidden_layers`")?;
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let n_experts = num("n_routed_experts")
            .or_else(|| num("num_experts"))
            .or_else(|| num("num_local_experts"))
            .unwrap_or(0);
        let top_k = num("num_experts_per_tok").unwrap_or(0);
        let moe_layers = if n_experts == 0 || top_k == 0 {
            Vec::new()
        } else {
            // DeepSeek: dense for the first `first_k_dense_replace` layers, then every
            // `moe_layer_freq`-th. Qwen-MoE: every `decoder_sparse_step`-th, minus `mlp_only_layers`.
            let first_dense = num("first_k_dense_replace").unwrap_or(0);
            let freq = num("moe_layer_freq")
                .or_else(|| num("decoder_sparse_step"))
                .unwrap_or(1)
                .max(1);
            let dense_only: Vec<usize> = v
                .get("mlp_only_layers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64().map(|n| n as usize))
                        .collect()
                })
                .unwrap_or_default();
            let qwen_style = v.get("decoder_sparse_step").is_some();
            (0..num_layers)
                .filter(|&i| i >= first_dense && !dense_only.contains(&i))
                .filter(|&i| {
                    if qwen_style {
                        (i + 1) % freq == 0
                    } else {
                        i % freq == 0
                    }
                })
                .collect()
        };
        Ok(Self {
            model_type,
            num_layers,
            moe_layers,
            n_experts,
            top_k,
            context: num("max_position_embeddings"),
        })
    }

    /// `thinkbench serve`'s model entry says it (`routing` beside `max_model_len`).
    pub fn from_served(entry: &Value) -> Option<Self> {
        let r = entry.get("routing")?;
        let num = |k: &str| r.get(k).and_then(Value::as_u64).map(|n| n as usize);
        Some(Self {
            model_type: r
                .get("model_type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            num_layers: num("num_layers")?,
            moe_layers: r
                .get("moe_layers")?
                .as_array()?
                .iter()
                .filter_map(|x| x.as_u64().map(|n| n as usize))
                .collect(),
            n_experts: num("n_experts")?,
            top_k: num("top_k")?,
            context: entry
                .get("max_model_len")
                .and_then(Value::as_u64)
                .map(|n| n as usize),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deepseek_v3_routes_from_layer_three() {
        // DeepSeek-V3/R1's published settings.
        let s = ModelShape::from_config(&json!({
            "model_type": "deepseek_v3", "num_hidden_layers": 61, "n_routed_experts": 256,
            "num_experts_per_tok": 8, "first_k_dense_replace": 3, "moe_layer_freq": 1,
            "max_position_embeddings": 163840
        }))
        .unwrap();
        assert_eq!(s.moe_layers.len(), 58);
        assert_eq!(s.moe_layers[0], 3);
        assert_eq!((s.n_experts, s.top_k, s.context), (256, 8, Some(163840)));
    }

    #[test]
    fn qwen_moe_and_dense_models() {
        let s = ModelShape::from_config(&json!({
            "model_type": "qwen3_moe", "num_hidden_layers": 4, "num_experts": 8,
            "num_experts_per_tok": 2, "decoder_sparse_step": 2, "mlp_only_layers": []
        }))
        .unwrap();
        assert_eq!(s.moe_layers, vec![1, 3]);
        let dense =
            ModelShape::from_config(&json!({"model_type": "qwen2", "num_hidden_layers": 28}))
                .unwrap();
        assert!(dense.moe_layers.is_empty());
        assert!(ModelShape::from_config(&json!({"model_type": "x"}))
            .unwrap_err()
            .contains("num_hidden_layers"));
    }
}
