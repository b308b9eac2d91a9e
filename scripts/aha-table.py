#!/usr/bin/env python3
"""Prints the "An aha in miniature" tables from `thinkbench eval --json` reports: the first is
the model before GRPO, the others after (one per seed); after-GRPO figures are the mean over the
seeds with each seed's value in brackets."""
import json
import sys

LEVELS = {1: "1×1", 2: "2×1", 3: "3×1", 4: "4×1", 5: "2×2", 6: "3×2"}


def rows(path):
    report = json.load(open(path))
    return {l["level"]: l for l in report["by_level"]}


def field(level, key):
    shape = level.get("shape") or {}
    value = level.get(key, shape.get(key))
    return value


def fmt(values, pct):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.2f}" if v < 10 else f"{v:.0f}")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f(mean)
    return f"{f(mean)} ({', '.join(f(v) for v in values)})"


COLUMNS = [
    ("pass@1 %", "accuracy", True),
    ("pass@8 %", "pass_at_k", True),
    ("long %", "long_share", True),
    ("acc long %", "accuracy_long", True),
    ("acc direct %", "accuracy_direct", True),
    ("tokens right", "mean_reasoning_tokens_right", False),
    ("tokens wrong", "mean_reasoning_tokens_wrong", False),
    ("checks", "checks_per_answer", False),
    ("waits", "waits_per_answer", False),
    ("wait after a slip %", "waits_after_slip", True),
]


def main():
    before = rows(sys.argv[1])
    after = [rows(p) for p in sys.argv[2:]]
    for title, reports in [("before GRPO (SFT)", [before]), (f"after GRPO ({len(after)} seeds)", after)]:
        if not reports:
            continue
        print(f"\n{title}\n")
        print("| level | " + " | ".join(c[0] for c in COLUMNS) + " |")
        print("|---" * (len(COLUMNS) + 1) + "|")
        for lv in sorted(before):
            cells = [fmt([field(r[lv], key) for r in reports if lv in r], pct) for _, key, pct in COLUMNS]
            print(f"| {lv} ({LEVELS.get(lv, '?')}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
