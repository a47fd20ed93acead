"""gRPC load generator: N clients calling one unary method with one request, bounded in time.

The gRPC twin of ``bench/loadgen.py`` (same closed loop, same JSON summary), run as its
own process so that it never shares an interpreter or a GIL with the server. Each client
is one asyncio task with its own channel (its own HTTP/2 connection, as each REST client
has its own keep-alive connection) that sends a call, waits for the whole response and
sends the next. The request is serialized once and sent as bytes, and responses are
not parsed: on a 2-core machine the client's own CPU per call is part of what is
measured. Only loopback addresses are accepted.

    python bench/grpc_loadgen.py --target 127.0.0.1:8500 \\
        --method /tensorflow.serving.PredictionService/Predict --body-file request.bin
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.loadgen import _Stats, require_loopback, summarize  # noqa: E402 - after path set-up

PREDICT = "/tensorflow.serving.PredictionService/Predict"
_OPTIONS = [("grpc.max_receive_message_length", 2**31 - 1),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.use_local_subchannel_pool", 1)]  # one connection per client


async def _client(target: str, method: str, body: bytes, warm_until: float, deadline: float,
                  max_requests: int, stats: _Stats) -> None:
    async with grpc.aio.insecure_channel(target, options=_OPTIONS) as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out: no (de)serialization
        while True:
            now = time.perf_counter()
            if now >= deadline or stats.sent >= max_requests:
                return
            counted = now >= warm_until
            if counted:
                stats.sent += 1
            started = time.perf_counter()
            try:
                await call(body, timeout=60)
            except grpc.aio.AioRpcError as err:
                if counted:
                    stats.errors += 1
                    name = err.code().name
                    stats.statuses[name] = stats.statuses.get(name, 0) + 1
                    stats.first_error = stats.first_error or f"{name}: {err.details()}"
                continue
            elapsed = time.perf_counter() - started
            if counted:
                stats.statuses["OK"] = stats.statuses.get("OK", 0) + 1
                stats.latencies.append(elapsed)


async def run_load(target: str, method: str, body: bytes, *, concurrency: int,
                   duration: float, warmup: float = 0.5,
                   max_requests: int = 1_000_000) -> dict:
    """Runs the closed-loop load and returns its summary (latencies in ms)."""
    require_loopback(target.rsplit(":", 1)[0].strip("[]"))
    stats = _Stats()
    start = time.perf_counter()
    warm_until = start + warmup
    deadline = warm_until + duration
    await asyncio.gather(*(_client(target, method, body, warm_until, deadline, max_requests,
                                   stats) for _ in range(concurrency)))
    seconds = max(1e-9, min(time.perf_counter(), deadline) - warm_until)
    return summarize(f"grpc://{target}{method}", concurrency, seconds, stats)


def main(argv: list[str] | None = None) -> int:
    """Command line: prints the summary as JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--method", default=PREDICT, help="full method name (default: Predict)")
    parser.add_argument("--body-file", required=True, help="the serialized request message")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with open(args.body_file, "rb") as f:
        body = f.read()
    result = asyncio.run(run_load(args.target, args.method, body,
                                  concurrency=args.concurrency, duration=args.duration,
                                  warmup=args.warmup, max_requests=args.max_requests))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
