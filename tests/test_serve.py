"""`specc serve` as a real process on a loopback port: the Open Inference Protocol over plain HTTP
and through tritonclient, dynamic batching under load, bad clients, the token, SIGTERM, and
`specc export --triton` (its config.pbtxt parsed with Triton's own ModelConfig)."""
import asyncio
import contextlib
import gzip
import json
import re
import signal
import socket
import time

import httpx
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import specc
from conftest import ROOT, invoke
from serving import Server

NAME = "seed-linear-regression"
INFER = f"/v2/models/{NAME}/infer"


@pytest.fixture(scope="module")
def house(tmp_path_factory):
    """The article's linear regression on the housing table, trained and exported (ONNX, Triton)."""
    run = specc.train(ROOT / "specs/linear_regression.yaml", progress=False,
                      out=tmp_path_factory.mktemp("house") / "run").run_dir
    r = invoke("export", run, "--onnx", "--triton", "-q")
    assert r.returncode == 0, r.stderr
    return run


@pytest.fixture(scope="module")
def server(house):
    with Server(house, "--max-batch", 16, "--batch-timeout-ms", 5, "--max-body", 65536, "--client-timeout", 2) as s:
        yield s


def linear(run, x):
    """The model by hand: x @ W.T + b, in float64."""
    w = load_file(str(run / "model.safetensors"))
    return x.astype(np.float64) @ w["linear.weight"].astype(np.float64).T + w["linear.bias"].astype(np.float64)


def tensor(x, name="x", datatype="FP32"):
    return {"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.reshape(-1).tolist()}


def test_health_metadata_and_json_inference(server, house):
    assert "(torch on cpu, batches of up to 16) at http://127.0.0.1:" in server.banner
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get("/v2").json()["extensions"] == ["binary_tensor_data", "statistics"]
        assert c.get(f"/v2/models/{NAME}").json() == {
            "name": NAME, "versions": ["1"], "platform": "pytorch_libtorch",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
            "outputs": [{"name": "linear", "datatype": "FP32", "shape": [-1, 1]}]}
        assert c.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/v2/models/{name}/infer", "/v1/predict", "/v1/generate", "/v2/models/{name}/stats"} <= set(paths)
        assert "swagger-ui" in c.get("/docs").text
        x = np.array([[0.1, 0.2], [0.9, -0.3], [0.5, 0.5]], np.float32)
        r = c.post(INFER, json={"id": "abc", "inputs": [{**tensor(x), "data": x.tolist()}]})  # nested data
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        out = r.json()
        assert out["id"] == "abc" and out["model_name"] == NAME
        assert out["outputs"][0]["shape"] == [3, 1] and out["outputs"][0]["datatype"] == "FP32"
        assert np.allclose(out["outputs"][0]["data"], linear(house, x).reshape(-1), rtol=1e-5)


def test_nan_and_infinity_go_both_ways_as_python_clients_write_them(server, house):
    x = np.array([[np.nan, 1.0], [np.inf, np.inf], [-np.inf, -np.inf], [0.5, 0.25]], np.float32)
    body = json.dumps({"inputs": [tensor(x)]})  # NaN and Infinity: not JSON, but what json.dumps writes
    assert "NaN" in body and "Infinity" in body
    with httpx.Client(base_url=server.url) as c:
        r = c.post(INFER, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert "NaN" in r.text and "null" not in r.text
    got = np.array(r.json()["outputs"][0]["data"], np.float64)  # the standard library reads NaN and Infinity
    with np.errstate(invalid="ignore"):  # inf - inf in the reference, as in the model
        want = linear(house, x).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, equal_nan=True)


def test_binary_tensors_both_ways(server, house):
    x = np.array([[0.25, 0.75], [1.5, -2.0]], np.float32)
    head = json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "linear", "parameters": {"binary_data": True}}]}).encode()
    with httpx.Client(base_url=server.url) as c:
        r = c.post(INFER, content=head + x.tobytes(), headers={"Inference-Header-Content-Length": str(len(head))})
        assert r.status_code == 200, r.text
        n = int(r.headers["inference-header-content-length"])
        meta = json.loads(r.content[:n])
        assert meta["outputs"][0]["parameters"] == {"binary_data_size": 8} and "data" not in meta["outputs"][0]
        y = np.frombuffer(r.content[n:], np.float32).reshape(meta["outputs"][0]["shape"])
        assert np.allclose(y, linear(house, x), rtol=1e-5)
        # JSON in, binary out for every output (what tritonclient asks when it names no outputs)
        r = c.post(INFER, json={"inputs": [tensor(x)], "parameters": {"binary_data_output": True}})
        n = int(r.headers["inference-header-content-length"])
        assert np.allclose(np.frombuffer(r.content[n:], np.float32), linear(house, x).reshape(-1), rtol=1e-5)


