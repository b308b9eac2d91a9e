//! Tests against tests/fixtures/gguf/, which scripts/make_gguf_fixtures.py writes with gguf-py
//! (llama.cpp's own Python package): every expected value there is gguf-py's, never ours.
//! Bad-input cases are built here from the good file's bytes.

use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use super::parse::{parse, Header};
use super::*;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

fn fixture(name: &str) -> PathBuf {
    fixture_dir().join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture missing: run scripts/make_gguf_fixtures.py")
}

/// expected.json's entry for one fixture file.
fn expected(file: &str) -> Json {
    let text = std::fs::read_to_string(fixture("expected.json")).expect("expected.json");
    let doc: Json = serde_json::from_str(&text).expect("expected.json is JSON");
    doc["files"][file].clone()
}

fn expected_doc() -> Json {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn open(name: &str) -> GgufFile {
    GgufFile::open(fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_bytes(bytes: &[u8]) -> Result<Header, ErrorKind> {
    parse(bytes, bytes.len() as u64)
}

fn parse_err(bytes: &[u8]) -> ErrorKind {
    match parse_bytes(bytes) {
        Ok(_) => panic!("parsed a file that should have been refused"),
        Err(e) => e,
    }
}

/// Position of the first occurrence of `needle`.
fn find(hay: &[u8], needle: &str) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("`{needle}` not in the fixture"))
}

/// Position just after a key or tensor name: where its value type / dims count starts.
fn after(hay: &[u8], name: &str) -> usize {
    find(hay, name) + name.len()
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Offset of the ggml type id in `name`'s tensor info.
fn type_id_pos(bytes: &[u8], name: &str) -> usize {
    let dims_at = after(bytes, name);
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    dims_at + 4 + 8 * n_dims
}

/// Offset of ne[i] in `name`'s tensor info.
fn dim_pos(bytes: &[u8], name: &str, i: usize) -> usize {
    after(bytes, name) + 4 + 8 * i
}

/// A file under the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("thinkbench-gguf-{}-{tag}.gguf", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn open_err(tag: &str, bytes: &[u8]) -> (Error, String) {
    let tmp = TempFile::new(tag, bytes);
    let err = GgufFile::open(&tmp.0).expect_err("should have been refused");
    let msg = err.to_string();
    assert_one_line_naming(&msg, &tmp.0);
    (err, msg)
}

fn assert_one_line_naming(msg: &str, file: &Path) {
    assert!(
        msg.starts_with(&format!("{}: ", file.display())),
        "does not start with the file: {msg}"
    );
    assert!(!msg.contains('\n'), "not one line: {msg}");
}

// --- what gguf-py wrote ---

/// gguf-py's name for a value type.
fn py_type(t: ValueType) -> &'static str {
    match t {
        ValueType::U8 => "UINT8",
        ValueType::I8 => "INT8",
        ValueType::U16 => "UINT16",
        ValueType::I16 => "INT16",
        ValueType::U32 => "UINT32",
        ValueType::I32 => "INT32",
        ValueType::U64 => "UINT64",
        ValueType::I64 => "INT64",
        ValueType::F32 => "FLOAT32",
        ValueType::F64 => "FLOAT64",
        ValueType::Bool => "BOOL",
        ValueType::String => "STRING",
        ValueType::Array => "ARRAY",
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => json!(f64::from(*x)),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(x) => json!(x),
        Value::Array(a) => array_json(a),
    }
}

fn array_json(a: &Array) -> Json {
    match a {
        Array::U8(v) => json!(v),
        Array::I8(v) => json!(v),
        Array::U16(v) => json!(v),
        Array::I16(v) => json!(v),
        Array::U32(v) => json!(v),
        Array::I32(v) => json!(v),
        Array::U64(v) => json!(v),
        Array::I64(v) => json!(v),
        Array::F32(v) => v.iter().map(|&x| json!(f64::from(x))).collect(),
        Array::F64(v) => json!(v),
        Array::Bool(v) => json!(v),
        Array::String(v) => json!(v),
        Array::Array(v) => v.iter().map(array_json).collect(),
    }
}

