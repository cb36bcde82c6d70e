#!/usr/bin/env python3
"""Parity of `cai eval mc` with transformers on a multiple-choice file (Anthropic's HHH shape).

`cai eval mc --model M --data FILE` (log-probability mode) scores each item as follows, and
this script does the same with transformers on the same model:

* no chat template: the prompt is the item's `prompt` text as it is (for the HHH file a whole
  question ending in `The answer is:`), and each option is the continuation (` (A)`, ` (B)`);
* the prompt and the option are tokenised separately (the option without special tokens) and
  the ids concatenated; a bos token goes in front of the prompt only when the tokenizer says
  so (for a GGUF file, `tokenizer.ggml.add_bos_token`; SmolLM2's says false);
* an option's score is the sum of its tokens' log-probabilities after the prompt;
* an item is right (1) when its best right option scores above its best wrong one, a tie
  counts 0.5, else 0; accuracy is the mean.

`cai eval mc` prints only the accuracy, so the per-option log-probabilities of cai come from
`cai score` on the same (prompt, option) pairs: it sends the same requests (no prefix, no
top-k) to the same scoring code. The script writes that input, runs `cai score` and
`cai eval mc --json`, scores every option with transformers in float32, and compares item
by item: both accuracies, the items whose choices agree, the largest log-probability gap.

Usage (from the repository root; a few minutes on two CPU cores):

    nice -n 10 /work/venv/bin/python scripts/eval_mc_parity.py \\
        --data /work/published/anthropic/evals/438HHHEvaluations.jsonl \\
        --gguf /work/real/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --cai target/release/cai --work /tmp/mc_parity [--limit N] [--json-out report.json]

The transformers side loads the GGUF with
`AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)` (the
quantised weights dequantised to float32, as cai does on the CPU). `--cai-scores FILE` reuses
an existing `cai score` output instead of running cai score again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time


def load_items(path: str) -> list[dict]:
    """The JSONL items with their 1-based line, as cai's `load_items` reads them."""
    items = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            items.append(
                {
                    "line": line_no,
                    "prompt": row["prompt"],
                    "corrects": list(row["corrects"]),
                    "incorrects": list(row["incorrects"]),
                }
            )
    return items


def credit(corrects: list[float], incorrects: list[float]) -> float:
    """cai's rule: best right option above best wrong one 1, tie 0.5, else 0."""
    right, wrong = max(corrects), max(incorrects)
    return 1.0 if right > wrong else 0.5 if right == wrong else 0.0


def request_id(line: int, kind: str, j: int) -> str:
    """`LINE-correct-J` or `LINE-incorrect-J`."""
    return f"{line}-{kind[:-1]}-{j}"


def write_score_input(items: list[dict], path: str) -> None:
    """One `cai score` record per (prompt, option), in the order cai eval mc scores them."""
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            for kind in ("corrects", "incorrects"):
                for j, option in enumerate(item[kind]):
                    record = {
                        "id": request_id(item["line"], kind, j),
                        "prompt": item["prompt"],
                        "continuation": option,
                    }
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")


def run(cmd: list[str]) -> str:
    print("$ " + " ".join(cmd), file=sys.stderr)
    start = time.time()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    print(f"  ({time.time() - start:.0f} s)", file=sys.stderr)
    return out.stdout


