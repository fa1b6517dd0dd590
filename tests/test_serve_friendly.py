"""The friendly endpoints of a real `specc serve` process: image uploads answered with class names,
text runs with the next token, and /v1/generate streaming a causal LM's tokens as Server-Sent Events."""
import asyncio
import io
import json
import signal

import httpx
import numpy as np
import pytest
from PIL import Image

import specc
from conftest import ROOT
from serving import Server

COLORS = ("red", "green")


@pytest.fixture(scope="module")
def colors(tmp_path_factory):
    """A small CNN trained to tell red from green PNGs (a class per subfolder)."""
    root = tmp_path_factory.mktemp("colors")
    noise = np.random.default_rng(0).uniform(0, 0.3, (len(COLORS), 8, 10, 12, 3))
    for k, name in enumerate(COLORS):
        (root / "pics" / name).mkdir(parents=True)
        lit = noise[k] + np.eye(3)[k] * 0.6  # the class's own channel lit: (8 images, H, W, RGB)
        for i, px in enumerate((lit * 255).astype(np.uint8)):
            Image.fromarray(px).save(root / "pics" / name / f"{i}.png")
    spec = root / "colors.yaml"
    spec.write_text("specc: 1\nname: colors\ninputs:\n  x: [batch, 3, 8, 8]\nlayers:\n"
                    "  - {op: Conv2d, out_channels: 4, kernel_size: 3, padding: 1}\n  - ReLU\n"
                    "  - {op: AdaptiveAvgPool2d, output_size: 1}\n  - {op: flatten, start_dim: 1}\n"
                    "  - {name: head, op: Linear, out_features: 2}\n"
                    "train:\n  data: {images: pics, size: [8, 8], normalize: standard, val_split: 0.25}\n"
                    "  loss: CrossEntropyLoss\n  optimizer: {name: Adam, lr: 0.05}\n  epochs: 5\n  batch_size: 4\n")
    run = specc.train(spec, progress=False, out=root / "run").run_dir
    return root, run


def test_image_uploads_get_class_names_and_probabilities(colors):
    """(Served on every address without a token: it warns, and SIGINT ends it with 0.)"""
    root, run = colors
    files = [root / "pics/red/0.png", root / "pics/green/1.png"]
    expected = specc.predict(run, files[0].parent).rows[:1] + specc.predict(run, files[1].parent).rows[1:2]
    with Server(run, "--host", "0.0.0.0") as s, httpx.Client(base_url=f"http://127.0.0.1:{s.port}") as c:
        assert s.errors[0].startswith("warning: serving on 0.0.0.0 without --token: anyone who can reach this "
                                      "address can use the model")
        r = c.post("/v1/predict", files=[("file", ("a.png", files[0].read_bytes(), "image/png")),
                                         ("file", ("b.png", files[1].read_bytes(), "image/png"))])
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        assert [(p["file"], p["class"]) for p in got] == [("a.png", expected[0][1]), ("b.png", expected[1][1])]
        assert np.allclose([p["probability"] for p in got], [e[2] for e in expected], atol=1e-6)
        assert [p["class"] for p in got] == ["red", "green"]  # and it learned the colors

        bad = c.post("/v1/predict", files=[("file", ("a.png", files[0].read_bytes(), "image/png")),
                                           ("file", ("notes.png", b"not an image at all", "image/png"))])
        assert (bad.status_code, bad.json()) == (400, {"error": "'notes.png' is not an image this server can read; "
                                                                "send PNG, JPEG, BMP, GIF or WebP files"})
        empty = c.post("/v1/predict", data={"caption": "no file"}, files=[])
        assert empty.status_code == 415 and empty.json()["error"].startswith("send the images as multipart/form-data")
        assert c.post("/v1/predict", files=[("file", ("a.png", files[0].read_bytes(), "image/png"))]).status_code == 200
        assert s.stop(signal.SIGINT) == 0


GPT_TRAIN = ("train:\n  data: {text: tiny.txt, block_size: 16}\n  loss: CrossEntropyLoss\n"
             "  optimizer: {name: Adam, lr: 0.001}\n  epochs: 1\n")


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    """The zoo GPT, small, trained for an epoch on a text file."""
    root = tmp_path_factory.mktemp("gpt")
    (root / "tiny.txt").write_text("the cat sat on the mat.\n" * 20)
    spec = root / "gpt.yaml"
    spec.write_text((ROOT / "specs/zoo/gpt.yaml").read_text() + GPT_TRAIN)
    params = {"vocab_size": 256, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}
    return specc.train(spec, params, out=root / "run", progress=False).run_dir


def events(text):
    """Server-Sent Events -> [(event, data)]."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


def test_text_runs_predict_the_next_token_and_stream_generations(gpt, tmp_path):
    (tmp_path / "prompts.txt").write_text("the cat\non the m\n")
    expected = specc.predict(gpt, tmp_path / "prompts.txt").rows
    with Server(gpt) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        r = c.post("/v1/predict", json={"prompts": ["the cat", "on the m"]})
        assert r.status_code == 200, r.text
        got = [[p["prompt"], p["next"], p["probability"]] for p in r.json()["predictions"]]
        assert [g[:2] for g in got] == [e[:2] for e in expected]
        assert np.allclose([g[2] for g in got], [e[2] for e in expected], atol=1e-6)

        body = {"prompt": "the cat", "tokens": 6, "top_k": 1}
        with c.stream("POST", "/v1/generate", json=body) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            sse = events(stream.read().decode())
        tokens, (last, done) = sse[:-1], sse[-1]
        assert [e for e, _ in tokens] == ["message"] * 6 and last == "done"
        greedy = specc.generate(gpt, "the cat", tokens=6, top_k=1)
        ids = [d["id"] for _, d in tokens]  # a text run's tokens are bytes: compare them, not split characters
        assert "the cat" + bytes(ids).decode("utf-8", errors="replace") == greedy
        assert "".join(d["text"] for _, d in tokens) == done["text"]
        assert done["tokens"] == 6 and all(0 <= d["id"] < 256 for _, d in tokens)
        whole = c.post("/v1/generate", json=dict(body, stream=False)).json()
        assert whole["text"] == done["text"] and whole["ids"] == [d["id"] for _, d in tokens]

        async def together():  # concurrent generations share one KV cache: each must still be its own
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as ac:
                return await asyncio.gather(*[ac.post("/v1/generate", json={"prompt": p, "tokens": 5, "top_k": 1})
                                              for p in ("the cat", "on the m", "sat")])
        for prompt, r in zip(("the cat", "on the m", "sat"), asyncio.run(together())):
            ids = [d["id"] for e, d in events(r.text) if e == "message"]
            assert prompt + bytes(ids).decode("utf-8", errors="replace") == specc.generate(gpt, prompt, tokens=5, top_k=1)

        for wrong, error in ((dict(body, tokens=0), '"tokens" must be a whole number from 1 to 4096, got 0'),
                             (dict(body, top_k=0), "--top-k must be at least 1, got 0 (--top-k 40)"),
                             ({"tokens": 3}, 'send {"prompt": "text or token ids", "tokens": 50}')):
            r = c.post("/v1/generate", json=wrong)
            assert (r.status_code, r.json()) == (400, {"error": error})
