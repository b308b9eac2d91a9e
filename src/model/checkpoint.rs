//! Reading safetensors checkpoints as the hub publishes them: one `model.safetensors` or shards
//! listed in `model.safetensors.index.json`.
//!
//! The header is parsed here (it is 8 bytes of length plus JSON) so that tensors can be streamed
//! one at a time from disk: peak memory while loading is the model plus its largest tensor, not
//! the model twice, and a truncated file is reported with the tensor that runs past its end.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::ModelError;

/// On-disk element types we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskDtype {
    F32,
    F16,
    BF16,
    F8E4M3,
    I64,
    I32,
}

impl DiskDtype {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "F8_E4M3" => Self::F8E4M3,
            "I64" => Self::I64,
            "I32" => Self::I32,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::F8E4M3 => 1,
            Self::I64 => 8,
        }
    }

    fn kind(self) -> Kind {
        match self {
            Self::F32 => Kind::Float,
            Self::F16 => Kind::Half,
            Self::BF16 => Kind::BFloat16,
            Self::F8E4M3 => Kind::Float8e4m3fn,
            Self::I64 => Kind::Int64,
            Self::I32 => Kind::Int,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub file: PathBuf,
    pub dtype: DiskDtype,
    pub shape: Vec<i64>,
    /// Absolute byte range in `file`.
    pub start: u64,
    pub end: u64,
}

/// Every tensor of a checkpoint directory, by its HF key name.
pub struct Checkpoint {
    pub dir: PathBuf,
    tensors: HashMap<String, TensorInfo>,
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<i64>,
    data_offsets: [u64; 2],
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
            let idx: ShardIndex = serde_json::from_str(&text).map_err(|e| ModelError::Json {
                file: index.display().to_string(),
                msg: e.to_string(),
            })?;
            let mut names: Vec<&String> = idx.weight_map.values().collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if single.exists() {
            vec![single]
        } else {
            return Err(missing_weights_error(dir));
        };
        let mut tensors = HashMap::new();
        for file in files {
            read_header(&file, &mut tensors)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
        })
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Total bytes of tensor data on disk.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.values().map(|t| t.end - t.start).sum()
    }

    /// Every tensor of the checkpoint in `dir`, by name, as f32 (lossless from bf16/f16): how
    /// tests compare checkpoints.
    #[cfg(test)]
    pub fn read_all_f32(dir: &Path) -> BTreeMap<String, Tensor> {
        let ck = Self::open(dir).unwrap();
        ck.tensors
            .keys()
            .map(|n| (n.clone(), ck.read_raw(n).unwrap().to_kind(Kind::Float)))
            .collect()
    }

    /// Reads one tensor exactly as stored (no conversion), on the CPU.
    pub fn read_raw(&self, name: &str) -> Result<Tensor, ModelError> {
        let info = self.info(name).ok_or_else(|| ModelError::MissingWeight {
            name: name.to_string(),
            dir: self.dir.display().to_string(),
        })?;
        let mut f = File::open(&info.file).map_err(|e| ModelError::io(&info.file, e))?;
        f.seek(SeekFrom::Start(info.start))
            .map_err(|e| ModelError::io(&info.file, e))?;
        // Read straight into the tensor's own memory: going through a Vec and copying would add
        // the largest tensor (the embedding) to the peak resident memory while loading.
        let t = Tensor::f_empty(info.shape.as_slice(), (info.dtype.kind(), Device::Cpu))
            .map_err(|e| ModelError::Tch(e.to_string()))?;
        let len = (info.end - info.start) as usize;
        debug_assert_eq!(len, t.numel() * info.dtype.size());
        // SAFETY: `t` is a fresh, contiguous CPU tensor of exactly `len` bytes (the header check
        // in `read_header` tied the byte range to shape × dtype size), owned here and not shared
        // with any other thread while the slice lives.
        let bytes = unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut u8, len) };
        f.read_exact(bytes)
            .map_err(|e| ModelError::io(&info.file, e))?;
        Ok(t)
    }

    /// Weight `name` on the CPU in the kind it is stored in, without a conversion (callers
    /// convert through `WeightSource::load`, or piece by piece when quantizing at load). FP8
    /// weights with a `<name>_scale_inv` companion are dequantised blockwise to f32.
    pub fn load_native(
        &self,
        name: &str,
        fp8_block: Option<[usize; 2]>,
    ) -> Result<Tensor, ModelError> {
        let raw = self.read_raw(name)?;
        let info = self.info(name).expect("read_raw checked presence");
        let t = if info.dtype == DiskDtype::F8E4M3 {
            let scale_name = format!("{name}_scale_inv");
            let scale = self
                .read_raw(&scale_name)
                .map_err(|_| ModelError::MissingWeight {
                    name: scale_name.clone(),
                    dir: self.dir.display().to_string(),
                })?;
            let block = fp8_block.unwrap_or([128, 128]);
            dequantize_fp8(&raw, &scale, block).map_err(|msg| ModelError::WrongShape {
                name: scale_name,
                msg,
            })?
        } else {
            raw
        };
        Ok(t)
    }
}

