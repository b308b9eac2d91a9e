#!/usr/bin/env python3
"""Build the parity fixtures under tests/fixtures/ with Hugging Face transformers as the reference.

Run by hand (``make fixtures``), never by CI.  It needs transformers 5.24.x, torch, safetensors,
tokenizers and jinja2; if the interpreter that runs it lacks them it re-executes itself with the
reference venv (``$THINKBENCH_PYREF``, else ``~/.cache/thinkbench/pyref``), which scripts/setup-pyref.sh
creates, or by hand:

    python3 -m venv ~/.cache/thinkbench/pyref
    ~/.cache/thinkbench/pyref/bin/pip install torch==2.13.0 transformers==5.24.0 safetensors numpy jinja2

What it writes (everything is regenerated from fixed seeds; two runs give byte-identical files):

  tests/fixtures/models/<name>/        a tiny, randomly initialised checkpoint in the hub layout
      config.json, *.safetensors (+ model.safetensors.index.json when sharded), tokenizer.json,
      tokenizer_config.json, generation_config.json, expected.json (what transformers computes)
  tests/fixtures/templates/deepseek_r1/ the chat template cases (cases.json) and the tokenizer used
  tests/fixtures/builtin/expected.json  what transformers computes on the shipped built-in model,
      models/thinkbench-tiny, for a few chat prompts (target ``builtin``: ``python3 scripts/make_fixtures.py
      builtin``; rerun it whenever the model is retrained)

Each model folder is built in a temporary sibling folder and renamed into place at the end.

The chat template is DeepSeek-R1's published one (the revision whose generation prompt is
``<｜Assistant｜><think>\\n``), kept verbatim in scripts/templates/deepseek_r1.jinja.  Where it came from:
the ``chat_template`` of huggingface.co/deepseek-ai/DeepSeek-R1/blob/main/tokenizer_config.json, as
copied verbatim into two unrelated repositories that agree byte for byte:
  - huggingface/optimum-intel, optimum/exporters/openvino/utils.py, COMPLEX_CHAT_TEMPLATES,
    the key under the comment "# deepseek-r1" (commit e1de5beecfd0c3ae6047ea22cea4a4cad4307aff);
  - ShishirPatil/gorilla, berkeley-function-call-leaderboard/bfcl_eval/model_handler/local_inference/
    deepseek_reasoning.py, the docstring of _format_prompt, which quotes the hub file
    (commit 6ea57973c7a6097fd7c5915698c54c17c5b1b6c8).
"""

from __future__ import annotations

import os
import sys

REQUIRED_TRANSFORMERS = "5.24"
_REEXEC_FLAG = "THINKBENCH_FIXTURES_REEXEC"


def _reference_python() -> str:
    # Same place scripts/setup-pyref.sh creates it: $THINKBENCH_PYREF (a venv folder, or a python),
    # else ${XDG_CACHE_HOME:-~/.cache}/thinkbench/pyref.
    override = os.environ.get("THINKBENCH_PYREF")
    if override:
        return override if not os.path.isdir(override) else os.path.join(override, "bin", "python")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "thinkbench", "pyref", "bin", "python")


def _ensure_reference_env() -> None:
    """Check for transformers 5.24.x; re-exec with the reference venv when this interpreter lacks it."""
    try:
        import transformers  # noqa: F401

        version = transformers.__version__
    except ImportError:
        version = None
    if version is not None and (version == REQUIRED_TRANSFORMERS or version.startswith(REQUIRED_TRANSFORMERS + ".")):
        return
    ref = _reference_python()
    # (no realpath: a venv's python is a symlink to the base interpreter, and the venv is in the link)
    if not os.environ.get(_REEXEC_FLAG) and os.path.exists(ref) and os.path.abspath(ref) != os.path.abspath(sys.executable):
        os.environ[_REEXEC_FLAG] = "1"
        os.execv(ref, [ref, os.path.abspath(__file__), *sys.argv[1:]])
    found = "not installed" if version is None else f"version {version}"
    sys.exit(
        f"error: make_fixtures.py needs transformers {REQUIRED_TRANSFORMERS}.x (found {found} in {sys.executable}).\n"
        f"Create the reference venv (scripts/setup-pyref.sh does this):\n"
        f"  python3 -m venv ~/.cache/thinkbench/pyref\n"
        f"  ~/.cache/thinkbench/pyref/bin/pip install torch==2.13.0 transformers==5.24.0 safetensors numpy jinja2\n"
        f"or point THINKBENCH_PYREF at a python that has it."
    )


_ensure_reference_env()

import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_FILE = ROOT / "scripts" / "templates" / "deepseek_r1.jinja"
FIXTURES = ROOT / "tests" / "fixtures"
MODELS_DIR = FIXTURES / "models"
TEMPLATES_DIR = FIXTURES / "templates" / "deepseek_r1"

TORCH_VERSION = torch.__version__.split("+")[0]
TRANSFORMERS_VERSION = transformers.__version__

# ---------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"
# BPE vocabulary size the trainer must reach (2 special tokens + 256 bytes + merges).  With the four
# added tokens the tokenizer has 302 entries, so the DeepSeek/Qwen2 embeddings (rounded up to a
# multiple of 8 = 304 rows) carry two rows that no token maps to.
BPE_VOCAB = 298
MODEL_MAX_LENGTH = 16384

TRAINING_TEXT = """\
The assistant thinks step by step before it answers. First it reads the question, then it writes
its reasoning, and at the end it gives the final answer in a box. Let me think about this problem.
What is 12 + 7? We add the ones: 2 + 7 = 9, and the tens stay 1, so 12 + 7 = 19. The answer is 19.
What is 45 - 18? Take 18 from 45: 45 - 10 = 35 and 35 - 8 = 27, so the answer is 27.
Compute 6 * 7. Six sevens are 42, so 6 * 7 = 42. Compute 9 * 8 = 72 and 81 / 9 = 9.
If a train travels 60 miles in 1 hour, how far does it travel in 3 hours? It travels 180 miles.
A rectangle is 4 wide and 5 long, so its area is 4 * 5 = 20 and its perimeter is 2 * (4 + 5) = 18.
The sum of the first ten numbers is 1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 = 55.
Wait, let me check that again. The numbers pair up: 1 + 10 = 11, 2 + 9 = 11, and there are five
pairs, so the total is 5 * 11 = 55. That matches, so the answer is correct.
Solve for x: 3x + 5 = 20. Subtract 5 from both sides: 3x = 15. Divide by 3: x = 5.
Solve for y: 2y - 4 = 10. Add 4: 2y = 14. Divide by 2: y = 7. Check: 2 * 7 - 4 = 10. Yes.
Is 91 a prime number? No, because 91 = 7 * 13. Is 97 a prime number? Yes, it has no divisors.
The square of 12 is 144 and the square root of 169 is 13. Two to the power ten is 1024.
A store sells apples for 3 dollars a pound. Maria buys 4 pounds, so she pays 12 dollars.
Then she buys two more pounds, which cost 6 dollars, and the total comes to 18 dollars.
Hmm, that seems right, but let me verify the reasoning once more before I answer the question.
The quick brown fox jumps over the lazy dog while the children count the stars in the sky.
In the morning the weather was cold and grey, but by the afternoon the sun came out again.
She opened the book, read the first page, and smiled, because the story was about her town.
We should always explain each step clearly, so that the reader can follow the argument.
The probability of rolling a six on a fair die is 1/6, and of rolling two sixes is 1/36.
The average of 4, 8 and 12 is (4 + 8 + 12) / 3 = 24 / 3 = 8. The median is also 8.
Fractions: 1/2 + 1/3 = 3/6 + 2/6 = 5/6. Decimals: 0.5 + 0.25 = 0.75. Percent: 20% of 50 is 10.
Therefore, the final answer is 42. So the result is 100. Thus the value of the expression is 7.
"""


