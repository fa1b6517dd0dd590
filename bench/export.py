"""Export benchmarks for the article's transformer encoder (specs/transformer_encoder.yaml):
- `specc export --onnx` time (export, checks, save, reload, parity at 3 sizes): the first export in a
  process, which also pays torch's one-time imports, and the next ones (goal <= 3 s), with where the
  time goes;
- export time of torchscript and pt2;
- int8 (dynamic quantization) against fp32: file size and onnxruntime latency at batch 1 and 32;
- onnxruntime / eager latency at batch 1 (goal <= 0.4) and batch 32;
- specc's ONNX against a plain hand-written `torch.onnx.export` of the same model (goal: not slower);
- `specc export --onnx` of YOLOv8m (specs/zoo/yolov8.yaml, scale m) with its full parity sweep (the spec's
  dims: 2 batches x 2 heights x 2 widths), against the same export's capture alone, with where the time goes
  (goal <= 30 s on the 2-core CI machine), and torch.onnx.export alone with static against dynamic shapes.
    python bench/export.py            # everything
    python bench/export.py yolov8     # the YOLOv8m export only
"""
import contextlib
import functools
import os
import statistics
import subprocess
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

SPEC = ROOT / "specs/transformer_encoder.yaml"
RUN = Path("runs/seed-transformer-encoder")
YOLO = ROOT / "specs/zoo/yolov8.yaml"


def _export(fmt: str, run: Path = RUN, **options) -> tuple[float, object]:
    t0 = time.perf_counter()
    rep = specc.export(run, (fmt,), latency=False, out=lambda s: None, **options)
    assert rep.passed, (rep.errors, [c for c in rep.checks if not c.passed])
    return time.perf_counter() - t0, rep


