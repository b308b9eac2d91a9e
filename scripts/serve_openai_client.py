#!/usr/bin/env python3
"""The `openai` Python package as an independent client of `thinkbench serve` (by hand, not in CI):
starts the server on a free loopback port with the built-in model (or --model DIR), then asks
through the SDK for a chat reply with its reasoning, log-probabilities and routed experts, a
streamed reply, a completion with a stop string, and a request the server must refuse.

    scripts/serve_openai_client.sh            # installs `openai` into the reference environment
"""
import argparse
import base64
import struct
import subprocess
import sys

import openai

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="")
args = ap.parse_args()

cmd = ["./target/release/thinkbench", "serve", "--port", "0"]
if args.model:
    cmd += ["--model", args.model]
server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
try:
    line = server.stdout.readline()
    base = line.split("listening on ")[1].split()[0]
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
    model = client.models.list().data[0].id
    print(f"server: {line.strip()}\nmodels: {model}")

    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is 17 + 25?"}],
        max_tokens=64, temperature=0, logprobs=True, top_logprobs=3,
        extra_body={"return_routed_experts": True})
    choice = reply.choices[0]
    reasoning = getattr(choice.message, "reasoning_content", None) or \
        (choice.message.model_extra or {}).get("reasoning_content")
    print(f"reasoning: {reasoning!r}\ncontent: {choice.message.content!r}")
    print(f"finish: {choice.finish_reason}; usage: {reply.usage}")
    lp = choice.logprobs.content
    assert len(lp) == reply.usage.completion_tokens, "one log-probability per generated token"
    print(f"first tokens: {[(t.token, round(t.logprob, 3)) for t in lp[:5]]}")
    ext = reply.model_extra["sglext"]
    shape = ext["routed_experts_shape"]
    experts = struct.unpack(f"<{shape[0] * shape[1] * shape[2]}i", base64.b64decode(ext["routed_experts"]))
    assert shape[0] == reply.usage.prompt_tokens + reply.usage.completion_tokens - 1
    print(f"routed_experts: shape {shape}, first token's layers: "
          f"{[experts[l * shape[2]:(l + 1) * shape[2]] for l in range(shape[1])]}")

    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is 17 + 25?"}],
        max_tokens=64, temperature=0, stream=True, stream_options={"include_usage": True})
    think, answer, usage = "", "", None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            extra = c.delta.model_extra or {}
            think += extra.get("reasoning_content") or ""
            answer += c.delta.content or ""
    assert (think, answer) == (reasoning or "", choice.message.content or ""), "streamed = not streamed"
    assert usage.completion_tokens == reply.usage.completion_tokens
    print("streamed reply equals the non-streamed one")

    done = client.completions.create(model=model, prompt="17 + 25 =", max_tokens=32,
                                     temperature=0, stop=["\n"])
    print(f"completion with stop: {done.choices[0].text!r} ({done.choices[0].finish_reason})")
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                       temperature="hot")
        sys.exit("the server accepted temperature='hot'")
    except openai.BadRequestError as e:
        print(f"refused as it should be: {e.status_code} {e.body}")
    print("openai client: OK")
finally:
    server.terminate()
    server.wait()
