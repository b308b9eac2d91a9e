#!/usr/bin/env python3
"""Write the GGUF reader's fixtures under tests/fixtures/gguf/, with gguf-py as the reference.

gguf-py (the `gguf` package, by llama.cpp's authors) writes the files and computes every expected
value, so the Rust tests in src/gguf/ compare against an implementation that is not ours.

Run by hand, never by CI, with a python that has gguf 0.19.0 and numpy:

    python3 -m venv /tmp/gguf-venv
    /tmp/gguf-venv/bin/pip install gguf==0.19.0 numpy
    /tmp/gguf-venv/bin/python scripts/make_gguf_fixtures.py

What it writes (fixed seeds: two runs give byte-identical files):

  tiny.gguf           metadata of every value type, and one tensor of each type the reader
                      dequantizes; default alignment (no general.alignment key)
  align64.gguf        general.alignment = 64 and two F32 tensors whose sizes are not multiples of 64
  tiny.expected.f32   gguf-py's dequantization of every tensor of tiny.gguf, little-endian f32,
                      concatenated in tensor order
  expected.json       what was written: each key with its gguf-py value type and value, each tensor's
                      name, type, dims (GGML order, ne[0] first), offset, byte size and where its values
                      lie in tiny.expected.f32; the data-section start as gguf-py's GGUFReader sees it;
                      and gguf-py's table of ggml types (id, block size, bytes per block)

Tensors that gguf-py can quantize (BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) are quantized from random
normal data.  gguf-py cannot quantize K-quants, so those tensors are random bytes with their f16
scale fields overwritten by finite, modest values; dequantizing any bytes is well defined, and
gguf.quants.dequantize gives the expected values.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GGUF_VERSION_REQUIRED = "0.19.0"
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gguf"

try:
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFValueType as V
    from importlib.metadata import version as _pkg_version
except ImportError as e:  # pragma: no cover - a setup problem, said plainly
    sys.exit(f"make_gguf_fixtures.py needs gguf=={GGUF_VERSION_REQUIRED} and numpy ({e}); see the docstring")

if _pkg_version("gguf") != GGUF_VERSION_REQUIRED:
    sys.exit(f"make_gguf_fixtures.py needs gguf=={GGUF_VERSION_REQUIRED}, found {_pkg_version('gguf')}")


# Byte offsets of the f16 super-block scales (d, and dmin where the type has one) in each K-quant
# block, from the block layouts in ggml-common.h.  Random bytes there could be inf/NaN or huge.
K_QUANT_SCALE_OFFSETS = {
    T.Q2_K: [80, 82],   # scales[16] qs[64] d dmin
    T.Q3_K: [108],      # hmask[32] qs[64] scales[12] d
    T.Q4_K: [0, 2],     # d dmin scales[12] qs[128]
    T.Q5_K: [0, 2],     # d dmin scales[12] qh[32] qs[128]
    T.Q6_K: [208],      # ql[128] qh[64] scales[16] d
}


def metadata() -> list[tuple[str, V, object, V | None]]:
    """(key, value type, value, array element type) in the order they are written."""
    tokens = ["<unk>", "<s>", "</s>", "Ġthe", "▁hello", "héllo → 世界 🦀", "", "a b", "<think>", "</think>"]
    return [
        ("general.name", V.STRING, "thinkbench gguf fixture", None),
        ("qwen2.block_count", V.UINT32, 2, None),
        ("qwen2.context_length", V.UINT64, 4096, None),      # u64 where most writers use u32
        ("qwen2.embedding_length", V.INT32, 64, None),       # i32 where most writers use u32
        ("qwen2.rope.freq_base", V.FLOAT32, 1000000.0, None),
        ("qwen2.attention.layer_norm_rms_epsilon", V.FLOAT32, 1e-6, None),
        ("test.u8", V.UINT8, 200, None),
        ("test.i8", V.INT8, -100, None),
        ("test.u16", V.UINT16, 60000, None),
        ("test.i16", V.INT16, -30000, None),
        ("test.u32", V.UINT32, 4000000000, None),
        ("test.i32", V.INT32, -2000000000, None),
        ("test.u64", V.UINT64, 2**63 + 5, None),
        ("test.i64", V.INT64, -(2**62) - 3, None),
        ("test.f32", V.FLOAT32, 0.1, None),
        ("test.f64", V.FLOAT64, 0.1, None),
        ("test.bool_true", V.BOOL, True, None),
        ("test.bool_false", V.BOOL, False, None),
        ("test.string_unicode", V.STRING, "héllo → 世界 🦀", None),
        ("test.string_empty", V.STRING, "", None),
        ("test.arr.u8", V.ARRAY, [0, 1, 255], V.UINT8),
        ("test.arr.i8", V.ARRAY, [-128, 0, 127], V.INT8),
        ("test.arr.u16", V.ARRAY, [0, 65535], V.UINT16),
        ("test.arr.i16", V.ARRAY, [-32768, 32767], V.INT16),
        ("test.arr.u32", V.ARRAY, [1, 2, 4000000000], V.UINT32),
        ("test.arr.i32", V.ARRAY, [-5, 0, 7], V.INT32),
        ("test.arr.u64", V.ARRAY, [2**64 - 1, 0], V.UINT64),
        ("test.arr.i64", V.ARRAY, [-(2**63), 2**63 - 1], V.INT64),
        ("test.arr.f32", V.ARRAY, [0.5, -1.25, 0.1], V.FLOAT32),
        ("test.arr.f64", V.ARRAY, [0.1, -2.5e300], V.FLOAT64),
        ("test.arr.bool", V.ARRAY, [True, False, True], V.BOOL),
        ("test.arr.nested", V.ARRAY, [[1, 2], [3]], V.ARRAY),  # arrays of i32 arrays
        ("tokenizer.ggml.model", V.STRING, "gpt2", None),
        ("tokenizer.ggml.tokens", V.ARRAY, tokens, V.STRING),
        ("tokenizer.ggml.scores", V.ARRAY, [float(-i) / 4 for i in range(len(tokens))], V.FLOAT32),
        ("tokenizer.ggml.token_type", V.ARRAY, [3, 3, 3, 1, 1, 1, 1, 1, 4, 4], V.INT32),
        ("tokenizer.ggml.merges", V.ARRAY, ["Ġ t", "Ġt he", "h é"], V.STRING),
        ("tokenizer.ggml.bos_token_id", V.UINT32, 1, None),
        ("tokenizer.ggml.eos_token_id", V.UINT32, 2, None),
    ]


def as_written(vtype: V, value: object, sub: V | None = None) -> object:
    """The value as it lies in the file: floats rounded to f32 where the type is f32."""
    if vtype == V.FLOAT32:
        return float(np.float32(value))
    if vtype == V.ARRAY:
        elem = sub if sub is not None else V.get_type(value[0])
        inner = V.INT32 if elem == V.ARRAY else None  # the nested lists are of Python ints
        return [as_written(elem, v, inner) for v in value]
    return value


def special_floats(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random values plus the edge cases a float conversion can get wrong."""
    x = rng.standard_normal(n).astype(np.float32)
    x[:6] = [0.0, -0.0, np.inf, -np.inf, 6.0e-8, -3.0e-39]  # f16 subnormal; f32 subnormal
    x[6] = np.nan
    return x


