"""spec -> nn.Module. `load`, `compile_spec` and `SpecError` are the public verbs.

Only `errors` is imported eagerly: the CLI formats errors without importing torch, and `load`
(read, override, check) never imports it.
"""
from .errors import Diagnostic, SpecError

__all__ = ["Diagnostic", "SpecError", "load", "compile_spec", "Compiled", "read_tree"]


def __getattr__(name: str):
    if name in ("load", "compile_spec", "Compiled", "read_tree"):
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(name)
