"""How fast can a 512-token prefill of the R1-Distill-Qwen-1.5B shape be on this machine? Two
ceilings, both upper bounds for any engine:

1. libtorch's own bf16 matrix products: times only the 28 layers' projections (q, k, v, o, gate,
   up, down) at 512 tokens — no attention, norms or head. thinkbench and transformers both hand
   their prefill GEMMs to these kernels.
2. The CPU itself: the least arithmetic a prefill needs (those projections, causal attention, the
   head at the last position) divided by the cores' peak bf16 rate, measured by
   scripts/cpu_peak.c (AVX512-BF16 dot products back to back, no memory traffic). No kernel,
   hand-written or not, can beat it. CPUs with AMX tiles have a higher peak than this program
   measures; the script says so when it sees them.

  ~/.cache/thinkbench/pyref/bin/python scripts/bench_prefill_ceiling.py [--threads 2]

With `make bench`'s results in target/bench-results.jsonl it also prints what 1.5× transformers'
measured prefill would take.
"""
import argparse
import json
import os
import pathlib
import subprocess
import tempfile
import time

import torch

S, H, I, KV, L, V = 512, 1536, 8960, 256, 28, 151936
ROOT = pathlib.Path(__file__).resolve().parent.parent


def libtorch_projections(threads):
    """Seconds for the 28 layers' projections of S tokens (best of 3)."""
    torch.set_num_threads(threads)
    bf = dict(dtype=torch.bfloat16)
    x, xi = torch.randn(S, H, **bf), torch.randn(S, I, **bf)
    ws = [torch.randn(n, H, **bf) for n in (H, KV, KV, H, I, I)]
    wd = torch.randn(H, I, **bf)

    def layer():
        for w in ws:
            torch.nn.functional.linear(x, w)
        torch.nn.functional.linear(xi, wd)

    with torch.inference_mode():
        layer()
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(L):
                layer()
            best = min(best, time.perf_counter() - t)
    return best


def cpu_flags():
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_peak(threads):
    """{'bf16_gflops', 'f32_gflops'} from scripts/cpu_peak.c, or None (why is printed)."""
    flags = cpu_flags()
    if "avx512_bf16" not in flags:
        print("cpu peak: this CPU has no AVX512-BF16; the hardware ceiling is not measured")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "cpu_peak")
        try:
            subprocess.run(["cc", "-O2", "-pthread", str(ROOT / "scripts/cpu_peak.c"), "-o", exe],
                           check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"cpu peak: could not compile scripts/cpu_peak.c ({e}); not measured")
            return None
        out = subprocess.run([exe, str(threads)], check=True, capture_output=True, text=True)
    peak = json.loads(out.stdout)
    if any(f.startswith("amx") for f in flags):
        print("cpu peak: this CPU has AMX tiles, which exceed the AVX512-BF16 rate measured here; "
              "the hardware ceiling below is not a bound on it")
    return peak


def transformers_prefill():
    """transformers' 512-token prefill of the 1.5B shape from the last `make bench`, if any."""
    path = ROOT / "target/bench-results.jsonl"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("engine", "").startswith("transformers") and "qwen2_1p5b_shape" in row.get("model", ""):
            return row["prefill_tokens_per_s"]
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    proj_flops = 2 * S * L * (2 * H * H + 2 * KV * H + 3 * H * I)
    # Causal attention: token i scores and mixes i + 1 positions over all H query dims (QKᵀ and PV).
    attn_flops = L * 2 * 2 * (S * (S + 1) // 2) * H
    head_flops = 2 * H * V  # the last position's logits
    total = proj_flops + attn_flops + head_flops
    print(f"a {S}-token prefill of the 1.5B shape needs {total / 1e12:.3f} TFLOP "
          f"(projections {proj_flops / 1e12:.3f}, attention {attn_flops / 1e12:.3f}, head {head_flops / 1e12:.4f})")

    best = libtorch_projections(a.threads)
    print(f"libtorch: the projections of 28 layers for {S} tokens take {best:.2f} s -> at most "
          f"{S / best:.0f} tok/s ({proj_flops / best / 1e9:.0f} GFLOP/s, {a.threads} threads)")

    peak = cpu_peak(a.threads)
    if peak:
        bound = S / (total / (peak["bf16_gflops"] * 1e9))
        print(f"cpu peak: {peak['bf16_gflops']:.0f} GFLOP/s bf16 on {a.threads} threads "
              f"(f32 {peak['f32_gflops']:.0f}) -> no engine prefills faster than {bound:.0f} tok/s; "
              f"libtorch's GEMM runs at {100 * proj_flops / best / 1e9 / peak['bf16_gflops']:.0f}% of that peak")
        ref = transformers_prefill()
        if ref:
            need = 1.5 * ref
            verdict = "within" if need <= bound else "beyond"
            print(f"transformers prefilled {ref:.1f} tok/s in the last make bench: 1.5x is {need:.0f} tok/s, "
                  f"{verdict} this CPU's peak ({need / bound:.2f}x of it)")


if __name__ == "__main__":
    main()
