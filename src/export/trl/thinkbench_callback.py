"""TRL callbacks that make a TRL run a thinkbench run folder, and DeepSeek-V3 expert balancing.

Written by `thinkbench export trl`. `ThinkbenchCallback` writes, in the run folder:

    recipe.json     the recipe (thinkbench's form) and "producer": what wrote the run
    metrics.jsonl   one line per GRPO step in thinkbench's schema (TRL's metric names, mostly),
                    plus "event" lines: greedy held-out evaluations and checkpoints
    rollouts.jsonl  one line per prompt group per step: completions, rewards, advantages

so that `thinkbench --train RUN` watches it live, here or from a folder synced from a cluster.
Only the main process writes.
"""

import json
import math
import os

import torch
from transformers import TrainerCallback

try:
    from trl import __version__ as TRL_VERSION
except ImportError:  # pragma: no cover
    TRL_VERSION = "?"

PRODUCER = f"trl {TRL_VERSION} (thinkbench_callback.py)"

# TRL's names -> thinkbench's where they differ; the rest keep TRL's name.
RENAMES = {"learning_rate": "lr"}
# Lines thinkbench computes itself from the rollouts, over groups as it defines them.
OWN = ("reward_std", "accuracy", "reflection_words", "groups_trained", "groups_drawn")


def _append(path, records):
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()


def _std(xs):
    """Bessel-corrected standard deviation, as thinkbench's std_bessel; exactly 0 for a group
    whose values are all equal (a mean like 8 x 0.1 / 8 is not exactly 0.1, and the rounding
    would otherwise show as a standard deviation of 1e-17)."""
    if len(xs) < 2 or all(x == xs[0] for x in xs):
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def reflection_words(text):
    """"wait", "verif…", "check…" at word starts, case-insensitive (thinkbench's count)."""
    lower = text.lower()
    n = 0
    for w in ("wait", "verif", "check"):
        i = lower.find(w)
        while i >= 0:
            if i == 0 or not ("a" <= lower[i - 1] <= "z"):
                n += 1
            i = lower.find(w, i + len(w))
    return n


def _split_conversation(messages):
    """thinkbench's rollout form: the last question, and earlier (question, reply) turns."""
    earlier = []
    for q, a in zip(messages[0:-1:2], messages[1:-1:2]):
        earlier.append({"prompt": q["content"], "reply": a["content"]})
    return messages[-1]["content"], earlier


