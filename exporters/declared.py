"""Declared shapes are part of parity: every dim symbolic in the spec must be symbolic in the
artifact, for inputs and outputs, with the spec's name; every fixed dim must equal the spec's.

ONNX: a declaration that disagrees is repaired where that is safe. The graph's own shape inference
(onnx.shape_inference, strict, with the declarations taken away) must not pin the dim: then the
declaration alone was wrong (an exporter wrote the trace size), and it is rewritten from the spec's
typed graph; the parity sweep then runs the repaired file at every size. Where inference pins the
dim, the graph itself is fixed there, and the check fails naming the value and the dim.

pt2: the program's input and output specs (SymInts) are evaluated at the checked sizes against the
spec's dim expressions; there is nothing to repair in a program.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .inputs import size_grid

_SMALL_INITIALIZER = 4096  # bytes: shape constants stay in the skeleton that shape inference reads


@dataclass
class ValueShape:
    name: str
    kind: str  # input | output
    expected: list[Any]  # the spec's dims
    declared: list[Any]  # what the artifact declared (before any repair)
    renamed: bool = False  # a symbolic dim under the exporter's name (s0) now carries the spec's
    repaired: bool = False  # a fixed or unknown size where the spec has a symbolic dim, rewritten
    passed: bool = True
    problem: str = ""


@dataclass
class DeclaredShapes:
    format: str
    values: list[ValueShape] = field(default_factory=list)
    verified_by: str = ""

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.values)

    @property
    def repaired(self) -> bool:
        return any(v.repaired for v in self.values)

    def problems(self) -> list[str]:
        return [v.problem for v in self.values if not v.passed]

    def as_dict(self) -> dict[str, Any]:
        return {"format": self.format, "passed": self.passed, "repaired": self.repaired,
                "verified_by": self.verified_by, "values": [asdict(v) for v in self.values]}


def dim_value(expr: Any, sizes: Mapping[str, int]) -> int | None:
    """The size of a spec dim (`6`, `time`, `2*time`, `time+2`, `height/4`, `ceil(h/2)`, `h//2`) at
    these symbol sizes; None for `?` or an unknown symbol."""
    if isinstance(expr, int):
        return expr
    text = str(expr)
    m = re.fullmatch(r"(?:(\d+)\*)?([A-Za-z_]\w*)(?:([+-])(\d+))?", text)
    if m and m.group(2) in sizes:
        k, s, sign, d = int(m.group(1) or 1), sizes[m.group(2)], m.group(3), int(m.group(4) or 0)
        return k * s + (d if sign == "+" else -d)
    m = re.fullmatch(r"(ceil\()?([A-Za-z_]\w*)(/|//)(\d+)\)?", text)
    if m and m.group(2) in sizes:
        s, k = sizes[m.group(2)], int(m.group(4))
        return math.ceil(s / k) if m.group(1) else s // k
    return None


def _symbolic(expr: Any) -> bool:
    return isinstance(expr, str)


# --- ONNX -------------------------------------------------------------------------------------

def _dims(vi: Any) -> list[Any]:
    """A value_info's dims: int, str (dim_param) or None (unknown)."""
    shape = vi.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
            for d in shape.dim] if vi.type.tensor_type.HasField("shape") else []


def _skeleton(model: Any) -> Any:
    """The graph without its large weights (they become typed inputs) and without declared output
    shapes or value_info: what shape inference derives from the graph alone."""
    import onnx
    from onnx import helper
    g = model.graph
    small, big = [], []
    for init in g.initializer:
        if len(init.raw_data) + 4 * len(init.float_data) + 8 * len(init.int64_data) <= _SMALL_INITIALIZER:
            small.append(init)
        else:
            big.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    outputs = []
    for o in g.output:
        bare = onnx.ValueInfoProto()
        bare.name = o.name
        bare.type.tensor_type.elem_type = o.type.tensor_type.elem_type
        outputs.append(bare)
    graph = helper.make_graph(list(g.node), g.name, list(g.input) + big, outputs, small)
    skeleton = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    skeleton.functions.extend(model.functions)
    return skeleton


def inferred_outputs(model: Any) -> dict[str, list[Any]]:
    """Output dims as the graph itself implies them (strict onnx.shape_inference: an inconsistent graph raises)."""
    import onnx
    inferred = onnx.shape_inference.infer_shapes(_skeleton(model), check_type=True, strict_mode=True, data_prop=True)
    return {o.name: _dims(o) for o in inferred.graph.output}


def _set(vi: Any, dims: list[Any]) -> None:
    shape = vi.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif d is not None and d != "?":
            dim.dim_param = str(d)


def _judge(kind: str, name: str, expected: list, declared: list, implied: list | None) -> ValueShape:
    """Compare one value's declaration; `implied` is what the graph implies for an output."""
    v = ValueShape(name, kind, list(expected), list(declared))
    if len(declared) != len(expected):
        v.passed, v.problem = False, f"{kind} '{name}' has {len(declared)} dims in the artifact, the spec has {len(expected)}"
        return v
    for axis, (want, got) in enumerate(zip(expected, declared)):
        if got == want or (want == "?" and isinstance(got, str) and got):
            continue
        pinned = implied[axis] if implied is not None and axis < len(implied) else None
        if isinstance(pinned, int) and pinned != want:
            spec = f"'{want}'" if _symbolic(want) else str(want)
            v.passed, v.problem = False, (f"{kind} '{name}' dim {axis} ({spec} in the spec) is fixed at {pinned} in "
                                          f"the exported graph")
            return v
        if isinstance(got, int) and isinstance(want, int):
            v.passed, v.problem = False, f"{kind} '{name}' dim {axis} is {got} in the artifact, the spec says {want}"
            return v
        if isinstance(got, str) and got and _symbolic(want):
            v.renamed = True
        else:
            v.repaired = True
    return v


