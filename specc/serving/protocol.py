"""The Open Inference Protocol (KServe v2, Triton's HTTP API): an infer request's body -> checked
numpy arrays, and the model's outputs -> a reply body, with JSON tensors or the binary tensor data
extension.

    binary body = JSON header (Inference-Header-Content-Length bytes) + each binary tensor's raw
                  little-endian bytes, in the order of the header's inputs that carry
                  parameters.binary_data_size

Every problem with a request is a `BadRequest` naming the input and what was wrong with it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .model import BY_NUMPY, DATATYPES, Model, Tensor

HEADER = "Inference-Header-Content-Length"
_PLAIN = {"f": {float, int}, "i": {int}, "u": {int}, "b": {bool}}  # Python types a flat "data" list may hold as is


class BadRequest(Exception):
    """A client's mistake: answered with `status` and {"error": message}."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass
class InferRequest:
    id: str | None
    arrays: list[np.ndarray]  # in the model's input order, checked
    outputs: list[str]  # the outputs to return, in order
    binary: set[str] = field(default_factory=set)  # outputs to return as binary data

    @property
    def rows(self) -> int:
        return len(self.arrays[0]) if self.arrays and self.arrays[0].ndim else 1


def parse_infer(model: Model, body: bytes, header_length: str | None) -> InferRequest:
    """A request body (JSON, or JSON + binary tensors) -> the model's inputs, checked."""
    head, tail = _split(body, header_length)
    try:
        req = loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not valid JSON: {e}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise BadRequest('the request must be a JSON object with an "inputs" list')
    given = _tensors(req["inputs"], tail)
    arrays = check_inputs(model, given)
    return InferRequest(_id(req), arrays, *_outputs(model, req))


def loads(head: bytes) -> Any:
    """JSON -> Python with orjson (several times the standard library's speed, a tenth of a small
    request's time), and the standard library for what orjson refuses: NaN and Infinity, which
    Python clients (tritonclient among them) write for such values."""
    try:
        return orjson.loads(head)
    except orjson.JSONDecodeError:
        return json.loads(head)


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """A body sent with Content-Encoding gzip or deflate (tritonclient's request compression),
    inflated to at most `limit` bytes (a small body must not unpack into gigabytes)."""
    if encoding in (None, "", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none", 415)
    import zlib
    unpack = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = unpack.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"the body is not valid {encoding} data: {e}") from None
    if len(out) > limit or unpack.unconsumed_tail:
        raise BadRequest(f"the body inflates to over {limit} bytes, the most this server takes (--max-body)", 413)
    return out


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise BadRequest(f"{HEADER} must be a number of bytes, got {header_length!r}") from None
    if not 0 <= n <= len(body):
        raise BadRequest(f"{HEADER} is {n}, but the body has {len(body)} bytes")
    return body[:n], body[n:]


def _id(req: dict) -> str | None:
    rid = req.get("id")
    return str(rid) if rid is not None else None


def _tensors(items: list, tail: bytes) -> dict[str, np.ndarray]:
    """Each input as an array of its declared datatype and shape (data checked, not yet against the model)."""
    out: dict[str, np.ndarray] = {}
    offset = 0
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest('each input must be an object with "name", "shape", "datatype" and "data"')
        name = item["name"]
        if name in out:
            raise BadRequest(f"input '{name}' is given twice")
        shape, dtype = _shape(item), _datatype(item)
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(tail):
                raise BadRequest(f"input '{name}': binary_data_size {size!r} runs past the body's end")
            out[name] = _from_bytes(name, tail[offset:offset + size], shape, dtype)
            offset += size
        else:
            out[name] = _from_json(name, item.get("data"), shape, dtype)
    if offset != len(tail):
        raise BadRequest(f"the body has {len(tail) - offset} bytes after the binary tensors that no input claims")
    return out


def _shape(item: dict) -> tuple[int, ...]:
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"input '{item['name']}': shape must be a list of sizes (non-negative integers), got {shape!r}")
    return tuple(shape)


def _datatype(item: dict) -> np.dtype:
    dt = item.get("datatype")
    if dt not in DATATYPES:
        raise BadRequest(f"input '{item['name']}': unknown datatype {dt!r}; datatypes: {', '.join(DATATYPES)}")
    return np.dtype(DATATYPES[dt])


