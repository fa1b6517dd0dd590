"""specs/zoo/yolov8.yaml against Ultralytics' own DetectionModel (ultralytics==8.4.190, test-only).

Key for key, equal parameter and trainable counts, a strict load of Ultralytics' state_dict, and
the eval output (decoded xywh boxes in pixels and class scores, `model(x)[0]`) equal within 1e-5
relative, at several scales, class counts and input sizes. Eject and diff run in test_zoo.py with
the other zoo specs; the ONNX export with parity is here (slow).
"""
from pathlib import Path

import pytest
import torch

import specc
from conftest import ROOT
from refs import ultralytics_models as ultra

SPEC = ROOT / "specs/zoo/yolov8.yaml"
SETTINGS = [  # (scale, nc, height, width): small sizes keep the suite quick; m/l/x are timed in bench/
    ("n", 80, 64, 96),
    ("n", 3, 128, 64),
    ("s", 7, 96, 96),
]

pytestmark = pytest.mark.usefixtures("one_thread")


def scrambled(model: torch.nn.Module, seed: int = 1) -> dict:
    """Ultralytics' state_dict with every norm and bias moved off its init (at init they are equal
    across layers, which would hide two swapped keys). Conv weights are random already; noise on
    them would make 22 layers of activations blow up until float rounding decides the output."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if v.is_floating_point() and v.dim() == 1:
            noise = torch.randn(v.shape, generator=g) * 0.1
            v = (torch.rand(v.shape, generator=g) * 0.5 + 0.75) if k.endswith("running_var") else v + noise
        out[k] = v
    return out


@pytest.mark.parametrize("scale,nc,height,width", SETTINGS, ids=lambda v: str(v))
def test_yolov8_is_ultralytics_detection_model(scale, nc, height, width):
    ref = ultra.detection_model(scale, nc)
    model = specc.build(SPEC, {"scale": scale, "nc": nc}).eval()
    assert sorted(model.state_dict()) == sorted(ref.state_dict())
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (params, trainable) == ultra.counts(ref)  # DFL's integral is frozen in both
    dfl = "model.22.dfl.conv.weight"  # arange(reg_max) from the build, as Ultralytics'
    assert torch.equal(model.state_dict()[dfl], ref.state_dict()[dfl])
    state = scrambled(ref)
    ref.load_state_dict(state)
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = ref(x)[0], model(x)
    assert got.shape == (2, 4 + nc, (height * width) // 64 + (height * width) // 256 + (height * width) // 1024)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_yolov8n_has_ultralytics_published_counts():
    """3,157,200 parameters and 355 state_dict keys, as Ultralytics' model summary and yolov8n.pt."""
    compiled = specc.api.compiled(SPEC)
    assert compiled.summary["parameters"] == 3_157_200
    assert len(compiled.module.state_dict()) == 355


def test_a_scale_that_is_not_one_of_ultralytics_is_a_located_error():
    with pytest.raises(specc.SpecError) as info:
        specc.load(SPEC, {"scale": "xl"})
    (d,) = info.value.diagnostics  # at the override, once (three params index scales by it)
    assert (d.file, d.message) == ("--set", "a string 'xl' is not a key of the mapping")
    assert d.hint == f"'scale' is used at {SPEC}:18:19; did you mean 'x'?"


@pytest.mark.slow
def test_yolov8_exports_to_onnx_with_parity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = specc.api.build_run(SPEC, {"nc": 3}, out=tmp_path / "run").run_dir
    report = specc.export(run, ("onnx",), latency=False, out=lambda s: None)
    assert report.passed, report.errors
    sizes = {(c.sizes["height"], c.sizes["width"]) for c in report.checks}
    assert sizes == {(64, 64), (64, 128), (96, 64), (96, 128)}
    assert Path(run / "export/model.onnx").is_file()