M = f"model '{NAME}'"
BAD = [  # (path, body, headers, status, error)
    ("/v2/models/nope/infer", b"{}", {}, 404, f"unknown model 'nope'; this server serves '{NAME}'"),
    (f"/v2/models/{NAME}/versions/7/infer", b"{}", {}, 404, f"model '{NAME}' has no version '7'; its version is 1"),
    (INFER, b'{"inputs": [', {}, 400, "the request body is not valid JSON: Expecting value: line 1 column 13 (char 12)"),
    (INFER, b'[1, 2]', {}, 400, 'the request must be a JSON object with an "inputs" list'),
    (INFER, json.dumps({"inputs": [tensor(np.ones((1, 2)), "y")]}).encode(), {}, 400,
     f"{M} has no input 'y'; its inputs: x"),
    (INFER, json.dumps({"inputs": [tensor(np.ones((2, 3)))]}).encode(), {}, 400,
     "input 'x' has shape [2, 3]; the model takes [-1, 2] (-1: any size)"),
    (INFER, json.dumps({"inputs": [tensor(np.ones((1, 2), int), datatype="INT64")]}).encode(), {}, 400,
     "input 'x' has datatype INT64; the model takes FP32"),
    (INFER, json.dumps({"inputs": [tensor(np.ones((1, 2)), datatype="FLOAT")]}).encode(), {}, 400,
     "input 'x': unknown datatype 'FLOAT'; datatypes: BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, "
     "FP16, FP32, FP64"),
    (INFER, json.dumps({"inputs": [{**tensor(np.ones((2, 2))), "data": [1, 2, 3]}]}).encode(), {}, 400,
     'input \'x\': shape [2, 2] holds 4 values, "data" has 3'),
    (INFER, json.dumps({"inputs": [{**tensor(np.ones((1, 2))), "data": [1, "a"]}]}).encode(), {}, 400,
     "input 'x': 'a' is not a float32 value"),
    (INFER, json.dumps({"inputs": [tensor(np.ones((0, 2)))]}).encode(), {}, 400,
     "input 'x': batch = 0; the model takes at least 1"),
    (INFER, json.dumps({"inputs": [tensor(np.ones((1, 2)))], "outputs": [{"name": "price"}]}).encode(), {}, 400,
     f"{M} has no output 'price'; its outputs: linear"),
    (INFER, b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}'
     + b"\0" * 4, {"Inference-Header-Content-Length": "103"}, 400,
     "input 'x': binary_data_size 8 runs past the body's end"),
    (INFER, b"{}", {"Inference-Header-Content-Length": "lots"}, 400,
     "Inference-Header-Content-Length must be a number of bytes, got 'lots'"),
    (INFER, gzip.compress(b" " * 200000), {"Content-Encoding": "gzip"}, 413,
     "the body inflates to over 65536 bytes, the most this server takes (--max-body)"),
    (INFER, b"{}", {"Content-Encoding": "br"}, 415, "Content-Encoding 'br' is not supported; use gzip, deflate or none"),
    ("/v1/predict", b'{"rows": [{"area": 120}]}', {}, 400,
     "column 'age' is not in the request (the run was trained on the columns area, age)"),
    ("/v1/predict", b'{"rows": [{"area": 120, "age": "old"}]}', {}, 400,
     "column 'age' holds 'old'; every row needs a number there"),
    ("/v1/generate", b'{"prompt": "hi"}', {}, 400,
     f"{M} is not a language model; /v1/generate serves causal LMs"),
    ("/v3/anything", b"{}", {}, 404, "no route POST /v3/anything"),
    (f"/v2/models/{NAME}/ready", b"{}", {}, 405, f"no route POST /v2/models/{NAME}/ready"),
]


