"""The friendly endpoints: what `specc predict` and `specc generate` take, over HTTP, with the run's
own pre- and post-processing (specc.predicting) and its KV-cache decoder (specc.generating).

    POST /v1/predict   table run:  {"rows": [{"area": 120, "age": 5}]}  -> {"predictions": [{"price": 31.2}]}
                       image run:  multipart files                      -> [{"file", "class", "probability"}]
                       text run:   {"text": "ROMEO:"} or {"prompts": []} -> [{"prompt", "next", "probability"}]
    POST /v1/generate  {"prompt": "ROMEO:", "tokens": 50, "temperature": 0.8, "top_k": 40, "seed": 1}
                       -> Server-Sent Events: `data: {"id": 82, "text": "R"}` per token, then `event: done`
"""
from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from compiler.errors import SpecError

from .. import predicting
from .protocol import BadRequest, check_inputs, loads

MAX_ROWS, MAX_FILES, MAX_TOKENS = 10_000, 64, 4096
PAGE = Path(__file__).with_name("page.html")


@dataclass
class Processing:
    """A trained run's pre- and post-processing, or why it has none (then /v1/predict says so)."""

    cfg: Any = None
    spec: Any = None
    stats: Any = None
    missing: str = ""

    @property
    def kind(self) -> str:
        if self.missing:
            return "none"
        return {"images": "images", "text": "text", "tokens": "text"}.get(self.cfg.source, "table")

    @classmethod
    def of(cls, run_dir: Path) -> "Processing":
        try:
            return cls(*predicting.processing(run_dir))
        except SpecError as e:
            return cls(missing=e.diagnostics[0].message)


def routes(app: FastAPI, served: Any) -> None:
    proc = Processing.of(served.model.run_dir)
    lm: dict[str, Any] = {}  # the language model, loaded at the first /v1/generate
    one_at_a_time = asyncio.Lock()  # its KV cache lives in its modules: one generation at a time

    @app.post("/v1/predict", tags=["v1"], summary="Predict with the run's own pre- and post-processing",
              openapi_extra=_PREDICT_BODY)
    async def predict(request: Request) -> JSONResponse:
        batches = await _batches(proc, request)
        rows = []
        for batch in batches:
            xs = check_inputs(served.model, {t.name: x for t, x in zip(served.model.inputs, batch.inputs)})
            outs = await served.infer(xs)
            header, got = predicting.decode(proc.cfg, proc.spec, proc.stats, outs[0], batch)
            rows += [dict(zip(header, r)) for r in got]
        return JSONResponse({"model": served.model.name, "predictions": rows})

    @app.post("/v1/generate", tags=["v1"], summary="Stream generated tokens as Server-Sent Events",
              openapi_extra=_GENERATE_BODY)
    async def generate(request: Request) -> Any:
        body = await _json(request)
        if "lm" not in lm:
            lm["lm"] = await run_in_threadpool(_language_model, served.model)
        tokens = await run_in_threadpool(_start, lm["lm"], body)  # checked; nothing decoded yet
        if body.get("stream", True) is False:
            async with one_at_a_time:
                got = await run_in_threadpool(list, tokens)
            return JSONResponse({"model": served.model.name, "text": "".join(t.text for t in got),
                                 "ids": [t.id for t in got if t.id >= 0]})
        return StreamingResponse(_events(tokens, one_at_a_time), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def try_it() -> HTMLResponse:
        return HTMLResponse(page(served.model.name, proc))


async def _json(request: Request) -> dict:
    raw = await request.body()
    try:
        body = loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


async def _batches(proc: Processing, request: Request) -> list[predicting.Batch]:
    """The request, read the way `specc predict` reads its --data, as batches of model inputs."""
    if proc.missing:
        raise BadRequest(f"/v1/predict needs a trained run: {proc.missing}; use /v2/models/.../infer", 400)
    try:
        if proc.kind == "images":
            files = await _uploads(request)
            return [await run_in_threadpool(_images, proc, files)]
        body = await _json(request)
        if proc.kind == "text":
            return [predicting.text_batch(proc.cfg, proc.spec, p, "the request") for p in _prompts(body)]
        return [_table(proc, body)]
    except SpecError as e:
        raise BadRequest(_said(e)) from None


def _said(e: SpecError) -> str:
    """A SpecError as one line for a JSON error: its message, and its hint in brackets."""
    d = e.diagnostics[0]
    return f"{d.message} ({d.hint})" if d.hint else d.message


def _table(proc: Processing, body: dict) -> predicting.Batch:
    rows = body.get("rows", body.get("row"))
    rows = [rows] if isinstance(rows, dict) else rows
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise BadRequest('send {"rows": [{"column": value, ...}, ...]}: a list of rows by column name')
    if len(rows) > MAX_ROWS:
        raise BadRequest(f"{len(rows)} rows in one request; at most {MAX_ROWS}")
    names = list(dict.fromkeys(k for r in rows for k in r))
    cols = {}
    for name in names:
        values = [r.get(name) for r in rows]
        bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))), "ok")
        if bad != "ok":
            raise BadRequest(f"column '{name}' holds {bad!r}; every row needs a number there")
        cols[name] = np.asarray(values, dtype=np.float64)
    xs, show = predicting.column_inputs(proc.cfg, proc.stats, cols, "the request")
    return predicting.table_batch(proc.spec, proc.stats, xs, {}, slice(0, len(rows)))


