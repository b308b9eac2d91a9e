#!/usr/bin/env python3
"""The "An aha in miniature" curves as a table: for each window of 10 GRPO steps, the mean over
the runs given (one per seed) of the rollouts' accuracy, share of long answers, checks and waits
per answer, the share of waits after a real slip, and mean completion length; then the greedy
held-out evaluations. Usage: aha-curves.py RUN_DIR..."""
import json
import sys

KEYS = [
    ("accuracy %", "accuracy", 100),
    ("long %", "shape/long", 100),
    ("checks", "shape/checks", 1),
    ("waits", "shape/waits", 1),
    ("wait after a slip %", "shape/waits_after_slip", 100),
    ("length", "completions/mean_length", 1),
]


def read(run):
    rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    return [r for r in rows if "reward" in r], [r for r in rows if r.get("event") == "eval"]


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def main(runs):
    data = [read(r) for r in runs]
    print(f"| steps | " + " | ".join(k[0] for k in KEYS) + " |")
    print("|---" * (len(KEYS) + 1) + "|")
    last = max(s[-1]["step"] for s, _ in data)
    for lo in range(1, last + 1, 10):
        cells = []
        for _, key, scale in KEYS:
            v = mean([r.get(key) for steps, _ in data for r in steps if lo <= r["step"] < lo + 10])
            cells.append("–" if v is None else f"{scale * v:.1f}" if scale == 100 else f"{v:.2f}" if v < 10 else f"{v:.0f}")
        print(f"| {lo}–{lo + 9} | " + " | ".join(cells) + " |")
    print()
    steps = sorted({e["step"] for _, evals in data for e in evals})
    for s in steps:
        accs = [e["accuracy"] for _, evals in data for e in evals if e["step"] == s]
        print(f"- greedy held-out accuracy at step {s}: " + ", ".join(f"{100 * a:.1f}%" for a in accs))


if __name__ == "__main__":
    main(sys.argv[1:])