#[test]
fn metadata_matches_what_gguf_py_wrote() {
    for file in ["tiny.gguf", "align64.gguf"] {
        let gguf = open(file);
        let want = expected(file)["metadata"].as_array().unwrap().clone();
        let got = gguf.metadata();
        assert_eq!(got.len(), want.len(), "{file}: number of keys");
        for ((key, value), w) in got.iter().zip(&want) {
            assert_eq!(key, w["key"].as_str().unwrap(), "{file}: key order");
            assert_eq!(
                py_type(value.value_type()),
                w["type"],
                "{file}: type of `{key}`"
            );
            if let (Value::Array(a), Some(elem)) = (value, w.get("element_type")) {
                assert_eq!(
                    py_type(a.element_type()),
                    elem,
                    "{file}: element type of `{key}`"
                );
            }
            assert_eq!(value_json(value), w["value"], "{file}: value of `{key}`");
        }
    }
}

#[test]
fn typed_getters_convert_fitting_integers() {
    let gguf = open("tiny.gguf");
    assert_eq!(gguf.architecture().unwrap(), "qwen2");
    assert_eq!(gguf.get_u32("qwen2.block_count").unwrap(), 2);
    assert_eq!(
        gguf.get_u32("qwen2.context_length").unwrap(),
        4096,
        "a u64 that fits"
    );
    assert_eq!(
        gguf.get_u32("qwen2.embedding_length").unwrap(),
        64,
        "an i32 that fits"
    );
    assert_eq!(gguf.get_usize("qwen2.embedding_length").unwrap(), 64);
    assert_eq!(gguf.get_i64("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(gguf.get_u64("test.u64").unwrap(), (1 << 63) + 5);
    assert_eq!(gguf.get::<u8>("test.u8").unwrap(), 200);
    assert_eq!(gguf.get::<i16>("test.i8").unwrap(), -100);
    assert_eq!(gguf.get_f32("qwen2.rope.freq_base").unwrap(), 1.0e6);
    assert_eq!(
        gguf.get_f32("qwen2.attention.layer_norm_rms_epsilon")
            .unwrap(),
        1e-6_f32
    );
    assert_eq!(
        gguf.get_f32("test.f64").unwrap(),
        0.1_f32,
        "an f64 read as f32"
    );
    assert_eq!(gguf.get_f64("test.f64").unwrap(), 0.1);
    assert!(gguf.get_bool("test.bool_true").unwrap());
    assert!(!gguf.get_bool("test.bool_false").unwrap());
    assert_eq!(gguf.get_str("test.string_empty").unwrap(), "");
    assert_eq!(
        gguf.get_str("test.string_unicode").unwrap(),
        "héllo → 世界 🦀"
    );

    let meta = expected("tiny.gguf")["metadata"].clone();
    let want = |key: &str| {
        meta.as_array()
            .unwrap()
            .iter()
            .find(|m| m["key"] == key)
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(
        json!(gguf.get_str_array("tokenizer.ggml.tokens").unwrap()),
        want("tokenizer.ggml.tokens")
    );
    assert_eq!(
        json!(gguf.get_str_array("tokenizer.ggml.merges").unwrap()),
        want("tokenizer.ggml.merges")
    );
    assert_eq!(
        json!(gguf.get_i32_array("tokenizer.ggml.token_type").unwrap()),
        want("tokenizer.ggml.token_type")
    );
    let scores: Vec<f64> = gguf
        .get_f32_array("tokenizer.ggml.scores")
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert_eq!(json!(scores), want("tokenizer.ggml.scores"));
    assert_eq!(gguf.get_u32_array("test.arr.u8").unwrap(), [0, 1, 255]);
    assert!(
        gguf.get_i32_array("test.arr.u32").is_err(),
        "4000000000 does not fit in i32"
    );
    assert_eq!(
        gguf.get::<Vec<i64>>("test.arr.u32").unwrap(),
        [1, 2, 4_000_000_000]
    );

    assert_eq!(gguf.get_u32_opt("qwen2.block_count").unwrap(), Some(2));
    assert_eq!(gguf.get_u32_opt("qwen2.no_such_key").unwrap(), None);
    assert_eq!(gguf.get_str_opt("qwen2.no_such_key").unwrap(), None);
    assert!(
        gguf.get_str_opt("qwen2.block_count").is_err(),
        "wrong type is not `absent`"
    );
}

#[test]
fn getter_errors_name_the_key_the_file_and_what_was_found() {
    let gguf = open("tiny.gguf");
    let path = fixture("tiny.gguf");
    let cases: Vec<(Error, &str, &str)> = vec![
        (
            gguf.get_u32("test.i32").unwrap_err(),
            "test.i32",
            "found i32 -2000000000",
        ),
        (
            gguf.get_i64("test.u64").unwrap_err(),
            "test.u64",
            "found u64 9223372036854775813",
        ),
        (
            gguf.get_str("qwen2.block_count").unwrap_err(),
            "qwen2.block_count",
            "expected a string, found u32 2",
        ),
        (
            gguf.get_f32("qwen2.block_count").unwrap_err(),
            "qwen2.block_count",
            "expected a float",
        ),
        (
            gguf.get_u32_array("test.arr.i32").unwrap_err(),
            "test.arr.i32",
            "found an array of 3 i32",
        ),
        (
            gguf.get_str_array("tokenizer.ggml.scores").unwrap_err(),
            "tokenizer.ggml.scores",
            "array of 10 f32",
        ),
        (
            gguf.get_bool("test.u8").unwrap_err(),
            "test.u8",
            "expected a bool, found u8 200",
        ),
    ];
    for (err, key, found) in cases {
        let msg = err.to_string();
        assert!(
            matches!(&err.kind, ErrorKind::WrongType { key: k, .. } if k == key),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("`{key}`")) && msg.contains(found),
            "{msg}"
        );
        assert_one_line_naming(&msg, &path);
    }
    let err = gguf.get_u32("qwen2.no_such_key").unwrap_err();
    assert!(matches!(&err.kind, ErrorKind::MissingKey(k) if k == "qwen2.no_such_key"));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: metadata key `qwen2.no_such_key` is missing",
            path.display()
        )
    );
    let err = gguf.tensor("no.such.tensor").unwrap_err();
    assert!(matches!(&err.kind, ErrorKind::MissingTensor(n) if n == "no.such.tensor"));
    assert_one_line_naming(&err.to_string(), &path);
    assert!(gguf.dequantize("no.such.tensor").is_err());
}