@pytest.mark.parametrize("path, body, headers, status, error", BAD, ids=[f"{i}-{b[4]}" for i, b in enumerate(BAD)])
def test_bad_requests_get_a_4xx_naming_the_problem_and_the_next_is_answered(server, path, body, headers, status, error):
    with httpx.Client(base_url=server.url) as c:
        r = c.post(path, content=body, headers=headers)
        assert (r.status_code, r.json()) == (status, {"error": error})
        ok = c.post(INFER, json={"inputs": [tensor(np.ones((1, 2), np.float32))]})
        assert ok.status_code == 200


def test_bodies_over_max_body_and_slow_clients_are_cut_off(server):
    with httpx.Client(base_url=server.url) as c:
        r = c.post(INFER, content=b" " * 70000)
        assert (r.status_code, r.json()) == (413, {"error": "the body has 70000 bytes; this server takes at most "
                                                            "65536 (--max-body)"})
        r = c.post(INFER, content=(b" " * 10000 for _ in range(8)))  # chunked: no Content-Length to refuse early
        assert (r.status_code, r.json()) == (413, {"error": "the body is over 65536 bytes, the most this server "
                                                            "takes (--max-body)"})
    host, port = server.host, int(server.port)
    with socket.create_connection((host, port), timeout=10) as idle, \
            socket.create_connection((host, port), timeout=10) as s:  # nothing at all; half the headers, then nothing
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        assert s.recv(100) == b"" and time.monotonic() - t0 < 8  # closed by the server (--client-timeout 2)
        assert idle.recv(100) == b""
    with socket.create_connection((host, port), timeout=10) as s:  # a body trickled a byte at a time
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        t0, reply = time.monotonic(), b""
        while not reply and time.monotonic() - t0 < 8:
            with contextlib.suppress(OSError):
                s.sendall(b"{")
            s.settimeout(0.4)
            with contextlib.suppress(socket.timeout):
                reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408 "), reply
    for path in (INFER, "/v1/predict"):  # the headers, then a tenth of the body
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
            reply = s.recv(4096)
            while b"\r\n\r\n" in reply and not reply.endswith(b"}") and (more := s.recv(4096)):
                reply += more  # the head and the body may come in two TCP segments
            assert reply.startswith(b"HTTP/1.1 408 ") and reply.endswith(b'{"error":"the body did not arrive within '
                                                                          b'2 s"}')
    with httpx.Client(base_url=server.url) as c:
        assert c.post(INFER, json={"inputs": [tensor(np.ones((1, 2), np.float32))]}).status_code == 200
        assert c.get("/v2/health/live", headers={"Upgrade": "websocket", "Connection": "Upgrade"}).status_code == 200
    time.sleep(0.5)  # the server's stderr is read by a thread
    said = "".join(server.errors)  # slow clients and a websocket upgrade are not the server's trouble
    assert "Traceback" not in said and "Exception in ASGI" not in said and "WebSocket" not in said, said


