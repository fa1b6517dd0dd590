"""The routes: a thin layer over `protocol`, `batcher` and `friendly`. One app object holds the one
model (`app.state.served`); nothing else is global.

    GET  /v2  /v2/health/live  /v2/health/ready           server metadata and health
    GET  /v2/models/{name}[/versions/1]  .../ready  .../stats  .../config
    POST /v2/models/{name}[/versions/1]/infer             JSON or binary tensors (Open Inference Protocol)
    POST /v1/predict   /v1/generate                        the run's own pre- and post-processing
    GET  /   /docs   /openapi.json                         a page to try the model; the OpenAPI page
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from specc import __version__

from . import friendly, protocol
from .batcher import Batcher, Limits, ModelFailed
from .fastpath import FastInfer, bug_message
from .guard import Guard
from .model import Model
from .protocol import BadRequest


@dataclass
class Served:
    """The app's one piece of state: the model and its batcher."""

    model: Model
    batcher: Batcher
    max_body: int  # bytes, also after inflating a compressed body

    def named(self, name: str, version: str | None = None) -> Model:
        if name != self.model.name:
            raise BadRequest(f"unknown model '{name}'; this server serves '{self.model.name}'", 404)
        if version not in (None, "1"):
            raise BadRequest(f"model '{name}' has no version '{version}'; its version is 1", 404)
        return self.model

    async def infer(self, arrays: list, ticket: list[bool] | None = None) -> list:
        try:
            return await self.batcher.submit(arrays, ticket)
        except ModelFailed as e:
            raise BadRequest(f"the model cannot run this input: {e}", 422) from None

    async def answer(self, target: tuple[str, str | None], body: bytes, headers: Any,
                     ticket: list[bool] | None = None) -> tuple[bytes, dict[str, str]]:
        """One infer request (model name and version, raw body, its headers) -> the reply's body and headers."""
        model = self.named(*target)
        body = protocol.inflate(body, headers.get("content-encoding"), self.max_body)
        req = protocol.parse_infer(model, body, headers.get(protocol.HEADER.lower()))
        outs = await self.infer(req.arrays, ticket)
        return protocol.encode_reply(model, req, outs)


def create_app(model: Model, limits: Limits, guard: Guard) -> Guard.middleware:
    """The server's ASGI app: the guard, then the infer route in plain ASGI (`FastInfer`), then FastAPI
    for everything else. The batcher runs while the app's lifespan does."""
    served = Served(model, Batcher(model.run, limits), guard.max_body)

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        served.batcher.start()
        yield
        await served.batcher.stop()

    app = FastAPI(title=f"specc serve: {model.name}", version=__version__, lifespan=lifespan,
                  description="The Open Inference Protocol (KServe v2) under /v2; the run's own pre- and "
                              "post-processing under /v1.")
    app.state.served = served
    _errors(app)
    _v2(app, served)
    friendly.routes(app, served)
    return Guard.middleware(FastInfer(app, served), guard)  # outside FastAPI: its middleware cost per request


def _errors(app: FastAPI) -> None:
    """Every error is JSON {"error": message}: tritonclient reads nothing else."""
    @app.exception_handler(BadRequest)
    async def bad(request: Request, e: BadRequest) -> JSONResponse:
        return JSONResponse({"error": e.message}, e.status)

    @app.exception_handler(HTTPException)
    async def http(request: Request, e: HTTPException) -> JSONResponse:
        text = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return JSONResponse({"error": text}, e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception) -> JSONResponse:  # not the client's fault: said as such
        return JSONResponse({"error": bug_message(e)}, 500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, 400)


def _v2(app: FastAPI, served: Served) -> None:
    @app.get("/v2", tags=["v2"], summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "specc", "version": __version__, "extensions": ["binary_tensor_data", "statistics"]}

    @app.get("/v2/health/live", tags=["v2"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"])
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/v2/models/stats", tags=["v2"], summary="Statistics of every model")
    @app.get("/v2/models/{name}/stats", tags=["v2"], summary="Statistics (Triton's statistics extension)")
    @app.get("/v2/models/{name}/versions/{version}/stats", tags=["v2"], include_in_schema=False)
    async def stats(name: str | None = None, version: str | None = None) -> dict[str, Any]:
        model = served.named(name, version) if name is not None else served.model
        return served.batcher.stats.report(model.name)

    @app.get("/v2/models/{name}", tags=["v2"], summary="Model metadata")
    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"], include_in_schema=False)
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        return protocol.metadata(served.named(name, version))

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"], include_in_schema=False)
    async def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        return {"name": served.named(name, version).name, "ready": True}

    @app.get("/v2/models/{name}/config", tags=["v2"], summary="Triton's model configuration, as JSON")
    async def model_config(name: str) -> dict[str, Any]:
        from exporters.to_triton import model_config
        m = served.named(name)
        return model_config(m.name, m.inputs, m.outputs, served.batcher.limits.max_batch if m.batch_dim else 0)

    @app.post("/v2/models/{name}/infer", tags=["v2"], summary="Inference, JSON or binary tensors",
              openapi_extra=_INFER_BODY)
    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], include_in_schema=False)
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        # Answered by FastInfer before FastAPI sees it; this route documents it and is the fallback.
        served.named(name, version)
        with served.batcher.arriving() as ticket:
            body, headers = await served.answer((name, version), await request.body(), request.headers, ticket)
        return Response(body, headers=headers)


_INFER_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
            "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string", "example": "FP32"}, "data": {"type": "array", "items": {}}}}},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}}}}}}