#[test]
fn tensor_infos_match_gguf_py() {
    for file in ["tiny.gguf", "align64.gguf"] {
        let gguf = open(file);
        let want = expected(file);
        assert_eq!(gguf.version(), want["version"], "{file}");
        assert_eq!(gguf.alignment(), want["alignment"], "{file}");
        assert_eq!(
            gguf.data_start(),
            want["data_offset"],
            "{file}: data section start"
        );
        let tensors = want["tensors"].as_array().unwrap();
        assert_eq!(gguf.tensors().len(), tensors.len(), "{file}");
        for (t, w) in gguf.tensors().iter().zip(tensors) {
            assert_eq!(t.name, w["name"].as_str().unwrap(), "{file}: tensor order");
            assert_eq!(t.ty.name(), w["type"], "{}", t.name);
            assert_eq!(t.ty.id(), w["type_id"], "{}", t.name);
            assert_eq!(json!(t.dims), w["ne"], "{}: dims in ggml order", t.name);
            assert_eq!(t.offset, w["offset"], "{}", t.name);
            assert_eq!(t.n_bytes, w["n_bytes"], "{}", t.name);
            assert_eq!(t.n_elements, w["n_elements"], "{}", t.name);
            assert_eq!(gguf.tensor(&t.name).unwrap(), t);
        }
    }
    let gguf = open("tiny.gguf");
    assert_eq!(
        gguf.tensor("f32.3d").unwrap().shape(),
        [2, 3, 5],
        "numpy's shape: dims reversed"
    );
}

