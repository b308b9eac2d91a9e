#!/usr/bin/env python3
"""thinkbench beside llama.cpp on the same GGUF files, same thread count, one run.

Run by scripts/bench_llamacpp.sh; not part of the test suite. The model is the random-weight
checkpoint shaped like DeepSeek-R1-Distill-Qwen-1.5B that scripts/bench_reference.py builds
(~/.cache/thinkbench/bench-models/qwen2_1p5b_shape). Subcommands:

  bench_llamacpp.py prepare --model-dir DIR --out GGUF_DIR --llama-cpp LLAMA_CPP_DIR --conv-python PY
      Makes GGUF_DIR/qwen2_1p5b_shape.{bf16,q8_0,q4_0,q4_k_m}.gguf (skips files already there):
        * BF16 and Q8_0 with llama.cpp's converter (convert_hf_to_gguf.py --outtype bf16 / q8_0),
          run through scripts/make_gguf_model_fixtures.py --convert-one, which wraps the one
          converter method that rejects our test tokenizer's pre-tokenizer hash (see its docstring);
        * Q4_0 and Q4_K_M from the BF16 file with llama.cpp's own quantizer (llama_model_quantize through
          llama-cpp-python, default params, ftypes MOSTLY_Q4_0 and MOSTLY_Q4_K_M), which picks its own types for
          some tensors (often Q6_K for output.weight).
      The model folder has no tokenizer, so the converter reads a scratch copy of it: config.json
      and generation_config.json copied, model.safetensors symlinked, and tokenizer.json /
      tokenizer_config.json from tests/fixtures/models/qwen2 (the converter pads the vocabulary
      with [PAD] tokens up to config.json's vocab_size). Writes GGUF_DIR/tensor_types.json.

  bench_llamacpp.py llama --model FILE.gguf --threads 2 --prefill 64 --decode 32 --repeat 2
      One llama.cpp measurement through llama-cpp-python; prints one JSON line.

  bench_llamacpp.py run --gguf-dir GGUF_DIR --thinkbench BIN --threads 2 --rounds 2 --results OUT.jsonl
      The side-by-side run: for each file, each round, each thinkbench variant: one thinkbench
      process, then one llama.cpp process, so the two engines take turns (this machine's speed
      drifts by tens of percent within a minute). Every result is one JSON line in OUT.jsonl.

  bench_llamacpp.py table OUT.jsonl [--gguf-dir GGUF_DIR]
      Prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FIXTURE = ROOT / "tests" / "fixtures" / "models" / "qwen2"
STEM = "qwen2_1p5b_shape"
KINDS = ["bf16", "q8_0", "q4_0", "q4_k_m"]  # file types, in table order
# llama.cpp's own quantizer makes these from the BF16 file (llama_ftype numbers).
QUANTIZED_BY_LLAMA = {"q4_0": 2, "q4_k_m": 15}

# thinkbench variants per file type: (label, extra arguments)
VARIANTS = {
    "bf16": [("dtype bf16", ["--dtype", "bf16"])],
    # Quantized files: the blocks run as stored; activations are f32.
    "q8_0": [("as stored", ["--dtype", "f32"])],
    # 4- and 6-bit blocks: the exact prefill (the default), and --prefill int8 (activations
    # rounded to 8 bits for the prompt's products, as llama.cpp does).
    "q4_0": [
        ("as stored", ["--dtype", "f32"]),
        ("--prefill int8", ["--dtype", "f32", "--prefill", "int8"]),
        # llama.cpp keeps output.weight at Q6_K in a Q4_0 file; this requantizes it to Q4_0.
        ("--quant q4_0", ["--dtype", "f32", "--quant", "q4_0"]),
    ],
    "q4_k_m": [
        ("as stored", ["--dtype", "f32"]),
        ("--prefill int8", ["--dtype", "f32", "--prefill", "int8"]),
    ],
}


def log(msg: str) -> None:
    print(f"[bench_llamacpp] {msg}", file=sys.stderr, flush=True)


def gguf_path(out: Path, kind: str) -> Path:
    return out / f"{STEM}.{kind}.gguf"


def load_avg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# --------------------------------------------------------------------------------------------
# prepare


def scratch_model_dir(model_dir: Path, out: Path) -> Path:
    """A folder the converter can read: the bench model plus the test tokenizer."""
    src = out / "hf_with_tokenizer"
    src.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json"):
        if (model_dir / name).exists():
            shutil.copyfile(model_dir / name, src / name)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER_FIXTURE / name, src / name)
    for weights in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.safetensors.index.json")):
        link = src / weights.name
        if link.is_symlink() or link.exists():
            if link.resolve() == weights.resolve():
                continue
            link.unlink()
        link.symlink_to(weights.resolve())
    return src


def convert(conv_python: str, llama_cpp: Path, src: Path, dst: Path, outtype: str) -> None:
    if dst.exists():
        log(f"{dst.name}: cached")
        return
    tmp = dst.with_name(dst.name + ".tmp")
    t0 = time.time()
    subprocess.run(
        [conv_python, str(ROOT / "scripts" / "make_gguf_model_fixtures.py"), "--llama-cpp", str(llama_cpp),
         "--convert-one", str(src), str(tmp), outtype],
        check=True,
    )
    os.replace(tmp, dst)
    log(f"{dst.name}: converted ({outtype}) in {time.time() - t0:.0f} s, {dst.stat().st_size / 1e9:.2f} GB")


def quantize_by_llama(src: Path, dst: Path, ftype: int, threads: int) -> None:
    if dst.exists():
        log(f"{dst.name}: cached")
        return
    import ctypes

    import llama_cpp

    tmp = dst.with_name(dst.name + ".tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    t0 = time.time()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed with {rc}")
    os.replace(tmp, dst)
    log(f"{dst.name}: quantized by llama.cpp in {time.time() - t0:.0f} s, {dst.stat().st_size / 1e9:.2f} GB")


def tensor_types(llama_cpp: Path, path: Path) -> dict:
    """Per file: how many tensors of each ggml type, and the types of token_embd / output."""
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    from gguf import GGUFReader  # llama.cpp's own reader

    reader = GGUFReader(str(path))
    counts: dict[str, int] = {}
    named = {}
    for t in reader.tensors:
        ty = t.tensor_type.name
        counts[ty] = counts.get(ty, 0) + 1
        if t.name in ("token_embd.weight", "output.weight"):
            named[t.name] = ty
    ffn_down = sorted({t.tensor_type.name for t in reader.tensors if t.name.endswith("ffn_down.weight")})
    return {"counts": counts, "token_embd.weight": named.get("token_embd.weight"),
            "output.weight": named.get("output.weight"), "ffn_down": ffn_down,
            "bytes": path.stat().st_size}


def prepare(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    llama_cpp = Path(args.llama_cpp).resolve()
    src = scratch_model_dir(Path(args.model_dir), out)
    convert(args.conv_python, llama_cpp, src, gguf_path(out, "bf16"), "bf16")
    convert(args.conv_python, llama_cpp, src, gguf_path(out, "q8_0"), "q8_0")
    for kind, ftype in QUANTIZED_BY_LLAMA.items():
        quantize_by_llama(gguf_path(out, "bf16"), gguf_path(out, kind), ftype, args.threads)
    types_file = out / "tensor_types.json"
    types = json.loads(types_file.read_text()) if types_file.exists() else {}
    for kind in KINDS:
        p = gguf_path(out, kind)
        if types.get(kind, {}).get("bytes") != p.stat().st_size:
            types[kind] = tensor_types(llama_cpp, p)
    types_file.write_text(json.dumps(types, indent=1))
    for kind in KINDS:
        t = types[kind]
        log(f"{kind}: {t['bytes'] / 1e9:.2f} GB, tensor types {t['counts']}, token_embd {t['token_embd.weight']}, "
            f"output {t['output.weight']}, ffn_down {t['ffn_down']}")


# --------------------------------------------------------------------------------------------
# one llama.cpp measurement


def prompt_ids(length: int, vocab: int) -> list[int]:
    """The same in-vocabulary ids thinkbench's bench uses (src/cli/bench.rs)."""
    return [(i * 2654435761 + 17) % (vocab - 1) + 1 for i in range(length)]


