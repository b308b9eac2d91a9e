//! A reader for GGUF, llama.cpp's model file format (versions 2 and 3, little-endian).
//!
//! A GGUF file is a header followed by a data section:
//! - magic `GGUF`, u32 version, u64 tensor count, u64 metadata count;
//! - metadata: key (u64 length + UTF-8), u32 value type, value; arrays carry an element type and
//!   a u64 count;
//! - tensor infos: name, u32 dimension count, u64 dims in ggml order (ne[0] is the contiguous,
//!   fastest-varying dimension, so a PyTorch-style shape is the dims reversed), u32 ggml type id,
//!   u64 offset into the data section;
//! - the data section, starting at the next multiple of `general.alignment` (default 32).
//!
//! [`GgufFile::open`] reads and checks the header only. Tensor data is read on demand, one tensor
//! at a time, with positioned reads, so a model of any size costs its header in memory.
//!
//! ```ignore
//! let gguf = GgufFile::open("model.gguf")?;
//! let layers = gguf.get_u32("qwen2.block_count")?;
//! let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
//! let weight: Vec<f32> = gguf.dequantize("blk.0.attn_q.weight")?;
//! ```

pub mod config;
mod dequant;
mod error;
pub mod names;
mod parse;
pub mod tokenizer;
mod types;
mod value;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use dequant::dequantize_into;
pub use error::{DequantError, Error, ErrorKind, Result};
pub use parse::DEFAULT_ALIGNMENT;
pub use types::GgmlType;
pub use value::{Array, FromValue, Value, ValueType};

/// Whether `path` names a GGUF file (`*.gguf`), as `--model` may, rather than a model folder.
pub fn is_gguf_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// One tensor's entry in the header, checked: its type is known, ne[0] is a whole number of
/// blocks, and its data lies inside the file without running into the next tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` (ne[0]) varies fastest.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The dims slowest-varying first, as PyTorch and NumPy write a shape: ggml's [ne0, ne1] is
    /// a [ne1, ne0] row-major matrix.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// An open GGUF file: its parsed header, and the file for reading tensor data.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    file: File,
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile {
    /// Opens `path` and reads its header. Fails if the header is malformed or any tensor's data
    /// would lie outside the file; nothing of the data section is read.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let at = |kind| Error {
            file: path.clone(),
            kind,
        };
        let io = |source| {
            at(ErrorKind::Io {
                what: "the file".into(),
                source,
            })
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        // Headers with a large vocabulary run to megabytes; read them in large chunks.
        let header = parse::parse(BufReader::with_capacity(1 << 20, &file), len).map_err(at)?;
        let key_index = index(header.metadata.iter().map(|(k, _)| k.as_str()));
        let tensor_index = index(header.tensors.iter().map(|t| t.name.as_str()));
        Ok(GgufFile {
            path,
            file,
            version: header.version,
            alignment: header.alignment,
            data_start: header.data_start,
            metadata: header.metadata,
            key_index,
            tensors: header.tensors,
            tensor_index,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version: 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data-section alignment: `general.alignment`, or 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error {
            file: self.path.clone(),
            kind,
        }
    }

    // --- metadata ---

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value under `key`, of whatever type.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The value under `key` as `T`; an error names the key if it is missing or of a type (or
    /// integer value) that does not convert. See [`FromValue`] for what converts.
    pub fn get<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<T> {
        self.get_opt(key)?
            .ok_or_else(|| self.error(ErrorKind::MissingKey(key.into())))
    }

    /// Like [`get`](Self::get), but a missing key is `Ok(None)`. A present key of the wrong
    /// type is still an error: a value that is there but unusable should not pass for absent.
    pub fn get_opt<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<Option<T>> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        match T::from_value(value) {
            Some(v) => Ok(Some(v)),
            None => Err(self.error(ErrorKind::WrongType {
                key: key.into(),
                expected: T::EXPECTED,
                found: value.describe(),
            })),
        }
    }

    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get(key)
    }
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
    }
    pub fn get_i32(&self, key: &str) -> Result<i32> {
        self.get(key)
    }
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.get(key)
    }
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        self.get(key)
    }
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get(key)
    }
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)
    }
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.get(key)
    }
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)
    }
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        self.get(key)
    }
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        self.get(key)
    }
    pub fn get_u32_array(&self, key: &str) -> Result<Vec<u32>> {
        self.get(key)
    }
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.get(key)
    }

    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>> {
        self.get_opt(key)
    }
    pub fn get_u64_opt(&self, key: &str) -> Result<Option<u64>> {
        self.get_opt(key)
    }
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        self.get_opt(key)
    }
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.get_opt(key)
    }
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
        self.get_opt(key)
    }

    /// `general.architecture` ("llama", "qwen2", …), the prefix of the model's own keys.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    // --- tensors ---

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_opt(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_opt(name)
            .ok_or_else(|| self.error(ErrorKind::MissingTensor(name.into())))
    }

    /// Absolute byte range of a tensor's data in the file (for a caller that maps the file).
    pub fn data_range(&self, info: &TensorInfo) -> Range<u64> {
        let start = self.data_start + info.offset;
        start..start + info.n_bytes
    }

    /// The raw bytes of one tensor, as stored (quantized blocks, little-endian).
    pub fn tensor_bytes(&self, name: &str) -> Result<Vec<u8>> {
        let info = self.tensor(name)?;
        // open() checked that the range lies in the file and that n_bytes fits in usize.
        let mut buf = vec![0; info.n_bytes as usize];
        read_exact_at(&self.file, &mut buf, self.data_range(info).start).map_err(|source| {
            self.error(ErrorKind::Io {
                what: format!("tensor `{name}` data"),
                source,
            })
        })?;
        Ok(buf)
    }

    /// One tensor as f32, in storage order (ne[0] fastest).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor(name)?;
        let fail = |source| {
            self.error(ErrorKind::Dequant {
                tensor: name.into(),
                source,
            })
        };
        // Refuse before reading what could be gigabytes.
        if !info.ty.can_dequantize() {
            return Err(fail(DequantError::Unsupported(info.ty)));
        }
        let bytes = self.tensor_bytes(name)?;
        let mut out = vec![0.0; info.n_elements as usize];
        dequantize_into(info.ty, &bytes, &mut out).map_err(fail)?;
        Ok(out)
    }
}

fn index<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    names
        .enumerate()
        .map(|(i, name)| (name.to_string(), i))
        .collect()
}

/// Reads `buf.len()` bytes at `offset` without moving a shared cursor, so `&self` suffices.
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(Error::from(ErrorKind::UnexpectedEof)),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
