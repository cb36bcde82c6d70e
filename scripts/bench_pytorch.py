"""PyTorch + transformers on docs/BENCH.md's workloads, to compare with `cai bench` side by side on
one machine. Not a dependency of cai: run it from a virtualenv with torch and transformers.

    python scripts/bench_pytorch.py WORKLOAD [RUNS] [--shape bench-6m|smollm2-135m] [--model DIR]
        [--dtype f32|bf16] [--device cpu|cuda] [--lora] [--gradient-checkpointing]

WORKLOAD is generate_b1, generate_b8, generate_b32, score, train, critique or ppo_step: the
same shapes as `cai bench` (generate: prompt 32 random tokens, 64 new greedy tokens; score: 32 x 256 tokens;
train: 8 x 256 tokens, forward + backward + AdamW; critique: a 256-token context, then 8
transcripts through 3 waves of 64 new tokens, each later wave adding a 16-token request;
ppo_step: 8 sampled responses of 64 tokens, policy and reference log-probs, one update). `--shape` picks a random model of a standard
shape (default bench-6m); `--model` loads a Hugging Face model directory instead. For train,
`--lora` trains LoRA adapters on q_proj and v_proj (r 8, alpha 16, dropout 0.05: PEFT's and
cai's defaults, written out here so that peft is not needed) over frozen weights, and
`--gradient-checkpointing` turns on transformers' activation checkpointing, as the same flags of
`cai bench` do.

Prints one JSON object: tokens/s of the best of RUNS (default 3) after a warm-up, and the
process's peak RSS. Run each workload in its own process so that peak memory is its own.
"""
import argparse, resource, time, json, os
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

SHAPES = {
    "bench-6m": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                     intermediate_size=1024, vocab_size=4096, tie_word_embeddings=False, rope_theta=10000.0,
                     rms_norm_eps=1e-5, max_position_embeddings=2048),
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True,
                         rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=8192),
}

ap = argparse.ArgumentParser()
ap.add_argument("workload")
ap.add_argument("runs", nargs="?", type=int, default=3)
ap.add_argument("--shape", default="bench-6m", choices=sorted(SHAPES))
ap.add_argument("--model", default=None)
ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
ap.add_argument("--score-rows", type=int, default=32)
ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (scripts/gpu-check.sh)")
ap.add_argument("--lora", action="store_true", help="train: LoRA adapters on q_proj, v_proj")
ap.add_argument("--gradient-checkpointing", action="store_true", help="train: activation checkpointing")
args = ap.parse_args()
work, runs = args.workload, args.runs
torch.set_num_threads(2)
torch.manual_seed(0)
dtype = torch.float32 if args.dtype == "f32" else torch.bfloat16
if args.model:
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=dtype)
else:
    cfg = LlamaConfig(**SHAPES[args.shape], bos_token_id=0, eos_token_id=1, pad_token_id=0)
    model = LlamaForCausalLM(cfg).to(dtype)
device = torch.device(args.device)
model = model.to(device)
vocab = model.config.vocab_size
nparams = sum(p.numel() for p in model.parameters())


def sync():
    # CUDA runs asynchronously: a timer must wait for the queued kernels.
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn):
    fn(); sync()  # warm-up
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter(); fn(); sync(); best = min(best, time.perf_counter() - t)
    return best


if work.startswith("generate_b"):
    b = int(work[len("generate_b"):]); model.eval()
    ids = torch.randint(2, vocab, (b, 32), device=device)
    def fn():
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=64,
                                 min_new_tokens=64, use_cache=True, pad_token_id=0)
        assert out.shape == (b, 96), out.shape
    t = timeit(fn); toks = b * 64
elif work == "critique":
    # One critique round as `cai bench --workloads critique` shapes it: a 256-token context, then
    # 8 transcripts (prompts of 32 tokens) through 3 waves of 64 greedy new tokens, each later
    # wave's prompt the transcript so far plus a 16-token request. transformers' generate has
    # no shared-prefix cache, so every wave reads the context again (cai computes it once).
    model.eval()
    g = torch.Generator().manual_seed(5)
    context = torch.randint(2, vocab, (1, 256), generator=g).repeat(8, 1)
    prompts = torch.randint(2, vocab, (8, 32), generator=g)
    requests = [torch.randint(2, vocab, (8, 16), generator=g) for _ in range(3)]
    def fn():
        transcript = prompts
        for wave in range(3):
            if wave > 0:
                transcript = torch.cat([transcript, requests[wave]], 1)
            ids = torch.cat([context, transcript], 1).to(device)
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=64, min_new_tokens=64, use_cache=True, pad_token_id=0)
            transcript = torch.cat([transcript, out[:, ids.shape[1]:].cpu()], 1)
    t = timeit(fn); toks = 8 * 64 * 3
