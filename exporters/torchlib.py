"""The dynamo ONNX exporter's op registry, built once per process and cheaply.

torch.onnx builds its registry of torchlib functions on every export, and to learn each traced
function's ONNX domain it re-parses the function's Python source (`TracedOnnxFunction.function_ir`):
about a second per export. The domain is the function's opset's, so it is read from there, and the
registry is kept per opset. Everything here is an optimisation: if torch's internals differ, the
exporter runs as it would have.
"""
from __future__ import annotations

import contextlib
import types
from typing import Any, Iterator

_REGISTRIES: dict[int, Any] = {}


def _build(original: Any, cls: Any, opset_version: int) -> Any:
    from onnxscript._internal import values
    prop = values.TracedOnnxFunction.function_ir
    values.TracedOnnxFunction.function_ir = property(lambda self: types.SimpleNamespace(domain=self._opset.domain))
    try:
        return original.__func__(cls, opset_version=opset_version)
    finally:
        values.TracedOnnxFunction.function_ir = prop


@contextlib.contextmanager
def cached_registry() -> Iterator[None]:
    """Within the block, `ONNXRegistry.from_torchlib` returns the process's registry for the opset."""
    try:
        from torch.onnx._internal.exporter import _registration
        original = _registration.ONNXRegistry.__dict__["from_torchlib"]
        assert isinstance(original, classmethod)
    except Exception:
        yield
        return

    def from_torchlib(cls: Any, opset_version: int = 18) -> Any:
        if opset_version not in _REGISTRIES:
            try:
                _REGISTRIES[opset_version] = _build(original, cls, opset_version)
            except Exception:
                return original.__func__(cls, opset_version=opset_version)
        return _REGISTRIES[opset_version]

    _registration.ONNXRegistry.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        _registration.ONNXRegistry.from_torchlib = original
