"""The export corpus: specs that together use every op of the registry (and every mask and is_causal
form), each exported to ONNX, TorchScript and pt2 with parity, or refused with a located error."""
import json
from pathlib import Path

import onnx
import pytest

import specc
from compiler.ops import REGISTRY

CORPUS = sorted((Path(__file__).parent / "export_corpus").glob("*.yaml"))
FORMATS = {"onnx", "torchscript", "pt2"}
# masks and causal forms that must be exercised too: (op, filled input slot or true argument)
FEATURES = {("MultiheadAttention", "key_padding_mask"), ("MultiheadAttention", "attn_mask"),
            ("MultiheadAttention", "is_causal"), ("TransformerEncoderLayer", "src_mask"),
            ("TransformerEncoderLayer", "src_key_padding_mask"), ("TransformerEncoderLayer", "is_causal"),
            ("scaled_dot_product_attention", "attn_mask"), ("scaled_dot_product_attention", "is_causal"),
            ("scaled_dot_product_attention", "dropout_p"), ("scaled_dot_product_attention", "enable_gqa")}


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


CORPUS_DIR = Path(__file__).parent / "export_corpus"
# spec -> format -> (message, the YAML line it points at)
REFUSED = {
    "rnn_tagger": {"pt2": ("torch.export cannot keep dim 'time' dynamic: RNN 'rnn' specializes it to the example size",
                           _line(CORPUS_DIR / "rnn_tagger.yaml", "{name: rnn,"))},
}


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _uses(path: Path) -> tuple[set[str], set[tuple[str, str]]]:
    typed = specc.compiled(path).typed
    ops, features = set(), set()
    for node in typed.graph.nodes:
        ops.add(node.op.name)
        features |= {(node.op.name, slot) for slot, v in zip(node.op.slots, node.inputs) if v is not None}
        features |= {(node.op.name, k) for k, v in node.args.items() if k in ("is_causal", "dropout_p", "enable_gqa") and v}
    return ops, features


def test_the_corpus_covers_every_op_of_the_registry():
    assert len(CORPUS) >= 20
    ops, features = set(), set()
    for path in CORPUS:
        o, f = _uses(path)
        ops |= o
        features |= f
    builtin = {name for name, op in REGISTRY.items() if not op.plugin}
    assert sorted(builtin - ops) == []  # an op that no corpus spec uses
    assert sorted(FEATURES - features) == []


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_spec_exports_with_parity_or_is_refused(path):
    report = specc.export(path, latency=False, out=lambda s: None)
    refused = REFUSED.get(path.stem, {})
    assert {e["format"]: (e["message"], e["line"]) for e in report.errors} == refused
    assert {e["file"] for e in report.errors} <= {str(path)}
    assert {c.format for c in report.checks} == FORMATS - set(refused)
    failing = [(c.format, c.sizes, c.error or c.max_abs_err) for c in report.checks if not c.passed]
    assert failing == []
    assert report.passed is not bool(refused)  # a refused format fails the verdict, honestly
    declared = {d["format"]: d for d in report.declared_shapes}
    assert set(declared) == {"onnx", "pt2"} - set(refused)
    assert [v["problem"] for d in declared.values() for v in d["values"] if not v["passed"]] == []
    export = Path("runs") / specc.load(path).name / "export"
    saved = json.loads((export / "parity.json").read_text())
    assert saved["passed"] is report.passed and len(saved["errors"]) == len(refused)
    _onnx_declares_the_spec_shapes(export / "model.onnx", path)


def _onnx_declares_the_spec_shapes(file: Path, spec_path: Path) -> None:
    compiled = specc.compiled(spec_path)
    want = {name: list(inp.shape) for name, inp in compiled.spec.inputs.items()}
    want.update({name: list(compiled.typed.shape_of(v)) for name, v in compiled.typed.graph.outputs})
    model = onnx.load(str(file))
    got = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
           for v in list(model.graph.input) + list(model.graph.output)}
    assert got == {k: [d if d != "?" else got[k][i] for i, d in enumerate(v)] for k, v in want.items()}


def test_a_dim_torch_export_pins_is_located_by_bisection(monkeypatch):
    """Without the MaxPool1d rewrite, torch.export pins the length at the first 1-D max pool: the
    refusal names that node and its line, found by exporting graph prefixes."""
    from exporters import rewrite
    monkeypatch.setitem(rewrite.REWRITES, "pt2", [])
    path = CORPUS_DIR / "conv1d.yaml"
    report = specc.export(path, ("pt2",), latency=False, out=lambda s: None)
    assert [(e["message"], e["line"]) for e in report.errors] == [
        ("torch.export cannot keep dim 'time' dynamic: MaxPool1d 'pool' specializes it to the example size",
         _line(path, "{name: pool,"))]
    assert report.passed is False