def build_tokenizer() -> Tokenizer:
    """A tiny byte-level BPE tokenizer with DeepSeek-R1's special strings, laid out like R1's."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        special_tokens=[AddedToken(BOS, special=True, normalized=False), AddedToken(EOS, special=True, normalized=False)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT.splitlines(keepends=True), trainer)
    if tok.get_vocab_size() != BPE_VOCAB:
        raise SystemExit(f"tokenizer training reached {tok.get_vocab_size()} entries, wanted {BPE_VOCAB}")
    # R1-Distill marks these four as added tokens that are not "special" (skip_special_tokens keeps them).
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in (USER, ASSISTANT, THINK, END_THINK)])
    # Like R1-Distill: encoding with special tokens prepends BOS (so a rendered chat template, which
    # already starts with BOS, must be encoded without them).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1
    return tok


def tokenizer_config(tok: Tokenizer, template: str) -> dict:
    added = {}
    for tid, at in sorted(tok.get_added_tokens_decoder().items()):
        added[str(tid)] = {
            "content": at.content,
            "lstrip": at.lstrip,
            "normalized": at.normalized,
            "rstrip": at.rstrip,
            "single_word": at.single_word,
            "special": at.special,
        }
    # Mirrors the keys of DeepSeek-R1-Distill-Qwen's tokenizer_config.json.
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "legacy": True,
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": EOS,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizerFast",
        "unk_token": None,
        "use_default_system_prompt": False,
        "chat_template": template,
    }


def write_json(path: Path, obj, indent: int | None = 2) -> None:
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def write_tokenizer_files(folder: Path, tok: Tokenizer, template: str) -> None:
    (folder / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")
    write_json(folder / "tokenizer_config.json", tokenizer_config(tok, template))


# ---------------------------------------------------------------------------------------------------
# Model fixtures: configs in the hub's spelling
# ---------------------------------------------------------------------------------------------------

N_TOKENS = BPE_VOCAB + 4  # len(tokenizer)
PADDED_VOCAB = (N_TOKENS + 7) // 8 * 8
HIDDEN = 64


def _deepseek_common(vocab: int) -> dict:
    return {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "kv_lora_rank": 16,
        "max_position_embeddings": 256,
        "moe_intermediate_size": 8,
        "moe_layer_freq": 1,
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "num_key_value_heads": 4,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "rms_norm_eps": 1e-06,
        "use_cache": True,
        "v_head_dim": 16,
        "vocab_size": vocab,
    }


def config_deepseek_v3_qlora() -> dict:
    c = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3"}
    c.update(_deepseek_common(PADDED_VOCAB))
    c.update(
        {
            "aux_loss_alpha": 0.001,
            "ep_size": 1,
            "first_k_dense_replace": 1,
            "n_group": 2,
            "n_routed_experts": 8,
            "n_shared_experts": 1,
            "norm_topk_prob": True,
            "num_experts_per_tok": 2,
            "num_nextn_predict_layers": 1,
            "pretraining_tp": 1,
            "q_lora_rank": 32,
            "rope_scaling": {
                "beta_fast": 32,
                "beta_slow": 1,
                "factor": 4,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
                "original_max_position_embeddings": 64,
                "type": "yarn",
            },
            "rope_theta": 10000,
            "routed_scaling_factor": 2.5,
            "scoring_func": "sigmoid",
            "seq_aux": True,
            "tie_word_embeddings": False,
            "topk_group": 1,
            "topk_method": "noaux_tc",
            "torch_dtype": "float32",
            "transformers_version": "4.46.3",
        }
    )
    return dict(sorted(c.items()))


def config_deepseek_v3_plain() -> dict:
    c = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3"}
    c.update(_deepseek_common(PADDED_VOCAB))
    c.update(
        {
            "dtype": "bfloat16",
            "first_k_dense_replace": 1,
            "n_group": 4,
            "n_routed_experts": 8,
            "n_shared_experts": 1,
            "norm_topk_prob": False,
            "num_experts_per_tok": 3,
            "q_lora_rank": None,
            "rope_interleave": False,
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
            "routed_scaling_factor": 2.5,
            "tie_word_embeddings": True,
            "topk_group": 2,
            "transformers_version": "5.24.0",
        }
    )
    return dict(sorted(c.items()))


FP8_BLOCK = 32


def config_deepseek_v3_fp8() -> dict:
    c = config_deepseek_v3_qlora()
    c.update(
        {
            "moe_intermediate_size": 48,
            "quantization_config": {
                "activation_scheme": "dynamic",
                "fmt": "e4m3",
                "quant_method": "fp8",
                "weight_block_size": [FP8_BLOCK, FP8_BLOCK],
            },
            "torch_dtype": "bfloat16",
        }
    )
    return dict(sorted(c.items()))


def config_deepseek_v2_lite() -> dict:
    c = {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2"}
    c.update(_deepseek_common(PADDED_VOCAB))
    c.update(
        {
            "aux_loss_alpha": 0.001,
            "first_k_dense_replace": 1,
            "n_group": 1,
            "n_routed_experts": 8,
            "n_shared_experts": 2,
            "norm_topk_prob": False,
            "num_experts_per_tok": 2,
            "pretraining_tp": 1,
            "q_lora_rank": None,
            "rope_scaling": {
                "beta_fast": 32,
                "beta_slow": 1,
                "factor": 4,
                "mscale": 0.707,
                "mscale_all_dim": 0.707,
                "original_max_position_embeddings": 64,
                "type": "yarn",
            },
            "rope_theta": 10000,
            "routed_scaling_factor": 1.0,
            "scoring_func": "softmax",
            "seq_aux": True,
            "tie_word_embeddings": False,
            "topk_group": 1,
            "topk_method": "greedy",
            "torch_dtype": "float32",
            "transformers_version": "4.39.3",
        }
    )
    return dict(sorted(c.items()))


def config_deepseek_v2_grouped() -> dict:
    c = {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2"}
    c.update(_deepseek_common(PADDED_VOCAB))
    c.update(
        {
            "aux_loss_alpha": 0.003,
            "first_k_dense_replace": 1,
            "n_group": 4,
            "n_routed_experts": 8,
            "n_shared_experts": 2,
            "norm_topk_prob": False,
            "num_experts_per_tok": 2,
            "pretraining_tp": 1,
            "q_lora_rank": 32,
            "rope_scaling": None,
            "rope_theta": 10000,
            "routed_scaling_factor": 16.0,
            "scoring_func": "softmax",
            "seq_aux": True,
            "tie_word_embeddings": False,
            "topk_group": 2,
            "topk_method": "group_limited_greedy",
            "torch_dtype": "float32",
            "transformers_version": "4.39.3",
        }
    )
    return dict(sorted(c.items()))


def config_qwen2() -> dict:
    return dict(
        sorted(
            {
                "architectures": ["Qwen2ForCausalLM"],
                "attention_dropout": 0.0,
                "bos_token_id": 0,
                "eos_token_id": 1,
                "hidden_act": "silu",
                "hidden_size": HIDDEN,
                "initializer_range": 0.02,
                "intermediate_size": 96,
                "max_position_embeddings": 4096,
                "max_window_layers": 2,
                "model_type": "qwen2",
                "num_attention_heads": 4,
                "num_hidden_layers": 2,
                "num_key_value_heads": 2,
                "rms_norm_eps": 1e-06,
                "rope_theta": 10000,
                "sliding_window": 4096,
                "tie_word_embeddings": False,
                "torch_dtype": "float16",
                "transformers_version": "4.44.0",
                "use_cache": True,
                "use_mrope": False,
                "use_sliding_window": False,
                "vocab_size": PADDED_VOCAB,
            }.items()
        )
    )


def config_llama() -> dict:
    return dict(
        sorted(
            {
                "architectures": ["LlamaForCausalLM"],
                "attention_bias": False,
                "attention_dropout": 0.0,
                "bos_token_id": 0,
                "eos_token_id": 1,
                "hidden_act": "silu",
                "hidden_size": HIDDEN,
                "initializer_range": 0.02,
                "intermediate_size": 96,
                "max_position_embeddings": 512,
                "mlp_bias": False,
                "model_type": "llama",
                "num_attention_heads": 4,
                "num_hidden_layers": 2,
                "num_key_value_heads": 2,
                "pretraining_tp": 1,
                "rms_norm_eps": 1e-05,
                "rope_scaling": {
                    "factor": 8.0,
                    "high_freq_factor": 4.0,
                    "low_freq_factor": 1.0,
                    "original_max_position_embeddings": 64,
                    "rope_type": "llama3",
                },
                "rope_theta": 500000.0,
                "tie_word_embeddings": True,
                "torch_dtype": "float32",
                "transformers_version": "4.47.0",
                "use_cache": True,
                "vocab_size": N_TOKENS,
            }.items()
        )
    )


def config_qwen3() -> dict:
    return dict(
        sorted(
            {
                "architectures": ["Qwen3ForCausalLM"],
                "attention_bias": False,
                "attention_dropout": 0.0,
                "bos_token_id": 0,
                "eos_token_id": 1,
                "head_dim": 32,
                "hidden_act": "silu",
                "hidden_size": HIDDEN,
                "initializer_range": 0.02,
                "intermediate_size": 96,
                "max_position_embeddings": 4096,
                "max_window_layers": 2,
                "model_type": "qwen3",
                "num_attention_heads": 4,
                "num_hidden_layers": 2,
                "num_key_value_heads": 2,
                "rms_norm_eps": 1e-06,
                "rope_scaling": None,
                "rope_theta": 1000000,
                "sliding_window": None,
                "tie_word_embeddings": False,
                "torch_dtype": "float32",
                "transformers_version": "4.51.0",
                "use_cache": True,
                "use_sliding_window": False,
                "vocab_size": N_TOKENS,
            }.items()
        )
    )


# name -> (config builder, storage dtype, options)
FIXTURE_SPECS = {
    "deepseek_v3_qlora": dict(config=config_deepseek_v3_qlora, dtype=torch.float32, mtp=True, seed=1000),
    # Larger correction biases, and a seed on which filling the excluded groups with 0.0 (instead of
    # transformers' -inf) would change at least one routing decision.
    "deepseek_v3_plain": dict(
        config=config_deepseek_v3_plain, dtype=torch.bfloat16, shards=3, seed=2000, bias_std=0.3, needs_zero_fill_difference=True
    ),
    "deepseek_v3_fp8": dict(config=config_deepseek_v3_fp8, dtype=torch.bfloat16, mtp=True, fp8=True, seed=3000),
    "deepseek_v2_lite": dict(config=config_deepseek_v2_lite, dtype=torch.float32, seed=4000),
    "deepseek_v2_grouped": dict(config=config_deepseek_v2_grouped, dtype=torch.float32, seed=5000),
    "qwen2": dict(config=config_qwen2, dtype=torch.float16, seed=6000),
    "llama": dict(config=config_llama, dtype=torch.float32, seed=7000),
    "qwen3": dict(config=config_qwen3, dtype=torch.float32, seed=8000),
}

GENERATION_CONFIG = {
    "bos_token_id": 0,
    "do_sample": True,
    "eos_token_id": 1,
    "temperature": 0.6,
    "top_p": 0.95,
    "transformers_version": "5.24.0",
}

# ---------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------


def hub_weight_shapes(cfg_dict: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the checkpoint tensors, in the hub layout (per-expert linears).

    The names come from transformers' own module tree (a model built from the config); only the v5
    fused expert tensors are spelled back out per expert, as the hub checkpoints store them.
    """
    config = transformers.AutoConfig.for_model(**copy.deepcopy(cfg_dict))
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, t in model.state_dict().items():
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            n_exp, two_i, hidden = t.shape
            for e in range(n_exp):
                shapes[f"{prefix}{e}.gate_proj.weight"] = (two_i // 2, hidden)
                shapes[f"{prefix}{e}.up_proj.weight"] = (two_i // 2, hidden)
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            n_exp, hidden, inter = t.shape
            for e in range(n_exp):
                shapes[f"{prefix}{e}.down_proj.weight"] = (hidden, inter)
        else:
            shapes[name] = tuple(t.shape)
    if cfg_dict.get("tie_word_embeddings"):
        shapes.pop("lm_head.weight", None)
    return shapes


def add_mtp_shapes(shapes: dict, cfg_dict: dict) -> None:
    """DeepSeek-V3's multi-token-prediction layer, stored as model.layers.<num_hidden_layers>.*."""
    n = cfg_dict["num_hidden_layers"]
    last = f"model.layers.{n - 1}."
    mtp = f"model.layers.{n}."
    for name, shape in list(shapes.items()):
        if name.startswith(last):
            shapes[mtp + name[len(last):]] = shape
    h, v = cfg_dict["hidden_size"], cfg_dict["vocab_size"]
    shapes[mtp + "enorm.weight"] = (h,)
    shapes[mtp + "hnorm.weight"] = (h,)
    shapes[mtp + "eh_proj.weight"] = (h, 2 * h)
    shapes[mtp + "shared_head.norm.weight"] = (h,)
    shapes[mtp + "shared_head.head.weight"] = (v, h)
    shapes[mtp + "embed_tokens.weight"] = (v, h)


NORM_SUFFIXES = ("layernorm.weight", "norm.weight")


def init_weights(shapes: dict, cfg_dict: dict, seed: int, bias_std: float = 0.1) -> dict[str, torch.Tensor]:
    """Deterministic float32 weights, scaled so activations stay O(1) and logits are well spread."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("e_score_correction_bias"):
            t = torch.randn(shape, generator=g) * bias_std
        elif name.endswith(".mlp.gate.weight"):  # MoE router
            t = torch.randn(shape, generator=g) * 0.3
        elif name.endswith(NORM_SUFFIXES):
            t = 1.0 + 0.15 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            t = torch.randn(shape, generator=g) * 0.3
        elif name.endswith("embed_tokens.weight"):
            # A tied embedding is also the output head: scale it like one, or the logits collapse.
            scale = 1.5 / math.sqrt(shape[1]) if cfg_dict.get("tie_word_embeddings") else 1.0
            t = torch.randn(shape, generator=g) * scale
        elif name.endswith(("lm_head.weight", "shared_head.head.weight")):
            t = torch.randn(shape, generator=g) * (1.5 / math.sqrt(shape[1]))
        elif len(shape) == 2:
            t = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        else:
            raise SystemExit(f"no init rule for {name} {shape}")
        out[name] = t.float().contiguous()
    # Embedding rows that no token maps to (vocab_size > len(tokenizer)): tiny, so they never reach a
    # top-5 list; a tied head then gives them logits near 0.
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in out and out[name].shape[0] > N_TOKENS:
            out[name][N_TOKENS:] *= 0.01
    # The MTP layer's embedding and head are copies of the main ones, as in the hub checkpoints.
    n = cfg_dict["num_hidden_layers"]
    if f"model.layers.{n}.embed_tokens.weight" in out:
        out[f"model.layers.{n}.embed_tokens.weight"] = out["model.embed_tokens.weight"].clone()
        head = out.get("lm_head.weight", out["model.embed_tokens.weight"])
        out[f"model.layers.{n}.shared_head.head.weight"] = head.clone()
    return out


FP8_LINEARS = ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_fp8_linear(name: str) -> bool:
    """The attention and MLP/expert Linears are FP8 in the hub V3 checkpoint; the MoE router, norms,
    embeddings, heads (and the MTP input projection) are not."""
    return name.endswith(tuple(f".{m}.weight" for m in FP8_LINEARS))


def fp8_quantize(w: torch.Tensor, block: int = FP8_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block x block tile: scale = max|w| / 448, q = (w / scale) as e4m3; returns (q, scale_inv)."""
    out_f, in_f = w.shape
    nb_o, nb_i = math.ceil(out_f / block), math.ceil(in_f / block)
    scale = torch.empty(nb_o, nb_i, dtype=torch.float32)
    for i in range(nb_o):
        for j in range(nb_i):
            tile = w[i * block : (i + 1) * block, j * block : (j + 1) * block]
            scale[i, j] = tile.abs().max() / 448.0
    full = scale.repeat_interleave(block, 0)[:out_f].repeat_interleave(block, 1)[:, :in_f]
    q = (w / full).to(torch.float8_e4m3fn)
    return q.contiguous(), scale


def fp8_dequantize(q: torch.Tensor, scale_inv: torch.Tensor, block: int = FP8_BLOCK) -> torch.Tensor:
    out_f, in_f = q.shape
    full = scale_inv.float().repeat_interleave(block, 0)[:out_f].repeat_interleave(block, 1)[:, :in_f]
    return (q.float() * full).contiguous()


def storage_tensors(weights: dict, dtype: torch.dtype, fp8: bool) -> dict[str, torch.Tensor]:
    """The tensors as they go into the safetensors files."""
    out = {}
    for name, w in weights.items():
        if name.endswith("e_score_correction_bias"):
            out[name] = w.to(torch.float32)  # the hub keeps this buffer in f32
        elif fp8 and is_fp8_linear(name):
            q, s = fp8_quantize(w)
            out[name] = q
            out[name[: -len("weight")] + "weight_scale_inv"] = s
        else:
            out[name] = w.to(dtype).contiguous()
    return out


def reference_tensors(stored: dict) -> dict[str, torch.Tensor]:
    """What the reference model is built from: stored tensors upcast to f32, FP8 dequantised."""
    out = {}
    for name, t in stored.items():
        if name.endswith("weight_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            out[name] = fp8_dequantize(t, stored[name[: -len("weight")] + "weight_scale_inv"])
        else:
            out[name] = t.to(torch.float32)
    return out


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "model" and parts[1] == "layers":
        return int(parts[2])
    return None


def write_safetensors(folder: Path, tensors: dict, shards: int = 1) -> None:
    meta = {"format": "pt"}
    if shards <= 1:
        save_file(dict(sorted(tensors.items())), str(folder / "model.safetensors"), metadata=meta)
        return
    # Split by layer: embeddings with the first layers, the final norm and head with the last ones.
    layers = sorted({layer_of(n) for n in tensors if layer_of(n) is not None})
    per = math.ceil(len(layers) / shards)
    groups: list[dict] = [dict() for _ in range(shards)]
    for name, t in tensors.items():
        li = layer_of(name)
        idx = 0 if (li is None and "embed_tokens" in name) else (shards - 1 if li is None else layers.index(li) // per)
        groups[idx][name] = t
    weight_map, total = {}, 0
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file(dict(sorted(group.items())), str(folder / fname), metadata=meta)
        for name, t in group.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    write_json(folder / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():
                out[k] = sf.get_tensor(k)
    return out


# ---------------------------------------------------------------------------------------------------
# Reference runs
# ---------------------------------------------------------------------------------------------------

TOP_K = 5
NEW_TOKENS = 8
GREEDY_GAP = 1e-3  # min top-1/top-2 logit gap on every greedy step
TOP_GAP = 1e-3  # min gap between neighbours in the top-6 logits at every position
ROUTER_GAP = 5e-4  # min gap at every router top-k / group boundary


class Margins(Exception):
    pass


def load_reference(folder: Path):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    return model, info


def is_moe_layer(cfg: dict, i: int) -> bool:
    return cfg["model_type"] in ("deepseek_v3", "deepseek_v2") and i >= cfg["first_k_dense_replace"]


class RouterProbe:
    """Forward hooks on each MoE layer's router (`mlp.gate`): the real selection and weights, and the
    distance of every top-k / group decision from a tie."""

    def __init__(self, model, cfg: dict):
        self.cfg = cfg
        self.current: dict[int, tuple] | None = None
        self.min_gap = math.inf
        self.zero_fill_would_differ = 0
        self.handles = []
        for i, layer in enumerate(model.model.layers):
            if is_moe_layer(cfg, i):
                self.handles.append(layer.mlp.gate.register_forward_hook(self._hook(i)))

    def begin(self):
        self.current = {}

    def remove(self):
        for h in self.handles:
            h.remove()

    def _hook(self, layer_idx: int):
        def hook(module, inputs, output):
            logits, weights, indices = output
            self.current[layer_idx] = (weights.detach().clone(), indices.detach().clone())
            self._check(module, logits.detach().float(), indices.detach().sort(-1).values)

        return hook

    def _gap(self, sorted_vals: torch.Tensor, k: int) -> None:
        if sorted_vals.shape[-1] > k:
            gap = (sorted_vals[:, k - 1] - sorted_vals[:, k]).min().item()
            self.min_gap = min(self.min_gap, gap)

    def _check(self, gate, logits: torch.Tensor, used: torch.Tensor) -> None:
        cfg = self.cfg
        k = cfg["num_experts_per_tok"]
        n_exp = cfg["n_routed_experts"]
        if cfg["model_type"] == "deepseek_v3":
            scores = logits.sigmoid() + gate.e_score_correction_bias.float()
            n_group, topk_group = cfg["n_group"], cfg["topk_group"]
            grp = scores.view(-1, n_group, n_exp // n_group).topk(2, dim=-1).values.sum(-1)
            self._gap(grp.sort(dim=-1, descending=True).values, topk_group)
            keep = torch.zeros_like(grp).scatter_(1, grp.topk(topk_group, dim=-1).indices, 1.0)
            keep = keep.repeat_interleave(n_exp // n_group, dim=1).bool()
            cand = scores.masked_fill(~keep, float("-inf"))
            # Gaps inside the kept groups only (the -inf entries never compete).
            kept = cand.sort(dim=-1, descending=True).values[:, : keep.sum(-1).min().item()]
            self._gap(kept, k)
            chosen = cand.topk(k, dim=-1).indices.sort(-1).values
            zero = scores.masked_fill(~keep, 0.0).topk(k, dim=-1).indices.sort(-1).values
            self.zero_fill_would_differ += int((chosen != zero).any(-1).sum().item())
            if not torch.equal(chosen, used):
                raise SystemExit("transformers' V3 router chose differently from a -inf group fill")
        else:
            probs = logits.softmax(dim=-1)
            if cfg["topk_method"] == "group_limited_greedy":
                n_group, topk_group = cfg["n_group"], cfg["topk_group"]
                grp = probs.view(-1, n_group, n_exp // n_group).max(dim=-1).values
                self._gap(grp.sort(dim=-1, descending=True).values, topk_group)
                keep = torch.zeros_like(grp).scatter_(1, grp.topk(topk_group, dim=-1).indices, 1.0)
                probs = probs.masked_fill(~keep.repeat_interleave(n_exp // n_group, dim=1).bool(), 0.0)
            self._gap(probs.sort(dim=-1, descending=True).values, k)
            if not torch.equal(probs.topk(k, dim=-1).indices.sort(-1).values, used):
                raise SystemExit("transformers' V2 router chose differently from the expected selection")


def top_entries(logprobs: torch.Tensor) -> list[list]:
    vals, ids = logprobs.topk(TOP_K)
    return [[int(i), float(v)] for i, v in zip(ids.tolist(), vals.tolist())]


def check_logit_margins(
    logits: torch.Tensor, greedy_rows: list[int], n_tokens: int = N_TOKENS, top_gap: float = TOP_GAP
) -> float:
    """Smallest neighbour gap in the top-6 at every row; raises if a greedy step is close to a tie or a
    padded (token-less) row reaches a top-5 list."""
    top = logits.topk(TOP_K + 1, dim=-1)
    gaps = top.values[:, :-1] - top.values[:, 1:]
    if (top.indices[:, :TOP_K] >= n_tokens).any():
        raise Margins("a padded vocabulary row reached a top-5 list")
    for r in greedy_rows:
        if gaps[r, 0].item() < GREEDY_GAP:
            raise Margins(f"greedy gap {gaps[r, 0].item():.3g}")
    if gaps.min().item() < top_gap:
        raise Margins(f"top-6 neighbour gap {gaps.min().item():.3g}")
    return gaps.min().item()


@torch.no_grad()
def run_cases(
    model,
    cfg: dict,
    prompts: list[list[int]],
    new_tokens: int = NEW_TOKENS,
    n_tokens: int = N_TOKENS,
    top_gap: float = TOP_GAP,
    router_gap: float = ROUTER_GAP,
) -> tuple[list[dict], dict]:
    probe = RouterProbe(model, cfg) if any(is_moe_layer(cfg, i) for i in range(cfg["num_hidden_layers"])) else None
    stats = {"min_top_gap": math.inf}
    cases = []
    try:
        for prompt in prompts:
            ids = torch.tensor([prompt], dtype=torch.long)
            # Full forward over the prompt: per-position top-5 and the routing of every prompt token.
            if probe:
                probe.begin()
            logits = model(input_ids=ids).logits[0].float()
            stats["min_top_gap"] = min(stats["min_top_gap"], check_logit_margins(logits, [], n_tokens, top_gap))
            logprobs = torch.log_softmax(logits, dim=-1)
            prompt_top = [top_entries(logprobs[p]) for p in range(len(prompt))]
            routing = []
            if probe:
                call = probe.current
                for p in range(len(prompt)):
                    per_layer = []
                    for layer_idx in sorted(call):
                        w, ix = call[layer_idx]
                        pairs = sorted(zip(ix[p].tolist(), w[p].tolist()))
                        per_layer.append(
                            {"layer": layer_idx, "experts": [int(e) for e, _ in pairs], "weights": [float(x) for _, x in pairs]}
                        )
                    routing.append(per_layer)
            # Greedy decoding, one full forward per new token (no cache, and eos does not stop it).
            seq = list(prompt)
            generated = []
            for _ in range(new_tokens):
                if probe:
                    probe.begin()
                step_logits = model(input_ids=torch.tensor([seq], dtype=torch.long)).logits[0, -1:].float()
                stats["min_top_gap"] = min(stats["min_top_gap"], check_logit_margins(step_logits, [0], n_tokens, top_gap))
                lp = torch.log_softmax(step_logits[0], dim=-1)
                nxt = int(step_logits[0].argmax().item())
                generated.append({"id": nxt, "top": top_entries(lp)})
                seq.append(nxt)
            case = {"prompt_ids": list(prompt), "generated": generated}
            if probe:
                case["prompt_routing"] = routing
            case["prompt_logits_top"] = prompt_top
            cases.append(case)
    finally:
        if probe:
            probe.remove()
    if probe:
        if probe.min_gap < router_gap:
            raise Margins(f"router gap {probe.min_gap:.3g}")
        stats["min_router_gap"] = probe.min_gap
        stats["zero_fill_would_differ"] = probe.zero_fill_would_differ
    return cases, stats


def make_prompts() -> list[list[int]]:
    rng = random.Random(20250120)
    ordinary = list(range(2, N_TOKENS))  # every id but bos/eos, added tokens included
    prompts = []
    for length, with_bos in ((5, False), (12, True), (20, False)):
        p = [rng.choice(ordinary) for _ in range(length)]
        if with_bos:
            p[0] = 0
        prompts.append(p)
    return prompts


def expected_document(cfg: dict, cases: list[dict], model) -> dict:
    doc = {
        "transformers_version": TRANSFORMERS_VERSION,
        "torch_version": TORCH_VERSION,
        "model_type": cfg["model_type"],
        "reference_dtype": "float32",
    }
    if cfg["model_type"] in ("deepseek_v3", "deepseek_v2"):
        # The softmax scale transformers' MLA uses (qk_head_dim^-0.5, times mscale^2 under YaRN).
        doc["softmax_scale"] = float(model.model.layers[0].self_attn.scaling)
    doc["cases"] = cases
    return doc


def verify_loaded(model, info: dict, ref: dict[str, torch.Tensor], cfg: dict, allowed_unexpected: set[str]) -> None:
    """The reference model holds exactly the tensors we wrote (nothing silently re-initialised)."""
    missing = set(info.get("missing_keys", []))
    mtp_prefix = f"model.layers.{cfg['num_hidden_layers']}."
    # The MTP layer is not part of transformers' model; it reports those keys (some already renamed by
    # its expert-fusing conversion) as unexpected and drops them.
    unexpected = {k for k in info.get("unexpected_keys", []) if not (allowed_unexpected and k.startswith(mtp_prefix))}
    mismatched = info.get("mismatched_keys", [])
    if missing or unexpected or mismatched:
        raise SystemExit(f"loading mismatch: missing={sorted(missing)} unexpected={sorted(unexpected)} mismatched={mismatched}")
    params = dict(model.state_dict())
    checked = 0
    for name, t in ref.items():
        if name in allowed_unexpected:
            continue
        parts = name.split(".")
        if "experts" in parts and parts[parts.index("experts") + 1].isdigit():
            i = parts.index("experts")
            e, proj = int(parts[i + 1]), parts[i + 2]
            base = ".".join(parts[: i + 1])
            inter = t.shape[0] if proj != "down_proj" else t.shape[1]
            if proj == "gate_proj":
                got = params[base + ".gate_up_proj"][e][:inter]
            elif proj == "up_proj":
                got = params[base + ".gate_up_proj"][e][inter:]
            else:
                got = params[base + ".down_proj"][e]
        else:
            got = params[name]
        if got.dtype != torch.float32 or not torch.equal(got, t):
            raise SystemExit(f"{name}: loaded tensor differs from the checkpoint")
        checked += 1
    if cfg.get("tie_word_embeddings"):
        if not torch.equal(params["lm_head.weight"], params["model.embed_tokens.weight"]):
            raise SystemExit("tied lm_head differs from embed_tokens")
    return checked


def write_dequantised_copy(src: Path, dst: Path, cfg: dict) -> dict[str, torch.Tensor]:
    """A plain f32 checkpoint of what the FP8 files hold (FP8 blocks times their scales), for transformers."""
    dst.mkdir(parents=True)
    ref = reference_tensors(read_checkpoint(src))
    plain = {k: v for k, v in cfg.items() if k != "quantization_config"}
    plain["torch_dtype"] = "float32"
    write_json(dst / "config.json", plain)
    save_file(dict(sorted(ref.items())), str(dst / "model.safetensors"), metadata={"format": "pt"})
    return ref


def mtp_keys(cfg: dict, names) -> set[str]:
    n = cfg["num_hidden_layers"]
    return {k for k in names if k.startswith(f"model.layers.{n}.")}


def build_model_fixture(name: str, spec: dict, tok: Tokenizer, template: str, prompts, scratch: Path) -> dict:
    cfg = spec["config"]()
    shapes = hub_weight_shapes(cfg)
    if spec.get("mtp"):
        add_mtp_shapes(shapes, cfg)
    fp8 = spec.get("fp8", False)
    final = MODELS_DIR / name
    for attempt in range(64):
        seed = spec["seed"] + attempt
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=MODELS_DIR))
        work.chmod(0o755)
        try:
            write_json(work / "config.json", cfg)
            write_json(work / "generation_config.json", GENERATION_CONFIG)
            write_tokenizer_files(work, tok, template)
            stored = storage_tensors(init_weights(shapes, cfg, seed, spec.get("bias_std", 0.1)), spec["dtype"], fp8)
            write_safetensors(work, stored, spec.get("shards", 1))
            if fp8:
                ref_dir = scratch / f"{name}-{seed}-dequant"
                ref = write_dequantised_copy(work, ref_dir, cfg)
            else:
                ref_dir = work
                ref = reference_tensors(read_checkpoint(work))
            model, info = load_reference(ref_dir)
            allowed = mtp_keys(cfg, ref)
            verify_loaded(model, info, ref, cfg, allowed)
            try:
                cases, stats = run_cases(model, cfg, prompts)
                if spec.get("needs_zero_fill_difference") and stats["zero_fill_would_differ"] == 0:
                    raise Margins("no routing decision depends on the -inf group fill")
            except Margins as why:
                print(f"  {name}: seed {seed} rejected ({why}), drawing again")
                shutil.rmtree(work)
                continue
            doc = expected_document(cfg, cases, model)
            write_json(work / "expected.json", doc)
            # Into place: the old folder (if any) is moved aside, the new one renamed, the old removed.
            old = None
            if final.exists():
                old = MODELS_DIR / f".old-{name}"
                if old.exists():
                    shutil.rmtree(old)
                final.rename(old)
            work.rename(final)
            if old is not None:
                shutil.rmtree(old)
            stats["seed"] = seed
            return stats
        except BaseException:
            if work.exists():
                shutil.rmtree(work)
            raise
    raise SystemExit(f"{name}: no seed gave well-separated logits and routing")


def verify_fixture(name: str, spec: dict, prompts, scratch: Path) -> None:
    """Reload the folder as written and recompute: the recorded numbers must come from the files."""
    folder = MODELS_DIR / name
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    if spec.get("fp8"):
        stored = read_checkpoint(folder)
        ref_dir = scratch / f"{name}-verify"
        ref = write_dequantised_copy(folder, ref_dir, cfg)
        for k, t in stored.items():
            if t.dtype == torch.float8_e4m3fn:
                scale = stored[k[: -len("weight")] + "weight_scale_inv"]
                out_f, in_f = t.shape
                assert scale.dtype == torch.float32
                assert tuple(scale.shape) == (math.ceil(out_f / FP8_BLOCK), math.ceil(in_f / FP8_BLOCK)), k
    else:
        ref_dir = folder
        ref = reference_tensors(read_checkpoint(folder))
    model, info = load_reference(ref_dir)
    n = verify_loaded(model, info, ref, cfg, mtp_keys(cfg, ref))
    cases, _ = run_cases(model, cfg, prompts)
    again = json.loads(json.dumps(expected_document(cfg, cases, model), ensure_ascii=False))
    if again != expected:
        raise SystemExit(f"{name}: recomputing from the saved files does not reproduce expected.json")
    print(f"  {name}: reloaded from disk, {n} tensors match, expected.json reproduced")


# ---------------------------------------------------------------------------------------------------
# Chat template cases
# ---------------------------------------------------------------------------------------------------

TEMPLATE_CASES = [
    ("single_user", [{"role": "user", "content": "What is 12 + 7?"}], True),
    ("single_user_no_generation_prompt", [{"role": "user", "content": "What is 12 + 7?"}], False),
    (
        "system_and_user",
        [
            {"role": "system", "content": "You are a careful math tutor."},
            {"role": "user", "content": "Solve 3x + 5 = 20."},
        ],
        True,
    ),
    (
        "multi_turn_strips_reasoning",
        [
            {"role": "user", "content": "What is 6 * 7?"},
            {"role": "assistant", "content": "<think>reasoning: six sevens</think>answer: 42"},
            {"role": "user", "content": "And 9 * 8?"},
        ],
        True,
    ),
    (
        "multi_turn_ends_with_assistant",
        [
            {"role": "user", "content": "Hi there."},
            {"role": "assistant", "content": "<think>\nThe user said hi.\n</think>\n\nHello! How can I help?"},
            {"role": "user", "content": "Tell me a joke."},
            {"role": "assistant", "content": "Why did the seven eat nine? Because 7 8 9."},
        ],
        False,
    ),
    (
        "two_system_messages",
        [
            {"role": "system", "content": "You are a careful math tutor."},
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": "What is 45 - 18?"},
        ],
        True,
    ),
    ("unicode", [{"role": "user", "content": "Größe 😀 数学"}], True),
    (
        "user_types_special_strings",
        [{"role": "user", "content": f"Please repeat {USER} and {THINK} literally, then {END_THINK}."}],
        True,
    ),
]


def literal_ids(hf_tok, plain: Tokenizer, messages: list[dict], add_generation_prompt: bool, added: dict[str, int]) -> list[int]:
    """Ids in which special-token strings typed inside user/system content are ordinary text.

    How: each added-token string inside a user or system message is swapped for a private-use
    placeholder, the conversation is rendered by transformers' apply_chat_template (so every
    added-token string left in the text was written by the template itself, or by the assistant
    history, which came from the model), the text is split at those strings, each becomes its id,
    and each piece between them - with the placeholders put back - is encoded on its own by the
    same tokenizer with its added tokens removed (plain byte-level BPE, no post-processor).
    Without typed special strings this equals apply_chat_template(tokenize=True).
    """
    swaps: dict[str, str] = {}

    def mask(text: str) -> str:
        for k, s in enumerate(sorted(added, key=len, reverse=True)):
            ph = f"\ue000{k}\ue001"
            if s in text:
                swaps[ph] = s
                text = text.replace(s, ph)
        return text

    masked = [dict(m, content=mask(m["content"])) if m["role"] in ("user", "system") else dict(m) for m in messages]
    text = hf_tok.apply_chat_template(masked, tokenize=False, add_generation_prompt=add_generation_prompt)
    ids: list[int] = []
    pos = 0
    pattern = sorted(added, key=len, reverse=True)
    while pos < len(text):
        nxt = min(((text.find(s, pos), s) for s in pattern if text.find(s, pos) >= 0), default=None)
        end = nxt[0] if nxt else len(text)
        if end > pos:
            piece = text[pos:end]
            for ph, s in swaps.items():
                piece = piece.replace(ph, s)
            ids.extend(plain.encode(piece, add_special_tokens=False).ids)
        if nxt is None:
            break
        ids.append(added[nxt[1]])
        pos = nxt[0] + len(nxt[1])
    return ids


def as_id_list(x) -> list[int]:
    if hasattr(x, "keys") and "input_ids" in x:
        x = x["input_ids"]
    return [int(i) for i in x]


def build_template_fixture(tok: Tokenizer, template: str) -> int:
    work = Path(tempfile.mkdtemp(prefix=".tmp-deepseek_r1-", dir=TEMPLATES_DIR.parent))
    work.chmod(0o755)
    try:
        write_tokenizer_files(work, tok, template)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf_tok = transformers.AutoTokenizer.from_pretrained(str(work))
        if len(hf_tok) != N_TOKENS:
            raise SystemExit(f"transformers sees {len(hf_tok)} tokens, expected {N_TOKENS}")
        added = {at.content: tid for tid, at in tok.get_added_tokens_decoder().items()}
        plain_json = json.loads(tok.to_str())
        plain_json["added_tokens"] = []
        plain_json["post_processor"] = None
        plain = Tokenizer.from_str(json.dumps(plain_json))
        cases = []
        for name, messages, gen in TEMPLATE_CASES:
            text = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            ids = as_id_list(hf_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen))
            lit = literal_ids(hf_tok, plain, messages, gen, added)
            typed = any(s in m["content"] for m in messages if m["role"] in ("user", "system") for s in added)
            if not typed and lit != ids:
                raise SystemExit(f"template case {name}: literal tokenisation disagrees with transformers")
            if typed and lit == ids:
                raise SystemExit(f"template case {name}: typed special strings did not change the ids")
            if tok.decode(lit, skip_special_tokens=False) != tok.decode(ids, skip_special_tokens=False):
                raise SystemExit(f"template case {name}: ids and ids_literal decode differently")
            cases.append(
                {"name": name, "messages": messages, "add_generation_prompt": gen, "text": text, "ids": ids, "ids_literal": lit}
            )
        write_json(work / "cases.json", cases)
        old = None
        if TEMPLATES_DIR.exists():
            old = TEMPLATES_DIR.parent / ".old-deepseek_r1"
            if old.exists():
                shutil.rmtree(old)
            TEMPLATES_DIR.rename(old)
        work.rename(TEMPLATES_DIR)
        if old is not None:
            shutil.rmtree(old)
        return len(cases)
    except BaseException:
        if work.exists():
            shutil.rmtree(work)
        raise


# ---------------------------------------------------------------------------------------------------



# ---------------------------------------------------------------------------------------------------
# The built-in model (models/thinkbench-tiny, trained by `thinkbench train recipes/tiny-sft.toml`)
# ---------------------------------------------------------------------------------------------------

BUILTIN_MODEL = ROOT / "models" / "thinkbench-tiny"
BUILTIN_FIXTURE = FIXTURES / "builtin"
BUILTIN_NEW_TOKENS = 40
BUILTIN_CASES = 3
# A trained model's far tail is crowded, so the neighbour gaps asked of its top-6 lists and router
# choices are smaller than for the random fixtures; still some 100 times what float32 rounding
# moves a logit between the two implementations.
BUILTIN_TOP_GAP = 2e-4
BUILTIN_ROUTER_GAP = 1e-4
# Chat prompts tried in order; a prompt whose greedy steps, top-5 lists or routing decisions come
# within those margins of a tie is skipped (float32 rounding could flip such a decision).
BUILTIN_PROMPTS = [
    "What is 12 + 7?",
    "Compute 4821 - 397.",
    "How much is 56 + 78?",
    "Calculate 905 - 38.",
    "What is 3 + 4?",
    "What is 640 + 275?",
    "Compute 77 - 19.",
    "How much is 1234 + 8765?",
    "Calculate 31 + 9.",
    "What is 500 - 123?",
    "How much is 8 + 8?",
    "Compute 2024 + 76.",
    "What is 999 - 1?",
    "Calculate 45 + 67.",
    "Hello! Who are you?",
    "What is 7 - 3?",
]
# Follow-up questions (the built-in model is trained on conversations): earlier turns as the
# workbench sends them, replies reduced to their answer; transformers' template renders them.
BUILTIN_CONVERSATIONS = [
    ["What is 12 + 7?", "The answer is 19.", "Compute 4821 - 397."],
    ["How much is 56 + 78?", "The answer is 134.", "Calculate 905 - 38.", "The answer is 867.", "What is 640 + 275?"],
    ["Compute 77 - 19.", "The answer is 58.", "How much is 1234 + 8765?"],
    ["What is 3 + 4?", "The answer is 7.", "What is 500 - 123?"],
]
BUILTIN_CONVERSATION_CASES = 1


def build_builtin_fixture() -> int:
    """Loads the shipped model in transformers (float32, eager) and records, for a few chat prompts
    rendered by transformers' apply_chat_template, the greedy tokens with their top-5 logprobs, the
    top-5 at every prompt position and the routing of every prompt token."""
    if not (BUILTIN_MODEL / "config.json").exists():
        raise SystemExit(f"{BUILTIN_MODEL}: missing; train it first: thinkbench train recipes/tiny-sft.toml")
    cfg = json.loads((BUILTIN_MODEL / "config.json").read_text(encoding="utf-8"))
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(BUILTIN_MODEL))
    model, info = load_reference(BUILTIN_MODEL)
    n = verify_loaded(model, info, reference_tensors(read_checkpoint(BUILTIN_MODEL)), cfg, set())
    n_tokens = len(hf_tok)
    cases = []
    single = [[{"role": "user", "content": text}] for text in BUILTIN_PROMPTS]
    turns = [
        [{"role": ("user", "assistant")[i % 2], "content": c} for i, c in enumerate(conv)]
        for conv in BUILTIN_CONVERSATIONS
    ]
    for group, want in ((single, BUILTIN_CASES), (turns, BUILTIN_CONVERSATION_CASES)):
        got = builtin_cases(model, cfg, hf_tok, n_tokens, group, want)
        if len(got) < want:
            raise SystemExit(f"builtin: only {len(got)} of {want} prompts cleared the margins")
        cases.extend(got)
    doc = expected_document(cfg, cases, model)
    doc["model"] = "models/thinkbench-tiny"
    BUILTIN_FIXTURE.mkdir(parents=True, exist_ok=True)
    tmp = BUILTIN_FIXTURE / "expected.json.tmp"
    write_json(tmp, doc)
    tmp.replace(BUILTIN_FIXTURE / "expected.json")
    return n


def builtin_cases(model, cfg, hf_tok, n_tokens: int, chats: list, want: int) -> list:
    """The first `want` of `chats` whose greedy run clears the margins, as fixture cases."""
    cases = []
    for messages in chats:
        text = messages[-1]["content"]
        ids = as_id_list(hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        try:
            (case,), _ = run_cases(
                model,
                cfg,
                [ids],
                new_tokens=BUILTIN_NEW_TOKENS,
                n_tokens=n_tokens,
                top_gap=BUILTIN_TOP_GAP,
                router_gap=BUILTIN_ROUTER_GAP,
            )
        except Margins as why:
            print(f"  builtin: prompt {text!r} skipped ({why})")
            continue
        case = {"messages": messages, **case}
        case["generated_text"] = hf_tok.decode([g["id"] for g in case["generated"]])
        cases.append(case)
        if len(cases) == want:
            break
    return cases


def folder_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    only = set(sys.argv[1:])
    unknown = only - set(FIXTURE_SPECS) - {"templates", "builtin"}
    if unknown:
        sys.exit(f"unknown fixture(s): {', '.join(sorted(unknown))}; known: templates, builtin, {', '.join(FIXTURE_SPECS)}")

    print(f"transformers {TRANSFORMERS_VERSION}, torch {torch.__version__}")
    template = TEMPLATE_FILE.read_text(encoding="utf-8")
    tok = build_tokenizer()
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    TEMPLATES_DIR.parent.mkdir(parents=True, exist_ok=True)
    prompts = make_prompts()

    if not only or "templates" in only:
        n = build_template_fixture(tok, template)
        print(f"templates/deepseek_r1: {n} cases, {folder_size(TEMPLATES_DIR)} bytes")

    if "builtin" in only or (not only and (BUILTIN_MODEL / "config.json").exists()):
        n = build_builtin_fixture()
        print(f"builtin: models/thinkbench-tiny loaded ({n} tensors match), {BUILTIN_FIXTURE / 'expected.json'} written")
        if only == {"builtin"}:
            return

    with tempfile.TemporaryDirectory(prefix="thinkbench-fixtures-") as scratch:
        for name, spec in FIXTURE_SPECS.items():
            if only and name not in only:
                continue
            stats = build_model_fixture(name, spec, tok, template, prompts, Path(scratch))
            extra = ""
            if "min_router_gap" in stats:
                extra = f", min router gap {stats['min_router_gap']:.3g}"
                if spec["config"]()["model_type"] == "deepseek_v3":
                    extra += f", routing decisions where a 0.0 group fill would differ: {stats['zero_fill_would_differ']}"
            print(f"{name}: seed {stats['seed']}, min top-6 logit gap {stats['min_top_gap']:.3g}{extra}, {folder_size(MODELS_DIR / name)} bytes")
        print("verifying: reloading every fixture from its files")
        for name, spec in FIXTURE_SPECS.items():
            if only and name not in only:
                continue
            verify_fixture(name, spec, prompts, Path(scratch))
    print(f"tests/fixtures: {folder_size(FIXTURES)} bytes in all")


if __name__ == "__main__":
    main()
