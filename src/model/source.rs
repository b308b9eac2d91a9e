//! Where a model's weights come from: a Hugging Face folder (safetensors, [`Checkpoint`]) or one
//! GGUF file as llama.cpp, Ollama and LM Studio store it. Either way the loader asks for weights
//! by their HF names and gets them in HF layout; the GGUF side maps each name to its tensor(s)
//! (`gguf::names`) and undoes the converter's rearrangements. The same decoder then runs both.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::checkpoint::Checkpoint;
use super::quant::Format;
use super::ModelError;
use crate::gguf::{self, names::NameMap, GgmlType, GgufFile};

pub enum WeightSource {
    Safetensors(Checkpoint),
    Gguf(Box<GgufWeights>),
}

/// An open GGUF file and the HF name of each weight it holds.
pub struct GgufWeights {
    pub file: GgufFile,
    pub names: NameMap,
}

pub use crate::gguf::is_gguf_file as is_gguf;

/// A GGUF error as the model's error: one line naming the file and what is wrong.
pub fn gguf_error(e: gguf::Error) -> ModelError {
    ModelError::Io {
        file: e.file.display().to_string(),
        msg: e.kind.to_string(),
    }
}

impl WeightSource {
    /// A model folder's safetensors, or a `.gguf` file.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        if !is_gguf(path) {
            return Ok(Self::Safetensors(Checkpoint::open(path)?));
        }
        let file = GgufFile::open(path).map_err(gguf_error)?;
        let names = NameMap::new(&file).map_err(gguf_error)?;
        Ok(Self::Gguf(Box::new(GgufWeights { file, names })))
    }

    /// The folder or file, for messages.
    pub fn location(&self) -> PathBuf {
        match self {
            Self::Safetensors(c) => c.dir.clone(),
            Self::Gguf(g) => g.file.path().to_path_buf(),
        }
    }

    /// The HF-layout shape of weight `name`, if the source has it.
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        match self {
            Self::Safetensors(c) => c.info(name).map(|i| i.shape.clone()),
            Self::Gguf(g) => {
                let source = g.names.source(name)?;
                let shape = gguf::names::hf_shape(&g.file, source).ok()?;
                Some(shape.into_iter().map(|d| d as i64).collect())
            }
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::Safetensors(c) => c.contains(name),
            Self::Gguf(g) => g.names.contains(name),
        }
    }

    /// Every weight's HF name.
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::Safetensors(c) => c.names().cloned().collect(),
            Self::Gguf(g) => g.names.hf_names().map(str::to_string).collect(),
        }
    }

    /// GGUF tensors no HF name reads (reported like unused safetensors weights).
    pub fn unread(&self) -> Vec<String> {
        match self {
            Self::Safetensors(_) => Vec::new(),
            Self::Gguf(g) => g.names.unused().to_vec(),
        }
    }

    /// Weight `name` as `kind` on `device`, in HF layout (dequantized where the file stores
    /// blocks).
    pub fn load(
        &self,
        name: &str,
        kind: Kind,
        device: Device,
        fp8_block: Option<[usize; 2]>,
    ) -> Result<Tensor, ModelError> {
        Ok(self
            .load_native(name, fp8_block)?
            .to_kind(kind)
            .to_device(device))
    }

    /// Weight `name` on the CPU in the float kind it is stored in (a safetensors file's bf16 stays
    /// bf16; GGUF and FP8 weights come dequantized to f32), so a caller that quantizes at load
    /// converts a few rows at a time instead of holding the whole matrix in f32.
    pub fn load_native(
        &self,
        name: &str,
        fp8_block: Option<[usize; 2]>,
    ) -> Result<Tensor, ModelError> {
        match self {
            Self::Safetensors(c) => c.load_native(name, fp8_block),
            Self::Gguf(g) => {
                let source = g
                    .names
                    .source(name)
                    .ok_or_else(|| ModelError::MissingWeight {
                        name: name.into(),
                        dir: g.file.path().display().to_string(),
                    })?;
                let (shape, values) =
                    gguf::names::materialize(&g.file, source).map_err(gguf_error)?;
                let shape: Vec<i64> = shape.into_iter().map(|d| d as i64).collect();
                Ok(Tensor::from_slice(&values).view(shape.as_slice()))
            }
        }
    }

    /// The block format weight `name` is stored in, when [`WeightSource::stored_blocks`] would
    /// return it (from the header alone).
    pub fn stored_format(&self, name: &str) -> Option<Format> {
        let Self::Gguf(g) = self else {
            return None;
        };
        let tensor = match g.names.source(name)? {
            gguf::names::Source::Whole(t) | gguf::names::Source::Slice { name: t, .. } => t,
            _ => return None,
        };
        kept_format(g.file.tensor_opt(tensor)?.ty)
    }

    /// Weight `name`'s blocks as the file stores them, when it is one Q8_0, Q4_0, Q4_K or Q6_K matrix (or
    /// one expert of a stacked one) used without rearrangement: the loader keeps them as they
    /// are, so the stored model is the model run.
    pub fn stored_blocks(&self, name: &str) -> Result<Option<(Format, Vec<u8>)>, ModelError> {
        let Self::Gguf(g) = self else {
            return Ok(None);
        };
        let (tensor, index) = match g.names.source(name) {
            Some(gguf::names::Source::Whole(t)) => (t, None),
            Some(gguf::names::Source::Slice { name: t, index }) => (t, Some(*index)),
            _ => return Ok(None),
        };
        let info = g.file.tensor(tensor).map_err(gguf_error)?;
        let Some(format) = kept_format(info.ty) else {
            return Ok(None);
        };
        let bytes = g.file.tensor_bytes(tensor).map_err(gguf_error)?;
        let bytes = match index {
            None => bytes,
            Some(i) => {
                // A stacked [n_expert, rows, cols] tensor: expert i's rows are contiguous.
                let experts = *info.dims.get(2).unwrap_or(&1) as usize;
                let per = bytes.len() / experts.max(1);
                bytes[i * per..(i + 1) * per].to_vec()
            }
        };
        Ok(Some((format, bytes)))
    }
}

/// The block format a GGUF tensor type is run in as stored, if thinkbench has kernels for it.
fn kept_format(ty: GgmlType) -> Option<Format> {
    match ty {
        GgmlType::Q8_0 => Some(Format::Q8_0),
        GgmlType::Q4_0 => Some(Format::Q4_0),
        GgmlType::Q4_K => Some(Format::Q4_K),
        GgmlType::Q6_K => Some(Format::Q6_K),
        _ => None,
    }
}
