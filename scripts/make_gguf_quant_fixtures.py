#!/usr/bin/env python3
"""Quantized GGUF fixtures and their gguf-py-dequantized references.

The files land in tests/fixtures/gguf/quant/ and are read by tests/integration/gguf_quant.rs,
which checks that a quantized GGUF (whose Q8_0 / Q4_0 tensors thinkbench runs as stored blocks)
generates exactly as the same model with every quantized tensor dequantized by gguf-py.

  qwen2.q8_0.gguf                  llama.cpp's own convert_hf_to_gguf.py --outtype q8_0 of the
                                   qwen2 HF test checkpoint; the converter decides which tensors
                                   are Q8_0 (every matrix, the embedding and the head) and which
                                   stay F32 (norms, biases).
  deepseek_v2_lite.q4_0.gguf       tests/fixtures/gguf/models/deepseek_v2_lite.gguf (the
                                   converter's F32 file) rewritten with gguf-py's GGUFWriter:
                                   every metadata key/value and tensor copied as is, except the
                                   2-D and stacked 3-D weights whose ne[0] is a multiple of 32 and
                                   that are not the token embedding, a norm or the router
                                   (`token_embd`, `*_norm*`, `ffn_gate_inp`, `exp_probs_b`); those
                                   go through gguf.quants.quantize(..., Q4_0), the numpy port of
                                   llama.cpp's reference quantizer.
  qwen2_k.q4_k_m.gguf              a random HF qwen2 (the qwen2 test checkpoint's config and
                                   tokenizer, with hidden 256, intermediate 256, 2 layers, so every
                                   matrix row is a multiple of 256 weights; torch's initializer
                                   under a fixed seed, K_MODEL / K_SEED below) converted to F32 by
                                   llama.cpp's convert_hf_to_gguf.py, then quantized by llama.cpp's
                                   own quantizer (llama_model_quantize, MOSTLY_Q4_K_M, 1 thread)
                                   as built into llama-cpp-python 0.3.36: llama.cpp picks Q4_K and
                                   Q6_K per tensor (the script prints which landed, and fails
                                   unless both did).
  <name>.dequant.gguf              for each of the three: the same file (metadata copied as is, the
                                   tensors in the same order) with every Q8_0 / Q4_0 / Q4_K / Q6_K
                                   tensor replaced by gguf.quants.dequantize of its bytes, F32.

The references are computed by gguf-py, not by thinkbench, so the test compares our block kernels
and our GGUF dequantizer with an independent implementation.

Run by hand, never by CI. It needs what scripts/make_gguf_model_fixtures.py needs (read its
docstring): llama.cpp's converter from the llama-cpp-python 0.3.36 source package (vendoring
llama.cpp 0c1e57098 and gguf-py 0.19.0; only its Python files are used) and a python with torch,
transformers, numpy, safetensors and sentencepiece (the fixtures were made with thinkbench's
reference venv: torch 2.13.0, transformers 5.24.0, numpy 2.4.6, safetensors 0.8.0, plus
sentencepiece 0.2.3). The Q8_0 conversion is that script's own `--convert-one`, with the same
wrapper for our tokenizer's unknown pre-tokenizer hash; the rewriting and dequantizing use the
vendored gguf-py (put first on sys.path, so no other installed gguf is picked up). The Q4_K_M
step also needs llama-cpp-python 0.3.36 built and importable (`import llama_cpp`):
scripts/setup-llamacpp.sh builds it into thinkbench's reference venv (~/.cache/thinkbench/pyref,
which also has torch, transformers and sentencepiece) and unpacks the source package with the
converter. Then:

    ~/.cache/thinkbench/pyref/bin/python scripts/make_gguf_quant_fixtures.py \\
        --llama-cpp ~/.cache/thinkbench/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp

(or set LLAMA_CPP_DIR instead of --llama-cpp). Nothing is random: two runs write byte-identical
files (the script prints each file's sha256). After writing, it reads every file back with gguf-py's
GGUFReader and checks that each metadata field's encoded bytes equal the source's, that every
tensor left alone is byte-identical, and that every quantized / dequantized tensor is exactly what
gguf.quants gives.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "fixtures" / "models"
F32_GGUFS = ROOT / "tests" / "fixtures" / "gguf" / "models"
OUT = ROOT / "tests" / "fixtures" / "gguf" / "quant"
CONVERTER_SCRIPT = ROOT / "scripts" / "make_gguf_model_fixtures.py"

# Tensors that stay as they are in the Q4_0 rewrite, whatever their shape (llama.cpp keeps these
# in float too: embeddings, norms, the MoE router and its bias).
KEEP_FLOAT = ("token_embd", "_norm", "ffn_gate_inp", "exp_probs_b")


def gguf_module(llama_cpp: Path):
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    import gguf  # noqa: E402  (the vendored gguf-py 0.19.0)

    assert Path(gguf.__file__).resolve().is_relative_to(llama_cpp.resolve()), gguf.__file__
    return gguf


def convert(llama_cpp: Path, src: Path, out: Path, outtype: str) -> None:
    """llama.cpp's converter, run by make_gguf_model_fixtures.py (its wrapper)."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        subprocess.run(
            [sys.executable, str(CONVERTER_SCRIPT), "--llama-cpp", str(llama_cpp),
             "--convert-one", str(src), str(tmp_out), outtype],
            check=True,
        )
        os.replace(tmp_out, out)