class ThinkbenchCallback(TrainerCallback):
    def __init__(self, trainer, recipe, rewards, conversation, eval_rows, settings):
        self.trainer = trainer
        self.recipe = recipe
        self.rewards = rewards
        self.conversation = conversation
        self.eval_rows = eval_rows
        self.settings = settings
        self.mu = trainer.args.num_iterations
        self.bad_steps = 0
        self.main = trainer.accelerator.is_main_process

    def _dir(self, args):
        return args.output_dir

    def on_train_begin(self, args, state, control, **kw):
        if not self.main:
            return
        os.makedirs(args.output_dir, exist_ok=True)
        info = dict(self.recipe, output_dir=args.output_dir, producer=PRODUCER)
        tmp = os.path.join(args.output_dir, ".recipe.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, ensure_ascii=False)
        os.replace(tmp, os.path.join(args.output_dir, "recipe.json"))
        # A fresh run: thinkbench's Train tab sees the logs start over.
        for name in ("metrics.jsonl", "rollouts.jsonl"):
            open(os.path.join(args.output_dir, name), "w").close()
        if self.eval_rows and state.global_step == 0:
            self._evaluate(args, 0)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is None or "reward" not in logs or state.global_step % self.mu:
            return
        step = state.global_step // self.mu
        rec, rollouts = self._records(step, logs)
        if self.main:
            _append(os.path.join(args.output_dir, "metrics.jsonl"), [rec])
            _append(os.path.join(args.output_dir, "rollouts.jsonl"), rollouts)
        finite = all(math.isfinite(logs.get(k, 0.0) or 0.0) for k in ("loss", "grad_norm"))
        self.bad_steps = 0 if finite else self.bad_steps + 1
        if self.bad_steps >= self.settings["max_bad_steps"]:
            # train.max_bad_steps: stop after this many non-finite steps in a row.
            print(f"{self.bad_steps} steps in a row had a non-finite loss or gradient; stopping")
            control.should_training_stop = True
        every = (self.settings["eval"] or {}).get("every")
        if self.eval_rows and every and step % every == 0:
            self._evaluate(args, step)

    def on_save(self, args, state, control, **kw):
        if self.main and state.global_step % self.mu == 0:
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            _append(os.path.join(args.output_dir, "metrics.jsonl"),
                    [{"event": "checkpoint", "step": state.global_step // self.mu, "path": path}])

    # --- records --------------------------------------------------------------------------

    def _records(self, step, logs):
        logs_ = self.trainer._logs
        g = self.settings["group_size"]
        extra = logs_["extra"]
        n = len(logs_["prompt"])
        names = list(logs_["rewards"].keys())
        weights = self.rewards.weights()
        totals = [sum(w * logs_["rewards"][k][i] for w, k in zip(weights, names)) for i in range(n)]
        rollouts = []
        group_std, zero = [], 0
        for gi in range(n // g):
            lo, hi = gi * g, (gi + 1) * g
            group = totals[lo:hi]
            is_zero = all(t == group[0] for t in group)
            zero += is_zero
            group_std.append(_std(group))
            skipped = is_zero and self.settings["zero_std"] == "skip"
            prompt, earlier = _split_conversation(logs_["prompt"][lo])
            completions = []
            for i in range(lo, hi):
                text = extra["tb_text"][i] if "tb_text" in extra else logs_["completion"][i]
                completions.append({
                    "text": text,
                    "tokens": extra["tb_tokens"][i] if "tb_tokens" in extra else None,
                    "truncated": not extra["tb_finished"][i] if "tb_finished" in extra else None,
                    "reward": totals[i],
                    "rewards": {k: logs_["rewards"][k][i] for k in names},
                    "correct": bool(extra["tb_correct"][i]) if "tb_correct" in extra else None,
                    "extracted": extra["tb_extracted"][i] if "tb_extracted" in extra else None,
                    # A group left out of the loss has no advantage (thinkbench writes null;
                    # the viewer shows "—"), not TRL's 0.
                    "advantage": None if skipped else logs_["advantages"][i],
                })
            rollouts.append({
                "step": step, "group": gi, "round": 0, "used": not skipped, "zero_std": is_zero,
                "prompt": prompt, "earlier": earlier,
                "answer": extra["tb_answer"][lo] if "tb_answer" in extra else None,
                "level": extra["tb_level"][lo] if "tb_level" in extra else None,
                "completions": completions,
            })
        rec = {"step": step}
        for k, v in logs.items():
            if isinstance(v, (int, float)) and k not in OWN:
                rec[RENAMES.get(k, k)] = v
        correct = list(extra.get("tb_correct", []))
        texts = list(extra.get("tb_text", logs_["completion"]))
        groups = max(n // g, 1)
        rec.update({
            "reward": sum(totals) / max(n, 1),
            "reward_std": sum(group_std) / max(len(group_std), 1),  # mean of groups' stds
            "accuracy": sum(1 for c in correct if c) / max(n, 1),
            "frac_reward_zero_std": zero / groups,
            "reflection_words": sum(reflection_words(t) for t in texts),
            "groups_drawn": n // g,
            "groups_trained": n // g - (zero if self.settings["zero_std"] == "skip" else 0),
        })
        if self.trainer.args.beta == 0.0:
            rec.pop("kl", None)
        load = getattr(self.trainer.model, "_tb_load_min_over_mean", None)
        if load is not None:
            rec["expert_load_min_over_mean"] = round(load, 4)
        return rec, rollouts

    # --- greedy held-out evaluation ([eval]) ----------------------------------------------

    @torch.no_grad()
    def _evaluate(self, args, step):
        """Greedy completions of the held-out problems, graded as thinkbench grades them."""
        if not self.main:
            return
        model = self.trainer.model
        tok = self.trainer.processing_class
        was_training = model.training
        model.eval()
        eos = set(self.settings["eos_ids"] or [tok.eos_token_id])
        correct = formatted = 0
        side = tok.padding_side
        tok.padding_side = "left"
        batch = 32
        for k in range(0, len(self.eval_rows), batch):
            rows = self.eval_rows[k:k + batch]
            texts = [tok.apply_chat_template(self.conversation(r), tokenize=False,
                                             add_generation_prompt=True) for r in rows]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {key: v.to(model.device) for key, v in enc.items()}
            out = model.generate(**enc, max_new_tokens=self.settings["eval"]["max_new_tokens"],
                                 do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=sorted(eos))
            for r, ids in zip(rows, out[:, enc["input_ids"].shape[1]:].tolist()):
                if any(i in eos for i in ids):
                    ids = ids[: next(j for j, i in enumerate(ids) if i in eos) + 1]
                done = bool(ids) and ids[-1] in eos
                ok, form = self.rewards.grade(tok.decode(ids, skip_special_tokens=False), r["answer"], done)
                correct += ok
                formatted += form
        tok.padding_side = side
        if was_training:
            model.train()
        n = len(self.eval_rows)
        _append(os.path.join(args.output_dir, "metrics.jsonl"), [{
            "event": "eval", "step": step, "accuracy": correct / max(n, 1),
            "format_rate": formatted / max(n, 1), "n": n,
        }])


class BalanceCallback(TrainerCallback):
    """[balance] bias_update_rate: DeepSeek-V3's auxiliary-loss-free balancing, as thinkbench
    does it (src/train/balance.rs). Forward hooks on every MoE router count the experts each
    real (unpadded) token chose in the training forward passes with gradients; after each GRPO
    step every routed expert's `e_score_correction_bias` moves by +rate if it got fewer tokens
    than the layer's mean, -rate if more."""

    def __init__(self, model, rate, mu):
        self.rate = rate
        self.mu = mu
        self.counts = {}
        self.mask = None
        self.routers = []
        self.model = model
        base = model
        base.register_forward_pre_hook(self._remember_mask, with_kwargs=True)
        for name, module in base.named_modules():
            if hasattr(module, "e_score_correction_bias") and name.endswith("mlp.gate"):
                self.routers.append((name, module))
                module.register_forward_hook(self._counter(name))

    def _remember_mask(self, module, args, kwargs):
        self.mask = kwargs.get("attention_mask")

    def _counter(self, name):
        def hook(module, inputs, output):
            if not (torch.is_grad_enabled() and module.training):
                return  # generation and no-grad log-probabilities are not counted
            chosen = output[2]  # (tokens, top_k) expert ids
            if self.mask is not None and self.mask.dim() == 2 and self.mask.numel() == chosen.shape[0]:
                chosen = chosen[self.mask.reshape(-1).bool()]
            n = module.e_score_correction_bias.numel()
            c = torch.bincount(chosen.reshape(-1), minlength=n).cpu()
            self.counts[name] = self.counts.get(name, torch.zeros(n, dtype=torch.long)) + c
        return hook

    def on_step_end(self, args, state, control, **kw):
        if state.global_step % self.mu or not self.counts:
            return
        ratios = []
        with torch.no_grad():
            for name, module in self.routers:
                load = self.counts.get(name)
                if load is None:
                    continue
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    # Every process nudges by the whole step's load, so the biases stay equal.
                    load = load.to(module.e_score_correction_bias.device)
                    torch.distributed.all_reduce(load)
                    load = load.cpu()
                mean = load.double().mean()
                delta = torch.where(load < mean, self.rate, torch.where(load > mean, -self.rate, 0.0))
                bias = module.e_score_correction_bias
                bias.add_(delta.to(bias.dtype).to(bias.device))
                if mean > 0:
                    ratios.append((load.double().min() / mean).item())
        if ratios:
            self.model._tb_load_min_over_mean = min(ratios)
        self.counts = {}
