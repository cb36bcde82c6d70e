"""PyTorch + transformers on docs/BENCH.md's `bench-6m` workloads, to compare with `cai bench` side by
side on one machine. Not a dependency of cai: run it from a virtualenv with torch and
transformers installed.

    python scripts/bench_pytorch.py generate_b8|generate_b1|generate_b32|score|train [RUNS]

Prints one JSON object: tokens/s of the best of RUNS (default 3) after a warm-up, and the
process's peak RSS. Run each workload in its own process so that peak memory is its own.
"""
import resource, sys, time, json, os
import torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.set_num_threads(2)
torch.manual_seed(0)
work = sys.argv[1]; runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
cfg = LlamaConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=1024, vocab_size=4096, tie_word_embeddings=False, rope_theta=10000.0,
                  rms_norm_eps=1e-5, max_position_embeddings=2048, bos_token_id=0, eos_token_id=1, pad_token_id=0)
model = LlamaForCausalLM(cfg).float()
nparams = sum(p.numel() for p in model.parameters())
def timeit(fn):
    fn()  # warm-up
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t)
    return best
if work.startswith("generate_b"):
    b = int(work[len("generate_b"):]); model.eval()
    ids = torch.randint(2, 4096, (b, 32))
    def fn():
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=64,
                                 min_new_tokens=64, use_cache=True, pad_token_id=0)
        assert out.shape == (b, 96), out.shape
    t = timeit(fn); toks = b * 64
elif work == "score":
    model.eval(); ids = torch.randint(2, 4096, (32, 256))
    def fn():
        with torch.inference_mode():
            lp = torch.log_softmax(model(ids).logits.float(), -1)
            lp[:, :-1].gather(-1, ids[:, 1:, None]).sum()
    t = timeit(fn); toks = 32 * 256
elif work == "train":
    model.train(); opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(2, 4096, (8, 256))
    def fn():
        out = model(ids, labels=ids); out.loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    t = timeit(fn); toks = 8 * 256
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"workload": work, "tokens_per_s": round(toks / t, 1), "best_s": round(t, 4),
                  "peak_rss_mib": round(rss, 1), "params": nparams, "load": os.getloadavg()[0]}))
