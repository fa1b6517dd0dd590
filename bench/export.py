"""Export benchmarks for the article's transformer encoder:
- onnxruntime / eager latency at batch 1 (goal <= 0.4) and batch 32;
- specc's ONNX against a plain hand-written `torch.onnx.export` of the same model (goal: not slower);
- export time per format.
    python bench/export.py
"""
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import handwritten as hw  # noqa: E402
import specc  # noqa: E402
from common import interleaved  # noqa: E402
from exporters import to_onnx  # noqa: E402


def main() -> None:
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        spec = ROOT / "specs/transformer_encoder.yaml"
        import os
        os.chdir(tmp)
        times = {}
        for fmt in ("onnx", "torchscript", "pt2"):
            t0 = time.perf_counter()
            rep = specc.export(spec, (fmt,), latency=False, out=lambda s: None)
            times[fmt] = time.perf_counter() - t0
            assert rep.passed
        model = specc.build(spec).eval()
        ours = to_onnx.load(Path(tmp) / "runs/seed-transformer-encoder/export/model.onnx")
        ref = hw.TransformerEncoder().eval()
        plain_path = Path(tmp) / "plain.onnx"
        from exporters.capture import capture
        with capture():
            torch.onnx.export(ref, (torch.randn(2, 16, 64),), str(plain_path), dynamo=True, input_names=["x"],
                              output_names=["y"], dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
                              external_data=False)
        plain = to_onnx.load(plain_path)
        print("== export time per format (transformer encoder, includes reload and parity at 3 sizes)")
        for k, v in times.items():
            print(f"  {k:<12} {v:6.2f} s")
        for batch in (1, 32):
            x = torch.randn(batch, 16, 64)
            rounds = 40 if batch == 1 else 20
            # blocks of 25 calls, interleaved: torch's OpenMP threads keep spinning for a moment after
            # an eager call and would slow an onnxruntime call made right after it
            with torch.no_grad():
                vs_eager = interleaved({"eager": lambda: model(x), "specc onnx": lambda: ours([x])}, rounds=rounds,
                                       inner=25)
            vs_plain = interleaved({"plain torch.onnx.export": lambda: plain([x]), "specc onnx": lambda: ours([x])},
                                   rounds=rounds, inner=25)
            print(f"== latency at batch {batch} (median ms)")
            print(f"  eager {vs_eager['eager'] * 1e3:.3f}   specc onnx {vs_eager['specc onnx'] * 1e3:.3f}   "
                  f"ratio onnxruntime/eager = {vs_eager['specc onnx'] / vs_eager['eager']:.3f}"
                  + ("  (goal <= 0.4)" if batch == 1 else ""))
            print(f"  plain {vs_plain['plain torch.onnx.export'] * 1e3:.3f}   specc onnx {vs_plain['specc onnx'] * 1e3:.3f}"
                  f"   ratio specc/plain = {vs_plain['specc onnx'] / vs_plain['plain torch.onnx.export']:.3f}  (goal <= 1)")


if __name__ == "__main__":
    main()