def convert_q8_0(llama_cpp: Path, folder: str, out: Path) -> None:
    """llama.cpp's converter, --outtype q8_0, of a test checkpoint."""
    convert(llama_cpp, MODELS / folder, out, "q8_0")


# The K-quant model: the qwen2 test checkpoint's config (and tokenizer) with every matrix row a
# multiple of 256 weights, so that llama.cpp's Q4_K_M really stores Q4_K and Q6_K (it falls back
# to other types for rows that are not whole 256-weight super-blocks). Weights drawn by torch's
# default initializer under a fixed seed, with a wider spread than the default 0.02 so that the
# greedy tokens are clear winners.
K_MODEL = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1)
K_SEED = 20261203


def write_hf_qwen2_k(dst: Path) -> None:
    """A random HF qwen2 checkpoint (f32 safetensors) with K_MODEL's shapes and our tokenizer."""
    import json
    import shutil

    import torch
    import transformers

    config = json.loads((MODELS / "qwen2" / "config.json").read_text())
    config.update(K_MODEL)
    config.pop("torch_dtype", None)
    config["dtype"] = "float32"
    torch.manual_seed(K_SEED)
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**config)).float().eval()
    model.save_pretrained(dst, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(MODELS / "qwen2" / name, dst / name)


def quantize_q4_k_m(src: Path, out: Path) -> None:
    """llama.cpp's own quantizer (llama_model_quantize, as built into llama-cpp-python 0.3.36),
    file type MOSTLY_Q4_K_M, one thread, no importance matrix: it picks each tensor's type."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({src} -> {out}) failed: {rc}")


def new_writer(gguf, reader, path: Path):
    """A GGUFWriter holding `reader`'s metadata, key for key, type for type, in the same order."""
    fields = reader.fields
    arch = fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(path), arch)  # adds general.architecture first, as the source has it
    for name, field in fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # the header's own counts; the architecture is already there
        main = gguf.GGUFValueType(field.types[0])
        sub = None
        if main == gguf.GGUFValueType.ARRAY:
            if len(field.types) != 2:
                raise SystemExit(f"{name}: nested arrays are not copied by this script")
            sub = gguf.GGUFValueType(field.types[1])
        w.add_key_value(name, field.contents(), main, sub)
    if "general.alignment" in fields:
        w.data_alignment = int(fields["general.alignment"].contents())
    return w


def finish(w) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def wants_q4_0(t) -> bool:
    """A weight matrix (or stacked experts) that llama.cpp could store as Q4_0."""
    ne = [int(d) for d in t.shape]  # ggml order, ne[0] first
    return (
        t.name.endswith(".weight")
        and len(ne) in (2, 3)
        and ne[0] % 32 == 0
        and not any(k in t.name for k in KEEP_FLOAT)
    )


def float_data(gguf, t):
    """A float tensor's values in numpy order (the reverse of ggml's), as stored."""
    assert t.tensor_type == gguf.GGMLQuantizationType.F32, f"{t.name}: {t.tensor_type.name}"
    return t.data.reshape([int(d) for d in reversed(t.shape)])


def write_q4_0(gguf, src: Path, out: Path) -> list[str]:
    reader = gguf.GGUFReader(str(src))
    w = new_writer(gguf, reader, out)
    quantized = []
    for t in reader.tensors:
        if wants_q4_0(t):
            q = gguf.quants.quantize(float_data(gguf, t), gguf.GGMLQuantizationType.Q4_0)
            w.add_tensor(t.name, q, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
            quantized.append(t.name)
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    finish(w)
    return quantized


QUANT_TYPES = ("Q8_0", "Q4_0", "Q4_K", "Q6_K")


def write_dequant(gguf, src: Path, out: Path) -> list[str]:
    reader = gguf.GGUFReader(str(src))
    w = new_writer(gguf, reader, out)
    replaced = []
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape)]
        if t.tensor_type.name in QUANT_TYPES:
            values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
            assert list(values.shape) == shape, (t.name, values.shape, shape)
            w.add_tensor(t.name, values, raw_dtype=gguf.GGMLQuantizationType.F32)
            replaced.append(t.name)
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    finish(w)
    return replaced


