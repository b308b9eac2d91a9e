//! Hugging Face weight names for the tensors of a GGUF file written by llama.cpp's converter.
//!
//! The loader asks for weights by HF name (`model.layers.3.self_attn.q_proj.weight`). A
//! [`NameMap`] answers each with a [`Source`]: which GGUF tensor(s) hold it and the transform that
//! gives the HF tensor (HF shape, row-major), as plain data. [`materialize`] carries it out.
//!
//! What the converter changes, and so what is undone here:
//! - names: `blk.N.attn_q.weight` for `model.layers.N.self_attn.q_proj.weight`, and so on
//!   (the table is in [`layer_name`]);
//! - shape order: GGUF dims are ggml's, fastest first, so a `[out, in]` HF matrix has dims
//!   `[in, out]`; its data is already row-major `[out, in]`, and [`Source::Whole`] just reverses
//!   the dims;
//! - llama only: the rows of `q_proj` and `k_proj` (weights and biases) are permuted within each
//!   head from HF's two rotary halves to llama.cpp's interleaved pairs; [`Source::Unpermute`]
//!   puts them back (qwen2/qwen3/deepseek2 files are not permuted);
//! - MoE experts are stacked into one 3-D tensor per projection (`ffn_gate_exps`, dims
//!   `[in, out, n_expert]`); [`Source::Slice`] takes one expert's matrix, reading only its bytes;
//! - deepseek2: current converters split MLA's `kv_b_proj` into `attn_k_b` (each head's key
//!   block, transposed to `[kv_lora_rank, qk_nope]`) and `attn_v_b` (each head's value block
//!   `[v_head_dim, kv_lora_rank]`); [`Source::KvB`] interleaves them back per head. Older files
//!   keep `attn_kv_b` whole.
//!
//! Not mapped: `rope_freqs.weight` (hyperparameters, read by [`super::config`]; listed in
//! [`super::config::CONFIG_TENSORS`]) and anything unknown, which [`NameMap::unused`] lists.
//! `lm_head.weight` is absent when the file has no `output.weight` (tied embeddings).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;

use super::config::{invalid, CONFIG_TENSORS};
use super::{dequantize_into, DequantError, Error, ErrorKind, GgufFile, Result, TensorInfo};

/// Where one HF tensor comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One GGUF tensor as stored; the HF shape is its dims reversed.
    Whole(String),
    /// Matrix `index` of a 3-D stacked tensor (dims `[cols, rows, n]`): HF shape `[rows, cols]`.
    Slice { name: String, index: usize },
    /// llama's q/k projection (weight `[rows, cols]` or bias `[rows]`) whose rows the converter
    /// permuted within each of `n_head` heads; the HF tensor has them back in order.
    Unpermute { name: String, n_head: usize },
    /// MLA's `kv_b_proj` `[n_head * (qk_nope + v_head_dim), kv_lora_rank]`, from `k_b` (dims
    /// `[qk_nope, kv_lora_rank, n_head]`) and `v_b` (dims `[kv_lora_rank, v_head_dim, n_head]`).
    KvB { k_b: String, v_b: String },
}

impl Source {
    /// The GGUF tensors this source reads.
    pub fn tensors(&self) -> Vec<&str> {
        match self {
            Source::Whole(n)
            | Source::Slice { name: n, .. }
            | Source::Unpermute { name: n, .. } => {
                vec![n]
            }
            Source::KvB { k_b, v_b } => vec![k_b, v_b],
        }
    }
}

/// The HF names a GGUF file provides, each with its [`Source`].
#[derive(Debug, Clone)]
pub struct NameMap {
    arch: String,
    entries: BTreeMap<String, Source>,
    used: BTreeSet<String>,
    unused: Vec<String>,
}

/// The architectures whose names are known.
const ARCHS: &[&str] = &["qwen2", "llama", "qwen3", "deepseek2"];