def cai_side(args, items: list[dict], data_path: str) -> tuple[dict, float]:
    """Per-option cai scores ({id: record}) and `cai eval mc`'s accuracy."""
    scores_path = args.cai_scores
    if scores_path is None:
        scores_path = os.path.join(args.work, "cai_scores.jsonl")
        run(
            [
                args.cai, "score", "--model", args.gguf, "--input",
                os.path.join(args.work, "score_input.jsonl"), "--output", scores_path,
                "--overwrite",
            ]
        )
    scores = {}
    with open(scores_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                scores[record["id"]] = record
    accuracy = None
    if not args.skip_eval_mc:
        out = run([args.cai, "eval", "mc", "--model", args.gguf, "--data", data_path, "--json"])
        report = json.loads(out.strip().splitlines()[-1])
        if report["n"] != len(items):
            sys.exit(f"cai eval mc scored {report['n']} items; expected {len(items)}")
        accuracy = report["accuracy"]
    return scores, accuracy


DIGIT_PRE = {"smollm", "starcoder", "refact", "codeshell"}


def transformers_side(args, items: list[dict]) -> dict:
    """{variant: {id: {"logprob", "token_ids", "token_logprobs"}}} from transformers in float32.

    Variant "gguf_tokenizer" tokenises with the tokenizer transformers builds from the GGUF;
    variant "model_tokenizer" (only for GGUF `tokenizer.ggml.pre` values whose models split
    digits off first, as SmolLM2's own tokenizer.json and llama.cpp do) with that tokenizer's
    pre-tokenizer put back: `Digits(individual_digits)` then GPT-2's byte-level split.
    transformers' GGUF builder leaves the digit split out, which changes some whitespace
    before digits (`"\\n\\n1."`: one token `\\n\\n` after the digit split, two `\\n` without).
    A prompt is run once; each option is scored from its key/value cache.
    """
    import gguf
    import torch
    from tokenizers import pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tokenizers = {"gguf_tokenizer": AutoTokenizer.from_pretrained(folder, gguf_file=name)}
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    # cai's rule for bos: the GGUF's tokenizer.ggml.add_bos_token (absent: yes for
    # SentencePiece, no for BPE).
    reader = gguf.GGUFReader(args.gguf)
    field = reader.fields.get("tokenizer.ggml.add_bos_token")
    if field is not None:
        add_bos = bool(field.contents())
    else:
        add_bos = reader.fields["tokenizer.ggml.model"].contents() == "llama"
    pre = reader.fields.get("tokenizer.ggml.pre")
    if pre is not None and pre.contents() in DIGIT_PRE:
        fixed = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        fixed.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
        tokenizers["model_tokenizer"] = fixed

    def encode(tokenizer, text: str, with_bos: bool) -> list[int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id
        if with_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids

    def score(prompt: list[int], options: list[list[int]]) -> list[list[float]]:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([prompt]), use_cache=True)
            cache = out.past_key_values
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            result = []
            for ids in options:
                token_logprobs = [first[ids[0]].item()]
                if len(ids) > 1:
                    # Back to the prompt's cache (the tokens cached past it removed).
                    cache.crop(len(prompt) - cache.get_seq_length())
                    positions = torch.arange(len(prompt), len(prompt) + len(ids) - 1)[None]
                    more = model(input_ids=torch.tensor([ids[:-1]]), position_ids=positions,
                                 past_key_values=cache, use_cache=True).logits[0].float()
                    lp = torch.log_softmax(more, dim=-1)
                    token_logprobs += [lp[t, tok].item() for t, tok in enumerate(ids[1:])]
                result.append(token_logprobs)
            return result

    out = {variant: {} for variant in tokenizers}
    start = time.time()
    for n, item in enumerate(items, 1):
        done = {}
        for variant, tokenizer in tokenizers.items():
            prompt = encode(tokenizer, item["prompt"], add_bos)
            options = [
                (request_id(item["line"], kind, j), encode(tokenizer, option, False))
                for kind in ("corrects", "incorrects")
                for j, option in enumerate(item[kind])
            ]
            key = (tuple(prompt), tuple(tuple(ids) for _, ids in options))
            if key not in done:
                done[key] = score(prompt, [ids for _, ids in options])
            for (rid, ids), token_logprobs in zip(options, done[key]):
                out[variant][rid] = {
                    "logprob": sum(token_logprobs),
                    "token_ids": ids,
                    "token_logprobs": token_logprobs,
                    "prompt_ids": prompt,
                }
        if n % 25 == 0:
            print(f"  transformers: {n}/{len(items)} items ({time.time() - start:.0f} s)",
                  file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="multiple-choice JSONL (HHH shape)")
    parser.add_argument("--gguf", required=True, help="the model as one GGUF file")
    parser.add_argument("--cai", default="target/release/cai", help="the cai binary")
    parser.add_argument("--work", default="/tmp/mc_parity", help="folder for the files made")
    parser.add_argument("--cai-scores", help="reuse this `cai score` output")
    parser.add_argument("--skip-eval-mc", action="store_true",
                        help="do not run `cai eval mc` (its accuracy is then not reported)")
    parser.add_argument("--limit", type=int, help="only the first N items")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json-out", help="write the report (and per-item rows) here")
    args = parser.parse_args()

    os.makedirs(args.work, exist_ok=True)
    items = load_items(args.data)
    data_path = args.data
    if args.limit:
        items = items[: args.limit]
        data_path = os.path.join(args.work, "items.jsonl")
        with open(args.data, encoding="utf-8") as src, open(data_path, "w") as dst:
            kept = {item["line"] for item in items}
            for line_no, line in enumerate(src, 1):
                dst.write(line if line_no in kept else "\n")
    write_score_input(items, os.path.join(args.work, "score_input.jsonl"))

    cai_scores, cai_eval_accuracy = cai_side(args, items, data_path)
    variants = transformers_side(args, items)

    report = {
        "data": args.data,
        "model": args.gguf,
        "n": len(items),
        "cai_eval_mc_accuracy": cai_eval_accuracy,
    }
    rows = {}
    for variant, hf_scores in variants.items():
        report[variant], rows[variant] = compare(items, cai_scores, hf_scores)
    if len(variants) == 2:
        first = request_id
        report["items_whose_tokens_differ_between_the_tokenizers"] = sum(
            variants["gguf_tokenizer"][first(i["line"], "corrects", 0)]["prompt_ids"]
            != variants["model_tokenizer"][first(i["line"], "corrects", 0)]["prompt_ids"]
            for i in items
        )
    print(json.dumps(report, indent=2))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump({"report": report, "items": rows}, f, indent=1)
    if cai_eval_accuracy is not None:
        for variant in variants:
            if not math.isclose(cai_eval_accuracy, report[variant]["cai_accuracy"], abs_tol=1e-9):
                print("note: cai eval mc and cai score give different accuracies",
                      file=sys.stderr)
                break


def compare(items: list[dict], cai_scores: dict, hf_scores: dict) -> tuple[dict, list[dict]]:
    """Accuracies, agreeing choices and log-probability gaps of cai and one transformers run."""
    rows = []
    max_gap = (0.0, None)
    max_token_gap = 0.0
    ids_differ = 0

    def choice(item, scores):
        """The option a side picks: the first best, right options listed first."""
        options = [(kind, j, x) for kind in ("corrects", "incorrects")
                   for j, x in enumerate(scores[kind])]
        kind, j, _ = max(options, key=lambda o: o[2])
        return item[kind][j]

    for item in items:
        per = {}
        for name, scores in (("cai", cai_scores), ("transformers", hf_scores)):
            per[name] = {
                kind: [scores[request_id(item["line"], kind, j)]["logprob"]
                       for j in range(len(item[kind]))]
                for kind in ("corrects", "incorrects")
            }
        same_tokens = True
        for kind in ("corrects", "incorrects"):
            for j in range(len(item[kind])):
                rid = request_id(item["line"], kind, j)
                c, h = cai_scores[rid], hf_scores[rid]
                same_tokens &= c["token_ids"] == h["token_ids"]
                gap = abs(c["logprob"] - h["logprob"])
                if gap > max_gap[0]:
                    max_gap = (gap, rid)
                for a, b in zip(c["token_logprobs"], h["token_logprobs"]):
                    max_token_gap = max(max_token_gap, abs(a - b))
        ids_differ += not same_tokens
        rows.append({
            "line": item["line"],
            "cai": per["cai"],
            "transformers": per["transformers"],
            "cai_credit": credit(per["cai"]["corrects"], per["cai"]["incorrects"]),
            "transformers_credit": credit(per["transformers"]["corrects"],
                                          per["transformers"]["incorrects"]),
            "cai_choice": choice(item, per["cai"]),
            "transformers_choice": choice(item, per["transformers"]),
            "prompt_tokens": len(hf_scores[request_id(item["line"], "corrects", 0)]["prompt_ids"]),
        })
    n = len(rows)
    margins = [abs(max(r["transformers"]["corrects"]) - max(r["transformers"]["incorrects"]))
               for r in rows]
    disagree = [r["line"] for r in rows if r["cai_choice"] != r["transformers_choice"]]
    return {
        "cai_accuracy": sum(r["cai_credit"] for r in rows) / n,
        "transformers_accuracy": sum(r["transformers_credit"] for r in rows) / n,
        "choices_agree": n - len(disagree),
        "lines_where_choices_differ": disagree,
        "option_token_ids_differ": ids_differ,
        "max_abs_logprob_diff": max_gap[0],
        "max_abs_logprob_diff_at": max_gap[1],
        "max_abs_token_logprob_diff": max_token_gap,
        "smallest_transformers_margin": min(margins),
        "prompt_tokens_max": max(r["prompt_tokens"] for r in rows),
    }, rows


if __name__ == "__main__":
    main()