def check(gguf, src: Path, out: Path, expect) -> None:
    """`out` has `src`'s metadata byte for byte and each tensor as `expect(src_tensor)` says."""
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(out))
    skip = ("GGUF.tensor_count",)
    fa = [(n, f) for n, f in a.fields.items() if n not in skip]
    fb = [(n, f) for n, f in b.fields.items() if n not in skip]
    assert [n for n, _ in fa] == [n for n, _ in fb], f"{out.name}: metadata keys differ"
    for (name, x), (_, y) in zip(fa, fb):
        assert x.types == y.types, f"{out.name}: {name} type"
        assert len(x.parts) == len(y.parts) and all(
            p.tobytes() == q.tobytes() for p, q in zip(x.parts, y.parts)
        ), f"{out.name}: {name} bytes"
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors], f"{out.name}: tensor order"
    for ta, tb in zip(a.tensors, b.tensors):
        assert list(ta.shape) == list(tb.shape), f"{out.name}: {ta.name} shape"
        ty, data = expect(ta)
        assert tb.tensor_type == ty, f"{out.name}: {ta.name} is {tb.tensor_type.name}, not {ty.name}"
        assert tb.data.tobytes() == data.tobytes(), f"{out.name}: {ta.name} values"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", type=Path, default=os.environ.get("LLAMA_CPP_DIR"),
                    help="the llama.cpp folder holding convert_hf_to_gguf.py and gguf-py/")
    args = ap.parse_args()
    if args.llama_cpp is None or not (Path(args.llama_cpp) / "convert_hf_to_gguf.py").is_file():
        sys.exit("give --llama-cpp DIR (or LLAMA_CPP_DIR): the folder with convert_hf_to_gguf.py; see the docstring")
    llama_cpp = Path(args.llama_cpp).resolve()
    gguf = gguf_module(llama_cpp)

    OUT.mkdir(parents=True, exist_ok=True)
    Q8_0, Q4_0, F32 = (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0,
                       gguf.GGMLQuantizationType.F32)

    # 1. qwen2, Q8_0 as llama.cpp's converter chooses.
    q8 = OUT / "qwen2.q8_0.gguf"
    convert_q8_0(llama_cpp, "qwen2", q8)

    # 2. deepseek_v2_lite, Q4_0 by gguf-py's quantizer over the converter's F32 file.
    f32 = F32_GGUFS / "deepseek_v2_lite.gguf"
    q4 = OUT / "deepseek_v2_lite.q4_0.gguf"
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        tmp_out = Path(tmp) / q4.name
        q4_names = write_q4_0(gguf, f32, tmp_out)
        os.replace(tmp_out, q4)

    def as_q4(t):
        if t.name in q4_names:
            return Q4_0, gguf.quants.quantize(float_data(gguf, t), Q4_0)
        return t.tensor_type, t.data

    check(gguf, f32, q4, as_q4)
    print(f"{q4.name}: Q4_0: {', '.join(q4_names)}")

    # 3. qwen2_k: a random qwen2 with 256-multiple rows, converted to F32 by llama.cpp's converter,
    # then quantized to Q4_K_M by llama.cpp's own quantizer.
    qk = OUT / "qwen2_k.q4_k_m.gguf"
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        hf, f32_k, tmp_out = Path(tmp) / "hf", Path(tmp) / "qwen2_k.f32.gguf", Path(tmp) / qk.name
        hf.mkdir()
        write_hf_qwen2_k(hf)
        convert(llama_cpp, hf, f32_k, "f32")
        quantize_q4_k_m(f32_k, tmp_out)
        os.replace(tmp_out, qk)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(qk)).tensors}
    print(f"{qk.name}: " + ", ".join(f"{n} {t}" for n, t in types.items()))
    assert {"Q4_K", "Q6_K"} <= set(types.values()), f"{qk.name}: no K types: {types}"

    # 4. The references: every quantized tensor dequantized by gguf-py, stored F32.
    def as_f32(t):
        if t.tensor_type.name in QUANT_TYPES:
            return F32, gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        return t.tensor_type, t.data

    for quant in (q8, q4, qk):
        ref = OUT / quant.name.replace(".gguf", ".dequant.gguf")
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            tmp_out = Path(tmp) / ref.name
            replaced = write_dequant(gguf, quant, tmp_out)
            os.replace(tmp_out, ref)
        check(gguf, quant, ref, as_f32)
        assert replaced, f"{quant.name} has no quantized tensor"
        kinds = sorted({t.tensor_type.name for t in gguf.GGUFReader(str(quant)).tensors})
        print(f"{quant.name}: tensor types {kinds}; {len(replaced)} dequantized into {ref.name}")

    total = 0
    for path in (q8, OUT / "qwen2.q8_0.dequant.gguf", q4, OUT / "deepseek_v2_lite.q4_0.dequant.gguf",
                 qk, OUT / "qwen2_k.q4_k_m.dequant.gguf"):
        data = path.read_bytes()
        total += len(data)
        print(f"{path.name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
