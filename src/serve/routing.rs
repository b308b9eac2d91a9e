//! Routed experts as SGLang returns them, in `sglext`:
//!
//! - `routed_experts`: base64 of little-endian int32, flattened `[tokens, num_layers, top_k]`:
//!   one row per prompt token and per generated token but the last (the last never went
//!   through the model), every decoder layer in order, dense layers (absent from a token's
//!   routing) all -1; a MoE layer that chose fewer than `top_k` experts is padded with -1.
//! - thinkbench's extension beside it: `routed_weights`, base64 of little-endian float32 of the
//!   same shape (the factor each chosen expert's output was multiplied by; 0 where the expert is
//!   -1), and `routed_experts_shape: [tokens, num_layers, top_k]`.
//!
//! Placement follows SGLang's OpenAI entry points (`serving_chat.py` and
//! `serving_completions.py` under `python/sglang/srt/entrypoints/openai/`): `sglext` sits on
//! the response, not on a choice ("sglext is at response level"), and with several choices it
//! carries the first one's routing. Non-streamed it is a field of the response; streamed it is
//! one chunk with `choices: []` after the finish chunks and before the usage chunk. With
//! `n > 1`, thinkbench adds `sglext.choices`: every choice's routing, by `index`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::trace::{LayerRouting, PromptToken, TokenRecord};

/// The table's shape: decoder layers and experts per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoutingShape {
    pub layers: usize,
    pub top_k: usize,
}

/// The `sglext` object for a request's prompt and its rows.
pub(crate) fn sglext(
    shape: RoutingShape,
    prompt: &[PromptToken],
    rows: &[&[TokenRecord]],
) -> Value {
    let mut ext = match rows.first() {
        Some(first) => encode(shape, prompt, first),
        None => encode(shape, prompt, &[]),
    };
    if rows.len() > 1 {
        let choices: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(index, row)| {
                let mut c = encode(shape, prompt, row);
                c["index"] = json!(index);
                c
            })
            .collect();
        ext["choices"] = Value::Array(choices);
    }
    ext
}

/// `{routed_experts, routed_weights, routed_experts_shape}` for the prompt and one row.
pub(crate) fn encode(shape: RoutingShape, prompt: &[PromptToken], row: &[TokenRecord]) -> Value {
    let fed = &row[..row.len().saturating_sub(1)];
    let per_token: Vec<&[LayerRouting]> = prompt
        .iter()
        .map(|t| t.routing.as_slice())
        .chain(fed.iter().map(|t| t.routing.as_slice()))
        .collect();
    let (experts, weights) = table(shape, &per_token);
    json!({
        "routed_experts": STANDARD.encode(experts),
        "routed_weights": STANDARD.encode(weights),
        "routed_experts_shape": [per_token.len(), shape.layers, shape.top_k],
    })
}

/// The flattened tables as little-endian bytes: experts (i32) and weights (f32).
fn table(shape: RoutingShape, per_token: &[&[LayerRouting]]) -> (Vec<u8>, Vec<u8>) {
    let cells = per_token.len() * shape.layers * shape.top_k;
    let mut experts = vec![-1i32; cells];
    let mut weights = vec![0f32; cells];
    for (t, routing) in per_token.iter().enumerate() {
        for layer in routing.iter().filter(|l| l.layer < shape.layers) {
            let at = (t * shape.layers + layer.layer) * shape.top_k;
            for (k, (&e, &w)) in layer
                .experts
                .iter()
                .zip(&layer.weights)
                .take(shape.top_k)
                .enumerate()
            {
                experts[at + k] = i32::try_from(e).unwrap_or(-1);
                weights[at + k] = w;
            }
        }
    }
    let experts = experts.iter().flat_map(|e| e.to_le_bytes()).collect();
    let weights = weights.iter().flat_map(|w| w.to_le_bytes()).collect();
    (experts, weights)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Decodes a base64 int32 table (for tests here and in the HTTP tests).
    pub(crate) fn decode_i32(b64: &str) -> Vec<i32> {
        let bytes = STANDARD.decode(b64).unwrap();
        bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub(crate) fn decode_f32(b64: &str) -> Vec<f32> {
        let bytes = STANDARD.decode(b64).unwrap();
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn routed(layer: usize, experts: &[u32], weights: &[f32]) -> LayerRouting {
        LayerRouting {
            layer,
            experts: experts.to_vec(),
            weights: weights.to_vec(),
        }
    }

    fn gen(routing: Vec<LayerRouting>) -> TokenRecord {
        TokenRecord {
            id: 0,
            text: String::new(),
            logprob: 0.0,
            top: Vec::new(),
            entropy: 0.0,
            phase: crate::trace::Phase::Answer,
            routing,
            forced: false,
        }
    }

    #[test]
    fn rows_for_prompt_and_fed_tokens_with_dense_layers_as_minus_one() {
        let shape = RoutingShape {
            layers: 3,
            top_k: 2,
        };
        let prompt = vec![PromptToken {
            id: 1,
            routing: vec![routed(1, &[3, 4], &[0.5, 0.25]), routed(2, &[5], &[1.0])],
        }];
        let row = vec![
            gen(vec![routed(2, &[7, 0], &[0.75, 0.125])]),
            gen(Vec::new()),
        ];
        let v = encode(shape, &prompt, &row);
        assert_eq!(v["routed_experts_shape"], json!([2, 3, 2]));
        assert_eq!(
            decode_i32(v["routed_experts"].as_str().unwrap()),
            vec![-1, -1, 3, 4, 5, -1, /* token 2 */ -1, -1, -1, -1, 7, 0]
        );
        assert_eq!(
            decode_f32(v["routed_weights"].as_str().unwrap()),
            vec![0.0, 0.0, 0.5, 0.25, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.75, 0.125]
        );
        let ext = sglext(shape, &prompt, &[&row, &row[..1]]);
        assert_eq!(ext["routed_experts"], v["routed_experts"]);
        assert_eq!(ext["choices"][1]["routed_experts_shape"], json!([1, 3, 2]));
        assert_eq!(ext["choices"][1]["index"], 1);
        assert!(sglext(shape, &prompt, &[&row]).get("choices").is_none());
    }
}
