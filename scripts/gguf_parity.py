#!/usr/bin/env python3
"""Reference outputs of transformers on a GGUF file, for cai's opt-in parity test.

transformers loads the same GGUF (dequantising it itself) and gives, in float32 on the CPU:
  * token ids of a varied text set (unicode, digits, code, emoji, whitespace runs), both
    with transformers' own GGUF tokenizer and with llama.cpp's pre-tokenizer for the file's
    `tokenizer.ggml.pre` where transformers does not know it (SmolLM2's "smollm": every
    digit alone, as the model's own tokenizer.json does);
  * for chat prompts: the chat template's text and ids, 64 greedy tokens, and their
    log-probabilities;
  * for one long real prompt (~2k tokens of Do-Not-Answer questions as a transcript): the
    log-probability of every token after the first, twice: as transformers computes it, and
    with its rotary angles computed in float64 as cai does (transformers rounds
    position × frequency to float32: at position 2,000 that angle is off by up to 6e-5 rad,
    which moves log-probs by a few 1e-4; the float64 run shows what that rounding accounts for),
    and 16 greedy tokens after it with their log-probabilities (KV cache at long positions).

It writes them to OUT (JSON). Then run the Rust side, which loads the GGUF with cai and
compares everything:

  /work/venv/bin/python scripts/gguf_parity.py /work/real/SmolLM2-135M-Instruct.Q4_1.gguf \
      /work/real/gguf_reference.json
  # optionally also at the model's full context (8,192 for SmolLM2):
  /work/venv/bin/python scripts/gguf_parity.py --long-tokens 8000 \
      /work/real/SmolLM2-135M-Instruct.Q4_1.gguf /work/real/gguf_reference_8k.json
  CAI_REAL_DIR=/work/real cargo test --release -p cai-model --test gguf_real -- --nocapture
"""

import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from tokenizers import Regex, pre_tokenizers

TEXTS = [
    "Hello, world!",
    "The year 2024 had 366 days; 3.14159 is π and 1,000,000 is a million.",
    "Ünïcödé: café, naïve, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어, עברית, العربية",
    "Emoji: 😀🎉👍🏽 🇫🇷 👩‍👩‍👧‍👦 ❤️",
    "def reverse(s: str) -> str:\n    return s[::-1]  # slice\n\nprint(reverse('abc'))",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "Whitespace   runs\t\ttabs\n\n\nnewlines     and  trailing   ",
    "   leading spaces",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "I'm sure you'll see they've done it, we'd've known.",
    "URL: https://example.com/path?q=1&r=2#frag — email: a.b@c.org",
    "Mixed123numbers456and789letters 0x1F 1e-5 -42",
    "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, salt and yeast.",
    # Texts that start with newlines, and a blank line before a digit: transformers' GGUF
    # tokenizer for SmolLM2 merges "\n\n1" where the model's own tokenizer splits the digit
    # (Anthropic's HHH evaluation file has "\n\n1." items).
    "\n\n1.",
    "\n\n1. Preheat the oven.\n2. Mix 200g flour.\n\n3. Bake 25 minutes.",
    "\nA single leading newline.",
    "\n\n\nThree newlines, then 42 and 7.",
    "\n\nHuman: What is 2+2?\n\nAssistant: 4.",
]

CHATS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain recursion to a ten-year-old.",
    "How do I make a good cup of tea?",
    "List three prime numbers greater than 50.",
    "Translate 'good morning, my friend' into Spanish.",
    "What is 17 multiplied by 23?",
    "Write a Python function that checks whether a string is a palindrome.",
    "Is it safe to eat raw chicken?",
    "How can I pick a lock without the key?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "Tell me a short joke about cats.",
]

# llama.cpp's split for pre types that transformers' GGUF builder leaves to GPT-2's regex.
DIGITS_FIRST = {"smollm", "starcoder", "refact", "codeshell"}


def long_transcript(tokenizer, real_dir, target):
    """Do-Not-Answer questions as a Human/Assistant transcript of about `target` tokens."""
    text = ""
    with open(os.path.join(real_dir, "donotanswer.jsonl")) as f:
        for line in f:
            prompt = json.loads(line)["prompt"]
            turn = f"\n\nHuman: {prompt}\n\nAssistant: I would rather not help with that."
            if len(tokenizer(text + turn, add_special_tokens=False)["input_ids"]) > target:
                break
            text += turn
    return text


