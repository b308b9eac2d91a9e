//! A quantized GGUF runs exactly as the same model with its weights dequantized by gguf-py.
//!
//! Fixtures (`scripts/make_gguf_quant_fixtures.py`, `tests/fixtures/gguf/quant/README.md`):
//! `qwen2.q8_0.gguf`, written by llama.cpp's own converter with `--outtype q8_0`, and
//! `deepseek_v2_lite.q4_0.gguf`, the converter's F32 file with its matrices and stacked experts
//! quantized by gguf-py's reference Q4_0 quantizer, and `qwen2_k.q4_k_m.gguf`, a qwen2 whose rows
//! are multiples of 256 quantized to Q4_K_M by llama.cpp's own quantizer (Q4_K and Q6_K tensors).
//! Each comes with a `*.dequant.gguf`: the same file with every quantized tensor replaced by
//! `gguf.quants.dequantize` of its bytes, stored F32.
//!
//! The reference is independent of what is under test: its values come from gguf-py's numpy
//! dequantizer, not from `model::quant` or `gguf::dequant`, and it runs through libtorch's f32
//! products. The quantized file runs the stored blocks as they are: the prompt's dense products
//! (more rows than the kernels take) through our float prefill kernels, panel by panel (the
//! exact prefill; `--prefill int8`, which rounds the prompt's activations to 8 bits, is compared
//! with it apart), decode (and experts that get few prompt rows) through the Q8_0 / Q4_0 block
//! kernels; its embedding (Q8_0 in qwen2) goes through our GGUF dequantizer (qwen2_k's Q4_K
//! embedding through the same K-block code the kernels' formats use). A wrong block layout,
//! scale, nibble order or expert offset in any of them changes the tokens, the log-probabilities
//! (checked within 2e-3, the tolerance of `quant.rs`) or the experts chosen.

use std::path::PathBuf;

use tch::Device;
use thinkbench::model::{DType, Model};

use crate::common::*;

const TOL: f32 = 2e-3;

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/gguf/quant").join(name)
}

/// (weights, bytes) per block of each format, from ggml's layouts.
const Q8_0: (usize, usize) = (32, 34);
const Q4_0: (usize, usize) = (32, 18);
const Q4_K: (usize, usize) = (256, 144);
const Q6_K: (usize, usize) = (256, 210);

/// 24 prompt ids (more rows than the block kernels take, so prefill dequantizes and multiplies),
/// then 16 greedy tokens (one row each: the block kernels). `expected`: the weights kept as
/// stored blocks, each with its format's (weights, bytes) per block.
fn same_run(quantized: &str, expected: &[(String, (usize, usize))], moe: bool) {
    let (qpath, rpath) = (
        fixture(quantized),
        fixture(&quantized.replace(".gguf", ".dequant.gguf")),
    );
    let q = Model::load(&qpath, DType::F32, Device::Cpu).unwrap();
    let r = Model::load(&rpath, DType::F32, Device::Cpu).unwrap();

    let kept: Vec<String> = q.quantized_weights.keys().cloned().collect(); // sorted: a BTreeMap
    let mut want: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert_eq!(kept, want, "{quantized}: the weights run as stored blocks");
    assert!(
        r.quantized_weights.is_empty(),
        "{quantized}: the reference is all F32, yet {:?} are quantized",
        r.quantized_weights
    );
    // Each weight's blocks are the stored format's for its shape (the reference holds the same
    // weight as an F32 variable).
    let vars = r.vars.variables();
    for (name, (per_block, block_bytes)) in expected {
        let (numel, bytes) = (vars[name].numel(), q.quantized_weights[name]);
        assert_eq!(
            bytes,
            numel / per_block * block_bytes,
            "{quantized}: {name}: {numel} weights in {bytes} bytes"
        );
    }

    let prompt: Vec<u32> = (0..24).map(|i| 3 + (i * 37) % 290).collect();
    let (a, b) = (
        greedy_traced(&q, &prompt, 16),
        greedy_traced(&r, &prompt, 16),
    );
    assert_same_run(&a, &b, TOL, quantized);
    assert_integer_prefill_close(&q, &prompt, INTEGER_PREFILL_TOL, quantized);
    // Beyond the chosen tokens: every top-5 alternative, and routing really traced (so the
    // comparison above had experts to compare) exactly when the model is an MoE.
    let (ga, gb) = (&a.completions[0].tokens, &b.completions[0].tokens);
    assert_eq!(ga.len(), 16, "{quantized}: generated length");
    for (i, (x, y)) in ga.iter().zip(gb).enumerate() {
        assert_eq!(x.top.len(), 5, "{quantized}: token {i}: top-5");
        let last = y.top.last().unwrap().1;
        for &(id, lp) in &x.top {
            let other = y.top.iter().find(|t| t.0 == id).map_or(last, |t| t.1);
            assert!(
                (lp - other).abs() <= TOL,
                "{quantized}: token {i}: alternative {id}: logprob {lp} against {other}"
            );
        }
        assert_eq!(
            x.routing.is_empty(),
            !moe,
            "{quantized}: token {i} routing traced"
        );
    }
    for (i, x) in a.prompt.iter().enumerate() {
        assert_eq!(
            x.routing.is_empty(),
            !moe,
            "{quantized}: prompt token {i} routing traced"
        );
    }
}

