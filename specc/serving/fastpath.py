"""The infer route without the framework: `POST /v2/models/{name}[/versions/{v}]/infer` answered in
plain ASGI, every other request passed on to FastAPI.

For a small model most of a request's server time was FastAPI's and Starlette's (routing, the
exception middleware's exit stack, the Request object, the response class), not the model's. This
layer wraps the FastAPI app, inside `Guard` (so the token, the body limit and the body timeout still apply) and does
what the FastAPI route does, through the same functions (`Served.answer`), with the same replies:
the result, or JSON {"error": ...} with the same status. The FastAPI route stays for the OpenAPI
page and as the one place the route is documented.
"""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from .protocol import BadRequest

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def infer_target(path: str) -> tuple[str, str | None] | None:
    """'/v2/models/NAME/infer' -> (NAME, None); '/v2/models/NAME/versions/V/infer' -> (NAME, V); else None."""
    if not (path.startswith("/v2/models/") and path.endswith("/infer")):
        return None
    parts = path[len("/v2/models/"):-len("/infer")].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return parts[0], parts[2]
    return None


class FastInfer:
    """ASGI middleware: the infer route in plain ASGI (see the module's doc), the rest to `app`."""

    def __init__(self, app: Callable, served: Any):
        self.app, self.served = app, served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = infer_target(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if target is None:
            return await self.app(scope, receive, send)
        try:
            status, body, headers = 200, *await self._answer(scope, receive, target)
        except BadRequest as e:
            status, body, headers = e.status, _error(e.message), {"content-type": "application/json"}
        except Exception as e:  # not the client's fault: said as such, as the app's own handler does
            status, body, headers = 500, _error(bug_message(e)), {"content-type": "application/json"}
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, receive: Receive, target: tuple[str, str | None]) -> tuple[bytes, dict]:
        self.served.named(*target)  # an unknown model is refused before its body is read
        with self.served.batcher.arriving() as ticket:
            body = await _body(receive)
            return await self.served.answer(target, body, _headers(scope), ticket)


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away before its body arrived", 400)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _error(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":")).encode()  # as JSONResponse writes it


def bug_message(e: Exception) -> str:
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    return f"internal error (a bug in specc serve): {type(e).__name__}: {first}"
