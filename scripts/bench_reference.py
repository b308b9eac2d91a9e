"""The benchmark's reference side: builds random-weight checkpoints and times Hugging Face
transformers on them. Run by scripts/bench.sh; not part of the test suite.

  bench_reference.py build  --out DIR            # writes DIR/<name>/ for each benchmark model
  bench_reference.py run    --model DIR --dtype bf16 --threads 2 [--prefill 512 --decode 64] [--device cuda]
  bench_reference.py table  RESULTS.jsonl        # prints the README table
"""
import argparse
import json
import os
import resource
import sys
import time

MODELS = {
    # A tiny 4-layer DeepSeek-V3 (MLA with q_lora, YaRN, 16 routed experts in 4 groups, 1 shared).
    "tiny_deepseek_v3": dict(
        dtype="float32",
        config=dict(
            architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", vocab_size=1024,
            hidden_size=128, intermediate_size=256, moe_intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=4, q_lora_rank=64, kv_lora_rank=32,
            qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, n_routed_experts=16,
            n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2, first_k_dense_replace=1,
            routed_scaling_factor=2.5, norm_topk_prob=True, rope_theta=10000.0,
            rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=1024,
                              beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
            max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False,
            bos_token_id=0, eos_token_id=1, hidden_act="silu", torch_dtype="float32"),
    ),
    # Shaped like DeepSeek-R1-Distill-Qwen-1.5B (random weights).
    "qwen2_1p5b_shape": dict(
        dtype="bfloat16",
        config=dict(
            architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=151936, hidden_size=1536,
            intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
            max_position_embeddings=131072, rope_theta=10000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=False, use_sliding_window=False, bos_token_id=151643,
            eos_token_id=151643, hidden_act="silu", torch_dtype="bfloat16"),
    ),
}


def build(out):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    for name, spec in MODELS.items():
        target = os.path.join(out, name)
        if os.path.exists(os.path.join(target, "model.safetensors")) or os.path.exists(
                os.path.join(target, "model.safetensors.index.json")):
            continue
        torch.manual_seed(0)
        cfg_dict = dict(spec["config"])
        model_type = cfg_dict.pop("model_type")
        cfg = AutoConfig.for_model(model_type, **cfg_dict)
        dtype = getattr(torch, spec["dtype"])
        with torch.device("cpu"):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, 0.02)
            for n, b in model.named_buffers():
                if "e_score_correction_bias" in n:
                    b.normal_(0.0, 0.01)
        tmp = target + ".tmp"
        model.save_pretrained(tmp, max_shard_size="20GB")
        os.replace(tmp, target)
        print(f"built {target}", file=sys.stderr)


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(model_dir, dtype, threads, prefill, decode, repeat, device="cpu"):
    import torch
    from transformers import AutoModelForCausalLM
    import transformers

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    model.to(device).eval()
    load_s = time.perf_counter() - t0

    def sync():  # CUDA kernels run asynchronously: a timer must wait for them
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    vocab = model.config.vocab_size

    def ids(n):
        return torch.tensor([[((i * 2654435761 + 17) % (vocab - 1)) + 1 for i in range(n)]], device=device)

    with torch.inference_mode():
        model.generate(ids(8), max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
        best_prefill = 0.0
        for _ in range(repeat):
            x = ids(prefill)
            sync()
            t = time.perf_counter()
            model(x, use_cache=True, logits_to_keep=1)
            sync()
            best_prefill = max(best_prefill, prefill / (time.perf_counter() - t))
        best_decode = 0.0
        for _ in range(repeat):
            x = ids(16)
            # decode rate excludes the prefill: time prefill + 1 token, then prefill + N tokens
            t = time.perf_counter()
            model.generate(x, max_new_tokens=1, min_new_tokens=1, do_sample=False)
            one = time.perf_counter() - t
            t = time.perf_counter()
            model.generate(x, max_new_tokens=decode + 1, min_new_tokens=decode + 1, do_sample=False)
            full = time.perf_counter() - t
            best_decode = max(best_decode, decode / max(full - one, 1e-9))
    print(json.dumps(dict(engine="transformers " + transformers.__version__, model=model_dir, dtype=dtype, device=device,
                          threads=torch.get_num_threads(), load_s=load_s, prefill_tokens=prefill,
                          prefill_tokens_per_s=best_prefill, decode_tokens=decode,
                          decode_tokens_per_s=best_decode, peak_rss_bytes=peak_rss_bytes())))


def table(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by_model = {}
    for r in rows:
        by_model.setdefault(os.path.basename(r["model"].rstrip("/")), []).append(r)
    print("| model | dtype | engine | prefill tok/s | decode tok/s | decode, trace off | peak RSS | RSS / checkpoint |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rs in by_model.items():
        ckpt = next((r.get("checkpoint_bytes") for r in rs if r.get("checkpoint_bytes")), None)
        for r in rs:
            off = r.get("decode_tokens_per_s_trace_off")
            rss = r.get("peak_rss_bytes") or 0
            ratio = f"{rss / ckpt:.2f}" if ckpt else "-"
            engine = r["engine"] + ("" if r.get("device", "cpu") == "cpu" else f" ({r['device']})")
            print(f"| {name} | {r['dtype']} | {engine} | {r['prefill_tokens_per_s']:.1f} | "
                  f"{r['decode_tokens_per_s']:.1f} | {'-' if off is None else f'{off:.1f}'} | "
                  f"{rss / 2**20:.0f} MiB | {ratio} |")
        tb = next((r for r in rs if r["engine"] == "thinkbench"), None)
        hf = next((r for r in rs if r["engine"].startswith("transformers")), None)
        if tb and hf:
            print(f"| {name} | | **ratio thinkbench / transformers** | "
                  f"{tb['prefill_tokens_per_s'] / hf['prefill_tokens_per_s']:.2f}x | "
                  f"{tb['decode_tokens_per_s'] / hf['decode_tokens_per_s']:.2f}x | | | |")
    for name, rs in by_model.items():
        tb = next((r for r in rs if r["engine"] == "thinkbench"), None)
        if tb and tb.get("decode_bound_tokens_per_s"):
            bound = tb["decode_bound_tokens_per_s"]
            print(f"\n{name}: decode bound {bound:.1f} tok/s (read {tb['read_gb_per_s']:.1f} GB/s, "
                  f"{tb['bytes_read_per_token'] / 1e9:.3f} GB per token); thinkbench decodes at "
                  f"{100 * tb['decode_tokens_per_s_trace_off'] / bound:.0f}% of it with tracing off, "
                  f"{100 * tb['decode_tokens_per_s'] / bound:.0f}% with it on "
                  f"(kernels: {tb.get('cpu_kernels', '?')})")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--dtype", default="float32")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--prefill", type=int, default=512)
    r.add_argument("--decode", type=int, default=64)
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--device", default="cpu")
    t = sub.add_parser("table")
    t.add_argument("results")
    a = ap.parse_args()
    if a.cmd == "build":
        build(a.out)
    elif a.cmd == "run":
        run(a.model, a.dtype, a.threads, a.prefill, a.decode, a.repeat, a.device)
    else:
        table(a.results)


if __name__ == "__main__":
    main()