def _prompts(body: dict) -> list[str]:
    prompts = body.get("prompts", [body["text"]] if "text" in body else None)
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise BadRequest('send {"text": "a prompt"} or {"prompts": ["one", "another"]}, each not empty')
    if len(prompts) > MAX_FILES:
        raise BadRequest(f"{len(prompts)} prompts in one request; at most {MAX_FILES}")
    return prompts


async def _uploads(request: Request) -> list[tuple[str, bytes]]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("send the images as multipart/form-data file fields (curl -F file=@photo.png)", 415)
    form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
    files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
    if not files:
        raise BadRequest("the form has no file; send each image as a file field (curl -F file=@photo.png)")
    return files


def _images(proc: Processing, files: list[tuple[str, bytes]]) -> predicting.Batch:
    """Each file decoded alone, so that an error names the one that is not an image."""
    one = []
    for name, data in files:
        try:
            one.append(predicting.image_batch(proc.spec, proc.stats, [io.BytesIO(data)], [name]))
        except Exception:  # PIL raises many kinds (and decompression bombs) for what is not an image
            raise BadRequest(f"'{name}' is not an image this server can read; send PNG, JPEG, BMP, GIF or WebP "
                             "files") from None
    return predicting.Batch([np.concatenate([b.inputs[0] for b in one])], [r for b in one for r in b.rows])


# --- generation -------------------------------------------------------------------------------

def _language_model(model: Any) -> Any:
    source = model.spec.train.data.source if model.spec.train is not None else None
    if len(model.inputs) != 1 or model.inputs[0].datatype != "INT64" or source not in (None, "text", "tokens"):
        raise BadRequest(f"model '{model.name}' is not a language model; /v1/generate serves causal LMs", 400)
    from ..generating import LanguageModel
    try:
        onnx = model.platform == "onnxruntime_onnx"
        return LanguageModel.load(model.run_dir, onnx=onnx, device=None if onnx else model.device)
    except SpecError as e:
        raise BadRequest(f"model '{model.name}' cannot generate: {_said(e)}") from None


def _start(lm: Any, body: dict) -> Iterator[Any]:
    from ..generating import Sampling, stream
    options = {k: body[k] for k in ("temperature", "top_k", "top_p", "stop", "seed") if k in body}
    prompt, tokens = body.get("prompt"), body.get("tokens", 100)
    if not isinstance(prompt, (str, list)):
        raise BadRequest('send {"prompt": "text or token ids", "tokens": 50}')
    if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= MAX_TOKENS:
        raise BadRequest(f'"tokens" must be a whole number from 1 to {MAX_TOKENS}, got {tokens!r}')
    try:
        return stream(lm, prompt, tokens, Sampling.of(options))
    except (SpecError, TypeError) as e:
        raise BadRequest(_said(e) if isinstance(e, SpecError) else f"bad sampling option: {e}") from None


async def _events(tokens: Iterator[Any], lock: asyncio.Lock) -> Any:
    """Server-Sent Events, one per token as it is decoded (in a thread: decoding is not async). The
    lock is taken when the first event is wanted and let go when the stream ends or the client leaves."""
    done = object()
    text, count = [], 0
    async with lock:
        while True:
            try:
                tok = await run_in_threadpool(next, tokens, done)
            except Exception as e:  # the status line is sent: say it as the stream's last event
                yield f"event: error\ndata: {json.dumps({'error': f'generation stopped: {e}'})}\n\n"
                return
            if tok is done:
                break
            text.append(tok.text)
            count += tok.id >= 0
            yield f"data: {json.dumps({'id': tok.id, 'text': tok.text})}\n\n"
    yield f"event: done\ndata: {json.dumps({'text': ''.join(text), 'tokens': count})}\n\n"


# --- the page at / ----------------------------------------------------------------------------

def page(name: str, proc: Processing) -> str:
    """The try-it page, with what its form needs to know about the model."""
    features = list(proc.stats.get("features") or proc.cfg.features or []) if proc.kind == "table" else []
    info = {"name": name, "kind": proc.kind, "features": features,
            "generate": proc.kind == "text", "why": proc.missing}
    return PAGE.read_text().replace("/*INFO*/null", json.dumps(info).replace("</", "<\\/"))


_PREDICT_BODY = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "rows": {"type": "array", "items": {"type": "object"}, "example": [{"area": 120, "age": 5}]},
        "text": {"type": "string"}, "prompts": {"type": "array", "items": {"type": "string"}}}}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary"}}}}}}}
_GENERATE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["prompt"], "properties": {
        "prompt": {"type": "string"}, "tokens": {"type": "integer", "default": 100},
        "temperature": {"type": "number"}, "top_k": {"type": "integer"}, "top_p": {"type": "number"},
        "stop": {"type": "array", "items": {"type": "string"}}, "seed": {"type": "integer"},
        "stream": {"type": "boolean", "default": True}}}}}}}
