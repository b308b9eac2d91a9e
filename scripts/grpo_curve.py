#!/usr/bin/env python3
"""Draws a GRPO run's reward curve from its metrics.jsonl (text: a table and sparklines).

  scripts/grpo_curve.py runs/tiny-grpo/metrics.jsonl [--every 10]

Each row averages `--every` steps: reward (the weighted sum GRPO trains on), rollout accuracy,
share of zero-std groups, entropy, mean completion length, seconds per step, and where the run
logs them the KL to the reference and the router mismatch (MoE policies: the share of completion
tokens the update routed differently from the rollout); held-out evaluations (the "eval" events)
are listed after the table.
"""
import argparse
import json

BARS = "▁▂▃▄▅▆▇█"


def spark(xs):
    lo, hi = min(xs), max(xs)
    span = (hi - lo) or 1.0
    return "".join(BARS[min(len(BARS) - 1, int((x - lo) / span * len(BARS)))] for x in xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("metrics")
    ap.add_argument("--every", type=int, default=10)
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.metrics) if l.strip()]
    steps = [r for r in rows if "reward" in r and "step" in r]
    evals = [r for r in rows if r.get("event") == "eval"]
    extra = [(k, title) for k, title in (("kl", "KL"), ("router/mismatch", "router mismatch"))
             if any(k in r for r in steps)]
    head = "".join(f" {title} |" for _, title in extra)
    print(f"| steps | reward | rollout accuracy | zero-std groups | entropy | length | s/step |{head}")
    print("|---|---|---|---|---|---|---|" + "---|" * len(extra))
    rewards = []
    for i in range(0, len(steps), a.every):
        chunk = steps[i:i + a.every]
        m = lambda k: sum(r.get(k, 0.0) for r in chunk) / len(chunk)
        rewards.append(m("reward"))
        cells = "".join(f" {m(k):.4f} |" if k == "kl" else f" {100 * m(k):.1f}% |" for k, _ in extra)
        print(f"| {chunk[0]['step']}–{chunk[-1]['step']} | {m('reward'):.3f} | {100 * m('accuracy'):.1f}% | "
              f"{100 * m('frac_reward_zero_std'):.0f}% | {m('entropy'):.4f} | {m('completions/mean_length'):.0f} | "
              f"{m('step_time'):.2f} |{cells}")
    if rewards:
        print(f"\nreward per {a.every} steps: {spark(rewards)}  ({rewards[0]:.3f} → {rewards[-1]:.3f})")
    for e in evals:
        levels = ", ".join(f"L{l} {100 * acc:.1f}%" for l, acc in e.get("by_level", []))
        print(f"held-out at step {e['step']}: {100 * e['accuracy']:.1f}% (n={e['n']}{'; ' + levels if levels else ''})")
    if steps:
        total = sum(r["step_time"] for r in steps)
        print(f"\n{len(steps)} steps, {total / 60:.1f} min in the loop (evaluations excluded)")


if __name__ == "__main__":
    main()