def _from_bytes(name: str, raw: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    want = math.prod(shape) * dtype.itemsize
    if len(raw) != want:
        raise BadRequest(f"input '{name}': shape {list(shape)} of {dtype.name} needs {want} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _from_json(name: str, data: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if not isinstance(data, list):
        raise BadRequest(f"input '{name}': \"data\" must be a list (flat or nested), or the tensor sent as binary data")
    if len(data) == math.prod(shape) and set(map(type, data)) <= _PLAIN.get(dtype.kind, set()):
        try:  # the common case, a flat list of plain numbers: no per-value Python check (~10x faster)
            return np.array(data, dtype=dtype).reshape(shape)
        except OverflowError:
            pass  # the checks below name the problem
    try:
        flat = np.asarray(data, dtype=object).reshape(-1)
    except ValueError:
        raise BadRequest(f"input '{name}': \"data\" is a ragged nested list") from None
    if flat.size != math.prod(shape):
        raise BadRequest(f"input '{name}': shape {list(shape)} holds {math.prod(shape)} values, \"data\" has {flat.size}")
    kind = bool if dtype.kind == "b" else (int, float) if dtype.kind == "f" else int
    bad = next((v for v in flat if isinstance(v, bool) != (dtype.kind == "b") or not isinstance(v, kind)), None)
    if flat.size and bad is not None:
        raise BadRequest(f"input '{name}': {bad!r} is not a {dtype.name} value")
    try:
        return flat.astype(dtype).reshape(shape)
    except (OverflowError, ValueError) as e:
        raise BadRequest(f"input '{name}': {e}") from None


def check_inputs(model: Model, given: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The inputs in the model's order, each checked for name, datatype, shape, dims and range."""
    names = [t.name for t in model.inputs]
    unknown = [n for n in given if n not in names]
    if unknown:
        raise BadRequest(f"model '{model.name}' has no input '{unknown[0]}'; its inputs: {', '.join(names)}")
    missing = [n for n in names if n not in given]
    if missing:
        raise BadRequest(f"input '{missing[0]}' is missing; model '{model.name}' takes {', '.join(names)}")
    sizes: dict[str, int] = {}
    for t in model.inputs:
        _check_one(model, t, given[t.name], sizes)
    return [given[n] for n in names]


def _check_one(model: Model, t: Tensor, x: np.ndarray, sizes: dict[str, int]) -> None:
    if x.dtype != t.numpy:
        raise BadRequest(f"input '{t.name}' has datatype {BY_NUMPY[x.dtype]}; the model takes {t.datatype}")
    if x.ndim != len(t.dims) or any(isinstance(d, int) and d != s for d, s in zip(t.dims, x.shape)):
        raise BadRequest(f"input '{t.name}' has shape {list(x.shape)}; the model takes {t.shape} (-1: any size)")
    for d, s in zip(t.dims, x.shape):
        if isinstance(d, str):
            _check_dim(model, t.name, d, s, sizes)
    lo_hi = model.ranges.get(t.name)
    if lo_hi is not None and x.size and (x.min() < lo_hi[0] or x.max() >= lo_hi[1]):
        raise BadRequest(f"input '{t.name}' holds {x.min() if x.min() < lo_hi[0] else x.max()}; its values must lie "
                         f"in [{lo_hi[0]:g}, {lo_hi[1]:g})")


def _check_dim(model: Model, name: str, dim: str, size: int, sizes: dict[str, int]) -> None:
    if sizes.setdefault(dim, size) != size:
        raise BadRequest(f"input '{name}' has {dim} = {size}, but another input has {dim} = {sizes[dim]}")
    decl = model.dims.get(dim)
    lo = decl.min if decl is not None else 1
    if size < lo:
        raise BadRequest(f"input '{name}': {dim} = {size}; the model takes at least {lo}")
    if decl is not None and decl.max is not None and size > decl.max:
        raise BadRequest(f"input '{name}': {dim} = {size}; the model takes at most {decl.max}")
    if decl is not None and size % decl.divisible_by:
        raise BadRequest(f"input '{name}': {dim} = {size}; it must be divisible by {decl.divisible_by}")


def _outputs(model: Model, req: dict) -> tuple[list[str], set[str]]:
    names = [t.name for t in model.outputs]
    params = req.get("parameters") or {}
    all_binary = bool(params.get("binary_data_output")) if isinstance(params, dict) else False
    asked = req.get("outputs")
    if asked is None:
        return names, set(names) if all_binary else set()
    if not isinstance(asked, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked):
        raise BadRequest('"outputs" must be a list of objects with a "name"')
    unknown = [o["name"] for o in asked if o["name"] not in names]
    if unknown:
        raise BadRequest(f"model '{model.name}' has no output '{unknown[0]}'; its outputs: {', '.join(names)}")
    binary = {o["name"] for o in asked if (o.get("parameters") or {}).get("binary_data", all_binary)}
    return [o["name"] for o in asked], binary


def encode_reply(model: Model, req: InferRequest, outs: list[np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """The reply body and its headers: JSON, or a JSON header then raw bytes for binary outputs."""
    by_name = {t.name: (t, o) for t, o in zip(model.outputs, outs)}
    tensors, blobs, finite = [], [], True
    for name in req.outputs:
        t, o = by_name[name]
        o = np.ascontiguousarray(o.astype(t.numpy, copy=False))
        entry: dict[str, Any] = {"name": name, "datatype": t.datatype, "shape": list(o.shape)}
        if name in req.binary:
            raw = o.astype(o.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = o.reshape(-1).tolist()
            finite = finite and (o.dtype.kind != "f" or bool(np.isfinite(o).all()))
        tensors.append(entry)
    reply: dict[str, Any] = {"model_name": model.name, "model_version": "1", "outputs": tensors}
    if req.id is not None:
        reply["id"] = req.id
    # orjson writes NaN and Infinity as null; the standard library writes them as Triton does
    head = orjson.dumps(reply) if finite else json.dumps(reply, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER.lower(): str(len(head))}


def metadata(model: Model) -> dict[str, Any]:
    """GET /v2/models/{name}: inputs and outputs with datatype and shape (-1 for symbolic dims)."""
    def one(t: Tensor) -> dict[str, Any]:
        return {"name": t.name, "datatype": t.datatype, "shape": t.shape}
    return {"name": model.name, "versions": ["1"], "platform": model.platform,
            "inputs": [one(t) for t in model.inputs], "outputs": [one(t) for t in model.outputs]}
