"""thinkbench's GRPO rewards in plain Python (standard library only).

Written by `thinkbench export trl`. These functions give the same values as thinkbench's own
rewards (src/train/rewards.rs and the built-in task's grader in src/train/task/mod.rs) for the
same completion text: a test in thinkbench's suite runs this file beside the Rust code on one
corpus and requires identical scores.

A completion is the text generated after the prompt with special tokens rendered as text (the
end-of-sentence token's text at the end when generation stopped on it), its length in tokens
(end-of-sentence included), and whether generation ended on end-of-sentence.

    r = Rewards(config)          # config: the dict `thinkbench export trl` writes into train.py
    r.score(text, answer, tokens, finished) -> {"total", "parts", "correct", "extracted", ...}
"""

END_THINK = "</think>"
ANSWER_PREFIX = "The answer is "
# The built-in task's grader strips this literal, whatever the model's end-of-sentence is.
TASK_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"

# Rust's char::is_whitespace (Unicode White_Space); Python's str.isspace differs on a few
# control characters, so trimming uses this set.
_WS = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _trim(s):
    i, j = 0, len(s)
    while i < j and s[i] in _WS:
        i += 1
    while j > i and s[j - 1] in _WS:
        j -= 1
    return s[i:j]


def _ascii_lower(s):
    # Only A-Z: str.lower() would also fold other letters, and some change length.
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def _is_digit(c):
    return "0" <= c <= "9"


def _rust_f64(s):
    """Rust's `str::parse::<f64>`: an optional sign, digits with an optional point and exponent,
    or inf/infinity/nan (any case). Python's float() also takes underscores and spaces."""
    body = s[1:] if s[:1] in ("+", "-") else s
    if _ascii_lower(body) in ("inf", "infinity", "nan"):
        return float(s)
    mant, exp = body, None
    for k, c in enumerate(body):
        if c in "eE":
            mant, exp = body[:k], body[k + 1 :]
            break
    if exp is not None:
        e = exp[1:] if exp[:1] in ("+", "-") else exp
        if not e or not all(_is_digit(c) for c in e):
            return None
    whole, _, frac = mant.partition(".")
    if not whole and not frac:
        return None
    if not all(_is_digit(c) for c in whole + frac):
        return None
    return float(s)


# --- the general rewards (rewards.rs) -----------------------------------------------------------


def strip_eos(text, eos):
    """The text before the first end-of-sentence (generation stops there)."""
    if not eos:
        return text
    i = text.find(eos)
    return text if i < 0 else text[:i]


def answer_section(text):
    i = text.rfind(END_THINK)
    return None if i < 0 else text[i + len(END_THINK) :]


def _sentence_end(s):
    for i, c in enumerate(s):
        if c == "\n":
            return i
        if c == "." and not (i + 1 < len(s) and _is_digit(s[i + 1])):
            return i
    return len(s)


def last_boxed_span(s):
    starts = [s.rfind(p) + len(p) for p in ("\\boxed{", "\\fbox{") if s.rfind(p) >= 0]
    if not starts:
        return None
    i = max(starts)
    depth = 1
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return (i, j)
    return None


def final_answer(after):
    """(answer, what follows its construct) in the part after the reasoning, or None."""
    span = last_boxed_span(after)
    if span is not None:
        inner = after[span[0] : span[1]]
        if _trim(inner):
            return inner, after[span[1] + 1 :]
    i = after.rfind("<answer>")
    if i >= 0:
        rest = after[i + len("<answer>") :]
        j = rest.find("</answer>")
        inner, tail = (rest, "") if j < 0 else (rest[:j], rest[j + len("</answer>") :])
        if _trim(inner):
            return inner, tail
    i = _ascii_lower(after).rfind("answer is")
    if i < 0:
        return None
    rest = after[i + len("answer is") :].lstrip(" :\t")
    end = _sentence_end(rest)
    ans = _trim(rest[:end])
    return (ans, rest[end:]) if ans else None


def extract_final_answer(text):
    after = answer_section(text)
    if after is None:
        return None
    found = final_answer(after)
    return None if found is None else _trim(found[0])


def parse_number(s):
    t = (
        s.replace("\\!", "")
        .replace("\\left", "")
        .replace("\\right", "")
        .replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
    )
    t = "".join(c for c in t if c not in "$, \xa0")
    t = t.rstrip(".")
    if t.startswith("\\text{") and t.endswith("}") and len(t) >= len("\\text{}"):
        t = t[len("\\text{") : -1]
    neg = t.startswith("-")
    body = t[1:] if neg else t
    try:
        if body.startswith("\\frac{"):
            num, sep, rest = body[len("\\frac{") :].partition("}{")
            if not sep or not rest.endswith("}"):
                return None
            a, b = _rust_f64(num), _rust_f64(rest[:-1])
            if a is None or b is None:
                return None
            v = _divide(a, b)
        elif "/" in body:
            num, _, den = body.partition("/")
            a, b = _rust_f64(num), _rust_f64(den)
            if a is None or b is None:
                return None
            v = _divide(a, b)
        else:
            # Plain decimal digits only (no "inf", "nan", exponents).
            if not body or not all(_is_digit(c) or c == "." for c in body):
                return None
            v = _rust_f64(body)
            if v is None:
                return None
    except (ValueError, OverflowError):
        return None
    if v != v or v in (float("inf"), float("-inf")):
        return None
    return -v if neg else v


def _divide(a, b):
    # IEEE division as Rust does it: x/0 is infinite or NaN (then refused by the caller).
    if b == 0.0:
        return float("nan") if a == 0.0 or a != a else float("inf")
    return a / b