#[test]
fn tensor_bytes_are_the_files_bytes() {
    let gguf = open("tiny.gguf");
    let bytes = fixture_bytes("tiny.gguf");
    for t in gguf.tensors() {
        let range = gguf.data_range(t);
        let want = &bytes[range.start as usize..range.end as usize];
        assert_eq!(gguf.tensor_bytes(&t.name).unwrap(), want, "{}", t.name);
    }
}

/// gguf-py's values, read from the .f32 file the script wrote.
fn expected_values(entry: &Json) -> Vec<f32> {
    let bytes = std::fs::read(fixture(entry["values_file"].as_str().unwrap())).unwrap();
    let start = entry["values_start"].as_u64().unwrap() as usize * 4;
    let count = entry["n_elements"].as_u64().unwrap() as usize;
    bytes[start..start + count * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn assert_close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= 1e-6 * w.abs() + 1e-7
        };
        assert!(ok, "{name}[{i}]: got {g}, gguf-py says {w}");
    }
}

#[test]
fn every_supported_type_dequantizes_like_gguf_py() {
    let gguf = open("tiny.gguf");
    let want = expected("tiny.gguf");
    let mut covered = Vec::new();
    for entry in want["tensors"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let got = gguf.dequantize(name).unwrap_or_else(|e| panic!("{e}"));
        assert_close(name, &got, &expected_values(entry));
        covered.push(gguf.tensor(name).unwrap().ty);
    }
    for ty in GgmlType::ALL.into_iter().filter(|t| t.can_dequantize()) {
        assert!(
            covered.contains(&ty),
            "{ty} can be dequantized but the fixture has no {ty} tensor"
        );
    }
}

#[test]
fn ggml_type_table_matches_gguf_py() {
    let doc = expected_doc();
    let table = doc["ggml_types"].as_object().unwrap();
    assert_eq!(
        table.len(),
        GgmlType::ALL.len(),
        "types known to gguf-py vs to us"
    );
    for (name, w) in table {
        let id = w["id"].as_u64().unwrap() as u32;
        let ty = GgmlType::from_id(id).unwrap_or_else(|| panic!("{name} (id {id}) unknown"));
        assert_eq!(ty.name(), name);
        assert_eq!(ty.block_size(), w["block_size"], "{name}");
        // gguf-py 0.19 still has Q8_1's old 40-byte block; ggml's is 36 (see types.rs).
        if ty != GgmlType::Q8_1 {
            assert_eq!(ty.type_size(), w["type_size"], "{name}");
        }
    }
    assert_eq!(GgmlType::Q8_1.type_size(), 36);
    assert_eq!(
        (GgmlType::Q8_0.block_size(), GgmlType::Q8_0.type_size()),
        (32, 34)
    );
    assert_eq!(
        (GgmlType::Q4_K.block_size(), GgmlType::Q4_K.type_size()),
        (256, 144)
    );
    assert_eq!(GgmlType::Q6_K.type_size(), 210);
    assert_eq!(GgmlType::from_id(4), None, "retired Q4_2");
    assert_eq!(GgmlType::Q4_K.to_string(), "Q4_K");
}