def k_quant_bytes(rng: np.random.Generator, qtype: T, n_blocks: int) -> np.ndarray:
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in K_QUANT_SCALE_OFFSETS[qtype]:
        scale = rng.uniform(0.001, 0.1, size=n_blocks) * rng.choice([-1.0, 1.0], size=n_blocks)
        raw[:, off:off + 2] = scale.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return raw


def tensors(rng: np.random.Generator) -> list[tuple[str, T, np.ndarray, tuple[int, ...]]]:
    """(name, type, raw bytes or float array as stored, numpy shape = dims in reverse GGML order)."""
    out: list[tuple[str, T, np.ndarray, tuple[int, ...]]] = []
    out.append(("f32.3d", T.F32, rng.standard_normal((2, 3, 5)).astype(np.float32), (2, 3, 5)))
    out.append(("f16.vec", T.F16, special_floats(rng, 40).astype(np.float16), (40,)))
    bf16 = gguf.quants.quantize(special_floats(rng, 24).reshape(3, 8), T.BF16)
    out.append(("bf16.mat", T.BF16, bf16, (3, 8)))
    for qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        data = rng.standard_normal((2, 128)).astype(np.float32)
        out.append((f"blk.0.{qtype.name.lower()}.weight", qtype, gguf.quants.quantize(data, qtype), (2, 128)))
    for qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        rows, blocks_per_row = 3, 1
        raw = k_quant_bytes(rng, qtype, rows * blocks_per_row).reshape(rows, -1)
        out.append((f"blk.1.{qtype.name.lower()}.weight", qtype, raw, (rows, 256 * blocks_per_row)))
    return out


