//! Reading a GGUF header: magic, version, metadata, tensor infos; then checking that every
//! tensor's data lies inside the file.
//!
//! The header is read front to back from any `Read`. Before each read, and before anything is
//! allocated for a length or count taken from the file, the bytes it implies are checked against
//! what is left of the file; a corrupted count therefore fails as a truncation and never turns
//! into a huge allocation.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;

use super::error::ErrorKind;
use super::types::GgmlType;
use super::value::{Array, FromValue, Value, ValueType};
use super::TensorInfo;

const MAGIC: &[u8; 4] = b"GGUF";
/// Data-section alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most this many dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal; this bounds the recursion a hostile file can ask for.
const MAX_ARRAY_NESTING: u32 = 4;
/// Elements reserved up front for an array; larger arrays grow as their bytes are actually read.
const MAX_PREALLOCATED: u64 = 1 << 16;

/// Everything before the data section.
#[derive(Debug)]
pub(crate) struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section; tensor offsets are relative to it.
    pub data_start: u64,
}

/// Parses a header from `reader`, which yields the file's bytes from the start; `file_len` is
/// the whole file's size, so that lengths can be checked before they are read.
pub(crate) fn parse(reader: impl Read, file_len: u64) -> Result<Header, ErrorKind> {
    let mut src = Source {
        reader,
        pos: 0,
        len: file_len,
    };
    let version = read_preamble(&mut src)?;
    let n_tensors = src.u64(&Ctx::Header)?;
    let n_kv = src.u64(&Ctx::Header)?;
    // The least the counts imply (each entry's fixed fields): a corrupted count fails here, as
    // itself, rather than later as whatever the bytes after the real entries happen to be.
    let least = n_kv
        .saturating_mul(8 + 4 + 1)
        .saturating_add(n_tensors.saturating_mul(8 + 4 + 4 + 8));
    src.ensure(least, &Ctx::Counts { n_kv, n_tensors })?;

    let metadata = read_metadata(&mut src, n_kv)?;
    let alignment = alignment(&metadata)?;
    let raw = (0..n_tensors)
        .map(|i| read_tensor_info(&mut src, i))
        .collect::<Result<Vec<_>, _>>()?;
    let data_start = src.pos.next_multiple_of(alignment);
    let tensors = raw
        .into_iter()
        .map(RawTensor::into_info)
        .collect::<Result<Vec<_>, _>>()?;
    check_layout(&tensors, alignment, data_start, file_len)?;
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

fn read_preamble(src: &mut Source<impl Read>) -> Result<u32, ErrorKind> {
    let magic: [u8; 4] = src.array(&Ctx::Header)?;
    if &magic != MAGIC {
        return Err(ErrorKind::NotGguf {
            found: format!("\"{}\"", magic.escape_ascii()),
        });
    }
    let version = src.u32(&Ctx::Header)?;
    check_version(version)?;
    Ok(version)
}

/// v2 and v3 share one layout (v3 only added big-endian files, which are refused). A big-endian
/// file's version reads, little-endian, as a small number shifted into the top bytes.
fn check_version(version: u32) -> Result<(), ErrorKind> {
    match version {
        2 | 3 => Ok(()),
        v if v & 0xFFFF == 0 && (1..=3).contains(&v.swap_bytes()) => Err(ErrorKind::BigEndian {
            version: v.swap_bytes(),
        }),
        v => Err(ErrorKind::UnsupportedVersion(v)),
    }
}

fn read_metadata(
    src: &mut Source<impl Read>,
    n_kv: u64,
) -> Result<Vec<(String, Value)>, ErrorKind> {
    let mut metadata = Vec::with_capacity(capacity(n_kv));
    let mut seen = HashSet::new();
    for index in 0..n_kv {
        let key = src.string(&Ctx::KeyName(index))?;
        let ctx = Ctx::Key(&key);
        let ty = src.value_type(&ctx)?;
        let value = src.value(ty, &ctx, 0)?;
        if !seen.insert(key.clone()) {
            return Err(invalid(&ctx, "the key occurs twice"));
        }
        metadata.push((key, value));
    }
    Ok(metadata)
}

/// `general.alignment`, or 32. It must be a power of two: offsets are rounded up to it.
fn alignment(metadata: &[(String, Value)]) -> Result<u64, ErrorKind> {
    const KEY: &str = "general.alignment";
    let Some((_, value)) = metadata.iter().find(|(k, _)| k == KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let Some(alignment) = u32::from_value(value) else {
        let (expected, found) = (u32::EXPECTED, value.describe());
        return Err(ErrorKind::WrongType {
            key: KEY.into(),
            expected,
            found,
        });
    };
    if !alignment.is_power_of_two() {
        return Err(invalid(
            &Ctx::Key(KEY),
            &format!("{alignment} is not a power of two"),
        ));
    }
    Ok(alignment.into())
}

/// A tensor info as stored, before its type and shape are checked.
struct RawTensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

fn read_tensor_info(src: &mut Source<impl Read>, index: u64) -> Result<RawTensor, ErrorKind> {
    let name = src.string(&Ctx::TensorInfo(index, None))?;
    let ctx = Ctx::TensorInfo(index, Some(&name));
    let n_dims = src.u32(&ctx)?;
    if n_dims > MAX_DIMS {
        let msg = format!("{n_dims} dimensions; ggml allows at most {MAX_DIMS}");
        return Err(ErrorKind::BadTensor { tensor: name, msg });
    }
    let dims = (0..n_dims)
        .map(|_| src.u64(&ctx))
        .collect::<Result<Vec<_>, _>>()?;
    let type_id = src.u32(&ctx)?;
    let offset = src.u64(&ctx)?;
    Ok(RawTensor {
        name,
        dims,
        type_id,
        offset,
    })
}

impl RawTensor {
    /// Resolves the type and computes the byte size the shape implies.
    fn into_info(self) -> Result<TensorInfo, ErrorKind> {
        let bad = |msg: String| ErrorKind::BadTensor {
            tensor: self.name.clone(),
            msg,
        };
        let Some(ty) = GgmlType::from_id(self.type_id) else {
            return Err(ErrorKind::UnknownTensorType {
                tensor: self.name,
                id: self.type_id,
            });
        };
        let n_elements = self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        let n_elements =
            n_elements.ok_or_else(|| bad(format!("dims {:?} overflow 64 bits", self.dims)))?;
        // ggml packs each row (ne[0] weights) into whole blocks.
        let ne0 = self.dims.first().copied().unwrap_or(1);
        if !ne0.is_multiple_of(ty.block_size()) {
            let (block, name) = (ty.block_size(), ty.name());
            return Err(bad(format!(
                "ne[0] = {ne0} is not a multiple of the {name} block size {block}"
            )));
        }
        let n_bytes = (n_elements / ty.block_size()).checked_mul(ty.type_size());
        let n_bytes = n_bytes.ok_or_else(|| {
            bad(format!(
                "dims {:?} of type {ty} overflow 64 bits of bytes",
                self.dims
            ))
        })?;
        // Sizes become slice lengths when the tensor is read; refuse what this machine can't index.
        if usize::try_from(n_bytes).is_err() || usize::try_from(n_elements).is_err() {
            return Err(bad(format!(
                "{n_elements} elements are too many for this machine"
            )));
        }
        Ok(TensorInfo {
            name: self.name,
            dims: self.dims,
            ty,
            offset: self.offset,
            n_elements,
            n_bytes,
        })
    }
}

/// Every tensor must start on the alignment, end inside the file, and not run into the next.
/// Overlap is where a wrong shape shows: the data section has no sizes of its own.
fn check_layout(
    tensors: &[TensorInfo],
    alignment: u64,
    data_start: u64,
    file_len: u64,
) -> Result<(), ErrorKind> {
    let mut names = HashSet::new();
    for t in tensors {
        if !names.insert(t.name.as_str()) {
            return Err(invalid(&Ctx::Tensor(&t.name), "the name occurs twice"));
        }
        if !t.offset.is_multiple_of(alignment) {
            let msg = format!(
                "data offset {} is not a multiple of the alignment {alignment}",
                t.offset
            );
            return Err(ErrorKind::BadTensor {
                tensor: t.name.clone(),
                msg,
            });
        }
        let start = data_start.saturating_add(t.offset);
        if start.saturating_add(t.n_bytes) > file_len {
            let what = format!("tensor `{}` data", t.name);
            return Err(ErrorKind::Truncated {
                what,
                offset: start,
                needed: t.n_bytes,
                file_len,
            });
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (t, next) = (pair[0], pair[1]);
        // Offsets are at most file_len here, so the sum cannot overflow.
        if t.offset + t.n_bytes > next.offset {
            let msg = format!(
                "dims {:?} of type {} need {} bytes, but tensor `{}` starts {} bytes after it",
                t.dims,
                t.ty,
                t.n_bytes,
                next.name,
                next.offset - t.offset
            );
            return Err(ErrorKind::BadTensor {
                tensor: t.name.clone(),
                msg,
            });
        }
    }
    Ok(())
}

/// Where in the header a read happens, for error messages.
enum Ctx<'a> {
    Header,
    Counts { n_kv: u64, n_tensors: u64 },
    KeyName(u64),
    Key(&'a str),
    TensorInfo(u64, Option<&'a str>),
    Tensor(&'a str),
}

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ctx::Header => write!(f, "the header"),
            Ctx::Counts { n_kv, n_tensors } => {
                write!(
                    f,
                    "the header ({n_kv} metadata entries, {n_tensors} tensor infos)"
                )
            }
            Ctx::KeyName(i) => write!(f, "the key of metadata entry {i}"),
            Ctx::Key(key) => write!(f, "metadata key `{key}`"),
            Ctx::TensorInfo(i, None) => write!(f, "tensor info {i}"),
            Ctx::TensorInfo(i, Some(name)) => write!(f, "tensor info {i} (`{name}`)"),
            Ctx::Tensor(name) => write!(f, "tensor `{name}`"),
        }
    }
}

fn invalid(ctx: &Ctx, msg: &str) -> ErrorKind {
    ErrorKind::Invalid {
        what: ctx.to_string(),
        msg: msg.to_string(),
    }
}

/// How many elements to reserve for a count read from the file.
fn capacity(count: u64) -> usize {
    count.min(MAX_PREALLOCATED) as usize
}

/// The header's bytes, with the position and the file's length for bounds checks.
struct Source<R> {
    reader: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Source<R> {
    /// Fails unless `needed` more bytes exist.
    fn ensure(&self, needed: u64, ctx: &Ctx) -> Result<(), ErrorKind> {
        if needed > self.len.saturating_sub(self.pos) {
            let what = ctx.to_string();
            return Err(ErrorKind::Truncated {
                what,
                offset: self.pos,
                needed,
                file_len: self.len,
            });
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8], ctx: &Ctx) -> Result<(), ErrorKind> {
        self.ensure(buf.len() as u64, ctx)?;
        self.reader
            .read_exact(buf)
            .map_err(|source| ErrorKind::Io {
                what: ctx.to_string(),
                source,
            })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, ctx: &Ctx) -> Result<[u8; N], ErrorKind> {
        let mut buf = [0; N];
        self.fill(&mut buf, ctx)?;
        Ok(buf)
    }

    fn u32(&mut self, ctx: &Ctx) -> Result<u32, ErrorKind> {
        self.array(ctx).map(u32::from_le_bytes)
    }

    fn u64(&mut self, ctx: &Ctx) -> Result<u64, ErrorKind> {
        self.array(ctx).map(u64::from_le_bytes)
    }

    fn string(&mut self, ctx: &Ctx) -> Result<String, ErrorKind> {
        let len = self.u64(ctx)?;
        self.ensure(len, ctx)?;
        let len =
            usize::try_from(len).map_err(|_| invalid(ctx, "string too long for this machine"))?;
        let mut buf = vec![0; len];
        self.fill(&mut buf, ctx)?;
        String::from_utf8(buf).map_err(|_| ErrorKind::NotUtf8(ctx.to_string()))
    }

    fn value_type(&mut self, ctx: &Ctx) -> Result<ValueType, ErrorKind> {
        let id = self.u32(ctx)?;
        ValueType::from_id(id).ok_or_else(|| invalid(ctx, &format!("unknown value type id {id}")))
    }

    fn value(&mut self, ty: ValueType, ctx: &Ctx, depth: u32) -> Result<Value, ErrorKind> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(ctx)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(ctx)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(ctx)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(ctx)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(ctx)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(ctx)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(ctx)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(ctx)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(ctx)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(ctx)?)),
            ValueType::Bool => Value::Bool(self.bool(ctx)?),
            ValueType::String => Value::String(self.string(ctx)?),
            ValueType::Array => Value::Array(self.array_value(ctx, depth)?),
        })
    }

    /// GGUF writes a bool as one byte, 0 or 1.
    fn bool(&mut self, ctx: &Ctx) -> Result<bool, ErrorKind> {
        match self.array::<1>(ctx)? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(invalid(ctx, &format!("bool byte {b} is neither 0 nor 1"))),
        }
    }

    /// An array: element type, u64 count, elements.
    fn array_value(&mut self, ctx: &Ctx, depth: u32) -> Result<Array, ErrorKind> {
        if depth >= MAX_ARRAY_NESTING {
            return Err(invalid(
                ctx,
                &format!("arrays nested more than {MAX_ARRAY_NESTING} deep"),
            ));
        }
        let elem = self.value_type(ctx)?;
        let n = self.u64(ctx)?;
        self.ensure(n.saturating_mul(elem.min_size()), ctx)?;
        macro_rules! elems {
            ($variant:ident, $read:expr) => {
                Array::$variant(self.repeat(n, $read)?)
            };
        }
        Ok(match elem {
            ValueType::U8 => elems!(U8, |s| s.array(ctx).map(u8::from_le_bytes)),
            ValueType::I8 => elems!(I8, |s| s.array(ctx).map(i8::from_le_bytes)),
            ValueType::U16 => elems!(U16, |s| s.array(ctx).map(u16::from_le_bytes)),
            ValueType::I16 => elems!(I16, |s| s.array(ctx).map(i16::from_le_bytes)),
            ValueType::U32 => elems!(U32, |s| s.array(ctx).map(u32::from_le_bytes)),
            ValueType::I32 => elems!(I32, |s| s.array(ctx).map(i32::from_le_bytes)),
            ValueType::U64 => elems!(U64, |s| s.array(ctx).map(u64::from_le_bytes)),
            ValueType::I64 => elems!(I64, |s| s.array(ctx).map(i64::from_le_bytes)),
            ValueType::F32 => elems!(F32, |s| s.array(ctx).map(f32::from_le_bytes)),
            ValueType::F64 => elems!(F64, |s| s.array(ctx).map(f64::from_le_bytes)),
            ValueType::Bool => elems!(Bool, |s| s.bool(ctx)),
            ValueType::String => elems!(String, |s| s.string(ctx)),
            ValueType::Array => elems!(Array, |s| s.array_value(ctx, depth + 1)),
        })
    }

    fn repeat<T>(
        &mut self,
        n: u64,
        mut read: impl FnMut(&mut Self) -> Result<T, ErrorKind>,
    ) -> Result<Vec<T>, ErrorKind> {
        let mut items = Vec::with_capacity(capacity(n));
        for _ in 0..n {
            items.push(read(self)?);
        }
        Ok(items)
    }
}