#[test]
fn dequantize_into_checks_types_and_lengths() {
    let mut out = [0.0; 32];
    assert_eq!(dequantize_into(GgmlType::Q8_0, &[0; 34], &mut out), Ok(()));
    assert_eq!(
        dequantize_into(GgmlType::Q8_0, &[0; 33], &mut out),
        Err(DequantError::Length {
            ty: GgmlType::Q8_0,
            bytes: 33,
            values: 32
        })
    );
    assert!(
        dequantize_into(GgmlType::Q8_0, &[0; 68], &mut out).is_err(),
        "two blocks into room for one"
    );
    assert_eq!(
        dequantize_into(GgmlType::IQ2_XXS, &[0; 66], &mut [0.0; 256]),
        Err(DequantError::Unsupported(GgmlType::IQ2_XXS))
    );
    assert_eq!(dequantize_into(GgmlType::F32, &[], &mut []), Ok(()));
}

// --- versions and magic ---

#[test]
fn version_2_reads_like_version_3() {
    let mut bytes = fixture_bytes("tiny.gguf");
    put_u32(&mut bytes, 4, 2);
    let v2 = parse_bytes(&bytes).unwrap();
    let v3 = parse_bytes(&fixture_bytes("tiny.gguf")).unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.metadata, v3.metadata);
    assert_eq!(v2.tensors, v3.tensors);
    assert_eq!(v2.data_start, v3.data_start);
}

