"""spec -> nn.Module. `build`, `load` and `SpecError` are the public verbs.

Only `errors` is imported eagerly: the CLI formats errors without importing torch.
"""
from .errors import Diagnostic, SpecError

__all__ = ["Diagnostic", "SpecError", "build", "load", "compile_spec", "Compiled"]


def __getattr__(name: str):
    if name in ("build", "load", "compile_spec", "Compiled", "read_tree"):
        from . import pipeline as _build
        return getattr(_build, name)
    raise AttributeError(name)
