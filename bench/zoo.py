"""The zoo specs against their references, each ratio against a baseline measured in the same run,
interleaved, medians:

  (a) build specs/zoo/resnet.yaml as resnet101 with specc.build vs instantiating torchvision's
      resnet101 (both initialise 44.5M weights; specc also parses, checks, infers shapes, lowers) - goal <= 2
  (b) eval forward of the zoo resnet50 vs torchvision's resnet50, batch 8, 64x64, same weights,
      torch.no_grad                                                                            - goal <= 1.03
  (c) fwd+bwd of specs/zoo/gpt.yaml vs the nanoGPT-layout GPT, n_layer 4, n_head 4, n_embd 128, vocab 512,
      block 128, batch 8, same weights                                                         - goal <= 1.03

    python bench/zoo.py [--threads N]      (default 1 thread: steadier on a shared machine)
"""
import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import specc  # noqa: E402
from common import interleaved, report  # noqa: E402
from refs import nanogpt  # noqa: E402
from refs import torchvision_models as tv  # noqa: E402

RESNET, GPT = ROOT / "specs/zoo/resnet.yaml", ROOT / "specs/zoo/gpt.yaml"
GPT_CONFIG = dict(vocab_size=512, block_size=128, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True)


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def build_resnet101() -> float:
    params = {"layers": [3, 4, 23, 3], "bottleneck": True}
    a, b = tv.resnet([3, 4, 23, 3], bottleneck=True), specc.build(RESNET, params)
    assert n_params(a) == n_params(b) == 44_549_160
    medians = interleaved({"torchvision": lambda: tv.resnet([3, 4, 23, 3], bottleneck=True),
                           "specc.build": lambda: specc.build(RESNET, params)}, rounds=9, warmup=1)
    return report("build resnet101 (44.5M parameters)", "torchvision", medians, limit=2.0)


def forward_resnet50() -> float:
    torch.manual_seed(0)
    ref = tv.resnet([3, 4, 6, 3], bottleneck=True).eval()
    model = specc.build(RESNET, {"layers": [3, 4, 6, 3], "bottleneck": True}).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)

    def fwd(m):
        def run():
            with torch.no_grad():
                m(x)
        return run

    medians = interleaved({"torchvision": fwd(ref), "specc": fwd(model)}, rounds=40, inner=3)
    return report("resnet50 eval forward, batch 8, 64x64, no_grad", "torchvision", medians, limit=1.03)


def train_step_gpt() -> float:
    torch.manual_seed(0)
    ref = nanogpt.GPT(nanogpt.GPTConfig(**GPT_CONFIG)).train()
    model = specc.build(GPT, GPT_CONFIG).train()
    model.load_state_dict(ref.state_dict(), strict=True)
    idx = torch.randint(0, GPT_CONFIG["vocab_size"], (8, GPT_CONFIG["block_size"]), generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, GPT_CONFIG["vocab_size"], (8 * GPT_CONFIG["block_size"],), generator=torch.Generator().manual_seed(1))
    loss = torch.nn.CrossEntropyLoss()
    with torch.no_grad():
        torch.testing.assert_close(model(idx), ref(idx), rtol=1e-5, atol=1e-5)

    def step(m):
        def run():
            m.zero_grad(set_to_none=True)
            loss(m(idx).view(-1, GPT_CONFIG["vocab_size"]), target).backward()
        return run

    medians = interleaved({"nanoGPT": step(ref), "specc": step(model)}, rounds=40, inner=3)
    return report("GPT fwd+bwd (4 layers, 4 heads, 128 wide, vocab 512, block 128), batch 8", "nanoGPT", medians,
                  limit=1.03)


def main() -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    threads = parser.parse_args().threads
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, torchvision {tv.version()}, {threads} thread(s)")
    ratios = {"build": build_resnet101(), "forward": forward_resnet50(), "gpt": train_step_gpt()}
    print()
    print(f"resnet101 build: specc / torchvision = {ratios['build']:.2f} (goal <= 2)")
    print(f"resnet50 eval forward: specc / torchvision = {ratios['forward']:.3f} (goal <= 1.03)")
    print(f"gpt fwd+bwd: specc / nanoGPT = {ratios['gpt']:.3f} (goal <= 1.03)")
    return ratios


if __name__ == "__main__":
    main()
