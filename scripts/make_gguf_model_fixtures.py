#!/usr/bin/env python3
"""Convert the tiny HF test checkpoints to GGUF with llama.cpp's own converter.

The files land in tests/fixtures/gguf/models/ and are read by the tests in src/gguf/config.rs,
src/gguf/names.rs and src/gguf/tokenizer.rs. The writer is llama.cpp's `convert_hf_to_gguf.py`,
not ours, so those tests check our reading of GGUF against an independent implementation.

Run by hand, never by CI. It needs:

  * llama.cpp's converter. It ships inside the llama-cpp-python source package, which the
    fixtures were made with (version 0.3.36, vendoring llama.cpp 0c1e57098 and gguf-py 0.19.0):

        mkdir -p /tmp/llcpp && cd /tmp/llcpp
        pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d .
        tar xzf llama_cpp_python-0.3.36.tar.gz
        # the converter is llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py

    Nothing has to be built; only the Python files are used.

  * a python with torch, transformers, numpy, safetensors and sentencepiece (the converter
    imports sentencepiece before it notices that there is no tokenizer.model). The fixtures were
    made with thinkbench's reference venv (scripts/setup-pyref.sh: torch 2.13.0, transformers
    5.24.0, numpy 2.4.6, safetensors 0.8.0) plus sentencepiece 0.2.3:

        python3.11 -m venv /tmp/venv-conv
        /tmp/venv-conv/bin/pip install sentencepiece
        echo ~/.cache/thinkbench/pyref/lib/python3.11/site-packages \\
            > /tmp/venv-conv/lib/python3.11/site-packages/pyref.pth

Then:

    /tmp/venv-conv/bin/python scripts/make_gguf_model_fixtures.py \\
        --llama-cpp /tmp/llcpp/llama_cpp_python-0.3.36/vendor/llama.cpp [NAME ...]

(or set LLAMA_CPP_DIR instead of --llama-cpp). Two runs write byte-identical files.

The one change to the converter's behaviour
-------------------------------------------
The converter names the pre-tokenizer (`tokenizer.ggml.pre`) by hashing the ids the HF tokenizer
gives for a fixed text, and refuses a hash it does not know. Our fixtures share a small BPE
tokenizer of their own, whose hash no released model has (cdcee7c7…; a339af80… for the qwen2
folder, where transformers 5 swaps in Qwen2's own split regex), so the unmodified converter stops
with "BPE pre-tokenizer was not recognized". This script does not edit the converter's files. It
imports the converter and wraps one method, `TextModel.get_vocab_base_pre`: the original runs
first; only if it raises that error, and only if the model's tokenizer.json pre-tokenizer is
exactly `ByteLevel` with `use_regex: true` and `add_prefix_space: false`, the wrapper answers
"gpt-2". A ByteLevel pre-tokenizer with use_regex splits with GPT-2's regex, which is the regex
llama.cpp uses for the "gpt-2" pre type, so that is the name the converter would have written had
it known the hash. Any other tokenizer still fails as before. Everything else (tensor layout,
metadata, vocabulary, merges, chat template) is the converter's own output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "fixtures" / "models"
OUT = ROOT / "tests" / "fixtures" / "gguf" / "models"

# (output file, HF fixture folder, --outtype)
CONVERSIONS = [
    ("qwen2.gguf", "qwen2", "f32"),
    ("qwen2.f16.gguf", "qwen2", "f16"),
    ("llama.gguf", "llama", "f32"),
    ("qwen3.gguf", "qwen3", "f32"),
    ("deepseek_v2_lite.gguf", "deepseek_v2_lite", "f32"),
    ("deepseek_v2_grouped.f16.gguf", "deepseek_v2_grouped", "f16"),
    ("deepseek_v3_qlora.gguf", "deepseek_v3_qlora", "f32"),
]


def is_gpt2_byte_level(model_dir: Path) -> bool:
    """The tokenizer.json pre-tokenizer is a plain ByteLevel that splits with GPT-2's regex."""
    with open(model_dir / "tokenizer.json", encoding="utf-8") as f:
        pre = json.load(f).get("pre_tokenizer") or {}
    return (
        pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True) is True
        and pre.get("add_prefix_space", False) is False
    )


def convert_one(llama_cpp: Path, src: Path, out: Path, outtype: str) -> None:
    """Runs the converter's main() in this process, with the one wrapper described above."""
    sys.path[:0] = [str(llama_cpp), str(llama_cpp / "gguf-py")]
    import convert_hf_to_gguf  # noqa: E402  (the converter's own entry point)
    from conversion.base import TextModel  # noqa: E402

    original = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            if not is_gpt2_byte_level(Path(self.dir_model)):
                raise
            print(f"[make_gguf_model_fixtures] unknown pre-tokenizer hash for {self.dir_model}; "
                  "its tokenizer.json pre-tokenizer is ByteLevel(use_regex) = GPT-2's regex, "
                  "so tokenizer.ggml.pre = \"gpt-2\"", file=sys.stderr)
            return "gpt-2"

    TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", "--outtype", outtype, "--outfile", str(out), str(src)]
    convert_hf_to_gguf.main()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", type=Path, default=os.environ.get("LLAMA_CPP_DIR"),
                    help="the llama.cpp folder holding convert_hf_to_gguf.py and gguf-py/")
    ap.add_argument("--convert-one", nargs=3, metavar=("SRC", "OUT", "OUTTYPE"), help=argparse.SUPPRESS)
    ap.add_argument("names", nargs="*", help="output files to (re)make, e.g. qwen2.gguf; default all")
    args = ap.parse_args()
    if args.llama_cpp is None or not (Path(args.llama_cpp) / "convert_hf_to_gguf.py").is_file():
        sys.exit("give --llama-cpp DIR (or LLAMA_CPP_DIR): the folder with convert_hf_to_gguf.py; see the docstring")
    llama_cpp = Path(args.llama_cpp).resolve()

    if args.convert_one:
        src, out, outtype = args.convert_one
        convert_one(llama_cpp, Path(src), Path(out), outtype)
        return

    todo = [c for c in CONVERSIONS if not args.names or c[0] in args.names]
    unknown = set(args.names) - {c[0] for c in CONVERSIONS}
    if unknown:
        sys.exit(f"unknown fixture(s): {sorted(unknown)}; known: {[c[0] for c in CONVERSIONS]}")
    OUT.mkdir(parents=True, exist_ok=True)
    for out_name, folder, outtype in todo:
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            tmp_out = Path(tmp) / out_name
            # One process per conversion: the converter keeps module-level state.
            subprocess.run(
                [sys.executable, __file__, "--llama-cpp", str(llama_cpp),
                 "--convert-one", str(MODELS / folder), str(tmp_out), outtype],
                check=True,
            )
            os.replace(tmp_out, OUT / out_name)
        data = (OUT / out_name).read_bytes()
        print(f"{out_name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
