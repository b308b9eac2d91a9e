//! `--quant`: a model whose linear layers are stored in llama.cpp's Q8_0 / Q4_0 blocks decodes
//! exactly as the float model whose weights are those blocks' values.
//!
//! The reference is independent of the quantized path under test: the float model, loaded as
//! usual, with each quantized weight overwritten by its dequantized values (`model::quant`'s
//! quantizer and dequantizer, checked byte for byte against gguf-py by their own fixture tests),
//! run through libtorch's f32 products. The quantized model runs the block kernels (decode) and
//! the float prefill kernels (prefill, the weight dequantized panel by panel) instead;
//! `--prefill int8`, which rounds the prompt's activations to 8 bits, is compared with that
//! exact prefill.

use tch::{Device, Tensor};
use thinkbench::model::quant::{self, Format};
use thinkbench::model::{DType, Model};

use crate::common::*;

/// `model`'s float weight `name` replaced by the values its `format` blocks hold.
fn dequantized_in_place(model: &Model, name: &str, format: Format) {
    let vars = model.vars.variables();
    let mut w = vars[name].shallow_clone();
    let values: Vec<f32> = Vec::try_from(w.reshape([-1])).unwrap();
    let bytes = quant::quantize(format, &values).unwrap();
    let mut back = vec![0f32; values.len()];
    quant::dequantize_row(format, &bytes, &mut back).unwrap();
    tch::no_grad(|| w.copy_(&Tensor::from_slice(&back).view(w.size().as_slice())));
}

fn check(dir: &std::path::Path, format: Format, min_quantized: usize) {
    let q = Model::load_quantized(dir, DType::F32, Device::Cpu, Some(format)).unwrap();
    assert!(
        q.quantized_weights.len() >= min_quantized,
        "{}: only {:?} quantized",
        name(dir),
        q.quantized_weights
    );
    let reference = Model::load(dir, DType::F32, Device::Cpu).unwrap();
    for w in q.quantized_weights.keys() {
        dequantized_in_place(&reference, w, format);
    }
    // A prompt longer than the kernels' row limit, so prefill takes the float prefill kernels
    // and decode the block kernels.
    let prompt: Vec<u32> = (0..40).map(|i| 3 + (i * 7) % 200).collect();
    let what = format!("{} {format:?}", name(dir));
    let (got, want) = (
        greedy_traced(&q, &prompt, 24),
        greedy_traced(&reference, &prompt, 24),
    );
    assert_same_run(&got, &want, 2e-3, &what);
    assert_integer_prefill_close(&q, &prompt, INTEGER_PREFILL_TOL, &what);
}

#[test]
fn quantized_builtin_model_decodes_as_its_dequantized_weights() {
    let dir = repo().join("models/thinkbench-tiny");
    for format in [Format::Q8_0, Format::Q4_0] {
        // 4 layers: q_a/q_b/kv_a/o projections, one dense MLP, 3 × (8 + 1) experts, the head.
        check(&dir, format, 80);
    }
}

#[test]
fn quantized_dense_model_with_biases_decodes_as_its_dequantized_weights() {
    // qwen2: q/k/v biases, added in f32 after the block products.
    check(&models_dir().join("qwen2"), Format::Q8_0, 8);
}

#[test]
fn quant_is_refused_off_the_cpu_and_named_when_unknown() {
    let err = thinkbench::model::parse_quant("q5_k")
        .unwrap_err()
        .to_string();
    assert!(err.contains("q5_k") && err.contains("q8_0"), "{err}");
    if tch::Cuda::is_available() {
        let dir = models_dir().join("qwen2");
        let e = Model::load_quantized(&dir, DType::F32, Device::Cuda(0), Some(Format::Q8_0));
        assert!(e.is_err());
    }
}
