"""Eject: standalone, readable PyTorch source for a compiled spec (`specc build --emit-python`).

One `nn.Module` class per block or group (per distinct configuration of it; two instances whose
code is the same share one class), a top-level class named after the spec, attribute names equal
to the spec's node names (so `state_dict` keys match the compiled model's), and a `forward` with
the spec's names as local variables. Numbered bodies (`seq:`) become `nn.Sequential` subclasses.
Each call is written through the op's calling convention, the one lowering uses. The file imports
torch, math and typing only (plus the defining package of any plugin op).
"""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any

from . import inits
from .calls import Call
from .graph import GNode, Item, Scope, Val
from . import dimexpr, fold
from .lower import class_name, origin
from .shapes import TypedGraph

_RESERVED = {"self", "torch", "nn", "F", "math", "typing", "layer", "layers", "block", "super", "range", "list"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Code(str):
    """Source text of a value (as opposed to a literal to be written with repr)."""


def lit(value: Any) -> str:
    if isinstance(value, Code):
        return str(value)
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return f"float({str(value)!r})"
    if isinstance(value, list):
        return "[" + ", ".join(lit(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(lit(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, slice):
        parts = ["" if x is None else lit(x) for x in (value.start, value.stop, value.step)]
        return ":".join(parts[:2] if value.step is None else parts)
    if value is Ellipsis:
        return "..."
    return repr(value)


def fn_name(target: str) -> str:
    """`torch.nn.functional.gelu` -> `F.gelu`; `torch.add` stays."""
    return "F." + target[len("torch.nn.functional."):] if target.startswith("torch.nn.functional.") else \
        "nn." + target[len("torch.nn."):] if target.startswith("torch.nn.") else target


@dataclass
class _Names:
    """The values a class's forward can name: its inputs, its locals, and free values it asks for."""

    exprs: dict[tuple[str, int | None], str] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)
    free: list[tuple[Val, str]] = field(default_factory=list)
    closed: bool = False  # a block or the top level: every value must already be known

    def local(self, name: str) -> str:
        base = name + "_" if name in _RESERVED else name
        return base

    def bind(self, v: Val, code: str) -> None:
        self.exprs[(v.node, v.index)] = code

    def expr(self, v: Val) -> str:
        key = (v.node, v.index)
        if key in self.exprs:
            return self.exprs[key]
        base = self.exprs.get((v.node, None))
        if base is not None and v.index is not None:
            return f"{base}[{v.index}]"
        assert not self.closed, f"eject: no expression for value {v}"  # a block sees only its inputs
        name = self.local(re.sub(r"\W", "_", v.node + (f"_{v.index}" if v.index is not None else "")))
        self.free.append((v, name))
        self.exprs[key] = name
        return name


class _CodeEmitter:
    """The eject backend of `calls.Emitter`: every request is a Python expression."""

    def __init__(self, typed: TypedGraph, node: GNode, names: _Names, at_build: bool = False):
        self.typed, self.node, self.names, self.at_build = typed, node, names, at_build

    def size(self, x: str, dim: int) -> Code:
        return Code(f"{x}.size({dim})")

    def attr(self, x: str, name: str) -> Code:
        return Code(f"{x}.{name}")

    def dim(self, symbol: str) -> Code:
        v, axis, (op, k) = self.typed.dim_source(self.node, symbol)  # type: ignore[misc]
        size = f"{self.names.expr(v)}.size({axis})"
        return Code(size if not op else f"{size} {op} {k}")

    def arith(self, op: str, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int) and not isinstance(a, Code):
            return dimexpr.compute(op, a, b)
        return Code(f"({lit(a)} {op} {lit(b)})")

    def dtype(self, name: str) -> Code:
        return Code(f"torch.{name}")

    def device(self) -> Code | None:
        x = None if self.at_build else origin(self.typed, self.node)  # constants are made on the CPU, then moved
        return None if x is None else Code(f"{self.names.expr(x)}.device")

    def call(self, call: Call) -> Code:
        return Code(render(call, ""))


def render(call: Call, callee: str) -> str:
    args = [lit(a) for a in call.args] + [f"{k}={lit(v)}" for k, v in call.kwargs.items()]
    if call.kind == "module":
        return f"{callee}({', '.join(args)})"
    if call.kind == "tensor":
        return callee
    if call.kind == "getitem":
        index = call.args[1]
        inside = ", ".join(lit(i) for i in index) if isinstance(index, tuple) else lit(index)
        return f"{lit(call.args[0])}[{inside}]"
    if call.kind == "method":
        return f"{lit(call.args[0])}.{call.target}({', '.join(args[1:])})"
    return f"{fn_name(call.target)}({', '.join(args)})"


class _Ejector:
    def __init__(self, typed: TypedGraph, spec_name: str):
        self.typed, self.spec_name = typed, spec_name
        self.classes: dict[str, str] = {}  # class text (with NAME) -> class name
        self.sources: list[str] = []
        self.imports: set[str] = set()
        self.helpers: dict[str, str] = {}  # specc's own modules, copied into the file
        self.folded = fold.plan(typed.graph)

    def frozen(self) -> list[str]:
        """`trainable: false`: the lines that freeze those modules' and Parameter nodes' parameters."""
        lines = []
        for kind, getter in (("module", "get_submodule"), ("tensor", "get_parameter")):
            paths = [n.path for n in self.typed.graph.nodes if not n.trainable and n.op.kind == kind
                     and n.op.name != "Buffer"]
            if paths:
                lines += [f"for path in {paths!r}:  # trainable: false", f"    self.{getter}(path).requires_grad_(False)"]
        return lines

    def constants(self) -> list[str]:
        """The top class's __init__ lines that compute the constants (see `fold`) and register the
        stored ones as non-persistent buffers where the compiled module has them."""
        names, lines = _Names(), []
        for node in self.typed.graph.nodes:
            if node.path not in self.folded.constant:
                continue
            if node.op.kind == "tensor":
                names.bind(Val(node.path), f"self.get_buffer({node.path!r})")
                continue
            local = names.local(re.sub(r"\W", "_", node.path))
            ins = [None if v is None else Code(names.expr(v)) for v in node.inputs]
            call = node.op.bind(_CodeEmitter(self.typed, node, names, at_build=True), ins, node.args, node.op)
            lines.append(f"{local} = {render(call, '')}")
            names.bind(Val(node.path), local)
            if node.path in self.folded.stored:
                owner, _, leaf = node.path.rpartition(".")
                at = f"self.get_submodule({owner!r})" if owner else "self"
                lines.append(f"{at}.register_buffer({leaf!r}, {local}, persistent=False)")
        return ["# computed once from the spec: non-persistent buffers, as the compiled model's"] + lines if lines else []

    def class_for(self, scope: Scope, top: bool = False) -> tuple[str, list[tuple[Val, str]]]:
        names = _Names(closed=scope.kind != "group")
        text = _ClassWriter(self, scope, names).text()
        if text not in self.classes:
            base = class_name(self.spec_name) if top else class_name(scope.block or "group")
            taken, name, k = set(self.classes.values()) | {class_name(self.spec_name)}, base, 2
            while name in taken and not top:
                name, k = f"{base}{k}", k + 1
            self.classes[text] = name
            self.sources.append(text.replace("class NAME(", f"class {name}(", 1))
        return self.classes[text], names.free

    def ctor(self, node: GNode) -> str:
        op = node.op
        args = self.typed.info[node.path].args
        ctor = op.ctor_args(args)
        order = [k for k in op.args if k in ctor] + [k for k in ctor if k not in op.args]  # signature order
        kwargs = ", ".join(f"{k}={lit(tuple(ctor[k]) if isinstance(ctor[k], list) else ctor[k])}" for k in order)
        target = op.target
        if op.plugin:
            self.imports.add(f"from {target.__module__} import {target.__name__}  # plugin op from {op.plugin}")
            return f"{target.__name__}({kwargs})"
        if target.startswith("compiler.modules."):
            from . import modules
            cls = getattr(modules, target.rsplit(".", 1)[1])
            self.helpers[cls.__name__] = inspect.getsource(cls)
            return f"{cls.__name__}({kwargs})"
        return f"{fn_name(target)}({kwargs})"

    def tensor(self, node: GNode) -> str:
        args = self.typed.info[node.path].args
        shape = ", ".join(str(d) for d in args["shape"])
        dtype = f", dtype=torch.{args.get('dtype', 'float32')}"
        init = args.get("init", "zeros")
        make = f"torch.{init}({shape}{dtype})" if init in ("zeros", "ones") else \
            inits.value_code(init, shape, f"torch.{args.get('dtype', 'float32')}") or \
            inits.code(f"torch.empty({shape}{dtype})", init)  # nn.init's functions return the tensor
        if node.op.name == "Parameter":
            grad = "" if args.get("requires_grad", True) else ", requires_grad=False"
            return f"nn.Parameter({make}{grad})"
        return make


class _ClassWriter:
    """The source of one scope's class (named NAME until the ejector names it)."""

    def __init__(self, ej: _Ejector, scope: Scope, names: _Names):
        self.ej, self.scope, self.names = ej, scope, names
        self.init: list[str] = []
        self.body: list[str] = []
        self.numbered = scope.numbered
        self.children: list[str] = []  # submodule names in the order they are added

    def text(self) -> str:
        params = []
        for inp_name, val in zip(self.scope.input_names, self.scope.inputs):
            local = self.names.local(re.sub(r"\W", "_", val.node) if inp_name == "^in" else inp_name)
            params.append(local)
            self.names.exprs.setdefault((val.node, val.index), local)
        for item in self.scope.items:
            self.item(item)
        outs = [self.names.expr(v) for v in self.scope.outputs]
        self.body.append("return " + ", ".join(outs))
        if self.scope.kind == "top":  # the constants and the shared tensors, once every child exists
            self.init += self.ej.constants()
            self.init += self.ej.frozen()  # before the ties: a tied parameter follows its owner
            self.init += [f"self.get_submodule({n.path!r}).{t.param} = self.get_parameter({t.key!r})"
                          for n in self.ej.typed.graph.nodes for t in n.ties]
        params += [name for _, name in self.names.free]
        doc = f"block '{self.scope.block}'" if self.scope.kind == "block" else \
            f"group '{self.scope.block}'" if self.scope.kind == "group" else "the spec"
        base = "nn.Sequential" if self.numbered else "nn.Module"
        lines = [f"class NAME({base}):", f'    """{doc} (generated by specc)."""', "",
                 "    def __init__(self) -> None:", "        super().__init__()"]
        lines += ["        " + line for line in self.init]
        lines += ["", f"    def forward(self, {', '.join(params)}):"]
        lines += ["        " + line for line in self.body]
        return "\n".join(lines)

    def attr(self, key: str) -> str:
        if self.numbered and key.isdigit() and key in self.children:
            return f"self[{self.children.index(key)}]"  # Sequential indexes its children by position
        return f"self.{key}" if _IDENT.fullmatch(key) else f"self.get_submodule({key!r})"

    def add(self, key: str, ctor: str) -> None:
        self.children.append(key)
        if key.isdigit() or not _IDENT.fullmatch(key):
            self.init.append(f"self.add_module({key!r}, {ctor})")
        else:
            self.init.append(f"self.{key} = {ctor}")

    def item(self, item: Item) -> None:
        local = self.names.local(item.name)
        if item.kind == "op":
            self.op_item(item, local)
        else:
            self.scope_item(item, local)
        out = item.output
        if isinstance(out, list):
            for i, v in enumerate(out):
                self.names.exprs.setdefault((v.node, v.index), f"{local}[{i}]")
        else:
            self.names.bind(out, local)

    def op_item(self, item: Item, local: str) -> None:
        node = item.nodes[0]
        kind = node.op.kind
        if kind == "function" and node.path in self.ej.folded.constant:
            if node.path in self.ej.folded.stored:  # computed at build: read the buffer
                self.body.append(f"{local} = {self.attr(item.keys[0])}")
            return
        if kind == "function":
            for i, n in enumerate(item.nodes):
                ins = [None if v is None else Code(self.names.expr(v)) for v in n.inputs] if i == 0 else [Code(local)]
                call = n.op.bind(_CodeEmitter(self.ej.typed, n, self.names), ins, n.args, n.op)
                self.body.append(f"{local} = {render(call, '')}")
            return
        make = self.ej.ctor if kind == "module" else self.ej.tensor
        if not item.repeat:
            if kind == "tensor" and node.op.name == "Buffer":
                self.init.append(f"self.register_buffer({item.keys[0]!r}, {make(node)}, "
                                 f"persistent={node.args.get('persistent', True)!r})")
            elif kind == "tensor":
                self.init.append(f"self.register_parameter({item.keys[0]!r}, {make(node)})")
            else:
                self.add(item.keys[0], make(node))
                self.init += [inits.code(f"{self.attr(item.keys[0])}.{p}", i)
                              for p, i in self.ej.typed.info[node.path].inits.items()]
            ins = [None if v is None else Code(self.names.expr(v)) for v in node.inputs]
            call = node.op.bind(_CodeEmitter(self.ej.typed, node, self.names), ins, node.args, node.op)
            key = item.keys[0]
            callee = f"getattr(self, {key!r})" if kind == "tensor" and not _IDENT.fullmatch(key) else self.attr(key)
            self.body.append(f"{local} = {render(call, callee)}")
            return
        container = self.repeated(item, local, [make(n) for n in item.nodes], lambda callee: self.module_call(item, callee))
        given = self.ej.typed.info[node.path].inits
        if given:
            self.init += [f"for layer in {container}:"] + [f"    {inits.code(f'layer.{p}', i)}" for p, i in given.items()]

    def module_call(self, item: Item, callee: str) -> str:
        node = item.nodes[0]
        call = node.op.bind(_CodeEmitter(self.ej.typed, node, self.names), [Code(_X)], node.args, node.op)
        return render(call, callee)

    def container(self, item: Item, ctors: list[str]) -> str:
        """Where the copies live: consecutive children of this Sequential, a ModuleList (name.0 ...),
        or a ModuleDict (name.encoder_layer_0 ...); returns what a loop iterates over."""
        if self.numbered and (item.keys[0].isdigit() or "." not in item.keys[0]):
            for key, ctor in zip(item.keys, ctors):
                self.add(key, ctor)
            return "(" + ", ".join(self.attr(k) for k in item.keys) + ",)"
        keys = [k[len(item.name) + 1:] for k in item.keys]
        if all(k.isdigit() for k in keys):
            same = len(set(ctors)) == 1 and len(ctors) > 1
            listed = f"[{ctors[0]} for _ in range({len(ctors)})]" if same else "[" + ", ".join(ctors) + "]"
            self.add(item.name, f"nn.ModuleList({listed})")
            return f"self.{item.name}"
        self.add(item.name, "nn.ModuleDict({" + ", ".join(f"{k!r}: {c}" for k, c in zip(keys, ctors)) + "})")
        return f"self.{item.name}.values()"

    def repeated(self, item: Item, local: str, ctors: list[str], call: Any) -> str:
        """Copies of one node, each reading the previous, called in a loop."""
        first = self.names.expr(item.inputs[0]) if len(item.inputs) == 1 else \
            "(" + ", ".join(self.names.expr(v) for v in item.inputs) + ")"
        star = "" if len(item.inputs) == 1 else "*"
        container = self.container(item, ctors)
        self.body += [f"{local} = {first}", f"for layer in {container}:",
                      f"    {local} = {call('layer').replace(_X, star + local)}"]
        return container

    def scope_item(self, item: Item, local: str) -> None:
        built = [self.ej.class_for(s) for s in item.scopes]
        free_names = [[self.names.expr(v) for v, _ in free] for _, free in built]
        if not item.repeat:
            name, _ = built[0]
            self.add(item.keys[0], f"{name}()")
            ins = [self.names.expr(v) for v in item.inputs if v is not None] + free_names[0]
            self.body.append(f"{local} = {self.attr(item.keys[0])}({', '.join(ins)})")
            return
        extra = "".join(", " + n for n in free_names[0])
        if all(f == free_names[0] for f in free_names):  # every copy reads the same outside values
            self.repeated(item, local, [f"{n}()" for n, _ in built], lambda callee: f"{callee}({_X}{extra})")
            return
        container = self.container(item, [f"{n}()" for n, _ in built])  # each copy reads its own: unrolled
        self.body.append(f"{local} = {self.names.expr(item.inputs[0])}")
        self.body.append(f"layers = list({container})")
        for i, free in enumerate(free_names):
            self.body.append(f"{local} = layers[{i}]({local}{''.join(', ' + n for n in free)})")


_X = "__x__"  # the previous copy's output, in a repeated call's template


def eject(typed: TypedGraph, spec_name: str, source: str = "") -> str:
    """The Python source of a module equivalent to the compiled one.

    >>> text = eject(compiled.typed, "seed-transformer-encoder")
    """
    e = _Ejector(typed, spec_name)
    root = typed.graph.root
    assert root is not None
    top, free = e.class_for(root, top=True)
    assert not free
    header = [f'"""{class_name(spec_name)}: generated by specc from {source or "a spec"}.',
              "", "Standalone PyTorch: load the run's weights with",
              f"    model = {top}(); model.load_state_dict(safetensors.torch.load_file('model.safetensors'))",
              '"""', "import math  # noqa: F401", "import typing  # noqa: F401", "from typing import Optional  # noqa: F401",
              "", "import torch", "import torch.nn as nn", "import torch.nn.functional as F  # noqa: F401"]
    header += sorted(e.imports)
    helpers = list(e.helpers.values())
    return "\n".join(header) + "\n\n\n" + "\n\n\n".join(helpers + e.sources) + "\n"