impl NameMap {
    /// Builds the map from the tensors `gguf` holds. Fails on an architecture other than qwen2,
    /// llama, qwen3, deepseek2, or on tensors whose layout does not fit (a stacked expert tensor
    /// that is not 3-D, a k_b without its v_b, …).
    pub fn new(gguf: &GgufFile) -> Result<NameMap> {
        let arch = gguf.architecture()?.to_string();
        if !ARCHS.contains(&arch.as_str()) {
            return Err(invalid(
                gguf,
                "general.architecture",
                format!(
                    "no weight names are known for \"{arch}\" (qwen2, llama, qwen3, deepseek2)"
                ),
            ));
        }
        let permuted = arch == "llama";
        let (n_head, n_head_kv) = if permuted {
            let h = gguf.get_usize(&format!("{arch}.attention.head_count"))?;
            let kv = gguf
                .get_opt::<usize>(&format!("{arch}.attention.head_count_kv"))?
                .unwrap_or(h);
            (h, kv)
        } else {
            (0, 0)
        };

        let mut entries = BTreeMap::new();
        let mut add = |hf: String, src: Source| -> Result<()> {
            if let Some(old) = entries.insert(hf.clone(), src) {
                return Err(invalid(
                    gguf,
                    format!("weight `{hf}`"),
                    format!("two GGUF sources: {:?}", old.tensors()),
                ));
            }
            Ok(())
        };

        for t in gguf.tensors() {
            let name = t.name.as_str();
            match name {
                "token_embd.weight" => add("model.embed_tokens.weight".into(), whole(name))?,
                "output_norm.weight" => add("model.norm.weight".into(), whole(name))?,
                "output.weight" => add("lm_head.weight".into(), whole(name))?,
                _ => {}
            }
            let Some((layer, rest)) = split_block(name) else {
                continue;
            };
            let p = format!("model.layers.{layer}");
            let Some((stem, kind)) = rest.rsplit_once('.') else {
                continue;
            };
            if kind != "weight" && kind != "bias" {
                continue;
            }
            // Stacked experts.
            if let Some(proj) = stem
                .strip_suffix("_exps")
                .and_then(|s| s.strip_prefix("ffn_"))
            {
                if !matches!(proj, "gate" | "up" | "down") || kind != "weight" {
                    continue;
                }
                if t.dims.len() != 3 {
                    return Err(invalid(
                        gguf,
                        format!("tensor `{name}`"),
                        format!("stacked experts need 3 dims, found {:?}", t.dims),
                    ));
                }
                for e in 0..t.dims[2] as usize {
                    add(
                        format!("{p}.mlp.experts.{e}.{proj}_proj.weight"),
                        Source::Slice {
                            name: name.into(),
                            index: e,
                        },
                    )?;
                }
                continue;
            }
            // MLA's split kv_b: k_b brings its v_b along.
            if stem == "attn_v_b" {
                continue;
            }
            if stem == "attn_k_b" {
                let v_b = format!("blk.{layer}.attn_v_b.{kind}");
                if gguf.tensor_opt(&v_b).is_none() {
                    return Err(invalid(
                        gguf,
                        format!("tensor `{name}`"),
                        format!("has no `{v_b}` to rebuild kv_b_proj with"),
                    ));
                }
                if gguf
                    .tensor_opt(&format!("blk.{layer}.attn_kv_b.{kind}"))
                    .is_some()
                {
                    continue; // the whole kv_b is there too; it wins, k_b/v_b are reported unused
                }
                check_kv_b(gguf, t, gguf.tensor(&v_b)?)?;
                add(
                    format!("{p}.self_attn.kv_b_proj.{kind}"),
                    Source::KvB {
                        k_b: name.into(),
                        v_b,
                    },
                )?;
                continue;
            }
            let Some(hf) = layer_name(stem) else {
                continue;
            };
            let hf_name = if stem == "exp_probs_b" {
                // The converter renames the correction bias's `.weight`-less name to `.bias`.
                format!("{p}.{hf}")
            } else {
                format!("{p}.{hf}.{kind}")
            };
            let src = match stem {
                "attn_q" if permuted => Source::Unpermute {
                    name: name.into(),
                    n_head,
                },
                "attn_k" if permuted => Source::Unpermute {
                    name: name.into(),
                    n_head: n_head_kv,
                },
                _ => whole(name),
            };
            add(hf_name, src)?;
        }

        let used: BTreeSet<String> = entries
            .values()
            .flat_map(|s| s.tensors().into_iter().map(String::from))
            .collect();
        let unused = gguf
            .tensors()
            .iter()
            .map(|t| t.name.clone())
            .filter(|n| !used.contains(n) && !CONFIG_TENSORS.contains(&n.as_str()))
            .collect();
        Ok(NameMap {
            arch,
            entries,
            used,
            unused,
        })
    }

