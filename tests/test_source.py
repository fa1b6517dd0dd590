"""Located loading: YAML 1.2 core scalars, locations, and refusal of hostile YAML."""
import time

import pytest

from compiler.errors import SpecError
from compiler.source import load_file, parse_text


def test_core_schema_scalars():
    tree = parse_text("a: 1e-5\nb: on\nc: yes\nd: off\ne: 0x1F\nf: '1'\ng: ~\nh: true\ni: .inf\nj: 1_000\n")
    v = tree.plain()
    assert v["a"] == 1e-5 and isinstance(v["a"], float)
    assert v["b"] == "on" and v["c"] == "yes" and v["d"] == "off"
    assert v["e"] == 31 and v["f"] == "1" and v["g"] is None and v["h"] is True
    assert v["i"] == float("inf")
    assert v["j"] == "1_000"  # YAML 1.2 has no digit separators


def test_every_value_knows_where_it_is():
    tree = parse_text("layers:\n  - {op: Linear, out_features: 8}\n", "m.yaml")
    node = tree.value["layers"].value[0]
    assert (node.loc.file, node.loc.line, node.loc.col) == ("m.yaml", 2, 5)
    assert node.value["out_features"].loc.col == 32
    assert node.key_locs["op"].col == 6


@pytest.mark.parametrize("text,message", [
    ("a: !!str x\n", "YAML tags are not allowed"),
    ("a: !custom x\n", "YAML tags are not allowed"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
    ("a: *nope\n", "unknown alias"),
    ("a: 1\n---\nb: 2\n", "one YAML document"),
    ("x: 18446744073709551616\n", "out of range"),
    ("x: 1e999\n", "out of range"),
    ("? [a, b]\n: 1\n", "mapping keys must be plain names"),
])
def test_hostile_yaml_is_refused_with_a_location(text, message):
    with pytest.raises(SpecError) as info:
        parse_text(text, "h.yaml")
    d = info.value.diagnostics[0]
    assert message in d.message
    assert d.file == "h.yaml" and d.line >= 1 and d.col >= 1


def test_billion_laughs_is_refused_fast():
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    start = time.perf_counter()
    with pytest.raises(SpecError, match="expands to more than"):
        parse_text("\n".join(lines) + "\n")
    assert time.perf_counter() - start < 0.5


def test_deep_nesting_is_refused():
    with pytest.raises(SpecError, match="nests deeper"):
        parse_text("[" * 10_000 + "]" * 10_000)


def test_files_that_are_not_specs(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_file(tmp_path / "bin.yaml")
    with pytest.raises(SpecError, match="is a directory"):
        load_file(tmp_path)
    with pytest.raises(SpecError, match="does not exist"):
        load_file(tmp_path / "missing.yaml")
    (tmp_path / "big.yaml").write_text("a: " + "x" * (5 * 1024 * 1024) + "\n")
    with pytest.raises(SpecError, match="the limit is"):
        load_file(tmp_path / "big.yaml")