def llama(args) -> None:
    import numpy as np
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads,
                n_ctx=512, n_batch=512, verbose=False)
    load_s = time.perf_counter() - t0
    vocab = llm.n_vocab()
    ctx = llm._ctx  # the llama_context wrapper; its get_logits() is the last row's logits

    def next_token() -> int:
        logits = np.ctypeslib.as_array(ctx.get_logits(), shape=(vocab,))
        return int(np.argmax(logits))

    def prefill_once(n: int) -> float:
        ids = prompt_ids(n, vocab)
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        next_token()  # thinkbench's prefill also ends with the first token's logits
        return n / (time.perf_counter() - t)

    def decode_once(n: int) -> tuple[float, list[float]]:
        llm.reset()
        llm.eval(prompt_ids(16, vocab))  # thinkbench decodes after a 16-token prompt
        tok = next_token()
        per_token = []
        t = time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
            llm.eval([tok])
            tok = next_token()
            per_token.append(time.perf_counter() - s)
        return n / (time.perf_counter() - t), per_token

    # warm-up, as thinkbench does: first calls allocate buffers and pick kernels
    prefill_once(8)
    decode_once(4)
    prefill = max(prefill_once(args.prefill) for _ in range(max(1, args.repeat)))
    decode_runs = [decode_once(args.decode) for _ in range(max(1, args.repeat))]
    decode, per_token = max(decode_runs, key=lambda r: r[0])
    import llama_cpp

    print(json.dumps({
        "engine": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        # which instructions this build of llama.cpp uses (an AVX2-only one under BENCH_ISA=avx2)
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "model": args.model,
        "threads": args.threads,
        "n_vocab": vocab,
        "load_s": load_s,
        "prefill_tokens": args.prefill,
        "prefill_tokens_per_s": prefill,
        "decode_tokens": args.decode,
        "decode_tokens_per_s": decode,
        "decode_ms_per_token_median": 1e3 * sorted(per_token)[len(per_token) // 2],
        "peak_rss_bytes": peak_rss_bytes(),
    }), flush=True)


def peak_rss_bytes() -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


# --------------------------------------------------------------------------------------------
# the side-by-side run


def run_json(cmd: list[str], timeout: float) -> tuple[dict | None, str]:
    """Runs one engine process; returns its last JSON line (or None) and its stderr tail."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    line = next((l for l in reversed(p.stdout.splitlines()) if l.startswith("{")), None)
    if p.returncode != 0 or line is None:
        return None, f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-2000:]}"
    return json.loads(line), ""


def run(args) -> None:
    gguf_dir = Path(args.gguf_dir)
    results = Path(args.results)
    kinds = args.kinds.split(",")
    common = ["--threads", str(args.threads), "--prefill-tokens", str(args.prefill),
              "--decode-tokens", str(args.decode), "--repeat", str(args.repeat)]
    llama_cmd = [sys.executable, __file__, "llama", "--threads", str(args.threads), "--prefill", str(args.prefill),
                 "--decode", str(args.decode), "--repeat", str(args.repeat)]
    t_start = time.time()
    with open(results, "a") as out:
        def record(rec: dict) -> None:
            out.write(json.dumps(rec) + "\n")
            out.flush()

        for kind in kinds:
            path = gguf_path(gguf_dir, kind)
            for rnd in range(1, args.rounds + 1):
                for label, extra in VARIANTS[kind]:
                    for engine in ("thinkbench", "llama.cpp"):
                        if engine == "thinkbench":
                            cmd = [args.thinkbench, "bench", "--model", str(path), *common, *extra]
                        else:
                            cmd = [*llama_cmd, "--model", str(path)]
                        la0 = load_avg()
                        t0 = time.time()
                        res, err = run_json(cmd, args.timeout)
                        rec = {"kind": kind, "round": rnd, "engine": engine,
                               "variant": label if engine == "thinkbench" else "",
                               "wall_s": round(time.time() - t0, 1), "loadavg_before": la0,
                               "loadavg_after": load_avg(), "cmd": " ".join(cmd)}
                        if res is None:
                            rec["error"] = err
                            log(f"{kind} round {rnd} {engine} {rec['variant']}: FAILED: {err}")
                        else:
                            rec["result"] = res
                            log(f"{kind} round {rnd} {engine} {rec['variant']}: prefill "
                                f"{res['prefill_tokens_per_s']:.1f} tok/s, decode "
                                f"{res.get('decode_tokens_per_s_trace_off', res['decode_tokens_per_s']):.2f} tok/s "
                                f"({rec['wall_s']} s, load {la0[0]:.2f})")
                        record(rec)
    log(f"all runs took {time.time() - t_start:.0f} s")


# --------------------------------------------------------------------------------------------
# the table


def cpu_line() -> str:
    name = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text()
    isa = ("AVX-512 BF16" if "avx512_bf16" in flags else
           "AVX-512, no AVX-512 BF16" if "avx512f" in flags else
           "AVX2, no AVX-512" if "avx2" in flags else "no AVX2")
    return f"{name}; {isa}; {os.cpu_count()} logical CPUs"


def table(args) -> None:
    recs = [json.loads(l) for l in Path(args.results).read_text().splitlines() if l.strip()]
    ok = [r for r in recs if "result" in r]
    failed = [r for r in recs if "error" in r]
    types = {}
    if args.gguf_dir and (Path(args.gguf_dir) / "tensor_types.json").exists():
        types = json.loads((Path(args.gguf_dir) / "tensor_types.json").read_text())

    def tb_decode(res: dict) -> float:
        return res.get("decode_tokens_per_s_trace_off", res["decode_tokens_per_s"])

    print(f"CPU: {cpu_line()}")
    bws = [r["result"]["read_gb_per_s"] for r in ok if r["engine"] == "thinkbench" and "read_gb_per_s" in r["result"]]
    if bws:
        bws.sort()
        print(f"Read bandwidth (thinkbench's best 1 GiB read, {ok[0]['result'].get('threads', '?')} threads): best "
              f"{bws[-1]:.1f} GB/s, median {bws[len(bws) // 2]:.1f} GB/s, worst {bws[0]:.1f} GB/s over {len(bws)} runs")
    loads = [r["loadavg_before"][0] for r in recs]
    if loads:
        print(f"1-min load average before each run: min {min(loads):.2f}, max {max(loads):.2f}")
    print()
    print("Each figure is the best over all runs of that row (each run itself best of --repeat). "
          "Decode: thinkbench with the trace off (traced decode in brackets); ratios are thinkbench / llama.cpp.")
    print()
    print("| file type | engine | prefill tok/s | decode tok/s | prefill ratio | decode ratio | decode bound tok/s | peak RSS GB | runs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    kinds = [k for k in KINDS if any(r["kind"] == k for r in recs)]
    for kind in kinds:
        ll = [r["result"] for r in ok if r["kind"] == kind and r["engine"] == "llama.cpp"]
        ll_pre = max((x["prefill_tokens_per_s"] for x in ll), default=None)
        ll_dec = max((x["decode_tokens_per_s"] for x in ll), default=None)
        label = kind.upper()
        variants = [v for v, _ in VARIANTS[kind]]
        for v in variants:
            tb = [r["result"] for r in ok if r["kind"] == kind and r["engine"] == "thinkbench" and r["variant"] == v]
            nfail = sum(1 for r in failed if r["kind"] == kind and r["engine"] == "thinkbench" and r["variant"] == v)
            if not tb:
                what = "failed" if nfail else "not run"
                print(f"| {label} | thinkbench ({v}) | {what} | {what} | | | | | 0 ok, {nfail} failed |")
                continue
            pre = max(x["prefill_tokens_per_s"] for x in tb)
            dec = max(tb_decode(x) for x in tb)
            dec_on = max(x["decode_tokens_per_s"] for x in tb)
            bound = max(x.get("decode_bound_tokens_per_s") or 0 for x in tb)
            rss = max(x.get("peak_rss_bytes") or 0 for x in tb) / 1e9
            pr = f"{pre / ll_pre:.2f}" if ll_pre else ""
            dr = f"{dec / ll_dec:.2f}" if ll_dec else ""
            runs = f"{len(tb)}" + (f" ({nfail} failed)" if nfail else "")
            print(f"| {label} | thinkbench ({v}) | {pre:.1f} | {dec:.2f} ({dec_on:.2f}) | {pr} | {dr} | {bound:.2f} | {rss:.2f} | {runs} |")
        nfail = sum(1 for r in failed if r["kind"] == kind and r["engine"] == "llama.cpp")
        if ll:
            rss = max(x.get("peak_rss_bytes") or 0 for x in ll) / 1e9
            print(f"| {label} | llama.cpp | {ll_pre:.1f} | {ll_dec:.2f} | 1.00 | 1.00 | | {rss:.2f} | {len(ll)}"
                  + (f" ({nfail} failed)" if nfail else "") + " |")
        else:
            what = "failed" if nfail else "not run"
            print(f"| {label} | llama.cpp | {what} | {what} | | | | | 0 ok, {nfail} failed |")
    # The fastest thinkbench variant per file, for the headline.
    print()
    for kind in kinds:
        tb = [r for r in ok if r["kind"] == kind and r["engine"] == "thinkbench"]
        if not tb:
            continue
        best_pre = max(tb, key=lambda r: r["result"]["prefill_tokens_per_s"])
        best_dec = max(tb, key=lambda r: tb_decode(r["result"]))
        print(f"- {kind.upper()}: fastest thinkbench prefill with {best_pre['variant']}, fastest decode with {best_dec['variant']}")
    if types:
        print()
        print("GGUF files (types as stored; Q4_0 and Q4_K_M picked by llama.cpp's quantizer with default params):")
        for kind in kinds:
            t = types.get(kind)
            if t:
                print(f"- {kind.upper()}: {t['bytes'] / 1e9:.2f} GB; token_embd.weight {t['token_embd.weight']}, "
                      f"output.weight {t['output.weight']}, ffn_down {', '.join(t['ffn_down'])}; all tensors {t['counts']}")
    # Paired ratios: each thinkbench run against the llama.cpp run right after it (same minute).
    print()
    print("Paired ratios (each thinkbench run / the llama.cpp run right after it, same minute):")
    for kind in kinds:
        seq = [r for r in recs if r["kind"] == kind]
        pairs = {}
        for a, b in zip(seq, seq[1:]):
            if a["engine"] == "thinkbench" and b["engine"] == "llama.cpp" and "result" in a and "result" in b:
                pairs.setdefault(a["variant"], []).append(
                    (tb_decode(a["result"]) / b["result"]["decode_tokens_per_s"],
                     a["result"]["prefill_tokens_per_s"] / b["result"]["prefill_tokens_per_s"]))
        for v, rs in pairs.items():
            print(f"- {kind.upper()} {v}: decode " + ", ".join(f"{d:.2f}" for d, _ in rs)
                  + "; prefill " + ", ".join(f"{p:.2f}" for _, p in rs))
    if failed:
        print()
        print("Failures (verbatim, last lines):")
        seen = set()
        for r in failed:
            key = (r["kind"], r["engine"], r["variant"], r["error"])
            if key in seen:
                continue
            seen.add(key)
            print(f"- {r['kind'].upper()} {r['engine']} {r['variant']}: `{r['cmd']}`")
            print("  ```")
            for l in r["error"].splitlines()[-15:]:
                print(f"  {l}")
            print("  ```")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--llama-cpp", required=True, help="folder with convert_hf_to_gguf.py and gguf-py/")
    p.add_argument("--conv-python", required=True, help="python that runs the converter (see make_gguf_model_fixtures.py)")
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("llama")
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prefill", type=int, default=64)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--repeat", type=int, default=2)
    p = sub.add_parser("run")
    p.add_argument("--gguf-dir", required=True)
    p.add_argument("--thinkbench", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prefill", type=int, default=64)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per engine process")
    p.add_argument("--results", required=True)
    p = sub.add_parser("table")
    p.add_argument("results")
    p.add_argument("--gguf-dir")
    args = ap.parse_args()
    {"prepare": prepare, "llama": llama, "run": run, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
