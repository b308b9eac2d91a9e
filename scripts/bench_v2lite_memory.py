#!/usr/bin/env python3
"""A real DeepSeek MoE on a 24 GB machine: a checkpoint shaped exactly like DeepSeek-V2-Lite
(15.7B parameters, 27 layers, 64 routed experts of which 6 are chosen, 2 shared, MLA attention,
a 102 400-token vocabulary), random weights in bf16 (31 GB on disk), loaded with --quant q4_0 and
q8_0, measured for peak memory and speed, and loaded at bf16 to see the refusal before loading.

Run by hand (outside CI and make bench: the checkpoint alone takes 31 GB of disk and minutes to
write):

    scripts/bench_v2lite_memory.py [--dir DIR] [--threads 2] [--keep]

  * builds DIR (default ~/.cache/thinkbench/bench-models/deepseek_v2_lite_shape) unless it is
    there: safetensors shards written one tensor group at a time, so the builder never holds
    more than one shard (~2 GB) in memory; the names and config keys are those of the released
    DeepSeek-V2-Lite checkpoint (per-expert projections, q_proj without a q LoRA,
    kv_a_proj_with_mqa, kv_b_proj);
  * runs `thinkbench bench` at bf16 (expected: refused before loading, with the size it needs
    and the --quant that fits), then with --quant q4_0 and q8_0 (--dtype bf16: embeddings,
    norms, routers and MLA's kv_b_proj stay in bf16), printing load time, peak RSS, prefill and
    decode speed and the machine's read bandwidth;
  * generates a few tokens at q4_0 with the routing trace and prints which experts each MoE
    layer chose for the first generated token (what the workbench's routing view shows);
  * deletes the checkpoint afterwards unless --keep; with --keep, pairs it with the built-in
    model's tokenizer (a folder of links beside it) and prints the command that opens it in the
    workbench, whose routing view then shows all 26 MoE layers' 64 experts.

Prints a markdown summary on stdout; the raw JSON lines go to target/bench-v2lite.jsonl.
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

# DeepSeek-V2-Lite's config.json (deepseek-ai/DeepSeek-V2-Lite), the keys our loader and
# transformers read.
CONFIG = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "model_type": "deepseek_v2",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 10944,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "moe_intermediate_size": 1408,
    "moe_layer_freq": 1,
    "n_group": 1,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 27,
    "num_key_value_heads": 16,
    "pretraining_tp": 1,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 0.707,
        "mscale_all_dim": 0.707,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 1.0,
    "scoring_func": "softmax",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "greedy",
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 102400,
}


def log(msg: str) -> None:
    print(f"[bench_v2lite] {msg}", file=sys.stderr, flush=True)


def tensors(c: dict):
    """(name, shape) of every weight, in file order, layer by layer."""
    h, v = c["hidden_size"], c["vocab_size"]
    heads = c["num_attention_heads"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    yield "model.embed_tokens.weight", (v, h)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "self_attn.q_proj.weight", (heads * qk, h)
        yield p + "self_attn.kv_a_proj_with_mqa.weight", (c["kv_lora_rank"] + c["qk_rope_head_dim"], h)
        yield p + "self_attn.kv_a_layernorm.weight", (c["kv_lora_rank"],)
        yield p + "self_attn.kv_b_proj.weight", (heads * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
        yield p + "self_attn.o_proj.weight", (h, heads * c["v_head_dim"])
        if i < c["first_k_dense_replace"]:
            inter = c["intermediate_size"]
            yield p + "mlp.gate_proj.weight", (inter, h)
            yield p + "mlp.up_proj.weight", (inter, h)
            yield p + "mlp.down_proj.weight", (h, inter)
            continue
        m = c["moe_intermediate_size"]
        yield p + "mlp.gate.weight", (c["n_routed_experts"], h)
        for e in range(c["n_routed_experts"]):
            yield p + f"mlp.experts.{e}.gate_proj.weight", (m, h)
            yield p + f"mlp.experts.{e}.up_proj.weight", (m, h)
            yield p + f"mlp.experts.{e}.down_proj.weight", (h, m)
        s = m * c["n_shared_experts"]
        yield p + "mlp.shared_experts.gate_proj.weight", (s, h)
        yield p + "mlp.shared_experts.up_proj.weight", (s, h)
        yield p + "mlp.shared_experts.down_proj.weight", (h, s)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (v, h)


def build(out: Path, shard_bytes: int = 2 << 30) -> None:
    import torch
    from safetensors.torch import save_file

    if (out / "model.safetensors.index.json").exists():
        log(f"{out}: cached")
        return
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(CONFIG, indent=2))
    (tmp / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": CONFIG["bos_token_id"], "eos_token_id": CONFIG["eos_token_id"]}))
    torch.manual_seed(0)
    t0 = time.time()
    weight_map, shard, size, n, params = {}, {}, 0, 0, 0

    def flush():
        nonlocal shard, size, n
        if not shard:
            return
        n += 1
        name = f"model-{n:05d}.safetensors"
        save_file(shard, str(tmp / name), metadata={"format": "pt"})
        for k in shard:
            weight_map[k] = name
        log(f"{name}: {size / 1e9:.2f} GB ({time.time() - t0:.0f} s)")
        shard, size = {}, 0

    for name, shape in tensors(CONFIG):
        t = torch.empty(shape, dtype=torch.bfloat16)
        if name.endswith("norm.weight"):
            t.fill_(1.0)
        else:
            t.normal_(0.0, 0.02)
        shard[name] = t
        size += t.numel() * 2
        params += t.numel()
        if size >= shard_bytes:
            flush()
    flush()
    # Shard names with the total, as save_pretrained writes them.
    final = {}
    for i in range(1, n + 1):
        old = f"model-{i:05d}.safetensors"
        new = f"model-{i:05d}-of-{n:05d}.safetensors"
        os.replace(tmp / old, tmp / new)
        final[old] = new
    index = {"metadata": {"total_size": params * 2},
             "weight_map": {k: final[v] for k, v in weight_map.items()}}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    os.replace(tmp, out)
    log(f"built {out}: {params / 1e9:.2f}B parameters, {params * 2 / 1e9:.1f} GB, {time.time() - t0:.0f} s")


def thinkbench(bin_: str, args: list[str], timeout: float = 1800) -> tuple[int, str, str, float]:
    t0 = time.time()
    p = subprocess.run([bin_, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "thinkbench"
    ap.add_argument("--dir", default=str(cache / "bench-models" / "deepseek_v2_lite_shape"))
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "thinkbench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the 31 GB checkpoint afterwards")
    ap.add_argument("--quants", default="q4_0,q8_0")
    a = ap.parse_args()
    out = Path(a.dir)
    build(out)
    results = ROOT / "target" / "bench-v2lite.jsonl"
    results.parent.mkdir(exist_ok=True)
    rows = []
    common = ["--threads", str(a.threads), "--prefill-tokens", "32", "--decode-tokens", "16", "--repeat", "1"]
    with open(results, "w") as jl:
        # 1. bf16: must be refused before loading on a machine with less than ~32 GB.
        rc, so, se, wall = thinkbench(a.bin, ["bench", "--model", str(out), "--dtype", "bf16", *common])
        refusal = se.strip().splitlines()[-1] if se.strip() else ""
        jl.write(json.dumps({"run": "bf16", "rc": rc, "wall_s": wall, "stderr_tail": se[-2000:]}) + "\n")
        log(f"bf16: exit {rc} after {wall:.1f} s: {refusal}")
        # 2. quantized loads.
        for q in a.quants.split(","):
            rc, so, se, wall = thinkbench(a.bin, ["bench", "--model", str(out), "--dtype", "bf16", "--quant", q, *common])
            line = next((l for l in reversed(so.splitlines()) if l.startswith("{")), None)
            rec = {"run": q, "rc": rc, "wall_s": wall}
            if rc == 0 and line:
                rec["result"] = json.loads(line)
                r = rec["result"]
                log(f"{q}: load {r['load_s']:.0f} s, peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB, prefill "
                    f"{r['prefill_tokens_per_s']:.1f} tok/s, decode {r['decode_tokens_per_s_trace_off']:.2f} tok/s")
            else:
                rec["stderr_tail"] = se[-2000:]
                log(f"{q}: FAILED (exit {rc}): {se.strip()[-500:]}")
            jl.write(json.dumps(rec) + "\n")
            rows.append(rec)
        # 3. the routing of a generated token, as the workbench's routing view shows it.
        rc, so, se, wall = thinkbench(a.bin, ["generate", "--model", str(out), "--dtype", "bf16", "--quant", "q4_0",
                                              "--prompt-ids", "100000,1234,5678,910", "--max-new-tokens", "2",
                                              "--threads", str(a.threads), "--json"])
        routing = None
        if rc == 0:
            try:
                gen = json.loads(next(l for l in reversed(so.splitlines()) if l.startswith("{")))
                routing = gen["generated"][0]["routing"]
            except (StopIteration, KeyError, IndexError, json.JSONDecodeError) as e:
                log(f"generate: unexpected output ({e}): {so[-500:]}")
        else:
            log(f"generate: FAILED (exit {rc}): {se.strip()[-500:]}")
        jl.write(json.dumps({"run": "routing", "rc": rc, "routing": routing}) + "\n")

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name:")), "?")
    print(f"DeepSeek-V2-Lite shape (random bf16 weights, {out}); CPU {cpu}; {a.threads} threads; "
          f"MemTotal {int(Path('/proc/meminfo').read_text().split()[1]) / 1e6:.1f} GB\n")
    print(f"- bf16 without --quant: {refusal}")
    print("\n| --quant | load s | peak RSS GB | prefill 32 tok/s | decode tok/s (trace off) | decode bound tok/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for rec in rows:
        r = rec.get("result")
        if not r:
            print(f"| {rec['run']} | failed | | | | |")
            continue
        print(f"| {rec['run']} | {r['load_s']:.0f} | {r['peak_rss_bytes'] / 1e9:.2f} | {r['prefill_tokens_per_s']:.1f} | "
              f"{r['decode_tokens_per_s_trace_off']:.2f} ({r['decode_tokens_per_s']:.2f} traced) | "
              f"{r.get('decode_bound_tokens_per_s') or 0:.2f} |")
    if routing:
        print("\nFirst generated token's routing at q4_0 (layer: experts with weights):")
        for lr in routing:
            pairs = ", ".join(f"{e} {w:.3f}" for e, w in zip(lr["experts"], lr["weights"]))
            print(f"- layer {lr['layer']}: {pairs}")
    if a.keep:
        # The checkpoint has no tokenizer (the real one cannot be downloaded here): pair it with
        # the built-in model's, as the serve bench does, so that the workbench opens it.
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench_serve import servable
        print(f"\nIn the workbench: {a.bin} --model {servable(str(out))} --quant q4_0 --dtype bf16")
    else:
        shutil.rmtree(out)
        log(f"removed {out} (--keep keeps it)")


if __name__ == "__main__":
    main()
