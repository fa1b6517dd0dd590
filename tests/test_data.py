"""Data sources: image folders (Pillow, size, [0, 1], per-channel statistics of the training split,
flip and crop augmentation, class names), text and token files (windows, stride, memory maps), large
npz arrays memory-mapped, DataLoader workers, and the errors, each naming the file and the spec line.
Every file is real: PNGs are written with Pillow in tmp_path."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import specc
from conftest import ROOT, invoke
from specc.training import sources
from specc.training.data import load_data
from specc.training.samples import ArraySamples, ImageSamples, TensorSamples

COLORS = ("red", "green", "blue")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread is faster, and immune to a busy machine
    yield tmp_path
    torch.set_num_threads(threads)


def make_images(root, per_class=12, size=(20, 24), seed=0):
    """DIR/<color>/<i>.png: noise with one channel raised, so the color is the class."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(COLORS):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            px = rng.uniform(0, 0.4, size + (3,))
            px[..., k] += 0.5
            Image.fromarray((px * 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def image_spec(folder, extra="", normalize="standard", augment="{flip: true, crop: 2}", epochs=6):
    text = f"""specc: 1
name: colors
inputs:
  x: [batch, 3, 16, 16]
layers:
  - {{op: Conv2d, out_channels: 8, kernel_size: 3, padding: 1}}
  - ReLU
  - {{op: AdaptiveAvgPool2d, output_size: 1}}
  - {{op: flatten, start_dim: 1}}
  - {{name: head, op: Linear, out_features: 3}}
train:
  data:
    images: {folder.name}
    size: [16, 16]
    normalize: {normalize}
    augment: {augment}
    val_split: 0.25
{extra}  loss: CrossEntropyLoss
  optimizer: {{name: Adam, lr: 0.02}}
  epochs: {epochs}
  batch_size: 8
"""
    path = folder.parent / "colors.yaml"
    path.write_text(text)
    return path


def data_of(spec_path, params=None, **kw):
    spec = specc.load(spec_path, params)
    cfg = spec.train
    from specc.training.targets import layout
    from compiler.pipeline import compile_spec
    lay = layout(spec, compile_spec(spec).typed, cfg)
    return load_data(cfg.data, spec, lay.task, lay.classes, cfg.seed, **kw)


def pil_pixels(path, size=(16, 16)):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR), np.float32) / 255


# --- images -------------------------------------------------------------------------------------

def test_an_image_folder_trains_and_the_run_keeps_its_class_names(in_tmp):
    spec = image_spec(make_images(in_tmp / "pics"))
    result = specc.train(spec, progress=False)
    assert result.final["val_accuracy"] == 1.0  # 9 held-out images; chance is 1/3
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["classes"] == ["blue", "green", "red"]  # sorted folder names, as torchvision's ImageFolder
    norm = json.loads((result.run_dir / "normalization.json").read_text())
    assert norm["classes"] == ["blue", "green", "red"] and norm["size"] == [16, 16]
    assert norm["inputs"][0]["per"] == "channel" and len(norm["inputs"][0]["center"]) == 3


def test_pixels_are_resized_floats_in_0_1_and_statistics_come_from_the_training_split(in_tmp):
    folder = make_images(in_tmp / "pics")
    raw = data_of(image_spec(folder, normalize="none", augment="null"))
    files = raw.train.samples.files
    xs, y = raw.val.samples.take(torch.as_tensor(raw.val.idx), 0)
    assert xs[0].shape == (9, 3, 16, 16) and xs[0].dtype == torch.float32
    assert 0.0 <= float(xs[0].min()) and float(xs[0].max()) <= 1.0
    expected = np.stack([pil_pixels(files[i]).transpose(2, 0, 1) for i in raw.val.idx])
    assert np.array_equal(xs[0].numpy(), expected)
    assert [raw.classes[k] for k in y.tolist()] == [files[i].parent.name for i in raw.val.idx]

    data = data_of(image_spec(folder, normalize="standard"))
    stats = data.stats["inputs"][0]
    train_px = np.stack([pil_pixels(files[i]) for i in data.train.idx]).reshape(-1, 3).astype(np.float64)
    all_px = np.stack([pil_pixels(f) for f in files]).reshape(-1, 3).astype(np.float64)
    assert np.allclose(stats["center"], train_px.mean(0), atol=1e-9)
    assert np.allclose(stats["scale"], train_px.std(0), atol=1e-9)
    assert not np.allclose(stats["center"], all_px.mean(0), atol=1e-4)  # the validation images are left out
    xs, _ = data.val.samples.take(torch.as_tensor(data.val.idx), 0)
    want = (expected - np.asarray(stats["center"]).reshape(1, 3, 1, 1)) / np.asarray(stats["scale"]).reshape(1, 3, 1, 1)
    assert np.allclose(xs[0].numpy(), want, atol=1e-5)

    minmax = data_of(image_spec(folder, normalize="minmax")).stats["inputs"][0]
    lo, hi = train_px.min(0), train_px.max(0)
    assert np.allclose(minmax["center"], (hi + lo) / 2) and np.allclose(minmax["scale"], (hi - lo) / 2)


