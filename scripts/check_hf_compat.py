#!/usr/bin/env python3
"""Check that models written by `cai init-model` load in Hugging Face transformers and give
the same numbers as `cai`.

For every model directory it checks:
  load      AutoTokenizer + AutoModelForCausalLM (fp32) load with no missing, unexpected or
            mismatched keys;
  tok       the token ids cai scores (`cai score` "token_ids") equal the HF tokenizer's, and
            HF's own default encoding (add_special_tokens=True) agrees with cai's bos rule
            (cai prepends bos when tokenizer_config.json's `add_bos_token` asks for it);
  score     `cai score` per-token log-probs equal log_softmax of the HF logits at the same
            positions (max |diff| <= --tol, default 1e-4);
  generate  `cai generate --temperature 0 --max-new-tokens N` token ids equal
            `model.generate(do_sample=False, max_new_tokens=N)`, and the completion texts agree.

Needs a Python environment with torch, transformers and safetensors (never a dependency of
the project; e.g. `python -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch
transformers safetensors`). Usage:

    cargo build --release -p cai-cli
    /tmp/hfvenv/bin/python scripts/check_hf_compat.py --make-models /tmp/hfcheck
    /tmp/hfvenv/bin/python scripts/check_hf_compat.py /tmp/hfcheck/llama /path/to/other/model

--make-models DIR writes tiny models of every architecture (llama, llama tied, mistral with a
sliding window of 8, qwen2, qwen2 tied, qwen2 with a window of 8, qwen3, qwen3 with a window
of 8, gpt2) with `cai init-model` into DIR, training their tokenizer on a built-in English
corpus (or --corpus FILE), then checks them.
Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (name, init-model flags). Hidden 64, 2 layers, 4 heads, 2 KV heads, MLP 128, vocab 512.
SHAPE = ["--hidden-size", "64", "--layers", "2", "--heads", "4", "--intermediate-size", "128",
         "--vocab-size", "512"]
VARIANTS = [
    ("llama", ["--arch", "llama", "--kv-heads", "2", "--seed", "0"]),
    ("llama_tied", ["--arch", "llama", "--kv-heads", "2", "--tie-embeddings", "--seed", "1"]),
    ("mistral_sw8", ["--arch", "mistral", "--kv-heads", "2", "--sliding-window", "8",
                     "--seed", "2"]),
    ("qwen2", ["--arch", "qwen2", "--kv-heads", "2", "--seed", "3"]),
    ("qwen2_tied", ["--arch", "qwen2", "--kv-heads", "2", "--tie-embeddings", "--seed", "4"]),
    ("qwen2_sw8", ["--arch", "qwen2", "--kv-heads", "2", "--sliding-window", "8", "--seed", "7"]),
    ("qwen3", ["--arch", "qwen3", "--kv-heads", "2", "--seed", "5"]),
    ("qwen3_sw8", ["--arch", "qwen3", "--kv-heads", "2", "--sliding-window", "8", "--seed", "8"]),
    ("gpt2", ["--arch", "gpt2", "--seed", "6"]),
]

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A helpful assistant answers questions honestly and clearly.",
    "Once upon a time, there was a small village near the river.",
    "Scientists study the stars to learn how the universe began.",
    "Please explain why the sky is blue on a sunny afternoon.",
    "The cat sat on the mat and looked out of the window.",
    "Machine learning models predict the next word in a sentence.",
    "She walked to the market to buy apples, bread, and cheese.",
    "It is important to be kind, careful, and truthful with others.",
    "The weather today is cold, but tomorrow it will be warm again.",
    "Human: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    "Children played in the park while their parents talked quietly.",
    "Numbers like 42, 1000 and 3.14 appear in many old books.",
    'He said, "I don\'t know," and then he left the room!',
]

# Prompts of various lengths; all but the first two are longer than 8 tokens (sliding window).
PROMPTS = [
    "Hello",
    "The cat",
    "The quick brown fox jumps over the lazy dog and",
    "Human: What is the capital of France?\n\nAssistant:",
    "Once upon a time, there was a small village near the river. Children played in the park "
    "while their parents talked quietly, and the weather was cold but",
    "Numbers like 42, 1000 and 3.14 — and a café, naïve résumé, 日本語 — appear in",
]
# (prompt, continuation) pairs for scoring; continuations long enough to cross the window.
SCORE_PAIRS = [
    ("The cat", " sat on the mat."),
    ("Hello", ", world! How are you today?"),
    ("The quick brown fox", " jumps over the lazy dog and runs into the forest near the river."),
    ("Human: What is the capital of France?\n\nAssistant:", " The capital of France is Paris."),
    (PROMPTS[4], " tomorrow it will be warm again, said the scientists who study the stars."),
    ("Scientists study", " the stars to learn how the universe began, and why the sky is blue"
                         " on a sunny afternoon; machine learning models predict the next word."),
    ("", "She walked to the market to buy apples, bread, and cheese."),
    (PROMPTS[5], " many old books."),
]


def corpus_text() -> str:
    rng = random.Random(1)
    return "\n".join(" ".join(rng.sample(SENTENCES, 3)) for _ in range(120)) + "\n"


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def make_models(cai: str, out: Path, corpus: Path | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    if corpus is None:
        corpus = out / "corpus.txt"
        corpus.write_text(corpus_text())
    dirs = []
    for name, flags in VARIANTS:
        d = out / name
        run([cai, "init-model", "--output", str(d), "--train-tokenizer", str(corpus), "--force",
             *SHAPE, *flags])
        dirs.append(d)
    return dirs


class Result:
    def __init__(self, name: str):
        self.name = name
        self.checks: dict[str, tuple[bool, str]] = {}
        self.notes: list[str] = []

    def set(self, check: str, ok: bool, detail: str) -> None:
        self.checks[check] = (ok, detail)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks.values())


def check_model(cai: str, model_dir: Path, tol: float, max_new: int, work: Path) -> Result:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = Result(model_dir.name)
    config = json.loads((model_dir / "config.json").read_text())
    tok_config_path = model_dir / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text()) if tok_config_path.exists() else {}

    def cai_run(kind: str, rows: list[dict], *extra: str) -> dict[str, dict]:
        src, dst = work / f"{res.name}.{kind}.in.jsonl", work / f"{res.name}.{kind}.out.jsonl"
        write_jsonl(src, rows)
        run([cai, kind, "--model", str(model_dir), "--input", str(src), "--output", str(dst),
             "--overwrite", *extra])
        return {r["id"]: r for r in read_jsonl(dst)}

    # --- load -------------------------------------------------------------------------------
    tok = AutoTokenizer.from_pretrained(model_dir)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, output_loading_info=True)
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        model, info = AutoModelForCausalLM.from_pretrained(
            model_dir, torch_dtype=torch.float32, output_loading_info=True)
    model.eval()
    problems = {k: list(v) for k, v in info.items() if v}
    n_params = sum(p.numel() for p in model.parameters())
    res.set("load", not problems,
            f"{type(model).__name__}, {n_params:,} params" if not problems else str(problems))
    res.notes.append(f"{config.get('model_type')}, sliding_window={config.get('sliding_window')}, "
                     f"tie={config.get('tie_word_embeddings')}, "
                     f"add_bos_token={tok_config.get('add_bos_token')}, "
                     f"HF tokenizer class {type(tok).__name__}")

    # --- bos rule: mirror cai (bos in front of a prompt when the tokenizer asks for it) ------
    bos_id = tok.bos_token_id
    if bos_id is None:
        bos_id = config.get("bos_token_id")
    add_bos = tok_config.get("add_bos_token")
    if add_bos is None:  # cai: bos when the tokenizer's post-processor adds it
        add_bos = tok("a").input_ids[:1] == [bos_id]
    add_bos = bool(add_bos) and bos_id is not None

    def with_bos(ids: list[int]) -> list[int]:
        return [bos_id] + ids if add_bos and (not ids or ids[0] != bos_id) else ids

    # --- tokenizer: cai's ids of every text (scored as a continuation) vs HF's ----------------
    texts = sorted({t for t in PROMPTS + [p for p, _ in SCORE_PAIRS] + [c for _, c in SCORE_PAIRS]
                    if t})
    if add_bos:  # an empty prompt is then just bos, so the continuation's ids are the text's
        cai_tok = cai_run("score", [{"id": str(i), "prompt": "", "continuation": t}
                                    for i, t in enumerate(texts)])
        cai_ids = {t: cai_tok[str(i)]["token_ids"] for i, t in enumerate(texts)}
        how = "cai score"
    else:  # cai encodes with the tokenizers crate, post-processor off
        from tokenizers import Tokenizer
        raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        cai_ids = {t: raw.encode(t, add_special_tokens=False).ids for t in texts}
        how = "tokenizers (no bos, cannot score an empty prompt)"
    hf_ids = {t: tok(t, add_special_tokens=False).input_ids for t in texts}
    tok_bad = [t for t in texts if cai_ids[t] != hf_ids[t]]
    # HF's own default encoding must agree with cai's bos rule, or users get different numbers.
    default_bad = [p for p in PROMPTS if tok(p).input_ids != with_bos(hf_ids[p])]
    detail = f"{len(texts) - len(tok_bad)}/{len(texts)} texts equal (cai ids via {how})"
    for t in tok_bad[:2]:
        a, b = cai_ids[t], hf_ids[t]
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        detail += (f"; {t[:30]!r}...: first difference at token {k}: "
                   f"cai {tok.convert_ids_to_tokens(a[k:k + 4])} "
                   f"hf {tok.convert_ids_to_tokens(b[k:k + 4])}")
    if default_bad:
        p = default_bad[0]
        detail += (f"; HF default encoding (add_special_tokens=True) disagrees with cai's bos "
                   f"rule on {len(default_bad)} prompts: {tok(p).input_ids[:3]} vs "
                   f"{with_bos(hf_ids[p])[:3]}")
    res.set("tok", not tok_bad and not default_bad, detail)

    # --- score: model numerics on cai's own token ids ---------------------------------------
    pairs = [(p, c) for p, c in SCORE_PAIRS if p or add_bos]  # "" prompt needs bos
    scored = cai_run("score", [{"id": str(i), "prompt": p, "continuation": c}
                               for i, (p, c) in enumerate(pairs)])
    max_diff, max_sum_diff, bad, n_tokens = 0.0, 0.0, [], 0
    with torch.no_grad():
        for i, (p, c) in enumerate(pairs):
            r = scored[str(i)]
            p_ids = with_bos(cai_ids[p] if p else [])
            c_ids = r["token_ids"]
            if c_ids != cai_ids[c]:
                bad.append(f"record {i}: continuation ids {c_ids} != {cai_ids[c]} alone")
            logits = model(torch.tensor([p_ids + c_ids])).logits[0]
            logp = torch.log_softmax(logits.double(), dim=-1)
            hf = [logp[len(p_ids) + k - 1, t].item() for k, t in enumerate(c_ids)]
            n_tokens += len(hf)
            diffs = [abs(a - b) for a, b in zip(hf, r["token_logprobs"])]
            max_diff = max([max_diff] + diffs)
            max_sum_diff = max(max_sum_diff, abs(sum(hf) - r["logprob"]))
            if diffs and max(diffs) > tol:
                k = max(range(len(diffs)), key=diffs.__getitem__)
                bad.append(f"record {i} ({len(p_ids)}+{len(c_ids)} tok): worst at continuation "
                           f"token {k}: cai {r['token_logprobs'][k]:.6f} hf {hf[k]:.6f}")
    res.set("score", n_tokens > 0 and max_diff <= tol and max_sum_diff <= tol * 10 and not bad,
            f"max|dlogp|={max_diff:.2e} over {n_tokens} tokens, max|dsum|={max_sum_diff:.2e}"
            + "".join(f"; {b}" for b in bad[:3]))

    # --- greedy generation, end to end (HF tokenizer + HF generate vs cai generate) ---------
    generated = cai_run("generate", [{"id": str(i), "prompt": p} for i, p in enumerate(PROMPTS)],
                        "--temperature", "0", "--max-new-tokens", str(max_new))
    eos = config.get("eos_token_id")
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(eos_ids), 0)

    def hf_greedy(p_ids: list[int]) -> tuple[list[int], float]:
        ids = torch.tensor([p_ids])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new, eos_token_id=list(eos_ids) or None,
                             pad_token_id=pad, temperature=None, top_p=None, top_k=None)
        new = out[0, len(p_ids):].tolist()
        # Greedy margin (top-1 minus top-2 logit) along the path, to tell near-ties apart.
        logits = model(out[:, :len(p_ids) + len(new)]).logits[0]
        gap = min(((lambda v: (v[0] - v[1]).item())(torch.topk(logits[q], 2).values)
                   for q in range(len(p_ids) - 1, len(p_ids) - 1 + len(new))), default=math.inf)
        return new, gap

    gen_bad, text_bad, min_gap = [], [], math.inf
    with torch.no_grad():
        for i, p in enumerate(PROMPTS):
            g = generated[str(i)]
            cai_new = g["token_ids"]
            hf_new, gap = hf_greedy(with_bos(hf_ids[p]))
            min_gap = min(min_gap, gap)
            # cai may leave a final eos out of token_ids when it stops on it.
            same = cai_new == hf_new or (g["finish_reason"] == "stop" and hf_new
                                         and hf_new[-1] in eos_ids and cai_new == hf_new[:-1])
            if not same:
                why = ""
                if cai_ids[p] != hf_ids[p]:
                    again, _ = hf_greedy(with_bos(cai_ids[p]))
                    why = (" (prompt ids differ; from cai's prompt ids HF gives "
                           f"{'the same tokens as cai' if again == cai_new else again})")
                gen_bad.append(f"prompt {i} ({len(hf_ids[p]) + add_bos} tok): cai {cai_new} "
                               f"hf {hf_new}{why}")
            else:
                hf_text = tok.decode(cai_new, skip_special_tokens=True)
                if hf_text != g["completion"]:
                    text_bad.append(f"prompt {i}: cai {g['completion']!r} hf {hf_text!r}")
    res.set("generate", not gen_bad and not text_bad,
            f"{len(PROMPTS) - len(gen_bad)}/{len(PROMPTS)} prompts x {max_new} tokens equal, "
            f"min top1-top2 logit gap {min_gap:.1e}"
            + "".join(f"; {b}" for b in gen_bad) + "".join(f"; text: {b}" for b in text_bad))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path, help="model directories written by cai")
    ap.add_argument("--make-models", type=Path, metavar="DIR",
                    help="first write tiny models of every architecture into DIR")
    ap.add_argument("--corpus", type=Path, help="tokenizer training text for --make-models")
    ap.add_argument("--cai", default=str(REPO / "target" / "release" / "cai"),
                    help="cai binary (default: target/release/cai)")
    ap.add_argument("--tol", type=float, default=1e-4, help="log-prob tolerance")
    ap.add_argument("--max-new-tokens", type=int, default=10)
    args = ap.parse_args()

    import torch
    import transformers
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, cai {args.cai}")

    dirs = list(args.models)
    if args.make_models:
        dirs = make_models(args.cai, args.make_models, args.corpus) + dirs
    if not dirs:
        ap.error("give model directories or --make-models DIR")

    results = []
    with tempfile.TemporaryDirectory(prefix="cai_hf_") as tmp:
        for d in dirs:
            try:
                results.append(check_model(args.cai, d, args.tol, args.max_new_tokens, Path(tmp)))
            except Exception as e:  # a model that does not even load is a FAIL row
                r = Result(d.name)
                r.set("load", False, f"{type(e).__name__}: {e}")
                results.append(r)

    checks = ["load", "tok", "score", "generate"]
    width = max(len(r.name) for r in results)
    print()
    print(f"{'model':<{width}}  " + "  ".join(f"{c:<8}" for c in checks) + "  result")
    for r in results:
        cells = [("PASS" if r.checks[c][0] else "FAIL") if c in r.checks else "-" for c in checks]
        print(f"{r.name:<{width}}  " + "  ".join(f"{c:<8}" for c in cells)
              + f"  {'PASS' if r.ok else 'FAIL'}")
    print()
    for r in results:
        print(f"{r.name}: {'; '.join(r.notes)}")
        for c in checks:
            if c in r.checks:
                ok, detail = r.checks[c]
                print(f"  {c:<8} {'PASS' if ok else 'FAIL'}  {detail}")
    ok = all(r.ok for r in results)
    print(f"\n{'ALL PASS' if ok else 'SOME FAILED'} ({sum(r.ok for r in results)}/{len(results)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
