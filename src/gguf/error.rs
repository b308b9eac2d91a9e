//! What can go wrong reading a GGUF file. Every message is one line that names the file.

use std::path::PathBuf;

use super::types::GgmlType;

/// A problem with one GGUF file. Displays as `<file>: <what is wrong>`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", file.display())]
pub struct Error {
    pub file: PathBuf,
    pub kind: ErrorKind,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong, without the file. `what` fields say where: "the header", "metadata key `x`",
/// "tensor info 3 (`blk.0.attn_q.weight`)", "tensor `x` data".
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },

    #[error("not a GGUF file (it starts with {found}, not \"GGUF\")")]
    NotGguf { found: String },

    #[error("big-endian GGUF (version {version}) is not supported; only little-endian files are")]
    BigEndian { version: u32 },

    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion(u32),

    /// Something would lie past the end of the file. For a length or count read from the file,
    /// `needed` is the least it implies.
    #[error("truncated: {what} needs at least {needed} bytes from offset {offset}, but the file is {file_len} bytes")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        file_len: u64,
    },

    #[error("tensor `{tensor}` has unknown ggml type id {id}")]
    UnknownTensorType { tensor: String, id: u32 },

    /// A tensor's shape, type and offset do not describe a region of the data section.
    #[error("tensor `{tensor}`: {msg}")]
    BadTensor { tensor: String, msg: String },

    #[error("tensor `{tensor}`: {source}")]
    Dequant {
        tensor: String,
        source: DequantError,
    },

    #[error("no tensor named `{0}`")]
    MissingTensor(String),

    #[error("metadata key `{0}` is missing")]
    MissingKey(String),

    #[error("metadata key `{key}`: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("{0} is not valid UTF-8")]
    NotUtf8(String),

    /// Structurally invalid: an unknown value type id, a bad alignment, a duplicate key or name.
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
}

/// Why bytes could not be dequantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DequantError {
    #[error("type {0} cannot be dequantized by this reader")]
    Unsupported(GgmlType),

    #[error("{bytes} bytes of {ty} do not make {values} values ({ty} packs {} values in {} bytes)", ty.block_size(), ty.type_size())]
    Length {
        ty: GgmlType,
        bytes: usize,
        values: usize,
    },
}