@contextlib.contextmanager
def _timed(phases: dict[str, float], owner: object, name: str, label: str):
    """Time every call of `owner.name` into `phases[label]` within the block."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases[label] = phases.get(label, 0.0) + time.perf_counter() - t0

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _where_the_time_goes(run: Path = RUN, sweep: str = "3 sizes") -> tuple[float, dict[str, float]]:
    from torch.onnx._internal.exporter import _core, _fx_passes, _onnx_program

    from exporters import parity
    from specc import exporting
    phases: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        for owner, name, label in [
                (exporting, "compile_run", "compile the run (spec + weights)"),
                (torch.export, "export", "torch.export (capture)"),
                (torch.export.ExportedProgram, "run_decompositions", "decompositions"),
                (_fx_passes, "insert_type_promotion_nodes", "type promotion pass (torch.onnx)"),
                (_core, "_exported_program_to_onnx_program", "translation to ONNX (torch.onnx)"),
                (_onnx_program.ONNXProgram, "optimize", "onnxscript optimizer"),
                (to_onnx, "onnx_shapes", "declared shapes + strict shape inference"),
                (to_onnx.onnx.checker, "check_model", "onnx.checker"),
                (to_onnx, "_save", "save"),
                (to_onnx, "session", "onnxruntime session (reload)"),
                (parity, "run_checks", f"parity sweep ({sweep})"),
                (to_onnx, "record_verdict", "verdict into the file")]:
            stack.enter_context(_timed(phases, owner, name, label))
        total, _ = _export("onnx", run)
    return total, phases


def _yolov8m() -> None:
    """YOLOv8m's ONNX export with its parity sweep, twice (the first also warms torch.export up), with
    the phases of the second."""
    run = specc.api.build_run(YOLO, {"scale": "m"}, out=Path("yolov8m")).run_dir
    first, _ = _where_the_time_goes(run, "8 sizes")
    total, phases = _where_the_time_goes(run, "8 sizes")
    print("== specc export --onnx, YOLOv8m (25.9 M parameters), parity at 8 sizes (batch 1, 2 x height 64, 96 x "
          "width 64, 128)")
    print(f"  first export in this process  {first:6.2f} s")
    print(f"  next export                   {total:6.2f} s  (goal <= 30 s)")
    for label, seconds in phases.items():
        print(f"    {label:<42} {seconds:6.3f} s  ({seconds / total:5.1%})")
    print(f"    {'the rest (torch.onnx set-up, reports, ...)':<42} {total - sum(phases.values()):6.3f} s")
    static, dynamic = _symbolic_cost(run)
    print(f"  torch.onnx.export alone: static shapes {static:6.2f} s, the spec's dynamic batch, height and width "
          f"{dynamic:6.2f} s  (ratio dynamic/static = {dynamic / static:.2f}: the symbolic shapes' cost)")


def _symbolic_cost(run: Path) -> tuple[float, float]:
    """torch.onnx.export (dynamo) of the run's module at the export's example, with static and with the
    spec's dynamic shapes, interleaved (median of 2 each): what the symbolic dims cost. torch.export's
    capture and the exporter's decompositions trace every op with fake tensors whose sizes are sympy
    expressions of the dims; that tracing, not specc's checks, is most of the export's time."""
    from exporters.capture import capture
    from exporters.inputs import torch_dynamic_shapes
    from exporters.torchlib import cached_registry
    from specc import exporting
    compiled = exporting.compile_run(run)
    job = exporting._job(compiled, compiled.spec.export, Path("unused"))  # the export's own example
    dynamic = torch_dynamic_shapes(job.inputs, job.dims)

    def one(shapes: object) -> float:
        t0 = time.perf_counter()
        with capture(), cached_registry():  # as the export does
            torch.onnx.export(job.module, tuple(job.example), None, dynamo=True, dynamic_shapes=shapes,
                              opset_version=job.config.opset, verbose=False)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"static": [], "dynamic": []}
    for _ in range(2):
        times["static"].append(one(None))
        times["dynamic"].append(one(dynamic))
    return statistics.median(times["static"]), statistics.median(times["dynamic"])


def _quantized() -> None:
    _, rep = _export("onnx", quantize="int8")
    check = next(c for c in rep.checks if c.kind == "metric")
    m, size = check.metric, check.size_mb
    kept = next(n for a in rep.artifacts if a["format"] == "onnx-int8" for n in a["notes"] if n.startswith("int8 kept"))
    print(f"== int8 against fp32 ({kept})")
    print(f"  size      fp32 {size['fp32']:.3f} MB   int8 {size['variant']:.3f} MB   ratio int8/fp32 = {size['ratio']:.3f}")
    fp32 = to_onnx.load(RUN / "export/model.onnx")
    int8 = to_onnx.load(RUN / "export/model.int8.onnx")
    for batch in (1, 32):
        x = torch.randn(batch, 16, 64)
        t = interleaved({"fp32": lambda: fp32([x]), "int8": lambda: int8([x])}, rounds=30, inner=10)
        print(f"  latency batch {batch:<2}  fp32 {t['fp32'] * 1e3:.3f} ms   int8 {t['int8'] * 1e3:.3f} ms   "
              f"int8 at ×{t['fp32'] / t['int8']:.2f} the speed of fp32")
    print(f"  {m['name']} on the {m['on']}: fp32 {m['reference']:.4f}, int8 {m['quantized']:.4f} "
          f"(drop {m['drop']:.2f} {m['unit']}, allowed {m['max_drop']:g}; the run trained 1 epoch)")


def _latency() -> None:
    model = specc.build(SPEC).eval()
    ours = to_onnx.load(RUN / "export/model.onnx")
    ref = hw.TransformerEncoder().eval()
    plain_path = Path("plain.onnx")
    from exporters.capture import capture
    with capture():
        torch.onnx.export(ref, (torch.randn(2, 16, 64),), str(plain_path), dynamo=True, input_names=["x"],
                          output_names=["y"], dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
                          external_data=False)
    plain = to_onnx.load(plain_path)
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


def main() -> None:
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        if sys.argv[1:] == ["yolov8"]:
            _yolov8m()
            return
        # a run with weights worth quantizing, trained in another process so this one starts cold
        subprocess.run([sys.executable, "-m", "specc", "train", str(SPEC), "--epochs", "1", "-q"], check=True,
                       capture_output=True)
        cold, cold_phases = _where_the_time_goes()
        warm = [_export("onnx")[0] for _ in range(3)]
        total, phases = _where_the_time_goes()
        print("== specc export --onnx, transformer encoder (export, checks, save, reload, parity at 3 sizes)")
        print(f"  first export in this process  {cold:6.2f} s  (also pays torch's one-time imports and set-up)")
        print(f"  next exports (median of 3)    {statistics.median(warm):6.2f} s  (goal <= 3 s)")
        print(f"  where the time goes            {'first':>8} {'next':>8}")
        for label in phases:
            print(f"    {label:<42} {cold_phases.get(label, 0.0):6.3f} s {phases[label]:6.3f} s")
        rest = (cold - sum(cold_phases.values()), total - sum(phases.values()))
        print(f"    {'the rest (imports, torch.onnx, reload, ...)':<42} {rest[0]:6.3f} s {rest[1]:6.3f} s")
        print("== export time of the other formats (next exports)")
        for fmt in ("torchscript", "pt2"):
            _export(fmt)
            print(f"  {fmt:<12} {_export(fmt)[0]:6.2f} s")
        _quantized()
        _latency()
        _yolov8m()


if __name__ == "__main__":
    main()