elif work == "ppo_step":
    # One PPO step as `cai bench --workloads ppo_step` shapes it: 8 prompts of 32 tokens, 64 new
    # tokens sampled at temperature 1, the policy's and a frozen reference's log-probs of them,
    # then one clipped-surrogate update (the per-token KL as advantage stand-in) with AdamW.
    import copy
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    if args.gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    prompts = torch.randint(2, vocab, (8, 32), generator=torch.Generator().manual_seed(6)).to(device)
    def response_logp(m, seq):
        logits = m(seq).logits[:, 31:-1].float()
        return torch.log_softmax(logits, -1).gather(-1, seq[:, 32:, None]).squeeze(-1)
    def fn():
        model.eval()
        # A plain sampling loop over the KV cache: transformers' generate(do_sample=True) took
        # ~20 s for this on bench-6m (greedy: 0.2 s), which would not be a fair baseline.
        with torch.inference_mode():
            out = model(prompts, use_cache=True)
            past, seq = out.past_key_values, prompts
            for _ in range(64):
                probs = torch.softmax(out.logits[:, -1].float(), -1)
                nxt = torch.multinomial(probs, 1)
                seq = torch.cat([seq, nxt], 1)
                out = model(nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
        seq = seq.clone()
        with torch.no_grad():
            old, ref = response_logp(model, seq), response_logp(reference, seq)
        model.train()
        new = response_logp(model, seq)
        adv = ref - old; ratio = torch.exp(new - old)
        loss = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
        loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    t = timeit(fn); toks = 8 * 64
elif work == "score":
    # In passes of --score-rows rows (default 32: one pass; cai's engine runs 16 x 256 per pass).
    model.eval(); ids = torch.randint(2, vocab, (32, 256), device=device)
    def fn():
        with torch.inference_mode():
            for part in ids.split(args.score_rows):
                lp = torch.log_softmax(model(part).logits.float(), -1)
                lp[:, :-1].gather(-1, part[:, 1:, None]).sum()
    t = timeit(fn); toks = 32 * 256
elif work == "train":
    class Lora(torch.nn.Module):
        """`base(x) + (alpha / r) B A dropout(x)`, B zero at the start (PEFT's LoRA)."""
        def __init__(self, base, r=8, alpha=16.0, dropout=0.05):
            super().__init__()
            self.base, self.scale, self.dropout = base, alpha / r, torch.nn.Dropout(dropout)
            self.a = torch.nn.Linear(base.in_features, r, bias=False, dtype=base.weight.dtype)
            self.b = torch.nn.Linear(r, base.out_features, bias=False, dtype=base.weight.dtype)
            torch.nn.init.kaiming_uniform_(self.a.weight, a=5 ** 0.5); torch.nn.init.zeros_(self.b.weight)
        def forward(self, x):
            return self.base(x) + self.b(self.a(self.dropout(x))) * self.scale
    if args.lora:
        model.requires_grad_(False)
        for layer in model.model.layers:
            layer.self_attn.q_proj = Lora(layer.self_attn.q_proj).to(device)
            layer.self_attn.v_proj = Lora(layer.self_attn.v_proj).to(device)
    if args.gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train(); opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(2, vocab, (8, 256), device=device)
    def fn():
        out = model(ids, labels=ids); out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    t = timeit(fn); toks = 8 * 256
else:
    raise SystemExit(f"unknown workload {work!r}")
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"workload": work, "shape": args.model or args.shape, "dtype": args.dtype, "device": args.device,
                  "lora": args.lora, "gradient_checkpointing": args.gradient_checkpointing,
                  "tokens_per_s": round(toks / t, 1), "best_s": round(t, 4),
                  "peak_rss_mib": round(rss, 1), "params": nparams, "load": os.getloadavg()[0]}))
