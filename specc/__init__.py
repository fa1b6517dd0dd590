"""specc: declarative model specs compiled to torch.fx, trained by one loop, exported with parity.

    import specc
    model = specc.build("specs/transformer_encoder.yaml", {"depth": 2})

Everything but `SpecError` is imported on first use, so `import specc` (and the CLI) stays
fast and does not import torch.
"""
from compiler.errors import Diagnostic, SpecError

__version__ = "0.1.0"
__all__ = ["SpecError", "Diagnostic", "build", "load", "train", "export", "diff", "__version__"]

_API = {"build", "load", "build_run", "train", "export", "diff", "api"}


def __getattr__(name: str):
    if name in _API:
        import importlib
        api = importlib.import_module("specc.api")
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'specc' has no attribute {name!r}")
