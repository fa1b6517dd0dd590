"""The HTTP/1.1 connection: uvicorn's protocol (httptools' parser) with the two things a server facing
clients it does not control needs and uvicorn lacks.

- Client timeouts. uvicorn waits forever for half a request. A connection whose request headers do
  not arrive within `timeout_s` of its start or of its last response is closed; a body that does not
  arrive within `timeout_s` of its headers is answered 408 and closed. One timer per connection,
  moved on only when it fires: a request costs two clock reads, not a timer (a 30 s timer per
  request kept ~180,000 live timers in the loop under load and cost a third of a request's time).
  A request pipelined behind one still being answered is not waiting for its body: uvicorn stops
  reading until its turn, and its wait starts then.
- One write per response. uvicorn writes a response's head and its body separately: two sends and,
  on loopback, two wake-ups of the client. Writes made in one turn of the event loop are joined
  and sent at the start of the next (`Corked`), in order, also for the protocol's own replies.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any


def http_protocol(timeout_s: float) -> type:
    """The protocol class for uvicorn.Config(http=...)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Timed(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(Corked(transport, self.loop))  # type: ignore[arg-type]
            self._since = self.loop.time()  # when the current wait (headers, then body) began
            self._watch = self.loop.call_later(timeout_s, self._check)

        def connection_lost(self, exc: Exception | None) -> None:
            self._watch.cancel()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._since = self.loop.time()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # starts the next pipelined request, if one is waiting
            self._since = self.loop.time()

        def _unsupported_upgrade_warning(self) -> None:
            pass  # an `Upgrade: websocket` request is answered as plain HTTP; uvicorn's advice to install a
            # websocket library, logged for every such request, does not apply to a server with no websocket route

        def _check(self) -> None:
            if self.transport.is_closing():
                return
            cycle, left = self.cycle, self._since + timeout_s - self.loop.time()
            if cycle is None or cycle.response_complete:  # waiting for a request's headers
                if left <= 0:
                    return self.transport.close()
            elif cycle.more_body and not cycle.response_started and not self.pipeline:  # waiting for its body
                if left <= 0:
                    return self._refuse_slow_body()
            else:  # the app is answering (this request, or one pipelined before it): look again later
                left = timeout_s
            self._watch = self.loop.call_later(max(left, 0.01), self._check)

        def _refuse_slow_body(self) -> None:
            body = json.dumps({"error": f"the body did not arrive within {timeout_s:g} s"}, separators=(",", ":"))
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body.encode()))
            self.transport.close()  # the app's pending receive() sees a disconnect; its reply is not sent

    return Timed


class Corked:
    """A transport whose writes in one turn of the loop go out as one send, at the next turn's start
    (or at close). Everything else is the wrapped transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop = transport, loop
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._parts:
            self._loop.call_soon(self._flush)
        self._parts.append(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def _flush(self) -> None:
        if self._parts and not self._transport.is_closing():
            self._transport.write(self._parts[0] if len(self._parts) == 1 else b"".join(self._parts))
        self._parts = []

    def __getattr__(self, name: str) -> Any:  # pause_reading, get_extra_info, ...
        return getattr(self._transport, name)
