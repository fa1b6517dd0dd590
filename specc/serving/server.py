"""`specc serve`: load the run's model, build the app, and run uvicorn until SIGINT or SIGTERM.

On a signal uvicorn stops accepting, lets the requests it accepted finish (the batcher keeps running
until the app's lifespan ends), and then re-raises the signal so that the process would die of it; a
handler installed first swallows that re-raise, so a drained server exits 0.
"""
from __future__ import annotations

import ipaddress
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compiler.errors import SpecError, file_loc

from .. import runs
from .http import http_protocol


@dataclass(frozen=True)
class ServeOptions:
    onnx: bool = False
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (the printed URL says which)
    max_batch: int = 16  # rows merged into one model run; 1: no batching
    batch_timeout_ms: float = 2.0  # how long a request waits for others to share its run
    token: str | None = None
    max_body: int = 8 << 20  # bytes
    client_timeout_s: float = 30.0  # for a client to send its request's headers, and then its body
    allow_unchecked: bool = False  # --onnx: serve a file whose parity check did not pass
    device: str = "auto"  # torch's device: auto (CUDA when there is one), cpu, cuda, cuda:N

    def check(self) -> None:
        for flag, value, low in (("--max-batch", self.max_batch, 1), ("--port", self.port, 0),
                                 ("--max-body", self.max_body, 1)):
            if value < low:
                raise SpecError.at(file_loc(flag), f"{flag} must be at least {low}, got {value}", f"{flag} {max(low, 16)}")
        if self.port > 65535:
            raise SpecError.at(file_loc("--port"), f"--port must be at most 65535, got {self.port}", "--port 8000")
        if self.batch_timeout_ms < 0 or self.client_timeout_s <= 0:
            flag = "--batch-timeout-ms" if self.batch_timeout_ms < 0 else "--client-timeout"
            raise SpecError.at(file_loc(flag), f"{flag} must be positive", f"{flag} 5")
        if self.token is not None and not self.token.strip():
            raise SpecError.at(file_loc("--token"), "--token is empty", "pass a long random string")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(target: Any, options: ServeOptions, say: Callable[[str], None] = print) -> int:
    """Serve a run until SIGINT or SIGTERM; 0 once the requests it accepted are answered."""
    options.check()
    run_dir = Path(runs.target_path(target))
    if not is_loopback(options.host) and options.token is None:
        print(f"warning: serving on {options.host} without --token: anyone who can reach this address can use "
              "the model; pass --token SECRET (clients send 'Authorization: Bearer SECRET')", file=sys.stderr, flush=True)
    from .app import create_app
    from .batcher import Limits
    from .guard import Guard
    from .model import load_model
    model = load_model(run_dir, options.onnx, options.allow_unchecked, options.device)
    if not runs.is_trained(run_dir):
        print(f"note: {run_dir} was never trained; serving its initial weights", file=sys.stderr, flush=True)
    most = model.largest_batch(options.max_batch) if model.batch_dim else 1
    app = create_app(model, Limits(most, options.batch_timeout_ms / 1000),
                     Guard(options.token, options.max_body))
    engine = "onnxruntime" if options.onnx else f"torch on {model.device}"
    return _run(app, options, lambda port: say(
        f"serving {model.name} ({engine}, batches of up to {most}) at "
        f"http://{_bracketed(options.host)}:{port}  (docs: /docs, try it: /, stop: Ctrl-C)"))


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _run(app: Any, options: ServeOptions, started: Callable[[int], None]) -> int:
    import uvicorn
    config = uvicorn.Config(app, host=options.host, port=options.port, http=http_protocol(options.client_timeout_s),
                            log_level="warning", access_log=False, proxy_headers=False,  # per-request costs
                            timeout_graceful_shutdown=30, timeout_keep_alive=5, limit_concurrency=1000, lifespan="on",
                            ws="none")  # no websocket routes; the event loop is uvloop where installed
    server = _Server(config, started)
    stopped: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # uvicorn re-raises these after draining: end quietly instead
        signal.signal(sig, lambda s, f: stopped.append(s))
    try:
        server.run()
    except (OSError, SystemExit):  # uvicorn exits 1 when it cannot bind: the port is taken, or not this machine's
        pass
    if not server.started:
        raise SpecError.at(file_loc("--port"), f"cannot listen on {options.host}:{options.port} (see the line above)",
                           "pick another --port (0 picks a free one), or a --host of this machine")
    return 0


class _Server:
    """uvicorn's Server, telling `started` the port it listens on (the one --port 0 picked)."""

    def __new__(cls, config: Any, started: Callable[[int], None]) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started:
                    started(self.servers[0].sockets[0].getsockname()[1])

        return Server(config)