/// `W = W_fp8 · scale_inv[i / bh, j / bw]`, computed in f32. Edge blocks may be partial.
pub fn dequantize_fp8(w: &Tensor, scale: &Tensor, block: [usize; 2]) -> Result<Tensor, String> {
    let size = w.size();
    if size.len() != 2 {
        return Err(format!("fp8 weight must be 2-D, found {size:?}"));
    }
    let (rows, cols) = (size[0], size[1]);
    let (bh, bw) = (block[0] as i64, block[1] as i64);
    let expect = [(rows + bh - 1) / bh, (cols + bw - 1) / bw];
    if scale.size() != expect {
        return Err(format!(
            "scale shape {:?}, expected {:?} for a {rows}x{cols} weight in {bh}x{bw} blocks",
            scale.size(),
            expect
        ));
    }
    let s = scale
        .to_kind(Kind::Float)
        .repeat_interleave_self_int(bh, 0, None)
        .repeat_interleave_self_int(bw, 1, None)
        .narrow(0, 0, rows)
        .narrow(1, 0, cols);
    Ok(w.to_kind(Kind::Float) * s)
}

fn missing_weights_error(dir: &Path) -> ModelError {
    let pickles: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.ends_with(".bin") || n.ends_with(".pt") || n.ends_with(".pth") || n.ends_with(".ckpt")
        })
        .collect();
    if let Some(p) = pickles.first() {
        ModelError::Pickle {
            file: dir.join(p).display().to_string(),
        }
    } else {
        ModelError::NoWeights {
            dir: dir.display().to_string(),
        }
    }
}

fn read_header(file: &Path, out: &mut HashMap<String, TensorInfo>) -> Result<(), ModelError> {
    let shown = file.display().to_string();
    let mut f = File::open(file).map_err(|e| ModelError::io(file, e))?;
    let file_len = f.metadata().map_err(|e| ModelError::io(file, e))?.len();
    let bad = |msg: String| ModelError::BadSafetensors {
        file: shown.clone(),
        msg,
    };
    let mut len_bytes = [0u8; 8];
    f.read_exact(&mut len_bytes)
        .map_err(|_| bad("file is shorter than the 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(bad(format!("header length {header_len} runs past the end of the file ({file_len} bytes): truncated or not a safetensors file")));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)
        .map_err(|e| ModelError::io(file, e))?;
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let data_start = 8 + header_len;
    for (name, v) in map {
        if name == "__metadata__" {
            continue;
        }
        let e: HeaderEntry =
            serde_json::from_value(v).map_err(|e| bad(format!("entry {name}: {e}")))?;
        let dtype = DiskDtype::parse(&e.dtype)
            .ok_or_else(|| bad(format!("tensor {name} has unsupported dtype {}", e.dtype)))?;
        let [s, t] = e.data_offsets;
        let numel: i64 = e.shape.iter().product();
        if t < s || (t - s) as usize != numel as usize * dtype.size() {
            return Err(bad(format!(
                "tensor {name}: byte range {s}..{t} does not match shape {:?} of {}",
                e.shape, e.dtype
            )));
        }
        if data_start + t > file_len {
            return Err(bad(format!(
                "tensor {name} ends at byte {} but the file has {file_len}: the file is truncated",
                data_start + t
            )));
        }
        out.insert(
            name,
            TensorInfo {
                file: file.to_path_buf(),
                dtype,
                shape: e.shape,
                start: data_start + s,
                end: data_start + t,
            },
        );
    }
    Ok(())
}