def test_a_slow_body_pipelined_behind_a_slow_answer_waits_its_turn(house):
    """Request 2's body wait starts when request 1 is answered, not when request 2's headers arrive:
    uvicorn reads nothing more of a pipelined request until its turn."""
    def infer(rid):
        body = json.dumps({"id": rid, "inputs": [tensor(np.ones((1, 2), np.float32))]}).encode()
        return (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    with Server(house, "--client-timeout", 1, "--batch-timeout-ms", 2000) as s:
        host, port = s.host, int(s.port)
        with socket.create_connection((host, port), timeout=10) as a, \
                socket.create_connection((host, port), timeout=10) as b:
            a.sendall(infer("stalled")[:-10])  # still arriving: the next request's batch waits for it, 2 s
            time.sleep(0.2)
            b.sendall(infer("first") + infer("second")[:-10])  # request 1 waits 2 s; request 2's body never ends
            replies = b""
            while (more := b.recv(65536)):
                replies += more
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", replies)  # a reply's head follows the previous body directly
    assert statuses == [b"200", b"408"], replies  # request 1 answered (at 2.2 s), then request 2 cut off (3.2 s)
    assert b'"id":"first"' in replies


def test_load_sixteen_in_flight_every_row_answered_right(server, house):
    """400 requests of 1 to 4 rows, 16 in flight: no wrong answer, and fewer model runs than requests."""
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(int(rng.integers(1, 5)), 2)).astype(np.float32) for _ in range(400)]
    before = httpx.get(f"{server.url}/v2/models/{NAME}/stats").json()["model_stats"][0]

    async def main():
        gate = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=16)) as c:
            async def one(x):
                async with gate:
                    r = await c.post(INFER, json={"inputs": [tensor(x)]}, timeout=60)
                return r.status_code, r.json()["outputs"][0]["data"]
            return await asyncio.gather(*[one(x) for x in xs])

    answers = asyncio.run(main())
    wrong = [i for i, (x, (status, y)) in enumerate(zip(xs, answers))
             if status != 200 or not np.allclose(y, linear(house, x).reshape(-1), rtol=1e-5, atol=1e-6)]
    assert wrong == []
    after = httpx.get(f"{server.url}/v2/models/{NAME}/stats").json()["model_stats"][0]
    rows = sum(len(x) for x in xs)
    assert after["inference_count"] - before["inference_count"] == rows
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 400
    runs = after["execution_count"] - before["execution_count"]
    assert runs < 400 and max(s["batch_size"] for s in after["batch_stats"]) > 4  # requests did share runs
    assert after["inference_stats"]["queue"]["ns"] > before["inference_stats"]["queue"]["ns"]


def test_predict_answers_in_the_targets_units_like_specc_predict(server, house, tmp_path):
    rows = [{"area": 120, "age": 5}, {"age": 3, "area": 200}]
    r = httpx.post(f"{server.url}/v1/predict", json={"rows": rows})
    assert r.status_code == 200, r.text
    (tmp_path / "new.csv").write_text("area,age\n120,5\n200,3\n")
    expected = specc.predict(house, tmp_path / "new.csv").rows
    got = r.json()["predictions"]
    assert [list(p) for p in got] == [["price"], ["price"]]
    assert np.allclose([p["price"] for p in got], [e[2] for e in expected], rtol=1e-6)
    assert 20 < got[0]["price"] < 40  # the training row (120, 5) cost 30


