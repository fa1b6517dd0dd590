"""A mutation fuzzer for the spec front end, shared by tests/reliability and bench/reliability.py.

The corpus is every shipped spec, every golden error case and the training specs; each case
applies 1-4 random edits (line deletions, duplications, swaps, token insertions, character noise,
re-indentation, YAML-level value swaps) and is built with the real pipeline. The promise: only
`SpecError` escapes, no case takes more than 5 s, and memory stays within the size guard.
"""
from __future__ import annotations

import random
import resource
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ["[", "]", "{", "}", ":", ",", "- ", "$", "${", "}", "$dim", "${dim * 0}", "${2**70}", "!!python/object:os.system",
          "&a", "*a", "<<: *a", "null", "~", "-1", "0", "1e400", "99999999999999999999", "yes", "on", "'", '"', "\t",
          "é", "а", "\u200b", "Linear", "GRU", "LSTM", "MultiheadAttention", "matmul", "reshape", "block", "repeat",
          "from", "x.7", "layers", "batch", "time", "#", "|", ">", "?", "%", "repeat: 100000", "in_features: 3",
          "out_features: -5", "kernel_size: 99", "dim: 9", "${sqrt(-1)}", "${1/0}", "__import__", "eval(", ".0",
          # v1.1
          "when: false", "when: ${i == 0}", "repeat: 0", "names: l_{i}", "seq:", "layers:", "tie: {weight: x.weight}",
          "${i}", "${layers[9]}", "${[1, 2][0]}", "${1 if i else 2}", "${not 0}", "op: Parameter", "op: split",
          "op: arange", "op: expand", "init: {normal: -1}", "shape: [0]", "is_causal: true", "dims:",
          "{divisible_by: 0}", "from: {query: x}", "outputs: {y: x}", "split_size: 0", "op: einsum",
          # v1.2
          ".*", "m.*", "pass: x", "pass: [x, y]", "numbered: true", "${shape(x)[1]}", "${shape(x)[0]}", "shape(",
          "functions:", '"f(a)": "${a * 2}"', "${f(1)}", "${f(f(1))}", 'from: "${[\'x\'][i]}"', "${scales[scale]}"]
VALUES = ["0", "-1", "1", "3", "1000000", "1e-5", "'x'", "null", "[]", "{}", "[1, 2]", "true", "$nope", "batch",
          "${dim*2}", "9999999999999999999999"]


@dataclass
class Stats:
    cases: int = 0
    built: int = 0
    spec_errors: int = 0
    escapes: list[str] = field(default_factory=list)
    slowest: float = 0.0
    slowest_case: str = ""
    rss_growth_mb: float = 0.0


def corpus() -> list[str]:
    files = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "tests/cases/bad").glob("*.yaml")) \
        + sorted((ROOT / "tests/cases/train").glob("*.yaml")) + sorted((ROOT / "tests/cases/good").glob("*.yaml"))
    return [f.read_text() for f in files] + [_small(f) for f in sorted((ROOT / "specs/zoo").glob("*.yaml"))]


_LM_SMALL = ("vocab_size: 97", "hidden_size: 32", "intermediate_size: 64", "num_hidden_layers: 2",
             "num_attention_heads: 4", "num_key_value_heads: 2", "max_position_embeddings: 32")
_ZOO_SMALL = {"resnet": ("layers: [1, 1, 1, 1]",), "mobilenet_v2": ("width_mult: 0.35",), "gpt": ("n_layer: 2",),
              "vit": ("num_layers: 2",), "yolov8": ("nc: 3",), "gpt2": ("vocab_size: 97", "n_positions: 32", "n_embd: 32", "n_layer: 2"),
              "llama": _LM_SMALL, "qwen2": _LM_SMALL,
              "bert": ("vocab_size: 97", "hidden_size: 32", "num_hidden_layers: 2", "num_attention_heads: 2",
                       "intermediate_size: 64", "max_position_embeddings: 32")}


def _small(path: Path) -> str:
    """A zoo spec at a small setting (mutations of a full-size network would mostly test the size guard)."""
    text = path.read_text()
    text = text.replace("vocab_size: 50304", "vocab_size: 97").replace("n_embd: 768", "n_embd: 32") \
        .replace("block_size: 1024", "block_size: 32").replace("image_size: 224", "image_size: 32") \
        .replace("hidden_dim: 768", "hidden_dim: 32").replace("mlp_dim: 3072", "mlp_dim: 64") \
        .replace("patch_size: 16", "patch_size: 8").replace("num_heads: 12", "num_heads: 2") \
        .replace("n_head: 12", "n_head: 2").replace("n: [0.33, 0.25, 1024]", "n: [0.33, 0.0625, 64]")
    lines = text.splitlines()
    for setting in _ZOO_SMALL[path.stem]:
        key, _, value = setting.partition(": ")
        lines = [f"  {key}: {value}" if line.startswith(f"  {key}:") else line for line in lines]
    return "\n".join(lines) + "\n"


def mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines() or [""]
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        kind = rng.randrange(8)
        if kind == 0 and len(lines) > 1:
            del lines[i]
        elif kind == 1:
            lines.insert(i, lines[i])
        elif kind == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == 3:
            pos = rng.randint(0, len(lines[i]))
            lines[i] = lines[i][:pos] + rng.choice(TOKENS) + lines[i][pos:]
        elif kind == 4:
            pos = rng.randint(0, len(lines[i]))
            noise = "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0x80, 0x2FF)])) for _ in range(rng.randint(1, 3)))
            lines[i] = lines[i][:pos] + noise + lines[i][pos + rng.randint(0, 4):]
        elif kind == 5:
            lines[i] = " " * rng.randint(0, 4) + lines[i].lstrip() if rng.random() < 0.5 else lines[i]
        elif kind == 6 and ":" in lines[i]:  # replace a value
            key = lines[i].rsplit(":", 1)[0]
            lines[i] = f"{key}: {rng.choice(VALUES)}"
        else:  # change a number
            digits = [k for k, ch in enumerate(lines[i]) if ch.isdigit()]
            if digits:
                k = rng.choice(digits)
                lines[i] = lines[i][:k] + rng.choice(["0", "7", "99", "-", "10000000"]) + lines[i][k + 1:]
    return "\n".join(lines) + "\n"


def run(n: int, seed: int = 0, time_limit: float = 5.0) -> Stats:
    import specc  # imported here so that importing this module stays cheap
    rng = random.Random(seed)
    texts = corpus()
    stats = Stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(n):
        case = mutate(rng.choice(texts), rng)
        start = time.perf_counter()
        try:
            specc.build(case)
            stats.built += 1
        except specc.SpecError as e:
            assert e.diagnostics
            for d in e.diagnostics:
                d.format()
            stats.spec_errors += 1
        except Exception:  # the promise is broken: keep the case and the traceback
            stats.escapes.append(case + "\n---\n" + traceback.format_exc())
        took = time.perf_counter() - start
        stats.cases += 1
        if took > stats.slowest:
            stats.slowest, stats.slowest_case = took, case
    stats.rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return stats