def add_kv(w: gguf.GGUFWriter, key: str, vtype: V, value: object, sub: V | None) -> None:
    # add_key_value, not add_string/add_array: those silently drop empty values.
    w.add_key_value(key, value, vtype, sub_type=sub)


def write_file(path: Path, kvs, tens, alignment: int | None) -> None:
    w = gguf.GGUFWriter(str(path), "qwen2")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, vtype, value, sub in kvs:
        add_kv(w, key, vtype, value, sub)
    for name, qtype, data, _shape in tens:
        raw_dtype = qtype if data.dtype == np.uint8 else None
        w.add_tensor(name, data, raw_shape=data.shape if raw_dtype else None, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def describe(path: Path, kvs, tens, values_file: str | None, blob: bytearray) -> dict:
    """What gguf-py's reader sees in the file, plus the values that were written."""
    reader = gguf.GGUFReader(str(path))
    by_name = {t.name: t for t in reader.tensors}
    entries = []
    for name, qtype, data, shape in tens:
        rt = by_name[name]
        assert rt.tensor_type == qtype, name
        raw = np.asarray(rt.data).view(np.uint8).reshape(-1)
        entry = {
            "name": name,
            "type": qtype.name,
            "type_id": int(qtype),
            "ne": [int(d) for d in rt.shape],  # gguf-py's reader lists dims in GGML order
            "offset": int(rt.data_offset - reader.data_offset),
            "n_bytes": int(rt.n_bytes),
            "n_elements": int(rt.n_elements),
        }
        assert entry["ne"] == list(reversed(shape)), (name, entry["ne"], shape)
        if values_file is not None:
            values = gguf.quants.dequantize(raw, qtype).astype("<f4").reshape(-1)
            assert values.size == rt.n_elements, name
            entry["values_file"] = values_file
            entry["values_start"] = len(blob) // 4
            blob += values.tobytes()
        entries.append(entry)
    keys = [{"key": "general.architecture", "type": "STRING", "value": "qwen2"}]
    if "general.alignment" in reader.fields:
        keys.append({"key": "general.alignment", "type": "UINT32", "value": int(reader.alignment)})
    for key, vtype, value, sub in kvs:
        item = {"key": key, "type": vtype.name, "value": as_written(vtype, value, sub)}
        if sub is not None:
            item["element_type"] = sub.name
        keys.append(item)
    assert set(reader.fields) - {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"} == {k["key"] for k in keys}
    return {
        "version": 3,
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "file_size": path.stat().st_size,
        "metadata": keys,
        "tensors": entries,
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    kvs = metadata()
    tens = tensors(rng)
    blob = bytearray()
    write_file(OUT / "tiny.gguf", kvs, tens, alignment=None)
    files = {"tiny.gguf": describe(OUT / "tiny.gguf", kvs, tens, "tiny.expected.f32", blob)}

    small = [("a.odd", T.F32, rng.standard_normal(3).astype(np.float32), (3,)),
             ("b.odd", T.F32, rng.standard_normal((1, 5)).astype(np.float32), (1, 5))]
    small_kvs = [("general.name", V.STRING, "alignment fixture", None)]
    write_file(OUT / "align64.gguf", small_kvs, small, alignment=64)
    files["align64.gguf"] = describe(OUT / "align64.gguf", small_kvs, small, None, bytearray())

    (OUT / "tiny.expected.f32").write_bytes(bytes(blob))
    types = {t.name: {"id": int(t), "block_size": bs, "type_size": ts} for t, (bs, ts) in gguf.GGML_QUANT_SIZES.items()}
    doc = {
        "generator": "scripts/make_gguf_fixtures.py",
        "gguf_py_version": _pkg_version("gguf"),
        "numpy_version": np.__version__,
        "files": files,
        "ggml_types": types,
    }
    # NaN and infinities only ever go into the .f32 file, so this JSON is strict.
    (OUT / "expected.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total} bytes in all)")


if __name__ == "__main__":
    main()