def test_tritonclient_token_and_sigterm_drain(house):
    """ONNX in onnxruntime, behind a token, through tritonclient; SIGTERM answers what was accepted, exits 0."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    with Server(house, "--onnx", "--token", "s3cret") as s:
        auth = {"Authorization": "Bearer s3cret"}
        client = triton.InferenceServerClient(f"{s.host}:{s.port}")
        assert client.is_server_live()  # health needs no token
        with pytest.raises(InferenceServerException, match="needs 'Authorization: Bearer TOKEN'; the request has no token"):
            client.get_model_metadata(NAME)
        assert client.get_model_metadata(NAME, headers=dict(auth))["platform"] == "onnxruntime_onnx"
        x = np.array([[0.5, 0.25], [1.0, 2.0], [3.0, 0.0]], np.float32)
        for binary in (True, False):
            inp = triton.InferInput("x", [3, 2], "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = client.infer(NAME, [inp], outputs=[triton.InferRequestedOutput("linear", binary_data=binary)],
                               headers=dict(auth))
            assert np.allclose(out.as_numpy("linear"), linear(house, x), rtol=1e-5)
        inp = triton.InferInput("x", [3, 2], "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer(NAME, [inp], headers=dict(auth), request_compression_algorithm="gzip")
        assert np.allclose(out.as_numpy("linear"), linear(house, x), rtol=1e-5)
        with pytest.raises(InferenceServerException, match="input 'x' has shape \\[3\\]; the model takes \\[-1, 2\\]"):
            bad = triton.InferInput("x", [3], "FP32")
            bad.set_data_from_numpy(x[:, 0].copy())
            client.infer(NAME, [bad], headers=dict(auth))
        stats = client.get_inference_statistics(NAME, headers=dict(auth))["model_stats"][0]
        assert (stats["inference_count"], stats["execution_count"]) == (9, 3)
        assert httpx.post(f"{s.url}{INFER}", json={}, headers={"Authorization": "Bearer nope"}).json() == {
            "error": "this server needs 'Authorization: Bearer TOKEN'; the request has a wrong token"}

        async def inflight():  # 8 requests whose bodies are still arriving when the signal comes
            async def slowly(i):
                data = json.dumps({"inputs": [tensor(x[i % 3:i % 3 + 1])]}).encode()
                yield data[:10]
                await asyncio.sleep(0.8)
                yield data[10:]

            async with httpx.AsyncClient(base_url=s.url, headers=dict(auth)) as c:
                sent = [asyncio.create_task(c.post(INFER, content=slowly(i), timeout=30)) for i in range(8)]
                await asyncio.sleep(0.3)
                s.proc.send_signal(signal.SIGTERM)
                return await asyncio.gather(*sent)

        replies = asyncio.run(inflight())
        assert [r.status_code for r in replies] == [200] * 8
        assert all(np.allclose(r.json()["outputs"][0]["data"], linear(house, x[i % 3:i % 3 + 1]).reshape(-1), rtol=1e-5)
                   for i, r in enumerate(replies))
        assert s.proc.wait(30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{s.url}/v2/health/live")


def test_triton_repository_parses_with_tritons_model_config(house):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    folder = house / "export/triton" / NAME
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["1", "1/model.onnx", "config.pbtxt"]
    assert (folder / "1/model.onnx").read_bytes() == (house / "export/model.onnx").read_bytes()
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == (NAME, "onnxruntime_onnx", 64)
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("x", "TYPE_FP32", [2])]
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.output] == [
        ("linear", "TYPE_FP32", [1])]
    assert config.HasField("dynamic_batching")


def test_the_try_it_page_predicts_in_headless_chromium(server, house, tmp_path):
    """The page at /, in Debian's chromium: a screenshot, and a prediction made through its form."""
    import shutil
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,700"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)
    try:
        chrome.get(server.url + "/")
        assert chrome.find_element(By.ID, "title").text == f"specc serve: {NAME}"
        chrome.find_element(By.NAME, "area").send_keys("120")
        chrome.find_element(By.NAME, "age").send_keys("5")
        chrome.find_element(By.ID, "predict").click()
        shown = WebDriverWait(chrome, 30).until(lambda d: d.find_element(By.ID, "result").text.startswith("price")
                                                and d.find_element(By.ID, "result").text)
        assert chrome.save_screenshot(str(tmp_path / "page.png"))
    finally:
        chrome.quit()
    price = httpx.post(f"{server.url}/v1/predict", json={"rows": [{"area": 120, "age": 5}]}).json()["predictions"][0]
    assert shown == f"price: {float(format(price['price'], '.6g'))!r}"  # JS's Number(v.toPrecision(6))
    from PIL import Image
    with Image.open(tmp_path / "page.png") as shot:
        assert shot.size[0] >= 800 and len(np.unique(np.asarray(shot.convert("L")))) > 10  # drawn, not blank


def test_serve_refuses_bad_options_and_targets(house, tmp_path):
    r = invoke("serve", house, "--onnx", "--device", "cuda")
    assert (r.returncode, r.stderr.splitlines()[0]) == (2, "--device: error: --onnx serves in onnxruntime on the CPU; "
                                                           "--device cuda is for torch")
    if not torch.cuda.is_available():
        r = invoke("serve", house, "--device", "cuda:1")
        assert (r.returncode, r.stderr.splitlines()[0]) == (2, "--device: error: device 'cuda:1' asked for, but CUDA "
                                                               "is not available")
    r = invoke("serve", house, "--max-batch", "0")
    assert (r.returncode, r.stderr.splitlines()) == (2, ["--max-batch: error: --max-batch must be at least 1, got 0",
                                                         "hint: --max-batch 16"])
    r = invoke("serve", ROOT / "specs/linear_regression.yaml")
    assert (r.returncode, r.stderr.splitlines()[0]) == (2, f"{ROOT / 'specs/linear_regression.yaml'}: error: serve "
                                                           "needs a run folder")
    bare = tmp_path / "bare"
    assert invoke("build", ROOT / "specs/linear_regression.yaml", "--out", bare, "-q").returncode == 0
    r = invoke("serve", bare, "--onnx")
    assert (r.returncode, r.stderr.splitlines()) == (2, [f"{bare}/export/model.onnx: error: the run has no ONNX export",
                                                         f"hint: export it first: specc export {bare} --onnx"])
