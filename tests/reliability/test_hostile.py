"""Hostile specs, each refused cleanly with a location, quickly, and without side effects."""
import os
import time

import pytest

import specc

BASE = "specc: 1\nname: h\ninputs: {x: [batch, 4]}\nlayers:\n"


def refused(text, name="h.yaml", tmp=None):
    path = (tmp / name) if tmp else None
    if path is not None:
        path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(specc.SpecError) as info:
        specc.build(path if path is not None else text)
    assert time.perf_counter() - start < 5
    d = info.value.diagnostics[0]
    assert d.line >= 1 and d.col >= 1 and d.hint
    return d


def test_yaml_tags_never_construct_objects(tmp_path):
    marker = tmp_path / "pwned"
    text = BASE + f"  - !!python/object/apply:os.system ['touch {marker}']\n"
    d = refused(text, tmp=tmp_path)
    assert "YAML tags are not allowed" in d.message and (d.line, d.col) == (5, 5)
    assert not marker.exists()


def test_alias_bomb(tmp_path):
    lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    d = refused("\n".join(lines) + "\n", tmp=tmp_path)
    assert "expands to more than" in d.message


def test_ten_thousand_levels_of_nesting(tmp_path):
    d = refused(BASE + "  - " + "[" * 10_000 + "]" * 10_000 + "\n", tmp=tmp_path)
    assert "nests deeper" in d.message


def test_a_ten_megabyte_spec(tmp_path):
    d = refused(BASE + "  - ReLU\n" + "# " + "x" * (10 * 2**20) + "\n", tmp=tmp_path)
    assert "the limit is" in d.message and d.file.endswith("h.yaml")


@pytest.mark.parametrize("body,message", [
    ("  - {op: Linear, out_features: 9223372036854775808}\n", "out of range"),
    ("  - {op: Linear, out_features: 4, repeat: 1000000000}\n", "would make more than"),
    ("  - {op: Linear, out_features: \"${10**10**10}\"}\n", "out of range"),
    ("  - {op: Linear, out_features: 4000000000000000000}\n", "cannot create Linear"),
    ("  - {op: Linear, out_features: \"${__import__('os').system('echo pwned')}\"}\n", "not allowed"),
    ("  - {op: Linear, out_features: \"${().__class__}\"}\n", "not allowed"),
    ("  - {op: Lіnear, out_features: 4}\n", "unknown op 'Lіnear'"),  # a Cyrillic і
    ("  - {name: fс, op: Linear, out_features: 4}\n", "invalid node name"),  # a Cyrillic с
    ("  - {op: torch.nn.Linear, out_features: 4}\n", "unknown op 'torch.nn.Linear'"),
    ("  - {op: Linear, out_features: 4, from: х}\n", "invalid ref 'х'"),  # a Cyrillic х
    # v1.1 constructs
    ("  - {name: l, op: Linear, out_features: 4, repeat: 1000000000, names: 'l_{i}'}\n", "would make more than"),
    ("  - {name: p, op: Parameter, shape: [100000000000, 100000000000]}\n", "cannot create Parameter 'p'"),
    ("  - {name: p, op: Parameter, shape: [100000, 100000, 100]}\n", "the model's weights need"),
    ("  - {op: Linear, out_features: \"${([1] + [1]) * 10**9}\"}\n", "a list is not a number"),
    ("  - {op: Linear, out_features: \"${[1, 2][10**18]}\"}\n", "out of range for a list of 2"),
    ("  - {op: Linear, out_features: 4, when: \"${().__class__}\"}\n", "not allowed"),
    ("  - {op: Linear, out_features: 4, tie: {weight: __import__.os}}\n", "is not a parameter of an earlier module"),
    ("  - {name: g, seq: [{op: Linear, out_features: 4, repeat: 100000, names: 'a_{i}'}], repeat: 100000}\n",
     "more than 20000 nodes"),
])
def test_hostile_values(tmp_path, body, message):
    assert message in refused(BASE + body, tmp=tmp_path).message


def test_shapes_whose_product_overflows(tmp_path):
    text = "specc: 1\nname: h\ninputs: {x: [batch, 4294967296, 4294967296, 4294967296]}\nlayers: [ReLU]\n"
    d = refused(text, tmp=tmp_path)
    assert "input 'x' cannot be created" in d.message and d.line == 3


def test_confusable_hint_names_the_look_alike(tmp_path):
    d = refused(BASE + "  - {op: Lіnear, out_features: 4}\n", tmp=tmp_path)
    assert d.hint == "did you mean 'Linear'?"


@pytest.mark.parametrize("kind", ["directory", "fifo", "missing"])
@pytest.mark.parametrize("source", ["csv", "npz"])
def test_data_paths_that_are_not_files(tmp_path, kind, source):
    path = tmp_path / f"data.{source}"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE + f"  - {{op: Linear, out_features: 1}}\ntrain:\n  data: {{{source}: data.{source}}}\n"
                    "  loss: MSELoss\n  optimizer: {name: SGD, lr: 0.1}\n")
    start = time.perf_counter()
    with pytest.raises(specc.SpecError) as info:
        specc.train(spec, progress=False)
    assert time.perf_counter() - start < 30  # a FIFO is never opened, so nothing blocks
    d = info.value.diagnostics[0]
    assert (d.file, d.line) == (str(spec), 7)
    assert {"directory": "is a directory", "fifo": "not a regular file", "missing": "does not exist"}[kind] in d.message


def test_groups_nested_past_the_depth_limit(tmp_path):
    nested = "{name: g, layers: [" * 40 + "ReLU" + "]}" * 40
    d = refused(BASE + f"  - {nested}\n", tmp=tmp_path)
    assert "nests deeper than 64 levels" in d.message


def test_a_diamond_of_blocks_is_refused_quickly(tmp_path):
    """Each block calls the next twice: 2**40 instances if nothing stopped it."""
    blocks = "\n".join(f"  b{i}:\n    layers:\n      - {{name: p, block: b{i + 1}, from: x}}\n"
                       f"      - {{name: q, block: b{i + 1}, from: x}}" for i in range(40))
    text = f"specc: 1\nname: d\ninputs: {{x: [batch, 4]}}\nblocks:\n{blocks}\n  b40:\n    layers: [ReLU]\n" \
           "layers:\n  - {block: b0}\n"
    d = refused(text, tmp=tmp_path)
    assert "unrolls to more than 20000 nodes" in d.message
