"""The reference side of the GRPO speed benchmark: TRL's GRPOTrainer on the benchmark model, in the
configuration scripts/bench_grpo.sh runs thinkbench with. Prints one JSON line.

  bench_grpo_trl.py --model DIR --data P.jsonl --threads 2 --steps 12 --warmup 2

The configuration (both sides): G = 8 completions per prompt, 2 prompts per step (16 completions),
64 new tokens at temperature 1.0, top-p 1.0; β = 0.04 (a frozen reference model); loss "dapo";
one optimiser step per batch of rollouts (μ = 1); AdamW; f32; CPU; the chat template applied to
the prompt. The reward is DAPO's overlong penalty on the completion length (its cost is nil).
"""
import argparse
import json
import statistics
import sys
import time
import warnings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default="/tmp/thinkbench-trl-grpo")
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(args.threads)
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    transformers.logging.set_verbosity_error()
    rows = [json.loads(l) for l in open(args.data) if l.strip()]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])
    tok = AutoTokenizer.from_pretrained(args.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="sdpa")

    max_len, buffer = 64, 32

    def overlong(completions, completion_ids=None, **kw):
        out = []
        for ids in completion_ids:
            n = len(ids)
            start = max_len - buffer
            out.append(0.0 if n <= start else ((start - n) / buffer if n <= max_len else -1.0))
        return out

    cfg = GRPOConfig(
        output_dir=args.out,
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=1,
        learning_rate=1e-6,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=1,
        num_generations=8,
        max_completion_length=max_len,
        temperature=1.0,
        top_p=1.0,
        beta=0.04,
        loss_type="dapo",
        num_iterations=1,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )

    times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    lengths = []

    class Lengths(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[overlong],
        args=cfg,
        train_dataset=ds,
        processing_class=tok,
        callbacks=[Clock(), Lengths()],
    )
    trainer.train()
    steady = times[args.warmup:]
    print(json.dumps(dict(
        engine=f"TRL {trl.__version__} (transformers {transformers.__version__}, torch {torch.__version__})",
        threads=torch.get_num_threads(),
        steps=len(steady),
        s_per_step_median=statistics.median(steady),
        s_per_step_min=min(steady),
        s_per_step=steady,
        mean_completion_length=statistics.mean(lengths) if lengths else None,
    )))


if __name__ == "__main__":
    sys.exit(main())