    /// `general.architecture`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Where the HF weight `hf_name` comes from, if the file has it.
    pub fn source(&self, hf_name: &str) -> Option<&Source> {
        self.entries.get(hf_name)
    }

    pub fn contains(&self, hf_name: &str) -> bool {
        self.entries.contains_key(hf_name)
    }

    /// Every HF name the file provides, sorted.
    pub fn hf_names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// GGUF tensors that no HF name reads (and that are not hyperparameters), in file order.
    pub fn unused(&self) -> &[String] {
        &self.unused
    }

    /// Whether some HF name reads the GGUF tensor `gguf_name`.
    pub fn is_used(&self, gguf_name: &str) -> bool {
        self.used.contains(gguf_name)
    }
}

fn whole(name: &str) -> Source {
    Source::Whole(name.into())
}

/// `blk.N.rest` → (N, rest).
fn split_block(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

/// The HF module path (under `model.layers.N.`) of a per-layer GGUF tensor stem.
pub fn layer_name(stem: &str) -> Option<&'static str> {
    Some(match stem {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        // Standard attention.
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        // Multi-head latent attention.
        "attn_q_a" => "self_attn.q_a_proj",
        "attn_q_a_norm" => "self_attn.q_a_layernorm",
        "attn_q_b" => "self_attn.q_b_proj",
        "attn_kv_a_mqa" => "self_attn.kv_a_proj_with_mqa",
        "attn_kv_a_norm" => "self_attn.kv_a_layernorm",
        "attn_kv_b" => "self_attn.kv_b_proj",
        // Dense MLP.
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        // DeepSeekMoE router and shared experts.
        "ffn_gate_inp" => "mlp.gate",
        "exp_probs_b" => "mlp.gate.e_score_correction_bias",
        "ffn_gate_shexp" => "mlp.shared_experts.gate_proj",
        "ffn_up_shexp" => "mlp.shared_experts.up_proj",
        "ffn_down_shexp" => "mlp.shared_experts.down_proj",
        _ => return None,
    })
}

fn check_kv_b(gguf: &GgufFile, k_b: &TensorInfo, v_b: &TensorInfo) -> Result<()> {
    let ok = k_b.dims.len() == 3
        && v_b.dims.len() == 3
        && k_b.dims[1] == v_b.dims[0] // kv_lora_rank
        && k_b.dims[2] == v_b.dims[2]; // heads
    if ok {
        Ok(())
    } else {
        Err(invalid(
            gguf,
            format!("tensors `{}` and `{}`", k_b.name, v_b.name),
            format!(
                "dims {:?} and {:?} are not [qk_nope, kv_lora_rank, heads] and \
                 [kv_lora_rank, v_head_dim, heads]",
                k_b.dims, v_b.dims
            ),
        ))
    }
}

fn shape_error(gguf: &GgufFile, name: &str, msg: String) -> Error {
    invalid(gguf, format!("tensor `{name}`"), msg)
}

/// The HF shape `source` materializes to, from the header alone.
pub fn hf_shape(gguf: &GgufFile, source: &Source) -> Result<Vec<usize>> {
    let rev = |t: &TensorInfo| t.dims.iter().rev().map(|&d| d as usize).collect::<Vec<_>>();
    match source {
        Source::Whole(name) => Ok(rev(gguf.tensor(name)?)),
        Source::Unpermute { name, n_head } => {
            let t = gguf.tensor(name)?;
            let shape = rev(t);
            let rows = shape.first().copied().unwrap_or(0);
            if shape.is_empty() || shape.len() > 2 || *n_head == 0 || rows % (2 * n_head) != 0 {
                return Err(shape_error(
                    gguf,
                    name,
                    format!("shape {shape:?} cannot be split into {n_head} heads of rotary pairs"),
                ));
            }
            Ok(shape)
        }
        Source::Slice { name, index } => {
            let t = gguf.tensor(name)?;
            if t.dims.len() != 3 || *index as u64 >= t.dims[2] {
                return Err(shape_error(
                    gguf,
                    name,
                    format!("no matrix {index} in dims {:?}", t.dims),
                ));
            }
            Ok(vec![t.dims[1] as usize, t.dims[0] as usize])
        }
        Source::KvB { k_b, v_b } => {
            let (k, v) = (gguf.tensor(k_b)?, gguf.tensor(v_b)?);
            check_kv_b(gguf, k, v)?;
            let (nope, rank, heads, v_dim) = (k.dims[0], k.dims[1], k.dims[2], v.dims[1]);
            Ok(vec![(heads * (nope + v_dim)) as usize, rank as usize])
        }
    }
}