def answers_match(got, want, compare):
    def norm(s):
        s = _trim(s).rstrip(".")
        return "".join(c for c in s if c not in _WS)

    if compare == "exact":
        return _trim(got) == _trim(want)
    a, b = parse_number(got), parse_number(want)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(abs(b), 1.0)
    return norm(got) == norm(want)


def format_score(body, finished):
    """1.0 when `body` is reasoning, one </think>, a final answer that ends it, and generation
    ended on end-of-sentence; with the checks that held."""
    closes = body.count(END_THINK)
    reasoning, sep, answer = body.partition(END_THINK)
    if not sep:
        reasoning, answer = body, ""
    one_close = closes == 1
    reasoning_ok = bool(_trim(reasoning)) and "<think>" not in reasoning
    found = final_answer(answer) if one_close else None
    answer_found = found is not None and "<think>" not in answer
    nothing_after = found is not None and all(c in _WS or c in ".$*)]\\}" for c in found[1])
    ok = one_close and reasoning_ok and answer_found and nothing_after and finished
    return 1.0 if ok else 0.0


def overlong_penalty(length, max_len, buffer):
    start = max(max_len - buffer, 0)
    if length <= start:
        return 0.0
    if length <= max_len:
        return (float(start) - float(length)) / float(buffer)
    return -1.0


# --- the built-in task's grader (task/mod.rs) ---------------------------------------------------


def _leading_integer(s):
    k = 1 if s.startswith("-") else 0
    n = 0
    while k + n < len(s) and _is_digit(s[k + n]):
        n += 1
    return s[: k + n] if n else None


def task_extract_answer(completion):
    i = completion.rfind(END_THINK)
    if i < 0:
        return None
    after = completion[i + len(END_THINK) :]
    j = after.rfind(ANSWER_PREFIX)
    if j >= 0:
        return _leading_integer(after[j + len(ANSWER_PREFIX) :])
    j = after.rfind("\\boxed{")
    if j < 0:
        return None
    rest = after[j + len("\\boxed{") :]
    end = rest.find("}")
    return None if end < 0 else _trim(rest[:end])


def task_format_ok(completion, finished):
    if not finished:
        return False
    body = completion[: -len(TASK_EOS)] if completion.endswith(TASK_EOS) else completion
    reasoning, sep, answer = body.partition(END_THINK)
    if not sep:
        return False
    if not _trim(reasoning) or "<think>" in reasoning or END_THINK in answer:
        return False
    a = _trim(answer)
    if not a.startswith(ANSWER_PREFIX):
        return False
    rest = a[len(ANSWER_PREFIX) :]
    n = _leading_integer(rest)
    return n is not None and rest[len(n) :] == "."


# --- a recipe's rewards -------------------------------------------------------------------------


class Rewards:
    """A recipe's rewards: `config` holds `accuracy` ({weight, compare, correct, wrong} or None),
    `format` ({weight} or None), `overlong` ({weight, max_length, buffer} or None), `task` (the
    built-in task whose grader decides accuracy and format, or None) and `eos_text`."""

    def __init__(self, config):
        self.accuracy = config.get("accuracy")
        self.format = config.get("format")
        self.overlong = config.get("overlong")
        self.task = config.get("task")
        self.eos_text = config.get("eos_text", "")

    def names(self):
        return [n for n in ("accuracy", "format", "overlong") if getattr(self, n) is not None]

    def weights(self):
        return [float(getattr(self, n)["weight"]) for n in self.names()]

    def score(self, text, answer, tokens, finished):
        body = strip_eos(text, self.eos_text)
        parts, extracted, correct = {}, None, False
        if self.accuracy is not None:
            a = self.accuracy
            if self.task is not None:
                extracted = task_extract_answer(body)
                correct = extracted == answer
            else:
                extracted = extract_final_answer(body)
                correct = extracted is not None and answers_match(extracted, answer, a["compare"])
            parts["accuracy"] = float(a["correct"] if correct else a["wrong"])
        if self.format is not None:
            done = finished or len(body) < len(text)
            if self.task is not None:
                parts["format"] = 1.0 if task_format_ok(body, done) else 0.0
            else:
                parts["format"] = format_score(body, done)
        if self.overlong is not None:
            o = self.overlong
            parts["overlong"] = overlong_penalty(tokens, int(o["max_length"]), int(o["buffer"]))
        total = 0.0
        for name, value in parts.items():
            total += float(getattr(self, name)["weight"]) * value
        return {"total": total, "parts": parts, "correct": correct, "extracted": extracted}

    def grade(self, text, answer, finished):
        """(correct, format ok) as thinkbench's greedy evaluation judges a completion: the
        task's grader, else the final answer compared as [rewards.accuracy] says."""
        body = strip_eos(text, self.eos_text)
        done = finished or len(body) < len(text)
        if self.task is not None:
            return task_extract_answer(body) == answer, task_format_ok(body, done)
        x = extract_final_answer(body)
        compare = (self.accuracy or {}).get("compare", "numeric")
        ok = x is not None and answers_match(x, answer, compare)
        return ok, format_score(body, done) == 1.0


if __name__ == "__main__":
    # Scores JSON lines {"config"?, "text", "answer", "tokens", "finished"} from standard input:
    # a line with only "config" sets the rewards for the lines after it.
    import json
    import sys

    rewards = None
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        if "config" in case:
            rewards = Rewards(case["config"])
            continue
        out = rewards.score(case["text"], case["answer"], case["tokens"], case["finished"])
        print(json.dumps(out), flush=True)