def _shifts(image, pad):
    """Every crop of `image` padded by `pad` zeros, keyed by (top, left)."""
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
    h, w = image.shape[-2:]
    return {(t, left): padded[:, t:t + h, left:left + w] for t in range(2 * pad + 1) for left in range(2 * pad + 1)}


def test_flip_and_crop_augment_training_images_only_the_same_way_for_an_epoch(in_tmp):
    folder = make_images(in_tmp / "pics", per_class=4)
    files = sorted(folder.rglob("*.png"))
    labels = np.zeros(len(files), dtype=np.int64)
    plain = ImageSamples(files, labels, (16, 16), 3, {}, seed=0)
    ids = torch.arange(len(files))
    original = plain.take(ids, 0)[0][0]

    flips = ImageSamples(files, labels, (16, 16), 3, {"flip": True, "crop": 0}, seed=0)
    flipped = flips.take(ids, 1)[0][0]
    mirrored = [bool(torch.equal(f, o.flip(-1))) for f, o in zip(flipped, original)]
    assert all(m or torch.equal(f, o) for m, f, o in zip(mirrored, flipped, original))
    assert 0 < sum(mirrored) < len(files)  # p = 0.5 each

    crops = ImageSamples(files, labels, (16, 16), 3, {"flip": False, "crop": 2}, seed=0)
    epoch3 = crops.take(ids, 3)[0][0]
    offsets = []
    for got, o in zip(epoch3, original):
        found = [k for k, v in _shifts(o, 2).items() if torch.equal(v, got)]
        assert found, "an augmented image is a crop of the padded original"
        offsets.append(found[0])
    assert len(set(offsets)) > 1
    assert torch.equal(crops.take(ids, 3)[0][0], epoch3)  # (seed, epoch, sample) decide: a resume replays it
    assert not torch.equal(crops.take(ids, 4)[0][0], epoch3)  # another epoch, other crops
    assert torch.equal(crops.evaluation().take(ids, 3)[0][0], original)  # validation is never augmented


