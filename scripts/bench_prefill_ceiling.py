"""How fast can a 512-token prefill of the R1-Distill-Qwen-1.5B shape be on this machine with
libtorch's own bf16 matrix products? Times only the 28 layers' projections (q, k, v, o, gate, up,
down) at 512 tokens — no attention, norms or head — so the figure is an upper bound for any engine
built on libtorch's GEMM (thinkbench and transformers both are).

  ~/.cache/thinkbench/pyref/bin/python scripts/bench_prefill_ceiling.py [--threads 2]
"""
import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    S, H, I, KV, L = 512, 1536, 8960, 256, 28
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
    flops = 2 * S * L * (2 * H * H + 2 * KV * H + 3 * H * I)
    print(f"projections of 28 layers for {S} tokens: {best:.2f} s -> at most {S / best:.0f} tok/s "
          f"({flops / best / 1e9:.0f} GFLOP/s, {a.threads} threads)")


if __name__ == "__main__":
    main()
