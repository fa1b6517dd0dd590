"""Mutated valid specs either build or raise SpecError: nothing else escapes, nothing hangs."""
import copy
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specc
import torch
from compiler.ops import REGISTRY
from conftest import ROOT, SPECS, ZOO, ZOO_SMALL

def _small(path):
    """A zoo spec at its small setting (the defaults are full-size networks)."""
    data = yaml.safe_load(path.read_text())
    data["params"].update(ZOO_SMALL[path.stem])
    return yaml.safe_dump(data, sort_keys=False)


NEW_SYNTAX = [ROOT / "tests/cases/good/rope_decoder.yaml", ROOT / "tests/cases/good/anchors.yaml"]  # issues 16, 18
TEXTS = [p.read_text() for p in SPECS] + [_small(p) for p in ZOO] + [p.read_text() for p in NEW_SYNTAX]
DATA = [yaml.safe_load(t) for t in TEXTS]
TOKENS = ["[", "]", "{", "}", ":", ",", "-", "$", "${", "}", "$dim", "${dim * 0}", "!!python/object", "&a", "*a",
          "null", "~", "-1", "0", "1e400", "99999999999999999999", "yes", "on", "'", '"', "\t", "\x00", "é", "а",
          "Linear", "GRU", "matmul", "block", "repeat", "from", "x.7", "layers", "batch", "#", "|", ">", "?", "%"]
ops = sorted(REGISTRY)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["$seq", "${embed*2}", "batch", "x", "-1", "$nope"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                      max_leaves=8)


@pytest.fixture(autouse=True)
def small_guard(monkeypatch):
    monkeypatch.setenv("SPECC_MAX_PARAM_BYTES", str(64 * 2**20))


def _problem(source):
    """Build a mutated spec. It must give a model whose graph lints, or located diagnostics with a
    message and a hint, each formatting as FILE[:LINE:COL]: error: MESSAGE. Returns what is wrong, or None."""
    try:
        model = specc.build(source)
    except specc.SpecError as e:
        for d in e.diagnostics:
            where = f"{d.file}:{d.line}:{d.col}: error: " if d.line else f"{d.file}: error: "
            if not (d.message and d.hint and d.format().startswith(where)):
                return f"a diagnostic without a message, a hint or a location: {d.format()}"
        return None if e.diagnostics else "a SpecError without diagnostics"
    if not isinstance(model, torch.fx.GraphModule):
        return f"built a {type(model).__name__}, not a GraphModule"
    model.graph.lint()
    return None


@settings(max_examples=int(os.environ.get("SPECC_FUZZ_EXAMPLES", 120)), deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_text_mutations(data):
    text = data.draw(st.sampled_from(TEXTS))
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["delete", "dup", "swap", "token", "chars", "indent"]))
        i = data.draw(st.integers(0, len(lines) - 1))
        if kind == "delete" and len(lines) > 1:
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "token":
            line = lines[i]
            pos = data.draw(st.integers(0, len(line)))
            lines[i] = line[:pos] + data.draw(st.sampled_from(TOKENS)) + line[pos:]
        elif kind == "chars":
            line = lines[i]
            pos = data.draw(st.integers(0, len(line)))
            cut = data.draw(st.integers(0, 5))
            lines[i] = line[:pos] + data.draw(st.text(max_size=3)) + line[pos + cut:]
        else:
            lines[i] = " " * data.draw(st.integers(0, 3)) + lines[i]
    problem = _problem("\n".join(lines) + "\n")
    assert problem is None, problem


def _nodes(d):
    out = [d["layers"]] if isinstance(d.get("layers"), list) else []
    blocks = d.get("blocks")
    for b in blocks.values() if isinstance(blocks, dict) else []:
        if isinstance(b, dict) and isinstance(b.get("layers"), list):
            out.append(b["layers"])
    return out


@settings(max_examples=int(os.environ.get("SPECC_FUZZ_EXAMPLES", 120)), deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_structural_mutations(data):
    d = copy.deepcopy(data.draw(st.sampled_from(DATA)))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["arg", "op", "drop", "ref", "param", "top", "repeat", "shape"]))
        lists = _nodes(d)
        layer_list = data.draw(st.sampled_from(lists)) if lists else None
        node = data.draw(st.sampled_from(layer_list)) if layer_list else None
        if kind == "arg" and isinstance(node, dict):
            keys = list(node) + ["out_features", "dim", "kernel_size", "other", "input", "end", "trainable"]
            node[data.draw(st.sampled_from(keys))] = data.draw(values)
        elif kind == "op" and isinstance(node, dict):
            node["op"] = data.draw(st.sampled_from(ops))
        elif kind == "drop" and isinstance(node, dict) and node:
            node.pop(data.draw(st.sampled_from(list(node))))
        elif kind == "ref" and isinstance(node, dict):
            node["from"] = data.draw(st.sampled_from(["x", "q", "k.1", "attn.0", "layers", ["x", "x"], "nope", []]))
        elif kind == "param" and isinstance(d.get("params"), dict) and d["params"]:
            d["params"][data.draw(st.sampled_from(list(d["params"])))] = data.draw(values)
        elif kind == "top":
            d[data.draw(st.sampled_from(["inputs", "outputs", "blocks", "name", "specc", "extra"]))] = data.draw(values)
        elif kind == "repeat" and isinstance(node, dict):
            node["repeat"] = data.draw(st.one_of(st.integers(-2, 50), values))
        elif kind == "shape" and isinstance(d.get("inputs"), dict):
            d["inputs"]["x"] = data.draw(st.one_of(values, st.lists(st.integers(-1, 10**7), max_size=5)))
    problem = _problem(d)
    assert problem is None, problem


def test_mutations_really_build_sometimes():
    # the property is only meaningful if the valid specs themselves build
    for text in TEXTS:
        assert isinstance(specc.build(text), torch.fx.GraphModule)
