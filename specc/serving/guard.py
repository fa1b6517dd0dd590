"""What stands between a client and the routes: the bearer token and the body size limit. A plain
ASGI middleware, so it sees the bytes before any route parses them; its refusals are JSON
{"error": ...} like every other error. (The time a client may take is the HTTP protocol's: http.py.)"""
from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.requests import ClientDisconnect

from .protocol import BadRequest

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
OPEN = ("/v2/health/live", "/v2/health/ready")  # probes (Kubernetes, load balancers) carry no token


@dataclass(frozen=True)
class Guard:
    token: str | None = None  # required as `Authorization: Bearer TOKEN` when set
    max_body: int = 8 << 20  # bytes

    class middleware:  # noqa: N801  (an ASGI middleware class, as add_middleware wants it)
        def __init__(self, app: Callable, guard: "Guard"):
            self.app, self.guard = app, guard

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            refusal = self.guard.refusal(scope)
            if refusal is not None:
                return await _reply(send, *refusal)
            try:
                await self.app(scope, self.guard.limited(receive), send)
            except ClientDisconnect:  # the client went away mid-body, or was cut off as too slow (408): there
                pass  # is nobody to answer, and nothing went wrong in the server (uvicorn would log a traceback)

    def refusal(self, scope: Scope) -> tuple[int, str, list] | None:
        """(status, message, extra headers) when the request is refused before its body is read."""
        headers = dict(scope.get("headers") or [])
        if self.token is not None and scope["path"] not in OPEN:
            got = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode()):
                why = "a wrong token" if got else "no token"
                return 401, f"this server needs 'Authorization: Bearer TOKEN'; the request has {why}", \
                    [(b"www-authenticate", b"Bearer")]
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return 413, f"the body has {int(length)} bytes; this server takes at most {self.max_body} (--max-body)", []
        return None

    def limited(self, receive: Receive) -> Receive:
        """`receive`, refusing a body past max_body (chunked uploads have no Content-Length)."""
        state = {"bytes": 0, "done": False}

        async def guarded() -> dict:
            message = await receive()
            if message["type"] == "http.request" and not state["done"]:
                state["bytes"] += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
                if state["bytes"] > self.max_body:
                    raise BadRequest(f"the body is over {self.max_body} bytes, the most this server takes (--max-body)",
                                     413)
            return message

        return guarded


async def _reply(send: Send, status: int, message: str, headers: list) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
