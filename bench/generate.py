"""Generation with a KV cache: `specc generate` (the decoder the compiler derives from the spec) against
transformers' `generate` with its own cache, same config and weights, same process, interleaved,
greedy, one thread, medians over rounds. Each round, each side generates 512 new tokens after a 32-token
prompt, and the time of every token is taken as it comes (specc's `stream`, a transformers streamer):

  (a) new tokens per second over the first 256 new tokens (prefill included)  - goal: specc >= 1.5x
  (b) the median cost of a token at positions 288-544 against 32-288, each     - goal: specc's growth
      side against itself in the same generation                                 <= transformers'

Times are the thread's CPU time by default (`--clock cpu`, time.thread_time: torch runs on this one
thread), which other processes on a shared machine do not inflate; `--clock wall` uses perf_counter.

    python bench/generate.py [--model llama|gpt2] [--rounds 5] [--threads 1] [--device cpu|cuda]

On `--device cuda` both sides run on the GPU and the clock is the wall clock (GPU work is not the
thread's CPU time). Without transformers (the GPU machine has none) the spec's model gets random
weights and only specc's own figures are printed.

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


CLOCK = {"cpu": time.thread_time, "wall": time.perf_counter}
now = CLOCK["cpu"]


class _Clock:
    """A transformers streamer that notes the time of each put (the prompt first, then every new token)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(now())

    def end(self) -> None:
        pass


def specc_alone(model: str):
    """The spec's model at the same sizes, randomly initialised: when transformers is not installed."""
    s = SIZES
    if model == "gpt2":
        params = dict(n_layer=s["layers"], n_head=s["heads"], n_embd=s["hidden"], vocab_size=s["vocab"],
                      block_size=s["positions"])
        return specc.api.compiled(ROOT / "specs/zoo/gpt.yaml", params)
    params = dict(num_hidden_layers=s["layers"], hidden_size=s["hidden"], num_attention_heads=s["heads"],
                  num_key_value_heads=s["kv_heads"], intermediate_size=688, vocab_size=s["vocab"],
                  max_position_embeddings=s["positions"])
    return specc.api.compiled(ROOT / "specs/zoo/llama.yaml", params)


def specc_side(compiled):
    """specc generate's path: the KV-cache decoder and the sampling loop (LanguageModel.stream)."""
    from compiler.kvcache import decoder
    from specc.codecs import Codec
    dec = decoder(compiled)
    lm = LanguageModel(Path("."), dec, Codec("ids"), dec.vocab or SIZES["vocab"])

    def run(prompt: list[int], new: int) -> tuple[list[int], list[float]]:
        start, stamps, ids = now(), [], []
        for tok in lm.stream(prompt, new, Sampling(top_k=1)):
            stamps.append(now())
            ids.append(tok.id)
        return ids, [start] + stamps
    return run


def hf_side(ref):
    def run(prompt: list[int], new: int) -> tuple[list[int], list[float]]:
        clock = _Clock()
        start = now()
        with torch.no_grad():
            out = ref.generate(torch.tensor([prompt], device=ref.device), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                               use_cache=True, pad_token_id=0, streamer=clock)
        return out[0, len(prompt):].tolist(), [start] + clock.times[1:]
    return run


def measure(stamps: list[float]) -> dict[str, float]:
    """From [start, token 1, token 2, ...]: tokens/s over the first NEW, and the median gap per window."""
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # gaps[i]: new token i + 2 (position 33 + i)
    return {"rate": NEW / (stamps[NEW] - stamps[0]), "early": statistics.median(gaps[:NEW - 1]),
            "late": statistics.median(gaps[NEW - 1:])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("llama", "gpt2"),
                    default="llama" if (ROOT / "specs/zoo/llama.yaml").exists() else "gpt2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=tuple(CLOCK), default=None, help="default: cpu, wall on CUDA")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    global now
    clock = args.clock or ("wall" if args.device.startswith("cuda") else "cpu")
    now = CLOCK[clock]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        compiled, ref = llama_pair() if args.model == "llama" else gpt2_pair()
    except ImportError:
        compiled, ref = specc_alone(args.model), None
    compiled.module.to(args.device)
    sides = {"specc": specc_side(compiled)}
    if ref is not None:
        sides = {"transformers": hf_side(ref.to(args.device)), **sides}
    prompt = torch.randint(1, SIZES["vocab"], (32,), generator=torch.Generator().manual_seed(1)).tolist()
    tokens = {name: run(prompt, 2 * NEW)[0] for name, run in sides.items()}  # warm-up, and the check
    same = tokens["specc"] == tokens["transformers"] if ref is not None else "(transformers not installed)"
    print(f"model: {args.model}, {SIZES}, {args.device}, {args.threads} thread(s), {clock} clock, {2 * NEW} new tokens "
          f"a round; same greedy tokens as transformers: {same}")
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):  # interleaved, alternating who goes first
            rows[name].append(measure(sides[name](prompt, 2 * NEW)[1]))
    med = {name: {k: statistics.median(row[k] for row in rs) for k in rs[0]} for name, rs in rows.items()}
    for name, m in med.items():
        print(f"  {name:<13} {m['rate']:8.1f} new tokens/s   {m['early'] * 1e3:7.3f} ms/token (32-288)   "
              f"{m['late'] * 1e3:7.3f} ms/token (288-544)   growth {m['late'] / m['early']:.3f}")
    if ref is None:
        return
    speed = med["specc"]["rate"] / med["transformers"]["rate"]
    print(f"== (a) tokens/s specc/transformers = {speed:.2f}x  {'OK' if speed >= 1.5 else 'UNDER the 1.5x goal'}")
    grow = {name: m["late"] / m["early"] for name, m in med.items()}
    ok = grow["specc"] <= grow["transformers"]
    print(f"== (b) growth 288-544 vs 32-288: specc {grow['specc']:.3f}, transformers {grow['transformers']:.3f}  "
          f"{'OK' if ok else 'OVER transformers'}")


if __name__ == "__main__":
    main()
