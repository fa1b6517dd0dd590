"""Weight and checkpoint files: pickles, truncations, wrong shapes or dtypes, missing tensors and
checkpoints of another spec are refused with a message naming the file; nothing is unpickled."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import specc
from conftest import ROOT, invoke

SPEC = ROOT / "specs/mlp2_zigzag.yaml"
RUN = "runs/seed-mlp2-zigzag"


class Payload:
    """Unpickling this creates a marker file: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _weights_cases(tmp_path):
    good = specc.build(SPEC).state_dict()
    marker = tmp_path / "pwned"
    return marker, {
        "pickle": lambda p: p.write_bytes(pickle.dumps(Payload(marker))),
        "torch-save": lambda p: torch.save({"linear.weight": Payload(marker)}, p),
        "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        "wrong-shapes": lambda p: save_file({k: torch.zeros(2, 2) for k in good}, str(p)),
        "wrong-dtypes": lambda p: save_file({k: v.double() for k, v in good.items()}, str(p)),
        "missing-tensors": lambda p: save_file({k: v for k, v in list(good.items())[1:]}, str(p)),
        "empty": lambda p: p.write_bytes(b""),
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("built")
    assert invoke("build", SPEC, "-q", cwd=folder).returncode == 0
    return folder / RUN


@pytest.fixture
def run_copy(built, tmp_path, monkeypatch):
    import shutil
    shutil.copytree(built, tmp_path / RUN)
    monkeypatch.chdir(tmp_path)
    return tmp_path / RUN


WEIGHT_CASES = ["pickle", "torch-save", "truncated", "wrong-shapes", "wrong-dtypes", "missing-tensors", "empty"]


@pytest.mark.parametrize("case", WEIGHT_CASES)
@pytest.mark.parametrize("command", ["export", "train", "diff"])
def test_bad_weight_files(tmp_path, run_copy, case, command):
    marker, cases = _weights_cases(tmp_path)
    cases[case](run_copy / "model.safetensors")
    call = {"export": lambda: specc.export(RUN, ("onnx",), latency=False, out=lambda s: None),
            "train": lambda: specc.train(RUN, epochs=1, progress=False),
            "diff": lambda: specc.diff(RUN, SPEC)}[command]
    if command == "diff" and case in ("wrong-shapes", "wrong-dtypes", "missing-tensors"):
        result = call()  # a diff reports them: that is its job
        assert result["tensor_counts"]["mismatch"] + result["tensor_counts"]["missing"] > 0
        return
    with pytest.raises(specc.SpecError) as info:
        call()
    d = info.value.diagnostics[0]
    assert d.file == f"{RUN}/model.safetensors" and d.hint
    assert not marker.exists()
    assert not (run_copy / "export/model.onnx").exists()


def test_bad_weight_file_on_the_command_line(run_copy):
    run_copy.joinpath("model.safetensors").write_bytes(b"\x00" * 16)
    r = invoke("export", "--onnx", cwd=run_copy.parent.parent)
    assert r.returncode == 2
    assert r.stderr.startswith(f"{RUN}/model.safetensors: error: not a readable weight file")
    assert "hint:" in r.stderr and "Traceback" not in r.stderr


def _trained(tmp_path, epochs=2):
    assert invoke("train", SPEC, "--epochs", str(epochs), cwd=tmp_path).returncode == 0
    return tmp_path / RUN / "checkpoints"


@pytest.mark.parametrize("case", ["pickle", "truncated", "zeroed-header", "metadata-json"])
def test_bad_checkpoints_are_refused_naming_the_file(tmp_path, case):
    ckpts = _trained(tmp_path, epochs=1)
    path = next(ckpts.glob("epoch-*.safetensors"))
    marker = tmp_path / "pwned"
    data = path.read_bytes()
    if case == "pickle":
        path.write_bytes(pickle.dumps(Payload(marker)))
    elif case == "truncated":
        path.write_bytes(data[:200])
    elif case == "zeroed-header":
        path.write_bytes(b"\xff" * 8 + data[8:])
    else:
        path.write_bytes(data.replace(b'"format"', b'"fxrmat"', 1))
    r = invoke("train", RUN, "--resume", "--epochs", "3", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith(f"{path.relative_to(tmp_path)}: error: ")
    assert not marker.exists()


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    ckpts = _trained(tmp_path, epochs=3)
    newest = sorted(ckpts.glob("epoch-*.safetensors"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    r = invoke("train", RUN, "--resume", "--epochs", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"warning: {newest.relative_to(tmp_path)} is damaged" in r.stderr
    assert "[3/4]" in r.stdout  # epoch 3 is trained again from epoch 2's checkpoint


def test_a_checkpoint_from_another_spec_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    other = ROOT / "specs/mlp3_zigzag.yaml"
    assert invoke("train", other, "--epochs", "1", cwd=tmp_path / "a").returncode == 0
    ckpts = _trained(tmp_path, epochs=1)
    for p in ckpts.iterdir():
        p.unlink()
    src = next((tmp_path / "a/runs/seed-mlp3-zigzag/checkpoints").glob("epoch-*"))
    (ckpts / src.name).write_bytes(src.read_bytes())
    r = invoke("train", RUN, "--resume", "--epochs", "2", cwd=tmp_path)
    assert r.returncode == 2
    assert "checkpoint belongs to another spec" in r.stderr and src.name in r.stderr
