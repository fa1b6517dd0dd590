"""Spec language v1.2 (issue 18): each rule against hand-written PyTorch.

m.* (a repeat's copies), per-copy from:, numbered: in a seq, pass: for an absent node, shape(x) in
expressions, functions:, mappings indexed by key, and every error of a spec in one run.
"""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import specc

GOOD = Path(__file__).parent / "cases" / "good"


class Unit(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.cv(x)


class CSP(nn.Module):
    """C2f's pattern: split, chain the units on one half, concatenate the half and every unit's output."""

    def __init__(self, c1, c2, n):
        super().__init__()
        self.m = nn.ModuleList(Unit(c1 // 2) for _ in range(n))
        self.out = nn.Conv2d(c1 // 2 * (n + 1), c2, 1)

    def forward(self, x):
        y = list(x.chunk(2, 1))
        outs = [y[0]]
        h = y[1]
        for m in self.m:
            h = m(h)
            outs.append(h)
        return self.out(torch.cat(outs, 1))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.ModuleDict({"0": nn.Conv2d(3, 16, 3, 2, 1), "1": CSP(16, 16, 2), "2": nn.Conv2d(16, 16, 1),
                                  "4": nn.Conv2d(16, 4, 1), "5": nn.Conv2d(16, 4, 1)})

    def forward(self, x):
        h = self.net["0"](x)
        a = self.net["1"](h)
        b = self.net["2"](a)
        return torch.stack([self.net["4"](a), self.net["5"](b)], 1)


def test_a_csp_network_reads_as_written_and_computes_the_hand_written_one():
    """functions: and a mapping give the widths, shape(x) the hidden size; m.* collects the chained
    units; numbered: keeps net.3 for the cat; each head reads its own input (per-copy from:)."""
    model = specc.build(GOOD / "v12_csp.yaml").eval()
    ref = Net().eval()
    assert sorted(model.state_dict()) == sorted(ref.state_dict())
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


ABSENT = """
specc: 1
name: absent-pass
params: {shortcut: false}
inputs: {x: [batch, 8]}
layers:
  - {name: h, op: Linear, out_features: 8}
  - {op: add, from: [x, h], when: $shortcut, pass: h}
"""


@pytest.mark.parametrize("shortcut", [False, True])
def test_an_absent_node_gives_what_pass_names(shortcut):
    model = specc.build(ABSENT, {"shortcut": shortcut}).eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        h = model.get_submodule("h")(x)
        torch.testing.assert_close(model(x), x + h if shortcut else h, rtol=0, atol=0)


def test_without_pass_an_absent_node_with_two_inputs_is_a_located_error():
    with pytest.raises(specc.SpecError) as info:
        specc.build(ABSENT.replace(", pass: h", ""))
    (d,) = info.value.diagnostics
    assert (d.line, d.col) == (8, 35)
    assert d.message == "'add' is absent here and reads 2 inputs (x, h); say which one it passes on"
    assert d.hint == "add pass: h (or pass: [x, h] for all of them)"


PER_COPY = """
specc: 1
name: per-copy
inputs: {a: [batch, 4], b: [batch, 6], c: [batch, 8]}
layers:
  - {name: proj, op: Linear, out_features: 5, repeat: 3, from: "${['a', 'b', 'c'][i]}"}
  - {op: stack, from: [proj.*], dim: 1}
"""


def test_each_copy_reads_its_own_input_and_m_star_collects_them():
    model = specc.build(PER_COPY).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.endswith("weight")}
    assert shapes == {"proj.0.weight": (5, 4), "proj.1.weight": (5, 6), "proj.2.weight": (5, 8)}
    xs = [torch.randn(2, n) for n in (4, 6, 8)]
    with torch.no_grad():
        want = torch.stack([model.get_submodule(f"proj.{k}")(x) for k, x in enumerate(xs)], 1)
        torch.testing.assert_close(model(*xs), want, rtol=0, atol=0)


def test_functions_read_params_and_earlier_functions():
    spec = specc.load("""
specc: 1
name: functions
functions:
  "make_divisible(x, d)": "${ceil(x / d) * d}"
  "ch(c)": "${make_divisible(min(c, cap) * mult, 8)}"
params: {cap: 512, mult: 0.25, stem: "${ch(64)}", top: "${ch(1024)}"}
inputs: {x: [batch, 8]}
layers:
  - {op: Linear, out_features: "${ch(100)}"}
""")
    assert (spec.params["stem"], spec.params["top"]) == (16, 128)
    assert specc.build(spec.tree.plain()).get_submodule("linear").out_features == 32  # ceil(25 / 8) * 8


def test_shape_is_read_during_resolution_from_inferred_sizes():
    """SPPF's c_ = c1 // 2, with c1 the channels that reach the block: 8 here, then 24 after a cat."""
    model = specc.build("""
specc: 1
name: shapes
inputs: {x: [batch, 8, h, w]}
blocks:
  half:
    params: {c_: "${shape(x)[1] // 2}"}
    inputs: [x]
    layers:
      - {name: cv, op: Conv2d, out_channels: $c_, kernel_size: 1}
layers:
  - {name: one, block: half}
  - {op: cat, from: [x, one, x], dim: 1}
  - {name: two, block: half}
""")
    assert model.get_submodule("one.cv").out_channels == 4
    assert model.get_submodule("two.cv").out_channels == 10  # (8 + 4 + 8) // 2


def test_every_error_of_a_spec_comes_in_one_run():
    """A wrong argument name (the checking pass) and a wrong type (resolution) together, and a shape
    error next to a resolution error in a part of the graph that resolved."""
    with pytest.raises(specc.SpecError) as info:
        specc.build("""
specc: 1
name: together
inputs: {x: [batch, 8]}
layers:
  - {name: a, op: Linear, out_features: 4}
  - {name: b, op: Linear, out_features: eight, from: x}
  - {name: c, op: matmul, from: [a, x]}
""")
    assert [(d.line, d.message.split(":")[0]) for d in info.value.diagnostics] == [
        (7, "argument 'out_features' of Linear must be int, got a string 'eight'"),
        (8, "matmul 'c' cannot take input (batch, 4), (batch, 8)"),
    ]
