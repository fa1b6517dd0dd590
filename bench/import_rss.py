"""Peak memory of `specc build` on a large checkpoint, as a multiple of its file size (goal <= 1.3x).

wide_resnet101_2 (126.9M parameters, 508 MB of float32) from specs/zoo/resnet.yaml, built three ways,
each in a fresh process:
  - without --weights: the spec's own initial weights, written to the run's model.safetensors;
  - with --weights FILE: that model.safetensors imported into a second run;
  - with --weights DIR: the same file as a Hugging Face-style folder (config.json + 2 shards + index).
Each child measures its peak RSS above its RSS just before the build (after imports), by resetting the
kernel's high-water mark (/proc/self/clear_refs) and reading VmHWM afterwards.

    python bench/import_rss.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs/zoo/resnet.yaml"
WIDE_RESNET101_2 = {"layers": [3, 4, 23, 3], "bottleneck": True, "width_per_group": 128}
GOAL = 1.3

CHILD = r"""
import json, sys
sys.path.insert(0, {root!r})
import torch, specc, specc.api
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS:")
specc.api.build_run({spec!r}, {params!r}, out={out!r}, force=True, weights={weights!r})
print(json.dumps({{"before": before, "peak": status("VmHWM:")}}))
"""


def measure(out: Path, weights: str | None, spec: Path = SPEC, params: dict | None = WIDE_RESNET101_2) -> dict:
    code = CHILD.format(root=str(ROOT), spec=str(spec), params=params, out=str(out), weights=weights)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=out.parent)
    if r.returncode != 0:
        sys.exit(f"child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def hf_folder(run: Path, folder: Path) -> None:
    """The run's weights as a two-shard save_pretrained folder, with the resnet spec's config fields."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
        weight_map = {}
        for i, part in enumerate(halves, 1):
            name = f"model-{i:05d}-of-00002.safetensors"
            save_file({k: f.get_tensor(k) for k in part}, str(folder / name))
            weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"model_type": "resnet", "layers": WIDE_RESNET101_2["layers"],
                                                    "bottleneck": True, "width_per_group": 128}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="specc-rss-"))
    work.mkdir(parents=True, exist_ok=True)
    base = work / "base"
    rows = [("build, no --weights", measure(base, None))]
    size = (base / "model.safetensors").stat().st_size
    rows.append(("build --weights FILE", measure(work / "imported", str(base / "model.safetensors"))))
    hf_folder(base, work / "hf")
    spec_text = SPEC.read_text() + "\nhf:\n  model_type: resnet\n  config: {layers: layers, bottleneck: bottleneck, " \
                                   "width_per_group: width_per_group}\n"
    (work / "resnet_hf.yaml").write_text(spec_text)
    rows.append(("build --weights HF_DIR", measure(work / "from_hf", str(work / "hf"), work / "resnet_hf.yaml", None)))
    print(f"== peak RSS above the pre-build RSS, wide_resnet101_2 ({size / 1e6:.0f} MB file)")
    worst = 0.0
    for name, m in rows:
        ratio = (m["peak"] - m["before"]) / size
        worst = max(worst, ratio)
        print(f"  {name:<24} {(m['peak'] - m['before']) / 1e6:8.0f} MB  ratio {ratio:.2f}x the file")
    print(f"  worst ratio {worst:.2f}x  " + ("OK" if worst <= GOAL else f"OVER the {GOAL}x goal"))
    if args.keep is None:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
