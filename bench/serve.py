"""`specc serve` throughput: requests/s and p50/p99 latency of a small MLP at 1, 4, 16 and 64 requests
in flight (dynamic batching: --max-batch 64 --batch-timeout-ms 2), against sequential requests to
a server that does not batch (--max-batch 1). Goal: >= 3x the sequential throughput at 16 in flight.
Each setting runs in turns with the others (ROUNDS rounds, medians), on keep-alive connections
through a minimal HTTP client so the client costs little.

    python bench/serve.py [--requests 1600] [--rounds 5]
"""
import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from serving import Server  # noqa: E402

MLP = """specc: 1
name: bench-mlp
inputs:
  x: [batch, 32]
layers:
  - {op: Linear, out_features: 128}
  - ReLU
  - {op: Linear, out_features: 128}
  - ReLU
  - {name: head, op: Linear, out_features: 8}
"""
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 32], "datatype": "FP32",
                               "data": [0.01 * i for i in range(32)]}]}).encode()


async def _one_connection(host: str, port: int, count: int, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = (b"POST /v2/models/bench-mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
    for _ in range(count):
        t0 = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200"), head
        latencies.append(time.perf_counter() - t0)
    writer.close()


def measure(server: Server, in_flight: int, requests: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) for `requests` requests, `in_flight` at a time."""
    latencies: list[float] = []
    per = max(1, requests // in_flight)

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*[_one_connection(server.host, int(server.port), per, latencies) for _ in range(in_flight)])
        return time.perf_counter() - t0

    took = asyncio.run(main())
    latencies.sort()
    return len(latencies) / took, latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3


def main() -> float:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1600)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "mlp.yaml"
        spec.write_text(MLP)
        import specc
        run = specc.build_run(spec, out=Path(tmp) / "run").run_dir
        with Server(run, "--max-batch", 1, "--batch-timeout-ms", 0) as plain, \
                Server(run, "--max-batch", 64, "--batch-timeout-ms", 2) as batched:
            settings = {"sequential (no batching)": (plain, 1)}
            settings.update({f"{n:>2} in flight, batching": (batched, n) for n in (1, 4, 16, 64)})
            for server, n in settings.values():  # warm-up
                measure(server, n, 100)
            got: dict[str, list[tuple[float, float, float]]] = {k: [] for k in settings}
            for _ in range(args.rounds):
                for name, (server, n) in settings.items():
                    got[name].append(measure(server, n, args.requests))
    print(f"== specc serve, a {sum(1 for _ in MLP.splitlines() if 'Linear' in _)}-layer MLP, JSON tensors, "
          f"{args.requests} requests x {args.rounds} rounds (medians)")
    medians = {k: tuple(statistics.median(r[i] for r in v) for i in range(3)) for k, v in got.items()}
    for name, (rps, p50, p99) in medians.items():
        print(f"  {name:<28} {rps:8.0f} req/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
    base = medians["sequential (no batching)"][0]
    ratio = medians["16 in flight, batching"][0] / base
    print(f"  ratio 16-in-flight/sequential = {ratio:.2f}  ({'OK' if ratio >= 3 else 'UNDER'} the 3x goal)")
    return ratio


if __name__ == "__main__":
    main()