/// The HF tensor `source` stands for: its shape and its values (row-major, f32).
pub fn materialize(gguf: &GgufFile, source: &Source) -> Result<(Vec<usize>, Vec<f32>)> {
    let shape = hf_shape(gguf, source)?;
    let data = match source {
        Source::Whole(name) => gguf.dequantize(name)?,
        Source::Unpermute { name, n_head } => {
            let stored = gguf.dequantize(name)?;
            let rows = shape[0];
            let cols = stored.len() / rows;
            unpermute_rows(&stored, rows, cols, *n_head)
        }
        Source::Slice { name, index } => read_slice(gguf, gguf.tensor(name)?, *index)?,
        Source::KvB { k_b, v_b } => {
            let (k, v) = (gguf.tensor(k_b)?, gguf.tensor(v_b)?);
            let (nope, rank, heads, v_dim) = (
                k.dims[0] as usize,
                k.dims[1] as usize,
                k.dims[2] as usize,
                v.dims[1] as usize,
            );
            let (kd, vd) = (gguf.dequantize(k_b)?, gguf.dequantize(v_b)?);
            let mut out = vec![0.0f32; heads * (nope + v_dim) * rank];
            for h in 0..heads {
                let base = h * (nope + v_dim);
                for r in 0..rank {
                    // k_b[h][r][i], stored at i + nope * (r + rank * h)
                    for i in 0..nope {
                        out[(base + i) * rank + r] = kd[i + nope * (r + rank * h)];
                    }
                }
                // v_b[h][j][r], stored at r + rank * (j + v_dim * h): already row-major per head.
                for j in 0..v_dim {
                    let src = rank * (j + v_dim * h);
                    let dst = (base + nope + j) * rank;
                    out[dst..dst + rank].copy_from_slice(&vd[src..src + rank]);
                }
            }
            out
        }
    };
    Ok((shape, data))
}

/// Undoes the converter's rotary permutation of q/k rows: within each head of `hd` rows, the
/// stored row `2j + t` is HF row `t * hd/2 + j`.
fn unpermute_rows(stored: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0.0f32; stored.len()];
    for h in 0..n_head {
        for j in 0..half {
            for t in 0..2 {
                let src = (h * hd + 2 * j + t) * cols;
                let dst = (h * hd + t * half + j) * cols;
                out[dst..dst + cols].copy_from_slice(&stored[src..src + cols]);
            }
        }
    }
    out
}

/// Matrix `index` of a stacked tensor, reading only its bytes: each matrix is whole rows, and
/// the reader guarantees each row is whole blocks, so the matrix's bytes are a plain range.
fn read_slice(gguf: &GgufFile, t: &TensorInfo, index: usize) -> Result<Vec<f32>> {
    let n = t.dims[2];
    let per_bytes = t.n_bytes / n;
    let per_values = (t.dims[0] * t.dims[1]) as usize;
    let fail = |source| {
        gguf_error(
            gguf,
            ErrorKind::Dequant {
                tensor: t.name.clone(),
                source,
            },
        )
    };
    if !t.ty.can_dequantize() {
        return Err(fail(DequantError::Unsupported(t.ty)));
    }
    let start = gguf.data_range(t).start + per_bytes * index as u64;
    let mut buf = vec![0u8; per_bytes as usize];
    read_at(gguf, &mut buf, start).map_err(|source| {
        gguf_error(
            gguf,
            ErrorKind::Io {
                what: format!("tensor `{}` data", t.name),
                source,
            },
        )
    })?;
    let mut out = vec![0.0f32; per_values];
    dequantize_into(t.ty, &buf, &mut out).map_err(fail)?;
    Ok(out)
}

fn gguf_error(gguf: &GgufFile, kind: ErrorKind) -> Error {
    Error {
        file: gguf.path().to_path_buf(),
        kind,
    }
}

