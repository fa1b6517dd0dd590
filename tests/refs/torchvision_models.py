"""Test-only reference models taken from torchvision's own model definitions.

torchvision (a test-only dependency, installed with
``pip install --no-deps torchvision==0.28.0``) ships compiled ops built against CUDA torch, so a
plain ``import torchvision`` fails next to our CPU torch (``operator torchvision::nms does not
exist``). The model definitions we need are pure Python, so we import them without running the
package ``__init__`` files that load or register those compiled ops:

* ``torchvision``        -- its ``__init__`` loads ``_C.so`` and registers meta kernels for
  ``torchvision::nms`` & co. (this is what raises);
* ``torchvision.models`` -- its ``__init__`` imports every model family, including detection,
  which needs the compiled ops;
* ``torchvision.ops``    -- its ``__init__`` imports ``torchvision.extension`` (which tries to
  ``torch.ops.load_library`` the CUDA-linked ``_C.so``) and all box/RoI ops; only the pure-Python
  ``torchvision.ops.misc`` is needed.

Each of these is registered in ``sys.modules`` as a bare package module whose ``__path__`` is the
installed directory, so submodules (``torchvision.models.resnet`` ...) are found and executed
from the real installed files. Nothing else is stubbed, and torch itself is never touched.
If a genuine ``torchvision`` is already imported, it is used as is.

torchvision lives outside ``sys.path``, in ``<venv>/refs`` (``pip install --no-deps --target
.venv/refs torchvision==0.28.0``, as the Makefile does), and the ``torchvision*`` entries leave
``sys.modules`` once the model files are loaded: transformers, the other test-only reference,
imports torchvision's image code whenever it can find the package, and that fails beside our CPU
torch. So neither reference can see the other, in any order, in one process.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types

import torch

# Packages whose __init__ would load or register torchvision's compiled ops.
_BARE_PACKAGES = ("torchvision", "torchvision.models", "torchvision.ops")
_MODEL_MODULES = ("resnet", "mobilenetv2", "vision_transformer")
_loaded: dict[str, types.ModuleType] = {}


REFS = os.path.join(sys.prefix, "refs")  # where the Makefile installs torchvision, off sys.path


def _package_dir() -> str | None:
    mod = sys.modules.get("torchvision")
    if mod is not None:
        return list(getattr(mod, "__path__", []) or [None])[0]
    if os.path.isdir(os.path.join(REFS, "torchvision")):
        return os.path.join(REFS, "torchvision")
    try:
        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _bare_package(name: str, path: str) -> types.ModuleType:
    """An empty package module for `name` that finds its submodules in `path`."""
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [path]
    mod = importlib.util.module_from_spec(spec)
    mod.__path__ = [path]
    mod.__doc__ = f"bare package for {name} (tests/refs/torchvision_models.py); __init__ not run"
    mod._specc_bare = True
    sys.modules[name] = mod
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, mod)
    return mod


def _load() -> dict[str, types.ModuleType]:
    if _loaded:
        return _loaded
    root = _package_dir()
    if root is None or not os.path.isdir(root):
        raise ImportError("torchvision is not installed")
    genuine = "torchvision" in sys.modules and not getattr(sys.modules["torchvision"], "_specc_bare", False)
    for name in _BARE_PACKAGES:
        if name not in sys.modules:
            _bare_package(name, os.path.join(root, *name.split(".")[1:]))
    try:
        mods = {m: importlib.import_module(f"torchvision.models.{m}") for m in _MODEL_MODULES}
    finally:
        if not genuine:  # the loaded modules keep their globals; the package names go away
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
    _loaded.update(mods)
    return _loaded


def available() -> bool:
    """True when torchvision's model definitions can be imported (False, never raising, if not)."""
    try:
        _load()
        return True
    except Exception:
        return False


def version() -> str | None:
    """The installed torchvision's version, read from its metadata (its version.py loads _C)."""
    from importlib.metadata import distributions
    for dist in distributions(name="torchvision", path=[REFS, *sys.path]):
        return dist.version
    return None


def resnet(layers: list[int], bottleneck: bool, groups: int = 1, width_per_group: int = 64,
           num_classes: int = 1000) -> torch.nn.Module:
    """torchvision.models.resnet.ResNet; e.g. resnet18 = ([2, 2, 2, 2], False),
    resnet50 = ([3, 4, 6, 3], True), resnext50_32x4d = (..., True, 32, 4),
    wide_resnet50_2 = (..., True, 1, 128)."""
    m = _load()["resnet"]
    block = m.Bottleneck if bottleneck else m.BasicBlock
    return m.ResNet(block, list(layers), num_classes=num_classes, groups=groups,
                    width_per_group=width_per_group)


def mobilenet_v2(width_mult: float = 1.0, num_classes: int = 1000, dropout: float = 0.2) -> torch.nn.Module:
    """torchvision.models.mobilenetv2.MobileNetV2."""
    m = _load()["mobilenetv2"]
    return m.MobileNetV2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)


def vit(image_size: int, patch_size: int, num_layers: int, num_heads: int, hidden_dim: int,
        mlp_dim: int, num_classes: int = 1000) -> torch.nn.Module:
    """torchvision.models.vision_transformer.VisionTransformer (vit_b_16: 224, 16, 12, 12, 768, 3072)."""
    m = _load()["vision_transformer"]
    return m.VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                               num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim,
                               num_classes=num_classes)
