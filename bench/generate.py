"""Generation with a KV cache: `specc generate` (the decoder the compiler derives from the spec) against
transformers' `generate` with its own cache, same config and weights, same process, interleaved,
greedy, one thread, medians:

  (a) new tokens per second, 256 new tokens after a 32-token prompt          - goal: specc >= 1.5x
  (b) cost per token over tokens 288-544 against tokens 32-288, for each     - goal: specc's growth
      (decode time only: a run of 256 new tokens minus a run of 1, the prefill)  <= transformers'

    python bench/generate.py [--model llama|gpt2] [--rounds 5] [--threads 1]

--model llama: specs/zoo/llama.yaml against LlamaForCausalLM (4 layers, hidden 256, 4 heads, 2 KV heads,
intermediate 688, vocab 2048); --model gpt2: specs/zoo/gpt.yaml (nanoGPT) against GPT2LMHeadModel
(4 layers, n_embd 256, 4 heads, vocab 2048). The default is llama when the zoo has it. The weights are
the reference's, loaded strictly into the spec's model; the bench first checks that both produce the
same greedy tokens.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import specc  # noqa: E402
from specc.generating import LanguageModel, Sampling  # noqa: E402

SIZES = dict(layers=4, hidden=256, heads=4, kv_heads=2, vocab=2048, positions=1024)
NEW = 256


def gpt2_pair():
    from transformers import GPT2Config, GPT2LMHeadModel
    s = SIZES
    ref = GPT2LMHeadModel(GPT2Config(n_layer=s["layers"], n_head=s["heads"], n_embd=s["hidden"], vocab_size=s["vocab"],
                                     n_positions=s["positions"], bos_token_id=0, eos_token_id=0)).eval()
    params = dict(n_layer=s["layers"], n_head=s["heads"], n_embd=s["hidden"], vocab_size=s["vocab"],
                  block_size=s["positions"])
    compiled = specc.api.compiled(ROOT / "specs/zoo/gpt.yaml", params)
    state = {}
    for k, v in ref.state_dict().items():  # HF's Conv1D stores (in, out): nanoGPT's Linear is its transpose
        if k.endswith(".attn.bias") or k.endswith("masked_bias"):
            continue
        transposed = any(k.endswith(f"{m}.weight") for m in ("c_attn", "c_proj", "c_fc"))
        state[k] = v.t().contiguous() if transposed else v
    compiled.module.load_state_dict(state, strict=True)
    return compiled, ref


def llama_pair():
    import tempfile

    from transformers import LlamaConfig, LlamaForCausalLM

    from specc.building import Import, compile_with
    s = SIZES
    config = LlamaConfig(num_hidden_layers=s["layers"], hidden_size=s["hidden"], num_attention_heads=s["heads"],
                         num_key_value_heads=s["kv_heads"], intermediate_size=688, vocab_size=s["vocab"],
                         max_position_embeddings=s["positions"], bos_token_id=0, eos_token_id=0, pad_token_id=0)
    ref = LlamaForCausalLM(config).eval()
    folder = Path(tempfile.mkdtemp(prefix="bench-llama-"))
    ref.save_pretrained(folder)  # imported as a user would: specc build specs/zoo/llama.yaml --weights DIR
    return compile_with(ROOT / "specs/zoo/llama.yaml", None, Import.of(folder)), ref


class _Specc:
    """specc generate's path: the LanguageModel (KV-cache decoder, sampling loop), loaded once."""

    def __init__(self, compiled):
        from compiler.kvcache import decoder
        from specc.codecs import Codec
        dec = decoder(compiled)
        self.lm = LanguageModel(Path("."), dec, Codec("ids"), dec.vocab or SIZES["vocab"])

    def __call__(self, prompt: list[int], new: int) -> list[int]:
        out = self.lm.generate([prompt], new, Sampling(top_k=1))[0]
        return [int(t) for t in out.split()][len(prompt):]


def _hf(ref):
    def run(prompt: list[int], new: int) -> list[int]:
        with torch.no_grad():
            out = ref.generate(torch.tensor([prompt]), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                               use_cache=True, pad_token_id=0)
        return out[0, len(prompt):].tolist()
    return run


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("llama", "gpt2"),
                    default="llama" if (ROOT / "specs/zoo/llama.yaml").exists() else "gpt2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    compiled, ref = llama_pair() if args.model == "llama" else gpt2_pair()
    runners = {"transformers": _hf(ref), "specc": _Specc(compiled)}
    g = torch.Generator().manual_seed(1)
    short = torch.randint(1, SIZES["vocab"], (32,), generator=g).tolist()
    long = torch.randint(1, SIZES["vocab"], (288,), generator=g).tolist()
    same = runners["specc"](short, 32) == runners["transformers"](short, 32)
    print(f"model: {args.model}, {SIZES}, {args.threads} thread(s); same greedy tokens as transformers: {same}")
    cases = {"full": (short, NEW), "prefill32": (short, 1), "late": (long, NEW), "prefill288": (long, 1)}
    times = {(r, c): [] for r in runners for c in cases}
    for _ in range(args.rounds):
        for case, (prompt, new) in cases.items():
            for name, fn in runners.items():  # interleaved: each case, each runner, in turn
                times[(name, case)].append(timed(fn, prompt, new))
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {r: NEW / med[(r, "full")] for r in runners}
    early = {r: (med[(r, "full")] - med[(r, "prefill32")]) / (NEW - 1) for r in runners}
    late = {r: (med[(r, "late")] - med[(r, "prefill288")]) / (NEW - 1) for r in runners}
    for r in runners:
        print(f"  {r:<13} {rate[r]:8.1f} new tokens/s   {early[r] * 1e3:7.3f} ms/token (32-288)   "
              f"{late[r] * 1e3:7.3f} ms/token (288-544)   growth {late[r] / early[r]:.3f}")
    speed = rate["specc"] / rate["transformers"]
    print(f"== (a) tokens/s specc/transformers = {speed:.2f}x  {'OK' if speed >= 1.5 else 'UNDER the 1.5x goal'}")
    grow = {r: late[r] / early[r] for r in runners}
    ok = grow["specc"] <= grow["transformers"]
    print(f"== (b) growth 288-544 vs 32-288: specc {grow['specc']:.3f}, transformers {grow['transformers']:.3f}  "
          f"{'OK' if ok else 'OVER transformers'}")


if __name__ == "__main__":
    main()