#[test]
fn refuses_other_magic_versions_and_byte_orders() {
    let good = fixture_bytes("tiny.gguf");
    let mut bytes = good.clone();
    bytes[..4].copy_from_slice(b"GGML");
    let (err, msg) = open_err("magic", &bytes);
    assert!(matches!(err.kind, ErrorKind::NotGguf { .. }));
    assert!(
        msg.contains("not a GGUF file") && msg.contains("GGML"),
        "{msg}"
    );
    bytes[..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
    assert!(parse_err(&bytes).to_string().contains(r#""\x7fELF""#));

    for version in [0, 1, 4, 0x0100] {
        let mut bytes = good.clone();
        put_u32(&mut bytes, 4, version);
        let err = parse_err(&bytes);
        assert!(
            matches!(err, ErrorKind::UnsupportedVersion(v) if v == version),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("version {version} is not supported")),
            "{err}"
        );
    }
    let mut bytes = good.clone();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    let (err, msg) = open_err("big-endian", &bytes);
    assert!(
        matches!(err.kind, ErrorKind::BigEndian { version: 3 }),
        "{msg}"
    );
    assert!(msg.contains("big-endian"), "{msg}");
}

// --- truncation ---

/// Where the last tensor's data ends; the file after it is only alignment padding.
fn data_end(file: &str) -> usize {
    let want = expected(file);
    let last = want["tensors"].as_array().unwrap().last().unwrap().clone();
    (want["data_offset"].as_u64().unwrap()
        + last["offset"].as_u64().unwrap()
        + last["n_bytes"].as_u64().unwrap()) as usize
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    let bytes = fixture_bytes("tiny.gguf");
    for cut in 0..data_end("tiny.gguf") {
        match parse_bytes(&bytes[..cut]) {
            Err(ErrorKind::Truncated { file_len, .. }) => assert_eq!(file_len, cut as u64),
            Err(other) => panic!("cut at {cut}: {other}"),
            Ok(_) => panic!("cut at {cut}: accepted"),
        }
    }
    assert!(
        parse_bytes(&bytes[..data_end("tiny.gguf")]).is_ok(),
        "trailing padding is optional"
    );
}

#[test]
fn truncation_says_where() {
    let bytes = fixture_bytes("tiny.gguf");
    let want = expected("tiny.gguf");
    let key_index = |key: &str| {
        want["metadata"]
            .as_array()
            .unwrap()
            .iter()
            .position(|m| m["key"] == key)
            .unwrap()
    };
    let tensor_index = |name: &str| {
        want["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .position(|t| t["name"] == name)
            .unwrap()
    };
    let cases = [
        (2, "the header".to_string()),
        (20, "the header".to_string()),
        (
            548,
            "the header (40 metadata entries, 13 tensor infos)".to_string(),
        ),
        (
            find(&bytes, "tokenizer.ggml.model") + 3,
            format!(
                "the key of metadata entry {}",
                key_index("tokenizer.ggml.model")
            ),
        ),
        (
            after(&bytes, "tokenizer.ggml.tokens") + 4 + 4 + 8 + 20,
            "metadata key `tokenizer.ggml.tokens`".to_string(),
        ),
        (
            after(&bytes, "test.arr.nested") + 4 + 4 + 8 + 6,
            "metadata key `test.arr.nested`".to_string(),
        ),
        (
            find(&bytes, "blk.1.q4_k.weight") + 4,
            format!("tensor info {}", tensor_index("blk.1.q4_k.weight")),
        ),
        (
            after(&bytes, "blk.1.q4_k.weight") + 6,
            format!(
                "tensor info {} (`blk.1.q4_k.weight`)",
                tensor_index("blk.1.q4_k.weight")
            ),
        ),
        (
            data_end("tiny.gguf") - 1,
            "tensor `blk.1.q6_k.weight` data".to_string(),
        ),
    ];
    for (cut, where_) in cases {
        let (err, msg) = open_err("cut", &bytes[..cut]);
        assert!(
            matches!(&err.kind, ErrorKind::Truncated { what, .. } if *what == where_),
            "cut at {cut}: {msg}"
        );
        assert!(msg.contains("truncated") && msg.contains(&where_), "{msg}");
    }
}

#[test]
fn huge_counts_and_lengths_fail_before_allocating() {
    let good = fixture_bytes("tiny.gguf");
    // (what to corrupt, where its u64 lies, what the error must name)
    let cases = [
        (
            "string array count 2^60",
            after(&good, "tokenizer.ggml.tokens") + 8,
            1u64 << 60,
            "metadata key `tokenizer.ggml.tokens`",
        ),
        (
            "u8 array count",
            after(&good, "test.arr.u8") + 8,
            u64::MAX,
            "metadata key `test.arr.u8`",
        ),
        (
            "string length",
            after(&good, "general.name") + 4,
            1 << 62,
            "metadata key `general.name`",
        ),
        (
            "key length",
            find(&good, "qwen2.block_count") - 8,
            1 << 50,
            "the key of metadata entry 2",
        ),
        (
            "tensor name length",
            find(&good, "blk.0.q8_0.weight") - 8,
            u64::MAX - 3,
            "tensor info 7",
        ),
        ("metadata count", 16, 1 << 40, "metadata entries"),
        ("tensor count", 8, u64::MAX, "tensor infos"),
    ];
    for (label, at, value, where_) in cases {
        let mut bytes = good.clone();
        put_u64(&mut bytes, at, value);
        let err = parse_err(&bytes);
        assert!(
            matches!(&err, ErrorKind::Truncated { what, .. } if what.contains(where_)),
            "{label}: {err}"
        );
    }
}

// --- tensor infos that do not describe the data ---

#[test]
fn unknown_tensor_type_names_the_tensor_and_the_id() {
    let mut bytes = fixture_bytes("tiny.gguf");
    let at = type_id_pos(&bytes, "blk.0.q8_0.weight");
    put_u32(&mut bytes, at, 999);
    let (err, msg) = open_err("type999", &bytes);
    assert!(
        matches!(&err.kind, ErrorKind::UnknownTensorType { tensor, id: 999 } if tensor == "blk.0.q8_0.weight")
    );
    assert!(
        msg.contains("`blk.0.q8_0.weight`") && msg.contains("999"),
        "{msg}"
    );
}

#[test]
fn shapes_that_do_not_fit_the_data_are_refused() {
    let good = fixture_bytes("tiny.gguf");
    let with_dim = |name: &str, i: usize, v: u64| {
        let mut bytes = good.clone();
        put_u64(&mut bytes, dim_pos(&good, name, i), v);
        bytes
    };
    // ne[0] not a whole number of blocks.
    let (err, msg) = open_err("ne0", &with_dim("blk.1.q4_k.weight", 0, 255));
    assert!(
        matches!(&err.kind, ErrorKind::BadTensor { tensor, .. } if tensor == "blk.1.q4_k.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("ne[0] = 255") && msg.contains("Q4_K block size 256"),
        "{msg}"
    );

    // One more row runs into the next tensor.
    let (err, msg) = open_err("overlap", &with_dim("blk.0.q5_0.weight", 1, 3));
    assert!(
        matches!(&err.kind, ErrorKind::BadTensor { tensor, .. } if tensor == "blk.0.q5_0.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("`blk.0.q5_1.weight`") && msg.contains("264 bytes"),
        "{msg}"
    );

    // One more row of the last tensor runs past the end of the file.
    let err = parse_err(&with_dim("blk.1.q6_k.weight", 1, 4));
    assert!(
        matches!(&err, ErrorKind::Truncated { what, .. } if what == "tensor `blk.1.q6_k.weight` data"),
        "{err}"
    );

    // Element counts that overflow.
    let mut bytes = with_dim("f32.3d", 0, 1 << 40);
    put_u64(&mut bytes, dim_pos(&good, "f32.3d", 1), 1 << 40);
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, ErrorKind::BadTensor { tensor, msg } if tensor == "f32.3d" && msg.contains("overflow")),
        "{err}"
    );

    // Element count fine, byte count not: 2^63 f16 values.
    let err = parse_err(&with_dim("f16.vec", 0, 1 << 63));
    assert!(
        matches!(&err, ErrorKind::BadTensor { tensor, msg } if tensor == "f16.vec" && msg.contains("overflow")),
        "{err}"
    );

    // More dimensions than ggml has.
    let mut bytes = good.clone();
    put_u32(&mut bytes, after(&good, "f16.vec"), 5);
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, ErrorKind::BadTensor { tensor, msg } if tensor == "f16.vec" && msg.contains("5 dimensions")),
        "{err}"
    );
}

#[test]
fn offsets_must_respect_the_files_alignment() {
    let good = fixture_bytes("align64.gguf");
    let offset_at = type_id_pos(&good, "b.odd") + 4;
    let mut bytes = good.clone();
    put_u64(&mut bytes, offset_at, 96); // a multiple of the default 32, but not of this file's 64
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, ErrorKind::BadTensor { tensor, msg } if tensor == "b.odd" && msg.contains("alignment 64")),
        "{err}"
    );

    let mut bytes = good.clone();
    put_u32(&mut bytes, after(&good, "general.alignment") + 4, 48);
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, ErrorKind::Invalid { what, msg } if what.contains("general.alignment") && msg.contains("48")),
        "{err}"
    );
}

