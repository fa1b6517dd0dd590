"""specc: declarative model specs compiled to torch.fx, trained by one loop, exported with parity.

    import specc
    model = specc.build("specs/transformer_encoder.yaml", {"depth": 2})

Everything but `SpecError` is imported on first use, so `import specc` (and the CLI) stays
fast and does not import torch.
"""
from compiler.errors import Diagnostic, SpecError

__version__ = "0.1.0"
__all__ = ["SpecError", "Diagnostic", "build", "load", "train", "export", "diff", "predict", "generate", "sweep", "stream",
           "TrainingDiverged", "__version__"]

_API = {"build", "load", "build_run", "compiled", "train", "export", "diff", "predict", "generate", "sweep", "stream", "api"}
_ERRORS = {"TrainingDiverged": "specc.training.errors", "Interrupted": "specc.training.errors"}


def __getattr__(name: str):
    import importlib
    if name in _API:
        api = importlib.import_module("specc.api")
        return api if name == "api" else getattr(api, name)
    if name in _ERRORS:
        return getattr(importlib.import_module(_ERRORS[name]), name)
    raise AttributeError(f"module 'specc' has no attribute {name!r}")