#[test]
fn q8_0_gguf_from_llama_cpp_runs_as_gguf_py_dequantized() {
    // The converter made every matrix Q8_0 (norms and biases stay F32): 7 projections in each of
    // the 2 layers and the untied head run as blocks; the Q8_0 embedding is dequantized at load.
    let mut want = vec![("lm_head.weight".to_string(), Q8_0)];
    for l in 0..2 {
        for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            want.push((format!("model.layers.{l}.self_attn.{p}.weight"), Q8_0));
        }
        for p in ["gate_proj", "up_proj", "down_proj"] {
            want.push((format!("model.layers.{l}.mlp.{p}.weight"), Q8_0));
        }
    }
    assert_eq!(want.len(), 15);
    same_run("qwen2.q8_0.gguf", &want, false);
}

#[test]
fn q4_0_moe_gguf_runs_as_gguf_py_dequantized() {
    // Q4_0 wherever ne[0] is a multiple of 32: q / kv_a / o in every layer, layer 0's dense MLP,
    // the gate and up projections of the 8 stacked experts (slices of one tensor each) and of the
    // shared experts in layers 1 and 2, and the head. Expert and shared `down` (ne[0] 8 and 16),
    // kv_b (from attn_k_b / attn_v_b, ne[0] 16), the router and the embedding stay F32.
    let mut want = vec![("lm_head.weight".to_string(), Q4_0)];
    for l in 0..3 {
        for p in ["q_proj", "kv_a_proj_with_mqa", "o_proj"] {
            want.push((format!("model.layers.{l}.self_attn.{p}.weight"), Q4_0));
        }
    }
    for p in ["gate_proj", "up_proj", "down_proj"] {
        want.push((format!("model.layers.0.mlp.{p}.weight"), Q4_0));
    }
    for l in 1..3 {
        for p in ["gate_proj", "up_proj"] {
            for e in 0..8 {
                want.push((format!("model.layers.{l}.mlp.experts.{e}.{p}.weight"), Q4_0));
            }
            want.push((
                format!("model.layers.{l}.mlp.shared_experts.{p}.weight"),
                Q4_0,
            ));
        }
    }
    assert_eq!(want.len(), 49);
    same_run("deepseek_v2_lite.q4_0.gguf", &want, true);
}

#[test]
fn q4_k_m_gguf_from_llama_cpp_quantizer_runs_as_gguf_py_dequantized() {
    // llama.cpp's Q4_K_M choice for this 2-layer model (printed by the fixture script): Q4_K for
    // every matrix except the head and, in the last layer, attn_v and ffn_down, which get Q6_K.
    // The Q4_K embedding is dequantized at load; norms and q/k/v biases are F32.
    let mut want = vec![("lm_head.weight".to_string(), Q6_K)];
    for l in 0..2 {
        for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            let f = if l == 1 && p == "v_proj" { Q6_K } else { Q4_K };
            want.push((format!("model.layers.{l}.self_attn.{p}.weight"), f));
        }
        for p in ["gate_proj", "up_proj", "down_proj"] {
            let f = if l == 1 && p == "down_proj" {
                Q6_K
            } else {
                Q4_K
            };
            want.push((format!("model.layers.{l}.mlp.{p}.weight"), f));
        }
    }
    assert_eq!(want.len(), 15);
    same_run("qwen2_k.q4_k_m.gguf", &want, false);
}