def _rename(model: Any, renames: dict[str, str]) -> None:
    """The exporter's symbol names (s77, 4*s12) become the spec's everywhere in the graph."""
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in renames:
                d.dim_param = renames[d.dim_param]


def onnx_shapes(model: Any, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> DeclaredShapes:
    """Check the model's declared input and output shapes against the spec's, repairing in place
    where safe; `inputs` are the spec's InputDecls, `outputs` its typed output shapes."""
    result = DeclaredShapes("onnx", verified_by="onnx.shape_inference (strict), then the parity sweep")
    g = model.graph
    by_input = {i.name: i for i in g.input}
    for name, decl in inputs.items():
        vi = by_input.get(name)
        if vi is not None:
            result.values.append(_judge("input", name, list(decl.shape), _dims(vi), None))
    renames: dict[str, str] = {}
    for v in result.values:
        renames.update({got: want for want, got in zip(v.expected, v.declared)
                        if isinstance(got, str) and _symbolic(want) and want != "?" and got != want})
        if v.repaired or v.renamed:
            _set(by_input[v.name], v.expected)
    implied = inferred_outputs(model)
    by_output = {o.name: o for o in g.output}
    for name, shape in outputs.items():
        vi = by_output.get(name)
        if vi is None or not isinstance(shape, tuple):
            continue
        checked = _judge("output", name, list(shape), _dims(vi), implied.get(name))
        result.values.append(checked)
        if checked.repaired or checked.renamed:
            _set(vi, checked.expected)
    if result.repaired:
        del g.value_info[:]  # the exporter's intermediate shapes carry the same pinned sizes
    else:
        _rename(model, renames)
    return result


# --- pt2 --------------------------------------------------------------------------------------

def _program_dims(val: Any) -> list[Any]:
    import torch
    return [d.node.expr if isinstance(d, torch.SymInt) else int(d) for d in getattr(val, "shape", ())]


def _bindings(inputs: Mapping[str, Any], declared: dict[str, list[Any]], sizes: Mapping[str, int]) -> dict:
    """sympy symbol -> value, solved from the input dims at these spec sizes."""
    import sympy
    values: dict = {}
    for name, decl in inputs.items():
        for want, got in zip(decl.shape, declared.get(name, [])):
            if isinstance(want, str) and isinstance(got, sympy.Expr) and len(got.free_symbols) == 1:
                sym = next(iter(got.free_symbols))
                roots = sympy.solve(sympy.Eq(got, sizes[want]), sym)
                if roots:
                    values[sym] = roots[0]
    return values


def _evaluate(expr: Any, bindings: dict) -> int | None:
    import sympy
    value = sympy.sympify(expr).subs(bindings)
    return int(value) if value.is_number else None


def pt2_shapes(program: Any, job: Any) -> DeclaredShapes:
    """The program's user input and output specs against the spec's dims at every checked size."""
    import sympy
    result = DeclaredShapes("pt2", verified_by="the program's SymInts evaluated at every checked size")
    nodes = {n.name: n for n in program.graph.nodes}
    sig = program.graph_signature
    declared = {name: _program_dims(nodes[ph].meta.get("val")) for name, ph in zip(job.inputs, sig.user_inputs)}
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    flat = [a for a in out_node.args[0] if hasattr(a, "meta")][:len(job.outputs)]
    declared_out = {name: _program_dims(a.meta.get("val")) for name, a in zip(job.outputs, flat)}
    grid = size_grid(job.inputs, job.config.dims, job.dims)[:8]
    expected = {n: list(d.shape) for n, d in job.inputs.items()}
    expected.update({n: list(s) for n, s in job.outputs.items() if isinstance(s, tuple)})
    bound = [(sizes, _bindings(job.inputs, declared, sizes)) for sizes in grid]
    for kind, table in (("input", declared), ("output", declared_out)):
        for name, dims in table.items():
            want = expected.get(name, [])
            v = ValueShape(name, kind, want, [str(d) for d in dims])
            result.values.append(v)
            if len(dims) != len(want):
                v.passed, v.problem = False, f"{kind} '{name}' has {len(dims)} dims in the program, the spec has {len(want)}"
                continue
            for axis, (w, d) in enumerate(zip(want, dims)):
                if w == "?":
                    continue
                if _symbolic(w) and not (isinstance(d, sympy.Expr) and d.free_symbols):
                    v.passed, v.problem = False, f"{kind} '{name}' dim {axis} ('{w}' in the spec) is fixed at {d} in the program"
                    break
                wrong = next((sizes for sizes, b in bound if dim_value(w, sizes) is not None
                              and _evaluate(d, b) not in (None, dim_value(w, sizes))), None)
                if wrong is not None:
                    v.passed, v.problem = False, (f"{kind} '{name}' dim {axis} is {d} in the program, not the spec's "
                                                  f"'{w}' (at {wrong})")
                    break
    return result
