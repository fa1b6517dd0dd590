"""Test-only reference: Ultralytics' own `DetectionModel` for YOLOv8.

`ultralytics==8.4.190` is installed with `--no-deps`. Its model code never imports torchvision, but
`ultralytics.utils` reads torchvision's version through `importlib.metadata` at import time. We give
it a `torchvision-0.28.0.dist-info/METADATA` stub in a temporary folder that is on `sys.path` only
while ultralytics is imported: metadata alone, no package, so `importlib.util.find_spec("torchvision")`
(which transformers asks) still finds nothing.

Ultralytics looks for a model YAML in the working folder first, so the reference is built from a
temporary folder that holds no `yolov8.yaml`, and the working folder is restored afterwards.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile

import torch

_STUB_VERSION = "0.28.0"


@contextlib.contextmanager
def _metadata_stub():
    """torchvision's version as package metadata only, on sys.path for the duration."""
    with tempfile.TemporaryDirectory(prefix="specc-ultra-") as tmp:
        info = os.path.join(tmp, f"torchvision-{_STUB_VERSION}.dist-info")
        os.makedirs(info)
        with open(os.path.join(info, "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\nName: torchvision\nVersion: {_STUB_VERSION}\n")
        sys.path.insert(0, tmp)
        importlib.invalidate_caches()
        try:
            yield tmp
        finally:
            sys.path.remove(tmp)
            importlib.invalidate_caches()


@contextlib.contextmanager
def _process_left_as_it_was():
    """Importing ultralytics patches the process: `PIL.Image.open` (a bad image then raises
    ModuleNotFoundError for pi_heif), `torch.save`, numpy's and torch's print options, environment
    variables. The model code needs none of it: undone once the import is over, so that the tests
    that later run in the same worker see the libraries as a user's process does."""
    import numpy as np
    from PIL import Image
    saved = (Image.open, torch.save, np.get_printoptions(), dict(os.environ))
    torch_print = torch._tensor_str.PRINT_OPTS.__dict__.copy()
    try:
        yield
    finally:
        Image.open, torch.save = saved[0], saved[1]
        np.set_printoptions(**saved[2])
        torch._tensor_str.PRINT_OPTS.__dict__.update(torch_print)
        os.environ.clear()
        os.environ.update(saved[3])


def _tasks():
    if "ultralytics.nn.tasks" in sys.modules:
        return sys.modules["ultralytics.nn.tasks"]
    with _process_left_as_it_was(), _metadata_stub():
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_VERBOSE", "False")
        return importlib.import_module("ultralytics.nn.tasks")


def detection_model(scale: str = "n", nc: int = 80) -> torch.nn.Module:
    """Ultralytics' YOLOv8 `DetectionModel` at `scale` (n, s, m, l, x) with `nc` classes, in eval mode."""
    tasks = _tasks()
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="specc-ultra-cwd-") as tmp:
        os.chdir(tmp)  # no yolov8.yaml here: Ultralytics reads its packaged one
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = tasks.DetectionModel(f"yolov8{scale}.yaml", nc=nc, verbose=False)
        finally:
            os.chdir(here)
    return model.eval()


def counts(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, trainable parameters), as Ultralytics' model summary counts them."""
    params = sum(p.numel() for p in model.parameters())
    return params, sum(p.numel() for p in model.parameters() if p.requires_grad)