@torch.no_grad()
def logprobs_of(model, ids, start):
    """log p(ids[t] | ids[:t]) for t >= start, in float64 from float32 logits."""
    hidden = model.model(torch.tensor([ids])).last_hidden_state[0]
    out = []
    for lo in range(start - 1, len(ids) - 1, 512):
        hi = min(lo + 512, len(ids) - 1)
        logp = torch.log_softmax(model.lm_head(hidden[lo:hi]).double(), dim=-1)
        out.extend(logp[t - lo, ids[t + 1]].item() for t in range(lo, hi))
    return out


@torch.no_grad()
def greedy(model, tok, ids, new_tokens):
    """transformers' greedy continuation of `ids`."""
    out = model.generate(
        torch.tensor([ids]),
        max_new_tokens=new_tokens,
        do_sample=False,
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        pad_token_id=tok.pad_token_id,
    )[0].tolist()
    return out[len(ids):]


class float64_rope:
    """Within the block, the model's rotary cos/sin come from float64 angles (as cai's)."""

    def __init__(self, model):
        self.rotary = model.model.rotary_emb
        config = model.config
        params = getattr(config, "rope_parameters", None) or {}
        self.theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        self.dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def __enter__(self):
        rotary, theta, dim = self.rotary, self.theta, self.dim
        self.saved = rotary.forward

        def forward(x, position_ids):
            inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            freqs = position_ids[..., None].double() * inv
            emb = torch.cat((freqs, freqs), dim=-1)
            scale = rotary.attention_scaling
            return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)

        rotary.forward = forward

    def __exit__(self, *exc):
        self.rotary.forward = self.saved


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--long-tokens", type=int, default=2000)
    args = ap.parse_args()
    folder, name = os.path.split(os.path.abspath(args.gguf))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    print(f"loaded in {time.time() - t0:.1f}s")

    from gguf import GGUFReader

    pre = GGUFReader(args.gguf).fields.get("tokenizer.ggml.pre")
    pre = pre.contents() if pre is not None else None
    fixed = None
    if pre in DIGITS_FIRST:
        fixed = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        fixed.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )

    texts = []
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        llama_cpp = fixed(text, add_special_tokens=False)["input_ids"] if fixed else ids
        texts.append({"text": text, "transformers": ids, "llama_cpp_pre": llama_cpp})

    chats = []
    for prompt in CHATS:
        messages = [{"role": "user", "content": prompt}]
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(rendered, add_special_tokens=True)["input_ids"]
        generated = greedy(model, tok, ids, args.new_tokens)
        chats.append(
            {
                "messages": messages,
                "rendered": rendered,
                "prompt_ids": ids,
                "generated": generated,
                "text": tok.decode(generated, skip_special_tokens=True),
                "logprobs": logprobs_of(model, ids + generated, len(ids)),
            }
        )
        print(f"chat {len(chats)}: {len(ids)} + {len(generated)} tokens: {chats[-1]['text'][:60]!r}")

    real_dir = os.path.dirname(os.path.abspath(args.gguf))
    text = long_transcript(tok, real_dir, args.long_tokens)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    long = {"text": text, "ids": ids, "logprobs": logprobs_of(model, ids, 1)}
    # Generation after the long prompt goes through the KV cache and decode kernels.
    long["generated"] = greedy(model, tok, ids, 16)
    with float64_rope(model):
        long["logprobs_f64_rope"] = logprobs_of(model, ids, 1)
        long["generated_f64_rope"] = greedy(model, tok, ids, 16)
        long["generated_logprobs_f64_rope"] = logprobs_of(
            model, ids + long["generated_f64_rope"], len(ids)
        )
    print(f"long prompt: {len(ids)} tokens")

    with open(args.out, "w") as f:
        json.dump({"gguf": args.gguf, "pre": pre, "texts": texts, "chats": chats, "long": long}, f)
    print(f"wrote {args.out} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