// --- malformed metadata ---

#[test]
fn invalid_utf8_names_the_key() {
    let mut bytes = fixture_bytes("tiny.gguf");
    let at = find(&bytes, "gpt2");
    bytes[at] = 0xFF;
    let (err, msg) = open_err("utf8", &bytes);
    assert!(
        matches!(&err.kind, ErrorKind::NotUtf8(what) if what == "metadata key `tokenizer.ggml.model`"),
        "{msg}"
    );
    assert!(msg.contains("UTF-8"), "{msg}");
}

#[test]
fn malformed_metadata_is_refused_with_the_key() {
    let good = fixture_bytes("tiny.gguf");
    let mut bytes = good.clone();
    put_u32(&mut bytes, after(&good, "test.u8"), 77);
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, ErrorKind::Invalid { what, msg } if what == "metadata key `test.u8`" && msg.contains("77")),
        "{err}"
    );

    let mut bytes = good.clone();
    bytes[after(&good, "test.bool_true") + 4] = 2;
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, ErrorKind::Invalid { what, .. } if what == "metadata key `test.bool_true`"),
        "{err}"
    );

    let mut bytes = good.clone();
    let at = find(&good, "test.u8");
    bytes[at..at + 7].copy_from_slice(b"test.i8");
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, ErrorKind::Invalid { what, msg } if what == "metadata key `test.i8`" && msg.contains("twice")),
        "{err}"
    );

    let mut bytes = good.clone();
    let at = find(&good, "blk.0.q4_0.weight");
    bytes[at..at + 17].copy_from_slice(b"blk.0.q4_1.weight");
    let err = parse_err(&bytes);
    assert!(
        matches!(&err, ErrorKind::Invalid { what, .. } if what == "tensor `blk.0.q4_1.weight`"),
        "{err}"
    );
}

