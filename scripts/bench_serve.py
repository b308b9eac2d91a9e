#!/usr/bin/env python3
"""`thinkbench serve` under load (make bench): aggregate tokens/s at 1, 4 and 16 concurrent
clients, time to first token, the server's overhead against `thinkbench generate` at one client,
and a bounded load-and-fault run (malformed requests, disconnects mid-stream, a full queue) with
the server's memory before and after. Standard library only; the server listens on 127.0.0.1.

usage: bench_serve.py [--model DIR] [--dtype f32|bf16] [--threads N] [--max-tokens N]
                      [--per-client N] [--fault-rounds N] [--label NAME]
"""
import argparse
import http.client
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

BIN = "./target/release/thinkbench"


DTYPE = "f32"


def start_server(model, threads, extra=()):
    args = [BIN, "serve", "--port", "0", "--threads", str(threads), "--dtype", DTYPE]
    if model:
        args += ["--model", model]
    proc = subprocess.Popen(args + list(extra), stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    addr = line.split("listening on http://")[1].split()[0]
    host, port = addr.split(":")
    return proc, host, int(port)


# The built-in model, whose tokenizer the bench checkpoints borrow (wherever this runs from).
BUILTIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "thinkbench-tiny")


def servable(model):
    """The bench checkpoints have weights but no tokenizer: pair one with the built-in model's
    tokenizer (in a folder of links beside it). Sampling stays inside that tokenizer's ids; the
    model still computes its whole vocabulary, which is what the load costs."""
    if not model or os.path.exists(os.path.join(model, "tokenizer.json")):
        return model
    paired = model.rstrip("/") + "-with-builtin-tokenizer"
    os.makedirs(paired, exist_ok=True)
    for name in os.listdir(model):
        link = os.path.join(paired, name)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(model, name)), link)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        link = os.path.join(paired, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(BUILTIN, name), link)
    return paired


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def request(host, port, body, stream=False, timeout=600):
    """One request; returns (status, completion tokens, seconds to first token, total seconds)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.perf_counter()
    payload = dict(body, stream=stream)
    if stream:
        payload["stream_options"] = {"include_usage": True}
    conn.request("POST", "/v1/completions", json.dumps(payload), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        resp.read()
        conn.close()
        return resp.status, 0, None, time.perf_counter() - t0
    first, tokens = None, 0
    if stream:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            # Parse only what is measured: the client shares the server's cores, so it stays light.
            if first is None and '"text":"' in data and '"text":""' not in data:
                first = time.perf_counter() - t0
            if '"usage":{' in data:
                tokens = json.loads(data)["usage"]["completion_tokens"]
    else:
        tokens = json.loads(resp.read())["usage"]["completion_tokens"]
    conn.close()
    return 200, tokens, first, time.perf_counter() - t0


def load(host, port, clients, per_client, body):
    results = []
    lock = threading.Lock()

    def worker(c):
        for i in range(per_client):
            r = request(host, port, dict(body, seed=c * 1000 + i), stream=True)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r[1] for r in results)
    ttft = sorted(r[2] for r in results if r[2] is not None)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "tok_per_s": tokens / wall,
        "ttft_p50_ms": 1000 * statistics.median(ttft),
        "ttft_p90_ms": 1000 * ttft[min(len(ttft) - 1, math.ceil(0.9 * len(ttft)) - 1)],
    }


def generate_seconds(model, threads, prompt, max_tokens):
    """Prefill + decode seconds of `thinkbench generate` on the same prompt, from the rates it
    reports (so process start and model loading are left out, as they are for the running
    server). Without --json it records log-probabilities (top 5) but no routing, as the server's
    request below asks."""
    args = [BIN, "generate", "--prompt", prompt, "--max-new-tokens", str(max_tokens),
            "--temperature", "0", "--ignore-eos", "--threads", str(threads), "--dtype", DTYPE,
            "--top-logprobs", "5"]
    args += ["--model", model or "models/thinkbench-tiny"]
    err = subprocess.run(args, check=True, capture_output=True, text=True).stderr
    # "[P prompt tokens, G generated, prefill X tok/s, decode Y tok/s, finish: ...]"
    f = err.strip().splitlines()[-1].strip("[]").split(", ")
    p, g = int(f[0].split()[0]), int(f[1].split()[0])
    prefill, decode = float(f[2].split()[1]), float(f[3].split()[1])
    return p / prefill + g / decode


def fault_run(host, port, pid, rounds):
    """Malformed requests, streams dropped after their first chunk, and bursts past the queue."""
    counts = {"malformed_400": 0, "disconnects": 0, "busy_503": 0, "ok": 0, "other": 0}
    bad = [b'{"prompt": ', b'{"prompt": "x", "temperature": "hot"}', b'[1, 2]',
           b'{"prompt": "x", "n": 0}', b'{"messages": "hi"}']
    for r in range(rounds):
        for body in bad:
            conn = http.client.HTTPConnection(host, port, timeout=60)
            path = "/v1/chat/completions" if b"messages" in body else "/v1/completions"
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            counts["malformed_400" if resp.status == 400 else "other"] += 1
            conn.close()
        # A client that goes away mid-stream.
        s = socket.create_connection((host, port))
        body = json.dumps({"prompt": "1 2 3", "max_tokens": 200, "stream": True, "ignore_eos": True})
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        s.recv(512)
        s.close()
        counts["disconnects"] += 1
        # A burst larger than the queue: some requests must be turned away with 503.
        burst = []
        ts = [threading.Thread(target=lambda: burst.append(
            request(host, port, {"prompt": "4 5 6", "max_tokens": 32, "ignore_eos": True})[0]))
            for _ in range(12)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        counts["busy_503"] += burst.count(503)
        counts["ok"] += burst.count(200)
        counts["other"] += len(burst) - burst.count(503) - burst.count(200)
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="")
    ap.add_argument("--label", default="built-in")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--per-client", type=int, default=12)
    ap.add_argument("--fault-rounds", type=int, default=10, help="0 skips the fault run")
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--overhead-runs", type=int, default=9)
    args = ap.parse_args()
    global DTYPE
    DTYPE = args.dtype
    model = servable(args.model) or None
    body = {"prompt": "Question: what is 12 + 30? Think step by step.", "max_tokens": args.max_tokens,
            "temperature": 0.6, "ignore_eos": True}

    proc, host, port = start_server(model, args.threads, ["--max-batch", "32"])
    try:
        request(host, port, body)  # warm-up
        rows = [load(host, port, c, args.per_client if c > 1 else 2 * args.per_client, body)
                for c in (1, 4, 16)]
        base = rows[0]["tok_per_s"]
        print(f"serve [{args.label}, {args.dtype}, {args.threads} threads, {args.max_tokens} tokens per request]")
        print(f"  {'clients':>7} {'requests':>8} {'tok/s':>9} {'vs 1':>6} {'TTFT p50':>9} {'TTFT p90':>9}")
        for r in rows:
            print(f"  {r['clients']:>7} {r['requests']:>8} {r['tok_per_s']:>9.1f} "
                  f"{r['tok_per_s'] / base:>5.2f}x {r['ttft_p50_ms']:>7.1f}ms {r['ttft_p90_ms']:>7.1f}ms")
        # Overhead at one client: server wall time per request against generate's own timing.
        server_s = statistics.median(request(host, port, dict(body, temperature=0, logprobs=5))[3]
                                     for _ in range(args.overhead_runs))
        gen_s = statistics.median(generate_seconds(model, args.threads, body["prompt"], args.max_tokens)
                                  for _ in range(args.overhead_runs))
        print(f"  one request: server {1000 * server_s:.1f} ms (HTTP included), generate "
              f"{1000 * gen_s:.1f} ms: overhead {100 * (server_s / gen_s - 1):+.1f}%")
        print(json.dumps({"bench": "serve", "label": args.label, "rows": rows,
                          "server_ms": 1000 * server_s, "generate_ms": 1000 * gen_s}), file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait()

    if args.fault_rounds == 0:
        return
    # The fault run on a server with a small queue, so bursts overflow it.
    proc, host, port = start_server(model, args.threads, ["--max-batch", "4", "--max-queue", "4"])
    try:
        fault_run(host, port, proc.pid, 2)  # warm-up: allocator pools reach their size
        before = rss_mib(proc.pid)
        counts = fault_run(host, port, proc.pid, args.fault_rounds)
        time.sleep(0.5)
        after = rss_mib(proc.pid)
        up = request(host, port, {"prompt": "7 8", "max_tokens": 4})[0] == 200
        print(f"  fault run ({args.fault_rounds} rounds): {counts}; server up afterwards: {up}; "
              f"RSS {before:.1f} MiB -> {after:.1f} MiB ({after - before:+.1f})")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
