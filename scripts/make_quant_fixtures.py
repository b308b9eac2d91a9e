#!/usr/bin/env python3
"""Build tests/fixtures/quant/: gguf-py's Q8_0 and Q4_0 bytes and values for awkward f32 rows.

The Rust tests in src/model/quant/tests.rs require src/model/quant to quantize these rows to the
very same bytes and to dequantize those bytes to the same floats. gguf-py (the `gguf` package,
written by llama.cpp's authors) reimplements ggml's reference quantizers in numpy, so it is an
independent check on ours.

Run by hand, never by CI, with numpy and gguf 0.19.0 (the reference these files were made with):

    python3 -m venv /tmp/quant-ref
    /tmp/quant-ref/bin/pip install numpy gguf==0.19.0
    /tmp/quant-ref/bin/python scripts/make_quant_fixtures.py

Every row comes from a fixed seed, so two runs write identical files. What it writes (all little
endian, ROWS rows of K values; each row is K/32 blocks):

    input.f32   the rows, f32
    q8_0.bin    gguf.quants.quantize(rows, Q8_0): ROWS × K/32 blocks of 34 bytes
    q8_0.f32    gguf.quants.dequantize(q8_0.bin, Q8_0), f32
    q4_0.bin    the same for Q4_0: blocks of 18 bytes
    q4_0.f32    its dequantized values
    manifest.txt  k, rows and the versions used, as `key=value` lines

One case is left out on purpose: a block whose every element is -0.0. ggml's Q4_0 quantizer
starts its running maximum at +0.0 and so stores d = -0.0 (f16 0x8000) for it, while gguf-py takes
the block's first element, -0.0, and stores +0.0. The Rust tests check ggml's answer directly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

GGUF_VERSION = "0.19.0"
K = 128  # 4 blocks per row
BLOCK = 32
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quant"


def rows(rng: np.random.Generator) -> list[np.ndarray]:
    """The awkward rows first, then plain random ones; each K f32 values."""
    def normal(scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(K) * scale).astype(np.float32)

    out = []

    out.append(np.zeros(K, np.float32))  # zero blocks: d = 0 (Q8_0), d = -0.0 (Q4_0)

    one_huge = normal()
    one_huge[37] = 1.0e4
    out.append(one_huge)

    # Each block's element of largest magnitude negative, then positive: Q4_0's d takes its sign.
    for sign in (-1.0, 1.0):
        r = normal().reshape(-1, BLOCK)
        for b in r:
            j = int(np.argmax(np.abs(b)))
            b[j] = sign * abs(b[j]) * 1.5
        out.append(r.reshape(-1))

    # Exact .5 ties for Q8_0: amax = 127 makes d = 1 and 1/d = 1, so x/d is x itself.
    r = (rng.integers(-126, 126, K) + 0.5).astype(np.float32).reshape(-1, BLOCK)
    r[0, 0], r[1, 5], r[2, 31], r[3, 0] = 127.0, -127.0, 127.0, -127.0
    out.append(r.reshape(-1))

    # Exact truncation boundaries for Q4_0: a max of -8 (d = 1) or +8 (d = -1), and every half
    # integer in between, so x/d + 8.5 lands on integers (and on 16, which clips to 15).
    halves = (np.arange(BLOCK) / 2.0 - 8.0).astype(np.float32)
    r = np.stack([halves, -halves, rng.permutation(halves), -rng.permutation(halves)])
    r[0, 0], r[1, 0], r[2, 3], r[3, 30] = -8.0, 8.0, -8.0, 8.0
    out.append(r.reshape(-1))

    out.append(normal(1e-9))  # d rounds to f16 zero while the quants do not
    out.append(normal(1e-5))  # d is an f16 subnormal
    out.append(normal(3e-7))

    # Too large for f16: Q4_0's d (6e5/8) and, in the last block, Q8_0's (1e7/127) become inf.
    r = normal()
    r[3], r[100] = 6.0e5, -1.0e7
    out.append(r)

    # Ties for the largest magnitude: the first one decides Q4_0's sign.
    r = normal(0.5).reshape(-1, BLOCK)
    r[0, 3], r[0, 10] = -5.0, 5.0
    r[1, 2], r[1, 20] = 5.0, -5.0
    r[2, :] = 3.0
    r[3, :] = -3.0
    out.append(r.reshape(-1))

    out.append((np.sign(normal()) * np.exp(normal(4.0))).astype(np.float32))  # wide range
    out.append(np.round(normal(20.0)).astype(np.float32))  # integers
    out.append(rng.uniform(-1.0, 1.0, K).astype(np.float32))
    for scale in (1e-3, 0.02, 1.0, 50.0, 1e3):
        out.append(normal(scale))
    out.append(np.abs(normal()))  # all positive
    return out


def main() -> None:
    from importlib.metadata import version as installed

    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize, quantize

    version = installed("gguf")
    if version != GGUF_VERSION:
        sys.exit(f"needs gguf {GGUF_VERSION} (the fixtures' reference), found {version}")

    x = np.stack(rows(np.random.default_rng(20240611)))
    assert x.dtype == np.float32 and x.shape[1] == K
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "input.f32").write_bytes(x.astype("<f4").tobytes())
    for name, qtype in (("q8_0", T.Q8_0), ("q4_0", T.Q4_0)):
        # One row's scales overflow f16 to inf, and inf times a zero quant is NaN, as in ggml.
        with np.errstate(over="ignore", invalid="ignore"):
            q = quantize(x, qtype)
            values = dequantize(q, qtype)
        assert q.dtype == np.uint8 and values.shape == x.shape
        (OUT / f"{name}.bin").write_bytes(q.tobytes())
        (OUT / f"{name}.f32").write_bytes(values.astype("<f4").tobytes())
    manifest = f"k={K}\nrows={x.shape[0]}\ngguf={version}\nnumpy={np.__version__}\n"
    (OUT / "manifest.txt").write_text(manifest)
    print(f"wrote {x.shape[0]} rows of {K} to {OUT}")


if __name__ == "__main__":
    main()
