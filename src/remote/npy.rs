//! Decoding of NumPy `.npy` buffers holding integer arrays: vLLM returns routed experts as
//! base64 of `np.save` output (dtype `uint8`/`uint16` for most models, any integer type
//! accepted here).
//!
//! The format (numpy's `numpy/lib/format.py`): the magic `\x93NUMPY`, a major and a minor
//! version byte, the header length (2 bytes little-endian in version 1.0, 4 bytes in 2.0 and
//! 3.0), then the header: a Python dict literal such as
//! `{'descr': '<u2', 'fortran_order': False, 'shape': (7, 27, 6), }` padded with spaces and a
//! final `'\n'` (latin-1 text in 1.0/2.0, UTF-8 in 3.0), then the raw values in C order.
//! Bytes after the last value are ignored, as `np.load` ignores them.

/// A decoded integer array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyArray {
    /// The `shape` tuple; empty for a 0-d (scalar) array.
    pub shape: Vec<usize>,
    /// Every value in C (row-major) order, widened to i64.
    pub values: Vec<i64>,
    /// The dtype as the header spells it (`'<u2'`).
    pub descr: String,
}

/// What is wrong with a `.npy` buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file: it does not start with the magic \\x93NUMPY")]
    BadMagic,
    #[error("too short for a .npy file: {0} bytes, where the preamble alone needs {1}")]
    TooShort(usize, usize),
    #[error("unsupported .npy format version {0}.{1} (1.0, 2.0 and 3.0 are read)")]
    Version(u8, u8),
    #[error("the .npy header says it is {stated} bytes, but only {present} follow")]
    HeaderTruncated { stated: usize, present: usize },
    #[error("the .npy header (format 3.0) is not UTF-8")]
    HeaderNotUtf8,
    #[error("malformed .npy header ({what}): {header}")]
    Header { what: String, header: String },
    #[error("the .npy header has no '{0}'")]
    MissingKey(&'static str),
    #[error("unsupported .npy dtype {0:?}: only integer types (i1 i2 i4 i8 u1 u2 u4 u8) are read")]
    Dtype(String),
    #[error("the .npy array is in Fortran order; only C order is read")]
    FortranOrder,
    #[error("the .npy shape {0:?} has too many elements")]
    ShapeOverflow(Vec<usize>),
    #[error("the .npy data is {present} bytes, but shape {shape:?} of {descr} needs {needed}")]
    DataTruncated {
        present: usize,
        needed: usize,
        shape: Vec<usize>,
        descr: String,
    },
    #[error("the .npy value {value} at index {index} does not fit in a signed 64-bit integer")]
    Overflow { value: u64, index: usize },
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Whether `bytes` starts like a `.npy` file.
pub fn is_npy(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Decodes a whole `.npy` buffer of an integer dtype into its shape and values.
pub fn decode_npy(bytes: &[u8]) -> Result<NpyArray, NpyError> {
    if !is_npy(bytes) {
        return Err(NpyError::BadMagic);
    }
    if bytes.len() < MAGIC.len() + 2 {
        return Err(NpyError::TooShort(bytes.len(), MAGIC.len() + 4));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let len_bytes = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => return Err(NpyError::Version(major, minor)),
    };
    let start = 8 + len_bytes;
    if bytes.len() < start {
        return Err(NpyError::TooShort(bytes.len(), start));
    }
    let header_len = bytes[8..start]
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let present = bytes.len() - start;
    if present < header_len {
        return Err(NpyError::HeaderTruncated {
            stated: header_len,
            present,
        });
    }
    let raw_header = &bytes[start..start + header_len];
    let header: String = if major == 3 {
        std::str::from_utf8(raw_header)
            .map_err(|_| NpyError::HeaderNotUtf8)?
            .to_owned()
    } else {
        // Latin-1: every byte is the code point of the same value.
        raw_header.iter().map(|&b| char::from(b)).collect()
    };
    let (descr, fortran, shape) = read_header(&header)?;
    if fortran {
        return Err(NpyError::FortranOrder);
    }
    let dtype = Dtype::parse(&descr).ok_or_else(|| NpyError::Dtype(descr.clone()))?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| NpyError::ShapeOverflow(shape.clone()))?;
    let needed = count
        .checked_mul(dtype.size)
        .ok_or_else(|| NpyError::ShapeOverflow(shape.clone()))?;
    let data = &bytes[start + header_len..];
    if data.len() < needed {
        return Err(NpyError::DataTruncated {
            present: data.len(),
            needed,
            shape,
            descr,
        });
    }
    let values = data[..needed]
        .chunks_exact(dtype.size)
        .enumerate()
        .map(|(index, cell)| dtype.read(cell, index))
        .collect::<Result<Vec<i64>, NpyError>>()?;
    Ok(NpyArray {
        shape,
        values,
        descr,
    })
}

/// An integer dtype: width in bytes, signedness, byte order.
#[derive(Debug, Clone, Copy)]
struct Dtype {
    size: usize,
    signed: bool,
    big_endian: bool,
}

impl Dtype {
    /// `'<i4'`, `'>u2'`, `'|u1'`, … (`=` is not accepted: numpy never writes it to a file).
    fn parse(descr: &str) -> Option<Dtype> {
        let b = descr.as_bytes();
        if b.len() != 3 {
            return None;
        }
        let signed = match b[1] {
            b'i' => true,
            b'u' => false,
            _ => return None,
        };
        let size = match b[2] {
            b'1' => 1,
            b'2' => 2,
            b'4' => 4,
            b'8' => 8,
            _ => return None,
        };
        let big_endian = match (b[0], size) {
            (b'<', _) => false,
            (b'>', _) => true,
            // "not applicable": numpy's spelling for one-byte types.
            (b'|', 1) => false,
            _ => return None,
        };
        Some(Dtype {
            size,
            signed,
            big_endian,
        })
    }

    fn read(self, cell: &[u8], index: usize) -> Result<i64, NpyError> {
        let mut le = [0u8; 8];
        for (i, &b) in cell.iter().enumerate() {
            let at = if self.big_endian {
                cell.len() - 1 - i
            } else {
                i
            };
            le[at] = b;
        }
        let unsigned = u64::from_le_bytes(le);
        if self.signed {
            // Sign-extend from the cell's width.
            let shift = 64 - 8 * self.size as u32;
            Ok(((unsigned << shift) as i64) >> shift)
        } else {
            i64::try_from(unsigned).map_err(|_| NpyError::Overflow {
                value: unsigned,
                index,
            })
        }
    }
}

/// A Python literal as it appears in a `.npy` header.
#[derive(Debug, Clone, PartialEq)]
enum Py {
    Str(String),
    Bool(bool),
    None,
    Int(u64),
    Seq(Vec<Py>),
    Dict(Vec<(String, Py)>),
}

/// `(descr, fortran_order, shape)` from the header dict.
fn read_header(header: &str) -> Result<(String, bool, Vec<usize>), NpyError> {
    let bad = |what: &str| NpyError::Header {
        what: what.to_owned(),
        header: header.trim_end().to_owned(),
    };
    let mut p = Literal {
        chars: header.chars().collect(),
        at: 0,
    };
    let value = p.value().map_err(|e| bad(&e))?;
    p.skip_ws();
    if p.at != p.chars.len() {
        return Err(bad("text after the dict"));
    }
    let Py::Dict(entries) = value else {
        return Err(bad("not a dict"));
    };
    let get = |key: &'static str| {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or(NpyError::MissingKey(key))
    };
    let descr = match get("descr")? {
        Py::Str(s) => s.clone(),
        other => return Err(NpyError::Dtype(format!("{other:?}"))),
    };
    let fortran = match get("fortran_order")? {
        Py::Bool(b) => *b,
        _ => return Err(bad("fortran_order is not True or False")),
    };
    let shape = match get("shape")? {
        Py::Seq(dims) => dims
            .iter()
            .map(|d| match d {
                Py::Int(n) => usize::try_from(*n).map_err(|_| bad("a dimension is too large")),
                _ => Err(bad("shape holds something other than integers")),
            })
            .collect::<Result<Vec<usize>, NpyError>>()?,
        _ => return Err(bad("shape is not a tuple")),
    };
    Ok((descr, fortran, shape))
}