def test_training_batches_differ_by_epoch_and_workers_change_nothing(in_tmp):
    folder = make_images(in_tmp / "pics")
    spec = image_spec(folder, epochs=2)
    data = data_of(spec)
    order = torch.arange(len(data.train))
    one = [x[0] for x, _ in data.train.batches(order, 8, torch.device("cpu"), epoch=1)]
    two = [x[0] for x, _ in data.train.batches(order, 8, torch.device("cpu"), epoch=2)]
    assert not all(torch.equal(a, b) for a, b in zip(one, two))
    data.train.workers = 2
    pooled = [x[0] for x, _ in data.train.batches(order, 8, torch.device("cpu"), epoch=1)]
    assert len(pooled) == len(one) and all(torch.equal(a, b) for a, b in zip(one, pooled))

    a = specc.train(spec, progress=False, out=in_tmp / "a")
    b = specc.train(spec, ["train.data.workers=2"], progress=False, out=in_tmp / "b")
    wa, wb = load_file(a.run_dir / "model.safetensors"), load_file(b.run_dir / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _first_error(r):
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr.splitlines()


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_that_cannot_be_decoded_is_named_with_the_spec_line(in_tmp, workers):
    folder = make_images(in_tmp / "pics", per_class=4)
    (folder / "red" / "broken.png").write_bytes(b"not a png at all")
    spec = image_spec(folder, normalize="none", extra=f"    workers: {workers}\n")
    lines = _first_error(invoke("train", spec))
    assert lines[0] == f"{folder / 'red' / 'broken.png'}: error: cannot decode image: cannot identify image file " \
                       f"'{folder / 'red' / 'broken.png'}'"
    assert lines[-1] == f"hint: remove or replace the file (train.data at {spec}:13:13)"


def test_image_folder_errors(in_tmp):
    spec = image_spec(in_tmp / "pics")
    lines = _first_error(invoke("train", spec))
    assert lines[0] == f"{spec}:13:13: error: data folder {in_tmp / 'pics'} does not exist"
    (in_tmp / "pics").mkdir()
    lines = _first_error(invoke("train", spec))
    assert lines[0] == f"{in_tmp / 'pics'}: error: {in_tmp / 'pics'} has no class subfolders"
    assert lines[-1] == f"hint: put each class's images in a subfolder: DIR/cat/1.png (train.data at {spec}:13:13)"
    (in_tmp / "pics" / "cat").mkdir()
    (in_tmp / "pics" / "cat" / "notes.txt").write_text("no images")
    lines = _first_error(invoke("train", spec))
    assert lines[0].startswith(f"{in_tmp / 'pics'}: error: {in_tmp / 'pics'} holds no images (.png, .jpg")
    spec.write_text(spec.read_text().replace("size: [16, 16]", "size: [16, 20]"))
    lines = _first_error(invoke("train", spec))
    assert lines[0] == f"{spec}:13:13: error: size gives width 20, input 'x' takes 16"


# --- the synthetic images: a CNN finds what a linear model cannot ---------------------------------

def test_synthetic_images_tell_a_cnn_from_a_linear_model():
    cnn = specc.train(ROOT / "specs/resnet_block.yaml", progress=False)
    linear = specc.train(ROOT / "tests/cases/train/images_linear.yaml", progress=False)
    assert cnn.final["val_accuracy"] > 0.9  # chance is 0.25
    assert linear.final["val_accuracy"] < 0.4  # flatten + Linear over the same pixels: near chance
    assert linear.final["accuracy"] > 0.6  # ... though it fits its training images: it memorizes, it does not see


# --- text and tokens ----------------------------------------------------------------------------

def lm_spec(tmp, source, extra="", vocab=256, time_dim="time"):
    path = tmp / "lm.yaml"
    path.write_text(f"""specc: 1
name: lm
inputs:
  idx: {{shape: [batch, {time_dim}], dtype: int64, range: [0, {vocab}]}}
layers:
  - {{op: Embedding, num_embeddings: {vocab}, embedding_dim: 8}}
  - {{name: head, op: Linear, out_features: {vocab}}}
train:
  data:
    {source}
    block_size: 16
    val_split: 0.1
{extra}  loss: CrossEntropyLoss
  optimizer: {{name: Adam, lr: 0.01}}
  epochs: 2
  batch_size: 4
""")
    return path


def test_text_windows_are_bytes_shifted_by_one_and_an_epoch_visits_each_once(in_tmp):
    text = ("Grüße aus Köln. " * 70).encode()  # UTF-8: bytes above 127 are tokens too
    (in_tmp / "book.txt").write_bytes(text)
    data = data_of(lm_spec(in_tmp, "text: book.txt"))
    samples = data.train.samples
    n = (len(text) - 17) // 17 + 1  # non-overlapping windows of block_size + 1
    assert len(data.train) + len(data.val) == n and len(data.val) == round(n * 0.1)
    assert list(data.val.idx) == list(range(n - len(data.val), n))  # the tail is validation
    assert isinstance(samples.tokens, np.memmap)
    from specc.training.loop import Loop, Parts, Where
    cfg = specc.load(in_tmp / "lm.yaml").train
    loop = Loop(Parts(None, None, None, None), Where(cfg, data, torch.device("cpu"), in_tmp, "h"))
    seen = []
    for (x,), y in data.train.batches(loop.order(1), 4, torch.device("cpu"), epoch=1):
        assert x.dtype == torch.int64 and x.shape[1] == 16 and torch.equal(x[:, 1:], y[:, :-1])
        seen += [bytes(r) for r in torch.cat([x, y[:, -1:]], 1).tolist()]
    expected = [text[s:s + 17] for s in range(0, 17 * len(data.train), 17)]
    assert sorted(seen) == sorted(expected) and len(seen) == len(expected)

    strided = data_of(lm_spec(in_tmp, "text: book.txt", "    stride: 4\n"))
    assert len(strided.train) + len(strided.val) == (len(text) - 17) // 4 + 1
    (x,), y = strided.train.samples.take(torch.tensor([3]), 0)
    assert bytes(x[0].tolist()) == text[12:28] and bytes(y[0].tolist()) == text[13:29]


@pytest.mark.parametrize("dtype", ["uint16", "int32"])
def test_token_files_are_memory_mapped_windows(in_tmp, dtype):
    ids = (np.arange(3000) * 7 % 1000).astype(dtype)
    ids.tofile(in_tmp / "train.bin")
    data = data_of(lm_spec(in_tmp, "tokens: train.bin", f"    dtype: {dtype}\n", vocab=1000))
    tokens = data.train.samples.tokens
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.dtype(dtype) and Path(tokens.filename) == in_tmp / "train.bin"
    (x,), y = data.train.samples.take(torch.tensor([2, 0]), 0)
    assert x.tolist() == [ids[34:50].tolist(), ids[0:16].tolist()] and y.tolist() == [ids[35:51].tolist(), ids[1:17].tolist()]
    result = specc.train(in_tmp / "lm.yaml", progress=False)
    assert result.final["val_loss"] < np.log(1000)


def test_text_and_token_errors_name_the_file_and_the_spec_line(in_tmp):
    (in_tmp / "short.txt").write_text("too short")
    spec = lm_spec(in_tmp, "text: short.txt")
    lines = _first_error(invoke("train", spec))
    assert lines[0] == f"{spec}:10:11: error: {in_tmp / 'short.txt'} holds 9 tokens: fewer than two windows of 17"

    np.arange(101, dtype=np.uint8).tofile(in_tmp / "odd.bin")
    spec = lm_spec(in_tmp, "tokens: odd.bin", vocab=1000)
    lines = _first_error(invoke("train", spec))
    assert lines[0] == f"{in_tmp / 'odd.bin'}: error: {in_tmp / 'odd.bin'} is 101 bytes, not a whole number of uint16 tokens"
    assert lines[-1].endswith(f"(train.data at {spec}:10:13)")

    (np.arange(2000) % 1500).astype(np.uint16).tofile(in_tmp / "big.bin")
    spec = lm_spec(in_tmp, "tokens: big.bin", vocab=1000)
    lines = _first_error(invoke("train", spec))
    assert lines[0] == f"{spec}:10:13: error: {in_tmp / 'big.bin'} holds token id 1499, but input 'idx' has range [0, 1000)"

    (in_tmp / "book.txt").write_text("abc" * 100)
    spec = lm_spec(in_tmp, "text: book.txt", time_dim=8)
    lines = _first_error(invoke("train", spec))
    assert lines[0] == f"{spec}:10:11: error: block_size is 16 but input 'idx' takes 8 tokens"


# --- npz ------------------------------------------------------------------------------------------

def npz_spec(tmp, name="d.npz"):
    path = tmp / "npz.yaml"
    path.write_text(f"""specc: 1
name: wide
inputs:
  x: [batch, 64]
layers:
  - {{op: Linear, out_features: 1}}
train:
  data: {{npz: {name}, normalize: standard, val_split: 0.2}}
  loss: MSELoss
  optimizer: {{name: SGD, lr: 0.05}}
  epochs: 2
  batch_size: 256
""")
    return path


def test_large_npz_arrays_are_memory_mapped_and_give_the_same_batches(in_tmp):
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, size=(8192, 64)).astype(np.float32)  # 2 MiB: stored uncompressed, so mappable
    y = (x[:, :1] * 0.5 + 1).astype(np.float32)
    np.savez(in_tmp / "d.npz", x=x, y=y)
    arrays = sources.read_npz(specc.load(npz_spec(in_tmp)).train.data)
    assert isinstance(arrays["x"], np.memmap) and Path(arrays["x"].filename) == in_tmp / "d.npz"
    assert np.array_equal(arrays["x"], x)

    mapped = data_of(npz_spec(in_tmp), lazy_bytes=0)  # any size counts as large: rows are read per batch
    loaded = data_of(npz_spec(in_tmp))  # small enough to load into tensors once
    assert isinstance(mapped.train.samples, ArraySamples) and isinstance(mapped.train.samples.arrays[0], np.memmap)
    assert isinstance(loaded.train.samples, TensorSamples)
    for key in ("center", "scale"):  # the chunked statistics of the mapped rows match the in-memory ones
        assert np.allclose(mapped.stats["inputs"][0][key], loaded.stats["inputs"][0][key], atol=1e-5)
        assert np.allclose(mapped.stats["target"][key], loaded.stats["target"][key], atol=1e-5)
    order = torch.randperm(len(mapped.train), generator=torch.Generator().manual_seed(1))
    a = list(mapped.train.batches(order, 256, torch.device("cpu")))
    b = list(loaded.train.batches(order, 256, torch.device("cpu")))
    assert len(a) == len(b) == 26
    for ((xa,), ya), ((xb,), yb) in zip(a, b):
        assert torch.allclose(xa, xb, atol=1e-5) and torch.allclose(ya, yb, atol=1e-5)

    np.savez_compressed(in_tmp / "c.npz", x=x, y=y)
    assert not isinstance(sources.read_npz(specc.load(npz_spec(in_tmp, "c.npz")).train.data)["x"], np.memmap)


def test_npz_errors_name_the_array_and_the_spec_line(in_tmp):
    np.savez(in_tmp / "d.npz", features=np.zeros((4, 64), np.float32), y=np.zeros((4, 1), np.float32))
    spec = npz_spec(in_tmp)
    lines = _first_error(invoke("train", spec))
    assert lines[0] == f"{spec}:8:15: error: array 'x' is not in {in_tmp / 'd.npz'}"
    np.savez(in_tmp / "d.npz", x=np.zeros((4, 32), np.float32), y=np.zeros((4, 1), np.float32))
    lines = _first_error(invoke("train", spec))
    assert lines[0] == (f"{spec}:8:15: error: {in_tmp / 'd.npz'} gives input 'x' samples of shape (32,), "
                        "the spec expects (64)")
