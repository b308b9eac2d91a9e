#!/usr/bin/env python3
"""Which experts a saved session's reasoning used while working, while checking, and at "wait":
each MoE layer's two most used experts and their share of routed slots, for the tokens of the
work lines, of the check lines, and of the word "wait". Usage: aha-experts.py SESSION.json"""
import collections
import json
import sys


def main(path):
    session = json.load(open(path))
    nodes = session["conversation"]["nodes"]
    reply = [n["message"] for n in nodes if n["message"].get("role") == "assistant"][0]
    tokens = reply["tokens"]
    text = "".join(t["text"] for t in tokens)
    waits = set()
    at = text.find("wait")
    while at >= 0:
        waits.update(range(at, at + 4))
        at = text.find("wait", at + 1)
    counts = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
    seen = collections.Counter()
    pos = 0
    for t in tokens:
        start, pos = pos, pos + len(t["text"])
        if t["phase"] != "think":
            continue
        line = text[text.rfind("\n", 0, start) + 1:]
        kind = "wait" if waits & set(range(start, pos)) else "check" if line.startswith("check") else "work"
        seen[kind] += 1
        for r in t["routing"]:
            counts[kind][r["layer"]].update(r["experts"])
    for kind in ("work", "check", "wait"):
        cells = []
        for layer, c in sorted(counts[kind].items()):
            total = sum(c.values())
            top = ", ".join(f"e{e} {100 * k / total:.0f}%" for e, k in c.most_common(2))
            cells.append(f"L{layer}: {top}")
        print(f"{kind:5} ({seen[kind]} tokens)  " + "  ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1])