/// A recursive-descent reader of the Python literals numpy writes.
struct Literal {
    chars: Vec<char>,
    at: usize,
}

impl Literal {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Result<Py, String> {
        self.skip_ws();
        match self.peek() {
            None => Err("it ends early".into()),
            Some('{') => self.dict(),
            Some('(') => self.seq(')'),
            Some('[') => self.seq(']'),
            Some(q @ ('\'' | '"')) => self.string(q).map(Py::Str),
            Some(c) if c.is_ascii_digit() => self.int(),
            Some(c) if c.is_alphabetic() => {
                let start = self.at;
                while self.peek().is_some_and(char::is_alphanumeric) {
                    self.at += 1;
                }
                let word: String = self.chars[start..self.at].iter().collect();
                match word.as_str() {
                    "True" => Ok(Py::Bool(true)),
                    "False" => Ok(Py::Bool(false)),
                    "None" => Ok(Py::None),
                    _ => Err(format!("unexpected word {word:?}")),
                }
            }
            Some(c) => Err(format!("unexpected {c:?}")),
        }
    }

    fn int(&mut self) -> Result<Py, String> {
        let mut n: u64 = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d)))
                .ok_or("an integer is too large")?;
            self.at += 1;
        }
        // Python 2 long literals: `(3L, 4L)`.
        if matches!(self.peek(), Some('L' | 'l')) {
            self.at += 1;
        }
        Ok(Py::Int(n))
    }

    fn string(&mut self, quote: char) -> Result<String, String> {
        self.at += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err("a string is not closed".into()),
                Some(c) if c == quote => {
                    self.at += 1;
                    return Ok(s);
                }
                Some('\\') => {
                    self.at += 1;
                    let c = self.peek().ok_or("a string is not closed")?;
                    s.push(c);
                    self.at += 1;
                }
                Some(c) => {
                    s.push(c);
                    self.at += 1;
                }
            }
        }
    }

    /// A tuple or list; `open` already seen.
    fn seq(&mut self, close: char) -> Result<Py, String> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.at += 1;
                return Ok(Py::Seq(items));
            }
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(c) if c == close => {}
                _ => return Err(format!("expected ',' or {close:?} in a sequence")),
            }
        }
    }

    fn dict(&mut self) -> Result<Py, String> {
        self.at += 1;
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some('}') => {
                    self.at += 1;
                    return Ok(Py::Dict(entries));
                }
                Some(q @ ('\'' | '"')) => {
                    let key = self.string(q)?;
                    self.skip_ws();
                    if self.peek() != Some(':') {
                        return Err(format!("expected ':' after key {key:?}"));
                    }
                    self.at += 1;
                    let value = self.value()?;
                    entries.push((key, value));
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.at += 1,
                        Some('}') => {}
                        _ => return Err("expected ',' or '}' in the dict".into()),
                    }
                }
                _ => return Err("a dict key is not a string".into()),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `.npy` file as numpy writes it: the header padded with spaces and a final '\n' so the
    /// preamble plus header is a multiple of 64 bytes.
    pub(crate) fn npy_bytes(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let len_bytes = if major == 1 { 2 } else { 4 };
        let preamble = 8 + len_bytes;
        let mut h = header.to_owned();
        while !(preamble + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY".to_vec();
        out.push(major);
        out.push(0);
        if major == 1 {
            out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn v1_little_endian_u2_with_shape() {
        // np.array([[[1, 2], [3, 300]]], dtype='<u2') -> shape (1, 2, 2).
        let data = [1, 0, 2, 0, 3, 0, 0x2c, 0x01];
        let b = npy_bytes(
            1,
            "{'descr': '<u2', 'fortran_order': False, 'shape': (1, 2, 2), }",
            &data,
        );
        assert_eq!(b.len() % 64, data.len());
        let a = decode_npy(&b).unwrap();
        assert_eq!(a.shape, vec![1, 2, 2]);
        assert_eq!(a.values, vec![1, 2, 3, 300]);
        assert_eq!(a.descr, "<u2");
    }

    #[test]
    fn one_byte_and_signed_types_sign_extend() {
        let b = npy_bytes(
            1,
            "{'descr': '|i1', 'fortran_order': False, 'shape': (3,), }",
            &[0xff, 0x7f, 0x80],
        );
        assert_eq!(decode_npy(&b).unwrap().values, vec![-1, 127, -128]);
        let b = npy_bytes(
            1,
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }",
            &[0xff, 0x07],
        );
        assert_eq!(decode_npy(&b).unwrap().values, vec![255, 7]);
        // <i4: -1 then 5; <i2: -2.
        let b = npy_bytes(
            1,
            "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
            &[0xff, 0xff, 0xff, 0xff, 5, 0, 0, 0],
        );
        assert_eq!(decode_npy(&b).unwrap().values, vec![-1, 5]);
        let b = npy_bytes(
            1,
            "{'descr': '<i2', 'fortran_order': False, 'shape': (1,), }",
            &[0xfe, 0xff],
        );
        assert_eq!(decode_npy(&b).unwrap().values, vec![-2]);
    }

    #[test]
    fn big_endian_and_eight_byte_types() {
        // >i4 of 258 = 0x00000102; >i8 of -3.
        let b = npy_bytes(
            1,
            "{'descr': '>i4', 'fortran_order': False, 'shape': (1,), }",
            &[0, 0, 1, 2],
        );
        assert_eq!(decode_npy(&b).unwrap().values, vec![258]);
        let b = npy_bytes(
            1,
            "{'descr': '>i8', 'fortran_order': False, 'shape': (1,), }",
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfd],
        );
        assert_eq!(decode_npy(&b).unwrap().values, vec![-3]);
        let b = npy_bytes(
            1,
            "{'descr': '<u8', 'fortran_order': False, 'shape': (1,), }",
            &[0xff; 8],
        );
        assert_eq!(
            decode_npy(&b).unwrap_err(),
            NpyError::Overflow {
                value: u64::MAX,
                index: 0
            }
        );
        let b = npy_bytes(
            1,
            "{'descr': '<u4', 'fortran_order': False, 'shape': (1,), }",
            &[0xff; 4],
        );
        assert_eq!(decode_npy(&b).unwrap().values, vec![4_294_967_295]);
    }

    #[test]
    fn versions_two_and_three() {
        let h = "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 1), }";
        let data = [7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        for major in [2, 3] {
            let a = decode_npy(&npy_bytes(major, h, &data)).unwrap();
            assert_eq!((a.shape, a.values), (vec![2, 1], vec![7, 9]));
        }
        let mut b = npy_bytes(1, h, &data);
        b[6] = 4;
        assert_eq!(decode_npy(&b).unwrap_err(), NpyError::Version(4, 0));
    }

    #[test]
    fn scalar_and_empty_shapes() {
        let b = npy_bytes(
            1,
            "{'descr': '<i4', 'fortran_order': False, 'shape': (), }",
            &[4, 0, 0, 0],
        );
        let a = decode_npy(&b).unwrap();
        assert_eq!((a.shape, a.values), (vec![], vec![4]));
        let b = npy_bytes(
            1,
            "{'descr': '<i4', 'fortran_order': False, 'shape': (0, 3, 2), }",
            &[],
        );
        let a = decode_npy(&b).unwrap();
        assert_eq!((a.shape, a.values), (vec![0, 3, 2], vec![]));
    }

    #[test]
    fn errors_name_the_problem() {
        let fortran = npy_bytes(
            1,
            "{'descr': '<i4', 'fortran_order': True, 'shape': (1,), }",
            &[0; 4],
        );
        assert_eq!(decode_npy(&fortran).unwrap_err(), NpyError::FortranOrder);
        let float = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        );
        let e = decode_npy(&float).unwrap_err();
        assert_eq!(e, NpyError::Dtype("<f4".into()));
        assert!(e.to_string().contains("\"<f4\""), "{e}");
        let short = npy_bytes(
            1,
            "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }",
            &[0; 20],
        );
        let e = decode_npy(&short).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the .npy data is 20 bytes, but shape [2, 3] of <i4 needs 24"
        );
        assert_eq!(decode_npy(b"PK\x03\x04").unwrap_err(), NpyError::BadMagic);
        let no_shape = npy_bytes(1, "{'descr': '<i4', 'fortran_order': False, }", &[]);
        assert_eq!(
            decode_npy(&no_shape).unwrap_err(),
            NpyError::MissingKey("shape")
        );
        let garbled = npy_bytes(
            1,
            "{'descr': '<i4', 'fortran_order': False, 'shape': (1,",
            &[],
        );
        assert!(matches!(
            decode_npy(&garbled).unwrap_err(),
            NpyError::Header { .. }
        ));
        // A header length that runs past the end.
        let mut cut = npy_bytes(
            1,
            "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }",
            &[],
        );
        cut.truncate(30);
        assert_eq!(
            decode_npy(&cut).unwrap_err(),
            NpyError::HeaderTruncated {
                stated: 118,
                present: 20
            }
        );
    }

    #[test]
    fn header_spellings_numpy_may_use() {
        // Keys in another order, double quotes, Python 2 longs, a list shape, trailing bytes.
        let b = npy_bytes(
            1,
            "{\"shape\": [2L], \"fortran_order\": False, \"descr\": \"<i2\"}",
            &[1, 0, 2, 0, 99],
        );
        let a = decode_npy(&b).unwrap();
        assert_eq!((a.shape, a.values), (vec![2], vec![1, 2]));
    }
}