/// Reads `buf.len()` bytes at `offset` of the file behind `gguf`.
fn read_at(gguf: &GgufFile, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let file = File::open(gguf.path())?;
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(&file, buf, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = file;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::config::test_gguf::{self, Kv};
    use crate::gguf::config::test_gguf::{open, root};
    use serde_json::Value as Json;
    use std::collections::HashMap;
    use std::path::PathBuf;

    /// A minimal safetensors reader (f32, f16, bf16): name → (shape, values).
    fn safetensors(dir: &str) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
        let dir = root().join("models").join(dir);
        let mut files = vec![];
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                files.push(p);
            }
        }
        let mut out = HashMap::new();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let header: Json = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
            let data = &bytes[8 + n..];
            for (name, info) in header.as_object().unwrap() {
                if name == "__metadata__" {
                    continue;
                }
                let shape: Vec<usize> = info["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                let off = info["data_offsets"].as_array().unwrap();
                let (a, b) = (
                    off[0].as_u64().unwrap() as usize,
                    off[1].as_u64().unwrap() as usize,
                );
                let raw = &data[a..b];
                let values: Vec<f32> = match info["dtype"].as_str().unwrap() {
                    "F32" => raw
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    "F16" => raw
                        .chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                        .collect(),
                    "BF16" => raw
                        .chunks_exact(2)
                        .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
                        .collect(),
                    other => panic!("{name}: dtype {other} not handled by the test reader"),
                };
                out.insert(name.clone(), (shape, values));
            }
        }
        out
    }

    /// Every HF weight of the original checkpoint (less MTP layers) comes back from the GGUF
    /// file with its shape, within `tol` (0 = bit for bit); no GGUF tensor is left over; the
    /// map provides nothing the original lacks.
    fn check_all_weights(gguf_file: &str, dir: &str, tol: f32) {
        let g = open(gguf_file);
        let map = NameMap::new(&g).unwrap_or_else(|e| panic!("{e}"));
        let want = safetensors(dir);
        let cfg: Json = serde_json::from_str(
            &std::fs::read_to_string(root().join("models").join(dir).join("config.json")).unwrap(),
        )
        .unwrap();
        let layers = cfg["num_hidden_layers"].as_u64().unwrap() as usize;
        let mut checked = 0;
        for (name, (shape, values)) in &want {
            let mtp = split_hf_layer(name).is_some_and(|l| l >= layers);
            if mtp {
                assert!(!map.contains(name), "{gguf_file}: MTP weight {name} mapped");
                continue;
            }
            let src = map
                .source(name)
                .unwrap_or_else(|| panic!("{gguf_file}: no source for {name}"));
            assert_eq!(
                &hf_shape(&g, src).unwrap(),
                shape,
                "{gguf_file}: {name} shape"
            );
            let (got_shape, got) = materialize(&g, src).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&got_shape, shape, "{gguf_file}: {name}");
            assert_eq!(got.len(), values.len());
            for (i, (a, b)) in got.iter().zip(values).enumerate() {
                let ok = if tol == 0.0 {
                    a.to_bits() == b.to_bits()
                } else {
                    (a - b).abs() <= tol * b.abs().max(1e-3)
                };
                assert!(ok, "{gguf_file}: {name}[{i}] = {a}, the original has {b}");
            }
            checked += 1;
        }
        let provided: Vec<&str> = map.hf_names().filter(|n| !want.contains_key(*n)).collect();
        assert!(
            provided.is_empty(),
            "{gguf_file}: names the original lacks: {provided:?}"
        );
        assert!(
            map.unused().is_empty(),
            "{gguf_file}: unused {:?}",
            map.unused()
        );
        assert_eq!(checked, map.len());
        assert!(checked >= 15, "{gguf_file}: only {checked} weights");
    }

    fn split_hf_layer(name: &str) -> Option<usize> {
        name.strip_prefix("model.layers.")?
            .split('.')
            .next()?
            .parse()
            .ok()
    }

    #[test]
    fn qwen2_weights_round_trip_exactly() {
        check_all_weights("qwen2.gguf", "qwen2", 0.0);
        // The checkpoint is f16, so the f16 file is exact too (norms and biases are f32 there).
        check_all_weights("qwen2.f16.gguf", "qwen2", 0.0);
    }

    #[test]
    fn llama_weights_round_trip_exactly_with_q_k_unpermuted() {
        check_all_weights("llama.gguf", "llama", 0.0);
        let map = NameMap::new(&open("llama.gguf")).unwrap();
        assert_eq!(
            map.source("model.layers.1.self_attn.k_proj.weight"),
            Some(&Source::Unpermute {
                name: "blk.1.attn_k.weight".into(),
                n_head: 2
            })
        );
        assert!(
            map.source("lm_head.weight").is_none(),
            "tied: no output.weight"
        );
    }

    #[test]
    fn qwen3_weights_round_trip_exactly() {
        check_all_weights("qwen3.gguf", "qwen3", 0.0);
    }

    #[test]
    fn deepseek_v2_weights_round_trip_exactly_with_kv_b_rebuilt() {
        check_all_weights("deepseek_v2_lite.gguf", "deepseek_v2_lite", 0.0);
        let map = NameMap::new(&open("deepseek_v2_lite.gguf")).unwrap();
        assert!(matches!(
            map.source("model.layers.0.self_attn.kv_b_proj.weight"),
            Some(Source::KvB { .. })
        ));
        assert!(matches!(
            map.source("model.layers.2.mlp.experts.7.down_proj.weight"),
            Some(Source::Slice { index: 7, .. })
        ));
    }

    #[test]
    fn deepseek_v2_f16_weights_round_trip_to_f16_precision() {
        check_all_weights("deepseek_v2_grouped.f16.gguf", "deepseek_v2_grouped", 1e-3);
    }

    #[test]
    fn deepseek_v3_weights_round_trip_exactly_without_mtp() {
        check_all_weights("deepseek_v3_qlora.gguf", "deepseek_v3_qlora", 0.0);
        let map = NameMap::new(&open("deepseek_v3_qlora.gguf")).unwrap();
        assert_eq!(
            map.source("model.layers.1.mlp.gate.e_score_correction_bias"),
            Some(&Source::Whole("blk.1.exp_probs_b.bias".into()))
        );
    }

    #[test]
    fn unpermute_inverts_the_converters_permutation() {
        // The converter: reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols).
        let (n_head, hd, cols) = (3, 8, 2);
        let rows = n_head * hd;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut stored = vec![0.0; hf.len()];
        for h in 0..n_head {
            for t in 0..2 {
                for j in 0..hd / 2 {
                    for c in 0..cols {
                        let from = ((h * 2 + t) * (hd / 2) + j) * cols + c;
                        let to = ((h * (hd / 2) + j) * 2 + t) * cols + c;
                        stored[to] = hf[from];
                    }
                }
            }
        }
        assert_ne!(stored, hf);
        assert_eq!(unpermute_rows(&stored, rows, cols, n_head), hf);
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "thinkbench-names-{}-{name}.gguf",
            std::process::id()
        ))
    }

    #[test]
    fn old_whole_kv_b_layout_and_unused_tensors() {
        let path = tmp("kvb");
        let data: Vec<f32> = (0..16).map(|x| x as f32).collect();
        test_gguf::write(
            &path,
            &[("general.architecture", Kv::Str("deepseek2".into()))],
            &[
                ("blk.0.attn_kv_b.weight", vec![4, 4], data.clone()),
                ("blk.0.mystery.weight", vec![4], data[..4].to_vec()),
                ("rope_freqs.weight", vec![2], vec![1.0, 1.0]),
            ],
        );
        let g = GgufFile::open(&path).unwrap();
        let map = NameMap::new(&g).unwrap();
        let src = map
            .source("model.layers.0.self_attn.kv_b_proj.weight")
            .unwrap();
        assert_eq!(src, &Source::Whole("blk.0.attn_kv_b.weight".into()));
        assert_eq!(materialize(&g, src).unwrap(), (vec![4, 4], data));
        assert_eq!(map.unused(), ["blk.0.mystery.weight".to_string()]);
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn k_b_without_v_b_and_unknown_arch_are_errors() {
        let path = tmp("kb");
        test_gguf::write(
            &path,
            &[("general.architecture", Kv::Str("deepseek2".into()))],
            &[("blk.0.attn_k_b.weight", vec![2, 2, 1], vec![0.0; 4])],
        );
        let e = NameMap::new(&GgufFile::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("blk.0.attn_v_b.weight"), "{e}");
        test_gguf::write(
            &path,
            &[("general.architecture", Kv::Str("mamba".into()))],
            &[],
        );
        let e = NameMap::new(&GgufFile::open(&path).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("mamba"), "{e}");
        std::fs::remove_file(&path).ok();
    }
}