/// A minimal GGUF v3 with the given metadata entries (key, type id and value bytes) and no tensors.
fn handmade(kvs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (key, value) in kvs {
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key.as_bytes());
        b.extend(value);
    }
    b
}

#[test]
fn arrays_may_be_empty_but_not_nested_without_end() {
    let mut empty = 9u32.to_le_bytes().to_vec(); // array
    empty.extend(4u32.to_le_bytes()); // of u32
    empty.extend(0u64.to_le_bytes());
    let header = parse_bytes(&handmade(&[("empty", empty)])).unwrap();
    assert_eq!(
        header.metadata,
        [("empty".to_string(), Value::Array(Array::U32(vec![])))]
    );

    let mut deep = Vec::new();
    for _ in 0..100 {
        deep.extend(9u32.to_le_bytes()); // array of arrays
        deep.extend(1u64.to_le_bytes());
    }
    let mut value = 9u32.to_le_bytes().to_vec();
    value.extend(deep);
    let err = parse_err(&handmade(&[("deep", value)]));
    assert!(
        matches!(&err, ErrorKind::Invalid { what, msg } if what == "metadata key `deep`" && msg.contains("nested")),
        "{err}"
    );
}

#[test]
fn unsupported_tensor_type_is_refused_when_dequantized_not_when_opened() {
    let mut bytes = fixture_bytes("tiny.gguf");
    let at = type_id_pos(&bytes, "f32.3d");
    put_u32(&mut bytes, at, GgmlType::I32.id()); // same size as F32, so the header stays valid
    let tmp = TempFile::new("i32", &bytes);
    let gguf = GgufFile::open(&tmp.0).unwrap();
    assert_eq!(gguf.tensor("f32.3d").unwrap().ty, GgmlType::I32);
    assert_eq!(gguf.tensor_bytes("f32.3d").unwrap().len(), 120);
    let err = gguf.dequantize("f32.3d").unwrap_err();
    assert!(matches!(
        err.kind,
        ErrorKind::Dequant {
            source: DequantError::Unsupported(GgmlType::I32),
            ..
        }
    ));
    assert_one_line_naming(&err.to_string(), &tmp.0);
    assert!(err.to_string().contains("`f32.3d`") && err.to_string().contains("I32"));
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let path = fixture("no-such-file.gguf");
    let err = GgufFile::open(&path).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Io { .. }));
    assert_one_line_naming(&err.to_string(), &path);
}

/// Random byte corruption of the header, xorshift-seeded: any outcome but a panic is fine, and
/// whatever parses must also dequantize without panicking.
#[test]
fn random_corruption_never_panics() {
    let good = fixture_bytes("tiny.gguf");
    let header_len = expected("tiny.gguf")["data_offset"].as_u64().unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut refused = 0;
    for _ in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % header_len) as usize;
            bytes[at] ^= 1 << (next() % 8);
        }
        match parse_bytes(&bytes) {
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().contains('\n'));
            }
            Ok(h) => {
                for t in h.tensors.iter().filter(|t| t.ty.can_dequantize()) {
                    let start = (h.data_start + t.offset) as usize;
                    let mut out = vec![0.0; t.n_elements as usize];
                    dequantize_into(t.ty, &bytes[start..start + t.n_bytes as usize], &mut out)
                        .unwrap();
                }
            }
        }
    }
    assert!(refused > 100, "only {refused} corruptions were noticed");
}
